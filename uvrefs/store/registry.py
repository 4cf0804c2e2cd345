"""The registry of a cache's refs stores: each store that tracks a cache says so in the
cache (a file per store and host in the newest sdists bucket, `<store path key>.<host
key>.<store id>`, holding the store's path), so a collect run with any other store (another
user, another `UVREFS_DIR`, another host) finds it (`peer_stores`), and a store it cannot
read blocks frees while its host renews the registration. Written as often as a lease
(`register_store`), dropped when a host is forgotten (`unregister_host`)."""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from pathlib import Path

from uvrefs.cache import Cache
from uvrefs.hosts import local_homes
from uvrefs.store.refs import RefsStore
from uvrefs.store.stamps import short_key
from uvrefs.tuples import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

REGISTRY = ".uvrefs-stores"  # in the cache's sdists bucket: one file per refs store tracking it


def registry_name(store_dir: Path) -> str:
    return short_key(os.fsencode(os.path.realpath(store_dir)))


def registry_dir(cache: Cache) -> Path:
    """Where stores register: a directory in the newest sdists bucket, which `uv cache
    prune` keeps (it deletes unknown top-level entries of the cache, and with `--ci` only
    the unpacked parts of built revisions). Older uvrefs used `<cache>/.uvrefs-stores`."""
    buckets = [d for d in cache.pointer_dirs if d.name.startswith("sdists-v")]
    newest = max(buckets, key=lambda d: int(d.name.rpartition("-v")[2]), default=None)
    return (newest or cache.root) / REGISTRY


def registry_dirs(cache: Cache) -> list[Path]:
    """Every registry a store of this cache may be listed in (every sdists bucket's, and
    the cache root's from older uvrefs)."""
    return [d / REGISTRY for d in cache.pointer_dirs if d.name.startswith("sdists-v")] + [
        cache.root / REGISTRY
    ]


def register_store(cache: Cache, store_dir: Path, host: str) -> None:
    """Say in the cache that `store_dir` tracks it, for `host`, so a collect run with any
    other store (another user, another UVREFS_DIR, another host) treats this store's
    environments as roots, or, where it cannot read this store, frees nothing while
    `host` renews the registration (its mtime, as often as a lease). Best effort: a
    read-only cache cannot hold it (the other stores' collects then find this one only at
    the default locations or where they saw it before)."""
    from uvrefs.hosts import RENEW_EVERY, host_key

    registry = registry_dir(cache)
    if registry.parent == cache.root:
        return  # no sdists bucket yet (uv makes one whenever it runs): next time
    from uvrefs.store.stamps import store_id

    own = store_id(str(store_dir), create=True)
    name = registration_name(registry_name(store_dir), host_key(host), own)
    try:
        st: os.stat_result | None = os.lstat(registry / name)
    except OSError:
        st = None
    if st is not None and abs(time.time() - st.st_mtime) < RENEW_EVERY:
        return
    from uvrefs.files import write_atomic

    try:
        # Through descriptors opened without following links, from the cache root down:
        # a link planted as the bucket or the registry is never made into, chmod-ed or
        # written through.
        bucket = open_registry(cache.root, registry.parent)
        try:
            try:
                os.mkdir(REGISTRY, dir_fd=bucket)
                made = True
            except FileExistsError:
                made = False
            fd = open_registry(cache.root, registry, below=bucket)
        finally:
            os.close(bucket)
        try:
            if st is not None and stat.S_ISREG(st.st_mode):
                os.utime(name, dir_fd=fd, follow_symlinks=False)
                return
            if made and os.fstat(fd).st_uid == os.geteuid():
                os.fchmod(fd, 0o1777)  # sticky: every user registers, none replaces another
            write_atomic(name, os.fsdecode(os.path.realpath(store_dir)), dir_fd=fd)
        finally:
            os.close(fd)
    except (OSError, NotImplementedError, ValueError):
        pass


def open_registry(root: Path, directory: Path | str, *, below: int | None = None) -> int:
    """A descriptor of `directory` (a registry or its bucket) in the cache at `root`,
    opened one component at a time from the root without following a link or crossing
    a mount (`files.open_dir_below`); from `below` (the descriptor of its parent) for its
    last component only. Raises OSError (ValueError if it is not in the cache)."""
    from uvrefs.files import open_dir, open_dir_below

    parts = Path(directory).relative_to(root).parts
    if below is not None:
        return open_dir_below(below, parts[-1:])
    top = open_dir(str(root))
    try:
        return open_dir_below(top, parts)
    finally:
        os.close(top)


def unregister_host(cache_root: Path, key: str) -> int:
    """Drop every registration the host whose `hosts.host_key` is `key` made in this cache
    (it was forgotten: gone for good). Best effort; regular files only, through the
    registry's descriptor. How many went."""
    count = 0
    try:
        buckets = [b for b in os.listdir(cache_root) if re.fullmatch(r"sdists-v\d+", b)]
    except OSError:
        return 0
    for registry in [cache_root / b / REGISTRY for b in buckets] + [cache_root / REGISTRY]:
        try:
            fd = open_registry(cache_root, registry)
        except (OSError, ValueError):
            continue
        try:
            for name in os.listdir(fd):
                named = parse_registration(name)
                if named is not None and named[0] == key:
                    try:
                        if stat.S_ISREG(os.lstat(name, dir_fd=fd).st_mode):
                            os.unlink(name, dir_fd=fd)
                            count += 1
                    except OSError:
                        pass
        except OSError:
            pass
        finally:
            os.close(fd)
    return count


def registration_name(store_key: str, host_key: str, store_id: str | None) -> str:
    """A registration's file name: `<store path key>.<host key>.<store id>` ("none" for a
    store without an id). `parse_registration` reads it back."""
    return f"{store_key}.{host_key}.{store_id or 'none'}"


def parse_registration(name: str) -> tuple[str, str | None] | None:
    """(host key, store id or None) of a registration's file name; None for one an older
    uvrefs wrote, which named no host (`<store path key>` alone)."""
    parts = name.split(".")
    if len(parts) < 2:
        return None
    return parts[1], (parts[2] if len(parts) == 3 and parts[2] != "none" else None)


class Registration(NamedTuple):
    """A store's registration in the cache by a host (`register_store`):
    `<store path key>.<host key>.<store id>`, holding the store's path."""

    path: str | None  # the store, where its host sees it (None: cannot be read)
    key: str  # `hosts.host_key` of that host
    store: str | None  # the store's own id (`stamps.store_id`), None if not known
    mtime: float  # when it last said so (the clock of the cache's filesystem)
    registry: str  # the directory it is in
    name: str
    problem: str | None = None  # the registry itself cannot be listed: why


def peer_stores(
    cache: Cache, store: RefsStore, remembered: Iterable[str]
) -> tuple[list[str], list[Registration]]:
    """Every other store of this cache: registered in the cache, remembered by ours, or at
    the default location of a local user's state directory. A peer is a directory holding
    a store, or one we may not read (then it blocks every free). And every registration
    that names its host (older uvrefs named none)."""
    from uvrefs.store import stamps

    mine = os.path.realpath(store.dir)
    found: set[str] = set(remembered)
    registrations: list[Registration] = []
    for registry in registry_dirs(cache):
        try:
            fd = open_registry(cache.root, registry)
        except FileNotFoundError:
            continue
        except OSError as exc:  # what is registered there cannot be known: nothing goes
            if exc.errno == errno.ELOOP:
                exc.strerror = "a symbolic link uvrefs never made"
            why = f"the store registry {registry} cannot be listed ({exc.strerror}); move it away"
            registrations.append(Registration(None, "", None, 0.0, str(registry), "", why))
            continue
        try:
            names = os.listdir(fd)
            found_here = [(name, _read_small(name, fd)) for name in names if name[:1] != "."]
        except OSError as exc:
            why = f"the store registry {registry} cannot be listed ({exc.strerror}); move it away"
            registrations.append(Registration(None, "", None, 0.0, str(registry), "", why))
            continue
        finally:
            os.close(fd)
        # (a name starting with "." is a registration being written, `files.write_atomic`)
        for name, (text, mtime) in found_here:
            path = text if text and os.path.isabs(text) else None
            if path is not None:
                found.add(path)
            named = parse_registration(name)
            if named is not None:
                host, store_of = named
                registrations.append(Registration(path, host, store_of, mtime, str(registry), name))
    for home in local_homes():
        state = os.path.join(home, ".local", "state", "uvrefs")
        candidate = stamps.store_dir(state, str(cache.root))
        if os.path.isdir(candidate):
            found.add(os.path.realpath(candidate))
    peers = sorted(
        p
        for p in found
        if os.path.realpath(p) != mine
        and (os.path.lexists(os.path.join(p, "store.json")) or _unreadable_dir(p))
    )
    return peers, registrations


def _unreadable_dir(path: str) -> bool:
    try:
        os.listdir(path)
    except PermissionError:
        return True
    except OSError:
        return False
    return False


def _read_small(name: str, dir_fd: int, limit: int = 4096) -> tuple[str | None, float]:
    """A registry file's text and mtime (its name in the registry's descriptor): a regular
    file, not a link, not a FIFO, a few bytes."""
    from uvrefs.files import read_file_stat

    try:
        raw, st = read_file_stat(name, limit, dir_fd=dir_fd)
    except OSError:
        try:  # not a file uvrefs writes (a FIFO, a link, too big): its age all the same
            return None, os.lstat(name, dir_fd=dir_fd).st_mtime
        except OSError:
            return None, 0.0
    return os.fsdecode(raw).strip() or None, st.st_mtime
