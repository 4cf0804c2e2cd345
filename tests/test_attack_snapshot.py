"""Attacks on the one-snapshot collect (uvrefs/store/snapshot.py, uvrefs/gc/collect.py
`write_back`) and the staged sweep: timing windows between the snapshot, the sweep and the
write-back, records and stamps written by a concurrent tracked install, and the files the
write-back replaces.

Envs use uv's symlink link mode: a wrongly freed entry breaks the env, which `intact`
(every file of every installed RECORD exists) shows."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import World, in_process, install
from tests.test_liveness import intact


def test_an_install_recorded_while_the_snapshot_is_read_is_not_hidden_by_its_old_record(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Snapshot.take` reads every env record (`read_view`) and only then the stamps of
    this host's records. A tracked `uvrefs install` that records in between (its record,
    its refs, then its stamp, the last outside the store's lock) leaves the snapshot with
    the env's OLD record paired with its NEW stamp. The env's fingerprint equals that
    stamp, so `scan_or_reuse` trusts the old record: the package just installed is not
    used, by the snapshot's account. Its entry (whose only referrer in the snapshot's
    refs is a deleted env) is a candidate; under uv's lock `mark_now` distrusts only the
    referrers named in the *planning* refs (the dead env), the env's state print has not
    changed since planning, so the reused scan stands against the refs read under the
    lock (which do name the env) and the entry is freed: the living env is broken.
    Reading each stamp before its record (or checking the record's time against the
    stamp) would close it."""
    from uvrefs.gc import collect as core
    from uvrefs.gc.plan import Policy
    from uvrefs.store import snapshot

    dead = world.venv("dead")
    install(world, dead, "alpha==1.0")
    shutil.rmtree(dead)
    env = world.venv("env")
    install(world, env, "beta")
    cache, store = in_process(world, monkeypatch)

    real_read_view = snapshot.read_view
    once = [True]

    def read_view(*args, **kw):  # type: ignore[no-untyped-def]
        view = real_read_view(*args, **kw)
        if once.pop() if once else False:  # the snapshot's read, not the sweep's
            install(world, env, "alpha==1.0")  # recorded between the records and the stamps
        return view

    monkeypatch.setattr(snapshot, "read_view", read_view)
    result = core.collect(cache, store, dry_run=False, timeout=10, policy=Policy(grace=0.0))
    monkeypatch.undo()
    assert intact(env) and "alpha" not in {d.dist for d in result.freed}, (
        f"freed alpha, which the living env uses: {result.freed}; its files are gone"
    )


HARDLINK = {"UV_LINK_MODE": "hardlink"}  # no grace period: --min-age alone decides


def test_the_write_back_does_not_stamp_dead_an_entry_a_later_collect_saw_live(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--min-age` counts from the first time a collect saw an entry dead (dead-since.json);
    an entry seen live loses its stamp. The write-back now happens at the END of a collect
    (after it waited for uv's lock), from the plan made at its START. Collect A plans
    (alpha dead, held by --min-age); meanwhile alpha is installed into a living env and
    collect B sees it live and drops its stamp; then A writes back `plan.dead`, stamping
    the live entry dead as of A's planning time. Before this change the stamps were
    written right after planning, so B's later judgement stood. When the env goes, the
    next collect believes alpha has been dead since A planned and frees it at once under
    a --min-age it has not served (the scheduled job's `--min-age 7d` is the only wait a
    hardlink-mode user's deleted-then-recreated env gets)."""
    import json
    import time

    from uvrefs.gc import collect as core
    from uvrefs.gc.plan import Policy

    dead = world.venv("dead")
    install(world, dead, "alpha==1.0", extra_env=HARDLINK)
    shutil.rmtree(dead)
    world.uvrefs("collect", "--json", "--min-age", "1h")  # alpha first seen dead now
    env = world.venv("env")
    cache, store = in_process(world, monkeypatch)

    def meanwhile() -> None:
        install(world, env, "alpha==1.0", extra_env=HARDLINK)
        world.uvrefs("collect", "--json", "--min-age", "1h")  # B: alpha is live
        assert not store.dead_since(), "B did not drop the live entry's stamp"

    real_sweep = core.sweep

    def sweep(*args, **kw):  # type: ignore[no-untyped-def]
        meanwhile()
        return real_sweep(*args, **kw)

    monkeypatch.setattr(core, "sweep", sweep)
    core.collect(cache, store, dry_run=False, timeout=10, policy=Policy(min_age=3600, grace=0))
    monkeypatch.undo()
    stamped = store.dead_since()
    time.sleep(2.5)
    shutil.rmtree(env)  # alpha dies now
    result = json.loads(world.uvrefs("collect", "--json", "--min-age", "2s").stdout)
    assert not stamped and "alpha" not in {d["dist"] for d in result["freed"]}, (
        f"a live entry was stamped dead by a stale write-back ({stamped}); freed under "
        f"--min-age 2s less than a second after it died: {result['freed']}"
    )


def test_the_write_back_does_not_replace_a_newer_record_under_its_newer_stamp(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tracked install into a living env between planning and the sweep makes the sweep
    re-scan it; `records_now` then writes that re-scan as the env's record at the END of
    the collect, with no stamp (the re-scan has no fingerprint of its own). A second
    tracked install into the env after the sweep released uv's lock (alpha) writes a
    newer record and its stamp; the write-back then replaces that record with the older
    re-scan and leaves the newer stamp in place. The store now says "unchanged since its
    record" (stamp == fingerprint) for a record that does not list alpha: the next
    collect trusts a record that lies by omission. Today only `mark_now`'s distrust of a
    candidate's referrers keeps alpha (the refs still name the env); a record with a
    matching stamp is meant to be true on its own (lost data: the install's record)."""
    from uvrefs.gc import collect as core
    from uvrefs.gc.plan import Policy
    from uvrefs.targets import Target, fingerprint

    env = world.venv("env")
    install(world, env, "beta")
    cache, store = in_process(world, monkeypatch)
    real_sweep = core.sweep

    def sweep(*args, **kw):  # type: ignore[no-untyped-def]
        install(world, env, "gamma")  # re-scanned under uv's lock
        swept = real_sweep(*args, **kw)
        install(world, env, "alpha==1.0")  # recorded before the write-back
        return swept

    monkeypatch.setattr(core, "sweep", sweep)
    core.collect(cache, store, dry_run=False, timeout=10, policy=Policy(grace=0.0))
    monkeypatch.undo()
    (alpha,) = world.archive_of("alpha", "1.0")
    record = store.env_record(str(env))
    stamp = Path(store.stamp_path(str(env))).read_text()
    assert record is not None
    assert alpha in record.entries or stamp != fingerprint(Target(str(env))), (
        "the env's record lost alpha (the install's newer record was replaced by the "
        "collect's older re-scan) under a stamp that says it is current"
    )
