"""collect policies with real uv: --keep, --min-age, --untracked, --max-freed, --budget."""

from __future__ import annotations

import json
import shutil
import time

from tests.conftest import World


def collect_json(world: World, *args: str) -> dict:
    return json.loads(world.uvrefs("collect", "--json", *args).stdout)


def test_keep_and_max_freed(world: World) -> None:
    dead = world.venv("dead")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "big", "alpha==1.0", "beta")
    shutil.rmtree(dead)
    out = collect_json(world, "--dry-run", "--keep", "BIG")
    assert {d["dist"] for d in out["freed"]} == {"alpha", "beta"}
    assert {d["reason"] for d in out["kept"] if d["dist"] == "big"} == {"kept by --keep"}
    out = collect_json(world, "--max-freed", "100K")
    assert out["bytes_freed"] <= 100 * 1024 and out["freed"]
    assert any(d["reason"] == "over --max-freed" for d in out["kept"])
    assert world.archive_of("big", "1.0")  # too big for the limit: still there


def test_min_age_stamps_first_sight_and_waits(world: World) -> None:
    dead = world.venv("dead")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0")
    shutil.rmtree(dead)
    collect_json(world, "--dry-run", "--min-age", "1h")
    assert not list(world.state.glob("caches/*/dead-since.json"))  # a dry run stamps nothing
    out = collect_json(world, "--min-age", "1h")
    assert out["freed"] == [] and "less than --min-age" in out["kept"][0]["reason"]
    (stamps,) = world.state.glob("caches/*/dead-since.json")
    data = json.loads(stamps.read_text())
    data["dead_since"] = {k: time.time() - 7200 for k in data["dead_since"]}  # two hours ago
    stamps.write_text(json.dumps(data))
    out = collect_json(world, "--min-age", "1h")
    assert [d["dist"] for d in out["freed"]] == ["alpha"]


def test_untracked_frees_only_what_no_installed_file_links(world: World) -> None:
    gone, living = world.venv("gone"), world.venv("living")
    world.uv("pip", "install", "-q", "-p", gone, *world.offline(), "alpha==3.0")
    world.uv("pip", "install", "-q", "-p", living, *world.offline(), "beta")  # hard-linked
    shutil.rmtree(gone)
    assert collect_json(world)["freed"] == []  # untracked entries stay by default
    out = collect_json(world, "--untracked")
    assert [d["dist"] for d in out["freed"]] == ["alpha"]
    assert world.archives() == world.archive_of("beta", "1.0")
    world.run(living / "bin/python", "-c", "import beta")


def test_budget_frees_dead_then_untracked_and_says_when_it_cannot(world: World) -> None:
    live, dead, plain = world.venv("live"), world.venv("dead"), world.venv("plain")
    world.uvrefs("install", "-q", "-p", live, *world.offline(), "beta")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0")
    world.uv("pip", "install", "-q", "-p", plain, *world.offline(), "big")
    shutil.rmtree(dead)
    shutil.rmtree(plain)
    roomy = collect_json(world, "--dry-run", "--budget", "1T")
    assert roomy["freed"] == [] and roomy["note"] is None
    tight = collect_json(world, "--budget", "0")
    assert [d["dist"] for d in tight["freed"]] == ["alpha", "big"]  # dead first, then untracked
    assert "cannot be met without touching live entries" in tight["note"]
    assert world.archives() == world.archive_of("beta", "1.0")
    assert world.uvrefs("collect", "--budget", "lots", check=False).returncode == 2
