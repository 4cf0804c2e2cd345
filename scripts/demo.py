"""`make demo`: the problem uvrefs solves, end to end, on a throw-away cache and venvs.

numpy + pandas are installed (through uvrefs) for two Pythons, the older venv is deleted,
then `uv cache prune` and `uvrefs collect` are compared, sizes measured by `uv cache size`.
With one Python only, or no index reachable, two versions of a generated package stand in.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
WORK = HERE / ".demo"
BIN = Path(sys.executable).parent
UV = str(BIN / "uv")
UVREFS = str(BIN / "uvrefs")


def run(
    *args: str | Path, check: bool = True, show: bool = True
) -> subprocess.CompletedProcess[str]:
    cmd = [str(a) for a in args]
    if show:
        print(
            "$",
            " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd)).replace(
                str(WORK) + "/", ""
            ),
        )
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        sys.exit(f"demo: {' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
    return done


def cache_bytes() -> int:
    out = run(UV, "cache", "size", "--preview-features", "cache-size", show=False).stdout
    return int(out.strip().splitlines()[-1])


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def interpreters() -> list[str]:
    """Installed CPythons with distinct minor versions, oldest first (uv's view + pyenv's)."""
    found = run(
        UV, "python", "list", "--only-installed", "--output-format", "json", check=False, show=False
    )
    import json

    paths = [
        p["path"] for p in json.loads(found.stdout or "[]") if p.get("implementation") == "cpython"
    ]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    paths += sorted(glob.glob(f"{root}/versions/3.*/bin/python3"))
    by_minor: dict[str, str] = {}
    for path in paths:
        probe = subprocess.run(
            [path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        minor = probe.stdout.strip()
        if probe.returncode == 0 and _version(minor) >= (3, 9):
            by_minor.setdefault(minor, path)
    ordered = sorted(by_minor.items(), key=lambda kv: _version(kv[0]))
    if ("3.9" in by_minor) and ("3.11" in by_minor):
        return [by_minor["3.9"], by_minor["3.11"]]
    return (
        [path for _, path in ordered[:1] + ordered[-1:]] if len(ordered) > 1 else [sys.executable]
    )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(".") if x.isdigit())


def generated_wheels(out: Path) -> list[list[str]]:
    """Fallback: two versions of a 30 MiB package plus one small shared package."""
    sys.path.insert(0, str(HERE))
    from tests.wheels import build_wheel

    blob = os.urandom(30 * 2**20)
    build_wheel(out, "bigdata", "1.0", files={"bigdata/blob.bin": blob})
    build_wheel(out, "bigdata", "2.0", files={"bigdata/blob.bin": blob[::-1]})
    build_wheel(out, "shared", "1.0")
    index = ["--no-index", "--find-links", str(out)]
    return [[*index, "bigdata==1.0", "shared"], [*index, "bigdata==2.0", "shared"]]


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    pythons = interpreters()
    print(f"uvrefs demo in {WORK} (throw-away cache, state and venvs)\n")
    old, new = WORK / "venv-old", WORK / "venv-new"
    requirements = [["numpy", "pandas"], ["numpy", "pandas"]]
    probe = run(
        UV,
        "pip",
        "install",
        "--dry-run",
        "-p",
        pythons[0],
        "--no-cache",
        "numpy",
        check=False,
        show=False,
    )
    if len(pythons) < 2 or probe.returncode != 0:
        print("(one Python or no package index here: using two versions of a generated package)\n")
        pythons = [pythons[-1], pythons[-1]]
        requirements = generated_wheels(Path(tempfile.mkdtemp(dir=WORK)))
    for venv, python, reqs in zip((old, new), pythons, requirements, strict=True):
        run(UV, "venv", "-q", "-p", python, venv)
        run(UVREFS, "install", "-q", "-p", venv, *reqs)
    refs = len(glob.glob(str(WORK / "state/caches/*/refs/*.refs")))
    print(f"\ntracked: {refs} cache entries have refs")
    print(run(UV, "pip", "list", "-p", old, show=False).stdout.replace("\n", "\n  "))
    before = cache_bytes()
    print(f"cache before: {mib(before)}\n")

    shutil.rmtree(old)
    print(f"deleted {old.name}")
    run(UV, "cache", "prune", "-q")
    after_prune = cache_bytes()
    print(f"uv cache prune freed: {mib(before - after_prune)}\n")

    print(run(UVREFS, "collect", "--dry-run").stdout)
    print(run(UVREFS, "collect").stdout)
    after = cache_bytes()
    print(
        f"cache before: {mib(before)}  after: {mib(after)}  freed by uvrefs: {mib(after_prune - after)}"
    )

    run(UV, "pip", "install", "-q", "--offline", "--reinstall", "-p", new, *requirements[1])
    check = "import numpy, pandas" if requirements[1][0] == "numpy" else "import bigdata, shared"
    run(new / "bin/python", "-c", check)
    print(f"{new.name} still reinstalls from the cache offline and imports: ok")


ENV = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "UVREFS_", "VIRTUAL_ENV"))}
ENV.update(
    UV_CACHE_DIR=str(WORK / "cache"),
    UVREFS_DIR=str(WORK / "state"),
    UVREFS_UV=UV,
    UV_PYTHON_DOWNLOADS="never",
    NO_COLOR="1",
)

if __name__ == "__main__":
    main()
