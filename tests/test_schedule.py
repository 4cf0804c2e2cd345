"""`uvrefs schedule`: tested by the files it writes (never activating anything here)."""

from __future__ import annotations

import dataclasses
import json
import os
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import World, install


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
        assert f'Environment="UV_CACHE_DIR={world.cache}"' in service
        # a calendar timer: Persistent= catches up runs missed while the machine was off
        # (systemd ignores it with OnUnitActiveSec=, so a laptop off at 03:17 never ran)
        assert "OnCalendar=00/12:17:00\nPersistent=true\n" in timer, timer
        assert "OnUnitActiveSec" not in timer and "OnBootSec" not in timer, timer
    elif kind == "launchd":
        assert written == ["io.github.uvrefs.gc.collect.plist"]
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


@pytest.mark.parametrize(
    ("every", "event", "interval"),
    [
        (30, "*:*:00/30", 30),
        (40 * 60, "*:00/30:00", 1800),
        (3600, "*:17:00", 3600),
        (7 * 3600, "00/8:17:00", 8 * 3600),
        (86400, "*-*-* 03:17:00", 86400),
        (3 * 86400, "*-*-01/3 03:17:00", 3 * 86400),
        (14 * 86400, "Sun *-*-* 03:17:00", 7 * 86400),
        (366 * 86400, "*-01-01 03:17:00", 365 * 86400),
    ],
)
def test_the_systemd_timer_runs_at_the_nearest_calendar_times(
    every: float, event: str, interval: float
) -> None:
    from uvrefs.schedule import CALENDARS, calendar_times

    assert calendar_times(every) == (event, interval)
    if shutil.which("systemd-analyze"):  # every event uvrefs can write, as systemd reads it
        for _, spec in CALENDARS:
            checked = subprocess.run(
                ["systemd-analyze", "calendar", spec], capture_output=True, text=True, check=False
            )
            assert checked.returncode == 0, (spec, checked.stderr)


def test_systemd_is_chosen_only_where_a_user_manager_answers(world: World) -> None:
    """`systemctl` on PATH is not enough: over `ssh`, `su` or in a container there is no
    user manager, `systemctl --user` fails ("Failed to connect to bus") and so did the
    install. uvrefs asks the manager's socket (a connect, no process); cron otherwise."""
    import socket

    runtime = world.root / "run"
    (runtime / "systemd").mkdir(parents=True)
    env = {**fake_schedulers(world), "XDG_RUNTIME_DIR": str(runtime)}
    dry = world.uvrefs("schedule", "install", "--dry-run", extra_env=env).stdout
    assert " collect --no-wait " in dry and "# uvrefs-collect every 86400s" in dry, dry
    assert dry.startswith("note: no systemd user manager answers here"), dry
    (runtime / "systemd/private").touch()  # a stale socket file answers nothing either
    assert (
        "uvrefs-collect every"
        in world.uvrefs("schedule", "install", "--dry-run", extra_env=env).stdout
    )
    (runtime / "systemd/private").unlink()
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    manager.bind(str(runtime / "systemd/private"))
    manager.listen()
    try:
        dry = world.uvrefs("schedule", "install", "--dry-run", extra_env=env).stdout
    finally:
        manager.close()
    assert "OnCalendar=" in dry and "$ systemctl --user enable --now" in dry, dry
    assert "note:" not in dry
    # installed with systemd, looked at where no manager answers: still systemd's job
    world.uvrefs(
        "schedule", "install", "--no-activate", extra_env={**env, "UVREFS_SCHEDULER": "systemd"}
    )
    status = world.uvrefs("schedule", "status", extra_env=env).stdout
    assert "uvrefs-collect.timer: present" in status, status


def test_collect_log_appends_one_line_per_run(world: World) -> None:
    env = world.venv("env")
    world.uvrefs("install", "-q", "-p", env, *world.offline(), "alpha==1.0")
    shutil.rmtree(env)
    log = world.root / "collect.log"
    world.uvrefs("collect", "--log", log)
    world.uvrefs("collect", "--log", log, "--json")
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and "freed 1 entry," in lines[0] and "freed 0 entries" in lines[1]
    status = world.uvrefs("schedule", "status", extra_env={"UVREFS_SCHEDULER": "cron"})
    assert "last run: never ran" in status.stdout and "next run: " in status.stdout
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
    assert "freed 1 entry," in log.read_text()
    daily = {"UVREFS_AUTO_COLLECT": "1d"}
    world.uvrefs("install", "-q", "-p", other, *world.offline(), "alpha==2.0", extra_env=daily)
    time.sleep(1)
    assert len(log.read_text().splitlines()) == 1  # stamped less than a day ago: no second run


# ------------------------------------------------ the job as each scheduler runs it

# What each scheduler gives a job besides HOME and the user's name (and nothing from the
# user's shell profile): cron(8), systemd's user manager, launchd's agent defaults.
SCHEDULER_ENV = {
    "cron": {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"},
    "systemd": {"PATH": "/usr/local/bin:/usr/bin:/bin", "SHELL": "/bin/sh"},
    "launchd": {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
}


@dataclass(frozen=True)
class ScheduledJob:
    argv: list[str]
    env: dict[str, str]
    cwd: Path

    def run(self, world: World) -> subprocess.CompletedProcess[str]:
        """Run the job exactly as its scheduler would: this argv, this environment only."""
        pairs = [f"{k}={v}" for k, v in self.env.items()]
        return subprocess.run(
            ["env", "-i", *pairs, *self.argv],
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def cron_command(field: str) -> str:
    """cron's reading of a command field: `\\%` is `%`, an unescaped `%` ends the command
    (the rest becomes stdin; uvrefs never writes one)."""
    out, escaped = [], False
    for ch in field:
        if escaped and ch == "%":
            out[-1] = "%"
        elif ch == "%":
            raise AssertionError(f"unescaped % in the cron line: {field}")
        else:
            out.append(ch)
        escaped = ch == "\\" and not escaped
    return "".join(out)


def systemd_words(value: str, env: dict[str, str]) -> list[str]:
    """systemd's reading of an ExecStart=/Environment= value: `%%` is `%` (other
    specifiers are refused here), words split and unquoted, then `$$` is `$` and `$VAR`
    or `${VAR}` the unit's Environment= value."""
    assert "%" not in value.replace("%%", ""), value
    words = shlex.split(value.replace("%%", "%"))

    def expand(m: re.Match[str]) -> str:
        return "$" if m.group() == "$$" else env.get(m.group(1) or m.group(2), "")

    return [re.sub(r"\$\$|\$\{(\w+)\}|\$(\w+)", expand, w) for w in words]


def scheduled_job(kind: str, home: Path, installed: str) -> ScheduledJob:
    """The command and environment the scheduler would run, read from what `schedule
    install --no-activate` wrote (the unit files) or printed (the cron line)."""
    base = {**SCHEDULER_ENV[kind], "HOME": str(home), "LOGNAME": "tester", "USER": "tester"}
    if kind == "cron":
        line = next(ln for ln in installed.splitlines() if " collect --no-wait " in ln)
        fields = line.split(maxsplit=5)
        return ScheduledJob(["/bin/sh", "-c", cron_command(fields[5])], base, home)
    if kind == "systemd":
        service = next(home.rglob("uvrefs-collect.service")).read_text().splitlines()
        env: dict[str, str] = {}
        for line in service:
            if line.startswith("Environment="):
                for word in systemd_words(line.removeprefix("Environment="), {}):
                    key, _, value = word.partition("=")
                    env[key] = value
        exec_start = next(ln for ln in service if ln.startswith("ExecStart="))
        argv = systemd_words(exec_start.removeprefix("ExecStart="), env)
        return ScheduledJob(argv, {**base, **env}, home)
    agent = plistlib.loads(next(home.rglob("*.plist")).read_bytes())
    return ScheduledJob(
        agent["ProgramArguments"], {**base, **agent["EnvironmentVariables"]}, Path("/")
    )


def a_users_world(world: World) -> World:
    """The world as a user's login shell has it: uv on a PATH schedulers do not use, the
    cache and state dirs from XDG variables set in a profile schedulers do not read, and
    no UV_CACHE_DIR, UVREFS_DIR or UVREFS_UV."""
    env = {k: v for k, v in world.env.items() if k not in ("UV_CACHE_DIR", "UVREFS_DIR")}
    del env["UVREFS_UV"]
    env.update(XDG_CACHE_HOME=str(world.root / "xdg-cache"))
    env.update(XDG_STATE_HOME=str(world.root / "xdg-state"))
    assert not any(Path(d, "uv").exists() for d in SCHEDULER_ENV["cron"]["PATH"].split(":"))
    cache, state = world.root / "xdg-cache/uv", world.root / "xdg-state/uvrefs"
    return dataclasses.replace(world, cache=cache, state=state, env=env)


@pytest.mark.parametrize("kind", ["cron", "systemd", "launchd"])
def test_the_scheduled_job_frees_a_dead_env_in_its_schedulers_environment(
    world: World, kind: str
) -> None:
    """Installed from a user's shell, run with only what the scheduler gives: it finds
    uvrefs, uv, the cache and the store, frees what only the deleted env used (symlink
    mode: a wrong free would break the living env's import) and logs one line."""
    user = a_users_world(world)
    live, dead = user.venv("live"), user.venv("dead")
    install(user, live, "alpha==2.0")
    install(user, dead, "alpha==1.0", "beta")
    shutil.rmtree(dead)
    assert user.archive_of("alpha", "1.0")
    done = user.uvrefs(
        "schedule", "install", "--every", "12h", "--min-age", "0s", "--no-activate",
        extra_env={"UVREFS_SCHEDULER": kind},
    )  # fmt: skip
    job = scheduled_job(kind, world.root / "home", done.stdout)
    if kind == "systemd" and shutil.which("systemd-analyze"):  # systemd's own parser agrees
        service = next((world.root / "home").rglob("uvrefs-collect.service"))
        timer = service.with_suffix(".timer")
        verify = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(service), str(timer)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert verify.returncode == 0 and not verify.stderr, verify.stderr
    ran = job.run(user)
    assert ran.returncode == 0, ran.stderr
    assert not user.archive_of("alpha", "1.0") and user.archive_of("alpha", "2.0")
    assert len(user.archives()) == 1  # beta went with alpha 1.0
    imported = subprocess.run(
        ["env", "-i", str(live / "bin/python"), "-c", "import alpha"],
        capture_output=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    lines = (user.state / "collect.log").read_text().splitlines()
    assert len(lines) == 1 and "freed 2 entries" in lines[0], lines
    status = user.uvrefs("schedule", "status", extra_env={"UVREFS_SCHEDULER": kind})
    assert f"last run: {lines[0]}" in status.stdout, status.stdout


def test_a_failing_job_logs_its_exit_code_and_message(world: World) -> None:
    """uvrefs fails (the cache it was installed for is gone): the log says so, with the
    exit code and uvrefs's own message, in one line."""
    user = a_users_world(world)
    install(user, user.venv("env"), "alpha==1.0")
    done = user.uvrefs(
        "schedule", "install", "--every", "12h", "--no-activate",
        extra_env={"UVREFS_SCHEDULER": "cron"},
    )  # fmt: skip
    shutil.rmtree(user.cache)
    ran = scheduled_job("cron", world.root / "home", done.stdout).run(user)
    assert ran.returncode == 2
    lines = (user.state / "collect.log").read_text().splitlines()
    said = ran.stderr.strip().removeprefix("uvrefs: error: ")
    assert len(lines) == 1 and lines[0].endswith(f" failed (exit 2): {said}"), (lines, said)


def test_a_job_whose_uvrefs_cannot_start_still_logs_one_line(world: World) -> None:
    """Installed from a console script that is later removed (uvrefs uninstalled or moved):
    the shell wrapper logs the failure, once."""
    user = a_users_world(world)
    bindir = world.root / "bin"
    bindir.mkdir()
    script = bindir / "uvrefs"
    shutil.copy2(Path(sys.executable).parent / "uvrefs", script)
    done = user.run(
        script, "schedule", "install", "--every", "12h", "--no-activate",
        extra_env={"UVREFS_SCHEDULER": "cron"},
    )  # fmt: skip
    job = scheduled_job("cron", world.root / "home", done.stdout)
    assert str(script) in job.argv[-1]
    script.unlink()
    ran = job.run(user)
    assert ran.returncode == 127
    lines = (user.state / "collect.log").read_text().splitlines()
    assert len(lines) == 1 and f"failed (exit 127): {script} did not run" in lines[0], lines


@pytest.mark.parametrize("planted", ["fifo", "symlink"])
def test_a_log_planted_as_a_fifo_or_a_link_neither_hangs_the_job_nor_leads_out(
    world: World, planted: str
) -> None:
    """A FIFO as the job's log hung its wrapper (`wc -c < log`, before uvrefs even ran),
    so a systemd oneshot stayed active and the timer never fired again; a symlink as the
    log made `collect --log` append to the file it leads to. Now the job finishes at
    once, with one line on stderr, and the file outside is untouched."""
    user = a_users_world(world)
    install(user, user.venv("env"), "alpha==1.0")
    done = user.uvrefs(
        "schedule", "install", "--every", "12h", "--no-activate",
        extra_env={"UVREFS_SCHEDULER": "cron"},
    )  # fmt: skip
    log = user.state / "collect.log"
    outside = world.root / "outside.txt"
    outside.write_text("untouched\n")
    if planted == "fifo":
        os.mkfifo(log)
    else:
        log.symlink_to(outside)
    ran = scheduled_job("cron", world.root / "home", done.stdout).run(user)  # 120 s bound
    assert ran.returncode == 2 and "not a regular file" in ran.stderr, ran.stderr
    assert outside.read_text() == "untouched\n"
    assert log.is_fifo() if planted == "fifo" else log.is_symlink()


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


# ------------------------------------------------ systemctl, launchctl and crontab

FAKE_SCHEDULER = """#!/bin/sh
echo "$0 $*" >>"$FAKE_CALLS"
if [ -n "$FAKE_FAIL" ]; then echo "$FAKE_FAIL" >&2; exit 1; fi
case "$0 $1" in
  *systemctl*) case "$*" in *show*)
    printf 'ActiveState=active\\nNextElapseUSecRealtime=Thu 2026-12-03 03:17:00 UTC\\n';;
  esac;;
  *"crontab -l") [ -f "$FAKE_CRONTAB" ] || { echo "no crontab for tester" >&2; exit 1; }
    cat "$FAKE_CRONTAB";;
  *"crontab -") cat >"$FAKE_CRONTAB";;
esac
"""


def fake_schedulers(world: World, fail: str = "") -> dict[str, str]:
    """systemctl, launchctl and crontab that log their calls (crontab keeps a file), or
    fail with `fail` on stderr; returns the environment that puts them first on PATH."""
    bindir = world.root / "fakebin"
    bindir.mkdir(exist_ok=True)
    for name in ("systemctl", "launchctl", "crontab"):
        (bindir / name).write_text(FAKE_SCHEDULER)
        (bindir / name).chmod(0o755)
    return {
        "PATH": f"{bindir}:{world.env['PATH']}",
        "FAKE_CALLS": str(world.root / "calls"),
        "FAKE_CRONTAB": str(world.root / "crontab"),
        "FAKE_FAIL": fail,
    }


@pytest.mark.parametrize("kind", ["systemd", "launchd", "cron"])
@pytest.mark.parametrize("command", ["install", "remove"])
def test_a_failing_scheduler_command_is_a_one_line_error(
    world: World, kind: str, command: str
) -> None:
    fakes = fake_schedulers(world, fail="Failed to connect to bus: No medium found")
    env = {**fakes, "UVREFS_SCHEDULER": kind}
    if command == "remove":  # something to remove
        world.uvrefs("schedule", "install", "--no-activate", extra_env=env)
    done = world.uvrefs("schedule", command, check=False, extra_env=env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert re.fullmatch(
        r"uvrefs: error: `(systemctl|launchctl|crontab) [^`]+` failed \(exit 1\): Failed to "
        rf"connect to bus: No medium found; fix that and run `uvrefs schedule {command}` "
        r"again[^\n]*\n",
        done.stderr,
    ), done.stderr
    missing = world.uvrefs(
        "schedule", command, check=False,
        extra_env={"UVREFS_SCHEDULER": kind, "PATH": str(world.root / "no-bin")},
    )  # fmt: skip
    assert missing.returncode == 1 and " not found on PATH" in missing.stderr, missing.stderr
    assert len(missing.stderr.splitlines()) == 1, missing.stderr


def test_schedule_status_asks_systemd_when_the_job_runs_next(world: World) -> None:
    env = {**fake_schedulers(world), "UVREFS_SCHEDULER": "systemd"}
    done = world.uvrefs("schedule", "install", "--every", "12h", extra_env=env)
    assert "ran `systemctl --user enable --now uvrefs-collect.timer`" in done.stdout
    status = world.uvrefs("schedule", "status", extra_env=env).stdout
    assert "timer: active" in status and "last run: never ran" in status, status
    assert "next run: Thu 2026-12-03 03:17:00 UTC (from systemd)" in status, status


@pytest.mark.parametrize("kind", ["cron", "launchd"])
def test_schedule_status_computes_the_next_run_from_the_last(world: World, kind: str) -> None:
    """cron and launchd cannot say when a job runs next: status adds the interval to the
    last run (the log's time) and says it computed it. A cron install edits the crontab
    (keeping the user's own lines, and one uvrefs line however often it is installed)."""
    env = {**fake_schedulers(world), "UVREFS_SCHEDULER": kind}
    crontab = world.root / "crontab"
    crontab.write_text("0 0 * * * echo mine\n")
    for _ in range(2):
        world.uvrefs("schedule", "install", "--every", "12h", extra_env=env)
    if kind == "cron":
        lines = crontab.read_text().splitlines()
        assert lines[0] == "0 0 * * * echo mine" and len(lines) == 2, lines
        assert lines[1].startswith("17 */12 * * * ") and " collect --no-wait " in lines[1]
    status = world.uvrefs("schedule", "status", extra_env=env).stdout
    assert "next run: within 12h of installing (computed)" in status, status
    log = world.state / "collect.log"
    world.uvrefs("collect", "--log", log, check=False)  # no cache yet: a failure, logged
    last = log.stat().st_mtime
    status = world.uvrefs("schedule", "status", extra_env=env).stdout
    due = datetime.fromtimestamp(last + 43200).astimezone().isoformat(timespec="seconds")
    assert f"next run: {due} (computed: last run + 12h)" in status, status
    assert f"last run: {log.read_text().splitlines()[-1]}" in status, status
    world.uvrefs("schedule", "remove", extra_env=env)
    if kind == "cron":
        assert crontab.read_text() == "0 0 * * * echo mine\n"
    status = world.uvrefs("schedule", "status", extra_env=env).stdout
    assert "next run: none (not installed; run uvrefs schedule install)" in status, status


def test_schedule_status_counts_the_runs_skipped_since_the_last_collect(world: World) -> None:
    """A long `uv run` made every scheduled run skip, and `status` showed only the last
    line: it says how many runs were skipped (and failed) since the last collect, and
    who held the cache the last time."""
    env = {**fake_schedulers(world), "UVREFS_SCHEDULER": "cron"}
    install(world, world.venv("env"), "alpha==1.0")
    log = world.state / "collect.log"
    world.uvrefs("collect", "--log", log)
    status = world.uvrefs("schedule", "status", extra_env=env).stdout
    assert "since the last collect: no run skipped or failed" in status, status
    with world.uv_at_work() as holder:
        for _ in range(3):
            world.uvrefs("collect", "--no-wait", "--log", log)
    world.uvrefs("collect", "--log", log, "--min-age", "soon", check=False)
    lines = log.read_text().splitlines()
    assert len(lines) == 5, lines
    status = world.uvrefs("schedule", "status", extra_env=env).stdout
    since = lines[0].split()[0]
    assert f"since the last collect ({since}): 3 runs skipped (cache in use), 1 failed; " in status
    if os.path.isfile("/proc/locks"):  # who held it (macOS: lsof)
        assert "the last skipped: held by `python -c import fcntl, os, sys, time; " in status
        assert f"(pid {holder.pid}, started " in status, status


def test_status_with_a_fifo_for_a_log_does_not_wait(tmp_path: Path) -> None:
    """`schedule status` reads the job's last line without waiting on a FIFO planted as
    its log (it hung) and without following a link."""
    import os

    from uvrefs.schedule import _last_line

    fifo = tmp_path / "collect.log"
    os.mkfifo(fifo)
    assert _last_line(fifo) is None
    real = tmp_path / "real.log"
    real.write_text("2026-01-01 one\n2026-01-02 two\n")
    assert _last_line(real) is not None and _last_line(real)[1] == "2026-01-02 two"  # type: ignore[index]
    link = tmp_path / "link.log"
    link.symlink_to(real)
    assert _last_line(link) is None
