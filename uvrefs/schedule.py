"""Periodic collection in one command: a systemd user timer on Linux, a launchd agent on
macOS, otherwise a line in the user's crontab. Schedulers run jobs with almost no
environment (cron: PATH=/usr/bin:/bin), so the job names everything by absolute path,
resolved at install time: uvrefs, uv, the cache and the store.

The job runs `uvrefs collect --no-wait --log LOG`, which appends one line per run with its
outcome, failures included. A small `sh` wrapper adds that line when uvrefs could not run
at all (moved, uninstalled, its interpreter gone): it appends only if uvrefs failed and the
log did not grow, so every run leaves exactly one line."""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from uvrefs.errors import UsageError, UvrefsError
from uvrefs.files import SMALL, read_file, tail
from uvrefs.units import format_duration

NAME = "uvrefs-collect"
LABEL = "io.github.uvrefs.gc.collect"
CRON_MARK = f"# {NAME}"  # ends the crontab line uvrefs owns
MAX_EVERY = 366 * 86400.0  # seconds: launchd's StartInterval and cron cannot go much further

# `sh -c` script: $1 is the log, the rest is the uvrefs command line. It reads nothing
# before uvrefs runs (a FIFO planted as the log would hang a reader, and the timer with
# it): uvrefs marks a fresh `mktemp` file (UVREFS_LOGGED) once it has logged its run. If
# uvrefs failed without marking it, uvrefs never got to log: the wrapper says so, in a
# log that is a regular file (or none yet), never through a link. (No `\`; `%`, which
# cron and systemd would rewrite, and `$` for systemd are escaped where it is written.)
WRAPPER = (
    'log="$1"; shift; mark=$(mktemp 2>/dev/null) || mark=; '
    'UVREFS_LOGGED="$mark" "$@"; code=$?; '
    'if [ "$code" -ne 0 ] && [ -n "$mark" ] && [ ! -s "$mark" ] && [ ! -h "$log" ] '
    '&& { [ ! -e "$log" ] || [ -f "$log" ]; }; then '
    'echo "$(date -u +%Y-%m-%dT%H:%M:%S+00:00) failed (exit $code): $1 did not run or was '
    'killed; check that it runs, then run uvrefs schedule install again" >>"$log"; fi; '
    '[ -z "$mark" ] || rm -f "$mark"; exit "$code"'
)


class SchedulerFailed(UvrefsError):
    """systemctl, launchctl or crontab failed or could not be run."""

    exit_code = 1


@dataclass(frozen=True)
class Unit:
    """A file the scheduler needs, and the commands that activate it."""

    path: Path
    text: str


@dataclass(frozen=True)
class Job:
    """What the scheduler runs, every path absolute: the command and its environment."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    log: Path


@dataclass(frozen=True)
class Schedule:
    kind: str  # systemd | launchd | cron
    job: Job
    every: float
    units: tuple[Unit, ...]
    activate: tuple[tuple[str, ...], ...]
    deactivate: tuple[tuple[str, ...], ...]
    cron_line: str | None = None
    note: str | None = None  # why this scheduler, when it is not the obvious one


def scheduler_kind(installed: bool = False) -> str:
    """`UVREFS_SCHEDULER`, else launchd on macOS, systemd on Linux where a systemd user
    manager answers (`user_manager_answers`), else cron. `installed`: the job is looked
    for (status, remove), so systemd also if its timer is there, manager or not."""
    if forced():
        return forced()
    if sys.platform == "darwin":
        return "launchd"
    if sys.platform.startswith("linux") and shutil.which("systemctl"):
        if user_manager_answers() or (installed and (_unit_dir() / f"{NAME}.timer").exists()):
            return "systemd"
    return "cron"


def forced() -> str:
    return os.environ.get("UVREFS_SCHEDULER", "")


def _unit_dir() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd/user"


def user_manager_answers() -> bool:
    """Whether `systemctl --user` can reach a systemd user manager: it first connects to
    the manager's own socket, `$XDG_RUNTIME_DIR/systemd/private`, which exists only while
    the manager runs (a login session, or lingering). Without it (an `ssh` or `su` session
    with no user manager, a container) `systemctl --user` fails with "Failed to connect to
    bus", so the job goes to cron. A connect, not a process."""
    import socket

    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if not os.path.isabs(runtime):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(os.path.join(runtime, "systemd", "private"))
    except OSError:  # missing, stale (no listener), not a socket, or not ours
        return False
    finally:
        probe.close()
    return True


def uvrefs_command() -> tuple[str, ...]:
    """How to start this uvrefs again from anywhere: the console script it was started
    as, else this interpreter with `-m uvrefs` (`-P`: not from the job's working dir)."""
    script = sys.argv[0] if sys.argv else ""
    name = os.path.basename(script)
    if name.startswith("uvrefs") and not name.endswith(".py") and os.access(script, os.X_OK):
        return (os.path.abspath(script),)
    return (os.path.abspath(sys.executable), "-P", "-m", "uvrefs")


def resolve_job(
    min_age: str, log: Path, uvrefs: tuple[str, ...] | None = None, retry_for: str = "0s"
) -> Job:
    """The job for this user now: uv as uvrefs finds it (`UVREFS_UV`, else PATH), the
    cache uv uses here and the store uvrefs uses, all pinned as absolute paths, and the
    host name uvrefs records envs under (`UVREFS_HOST`, if set: the job must judge this
    machine's envs as its own, not as another host's). While uv
    holds the cache, the job tries again for `retry_for` (half the interval: done before
    the next run) before it skips."""
    from uvrefs import uv
    from uvrefs.store import stamps

    uvbin = os.path.abspath(uv.find_uv())
    env = (
        ("UV_CACHE_DIR", os.path.abspath(uv.cache_dir())),
        ("UVREFS_DIR", stamps.default_state_dir()),
        ("UVREFS_UV", uvbin),
        *((("UVREFS_HOST", os.environ["UVREFS_HOST"]),) if os.environ.get("UVREFS_HOST") else ()),
    )
    argv = (
        *(uvrefs or uvrefs_command()),
        "collect",
        "--no-wait",
        "--retry-for",
        retry_for,
        "--min-age",
        min_age,
        "--log",
        str(log),
    )
    for word in (*argv, *(v for _, v in env)):
        if "\n" in word or "\r" in word or "\0" in word:
            raise UsageError(
                f"{word!r} has a line break, which no scheduler can run; move it to a path "
                "without one"
            )
    return Job(argv, env, log)


def plan_schedule(every: float, job: Job, installed: bool = False) -> Schedule:
    """What `schedule install` writes for this machine: pure apart from reading env vars
    and asking whether a systemd user manager answers (`installed`: see scheduler_kind)."""
    argv = ("/bin/sh", "-c", WRAPPER, NAME, str(job.log), *job.argv)
    home = Path.home()
    kind = scheduler_kind(installed)
    if kind == "systemd":
        unit_dir = _unit_dir()
        environment = "".join(f"Environment={_systemd_word(f'{k}={v}')}\n" for k, v in job.env)
        command = " ".join(_systemd_word(a).replace("$", "$$") for a in argv)
        service = Unit(
            unit_dir / f"{NAME}.service",
            (
                "[Unit]\nDescription=Free uv cache entries no living environment uses (uvrefs)\n\n"
                f"[Service]\nType=oneshot\n{environment}ExecStart={command}\n"
            ),
        )
        calendar, every = calendar_times(every)
        spread = int(min(every / 10, 1800))  # many users' 03:17 runs, spread a little
        timer = Unit(
            unit_dir / f"{NAME}.timer",
            (
                "[Unit]\nDescription=Run uvrefs collect periodically\n\n"
                # A calendar timer, so that Persistent= catches up a run missed while the
                # machine was off (systemd ignores it for OnUnitActiveSec=).
                f"[Timer]\nOnCalendar={calendar}\nPersistent=true\n"
                f"RandomizedDelaySec={spread}s\n\n"
                "[Install]\nWantedBy=timers.target\n"
            ),
        )
        return Schedule(
            kind,
            job,
            every,
            (service, timer),
            (
                ("systemctl", "--user", "daemon-reload"),
                ("systemctl", "--user", "enable", "--now", f"{NAME}.timer"),
            ),
            (("systemctl", "--user", "disable", "--now", f"{NAME}.timer"),),
        )
    if kind == "launchd":
        agent = {
            "Label": LABEL,
            "ProgramArguments": list(argv),
            "EnvironmentVariables": dict(job.env),
            "StartInterval": int(every),
        }
        plist = Unit(
            home / "Library/LaunchAgents" / f"{LABEL}.plist", plistlib.dumps(agent).decode()
        )
        path = str(plist.path)
        return Schedule(
            kind,
            job,
            every,
            (plist,),
            (("launchctl", "load", "-w", path),),
            (("launchctl", "unload", "-w", path),),
        )
    if kind != "cron":
        raise UsageError(f"UVREFS_SCHEDULER={kind!r}: use systemd, launchd or cron")
    when, every = cron_times(every)
    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in job.env)
    # cron turns an unescaped % into a line break; it reads \% as %
    command = f"{prefix}{shlex.join(argv)}".replace("%", "\\%")
    line = f"{when} {command} {CRON_MARK} every {int(every)}s"
    note = None
    if sys.platform.startswith("linux") and shutil.which("systemctl") and not forced():
        note = (
            "no systemd user manager answers here (no $XDG_RUNTIME_DIR/systemd/private), so "
            "cron runs the job; UVREFS_SCHEDULER=systemd forces systemd"
        )
    return Schedule(kind, job, every, (), (), (), cron_line=line, note=note)


def cron_times(every: float) -> tuple[str, float]:
    """The cron times nearest to every `every` seconds, and the interval they give:
    hours that divide a day, then every N days of the month, weekly, or monthly."""
    hours = every / 3600
    if hours < 24:
        step = min((1, 2, 3, 4, 6, 8, 12), key=lambda h: abs(h - hours))
        return ("17 * * * *" if step == 1 else f"17 */{step} * * *"), step * 3600.0
    days = round(hours / 24)
    if days <= 1:
        return "17 3 * * *", 86400.0
    if days < 7:
        return f"17 3 */{days} * *", days * 86400.0
    if days < 28:
        return "17 3 * * 0", 7 * 86400.0
    return "17 3 1 * *", 30 * 86400.0


# systemd calendar events by interval: every N seconds, minutes or hours that divide the
# next unit, every N days of the month, weekly, monthly, quarterly, yearly.
CALENDARS = (
    *((n, f"*:*:00/{n}") for n in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)),
    *((n * 60, f"*:00/{n}:00") for n in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30)),
    (3600, "*:17:00"),
    *((n * 3600, f"00/{n}:17:00") for n in (2, 3, 4, 6, 8, 12)),
    (86400, "*-*-* 03:17:00"),
    *((n * 86400, f"*-*-01/{n} 03:17:00") for n in (2, 3, 4, 5, 6)),
    (7 * 86400, "Sun *-*-* 03:17:00"),
    (30 * 86400, "*-*-01 03:17:00"),
    (91 * 86400, "*-01/3-01 03:17:00"),
    (365 * 86400, "*-01-01 03:17:00"),
)


def calendar_times(every: float) -> tuple[str, float]:
    """The systemd calendar event nearest to every `every` seconds (by ratio), and the
    interval it gives."""
    import math

    seconds, event = min(CALENDARS, key=lambda c: abs(math.log(c[0] / every)))
    return event, float(seconds)


def _systemd_word(word: str) -> str:
    """One word of a unit file's command line or assignment, quoted as systemd reads it
    (`%` starts a specifier; `\\` and `"` are escaped inside double quotes)."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def install(schedule: Schedule, activate: bool = True) -> list[str]:
    """Write the units and activate them; returns what it did, one line each. Raises
    `SchedulerFailed` if the scheduler's command fails (the files stay written)."""
    from uvrefs.files import write_atomic

    done = []
    for unit in schedule.units:
        unit.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(str(unit.path), unit.text)
        done.append(f"wrote {unit.path}")
    if schedule.cron_line is not None and not activate:
        return [*done, f"add this line to your crontab (crontab -e):\n{schedule.cron_line}"]
    if not activate:
        return done
    try:
        if schedule.cron_line is None:
            return done + [_run(command) for command in schedule.activate]
        kept = [line for line in _crontab() if not _is_ours(line)]
        _write_crontab([*kept, schedule.cron_line])
    except SchedulerFailed as exc:
        written = " (the files are written)" if schedule.units else ""
        raise SchedulerFailed(
            f"{exc}; fix that and run `uvrefs schedule install` again{written}, or use "
            "--no-activate and set the job up yourself"
        ) from None
    return [*done, f"added to your crontab:\n{schedule.cron_line}"]


def remove(schedule: Schedule, activate: bool = True) -> list[str]:
    """Deactivate the job and remove its files; returns what it did, one line each."""
    try:
        return _remove(schedule, activate)
    except SchedulerFailed as exc:
        raise SchedulerFailed(
            f"{exc}; fix that and run `uvrefs schedule remove` again, or use --no-activate "
            "to remove only the files"
        ) from None


def _remove(schedule: Schedule, activate: bool) -> list[str]:
    if schedule.units and not any(unit.path.exists() for unit in schedule.units):
        return ["no uvrefs job installed: nothing to remove"]
    done = []
    if activate and schedule.cron_line is not None:
        lines = _crontab()
        kept = [line for line in lines if not _is_ours(line)]
        if len(kept) == len(lines):
            done.append("no uvrefs line in your crontab")
        else:
            _write_crontab(kept)
            done.append("removed the uvrefs line from your crontab")
    elif schedule.cron_line is not None:
        done.append("remove the uvrefs line from your crontab (crontab -e)")
    done += [_run(command) for command in schedule.deactivate] if activate else []
    for unit in schedule.units:
        if unit.path.exists():
            unit.path.unlink()
            done.append(f"removed {unit.path}")
    return done


def status(schedule: Schedule, log: Path) -> list[str]:
    """Whether the job is installed, its last outcome (the log's last line) and when it
    runs next: systemd's answer, else computed from the last run and the interval."""
    lines = [f"{u.path}: {'present' if u.path.exists() else 'absent'}" for u in schedule.units]
    last_run = _last_line(log)
    lines.append(f"last run: {last_run[1] if last_run else f'never ran (no lines in {log})'}")
    if last_run:
        lines.append(runs_since_last_collect(log))
    if schedule.kind == "systemd":
        lines += _systemd_timer()
        return lines
    try:
        every = _installed_interval(schedule)
    except SchedulerFailed as exc:
        return [*lines, f"next run: unknown ({exc})"]
    if every is None:
        lines.append("next run: none (not installed; run uvrefs schedule install)")
    elif last_run is None:
        lines.append(f"next run: within {format_duration(every)} of installing (computed)")
    else:
        due = datetime.fromtimestamp(last_run[0] + every).astimezone()
        lines.append(
            f"next run: {due.isoformat(timespec='seconds')} (computed: last run + "
            f"{format_duration(every)})"
        )
    return lines


def _installed_interval(schedule: Schedule) -> float | None:
    """The interval of the installed job (None if it is not installed); raises
    `SchedulerFailed` if `crontab -l` cannot say."""
    if schedule.kind == "launchd":
        try:
            agent = plistlib.loads(read_file(str(schedule.units[0].path), SMALL))
            return float(agent["StartInterval"])
        except (OSError, ValueError, KeyError, TypeError, plistlib.InvalidFileException):
            return None
    for line in _crontab():
        if _is_ours(line):
            try:
                return float(line.rsplit(" ", 1)[-1].removesuffix("s"))
            except ValueError:
                return None
    return None


def _is_ours(line: str) -> bool:
    """Whether a crontab line is the one uvrefs wrote (it ends `# uvrefs-collect every Ns`)."""
    return f" {CRON_MARK} every " in line


def _systemd_timer() -> list[str]:
    command = (
        "systemctl",
        "--user",
        "show",
        f"{NAME}.timer",
        "--property=ActiveState,NextElapseUSecRealtime,LastTriggerUSec",
    )
    try:
        done = _call(command)
    except SchedulerFailed as exc:
        return [f"next run: unknown ({exc})"]
    props = dict(line.partition("=")[::2] for line in done.splitlines())
    return [
        f"timer: {props.get('ActiveState') or 'unknown'}",
        f"next run: {props.get('NextElapseUSecRealtime') or 'not scheduled'} (from systemd)",
    ]


SKIPPED = " cache in use, skipped ("  # how a run that found uv holding the cache logs it
LOG_TAIL = 1 << 20  # bytes of the log read for `status`: thousands of runs


def runs_since_last_collect(log: Path) -> str:
    """How many runs the log shows skipped (uv held the cache) or failed since the last
    one that collected, and why the last one was skipped (who held the cache)."""
    found = tail(str(log), LOG_TAIL)
    lines = found[1].decode("utf-8", "replace").splitlines() if found else []
    if found and len(found[1]) == LOG_TAIL:
        lines = lines[1:]  # the first may be cut
    skipped, failed, why, since = 0, 0, "", None
    for line in reversed(lines):
        when, _, what = line.partition(" ")
        if f" {what}".startswith(SKIPPED):
            skipped += 1
            why = why or what.partition("; ")[2]
        elif what.startswith(("failed (exit", "interrupted")):
            failed += 1
        elif what:
            since = when
            break
    if not skipped and not failed:
        return "since the last collect: no run skipped or failed"
    if since is not None:
        start = f"since the last collect ({since})"
    elif found and len(found[1]) == LOG_TAIL:
        start = "in the log's last lines (no collect among them)"
    else:
        start = "no collect in the log yet"
    counts = [f"{skipped} run{'s' * (skipped != 1)} skipped (cache in use)"] if skipped else []
    counts += [f"{failed} failed"] if failed else []
    last = f"; the last skipped: {why}" if why else ""
    return f"{start}: {', '.join(counts)}{last}"


def _last_line(log: Path) -> tuple[float, str] | None:
    """When the log was last written and its last line, or None if it has none."""
    found = tail(str(log), 4096)  # never waiting on a FIFO, never through a link
    if found is None:
        return None
    lines = found[1].decode("utf-8", "replace").splitlines()
    return (found[0], lines[-1]) if lines else None


def _crontab() -> list[str]:
    """The user's crontab lines (none if the user has no crontab yet)."""
    return _call(("crontab", "-l"), no_crontab_ok=True).splitlines()


def _write_crontab(lines: list[str]) -> None:
    _call(("crontab", "-"), stdin="".join(f"{line}\n" for line in lines))


def _run(command: tuple[str, ...]) -> str:
    _call(command)
    return f"ran `{' '.join(command)}`"


def _call(command: tuple[str, ...], stdin: str | None = None, no_crontab_ok: bool = False) -> str:
    """Run a scheduler command and return its stdout; a failure is `SchedulerFailed`."""
    shown = " ".join(command)
    if shutil.which(command[0]) is None:
        raise SchedulerFailed(f"{command[0]} not found on PATH; `{shown}` must run for this job")
    try:
        done = subprocess.run(
            list(command),
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        raise SchedulerFailed(f"`{shown}` did not finish within 60s; retry") from None
    except OSError as exc:
        raise SchedulerFailed(f"cannot run `{shown}`: {exc.strerror}") from None
    if done.returncode != 0:
        if no_crontab_ok and "no crontab" in done.stderr.lower():
            return ""
        said = (done.stderr.strip() or done.stdout.strip() or "(no output)").splitlines()[-1]
        raise SchedulerFailed(f"`{shown}` failed (exit {done.returncode}): {said}")
    return done.stdout
