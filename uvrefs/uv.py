"""The one door to uv: finding the binary, running it, asking it where things are, and
taking its cache lock the way uv itself does (a `flock` on `<cache>/.lock`).

It runs before every tracked install, so it imports only `os` and `sys` up front."""

from __future__ import annotations

import os
import sys

from uvrefs.errors import LockTimeout, UvNotFound, UvrefsError, UvTimeout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import TracebackType

# uv's global options that change which cache (or config naming one) a command uses.
_CACHE_OPTIONS = ("--cache-dir", "--config-file", "--directory", "--project")
_CACHE_FLAGS = ("--no-config",)
DEFAULT_LOCK_TIMEOUT = 300.0  # seconds, uv's own default for UV_LOCK_TIMEOUT
QUERY_TIMEOUT = 60.0  # seconds for uv (or an interpreter) to answer a question


# uv subcommands that change an environment, and how to find it (for `uvrefs uv ARGS`).
CHANGES_ENV: dict[str, str] = {
    "pip install": "pip",
    "pip sync": "pip",
    "pip uninstall": "pip",
    "sync": "project",
    "add": "project",
    "remove": "project",
    "run": "project",
    "venv": "venv",
    "tool install": "tools",
    "tool upgrade": "tools",
    "tool uninstall": "tools",
}
# uv's global options that take a value (so the subcommand is found after them).
_GLOBAL_VALUE_OPTIONS = {
    "--cache-dir",
    "--color",
    "--config-file",
    "--directory",
    "--project",
    "--allow-insecure-host",
    "--python-preference",
}


def uv_subcommand(args: Sequence[str]) -> str | None:
    """The subcommand of `uv ARGS` as one or two words (`pip install`, `sync`), skipping
    global options before it; None if there is none (`uv --version`)."""
    words: list[str] = []
    it = iter(args)
    for arg in it:
        if arg.startswith("-"):  # uv takes its global options anywhere: `uv pip -q install`
            if arg in _GLOBAL_VALUE_OPTIONS:
                next(it, None)
            continue
        words.append(arg)
        if words[0] not in ("pip", "tool") or len(words) == 2:
            break
    return " ".join(words) or None


def forward(args: Sequence[str]) -> None:
    """`uvrefs uv ARGS` of a command that changes no environment: this process becomes uv
    (it costs nothing more than starting uvrefs)."""
    uvbin = find_uv(os.environ)
    os.execv(uvbin, [uvbin, *args])


def find_uv(environ: Mapping[str, str] = os.environ) -> str:
    """Return the uv binary to run: `UVREFS_UV` if set, else `uv` on PATH."""
    configured = environ.get("UVREFS_UV")
    if configured:
        found = _which(configured, environ)
        if found is None:
            raise UvNotFound(f"UVREFS_UV={configured} is not an executable; fix or unset it")
        return found
    found = _which("uv", environ)
    if found is None:
        raise UvNotFound("uv not found on PATH; install uv or set UVREFS_UV=/path/to/uv")
    return found


def _which(name: str, environ: Mapping[str, str]) -> str | None:
    """`shutil.which` without importing shutil (and its compressors) on the hot path."""
    if os.sep in name or (os.altsep and os.altsep in name):
        return name if os.access(name, os.X_OK) and not os.path.isdir(name) else None
    suffixes = (".exe", "") if sys.platform == "win32" else ("",)
    for directory in environ.get("PATH", os.defpath).split(os.pathsep):
        for suffix in suffixes:
            candidate = os.path.join(directory, name + suffix)
            if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
                return candidate
    return None


def run_passthrough(uv: str, args: Sequence[str]) -> int:
    """Run uv on the user's terminal: its output and exit code are the user's."""
    argv = [uv, *args]
    try:
        if hasattr(os, "posix_spawn"):  # no `subprocess` import on the hot path
            return _wait(os.posix_spawn(uv, argv, os.environ))
        import subprocess

        return subprocess.call(argv)
    except OSError as exc:
        raise UvNotFound(f"cannot run {uv}: {exc.strerror}; check UVREFS_UV or PATH") from exc


def _wait(pid: int) -> int:
    """uv's exit code. A Ctrl-C on the terminal signals uv as well (the whole foreground
    group), and uv decides what it means, so uvrefs keeps waiting (like `system(3)`, without
    importing `signal` on the hot path); a uv killed by signal N exits 128+N, as in a shell."""
    while True:
        try:
            status = os.waitpid(pid, 0)[1]
        except KeyboardInterrupt:
            continue
        except ChildProcessError:  # reaped just as the interrupt arrived: its code is lost
            return 130
        code = os.waitstatus_to_exitcode(status)
        return 128 - code if code < 0 else code


def query(uv: str, args: Sequence[str], cwd: str | None = None) -> str:
    """Run a uv query command and return its stdout; uv's stderr becomes the error. A uv
    that does not answer within `QUERY_TIMEOUT` seconds is killed."""
    import subprocess

    try:
        done = subprocess.run(
            [uv, *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="surrogateescape",
            check=False,
            timeout=QUERY_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise UvTimeout(
            f"`uv {' '.join(args)}` did not answer within {QUERY_TIMEOUT:g}s ({uv}); check "
            "that UVREFS_UV or PATH names a working uv"
        ) from None
    except OSError as exc:
        raise UvNotFound(f"cannot run {uv}: {exc.strerror}; check UVREFS_UV or PATH") from exc
    if done.returncode != 0:
        raise UvrefsError(f"`uv {' '.join(args)}` failed: {last_line(done.stderr)}")
    return done.stdout.strip()


def last_line(text: str) -> str:
    """The last line of a command's stderr: what it says went wrong."""
    return (text.strip().splitlines() or ["(no output)"])[-1]


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


def is_truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


def uses_no_cache(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> bool:
    """uv runs with a throw-away cache: nothing it installs can be tracked."""
    return has_flag(args, "--no-cache", "-n") or is_truthy(environ.get("UV_NO_CACHE"))


def cache_dir(args: Sequence[str] = (), environ: Mapping[str, str] = os.environ) -> str:
    """The cache uv uses for a command with these arguments.

    `--cache-dir` and `UV_CACHE_DIR` are read directly (no process); anything else (config
    files, platform defaults) is asked of `uv cache dir` with the same cache options."""
    explicit = option_value(args, "--cache-dir") or environ.get("UV_CACHE_DIR")
    if explicit:  # as uv reads it: relative to --directory, and `~` is a plain name
        if not os.path.isabs(explicit):
            explicit = os.path.join(working_dir(args, environ), explicit)
        return os.path.normpath(explicit)
    forwarded: list[str] = []
    for name in _CACHE_OPTIONS:
        value = option_value(args, name)
        if value is not None:
            forwarded += [name, value]
    forwarded += [flag for flag in _CACHE_FLAGS if has_flag(args, flag)]
    return query(find_uv(environ), [*forwarded, "cache", "dir"])


def working_dir(args: Sequence[str] = (), environ: Mapping[str, str] = os.environ) -> str:
    """Where uv runs a command, and resolves relative paths from: `--directory`, else
    `UV_WORKING_DIR` (or the older `UV_WORKING_DIRECTORY`), else here."""
    directory = (
        option_value(args, "--directory")
        or environ.get("UV_WORKING_DIR")
        or environ.get("UV_WORKING_DIRECTORY")
    )
    return os.path.abspath(directory) if directory else os.getcwd()


def python_find(uv: str, request: str | None, system: bool, cwd: str) -> str:
    """The interpreter uv would pick for `--python REQUEST` / `--system`."""
    args = ["python", "find"] + (["--system"] if system else []) + ([request] if request else [])
    return query(uv, args, cwd=cwd)


def lock_timeout(environ: Mapping[str, str] = os.environ) -> float:
    """Seconds to wait for the cache lock: `UV_LOCK_TIMEOUT`, as uv does."""
    raw = environ.get("UV_LOCK_TIMEOUT")
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise UvrefsError(f"UV_LOCK_TIMEOUT={raw!r} is not a number of seconds") from None


class CacheLock:
    """uv's cache lock: shared like every uv command, or exclusive like `uv cache clean`.

    Waits up to `timeout` seconds, calling `on_wait` once if it has to wait. The lock file
    is never unlinked (uv keeps using the same inode); closing the descriptor releases it."""

    def __init__(
        self,
        cache_root: str | os.PathLike[str],
        *,
        exclusive: bool,
        timeout: float = DEFAULT_LOCK_TIMEOUT,
        on_wait: Callable[[], None] | None = None,
    ) -> None:
        self.path = os.path.join(cache_root, ".lock")
        self.exclusive, self.timeout, self.on_wait = exclusive, timeout, on_wait
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def __enter__(self) -> CacheLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def acquire(self) -> CacheLock:
        if sys.platform == "win32":  # pragma: no cover
            raise UvrefsError("uvrefs cannot take uv's cache lock on Windows yet")
        import fcntl
        import time

        from uvrefs.files import open_lock

        try:
            self.fd = open_lock(self.path, create=True)
        except OSError as exc:
            raise UvrefsError(
                f"cannot open uv's cache lock {self.path} ({exc.strerror}): it must be a "
                "regular file uv made (not a link or a FIFO); move it away and run uv again"
            ) from None
        mode = (fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = None
        while True:
            try:
                fcntl.flock(self.fd, mode)
                return self
            except BlockingIOError:
                if deadline is None:
                    deadline = time.monotonic() + self.timeout
                    if self.on_wait is not None:
                        self.on_wait()
                if time.monotonic() >= deadline:
                    self.release()
                    raise LockTimeout(
                        f"uv's cache lock {self.path} is still held after {self.timeout:g}s; "
                        "retry later or raise UV_LOCK_TIMEOUT"
                    ) from None
                time.sleep(0.05)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
