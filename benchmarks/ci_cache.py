"""docs/ci.md's measurements: 12 CI jobs of a real project (requests, rich, pydantic,
numpy; a bump, an added dependency, a bump of numpy, a removal and a Python switch along
the way), each in a fresh workspace at another path and with a fresh HOME, the uv cache
and the uvrefs state dir saved and restored between jobs as actions/cache does them:

- the cache key is docs/ci.md's (`uv-Linux-<hash of uv.lock and .python-version>`); a
  job restores the cache saved under its key, else the newest one saved (restore-keys
  `uv-Linux-`), and saves at its end only when its key was not restored exactly (a hit
  is never saved again);
- saving and restoring is a `tar` of `.uv-cache` and `.uvrefs` (actions/cache tars them).

Each way of cleaning up before the save runs the same 12 jobs: none (plain uv), `uv cache
prune --ci`, and `uvrefs collect` (uvrefs installed outside the cache, as docs/ci.md's
recipe does: its own uv cache and tool dir, outside every workspace; installed once, from
this checkout). Per job: the cache as saved (`uv cache size`), the wheels uv unpacked in
the job (new directories in `archive-v0`, each named by its dist-info and WHEEL tags; uv's
"Prepared N packages" agrees) and how many of them an earlier job had already had (one
unpacked in an earlier job: a download a cache that kept it would have saved), and for
uvrefs the state dir's size and its `caches/` folders.

Needs PyPI (lock files are made once, with `exclude-newer`, so every run resolves the
same versions) and Pythons 3.11 and 3.12 (found with `uv python find`). Run:
.venv/bin/python benchmarks/ci_cache.py [--uvrefs [NAME=]PATH ...]: each PATH (a uvrefs
source tree, such as a worktree of an older commit) adds a line for uvrefs measured with it;
`--table` prints the last run's table again."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
WORK = HERE / ".bench" / "ci"
BIN = Path(sys.executable).parent
UV = str(BIN / "uv")
EXCLUDE_NEWER = "2025-06-01T00:00:00Z"

BASE = ["requests==2.31.0", "rich==13.7.1", "pydantic==2.9.2", "numpy==1.26.4"]
BUMPED = ["requests==2.32.3", "rich==13.9.4", "pydantic==2.10.6", "numpy==1.26.4"]
ADDED = [*BUMPED, "python-dateutil==2.9.0.post0"]
NUMPY2 = [d if not d.startswith("numpy") else "numpy==2.2.6" for d in ADDED]
REMOVED = [d for d in NUMPY2 if not d.startswith("rich")]
# (what changed, dependencies, Python): 12 jobs
JOBS = [
    ("first job", BASE, "3.11"),
    ("same lock", BASE, "3.11"),
    ("bump requests, rich, pydantic", BUMPED, "3.11"),
    ("same lock", BUMPED, "3.11"),
    ("add python-dateutil", ADDED, "3.11"),
    ("same lock", ADDED, "3.11"),
    ("bump numpy 1.26 -> 2.2", NUMPY2, "3.11"),
    ("same lock", NUMPY2, "3.11"),
    ("remove rich", REMOVED, "3.11"),
    ("Python 3.11 -> 3.12", REMOVED, "3.12"),
    ("same lock", REMOVED, "3.12"),
    ("same lock", REMOVED, "3.12"),
]


def pyproject(deps: list[str]) -> str:
    listed = ", ".join(f'"{d}"' for d in deps)
    return (
        f'[project]\nname = "app"\nversion = "0"\nrequires-python = ">=3.11"\n'
        f"dependencies = [{listed}]\n\n[tool.uv]\npackage = false\n"
        f'exclude-newer = "{EXCLUDE_NEWER}"\n'
    )


def base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "UVREFS_", "VIRTUAL_ENV", "CONDA", "PYENV"))
    }
    pythons = [os.path.dirname(pythons_found()[v]) for v in ("3.11", "3.12")]
    path = [p for p in env.get("PATH", "").split(os.pathsep) if ".pyenv" not in p]
    env.update(
        PATH=os.pathsep.join([str(BIN), *pythons, *path]),
        UV_PYTHON_DOWNLOADS="never",
        UV_PYTHON_PREFERENCE="only-system",
        UV_NO_PROGRESS="1",
        NO_COLOR="1",
    )
    return env


_PYTHONS: dict[str, str] = {}


def pythons_found() -> dict[str, str]:
    """The real executables of Python 3.11 and 3.12: uv's or the system's, else pyenv's
    (its shims resolved)."""
    if not _PYTHONS:
        for version in ("3.11", "3.12"):
            found = subprocess.run(
                [UV, "python", "find", "--system", version],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
            ).stdout.strip()
            pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
            found = found or next(
                (str(p) for p in sorted(pyenv.glob(f"{version}.*/bin/python{version}"))), ""
            )
            if not found:
                raise SystemExit(f"needs Python {version} (uv python find, or pyenv's)")
            real = subprocess.run(
                [found, "-c", "import sys; print(sys.executable)"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            _PYTHONS[version] = os.path.realpath(real)
    return _PYTHONS


def run(
    args: list[str], env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def make_locks() -> dict[tuple[str, ...], str]:
    """uv.lock of every dependency set, made once in a scratch cache (a project's lock file
    is committed: no job makes it)."""
    locks = {}
    env = {**base_env(), "UV_CACHE_DIR": str(WORK / "lock-cache"), "HOME": str(WORK / "lock")}
    for _, deps, _ in JOBS:
        if tuple(deps) in locks:
            continue
        root = WORK / "lock" / f"p{len(locks)}"
        root.mkdir(parents=True)
        (root / "pyproject.toml").write_text(pyproject(deps))
        run([UV, "lock", "-q"], env, cwd=root)
        locks[tuple(deps)] = (root / "uv.lock").read_text()
    return locks


def install_uvrefs(source: Path, name: str) -> Path:
    """uvrefs as docs/ci.md's recipe installs it: its own uv cache and tool dir, outside
    every workspace and outside the cached UV_CACHE_DIR. From `source` (a path: the
    recipe's git URL names the same tree)."""
    tools = WORK / "tools" / name
    env = {
        **base_env(),
        "UV_CACHE_DIR": str(WORK / "uvrefs-install-cache"),
        "UV_TOOL_DIR": str(tools),
        "UV_TOOL_BIN_DIR": str(tools / "bin"),
        "HOME": str(WORK / "tools-home"),
    }
    run([UV, "tool", "install", "-q", "--python", pythons_found()["3.11"], str(source)], env)
    return tools / "bin" / "uvrefs"


@dataclass
class Row:
    change: str
    key_hit: bool
    saved: bool
    size: int  # bytes of the cache the next job restores (`uv cache size`)
    unpacked: int
    again: int  # of those, wheels an earlier job had already had
    again_names: list[str]
    prepared: int  # uv's "Prepared N packages"
    store_bytes: int = 0
    store_folders: int = 0


@dataclass
class Variant:
    name: str
    cleanup: str  # "none", "prune-ci" or "uvrefs"
    uvrefs: Path | None = None
    rows: list[Row] = field(default_factory=list)


def wheel_of(archive: Path) -> str:
    """`name version tags` of an unpacked wheel."""
    info = next(archive.glob("*.dist-info"), None)
    if info is None:
        return f"? {archive.name}"
    name, _, version = info.name.removesuffix(".dist-info").partition("-")
    tags = [
        line.split(":", 1)[1].strip()
        for line in (info / "WHEEL").read_text().splitlines()
        if line.startswith("Tag:")
    ]
    return f"{name} {version} {'.'.join(sorted(tags))}"


def archives(cache: Path) -> dict[str, str]:
    bucket = cache / "archive-v0"
    return {a.name: wheel_of(a) for a in bucket.iterdir()} if bucket.is_dir() else {}


def tree_bytes(path: Path) -> int:
    seen, total = set(), 0
    for root, dirs, names in os.walk(path):
        for n in dirs + names:
            st = os.lstat(os.path.join(root, n))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def play(variant: Variant, locks: dict[tuple[str, ...], str]) -> None:
    """The 12 jobs, with this variant's cleanup before each save."""
    top = WORK / variant.name
    saved_dir = top / "saved"
    saved_dir.mkdir(parents=True)
    saved: list[str] = []  # keys, oldest first
    had: set[str] = set()
    for number, (change, deps, python) in enumerate(JOBS, 1):
        job = top / f"job-{number:02d}"  # a new path every job
        ws, home = job / "builds" / "app", job / "home"
        ws.mkdir(parents=True)
        home.mkdir()
        lock = locks[tuple(deps)]
        (ws / "pyproject.toml").write_text(pyproject(deps))
        (ws / "uv.lock").write_text(lock)
        (ws / ".python-version").write_text(python + "\n")
        env = {
            **base_env(),
            "HOME": str(home),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local/share"),
            "XDG_STATE_HOME": str(home / ".local/state"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "UV_CACHE_DIR": str(ws / ".uv-cache"),
            "UVREFS_DIR": str(ws / ".uvrefs"),
            "UVREFS_HOST": "ci",
            "UVREFS_UV": UV,
        }
        key = "uv-Linux-" + hashlib.sha256((lock + python).encode()).hexdigest()[:16]
        restore = key if key in saved else (saved[-1] if saved else None)
        if restore is not None:
            run(["tar", "-C", str(ws), "-xf", str(saved_dir / f"{restore}.tar")], env)
        cache = ws / ".uv-cache"
        before = archives(cache)
        if variant.uvrefs is not None:
            synced = run([str(variant.uvrefs), "sync", "--locked"], env, cwd=ws)
        else:
            synced = run([UV, "sync", "--locked"], env, cwd=ws)
        modules = "requests, pydantic, numpy" + (", rich" if "rich" in " ".join(deps) else "")
        run([UV, "run", "--locked", "python", "-c", f"import {modules}"], env, cwd=ws)
        after = archives(cache)
        new = [after[a] for a in sorted(after.keys() - before.keys())]
        again = sorted(w for w in new if w in had)
        had |= set(after.values())
        prepared = re.search(r"Prepared (\d+) packages?", synced.stderr)
        if variant.cleanup == "prune-ci":
            run([UV, "cache", "prune", "--ci", "-q"], env, cwd=ws)
        elif variant.uvrefs is not None:
            run([str(variant.uvrefs), "collect"], env, cwd=ws)
        hit = restore == key
        if not hit:
            paths = [p for p in (".uv-cache", ".uvrefs") if (ws / p).exists()]
            run(["tar", "-C", str(ws), "-cf", str(saved_dir / f"{key}.tar"), *paths], env)
            saved.append(key)
        # the cache the next job restores (a hit saves nothing: the saved one stays)
        check = job / "check"
        check.mkdir()
        run(["tar", "-C", str(check), "-xf", str(saved_dir / f"{saved[-1]}.tar")], env)
        size = run(
            [UV, "cache", "size", "--preview-features", "cache-size"],
            {**env, "UV_CACHE_DIR": str(check / ".uv-cache")},
        ).stdout.split()[-1]
        state = check / ".uvrefs"
        row = Row(
            change,
            hit,
            not hit,
            int(size),
            len(new),
            len(again),
            again,
            int(prepared.group(1)) if prepared else 0,
            tree_bytes(state) if state.exists() else 0,
            len(os.listdir(state / "caches")) if (state / "caches").is_dir() else 0,
        )
        variant.rows.append(row)
        print(
            f"{variant.name} job {number}: {change}; {row.size / 2**20:.1f} MiB saved, "
            f"{row.unpacked} wheels unpacked ({row.prepared} prepared), {row.again} again"
            f"{': ' + ', '.join(again) if again else ''}; store {row.store_bytes} B in "
            f"{row.store_folders} folders",
            file=sys.stderr,
        )
        shutil.rmtree(job)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    fs = run(["df", "--output=fstype", str(WORK)], dict(os.environ)).stdout.split()[-1]
    pythons = [
        run(
            [p, "-c", "import platform; print(platform.python_version())"], dict(os.environ)
        ).stdout.strip()
        for p in pythons_found().values()
    ]
    uv = run([UV, "--version"], dict(os.environ)).stdout.strip()
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, {uv}, "
        f"Pythons {' and '.join(pythons)}, filesystem {fs}"
    )


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def table(rows: dict[str, list[dict[str, Any]]]) -> str:
    """The saved cache after each job for plain uv, `prune --ci` and uvrefs, with the
    wheels each job downloaded again, and uvrefs's state dir; a line for each other
    uvrefs measured (`--uvrefs`)."""
    main = ["plain uv", "prune --ci", "uvrefs"]
    lines = [
        "| job | what changed | cache key | plain uv | `uv cache prune --ci` | `uvrefs collect` "
        "| uvrefs's state dir |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, (change, *_) in enumerate(JOBS):
        cells = [
            f"{mib(rows[v][i]['size'])} ({rows[v][i]['again']} of {rows[v][i]['unpacked']})"
            for v in main
        ]
        ours = rows["uvrefs"][i]
        folders = ours["store_folders"]
        store = f"{ours['store_bytes'] / 1024:.0f} KiB, {folders} folder{'s' * (folders != 1)}"
        key = "saved" if ours["saved"] else "hit: not saved"
        lines.append(f"| {i + 1} | {change} | {key} | " + " | ".join(cells) + f" | {store} |")
    again = [
        f"{sum(r['again'] for r in rows[v])} of {sum(r['unpacked'] for r in rows[v])}" for v in main
    ]
    lines.append("| all jobs | downloaded again | | " + " | ".join(again) + " | |")
    for name, other in rows.items():
        if name in main:
            continue
        last = other[-1]
        lines.append(
            f"\n{name}: {mib(last['size'])} saved after job 12 "
            f"({', '.join(mib(r['size']) for r in other)}), "
            f"{sum(r['again'] for r in other)} of {sum(r['unpacked'] for r in other)} downloaded "
            f"again, its state dir {last['store_bytes'] / 1024:.0f} KiB in "
            f"{last['store_folders']} folders"
        )
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:] == ["--table"]:  # the last run's results, as a table again
        print(table(json.loads((WORK / "results.json").read_text())["variants"]))
        return
    extra = [
        arg.partition("=")[::2] if "=" in arg else (f"uvrefs {Path(arg).name}", arg)
        for arg in (sys.argv[sys.argv.index("--uvrefs") + 1 :] if "--uvrefs" in sys.argv else [])
    ]
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    print(machine(), file=sys.stderr)
    locks = make_locks()
    variants = [
        Variant("plain uv", "none"),
        Variant("prune --ci", "prune-ci"),
        Variant("uvrefs", "uvrefs", install_uvrefs(HERE, "uvrefs")),
    ]
    for n, (name, source) in enumerate(extra):
        variants.append(Variant(name, "uvrefs", install_uvrefs(Path(source).resolve(), f"x{n}")))
    for variant in variants:
        play(variant, locks)
    rows = {v.name: [r.__dict__ for r in v.rows] for v in variants}
    (WORK / "results.json").write_text(
        json.dumps({"machine": machine(), "variants": rows}, indent=1)
    )
    print(machine())
    print(table(rows))


if __name__ == "__main__":
    main()
