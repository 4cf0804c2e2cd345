"""The entry point. Tracked uv commands (`install`, `pip install|sync|uninstall`, `sync`)
run on a fast path that loads neither typer nor pydantic unless refs must be written,
`collect` on one without typer (`uvrefs.fastcli`), and `-V`/`--version` at once;
everything else (help, shell completion) goes to the typer app in `uvrefs.cli`."""

from __future__ import annotations

import os
import sys

from uvrefs.errors import UsageError, UvrefsError, from_os_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn

GLOBAL_VALUE_OPTIONS = {"--cache-dir": "UV_CACHE_DIR", "--state-dir": "UVREFS_DIR"}
GLOBAL_FLAGS = ("-v", "--verbose")


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _fast_path(args)
    except UvrefsError as exc:
        fail(exc)
    except OSError as exc:
        fail(from_os_error(exc))
    except KeyboardInterrupt:
        sys.exit(130)  # quietly, as a shell command interrupted by Ctrl-C
    if code is not None:
        sys.exit(code)
    from uvrefs.cli import app

    app(args=args, prog_name="uvrefs")


def _fast_path(args: list[str]) -> int | None:
    """Run tracked commands and `collect` without typer; None for everything else."""
    rest = _apply_global_options(hoist_global_options(args))
    if rest in (["-V"], ["--version"]):  # as typer's --version would, without loading it
        from uvrefs import __version__

        print(f"uvrefs {__version__}")
        return 0
    if rest[:1] == ["uv"]:
        from uvrefs import track

        return track.run_uv(rest[1:])
    command = _tracked_command(rest)
    if command is not None:
        from uvrefs import track

        return track.run(command, rest[len(command.split()) :])
    if rest[:1] == ["collect"]:
        from uvrefs import fastcli

        opts = fastcli.parse_collect(rest[1:])
        if opts is not None:
            return fastcli.run_collect(**opts)
    return None


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """`args` with uvrefs's own options given after the subcommand (`uvrefs status
    --cache-dir X`) moved before it, as uv takes its global options anywhere. Never after
    a tracked command (`install`, `sync`, `pip install|sync|uninstall`, `uv`): all that
    follows it is uv's, verbatim (`uvrefs install --cache-dir X` is uv's `--cache-dir`,
    which uvrefs reads as uv does). Nothing after `--` moves."""
    i = 0
    while i < len(args) and _global_words(args, i):
        i += _global_words(args, i)
    if i >= len(args) or args[i] == "uv" or _tracked_command(args[i:]) is not None:
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


def _apply_global_options(args: list[str]) -> list[str]:
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


def _tracked_command(rest: Sequence[str]) -> str | None:
    if not rest:
        return None
    if rest[0] in ("install", "sync"):
        return rest[0]
    if rest[0] == "pip" and len(rest) > 1 and rest[1] in ("install", "sync", "uninstall"):
        return f"pip {rest[1]}"
    return None


def fail(exc: UvrefsError) -> NoReturn:
    if os.environ.get("UVREFS_VERBOSE"):
        import traceback

        traceback.print_exc()
    print(f"uvrefs: error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
