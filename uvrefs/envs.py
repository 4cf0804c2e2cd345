"""Environments: whether one still exists, and which cache entries it uses, traced from
each installed `.dist-info` in every link mode uv has. (Which env a uv command targets is
`uvrefs.targets`, kept light for the install path.)"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from uvrefs.cache import Archive, Cache
from uvrefs.targets import site_dirs

EnvState = Literal["alive", "gone", "unknown"]
# How a use was proven: the installed file is a symlink into the archive, shares its inode,
# has the same content, or the entry appeared while uv worked on the env (build deps).
How = Literal["symlink", "hardlink", "content", "build"]


@dataclass(frozen=True)
class EnvScan:
    """What one environment is now: alive / gone / unknown, and the entries it uses."""

    path: Path
    state: EnvState
    detail: str = ""
    uses: Mapping[str, How] = field(default_factory=dict)
    dists: tuple[str, ...] = ()
    reused: bool = False  # taken from its last record (unchanged since), not scanned now


# ---------------------------------------------------------------- which entries an env uses


class ArchiveIndex:
    """Archives by the name of the `.dist-info` they hold, built in one pass over the
    archive bucket and shared by every env scan of a run (archives never change)."""

    def __init__(self, cache: Cache, archives: Iterable[Archive] | None = None) -> None:
        self.cache = cache
        self._archives = archives
        self._by_dist_info: dict[str, list[Archive]] | None = None
        self._stats: dict[Path, os.stat_result | None] = {}

    @property
    def by_dist_info(self) -> dict[str, list[Archive]]:
        """Built on first use: a collect whose envs are all unchanged never needs it."""
        if self._by_dist_info is None:
            self._by_dist_info = {}
            archives = self.cache.archives() if self._archives is None else self._archives
            for archive in archives:
                for name in archive.dist_infos:
                    self._by_dist_info.setdefault(name, []).append(archive)
        return self._by_dist_info

    def stat(self, path: Path) -> os.stat_result | None:
        if path not in self._stats:
            try:
                self._stats[path] = os.stat(path)
            except OSError:
                self._stats[path] = None
        return self._stats[path]


def env_state(path: Path, mount: str | None = None) -> tuple[EnvState, str]:
    """Alive, gone, or unknown (and unknown keeps). A missing env counts as gone only when
    the filesystem it was recorded on is mounted and its nearest existing ancestor can be
    read: an unreadable path (EACCES, EIO) or an unmounted disk is unknown."""
    try:
        os.stat(path)
        return "alive", ""
    except FileNotFoundError:
        pass
    except OSError as exc:
        return "unknown", f"unreadable ({exc.strerror})"
    if mount and not os.path.ismount(mount):
        return "unknown", f"its filesystem {mount} is not mounted"
    ancestor = path.parent
    while True:
        try:
            os.listdir(ancestor)
            return "gone", "no longer exists"
        except FileNotFoundError:
            if ancestor == ancestor.parent:
                return "gone", "no longer exists"
            ancestor = ancestor.parent
        except OSError as exc:
            return "unknown", f"{ancestor} unreadable ({exc.strerror})"


def mount_point(path: Path) -> str:
    """The mount point of the filesystem holding `path` (recorded, to tell an unmounted
    disk from a deleted env later)."""
    current = Path(os.path.realpath(path))
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return str(current)


def scan_env(
    path: Path, index: ArchiveIndex, extra_site_dirs: Iterable[Path] = (), mount: str | None = None
) -> EnvScan:
    """Which archives of `index` the environment at `path` uses, one dist-info at a time."""
    state, detail = env_state(path, mount)
    if state != "alive":
        return EnvScan(path, state, detail)
    uses: dict[str, How] = {}
    dists: list[str] = []
    try:
        for site in site_dirs(str(path), [str(d) for d in extra_site_dirs]):
            with os.scandir(site) as it:
                names = [e.name for e in it if e.name.endswith(".dist-info")]
            for name in sorted(names):
                dists.append(name)
                for archive_id, how in match_dist_info(Path(site, name), index).items():
                    uses.setdefault(archive_id, how)
    except FileNotFoundError:
        pass  # a site dir vanished while scanning: what was read stands
    except PermissionError as exc:
        return EnvScan(path, "unknown", f"unreadable ({exc.strerror})")
    return EnvScan(path, "alive", "", uses, tuple(dists))


def match_dist_info(installed: Path, index: ArchiveIndex) -> dict[str, How]:
    """The archives an installed `.dist-info` came from.

    symlink mode: METADATA links into the archive. hardlink (and clone falling back to it):
    METADATA shares the archive's inode. clone/copy: METADATA and WHEEL are byte-identical
    and every hashed file in the archive's RECORD appears with the same hash in the
    installed RECORD; several equal archives are all referenced (keeping is safe)."""
    metadata = installed / "METADATA"
    try:
        lst = os.lstat(metadata)
    except OSError:
        return {}
    if stat.S_ISLNK(lst.st_mode):
        target = Path(os.path.normpath(installed / os.readlink(metadata)))
        for bucket in index.cache.archive_dirs:
            if target.is_relative_to(bucket):
                return {target.relative_to(bucket).parts[0]: "symlink"}
        return {}
    candidates = index.by_dist_info.get(installed.name, [])
    for archive in candidates:
        st = index.stat(archive.path / installed.name / "METADATA")
        if st is not None and (st.st_dev, st.st_ino) == (lst.st_dev, lst.st_ino):
            return {archive.id: "hardlink"}
    return {
        a.id: "content"
        for a in candidates
        if _same_content(installed, a.path / installed.name, lst.st_size, index)
    }


def _same_content(installed: Path, cached: Path, metadata_size: int, index: ArchiveIndex) -> bool:
    st = index.stat(cached / "METADATA")
    if st is None or st.st_size != metadata_size:
        return False
    try:
        if (installed / "METADATA").read_bytes() != (cached / "METADATA").read_bytes():
            return False
        if (installed / "WHEEL").read_bytes() != (cached / "WHEEL").read_bytes():
            return False
        cached_record = _record_hashes(cached / "RECORD")
        installed_record = _record_hashes(installed / "RECORD")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: counting it as used keeps it, which is safe
    data_dir = installed.name.removesuffix(".dist-info") + ".data/"
    return all(
        installed_record.get(path) == digest
        for path, digest in cached_record.items()
        if not path.startswith(data_dir)
    )


def _record_hashes(record: Path) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for line in record.read_text("utf-8", errors="replace").splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[1]:
            hashes[parts[0].strip('"')] = parts[1]
    return hashes
