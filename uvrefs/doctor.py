"""Health checks a user (or a bug report) needs before trusting a collector: uv and its
cache layout, the link mode in effect and whether it works here, uv's lock, and the refs
store. `repair` rebuilds refs by re-scanning every known environment."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from uvrefs import uv
from uvrefs.cache import Cache
from uvrefs.files import create_exclusive, open_lock
from uvrefs.gc.trash import TRASH_NAME
from uvrefs.hosts import hides_link_counts
from uvrefs.store.refs import CorruptRefs, RefsStore, host_id
from uvrefs.units import plural

Status = Literal["ok", "warn", "fail"]
# Bucket names of the uv releases uvrefs is tested against (tests/test_uv_versions.py):
# 0.9.30 and 0.11.33 (wheels-v5/v6, sdists-v9), 0.13.8 (wheels-v7, sdists-v10), 0.13.9
# (wheels-v8, sdists-v11); environments-v2 and archive-v0 throughout.
KNOWN_BUCKETS = {
    "archive-v0",
    "environments-v2",
    "wheels-v5",
    "wheels-v6",
    "wheels-v7",
    "wheels-v8",
    "sdists-v9",
    "sdists-v10",
    "sdists-v11",
}
FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


def diagnose(cache: Cache, store: RefsStore, uvbin: str | None) -> list[Check]:
    return [
        check_uv(uvbin),
        check_layout(cache),
        check_preview(cache),
        check_link_mode(cache, store),
        check_lock(cache),
        *check_hosts(cache, store),
        *check_store(cache, store),
        *check_store_place(cache, store),
    ]


def check_uv(uvbin: str | None) -> Check:
    if uvbin is None:
        return Check("uv", "fail", "not found on PATH (set UVREFS_UV)")
    try:
        return Check("uv", "ok", f"{uv.query(uvbin, ['--version'])} at {uvbin}")
    except Exception as exc:  # any failure to run uv is the finding itself
        return Check("uv", "fail", str(exc))


def check_layout(cache: Cache) -> Check:
    names = sorted(p.name for p in cache.archive_dirs + cache.pointer_dirs)
    unknown = [n for n in names if n not in KNOWN_BUCKETS]
    if not cache.archive_dirs:
        return Check("cache layout", "ok", f"{cache.root}: empty (no bucket yet, or cleaned)")
    if unknown:
        return Check(
            "cache layout",
            "warn",
            f"{', '.join(names)}; not yet checked against: "
            f"{', '.join(unknown)} (see docs/design.md)",
        )
    return Check("cache layout", "ok", f"{cache.root}: {', '.join(names)}")


def check_preview(cache: Cache) -> Check:
    """Which cache-related preview layouts are in effect, and the buckets of them found."""
    from uvrefs.blobs import content_buckets
    from uvrefs.gc.roots import project_envs
    from uvrefs.settings import preview_features

    found = preview_features()
    parts = [f"{name} (from {where})" for name, where in sorted(found.items())]
    parts += [f"{n} bucket (content-addressed files)" for n in content_buckets(cache)]
    centralized = project_envs(cache)
    if centralized:
        buckets = sorted({os.path.basename(os.path.dirname(p)) for p in centralized})
        plural = "s" * (len(centralized) != 1)
        parts.append(f"{len(centralized)} project environment{plural} in {', '.join(buckets)}")
    if not parts:
        return Check("uv preview layouts", "ok", "none in effect")
    return Check(
        "uv preview layouts",
        "ok",
        "; ".join(parts) + "; uvrefs supports content-addressed-cache, "
        "centralized-project-envs, venv-redirect-files and relocatable-envs-default",
    )


def check_link_mode(cache: Cache, store: RefsStore) -> Check:
    """The link mode uv will use, and whether it can work between this cache and envs
    (tried between the cache root and the directory of a tracked env, or the cwd)."""
    mode = os.environ.get("UV_LINK_MODE") or ("hardlink" if sys.platform == "win32" else "clone")
    records = store.env_records()
    target = next((Path(r.path).parent for r in records if Path(r.path).parent.is_dir()), None)
    target = target or _cwd_or_home()
    can_clone, can_link = _try_links(cache.root, target)
    effective = {
        "clone": "clone" if can_clone else ("hardlink (no reflinks here)" if can_link else "copy"),
        "hardlink": "hardlink" if can_link else "copy (different filesystems)",
    }.get(mode, mode)
    status: Status = "ok" if effective.split()[0] in ("clone", "hardlink", mode) else "warn"
    detail = f"{mode} requested, {effective} in effect between {cache.root} and {target}"
    hidden = hides_link_counts(str(cache.root))
    if hidden:
        status = "warn"
        detail += (
            f"; {hidden} hides link counts (every file shows 1 link), so an env of plain uv "
            "hard-linked to the cache cannot be seen by its links: collect judges as on a "
            "clone-mode disk (watch the directories of such envs), and its freed sizes are "
            "upper bounds"
        )
    return Check("link mode", status, detail)


def check_hosts(cache: Cache, store: RefsStore) -> list[Check]:
    """Where the cache is shared: its filesystem, the hosts with a lease in the store, and
    whether locks there reach other hosts."""
    from uvrefs.hosts import HOST_LEASE, leases, local_locks, shared_place, store_clock
    from uvrefs.units import human_duration

    checks = []
    place = shared_place(str(cache.root))
    found = leases(str(store.dir)) if store.dir.is_dir() else {}
    now = store_clock(str(store.dir)) if found else 0.0
    expired = sum(bool(now) and now - lease.seen > HOST_LEASE for lease in found.values())
    counted = (
        f"{len(found)} hosts renew a lease in this store"
        + (
            f" ({expired} not seen for {human_duration(HOST_LEASE)}: see `uvrefs hosts`)"
            if expired
            else ""
        )
        if len(found) > 1
        else "one host uses this store"
    )
    if place is not None:
        checks.append(
            Check(
                "shared cache",
                "ok",
                f"{cache.root} is on {place.family} ({place.source}): envs on it are judged by "
                f"any host that mounts it" + (f"; {counted}" if counted else ""),
            )
        )
    elif len(found) > 1:
        checks.append(Check("shared cache", "ok", counted))
    for what, path in (("uv's cache lock", cache.root), ("the refs store's lock", store.dir)):
        why = local_locks(str(path)) if path.exists() else None
        if why:
            checks.append(
                Check(
                    "locks across hosts",
                    "warn",
                    f"{what} ({path}): {why}: a collect here does not wait for uv on another "
                    "host; judging is read only and each host deletes under its own lock, "
                    "but run collect where no other host installs at the same time (its "
                    "schedule, or one collecting host)",
                )
            )
    return checks


def _cwd_or_home() -> Path:
    try:
        return Path.cwd()
    except OSError:  # run from a directory since deleted
        return Path.home()


def _try_links(cache_root: Path, target: Path) -> tuple[bool, bool]:
    """Whether a reflink and a hard link work from the cache to `target`'s filesystem.
    Every probe file has an unpredictable name, is created exclusively (never through a
    symlink someone planted beside an env) and is removed after."""
    can_clone = can_link = False
    try:
        src, src_path = create_exclusive(str(cache_root), ".uvrefs-doctor-")
    except OSError:
        return False, False
    try:
        os.write(src, b"x")
        dst = target / f".uvrefs-doctor-{os.urandom(8).hex()}"
        try:
            os.link(src_path, dst)
            can_link = True
            os.unlink(dst)
        except OSError:
            pass
        if sys.platform == "linux":
            can_clone = _try_clone(src, target)
    except OSError:
        pass
    finally:
        os.close(src)
        os.unlink(src_path)
    return can_clone, can_link


def _try_clone(src: int, target: Path) -> bool:
    import fcntl

    try:
        fd, dst = create_exclusive(str(target), ".uvrefs-doctor-")
    except OSError:
        return False
    try:
        fcntl.ioctl(fd, FICLONE, src)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(dst)


def check_lock(cache: Cache) -> Check:
    import fcntl

    path = cache.root / ".lock"
    try:
        fd = open_lock(str(path), create=True)
    except OSError:
        try:  # a cache this user may only read: a read-only descriptor can still be locked
            fd = open_lock(str(path), create=False, writable=False)
        except OSError as exc:
            return Check("cache lock", "warn", f"{path}: cannot open ({exc.strerror})")
    try:
        for mode, verdict in ((fcntl.LOCK_EX, "free"), (fcntl.LOCK_SH, "in use by uv (shared)")):
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return Check("cache lock", "ok", f"{cache.root / '.lock'}: {verdict}")
            except BlockingIOError:
                continue
        return Check("cache lock", "warn", "held exclusively (uv cache clean/prune or a collector)")
    finally:
        os.close(fd)


def check_store(cache: Cache, store: RefsStore) -> list[Check]:
    from uvrefs.envs import env_state

    ids = store.entry_ids()
    present = {a.id for a in cache.archives()}
    corrupt = []
    symlinked: set[str] = set()
    for entry in ids:
        try:
            loaded = store.load(entry)
        except CorruptRefs as exc:
            corrupt.append(f"{entry}: {exc}")
            continue
        if loaded is not None:
            symlinked.update(r.env for r in loaded.referrers if r.how == "symlink")
    stale = [i for i in ids if i not in present]
    records = store.env_records()
    states: dict[str, int] = {}
    for record in records:
        state = (
            env_state(Path(record.path), record.mount, record.mntns)[0]
            if record.host == host_id()
            else "other host"
        )
        states[state] = states.get(state, 0) + 1
    checks = [
        Check(
            "refs store",
            "ok" if os.access(store.dir, os.W_OK) or not store.dir.exists() else "fail",
            f"{store.dir}: {len(ids)} refs, {len(stale)} stale (freed elsewhere), "
            f"{len(present) - len(set(ids) & present)} untracked entries",
        ),
        Check(
            "unreadable refs",
            "fail" if corrupt else "ok",
            "; ".join(corrupt[:3])
            + (f" (+{len(corrupt) - 3} more)" if len(corrupt) > 3 else "")
            + ("; `uvrefs doctor --repair` sets them aside and re-scans" if corrupt else "none"),
        ),
        Check(
            "environments",
            "ok",
            ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none recorded",
        ),
    ]
    if symlinked:
        first = sorted(symlinked)[0]
        checks.append(
            Check(
                "symlink-mode envs",
                "warn",
                f"{plural(len(symlinked), 'environment')} "
                f"{'uses' if len(symlinked) == 1 else 'use'} symlink link mode ({first}"
                + (f" and {len(symlinked) - 1} more" if len(symlinked) > 1 else "")
                + "): their files live only in the cache, so anything that frees an entry "
                "they use (`uv cache clean`, or a collect that cannot see them) breaks them; "
                "uvrefs keeps what the envs it can find use. Prefer clone or hardlink",
            )
        )
    trash = sorted(n for n in os.listdir(cache.root) if TRASH_NAME.fullmatch(n))
    if trash:
        checks.append(
            Check(
                "trash",
                "warn",
                f"{cache.root / trash[0]} left by a killed collector; the next collect empties it",
            )
        )
    return checks


def check_store_place(cache: Cache, store: RefsStore) -> list[Check]:
    """Which path the store was made for, and when it followed this cache here (a CI cache
    restored in another workspace; `uvrefs.store.moves`); other stores in the state dir whose
    cache is not there any more (each a folder nothing uses), and a store that tracks this
    cache but was not taken, and why."""
    from uvrefs.store import moves

    state = str(store.dir.parent.parent)
    info = moves.read_info(str(store.dir))
    checks = []
    if info is not None and os.path.realpath(info["cache"]) != os.path.realpath(cache.root):
        checks.append(
            Check(
                "store location",
                "warn",
                f"{store.dir} says it was made for the cache at {info['cache']}, not "
                f"{cache.root} (copied there by hand?); it is used as this cache's store",
            )
        )
    elif info is not None:
        known = info.get("moves")
        moved = [m for m in known if _is_move(m)] if isinstance(known, list) else []
        detail = f"{store.dir}: made for this cache at {cache.root}"
        if moved:
            last = moved[-1]
            detail = (
                f"the store of this cache was made for {last['from_path']}; the cache moved "
                f"here on {_when(last['at'])} ({store.dir})"
            )
            if len(moved) > 1:
                detail += f"; it was first made for {moved[0]['from_path']}"
        checks.append(Check("store location", "ok", detail))
    others = moves.survey(state, str(cache.root))
    gone = sorted((s for s in others if s.cache_there is False), key=lambda s: str(s.cache))
    if gone:
        ours = [s for s in gone if s.shared]
        names = ", ".join(str(s.cache) for s in gone[:3]) + (
            f" and {len(gone) - 3} more" if len(gone) > 3 else ""
        )
        were = "was" if len(gone) == 1 else "were"
        text = (
            f"{plural(len(gone), 'store')} in {state}/caches {were} made for caches not "
            f"found here ({names})"
        )
        if ours:
            tracks = "tracks" if len(ours) == 1 else "track"
            text += (
                f"; {len(ours)} of them {tracks} entries of this cache (earlier paths of it "
                "whose store was not carried over)"
            )
        checks.append(
            Check("other stores", "warn", text + "; delete those whose cache will not come back")
        )
    held_back = [s for s in others if s.shared and s.refused and s.cache_there is not False]
    if held_back and not store.dir.exists():
        first = max(held_back, key=lambda s: s.shared)
        checks.append(
            Check(
                "store location",
                "ok",
                f"no store for this cache yet; {first.dir} tracks {first.shared} of its "
                f"entries but is not taken: {first.refused}",
            )
        )
    return checks


def _is_move(move: object) -> bool:
    return (
        isinstance(move, dict)
        and isinstance(move.get("from_path"), str)
        and isinstance(move.get("at"), str)
    )


def _when(at: str) -> str:
    """A store.json time, as a date and time in UTC."""
    from datetime import UTC, datetime

    try:
        return datetime.fromisoformat(at).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return at


@dataclass(frozen=True)
class Repair:
    set_aside: tuple[str, ...]
    stale_dropped: int
    envs_rescanned: int
    refs_written: int
    left: tuple[str, ...] = ()  # what repair could not prove and left as it is, and why


def repair(cache: Cache, store: RefsStore) -> Repair:
    """Rebuild what can be proven, never turning a held entry into a freed one: set refs
    this uvrefs cannot read aside (renamed, never deleted; their entries stay held until
    the file is deleted), but never a file a newer uvrefs wrote; drop refs of entries no
    longer in the cache; re-record every env of this host whose record can be read (with
    its site directories) and that still exists, and every virtual environment in place
    that referrers name but whose record is missing (a venv's layout says where its
    packages are). An env whose record cannot be read, or is missing and is not a venv
    (a `--target` dir, a system interpreter), is left unknown: its entries stay held.
    Holds uv's cache lock shared, like a tracked install."""
    from datetime import UTC, datetime

    from uvrefs.envs import ArchiveIndex, env_state
    from uvrefs.store.refs import newer_file
    from uvrefs.targets import Target
    from uvrefs.track import record_env

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    host = host_id()
    left: list[str] = []
    with uv.CacheLock(cache.root, exclusive=False, timeout=uv.lock_timeout()):
        present = {a.id for a in cache.archives()}
        view = store.read() if store.dir.is_dir() else None
        records = {p: r for p, r in (view.records if view else {}).items() if r.host == host}
        for problem in view.problems if view else []:
            left.append(f"{problem.path or '?'}: {problem.why}; its entries stay held")
        envs: dict[str, tuple[str, ...]] = {p: tuple(r.site_dirs) for p, r in records.items()}
        set_aside, stale = [], 0
        unprovable = {p.path for p in view.problems} if view else set()
        with store.locked():
            for entry in store.entry_ids():
                try:
                    refs = store.load(entry)
                except CorruptRefs:
                    path = store.refs_path(entry)
                    if newer_file(path) is not None:
                        left.append(f"{path}: written by a newer uvrefs; left as it is")
                        continue
                    path.rename(path.with_name(f"{path.name}.corrupt-{stamp}"))
                    set_aside.append(entry)
                    continue
                if entry not in present:
                    store.delete(entry)
                    stale += 1
                elif refs is not None:
                    for ref in refs.referrers:
                        if ref.host != host or ref.env in envs or ref.env in unprovable:
                            continue
                        if os.path.isfile(os.path.join(ref.env, "pyvenv.cfg")):
                            envs[ref.env] = ()
                        else:
                            unprovable.add(ref.env)
                            left.append(
                                f"{ref.env}: its record is missing and it is not a "
                                "virtual environment in place, so where its packages live "
                                "cannot be proven; its entries stay held (`uvrefs adopt` it "
                                "if it still exists)"
                            )
        index = ArchiveIndex(cache)
        rescanned = written = 0
        for env, site_dirs in sorted(envs.items()):
            if env_state(Path(env))[0] != "alive":
                continue
            result = record_env(cache, store, Target(env, site_dirs), "repair", index=index)
            rescanned += 1
            written += result.changed
    return Repair(tuple(set_aside), stale, rescanned, written, tuple(left))
