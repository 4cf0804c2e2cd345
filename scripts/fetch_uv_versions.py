"""Fetch the uv releases the version-matrix test runs against (tests/test_uv_versions.py)
into .venv/uv-versions/<version>/uv, from PyPI's wheels. Idempotent; without network the
matrix test skips and says so."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# The oldest release checked, one from the middle, and the pinned one's predecessor (the
# pinned release itself is the dev dependency every other test uses).
VERSIONS = ("0.9.30", "0.11.33", "0.13.8")
DEST = Path(sys.prefix) / "uv-versions"


def fetch(version: str) -> None:
    target = DEST / version / "uv"
    if target.exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                f"uv=={version}",
                "-d",
                tmp,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = list(Path(tmp).glob("uv-*.whl"))
        if done.returncode != 0 or not wheels:
            print(f"fetch_uv_versions: uv {version} not fetched ({done.stderr.strip()[-200:]})")
            return
        with zipfile.ZipFile(wheels[0]) as z:
            name = next(n for n in z.namelist() if n.endswith("/scripts/uv"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
    os.chmod(target, 0o755)


if __name__ == "__main__":
    for version in VERSIONS:
        fetch(version)
