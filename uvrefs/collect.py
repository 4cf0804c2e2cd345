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
from uvrefs.cache import POINTER_SIDECARS, TRASH_DIR, Cache, Pointer, SizeTally
from uvrefs.envs import ArchiveIndex, EnvScan, scan_env
from uvrefs.errors import StoreError
from uvrefs.formats import EntryRefs, EnvRecord, Referrer
from uvrefs.refs import CorruptRefs, RefsStore, host_id


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


@dataclass(frozen=True)
class Facts:
    """Everything the planner needs, read once: entries present, their refs (or why they
    could not be read), a scan of every env that a ref names, and uv's own entries."""

    host: str
    archives: frozenset[str]
    refs: Mapping[str, EntryRefs]
    corrupt: Mapping[str, str] = field(default_factory=dict)
    envs: Mapping[str, EnvScan] = field(default_factory=dict)
    uv_owned: frozenset[str] = frozenset()
    linked_elsewhere: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Plan:
    free: tuple[Decision, ...]
    keep: tuple[Decision, ...]
    untracked: int
    stale: tuple[str, ...]  # refs of entries no longer in the cache


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

    @property
    def bytes_freed(self) -> int:
        return sum(d.bytes for d in self.freed)


# ---------------------------------------------------------------- plan (pure)


def referrer_verdict(ref: Referrer, entry: str, facts: Facts) -> tuple[str, str]:
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

        def decide(is_free: bool, reason: str, refs: EntryRefs = refs) -> Decision:
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


# ---------------------------------------------------------------- mark (reads only)


@dataclass
class Survey:
    """Facts plus what the sweep needs to act on them (pointers, the archive index)."""

    facts: Facts
    pointers: dict[str, list[Pointer]]
    index: ArchiveIndex
    records: dict[str, EnvRecord]

    def scan(self, env: str) -> EnvScan:
        """Scan `env` now, with what its record adds (extra site dirs, its mount point)."""
        record = self.records.get(env)
        extra = [Path(s) for s in record.site_dirs] if record else []
        return scan_env(Path(env), self.index, extra, record.mount if record else None)


def gather_facts(cache: Cache, store: RefsStore) -> Survey:
    refs: dict[str, EntryRefs] = {}
    corrupt: dict[str, str] = {}
    for entry in store.entry_ids():
        try:
            loaded = store.load(entry)
        except CorruptRefs as exc:
            corrupt[entry] = str(exc)
            continue
        if loaded is not None:
            refs[entry] = loaded
    archives = list(cache.archives())
    index = ArchiveIndex(cache, archives)
    records = {r.path: r for r in store.env_records()}
    host = host_id()
    env_paths = {r.env for entry in refs.values() for r in entry.referrers if r.host == host}
    pointers = cache.pointers()
    uv_owned = frozenset(
        i for i, ps in pointers.items() if any(p.bucket == "environments" for p in ps)
    )
    survey = Survey(Facts(host, frozenset(a.id for a in archives), refs), pointers, index, records)
    envs = {env: survey.scan(env) for env in sorted(env_paths)}
    survey.facts = Facts(host, survey.facts.archives, refs, corrupt, envs, uv_owned)
    return survey


def measure(plan: Plan, cache: Cache, survey: Survey) -> Plan:
    """Size each planned entry (what deleting it really frees) and re-plan without those
    whose files are still hard-linked from outside the cache."""
    linked = set()
    sized: dict[str, int] = {}
    going = {d.entry for d in plan.free}
    for decision in plan.free:
        tally = SizeTally()
        for doomed in entry_paths(cache, decision.entry, survey.pointers, going):
            tally.add_tree(doomed.path)
        if tally.max_links > 1:
            linked.add(decision.entry)
        sized[decision.entry] = tally.freed
    if linked:
        facts = replace(survey.facts, linked_elsewhere=frozenset(linked))
        plan = plan_collection(facts)
    free = tuple(replace(d, bytes=sized.get(d.entry, 0)) for d in plan.free)
    return replace(plan, free=free)


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
    its pointers go first, the archive is renamed out of the bucket (so uv never trusts a
    half-deleted one) and deleted, and its refs go last. A crash at any point leaves
    either a live entry or an unreferenced archive, never a pointer to nothing."""
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
            why_keep = recheck(decision.entry, cache, store, survey, rescans)
            if why_keep:
                kept.append(replace(decision, free=False, bytes=0, reason=why_keep))
            else:
                going.append(decision)
        going_ids = {d.entry for d in going}
        for decision in going:
            try:
                doomed = entry_paths(cache, decision.entry, survey.pointers, going_ids)
                remove_entry(cache, decision.entry, doomed)
            except OSError as exc:
                errors.append(f"{decision.entry}: {exc.strerror or exc} ({exc.filename})")
                continue
            CrashHook.step()
            try:
                store.delete(decision.entry)
            except OSError as exc:  # the entry is gone all the same; its refs are now stale
                warnings.add(_store_warning(store, exc))
            freed.append(decision)
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
    )


def _store_warning(store: RefsStore, exc: Exception) -> str:
    why = exc.strerror if isinstance(exc, OSError) else str(exc)
    return (
        f"the refs store {store.dir} cannot be written ({why}): freed entries keep stale "
        "refs until it can, which is harmless; free space or fix its permissions"
    )


def recheck(
    entry: str, cache: Cache, store: RefsStore, survey: Survey, rescans: dict[str, EnvScan]
) -> str | None:
    """Why `entry` must now be kept, or None if it is still dead. Reads the refs afresh:
    an install that finished after planning has written them before releasing its lock."""
    try:
        refs = store.load(entry)
    except CorruptRefs as exc:
        return f"refs unreadable: {exc}"
    if refs is None:
        return "refs vanished since planning"
    for ref in refs.referrers:
        if ref.env not in rescans:
            rescans[ref.env] = survey.scan(ref.env)
    facts = replace(survey.facts, envs=rescans, refs={entry: refs})
    verdicts = [referrer_verdict(r, entry, facts) for r in refs.referrers]
    for verdict, why in verdicts:
        if verdict != "dead":
            return why if verdict == "holds" else f"uncertain: {why}"
    path = cache.archive_path(entry)
    if path is not None and refs.dist and refs.version:
        metadata = path / f"{refs.dist}-{refs.version}.dist-info" / "METADATA"
        try:
            if os.lstat(metadata).st_nlink > 1:
                return "files still hard-linked elsewhere (an untracked env?)"
        except OSError:
            pass
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


def remove_entry(cache: Cache, entry: str, doomed: list[Doomed]) -> None:
    """Remove an entry's paths in order; trees are renamed into the trash, then deleted."""
    for number, item in enumerate(doomed):
        CrashHook.step()
        if not os.path.lexists(item.path):
            continue
        if item.kind == "tree":
            _delete_via_trash(cache, item.path, f"{entry}-{number}")
        elif item.kind == "file" or _points_to(item.path, entry):
            item.path.unlink()


def _points_to(link: Path, entry: str) -> bool:
    try:
        return os.path.basename(os.path.normpath(os.readlink(link))) == entry
    except OSError:
        return False


def _delete_via_trash(cache: Cache, path: Path, name: str) -> None:
    """Rename out of uv's sight first (atomic, same filesystem), then delete."""
    trash = cache.root / TRASH_DIR
    trash.mkdir(exist_ok=True)
    moved = trash / name
    if os.path.lexists(moved):
        shutil.rmtree(moved)
    os.rename(path, moved)
    CrashHook.step()
    shutil.rmtree(moved)


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
            if scan.state == "alive":
                store.record(scan.path, scan.uses, "collect", survey.index.cache.describe)
        for entry in plan.stale:
            store.delete(entry)


def dry_run_result(plan: Plan, cache: Cache, survey: Survey, store: RefsStore) -> Removal:
    return Removal(
        cache.root, True, plan.free, plan.keep, plan.untracked, unreadable=unreadable(survey, store)
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
) -> Removal:
    """Mark, plan, measure, then sweep (or, for a dry run, report the plan)."""
    survey = gather_facts(cache, store)
    plan = measure(plan_collection(survey.facts), cache, survey)
    if dry_run:
        return dry_run_result(plan, cache, survey, store)
    return apply_plan(plan, cache, store, survey, timeout=timeout, on_wait=on_wait)
