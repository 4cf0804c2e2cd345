"""Fingerprint stamps: what an environment looked like when its refs were last written.
Read before every tracked install to skip unchanged envs, so plain files and `os` only.

Also owns how the store is keyed (one directory per canonical cache path), so the refs
store and the stamps can never disagree on it."""

from __future__ import annotations

import os
import sys

from uvrefs import files

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any


def _builtin_sha256() -> Callable[[bytes], Any]:
    """SHA-256 from Python's own built-in module (`_sha2` from 3.12, `_sha256` before), not
    `hashlib`: importing hashlib loads OpenSSL (~3 ms, on every install), for the same
    digest. A Python built without them (some distributions' FIPS builds) uses hashlib."""
    for name in ("_sha2", "_sha256"):
        try:
            return __import__(name).sha256  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    from hashlib import sha256

    return sha256


_sha256 = _builtin_sha256()


def short_key(data: bytes) -> str:
    """The first 20 hex digits of `data`'s SHA-256: how the store names a cache's store,
    an env's files, a host's lease and a store's registration. These names are on disk in
    every existing store, so this must stay SHA-256 (a test pins it to hashlib's)."""
    digest: str = _sha256(data).hexdigest()
    return digest[:20]


def store_dir(state_dir: str, cache_root: str) -> str:
    """The part of the state dir that belongs to one cache, keyed by its canonical path."""
    key = short_key(os.fsencode(os.path.realpath(cache_root)))
    return os.path.join(state_dir, "caches", key)


STORE_ID = "store-id"  # a store's own id: what its registrations in the cache name


def store_id(store: str, *, create: bool = False) -> str | None:
    """The store's own id (20 random hex digits, made once, with `create`), which its
    registrations in the cache name, so another host tells it from any other store at the
    same path; None if there is none (yet) or it cannot be read."""
    import re

    from uvrefs.files import create_exclusive, read_file

    path = os.path.join(store, STORE_ID)
    for _ in range(2):
        try:
            text = read_file(path, 64).decode("ascii", "replace").strip()
            return text if re.fullmatch(r"[0-9a-f]{20}", text) else None
        except FileNotFoundError:
            if not create:
                return None
        except OSError:
            return None
        try:  # written whole under a temp name, then linked into place unless one is there
            fd, tmp = create_exclusive(store, f".{STORE_ID}-")
            try:
                os.fchmod(fd, 0o644)  # every user of a shared store reads it
                os.write(fd, os.urandom(10).hex().encode())
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        except OSError:
            return None
    return None


def env_key(env: str) -> str:
    return short_key(os.fsencode(env))


ENVS = "envs"  # a store's per-environment records and stamps


def stamp_path(store: str, env: str) -> str:
    """Where `env`'s fingerprint at its last record lives in a store (`store_dir`)."""
    return os.path.join(store, ENVS, env_key(env) + ".stamp")


def check_store(store: str) -> None:
    """Refuse a store uvrefs did not make, before reading or writing it: the state dir
    (`UVREFS_DIR`, which may be a symlink) must be a directory, and the directories uvrefs
    creates in it (`caches`, the store, its `refs` and `envs`) real directories, never
    symlinks, which would lead every read and write elsewhere. Missing ones are fine."""
    import stat

    from uvrefs.errors import StoreError

    caches = os.path.dirname(store)
    state = os.path.dirname(caches)
    if os.path.exists(state) and not os.path.isdir(state):
        raise StoreError(
            f"the state directory {state} is not a directory; set UVREFS_DIR (or --state-dir) "
            "to a directory"
        )
    for path in (caches, store, os.path.join(store, "refs"), os.path.join(store, ENVS)):
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(
                f"cannot read the refs store at {path}: {exc.strerror}; set UVREFS_DIR to a "
                "directory you can read"
            ) from None
        if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a directory"
            raise StoreError(
                f"{path} is {what}, which uvrefs never made there; move it away (the store "
                "is rebuilt as you install, or at once with `uvrefs adopt`)"
            )


STAMP_LIMIT = 64 << 20  # bytes; a fingerprint is a few lines per site directory


RACY_NS = 2_000_000_000  # a change this close to a look may not show in it (coarse clocks)


def read_stamp(path: str) -> str | None:
    try:
        return files.read_file(path, STAMP_LIMIT).decode("utf-8", "surrogateescape")
    except OSError:
        return None


def read_stamp_taken(path: str) -> tuple[str, int] | None:
    """A stamp and when its fingerprint was taken (its mtime, `write_stamp`)."""
    try:
        raw, st = files.read_file_stat(path, STAMP_LIMIT)
    except OSError:
        return None
    return raw.decode("utf-8", "surrogateescape"), st.st_mtime_ns


def write_stamp(path: str, fingerprint: str, taken_ns: int | None = None) -> None:
    """Replace an env's stamp, never one a newer uvrefs wrote (a JSON document with a
    newer `format`: an older uvrefs never writes over what a newer one wrote). Its mtime
    says when the fingerprint was taken (`taken_ns`, `time.time_ns()` just before it; the
    time of writing without it), which `settled` judges it by; a stamp whose time cannot
    be set is removed."""
    old = read_stamp(path)
    if old is not None and old.startswith("{") and _newer_doc(old):
        return
    files.write_atomic(path, fingerprint)
    if taken_ns is not None:
        try:
            os.utime(path, ns=(taken_ns, taken_ns), follow_symlinks=False)
        except OSError:
            try:
                os.unlink(path)  # never a stamp that says it was taken later than it was
            except OSError:
                pass


def settled(fingerprint: str, taken_ns: int) -> bool:
    """Whether a stamp of `fingerprint` taken at `taken_ns` can vouch for an env's record:
    every site directory's mtime in it is older than the taking by more than `RACY_NS`.
    Otherwise a change made after the fingerprint within the same tick of a coarse clock
    (a filesystem keeping seconds; a reinstall that keeps every dist-info name) would not
    show in it, and the stamp would vouch for a record that no longer says what the env
    uses. (As git treats an index entry "racily clean".)"""
    if not fingerprint:
        return False
    for line in fingerprint.split("\n"):
        parts = line.split("\t")
        if len(parts) < 3 or not parts[1].isdigit() or taken_ns - int(parts[1]) < RACY_NS:
            return False
    return True


def _newer_doc(text: str) -> bool:
    import json

    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return False
    version = data.get("format") if isinstance(data, dict) else None
    return type(version) is int and version > 1


RECORDING_LOCK = "recording.lock"


def hold_recording(store: str) -> int | None:
    """Taken (shared) by a tracked command before it forks a background recorder; the
    child inherits it and holds it until its refs are written, so readers of the store
    can wait for them (`wait_for_recorders`). None if it cannot be taken: readers then
    may see the refs a moment late, which is all this protects."""
    import fcntl

    try:
        os.makedirs(store, exist_ok=True)
        fd = files.open_lock(os.path.join(store, RECORDING_LOCK), create=True)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return None
    return fd


def wait_for_recorders(store: str, timeout: float) -> bool:
    """Wait until no background recorder is writing to `store`; False if one still was
    after `timeout` seconds."""
    import fcntl
    import time

    try:
        fd = files.open_lock(os.path.join(store, RECORDING_LOCK), create=False, writable=False)
    except OSError:
        return True  # no recorder ever ran here
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.02)
            except OSError:
                return True  # not a lock file uvrefs made: no recorder holds it
    finally:
        os.close(fd)


def default_state_dir(environ: Mapping[str, str] = os.environ) -> str:
    """`UVREFS_DIR`, else the platform's user state directory. On Linux that is the XDG
    rule, computed here because importing platformdirs costs ~35 ms on every install; a
    test pins it to platformdirs' own answer."""
    if environ.get("UVREFS_DIR"):
        return os.path.abspath(os.path.expanduser(environ["UVREFS_DIR"]))
    if sys.platform == "linux":
        base = environ.get("XDG_STATE_HOME", "").strip() or os.path.expanduser("~/.local/state")
        return os.path.join(base, "uvrefs")
    from platformdirs import user_state_dir

    return user_state_dir("uvrefs", appauthor=False)
