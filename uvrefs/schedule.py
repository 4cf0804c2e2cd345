"""Periodic collection in one command: a systemd user timer on Linux, a launchd agent on
macOS, otherwise a cron line to add by hand. The job runs `uvrefs collect --no-wait`
(skipping quietly while uv is busy) and appends one line per run to a log."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from uvrefs.errors import UsageError

NAME = "uvrefs-collect"
LABEL = "io.github.uvrefs.collect"


@dataclass(frozen=True)
class Unit:
    """A file the scheduler needs, and the commands that activate it."""

    path: Path
    text: str


@dataclass(frozen=True)
class Schedule:
    kind: str  # systemd | launchd | cron
    units: tuple[Unit, ...]
    activate: tuple[tuple[str, ...], ...]
    deactivate: tuple[tuple[str, ...], ...]
    cron_line: str | None = None


def scheduler_kind() -> str:
    forced = os.environ.get("UVREFS_SCHEDULER")
    if forced:
        return forced
    if sys.platform == "darwin":
        return "launchd"
    if sys.platform.startswith("linux") and shutil.which("systemctl"):
        return "systemd"
    return "cron"


def plan_schedule(every: float, min_age: str, log: Path, uvrefs: str | None = None) -> Schedule:
    """What `schedule install` writes for this machine: pure apart from reading env vars."""
    exe = uvrefs or shutil.which("uvrefs") or f"{sys.executable} -m uvrefs"
    command = (
        f"{exe} collect --no-wait --min-age {shlex.quote(min_age)} --log {shlex.quote(str(log))}"
    )
    env = {
        k: os.environ[k] for k in ("UV_CACHE_DIR", "UVREFS_DIR", "UVREFS_UV") if os.environ.get(k)
    }
    home = Path.home()
    kind = scheduler_kind()
    if kind == "systemd":
        unit_dir = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "systemd/user"
        environment = "".join(f"Environment={k}={shlex.quote(v)}\n" for k, v in env.items())
        service = Unit(
            unit_dir / f"{NAME}.service",
            (
                "[Unit]\nDescription=Free uv cache entries no living environment uses (uvrefs)\n\n"
                f"[Service]\nType=oneshot\n{environment}ExecStart={command}\n"
            ),
        )
        timer = Unit(
            unit_dir / f"{NAME}.timer",
            (
                "[Unit]\nDescription=Run uvrefs collect periodically\n\n"
                f"[Timer]\nOnBootSec=15min\nOnUnitActiveSec={int(every)}s\nPersistent=true\n\n"
                "[Install]\nWantedBy=timers.target\n"
            ),
        )
        return Schedule(
            kind,
            (service, timer),
            (
                ("systemctl", "--user", "daemon-reload"),
                ("systemctl", "--user", "enable", "--now", f"{NAME}.timer"),
            ),
            (("systemctl", "--user", "disable", "--now", f"{NAME}.timer"),),
        )
    if kind == "launchd":
        args = "".join(f"    <string>{a}</string>\n" for a in shlex.split(command))
        envs = "".join(f"    <key>{k}</key><string>{v}</string>\n" for k, v in env.items())
        plist = Unit(
            home / "Library/LaunchAgents" / f"{LABEL}.plist",
            (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" '
                '"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n<plist version="1.0"><dict>\n'
                f"  <key>Label</key><string>{LABEL}</string>\n"
                f"  <key>ProgramArguments</key><array>\n{args}  </array>\n"
                f"  <key>EnvironmentVariables</key><dict>\n{envs}  </dict>\n"
                f"  <key>StartInterval</key><integer>{int(every)}</integer>\n</dict></plist>\n"
            ),
        )
        path = str(plist.path)
        return Schedule(
            kind,
            (plist,),
            (("launchctl", "load", "-w", path),),
            (("launchctl", "unload", "-w", path),),
        )
    if kind != "cron":
        raise UsageError(f"UVREFS_SCHEDULER={kind!r}: use systemd, launchd or cron")
    hours = max(1, round(every / 3600))
    when = "17 3 * * *" if hours >= 24 else f"17 */{hours} * * *"
    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in env.items())
    return Schedule(kind, (), (), (), cron_line=f"{when} {prefix}{command}")


def install(schedule: Schedule, activate: bool = True) -> list[str]:
    """Write the units and activate them; returns what it did, one line each."""
    done = []
    for unit in schedule.units:
        unit.path.parent.mkdir(parents=True, exist_ok=True)
        unit.path.write_text(unit.text)
        done.append(f"wrote {unit.path}")
    done += _run_all(schedule.activate) if activate else []
    if schedule.cron_line:
        done.append(f"add this line to your crontab (crontab -e):\n{schedule.cron_line}")
    return done


def remove(schedule: Schedule, activate: bool = True) -> list[str]:
    done = _run_all(schedule.deactivate) if activate else []
    for unit in schedule.units:
        if unit.path.exists():
            unit.path.unlink()
            done.append(f"removed {unit.path}")
    if schedule.cron_line:
        done.append("remove the uvrefs line from your crontab (crontab -e)")
    return done


def status(schedule: Schedule, log: Path) -> list[str]:
    lines = [f"{u.path}: {'present' if u.path.exists() else 'absent'}" for u in schedule.units]
    if schedule.kind == "systemd" and shutil.which("systemctl"):
        state = subprocess.run(
            ["systemctl", "--user", "is-active", f"{NAME}.timer"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        lines.append(f"timer: {state or 'unknown'}")
    if schedule.cron_line:
        lines.append(f"cron line: {schedule.cron_line}")
    last = log.read_text().splitlines()[-1] if log.exists() and log.stat().st_size else "never ran"
    lines.append(f"last run: {last}")
    return lines


def _run_all(commands: tuple[tuple[str, ...], ...]) -> list[str]:
    done = []
    for command in commands:
        if shutil.which(command[0]) is None:
            done.append(f"skipped `{' '.join(command)}`: {command[0]} not found")
            continue
        result = subprocess.run(list(command), capture_output=True, text=True, check=False)
        outcome = "ok" if result.returncode == 0 else f"failed: {result.stderr.strip()[-200:]}"
        done.append(f"ran `{' '.join(command)}`: {outcome}")
    return done
