"""Tracked uv commands: run uv with the user's arguments untouched, then record which
cache entries the target environment uses. The shared cache lock is held from before uv
starts until the refs are written, so a collector never sees a half-recorded install.

This is the path in front of every install: up to the "unchanged, skip" decision it
uses only `os`-level modules; the scanner and the store load only to record, and pydantic
not at all (the store is written with `json`; see uvrefs.store.refs)."""

from __future__ import annotations

import os
import sys
import time

from uvrefs import uv
from uvrefs.errors import StoreError, UsageError, UvrefsError
from uvrefs.store import locate, stamps
from uvrefs.targets import (
    Target,
    fingerprint,
    follow_redirect,
    pip_target,
    project_link,
    project_target,
    script_target,
    venv_target,
)
from uvrefs.uv import CHANGES_ENV, uv_subcommand

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from uvrefs.cache import Cache
    from uvrefs.envs import ArchiveIndex, How
    from uvrefs.store.refs import RefsStore

# uvrefs subcommand -> the uv command it wraps
COMMANDS: dict[str, tuple[str, ...]] = {
    "install": ("pip", "install"),
    "pip install": ("pip", "install"),
    "pip sync": ("pip", "sync"),
    "pip uninstall": ("pip", "uninstall"),
    "sync": ("sync",),
}


class Recorded:
    """What one recording did: the env, how many entries it uses, refs files changed,
    whether it was skipped as unchanged, and the entries whose refs were unreadable."""

    __slots__ = ("changed", "corrupt", "entries", "env", "skipped")

    def __init__(
        self,
        env: str,
        entries: int = 0,
        changed: int = 0,
        skipped: bool = False,
        corrupt: tuple[str, ...] = (),
    ) -> None:
        self.env, self.entries, self.changed = env, entries, changed
        self.skipped, self.corrupt = skipped, corrupt


# Tracked commands uv refuses without arguments: what they need, and an example. uvrefs
# says so itself: uv's usage line would show options the user never typed (clap counts
# one set from the environment, `UV_CACHE_DIR`, as given: `--cache-dir <CACHE_DIR>`).
NEEDS_ARGUMENTS: dict[str, tuple[str, str]] = {
    "install": ("packages or requirements", "-p .venv numpy"),
    "pip install": ("packages or requirements", "-p .venv numpy"),
    "pip sync": ("requirements files", "requirements.txt"),
    "pip uninstall": ("packages", "-p .venv numpy"),
}


def run(command: str, args: Sequence[str], environ: Mapping[str, str] = os.environ) -> int:
    """Run `uv <command> ARGS` (a uvrefs tracked command) and record its environment."""
    if not args and command in NEEDS_ARGUMENTS:
        what, example = NEEDS_ARGUMENTS[command]
        raise UsageError(
            f"`uvrefs {command}` needs {what}, as `uv {' '.join(COMMANDS[command])}` does "
            f"(e.g. `uvrefs {command} {example}`); `uvrefs {command} --help` shows uv's options"
        )
    kind = "project" if command == "sync" else "pip"
    return run_tracked(kind, command, [*COMMANDS[command], *args], environ)


def run_uv(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> int:
    """`uvrefs uv ARGS`: any uv command. Those that change an environment are run and
    recorded; every other one replaces this process, so it costs nothing extra."""
    uvbin = uv.find_uv(environ)
    command = uv_subcommand(args)
    kind = CHANGES_ENV.get(command or "")
    if kind is None or command is None:
        os.execv(uvbin, [uvbin, *args])
    return run_tracked(kind, command, list(args), environ)


def run_tracked(kind: str, command: str, uv_args: list[str], environ: Mapping[str, str]) -> int:
    """Run uv with `uv_args` and record the environment it changed (found as `kind` says:
    pip, project, venv or tools); returns uv's exit code.

    Recording problems never change uv's exit code: they are reported on stderr, and an
    env left unrecorded is only kept longer (untracked entries are never collected). A
    Ctrl-C reaches uv too (uvrefs waits for it and records what it did); another one
    while recording stops it quietly, with uv's code (the store's writes are atomic)."""
    uvbin = uv.find_uv(environ)
    args = uv_args
    if (
        uv.uses_no_cache(args, environ)
        or uv.has_flag(args, "--dry-run")
        or uv.has_flag(args, "-h", "--help")  # uv prints help and changes nothing
    ):
        return uv.run_passthrough(uvbin, uv_args)
    try:
        os.getcwd()
    except OSError:  # run from a deleted directory: uv says what it makes of that
        code = uv.run_passthrough(uvbin, uv_args)
        if code == 0:
            print(
                "uvrefs: warning: environment not recorded: the current directory no longer "
                "exists; run the command again from one that does",
                file=sys.stderr,
            )
        return code
    root = uv.cache_dir(args, environ)
    # Lock only a cache uv has initialised: never create a `.lock` anywhere else.
    initialised = os.path.isfile(os.path.join(root, "CACHEDIR.TAG"))
    lock = uv.CacheLock(root, exclusive=False, timeout=uv.lock_timeout(environ))
    code = 130  # what a Ctrl-C before uv has finished exits with, as in a shell
    try:
        if initialised:
            lock.acquire()
        before = _archive_names(root)
        code = uv.run_passthrough(uvbin, uv_args)
        if not lock.held and os.path.isfile(os.path.join(root, "CACHEDIR.TAG")):
            lock.acquire()  # uv created the cache just now
        if lock.held and records_in_background(environ):
            store = locate.find_store(stamps.default_state_dir(environ), root)
            stamps.hold_recording(store)  # inherited by the recorder, like uv's lock
            if _fork_recorder():
                os._exit(code)  # the recorder now holds uv's lock until the refs are written
        try:
            targets = _targets(kind, uvbin, args, environ, root)
            new_ids = _archive_names(root) - before
            results = [record_if_changed(root, t, command, new_ids, environ) for t in targets]
        except UvrefsError as exc:
            quiet = kind in ("project", "tools") and command in ("run", "tool uninstall")
            if code == 0 and not quiet:
                _say(f"warning: environment not recorded: {exc}")
            return code
    except KeyboardInterrupt:
        return code
    finally:
        lock.release()
    corrupt = sum(len(r.corrupt) for r in results)
    if corrupt:
        _say(
            f"warning: refs of {corrupt} entries are unreadable and were left alone (their "
            "entries are kept); fix or delete them"
        )
    for result in results if environ.get("UVREFS_VERBOSE") else []:
        state = "unchanged, skipped" if result.skipped else f"{result.changed} refs written"
        _say(f"{result.env}: {result.entries} entries, {state}")
    if environ.get("UVREFS_AUTO_COLLECT"):
        maybe_auto_collect(root, environ["UVREFS_AUTO_COLLECT"], environ)
    return code


def records_in_background(environ: Mapping[str, str]) -> bool:
    """Whether to give the terminal back as soon as uv is done and record after that:
    `UVREFS_RECORD=background|foreground`; by default in a terminal (stderr is a tty) and
    not with --verbose. Scripts and CI default to the foreground: they may read the refs,
    save the cache or end the job right after."""
    mode = environ.get("UVREFS_RECORD", "")
    if mode in ("background", "foreground"):
        return mode == "background"
    return not environ.get("UVREFS_VERBOSE") and sys.stderr.isatty()


def _fork_recorder() -> bool:
    """Fork a recorder; True in the parent, which should then exit with uv's code.

    The child inherits the descriptor of uv's cache lock, and a `flock` lives as long as
    any descriptor of it, so the lock stays held, shared, from before uv started until the
    child has written the refs: a collector still cannot see a half-recorded install.

    The child must outlive the terminal, which may close as soon as the parent exits (an
    IDE task, `ssh -t`, `script -c`): the session leader's exit then sends SIGHUP to the
    terminal's foreground process group, which the child is in until it has called
    `setsid`, and on a busy machine it may not have run yet: it died, unrecorded. So
    SIGHUP is ignored from before the fork, as `nohup` does. (Waiting for the child's
    `setsid` before exiting works too, but costs the user up to several ms on a loaded
    machine.) Out of the session, a Ctrl-C at the new prompt cannot reach it; before,
    the shell has made its own process group the foreground one."""
    # `signal` without its enums: the C module is loaded at start-up already
    import _signal  # type: ignore[import-not-found]

    from uvrefs.options import flush_output

    flush_output()  # the child must not write what the parent has buffered again
    hangup = _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)
    try:
        pid = os.fork()
    except OSError:
        _signal.signal(_signal.SIGHUP, hangup)
        return False  # cannot fork: record in the foreground
    if pid:
        return True
    os.setsid()
    delay = os.environ.get("UVREFS_TEST_RECORD_DELAY")  # tests: widen the window
    if delay:
        import time

        time.sleep(float(delay))
    return False


def _say(text: str) -> None:
    """One `uvrefs: ...` line on stderr. A background recorder's terminal may have closed
    (writes fail with EIO): the line is then lost, the recording is not."""
    try:
        print(f"uvrefs: {text}", file=sys.stderr, flush=True)
    except OSError:
        pass


def maybe_auto_collect(root: str, every: str, environ: Mapping[str, str]) -> None:
    """Opt-in (`UVREFS_AUTO_COLLECT=1d`): at most once per interval, start a collect in the
    background, after this install released uv's lock. It skips if uv is busy (as cargo's
    automatic gc does) and frees only entries dead for at least the interval."""
    import time

    from uvrefs.units import parse_duration

    try:
        interval = parse_duration(every)
    except UvrefsError as exc:
        _say(f"warning: UVREFS_AUTO_COLLECT ignored: {exc}")
        return
    state_dir = stamps.default_state_dir(environ)
    stamp = os.path.join(locate.find_store(state_dir, root), "auto-collect.stamp")
    try:
        if time.time() - os.stat(stamp).st_mtime < interval:
            return
    except OSError:
        pass
    try:
        os.makedirs(os.path.dirname(stamp), exist_ok=True)
        from uvrefs.files import write_atomic

        write_atomic(stamp, str(time.time()))
    except OSError:
        return  # cannot stamp, so do not run: never more often than asked
    import subprocess

    log = os.path.join(state_dir, "collect.log")
    subprocess.Popen(
        [sys.executable, "-m", "uvrefs", "collect", "--no-wait", "--min-age", every, "--log", log],
        env={**environ, "UV_CACHE_DIR": root},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _targets(
    kind: str, uvbin: str, args: Sequence[str], environ: Mapping[str, str], root: str
) -> list[Target]:
    if kind == "pip":
        return [pip_target(uvbin, args, environ)]
    if kind == "project" and uv.option_value(args, "--script"):
        script = script_target(uvbin, args, root)  # no project: the script's cached env
        return [script] if script is not None else []
    if kind == "project":
        return [project_target(args, environ)]
    if kind == "venv":
        return [venv_target(args, environ)]
    tool_dir = environ.get("UV_TOOL_DIR") or uv.query(uvbin, ["tool", "dir"])
    try:
        names = sorted(os.listdir(tool_dir))
    except OSError:
        return []
    return [
        Target(os.path.join(tool_dir, n))
        for n in names
        if os.path.isfile(os.path.join(tool_dir, n, "pyvenv.cfg"))
    ]


def _archive_names(root: str) -> set[str]:
    """Names in the archive buckets: compared before and after uv to see what it added."""
    names: set[str] = set()
    try:
        buckets = [b for b in os.listdir(root) if b.startswith("archive-v")]
    except OSError:
        return names
    for bucket in buckets:
        try:
            names.update(os.listdir(os.path.join(root, bucket)))
        except OSError:
            continue
    return names


def record_if_changed(
    root: str, target: Target, command: str, new_ids: set[str], environ: Mapping[str, str]
) -> Recorded:
    """Skip when the env's fingerprint matches its stamp and uv added no entries; else
    record (loading the scanner and the store only now)."""
    state_dir = stamps.default_state_dir(environ)
    # An env is known by its real path: one reached through a symlink (or a `.venv`
    # redirect file) is the same env. The way in is kept: a project's link to its env.
    link = os.path.abspath(target.path)
    target = Target(os.path.realpath(follow_redirect(target.path)), target.site_dirs)
    where = locate.find_store(state_dir, root)  # one lstat, unless the cache has moved
    stamp = stamps.stamp_path(where, target.path)
    taken = time.time_ns()  # before the look: `stamps.settled` judges the stamp by it
    print_ = fingerprint(target)
    if not new_ids and stamps.read_stamp(stamp) == print_:
        return Recorded(target.path, skipped=True)
    from pathlib import Path

    from uvrefs.cache import Cache
    from uvrefs.store.refs import RefsStore

    stamps.check_store(where)  # never record through a link
    cache = Cache.open(Path(root))
    try:
        store = RefsStore(Path(state_dir), cache.root, directory=Path(where))
        result = record_env(cache, store, target, command, new_ids, link=link)
        stamps.write_stamp(stamp, print_, taken)
    except OSError as exc:  # a full or read-only disk: nothing recorded, so nothing freed
        raise StoreError(
            f"cannot write the refs store in {state_dir} ({exc.strerror}); free space, or set "
            "UVREFS_DIR to a writable directory"
        ) from None
    return result


def record_env(
    cache: Cache,
    store: RefsStore,
    target: Target,
    command: str,
    new_ids: set[str] | frozenset[str] = frozenset(),
    index: ArchiveIndex | None = None,
    link: str | None = None,
) -> Recorded:
    """Record every entry `target` uses, plus `new_ids` (entries uv created while working
    on it that it does not contain: build dependencies), as referenced by it."""
    from pathlib import Path

    from uvrefs.cache import is_project_env
    from uvrefs.envs import (
        ArchiveIndex,
        identity,
        link_mount,
        mount_namespace,
        mount_point,
        scan_env,
    )
    from uvrefs.hosts import renew, shared_place
    from uvrefs.settings import seen
    from uvrefs.store.refs import host_id
    from uvrefs.store.registry import register_store

    env = Path(os.path.realpath(follow_redirect(target.path)))
    scan = scan_env(env, index or ArchiveIndex(cache), [Path(s) for s in target.site_dirs])
    if scan.state != "alive":
        raise UvrefsError(f"{target.path} {scan.detail or 'is not an environment'}")
    uses: dict[str, How] = dict(scan.uses)
    for entry_id in build_dependencies(cache, new_ids, uses.keys()):
        uses[entry_id] = "build"
    projects: list[tuple[str, str | None]] = []
    # The project whose `.venv` led here (the env named directly, or an alias, is no
    # project's): a centralized project env lives while one does, and any env reached
    # through one is that project's build environment (`mark.project_sources`).
    found = project_link(os.path.abspath(link or target.path))
    if found is not None or is_project_env(cache, str(env)):
        record = store.env_record(str(env))
        known = list(record.projects) if record else []
        if found is not None:
            known.append((found, link_mount(found)))
        projects = sorted(set(known))
    with store.locked():
        here = identity(env)
        # The record first: killed before the refs are written, the env is still a root.
        store.save_env(
            str(env),
            list(target.site_dirs),
            mount_point(env),
            command,
            sorted(uses),
            mntns=mount_namespace(),
            identity=here,
            sources=list(scan.sources),
            projects=projects,
            shared=shared_place(str(env)),
        )
        changed, corrupt = store.record(env, uses, command, cache.describe, here)
        try:  # where uv keeps tools and Pythons; best effort: the env is recorded
            store.remember_settings(seen(config=False))
        except StoreError:
            pass  # a settings file a newer uvrefs wrote: left as it is
    renew(str(store.dir), host_id())  # this host is alive (every 10 minutes at most)
    register_store(cache, store.dir, host_id())
    return Recorded(str(env), len(uses), changed, corrupt=tuple(corrupt))


def build_dependencies(
    cache: Cache, new_ids: set[str] | frozenset[str], installed: Iterable[str]
) -> set[str]:
    """Archives uv created during the run that the env does not contain are build
    dependencies, but only if the run built a wheel from source (a new installed archive
    reached from the sdists bucket): otherwise they came from another uv run that worked
    at the same time, and that run records them."""
    others = {i for i in new_ids - set(installed) if cache.archive_path(i) is not None}
    if not others:
        return set()
    built = set(cache.pointers(buckets=("sdists",))) & new_ids & set(installed)
    return others if built else set()
