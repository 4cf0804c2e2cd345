"""uv's content-addressed files (preview `content-addressed-cache`, uv 0.13.9): every file
of an archive is a hard link to a blob in `files-v*/<2 chars>/<name>`. A blob's link is
the cache's own, not a use; a blob no archive links any more (one link left) is garbage,
which `uv cache prune` would remove and a collect's sweep removes under uv's lock."""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from uvrefs.cache import CONTENT_BUCKET, Cache, SizeTally
from uvrefs.tuples import NamedTuple


class Blobs:
    """The blobs of a cache by inode (read with one listing per fan-out directory, no
    stat), and what is needed to tell the cache's own links of a file from a user's."""

    def __init__(
        self,
        cache: Cache,
        device: int,
    ) -> None:
        self.cache = cache
        self.device = device
        # ino -> path parts
        self.where: dict[int, tuple[str, str, str]] = {}
        # Each fan-out directory: how many entries it holds (blobs and anything else), and its
        # blocks: it goes with its last blob (`uv cache prune` would remove it empty).
        self.fans: dict[tuple[str, str], tuple[int, int]] = {}
        self._archive_links: Counter[int] | None = None
        self._orphans: list[Blob] | None = None
        # Links that go with this collect: the files of dead project envs in the cache (their
        # hard links are not a use once the env goes with them).
        self.going: Counter[tuple[int, int]] = Counter()

    @classmethod
    def load(cls, cache: Cache) -> Blobs:
        device = os.lstat(cache.root).st_dev
        blobs = cls(cache, device)
        for bucket in content_buckets(cache):
            for fan in _subdirs(cache.root / bucket):
                entries = _scan(cache.root / bucket / fan)
                for entry in entries:
                    if entry.is_file(follow_symlinks=False):
                        blobs.where[entry.inode()] = (bucket, fan, entry.name)
                try:
                    size = os.lstat(cache.root / bucket / fan).st_blocks * 512
                except OSError:
                    continue
                blobs.fans[bucket, fan] = (len(entries), size)
        return blobs

    def emptied(self, going: set[int]) -> dict[tuple[str, str], int]:
        """The fan-out directories left empty once the blobs `going` (inodes) are gone:
        directory -> its blocks."""
        left: dict[tuple[str, str], int] = {k: n for k, (n, _size) in self.fans.items()}
        for ino in going:
            parts = self.where.get(ino)
            if parts is not None and parts[:2] in left:
                left[parts[:2]] -= 1
        return {k: self.fans[k][1] for k, n in left.items() if n == 0}

    def __bool__(self) -> bool:
        return bool(self.where) or bool(self.going)

    def count_going(self, envs: list[str]) -> None:
        """Count the links of every file in the environments this collect removes (their
        links to archive files are not uses, and go with them)."""
        self.going.clear()
        for env in envs:
            tally = SizeTally()
            tally.add_tree(Path(env))
            for dev, ino, count, _nlink, _size in tally.linked_files():
                self.going[dev, ino] += count

    def is_blob(self, st: os.stat_result) -> bool:
        return self.device_ino(st.st_dev, st.st_ino)

    def device_ino(self, dev: int, ino: int) -> bool:
        return dev == self.device and ino in self.where

    def also_going(self, dev: int, ino: int) -> int:
        """Links of a file beyond the paths deleted that go too: its blob, dead envs'."""
        return self.device_ino(dev, ino) + self.going.get((dev, ino), 0)

    def outside_links(self, st: os.stat_result) -> int:
        """Links of an archive file beyond its own, its blob's and other archives': what
        envs (or anything else outside uv's bookkeeping) hold."""
        extra = st.st_nlink - 1 - self.going.get((st.st_dev, st.st_ino), 0)
        if not self.is_blob(st):
            return max(extra, 0)
        extra -= 1
        if extra > 0:  # rare (the same file in two archives): count the archives' links
            extra -= self.archive_links()[st.st_ino] - 1
        return max(extra, 0)

    def archive_links(self) -> Counter[int]:
        """How many archives link each METADATA blob (read once, when first needed)."""
        if self._archive_links is None:
            counts: Counter[int] = Counter()
            for archive in self.cache.archives():
                for info in archive.dist_infos:
                    try:
                        st = os.lstat(archive.path / info / "METADATA")
                    except OSError:
                        continue
                    if self.is_blob(st):
                        counts[st.st_ino] += 1
            self._archive_links = counts
        return self._archive_links

    def orphans(self, *, again: bool = True) -> list[Blob]:
        """Blobs no archive links (one link left) as they are now (with `again` false: as
        first found this run, for planning and dry runs): candidates only, each re-checked
        under the lock before it goes."""
        if not again and self._orphans is not None:
            return self._orphans
        found = []
        for ino, parts in self.where.items():
            try:
                st = os.lstat(self.cache.root.joinpath(*parts))
            except OSError:
                continue
            if st.st_ino == ino and st.st_nlink == 1 and stat.S_ISREG(st.st_mode):
                found.append(Blob(parts, ino, st.st_blocks * 512))
        if self._orphans is None:
            self._orphans = found
        return found


class Blob(NamedTuple):
    parts: tuple[str, str, str]  # bucket, fan-out directory, name
    ino: int
    bytes: int


def content_buckets(cache: Cache) -> list[str]:
    """The content buckets (`files-v*`) of a cache: real directories on its filesystem."""
    device = os.lstat(cache.root).st_dev
    found = []
    for name in _names(cache.root):
        if CONTENT_BUCKET.fullmatch(name):
            try:
                st = os.lstat(cache.root / name)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_dev == device:
                found.append(name)
    return sorted(found)


def _names(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _subdirs(path: Path) -> Iterator[str]:
    for entry in _scan(path):
        if entry.is_dir(follow_symlinks=False):
            yield entry.name


def _scan(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []
