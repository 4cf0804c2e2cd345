"""Who holds uv's cache lock: a long `uv run` keeps it shared for its whole life, and a
collect that waits, or skips, names it (uvrefs.lockholders); a scheduled collect retries
for a bounded time instead of giving up at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import World
from uvrefs import lockholders
from uvrefs.lockholders import Holder, held_by

LINUX = os.path.isfile("/proc/locks")
needs_proc_locks = pytest.mark.skipif(not LINUX, reason="reads /proc/locks (Linux)")


def dead_env(world: World) -> None:
    """A tracked env with alpha 1.0, deleted: the next collect frees alpha 1.0."""
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    shutil.rmtree(env)


@contextmanager
def uv_run(world: World, seconds: float = 60) -> Iterator[subprocess.Popen[str]]:
    """A real `uv run` sleeping in its child: uv holds its lock shared meanwhile."""
    proc = subprocess.Popen(
        [world.uv_bin, "run", "--no-project", "-p", sys.executable, "python", "-c",
         f"print('up', flush=True); import time; time.sleep({seconds})"],
        cwd=world.root, env=world.env, stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout and proc.stdout.readline().strip() == "up"
        yield proc
    finally:
        os.killpg(proc.pid, 9)  # uv and the program it runs
        proc.wait()


@needs_proc_locks
def test_a_skipped_collect_names_the_uv_run_that_holds_the_cache(world: World) -> None:
    """`uv run` keeps uv's lock for the life of what it runs (a Jupyter server): the
    scheduled collect skipped every time, saying only "cache in use". It names it now,
    on stderr and in its log line."""
    dead_env(world)
    log = world.root / "collect.log"
    with uv_run(world) as run:
        done = world.uvrefs("collect", "--no-wait", "--log", log)
    assert done.returncode == 0 and world.archive_of("alpha", "1.0")
    said = done.stderr.strip()
    assert said.startswith(f"uvrefs: cache in use, skipped ({world.cache}); held by `uv run "), said
    assert f"(pid {run.pid}, started " in said and len(said.splitlines()) == 1, said
    (line,) = log.read_text().splitlines()
    assert line.endswith(said.removeprefix("uvrefs: ")), line


@needs_proc_locks
def test_a_waiting_collect_names_the_holder_and_gives_up_naming_it(world: World) -> None:
    dead_env(world)
    with world.uv_at_work() as holder:
        done = world.uvrefs("collect", check=False, extra_env={"UV_LOCK_TIMEOUT": "1"})
    waiting, error = done.stderr.splitlines()
    assert done.returncode == 3 and world.archive_of("alpha", "1.0")
    for line in (waiting, error):
        assert "held by `python -c import fcntl, os, sys, time; " in line, line
        assert f"(pid {holder.pid}, started " in line, line
    assert waiting.startswith("uvrefs: cache is in use by uv, waiting for the lock (at most 1s")
    assert error.startswith("uvrefs: error: uv's cache lock ") and "UV_LOCK_TIMEOUT" in error


HANDS_DOWN = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_SH)
if os.fork() == 0:  # the child keeps the descriptor, and the lock with it
    print(os.getpid(), flush=True)
    time.sleep(60)
    os._exit(0)
os._exit(0)
"""


@needs_proc_locks
def test_a_lock_held_by_an_inherited_descriptor_names_the_process_that_holds_it(
    world: World,
) -> None:
    """/proc/locks names the pid that took a flock, which may have exited while a child
    holds the lock by the descriptor it inherited (uvrefs's own background recorder
    does): the holder named is the child, and the taker is said to be gone."""
    dead_env(world)
    taker = subprocess.Popen(
        [sys.executable, "-c", HANDS_DOWN, str(world.cache / ".lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert taker.stdout
    child = int(taker.stdout.readline())
    taker.wait()
    try:
        done = world.uvrefs("collect", "--no-wait")
    finally:
        os.kill(child, 9)
    said = done.stderr.strip()
    assert f"(pid {child}, started " in said, said
    assert f"by a descriptor inherited from pid {taker.pid}, which took the lock" in said, said
    assert said.count("pid ") == 2, said  # the taker is not named as a holder itself


@needs_proc_locks
def test_retry_for_collects_as_soon_as_uv_lets_go(world: World) -> None:
    """The scheduled job waits for a quiet moment (checking /proc/locks, never taking the
    lock meanwhile) instead of giving up at once: the Jupyter server closed in the
    evening, the collect runs then."""
    dead_env(world)
    log = world.root / "collect.log"
    with uv_run(world, seconds=2):
        started = time.monotonic()
        done = world.uvrefs("collect", "--no-wait", "--retry-for", "1m", "--log", log)
    assert done.returncode == 0 and not world.archive_of("alpha", "1.0"), done.stderr
    assert time.monotonic() - started < 30
    assert "trying again whenever uv lets go of it, for up to 1m" in done.stderr
    (line,) = log.read_text().splitlines()
    assert " freed 1 entry," in line, line


@needs_proc_locks
def test_retry_for_skips_once_its_time_is_up(world: World) -> None:
    dead_env(world)
    log = world.root / "collect.log"
    with world.uv_at_work() as holder:
        started = time.monotonic()
        done = world.uvrefs("collect", "--retry-for", "3s", "--log", log)
    assert 3 <= time.monotonic() - started < 30
    assert done.returncode == 0 and world.archive_of("alpha", "1.0")
    (line,) = log.read_text().splitlines()
    assert f"cache in use, skipped ({world.cache}) after 3s of retrying; held by " in line
    assert f"(pid {holder.pid}, " in line


def test_retry_for_takes_a_duration(world: World) -> None:
    done = world.uvrefs("collect", "--retry-for", "12", check=False)
    assert done.returncode == 2 and "--retry-for '12': a duration needs a unit" in done.stderr


def test_the_scheduled_job_retries_for_half_its_interval(world: World) -> None:
    done = world.uvrefs(
        "schedule", "install", "--every", "12h", "--dry-run",
        extra_env={"UVREFS_SCHEDULER": "cron"},
    )  # fmt: skip
    assert " collect --no-wait --retry-for 6h --min-age 7d " in done.stdout, done.stdout


# ------------------------------------------------------------------ the parsers, in memory

LOCKS = """\
1: FLOCK  ADVISORY  READ 4242 fe:00:2148971 0 EOF
1: -> FLOCK  ADVISORY  WRITE 5151 fe:00:2148971 0 EOF
2: POSIX  ADVISORY  WRITE 77 fe:00:2148971 0 EOF
3: FLOCK  ADVISORY  WRITE 0 00:2a:2148971 0 EOF
4: FLOCK  ADVISORY  READ 99 fe:00:1234 0 EOF
"""


def test_proc_locks_lines_for_the_lock_file() -> None:
    """Holders only (a `->` waiter is not one), flocks only, of this inode; those on its
    device when there are any (overlayfs and btrfs subvolumes stat as another device
    than the kernel names, so the inode alone is matched otherwise)."""
    parse = lockholders._parse_locks
    assert parse(LOCKS, 2148971, (0xFE, 0)) == [lockholders._Lock(4242, False)]
    assert parse(LOCKS, 2148971, (0, 0x2A)) == [lockholders._Lock(0, True)]
    assert parse(LOCKS, 2148971, (8, 1)) == [
        lockholders._Lock(4242, False),
        lockholders._Lock(0, True),
    ]
    assert parse("garbage\n1: FLOCK x y z w v u\n", 1, (0, 0)) == []


def test_lsof_output_and_ps_elapsed_times() -> None:
    text = "p4242\ncuv\nf9\nlR\np5151\ncuv\nf3\nl \n"
    assert lockholders._parse_lsof(text) == [(4242, "R"), (5151, "")]
    now = 1_000_000.0
    assert lockholders._from_etime("03-02:01:05", now) == now - (3 * 86400 + 7265)
    assert lockholders._from_etime("01:05", now) == now - 65
    assert lockholders._from_etime("soon", now) is None


def test_holders_are_named_in_one_line() -> None:
    now = 1_000_000.0
    jupyter = Holder(4242, "uv run jupyter lab", now - 3 * 86400 - 60, False)
    clean = Holder(77, "uv cache clean", now - 5, True)
    unseen = Holder(None, None, None, False, "not visible to this user")
    assert held_by([jupyter], now) == "held by `uv run jupyter lab` (pid 4242, started 3 days ago)"
    assert held_by([clean, unseen], now) == (
        "held by `uv cache clean` (pid 77, started 5 s ago, exclusively); a process (not "
        "visible to this user)"
    )
    assert held_by([jupyter] * 5, now).endswith("; and 2 more")
    assert held_by([], now) == "released just now"
    assert "cannot tell" in held_by(None, now)
    assert lockholders._command(["/usr/bin/uv", "run", "a\nb"]) == "uv run a\\nb"
    assert len(lockholders._command(["x" * 200])) == 80


def test_no_holders_where_nothing_holds_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    lock.touch()
    if LINUX:
        assert lockholders.holders(str(lock)) == [] and lockholders.is_held(str(lock)) is False
