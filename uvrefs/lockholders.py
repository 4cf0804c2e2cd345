"""Who holds uv's cache lock: a long `uv run` (a Jupyter server, a training run) keeps it
shared for its whole life, and a collector waiting for it, or skipping, names it.

Read-only: nothing here takes, or waits for, the lock. On Linux, `/proc/locks` lists each
`flock` with the pid that took it; that process may have exited while a process it
started holds the lock by an inherited descriptor (uvrefs's own background recorder
does), so each one is checked against `/proc/PID/fdinfo`, whose `lock:` lines show the
locks on that very descriptor, and the true holders are searched for when it is not the
taker. On macOS, `lsof` (where present) and `ps`. Every file goes through uvrefs.files."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

from uvrefs.files import read_file

PROC = "/proc"
LOCKS_LIMIT = 64 << 20  # bytes of /proc/locks: a line per lock on the whole machine
SCAN_BUDGET = 2.0  # seconds for searching every process for an inherited descriptor


@dataclass(frozen=True)
class Holder:
    """A process holding uv's cache lock, or what is known of one: its pid, command line
    and start (None when not visible to this user), the lock's mode, and what else is
    true of it (a holder by inheritance, one that cannot be seen)."""

    pid: int | None
    command: str | None
    started: float | None  # seconds since the epoch
    exclusive: bool
    detail: str = ""

    def describe(self, now: float) -> str:
        """`` `uv run jupyter lab` (pid 4242, started 3 days ago) ``."""
        facts = [f"pid {self.pid}"] if self.pid else []
        if self.started is not None:
            facts.append(f"started {ago(now - self.started)}")
        facts += [self.detail] if self.detail else []
        facts += ["exclusively"] if self.exclusive else []
        text = f"`{self.command}`" if self.command else "a process"
        return text + (f" ({', '.join(facts)})" if facts else "")


@dataclass(frozen=True)
class _Lock:
    pid: int  # who took it, as /proc/locks says (0: exited, or in another pid namespace)
    exclusive: bool


def holders(lock_path: str) -> list[Holder] | None:
    """The processes holding the lock on `lock_path`; None if this system cannot tell
    (no /proc/locks, no lsof)."""
    try:
        if os.path.isfile(os.path.join(PROC, "locks")):
            return _linux_holders(lock_path)
        if sys.platform == "darwin":
            return _lsof_holders(lock_path)
    except OSError:
        return None
    return None


def is_held(lock_path: str) -> bool | None:
    """Whether any process holds the lock, read from /proc/locks without touching it;
    None if this system cannot tell that way."""
    try:
        return bool(_linux_locks(lock_path))
    except OSError:
        return None


def held_by(found: list[Holder] | None, now: float | None = None, most: int = 3) -> str:
    """`held by A (pid 1, started 3 days ago); B (...); and 2 more`, or what is known
    when nobody can be named."""
    if found is None:
        return "uvrefs cannot tell by whom here (no /proc/locks, no lsof)"
    if not found:
        return "released just now"
    now = time.time() if now is None else now
    named = [h.describe(now) for h in found[:most]]
    more = f"; and {len(found) - most} more" if len(found) > most else ""
    return f"held by {'; '.join(named)}{more}"


def ago(seconds: float) -> str:
    """`40 s ago`, `12 min ago`, `5 h ago`, `3 days ago`."""
    seconds = max(0.0, seconds)
    for size, unit in ((86400, "day"), (3600, "h"), (60, "min")):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if unit == 'day' and n != 1 else ''} ago"
    return f"{int(seconds)} s ago"


# ------------------------------------------------------------------------------- Linux


def _linux_locks(lock_path: str) -> list[_Lock]:
    """The flocks held (not waited for) on `lock_path`'s inode, from /proc/locks."""
    st = os.stat(lock_path)
    text = read_file(os.path.join(PROC, "locks"), LOCKS_LIMIT).decode("ascii", "replace")
    return _parse_locks(text, st.st_ino, (os.major(st.st_dev), os.minor(st.st_dev)))


def _parse_locks(text: str, inode: int, device: tuple[int, int]) -> list[_Lock]:
    """`/proc/locks` lines for `inode`: `1: FLOCK  ADVISORY  READ 4242 fe:00:2148971 0 EOF`
    (`->` marks a waiter). Those on `device` if any: the kernel names the inode's own
    device, which a stat through overlayfs or a btrfs subvolume does not."""
    found: list[tuple[_Lock, tuple[int, int]]] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8 or fields[1] == "->" or fields[1] != "FLOCK":
            continue
        try:
            major, minor, ino = fields[5].split(":")
            if int(ino) != inode:
                continue
            lock = _Lock(int(fields[4]), fields[3] == "WRITE")
            found.append((lock, (int(major, 16), int(minor, 16))))
        except ValueError:
            continue
    here = [lock for lock, dev in found if dev == device]
    return here or [lock for lock, _ in found]


def _linux_holders(lock_path: str) -> list[Holder]:
    locks = _linux_locks(lock_path)
    st = os.stat(lock_path)
    target = (st.st_dev, st.st_ino)
    result: list[Holder] = []
    unverified: list[_Lock] = []
    for lock in locks:
        held = _lock_pids(lock.pid, target) if lock.pid else None
        if held is not None and lock.pid in held:
            result.append(_holder(lock.pid, lock.exclusive))
        else:
            unverified.append(lock)
    if unverified:
        scanned = _scan(target)
        for lock in unverified:
            inheritors = [pid for pid, held in scanned.items() if lock.pid in held]
            if inheritors:
                took = f"pid {lock.pid}" if lock.pid else "a process"
                detail = f"by a descriptor inherited from {took}, which took the lock"
                result += [_holder(pid, lock.exclusive, detail) for pid in inheritors]
            else:
                result.append(_unseen(lock))
    return sorted(set(result), key=lambda h: (h.started or 0, h.pid or 0))


def _unseen(lock: _Lock) -> Holder:
    """A lock whose holder this user cannot see."""
    if lock.pid and not os.access(os.path.join(PROC, str(lock.pid), "fd"), os.R_OK):
        holder = _holder(lock.pid, lock.exclusive)  # alive, and not ours to look into
        if holder.command is not None:
            why = "another user's: it, or a process it started, holds the lock"
            return Holder(lock.pid, holder.command, holder.started, lock.exclusive, why)
    if lock.pid:
        why = (
            f"started by pid {lock.pid}, which took the lock and no longer holds it (the "
            "process holding it is not visible to this user)"
        )
        return Holder(None, None, None, lock.exclusive, why)
    why = (
        "not visible to this user (in another pid namespace, or started by a process that "
        "took the lock and has exited)"
    )
    return Holder(None, None, None, lock.exclusive, why)


def _lock_pids(pid: int, target: tuple[int, int] | None) -> set[int] | None:
    """The pids named by the `lock:` lines of `pid`'s descriptors of `target` (dev, ino)
    (any file if None); None if its descriptors cannot be read."""
    fds = os.path.join(PROC, str(pid), "fd")
    try:
        names = os.listdir(fds)
    except OSError:
        return None
    found: set[int] = set()
    for name in names:
        try:
            st = os.stat(os.path.join(fds, name))
            if target is not None and (st.st_dev, st.st_ino) != target:
                continue
            info = read_file(os.path.join(PROC, str(pid), "fdinfo", name), 1 << 16)
        except OSError:
            continue
        for line in info.decode("ascii", "replace").splitlines():
            fields = line.split()
            if fields[:1] == ["lock:"] and len(fields) > 5 and fields[2] == "FLOCK":
                try:
                    found.add(int(fields[5]))
                except ValueError:
                    continue
    return found


def _scan(target: tuple[int, int]) -> dict[int, set[int]]:
    """Every visible process with a descriptor of `target` that holds a lock: pid ->
    the pids its `lock:` lines name (who took each lock)."""
    found: dict[int, set[int]] = {}
    deadline = time.monotonic() + SCAN_BUDGET
    for name in os.listdir(PROC):
        if not name.isdigit() or time.monotonic() > deadline:
            continue
        held = _lock_pids(int(name), target)
        if held:
            found[int(name)] = held
    return found


def _holder(pid: int, exclusive: bool, detail: str = "") -> Holder:
    """A process as /proc shows it: its command line (shortened) and start time."""
    command = started = None
    try:
        argv = read_file(os.path.join(PROC, str(pid), "cmdline"), 1 << 16).split(b"\0")
        command = _command([a.decode("utf-8", "replace") for a in argv if a]) or None
    except OSError:
        pass
    try:
        started = _started(pid)
    except (OSError, ValueError, IndexError):
        pass
    return Holder(pid, command, started, exclusive, detail)


def _started(pid: int) -> float:
    """When `pid` started: its start in clock ticks after boot (/proc/PID/stat, field 22)
    plus the boot time (/proc/stat `btime`)."""
    stat = read_file(os.path.join(PROC, str(pid), "stat"), 1 << 16).decode("ascii", "replace")
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # fields after `(comm)` start at 3
    boot = next(
        int(line.split()[1])
        for line in read_file(os.path.join(PROC, "stat"), 1 << 20).decode().splitlines()
        if line.startswith("btime ")
    )
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def _command(argv: list[str], width: int = 80) -> str:
    """A command line to show in one line: the program's base name, control characters
    escaped, at most `width` characters."""
    if not argv:
        return ""
    text = " ".join([os.path.basename(argv[0]), *argv[1:]])
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= width else text[: width - 3] + "..."


# ------------------------------------------------------------------------------- macOS


def _lsof_holders(lock_path: str) -> list[Holder] | None:
    """`lsof` on the lock file: the processes that have it open, with the lock it reports
    for each (macOS's lsof reports none for a flock: then every process that has the file
    open is named, as maybe holding it); None without lsof."""
    import shutil
    import subprocess

    lsof = shutil.which("lsof")
    if lsof is None:
        return None
    try:
        done = subprocess.run(
            [lsof, "-n", "-P", "-F", "pcl", "--", lock_path],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = []
    for pid, lock in _parse_lsof(done.stdout):
        command, started = _ps(pid)
        if lock:
            found.append(Holder(pid, command, started, lock in "wWuU"))
        else:  # a waiter has it open too
            why = "has the lock file open (lsof does not say whether it holds the lock)"
            found.append(Holder(pid, command, started, False, why))
    return found


def _parse_lsof(text: str) -> list[tuple[int, str]]:
    """(pid, lock) from `lsof -F pcl` output: a `p` line per process, then an `l` line
    per descriptor with its lock (`r`/`R` read, `w`/`W` write, `u`/`U` other); `""`
    where lsof reports none (it does not see every kind of lock)."""
    found: dict[int, str] = {}
    pid = None
    for line in text.splitlines():
        if line.startswith("p") and line[1:].isdigit():
            pid = int(line[1:])
            found.setdefault(pid, "")
        elif line.startswith("l") and pid is not None and line[1:2] in tuple("rRwWuU"):
            found[pid] = found[pid] or line[1]
    return list(found.items())


def _ps(pid: int) -> tuple[str | None, float | None]:
    """The command line and start of `pid` from `ps -o etime=,command=`."""
    import subprocess

    try:
        done = subprocess.run(
            ["ps", "-o", "etime=,command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    line = done.stdout.strip()
    if not line:
        return None, None
    etime, _, command = line.partition(" ")
    return _command(command.split()) or None, _from_etime(etime, time.time())


def _from_etime(etime: str, now: float) -> float | None:
    """`ps`'s elapsed time, `[[dd-]hh:]mm:ss`, as a start time."""
    days, _, clock = etime.rpartition("-")
    try:
        seconds = 0
        for part in clock.split(":"):
            seconds = seconds * 60 + int(part)
        return now - seconds - int(days or 0) * 86400
    except ValueError:
        return None
