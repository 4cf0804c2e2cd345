"""Sizes with a file shared between archives, as a deduplicating tool (rdfind
-makehardlinks, jdupes -L) leaves them: `status`, dry runs and `--budget` count it once, as
`uv cache size` does, and where the collect really frees it (only when every archive
linking it goes). Checked to the byte against real `uv cache size` and the collect."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from tests.conftest import World
from tests.wheels import build_wheel

SHARED = os.urandom(512 * 1024)  # the same file in two packages, a deduplicator's prey


def more_wheels(world: World) -> list[str]:
    """`dupa` and `dupb`, each holding SHARED (different names, identical data file)."""
    out = world.root / "more"
    out.mkdir(exist_ok=True)
    for name in ("dupa", "dupb"):
        build_wheel(out, name, "1.0", files={f"{name}/data.bin": SHARED})
    return [*world.offline(), "--find-links", str(out)]


def deduplicate(world: World) -> None:
    """What `rdfind -makehardlinks true` does to the two copies: one becomes a link."""
    (a,), (b,) = world.archive_of("dupa", "1.0"), world.archive_of("dupb", "1.0")
    kept = world.cache / "archive-v0" / a / "dupa/data.bin"
    replaced = world.cache / "archive-v0" / b / "dupb/data.bin"
    replaced.unlink()
    os.link(kept, replaced)


def uv_cache_size(world: World) -> int:
    done = world.uv("cache", "size", "--preview-features", "cache-size")
    return int(done.stdout.strip().splitlines()[-1])


def status(world: World) -> dict[str, Any]:
    return json.loads(world.uvrefs("status", "--json").stdout)  # type: ignore[no-any-return]


def collect(world: World, *args: str) -> dict[str, Any]:
    return json.loads(world.uvrefs("collect", "--json", *args).stdout)  # type: ignore[no-any-return]


def parts(out: dict[str, Any]) -> int:
    states = ("live", "dead", "held", "untracked")
    return sum(out[s]["bytes"] for s in states) + out["uv_own_bytes"]  # type: ignore[no-any-return]


def test_a_file_a_live_and_a_dead_archive_share_counts_once(world: World) -> None:
    """Remembered sizes from before the deduplication do not stand: the archive the tool
    changed is walked again, and so is the one whose file it now links."""
    live, dead = world.venv("live"), world.venv("dead")
    find = more_wheels(world)
    world.uvrefs("install", "-q", "-p", live, *find, "dupa")
    world.uvrefs("install", "-q", "-p", dead, *find, "dupb")
    shutil.rmtree(dead)
    assert status(world)["total_bytes"] == uv_cache_size(world)  # remembered from here on
    deduplicate(world)
    size = uv_cache_size(world)
    for _ in range(2):  # walked, then as remembered
        out = status(world)
        assert out["total_bytes"] == size == parts(out)
        # the dead archive frees all but the file the live one still links
        assert out["dead"]["bytes"] == out["dead"]["frees_bytes"] < len(SHARED)
    planned = collect(world, "--dry-run")
    assert planned["bytes_freed"] == out["dead"]["frees_bytes"]
    done = collect(world)
    assert done["bytes_freed"] == planned["bytes_freed"] == size - uv_cache_size(world)
    world.run(live / "bin/python", "-c", "import dupa")


def test_a_file_two_dead_archives_share_is_freed_once(world: World) -> None:
    one, two = world.venv("one"), world.venv("two")
    find = more_wheels(world)
    world.uvrefs("install", "-q", "-p", one, *find, "dupa")
    world.uvrefs("install", "-q", "-p", two, *find, "dupb")
    deduplicate(world)  # before anything was remembered
    shutil.rmtree(one)
    shutil.rmtree(two)
    size = uv_cache_size(world)
    out = status(world)
    assert out["total_bytes"] == size == parts(out)
    assert out["dead"]["bytes"] == out["dead"]["frees_bytes"]
    planned = collect(world, "--dry-run")
    assert planned["bytes_freed"] == out["dead"]["frees_bytes"]
    # counted in one of the two, the one whose deletion frees it (the last to go)
    assert sorted(d["bytes"] > len(SHARED) for d in planned["freed"]) == [False, True]
    done = collect(world)
    assert done["bytes_freed"] == planned["bytes_freed"] == size - uv_cache_size(world)


def test_budget_meets_its_target_when_archives_share_a_file(world: World) -> None:
    """The dead archive that shares its big file with a live one frees little: a budget
    counting it whole stopped early and kept the other dead entry ("not needed")."""
    live, dead = world.venv("live"), world.venv("dead")
    find = more_wheels(world)
    world.uvrefs("install", "-q", "-p", live, *find, "dupa")
    world.uvrefs("install", "-q", "-p", dead, *find, "dupb", "alpha==1.0")
    shutil.rmtree(dead)
    deduplicate(world)
    collect(world, "--min-age", "1h")  # stamps when each entry was first seen dead
    (stamps,) = world.state.glob("caches/*/dead-since.json")
    data = json.loads(stamps.read_text())
    (dupb,) = world.archive_of("dupb", "1.0")
    for entry in data["dead_since"]:  # dupb dead longest: the budget takes it first
        data["dead_since"][entry] = time.time() - (7200 if entry == dupb else 3600)
    stamps.write_text(json.dumps(data))
    planned = collect(world, "--dry-run")
    size = uv_cache_size(world)
    budget = size - planned["bytes_freed"]  # reachable only by freeing both
    done = collect(world, "--budget", str(budget))
    assert done["note"] is None, done["note"]
    assert {d["dist"] for d in done["freed"]} == {"dupb", "alpha"}, done["kept"]
    assert uv_cache_size(world) <= budget


def test_budget_out_of_reach_says_so_in_sizes(world: World) -> None:
    live = world.venv("live")
    world.uvrefs("install", "-q", "-p", live, *world.offline(), "big")
    note = collect(world, "--budget", "100K")["note"]
    assert note.startswith("--budget 100.0 KiB cannot be met without touching live entries")
    assert re.search(r"stays \d+\.\d (KiB|MiB) over it$", note), note


def test_footprints_walk_again_only_what_a_shared_file_touches(tmp_path: Path) -> None:
    """Pure: three archives remembered; a file of B is replaced by a link to A's. B changed
    (its directory), A holds the inode B now links (its ranges), C is taken from memory."""
    from uvrefs.footprints import Footprint, Footprints

    for name in "ABC":
        (tmp_path / name / "pkg").mkdir(parents=True)
        (tmp_path / name / "pkg" / "data").write_bytes(os.urandom(64 * 1024))
        (tmp_path / name / "small").write_bytes(b"x" * 100)
    archives = [(name, str(tmp_path / name)) for name in "ABC"]
    first = Footprints.measure(archives, {})
    assert first.remembered == set() and set(first.walked) == set("ABC")
    (tmp_path / "B" / "pkg" / "data").unlink()
    os.link(tmp_path / "A" / "pkg" / "data", tmp_path / "B" / "pkg" / "data")
    again = Footprints.measure(archives, first.walked, detail={"A", "B"})
    assert again.remembered == {"C"}
    ((key, holders),) = again.shared.items()
    assert holders == {"A": 1, "B": 1} and again.walked["A"].shares
    blocks = again.files[key][1]
    whole = again.occupied["A"]
    assert again.frees(["A"]) == {"A": whole - blocks}  # B still links it
    # both go: it counts for the later of them, whose deletion frees it
    assert again.frees(["B", "A"]) == {"B": again.occupied["B"] - blocks, "A": whole}
    assert again.total == sum(first.occupied.values()) - blocks
    assert again.attributed(lambda e: e != "B")["B"] == again.occupied["B"]  # B keeps it
    # a record naming a path outside its archive is not one uvrefs wrote: walk again
    forged = first.walked["C"]._replace(dirs=(("../A", 0),))
    assert isinstance(forged, Footprint)
    assert not forged.holds(str(tmp_path / "C"), os.lstat(tmp_path / "C"))
