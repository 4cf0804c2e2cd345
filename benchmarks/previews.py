"""`make bench-previews`: what uvrefs frees under each cache-related preview layout of the
pinned uv, on real packages (numpy and pandas), measured by `uv cache size`. Writes
docs/benchmarks-previews.md.

For each layout (none, each preview feature alone, all together), on a throw-away cache:
- *envs*: numpy + pandas installed through uvrefs for two Pythons, the older venv deleted;
- *projects*: project A (pandas) synced through uvrefs, project B (numpy) with plain uv, A
  deleted (under `centralized-project-envs` A's environment lives in uv's cache).
Then `uv cache prune` (what uv frees by itself), `uvrefs collect` (what it says it frees
and what `uv cache size` says went), the living env reinstalled `--offline` and imported,
and `uv cache prune -v` once more (what it still finds to remove besides uv's cached
environments: nothing, when uvrefs left no garbage). Wheels are downloaded once into a
local wheelhouse, so every layout installs the same files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
WORK = HERE / ".bench-previews"
BIN = Path(sys.executable).parent
UV = str(BIN / "uv")
UVREFS = str(BIN / "uvrefs")
FEATURES = [
    "",
    "content-addressed-cache",
    "centralized-project-envs",
    "venv-redirect-files",
    "relocatable-envs-default",
    "content-addressed-cache,centralized-project-envs,venv-redirect-files,relocatable-envs-default",
]
PACKAGES = ["numpy", "pandas"]


def env_for(features: str, case: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "UVREFS_", "VIRTUAL"))}
    env.update(
        UV_CACHE_DIR=str(WORK / case / "cache"),
        UVREFS_DIR=str(WORK / case / "state"),
        UVREFS_UV=UV,
        UVREFS_RECORD="foreground",
        UV_PYTHON_DOWNLOADS="never",
        NO_COLOR="1",
    )
    if features:
        env["UV_PREVIEW_FEATURES"] = features
    return env


def run(env: dict[str, str], *args: str | Path, cwd: Path | None = None, err: bool = False) -> str:
    done = subprocess.run(
        [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"bench-previews: {' '.join(map(str, args))} failed:\n{done.stderr[-2000:]}")
    return done.stderr if err else done.stdout


def size(env: dict[str, str]) -> int:
    out = run(env, UV, "cache", "size", "--preview-features", "cache-size")
    return int(out.split()[0])


def python(minor: str) -> str:
    """An installed CPython `minor`: uv's view first, then pyenv's versions."""
    found = subprocess.run(
        [UV, "python", "find", "--no-python-downloads", minor],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode == 0:
        return found.stdout.strip()
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    for candidate in sorted(root.glob(f"{minor}.*/bin/python{minor}")):
        return str(candidate)
    sys.exit(f"bench-previews: needs Python {minor} (uv python find {minor}, or pyenv)")


def wheelhouse(pythons: list[str]) -> Path:
    """numpy and pandas (and their dependencies) for each Python, downloaded once, laid out
    as a simple index (PEP 503) so that uv caches them as registry wheels: an offline
    reinstall then comes from the cache alone and fails if an entry it needs was freed."""
    house = WORK / "wheels"
    if not house.is_dir():
        for py in pythons:
            subprocess.run(
                [py, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", house, *PACKAGES],
                check=True,
            )
    simple = WORK / "simple"
    shutil.rmtree(simple, ignore_errors=True)
    by_name: dict[str, list[str]] = {}
    for wheel in sorted(house.glob("*.whl")):
        name = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        by_name.setdefault(name, []).append(wheel.name)
    for name, files in by_name.items():
        (simple / name).mkdir(parents=True)
        links = "".join(f'<a href="../../wheels/{f}">{f}</a>\n' for f in files)
        (simple / name / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
    return simple


def serve(directory: Path) -> str:
    """Serve WORK on the loopback interface for the length of the run; the index URL."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(directory))

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # uv closing a connection early is not a failure of the bench

    server = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/simple/"


def leftovers(env: dict[str, str]) -> list[str]:
    """What `uv cache prune` still removes that is not one of uv's cached environments (it
    always removes those) or the store registry (likewise)."""
    out = run(env, UV, "cache", "prune", "-v", err=True)
    return [
        line
        for line in out.splitlines()
        if "Removing" in line and "cached environment" not in line and ".uvrefs-stores" not in line
    ]


def measure(env: dict[str, str], case: Path) -> dict[str, object]:
    """`uv cache prune` on a copy of the cache (`cp -a` keeps its hard links; prune also
    deletes every environment in uv's cache, living projects' included), then `uvrefs
    collect` on the cache itself, its report against the drop in `uv cache size`."""
    copy = case / "cache-copy"
    subprocess.run(["cp", "-a", env["UV_CACHE_DIR"], copy], check=True)
    on_copy = dict(env, UV_CACHE_DIR=str(copy))
    before_copy = size(on_copy)
    run(on_copy, UV, "cache", "prune", "-q")
    pruned = before_copy - size(on_copy)
    shutil.rmtree(copy)
    before = size(env)
    start = time.perf_counter()
    done = json.loads(run(env, UVREFS, "collect", "--json"))
    seconds = time.perf_counter() - start
    return {
        "before": before,
        "prune": pruned,
        "reported": done["bytes_freed"],
        "drop": before - size(env),
        "entries": len(done["freed"]),
        "blobs": done["content_blobs"]["count"],
        "project_envs": len(done["project_envs"]),
        "errors": len(done["errors"]),
        "seconds": seconds,
    }


def envs_case(features: str, index: str, old_py: str, new_py: str) -> dict[str, object]:
    case = WORK / "envs"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir(parents=True)
    env = env_for(features, "envs")
    old, new = case / "old", case / "new"
    for venv, py in ((old, old_py), (new, new_py)):
        run(env, UV, "venv", "-q", "-p", py, venv)
        run(env, UVREFS, "install", "-q", "-p", venv, "--index-url", index, *PACKAGES)
    shutil.rmtree(old)
    result = measure(env, case)
    offline = ["--offline", "--index-url", index]
    run(env, UV, "pip", "install", "-q", "--reinstall", "-p", new, *offline, *PACKAGES)
    run(env, new / "bin" / "python", "-c", "import numpy, pandas")
    result["left"] = len(leftovers(env))
    return result


def projects_case(features: str, index: str, py: str) -> dict[str, object]:
    case = WORK / "projects"
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir(parents=True)
    env = env_for(features, "projects")
    for name, deps, tracked in (("proj-a", "pandas", True), ("proj-b", "numpy", False)):
        proj = case / name
        proj.mkdir()
        (proj / "pyproject.toml").write_text(
            f'[project]\nname = "{name}"\nversion = "0.1"\nrequires-python = ">=3.9"\n'
            f'dependencies = ["{deps}"]\n[tool.uv]\npackage = false\n'
        )
        command = [UVREFS, "uv"] if tracked else [UV]
        run(env, *command, "sync", "-q", "-p", py, "--index-url", index, cwd=proj)
    shutil.rmtree(case / "proj-a")
    result = measure(env, case)
    b = case / "proj-b"
    run(env, b / ".venv" / "bin" / "python", "-c", "import numpy")
    run(env, UV, "sync", "-q", "--reinstall", "--offline", "-p", py, "--index-url", index, cwd=b)
    run(env, b / ".venv" / "bin" / "python", "-c", "import numpy")
    result["left"] = len(leftovers(env))
    return result


def mib(n: object) -> str:
    return f"{int(n) / 2**20:.1f} MiB"  # type: ignore[call-overload]


def main() -> None:
    WORK.mkdir(exist_ok=True)
    old_py, new_py = python("3.9"), python("3.11")
    wheelhouse([old_py, new_py])
    index = serve(WORK)
    version = run(env_for("", "envs"), UV, "--version").strip()
    rows = []
    for features in FEATURES:
        label = features.replace(",", ", ") if features.count(",") < 3 else "all four"
        for name, result in (
            ("envs", envs_case(features, index, old_py, new_py)),
            ("projects", projects_case(features, index, new_py)),
        ):
            ok = result["reported"] == result["drop"]
            print(f"{label or 'none'} / {name}: {result}", flush=True)
            rows.append(
                f"| {label or 'none (default layout)'} | {name} | {mib(result['before'])} "
                f"| {mib(result['prune'])} | {mib(result['reported'])} | {mib(result['drop'])} "
                f"| {'equal' if ok else 'DIFFERENT'} | {result['entries']} / "
                f"{result['project_envs']} / {result['blobs']} | {result['seconds']:.2f} s "
                f"| {result['errors']} | {result['left']} |"
            )
    text = (
        f"""# uv's preview layouts: what uvrefs frees

Measured by `make bench-previews` (`benchmarks/previews.py`) with {version}, default link
mode (clone; on this filesystem uv falls back to hard links), numpy and pandas (with their
dependencies) from a local index served on the loopback interface, so uv caches them as
registry wheels. *envs*: installed through `uvrefs install` for Python 3.9 and 3.11, the
3.9 venv deleted. *projects*: project A (pandas) synced through `uvrefs uv sync`, project B
(numpy) with plain uv, A deleted. Sizes are `uv cache size`. `uv cache prune` ran on a
`cp -a` copy of the cache (it deletes every environment in uv's cache, living projects'
included, so it could not run first). After the collect the living env was imported,
reinstalled `--offline --reinstall` from the cache alone and imported again, in every row;
`uv cache prune -v` then found the number of paths in the last column to remove (uv's
cached environments and the store registry, which it always removes, apart).

| layout | case | cache before | `uv cache prune` frees | uvrefs reports | `uv cache size` drop | reported vs drop | entries / project envs / lone blobs freed | collect time | errors | left for prune |
|---|---|---|---|---|---|---|---|---|---|---|
"""
        + "\n".join(rows)
        + "\n"
    )
    (HERE / "docs" / "benchmarks-previews.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
