"""Collect: roots -> mark -> plan -> sweep, over one snapshot of the store. `gather_facts`
reads the store once (uvrefs.store.snapshot), finds the roots and marks from them
(uvrefs.gc.roots, uvrefs.gc.mark), `plan_with_policy` measures the candidates and runs the
pure planner (uvrefs.gc.plan), and `collect` hands the plan to uvrefs.gc.sweep, the only
code that deletes, then writes what it learned back to the store once (`Changes`). A dry
run is the same mark and plan with no sweep."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Container, Iterable, Mapping
from pathlib import Path

from uvrefs.blobs import Blobs
from uvrefs.cache import (
    Cache,
    Pointer,
    SizeTally,
    read_dist_infos,
    split_dist_info,
)
from uvrefs.envs import ArchiveIndex, EnvScan
from uvrefs.footprints import Footprint, Footprints
from uvrefs.gc.mark import Marks, Progress, facts_of, mark, restamps
from uvrefs.gc.plan import (
    Decision,
    Facts,
    Plan,
    Policy,
    apply_policy,
    budget_note,
    oldest_first,
    plan_collection,
    untracked_ids,
)
from uvrefs.gc.roots import Roots, find_roots, hidden_store
from uvrefs.gc.sweep import (
    by_directory,
    entry_paths,
    linked_elsewhere,
    metadata_linked,
    store_warning,
    sweep,
)
from uvrefs.hosts import lease_over, store_clock
from uvrefs.store.refs import KnownEnv, RefsStore, host_id
from uvrefs.store.registry import register_store
from uvrefs.store.snapshot import Changes, RootRecord, Snapshot, holders_now
from uvrefs.tuples import NamedTuple


class ProjectEnv(NamedTuple):
    """A project env of uv's cache whose project is gone: freed (or, in a dry run, to
    free), why its project is judged gone, and the bytes it frees."""

    path: str
    why: str
    bytes: int


class Removal(NamedTuple):
    """The outcome of a collection (or of a dry run: what would go)."""

    cache: Path
    dry_run: bool
    freed: tuple[Decision, ...]
    kept: tuple[Decision, ...]
    untracked: int
    errors: tuple[str, ...] = ()
    lock_held: float = 0.0
    unreadable: tuple[str, ...] = ()  # "<refs file>: why" for refs that could not be read
    warnings: tuple[str, ...] = ()  # problems that did not stop the collection
    note: str | None = None  # what a policy could not do (a budget out of reach)
    deleting: float = 0.0  # deleting the trash, after uv's lock was released
    live_untracked: int = 0  # no refs, a root uses them
    uv_own: int = 0  # no refs, uv's cached environments themselves
    blobs: int = 0  # content blobs no archive links, freed apart from any entry
    blob_bytes: int = 0
    envs: tuple[ProjectEnv, ...] = ()  # project envs of dead projects
    # Why the sizes freed are upper bounds, if they are: the cache's filesystem hides link
    # counts (sshfs), so a file an env still links looks freed but keeps its space.
    upper_bound: str | None = None

    def count(self, state: str) -> int:
        """Kept entries in `state` (live, held, uv's own), the untracked ones included."""
        extra = {"live": self.live_untracked, "uv's own": self.uv_own}.get(state, 0)
        return sum(d.state == state for d in self.kept) + extra

    @property
    def bytes_freed(self) -> int:
        return sum(d.bytes for d in self.freed) + self.blob_bytes + sum(e.bytes for e in self.envs)


class Survey:
    """Facts plus what the sweep needs to act on them: the roots, their marks, the
    pointers, the archive index; the store as read at the start (`snapshot`) and what
    the command writes back to it at the end (`changes`, by `write_back`)."""

    def __init__(
        self,
        facts: Facts,
        pointers: dict[str, list[Pointer]],
        index: ArchiveIndex,
        roots: Roots,
        marks: Marks,
        blobs: Blobs,
        snapshot: Snapshot,
        changes: Changes,
        orphan_fans: int = 0,
        returned: bool = False,
        clock: float = 0.0,
    ) -> None:
        self.facts = facts
        self.pointers = pointers
        self.index = index
        self.roots = roots
        self.marks = marks
        self.blobs = blobs
        self.snapshot = snapshot
        self.changes = changes
        # fan-out directories of `files-v*` only unlinked blobs leave empty
        self.orphan_fans = orphan_fans
        self.returned = returned  # this host renewed a lease that had expired: it was away
        self.clock = clock  # the time now by the store's clock, which lease times are read by


def gather_facts(
    cache: Cache,
    store: RefsStore,
    progress: Progress | None = None,
    *,
    reuse: bool = False,
    discover: bool = True,
) -> Survey:
    """Read the store once (`Snapshot`), find every root (our store's envs, every peer
    store's, uv's cached and tool envs, environments under watched directories) and mark
    from them. With `reuse`, roots unchanged since their last record are not scanned
    again. What the caller learns goes in `changes`, written by `write_back` at its end:
    where uv keeps tools and Pythons as this process sees them (so every later collect
    searches there whatever its own environment says), the peer stores found (`uv cache
    prune` may delete the registry in the cache) and the holders searched."""
    from uvrefs.settings import seen

    host = host_id()
    returned = renew_lease(store, host)
    register_store(cache, store.dir, host)  # as often as the lease: this host is alive
    clock = store_clock(str(store.dir))
    snapshot = Snapshot.take(store, host, seen())
    pointers = cache.pointers()
    roots = find_roots(
        cache, store, host, discover_envs=discover, ours=snapshot.view, seen=snapshot.seen
    )
    changes = Changes(seen=snapshot.seen, describe=cache.describe, base=snapshot)
    ours = snapshot.view
    holders = holders_now(ours, roots.holders)
    if sorted(ours.peers) != roots.peers:
        changes.peers = roots.peers
    if sorted(ours.holders) != holders:
        changes.holders = holders
    index = ArchiveIndex(cache)
    marks = mark(
        roots.envs.values(),
        index,
        roots.refs,
        host,
        reuse=snapshot if reuse else None,
        progress=progress,
    )
    changes.stamps = restamps(roots.envs.values(), marks, host, snapshot if reuse else None)
    facts = facts_of(roots, marks, host, frozenset(cache.archive_ids()))
    blobs = Blobs.load(cache)
    blobs.count_going(sorted(facts.dead_project_envs))
    return Survey(
        facts,
        pointers,
        index,
        roots,
        marks,
        blobs,
        snapshot,
        changes,
        returned=returned,
        clock=clock,
    )


def write_back(survey: Survey) -> str | None:
    """Write what the command learned to the store, once, under its lock; a warning if
    the records could not be written."""
    store = survey.snapshot.store
    failed = survey.changes.write(store)
    return store_warning(store, failed) if failed is not None else None


def renew_lease(store: RefsStore, host: str) -> bool:
    """Say in the store that this host is alive (`hosts.renew`); True if its lease had
    expired (other hosts may have judged its local envs gone meanwhile)."""
    from uvrefs.hosts import renew

    try:
        store.dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return renew(str(store.dir), host)


class SizeMemory:
    """What archives occupy, from the store's memory (`sizes.json`: each archive's
    `Footprint`, good while its directories are as they were: uv never changes an archive
    once written) or walked now and remembered for the next run. `from_memory` counts the
    figures memory gave. Only a cache: a missing or unwritable figure costs a walk, never a
    wrong verdict."""

    def __init__(self, survey: Survey) -> None:
        self.changes = survey.changes
        self.known = survey.snapshot.sizes
        self.new: dict[str, Footprint] = {}
        self.from_memory = 0
        # What the pointers, sidecars and sdist revisions going with each entry `measure`d
        # occupy (uv's files, which the collect frees with the entry).
        self.beside: dict[str, int] = {}
        self._footprints: Footprints | None = None
        self._detail: frozenset[str] = frozenset()

    def recall(self, entry: str, st: os.stat_result) -> Footprint | None:
        """The remembered footprint of an archive whose directory (lstat `st`) is still the
        one walked: its dist-infos stand (sizes need `Footprint.holds`)."""
        found = self.new.get(entry) or self.known.get(entry)
        return found if found is not None and found[:2] == (st.st_ino, st.st_mtime_ns) else None

    def footprints(self, cache: Cache, detail: Iterable[str] = ()) -> Footprints:
        """Every archive's footprint (`Footprints.measure`), looked at once per run, with
        the files linked from elsewhere of the archives in `detail`."""
        wanted = frozenset(detail)
        if self._footprints is None or not wanted <= self._detail:
            self._detail |= wanted
            archives = [
                (entry.name, entry.path)
                for bucket in cache.archive_dirs
                for entry in _listing(bucket)
            ]
            self._footprints = Footprints.measure(
                archives, {**self.known, **self.new}, detail=self._detail
            )
            self.new.update(self._footprints.walked)
            self.from_memory = self._footprints.from_memory
        return self._footprints

    def save(self, present: Container[str]) -> None:
        """Remember what was walked (written with the command's other `changes`),
        forgetting archives no longer `present`."""
        if not self.new:
            return
        merged = {**self.known, **self.new}
        self.changes.sizes = {e: v for e, v in merged.items() if e in present}
        self.known, self.new = merged, {}


def _listing(bucket: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(bucket) as it:
            return list(it)
    except OSError:
        return []


def measure(
    cache: Cache,
    survey: Survey,
    entries: list[str],
    going: set[str],
    progress: Progress | None = None,
    memory: SizeMemory | None = None,
) -> Measured:
    """What deleting each entry frees when every entry of `going` goes, for planning and
    dry runs, and which entries still have files hard-linked from outside the cache.
    `entries` come in the order a policy frees them: a file several of them share counts
    for the last of them, whose deletion frees it.

    Every file counts once, as `uv cache size` counts, and only if every link of it goes
    (a file a deduplicating tool linked into another archive stays while that one does).
    uv never changes an archive once written, so each archive tree is walked once and
    remembered (`SizeMemory`); pointers, sidecars and sdist revisions are walked every
    time. A remembered archive counts whole unless its METADATA has another link (uv links
    every file of an install alike). The sweep measures again, exactly, as it deletes: that
    is the figure a collect reports."""
    memory = memory or SizeMemory(survey)
    blobs = survey.blobs
    archives: dict[str, int] = {}
    if entries and not blobs.where:
        footprints = memory.footprints(cache, entries)
        archives = footprints.frees([e for e in entries if e in going], blobs.also_going)
    sizes: dict[str, int] = {}
    linked = set()
    shared: dict[tuple[int, int], SharedBlob] = {}  # content blobs several going archives link
    directories = by_directory(survey.pointers)
    paths = {e: entry_paths(cache, e, survey.pointers, going, directories) for e in entries}
    # A path several entries take (the sdist revision two wheels were built in) counts for
    # the last of them, as a shared file does.
    taken_by = {doomed.path: entry for entry in entries for doomed in paths[entry]}
    for number, entry in enumerate(entries):
        if progress:
            progress("sizing entries", number, len(entries))
        tally = SizeTally()
        archive_bytes, archive_linked = 0, False
        for doomed in paths[entry]:
            if taken_by[doomed.path] != entry:
                continue
            if doomed.kind != "tree" or doomed.path.parent not in cache.archive_dirs:
                tally.add_tree(doomed.path)
            elif blobs.where:
                archive_bytes, archive_linked = _content_archive_size(
                    entry, doomed.path, blobs, shared if entry in going else None
                )
            else:
                archive_bytes = archives.get(entry, 0)
                # The same rule as the sweep's re-check: METADATA's links (uv links every
                # file of an install alike; a deduplicating tool may link any other file,
                # which is not a use, and is counted above as not freed).
                known = memory.new.get(entry) or memory.known.get(entry)
                infos = known.dist_infos if known else read_dist_infos(str(doomed.path))
                archive_linked = metadata_linked(doomed.path, infos, blobs)
        if tally.max_links > 1 or archive_linked:
            linked.add(entry)
        sizes[entry] = tally.freed + archive_bytes
        memory.beside[entry] = tally.occupied
    # A blob every link of which goes (its own, and several going archives') is freed,
    # though no one archive frees it alone: it counts for the last of them.
    also = blobs.also_going
    going_blobs: dict[int, str] = {}  # blob -> the entry whose deletion frees it
    for (dev, ino), blob in shared.items():
        if blob.links_going + also(dev, ino) >= blob.nlink:
            if blobs.device_ino(dev, ino):
                going_blobs[ino] = blob.last
            if blob.nlink > blob.most + also(dev, ino):
                sizes[blob.last] += blob.size
    if blobs.where:
        survey.orphan_fans = _emptied_fans(blobs, going_blobs, sizes, entries)
    memory.save(survey.facts.archives)
    return Measured(sizes, frozenset(linked))


class Measured(NamedTuple):
    """What `measure` found: the bytes deleting each entry frees, and the entries with
    files hard-linked from outside the cache (an env may use them)."""

    sizes: dict[str, int]
    linked: frozenset[str]


def _emptied_fans(
    blobs: Blobs, going: Mapping[int, str], sizes: dict[str, int], order: list[str]
) -> int:
    """A fan-out directory of `files-v*` goes with its last blob (the sweep removes it, as
    `uv cache prune` would): its blocks count for the last entry that frees a blob in it,
    or, if only blobs no archive links (a killed collect's) are in it, are returned."""
    orphans = {b.ino for b in blobs.orphans(again=False)}
    rank = {entry: n for n, entry in enumerate(order)}
    freeing: dict[
        tuple[str, str], list[str]
    ] = {}  # fan-out directory -> entries freeing blobs there
    for ino, entry in going.items():
        parts = blobs.where.get(ino)
        if parts is not None:
            freeing.setdefault(parts[:2], []).append(entry)
    loose = 0
    for fan, size in blobs.emptied({*going, *orphans}).items():
        if fan in freeing:
            sizes[max(freeing[fan], key=rank.__getitem__)] += size
        else:
            loose += size
    return loose


class SharedBlob:
    """A content blob going archives link, as `measure` sums it up: the last of them (the
    one it counts for), how many of its links they hold together and the most one holds,
    its link count and its size."""

    def __init__(
        self,
        last: str,
        nlink: int,
        size: int,
        links_going: int = 0,
        most: int = 0,
    ) -> None:
        self.last = last
        self.nlink = nlink
        self.size = size
        self.links_going = links_going
        self.most = most


def _content_archive_size(
    entry: str, path: Path, blobs: Blobs, shared: dict[tuple[int, int], SharedBlob] | None
) -> tuple[int, bool]:
    """In a content-addressed cache, an archive tree's size and whether a file in it has a
    link outside, walked every time: what it frees depends on which other archives share
    its blobs now; a blob goes with its last archive."""
    tally = SizeTally()
    tally.add_tree(path)
    linked = metadata_linked(path, read_dist_infos(str(path)), blobs)
    if shared is not None:
        for dev, ino, count, nlink, size in tally.linked_files():
            seen = shared.setdefault((dev, ino), SharedBlob(entry, nlink, size))
            seen.last = entry
            seen.links_going += count
            seen.most = max(seen.most, count)
    return tally.freed_with(blobs.also_going), linked


def plan_with_policy(
    cache: Cache,
    survey: Survey,
    policy: Policy,
    progress: Progress | None = None,
    *,
    sized: bool = True,
    memory: SizeMemory | None = None,
) -> Plan:
    """Plan, measure the candidates, then plan again with what was measured and the policy.

    Without `sized` (a sweep whose policy needs no sizes), candidates are not walked: the
    sweep measures what it frees as it deletes, and only their link counts are read."""
    # Leases are judged by the store's clock only: without it (no file can be made in the
    # store) no host is judged gone.
    clock = survey.clock
    gone = {
        h: t
        for h, t in survey.facts.host_seen.items()
        if clock and lease_over(clock - t, policy.host_lease)
    }
    # A store another host registered that cannot be read here may track anything, while
    # that host renews its registration.
    blocked = survey.facts.blocked or hidden_store(survey.roots, policy.host_lease)
    facts = survey.facts = survey.facts._replace(
        gone_hosts=gone, blocked=blocked, host_lease=policy.host_lease
    )
    base = plan_collection(facts)
    wants_untracked = policy.untracked or policy.budget is not None
    names: dict[str, tuple[str | None, str | None]] = {}
    unpacked: dict[str, float] = {}
    for archive in survey.index.cache.archives() if wants_untracked else []:
        info = archive.dist_infos[0] if archive.dist_infos else None
        names[archive.id] = split_dist_info(info) if info else (None, None)
        unpacked[archive.id] = archive.path.lstat().st_mtime
    facts = facts._replace(
        names=names,
        unpacked_at=unpacked,
        now=time.time(),
        dead_since=survey.snapshot.dead_since,
    )
    # In the order the policy frees them (oldest first), so that a file several share is
    # counted for the last of them, whose deletion frees it.
    candidates = oldest_first(base.free, facts) + (untracked_ids(facts) if wants_untracked else [])
    memory = memory or SizeMemory(survey)
    if sized:
        measured = measure(cache, survey, candidates, set(candidates), progress, memory)
        sizes, linked = measured.sizes, measured.linked
    else:
        sizes = {}
        linked = frozenset(e for e in candidates if linked_elsewhere(cache, e, survey.blobs))
    total = SizeTally()
    if policy.budget is not None:
        total.add_tree(cache.root)
    facts = facts._replace(linked_elsewhere=linked, sizes=sizes, total=total.occupied)
    survey.facts = facts
    plan = apply_policy(plan_collection(facts) if linked else base, facts, policy)
    going = [d.entry for d in plan.free]
    if sized and going != candidates:  # an sdist revision goes only with its last wheel
        sizes.update(measure(cache, survey, going, set(going), memory=memory).sizes)
    plan = plan._replace(free=tuple(d._replace(bytes=sizes.get(d.entry, 0)) for d in plan.free))
    if sized and policy.budget is not None:
        plan = plan._replace(note=budget_note(facts.total, plan, policy.budget))
    return plan


def collect(
    cache: Cache,
    store: RefsStore,
    *,
    dry_run: bool,
    timeout: float,
    on_wait: Callable[[], None] | None = None,
    policy: Policy | None = None,
    progress: Progress | None = None,
) -> Removal:
    """Read the store, mark, plan, measure, then sweep (or, for a dry run, report the
    plan), then write what changed back to the store."""
    policy = policy or Policy()
    survey = gather_facts(cache, store, progress, reuse=True)
    plan = plan_with_policy(cache, survey, policy, progress, sized=dry_run or policy.needs_sizes)
    if cache.is_empty:
        verb = "would forget" if dry_run else "forgot"
        plan = plan._replace(
            note=f"the cache is empty (`uv cache clean`?): nothing to free; {verb} the refs "
            f"of {len(plan.stale)} entries no longer in it",
        )
    if dry_run:
        write_back(survey)
        return dry_run_result(plan, survey, store)
    # Only --min-age needs these stamps: one lost to a killed run makes it wait longer.
    survey.changes.dead, survey.changes.now = set(plan.dead), survey.facts.now
    try:
        swept = sweep(
            plan,
            cache,
            store,
            survey.facts,
            survey.roots,
            survey.marks,
            survey.pointers,
            timeout=timeout,
            on_wait=on_wait,
            blobs=survey.blobs,
        )
    except Exception:
        write_back(survey)  # uv's lock not had (or a sweep failed): what planning learned stands
        raise
    warnings = [*survey_warnings(survey), *swept.warnings]
    # An entry the sweep found used again under uv's lock is not dead any more.
    survey.changes.dead = set(plan.dead) - {d.entry for d in swept.kept if d.state == "live"}
    survey.changes.records = records_now(survey, swept.rescans, swept.records)
    survey.changes.stale = list(plan.stale)
    failed = write_back(survey)
    if failed:
        warnings.append(failed)
    return Removal(
        cache=cache.root,
        dry_run=False,
        freed=swept.freed,
        kept=plan.keep + swept.kept,
        untracked=kept_untracked(plan, (*swept.freed, *swept.kept)),
        errors=swept.errors,
        lock_held=swept.lock_held,
        unreadable=unreadable(survey, store),
        warnings=one_store_warning(warnings, store),
        note=plan.note,
        deleting=swept.deleting,
        live_untracked=plan.live_untracked,
        uv_own=plan.uv_own,
        blobs=len(swept.blobs),
        blob_bytes=sum(b.bytes for b in swept.blobs),
        envs=tuple(ProjectEnv(e.path, _why_dead(survey, e.path), e.bytes) for e in swept.envs),
        upper_bound=upper_bound(cache),
    )


def kept_untracked(plan: Plan, decided: Iterable[Decision]) -> int:
    """Untracked entries (`entry_states`' word) left in the cache: an untracked entry this
    run frees, or kept under another state after a re-check, is counted there instead, so
    each entry is counted once, as `status` counts it."""
    return plan.untracked - sum(d.untracked for d in decided)


def _why_dead(survey: Survey, env: str) -> str:
    scan = survey.marks.scans.get(env)
    return scan.detail if scan is not None else ""


def records_now(
    survey: Survey, scans: Mapping[str, EnvScan], read: Mapping[str, KnownEnv]
) -> list[RootRecord]:
    """After a sweep, what every living root of ours uses now, to record (with the refs
    of entries that left the cache some other way, `uv cache clean`, forgotten): envs
    plain uv changed since they were recorded, and roots found by discovery, uv's cached
    envs and tool envs, which are tracked from now on (so their deletion frees what only
    they used). Every fact recorded is taken from the env's path now (its mount, its
    identity, its site directories by their real paths), never copied from a record made
    through another path (a link that led to it then). `read`: our store's records as
    the sweep read them, under uv's lock (one rewritten since is newer, and stays)."""
    from uvrefs.envs import identity, mount_namespace, mount_point
    from uvrefs.hosts import shared_place

    found = []
    marks = survey.marks
    for path, root in survey.roots.envs.items():
        scan = scans.get(path)
        if scan is None or scan.state != "alive" or scan.reused or root.kind == "peer":
            continue
        record = root.record
        found.append(
            RootRecord(
                path=path,
                site_dirs=[os.path.realpath(s) for s in record.site_dirs] if record else [],
                mount=mount_point(Path(path)),
                command=record.command if record else f"collect ({root.kind})",
                uses=scan.uses,
                mntns=mount_namespace(),
                identity=identity(Path(path)),
                sources=list(scan.sources),
                projects=sorted({*root.links, *(record.projects if record else ())}),
                shared=shared_place(path),
                stamp=marks.prints.get(path) if scan is marks.scans.get(path) else None,
                taken=marks.taken.get(path),
                read=read.get(path),
            )
        )
    return found


def one_store_warning(warnings: list[str], store: RefsStore) -> tuple[str, ...]:
    """Each warning once, and a store that cannot be written once, however many writes
    failed (the first reason stands for them)."""
    prefix = f"the refs store {store.dir} cannot be written"
    first = next((w for w in warnings if w.startswith(prefix)), None)
    kept = [w for w in warnings if not w.startswith(prefix)] + ([first] if first else [])
    return tuple(dict.fromkeys(kept))


def survey_warnings(survey: Survey) -> list[str]:
    """What the user must hear about the store as read, once per command: files a newer
    uvrefs wrote (left as they are), and why nothing may be freed, if something says so."""
    found = []
    newer = survey.roots.newer
    if newer:
        found.append(
            f"{len(newer)} file{'s' * (len(newer) != 1)} of the refs store "
            f"{'were' if len(newer) != 1 else 'was'} written by a newer uvrefs (first: "
            f"{newer[0]}): left as they are, and what they hold is kept; upgrade uvrefs"
        )
    if survey.facts.blocked:
        found.append(f"nothing can be freed: {survey.facts.blocked}")
    if survey.returned:
        found.append(
            "this host had not been seen here for longer than the default --host-lease: other "
            "hosts may have freed what only its environments used (`uv sync` or reinstall "
            "them; a symlink-mode env breaks)"
        )
    return found


def dry_run_result(plan: Plan, survey: Survey, store: RefsStore) -> Removal:
    orphans = survey.blobs.orphans(again=False)  # those the planned entries free are in their sizes
    return Removal(
        cache=survey.index.cache.root,
        dry_run=True,
        freed=plan.free,
        kept=plan.keep,
        untracked=kept_untracked(plan, plan.free),
        unreadable=unreadable(survey, store),
        warnings=tuple(survey_warnings(survey)),
        note=plan.note,
        live_untracked=plan.live_untracked,
        uv_own=plan.uv_own,
        blobs=len(orphans),
        blob_bytes=sum(b.bytes for b in orphans) + survey.orphan_fans,
        envs=tuple(ProjectEnv(e, _why_dead(survey, e), _env_bytes(e)) for e in plan.free_envs),
        upper_bound=upper_bound(survey.index.cache),
    )


def upper_bound(cache: Cache) -> str | None:
    """Why what a collect frees of this cache is an upper bound, if it is."""
    from uvrefs.hosts import hides_link_counts

    fstype = hides_link_counts(str(cache.root))
    if fstype is None:
        return None
    return (
        f"{fstype} hides link counts: a file an env still links keeps its space, and only "
        "the file server knows; sizes freed are upper bounds"
    )


def _env_bytes(env: str) -> int:
    """What removing a project env alone frees now (its files' blocks whose only link it
    holds; files linked from archives free with those)."""
    tally = SizeTally()
    tally.add_tree(Path(env))
    return tally.freed


def unreadable(survey: Survey, store: RefsStore) -> tuple[str, ...]:
    """Refs files that cannot be read (not those a newer uvrefs wrote: said apart, once)."""
    newer = set(survey.roots.newer)
    return tuple(
        f"{path}: {why}"
        for e, why in sorted(survey.facts.corrupt.items())
        if (path := str(store.refs_path(e))) not in newer
    )
