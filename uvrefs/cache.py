"""The layout of uv's cache as uvrefs relies on it: buckets found by name (their versions
change between uv releases), archives and the dist-info they hold, and the pointers
(symlinks or Windows link files) through which uv reaches each archive.

See docs/design.md for where each fact lives in uv's source."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from uvrefs.errors import CacheRefused
from uvrefs.files import open_dir, read_file, read_utf8
from uvrefs.tuples import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ARCHIVE_BUCKET = re.compile(r"archive-v\d+")
POINTER_BUCKET = re.compile(r"(wheels|sdists|environments)-v\d+")
CONTENT_BUCKET = re.compile(r"files-v\d+")  # content-addressed blobs (uv 0.13.9 preview)
# uv's archive ids: nanoid-style, 16 characters now, 21 in older caches; may start with "-".
ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Files uv keeps beside a wheel pointer `<key>` in the wheels bucket.
POINTER_SIDECARS = (".http", ".rev", ".msgpack", ".lock")


class Archive(NamedTuple):
    """One unpacked wheel (or cached environment) under `archive-v*/<id>`."""

    id: str
    path: Path
    dist_infos: tuple[str, ...]


class Pointer(NamedTuple):
    """A link uv follows to an archive: `bucket` is wheels, sdists or environments."""

    path: Path
    bucket: str
    archive_id: str


class Cache:
    """A validated uv cache root and its buckets, discovered by name pattern."""

    def __init__(
        self,
        root: Path,
        archive_dirs: list[Path] | None = None,
        pointer_dirs: list[Path] | None = None,
    ) -> None:
        self.root = root
        self.archive_dirs: list[Path] = archive_dirs or []
        self.pointer_dirs: list[Path] = pointer_dirs or []

    def __repr__(self) -> str:
        return f"Cache(root={self.root!r})"

    @classmethod
    def open(cls, root: Path) -> Cache:
        """Open `root` as a uv cache, refusing anything uvrefs must never delete from."""
        root = Path(os.path.abspath(root))
        real = Path(os.path.realpath(root))
        home = Path(os.path.realpath(Path.home()))
        if real == Path(real.anchor) or real == home or real in home.parents:
            raise CacheRefused(
                f"refusing to use {root} as uv's cache (it is / or your home or above it); "
                "set UV_CACHE_DIR to uv's cache directory"
            )
        try:
            names = os.listdir(real)
        except FileNotFoundError:
            raise CacheRefused(
                f"no uv cache at {root}; run uv once or point UV_CACHE_DIR at its cache"
            ) from None
        except OSError as exc:
            raise CacheRefused(f"cannot read cache directory {root}: {exc.strerror}") from None
        cache = cls(root=real)
        device = os.lstat(real).st_dev
        for name in sorted(names):
            if not (ARCHIVE_BUCKET.fullmatch(name) or POINTER_BUCKET.fullmatch(name)):
                continue
            try:
                st = os.lstat(real / name)
            except OSError:
                continue
            # A bucket is a real directory on the cache's filesystem; a link or a mount
            # planted under a bucket's name is never read or deleted from.
            if not stat.S_ISDIR(st.st_mode) or st.st_dev != device:
                continue
            if ARCHIVE_BUCKET.fullmatch(name):
                cache.archive_dirs.append(real / name)
            else:
                cache.pointer_dirs.append(real / name)
        if (
            not cache.archive_dirs
            and not (real / "CACHEDIR.TAG").is_file()
            and not cache.emptied(names)
        ):
            raise CacheRefused(
                f"{root} holds no uv buckets; set UV_CACHE_DIR to uv's cache directory"
            )
        return cache

    @staticmethod
    def emptied(names: list[str]) -> bool:
        """What `uv cache clean` leaves (0.13.9): the directory and its `.lock` alone (plus
        what uvrefs itself keeps there)."""
        return ".lock" in names and all(n == ".lock" or n.startswith(".uvrefs-") for n in names)

    @property
    def is_empty(self) -> bool:
        """No archive bucket: nothing to collect (a fresh or cleaned cache)."""
        return not self.archive_dirs

    def contains(self, path: Path) -> bool:
        """Whether `path`, taken literally (no symlink resolved), lies inside the root."""
        return os.path.normpath(path).startswith(os.path.join(self.root, ""))

    def archive_path(self, entry_id: str) -> Path | None:
        """Where archive `entry_id` lives, if it exists in any archive bucket."""
        if not ENTRY_ID.fullmatch(entry_id):
            return None
        for bucket in self.archive_dirs:
            candidate = bucket / entry_id
            if os.path.lexists(candidate):
                return candidate
        return None

    def describe(self, entry_id: str) -> tuple[str | None, str | None, list[str]]:
        """(dist, version, tags) of an archive, read from its dist-info and WHEEL file."""
        path = self.archive_path(entry_id)
        infos = read_dist_infos(str(path)) if path is not None else ()
        if path is None or not infos:
            return None, None, []
        dist, version = split_dist_info(infos[0])
        return dist, version, wheel_tags(path, infos[0])

    def archive_ids(self) -> set[str]:
        """The ids of every archive (one directory listing per bucket)."""
        ids: set[str] = set()
        for bucket in self.archive_dirs:
            try:
                ids.update(n for n in os.listdir(bucket) if ENTRY_ID.fullmatch(n))
            except OSError as exc:
                raise CacheRefused(f"cannot read {bucket}: {exc.strerror}") from None
        return ids

    def archives(
        self, known: Callable[[os.DirEntry[str]], tuple[str, ...] | None] | None = None
    ) -> Iterator[Archive]:
        """Every archive with the `.dist-info` directories at its top level: read, unless
        `known(entry)` gives them (from memory)."""
        for bucket in self.archive_dirs:
            try:
                it = os.scandir(bucket)
            except OSError:
                continue
            with it:
                for entry in it:
                    if not ENTRY_ID.fullmatch(entry.name):
                        continue
                    infos = known(entry) if known is not None else None
                    if infos is None:
                        infos = read_dist_infos(entry.path)
                    yield Archive(entry.name, Path(entry.path), infos)

    def pointers(
        self, buckets: tuple[str, ...] = ("wheels", "sdists", "environments")
    ) -> dict[str, list[Pointer]]:
        """Every pointer in the given buckets, by archive id.

        Walks without following symlinks and skips unpacked source trees (`src/`), which
        hold no pointers."""
        found: dict[str, list[Pointer]] = {}
        for bucket_dir in self.pointer_dirs:
            bucket = bucket_dir.name.split("-v")[0]
            if bucket not in buckets:
                continue
            for path, archive_id in _walk_pointers(bucket_dir, self):
                found.setdefault(archive_id, []).append(Pointer(path, bucket, archive_id))
        return found


def read_dist_infos(archive: str) -> tuple[str, ...]:
    try:
        with os.scandir(archive) as it:
            return tuple(
                sorted(
                    e.name
                    for e in it
                    if e.name.endswith(".dist-info") and e.is_dir(follow_symlinks=False)
                )
            )
    except OSError:  # not a directory, gone, or unreadable: no dist-info to index
        return ()


def _walk_pointers(top: Path, cache: Cache) -> Iterator[tuple[Path, str]]:
    archive_dirs = {str(d) for d in cache.archive_dirs}
    stack = [str(top)]
    while stack:
        current = stack.pop()
        try:
            it = os.scandir(current)
        except OSError:
            continue
        with it:
            for entry in it:
                if entry.is_symlink():
                    archive_id = _archive_of_link(current, os.readlink(entry.path), archive_dirs)
                    if archive_id:
                        yield Path(entry.path), archive_id
                elif entry.is_dir(follow_symlinks=False):
                    if entry.name != "src":
                        stack.append(entry.path)
                elif os.name == "nt" and "." not in entry.name:  # pragma: no cover
                    archive_id = _archive_of_link_file(Path(entry.path), cache)
                    if archive_id:
                        yield Path(entry.path), archive_id


def _archive_of_link(parent: str, target: str, archive_dirs: set[str]) -> str | None:
    """The archive id a pointer at `parent/<link>` -> `target` names, if it lies in an
    archive bucket (strings, not Path: a cache has one pointer per wheel)."""
    resolved = os.path.normpath(os.path.join(parent, target))
    bucket, name = os.path.split(resolved)
    if bucket in archive_dirs and ENTRY_ID.fullmatch(name):
        return name
    return None


def _archive_of_link_file(path: Path, cache: Cache) -> str | None:  # pragma: no cover
    try:
        text = read_file(str(path), 4096).decode("utf-8", errors="strict").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if ARCHIVE_BUCKET.fullmatch(text.split("/")[0]) and len(text.split("/")) == 2:
        return text.split("/")[1] if ENTRY_ID.fullmatch(text.split("/")[1]) else None
    return None


def wheel_tags(archive: Path, dist_info: str) -> list[str]:
    """The `Tag:` lines of an archive's WHEEL file (empty if it cannot be read)."""
    try:
        text = read_utf8(str(archive / dist_info / "WHEEL"))
    except OSError:
        return []
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]


def split_dist_info(name: str) -> tuple[str, str]:
    """`numpy-2.4.6.dist-info` -> (`numpy`, `2.4.6`)."""
    stem = name.removesuffix(".dist-info")
    dist, _, version = stem.rpartition("-")
    return (dist or stem), version


class SizeTally:
    """Blocks a set of deletions really frees, counted as `uv cache size` and `du` count
    (`st_blocks * 512`, each inode once): a file's blocks are freed only once every one of
    its hard links is among the deleted paths; a directory's always are."""

    def __init__(self) -> None:
        self.directories = 0
        # the highest link count of a regular file seen: >1 means linked elsewhere
        self.max_links = 1
        self.singles = 0  # files with one link: their own blocks, no inode to remember
        self._files: dict[tuple[int, int], list[int]] = {}  # linked files: [seen, links, blocks]
        self._linked = 0  # blocks of the linked files, each inode once

    def add_tree(self, path: Path) -> None:
        for st in _lstat_tree(path):
            self.add(st)

    def add(self, st: os.stat_result) -> None:
        """Count one path (by its lstat) as deleted. Only inodes with several links are
        remembered (to count each once): memory grows with hard links, not with files."""
        if stat.S_ISDIR(st.st_mode):
            self.directories += st.st_blocks * 512
            return
        if st.st_nlink == 1:
            self.singles += st.st_blocks * 512
            return
        if st.st_nlink > self.max_links and stat.S_ISREG(st.st_mode):
            self.max_links = st.st_nlink
        key = (st.st_dev, st.st_ino)
        seen = self._files.get(key)
        if seen is None:
            seen = self._files[key] = [0, st.st_nlink, st.st_blocks * 512]
            self._linked += st.st_blocks * 512
        seen[0] += 1

    @property
    def occupied(self) -> int:
        """Blocks the paths occupy, freed or not (what they free once their envs are gone)."""
        return self.directories + self.singles + self._linked

    @property
    def freed(self) -> int:
        files = sum(size for count, nlink, size in self._files.values() if count >= nlink)
        return self.directories + self.singles + files

    def freed_with(self, also_going: Callable[[int, int], int]) -> int:
        """What the paths free when `also_going(dev, ino)` more links of each file go too
        (a content-addressed blob that goes with its last archive, a dead env's link)."""
        files = sum(
            size
            for (dev, ino), (count, nlink, size) in self._files.items()
            if count + also_going(dev, ino) >= nlink
        )
        return self.directories + self.singles + files

    def linked_files(self) -> Iterator[tuple[int, int, int, int, int]]:
        """(dev, ino, links among the paths, links in all, blocks) of each file with
        several links."""
        for (dev, ino), (count, nlink, size) in self._files.items():
            yield dev, ino, count, nlink, size


class Occupancy:
    """Blocks occupied by the paths added, each inode once, as `uv cache size` and `du`
    count (`st_blocks * 512`): the whole-cache count. Lighter than `SizeTally`, which also
    knows what a deletion frees: only the inode numbers of files with several links are
    remembered (a set of ints, ~60 bytes each), so memory grows with hard-linked files."""

    def __init__(self) -> None:
        self.bytes = 0
        self._seen: dict[int, set[int]] = {}  # st_dev -> inodes with several links
        self.linked = 0  # paths that are files with several links

    def add(self, st: os.stat_result) -> int:
        """Count one path; the bytes it adds (0 for an inode already counted)."""
        size: int = st.st_blocks * 512
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            seen = self._seen.get(st.st_dev)
            if seen is None:
                seen = self._seen[st.st_dev] = set()
            self.linked += 1
            if st.st_ino in seen:
                return 0
            seen.add(st.st_ino)
        self.bytes += size
        return size

    def add_tree(
        self,
        path: str,
        skip: frozenset[str] | set[str] = frozenset(),
        also: Occupancy | None = None,
    ) -> int:
        """Count a tree (not following symlinks, skipping the paths in `skip`), in `also`
        too if given; the bytes it adds here. Own loop rather than `_lstat_tree`: a
        million files pass through here."""
        before = self.bytes
        try:
            top = os.lstat(path)
        except OSError:
            return 0
        self.add(top)
        if also is not None:
            also.add(top)
        if not stat.S_ISDIR(top.st_mode):
            return self.bytes - before
        isdir, stack, add = stat.S_ISDIR, [path], self.add
        if also is not None:

            def add(st: os.stat_result, add_here: Callable[[os.stat_result], int] = add) -> int:
                also.add(st)
                return add_here(st)

        while stack:
            current = stack.pop()
            try:
                it = os.scandir(current)
            except OSError:
                continue
            with it:
                for entry in it:
                    if skip and entry.path in skip:
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    add(st)
                    if isdir(st.st_mode):
                        stack.append(entry.path)
        return self.bytes - before


def _lstat_tree(
    path: Path, skip: frozenset[str] | set[str] = frozenset()
) -> Iterator[os.stat_result]:
    try:
        st = os.lstat(path)
    except OSError:
        return
    yield st
    if not stat.S_ISDIR(st.st_mode):
        return
    stack = [str(path)]
    while stack:
        current = stack.pop()
        try:
            it = os.scandir(current)
        except OSError:
            continue
        with it:
            for entry in it:
                if entry.path in skip:
                    continue
                try:
                    est = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                yield est
                if stat.S_ISDIR(est.st_mode):
                    stack.append(entry.path)


def delete_tree(path: Path, tally: SizeTally) -> None:
    """Delete `path` (a tree or a single file); see `delete_at`."""
    fd = open_dir(str(path.parent))
    try:
        delete_at(fd, path.name, tally)
    finally:
        os.close(fd)


def delete_at(dir_fd: int, name: str, tally: SizeTally, device: int | None = None) -> None:
    """Delete `name` in the directory `dir_fd` (a tree or a single file), counting in
    `tally` what each deleted path frees, in the same pass: lstat, then unlink, as `rm -rf`
    walks but measured. Works through directory descriptors opened with O_NOFOLLOW and
    never crosses into another filesystem (`device`, default the tree's own), so it stays
    inside the tree it was given whatever is renamed or planted meanwhile."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        if device is not None and st.st_dev != device:
            raise OSError(errno.EXDEV, "a file system is mounted inside", name)
        fd = open_dir(name, dir_fd=dir_fd)
        try:
            if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (st.st_dev, st.st_ino):
                raise OSError(errno.ESTALE, "replaced while deleting", name)
            _empty_dir(fd, st.st_dev, tally)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)
    tally.add(st)


def _empty_dir(dir_fd: int, device: int, tally: SizeTally) -> None:
    with os.scandir(dir_fd) as it:
        entries = list(it)
    for entry in entries:
        delete_at(dir_fd, entry.name, tally, device)


# uv names a centralized project environment `[<name>-]<implementation><version>-<digest>`
# (`centralized_environment_root`); a script's (`<name>-<digest>`) has no version in it.
PROJECT_ENV = re.compile(r"(?:[a-z0-9-]+-)?[a-z]+\d+\.\d+[0-9a-z.+]*-[0-9a-f]{16}")


def is_project_env(cache: Cache, env: str) -> bool:
    """Whether the real path `env` is where uv keeps a project environment: directly in an
    `environments-v*` bucket, named as uv names those (no listing of the bucket)."""
    bucket, name = os.path.split(env)
    return PROJECT_ENV.fullmatch(name) is not None and any(
        str(d) == bucket and d.name.startswith("environments-") for d in cache.pointer_dirs
    )
