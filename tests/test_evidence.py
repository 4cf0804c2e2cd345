"""Content is evidence of a use of our archives only where it means one: a copy or a clone
uv made from our cache. An env installed in hardlink mode from another uv cache (its files
are that cache's) or made by pip (it never used a uv cache) holds nothing of ours, so two
caches side by side no longer keep each other's twins forever. `why` says "by content"
when that is the evidence."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from tests.conftest import World

HARDLINK = {"UV_LINK_MODE": "hardlink"}


def _dry_run(world: World) -> dict[str, str]:
    out = json.loads(world.uvrefs("collect", "--dry-run", "--json").stdout)
    return {f"{d['dist']} {d['version']}": d["state"] for d in out["freed"] + out["kept"]}


def test_an_env_of_another_cache_hard_links_nothing_of_ours(world: World) -> None:
    mine = world.venv("mine")
    world.uvrefs("install", "-q", "-p", mine, *world.offline(), "alpha==1.0", extra_env=HARDLINK)
    # the same package, installed beside it (a root: the directory holds a tracked env)
    # from another uv cache, hard-linked from that cache's archive
    other = {**HARDLINK, "UV_CACHE_DIR": str(world.root / "other-cache")}
    theirs = world.venv("theirs")
    world.uv("pip", "install", "-q", "-p", theirs, *world.offline(), "alpha==1.0", extra_env=other)
    shutil.rmtree(mine)
    assert _dry_run(world) == {"alpha 1.0": "dead"}
    world.uvrefs("collect")
    assert world.archive_of("alpha", "1.0") == set()
    world.run(theirs / "bin/python", "-c", "import alpha")  # its files are its cache's


def test_an_env_pip_made_uses_nothing_of_ours(world: World) -> None:
    mine = world.venv("mine")
    world.uvrefs("install", "-q", "-p", mine, *world.offline(), "alpha==1.0")
    pips = world.root / "pips"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", pips], check=True)
    world.run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        pips / "bin/python",
        "install",
        "-q",
        "--no-cache-dir",
        *world.offline(),
        "alpha==1.0",
    )
    shutil.rmtree(mine)
    assert _dry_run(world) == {"alpha 1.0": "dead"}


def test_a_copy_from_our_cache_still_counts_and_why_says_by_content(world: World) -> None:
    mine = world.venv("mine")
    world.uvrefs("install", "-q", "-p", mine, *world.offline(), "alpha==1.0", extra_env=HARDLINK)
    copy = world.venv("copy")  # plain uv, copy mode, from our cache: found beside `mine`
    world.uv(
        "pip",
        "install",
        "-q",
        "-p",
        copy,
        *world.offline(),
        "alpha==1.0",
        extra_env={"UV_LINK_MODE": "copy"},
    )
    shutil.rmtree(mine)
    assert _dry_run(world) == {"alpha 1.0": "live"}
    why = world.uvrefs("why", "alpha").stdout
    assert f"live: used by {copy} (discovered) (by content)" in why, why
    world.uvrefs("collect")  # records the discovered env: its referrer says "by content"
    why = world.uvrefs("why", "alpha").stdout
    assert f"holds: used by {copy} (by content)" in why, why
