"""A collect run as a command: the options as the user gave them, the wait for uv's lock
(or a skip, or retries while uv holds it), the report and the `--log` line. Also where
every command finds its cache and store (`cache_and_store`)."""

from __future__ import annotations

import os
import sys

from uvrefs.errors import LockTimeout, UsageError, UvrefsError, from_os_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from uvrefs.cache import Cache
    from uvrefs.store.refs import RefsStore


def run_collect(
    *,
    dry_run: bool = False,
    as_json: bool = False,
    min_age: str | None = None,
    max_freed: str | None = None,
    keep: Sequence[str] = (),
    untracked: bool = False,
    budget: str | None = None,
    log: str | None = None,
    no_wait: bool = False,
    retry_for: str | None = None,
    host_lease: str | None = None,
) -> int:
    """Plan (and unless a dry run, sweep), report, and return the exit code. Raises
    `UvrefsError` for the caller to turn into one line. With `log`, every run that could
    open it appends one line: the outcome, or the exit code and message of a failure.
    `no_wait`: skip if uv holds the cache; `retry_for` (implies it): first try again
    whenever uv lets go of it, for that long."""
    log_fd = open_log(log)
    try:
        return _collect(
            log_fd,
            log,
            dry_run=dry_run,
            as_json=as_json,
            min_age=min_age,
            max_freed=max_freed,
            keep=keep,
            untracked=untracked,
            budget=budget,
            no_wait=no_wait,
            retry_for=retry_for,
            host_lease=host_lease,
        )
    except UvrefsError as exc:
        log_line(log_fd, log, f"failed (exit {exc.exit_code}): {exc}")
        raise
    except OSError as exc:
        error = from_os_error(exc)
        log_line(log_fd, log, f"failed (exit {error.exit_code}): {error}")
        raise error from exc
    except KeyboardInterrupt:
        log_line(log_fd, log, "interrupted (exit 130)")
        raise
    except Exception as exc:  # a bug: logged, and its traceback shown
        log_line(log_fd, log, f"failed (exit 1): internal error {type(exc).__name__}: {exc}")
        raise
    finally:
        if log_fd is not None:
            os.close(log_fd)


def _collect(
    log_fd: int | None,
    log: str | None,
    *,
    dry_run: bool,
    as_json: bool,
    min_age: str | None,
    max_freed: str | None,
    keep: Sequence[str],
    untracked: bool,
    budget: str | None,
    no_wait: bool,
    retry_for: str | None,
    host_lease: str | None,
) -> int:
    import time

    from uvrefs import report, uv
    from uvrefs.gc import collect as core
    from uvrefs.gc.plan import GRACE, Policy
    from uvrefs.hosts import parse_host_lease
    from uvrefs.lockholders import held_by, holders
    from uvrefs.names import normalize
    from uvrefs.units import format_duration, parse_duration, parse_size, plural

    age = parse_duration(min_age, "--min-age") if min_age is not None else None
    policy = Policy(
        min_age=age or 0.0,
        grace=GRACE if age is None else age,  # an explicit --min-age sets the grace too
        max_freed=parse_size(max_freed, "--max-freed") if max_freed is not None else None,
        keep=frozenset(normalize(k) for k in keep),
        untracked=untracked,
        budget=parse_size(budget, "--budget") if budget is not None else None,
        **({"host_lease": parse_host_lease(host_lease)} if host_lease else {}),
    )
    retry = parse_duration(retry_for, "--retry-for") if retry_for is not None else 0.0
    skips = no_wait or retry_for is not None
    cache, store = cache_and_store()
    lock = str(cache.root / ".lock")
    if not skips:
        settled(store)
    deadline = time.time() + retry
    announced = False
    progress = report.ScanProgress()
    try:
        while True:
            try:
                result = core.collect(
                    cache,
                    store,
                    policy=policy,
                    progress=progress,
                    dry_run=dry_run,
                    timeout=0.0 if skips else uv.lock_timeout(),
                    on_wait=None if skips else lambda: say_waiting(lock),
                )
                break
            except LockTimeout as exc:
                who = held_by(holders(lock))
                if not skips:
                    raise LockTimeout(f"{exc}; {who}") from None
                if retry and not announced and time.time() < deadline:
                    print(
                        f"uvrefs: cache in use, {who}; trying again whenever uv lets go of "
                        f"it, for up to {format_duration(retry)}",
                        file=sys.stderr,
                    )
                    announced = True
                if not wait_for_quiet(lock, deadline):
                    waited = f" after {format_duration(retry)} of retrying" if retry else ""
                    said = f"cache in use, skipped ({cache.root}){waited}; {who}"
                    print(f"uvrefs: {said}", file=sys.stderr)
                    return 0 if log_line(log_fd, log, said) else 1
    finally:
        progress.close()
    unreadable = [
        f"{plural(len(result.unreadable), 'refs file')} unreadable, their entries kept (first: "
        f"{result.unreadable[0]}); fix or delete them"
        for _ in result.unreadable[:1]
    ]
    errors = [f"first error: {e}" for e in result.errors[:1]]
    problems = [*errors, *unreadable, *result.warnings]
    failed = f"; failed (exit 1): {problems[0]}" if problems else ""
    logged = log_line(log_fd, log, report.removal_summary(result) + failed)
    if as_json:
        report.print_json(report.removal_json(result))
    else:
        report.print_removal(result)
    for warning in [*unreadable, *result.warnings]:
        print(f"uvrefs: warning: {warning}", file=sys.stderr)
    return 1 if problems or not logged else 0


def cache_and_store() -> tuple[Cache, RefsStore]:
    """The cache uv uses here (validated) and its refs store: where `locate.find_store`
    says, as for tracked installs (a store the cache brought from another path is moved
    to its key first)."""
    from pathlib import Path

    from uvrefs import uv
    from uvrefs.cache import Cache
    from uvrefs.store import locate, stamps
    from uvrefs.store.refs import RefsStore

    cache = Cache.open(Path(uv.cache_dir()))
    state = stamps.default_state_dir()
    store = RefsStore(
        Path(state), cache.root, directory=Path(locate.find_store(state, str(cache.root)))
    )
    stamps.check_store(str(store.dir))
    return cache, store


def settled(store: RefsStore) -> None:
    """Let background recorders (tracked commands run in a terminal) finish writing the
    refs before reading them, so a command run right after an install sees it."""
    from uvrefs import uv
    from uvrefs.store import stamps

    if not stamps.wait_for_recorders(str(store.dir), uv.lock_timeout()):
        print(
            "uvrefs: warning: a background recording is still running; the last install "
            "may not show yet",
            file=sys.stderr,
        )


def say_waiting(lock: str) -> None:
    """uv holds its cache lock: say who, and for how long this collect waits."""
    from uvrefs import uv
    from uvrefs.lockholders import held_by, holders

    print(
        f"uvrefs: cache is in use by uv, waiting for the lock (at most "
        f"{uv.lock_timeout():g}s, UV_LOCK_TIMEOUT); {held_by(holders(lock))}",
        file=sys.stderr,
    )


def wait_for_quiet(lock: str, deadline: float) -> bool:
    """Until `deadline` (epoch seconds), wait for a moment when no process holds uv's
    cache lock, seen in /proc/locks without taking it, checking at growing intervals
    (1 s, doubling, at most 30 s); where that cannot be seen, wait a minute and let the
    caller try the lock. False once the deadline has passed."""
    import time

    from uvrefs.lockholders import is_held

    delay = 1.0
    while (left := deadline - time.time()) > 0:
        held = is_held(lock)
        if held is False:
            return True
        time.sleep(min(delay if held else 60.0, left))
        if held is None:
            return time.time() < deadline
        delay = min(delay * 2, 30.0)
    return False


def open_log(log: str | None) -> int | None:
    """`--log FILE` opened for appending before anything is collected, so that a path it
    cannot be written to (a missing directory, a directory, a FIFO) is refused first."""
    if log is None:
        return None
    import errno

    from uvrefs.files import open_append

    try:
        return open_append(log)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EINVAL, errno.ENXIO):  # a link, a FIFO, a device
            raise UsageError(
                f"--log {log}: not a regular file (a symbolic link, FIFO or device is never "
                "written through); choose another file"
            ) from None
        raise UsageError(
            f"--log {log}: cannot append to it ({exc.strerror}); create its directory or "
            "choose another file"
        ) from None


def log_line(fd: int | None, log: str | None, text: str) -> bool:
    """Append one timestamped line to the log (the scheduled job's record of its runs);
    False, after a warning, if it could not be written."""
    if fd is None:
        return True
    from datetime import datetime

    line = f"{datetime.now().astimezone().isoformat(timespec='seconds')} {text}\n"
    try:
        os.write(fd, line.encode("utf-8", "surrogateescape"))
    except OSError as exc:
        print(f"uvrefs: warning: cannot append to --log {log} ({exc.strerror})", file=sys.stderr)
        return False
    if os.environ.get("UVREFS_LOGGED"):  # the scheduled job's wrapper: this run is logged
        from uvrefs.files import mark

        mark(os.environ["UVREFS_LOGGED"])
    return True
