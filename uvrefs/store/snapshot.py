"""One store as a collect (or `status`, `envs`, `why`, `hosts`) sees it: read once, at the
start, into a value (`Snapshot.take`), and what the command learned, written back once, at
the end, under the store's lock (`Changes.write`). Between the two, roots, mark and plan
are functions of the snapshot and the filesystem: nothing they decide depends on when in
the run a store file was read.

Two writes stay out of the one at the end, both for a reason of their own: the sweep's,
under uv's lock, of what it must record as it deletes (the refs of what it freed, the
referrers it judged gone); and this host's lease and registration, renewed at the start
(`hosts.renew`, `registry.register_store`), since other hosts judge from them whether this
one is alive, and the lease's clock is what the run judges leases by."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from uvrefs.errors import StoreError
from uvrefs.store.refs import KnownEnv, NewerFile, RefsStore, Settings, StoreView
from uvrefs.store.stamps import env_key, read_stamp_taken
from uvrefs.tuples import NamedTuple

if TYPE_CHECKING:
    from uvrefs.envs import How
    from uvrefs.footprints import Footprint


class Snapshot(NamedTuple):
    """A store as read at the start of a command: its refs, records and memories
    (`view`, with the settings this process `seen` merged in), the stamps of this host's
    records, the archive sizes it remembers and when entries were first seen dead."""

    store: RefsStore
    view: StoreView
    seen: Settings
    # env -> its fingerprint at its last record (this host's) and when it was taken
    stamps: dict[str, tuple[str, int]]
    sizes: dict[str, Footprint]
    dead_since: dict[str, float]

    @classmethod
    def take(cls, store: RefsStore, host: str, seen: Settings | None = None) -> Snapshot:
        """Read `store` whole (`read_view`), with `seen` (uv's settings as this process
        sees them) merged into what it remembers.

        The stamps are read before the records: a recording writes its record, then its
        stamp, so a record read after its stamp is never older than that stamp. (Read the
        other way round, a recording in between pairs the old record with the new stamp,
        which the env's fingerprint matches: the old record, without what was just
        installed, would be trusted.)"""
        seen = seen if seen is not None else Settings()
        early = _stamps(store)
        view = read_view(store, seen)
        stamps = {}
        for path, record in view.records.items():
            if record.host == host:
                stamp = early.get(env_key(path))
                if stamp is not None:
                    stamps[path] = stamp
        return cls(store, view, seen, stamps, store.archive_sizes(), store.dead_since())


def _stamps(store: RefsStore) -> dict[str, tuple[str, int]]:
    """Every stamp in the store, with when it was taken, by env key (`stamps.env_key`)."""
    try:
        names = os.listdir(store.envs_dir)
    except OSError:
        return {}
    found = {}
    for name in names:
        key, dot, rest = name.partition(".")
        if dot and rest == "stamp":
            stamp = read_stamp_taken(str(store.envs_dir / name))
            if stamp is not None:
                found[key] = stamp
    return found


def read_view(store: RefsStore, seen: Settings, previous: StoreView | None = None) -> StoreView:
    """`store.read(previous)`, empty for a store nothing was recorded in yet, with `seen`
    merged into its settings (as `Changes.write` will record them): a run judges by the
    same settings at planning and under uv's lock."""
    try:
        view = store.read(previous)
    except FileNotFoundError:  # nothing recorded yet
        view = StoreView(store, time.time_ns())
    if seen != Settings():
        view.settings = view.settings.merge(seen, time.time())
    return view


class RootRecord(NamedTuple):
    """An env record (schema.EnvRecord) and its referrers, as a collect writes them for a
    living root: what it uses now, from a scan of its path now."""

    path: str
    site_dirs: list[str]
    mount: str | None
    command: str
    uses: Mapping[str, How]
    mntns: str | None
    identity: tuple[int, int] | None
    sources: list[str]
    projects: list[tuple[str, str | None]]
    shared: tuple[str, str, str] | None
    stamp: str | None  # its fingerprint, when the scan is the one that fingerprint goes with
    taken: int | None  # when that fingerprint was taken (`time.time_ns()`)
    # The env's record as the command last read it: one found changed at the write-back
    # was written by a recording meanwhile, newer than this scan, and stays.
    read: KnownEnv | None


class Restamp(NamedTuple):
    """A stamp to take again (`mark.restamps`): `print` was taken at `taken` (ns), before a
    scan that found what `read`, the env's record as the command read it, lists. Written
    only while the record is still that one (a recording since took its own stamp)."""

    path: str
    print: str
    taken: int
    read: KnownEnv


class Changes:
    """What a command writes back to its store at the end, in one hold of the store's
    lock: each part is only a memory (a failed write costs a later run a walk or a wait,
    never a wrong verdict), except the records, whose failure is said (`write`)."""

    def __init__(
        self,
        seen: Settings | None = None,
        base: Snapshot | None = None,
        describe: Callable[[str], tuple[str | None, str | None, list[str]]] | None = None,
    ) -> None:
        self.seen = seen  # uv's settings this process saw: merged into the file
        self.peers: list[str] | None = None  # the peer stores found, when changed
        self.holders: list[str] | None = None  # the holders searched, when changed
        self.sizes: dict[str, Footprint] | None = None  # archive footprints, when any was walked
        self.dead: set[str] | None = None  # entries dead now (first seen dead now: stamped `now`)
        self.now: float = 0.0
        # What the store said when the command read it (`Snapshot.take`), for the memories
        # others may change meanwhile: peers and holders another command added since are kept,
        # and dead-since stamps rewritten since (by a collect that judged later) stand.
        self.base = base
        self.records: list[RootRecord] = []
        self.stamps: list[Restamp] = []
        # entries gone from the cache: refs go
        self.stale: list[str] = []
        self.describe = describe

    def write(self, store: RefsStore) -> OSError | StoreError | None:
        """Write everything, the store locked once. Why the records could not be written,
        if they could not (the memories fail quietly)."""
        try:
            with store.locked():
                self._memories(store)
                self._records(store)
        except (OSError, StoreError) as exc:
            return exc if self.records or self.stale else None
        return None

    def _memories(self, store: RefsStore) -> None:
        base = self.base
        writes: list[Callable[[], None]] = []
        if self.seen is not None:  # merged with the file as it is now
            writes.append(partial(store.remember_settings, self.seen))
        if self.peers is not None:
            peers = _merged(self.peers, store.remembered_peers, base.view.peers if base else [])
            writes.append(partial(store.save_peers, peers))
        if self.holders is not None:
            before = base.view.holders if base else []
            holders = _merged(self.holders, store.remembered_holders, before)
            writes.append(partial(store.save_holders, holders))
        if self.sizes:
            writes.append(partial(store.save_archive_sizes, self.sizes))
        if self.dead is not None and (base is None or store.dead_since() == base.dead_since):
            # Another collect's stamps, written since this one read them, judged later
            # (an entry it saw live again is no longer stamped): they stand. A stamp
            # not written costs a longer wait for --min-age, never an early free.
            writes.append(partial(store.save_dead_since, self.dead, self.now))
        for write in writes:
            try:
                write()
            except (OSError, StoreError):
                pass  # a memory: found, walked or stamped again next time

    def _records(self, store: RefsStore) -> None:
        for rec in self.records:
            try:
                self._record(store, rec)
            except NewerFile:
                continue  # a newer uvrefs recorded it meanwhile: its record stands
        for entry in self.stale:
            store.delete(entry)
        for again in self.stamps:
            try:
                if store.env_record(again.path) == again.read:
                    store.write_stamp(again.path, again.print, again.taken)
            except OSError:
                pass  # a memory: the env is scanned once more next time

    def _record(self, store: RefsStore, rec: RootRecord) -> None:
        if store.env_record(rec.path) != rec.read:
            return  # recorded meanwhile (its stamp goes with that record): it stands
        store.save_env(
            rec.path,
            rec.site_dirs,
            rec.mount,
            rec.command,
            sorted(rec.uses),
            mntns=rec.mntns,
            identity=rec.identity,
            sources=rec.sources,
            projects=rec.projects,
            shared=rec.shared,
        )
        if self.describe is not None:
            store.record(Path(rec.path), rec.uses, "collect", self.describe, rec.identity)
        if rec.stamp is not None:
            store.write_stamp(rec.path, rec.stamp, rec.taken)


def _merged(ours: list[str] | None, now: Callable[[], list[str]], before: list[str]) -> list[str]:
    """A list this command found (`ours`), plus what another command added to the file
    since this one read it (`before`): found later, it is not this command's to drop."""
    try:
        added = set(now()) - set(before)
    except (OSError, StoreError):  # not a list this uvrefs can read: replaced by ours
        added = set()
    return sorted({*(ours or []), *added})


def holders_now(view: StoreView, searched: list[str]) -> list[str]:
    """The holders to remember: those remembered and those searched now, while they
    exist (an env renamed after its record was dropped is still found where it was)."""
    return sorted({h for h in [*view.holders, *searched] if os.path.isdir(h)})
