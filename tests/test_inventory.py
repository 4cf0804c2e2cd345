"""adopt, envs and why with real uv: what users need to see before trusting a collector."""

from __future__ import annotations

import json
import shutil
import sys

from tests.conftest import World


def test_adopt_makes_plain_uv_envs_collectable(world: World) -> None:
    plain = world.venv("plain")
    world.uv("pip", "install", "-q", "-p", plain, *world.offline(), "alpha==1.0", "beta")
    shutil.rmtree(plain)
    world.uvrefs("collect")
    assert world.archive_of("alpha", "1.0")  # never tracked: kept

    again = world.venv("again")
    world.uv("pip", "install", "-q", "-p", again, *world.offline(), "alpha==1.0", "beta")
    first = json.loads(world.uvrefs("adopt", again, "--json").stdout)
    second = json.loads(world.uvrefs("adopt", again, "--json").stdout)
    assert first["adopted"] == [{"env": str(again), "entries": 2, "refs_written": 2}]
    assert second["adopted"][0]["refs_written"] == 0  # adopting twice is a no-op
    shutil.rmtree(again)
    world.uvrefs("collect")
    assert world.archives() == set()


def test_discover_finds_venvs_and_skips_vcs_and_node_modules(world: World) -> None:
    projects = world.root / "projects"
    wanted = [projects / "a/.venv", projects / "b/deeper/env"]
    skipped = [
        projects / "c/node_modules/pkg/.venv",
        projects / ".git/venv",
        projects / "d/1/2/3/4/5/.venv",
    ]
    for env in wanted + skipped:
        env.parent.mkdir(parents=True, exist_ok=True)
        world.uv("venv", "-q", "--python", sys.executable, env)
        world.uv("pip", "install", "-q", "-p", env, *world.offline(), "beta")
    out = json.loads(world.uvrefs("adopt", "--discover", projects, "--json").stdout)
    assert sorted(a["env"] for a in out["adopted"]) == sorted(str(p) for p in wanted)
    assert world.uvrefs("adopt", check=False).returncode == 2  # nothing to adopt: one-line error


def test_envs_lists_state_python_link_mode_and_sole_bytes(world: World) -> None:
    one, two = world.venv("one"), world.venv("two")
    world.uvrefs("install", "-q", "-p", one, *world.offline(), "big", "beta")
    world.uvrefs(
        "install", "-q", "-p", two, *world.offline(), "beta", extra_env={"UV_LINK_MODE": "symlink"}
    )
    plain = world.venv("plain")  # made with plain uv beside them: found, a root
    world.uv("pip", "install", "-q", "-p", plain, *world.offline(), "alpha==3.0")
    shutil.rmtree(two)
    envs = {e["path"]: e for e in json.loads(world.uvrefs("envs", "--json").stdout)["envs"]}
    assert envs[str(plain)]["kind"] == "discovered" and envs[str(plain)]["entries"] == 1
    assert envs[str(one)]["kind"] == "tracked"
    assert envs[str(one)]["state"] == "alive" and envs[str(one)]["link_modes"] == ["hardlink"]
    assert envs[str(one)]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert envs[str(one)]["entries"] == 2 and envs[str(one)]["sole_bytes"] > 2**20  # big + beta
    assert envs[str(two)]["state"] == "gone" and envs[str(two)]["sole_bytes"] == 0
    # Walked once, remembered after (uv never changes an archive): the same figures, said so.
    again = {e["path"]: e for e in json.loads(world.uvrefs("envs", "--json").stdout)["envs"]}
    assert envs[str(one)]["sizes_from_memory"] == 0 < again[str(one)]["sizes_from_memory"]
    assert again[str(one)]["sole_bytes"] == envs[str(one)]["sole_bytes"]


def test_why_names_packages_and_verdicts(world: World) -> None:
    keep, gone = world.venv("keep"), world.venv("gone")
    world.uvrefs("install", "-q", "-p", keep, *world.offline(), "alpha==2.0")
    world.uvrefs("install", "-q", "-p", gone, *world.offline(), "alpha==1.0")
    shutil.rmtree(gone)
    out = json.loads(world.uvrefs("why", "ALPHA", "--json").stdout)
    by_version = {e["version"]: e for e in out["entries"]}
    assert by_version["2.0"]["referrers"] == [
        {"env": str(keep), "verdict": "holds", "why": f"used by {keep}"}
    ]
    assert by_version["1.0"]["referrers"][0]["verdict"] == "dead"
    # Ids may start with "-" (uv's nanoids): `--` ends the options, as anywhere.
    text = world.uvrefs("why", "--", by_version["1.0"]["entry"]).stdout
    assert "alpha 1.0" in text and "next collect frees it" in text
    assert world.uvrefs("why", "nosuchpackage", check=False).returncode == 1


def test_status_agrees_with_uv_cache_size_and_splits_the_cache(world: World) -> None:
    live, dead = world.venv("live"), world.venv("dead")
    plain = world.venv("out/of/sight/plain")  # deeper than tracked envs' holders are searched
    world.uvrefs("install", "-q", "-p", live, *world.offline(), "alpha==2.0", "beta")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "big", "gamma")
    world.uv("pip", "install", "-q", "-p", plain, *world.offline(), "alpha==3.0")
    shutil.rmtree(dead)
    out = json.loads(world.uvrefs("status", "--json").stdout)
    size = (
        world.uv("cache", "size", "--preview-features", "cache-size")
        .stdout.strip()
        .splitlines()[-1]
    )
    assert out["total_bytes"] == int(size)
    assert out["live"]["entries"] == 2 and out["untracked"]["entries"] == 1
    assert out["held"]["entries"] == 0
    assert out["dead"]["entries"] == 3  # big, gamma and its build backend
    parts = (
        out["live"]["bytes"]
        + out["dead"]["bytes"]
        + out["held"]["bytes"]
        + out["untracked"]["bytes"]
        + out["uv_own_bytes"]
    )
    assert parts == out["total_bytes"]
    # Measured once, remembered after (uv never changes an archive): the same figures, said so.
    again = json.loads(world.uvrefs("status", "--json").stdout)
    assert out["archives_sized_from_memory"] < again["archives_sized_from_memory"] == 6
    assert {**again, "archives_sized_from_memory": 0} == {**out, "archives_sized_from_memory": 0}
    assert "from memory" in world.uvrefs("status").stdout
    freed = json.loads(world.uvrefs("collect", "--json").stdout)["bytes_freed"]
    assert freed == out["dead"]["frees_bytes"] > 2**20


def test_status_from_memory_counts_a_cached_envs_links_once(world: World) -> None:
    """A uv cached env (in the cache) hard-links its packages' files from their archives:
    those archives are walked every time, so remembered sizes never count a file twice."""
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0", "big")
    run = ["run", "-q", "--no-project", "--python", sys.executable, *world.offline()]
    world.uv(*run, "--with", "alpha==1.0", "--with", "beta", "python", "-c", "import beta")
    size = int(
        world.uv("cache", "size", "--preview-features", "cache-size").stdout.strip().split()[-1]
    )
    for _ in range(3):  # walked, then (partly) from memory
        out = json.loads(world.uvrefs("status", "--json").stdout)
        assert out["total_bytes"] == size
    assert out["archives_sized_from_memory"] >= 1  # big: no cached env uses it
