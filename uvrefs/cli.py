"""The command line (typer): parses options, calls one core function, and renders its
result, or turns a `UvrefsError` into one line and an exit code. Tracked uv commands
usually arrive through `uvrefs.launch`, which skips this module and its imports."""

import os
import sys
from typing import Annotated, Any, Literal

import typer
from typer import _click as click
from typer._coercion import RuntimeParam
from typer.core import TyperCommand, TyperGroup

from uvrefs import __version__
from uvrefs.errors import UsageError, UvrefsError, from_os_error
from uvrefs.gc.runner import cache_and_store, settled
from uvrefs.hosts import parse_host_lease
from uvrefs.options import apply_global_option, fail, hoist_global_options
from uvrefs.units import format_duration, parse_duration, plural
from uvrefs.uv import is_truthy


def _plain_params(command: click.Command, ctx: click.Context) -> None:
    """Give the command's str, bool and list-of-str parameters a converter of their own,
    so that parsing them does not build pydantic TypeAdapters (typer's default: ~100 ms
    and ~20 MiB of pydantic for a command that needs none; every value uvrefs parses, a
    duration or a size, it parses itself). Any other parameter keeps typer's."""
    for param in command.get_params(ctx):  # the help option too
        described = getattr(param, "type_descriptor", None)
        if described is None or getattr(param, "_runtime_param", False) is not None:
            continue
        kind = described.annotation
        if described.is_choice or described.is_path or described.is_file:
            continue
        if kind in (str, bool) or kind == list[str]:
            param._runtime_param = _Plain(described.parameter_info, kind)  # type: ignore[attr-defined]


class _Plain(RuntimeParam):
    """A str, bool or list[str] parameter's value as click parsed it (what typer's
    adapters return for these: strings stay strings, flags are booleans)."""

    def _coerce_value(self, value: Any, param: Any, ctx: click.Context) -> Any:
        if self.annotation is bool:
            return value if isinstance(value, bool) else is_truthy(str(value))
        if self.annotation is str:
            return value if isinstance(value, str) else os.fsdecode(value)
        return [v if isinstance(v, str) else os.fsdecode(v) for v in value]


class _PlainParams(click.Command):
    """Options and arguments parsed with uvrefs's own converters (`_plain_params`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        _plain_params(self, ctx)
        return super().parse_args(ctx, args)


class _Command(_PlainParams, TyperCommand):
    """Help in click's plain shape: a flag shows no `<bool>`, a value option its metavar
    (`--min-age DUR`), an argument its metavar (`why QUERY`, not typer's `{query}`)."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            is_arg = param.param_type_name == "argument" and param.metavar
            pieces += [str(param.metavar)] if is_arg else param.get_usage_pieces(ctx)
        return pieces

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        args, opts = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append((str(param.metavar or param.name), getattr(param, "help", "") or ""))
            else:
                opts.append(record)
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


class _SubGroup(_PlainParams, TyperGroup):
    """A group of commands (`uvrefs hosts`, `watch`, ...): its options parsed as the
    commands' are."""


class _Group(_SubGroup):
    """The root command: uvrefs's own options are taken after the subcommand too
    (`uvrefs status --cache-dir X`), as uv takes its global options, except after a
    tracked command, whose arguments are uv's (`uvrefs.options.hoist_global_options`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            hoisted = hoist_global_options(args)
        except UvrefsError as exc:
            fail(exc)
        return super().parse_args(ctx, hoisted)


PLAIN: dict[str, Any] = {"rich_markup_mode": None, "no_args_is_help": True}
SUB: dict[str, Any] = {**PLAIN, "cls": _SubGroup}
app = typer.Typer(
    cls=_Group,
    help="Keep exactly what living environments use in uv's cache; free the rest.",
    add_completion=True,
    pretty_exceptions_enable=False,
    **PLAIN,
)
pip = typer.Typer(help="Tracked `uv pip install`, `uv pip sync` and `uv pip uninstall`.", **SUB)
app.add_typer(pip, name="pip")
schedule = typer.Typer(
    help="Run `uvrefs collect` periodically (systemd timer, launchd agent or cron).",
    **SUB,
)
app.add_typer(schedule, name="schedule")
watch = typer.Typer(
    help="Directories searched for environments at every collect (roots, tracked once found).",
    **SUB,
)
app.add_typer(watch, name="watch")
hosts = typer.Typer(
    help="The hosts (machines, containers) sharing this cache: leases, envs, what they keep.",
    **{**SUB, "no_args_is_help": False},
)
app.add_typer(hosts, name="hosts")

PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
HostLease = Annotated[
    str | None,
    typer.Option(
        "--host-lease",
        metavar="DUR",
        help="Judge gone the local envs of another host unseen this long (default 4w).",
    ),
]
UvArgs = Annotated[
    list[str] | None, typer.Argument(metavar="[UV_ARGS]...", help="Passed to uv verbatim.")
]


def _show_version(value: bool) -> None:
    if value:
        print(f"uvrefs {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    cache_dir: Annotated[
        str | None,
        typer.Option(
            "--cache-dir",
            metavar="DIR",
            help="uv's cache (default: the one uv uses; UV_CACHE_DIR).",
        ),
    ] = None,
    state_dir: Annotated[
        str | None,
        typer.Option(
            "--state-dir", metavar="DIR", help="Where uvrefs keeps its refs (UVREFS_DIR)."
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Say more; show tracebacks.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_show_version, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """uvrefs's own options, before or after the subcommand (but for tracked commands,
    whose arguments are uv's). `uvrefs.launch` applied them already when it ran first."""
    with _errors():
        for name, value in (("--cache-dir", cache_dir), ("--state-dir", state_dir)):
            if value is not None:
                apply_global_option(name, value)
    if verbose:
        import os

        os.environ["UVREFS_VERBOSE"] = "1"


@app.command(cls=_Command, context_settings=PASSTHROUGH)
def install(args: UvArgs = None) -> None:
    """Run `uv pip install ARGS`, then record what the environment uses."""
    _tracked("install", args)


@app.command(cls=_Command, context_settings=PASSTHROUGH)
def sync(args: UvArgs = None) -> None:
    """Run `uv sync ARGS`, then record what the project environment uses."""
    _tracked("sync", args)


@pip.command("install", cls=_Command, context_settings=PASSTHROUGH)
def pip_install(args: UvArgs = None) -> None:
    """Run `uv pip install ARGS`, then record what the environment uses."""
    _tracked("pip install", args)


@pip.command("sync", cls=_Command, context_settings=PASSTHROUGH)
def pip_sync(args: UvArgs = None) -> None:
    """Run `uv pip sync ARGS`, then record what the environment uses."""
    _tracked("pip sync", args)


@pip.command("uninstall", cls=_Command, context_settings=PASSTHROUGH)
def pip_uninstall(args: UvArgs = None) -> None:
    """Run `uv pip uninstall ARGS`, then record what the environment uses."""
    _tracked("pip uninstall", args)


@app.command(cls=_Command, name="uv", context_settings=PASSTHROUGH)
def uv_command(args: UvArgs = None) -> None:
    """Run any uv command; record the environment after those that change one."""
    from uvrefs import track

    with _errors():
        code = track.run_uv(args or [])
    raise typer.Exit(code)


@app.command(cls=_Command, name="shell-init")
def shell_init(
    shell: Annotated[str, typer.Argument(metavar="[SHELL]", help="bash, zsh or fish.")] = "bash",
) -> None:
    """Print the line that makes `uv` mean `uvrefs uv` (add it to your shell's rc file)."""
    lines = {
        "bash": "alias uv='uvrefs uv'",
        "zsh": "alias uv='uvrefs uv'",
        "fish": "function uv --wraps uv; uvrefs uv $argv; end",
    }
    if shell not in lines:
        fail(UvrefsError(f"unknown shell {shell!r}: use bash, zsh or fish"))
    print(lines[shell])


@app.command(cls=_Command)
def collect(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Show what would be freed; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    min_age: Annotated[
        str | None,
        typer.Option(
            "--min-age",
            metavar="DUR",
            help="Free only entries dead (untracked: unpacked) this long at least: 12h, 7d.",
        ),
    ] = None,
    max_freed: Annotated[
        str | None,
        typer.Option("--max-freed", metavar="SIZE", help="Free at most this much: 500M, 2G."),
    ] = None,
    keep: Annotated[
        list[str] | None,
        typer.Option("--keep", metavar="PKG", help="Never free this package (repeatable)."),
    ] = None,
    untracked: Annotated[
        bool,
        typer.Option("--untracked", help="Also free untracked entries no installed file links to."),
    ] = False,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget",
            metavar="SIZE",
            help="Bring the cache under this size: dead entries first, then untracked.",
        ),
    ] = None,
    log: Annotated[
        str | None,
        typer.Option(
            "--log", metavar="FILE", help="Append a one-line summary of this run to FILE."
        ),
    ] = None,
    no_wait: Annotated[
        bool,
        typer.Option(
            "--no-wait", help="If uv is using the cache, skip (exit 0) instead of waiting."
        ),
    ] = False,
    retry_for: Annotated[
        str | None,
        typer.Option(
            "--retry-for",
            metavar="DUR",
            help="If uv is using the cache, try again when it is done, for this long, then "
            "skip (implies --no-wait): 6h.",
        ),
    ] = None,
    host_lease: HostLease = None,
) -> None:
    """Free cache entries whose referencing environments are gone or no longer use them."""
    from uvrefs.gc.runner import run_collect

    with _errors():
        code = run_collect(
            dry_run=dry_run,
            as_json=as_json,
            min_age=min_age,
            max_freed=max_freed,
            keep=keep or [],
            untracked=untracked,
            budget=budget,
            log=log,
            no_wait=no_wait,
            retry_for=retry_for,
            host_lease=host_lease,
        )
    raise typer.Exit(code)


@app.command(cls=_Command)
def doctor(
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="Set unreadable refs aside and rebuild refs by re-scanning known envs."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check uv, the cache layout, the link mode, uv's lock and the refs store."""
    from uvrefs import doctor as core
    from uvrefs import report, uv

    with _errors():
        cache, store = cache_and_store()
        repaired = core.repair(cache, store) if repair else None
        try:
            uvbin: str | None = uv.find_uv()
        except UvrefsError:
            uvbin = None
        checks = core.diagnose(cache, store, uvbin)
    if as_json:
        report.print_json(report.doctor_json(checks, repaired))
    else:
        report.print_doctor(checks, repaired)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)


@app.command(cls=_Command)
def adopt(
    paths: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[PATH]...", help="Environments: venv roots, interpreters or --target dirs."
        ),
    ] = None,
    discover: Annotated[
        list[str] | None,
        typer.Option(
            "--discover",
            metavar="DIR",
            help="Also adopt every venv found under this directory (repeatable).",
        ),
    ] = None,
    depth: Annotated[
        int, typer.Option("--depth", metavar="N", help="How deep --discover looks.")
    ] = 4,
    tools: Annotated[
        bool, typer.Option("--tools", help="Also adopt uv's tool environments (`uv tool dir`).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Track environments made with plain uv, without installing anything."""
    from uvrefs import inventory, report
    from uvrefs.gc import roots

    with _errors():
        if depth < 0:
            raise UsageError(f"--depth {depth}: use 0 or more (levels below each --discover DIR)")
        progress = report.ScanProgress()
        try:
            found = list(paths or [])
            found += roots.discover(discover or [], max_depth=depth, progress=progress)
            found += inventory.uv_tool_envs() if tools else []
            if not found:
                raise UvrefsError(
                    "nothing to adopt: give environment paths, --discover DIR or --tools"
                )
            cache, store = cache_and_store()
            done = inventory.adopt(cache, store, dict.fromkeys(found), progress)
        finally:
            progress.close()
    if as_json:
        report.print_json(report.adopted_json(done))
    else:
        report.print_adopted(done)
    for _path, why in done.failed:
        print(f"uvrefs: error: not adopted: {why}", file=sys.stderr)
    if done.failed:  # 2: nothing could be adopted; 1: the others were
        raise typer.Exit(1 if done.adopted else 2)


@app.command(cls=_Command)
def envs(
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """List tracked environments: alive, gone or unknown, and what only each keeps alive."""
    from uvrefs import inventory, report

    with _errors():
        cache, store = cache_and_store()
        settled(store)
        progress = report.ScanProgress()
        views = inventory.list_envs(cache, store, progress)
        progress.close()
    if as_json:
        report.print_json(report.envs_json(views))
    else:
        report.print_envs(views)


@app.command(cls=_Command)
def status(
    packages: Annotated[
        bool,
        typer.Option(
            "--packages", help="One row per package: versions, builds, size, state, envs."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    host_lease: HostLease = None,
) -> None:
    """Show the cache split into live, dead (freed by the next collect), untracked and uv's own."""
    from uvrefs import inventory, report

    with _errors():
        lease = parse_host_lease(host_lease) if host_lease else None
        cache, store = cache_and_store()
        settled(store)
        progress = report.ScanProgress()
        result = inventory.status(cache, store, progress, packages=packages, host_lease=lease)
        progress.close()
    if as_json:
        report.print_json(report.status_json(result))
    elif packages:
        report.print_packages(result)
    else:
        report.print_status(result)
    for warning in result.warnings:
        print(f"uvrefs: warning: {warning}", file=sys.stderr)


@app.command(cls=_Command)
def why(
    query: Annotated[
        str,
        typer.Argument(
            metavar="QUERY", help="A package name (every version and build) or an entry id."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    host_lease: HostLease = None,
) -> None:
    """Say which environments keep a package's cache entries, and which would let them go."""
    from uvrefs import inventory, report

    with _errors():
        lease = parse_host_lease(host_lease) if host_lease else None
        cache, store = cache_and_store()
        settled(store)
        progress = report.ScanProgress()
        views = inventory.why(cache, store, query, progress, host_lease=lease)
        progress.close()
    if as_json:
        report.print_json(report.why_json(views))
    else:
        report.print_why(query, views)
    if not views:
        raise typer.Exit(1)


def _schedule_plan(every: str, min_age: str, resolve: bool = True) -> Any:
    """The schedule for this machine; `resolve` finds uv, the cache and this uvrefs, which
    only `install` needs (remove and status work with uv gone)."""
    from pathlib import Path

    from uvrefs import schedule as core
    from uvrefs.store import stamps

    seconds = parse_duration(every, "--every")
    if not 1 <= seconds <= core.MAX_EVERY:
        raise UsageError(f"--every {every!r}: use a duration from 1s to 366d (e.g. 1d)")
    parse_duration(min_age, "--min-age")
    log = Path(stamps.default_state_dir()) / "collect.log"
    retry_for = format_duration(seconds / 2)  # done before the next run
    job = core.resolve_job(min_age, log, retry_for=retry_for) if resolve else core.Job((), (), log)
    return core.plan_schedule(seconds, job, installed=not resolve), log


Every = Annotated[str, typer.Option("--every", metavar="DUR", help="How often: 12h, 1d, 1w.")]
MinAge = Annotated[
    str,
    typer.Option(
        "--min-age", metavar="DUR", help="Passed to collect: free only entries dead this long."
    ),
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Show the files and commands; change nothing.")
]
NoActivate = Annotated[
    bool,
    typer.Option(
        "--no-activate", help="Write or remove the files only; run no systemctl/launchctl."
    ),
]


@schedule.command("install", cls=_Command)
def schedule_install(
    every: Every = "1d",
    min_age: MinAge = "7d",  # unattended: a week, the grace period for envs that may have moved
    dry_run: DryRun = False,
    no_activate: NoActivate = False,
) -> None:
    """Install the periodic job for this machine's scheduler."""
    from uvrefs import schedule as core

    with _errors():
        plan, log = _schedule_plan(every, min_age)
        if plan.note:
            print(f"note: {plan.note}")
        if dry_run:
            for unit in plan.units:
                print(f"# {unit.path}\n{unit.text}")
            for command in plan.activate:
                print("$ " + " ".join(command))
            if plan.cron_line:
                print(plan.cron_line)
            return
        log.parent.mkdir(parents=True, exist_ok=True)  # the job's --log must be writable
        for line in core.install(plan, activate=not no_activate):
            print(line)


@schedule.command("remove", cls=_Command)
def schedule_remove(dry_run: DryRun = False, no_activate: NoActivate = False) -> None:
    """Remove the periodic job."""
    from uvrefs import schedule as core

    with _errors():
        plan, _ = _schedule_plan("1d", "1d", resolve=False)
        if dry_run:
            for command in plan.deactivate:
                print("$ " + " ".join(command))
            for unit in plan.units:
                print(f"$ rm {unit.path}")
            return
        for line in core.remove(plan, activate=not no_activate):
            print(line)


@schedule.command("status", cls=_Command)
def schedule_status() -> None:
    """Show whether the job is installed, its last outcome and when it runs next."""
    from uvrefs import schedule as core

    with _errors():
        plan, log = _schedule_plan("1d", "1d", resolve=False)
        for line in core.status(plan, log):
            print(line)


WatchDir = Annotated[
    str, typer.Argument(metavar="DIR", help="A directory holding projects or environments.")
]


@watch.command("add", cls=_Command)
def watch_add(directory: WatchDir) -> None:
    """Watch DIR: every environment under it (4 levels deep) is a root, tracked from now."""
    import os

    from uvrefs import inventory, report
    from uvrefs.gc import roots

    with _errors():
        path = os.path.realpath(os.path.expanduser(directory))
        if not os.path.isdir(path):
            raise UvrefsError(f"{directory} is not a directory; give one that holds your projects")
        try:
            os.listdir(path)
        except OSError as exc:  # envs there could not be seen: watching it would hide them
            raise UvrefsError(
                f"cannot list {directory} ({exc.strerror}): envs there could not be seen; "
                "fix its permissions, or run this as a user who may list it"
            ) from None
        cache, store = cache_and_store()
        with store.locked():
            store.save_watched([*store.watched(), path])
        # Tracked at once, as a collect would: deleting one of them later frees what only
        # it used, even if no collect ran in between.
        progress = report.ScanProgress()
        try:
            found = roots.discover([path], cache.root, max_depth=roots.WATCH_DEPTH)
            done = inventory.adopt(cache, store, found, progress, command="watch")
        finally:
            progress.close()
    count = len(done.adopted)
    print(f"watching {path}: {count} environment{'s' * (count != 1)} found and tracked")
    for _path, why in done.failed:
        print(f"uvrefs: warning: not tracked: {why}", file=sys.stderr)


@watch.command("remove", cls=_Command)
def watch_remove(directory: WatchDir) -> None:
    """Stop watching DIR (environments found there stay tracked)."""
    import os

    with _errors():
        path = os.path.realpath(os.path.expanduser(directory))
        _, store = cache_and_store()
        with store.locked():
            known = store.watched()
            if path not in known:
                raise UvrefsError(f"{path} is not watched; `uvrefs watch list` shows what is")
            store.save_watched([d for d in known if d != path])
    print(f"no longer watching {path}")


@watch.command("list", cls=_Command)
def watch_list() -> None:
    """Every directory searched for environments, how deep, and why: watched, or holding
    a tracked environment."""
    from uvrefs.gc import roots
    from uvrefs.store.refs import host_id

    with _errors():
        cache, store = cache_and_store()
        found = roots.find_roots(cache, store, host_id(), discover_envs=False)
        for searched in roots.searched_dirs(found, found.views[0]):
            print(f"{searched.path}\t{searched.why} ({searched.depth} levels deep)")


@hosts.callback(invoke_without_command=True)
def hosts_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    host_lease: HostLease = None,
) -> None:
    """Every host of this cache: its last lease and lease state, its envs, and what only
    they keep (freed once its lease is over, or it is forgotten)."""
    if ctx.invoked_subcommand is not None:
        return
    from uvrefs import inventory, report

    with _errors():
        lease = parse_host_lease(host_lease) if host_lease else None
        cache, store = cache_and_store()
        settled(store)
        progress = report.ScanProgress()
        found = inventory.list_hosts(cache, store, progress, host_lease=lease)
        progress.close()
    if as_json:
        report.print_json(report.hosts_json(found))
    else:
        report.print_hosts(found)


@hosts.command("forget", cls=_Command)
def hosts_forget(
    host: Annotated[
        str,
        typer.Argument(metavar="ID", help="A host id (or its start), or its host name."),
    ],
) -> None:
    """Forget a host gone for good: its lease, its local envs' records and refs. The next
    collect frees what only they kept; its envs on a shared filesystem are still judged."""
    from uvrefs import inventory

    with _errors():
        cache, store = cache_and_store()
        settled(store)
        named, envs, dropped = inventory.forget_host(cache, store, host)
    print(
        f"forgot host {named}: {plural(envs, 'environment')}, {plural(dropped, 'reference')}; "
        "the next collect frees what only they kept"
    )


def _tracked(command: str, args: list[str] | None) -> None:
    from uvrefs import track

    with _errors():
        code = track.run(command, args or [])
    raise typer.Exit(code)


class _errors:
    """Turn user errors (and OS errors nothing closer handled) raised inside the block into
    one line and their exit code."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> Literal[False]:
        if isinstance(exc, UvrefsError):
            fail(exc)
        if isinstance(exc, OSError):
            fail(from_os_error(exc))
        return False
