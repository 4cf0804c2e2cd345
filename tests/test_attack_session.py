"""Attacks on the session e8d01fd..bbb7be4: NamedTuples in place of dataclasses
(uvrefs/tuples.py), string paths in the env scan, and re-stamping an env scanned only
because its stamp had not settled (`mark.restamps`, `Changes._records`).

Envs use uv's symlink link mode where a wrong free must show: `intact` (every file of
every installed RECORD exists) proves the harm."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import World, collect_json, freed, in_process, install
from tests.test_liveness import intact
from tests.test_roots import write_project


def test_a_restamp_drops_a_local_source_the_record_does_not_list(world: World) -> None:
    """`restamps` takes an env's stamp again when its scan found no USE the record does
    not list, but never compares the scan's `sources` (local source trees uv may build
    again) with the record's. A reused record brings its own `sources` (`scan_or_reuse`),
    and `live_set` keeps every recorded build dependency only while some living root has
    a source. A project's `.venv` is a source from the moment its `pyproject.toml` exists
    (`scan_env`), which no fingerprint sees: a venv recorded before the project was
    written has `sources: []`. Before this session its unsettled stamp made every
    status/collect scan it (source found, tinybackend kept). Now the first `status`
    restamps it, and the next collect reuses the record: no builder, so tinybackend (the
    project's build backend, charged to an env since deleted) is freed, which the same
    collect kept a moment before (the control dry run). Fix: restamp only when
    `set(scan.sources) <= set(record.sources)` too (or write the record anew)."""
    first = world.venv("first")
    install(world, first, str(write_project(world.root / "p1", "pone")))
    holder = world.venv("proj/.venv")
    install(world, holder, "beta")
    proj = world.root / "proj"
    (proj / "pyproject.toml").write_text(
        '[project]\nname = "pthree"\nversion = "1.0"\n'
        '[build-system]\nrequires = ["tinybackend"]\nbuild-backend = "tinybackend"\n'
    )
    (proj / "pthree").mkdir()
    (proj / "pthree" / "__init__.py").write_text("")
    shutil.rmtree(first)
    time.sleep(2.1)  # the recording's stamp is unsettled; a scan now can settle it
    before = collect_json(world, "--dry-run")
    assert "tinybackend 1.0" not in freed(before), "control: a scan keeps the backend"
    world.uvrefs("status")  # scans the env (unsettled stamp) and restamps it
    result = collect_json(world)
    assert "tinybackend 1.0" not in freed(result), (
        f"freed {sorted(freed(result))}: the backend {proj}'s .venv builds it with"
    )


def _unsettled_env(world: World) -> Path:
    """A tracked symlink-mode env (alpha 1.0) whose recording's stamp has not settled,
    past the racy window: the next status scans it and would stamp it again."""
    env = world.venv("env")
    install(world, env, "alpha==1.0")
    time.sleep(2.1)
    return env


def _restamp_survey(world: World, monkeypatch: pytest.MonkeyPatch, env: Path):  # type: ignore[no-untyped-def]
    """A status's survey that scanned `env` and means to stamp it again."""
    from uvrefs.gc.collect import gather_facts

    cache, store = in_process(world, monkeypatch)
    survey = gather_facts(cache, store, reuse=True)
    assert str(env) in [a.path for a in survey.changes.stamps], "no restamp planned"
    return store, survey


def test_held_a_tracked_install_between_a_status_scan_and_its_write_back(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status scans the env (unsettled stamp) and plans to stamp it again; before its
    write-back, a tracked install adds beta to the env (record and stamp rewritten). The
    write-back compares the record on disk with the one it read and leaves the new stamp:
    the next dry run keeps beta, and a collect after the only other user of beta is gone
    leaves the env intact."""
    from uvrefs.gc.collect import write_back

    other = world.venv("other")
    install(world, other, "beta")
    env = _unsettled_env(world)
    store, survey = _restamp_survey(world, monkeypatch, env)
    install(world, env, "beta")
    stamp = Path(store.stamp_path(str(env))).read_text()
    write_back(survey)
    assert Path(store.stamp_path(str(env))).read_text() == stamp
    shutil.rmtree(other)
    result = collect_json(world)
    assert "beta 1.0" not in freed(result) and intact(env)


def test_held_an_untracked_install_between_a_status_scan_and_its_write_back(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above with plain `uv pip install` (no record change): the write-back stamps the
    fingerprint taken before the change, which the env no longer matches, so the next
    dry run and collect scan the env and keep beta."""
    from uvrefs.gc.collect import write_back

    other = world.venv("other")
    install(world, other, "beta")
    env = _unsettled_env(world)
    _, survey = _restamp_survey(world, monkeypatch, env)
    install(world, env, "beta", tracked=False)
    write_back(survey)
    shutil.rmtree(other)
    dry = collect_json(world, "--dry-run")
    result = collect_json(world)
    assert "beta 1.0" not in freed(dry) | freed(result) and intact(env)


@pytest.mark.parametrize("kind", ["fifo", "symlink", "newer", "dir"])
def test_held_a_file_planted_at_the_stamp_before_the_write_back(
    world: World, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """What a restamp writes over: a FIFO (never opened to wait on), a symlink to a file
    outside the store (replaced, never written through, its target's mtime untouched),
    a stamp a newer uvrefs wrote (left as it is) or a directory (the write fails quietly,
    no traceback, the status still ends)."""
    import os

    from uvrefs.gc.collect import write_back

    env = _unsettled_env(world)
    store, survey = _restamp_survey(world, monkeypatch, env)
    stamp = Path(store.stamp_path(str(env)))
    outside = world.root / "outside.txt"
    outside.write_text("mine")
    os.utime(outside, ns=(1, 1))
    stamp.unlink()
    newer = json.dumps({"format": 2, "print": "x"})
    if kind == "fifo":
        os.mkfifo(stamp)
    elif kind == "symlink":
        stamp.symlink_to(outside)
    elif kind == "newer":
        stamp.write_text(newer)
    else:
        stamp.mkdir()
    assert write_back(survey) is None
    assert outside.read_text() == "mine" and outside.stat().st_mtime_ns == 1
    if kind == "newer":
        assert stamp.read_text() == newer
    if kind == "dir":
        assert stamp.is_dir()


def test_a_reused_record_misses_a_project_source_written_after_it(world: World) -> None:
    """(Pre-existing: fails at 0c79e2a too.) A `.venv` is a local source once its
    directory holds a `pyproject.toml` (`scan_env`), but the fingerprint that lets a
    record stand in for a scan sees only the site directories. A collect records the
    venv (no project yet) with a settled stamp; the project is written next to it; the
    next collect reuses the record (`sources: []`), finds no builder and frees
    tinybackend, the project's build backend, whose recorded builder env is gone. Fix:
    `scan_or_reuse` takes the record's `sources` plus the `.venv`'s project as
    `scan_env` finds it now (one stat), or the state print includes that stat."""
    first = world.venv("first")
    install(world, first, str(write_project(world.root / "p1", "pone")))
    holder = world.venv("proj/.venv")
    install(world, holder, "beta")
    time.sleep(2.1)
    collect_json(world)  # records the env anew, with a settled stamp
    (world.root / "proj" / "pyproject.toml").write_text(
        '[project]\nname = "pthree"\nversion = "1.0"\n'
        '[build-system]\nrequires = ["tinybackend"]\nbuild-backend = "tinybackend"\n'
    )
    shutil.rmtree(first)
    result = collect_json(world)
    assert "tinybackend 1.0" not in freed(result), f"freed {sorted(freed(result))}"


def test_held_json_shapes_of_why_envs_adopt_are_the_dataclass_ones(world: World) -> None:
    """`why --json`, `envs --json` and `adopt --json` now come from `_asdict()` (shallow)
    instead of `dataclasses.asdict` (deep): the keys, and referrers as objects, are those
    0c79e2a wrote (compared there by hand: status, collect, hosts and doctor too)."""
    env = world.venv("env")
    install(world, env, "alpha==1.0")
    why = json.loads(world.uvrefs("why", "--json", "alpha").stdout)
    (entry,) = why["entries"]
    assert set(entry) == {
        "bytes",
        "dist",
        "entry",
        "reason",
        "referrers",
        "state",
        "tags",
        "tracked",
        "version",
    }
    assert set(entry["referrers"][0]) == {"env", "verdict", "why"}
    envs = json.loads(world.uvrefs("envs", "--json").stdout)["envs"]
    assert set(envs[0]) == {
        "detail",
        "entries",
        "kind",
        "link_modes",
        "path",
        "python",
        "sizes_from_memory",
        "sole_bytes",
        "state",
    }
    adopted = json.loads(world.uvrefs("adopt", "--json", env).stdout)["adopted"]
    assert set(adopted[0]) == {"entries", "env", "refs_written"}


def test_a_restamp_needs_every_source_the_scan_found_in_the_record(world: World) -> None:
    """The sources half of `restamps`' rule, alone: an env installed from a local project
    (a PEP 610 `dir_info` source, so tinybackend stays while it lives) whose record lost
    its `sources` (rewritten by hand, or by a repair). A status scans it (unsettled stamp)
    and finds the source; were the record stamped again, the next collect would reuse it,
    find no builder, and free tinybackend (charged to an env since deleted)."""
    first = world.venv("first")
    install(world, first, str(write_project(world.root / "p1", "pone")))
    holder = world.venv("holder")
    install(world, holder, str(write_project(world.root / "p2", "ptwo")))
    shutil.rmtree(first)
    time.sleep(2.1)
    (record,) = [
        p
        for p in world.state.rglob("envs/*.json")
        if json.loads(p.read_text())["path"] == str(holder)
    ]
    doc = json.loads(record.read_text())
    assert doc["sources"], "control: the record names the local source"
    record.write_text(json.dumps({**doc, "sources": []}))
    world.uvrefs("status")
    result = collect_json(world)
    assert "tinybackend 1.0" not in freed(result), f"freed {sorted(freed(result))}"
