"""`make bench`: uvrefs side by side with plain uv, interleaved in one run, medians and
ratios written to docs/benchmarks.md. Everything runs on throw-away caches under .bench/.

1. no-op `uvrefs install` vs `uv pip install` on envs of 20 and 200 packages;
2. the cost of recording a fresh 100-package install vs uv's own time for it.
"""

from __future__ import annotations

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
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "31"))
sys.path.insert(0, str(HERE))

from tests.wheels import build_wheel  # noqa: E402

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "UVREFS_", "VIRTUAL_ENV"))}
ENV.update(
    UV_CACHE_DIR=str(WORK / "cache"),
    UVREFS_DIR=str(WORK / "state"),
    UVREFS_UV=UV,
    UV_PYTHON_DOWNLOADS="never",
    NO_COLOR="1",
)


def sh(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], env=ENV, check=True, stdout=subprocess.DEVNULL)


def timed(*args: str | Path) -> float:
    start = time.perf_counter()
    subprocess.run([str(a) for a in args], env=ENV, check=True, stdout=subprocess.DEVNULL)
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
    uv_times, uvrefs_times = [], []
    for _ in range(ROUNDS):
        uv_times.append(timed(UV, "pip", "install", *args))
        uvrefs_times.append(timed(uvrefs, "install", *args))
    return summary(uv_times, uvrefs_times)


def fresh(uvrefs: str, count: int) -> dict[str, float]:
    args = packages(count)
    sh(UV, "venv", "-q", "-p", sys.executable, WORK / "warm")
    sh(UV, "pip", "install", "-q", "-p", WORK / "warm", *args)  # cache warm: uv only links
    uv_times, uvrefs_times = [], []
    for i in range(max(5, ROUNDS // 3)):
        for tool, times in ((None, uv_times), (uvrefs, uvrefs_times)):
            env = WORK / f"fresh-{i}-{'uv' if tool is None else 'uvrefs'}"
            sh(UV, "venv", "-q", "-p", sys.executable, env)
            cmd = [UV, "pip", "install"] if tool is None else [tool, "install"]
            times.append(timed(*cmd, "-q", "-p", env, *args))
            shutil.rmtree(env)
    return summary(uv_times, uvrefs_times)


def summary(uv_times: list[float], uvrefs_times: list[float]) -> dict[str, float]:
    uv_ms, uvrefs_ms = statistics.median(uv_times) * 1e3, statistics.median(uvrefs_times) * 1e3
    return {
        "uv": uv_ms,
        "uvrefs": uvrefs_ms,
        "overhead": uvrefs_ms - uv_ms,
        "ratio": uvrefs_ms / uv_ms,
    }


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


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    uvrefs, how = uvrefs_binary()
    rows = []
    for count in (20, 200):
        r = noop(uvrefs, count)
        rows.append(
            f"| no-op install, {count} packages | {r['uv']:.1f} ms | {r['uvrefs']:.1f} ms | "
            f"{r['overhead']:+.1f} ms | {r['ratio']:.2f}x | overhead <= 60 ms: "
            f"{'met' if r['overhead'] <= 60 else 'NOT met'} |"
        )
        print(rows[-1], flush=True)
    r = fresh(uvrefs, 100)
    share = r["overhead"] / r["uv"] * 100
    rows.append(
        f"| fresh install, 100 packages (warm cache) | {r['uv']:.1f} ms | {r['uvrefs']:.1f} ms | "
        f"{r['overhead']:+.1f} ms | {r['ratio']:.2f}x | recording <= 10% of uv: "
        f"{share:.0f}%, {'met' if share <= 10 else 'NOT met'} |"
    )
    print(rows[-1], flush=True)
    doc = (
        f"""# Benchmarks

Measured by `make bench` (`benchmarks/run.py`), uvrefs and plain uv interleaved in one run,
{ROUNDS} rounds, medians. uvrefs: {how}. Machine: {machine()}.

| case | uv | uvrefs | overhead | ratio | target |
|---|---|---|---|---|---|
"""
        + "\n".join(rows)
        + """

- *no-op*: the environment already satisfies the request; uv only checks it, and uvrefs
  compares the environment's fingerprint with its stamp and skips recording.
- *fresh install*: a new venv, cache already holding every wheel (uv links only); uvrefs
  scans the env and writes one `.refs` per entry.

Re-run with `make bench` (`BENCH_ROUNDS=N` to change the rounds).
"""
    )
    (HERE / "docs/benchmarks.md").write_text(doc)
    print("wrote docs/benchmarks.md")


if __name__ == "__main__":
    main()
