"""What archives occupy, and what freeing some of them frees, each file counted once wherever
it is linked from, as `uv cache size` counts. uv links no file between two archives, but a
deduplicating tool (rdfind, jdupes) may: such a file's blocks are freed only when every one
of its links goes. uv never changes an archive once written, so what one occupies is
remembered (`Footprint`) and walked again only when it changed or shares a file."""

from __future__ import annotations

import heapq
import os
import stat
from array import array
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from typing import Any

from uvrefs.cache import CONTENT_BUCKET, ENTRY_ID, Cache, Occupancy
from uvrefs.tuples import NamedTuple

RANGES = 8  # inode ranges remembered per archive: together they hold every inode of its files
Key = tuple[int, int]  # (st_dev, st_ino)


class Footprint(NamedTuple):
    """What one archive occupied when it was walked: its directory's inode and mtime, its
    bytes (`st_blocks * 512`, each inode once), the dist-infos at its top, every directory
    below it with its mtime (a file replaced by a link, added or removed changes its
    directory's mtime), ranges holding the inode of each of its files (a file found linked
    elsewhere is looked up there), and whether a file of it was linked from another
    archive then (such an archive is walked every time). `dirs` is None when the archive
    could not be read whole, or in a record from before these were kept."""

    ino: int
    mtime_ns: int
    bytes: int
    dist_infos: tuple[str, ...]
    dirs: tuple[tuple[str, int], ...] | None = None
    ranges: tuple[int, ...] = ()  # first, last, first, last, ...
    shares: bool = False

    def holds(self, path: str, top: os.stat_result) -> bool:
        """Whether the archive at `path` (lstat `top`) is still as walked: the same
        directory, and no directory below it changed (one lstat each)."""
        if self.dirs is None or self.shares or (top.st_ino, top.st_mtime_ns) != self[:2]:
            return False
        for relative, mtime in self.dirs:
            try:
                if relative.startswith("/") or ".." in relative.split("/"):
                    return False  # not a path below the archive: not a record uvrefs wrote
                st = os.lstat(os.path.join(path, relative))
            except (OSError, AttributeError, TypeError, ValueError):  # or not a path at all
                return False
            if st.st_mtime_ns != mtime or not stat.S_ISDIR(st.st_mode):
                return False
        return True


class Walk:
    """One archive walked now: its bytes (each inode once), its files that have links
    beyond its own (`key -> [links here, links in all, bytes]`), and its footprint to
    remember (None if it cannot be: not a directory, unreadable in part)."""

    def __init__(
        self,
        bytes: int,
        linked: dict[Key, list[int]],
        footprint: Footprint | None,
    ) -> None:
        self.bytes = bytes
        self.linked = linked
        self.footprint = footprint


def walk(path: str, count: Callable[[os.stat_result], object] | None = None) -> Walk:
    """Walk one archive without following links; `count(st)` sees every path too (a
    whole-cache count)."""
    try:
        top = os.lstat(path)
    except OSError:
        return Walk(0, {}, None)
    if count is not None:
        count(top)
    total = top.st_blocks * 512
    if not stat.S_ISDIR(top.st_mode):
        linked = {(top.st_dev, top.st_ino): [1, top.st_nlink, total]} if top.st_nlink > 1 else {}
        return Walk(total, linked, None)
    isdir, device, whole = stat.S_ISDIR, top.st_dev, True
    dirs: list[tuple[str, int]] = []
    inodes: list[int] = []
    seen: dict[Key, list[int]] = {}
    start = len(path) + 1
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            it = os.scandir(current)
        except OSError:
            whole = False
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    whole = False
                    continue
                if count is not None:
                    count(st)
                size = st.st_blocks * 512
                if isdir(st.st_mode):
                    total += size
                    dirs.append((entry.path[start:], st.st_mtime_ns))
                    stack.append(entry.path)
                    whole = whole and st.st_dev == device
                    continue
                if st.st_dev == device:
                    inodes.append(st.st_ino)
                else:
                    whole = False
                if st.st_nlink == 1:
                    total += size
                    continue
                got = seen.get((st.st_dev, st.st_ino))
                if got is None:
                    seen[st.st_dev, st.st_ino] = [1, st.st_nlink, size]
                    total += size
                else:
                    got[0] += 1
    linked = {key: got for key, got in seen.items() if got[1] > got[0]}
    footprint = None
    if whole:
        infos = tuple(sorted(d for d, _ in dirs if "/" not in d and d.endswith(".dist-info")))
        footprint = Footprint(
            top.st_ino,
            top.st_mtime_ns,
            total,
            infos,
            tuple(sorted(dirs)),
            _ranges(inodes),
            False,
        )
    return Walk(total, linked, footprint)


def _ranges(inodes: list[int]) -> tuple[int, ...]:
    """At most RANGES ranges holding every one of `inodes`, split at the widest gaps."""
    if not inodes:
        return ()
    inodes.sort()
    gaps = range(1, len(inodes))
    cuts = sorted(
        i
        for i in heapq.nlargest(RANGES - 1, gaps, key=lambda i: inodes[i] - inodes[i - 1])
        if inodes[i] - inodes[i - 1] > 1
    )
    flat, first = [], inodes[0]
    for cut in cuts:
        flat += [first, inodes[cut - 1]]
        first = inodes[cut]
    return (*flat, first, inodes[-1])


class Footprints:
    """What every archive occupies (`occupied`: each inode once within it) and the files
    linked from more than one archive (`shared`: key -> {archive: links there}, with each
    file's links in all and bytes in `files`), from one look at the cache: each archive
    remembered and unchanged is not walked, unless a file walked now has links beyond its
    own and an inode in one of its ranges (then it is walked too, to see whether they
    share it). `linked` keeps, for the archives asked for in `detail`, every file with
    links beyond its own. `walked`: footprints to remember."""

    def __init__(self) -> None:
        self.occupied: dict[str, int] = {}
        self.shared: dict[Key, dict[str, int]] = {}
        # links in all, bytes
        self.files: dict[Key, tuple[int, int]] = {}
        self.linked: dict[str, dict[Key, list[int]]] = {}
        self.walked: dict[str, Footprint] = {}
        # archives sized from memory
        self.remembered: set[str] = set()
        self._by_archive: dict[str, list[Key]] | None = None

    @classmethod
    def measure(
        cls,
        archives: Iterable[tuple[str, str]],
        remembered: Mapping[str, Footprint],
        *,
        detail: Container[str] = frozenset(),
    ) -> Footprints:
        """`archives`: (entry, path) of every archive to account for."""
        found = cls()
        paths = dict(archives)
        still: dict[str, Footprint] = {}
        walking: list[str] = []
        for entry, path in paths.items():
            known = remembered.get(entry)
            try:
                top = os.lstat(path)
            except OSError:
                continue
            if known is not None and known.holds(path, top):
                still[entry] = known
                found.occupied[entry] = known.bytes
            else:
                walking.append(entry)
        device = _device(paths.values())
        walked: dict[str, Walk] = {}
        log = _InodeLog()
        order: list[str] = []
        while walking:
            for entry in walking:
                done = walk(paths[entry])
                walked[entry] = done
                found.occupied[entry] = done.bytes
                if done.footprint is not None:
                    found.walked[entry] = done.footprint
                log.add((ino for (dev, ino) in done.linked if dev == device), len(order))
                order.append(entry)
                if entry not in detail:
                    done.linked = {}  # only its inodes (in `log`) are needed from now on
            # A file walked now with links beyond its own may be one of a remembered
            # archive's: those whose ranges hold its inode are walked too.
            walking = sorted(_stab(log.inodes(), still))
            for entry in walking:
                del still[entry]
                del found.occupied[entry]
        found.remembered = set(still)
        holders: dict[int, set[int]] = {}
        previous, first = -1, -1
        for ino, number in log.sorted():
            if ino == previous:
                holders.setdefault(ino, {first}).add(number)
            previous, first = ino, number
        sharing = {order[n] for numbers in holders.values() for n in numbers if len(numbers) > 1}
        for entry in sorted(sharing):
            done = walked[entry] if entry in detail else walk(paths[entry])
            walked[entry] = done
            for key, (here, nlink, size) in done.linked.items():
                if key[0] == device and key[1] in holders:
                    found.shared.setdefault(key, {})[entry] = here
                    found.files[key] = (nlink, size)
            if entry in found.walked:
                found.walked[entry] = found.walked[entry]._replace(shares=True)
        found.shared = {key: who for key, who in found.shared.items() if len(who) > 1}
        found.linked = {e: w.linked for e, w in walked.items() if e in detail and w.linked}
        return found

    def shares_of(self, entry: str) -> list[Key]:
        if self._by_archive is None:
            self._by_archive = {}
            for key, who in self.shared.items():
                for holder in who:
                    self._by_archive.setdefault(holder, []).append(key)
        return self._by_archive.get(entry, [])

    def frees(
        self,
        going: Sequence[str],
        also: Callable[[int, int], int] | None = None,
        *,
        outside: bool = True,
    ) -> dict[str, int]:
        """What deleting the archives `going` together frees, per archive: a file linked
        from elsewhere too is freed only when every link goes (`also(dev, ino)`: links
        going with them from elsewhere), and counts for the last archive of `going`
        holding it, the one whose deletion frees it (so a budget freeing the first few
        of `going` is counted right). Without `outside`, links from outside the
        archives (environments) are taken to go too: what goes once they are gone."""
        position = {entry: number for number, entry in enumerate(going)}
        result = {}
        for entry in going:
            size = self.occupied.get(entry, 0)
            counted: set[Key] = set()
            for key in self.shares_of(entry):
                counted.add(key)
                who = self.shared[key]
                inside = [h for h in who if h in position]
                nlink, blocks = self.files[key]
                links = sum(who[h] for h in inside) + (also(*key) if also else 0)
                last = max(inside, key=position.__getitem__)
                freed = last == entry and (links >= nlink or not outside)
                size += blocks * (freed - 1)
            for key, (here, nlink, blocks) in self.linked.get(entry, {}).items():
                if outside and key not in counted and here + (also(*key) if also else 0) < nlink:
                    size -= blocks
            result[entry] = size
        return result

    def attributed(self, first: Callable[[str], Any] = str) -> dict[str, int]:
        """What each archive occupies with every shared file counted once, in the first
        of its archives by `first` (status puts the ones collect keeps first)."""
        result = dict(self.occupied)
        for key, who in self.shared.items():
            owner = min(who, key=first)
            for holder in who:
                if holder != owner:
                    result[holder] -= self.files[key][1]
        return result

    @property
    def from_memory(self) -> int:
        return len(self.remembered)

    @property
    def total(self) -> int:
        """What the archives occupy together, each file once."""
        return sum(self.occupied.values()) - sum(
            self.files[key][1] * (len(who) - 1) for key, who in self.shared.items()
        )


def _device(paths: Iterable[str]) -> int:
    for path in paths:
        try:
            return os.lstat(os.path.dirname(path)).st_dev
        except OSError:
            continue
    return -1


def _stab(inodes: Iterator[int], remembered: Mapping[str, Footprint]) -> set[str]:
    """The remembered archives whose ranges hold any of `inodes` (ascending)."""
    ranges = sorted(
        (fp.ranges[i], fp.ranges[i + 1], entry)
        for entry, fp in remembered.items()
        for i in range(0, len(fp.ranges), 2)
    )
    hits: set[str] = set()
    active: list[tuple[int, str]] = []
    following = 0
    for ino in inodes:
        while following < len(ranges) and ranges[following][0] <= ino:
            heapq.heappush(active, (ranges[following][1], ranges[following][2]))
            following += 1
        while active and active[0][0] < ino:
            heapq.heappop(active)
        if active:  # every range still open holds it: each is a hit, and need not be kept
            hits.update(entry for _, entry in active)
            active.clear()
    return hits


class _InodeLog:
    """Inodes of linked files, each with the number of the archive it was seen in, packed
    into one 64-bit integer apiece (a million files: 8 MB, against ~60 MB in a set)."""

    SHIFT = 24  # archives numbered below 2**24; inodes below 2**40 (else kept unpacked)

    def __init__(self) -> None:
        self.packed = array("Q")
        self.loose: list[tuple[int, int]] = []

    def add(self, inodes: Iterable[int], number: int) -> None:
        for ino in inodes:
            if ino < 1 << 40 and number < 1 << self.SHIFT:
                self.packed.append(ino << self.SHIFT | number)
            else:
                self.loose.append((ino, number))

    def sorted(self) -> Iterator[tuple[int, int]]:
        """(inode, archive number), ascending, sorted a slice at a time (a list of Python
        integers the size of the whole log would cost more than the log)."""
        mask = (1 << self.SHIFT) - 1
        loose = sorted(self.loose)
        merged = heapq.merge(
            ((v >> self.SHIFT, v & mask) for v in _sorted_in_slices(self.packed)), loose
        )
        yield from merged

    def inodes(self) -> Iterator[int]:
        for ino, _ in self.sorted():
            yield ino


def _sorted_in_slices(values: array[int]) -> Iterator[int]:
    if not values:
        return
    shift = max(0, max(values).bit_length() - 12)  # ~4,096 slices by the leading bits
    slices: dict[int, array[int]] = {}
    for value in values:
        part = slices.get(value >> shift)
        if part is None:
            part = slices[value >> shift] = array("Q")
        part.append(value)
    for lead in sorted(slices):
        yield from sorted(slices[lead])


def cache_total(
    cache: Cache, archives: Footprints | None, first: Callable[[str], Any] = str
) -> tuple[int, dict[str, int], dict[str, Footprint] | None]:
    """One look at the whole cache: its total as `uv cache size` counts it (every inode
    once), what each archive occupies (a file several share counted in the first of them
    by `first`), and the footprints walked now (None: the archives came from `archives`).

    Everything outside the archives is walked. The archives' figures come from `archives`
    unless a file outside them has several links (a project environment in uv's cache) or
    the cache is content-addressed (every archive file is a link to a blob) or `archives`
    is None: then every archive is walked with the rest, each inode counted once, and the
    content blobs last (a blob an archive links is that archive's)."""
    total = Occupancy()
    archive_dirs = {str(d) for d in cache.archive_dirs}
    content = {str(cache.root / n) for n in os.listdir(cache.root) if CONTENT_BUCKET.fullmatch(n)}
    total.add_tree(str(cache.root), skip=archive_dirs | content)
    listing: list[tuple[str, str]] = []
    for bucket in cache.archive_dirs:
        try:
            total.add(os.lstat(bucket))
            with os.scandir(bucket) as it:
                listing += [(entry.name, entry.path) for entry in it]
        except OSError:
            continue
    if archives is not None and not total.linked and not content:
        per_archive = archives.attributed(first)
        return total.bytes + sum(per_archive.values()), per_archive, None
    per_archive, walked = {}, {}
    for name, path in sorted(listing, key=lambda item: first(item[0])):
        before = total.bytes
        done = walk(path, total.add)
        per_archive[name] = total.bytes - before
        if done.footprint is not None and ENTRY_ID.fullmatch(name):
            walked[name] = done.footprint
    for bucket_path in sorted(content):
        total.add_tree(bucket_path)
    return total.bytes, per_archive, walked
