"""Tracked uv commands: run uv with the user's arguments untouched, then record which
cache entries the target environment uses. The shared cache lock is held from before uv
starts until the refs are written, so a collector never sees a half-recorded install."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from uvrefs import uv
from uvrefs.cache import Cache
from uvrefs.envs import ArchiveIndex, Target, pip_target, project_target, scan_env, site_dirs
from uvrefs.errors import UvrefsError
from uvrefs.refs import RefsStore, default_state_dir, host_id

# uvrefs subcommand -> the uv command it wraps
COMMANDS: dict[str, tuple[str, ...]] = {
    "install": ("pip", "install"),
    "pip install": ("pip", "install"),
    "pip sync": ("pip", "sync"),
    "sync": ("sync",),
}


@dataclass(frozen=True)
class Recorded:
    """What one recording did: the env, how many entries it uses, files changed."""

    env: Path
    entries: int
    changed: int
    skipped: bool = False
    corrupt: tuple[str, ...] = ()


def run(command: str, args: Sequence[str], environ: Mapping[str, str] = os.environ) -> int:
    """Run `uv <command> ARGS` and record its environment; returns uv's exit code.

    Recording problems never change uv's exit code: they are reported on stderr, and an
    env left unrecorded is only kept longer (untracked entries are never collected)."""
    uvbin = uv.find_uv(environ)
    uv_args = [*COMMANDS[command], *args]
    if uv.uses_no_cache(args, environ) or uv.has_flag(args, "--dry-run"):
        return uv.run_passthrough(uvbin, uv_args)
    root = uv.cache_dir(args, environ)
    existed = root.is_dir()
    lock = (
        uv.cache_lock(root, exclusive=False, timeout=uv.lock_timeout(environ))
        if existed
        else nullcontext()
    )
    with lock:
        before = Cache.open(root).archive_ids() if existed else set()
        code = uv.run_passthrough(uvbin, uv_args)
        try:
            with nullcontext() if existed else uv.cache_lock(root, exclusive=False):
                cache = Cache.open(root)
                target = (
                    project_target(args, environ)
                    if command == "sync"
                    else pip_target(uvbin, args, environ)
                )
                result = record_env(
                    cache,
                    RefsStore(default_state_dir(environ), cache.root),
                    target,
                    command,
                    cache.archive_ids() - before,
                )
        except UvrefsError as exc:
            if code == 0:
                print(f"uvrefs: warning: environment not recorded: {exc}", file=sys.stderr)
            return code
    if result.corrupt:
        print(
            f"uvrefs: warning: refs of {len(result.corrupt)} entries are unreadable and were "
            "left alone (their entries are kept); run `uvrefs doctor`",
            file=sys.stderr,
        )
    if environ.get("UVREFS_VERBOSE"):
        state = "unchanged, skipped" if result.skipped else f"{result.changed} refs written"
        print(f"uvrefs: {result.env}: {result.entries} entries, {state}", file=sys.stderr)
    return code


def fingerprint(cache: Cache, target: Target) -> str:
    """Cheap identity of an env's installed set: each site dir's mtime and dist-infos.
    Installing, removing or reinstalling a package changes its site dir."""
    digest = hashlib.sha256(os.fsencode(cache.root))
    for site in site_dirs(target.path, target.site_dirs):
        try:
            digest.update(f"{site}\0{os.stat(site).st_mtime_ns}\0".encode())
            digest.update(
                "\0".join(sorted(n for n in os.listdir(site) if n.endswith(".dist-info"))).encode()
            )
        except OSError:
            digest.update(b"?")
    return digest.hexdigest()[:32]


def record_env(
    cache: Cache,
    store: RefsStore,
    target: Target,
    command: str,
    new_ids: set[str] = frozenset(),  # type: ignore[assignment]
    index: ArchiveIndex | None = None,
) -> Recorded:
    """Record every entry `target` uses, plus `new_ids` (entries uv created while working
    on it that it does not contain: build dependencies), as referenced by it."""
    from uvrefs.formats import EnvRecord

    print_ = fingerprint(cache, target)
    if not new_ids and store.fingerprint_of(target.path) == print_:
        return Recorded(target.path, 0, 0, skipped=True)
    scan = scan_env(target.path, index or ArchiveIndex(cache), target.site_dirs)
    if scan.state != "alive":
        raise UvrefsError(f"{target.path} {scan.detail or 'is not an environment'}")
    uses: dict[str, str] = dict(scan.uses)
    for entry_id in new_ids - uses.keys():
        uses[entry_id] = "build"
    with store.locked():
        changed, corrupt = store.record(target.path, uses, command, cache.describe)
        store.save_env(
            EnvRecord(
                path=str(target.path),
                host=host_id(),
                site_dirs=[str(s) for s in target.site_dirs],
                command=command,
                recorded_at=datetime.now(UTC),
                fingerprint=print_,
                entries=sorted(uses),
            )
        )
    return Recorded(target.path, len(uses), changed, corrupt=tuple(corrupt))
