"""uv's cache as uv itself leaves it: emptied by `uv cache clean`."""

from __future__ import annotations

import json

from tests.conftest import World


def test_a_cache_emptied_by_uv_cache_clean_is_empty_not_an_error(world: World) -> None:
    """After `uv cache clean` the directory holds only `.lock`: a scheduled collect says
    the cache is empty, forgets the stale refs and exits 0 (it used to fail every night
    until uv ran again)."""
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0", "beta")
    world.uv("cache", "clean", "-q")
    assert sorted(p.name for p in world.cache.iterdir() if not p.name.startswith(".uvrefs-")) == [
        ".lock"
    ]
    dry = world.uvrefs("collect", "--dry-run")
    assert "the cache is empty" in dry.stdout and "would forget the refs of 2 entries" in dry.stdout
    assert len(world.refs()) == 2
    done = json.loads(world.uvrefs("collect", "--json").stdout)
    assert done["freed"] == [] and "the cache is empty" in done["note"]
    assert world.refs() == []
    status = json.loads(world.uvrefs("status", "--json").stdout)
    assert status["live"]["entries"] == status["dead"]["entries"] == 0
