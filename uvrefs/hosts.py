"""Hosts: the machines and containers that share a cache and its refs store. Each says it is
alive by renewing its lease in the store (one small file per host, written by atomic
rename: never one file many hosts append to); an env local to a host whose lease is older
than `--host-lease` is judged gone. Also: which filesystems other hosts can see too (a
network filesystem), so that an env on one is judged by any host that has it mounted.

Light on purpose (`os` only at import): a tracked install renews its host's lease."""

from __future__ import annotations

import os
import time
from functools import cache

from uvrefs.store.stamps import short_key
from uvrefs.tuples import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

LEASES = "hosts"  # in a store: hosts/<sha256(host)[:20]>.json
HOST_LEASE = 28 * 86400.0  # seconds: the default `--host-lease`; a host unseen this long is gone
RENEW_EVERY = 600.0  # seconds: a lease younger than this is not written again
MIN_HOST_LEASE = 3600.0  # seconds: the shortest `--host-lease` but 0
INIT_PID_NS = "pid:[4026531836]"  # the kernel's first PID namespace (PROC_PID_INIT_INO)
FORMAT = 1
# Filesystems every host that mounts them sees alike: the same export, the same files.
NETWORK_FS = {
    "nfs": "nfs",
    "nfs4": "nfs",
    "cifs": "smb",
    "smb3": "smb",
    "smbfs": "smb",
    "lustre": "lustre",
    "gpfs": "gpfs",
    "beegfs": "beegfs",
    "ceph": "ceph",
    "fuse.ceph": "ceph",
    "fuse.cephfs": "ceph",
    "glusterfs": "gluster",
    "fuse.glusterfs": "gluster",
    "fuse.sshfs": "sshfs",
    "9p": "9p",
    "virtiofs": "virtiofs",
    "afs": "afs",
    "panfs": "panfs",
}
# Filesystems whose clients do not see the server's link counts (every file has st_nlink 1).
HIDDEN_LINK_COUNTS = {"fuse.sshfs"}
CONTAINER_MARKS = ("/.dockerenv", "/run/.containerenv")


class Lease(NamedTuple):
    """`hosts/<key>.json`: a host's name, when it last said it was alive, and what it is.
    `seen` is the file's mtime: the clock of the filesystem the store is on (on a network
    filesystem the server's), one clock for every host, whatever each host's own says;
    judged against `store_clock`, never against this host's time."""

    host: str
    seen: float  # epoch seconds, the store's clock: the file's mtime
    name: str = ""  # the host name then (a container's is its id)
    container: bool = False
    newer: bool = False  # a newer uvrefs wrote it: left as it is
    # The host's network filesystems then, (mount point, family, source, root) each: where
    # its paths are on a filesystem other hosts may mount too (`place_on`).
    mounts: tuple[tuple[str, str, str, str], ...] = ()
    # False if its mounts cannot all be read: then none of its paths is placed anywhere.
    placeable: bool = True


def in_container() -> bool:
    """Whether this process runs in a container (Docker, Podman, systemd-nspawn, LXC,
    Kubernetes): the image's machine id is the same in every container of it, so the
    host name (each container's own: its id, or the pod's name) tells them apart. A
    process in a PID namespace of its own is in one, whatever marks its runtime leaves (a
    pod on containerd has no marker file, no variable, and with a cgroup namespace a
    /proc/1/cgroup that names no runtime)."""
    if container_marked():
        return True
    try:
        return os.readlink("/proc/self/ns/pid") != INIT_PID_NS
    except OSError:
        return False


def container_marked() -> bool:
    """Whether a container runtime says this is a container (a marker file, the
    `container` variable its PID 1 sets, its name in /proc/1/cgroup). A PID namespace of
    its own alone may be a sandbox on the machine itself (Flatpak, bubblewrap, a service
    with PrivatePIDs): the machine's files, machine id and host name."""
    if any(os.path.exists(mark) for mark in CONTAINER_MARKS):
        return True
    if os.environ.get("container"):  # set by systemd-nspawn, Podman, LXC for PID 1 and on
        return True
    from uvrefs.files import read_utf8

    try:
        cgroup = read_utf8("/proc/1/cgroup", 1 << 16)
    except OSError:
        return False
    return any(word in cgroup for word in ("docker", "kubepods", "containerd", "libpod", "lxc"))


def lease_over(age: float, lease: float) -> bool:
    """Whether a host seen `age` seconds ago (by the store's clock) is gone under a
    `--host-lease` of `lease`. 0 means every other host is gone, even one seen within the
    same second (file times may count whole seconds)."""
    return lease == 0 or age > lease


def host_key(host: str) -> str:
    """The name a host's files in a store and a cache go by: its lease, its registration."""
    return short_key(host.encode("utf-8", "surrogateescape"))


def lease_path(store_dir: str, host: str) -> str:
    return os.path.join(store_dir, LEASES, f"{host_key(host)}.json")


def _open_leases(store_dir: str, *, create: bool) -> int | None:
    """A descriptor of `<store>/hosts`, opened without following a link (one planted there
    would lead every lease elsewhere: then no lease is read or written), or None."""
    from uvrefs.files import open_dir

    path = os.path.join(store_dir, LEASES)
    if create:
        try:
            os.mkdir(path)
        except OSError:
            pass
    try:
        return open_dir(path)
    except OSError:
        return None


def hostname() -> str:
    """This machine's host name, as `socket.gethostname()` gives it: on POSIX both are the
    kernel's node name (`uname`), read here without importing socket (~2.5 ms, on every
    recording). A test pins the two together."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


def renew(store_dir: str, host: str, *, every: float = RENEW_EVERY) -> bool:
    """Say this host is alive: write its lease unless one younger than `every` (by its
    mtime) that lists this host's network filesystems as they are now is there already.
    A lease a newer uvrefs wrote is never written over: its time is renewed (its mtime),
    so the host is alive whichever uvrefs it runs. Best effort (a read-only store cannot
    hold it). True if the lease had expired before (the host was away longer than the
    default lease: others may have judged its envs gone)."""
    import json

    from uvrefs.files import write_atomic

    fd = _open_leases(store_dir, create=True)
    if fd is None:
        return False
    try:
        name = os.path.basename(lease_path(store_dir, host))
        known = _read_lease(fd, name)
        now = time.time()
        mounts = network_mounts()
        # A lease is written when it is `every` old or more by this host's clock; a clock
        # that differs from the store's (either way) only makes it written more often.
        fresh = known is not None and abs(now - known.seen) < every
        if known is not None and known.newer:
            if not fresh:
                try:
                    os.utime(name, dir_fd=fd, follow_symlinks=False)
                except (OSError, NotImplementedError):
                    pass
            return False
        if fresh and known is not None and [list(m) for m in known.mounts] == mounts:
            return False
        doc = {
            "format": FORMAT,
            "host": host,
            "seen": now,
            "name": hostname(),
            "container": in_container(),
            "mounts": mounts,
        }
        try:
            write_atomic(name, json.dumps(doc), dir_fd=fd)
        except OSError:
            return False
        return known is not None and now - known.seen > HOST_LEASE
    finally:
        os.close(fd)


def store_clock(store_dir: str) -> float:
    """The time now by the clock of the filesystem `store_dir` is on (the mtime of a file
    made there now: on a network filesystem the server sets it), which lease times are
    judged against; 0.0 if nothing can be made there: then no lease can be judged, and no
    host is judged gone (this host's own clock may be hours off the store's)."""
    fd = _open_leases(store_dir, create=True)
    if fd is None:
        return 0.0
    try:
        return fs_clock(fd)
    finally:
        os.close(fd)


def fs_clock(dir_fd: int) -> float:
    """The time now by the clock of the filesystem the directory open as `dir_fd` is on
    (made there through the descriptor: never through a link, no /proc needed), 0.0 if no
    file can be made there."""
    from uvrefs.files import create_exclusive

    try:
        made, name = create_exclusive("", ".clock-", dir_fd=dir_fd)
    except OSError:
        return 0.0
    try:
        return os.fstat(made).st_mtime
    finally:
        os.close(made)
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass


def _read_lease(fd: int, name: str) -> Lease | None:
    import json

    from uvrefs.files import read_file_stat

    try:
        raw, st = read_file_stat(name, 1 << 16, dir_fd=fd)
        data = json.loads(raw)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("host"), str):
        return None
    version = data.get("format")
    listed = data.get("mounts")
    mounts = tuple(
        (m[0], m[1], m[2], m[3])
        for m in (listed if isinstance(listed, list) else [])
        if isinstance(m, list) and len(m) == 4 and all(isinstance(x, str) for x in m)
    )
    return Lease(
        data["host"],
        st.st_mtime,
        data["name"] if isinstance(data.get("name"), str) else "",
        data.get("container") is True,
        type(version) is int and version > FORMAT,
        mounts,
        isinstance(listed, list) and len(mounts) == len(listed),
    )


def leases(store_dir: str) -> dict[str, Lease]:
    """Every host's lease in a store, by host."""
    fd = _open_leases(store_dir, create=False)
    if fd is None:
        return {}
    found: dict[str, Lease] = {}
    try:
        names = sorted(os.listdir(fd))
        for name in (n for n in names if n.endswith(".json")):
            lease = _read_lease(fd, name)
            if lease is not None and name == f"{host_key(lease.host)}.json":
                known = found.get(lease.host)
                if known is None or lease.seen > known.seen:
                    found[lease.host] = lease
    except OSError:
        pass
    finally:
        os.close(fd)
    return found


def forget(store_dir: str, host: str) -> None:
    """Drop a host's lease (it is gone for good), unless a newer uvrefs wrote it."""
    fd = _open_leases(store_dir, create=False)
    if fd is None:
        return
    try:
        name = f"{host_key(host)}.json"
        known = _read_lease(fd, name)
        if known is not None and not known.newer:
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                pass
    finally:
        os.close(fd)


def parse_host_lease(text: str) -> float:
    """`--host-lease`: a duration of 0 (every other host is gone: a CI job's restored
    cache) or at least MIN_HOST_LEASE, so that a host renewing its lease every
    RENEW_EVERY is never judged gone while it runs commands."""
    from uvrefs.errors import UsageError
    from uvrefs.units import parse_duration

    seconds = parse_duration(text, "--host-lease")
    if 0 < seconds < MIN_HOST_LEASE:
        raise UsageError(
            f"--host-lease {text!r}: use 0 or at least 1h (a host renews its lease every "
            "10 minutes, so a shorter one would judge hosts gone that are running)"
        )
    return seconds


# ---------------------------------------------------------------- shared filesystems


class SharedPlace(NamedTuple):
    """Where an env is on a filesystem other hosts may mount too: the filesystem's family
    (`nfs` for nfs and nfs4), its server (`fs1` of `fs1:/export`, `user@host` for sshfs; a
    source with no `:/` is its own), and the env's path on that server. Any host that
    mounts the server's directory holding it (at any mount point) sees the same env."""

    family: str
    source: str
    path: str


def shared_place(path: str) -> SharedPlace | None:
    """The shared place of a (real) path, if it lies on a network filesystem."""
    from uvrefs.envs import mount_of

    real = os.path.realpath(path)
    mount = mount_of(real)
    family = NETWORK_FS.get(mount.fstype) if mount is not None else None
    if mount is None or family is None:
        return None
    return _within(real, mount.point, family, mount.source, mount.root)


def _within(path: str, point: str, family: str, source: str, root: str) -> SharedPlace:
    server, base = _base(source, root)
    below = os.path.relpath(path, point)
    within = os.path.normpath(os.path.join(base, below)) if below != "." else base
    return SharedPlace(family, server, within)


def _base(source: str, root: str) -> tuple[str, str]:
    """(server, the mount's directory on it) of a mount: `fs1:/export/home` mounted with
    root `/` and `fs1:/export` with root `/home` are both fs1's `/export/home`, so hosts
    that mount an export at different depths agree. A source with no `:/` (a GPFS device,
    a 9p or virtiofs tag) is its own server, its root the directory."""
    cut = source.find(":/")
    if cut <= 0:
        return source, os.path.normpath(root or "/")
    return source[:cut], os.path.normpath(os.path.join(source[cut + 1 :], root.lstrip("/")))


def network_mounts() -> list[list[str]]:
    """This host's network filesystems, [mount point, family, source, root] each, and any
    other filesystem mounted below one (family "", local), so that a path below it is not
    taken for the network filesystem's (a lease says them: another host maps this host's
    paths to where it sees them)."""
    from uvrefs.envs import mounts

    table = mounts() or []
    network = [m for m in table if m.fstype in NETWORK_FS]
    points = [m.point.rstrip("/") + "/" for m in network]
    return [
        [m.point, NETWORK_FS.get(m.fstype, ""), m.source, m.root]
        for m in table
        if m.fstype in NETWORK_FS or any(m.point.startswith(p) for p in points)
    ]


def place_on(mounts: Iterable[tuple[str, str, str, str]], path: str) -> SharedPlace | None:
    """Where a path of another host is, by that host's network mounts (its lease): the
    place on the filesystem mounted at the longest mount point holding it; None if the
    path is on none of them (local to that host)."""
    best: tuple[str, str, str, str] | None = None
    for mount in mounts:
        point = mount[0]
        if path == point or path.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= len(best[0]):  # the last mounted
                best = mount
    if best is None or not best[1] or not os.path.isabs(path):
        return None
    return _within(path, *best)


def local_path(place: SharedPlace, mounts: Iterable[object] | None = None) -> str | None:
    """Where a shared place is on this host, if its filesystem is mounted here (the same
    family and source, a mount whose root holds the path); None otherwise."""
    from uvrefs.envs import Mount
    from uvrefs.envs import mounts as current

    table = list(mounts) if mounts is not None else current() or []
    best: tuple[int, str] | None = None
    for mount in table:
        assert isinstance(mount, Mount)
        if NETWORK_FS.get(mount.fstype) != place.family:
            continue
        server, base = _base(mount.source, mount.root)
        if server != place.source:
            continue
        if place.path != base and not place.path.startswith(base.rstrip("/") + "/"):
            continue
        here = os.path.normpath(os.path.join(mount.point, os.path.relpath(place.path, base)))
        if best is None or len(base) > best[0]:
            best = (len(base), here)
    return best[1] if best else None


def hides_link_counts(path: str) -> str | None:
    """The filesystem type of `path` if its clients cannot see the server's link counts
    (sshfs: every file has st_nlink 1), else None."""
    from uvrefs.envs import mount_of

    mount = mount_of(path)
    return mount.fstype if mount is not None and mount.fstype in HIDDEN_LINK_COUNTS else None


def local_locks(path: str) -> str | None:
    """Why `flock` on `path` is local to this host, if its filesystem says so (an sshfs or
    other FUSE mount, an NFS mount with `nolock` or `local_lock=`), else None."""
    from uvrefs.envs import mount_of

    mount = mount_of(path)
    if mount is None:
        return None
    options = set(mount.options.split(","))
    if mount.fstype.startswith("fuse."):
        return f"{mount.fstype} keeps locks local to each host that mounts it"
    if NETWORK_FS.get(mount.fstype) == "nfs":
        if "nolock" in options:
            return "an NFS mount with `nolock`: locks are local to each host"
        local = next(
            (o for o in options if o.startswith("local_lock=") and o != "local_lock=none"), None
        )
        if local:
            return f"an NFS mount with `{local}`: those locks are local to each host"
    if mount.fstype == "lustre" and "localflock" in options:
        return "a Lustre mount with `localflock`: locks are local to each host"
    if mount.fstype == "lustre" and "noflock" in options:
        return "a Lustre mount with `noflock`: `flock` fails there (uv's lock with it)"
    return None


@cache
def local_homes() -> tuple[str, ...]:
    """Home directories of local users, from the user database (not from `$HOME`): their
    default refs stores are peers, and no holder is ever above one of them."""
    try:
        import pwd

        return tuple(sorted({p.pw_dir for p in pwd.getpwall() if p.pw_dir and p.pw_dir != "/"}))
    except (ImportError, OSError):
        return ()
