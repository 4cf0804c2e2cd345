"""The core scenario against several uv releases (fetched by scripts/fetch_uv_versions.py
into the test venv): bucket discovery (wheels-vN, sdists-vN, archive-v0 change between
releases), pointer removal for registry, local and sdist-built wheels, and doctor."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import make_world

VERSIONS_DIR = Path(sys.prefix) / "uv-versions"
FOUND = sorted(VERSIONS_DIR.glob("*/uv")) if VERSIONS_DIR.is_dir() else []


@pytest.mark.skipif(
    not FOUND, reason="no uv releases fetched: run scripts/fetch_uv_versions.py (make test does)"
)
@pytest.mark.parametrize("uv_bin", FOUND, ids=[p.parent.name for p in FOUND])
def test_core_scenario_on_uv_release(uv_bin: Path, tmp_path: Path, wheelhouse: Path) -> None:
    world = make_world(tmp_path, wheelhouse, str(uv_bin))
    local = next(world.wheels.glob("beta-1.0-*.whl"))
    live, dead = world.venv("live"), world.venv("dead")
    world.uvrefs("install", "-q", "-p", live, *world.offline(), "alpha==2.0")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0", "gamma", local)
    buckets = {p.name.split("-v")[0] for p in world.cache.iterdir() if "-v" in p.name}
    assert {"archive", "wheels", "sdists"} <= buckets
    shutil.rmtree(dead)

    out = json.loads(world.uvrefs("collect", "--json").stdout)
    assert {d["dist"] for d in out["freed"]} == {"alpha", "gamma", "tinybackend", "beta"}
    assert world.archives() == world.archive_of("alpha", "2.0")
    assert world.dangling_pointers() == []
    world.reinstalls_offline(live, "alpha==2.0")
    again = world.venv("again")
    world.uv("pip", "install", "-q", "-p", again, local, *world.offline(), "gamma")
    world.run(again / "bin/python", "-c", "import beta, gamma")
    doctor = json.loads(world.uvrefs("doctor", "--json").stdout)
    checks = {c["name"]: c for c in doctor["checks"]}
    assert uv_bin.parent.name in checks["uv"]["detail"]
    assert checks["cache layout"]["status"] == "ok", checks["cache layout"]
