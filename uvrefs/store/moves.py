"""A cache that moves keeps its store.

A store is keyed by the real path of its cache (`stamps.store_dir`), so a cache found at
another path (a CI cache restored in another workspace: self-hosted runners, GitLab's
concurrent jobs; a cache moved with `mv`) finds no store at its key. What it brought
along says which store is its own: the entries a store tracks are the cache's archive
ids (`archive-v0/<id>`: 16 random characters of a 64-letter alphabet, 96 bits), which no
other cache holds unless it was copied from this one. So when a cache has no store at its
key, `locate.find_store` calls `follow`, which looks at the state dir's other stores
(`caches/*/store.json` names the cache each was made for) and moves the one that tracks
this cache to the key, under that store's lock, saying in `store.json` where it came from.

Which store is this cache's (`survey`, `qualifies`):

- **Most of what it tracks is here**: more than half of its `.refs` name archives this
  cache holds (and at least one). One shared id already proves shared history (chance
  is 2^-96 a pair), so the bar is not against chance: it is against a store that tracks
  a cache that merely shares part of this one's past (one copied from it long ago and
  grown apart, or a few archives copied across by hand), whose envs and records describe
  another cache. A store restored with its cache has every entry it tracks there but
  those something other than uvrefs removed since (`uv cache clean PKG`), so it passes by
  a wide margin. Of several, the one sharing the most entries is taken (then the larger
  share, then the store touched last).
- **Its own cache is not still there**: a store whose cache path still holds a uv cache
  (`CACHEDIR.TAG`, `.lock` or a bucket) is that cache's, so never taken (two live caches,
  one copied from the other, keep their own stores), except a copy that the cache there
  provably does not use: its registry (`sdists-vN/.uvrefs-stores/`, where every store
  tracking a cache registers at each record and collect) is readable and does not name
  this store's directory. That is a CI job's restored state dir, next to another job's
  workspace still on disk. This cache's own directory under another path (a bind mount)
  is never taken from: the store serves that path too, and a peer store is a root.
- **It is a store this uvrefs wrote**: `store.json` of format 1 naming an absolute path;
  its directories real ones, never links (`stamps.check_store`).

Everything here reads little: the key directory exists on every call but the first at a
new path, and then `caches/` is listed, each other store's `store.json` read and its
`refs/` listed, and the cache's archive buckets listed once."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path

from uvrefs import files
from uvrefs.cache import ENTRY_ID
from uvrefs.errors import StoreError
from uvrefs.store import stamps
from uvrefs.tuples import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

KEY = re.compile(r"[0-9a-f]{20}")  # a store's directory name (`stamps.store_dir`)
KEEP_MOVES = 10  # moves remembered in store.json: the first (where it was made) and the last
LOCK_TIMEOUT = 60.0


class Seen(NamedTuple):
    """Another store in the state dir, as `survey` found it."""

    dir: str
    cache: str | None  # the cache its store.json names (None: no store.json this uvrefs reads)
    tracked: int  # entries it has refs for
    shared: int  # of those, archives this cache holds
    cache_there: bool | None  # whether its cache's path still holds a uv cache (None: unknown)
    refused: str | None  # why it can never be this cache's store, None if it may be
    info: dict[str, Any] | None = None


def qualifies(seen: Seen) -> bool:
    """Whether `seen` is this cache's store: allowed, and most of what it tracks is here."""
    return seen.refused is None and seen.shared >= 1 and 2 * seen.shared > seen.tracked


def read_info(store: str) -> dict[str, Any] | None:
    """A store's `store.json` as this uvrefs writes it (format 1, an absolute cache path),
    else None: missing, unreadable, a link, or a newer uvrefs's (never rewritten)."""
    try:
        data = json.loads(files.read_file(os.path.join(store, "store.json"), files.SMALL))
    except (OSError, ValueError, RecursionError):
        return None
    if not (isinstance(data, dict) and type(data.get("format")) is int and data["format"] == 1):
        return None
    cache = data.get("cache")
    return data if isinstance(cache, str) and os.path.isabs(cache) else None


def archive_ids(cache_root: str) -> set[str]:
    """Every archive id in the cache's archive buckets."""
    found: set[str] = set()
    try:
        buckets = [b for b in os.listdir(cache_root) if re.fullmatch(r"archive-v\d+", b)]
    except OSError:
        return found
    for bucket in buckets:
        try:
            found.update(
                n for n in os.listdir(os.path.join(cache_root, bucket)) if ENTRY_ID.fullmatch(n)
            )
        except OSError:
            continue
    return found


def tracked_ids(store: str) -> set[str]:
    try:
        names = os.listdir(os.path.join(store, "refs"))
    except OSError:
        return set()
    return {n[: -len(".refs")] for n in names if n.endswith(".refs") and ENTRY_ID.fullmatch(n[:-5])}


def survey(state_dir: str, cache_root: str, ids: set[str] | None = None) -> list[Seen]:
    """Every store in the state dir but the one at this cache's key, with what it tracks
    of this cache and whether it may be taken (see the module's rules)."""
    key = stamps.store_dir(state_dir, cache_root)
    caches = os.path.join(state_dir, "caches")
    try:
        names = sorted(n for n in os.listdir(caches) if KEY.fullmatch(n))
    except OSError:
        return []
    if ids is None:
        ids = archive_ids(cache_root)
    mine = os.path.realpath(cache_root)
    found = []
    for name in names:
        store = os.path.join(caches, name)
        if store == key:
            continue
        try:
            if not stat.S_ISDIR(os.lstat(store).st_mode):
                continue
            stamps.check_store(store)
        except (OSError, StoreError):
            continue
        info = read_info(store)
        tracked = tracked_ids(store)
        shared = len(tracked & ids)
        if info is None:
            why = "its store.json cannot be read by this uvrefs"
            found.append(Seen(store, None, len(tracked), shared, None, why))
            continue
        there, refused = _its_cache(info["cache"], mine, store)
        found.append(Seen(store, info["cache"], len(tracked), shared, there, refused, info))
    return found


def _its_cache(path: str, mine: str, store: str) -> tuple[bool | None, str | None]:
    """Whether the cache `store` was made for is still at `path`, and if so why the store
    stays its own (None: it may be taken)."""
    real = os.path.realpath(path)
    if real == mine:
        return True, None  # made for this very path (a move cut short): ours
    try:
        st = os.lstat(real)
    except (FileNotFoundError, NotADirectoryError):
        return False, None
    except OSError as exc:
        return None, f"whether its cache {path} is still there cannot be told ({exc.strerror})"
    if not stat.S_ISDIR(st.st_mode) or not _is_uv_cache(real):
        return False, None
    try:
        if os.path.samestat(st, os.stat(mine)):
            return True, f"it belongs to this cache as {path} (the same directory)"
    except OSError:
        pass
    registered = _registered_stores(real)
    if registered is None:
        return True, f"its cache {path} is still there (and says nothing of its stores)"
    from uvrefs.store.registry import registry_name

    if registry_name(Path(store)) in registered:
        return True, f"its cache {path} is still there and uses it"
    return True, None  # a copy the cache there does not use (another job's workspace)


def _is_uv_cache(path: str) -> bool:
    try:
        names = os.listdir(path)
    except OSError:
        return True  # cannot be read: taken as a cache, so never its store
    return any(n in ("CACHEDIR.TAG", ".lock") or re.fullmatch(r"[a-z]+-v\d+", n) for n in names)


def _registered_stores(cache: str) -> set[str] | None:
    """Names in the cache's store registries (`registry.registry_dirs`), None if it has none
    that can be listed."""
    from uvrefs.store.registry import REGISTRY

    try:
        buckets = [b for b in os.listdir(cache) if re.fullmatch(r"sdists-v\d+", b)]
    except OSError:
        return None
    names: set[str] | None = None
    for registry in [os.path.join(cache, b, REGISTRY) for b in buckets] + [
        os.path.join(cache, REGISTRY)
    ]:
        try:
            if stat.S_ISLNK(os.lstat(registry).st_mode):
                continue
            listed = os.listdir(registry)
        except OSError:
            continue
        # `<store key>` (older uvrefs) or `<store key>.<host key>`: the store's key
        names = (names or set()) | {n.partition(".")[0] for n in listed}
    return names


def best(seen: list[Seen]) -> Seen | None:
    """The store this cache brought along, if one qualifies."""
    fit = [s for s in seen if qualifies(s)]
    if not fit:
        return None
    return max(fit, key=lambda s: (s.shared, s.shared / s.tracked, _touched(s.dir), s.dir))


def _touched(store: str) -> int:
    try:
        return os.stat(os.path.join(store, "refs")).st_mtime_ns
    except OSError:
        return 0


def follow(state_dir: str, cache_root: str, key: str) -> Seen | None:
    """Move the store this cache brought from an earlier path to `key`, where nothing is;
    return it (None: there was none, or another command moved or made one meanwhile).
    Under the moved store's lock, after which it is looked at again; `store.json` then
    names this cache and the moves (the first, where it was made, and the last ones)."""
    ids = archive_ids(cache_root)
    if not ids:
        return None
    found = best(survey(state_dir, cache_root, ids))
    if found is None or found.info is None:
        return None
    stamps.check_store(key)  # the state dir and `caches` are uvrefs's own
    where = f"the store at {found.dir} (made for the cache at {found.cache})"
    lock = os.path.join(found.dir, "store.lock")
    fd = None
    try:
        try:
            fd = files.open_lock(lock, create=True)
        except FileNotFoundError:
            return None  # moved away meanwhile: another command took it
        except OSError:  # a store we may only read: a read-only descriptor locks too
            fd = files.open_lock(lock, create=False, writable=False)
        _lock(fd, where)
        try:
            still = os.path.samestat(os.fstat(fd), os.lstat(lock))
        except OSError:
            still = False
        if not still or os.path.lexists(key) or read_info(found.dir) != found.info:
            return None  # another command was first
        if not _move(found, key, os.path.realpath(cache_root)):
            return None
    except FileNotFoundError:
        return None  # moved away meanwhile
    except OSError as exc:
        raise StoreError(
            f"cannot move {where} to {key}, this cache's: {exc.strerror}; set UVREFS_DIR to "
            "a directory you can write"
        ) from None
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock
    return found


def _lock(fd: int, where: str) -> None:
    """The store's lock, as `RefsStore.locked` takes it (filelock's is a `flock` on
    `store.lock`), but on a descriptor opened here: filelock would make the directory
    again at the old path if another command moved the store meanwhile."""
    import fcntl
    import time

    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"{where} stayed locked for {LOCK_TIMEOUT:g}s while this cache took it "
                    "over; is another uvrefs stuck? retry later"
                ) from None
            time.sleep(0.02)


def _move(found: Seen, key: str, cache: str) -> bool:
    """The store's stamps go first: a stamp lets a record stand in for a scan of its env
    while the env is unchanged, but the record was made against the cache at the old
    path, and a restored cache is a copy (other files: an env still linking the old one
    uses none of them), so every env is scanned once more. Then store.json (a move cut
    short here leaves a store naming this cache, which the next command takes), then one
    rename, atomic on the state dir's filesystem. False if a store was made at the key
    meanwhile (this one is then left where it was)."""
    from uvrefs.store.refs import now

    assert found.info is not None and found.cache is not None
    envs = os.path.join(found.dir, stamps.ENVS)
    for name in os.listdir(envs) if os.path.isdir(envs) else []:
        if name.endswith(".stamp"):
            os.unlink(os.path.join(envs, name))
    old = found.info
    from uvrefs.store import fields

    known = old.get("moves")
    moves = [fields.read_store_move(m) for m in known] if isinstance(known, list) else []
    kept = [m for m in moves if m is not None]  # one this uvrefs cannot read goes
    if os.path.realpath(found.cache) != cache:
        kept.append(fields.StoreMove(found.cache, now()))
    if len(kept) > KEEP_MOVES:
        kept = kept[:1] + kept[1 - KEEP_MOVES :]
    info = fields.store_info_doc(fields.StoreInfo(cache, tuple(kept)))
    path = os.path.join(found.dir, "store.json")
    files.write_atomic(path, json.dumps(info))
    try:
        os.rename(found.dir, key)
    except OSError as exc:
        try:
            files.write_atomic(path, json.dumps(old))
        except OSError:
            pass
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False  # a store was made at the key meanwhile
        raise
    return True
