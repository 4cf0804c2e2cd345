"""The sweep against a cache someone else can write to: nothing outside the cache root is
ever touched, and one entry that cannot be deleted never stops the rest, nor later runs.
Each test plants canary files outside the cache and checks their content and mtime."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import World, as_nobody


def canaries(world: World) -> tuple[Path, dict[str, tuple[bytes, int]]]:
    outside = world.root / "outside"
    (outside / "deep").mkdir(parents=True)
    for name in ("a.txt", "deep/b.txt"):
        (outside / name).write_text(f"canary {name}\n")
    return outside, snapshot(outside)


def snapshot(top: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(top)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(top.rglob("*"))
        if p.is_file()
    }


def dead_entries(world: World) -> set[str]:
    """A live env (alpha 2.0, beta) and a deleted one (alpha 1.0, plat)."""
    live, dead = world.venv("live"), world.venv("dead")
    world.uvrefs("install", "-q", "-p", live, *world.offline(), "alpha==2.0", "beta")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0", "plat")
    shutil.rmtree(dead)
    return world.archive_of("alpha", "1.0") | world.archive_of("plat", "1.0")


def test_planted_trash_links_are_removed_never_followed(world: World) -> None:
    doomed = dead_entries(world)
    outside, before = canaries(world)
    (world.cache / ".uvrefs-trash").symlink_to(outside)
    (world.cache / ".uvrefs-trash-x1").symlink_to(outside / "deep")
    out = json.loads(world.uvrefs("collect", "--json").stdout)
    assert {d["entry"] for d in out["freed"]} == doomed
    assert snapshot(outside) == before
    assert not list(world.cache.glob(".uvrefs-trash*"))


def test_trash_replaced_by_a_link_while_collecting_moves_nothing_out(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone renames the collector's trash away and plants a link under its name just
    after it is made: the collector renames into the directory it opened, by descriptor,
    so nothing leaves the cache, and it never removes what the name now points to."""
    from uvrefs.cache import Cache
    from uvrefs.gc import collect as core
    from uvrefs.gc import sweep
    from uvrefs.store.refs import RefsStore

    doomed = dead_entries(world)
    outside, before = canaries(world)
    for key, value in world.env.items():
        monkeypatch.setenv(key, value)
    made = sweep.Trash.__init__

    def swap(self: sweep.Trash, root: Path, root_fd: int) -> None:
        made(self, root, root_fd)
        os.rename(root / self.name, root / "stolen")
        (root / self.name).symlink_to(outside)

    monkeypatch.setattr(sweep.Trash, "__init__", swap)
    cache = Cache.open(world.cache)
    result = core.collect(cache, RefsStore(world.state, cache.root), dry_run=False, timeout=5)
    assert {d.entry for d in result.freed} == doomed
    assert snapshot(outside) == before
    assert os.listdir(world.cache / "stolen") == []  # emptied where it really was
    assert not doomed & world.archives()


def test_a_bucket_named_link_out_of_the_cache_is_never_used(world: World) -> None:
    dead_entries(world)
    outside, before = canaries(world)
    (outside / "AAAAAAAAAAAAAAAA").mkdir()
    (outside / "AAAAAAAAAAAAAAAA" / "x.txt").write_text("x")
    before = snapshot(outside)
    (world.cache / "archive-v9").symlink_to(outside)
    (store,) = world.state.glob("caches/*")
    (store / "refs" / "AAAAAAAAAAAAAAAA.refs").write_text(
        json.dumps({"format": 1, "entry": "AAAAAAAAAAAAAAAA", "referrers": []})
    )
    world.uvrefs("collect")
    assert snapshot(outside) == before


def test_a_filesystem_mounted_in_a_dead_archive_is_left_and_reported(world: World) -> None:
    doomed = dead_entries(world)
    (alpha,) = world.archive_of("alpha", "1.0")
    inside = world.cache / "archive-v0" / alpha / "alpha"
    if subprocess.run(["mount", "-t", "tmpfs", "none", str(inside)], check=False).returncode:
        pytest.skip("mounting is not allowed here")
    try:
        (inside / "canary.txt").write_text("mounted")
        done = world.uvrefs("collect", "--json", check=False)
        out = json.loads(done.stdout)
        assert done.returncode == 1 and "mounted inside" in " ".join(out["errors"])
        assert {d["entry"] for d in out["freed"]} == doomed - {alpha}
        assert (inside / "canary.txt").read_text() == "mounted"
        again = world.uvrefs("collect", "--json", check=False)  # not blocked by it
        assert "Traceback" not in again.stderr and again.returncode in (0, 1)
        assert alpha in world.archives()
    finally:
        subprocess.run(["umount", str(inside)], check=True)
    world.uvrefs("collect")
    assert not doomed & world.archives()


def test_an_undeletable_file_is_reported_and_later_runs_finish(world: World) -> None:
    doomed = dead_entries(world)
    (plat,) = world.archive_of("plat", "1.0")
    stuck = next((world.cache / "archive-v0" / plat).rglob("*.py"))
    if subprocess.run(["chattr", "+i", str(stuck)], check=False).returncode:
        pytest.skip("chattr +i is not supported here")
    try:
        done = world.uvrefs("collect", "--json", check=False)
        out = json.loads(done.stdout)
        assert done.returncode == 1 and "not permitted" in " ".join(out["errors"])
        # Out of uv's sight all the same: the archive was renamed into the trash first.
        assert not doomed & world.archives() and world.dangling_pointers() == []
        (left,) = [p for p in world.cache.glob(".uvrefs-trash-*")]
        again = world.uvrefs("collect", check=False)
        assert again.returncode == 1 and "cannot empty the leftover trash" in again.stderr
        stuck = next(left.rglob(stuck.name))
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=False)
    world.uvrefs("collect")
    assert not list(world.cache.glob(".uvrefs-trash*"))


def test_an_archive_the_collector_cannot_read_is_skipped(open_world: World) -> None:
    """Run unprivileged (root reads everything): a dead archive it may not read stays,
    reported; the other dead entry is freed; no traceback."""
    world = open_world
    doomed = dead_entries(world)
    (plat,) = world.archive_of("plat", "1.0")
    done = as_nobody(world, "collect", "--json", owned_by_root=[world.cache / "archive-v0" / plat])
    assert "Traceback" not in done.stderr and done.returncode == 1, done.stderr
    out = json.loads(done.stdout)
    assert {d["entry"] for d in out["freed"]} == doomed - {plat}
    assert plat in world.archives() and world.dangling_pointers() == []
