"""Each command says the true state, in the one vocabulary (`plan.entry_states`): envs and
doctor agree on an env's state; collect and status count untracked entries alike."""

from __future__ import annotations

import json
import shutil
import time
from typing import Any

from tests.conftest import World


def _envs(world: World) -> dict[str, str]:
    views = json.loads(world.uvrefs("envs", "--json").stdout)["envs"]
    return {v["path"]: v["state"] for v in views}


def _doctor_envs(world: World) -> str:
    checks = json.loads(world.uvrefs("doctor", "--json").stdout)["checks"]
    return next(c["detail"] for c in checks if c["name"] == "environments")


def _status(world: World) -> dict[str, Any]:
    return json.loads(world.uvrefs("status", "--json").stdout)  # type: ignore[no-any-return]


def test_envs_and_doctor_agree_on_envs_that_use_nothing(world: World) -> None:
    empty = world.venv("empty")
    world.uvrefs("adopt", empty)
    failed = world.venv("failed")
    world.uvrefs("install", "-q", "-p", failed, *world.offline(), "nonexistent", check=False)
    tools = {"UV_TOOL_DIR": str(world.root / "tools"), "UV_TOOL_BIN_DIR": str(world.root / "b")}
    world.uvrefs("uv", "tool", "install", "-q", *world.offline(), "tooly", extra_env=tools)
    world.uvrefs("uv", "tool", "uninstall", "tooly", extra_env=tools)
    assert _envs(world) == {
        str(empty): "alive",
        str(failed): "alive",
        str(world.root / "tools" / "tooly"): "gone",
    }
    assert _doctor_envs(world) == "2 alive, 1 gone"
    shutil.rmtree(empty)
    shutil.rmtree(failed)
    assert set(_envs(world).values()) == {"gone"}
    assert _doctor_envs(world) == "3 gone"


def test_envs_and_doctor_agree_on_an_env_of_another_mount_namespace(world: World) -> None:
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    (record,) = world.state.glob("caches/*/envs/*.json")
    doc = json.loads(record.read_text())
    record.write_text(json.dumps({**doc, "mntns": "mnt:[1]"}))
    shutil.rmtree(env)
    assert _envs(world) == {str(env): "unknown"}  # unknown keeps: it may live elsewhere
    assert _doctor_envs(world) == "1 unknown"


def test_collect_counts_untracked_entries_as_status_does(world: World) -> None:
    tracked = world.venv("tracked")
    world.uvrefs("install", "-q", "-p", tracked, *world.offline(), "alpha==1.0")
    plain = world.venv("plain")
    world.uv("pip", "install", "-q", "-p", plain, *world.offline(), "beta", "alpha==2.0")
    shutil.rmtree(plain)
    untracked = _status(world)["untracked"]["entries"]
    assert untracked == 2
    plain_run = json.loads(world.uvrefs("collect", "--json", "--dry-run").stdout)
    assert plain_run["untracked"] == untracked
    freeing = json.loads(world.uvrefs("collect", "--json", "--dry-run", "--untracked").stdout)
    assert len(freeing["freed"]) == 2 and freeing["untracked"] == 0
    line = world.uvrefs("collect", "--untracked").stdout.splitlines()[-1]
    assert line.endswith("kept 1 entry: 1 live, 0 held and 0 untracked"), line
    assert _status(world)["untracked"]["entries"] == 0


def test_entries_kept_by_hard_links_are_held_not_live(world: World) -> None:
    hardlink = {"UV_LINK_MODE": "hardlink"}
    gone = world.venv("gone")
    world.uvrefs("install", "-q", "-p", gone, *world.offline(), "alpha==1.0", extra_env=hardlink)
    # a copy uvrefs cannot find (deeper than it looks around tracked envs) links its files
    plain = world.venv("deep/er/plain")
    world.uv(
        "pip", "install", "-q", "-p", plain, *world.offline(), "alpha==1.0", extra_env=hardlink
    )
    shutil.rmtree(gone)
    status = _status(world)
    assert status["live"]["entries"] == 0 and status["held"]["entries"] == 1
    why = world.uvrefs("why", "alpha").stdout
    assert "held" in why and "hard-linked" in why


def test_counts_of_one_are_singular(world: World) -> None:
    dead = world.venv("dead")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0")
    live = world.venv("live")
    world.uv("pip", "install", "-q", "-p", live, *world.offline(), "beta")
    adopted = world.uvrefs("adopt", live).stdout
    assert adopted.endswith(": uses 1 cache entry, 1 ref written\n"), adopted
    shutil.rmtree(dead)
    line = world.uvrefs("collect", "--dry-run").stdout.splitlines()[-1]
    assert line.startswith("would free 1 entry, ") and line.endswith(
        "; kept 1 entry: 1 live, 0 held and 0 untracked"
    ), line
    status = world.uvrefs("status").stdout
    assert " 1 entry " in status and " 1 entries " not in status, status


def test_durations_read_as_words(world: World) -> None:
    dead = world.venv("dead")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0", "beta")
    shutil.rmtree(dead)
    world.uvrefs("collect", "--min-age", "1h")  # stamps when each was first seen dead
    (stamps,) = world.state.glob("caches/*/dead-since.json")
    data = json.loads(stamps.read_text())
    alpha, beta = sorted(data["dead_since"], key=lambda e: world.archive_of("beta", "1.0") == {e})
    data["dead_since"] = {alpha: time.time() - 200, beta: time.time() - 9 * 86400}
    stamps.write_text(json.dumps(data))
    reasons = {
        d["dist"]: d["reason"]
        for d in json.loads(world.uvrefs("collect", "--json", "--min-age", "2w").stdout)["kept"]
    }
    assert reasons == {
        "alpha": "dead for 3 minutes, less than --min-age (2 weeks)",
        "beta": "dead for 9 days, less than --min-age (2 weeks)",
    }


def test_what_status_calls_dead_is_what_the_next_collect_frees(world: World) -> None:
    """uv's pointer files (the wheels bucket's link and sidecars, an sdist's revision) go
    with their entries: they count as dead, not as uv's own."""
    dead = world.venv("dead")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0", "gamma")
    shutil.rmtree(dead)
    out = _status(world)
    assert out["dead"]["bytes"] == out["dead"]["frees_bytes"]
    line = next(ln for ln in world.uvrefs("status").stdout.splitlines() if ln.startswith("  dead"))
    size = " ".join(line.split()[3:5])  # dead  N entries  SIZE  the next collect frees SIZE
    assert line.endswith(f"the next collect frees {size}"), line
    freed = json.loads(world.uvrefs("collect", "--json").stdout)["bytes_freed"]
    assert freed == out["dead"]["bytes"]


def test_doctor_names_each_check_once(world: World) -> None:
    env = world.venv("env")
    world.uvrefs(
        "install", "-q", "-p", env, *world.offline(), "beta", extra_env={"UV_LINK_MODE": "symlink"}
    )
    names = [c["name"] for c in json.loads(world.uvrefs("doctor", "--json").stdout)["checks"]]
    assert "symlink-mode envs" in names and len(names) == len(set(names)), names


def test_units_read_as_words() -> None:
    from uvrefs.units import human_duration, plural

    assert [human_duration(s) for s in (0, 59, 119, 180, 7200, 90000, 9 * 86400, 1209600)] == [
        "0 seconds",
        "59 seconds",
        "119 seconds",
        "3 minutes",
        "2 hours",
        "25 hours",
        "9 days",
        "2 weeks",
    ]
    assert [plural(n, "entry") for n in (0, 1, 2)] == ["0 entries", "1 entry", "2 entries"]


def test_names_compare_as_pep_503_does() -> None:
    from uvrefs.names import normalize

    assert {normalize(n) for n in ("a--b", "A_b", "a.-_B", "a-b")} == {"a-b"}
    assert normalize("python_dateutil") == "python-dateutil"
