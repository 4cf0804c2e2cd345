"""Environments: whether one still exists, and which cache entries it uses, traced from
each installed `.dist-info` in every link mode uv has. (Which env a uv command targets is
`uvrefs.targets`, kept light for the install path.)"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from uvrefs.cache import Archive, Cache
from uvrefs.targets import follow_redirect, site_dirs
from uvrefs.tuples import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # types only: a recording imports no `typing` (uvrefs.tuples)
    from collections.abc import Iterable, Mapping
    from typing import Literal

    EnvState = Literal["alive", "gone", "unknown"]
    # How a use was proven: the installed file is a symlink into the archive, shares its
    # inode, has the same content, or the entry appeared while uv worked on the env (build
    # deps).
    How = Literal["symlink", "hardlink", "content", "build"]


class EnvScan(NamedTuple):
    """What one environment is now: alive / gone / unknown, and the entries it uses."""

    path: Path
    state: EnvState
    detail: str = ""
    uses: Mapping[str, How] = {}  # never changed: read only
    dists: tuple[str, ...] = ()
    reused: bool = False  # taken from its last record (unchanged since), not scanned now
    sources: tuple[str, ...] = ()  # local source trees uv may build again for this env
    # Gone from its path, but it may have moved there, out of sight, and still link into
    # the cache (symlink mode, or a project's `.venv` link): its entries wait a grace period.
    maybe_moved: bool = False
    # `[st_dev, st_ino]` of the env's directory when scanned (alive): a referrer recorded
    # with another one names an env that was at this path before (it may have moved).
    identity: tuple[int, int] | None = None


# ---------------------------------------------------------------- which entries an env uses


class ArchiveIndex:
    """Archives by the name of the `.dist-info` they hold, built in one pass over the
    archive bucket and shared by every env scan of a run (archives never change)."""

    def __init__(self, cache: Cache, archives: Iterable[Archive] | None = None) -> None:
        self.cache = cache
        self._archives = archives
        self._by_dist_info: dict[str, list[Archive]] | None = None
        self._stats: dict[str, os.stat_result | None] = {}

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

    def stat(self, path: str) -> os.stat_result | None:
        if path not in self._stats:
            try:
                self._stats[path] = os.stat(path)
            except OSError:
                self._stats[path] = None
        return self._stats[path]


def env_state(
    path: Path, mount: str | None = None, mntns: str | None = None
) -> tuple[EnvState, str]:
    """Alive, gone, or unknown (and unknown keeps). A missing env counts as gone only when
    it was recorded in this mount namespace (the initial one's id is a constant of the
    kernel, so it survives reboots), the filesystem it was recorded on is still mounted (by
    the mount table, which also knows bind mounts on one filesystem), and its nearest
    existing ancestor can be read: an unreadable path (EACCES, EIO), an unmounted disk or
    another namespace's missing env is unknown."""
    try:
        os.stat(path)
        return "alive", ""  # seen here: scanned here, whichever namespace recorded it
    except FileNotFoundError:
        pass
    except OSError as exc:
        return "unknown", f"unreadable ({exc.strerror})"
    here = mount_namespace()
    if mntns and here and mntns != here:
        return "unknown", f"recorded in another mount namespace ({mntns})"
    if mount and not is_mounted(mount):
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


def project_state(
    env: str, links: Iterable[tuple[str, str | None]], mntns: str | None = None
) -> tuple[EnvState, str]:
    """Whether a project environment kept in uv's cache (`centralized-project-envs`) still
    has a project: alive if one of the `.venv` links (or redirect files) known to have led
    to it still does; gone if each is gone (as `env_state` judges a path) or now leads
    elsewhere; unknown if none is known or one cannot be read (unknown keeps). Of a gone
    one, the reason names a project that no longer exists first (it may have moved,
    keeping its link), then one that now uses another environment."""
    gone: list[str] = []
    for link, mount in links:
        project = os.path.dirname(link)
        try:
            os.lstat(link)
        except FileNotFoundError:
            state, why = env_state(Path(link), mount, mntns)
            if state != "gone":
                return "unknown", f"whose project {project} cannot be judged ({why})"
            gone.insert(0, f"whose project {project} no longer exists")
            continue
        except OSError as exc:
            return "unknown", f"whose project {project} is unreadable ({exc.strerror})"
        now = os.path.realpath(follow_redirect(link))
        if now == env:
            return "alive", ""
        gone.append(f"whose project {project} now uses {now}")
    if not gone:
        return "unknown", "whose project is not known (`uvrefs watch add` the directory above it)"
    return "gone", gone[0]


def mount_namespace() -> str | None:
    """This process's mount namespace (`mnt:[4026531841]`), None where there is none.
    Not cached: a process can move to another one (unshare, setns)."""
    try:
        return os.readlink("/proc/self/ns/mnt")
    except OSError:
        return None


class Mount(NamedTuple):
    """One line of /proc/self/mountinfo: where it is mounted, which directory of its
    filesystem is mounted there (`root`: a bind mount of a subdirectory, an NFS export's
    subdirectory), the filesystem's type and source (`server:/export` for NFS,
    `user@host:/path` for sshfs, a device for a local disk) and its options."""

    point: str
    root: str
    fstype: str
    source: str
    options: str


_MOUNTS: dict[str, tuple[float, list[Mount] | None]] = {}  # "now": (when read, mounts)


def mounts(*, fresh: bool = False) -> list[Mount] | None:
    """Every mount now (Linux: /proc/self/mountinfo, which lists bind mounts of one
    filesystem too); None where there is no mount table to read. Read at most once a
    second (a mark judges thousands of gone envs against it), unless `fresh`."""
    import time

    from uvrefs.files import read_file

    read_at, known = _MOUNTS.get("now", (-1.0, None))
    if not fresh and time.monotonic() - read_at < 1.0:
        return known
    try:
        lines = read_file("/proc/self/mountinfo", 64 << 20).decode("utf-8", "surrogateescape")
    except OSError:
        _MOUNTS["now"] = (time.monotonic(), None)
        return None
    found = []
    for line in lines.splitlines():
        fields = line.split(" ")
        if len(fields) < 5 or "-" not in fields[5:]:
            continue
        tail = fields[fields.index("-", 5) + 1 :]
        fstype, source, super_options = [*tail, "", "", ""][:3]
        found.append(
            Mount(
                _unescape_mount(fields[4]),
                _unescape_mount(fields[3]),
                fstype,
                _unescape_mount(source),
                f"{fields[5]},{super_options}",
            )
        )
    _MOUNTS["now"] = (time.monotonic(), found)
    return found


def mount_table(*, fresh: bool = False) -> set[str] | None:
    """Every mount point now (see `mounts`)."""
    table = mounts(fresh=fresh)
    return None if table is None else {m.point for m in table}


def _unescape_mount(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def is_mounted(point: str) -> bool:
    table = mount_table()
    return point in table if table is not None else os.path.ismount(point)


def mount_of(path: str | Path) -> Mount | None:
    """The mount holding the (real) path: the last mounted at the longest mount point
    that contains it; None where there is no mount table to read."""
    real = os.path.realpath(path)
    inside = [
        m for m in mounts() or [] if real == m.point or real.startswith(m.point.rstrip("/") + "/")
    ]
    return max(inside, key=lambda m: len(m.point)) if inside else None


def mount_point(path: Path) -> str:
    """The mount point of the filesystem holding `path`: the longest mount-table entry
    that contains it (recorded, to tell an unmounted disk from a deleted env later)."""
    real = os.path.realpath(path)
    found = mount_of(real)
    if found is not None:
        return found.point
    current = Path(real)
    while not os.path.ismount(current) and current != current.parent:
        current = current.parent
    return str(current)


def link_mount(link: str) -> str:
    """The mount point of the filesystem holding a link itself (a project's `.venv`),
    not of what it leads to (uv's cache, elsewhere): the fact of the project's directory."""
    return mount_point(Path(os.path.realpath(os.path.dirname(os.path.abspath(link)))))


def identity(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of an env directory: the same env after a rename on its filesystem."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def scan_env(
    path: Path,
    index: ArchiveIndex,
    extra_site_dirs: Iterable[Path] = (),
    mount: str | None = None,
    mntns: str | None = None,
) -> EnvScan:
    """Which archives of `index` the environment at `path` uses, one dist-info at a time.
    Any directory on the way that cannot be read makes the env unknown, never empty."""
    state, detail = env_state(path, mount, mntns)
    if state != "alive":
        return EnvScan(path, state, detail)
    uses: dict[str, How] = {}
    dists: list[str] = []
    sources: list[str] = []
    try:
        os.listdir(path)  # an env that cannot be read is unknown, not empty
        for site in site_dirs(str(path), [str(d) for d in extra_site_dirs], strict=True):
            with os.scandir(site) as it:
                names = [e.name for e in it if e.name.endswith(".dist-info")]
            for name in sorted(names):
                dists.append(name)
                installed = os.path.join(site, name)
                for archive_id, how in match_dist_info(installed, index).items():
                    uses.setdefault(archive_id, how)
                source = local_source(installed)
                if source:
                    sources.append(source)
    except FileNotFoundError:
        pass  # a site dir vanished while scanning: what was read stands
    except OSError as exc:
        return EnvScan(path, "unknown", f"unreadable ({exc.strerror})")
    project = project_source(str(path))
    if project is not None:
        sources.append(project)
    found = tuple(sorted(set(sources)))
    return EnvScan(path, "alive", "", uses, tuple(dists), sources=found, identity=identity(path))


def project_source(env: str) -> str | None:
    """The project a `.venv` belongs to, when its `pyproject.toml` is beside it now: a local
    source uv may build again. Looked up on every scan and every reuse of a record: no
    fingerprint sees a project written beside an env after it was recorded."""
    parent, name = os.path.split(env)
    if name == ".venv" and os.path.isfile(os.path.join(parent, "pyproject.toml")):
        return parent
    return None


def local_source(installed: str) -> str | None:
    """The local directory an installed distribution was built from (PEP 610
    `direct_url.json` with a `file:` URL and `dir_info`: a path or editable install), which
    uv may build again: its build backend is needed while the env lives."""
    import json

    from uvrefs.files import read_file

    try:  # never through a link, never waiting on a FIFO planted there
        raw = read_file(os.path.join(installed, "direct_url.json"), 65536)
    except OSError:
        return None

    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    url = data.get("url") if isinstance(data, dict) else None
    if isinstance(url, str) and url.startswith("file:") and "dir_info" in data:
        return url
    return None


def match_dist_info(installed: str, index: ArchiveIndex) -> dict[str, How]:
    """The archives an installed `.dist-info` came from.

    symlink mode: METADATA links into the archive. hardlink (and clone falling back to it):
    METADATA shares the archive's inode. clone/copy: METADATA and WHEEL are byte-identical
    and every hashed file in the archive's RECORD appears with the same hash in the
    installed RECORD; several equal archives are all referenced (keeping is safe). Content
    is evidence only for files uv copied or cloned (`_copied_by_uv`): not for another
    cache's hard links, nor for an env pip made."""
    metadata = os.path.join(installed, "METADATA")
    try:
        lst = os.lstat(metadata)
    except (FileNotFoundError, NotADirectoryError):
        return {}  # not an installed distribution; any other error makes the env unknown
    if stat.S_ISLNK(lst.st_mode):
        # uv writes the cache path as it was given, which may run through a symlink (a
        # `~/.cache` on another disk): compare resolved paths with the resolved buckets.
        target = Path(os.path.realpath(os.path.join(installed, os.readlink(metadata))))
        for bucket in index.cache.archive_dirs:
            if target.is_relative_to(bucket):
                return {target.relative_to(bucket).parts[0]: "symlink"}
        return {}
    name = os.path.basename(installed)
    candidates = index.by_dist_info.get(name, [])
    for archive in candidates:
        st = index.stat(os.path.join(archive.path, name, "METADATA"))
        if st is not None and (st.st_dev, st.st_ino) == (lst.st_dev, lst.st_ino):
            return {archive.id: "hardlink"}
    if not candidates or not _copied_by_uv(installed, lst):
        return {}
    return {
        a.id: "content"
        for a in candidates
        if _same_content(installed, os.path.join(a.path, name), lst.st_size, index)
    }


def _copied_by_uv(installed: str, metadata: os.stat_result) -> bool:
    """Whether identical content would mean a use of our archives: uv copied (or cloned)
    the files, so METADATA has no other link, and `INSTALLER` (when there is one) says
    uv. A METADATA hard-linked from anywhere but our archives is another cache's (an env
    installed in hardlink mode from another uv cache); an env pip or another installer
    made never used any uv cache. When INSTALLER cannot be read, it counts (keeping is
    safe)."""
    if metadata.st_nlink > 1:
        return False
    from uvrefs.files import read_file

    try:
        installer = read_file(os.path.join(installed, "INSTALLER"), 4096)
    except OSError:  # missing, or not a regular file: cannot tell
        return True
    return installer.strip() == b"uv"


def _same_content(installed: str, cached: str, metadata_size: int, index: ArchiveIndex) -> bool:
    st = index.stat(os.path.join(cached, "METADATA"))
    if st is None or st.st_size != metadata_size:
        return False
    from uvrefs.files import SMALL, read_file

    try:
        for name in ("METADATA", "WHEEL"):  # uv links both unchanged in every mode
            limit = max(SMALL, metadata_size + 1)
            mine, theirs = os.path.join(installed, name), os.path.join(cached, name)
            if read_file(mine, limit) != read_file(theirs, limit):
                return False
        cached_record = _record_hashes(os.path.join(cached, "RECORD"))
        installed_record = _record_hashes(os.path.join(installed, "RECORD"))
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: counting it as used keeps it, which is safe
    data_dir = os.path.basename(installed).removesuffix(".dist-info") + ".data/"
    return all(
        installed_record.get(path) == digest
        for path, digest in cached_record.items()
        if not path.startswith(data_dir)
    )


RECORD_LIMIT = 256 << 20  # a RECORD lists every file of a wheel: large, never unbounded


def _record_hashes(record: str) -> dict[str, str]:
    from uvrefs.files import read_utf8

    hashes: dict[str, str] = {}
    for line in read_utf8(record, RECORD_LIMIT).splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[1]:
            hashes[parts[0].strip('"')] = parts[1]
    return hashes
