"""The command line (typer): parses options, calls one core function, and renders its
result or turns a `UvrefsError` into one line and an exit code. Tracked uv commands
usually arrive through `uvrefs.launch`, which skips this module entirely."""

import os
import sys
from typing import Annotated, Any

import typer

from uvrefs import __version__
from uvrefs.errors import UvrefsError
from uvrefs.launch import fail

app = typer.Typer(
    help="Keep exactly what living environments use in uv's cache; free the rest.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
passthrough = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
UvArgs = Annotated[list[str] | None, typer.Argument(help="Passed to uv verbatim.")]

def version_callback(value: bool) -> None:
    if value:
        print(f"uvrefs {__version__}")
        raise typer.Exit()

@app.callback()
def _root(
    cache_dir: Annotated[str | None, typer.Option("--cache-dir", help="uv's cache (default: as uv decides; UV_CACHE_DIR).")] = None,
    state_dir: Annotated[str | None, typer.Option("--state-dir", help="Where uvrefs keeps refs (UVREFS_DIR).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Say more; show tracebacks.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Show the version.")] = False,
) -> None:
    """uvrefs's own options go before the subcommand."""

def tracked(command: str, args: list[str] | None) -> None:
    from uvrefs import track

    with _errors():
        raise typer.Exit(track.run(command, args or []))

@app.command(context_settings=passthrough)
def install(args: UvArgs = None) -> None:
    """Run `uv pip install ARGS`, then record what the environment uses."""
    tracked("install", args)

@app.command(context_settings=passthrough)
def sync(args: UvArgs = None) -> None:
    """Run `uv sync ARGS`, then record what the project environment uses."""
    tracked("sync", args)

pip = typer.Typer(help="Tracked `uv pip install` and `uv pip sync`.", no_args_is_help=True)
app.add_typer(pip, name="pip")

@pip.command("install", context_settings=passthrough)
def pip_install(args: UvArgs = None) -> None:
    """Run `uv pip install ARGS`, then record what the environment uses."""
    tracked("pip install", args)

@pip.command("sync", context_settings=passthrough)
def pip_sync(args: UvArgs = None) -> None:
    """Run `uv pip sync ARGS`, then record what the environment uses."""
    tracked("pip sync", args)

@app.command()
def collect(
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Show what would be freed; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Free cache entries whose referencing environments are gone or no longer use them."""
    from uvrefs import collect as core
    from uvrefs import report, uv

    with _errors():
        cache, store = _cache_and_store()
        result = core.collect(
            cache, store, dry_run=dry_run, timeout=uv.lock_timeout(), on_wait=_say_waiting
        )
        if as_json:
            report.print_json(report.removal_json(result))
        else:
            report.print_removal(result)
        if result.errors:
            raise typer.Exit(1)




def _cache_and_store() -> Any:
    """The cache uv uses here (validated) and its refs store."""
    from uvrefs import uv
    from uvrefs.cache import Cache
    from uvrefs.refs import RefsStore, default_state_dir

    root = uv.cache_dir(uv.find_uv()) if not os.environ.get("UV_CACHE_DIR") else uv.cache_dir("uv")
    cache = Cache.open(root)
    return cache, RefsStore(default_state_dir(), cache.root)


def _say_waiting() -> None:
    print("uvrefs: cache is in use by uv, waiting for the lock...", file=sys.stderr)


class _errors:
    """Turn user errors into one line and their exit code."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if isinstance(exc, UvrefsError):
            fail(exc)
        return False
