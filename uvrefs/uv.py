"""The one door to uv: finding the binary, running it, asking it where things are, and
taking its cache lock the way uv itself does (a `flock` on `<cache>/.lock`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from uvrefs.errors import LockTimeout, UvNotFound, UvrefsError

# uv's global options that change which cache (or config naming one) a command uses.
_CACHE_OPTIONS = ("--cache-dir", "--config-file", "--directory", "--project")
_CACHE_FLAGS = ("--no-config",)
DEFAULT_LOCK_TIMEOUT = 300.0  # seconds, uv's own default for UV_LOCK_TIMEOUT


def find_uv(environ: Mapping[str, str] = os.environ) -> str:
    """Return the uv binary to run: `UVREFS_UV` if set, else `uv` on PATH."""
    configured = environ.get("UVREFS_UV")
    if configured:
        if shutil.which(configured) is None:
            raise UvNotFound(f"UVREFS_UV={configured} is not an executable; fix or unset it")
        return configured
    found = shutil.which("uv")
    if found is None:
        raise UvNotFound("uv not found on PATH; install uv or set UVREFS_UV=/path/to/uv")
    return found


def run_passthrough(uv: str, args: Sequence[str]) -> int:
    """Run uv with the user's terminal: its output and exit code are the user's."""
    try:
        return subprocess.call([uv, *args])
    except OSError as exc:
        raise UvNotFound(f"cannot run {uv}: {exc.strerror}; check UVREFS_UV or PATH") from exc


def query(uv: str, args: Sequence[str], cwd: Path | None = None) -> str:
    """Run a uv query command and return its stdout; uv's stderr becomes the error."""
    try:
        done = subprocess.run([uv, *args], cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise UvNotFound(f"cannot run {uv}: {exc.strerror}; check UVREFS_UV or PATH") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UvrefsError(f"`uv {' '.join(args)}` failed: {last}")
    return done.stdout.strip()


def option_value(args: Sequence[str], *names: str) -> str | None:
    """The last value given to any of `names` (`--opt v`, `--opt=v`, `-ov`), or None.

    Scanning stops at `--`, after which uv treats everything as positional."""
    value = None
    it = iter(args)
    for arg in it:
        if arg == "--":
            break
        for name in names:
            if arg == name:
                value = next(it, None)
            elif arg.startswith(name + "="):
                value = arg[len(name) + 1 :]
            elif len(name) == 2 and arg.startswith(name) and not arg.startswith("--"):
                value = arg[2:].removeprefix("=")
    return value


def has_flag(args: Sequence[str], *names: str) -> bool:
    """Whether any of the boolean flags `names` appears before `--`."""
    for arg in args:
        if arg == "--":
            return False
        if arg in names:
            return True
    return False


def uses_no_cache(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> bool:
    """uv runs with a throw-away cache: nothing it installs can be tracked."""
    return has_flag(args, "--no-cache", "-n") or _truthy(environ.get("UV_NO_CACHE"))


def cache_dir(args: Sequence[str] = (), environ: Mapping[str, str] = os.environ) -> Path:
    """The cache uv uses for a command with these arguments.

    `--cache-dir` and `UV_CACHE_DIR` are read directly (no process); anything else (config
    files, platform defaults) is asked of `uv cache dir` with the same cache options."""
    explicit = option_value(args, "--cache-dir") or environ.get("UV_CACHE_DIR")
    if explicit:
        return Path(os.path.abspath(os.path.expanduser(explicit)))
    forwarded: list[str] = []
    for name in _CACHE_OPTIONS:
        value = option_value(args, name)
        if value is not None:
            forwarded += [name, value]
    forwarded += [flag for flag in _CACHE_FLAGS if has_flag(args, flag)]
    return Path(query(find_uv(environ), [*forwarded, "cache", "dir"]))


def python_find(uv: str, request: str | None, system: bool, cwd: Path) -> Path:
    """The interpreter uv would pick for `--python REQUEST` / `--system`."""
    args = ["python", "find"] + (["--system"] if system else []) + ([request] if request else [])
    return Path(query(uv, args, cwd=cwd))


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


def lock_timeout(environ: Mapping[str, str] = os.environ) -> float:
    """Seconds to wait for the cache lock: `UV_LOCK_TIMEOUT`, as uv does."""
    raw = environ.get("UV_LOCK_TIMEOUT")
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise UvrefsError(f"UV_LOCK_TIMEOUT={raw!r} is not a number of seconds") from None


@contextmanager
def cache_lock(
    cache_root: Path,
    *,
    exclusive: bool,
    timeout: float = DEFAULT_LOCK_TIMEOUT,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold uv's cache lock: shared like every uv command, or exclusive like `uv cache
    clean`. Waits up to `timeout` seconds, calling `on_wait` once if it has to wait.

    The lock file is never unlinked: uv keeps using the same inode."""
    if sys.platform == "win32":  # pragma: no cover - uvrefs deletes only on Unix for now
        raise UvrefsError("uvrefs cannot take uv's cache lock on Windows yet")
    import fcntl

    fd = os.open(cache_root / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"uv's cache lock on {cache_root} is still held after "
                            f"{timeout:g}s; retry later or raise UV_LOCK_TIMEOUT"
                        ) from None
                    time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
