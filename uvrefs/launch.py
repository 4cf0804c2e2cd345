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
    rest = _apply_global_options(args)
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
            if not value.strip():
                raise UsageError(f"{name} needs a directory, not an empty value")
            os.environ[GLOBAL_VALUE_OPTIONS[name]] = os.path.abspath(os.path.expanduser(value))
        elif name in ("-v", "--verbose"):
            os.environ["UVREFS_VERBOSE"] = "1"
        else:
            return args[i:]
        i += 1
    return args[i:]


def _tracked_command(rest: list[str]) -> str | None:
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
