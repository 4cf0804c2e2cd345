"""Sweep: the only code that deletes. Under uv's cache lock held exclusively it marks
again (every root re-fingerprinted, what changed re-scanned), re-plans each candidate,
then removes what is still dead in crash-safe order, working relative to directory
descriptors opened without following symlinks, inside the cache root only."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping
from pathlib import Path
from typing import Literal

from uvrefs import uv
from uvrefs.blobs import Blob, Blobs
from uvrefs.cache import (
    POINTER_SIDECARS,
    Cache,
    Pointer,
    SizeTally,
    read_dist_infos,
)
from uvrefs.envs import ArchiveIndex, EnvScan
from uvrefs.errors import LockTimeout, StoreError, UvrefsError
from uvrefs.files import open_dir, open_dir_below
from uvrefs.gc.mark import Marks, facts_of, mark_again
from uvrefs.gc.plan import (
    BUILD_DEPENDENCY,
    Decision,
    Facts,
    Plan,
    plan_collection,
    untracked_state,
)
from uvrefs.gc.roots import Roots, find_roots, hidden_store
from uvrefs.gc.trash import (
    CrashHook,
    Moved,
    Trash,
    delete_moved,
    empty_leftover_trash,
    mounts_inside,
    mounts_under,
    os_error_text,
)
from uvrefs.hosts import forget as forget_lease
from uvrefs.store.refs import KnownEnv, RefsStore
from uvrefs.tuples import NamedTuple


class FreedEnv(NamedTuple):
    """A project env of uv's cache a sweep freed, and the bytes that freed."""

    path: str
    bytes: int


class Swept(NamedTuple):
    """What a sweep did: entries freed (with the bytes measured as they went) and kept
    (re-judged under the lock), errors per entry, warnings, and times."""

    freed: tuple[Decision, ...]
    kept: tuple[Decision, ...]
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    lock_held: float  # uv's lock held exclusively: re-checks, unlinks and renames
    deleting: float  # deleting the trash, after uv's lock was released
    rescans: Mapping[str, EnvScan]
    blobs: tuple[Blob, ...] = ()  # content blobs freed that no entry of this sweep owned
    envs: tuple[FreedEnv, ...] = ()  # project envs in uv's cache freed
    # Our store's env records as read under uv's lock (what a write-back compares with).
    records: Mapping[str, KnownEnv] = {}


def sweep(
    plan: Plan,
    cache: Cache,
    store: RefsStore,
    facts: Facts,
    roots: Roots,
    marks: Marks,
    pointers: Mapping[str, list[Pointer]],
    *,
    timeout: float,
    on_wait: Callable[[], None] | None = None,
    blobs: Blobs | None = None,
) -> Swept:
    """Free the planned entries: take them out of uv's sight under uv's exclusive cache
    lock, then delete them with the lock released.

    Every root is re-fingerprinted and what changed re-scanned (plus environments created
    since planning: new records in any store, new uv cached envs), so an entry a root
    started using meanwhile is kept. Then per entry: its pointers go first and its archive
    is renamed into this collector's trash (so uv never trusts a half-deleted one), then
    its refs; gone environments' referrers and records are dropped. uv waits only that
    long: the trash is deleted after the lock is released, measuring what goes. A crash
    at any point leaves either a live entry or an unreferenced archive (or a trash, which
    the next run empties), never a pointer to nothing."""
    errors: list[str] = []
    warnings: list[str] = []
    root_fd = open_dir(str(cache.root))
    out: TakenOut | None = None
    try:
        with uv.CacheLock(cache.root, exclusive=True, timeout=timeout, on_wait=on_wait):
            started = time.monotonic()
            warnings += empty_leftover_trash(cache.root, root_fd)
            now = rejudge(cache, store, plan, facts, roots, marks, blobs)
            out = take_out(cache, root_fd, now, pointers, errors)
            freeing = {d.entry for d, _ in out.entries}
            warnings += forget_gone(
                store, now.facts, now.scans, now.roots, freeing, plan.forgettable
            )
            held = time.monotonic() - started
        # uv's lock is released: what is in the trash is out of uv's sight, and this
        # collector's lock on the trash keeps every other collector out of it.
        warnings += forget_refs(store, [d.entry for d, _ in out.entries])
        deleting = time.monotonic()
        freed, envs_freed = delete_taken(out, errors)
        deleting = time.monotonic() - deleting
        if out.trash is not None:
            warnings += out.trash.remove()
            out.trash = None
        blobs_freed: list[Blob] = []
        if blobs:
            moved = [m for _, m in out.entries]
            freed, blobs_freed, held_again = sweep_blobs(
                cache, root_fd, blobs, freed, moved, timeout, warnings
            )
            held += held_again
    finally:
        if out is not None and out.trash is not None:
            out.trash.close()
        os.close(root_fd)
    return Swept(
        freed=tuple(freed),
        kept=tuple(now.kept),
        errors=tuple(errors),
        warnings=tuple(dict.fromkeys(warnings)),
        lock_held=held,
        deleting=deleting,
        rescans=now.scans,
        blobs=tuple(blobs_freed),
        envs=tuple(envs_freed),
        records=now.roots.views[0].records if now.roots.views else {},
    )


class TakenOut:
    """What a sweep took out of uv's sight under its lock: project envs and entries, each
    with what was moved into this collector's `trash` (None if nothing went)."""

    def __init__(
        self,
        trash: Trash | None,
        envs: list[tuple[str, Moved]],
        entries: list[tuple[Decision, Moved]],
    ) -> None:
        self.trash = trash
        self.envs = envs
        self.entries = entries


def take_out(
    cache: Cache,
    root_fd: int,
    now: Rejudged,
    pointers: Mapping[str, list[Pointer]],
    errors: list[str],
) -> TakenOut:
    """Under uv's exclusive lock: unlink the pointers of what still goes and rename its
    trees into the trash; the envs first (killed in between, no env is left in place
    linking what went, which uv could reuse). What cannot be taken out is in `errors`."""
    going_ids = {d.entry for d in now.going}
    directories = by_directory(pointers)
    trash = Trash(cache.root, root_fd) if now.going or now.envs_going else None
    out = TakenOut(trash, [], [])
    if trash is None:
        return out
    try:
        mounts = mounts_under(cache.root)
        for env in now.envs_going:
            try:
                doomed = [Doomed(Path(env), "tree")]
                out.envs.append((env, unlink_entry(cache, root_fd, doomed, trash, mounts)))
            except OSError as exc:
                errors.append(f"{env}: {os_error_text(exc)}")
        for decision in now.going:
            try:
                doomed = entry_paths(cache, decision.entry, pointers, going_ids, directories)
                moved = unlink_entry(cache, root_fd, doomed, trash, mounts)
                out.entries.append((decision, moved))
            except OSError as exc:
                errors.append(f"{decision.entry}: {os_error_text(exc)}")
    except BaseException:
        trash.close()  # as a killed collector's: the next run empties it
        raise
    return out


def forget_refs(store: RefsStore, entries: list[str]) -> list[str]:
    """Delete the refs of entries now in the trash: stale (harmless if a crash leaves
    them: dropped next time). Each is a kill point of the crash tests."""
    warnings = []
    for entry in entries:
        CrashHook.step()
        try:
            store.delete(entry)
        except OSError as exc:
            warnings.append(store_warning(store, exc))
    return warnings


def delete_taken(out: TakenOut, errors: list[str]) -> tuple[list[Decision], list[FreedEnv]]:
    """Delete what was taken out, measuring it: environments first (a file they share with
    an archive is then counted, whole, by the archive that holds its last link; deleting
    both at once could miss it). What fails stays in the trash for a later run, in
    `errors`."""
    if out.trash is None:
        return [], []
    delete_moved(out.trash, [m for _, m in out.envs])
    delete_moved(out.trash, [m for _, m in out.entries])
    envs = []
    for env, moved in out.envs:
        if moved.failure is not None:
            errors.append(f"{env}: {os_error_text(moved.failure)}")
        envs.append(FreedEnv(env, moved.tally.freed))
    freed = []
    for decision, moved in out.entries:
        if moved.failure is not None:  # a later run retries what is left in the trash
            errors.append(f"{decision.entry}: {os_error_text(moved.failure)}")
        freed.append(decision._replace(bytes=moved.tally.freed))
    return freed, envs


class Rejudged(NamedTuple):
    """The plan judged again under uv's exclusive lock: what still goes, what is kept now
    (and why), and the facts and scans it was judged on."""

    going: list[Decision]
    kept: list[Decision]
    envs_going: list[str]
    facts: Facts
    roots: Roots
    scans: Mapping[str, EnvScan]


def rejudge(
    cache: Cache,
    store: RefsStore,
    plan: Plan,
    facts: Facts,
    roots: Roots,
    marks: Marks,
    blobs: Blobs | None,
) -> Rejudged:
    """Under uv's lock: every root re-fingerprinted and what changed re-scanned, roots
    found again (new records, envs, registrations), each candidate re-planned."""
    candidates = [d.entry for d in plan.free]
    roots_now, marks_now = mark_now(cache, store, facts.host, roots, marks, candidates)
    facts_now = facts_of(roots_now, marks_now, facts.host, frozenset(candidates))._replace(
        gone_hosts={  # the hosts whose lease was over, unless renewed since
            host: seen
            for host, seen in facts.gone_hosts.items()
            if roots_now.host_seen.get(host, seen) <= seen
        },
    )
    # A store this host cannot read, registered or renewed since planning, stops it too.
    hidden = hidden_store(roots_now, facts.host_lease)
    if hidden and not facts_now.blocked:
        facts_now = facts_now._replace(blocked=hidden)
    now = plan_collection(facts_now)
    scans, live = marks_now.scans, marks_now.live
    envs_going = [  # none if something now says nothing may be freed
        env
        for env in plan.free_envs
        if env in scans
        and scans[env].state == "gone"
        and cache.contains(Path(env))
        and not facts_now.blocked
    ]
    if blobs is not None:  # their links go with them: not a use of any archive
        blobs.count_going(envs_going)
    going: list[Decision] = []
    kept: list[Decision] = []
    for decision in plan.free:
        why_keep = recheck(decision, cache, now, facts_now, blobs)
        if why_keep:
            state = "live" if decision.entry in live else "held"
            kept.append(decision._replace(free=False, bytes=0, reason=why_keep, state=state))
        else:
            going.append(decision)
    return Rejudged(going, kept, envs_going, facts_now, roots_now, scans)


def sweep_blobs(
    cache: Cache,
    root_fd: int,
    blobs: Blobs,
    freed: list[Decision],
    moved: list[Moved],
    timeout: float,
    warnings: list[str],
) -> tuple[list[Decision], list[Blob], float]:
    """Content-addressed cache: with the archives deleted, remove the blobs no archive
    links any more, under uv's exclusive lock again (uv links an existing blob into each
    new archive, so none may go while uv runs). The bytes of a blob whose last archive
    this sweep deleted count for that entry; other unlinked blobs (a killed collect's,
    `uv cache clean <pkg>`'s) are reported apart. Returns the entries with their bytes,
    the other blobs removed, and how long uv's lock was held."""
    owner: dict[int, int] = {}  # blob -> the first entry that linked it
    links: dict[int, int] = {}  # blob -> its links before this sweep (the first unlink saw)
    deleted: Counter[int] = Counter()
    for number, item in enumerate(moved):
        for dev, ino, count, nlink, _size in item.tally.linked_files():
            if blobs.device_ino(dev, ino):
                owner.setdefault(ino, number)
                links[ino] = max(links.get(ino, 0), nlink)
                deleted[ino] += count
    owner = {ino: n for ino, n in owner.items() if links[ino] - deleted[ino] == 1}
    candidates = blobs.orphans()
    if not candidates:
        return freed, [], 0.0
    try:
        with uv.CacheLock(cache.root, exclusive=True, timeout=timeout):
            started = time.monotonic()
            removed = remove_orphans(root_fd, candidates)
            held = time.monotonic() - started
    except LockTimeout:
        warnings.append(
            f"{len(candidates)} content blobs no archive links are left for the next "
            "collect (uv was busy)"
        )
        return freed, [], 0.0
    extra = [0] * len(freed)
    others = []
    for blob in removed:
        if blob.ino in owner and owner[blob.ino] < len(freed):
            extra[owner[blob.ino]] += blob.bytes
        else:
            others.append(blob)
    return [d._replace(bytes=d.bytes + e) for d, e in zip(freed, extra, strict=True)], others, held


def remove_orphans(root_fd: int, candidates: list[Blob]) -> list[Blob]:
    """Under uv's exclusive lock: unlink each candidate blob that still has one link, is the
    same regular file, and lies in a real directory of the cache (opened component by
    component without following links); then remove each fan-out directory this left
    empty, as `uv cache prune` would (so a prune after a collect finds nothing to do): its
    blocks count in the last blob removed from it. Returns the blobs removed, as measured
    then."""
    removed: list[Blob] = []
    dirs: dict[tuple[str, str], int] = {}
    last: dict[tuple[str, str], int] = {}  # fan-out directory -> its last blob removed
    try:
        for blob in candidates:
            bucket, fan, name = blob.parts
            if (bucket, fan) not in dirs:
                try:
                    dirs[bucket, fan] = open_dir_below(root_fd, (bucket, fan))
                except OSError:
                    dirs[bucket, fan] = -1
            fd = dirs[bucket, fan]
            if fd < 0:
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if st.st_ino != blob.ino or st.st_nlink != 1 or not stat.S_ISREG(st.st_mode):
                    continue
                os.unlink(name, dir_fd=fd)
            except OSError:
                continue  # gone, or not removable: the next collect looks again
            last[bucket, fan] = len(removed)
            removed.append(Blob(blob.parts, blob.ino, st.st_blocks * 512))
        for (bucket, fan), n in last.items():
            if not os.listdir(dirs[bucket, fan]):
                size = _remove_empty(root_fd, bucket, fan)
                removed[n] = removed[n]._replace(bytes=removed[n].bytes + size)
    finally:
        for fd in dirs.values():
            if fd >= 0:
                os.close(fd)
    return removed


def _remove_empty(root_fd: int, bucket: str, name: str) -> int:
    """rmdir `bucket/name` through the bucket's descriptor (it fails if anything is in
    it); the blocks it freed."""
    try:
        bucket_fd = open_dir_below(root_fd, (bucket,))
    except OSError:
        return 0
    try:
        size = os.stat(name, dir_fd=bucket_fd, follow_symlinks=False).st_blocks * 512
        os.rmdir(name, dir_fd=bucket_fd)
    except OSError:
        return 0  # not empty after all, or gone: nothing freed
    finally:
        os.close(bucket_fd)
    return size


def store_warning(store: RefsStore, exc: Exception) -> str:
    why = exc.strerror if isinstance(exc, OSError) else str(exc)
    return (
        f"the refs store {store.dir} cannot be written ({why}): freed entries keep stale "
        "refs until it can, which is harmless; free space or fix its permissions"
    )


# ---------------------------------------------------------------- mark again, under the lock


def mark_now(
    cache: Cache, store: RefsStore, host: str, roots: Roots, marks: Marks, candidates: list[str]
) -> tuple[Roots, Marks]:
    """The roots and marks as they are now, under uv's lock: the same root finder as at
    planning, with the same inputs (it reads again only the store files and directories
    that changed: records written since, environments made since, in buckets made since),
    every root re-fingerprinted and what changed scanned again. A root found at planning
    and not now stays a root (scanned again, it is judged as it is now)."""
    try:  # buckets made since planning too (the first `environments-v*`)
        cache = Cache.open(cache.root)
    except UvrefsError:
        pass
    now = find_roots(cache, store, host, previous=roots, discover_envs=roots.discovery is not None)
    for path, root in roots.envs.items():
        now.envs.setdefault(path, root)
    # A record trusted at planning (unchanged fingerprint) is not trusted here for the
    # candidates it once used, or uses now by the refs read again: a record that lies may
    # add a candidate, never lose one. Nor is one rewritten since planning (a recording
    # meanwhile): what it says now is not what was trusted.
    named = {
        r.env
        for refs in (roots.refs, now.refs)
        for entry in candidates
        for r in (refs[entry].referrers if entry in refs else ())
    }
    distrust = {now.aliases.get(env, env) for env in named} | {
        path
        for path, root in now.envs.items()
        if path in roots.envs and root.record != roots.envs[path].record
    }
    return now, mark_again(now, marks, ArchiveIndex(cache), distrust)


def recheck(
    decision: Decision,
    cache: Cache,
    now: Plan,
    facts: Facts,
    blobs: Blobs | None = None,
) -> str | None:
    """Why the entry must now be kept, or None if it is still dead: the planner's verdict
    on the facts of now (`now`: the plan of the candidates alone, with the stores read
    again: an install that finished after planning wrote its refs before releasing its
    lock), then its files' outside links."""
    entry = decision.entry
    if entry in facts.corrupt:
        return f"refs unreadable: {facts.corrupt[entry]}"
    if entry in facts.set_aside:
        return facts.set_aside[entry]
    if decision.untracked:
        if entry in facts.refs:
            return "tracked since planning"
        state, why = untracked_state(entry, facts)
        if state != "untracked":
            return why
        if facts.blocked:
            return "uncertain: " + facts.blocked
    elif entry not in facts.refs:
        return "refs vanished since planning"
    elif entry not in {d.entry for d in now.free}:
        return next(d.reason for d in now.keep if d.entry == entry)
    return linked_elsewhere(cache, entry, blobs)


def linked_elsewhere(cache: Cache, entry: str, blobs: Blobs | None = None) -> str | None:
    """Under the lock, a cheap re-check of outside links (see `metadata_linked`)."""
    path = cache.archive_path(entry)
    if path is not None and metadata_linked(path, read_dist_infos(str(path)), blobs):
        return "files still hard-linked elsewhere (an untracked env?)"
    return None


def metadata_linked(archive: Path, dist_infos: tuple[str, ...], blobs: Blobs | None = None) -> bool:
    """uv links METADATA in every hard-linked install, so its link count stands for the
    archive's. In a content-addressed cache the blob's link and other archives' are the
    cache's own, not uses (`Blobs.outside_links`)."""
    for info in dist_infos:
        try:
            st = os.lstat(archive / info / "METADATA")
        except OSError:
            continue
        if (blobs.outside_links(st) if blobs else st.st_nlink - 1) > 0:
            return True
    return False


def forget_gone(
    store: RefsStore,
    facts: Facts,
    scans: Mapping[str, EnvScan],
    roots: Roots,
    freeing: set[str],
    forgettable: frozenset[str] = frozenset(),
) -> list[str]:
    """Keep the store bounded: drop referrers whose env was judged gone under this lock
    (nothing can be recording now), and the records and stamps of those envs: this host's
    gone envs, other hosts' envs on a shared filesystem judged gone here, and every local
    env of a host whose lease is over (its lease goes too; its envs on a shared filesystem
    are judged here, and stay while they live). Only in our store (a peer store is its
    owner's to tidy), and not in refs about to be deleted. An env that may have moved
    keeps its referrers and record: they are what holds its entries through the grace
    period (`forgettable`: those whose grace period is over)."""

    def over(path: str) -> bool:
        scan = scans.get(path)
        return (
            scan is not None
            and scan.state == "gone"
            and (not scan.maybe_moved or path in forgettable)
        )

    ours = {path for path in scans if over(path)}
    theirs = {pair for pair, here in roots.shared.items() if over(here)}
    expired = set(facts.gone_hosts)

    def dropped(host: str, env: str) -> bool:
        if host in roots.hosts or host == facts.host:
            return env in ours
        if (host, env) in roots.unjudged or ("", env) in roots.unjudged:
            return False  # its record cannot be read: never dropped, whatever its lease
        if (host, env) in roots.shared:  # judged here, whatever its host's lease
            return (host, env) in theirs
        return host in expired

    if not ours and not theirs and not expired:
        return []
    try:
        drop_from_store(store, facts, roots, dropped, ours, expired, freeing)
    except (OSError, StoreError) as exc:  # bookkeeping only: the next collect retries
        return [store_warning(store, exc)]
    return []


def _kept_to_build(facts: Facts, entry: str) -> bool:
    """Whether `entry` is kept as a build dependency: its referrers, gone envs' among them,
    are what says it is one (a "build" referrer), so none is dropped while a living env
    may build from a local source (an env whose build reused the entry is not among them)."""
    return any(label.startswith(BUILD_DEPENDENCY) for label in facts.live.get(entry, ()))


def drop_from_store(
    store: RefsStore,
    facts: Facts,
    roots: Roots,
    dropped: Callable[[str, str], bool],
    ours: Iterable[str] = (),
    hosts: Iterable[str] = (),
    freeing: Container[str] = frozenset(),
) -> int:
    """Under the store's lock, drop from our store the referrers `dropped(host, env)`
    names (not in refs about to be deleted, `freeing`), the records of `ours` (this host's
    envs, gone) and of other hosts' envs `dropped` names, and the leases of `hosts`. The
    number of referrers dropped."""
    count = 0
    view = roots.views[0] if roots.views else None
    with store.locked():
        for entry, refs in facts.refs.items():
            if entry in freeing or not facts.is_own(entry) or _kept_to_build(facts, entry):
                continue
            going = sum(dropped(r.host, r.env) for r in refs.referrers)
            if going and store.drop_referrers(entry, dropped):
                count += going
        for path in ours:
            root = roots.envs.get(path)
            if root is not None and root.kind not in ("peer", "shared"):
                store.forget_env(path)
        for record in view.records.values() if view is not None else ():
            if record.host not in roots.hosts and dropped(record.host, record.path):
                store.forget_env(record.path)
        for host in hosts:
            forget_lease(str(store.dir), host)
    return count


# ---------------------------------------------------------------- removing an entry


class Doomed(NamedTuple):
    """One path that goes with an entry: a plain file, a link that must still point at the
    entry when it is removed, or a tree renamed out of uv's sight before it is deleted."""

    path: Path
    kind: Literal["file", "link", "tree"]


def by_directory(pointers: Mapping[str, list[Pointer]]) -> dict[Path, set[str]]:
    """directory -> the ids its pointers name (for an sdist revision: every wheel built
    there), so that `entry_paths` need not look through every pointer for each sdist."""
    found: dict[Path, set[str]] = {}
    for ps in pointers.values():
        for pointer in ps:
            found.setdefault(pointer.path.parent, set()).add(pointer.archive_id)
    return found


def entry_paths(
    cache: Cache,
    entry: str,
    pointers: Mapping[str, list[Pointer]],
    going: set[str],
    directories: Mapping[Path, set[str]] | None = None,
) -> list[Doomed]:
    """Everything that goes with an entry, in crash-safe order. Per pointer, its sidecars
    first and the link last: a leftover link alone is a cache miss for uv, while a leftover
    `.rev`/`.http` names the archive and would be trusted. A built wheel takes its sdist
    revision (source tree, `.whl`, metadata) when every wheel built there goes, else just
    its own `.whl`. The archive comes last, so no pointer ever outlives it. `directories`:
    `by_directory(pointers)`, made once by a caller that asks for many entries."""
    doomed: list[Doomed] = []
    for pointer in pointers.get(entry, []):
        if not cache.contains(pointer.path):
            continue
        if pointer.bucket == "sdists":
            revision = pointer.path.parent
            if directories is None:
                directories = by_directory(pointers)
            built_here = directories.get(revision, set())
            if built_here <= going:
                doomed.append(Doomed(revision, "tree"))
                continue
            doomed.append(Doomed(Path(f"{pointer.path}.whl"), "file"))
        else:
            doomed += [
                Doomed(Path(f"{pointer.path}{suffix}"), "file") for suffix in POINTER_SIDECARS
            ]
        doomed.append(Doomed(pointer.path, "link"))
    archive = cache.archive_path(entry)
    if archive is not None:
        doomed.append(Doomed(archive, "tree"))
    return doomed


def unlink_entry(
    cache: Cache, root_fd: int, doomed: list[Doomed], trash: Trash, mounts: set[str]
) -> Moved:
    """Remove an entry's paths in crash-safe order, each through a descriptor of its
    parent directory opened from the cache root without following links: files and
    links are unlinked, trees renamed into the trash. Measured as it goes."""
    moved = Moved([], SizeTally())
    entry = doomed[-1].path.name if doomed else ""
    prefix = len(str(cache.root)) + 1
    parents: dict[str, int] = {}  # a pointer's sidecars share its directory: open it once
    try:
        for item in doomed:
            CrashHook.step()
            parent_rel, _, name = str(item.path)[prefix:].rpartition(os.sep)
            if parent_rel not in parents:
                try:
                    parents[parent_rel] = open_dir_below(root_fd, tuple(parent_rel.split(os.sep)))
                except FileNotFoundError:
                    continue
            parent = parents[parent_rel]
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if item.kind == "tree" and stat.S_ISDIR(st.st_mode):
                mounted = mounts_inside(item.path, mounts) if mounts else None
                if mounted:
                    raise OSError(errno.EBUSY, f"a filesystem is mounted inside at {mounted}")
                moved.trees.append(trash.take(parent, name))
            elif stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=parent)  # a directory where a file belongs: fails
            elif item.kind != "link" or _points_to(parent, name, entry):
                # Renamed into the trash, deleted with it once uv's lock is released: out
                # of uv's sight as surely as unlinked, and under the lock a rename costs a
                # fraction of an unlink that frees blocks (15,000 pointer files: 5.2 s
                # unlinked, 1M-file cache under load).
                moved.trees.append(trash.take(parent, name))
    finally:
        for fd in parents.values():
            os.close(fd)
    return moved


def _points_to(parent: int, name: str, entry: str) -> bool:
    try:
        return os.path.basename(os.path.normpath(os.readlink(name, dir_fd=parent))) == entry
    except OSError:
        return False
