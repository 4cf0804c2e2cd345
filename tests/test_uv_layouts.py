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


def test_doctor_names_the_cache_preview_features_in_effect(world: World) -> None:
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "beta")
    config = world.root / "home" / ".config" / "uv"
    config.mkdir(parents=True)
    (config / "uv.toml").write_text('preview-features = ["centralized-project-envs"]\n')
    extra = {"UV_PREVIEW_FEATURES": "content-addressed-cache,python-upgrade"}
    done = world.uvrefs("doctor", "--json", check=False, extra_env=extra)
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    preview = checks["uv preview layouts"]
    assert preview["status"] == "ok"
    assert "content-addressed-cache (from UV_PREVIEW_FEATURES)" in preview["detail"]
    assert "centralized-project-envs (from " in preview["detail"]
    assert "python-upgrade" not in preview["detail"]
    plain = json.loads(world.uvrefs("doctor", "--json", check=False).stdout)["checks"]
    assert {c["name"]: c for c in plain}["uv preview layouts"]["detail"] != preview["detail"]
