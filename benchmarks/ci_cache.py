"""The CI recipe measured (docs/ci.md): what a cache saved after `uvrefs collect` holds,
next to `uv cache prune --ci` and no pruning, for a real project whose dependencies moved
between two CI runs. Needs PyPI. Run: .venv/bin/python benchmarks/ci_cache.py"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
WORK = HERE / ".bench" / "ci"
BIN = Path(sys.executable).parent
UV, UVREFS = str(BIN / "uv"), str(BIN / "uvrefs")
RUN1 = ["requests==2.31.0", "rich==13.7.1", "pydantic==2.9.2", "python-dateutil"]
RUN2 = ["requests==2.32.3", "rich==13.9.4", "pydantic==2.10.6", "python-dateutil"]


def project(deps: list[str]) -> Path:
    root = WORK / "checkout"  # a CI runner checks out to the same path every time
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    listed = ", ".join(f'"{d}"' for d in deps)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "app"\nversion = "0"\nrequires-python = ">=3.11"\ndependencies = [{listed}]\n'
        "[tool.uv]\npackage = false\n"
    )
    return root


def sh(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("UV_", "UVREFS_", "VIRTUAL_ENV"))
    }
    env.update(
        UV_CACHE_DIR=str(WORK / "cache"),
        UVREFS_DIR=str(WORK / "state"),
        UVREFS_HOST="ci",
        UVREFS_UV=UV,
        UV_PYTHON_DOWNLOADS="never",
    )
    done = subprocess.run(list(args), cwd=cwd, env=env, check=False, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"{args} failed:\n{done.stderr}")
    return done.stdout if check else str(done.returncode)


def size() -> int:
    return int(sh(UV, "cache", "size", "--preview-features", "cache-size").strip().splitlines()[-1])


def run(deps: list[str], after: str) -> int:
    """One CI job: check out, sync through uvrefs, then clean up as `after` says."""
    root = project(deps)
    sh(UVREFS, "uv", "sync", "-q", "--python", sys.executable, cwd=root)
    if after == "uvrefs":
        sh(UVREFS, "collect")
    elif after == "prune-ci":
        sh(UV, "cache", "prune", "--ci")
    return size()


def main() -> None:
    rows = []
    for after in ("nothing", "prune-ci", "uvrefs"):
        shutil.rmtree(WORK, ignore_errors=True)
        run(RUN1, "nothing")  # yesterday's job filled the cache
        saved = run(RUN2, after)  # today's job, dependencies moved on
        root = project(RUN2)  # tomorrow's job, same dependencies, no network
        offline = sh(
            UV, "sync", "-q", "--offline", "--python", sys.executable, cwd=root, check=False
        )
        rows.append((after, saved, offline == "0"))
    for after, saved, ok in rows:
        print(f"| {after} | {saved / 2**20:.1f} MiB | {'yes' if ok else 'no'} |")


if __name__ == "__main__":
    main()
