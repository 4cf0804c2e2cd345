"""uvrefs's own global options (`--cache-dir`, `--state-dir`, `-v`), taken before or after
the subcommand as uv takes its global options, and the one-line error every command ends
with. Shared by the launcher's fast path and the typer CLI; imports nothing heavy."""

from __future__ import annotations

import os
import sys

from uvrefs.errors import UsageError, UvrefsError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn

GLOBAL_VALUE_OPTIONS = {"--cache-dir": "UV_CACHE_DIR", "--state-dir": "UVREFS_DIR"}
GLOBAL_FLAGS = ("-v", "--verbose")


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """`args` with uvrefs's own options given after the subcommand (`uvrefs status
    --cache-dir X`) moved before it, as uv takes its global options anywhere. Never after
    a tracked command (`install`, `sync`, `pip install|sync|uninstall`, `uv`): all that
    follows it is uv's, verbatim (`uvrefs install --cache-dir X` is uv's `--cache-dir`,
    which uvrefs reads as uv does). Nothing after `--` moves."""
    i = 0
    while i < len(args) and _global_words(args, i):
        i += _global_words(args, i)
    if i >= len(args) or args[i] == "uv" or tracked_command(args[i:]) is not None:
        return list(args)
    moved: list[str] = []
    kept = [args[i]]
    j = i + 1
    while j < len(args):
        if args[j] == "--":
            kept += args[j:]
            break
        words = _global_words(args, j)
        if words and j + words > len(args):
            raise UsageError(f"{args[j]} needs a directory")
        moved += args[j : j + words] if words else []
        kept += [] if words else [args[j]]
        j += words or 1
    return [*args[:i], *moved, *kept]


def _global_words(args: Sequence[str], i: int) -> int:
    """How many words uvrefs's own option at `args[i]` takes: 0 if it is not one, 2 for
    `--cache-dir DIR` (even if DIR is missing), 1 for `--cache-dir=DIR` or `-v`."""
    name, eq, _ = args[i].partition("=")
    if name in GLOBAL_VALUE_OPTIONS:
        return 1 if eq else 2
    return 1 if args[i] in GLOBAL_FLAGS else 0


def apply_global_options(args: list[str]) -> list[str]:
    """Consume uvrefs's own options before the subcommand; they become the environment
    variables uv and uvrefs read, so every later step (and uv itself) agrees."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        name, eq, value = args[i].partition("=")
        if name in GLOBAL_VALUE_OPTIONS:
            if not eq:
                if i + 1 >= len(args):
                    raise UsageError(f"{name} needs a directory")
                value = args[i + 1]
                i += 1
            apply_global_option(name, value)
        elif name in GLOBAL_FLAGS:
            os.environ["UVREFS_VERBOSE"] = "1"
        else:
            return args[i:]
        i += 1
    return args[i:]


def apply_global_option(name: str, value: str) -> None:
    """`--cache-dir DIR` or `--state-dir DIR`, as the environment variable uv and uvrefs
    read (an absolute path, from uvrefs's working directory)."""
    if not value.strip():
        raise UsageError(f"{name} needs a directory, not an empty value")
    os.environ[GLOBAL_VALUE_OPTIONS[name]] = os.path.abspath(os.path.expanduser(value))


def tracked_command(rest: Sequence[str]) -> str | None:
    if not rest:
        return None
    if rest[0] in ("install", "sync"):
        return rest[0]
    if rest[0] == "pip" and len(rest) > 1 and rest[1] in ("install", "sync", "uninstall"):
        return f"pip {rest[1]}"
    return None


def flush_output() -> bool:
    """Flush stdout and stderr, each on its own; False if either could not be (a closed or
    broken pipe). A stream the process was started without (`>&-`: Python then has None
    for it) has nothing to flush."""
    flushed = True
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            flushed = False
    return flushed


def fail(exc: UvrefsError) -> NoReturn:
    if os.environ.get("UVREFS_VERBOSE"):
        import traceback

        traceback.print_exc()
    print(f"uvrefs: error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
