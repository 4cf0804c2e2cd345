"""`make bench`: uvrefs side by side with plain uv (and du, rm -rf, uv cache prune),
interleaved in one run, medians and ratios written to docs/benchmarks.md. Everything runs
on throw-away caches under .bench/.

1. no-op `uvrefs install` vs `uv pip install` on envs of 20 and 200 packages;
2. the cost of recording a fresh 100-package install vs uv's own time for it;
3. synthetic caches of ~10k and ~100k files with 50 and 200 envs, half of them dead:
   `collect --dry-run` vs `du -s`, `collect` vs `rm -rf` of exactly the dead entries, and
   `uv cache prune` on the same cache;
4. scaling of `collect --dry-run` and `collect` at 1x, 4x and 16x entries and envs;
5. a store shared by 100 hosts x 20 envs: `collect --dry-run` time and memory against the
   same cache with this host's records only.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
WORK = HERE / ".bench"
BIN = Path(sys.executable).parent
UV = str(BIN / "uv")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "21"))
sys.path.insert(0, str(HERE))

from tests.wheels import build_wheel  # noqa: E402

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "UVREFS_", "VIRTUAL_ENV"))}
ENV.update(
    UV_CACHE_DIR=str(WORK / "cache"),
    UVREFS_DIR=str(WORK / "state"),
    UVREFS_UV=UV,
    UVREFS_RECORD="foreground",  # whatever the terminal; the background row sets its own
    UV_PYTHON_DOWNLOADS="never",
    NO_COLOR="1",
)


def sh(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], env=ENV, check=True, stdout=subprocess.DEVNULL)


def timed(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(
        [str(a) for a in args], env=env or ENV, check=True, stdout=subprocess.DEVNULL, cwd=cwd
    )
    return time.perf_counter() - start


def uvrefs_binary() -> tuple[str, str]:
    """uvrefs as users get it: a regular (not editable) install in a venv of its own."""
    tool = WORK / "tool"
    sh(UV, "venv", "-q", "-p", sys.executable, tool)
    try:
        sh(UV, "pip", "install", "-q", "--compile-bytecode", "-p", tool, HERE)
        return str(tool / "bin/uvrefs"), "regular install in its own venv, bytecode compiled"
    except subprocess.CalledProcessError:  # no index reachable for the build backend
        return str(BIN / "uvrefs"), "editable install (no index reachable to build a wheel)"


def packages(count: int) -> list[str]:
    wheels = WORK / "wheels"
    wheels.mkdir(exist_ok=True)
    names = [f"pkg{i:04d}" for i in range(count)]
    for name in names:
        if not (wheels / f"{name}-1.0-py3-none-any.whl").exists():
            build_wheel(wheels, name, "1.0", files={f"{name}/mod.py": b"x = 1\n" * 200})
    return ["--no-index", "--find-links", str(wheels), *names]


def noop(uvrefs: str, count: int) -> dict[str, float]:
    env = WORK / f"noop{count}"
    sh(UV, "venv", "-q", "-p", sys.executable, env)
    args = ["-q", "-p", env, *packages(count)]
    sh(uvrefs, "install", *args)
    return paired([UV, "pip", "install", *args], [uvrefs, "install", *args])


def paired(
    uv_cmd: list[str | Path], uvrefs_cmd: list[str | Path], cwd: Path | None = None
) -> dict[str, float]:
    """uv's command and uvrefs's, back to back, `ROUNDS` times (`summary`)."""
    uv_times, uvrefs_times = [], []
    for _ in range(ROUNDS):
        uv_times.append(timed(*uv_cmd, cwd=cwd))
        uvrefs_times.append(timed(*uvrefs_cmd, cwd=cwd))
    return summary(uv_times, uvrefs_times)


def noop_sync(uvrefs: str, count: int) -> dict[str, float]:
    """`uvrefs sync` against `uv sync` in a project whose env is up to date."""
    project = WORK / f"sync{count}"
    project.mkdir()
    args = packages(count)
    names, links = args[3:], args[:3]
    deps = ", ".join(f'"{n}"' for n in names)
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "sync{count}"\nversion = "0.1"\nrequires-python = ">=3.8"\n'
        f"dependencies = [{deps}]\n[tool.uv]\npackage = false\n"
    )
    sync = ["sync", "-q", "-p", sys.executable, *links]
    subprocess.run([uvrefs, *sync], env=ENV, cwd=project, check=True)
    return paired([UV, *sync], [uvrefs, *sync], cwd=project)


def alias(uvrefs: str) -> dict[str, float]:
    """`uvrefs uv --version` (the shell alias's forwarding path) against `uv --version`."""
    return paired([UV, "--version"], [uvrefs, "uv", "--version"])


def status(uvrefs: str) -> dict[str, float]:
    """`uvrefs status` against `uv cache size` on the cache the installs above made."""
    return paired([UV, "cache", "size"], [uvrefs, "status"])


def fresh(uvrefs: str, count: int) -> tuple[dict[str, float], dict[str, float]]:
    """uv, uvrefs recording in the foreground (scripts, CI) and uvrefs recording in the
    background (a terminal), interleaved; the background recorder is waited for (outside
    the timing) before the next install, so no run overlaps another. The disk is synced
    before each run, so no run starts with an earlier one's files still to write back,
    and the order is reversed every other round, so neither run of a pair always follows
    the other: on a disk that slows as it is used (uv alone took 132, 212, 249 and 288 ms
    in four runs back to back here) neither may favour one side. Neither moved the
    foreground row beyond its round-to-round noise on this machine."""
    args = packages(count)
    sh(UV, "venv", "-q", "-p", sys.executable, WORK / "warm")
    sh(UV, "pip", "install", "-q", "-p", WORK / "warm", *args)  # cache warm: uv only links
    times: dict[str, list[float]] = {"uv": [], "foreground": [], "background": []}
    rounds = max(16, ROUNDS // 2 * 2)  # disk noise: more rounds than the rest, an even count
    for i in range(rounds):
        for mode in list(times) if i % 2 == 0 else list(reversed(times)):
            found = times[mode]
            env = WORK / f"fresh-{i}-{mode}"
            sh(UV, "venv", "-q", "-p", sys.executable, env)
            os.sync()  # no run pays for writing back what the rounds before it left dirty
            cmd = [UV, "pip", "install"] if mode == "uv" else [uvrefs, "install"]
            found.append(timed(*cmd, "-q", "-p", env, *args, env={**ENV, "UVREFS_RECORD": mode}))
            wait_for_recorder()
            shutil.rmtree(env)
    return summary(times["uv"], times["foreground"]), summary(times["uv"], times["background"])


def wait_for_recorder() -> None:
    """Block until a background recorder is done, as uvrefs's own readers wait."""
    from uvrefs.store import stamps

    store = stamps.store_dir(ENV["UVREFS_DIR"], ENV["UV_CACHE_DIR"])
    if not stamps.wait_for_recorders(store, timeout=60):
        raise SystemExit("a background recorder did not finish within 60 s")


FLOORS = {
    "start": "pass",
    "forward": "import uvrefs.launch, uvrefs.track",
    "record": "import uvrefs.launch, uvrefs.track, uvrefs.store.refs, uvrefs.store.registry, "
    "uvrefs.envs, uvrefs.hosts, uvrefs.settings",
    "collect": "import uvrefs.launch, uvrefs.cli, uvrefs.gc.runner, uvrefs.gc.collect, uvrefs.report, uvrefs.store.refs",
    "frameworks": "import typer; import uvrefs.store.schema",  # pydantic loads lazily: build models
}


def import_floors(uvrefs: str) -> dict[str, float]:
    """Milliseconds for uvrefs's interpreter to start and import what each path needs:
    the part of an overhead no code of ours runs in."""
    python = str(Path(uvrefs).parent / "python")
    found: dict[str, float] = {}
    for name, statement in FLOORS.items():
        # -I: as the console script runs, without the current directory (this checkout's
        # uvrefs/) on sys.path
        runs = [timed(python, "-I", "-c", statement) for _ in range(21)]
        found[name] = statistics.median(runs) * 1e3
    return found


def summary(uv_times: list[float], uvrefs_times: list[float]) -> dict[str, float]:
    """Medians of each, and the overhead as the median of the per-round differences: the
    two runs of a round are back to back, so a slow patch of disk hits both."""
    m = statistics.median
    uv_ms = m(uv_times) * 1e3
    overhead = m(b - a for a, b in zip(uv_times, uvrefs_times, strict=True)) * 1e3
    return {
        "uv": uv_ms,
        "uvrefs": m(uvrefs_times) * 1e3,
        "overhead": overhead,
        "ratio": (uv_ms + overhead) / uv_ms,
    }


def restore(pristine: Path, run: Path) -> None:
    """Put a pristine copy back at the same path (refs name env paths absolutely);
    `cp -a` keeps the hard links between the cache and the envs."""
    subprocess.run(["rm", "-rf", str(run)], check=True)
    subprocess.run(["cp", "-a", str(pristine), str(run)], check=True)
    subprocess.run(["sync"], check=True)  # no writeback of the copy left to slow the run


def put_back(pristine: Path, run: Path, dead_paths: list[Path]) -> None:
    """Undo a `collect` or an `rm -rf` of the dead entries: copy back exactly those paths
    and the whole refs store. The dead entries are linked from no env, so copies of them
    are what the pristine tree holds; the live entries and envs were never touched."""
    subprocess.run(["rm", "-rf", str(run / "state"), *map(str, dead_paths)], check=True)
    rels = sorted({str(p.relative_to(run)) for p in dead_paths})
    subprocess.run(["cp", "-a", "--parents", "state", *rels, str(run)], cwd=pristine, check=True)
    subprocess.run(["sync"], check=True)


def collect_case(
    uvrefs: str,
    label: str,
    entries: int,
    files: int,
    envs: int,
    rounds: int,
    destructive: int,
    **extra: int,
) -> dict[str, float]:
    from benchmarks.synthetic import build

    run, pristine = WORK / "syn", WORK / "syn-pristine"
    world = build(run, entries, files, envs, **extra)
    restore_env = {**ENV, "UV_CACHE_DIR": str(world.cache), "UVREFS_DIR": str(world.state)}
    shutil.rmtree(pristine, ignore_errors=True)
    subprocess.run(["cp", "-a", str(run), str(pristine)], check=True)

    def t(*args: str | Path) -> float:
        start = time.perf_counter()
        subprocess.run(
            [str(a) for a in args], env=restore_env, check=True, stdout=subprocess.DEVNULL
        )
        return time.perf_counter() - start

    dry, du, coll, rm, prune, held, deleting = [], [], [], [], [], [], []
    for _ in range(rounds):
        dry.append(t(uvrefs, "collect", "--dry-run"))  # the first walks every dead archive
        du.append(t("du", "-s", world.cache))
    prune.append(t(UV, "cache", "prune", "-q"))  # frees nothing here (see below)
    restore(pristine, run)  # undo whatever the dry runs and prune wrote
    for _ in range(destructive):
        start = time.perf_counter()
        done = subprocess.run(
            [uvrefs, "collect", "--json"], env=restore_env, check=True, capture_output=True
        )
        coll.append(time.perf_counter() - start)
        doc = json.loads(done.stdout)
        held.append(doc["lock_held_seconds"])
        deleting.append(doc["deleting_seconds"])
        put_back(pristine, run, world.dead_paths)
        rm.append(t("rm", "-rf", *world.dead_paths))
        put_back(pristine, run, world.dead_paths)
    m = statistics.median
    return {
        "label": label,
        "files": world.files,
        "envs": envs,
        "dead": len(world.dead_paths) // 4,
        "dry_cold": dry[0],
        "dry": m(dry[1:]) if len(dry) > 1 else dry[0],
        "du": m(du),
        "collect": m(coll) if coll else 0.0,
        "rm": m(rm) if rm else 0.0,
        "prune": m(prune),
        "held": m(held) if held else 0.0,
        "deleting": m(deleting) if deleting else 0.0,
    }


def discovery_case(dirs: int = 100_000, envs: int = 200, rounds: int = 5) -> dict[str, float]:
    """uvrefs's search for environments (`roots.discover`, what `watch` and the default
    holders use) against `find DIR -name pyvenv.cfg` on the same tree of `dirs` directories
    (100 x 100 x 10), `envs` of them environments. Both warm (run once first)."""
    import random

    top = WORK / "tree"
    shutil.rmtree(top, ignore_errors=True)
    leaves = [
        top / f"a{a:03d}" / f"b{b:03d}" / f"c{c}"
        for a in range(100)
        for b in range(100)
        for c in range(dirs // 10_000)
    ]
    for leaf in leaves:
        leaf.mkdir(parents=True)
    for leaf in random.Random(0).sample(leaves, envs):
        (leaf / "pyvenv.cfg").write_text("home = /usr/bin\n")
    python = str(BIN / "python")
    code = f"from uvrefs.gc.roots import discover; assert len(discover([{str(top)!r}], max_depth=9)) == {envs}"
    ours = [timed(python, "-I", "-c", code) for _ in range(rounds + 1)][1:]
    find = [timed("find", top, "-name", "pyvenv.cfg") for _ in range(rounds + 1)][1:]
    count = sum(1 for _ in top.rglob("*") if _.is_dir())
    shutil.rmtree(top)
    return {"dirs": count, "uvrefs": statistics.median(ours), "find": statistics.median(find)}


# Runs argv[1:] and prints its peak resident set (KiB). A child's ru_maxrss counts the
# memory of the process it was forked from until its exec (Linux keeps the old image's high
# water mark), so the command is started from this small interpreter, not from the
# benchmark, whose own memory would otherwise be what is measured.
PEAK = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:], "
    "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
    " sys.exit(code)"
)


def measured(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds and peak memory (MiB, the command's max RSS) of one run."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *args], env=env, capture_output=True, text=True, check=True
    )
    took = time.perf_counter() - start
    return took, int(done.stdout.split()[-1]) / 1024


def hosts_case(
    uvrefs: str, hosts: int = 100, per_host: int = 20, rounds: int = 5
) -> dict[str, float]:
    """`collect --dry-run` on a 12k-file cache with 20 envs of this host, then with the
    records of `hosts` other hosts x `per_host` envs added (half of the hosts' leases
    expired): the time of each (median of warm runs) and the peak memory."""
    from benchmarks.synthetic import add_hosts, build

    world = build(WORK / "hosts", 1500, 8, 20)
    env = {**ENV, "UV_CACHE_DIR": str(world.cache), "UVREFS_DIR": str(world.state)}
    args = [uvrefs, "collect", "--dry-run", "--json"]

    def runs() -> tuple[float, float]:
        done = [measured(args, env) for _ in range(rounds + 1)]
        return statistics.median(t for t, _ in done[1:]), max(m for _, m in done)

    one, one_mem = runs()
    alone = json.loads(subprocess.run(args, env=env, check=True, capture_output=True).stdout)
    referrers = add_hosts(world, hosts, per_host, expired=hosts // 2)
    many, many_mem = runs()
    doc = json.loads(subprocess.run(args, env=env, check=True, capture_output=True).stdout)
    shutil.rmtree(world.root)
    return {
        "one": one, "one_mem": one_mem, "many": many, "many_mem": many_mem,
        "referrers": referrers, "freed": len(doc["freed"]), "freed_alone": len(alone["freed"]),
        "hosts": hosts, "per_host": per_host,
    }  # fmt: skip


def per_added_file(now: dict[str, float], before: dict[str, float], key: str) -> str:
    """Milliseconds per 1,000 files added between two scales: steady if growth is linear."""
    added = now["files"] - before["files"]
    return f"{(now[key] - before[key]) * 1e6 / added:.1f}" if added else "-"


def machine() -> str:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    fs = subprocess.run(
        ["stat", "-f", "-c", "%T", str(WORK)], capture_output=True, text=True, check=False
    ).stdout.strip()
    uv_version = subprocess.run(
        [UV, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {uv_version}, filesystem {fs}"
    )


STARTED = time.perf_counter()


def overhead_row(label: str, r: dict[str, float], limit_ms: float) -> str:
    """A table row: uv's time, uvrefs's, the overhead against `limit_ms`."""
    return (
        f"| {label} | {r['uv']:.1f} ms | {r['uvrefs']:.1f} ms | {r['overhead']:+.1f} ms | "
        f"{r['ratio']:.2f}x | overhead <= {limit_ms:.0f} ms: "
        f"{'met' if r['overhead'] <= limit_ms else 'NOT met'} |"
    )


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    uvrefs, how = uvrefs_binary()
    rows = []
    for count in (20, 200):
        r = noop(uvrefs, count)
        rows.append(overhead_row(f"no-op install, {count} packages", r, 15))
        print(rows[-1], flush=True)
    rows.append(overhead_row("no-op sync, 20 packages", noop_sync(uvrefs, 20), 15))
    print(rows[-1], flush=True)
    rows.append(overhead_row("`uvrefs uv --version` (the alias)", alias(uvrefs), 10))
    print(rows[-1], flush=True)
    recorded = fresh(uvrefs, 100)
    fresh_uv = recorded[0]["uv"]
    for label, r in zip(("foreground", "background"), recorded, strict=True):
        share = r["overhead"] / r["uv"] * 100
        limit = 25 if label == "foreground" else 10
        rows.append(
            f"| fresh install, 100 packages (warm cache), recording in the {label} | "
            f"{r['uv']:.1f} ms | {r['uvrefs']:.1f} ms | {r['overhead']:+.1f} ms | "
            f"{r['ratio']:.2f}x | recording <= {limit}% of uv: {share:.1f}%, "
            f"{'met' if share <= limit else 'NOT met'} |"
        )
        print(rows[-1], flush=True)
    r = status(uvrefs)
    rows.append(
        f"| `uvrefs status` against `uv cache size`, this cache | {r['uv']:.1f} ms | "
        f"{r['uvrefs']:.1f} ms | {r['overhead']:+.1f} ms | {r['ratio']:.2f}x | "
        f"status <= 150 ms: {'met' if r['uvrefs'] <= 150 else 'NOT met'} |"
    )
    print(rows[-1], flush=True)
    floor = import_floors(uvrefs)
    print(floor, flush=True)
    big_rows, scale_rows, lock_rows = [], [], []
    for label, entries, files, envs, rounds, destructive in (
        ("10k files", 500, 20, 50, 7, 3),
        ("100k files", 2000, 50, 200, 5, 3),
    ):
        c = collect_case(uvrefs, label, entries, files, envs, rounds, destructive)
        dry_ok, coll_ok = c["dry"] <= c["du"], c["collect"] <= 1.3 * c["rm"]
        big_rows.append(
            f"| {label}, {c['envs']} envs, {c['dead']} dead entries | {c['dry'] * 1e3:.0f} ms "
            f"({c['dry_cold'] * 1e3:.0f} ms first) | {c['du'] * 1e3:.0f} ms | "
            f"{c['dry'] / c['du']:.2f}x {'met' if dry_ok else 'NOT met'} | "
            f"{c['collect'] * 1e3:.0f} ms | {c['rm'] * 1e3:.0f} ms | "
            f"{c['collect'] / c['rm']:.2f}x {'met' if coll_ok else 'NOT met'} | "
            f"{c['prune'] * 1e3:.0f} ms |"
        )
        print(big_rows[-1], flush=True)
        lock_rows.append(
            f"| {label} | {c['held'] * 1e3:.0f} ms | {c['deleting'] * 1e3:.0f} ms | "
            f"{'met' if c['held'] <= 1.0 else 'NOT met'} |"
        )
        print(lock_rows[-1], flush=True)
    c = collect_case(
        uvrefs, "100k files", 2000, 50, 200, 5, 0, cached_envs=200, dead_referrers=10_000
    )
    roots_rows = [
        f"| 100k files, 200 envs, 200 uv cached envs, 10k dead referrers | "
        f"{c['dry'] * 1e3:.0f} ms ({c['dry_cold'] * 1e3:.0f} ms first) | {c['du'] * 1e3:.0f} ms | "
        f"{c['dry'] / c['du']:.2f}x {'met' if c['dry'] <= c['du'] else 'NOT met'} |"
    ]
    print(roots_rows[-1], flush=True)
    d = discovery_case()
    roots_rows.append(
        f"| discovery: {d['dirs']} directories, 200 environments | {d['uvrefs'] * 1e3:.0f} ms "
        f"(`roots.discover`, interpreter start included) | {d['find'] * 1e3:.0f} ms "
        f"(`find -name pyvenv.cfg`) | {d['uvrefs'] / d['find']:.2f}x "
        f"{'met' if d['uvrefs'] <= 1.5 * d['find'] else 'NOT met'} (target <= 1.5x) |"
    )
    print(roots_rows[-1], flush=True)
    h = hosts_case(uvrefs)
    host_rows = [
        f"| this host's 20 envs ({h['freed_alone']} entries would be freed) | "
        f"{h['one'] * 1e3:.0f} ms | {h['one_mem']:.0f} MiB | |",
        f"| + {h['hosts']} hosts x {h['per_host']} envs ({h['referrers']:,} referrers; "
        f"{h['hosts'] // 2} hosts expired; {h['freed']} entries would be freed) | "
        f"{h['many'] * 1e3:.0f} ms ({h['many'] / h['one']:.2f}x) | {h['many_mem']:.0f} MiB | "
        f"memory <= 100 MiB: {'met' if h['many_mem'] <= 100 else 'NOT met'} |",
    ]
    print(host_rows[-1], flush=True)
    base: dict[str, float] = {}
    last: dict[str, float] = {}
    for factor in (1, 4, 16):
        c = collect_case(uvrefs, f"{factor}x", 125 * factor, 20, 4 * factor, 3, 1)
        base, last = base or c, last or c
        scale_rows.append(
            f"| {factor}x | {125 * factor} entries, {4 * factor} envs, {c['files']} files | "
            f"{c['dry'] * 1e3:.0f} ms ({c['dry'] / base['dry']:.1f}x) | "
            f"{per_added_file(c, last, 'dry')} | "
            f"{c['collect'] * 1e3:.0f} ms ({c['collect'] / base['collect']:.1f}x) | "
            f"{per_added_file(c, last, 'collect')} |"
        )
        last = c
        print(scale_rows[-1], flush=True)
    minutes = (time.perf_counter() - STARTED) / 60
    doc = (
        f"""# Benchmarks

Measured by `make bench` (`benchmarks/run.py`, {minutes:.1f} minutes), uvrefs and plain uv
interleaved in one run, medians ({ROUNDS} rounds for installs). uvrefs: {how}.
Machine: {machine()}.

| case | uv | uvrefs | overhead | ratio | target |
|---|---|---|---|---|---|
"""
        + "\n".join(rows)
        + """

- *no-op*: the environment already satisfies the request; uv only checks it, and uvrefs
  compares the environment's fingerprint with its stamp and skips recording.
- *fresh install*: a new venv, cache already holding every wheel (uv links only); uvrefs
  scans the env and writes one `.refs` per entry. In the *foreground* (the default for
  scripts and CI) that happens before uvrefs returns; in the *background* (the default in a
  terminal, `UVREFS_RECORD`) uvrefs returns when uv is done and a forked child, holding uv's
  cache lock, records: the time shown is what the user waits for, and the recording's own
  work (the foreground overhead) still happens after the prompt is back. The disk is
  synced before each timed install, so none pays for writing back an earlier one's files.

## Collect on synthetic caches

Caches laid out as uv 0.13 lays them out (`benchmarks/synthetic.py`), with venvs that
hard-link their files from the archives, refs and fingerprints recorded as `uvrefs install`
records them, half the envs deleted. The destructive runs (3 each of `collect` and `rm -rf`
per cache) start from a pristine `cp -a` copy at the same path; between runs exactly the
removed paths and the refs store are copied back. Every copy is synced to disk before the
next run: deleting files whose data was never written back costs almost nothing, and no
real cache entry is like that. The dry run's first round walks every dead archive; later
rounds use the sizes it remembered (archives never change), which is the median shown.

| cache | `collect --dry-run` | `du -s` | ratio (target <= 1.0x) | `collect` | `rm -rf` dead entries | ratio (target <= 1.3x) | `uv cache prune` |
|---|---|---|---|---|---|---|---|
"""
        + "\n".join(big_rows)
        + """

## uv's lock during `collect`

From `collect --json` (`lock_held_seconds`, `deleting_seconds`), same runs as above. uv's
lock is held exclusively only while collect changes what uv can see (marking again,
renaming pointers and archives into its trash); the trash is deleted after.

| cache | uv's lock held exclusively | deleting the trash, lock released | target: exclusive <= 1 s |
|---|---|---|---|
"""
        + "\n".join(lock_rows)
        + """

## Roots: uv's cached environments, a CI runner's history, discovery

`collect --dry-run` on the 100k-file cache above with 200 uv cached environments (each a
root, scanned) and 10,000 referrers of deleted envs in the refs (median of warm runs), and
the search for environments under a watched directory.

| case | uvrefs | reference | ratio |
|---|---|---|---|
"""
        + "\n".join(roots_rows)
        + """

## A store shared by many hosts

`collect --dry-run` on a 12k-file cache (1,500 entries, 20 envs of this host, half deleted),
then with the records of 100 other hosts added to its store, 20 envs each, local to them
(`benchmarks/synthetic.py:add_hosts`): every env uses the 20 entries all envs use and one
of its own; half of the hosts renewed their lease 60 days ago. Peak memory is the
collect process's maximum resident set.

| store | `collect --dry-run` | peak memory | target |
|---|---|---|---|
"""
        + "\n".join(host_rows)
        + """

## Scaling

Linear growth shows as a steady cost per file added (ms per 1,000 files added since the row
above); the 1x row is mostly the fixed cost of starting (see below).

| scale | size | `collect --dry-run` | ms per 1k files added | `collect` | ms per 1k files added |
|---|---|---|---|---|---|
"""
        + "\n".join(scale_rows)
        + "\n"
        + READING.format(
            quarter=fresh_uv / 4,
            waited=floor["forward"],
            share=floor["forward"] / fresh_uv * 100,
            start=floor["start"],
            forward=floor["forward"] - floor["start"],
            record=floor["record"] - floor["forward"],
            collect=floor["collect"],
            frameworks=floor["frameworks"] - floor["start"],
        )
    )
    old = (HERE / "docs/benchmarks.md").read_text()
    # Sections measured by other means stay: `make bench-big`'s (benchmarks/big.py), and
    # those marked `<!-- kept:NAME -->` ... `<!-- /kept:NAME -->` (measured by hand).
    kept = [("<!-- bench-big -->", "<!-- /bench-big -->")]
    kept += [
        (f"<!-- kept:{name} -->", f"<!-- /kept:{name} -->")
        for name in sorted({part.split(" -->")[0] for part in old.split("<!-- kept:")[1:]})
    ]
    for start, end in kept:
        if start in old and end in old:
            section = old[old.index(start) : old.index(end) + len(end)] + "\n"
            doc = doc.replace("\n## Reading the tables", "\n" + section + "\n## Reading the tables")
    (HERE / "docs/benchmarks.md").write_text(doc)
    print(f"wrote docs/benchmarks.md ({minutes:.1f} min)")


READING = """
## Reading the tables

- Overheads are medians of the per-round differences (uv and uvrefs run back to back in
  each round), so a slow patch of disk during a round counts against both.
- What no code of ours can avoid, measured in this run with uvrefs's own interpreter:
  starting it takes {start:.1f} ms; the forwarding path's imports (what a no-op install and
  the background recorder's parent load) {forward:.1f} ms more; the recording path's
  imports (env scanner, store, `json` and the `re` it loads) {record:.1f} ms more. Recording
  in the foreground pays all three, then its work: one refs file read and written per
  entry, and the env's record synced to disk; 25% of uv's time for this install is
  {quarter:.1f} ms. In the background the user waits only for the start, the forwarding
  imports and the fork (start and imports: {waited:.1f} ms, {share:.1f}% of uv's time). A no-op install, the common case, stops before any recording (fingerprint
  unchanged).
- Every `collect` is a fresh Python process, run through typer like every command but the
  tracked uv commands (one CLI), reading the refs without pydantic (importing typer and
  building uvrefs's pydantic models takes {frameworks:.0f} ms); its floor is the
  interpreter's start and the collect path's imports: {collect:.1f} ms in all, most of the
  1x scaling row. `du` and `rm` are C programs with no such floor, so the ratios are worst
  on small caches.
- The dry run reads every refs file, lists the cache's archives and pointers, checks each
  referencing env's fingerprint (an env unchanged since it was recorded is not re-scanned)
  and sizes the dead entries from remembered archive sizes; `du` walks every file.
- `collect` marks again under uv's lock (every root re-fingerprinted, what changed
  re-scanned, refs of each candidate re-read), renames the pointers and each archive
  into its own trash directory, releases the lock, then deletes the trash with 4
  threads, measuring each file as it unlinks it (the figure it reports). Unlinking is the whole cost of a sweep, and the kernel overlaps it across
  threads; `rm -rf` unlinks one file at a time. `uv cache prune` frees nothing here: every
  archive is still linked from the wheels bucket.

Re-run with `make bench` (`BENCH_ROUNDS=N` to change the install rounds).
"""


if __name__ == "__main__":
    main()
