"""Collect as a pipeline over one snapshot of the store (docs/design.md, "Collecting"): the
store is read once, at the start, and written once, at the end, under its lock; between
the two only the sweep writes, under uv's lock, what it must record as it deletes."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import World, in_process, install
from tests.test_liveness import intact


def test_a_collect_reads_its_store_once_and_writes_it_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collect with a living tracked env, a deleted one and a plain env under a watched
    directory (whose record the collect writes): before the sweep, no store file is opened
    twice and the store's lock is never taken; after it, the lock is taken once (the
    write-back), and what it wrote is what a collect writes: the found env's record."""
    from uvrefs.gc import collect as core
    from uvrefs.gc.plan import Policy
    from uvrefs.store.refs import RefsStore

    projects = world.root / "projects"
    live = world.venv("projects/live/.venv")
    install(world, live, "alpha==1.0")
    dead = world.venv("projects/dead/.venv")
    install(world, dead, "beta")
    plain = world.venv("projects/plain/.venv")
    install(world, plain, "alpha==2.0", tracked=False)
    world.uvrefs("watch", "add", projects)
    shutil.rmtree(dead)
    cache, store = in_process(world, monkeypatch)
    top = str(store.dir) + os.sep

    opened: list[tuple[str, str]] = []  # (phase, store file) of every open for reading
    locks: list[str] = []  # the phase of every hold of the store's lock
    phase = ["heartbeat"]
    real_open = os.open

    def spy_open(path, flags, *args, **kw):  # type: ignore[no-untyped-def]
        name = os.fsdecode(path)
        if kw.get("dir_fd") is None and name.startswith(top) and not flags & os.O_ACCMODE:
            if not flags & getattr(os, "O_DIRECTORY", 0):
                opened.append((phase[0], name[len(top) :]))
        return real_open(path, flags, *args, **kw)

    real_locked = RefsStore.locked

    def spy_locked(self):  # type: ignore[no-untyped-def]
        locks.append(phase[0])
        return real_locked(self)

    real_take = core.Snapshot.take.__func__  # type: ignore[attr-defined]

    def take(cls, *args, **kw):  # type: ignore[no-untyped-def]
        phase[0] = "plan"  # the lease and the registration, renewed before, are not read
        return real_take(cls, *args, **kw)

    real_sweep = core.sweep

    def sweep(*args, **kw):  # type: ignore[no-untyped-def]
        phase[0] = "sweep"
        try:
            return real_sweep(*args, **kw)
        finally:
            phase[0] = "after"

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(RefsStore, "locked", spy_locked)
    monkeypatch.setattr(core, "sweep", sweep)
    monkeypatch.setattr(core.Snapshot, "take", classmethod(take))
    result = core.collect(cache, store, dry_run=False, timeout=10, policy=Policy(grace=0.0))
    monkeypatch.undo()

    assert [d.dist for d in result.freed] == ["beta"], result
    assert intact(live) and intact(plain)
    records = [name for p, name in opened if p == "plan" and not name.startswith("hosts")]
    twice = [name for name, n in Counter(records).items() if n > 1]
    assert records and not twice, twice  # read once, at the start
    assert "plan" not in locks and "heartbeat" not in locks, locks  # nothing written while planning
    assert locks.count("after") == 1, locks  # written once, at the end
    # The write-back wrote what a collect learns: the plain env is tracked from now on.
    again = RefsStore(world.state, cache.root)
    assert again.env_record(str(plain)) is not None


def test_a_collect_that_cannot_have_uvs_lock_still_remembers_what_it_planned(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write-back happens also when the sweep fails (uv's lock not had): entries seen
    dead are stamped from this run, so `--min-age` counts from the first sighting. (A pin:
    the code before the snapshot stamped them before the sweep.)"""
    from uvrefs.gc import collect as core
    from uvrefs.gc.plan import Policy

    dead = world.venv("gone/.venv")
    install(world, dead, "beta")
    shutil.rmtree(dead)
    cache, store = in_process(world, monkeypatch)

    def no_lock(*args, **kw):  # type: ignore[no-untyped-def]
        raise TimeoutError("uv's lock is held")

    monkeypatch.setattr(core, "sweep", no_lock)
    with pytest.raises(TimeoutError):
        core.collect(cache, store, dry_run=False, timeout=1, policy=Policy(grace=0.0))
    assert store.dead_since(), "the dead entry was not stamped"


def test_a_stamp_taken_too_soon_after_a_change_vouches_for_nothing(tmp_path: Path) -> None:
    """A stamp says when its fingerprint was taken (its mtime); a record is trusted by it
    only if every site directory changed over `RACY_NS` before that (a change in the same
    tick of a coarse clock, after the look, would not show in the fingerprint)."""
    from uvrefs.store.stamps import RACY_NS, read_stamp_taken, settled, write_stamp

    m = 1_700_000_000_000_000_000
    fp = f"/e/lib/python3.11/site-packages\t{m}\talpha-1.0.dist-info"
    assert not settled(fp, m + RACY_NS // 2)
    assert settled(fp, m + RACY_NS + 1)
    two = fp + f"\n/e/lib64/site-packages\t{m + RACY_NS}\t"
    assert not settled(two, m + RACY_NS + 1)  # every site directory counts
    assert not settled("/e/site-packages\t?", m + 10 * RACY_NS)  # an unreadable one: never
    assert not settled("", m + 10 * RACY_NS)
    stamp = tmp_path / "e.stamp"
    write_stamp(str(stamp), fp, m + 3 * RACY_NS)
    assert read_stamp_taken(str(stamp)) == (fp, m + 3 * RACY_NS)


def test_an_env_scanned_for_an_unsettled_stamp_is_stamped_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recording fingerprints an env just after uv changed it, so its stamp never
    settles (`stamps.settled`) and every status and dry run after it scanned the env again,
    until a collect recorded it anew. The first of them to scan it, once its site
    directories are older than the racy window, now takes the stamp again: the next one
    reuses the record instead of scanning the env."""
    from uvrefs.gc.collect import gather_facts

    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    time.sleep(2.1)  # past the racy window of the env's last change
    cache, store = in_process(world, monkeypatch)
    first = gather_facts(cache, store, reuse=True)
    assert not first.marks.scans[str(env)].reused  # the recording's stamp vouches for nothing
    world.uvrefs("status")
    again = gather_facts(cache, store, reuse=True)
    assert again.marks.scans[str(env)].reused
    assert set(again.marks.scans[str(env)].uses) == set(first.marks.scans[str(env)].uses)


def test_a_stamp_is_not_taken_again_for_a_record_that_misses_a_use(world: World) -> None:
    """A scan that finds a use the env's record does not list (a record lost or rewritten
    by hand) never stamps that record again: the next dry run scans the env again, and
    keeps what it uses, instead of believing the record (the sweep would scan it again
    under uv's lock, but status and dry runs would say the entry is dead). Copy mode: with
    hard links, the link count alone would keep the entry."""
    env = world.venv("env")
    world.uvrefs("install", "-q", "--link-mode", "copy", "-p", env, *world.offline(), "alpha==1.0")
    time.sleep(2.1)
    (record,) = world.state.rglob("envs/*.json")
    doc = json.loads(record.read_text())
    record.write_text(json.dumps({**doc, "entries": []}))
    world.uvrefs("status")
    dry = json.loads(world.uvrefs("collect", "--dry-run", "--json").stdout)
    assert dry["freed"] == []
    assert [d["dist"] for d in dry["kept"]] == ["alpha"]
