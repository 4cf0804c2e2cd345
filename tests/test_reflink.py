"""The safety scenarios on a reflink filesystem (a loop-mounted XFS, tests/fsimage.py), in
uv's default link mode: clone, really in effect, as on macOS APFS or btrfs.

Installed files are clones there: their own inodes, st_nlink 1, blocks shared with the
archive. No hard-link count protects a cache entry, so uvrefs must recognise every use by
content. A wrongly freed entry does not break the env either (a clone owns its blocks): what
proves an entry was kept is that it is still in the cache, and that a reinstall `--offline`
uses it (unpacks no new archive). The fixtures come from tests/fsimage.py (a plugin that
tests/conftest.py loads)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.conftest import World
from tests.fsimage import SESSION, shares_blocks


def site_packages(env: Path) -> Path:
    return next(env.glob("lib/python*/site-packages"))


def assert_cloned(world: World, env: Path, dist: str, version: str) -> None:
    """The env's `<dist>-<version>.dist-info/METADATA` is a clone of the cached one: its own
    inode, no other link, and (where the filesystem tells) the same shared blocks."""
    (entry,) = world.archive_of(dist, version)
    info = f"{dist}-{version}.dist-info"
    cached = world.cache / "archive-v0" / entry / info / "METADATA"
    installed = site_packages(env) / info / "METADATA"
    c, i = os.lstat(cached), os.lstat(installed)
    assert (i.st_nlink, c.st_nlink) == (1, 1), f"{installed} is hard-linked: not a clone"
    assert (i.st_dev, i.st_ino) != (c.st_dev, c.st_ino)
    assert installed.read_bytes() == cached.read_bytes()
    shared = shares_blocks(installed, cached)  # None: cannot tell (btrfs inlines small files)
    assert shared or (shared is None and SESSION["fs"] != "xfs"), f"{installed} is a copy"


def how_recorded(world: World, dist: str, version: str) -> dict[str, str]:
    """env -> how uvrefs recorded its use of the `<dist> <version>` entry."""
    (entry,) = world.archive_of(dist, version)
    (refs,) = [p for p in world.refs() if p.stem == entry]
    return {r["env"]: r["how"] for r in json.loads(refs.read_text())["referrers"]}


def install(world: World, env: Path, *requirements: str) -> None:
    world.uvrefs("install", "-q", "-p", env, *world.offline(), *requirements)


def test_collect_frees_exactly_what_a_deleted_clone_env_used(reflink_world: World) -> None:
    """Two envs share beta, each has its own alpha (the dead one plat too): collect frees
    alpha 1.0 and plat, keeps what the live env uses, and the live env reinstalls from it."""
    w = reflink_world
    assert "UV_LINK_MODE" not in w.env  # uv's default: clone
    live, dead = w.venv("live"), w.venv("dead")
    install(w, live, "alpha==2.0", "beta")
    install(w, dead, "alpha==1.0", "beta", "plat")
    for env, dist, version in [
        (live, "alpha", "2.0"),
        (live, "beta", "1.0"),
        (dead, "alpha", "1.0"),
        (dead, "beta", "1.0"),
        (dead, "plat", "1.0"),
    ]:
        assert_cloned(w, env, dist, version)
    assert how_recorded(w, "beta", "1.0") == {str(live): "content", str(dead): "content"}
    dead_only = w.archive_of("alpha", "1.0") | w.archive_of("plat", "1.0")
    live_entries = w.archive_of("alpha", "2.0") | w.archive_of("beta", "1.0")
    assert len(dead_only) == 2 and len(live_entries) == 2

    shutil.rmtree(dead)
    out = w.uvrefs("collect").stdout

    assert w.archives() == live_entries
    assert "freed 2 entries" in out
    assert not (w.cache / ".uvrefs-trash").exists()
    w.run(live / "bin/python", "-c", "import alpha, beta; assert alpha.__version__ == '2.0'")
    w.reinstalls_offline(live, "alpha==2.0", "beta")
    assert w.archives() == live_entries  # the reinstall used the kept entries
    assert_cloned(w, live, "alpha", "2.0")
    w.run(live / "bin/python", "-c", "import alpha, beta")


def test_plain_uv_upgrade_to_a_version_a_deleted_env_used_keeps_it(reflink_world: World) -> None:
    """A tracked env upgraded with plain uv to alpha 2.0, which only a deleted env was
    recorded as using: the live env's clone of alpha 2.0 is a use, so the entry stays."""
    w = reflink_world
    live, dead = w.venv("live"), w.venv("dead")
    install(w, live, "alpha==1.0")
    install(w, dead, "alpha==2.0")
    entry = w.archive_of("alpha", "2.0")
    w.uv("pip", "install", "-q", "-p", live, *w.offline(), "alpha==2.0")  # not through uvrefs
    assert w.archive_of("alpha", "2.0") == entry  # uv reused the dead env's entry...
    assert_cloned(w, live, "alpha", "2.0")  # ...by cloning it
    assert how_recorded(w, "alpha", "2.0") == {str(dead): "content"}

    shutil.rmtree(dead)
    w.uvrefs("collect")

    assert not w.archive_of("alpha", "1.0")  # the live env no longer uses alpha 1.0
    assert w.archive_of("alpha", "2.0") == entry, "collect freed the live env's alpha 2.0"
    w.reinstalls_offline(live, "alpha==2.0")
    assert w.archive_of("alpha", "2.0") == entry
    w.run(live / "bin/python", "-c", "import alpha; assert alpha.__version__ == '2.0'")


def test_dry_run_says_what_is_kept_and_why(reflink_world: World) -> None:
    w = reflink_world
    live, dead = w.venv("live"), w.venv("dead")
    install(w, live, "alpha==2.0", "beta")
    install(w, dead, "alpha==1.0", "beta")
    assert_cloned(w, live, "beta", "1.0")
    (old,), (new,), (beta,) = (
        w.archive_of("alpha", "1.0"),
        w.archive_of("alpha", "2.0"),
        w.archive_of("beta", "1.0"),
    )
    shutil.rmtree(dead)
    before = w.archives()

    out = w.uvrefs("collect", "--dry-run").stdout.splitlines()

    assert w.archives() == before
    assert [line for line in out if line.startswith("would free alpha")] == [
        next(line for line in out if line.startswith("would free alpha 1.0 [py3-none-any]"))
    ]
    assert any(line.endswith(f"{old}: {dead} no longer exists") for line in out)
    assert f"kept alpha 2.0 {new}: used by {live}" in out
    assert f"kept beta 1.0 {beta}: used by {live}" in out  # the dead env's use does not count
    assert out[-1].startswith("would free 1 entry,") and ": 2 live" in out[-1]
    doc = json.loads(w.uvrefs("collect", "--dry-run", "--json").stdout)
    assert {d["entry"]: d["reason"] for d in doc["kept"]} == {
        new: f"used by {live}",
        beta: f"used by {live}",
    }
    assert [d["entry"] for d in doc["freed"]] == [old] and w.archives() == before
