"""Mark: scan every root and build the live set, `entry -> the roots that use it`, so
"why is this kept" is a lookup. An entry is live when any living root uses it now
(symlink, hard link or content), whether or not a refs file lists that root."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from uvrefs.envs import ArchiveIndex, EnvScan, identity, project_source, project_state, scan_env
from uvrefs.gc.plan import BUILD_DEPENDENCY, UNCERTAIN, Facts
from uvrefs.gc.roots import Root, Roots
from uvrefs.store.refs import Refs, RefsStore
from uvrefs.store.snapshot import Restamp, Snapshot
from uvrefs.store.stamps import settled
from uvrefs.targets import Target, fingerprint, follow_redirect

TYPE_CHECKING = False
if TYPE_CHECKING:
    from uvrefs.envs import How

Progress = Callable[[str, int, int], None]  # (what, done, total): long scans report here


class Marks:
    """The outcome of a mark: a scan of every root, the live set, and each root's
    fingerprint when it was scanned (the sweep compares them under the lock)."""

    def __init__(
        self,
        prints: dict[str, str] | None = None,
        taken: dict[str, int] | None = None,
    ) -> None:
        self.scans: dict[str, EnvScan] = {}
        self.live: dict[str, tuple[str, ...]] = {}
        self.fingerprints: dict[str, str] = {}  # `state_print` at the scan
        self.prints: dict[str, str] = {} if prints is None else prints  # `fingerprint`, for stamps
        self.taken: dict[str, int] = {} if taken is None else taken  # when each was taken (ns)
        self.blocked: str | None = None  # a root whose uses cannot be known: nothing may be freed


def facts_of(roots: Roots, marks: Marks, host: str, archives: frozenset[str]) -> Facts:
    """What the planner judges `archives` on: every store's refs, the scans and the live
    set, and why nothing may be freed, if anything says so. Used when planning and again
    under uv's lock, with the roots found and marked then."""
    dead_envs = frozenset(
        path
        for path, root in roots.envs.items()
        if root.kind == "uv-project" and path in marks.scans and marks.scans[path].state == "gone"
    )
    scans = dict(marks.scans)  # a referrer may name an env by a path that is a link now
    scans.update({a: scans[r] for a, r in roots.aliases.items() if r in scans})
    return Facts(
        host,
        archives,
        roots.refs,
        roots.corrupt,
        scans,
        roots.uv_owned,
        live=marks.live,
        own=frozenset(roots.own),
        blocked=roots.blocked or marks.blocked,
        dead_project_envs=dead_envs,
        listed={entry: tuple(labels) for entry, labels in roots.listed.items()},
        set_aside=roots.set_aside,
        shared=roots.shared,
        host_seen=roots.host_seen,
        shared_ids=roots.shared_ids,
        unjudged=roots.unjudged,
    )


def root_target(root: Root) -> Target:
    return Target(root.path, root.record.site_dirs if root.record else ())


def state_print(root: Root, print_: str | None = None) -> str:
    """What must not change between planning and the sweep for a root's scan to stand:
    whether it exists (for a project env in uv's cache: whether its project does), and its
    fingerprint."""
    exists = "1" if os.path.isdir(root.path) else "0"
    if root.kind == "uv-project":
        exists += ":" + project_of(root)[0]
    return exists + "\n" + (fingerprint(root_target(root)) if print_ is None else print_)


def project_of(root: Root) -> tuple[str, str]:
    return project_state(root.path, root.links, root.record.mntns if root.record else None)


def scan_root(root: Root, index: ArchiveIndex) -> EnvScan:
    """Scan a root now, with what its record adds (site dirs, mount, namespace). A root
    whose record cannot be read, or is missing, is unknown: only the record says where
    all its packages live and which filesystem and namespace it was on. What a scan of
    its path finds still counts as used (more kept, never less)."""
    if root.unreadable:
        found = scan_env(Path(root.path), index) if os.path.isdir(root.path) else None
        uses = found.uses if found is not None and found.state == "alive" else {}
        return EnvScan(Path(root.path), "unknown", root.unreadable, uses)
    if root.kind == "uv-project":  # it lives while its project does (unknown keeps)
        state, why = project_of(root)
        if state == "gone":  # a project gone from its path may have moved with its link
            moved = why.endswith("no longer exists")
            return EnvScan(Path(root.path), "gone", why, maybe_moved=moved)
    record = root.record
    extra = [Path(s) for s in record.site_dirs] if record else []
    scan = scan_env(
        Path(root.path),
        index,
        extra,
        record.mount if record else None,
        record.mntns if record else None,
    )
    projects = project_sources(root) if scan.state == "alive" else frozenset()
    return scan._replace(sources=tuple(sorted({*scan.sources, *projects})))


def project_sources(root: Root) -> frozenset[str]:
    """The projects whose `.venv` leads to the root now: the env itself named `.venv`
    beside a pyproject.toml, or a `.venv` link (or redirect file) known to have led to it,
    from its record or uv's project envs (a `proj/.venv -> /data/envs/proj` layout, a
    centralized project env). Local sources uv may build again, looked up on every scan
    and every reuse of a record (one stat each): no fingerprint sees a project written
    beside an env, and the env's own path, its real path, is not the link's."""
    links = [link for link, _mount in (*root.links, *(root.record.projects if root.record else ()))]
    ways_in = [root.path, *(p for p in links if os.path.realpath(follow_redirect(p)) == root.path)]
    return frozenset(p for p in map(project_source, ways_in) if p is not None)


def is_private(store: RefsStore) -> bool:
    """Whether only we can write the store's records and stamps: owned by us and not
    writable by group or others (others may read it). Only then is a record trusted in
    place of a scan: a fingerprint is made of world-readable facts, so anyone who can
    write a record and its stamp could otherwise make a living env look unused."""
    try:
        for path in (store.dir, store.envs_dir):
            st = os.stat(path)
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return False
    except OSError:
        return False
    return True


def scan_or_reuse(
    root: Root, index: ArchiveIndex, host: str, print_: str, trusted: Snapshot | None
) -> EnvScan:
    """A root whose fingerprint still matches the stamp of its last record in `trusted`
    (our own store as read at the start, if private) uses what that record says, so it is
    not scanned again (the sweep re-fingerprints every root under uv's lock and re-scans
    what changed). Every other root (a peer store's, a record in a store others can
    write) is scanned."""
    record = root.record
    if (
        record is None
        or root.kind in ("uv-project", "shared")  # its project is checked every time; or
        # another host's env on a shared filesystem, whose stamps are that host's
        or trusted is None
        or root.store is None
        or root.store.dir != trusted.store.dir
        or record.host != host
    ):
        return scan_root(root, index)
    stamp = trusted.stamps.get(root.path)
    # A stamp taken too soon after a change (`settled`) may hide one made just after it.
    fresh = stamp is not None and stamp[0] == print_ and settled(print_, stamp[1])
    if not fresh or not os.path.isdir(root.path):
        return scan_root(root, index)
    uses: dict[str, How] = dict.fromkeys(record.entries, "hardlink")
    here = identity(Path(root.path))
    sources = tuple(sorted({*record.sources, *project_sources(root)}))
    return EnvScan(Path(root.path), "alive", "", uses, reused=True, sources=sources, identity=here)


def mark(
    roots: Iterable[Root],
    index: ArchiveIndex,
    refs: Mapping[str, Refs],
    host: str,
    *,
    reuse: Snapshot | None,
    progress: Progress | None = None,
) -> Marks:
    """Scan (or, with `reuse`, trust unchanged records in that store of) every root."""
    marks = Marks()
    roots = list(roots)
    trusted = reuse if reuse is not None and is_private(reuse.store) else None
    for number, root in enumerate(roots):
        if progress:
            progress("scanning environments", number, len(roots))
        marks.taken[root.path] = time.time_ns()  # before the look: `stamps.settled`
        print_ = fingerprint(root_target(root))
        marks.prints[root.path] = print_
        marks.fingerprints[root.path] = state_print(root, print_)
        scan = scan_or_reuse(root, index, host, print_, trusted)
        marks.scans[root.path] = scan
    marks.live = live_set(roots, marks.scans, refs)
    marks.blocked = unknowable(roots, marks.scans)
    note_moves(roots, marks.scans, refs)
    return marks


def restamps(
    roots: Iterable[Root], marks: Marks, host: str, reuse: Snapshot | None
) -> list[Restamp]:
    """The roots a mark with `reuse` scanned only because their stamp had not settled
    (taken too soon after their last change to vouch for the record, `stamps.settled`),
    whose fingerprint is still the stamped one and whose scan found nothing (no use, no
    local source) their record does not list: their stamp is taken again (the fingerprint
    this mark took before its scan, and when), so the next command reuses their record
    instead of scanning them again. Without this, an env was scanned by every `status` and
    dry run after its install until a collect recorded it again."""
    trusted = reuse if reuse is not None and is_private(reuse.store) else None
    if trusted is None:
        return []
    found = []
    for root in roots:
        record, scan = root.record, marks.scans.get(root.path)
        stamp = trusted.stamps.get(root.path)
        if (
            record is None
            or scan is None
            or scan.reused
            or scan.state != "alive"
            or stamp is None
            or root.kind in ("uv-project", "shared")
            or root.store is None
            or root.store.dir != trusted.store.dir
            or record.host != host
        ):
            continue
        print_ = marks.prints.get(root.path)
        if (
            print_ == stamp[0]
            and not settled(*stamp)
            and set(scan.uses) <= set(record.entries)
            # a reuse brings the record's sources, and the projects it finds then
            and set(scan.sources) <= {*record.sources, *project_sources(root)}
        ):
            found.append(Restamp(root.path, print_, marks.taken[root.path], record))
    return found


def mark_again(roots: Roots, before: Marks, index: ArchiveIndex, distrust: set[str]) -> Marks:
    """The marks as they are now, from roots found again (under uv's lock): a root whose
    state print is unchanged since `before` keeps its scan, unless that scan was taken
    from a record and the root is in `distrust` (it once used an entry about to go);
    every other root is scanned now."""
    marks = Marks(prints=dict(before.prints), taken=dict(before.taken))
    for path, root in roots.envs.items():
        old = before.scans.get(path)
        now = state_print(root)
        changed = before.fingerprints.get(path) != now
        if old is None or changed or (old.reused and path in distrust):
            marks.scans[path] = scan_root(root, index)
        else:
            marks.scans[path] = old
        marks.fingerprints[path] = now
    marks.live = live_set(roots.envs.values(), marks.scans, roots.refs)
    marks.blocked = unknowable(roots.envs.values(), marks.scans)
    note_moves(roots.envs.values(), marks.scans, roots.refs)
    return marks


def unknowable(roots: Iterable[Root], scans: Mapping[str, EnvScan]) -> str | None:
    """Why nothing may be freed: a root that exists but cannot be read, with no record of
    what it used (an env found under a watched directory, say). A root with a record keeps
    what it was recorded using instead (`live_set`)."""
    for root in roots:
        scan = scans.get(root.path)
        if scan is not None and scan.state == "unknown" and root.record is None:
            if root.kind not in ("tracked", "peer"):  # those keep through their referrers
                return f"{root.path} {scan.detail}: what it uses cannot be known"
    return None


def live_set(
    roots: Iterable[Root], scans: Mapping[str, EnvScan], refs: Mapping[str, Refs]
) -> dict[str, tuple[str, ...]]:
    """entry -> labels of the living roots that use it. Build dependencies (entries ever
    recorded as such) are live while any living root has a local source uv may build again
    (a path or editable install, or a project): which backend a rebuild needs is not
    written anywhere uvrefs can read, so every one seen is kept."""
    live: dict[str, list[str]] = {}
    builders = []
    for root in roots:
        scan = scans.get(root.path)
        if scan is not None and scan.state == "unknown":
            # What it last used, as far as anyone knows, and what a scan of it finds now.
            recorded = root.record.entries if root.record is not None else root.held
            for entry in {*recorded, *scan.uses}:
                live.setdefault(entry, []).append(f"{UNCERTAIN}{root.label} {scan.detail}")
        if scan is None or scan.state != "alive":
            continue
        for entry in scan.uses:
            live.setdefault(entry, []).append(root.label)
        if scan.sources:
            builders.append(root.label)
    if builders:
        why = f"{BUILD_DEPENDENCY}{builders[0]}'s local source"
        for entry, entry_refs in refs.items():
            if any(r.how == "build" for r in entry_refs.referrers):
                live.setdefault(entry, []).append(why)
    return {entry: tuple(sorted(set(labels))) for entry, labels in live.items()}


def note_moves(roots: Iterable[Root], scans: dict[str, EnvScan], refs: Mapping[str, Refs]) -> None:
    """Say where a vanished env went when a living root has its directory's identity
    (renamed on the same filesystem); its uses are live through that root. A vanished
    env that linked into the cache (symlink link mode) and went nowhere uvrefs can see
    may have been moved out of sight (`mv`), links and all: it is `maybe_moved`, and what
    only it used waits a grace period (a hardlink- or clone-mode env's files are its own,
    so its entries go at once)."""
    roots = list(roots)
    alive = {}
    for root in roots:
        scan = scans.get(root.path)
        if scan is not None and scan.state == "alive":
            ident = identity(Path(root.path))
            if ident is not None:
                alive[ident] = root.path
    linking = {r.env for entry in refs.values() for r in entry.referrers if r.how == "symlink"}
    for root in roots:
        scan = scans.get(root.path)
        if scan is None or scan.state != "gone":
            continue
        ident = root.record.identity if root.record else None
        # Linking into the cache, it may have moved out of sight, links and all; "moved
        # to" (the same inode, on the same filesystem, alive) is a guess an inode reused
        # by a new directory also fits, so it does not end the wait.
        moved = scan.maybe_moved or root.path in linking
        if ident in alive:
            scans[root.path] = EnvScan(
                scan.path, "gone", f"moved to {alive[ident]}", maybe_moved=moved
            )
        elif moved and not scan.maybe_moved:
            scans[root.path] = scan._replace(maybe_moved=True)
