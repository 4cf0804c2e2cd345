"""`uvrefs schedule`: tested by the files it writes (never activating anything here)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import World


@pytest.mark.parametrize("kind", ["systemd", "launchd", "cron"])
def test_schedule_writes_the_job_for_each_scheduler(world: World, kind: str) -> None:
    env = {"UVREFS_SCHEDULER": kind}
    home = world.root / "home"
    dry = world.uvrefs(
        "schedule", "install", "--every", "12h", "--min-age", "2d", "--dry-run", extra_env=env
    )
    assert "--no-wait" in dry.stdout and "2d" in dry.stdout and "collect.log" in dry.stdout
    assert not list(home.rglob("*uvrefs*"))  # a dry run writes nothing
    done = world.uvrefs(
        "schedule", "install", "--every", "12h", "--min-age", "2d", "--no-activate", extra_env=env
    )
    written = sorted(p.name for p in home.rglob("*") if "uvrefs" in p.name and p.is_file())
    if kind == "systemd":
        assert written == ["uvrefs-collect.service", "uvrefs-collect.timer"]
        timer = next(home.rglob("uvrefs-collect.timer")).read_text()
        service = next(home.rglob("uvrefs-collect.service")).read_text()
        assert (
            "OnUnitActiveSec=43200s" in timer
            and f"Environment=UV_CACHE_DIR={world.cache}" in service
        )
    elif kind == "launchd":
        assert written == ["io.github.uvrefs.collect.plist"]
        plist = next(home.rglob("*.plist")).read_text()
        assert "<integer>43200</integer>" in plist and "<string>--no-wait</string>" in plist
    else:
        assert (
            written == []
            and "17 */12 * * *" in done.stdout
            and f"UV_CACHE_DIR={world.cache}" in done.stdout
        )
    world.uvrefs("schedule", "remove", "--no-activate", extra_env=env)
    assert not [p for p in home.rglob("*") if "uvrefs" in p.name and p.is_file()]


def test_collect_log_appends_one_line_per_run(world: World) -> None:
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    shutil.rmtree(env)
    log = world.root / "collect.log"
    world.uvrefs("collect", "--log", log)
    world.uvrefs("collect", "--log", log, "--json")
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and "freed 1 entries" in lines[0] and "freed 0 entries" in lines[1]
    status = world.uvrefs("schedule", "status", extra_env={"UVREFS_SCHEDULER": "cron"})
    assert "cron line:" in status.stdout
    assert json.loads(world.uvrefs("collect", "--json", "--dry-run").stdout)["freed"] == []


def test_auto_collect_runs_at_most_once_per_interval(world: World) -> None:
    import time

    dead, other = world.venv("dead"), world.venv("other")
    world.uvrefs("install", "-q", "-p", dead, *world.offline(), "alpha==1.0")
    shutil.rmtree(dead)
    auto = {"UVREFS_AUTO_COLLECT": "0s"}
    world.uvrefs("install", "-q", "-p", other, *world.offline(), "beta", extra_env=auto)
    log = world.state / "collect.log"
    for _ in range(100):  # the collect runs in the background and logs when it is done
        if log.exists() and log.read_text().endswith("\n"):
            break
        time.sleep(0.1)
    assert not world.archive_of("alpha", "1.0")
    assert "freed 1 entries" in log.read_text()
    daily = {"UVREFS_AUTO_COLLECT": "1d"}
    world.uvrefs("install", "-q", "-p", other, *world.offline(), "alpha==2.0", extra_env=daily)
    time.sleep(1)
    assert len(log.read_text().splitlines()) == 1  # stamped less than a day ago: no second run


def test_collect_log_records_a_failure_with_its_exit_code(world: World) -> None:
    """Every run that could open its log leaves a line there, failures included."""
    log = world.root / "collect.log"
    bad_age = world.uvrefs("collect", "--log", log, "--min-age", "soon", check=False)
    not_a_cache = world.root / "not-a-cache"
    not_a_cache.mkdir()
    bad_cache = world.uvrefs(
        "collect", "--log", log, check=False, extra_env={"UV_CACHE_DIR": str(not_a_cache)}
    )
    lines = log.read_text().splitlines()
    assert len(lines) == 2, lines
    for done, line in zip((bad_age, bad_cache), lines, strict=True):
        said = done.stderr.strip().removeprefix("uvrefs: error: ")
        assert done.returncode == 2 and line.endswith(f" failed (exit 2): {said}"), (line, said)
