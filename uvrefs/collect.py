"""Mark, plan, sweep. `gather_facts` reads the cache, the refs and every referencing env;
`plan_collection` is a pure function of those facts; `apply_plan` is the only code that
deletes, under uv's cache lock held exclusively, re-checking each entry right before it
goes (as Nix re-checks its temporary roots)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from uvrefs import uv
from uvrefs.cache import (
    POINTER_SIDECARS,
    TRASH_DIR,
    Cache,
    Pointer,
    SizeTally,
    delete_tree,
    read_dist_infos,
    split_dist_info,
)
from uvrefs.envs import ArchiveIndex, EnvScan, How, scan_env
from uvrefs.errors import StoreError
from uvrefs.refs import ArchiveSize, CorruptRefs, KnownEnv, Ref, Refs, RefsStore, host_id
from uvrefs.stamps import read_stamp
from uvrefs.targets import Target, fingerprint


@dataclass(frozen=True)
class Decision:
    """What happens to one tracked entry, and why."""

    entry: str
    dist: str | None
    version: str | None
    tags: tuple[str, ...]
    free: bool
    reason: str
    bytes: int = 0
    untracked: bool = False  # freed under --untracked/--budget: no refs to re-read


@dataclass(frozen=True)
class Policy:
    """What a user asked collect to hold back or add: `min_age` seconds an entry must have
    been dead (or, untracked, unpacked), at most `max_freed` bytes, packages to `keep`,
    `untracked` entries too, or a `budget` for the whole cache."""

    min_age: float = 0.0
    max_freed: int | None = None
    keep: frozenset[str] = frozenset()
    untracked: bool = False
    budget: int | None = None

    @property
    def needs_sizes(self) -> bool:
        """Whether what to free depends on sizes (a cap, a budget, untracked entries)."""
        return self.untracked or self.budget is not None or self.max_freed is not None


@dataclass(frozen=True)
class Facts:
    """Everything the planner needs, read once: entries present, their refs (or why they
    could not be read), a scan of every env that a ref names, and uv's own entries."""

    host: str
    archives: frozenset[str]
    refs: Mapping[str, Refs]
    corrupt: Mapping[str, str] = field(default_factory=dict)
    envs: Mapping[str, EnvScan] = field(default_factory=dict)
    uv_owned: frozenset[str] = frozenset()
    linked_elsewhere: frozenset[str] = frozenset()
    # Measured for the policies: when each entry was first seen dead (by a collect), when
    # each archive was unpacked, entry sizes, names of untracked entries, the cache total.
    now: float = 0.0
    dead_since: Mapping[str, float] = field(default_factory=dict)
    unpacked_at: Mapping[str, float] = field(default_factory=dict)
    sizes: Mapping[str, int] = field(default_factory=dict)
    names: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)
    total: int = 0


@dataclass(frozen=True)
class Plan:
    free: tuple[Decision, ...]
    keep: tuple[Decision, ...]
    untracked: int
    stale: tuple[str, ...]  # refs of entries no longer in the cache
    note: str | None = None  # e.g. a budget that cannot be met
    dead: frozenset[str] = frozenset()  # every entry judged dead, before any policy


@dataclass(frozen=True)
class Removal:
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
    deleting: float = 0.0  # of lock_held: deleting the trash (the rest is checks and renames)

    @property
    def bytes_freed(self) -> int:
        return sum(d.bytes for d in self.freed)


# ---------------------------------------------------------------- plan (pure)


def referrer_verdict(ref: Ref, entry: str, facts: Facts) -> tuple[str, str]:
    """("holds" | "dead" | "unsure", why) for one reference to `entry`."""
    if ref.host != facts.host:
        return "unsure", f"recorded on another host ({ref.host[:12]}) for {ref.env}"
    scan = facts.envs.get(ref.env)
    if scan is None:
        return "unsure", f"{ref.env} was not scanned"
    if scan.state == "unknown":
        return "unsure", f"{ref.env} {scan.detail}"
    if scan.state == "gone":
        return "dead", f"{ref.env} no longer exists"
    if ref.how == "build":
        return "holds", f"built for {ref.env}"
    if entry in scan.uses:
        return "holds", f"used by {ref.env}"
    return "dead", f"{ref.env} no longer uses it"


def plan_collection(facts: Facts) -> Plan:
    """Free an entry only when it had referrers and none holds now; keep everything
    untracked, unreadable, uncertain, uv's own, or still hard-linked from elsewhere."""
    free: list[Decision] = []
    keep: list[Decision] = []
    untracked = 0
    for entry in sorted(facts.archives):
        refs = facts.refs.get(entry)
        if entry in facts.corrupt:
            keep.append(
                Decision(entry, None, None, (), False, f"refs unreadable: {facts.corrupt[entry]}")
            )
            continue
        if refs is None:
            untracked += 1
            continue

        def decide(is_free: bool, reason: str, refs: Refs = refs) -> Decision:
            return Decision(refs.entry, refs.dist, refs.version, tuple(refs.tags), is_free, reason)

        verdicts = [referrer_verdict(r, entry, facts) for r in refs.referrers]
        holding = [why for verdict, why in verdicts if verdict == "holds"]
        unsure = [why for verdict, why in verdicts if verdict == "unsure"]
        if entry in facts.uv_owned:
            keep.append(decide(False, "reached from uv's cached environments"))
        elif holding:
            more = f" (+{len(holding) - 1} more)" if len(holding) > 1 else ""
            keep.append(decide(False, holding[0] + more))
        elif unsure:
            keep.append(decide(False, "uncertain: " + unsure[0]))
        elif entry in facts.linked_elsewhere:
            keep.append(decide(False, "files still hard-linked elsewhere (an untracked env?)"))
        else:
            dead = [why for verdict, why in verdicts if verdict == "dead"]
            free.append(decide(True, dead[0] if dead else "no environment uses it any more"))
    stale = tuple(sorted(set(facts.refs) - facts.archives))
    return Plan(tuple(free), tuple(keep), untracked, stale)


def untracked_ids(facts: Facts) -> list[str]:
    """Untracked entries, oldest unpacked first."""
    ids = [
        a
        for a in facts.archives
        if a not in facts.refs and a not in facts.corrupt and a not in facts.uv_owned
    ]
    return sorted(ids, key=lambda a: (facts.unpacked_at.get(a, facts.now), a))


def apply_policy(plan: Plan, facts: Facts, policy: Policy) -> Plan:
    """Narrow (or, for untracked entries, widen) a plan as the user asked. Pure; never adds
    an entry a living env uses: only dead entries and untracked ones no file links to."""
    keep = list(plan.keep)
    note = None

    def held(d: Decision, why: str) -> None:
        keep.append(replace(d, free=False, bytes=0, reason=why))

    def age(seconds: float) -> str:
        return f"{seconds / 86400:.1f} days" if seconds >= 86400 else f"{seconds / 3600:.1f} h"

    dead: list[Decision] = []
    for d in sorted(plan.free, key=lambda d: (facts.dead_since.get(d.entry, facts.now), d.entry)):
        dead_for = facts.now - facts.dead_since.get(d.entry, facts.now)
        if normal_name(d.dist) in policy.keep:
            held(d, "kept by --keep")
        elif dead_for < policy.min_age:
            held(d, f"dead for {age(dead_for)}, less than --min-age")
        else:
            dead.append(d)
    extra: list[Decision] = []
    if policy.untracked or policy.budget is not None:
        for entry in untracked_ids(facts):
            dist, version = facts.names.get(entry, (None, None))
            unpacked = facts.now - facts.unpacked_at.get(entry, facts.now)
            if (
                entry in facts.linked_elsewhere
                or normal_name(dist) in policy.keep
                or unpacked < policy.min_age
            ):
                continue
            extra.append(
                Decision(
                    entry,
                    dist,
                    version,
                    (),
                    True,
                    f"untracked, no installed file links it, unpacked {age(unpacked)} ago",
                    untracked=True,
                )
            )
    chosen = dead + extra
    if policy.budget is not None:
        over = facts.total - policy.budget
        within: list[Decision] = []
        for d in chosen:
            if over <= 0:
                if not d.untracked:
                    held(d, "not needed to meet --budget")
                continue
            within.append(d)
            over -= facts.sizes.get(d.entry, 0)
        chosen = within
        if over > 0:
            note = (
                f"--budget cannot be met without touching live entries: the cache stays "
                f"{over} bytes over it"
            )
    elif not policy.untracked:
        chosen = dead
    if policy.max_freed is not None:
        total, within = 0, []
        for d in chosen:  # oldest first; an entry that does not fit is skipped, not the rest
            size = facts.sizes.get(d.entry, 0)
            if total + size > policy.max_freed:
                if not d.untracked:
                    held(d, "over --max-freed")
            else:
                total += size
                within.append(d)
        chosen = within
    dead_ids = frozenset(d.entry for d in plan.free)
    return replace(plan, free=tuple(chosen), keep=tuple(keep), note=note, dead=dead_ids)


def normal_name(name: str | None) -> str:
    """A package name as PEP 503 compares them (`-`, `_` and `.` alike, any case)."""
    return (name or "").lower().replace("-", "_").replace(".", "_")


# ---------------------------------------------------------------- mark (reads only)


@dataclass
class Survey:
    """Facts plus what the sweep needs to act on them (pointers, the archive index)."""

    facts: Facts
    pointers: dict[str, list[Pointer]]
    index: ArchiveIndex
    records: dict[str, KnownEnv]

    def scan(self, env: str) -> EnvScan:
        """Scan `env` now, with what its record adds (extra site dirs, its mount point)."""
        record = self.records.get(env)
        extra = [Path(s) for s in record.site_dirs] if record else []
        return scan_env(Path(env), self.index, extra, record.mount if record else None)

    def scan_or_reuse(self, env: str, store: RefsStore, recorded: Mapping[str, How]) -> EnvScan:
        """For planning: an env whose fingerprint still matches the stamp of its last
        record uses what that record says (`recorded`: entry -> how, from the refs), so
        it is not scanned again. The sweep re-scans, under the lock, every env it relies
        on, so a stale record can only add candidates that are then kept, never lose one."""
        record = self.records.get(env)
        if record is None or record.host != self.facts.host:
            return self.scan(env)
        current = fingerprint(Target(env, record.site_dirs))
        if read_stamp(store.stamp_path(env)) != current or not os.path.isdir(env):
            return self.scan(env)
        entries = set(record.entries)
        uses = {e: how for e, how in recorded.items() if e in entries}
        return EnvScan(Path(env), "alive", "", uses, reused=True)


Progress = Callable[[str, int, int], None]  # (what, done, total): long scans report here


def gather_facts(
    cache: Cache, store: RefsStore, progress: Progress | None = None, *, reuse: bool = False
) -> Survey:
    """Read the refs, the cache and every referencing env. With `reuse`, envs unchanged
    since their last record are not scanned again (`Survey.scan_or_reuse`)."""
    refs: dict[str, Refs] = {}
    corrupt: dict[str, str] = {}
    for entry in store.entry_ids():
        try:
            loaded = store.load(entry)
        except CorruptRefs as exc:
            corrupt[entry] = str(exc)
            continue
        if loaded is not None:
            refs[entry] = loaded
    archives = frozenset(cache.archive_ids())
    index = ArchiveIndex(cache)
    records = {r.path: r for r in store.env_records()}
    host = host_id()
    recorded: dict[str, dict[str, How]] = {}
    for entry, entry_refs in refs.items():
        for r in entry_refs.referrers:
            if r.host == host:
                recorded.setdefault(r.env, {})[entry] = r.how  # type: ignore[assignment]
    pointers = cache.pointers()
    uv_owned = frozenset(
        i for i, ps in pointers.items() if any(p.bucket == "environments" for p in ps)
    )
    survey = Survey(Facts(host, archives, refs), pointers, index, records)
    envs = {}
    for number, env in enumerate(sorted(recorded)):
        if progress:
            progress("scanning environments", number, len(recorded))
        envs[env] = survey.scan_or_reuse(env, store, recorded[env]) if reuse else survey.scan(env)
    survey.facts = Facts(host, survey.facts.archives, refs, corrupt, envs, uv_owned)
    return survey


def measure(
    cache: Cache,
    survey: Survey,
    store: RefsStore,
    entries: list[str],
    going: set[str],
    progress: Progress | None = None,
) -> tuple[dict[str, int], frozenset[str]]:
    """What deleting each entry frees, for planning and dry runs, and which entries still
    have files hard-linked from outside the cache.

    uv never changes an archive once written, so each archive tree is walked once and its
    size remembered (keyed by the directory's inode and mtime); pointers, sidecars and sdist
    revisions are walked every time. A remembered archive counts as freed whole unless its
    METADATA has another link (uv links every file of an install alike). The sweep measures
    again, exactly, as it deletes: that is the figure a collect reports."""
    known = store.archive_sizes()
    remembered = dict(known)
    sizes: dict[str, int] = {}
    linked = set()
    for number, entry in enumerate(entries):
        if progress:
            progress("sizing entries", number, len(entries))
        tally = SizeTally()
        archive_bytes, archive_linked = 0, False
        for doomed in entry_paths(cache, entry, survey.pointers, going):
            if doomed.kind == "tree" and doomed.path.parent in cache.archive_dirs:
                archive_bytes, archive_linked = _archive_size(entry, doomed.path, remembered)
            else:
                tally.add_tree(doomed.path)
        if tally.max_links > 1 or archive_linked:
            linked.add(entry)
        sizes[entry] = tally.freed + archive_bytes
    if remembered != known:
        try:
            store.save_archive_sizes(
                {e: v for e, v in remembered.items() if e in survey.facts.archives}
            )
        except (OSError, StoreError):
            pass  # only a cache: the next run walks again
    return sizes, frozenset(linked)


def _archive_size(entry: str, path: Path, remembered: dict[str, ArchiveSize]) -> tuple[int, bool]:
    """An archive tree's size and whether a file in it has a link outside: remembered
    (then its METADATA link counts stand for the files'), or walked now."""
    try:
        st = os.lstat(path)
    except OSError:
        return 0, False
    known = remembered.get(entry)
    if known is not None and known[:2] == (st.st_ino, st.st_mtime_ns):
        return known[2], _metadata_linked(path, known[3])
    walked = SizeTally()
    walked.add_tree(path)
    remembered[entry] = (st.st_ino, st.st_mtime_ns, walked.occupied, read_dist_infos(str(path)))
    return walked.occupied, walked.max_links > 1


def _metadata_linked(archive: Path, dist_infos: tuple[str, ...]) -> bool:
    """uv links METADATA in every hard-linked install, so its link count stands for the
    archive's."""
    for info in dist_infos:
        try:
            if os.lstat(archive / info / "METADATA").st_nlink > 1:
                return True
        except OSError:
            continue
    return False


def plan_with_policy(
    cache: Cache,
    store: RefsStore,
    survey: Survey,
    policy: Policy,
    progress: Progress | None = None,
    *,
    sized: bool = True,
) -> Plan:
    """Plan, measure the candidates, then plan again with what was measured and the policy.

    Without `sized` (a sweep whose policy needs no sizes), candidates are not walked: the
    sweep measures what it frees as it deletes, and only their link counts are read."""
    facts = survey.facts
    base = plan_collection(facts)
    wants_untracked = policy.untracked or policy.budget is not None
    candidates = [d.entry for d in base.free] + (untracked_ids(facts) if wants_untracked else [])
    if sized:
        sizes, linked = measure(cache, survey, store, candidates, set(candidates), progress)
    else:
        sizes = {}
        linked = frozenset(e for e in candidates if _linked_elsewhere(cache, e))
    names: dict[str, tuple[str | None, str | None]] = {}
    unpacked: dict[str, float] = {}
    for archive in survey.index.cache.archives() if wants_untracked else []:
        info = archive.dist_infos[0] if archive.dist_infos else None
        names[archive.id] = split_dist_info(info) if info else (None, None)
        unpacked[archive.id] = archive.path.lstat().st_mtime
    total = SizeTally()
    if policy.budget is not None:
        total.add_tree(cache.root)
    facts = replace(
        facts,
        linked_elsewhere=linked,
        sizes=sizes,
        names=names,
        unpacked_at=unpacked,
        now=time.time(),
        dead_since=store.dead_since(),
        total=total.occupied,
    )
    survey.facts = facts
    plan = apply_policy(plan_collection(facts) if linked else base, facts, policy)
    going = {d.entry for d in plan.free}
    if sized and going != set(candidates):  # an sdist revision goes only with its last wheel
        sizes.update(measure(cache, survey, store, sorted(going), going)[0])
    return replace(plan, free=tuple(replace(d, bytes=sizes.get(d.entry, 0)) for d in plan.free))


# ---------------------------------------------------------------- sweep (the only deleter)


def apply_plan(
    plan: Plan,
    cache: Cache,
    store: RefsStore,
    survey: Survey,
    *,
    timeout: float,
    on_wait: Callable[[], None] | None = None,
) -> Removal:
    """Delete the planned entries under uv's exclusive cache lock.

    Each entry is re-checked under the lock (refs re-read, referrers re-scanned), then:
    its pointers go first and the archive is renamed out of the bucket into the trash (so
    uv never trusts a half-deleted one); then the trash is deleted, several trees at once,
    measuring what goes; refs go last. A crash at any point leaves either a live entry or
    an unreferenced archive (or trash, emptied by the next run), never a pointer to
    nothing."""
    freed: list[Decision] = []
    kept: list[Decision] = list(plan.keep)
    errors: list[str] = []
    warnings: set[str] = set()
    with uv.CacheLock(cache.root, exclusive=True, timeout=timeout, on_wait=on_wait):
        started = time.monotonic()
        empty_trash(cache)
        rescans: dict[str, EnvScan] = {}
        going: list[Decision] = []
        for decision in plan.free:
            why_keep = recheck(decision.entry, cache, store, survey, rescans, decision.untracked)
            if why_keep:
                kept.append(replace(decision, free=False, bytes=0, reason=why_keep))
            else:
                going.append(decision)
        going_ids = {d.entry for d in going}
        moved: list[tuple[Decision, Moved]] = []
        for decision in going:
            try:
                doomed = entry_paths(cache, decision.entry, survey.pointers, going_ids)
                moved.append((decision, unlink_entry(cache, decision.entry, doomed)))
            except OSError as exc:
                errors.append(f"{decision.entry}: {exc.strerror or exc} ({exc.filename})")
        deleting = time.monotonic()
        failures = delete_moved([m for _, m in moved])
        deleting = time.monotonic() - deleting
        for (decision, entry_moved), failure in zip(moved, failures, strict=True):
            if failure is not None:
                why = failure.strerror or failure
                errors.append(f"{decision.entry}: {why} ({failure.filename})")
                continue
            CrashHook.step()
            try:
                store.delete(decision.entry)
            except OSError as exc:  # the entry is gone all the same; its refs are now stale
                warnings.add(_store_warning(store, exc))
            freed.append(replace(decision, bytes=entry_moved.tally.freed))
        empty_trash(cache)
        held = time.monotonic() - started
    try:
        tidy_refs(plan, store, survey)
    except (OSError, StoreError) as exc:
        warnings.add(_store_warning(store, exc))
    return Removal(
        cache.root,
        False,
        tuple(freed),
        tuple(kept),
        plan.untracked,
        tuple(errors),
        held,
        unreadable(survey, store),
        tuple(sorted(warnings)),
        plan.note,
        deleting,
    )


def _store_warning(store: RefsStore, exc: Exception) -> str:
    why = exc.strerror if isinstance(exc, OSError) else str(exc)
    return (
        f"the refs store {store.dir} cannot be written ({why}): freed entries keep stale "
        "refs until it can, which is harmless; free space or fix its permissions"
    )


def recheck(
    entry: str,
    cache: Cache,
    store: RefsStore,
    survey: Survey,
    rescans: dict[str, EnvScan],
    untracked: bool = False,
) -> str | None:
    """Why `entry` must now be kept, or None if it is still dead. Reads the refs afresh:
    an install that finished after planning has written them before releasing its lock."""
    try:
        refs = store.load(entry)
    except CorruptRefs as exc:
        return f"refs unreadable: {exc}"
    if refs is None and not untracked:
        return "refs vanished since planning"
    if refs is None:
        return _linked_elsewhere(cache, entry)
    for ref in refs.referrers:
        if ref.env not in rescans:
            rescans[ref.env] = survey.scan(ref.env)
    facts = replace(survey.facts, envs=rescans, refs={entry: refs})
    verdicts = [referrer_verdict(r, entry, facts) for r in refs.referrers]
    for verdict, why in verdicts:
        if verdict != "dead":
            return why if verdict == "holds" else f"uncertain: {why}"
    return _linked_elsewhere(cache, entry)


def _linked_elsewhere(cache: Cache, entry: str) -> str | None:
    """Under the lock, a cheap re-check of outside links (see `_metadata_linked`)."""
    path = cache.archive_path(entry)
    if path is not None and _metadata_linked(path, read_dist_infos(str(path))):
        return "files still hard-linked elsewhere (an untracked env?)"
    return None


@dataclass(frozen=True)
class Doomed:
    """One path that goes with an entry: a plain file, a link that must still point at the
    entry when it is removed, or a tree renamed out of uv's sight before it is deleted."""

    path: Path
    kind: Literal["file", "link", "tree"]


def entry_paths(
    cache: Cache, entry: str, pointers: Mapping[str, list[Pointer]], going: set[str]
) -> list[Doomed]:
    """Everything that goes with an entry, in crash-safe order. Per pointer, its sidecars
    first and the link last: a leftover link alone is a cache miss for uv, while a leftover
    `.rev`/`.http` names the archive and would be trusted. A built wheel takes its sdist
    revision (source tree, `.whl`, metadata) when every wheel built there goes, else just
    its own `.whl`. The archive comes last, so no pointer ever outlives it."""
    doomed: list[Doomed] = []
    for pointer in pointers.get(entry, []):
        if not cache.contains(pointer.path):
            continue
        if pointer.bucket == "sdists":
            revision = pointer.path.parent
            built_here = {
                p.archive_id for ps in pointers.values() for p in ps if p.path.parent == revision
            }
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
        # A symlink in the archive bucket is removed itself, never followed out of the cache.
        doomed.append(Doomed(archive, "file" if archive.is_symlink() else "tree"))
    return doomed


DELETE_THREADS = 4  # on 2 cores: 1 thread 5.0 s, 2 threads 3.0 s, 4 threads 2.3 s (100k files)


class CrashHook:
    """For the crash tests: with `UVREFS_TEST_KILL_AT=N` set, the collector SIGKILLs itself
    at its N-th deletion step, so every step can be proven safe to die at."""

    steps = 0

    @classmethod
    def step(cls) -> None:
        kill_at = os.environ.get("UVREFS_TEST_KILL_AT")
        if kill_at:
            cls.steps += 1
            if cls.steps == int(kill_at):
                os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Moved:
    """An entry taken out of uv's sight: its pointers unlinked, its trees renamed into the
    trash (still to be deleted), and what has been measured freed so far."""

    trees: list[Path]
    tally: SizeTally


def unlink_entry(cache: Cache, entry: str, doomed: list[Doomed]) -> Moved:
    """Remove an entry's paths in crash-safe order: files and links are unlinked, trees
    renamed into the trash. Everything removed is measured as it goes."""
    moved = Moved([], SizeTally())
    for number, item in enumerate(doomed):
        CrashHook.step()
        if not os.path.lexists(item.path):
            continue
        if item.kind == "tree":
            moved.trees.append(_move_to_trash(cache, item.path, f"{entry}-{number}"))
        elif item.kind == "file" or _points_to(item.path, entry):
            st = os.lstat(item.path)
            item.path.unlink()
            moved.tally.add(st)
    return moved


def delete_moved(moved: list[Moved]) -> list[OSError | None]:
    """Delete the trees in the trash, measuring each, several at a time: unlinking is the
    cost of a sweep, and the kernel overlaps it across threads (see docs/benchmarks.md).
    Order no longer matters here: nothing in the trash is reachable by uv."""
    from concurrent.futures import ThreadPoolExecutor

    def delete(item: Moved) -> OSError | None:
        try:
            for tree in item.trees:
                delete_tree(tree, item.tally)
                CrashHook.step()
        except OSError as exc:
            return exc
        return None

    if sum(len(m.trees) for m in moved) < 2:
        return [delete(m) for m in moved]
    with ThreadPoolExecutor(max_workers=DELETE_THREADS) as pool:
        return list(pool.map(delete, moved))


def _points_to(link: Path, entry: str) -> bool:
    try:
        return os.path.basename(os.path.normpath(os.readlink(link))) == entry
    except OSError:
        return False


def _move_to_trash(cache: Cache, path: Path, name: str) -> Path:
    """Rename out of uv's sight (atomic, same filesystem); the caller deletes it."""
    trash = cache.root / TRASH_DIR
    trash.mkdir(exist_ok=True)
    moved = trash / name
    if os.path.lexists(moved):
        shutil.rmtree(moved)
    os.rename(path, moved)
    return moved


def empty_trash(cache: Cache) -> None:
    """Finish deletions a killed collector left in the trash, and remove the trash."""
    trash = cache.root / TRASH_DIR
    if trash.is_symlink():
        trash.unlink()
    elif trash.is_dir():
        shutil.rmtree(trash)


def tidy_refs(plan: Plan, store: RefsStore, survey: Survey) -> None:
    """After a sweep: forget refs of entries that left the cache some other way (uv cache
    clean), and add the uses of living envs that plain uv changed since they were recorded.

    Dead referrers are left in place on purpose: this runs without uv's lock, so an install
    may have made one live again since it was judged; collect re-judges them every time."""
    facts = survey.facts
    with store.locked():
        for scan in facts.envs.values():
            if scan.state == "alive" and not scan.reused:
                store.record(scan.path, scan.uses, "collect", survey.index.cache.describe)
        for entry in plan.stale:
            store.delete(entry)


def dry_run_result(plan: Plan, cache: Cache, survey: Survey, store: RefsStore) -> Removal:
    return Removal(
        cache.root,
        True,
        plan.free,
        plan.keep,
        plan.untracked,
        unreadable=unreadable(survey, store),
        note=plan.note,
    )


def unreadable(survey: Survey, store: RefsStore) -> tuple[str, ...]:
    return tuple(f"{store.refs_path(e)}: {why}" for e, why in sorted(survey.facts.corrupt.items()))


def collect(
    cache: Cache,
    store: RefsStore,
    *,
    dry_run: bool,
    timeout: float,
    on_wait: Callable[[], None] | None = None,
    policy: Policy = Policy(),  # frozen, so sharing the default is safe
    progress: Progress | None = None,
) -> Removal:
    """Mark, plan, measure, then sweep (or, for a dry run, report the plan)."""
    survey = gather_facts(cache, store, progress, reuse=True)
    plan = plan_with_policy(
        cache, store, survey, policy, progress, sized=dry_run or policy.needs_sizes
    )
    if dry_run:
        return dry_run_result(plan, cache, survey, store)
    try:
        with store.locked():
            store.save_dead_since(set(plan.dead), survey.facts.now)
    except (OSError, StoreError):
        pass  # only --min-age needs it, and it then waits longer: keeping is safe
    return apply_plan(plan, cache, store, survey, timeout=timeout, on_wait=on_wait)
