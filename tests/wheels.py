"""Tiny wheels and sdists built by the tests themselves, so the suite needs no network."""

from __future__ import annotations

import base64
import hashlib
import io
import sysconfig
import tarfile
import zipfile
from pathlib import Path

PLATFORM_TAG = "py3-none-" + sysconfig.get_platform().replace("-", "_").replace(".", "_")

# A PEP 517 backend small enough to ship as a wheel: packs <name>/ into a pure wheel.
BACKEND = b"""
import base64, hashlib, os, tomllib, zipfile
def get_requires_for_build_wheel(config_settings=None):
    return []
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    with open("pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    name, version = project["name"], project["version"]
    info = f"{name}-{version}.dist-info"
    files = {}
    for root, _, names in os.walk(name):
        for n in names:
            with open(os.path.join(root, n), "rb") as f:
                files[os.path.join(root, n).replace(os.sep, "/")] = f.read()
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\\nName: {name}\\nVersion: {version}\\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\\nGenerator: tinybackend\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    digest = lambda d: "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b"=").decode()
    record = "".join(f"{p},{digest(d)},{len(d)}\\n" for p, d in files.items()) + f"{info}/RECORD,,\\n"
    files[f"{info}/RECORD"] = record.encode()
    filename = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
    return filename
build_editable = build_wheel  # good enough for tests: an editable install is a copy
get_requires_for_build_editable = get_requires_for_build_wheel
"""


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(
    out: Path,
    name: str,
    version: str,
    tag: str = "py3-none-any",
    files: dict[str, bytes] | None = None,
) -> Path:
    """A valid wheel with `<name>/__init__.py` (defining __version__) plus `files`."""
    info = f"{name}-{version}.dist-info"
    content = {f"{name}/__init__.py": f"__version__ = {version!r}\n".encode(), **(files or {})}
    content[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    )
    purelib = "true" if tag.endswith("-any") else "false"
    content[f"{info}/WHEEL"] = (
        f"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: {purelib}\nTag: {tag}\n".encode()
    )
    record = (
        "".join(f"{p},{_digest(d)},{len(d)}\n" for p, d in content.items()) + f"{info}/RECORD,,\n"
    )
    content[f"{info}/RECORD"] = record.encode()
    path = out / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, d in content.items():
            z.writestr(p, d)
    return path


def build_sdist(out: Path, name: str, version: str, backend: str = "tinybackend") -> Path:
    path = out / f"{name}-{version}.tar.gz"
    members = {
        "pyproject.toml": (
            f'[build-system]\nrequires = ["{backend}"]\nbuild-backend = "{backend}"\n'
            f'[project]\nname = "{name}"\nversion = "{version}"\n'
        ).encode(),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{name}/__init__.py": f"__version__ = {version!r}\n".encode(),
    }
    with tarfile.open(path, "w:gz") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(f"{name}-{version}/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def build_wheelhouse(out: Path) -> Path:
    """alpha 1.0/2.0/3.0 and beta 1.0 (pure), plat 1.0 (platform-tagged), a build backend
    and gamma 1.0 as an sdist that needs it, and a big 1.0 of about 1 MiB."""
    out.mkdir(parents=True, exist_ok=True)
    for version in ("1.0", "2.0", "3.0"):
        build_wheel(out, "alpha", version)
    build_wheel(out, "beta", "1.0")
    build_wheel(out, "plat", "1.0", tag=PLATFORM_TAG)
    build_wheel(out, "tinybackend", "1.0", files={"tinybackend/__init__.py": BACKEND})
    build_sdist(out, "gamma", "1.0")
    build_wheel(out, "big", "1.0", files={"big/data.bin": bytes(range(256)) * 4096})
    build_wheel(
        out,
        "tooly",
        "1.0",
        files={
            "tooly/__init__.py": b"def main():\n    print('tooly')\n",
            "tooly-1.0.dist-info/entry_points.txt": b"[console_scripts]\ntooly = tooly:main\n",
        },
    )
    return out
