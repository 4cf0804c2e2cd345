"""The refs store: outside uv's cache (uv prune deletes whatever it does not know there),
one directory per cache keyed by the cache's canonical path, holding one `<entry>.refs`
per tracked entry and one record per tracked environment.

Writes go to a temp file in the same directory and are renamed into place; every
read-modify-write holds the store's file lock, so parallel installs never lose a ref.

The formats are defined by the pydantic models in `uvrefs.store.schema`. Loading pydantic and
the models (~110 ms) costs more than uv's own no-op install and than a whole dry run of a
10k-file cache, so this module writes with `json` and reads through a strict check of the
current format into plain tuples (`Refs`, `Ref`, `KnownEnv`); a file that check does not
accept as it is goes to the pydantic model, which accepts it (migrating it) or says what
is wrong.
`tests/test_formats.py` pins both directions to the models."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeGuard

from uvrefs import files
from uvrefs.cache import ENTRY_ID
from uvrefs.errors import StoreError
from uvrefs.store import stamps

if TYPE_CHECKING:
    from uvrefs.envs import How
    from uvrefs.footprints import Footprint
    from uvrefs.store.schema import EntryRefs, EnvRecord

FORMAT = 1  # the version of every file written here; equals schema.FORMAT (a test pins it)
REFS_SUFFIX = ".refs"
LOCK_TIMEOUT = 60.0


@cache
def host_id() -> str:
    """The host name envs are recorded under: `UVREFS_HOST` if set (CI runners that share
    one cache and store across machines set it to one name), else `machine_id()`, and in a
    container `machine_id():hostname` (every container of an image has the image's machine
    id; each has a host name of its own). Each command that runs with `UVREFS_HOST` records
    it in the store as a name of this machine (`Settings.hosts`), so a collect run without
    it (a scheduler's) still judges the envs recorded under it as this machine's own."""
    if os.environ.get("UVREFS_HOST"):
        return os.environ["UVREFS_HOST"]
    return own_id()


@cache
def own_id() -> str:
    """This machine's (or container's) own name, whatever `UVREFS_HOST` says: the names
    that variable gives are recorded as names of this one (`Settings.hosts`)."""
    from uvrefs.hosts import in_container

    if in_container():
        import socket

        return f"{machine_id()}:{socket.gethostname()}"
    return machine_id()


@cache
def machine_id() -> str:
    """This machine's own identity: the systemd machine id, else the host name."""
    from uvrefs.files import read_utf8

    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            text = read_utf8(path, 4096).strip()
        except OSError:
            continue
        if text:
            return text
    import socket

    return socket.gethostname()


def now() -> str:
    """UTC now, written as pydantic writes datetimes."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Ref(NamedTuple):
    """A `schema.Referrer` as read."""

    env: str
    host: str
    how: str
    command: str
    recorded_at: str
    identity: tuple[int, int] | None = None


class Refs(NamedTuple):
    """A `schema.EntryRefs` as read."""

    entry: str
    dist: str | None
    version: str | None
    tags: tuple[str, ...]
    referrers: tuple[Ref, ...]


class KnownEnv(NamedTuple):
    """A `schema.EnvRecord` as read."""

    path: str
    host: str
    site_dirs: tuple[str, ...]
    mount: str | None
    command: str
    recorded_at: str
    entries: tuple[str, ...]
    mntns: str | None = None
    identity: tuple[int, int] | None = None
    sources: tuple[str, ...] = ()
    projects: tuple[tuple[str, str | None], ...] = ()  # (`.venv` link, its mount point)
    shared: tuple[str, str, str] | None = None  # (family, source, path within): `hosts.SharedPlace`


HOWS = frozenset({"symlink", "hardlink", "content", "build"})
REF_KEYS = frozenset(Ref._fields) - {"identity"}  # identity may be absent (older referrers)
# RFC 3339, as uvrefs writes times: a subset of what pydantic reads as a datetime.
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)")


def _is_time(value: object) -> bool:
    return isinstance(value, str) and _is_time_text(value)


@lru_cache(maxsize=4096)  # referrers recorded together share one time
def _is_time_text(value: str) -> bool:
    if not TIME.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_current(data: object) -> TypeGuard[dict[str, Any]]:
    return isinstance(data, dict) and type(data.get("format")) is int and data["format"] == FORMAT


def _strs(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _opt_str(value: object) -> bool:
    return value is None or isinstance(value, str)


def _fast_ref(r: object) -> Ref | None:
    if not (isinstance(r, dict) and REF_KEYS <= r.keys() <= REF_KEYS | {"identity"}):
        return None
    ok = all(isinstance(r[k], str) for k in REF_KEYS) and r["how"] in HOWS
    ident = r.get("identity")
    if not (ok and _is_time(r["recorded_at"]) and (ident is None or _ints2(ident))):
        return None
    pair = (ident[0], ident[1]) if ident is not None else None
    return Ref(r["env"], r["host"], r["how"], r["command"], r["recorded_at"], pair)


def fast_refs(data: object) -> Refs | None:
    """`data` as `Refs` if it is exactly the current format, else None (then pydantic
    decides). Accepts nothing `schema.EntryRefs` refuses (tests/test_formats.py)."""
    if not _is_current(data):
        return None
    if not (data.keys() <= {"format", *Refs._fields} and isinstance(data.get("entry"), str)):
        return None
    tags, referrers = data.get("tags", []), data.get("referrers", [])
    if not (_opt_str(data.get("dist")) and _opt_str(data.get("version")) and _strs(tags)):
        return None
    if not isinstance(referrers, list):
        return None
    refs = tuple(_fast_ref(r) for r in referrers)
    if any(r is None for r in refs):
        return None
    return Refs(data["entry"], data.get("dist"), data.get("version"), tuple(tags), refs)  # type: ignore[arg-type]


def fast_env(data: object) -> KnownEnv | None:
    """`data` as `KnownEnv` if it is exactly the current format, else None."""
    if not _is_current(data):
        return None
    if not data.keys() <= {"format", *KnownEnv._fields}:
        return None
    site_dirs, entries = data.get("site_dirs", []), data.get("entries", [])
    sources, ident = data.get("sources", []), data.get("identity")
    projects, shared = data.get("projects", []), data.get("shared")
    if not (
        isinstance(data.get("path"), str)
        and isinstance(data.get("host"), str)
        and isinstance(data.get("command"), str)
        and _opt_str(data.get("mount"))
        and _opt_str(data.get("mntns"))
        and _strs(site_dirs)
        and _strs(entries)
        and _strs(sources)
        and (ident is None or _ints2(ident))
        and isinstance(projects, list)
        and all(_project_link(p) for p in projects)
        and (shared is None or (_strs(shared) and len(shared) == 3))
        and _is_time(data.get("recorded_at"))
    ):
        return None
    return KnownEnv(
        data["path"],
        data["host"],
        tuple(site_dirs),
        data.get("mount"),
        data["command"],
        data["recorded_at"],
        tuple(entries),
        data.get("mntns"),
        (ident[0], ident[1]) if ident is not None else None,
        tuple(sources),
        tuple((p[0], p[1]) for p in projects),
        (shared[0], shared[1], shared[2]) if shared is not None else None,
    )


def _project_link(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and _opt_str(value[1])
    )


def _ints2(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)


def refs_from_model(model: EntryRefs) -> Refs:
    refs = tuple(
        Ref(r.env, r.host, r.how, r.command, _time(r.recorded_at), r.identity)
        for r in model.referrers
    )
    return Refs(model.entry, model.dist, model.version, tuple(model.tags), refs)


def env_from_model(model: EnvRecord) -> KnownEnv:
    return KnownEnv(
        model.path,
        model.host,
        tuple(model.site_dirs),
        model.mount,
        model.command,
        _time(model.recorded_at),
        tuple(model.entries),
        model.mntns,
        model.identity,
        tuple(model.sources),
        tuple(model.projects),
        model.shared,
    )


def _time(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


class CorruptRefs(Exception):
    """A refs file that cannot be trusted; its entry is kept (fail closed)."""


class NewerFile(StoreError):
    """A store file a newer uvrefs wrote: this version reads what it understands of it and
    never writes over it (an older uvrefs must never lose what a newer one recorded)."""


SET_ASIDE = ".corrupt-"  # `<entry>.refs.corrupt-<time>`: refs `doctor --repair` set aside


def newer_format(data: object) -> int | None:
    """The format of a store document written by a newer uvrefs, else None."""
    version = data.get("format") if isinstance(data, dict) else None
    return version if type(version) is int and version > FORMAT else None


class RecordProblem(NamedTuple):
    """An env record that cannot be read as this uvrefs reads records: the env it names
    and the entries it lists, where those can still be read (a newer format), and why.
    Its env is never judged gone from its path alone (its mount and namespace are not
    known), and what it lists stays held."""

    path: str | None
    why: str
    host: str | None = None
    entries: tuple[str, ...] = ()


class RefsStore:
    """The refs of one uv cache. Constructing it touches nothing on disk."""

    def __init__(self, state_dir: Path, cache_root: Path, *, directory: Path | None = None) -> None:
        self.cache_root = cache_root
        self.dir = directory or Path(stamps.store_dir(str(state_dir), str(cache_root)))
        self.refs_dir = self.dir / "refs"
        self.envs_dir = self.dir / stamps.ENVS

    @classmethod
    def at(cls, directory: Path, cache_root: Path) -> RefsStore:
        """Another store of the same cache, by its directory (a peer, read only)."""
        return cls(directory, cache_root, directory=directory)

    # -- locking and atomic writes

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock for a read-modify-write (a filelock beside the refs)."""
        from filelock import FileLock, Timeout

        self._ensure_dirs()
        try:
            with FileLock(str(self.dir / "store.lock"), timeout=LOCK_TIMEOUT):
                yield
        except Timeout:
            raise StoreError(
                f"refs store {self.dir} stayed locked for {LOCK_TIMEOUT:g}s; "
                "is another uvrefs stuck? retry later"
            ) from None

    def _ensure_dirs(self) -> None:
        try:
            self.refs_dir.mkdir(parents=True, exist_ok=True)
            self.envs_dir.mkdir(exist_ok=True)
            info = self.dir / "store.json"
            if not info.exists():
                _write_json(info, {"format": FORMAT, "cache": str(self.cache_root), "moves": []})
        except OSError as exc:
            raise StoreError(
                f"cannot write the refs store at {self.dir}: {exc.strerror}; "
                "set UVREFS_DIR to a writable directory"
            ) from None

    # -- entry refs

    def refs_path(self, entry_id: str) -> Path:
        if not ENTRY_ID.fullmatch(entry_id):
            raise CorruptRefs(f"invalid entry id {entry_id!r}")
        return self.refs_dir / f"{entry_id}{REFS_SUFFIX}"

    def entry_ids(self) -> list[str]:
        """Ids of every entry with a refs file (names that are not ids are ignored)."""
        try:
            names = os.listdir(self.refs_dir)
        except FileNotFoundError:
            return []
        ids = (n.removesuffix(REFS_SUFFIX) for n in names if n.endswith(REFS_SUFFIX))
        return sorted(i for i in ids if ENTRY_ID.fullmatch(i))

    def load(self, entry_id: str) -> Refs | None:
        """The refs of an entry, None if it has none; raises CorruptRefs if unreadable."""
        try:
            data = _read_store_json(self.refs_path(entry_id))
        except FileNotFoundError:
            return None
        refs = fast_refs(data)
        if refs is None:
            refs = _validated_refs(data)
        if refs.entry != entry_id:
            raise CorruptRefs(f"names entry {refs.entry!r}, not {entry_id!r}")
        return refs

    def save(self, refs: EntryRefs) -> None:
        _write_json(self.refs_path(refs.entry), refs.model_dump(mode="json"))

    def delete(self, entry_id: str) -> None:
        self.refs_path(entry_id).unlink(missing_ok=True)

    def record(
        self,
        env: Path,
        uses: Mapping[str, How],
        command: str,
        describe: Callable[[str], tuple[str | None, str | None, list[str]]],
        identity: tuple[int, int] | None = None,
    ) -> tuple[int, list[str]]:
        """Add `env` (its directory's `identity`) as a referrer of every entry in `uses`
        (id -> how). Call with the store locked. Returns how many files changed and the
        ids whose refs are unreadable (left as they are: rewriting them would drop
        referrers we cannot read)."""
        changed, corrupt = 0, []
        when = now()  # one recording, one time
        ident = list(identity) if identity else None
        for entry_id, how in sorted(uses.items()):
            try:
                data = self._read_raw(entry_id)
            except CorruptRefs:
                corrupt.append(entry_id)
                continue
            if data is None:
                dist, version, tags = describe(entry_id)
                data = {
                    "format": FORMAT,
                    "entry": entry_id,
                    "dist": dist,
                    "version": version,
                    "tags": tags,
                    "referrers": [],
                }
            mine = [
                r
                for r in data["referrers"]
                if r.get("env") == str(env) and r.get("host") == host_id()
            ]
            if mine and mine[0].get("how") == how and mine[0].get("identity") == ident:
                continue
            me = {
                "env": str(env),
                "host": host_id(),
                "how": how,
                "command": command,
                "recorded_at": when,
                "identity": ident,
            }
            data["referrers"] = [r for r in data["referrers"] if r not in mine] + [me]
            _write_json(self.refs_path(entry_id), data, checked=True)
            changed += 1
        return changed, corrupt

    def _read_raw(self, entry_id: str) -> dict[str, Any] | None:
        """A refs file as plain JSON, checked just enough to add a referrer safely."""
        try:
            data = _read_store_json(self.refs_path(entry_id))
        except FileNotFoundError:
            return None
        if not (
            isinstance(data, dict)
            and data.get("format") == FORMAT
            and data.get("entry") == entry_id
            and isinstance(data.get("referrers"), list)
            and all(isinstance(r, dict) for r in data["referrers"])
        ):
            raise CorruptRefs("not a refs file this uvrefs can extend")
        return data

    # -- when entries were first seen dead (for --min-age)

    def dead_since(self) -> dict[str, float]:
        try:
            data = _read_store_json(self.dir / "dead-since.json")
            return {k: float(v) for k, v in data["dead_since"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}
        except (CorruptRefs, OverflowError):  # not a regular file, or a number out of range
            return {}

    def save_dead_since(self, dead: set[str], now: float) -> None:
        """Stamp entries first seen dead now; forget those no longer dead. Store locked.
        Never a time earlier than the newest already there: a clock set back (no time sync
        yet at boot) would otherwise end every wait at once once it is right again."""
        known = self.dead_since()
        now = max(now, *known.values()) if known else now
        stamped = {e: known.get(e, now) for e in sorted(dead)}
        _write_json(self.dir / "dead-since.json", {"format": FORMAT, "dead_since": stamped})

    # -- archive sizes (archives never change once uv has written them)

    def archive_sizes(self) -> dict[str, Footprint]:
        """entry -> its `Footprint` as measured earlier; empty if unreadable. A cache, never
        a safety fact: a wrong or missing figure costs a walk. A record from before
        directories and inode ranges were kept reads with `dirs` None (walked again)."""
        from uvrefs.footprints import Footprint

        try:
            data = _read_store_json(self.dir / "sizes.json", limit=512 << 20)
            if data.get("format") != FORMAT:
                return {}
            return {
                k: Footprint(
                    int(v[0]),
                    int(v[1]),
                    int(v[2]),
                    tuple(str(n) for n in v[3]),
                    # checked as they are used (`Footprint.holds`): there are many
                    None if len(v) < 7 or v[4] is None else tuple(map(tuple, v[4])),
                    tuple(int(i) for i in v[5]) if len(v) >= 7 else (),
                    bool(v[6]) if len(v) >= 7 else False,
                )
                for k, v in data["archives"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
            return {}
        except (CorruptRefs, OverflowError):  # not a regular file, or a number out of range
            return {}

    def save_archive_sizes(self, sizes: Mapping[str, Footprint]) -> None:
        """Replace the size cache (schema.ArchiveSizes); last writer wins, which is fine."""
        self._ensure_dirs()
        archives = {
            k: [
                *v[:3],
                list(v[3]),
                None if v[4] is None else [list(d) for d in v[4]],
                list(v[5]),
                v[6],
            ]
            for k, v in sorted(sizes.items())
        }
        _write_json(self.dir / "sizes.json", {"format": FORMAT, "archives": archives})

    # -- environment records

    def env_path(self, env: Path) -> Path:
        return self.envs_dir / f"{stamps.env_key(str(env))}.json"

    def stamp_path(self, env: str) -> str:
        """The env's fingerprint at its last record (written by the install path)."""
        return stamps.stamp_path(str(self.dir), env)

    def write_stamp(self, env: str, fingerprint: str) -> None:
        stamps.write_stamp(self.stamp_path(env), fingerprint)

    def env_record(self, env: str) -> KnownEnv | None:
        """The record of one env, if there is a readable one."""
        try:
            data = _read_store_json(self.env_path(Path(env)))
        except (OSError, CorruptRefs):
            return None
        record = fast_env(data) or _validated_env(data)
        return record if record is not None and record.path == env else None

    def env_records(self) -> list[KnownEnv]:
        """Every readable env record (see `checked_env_records` for the rest)."""
        return self.checked_env_records()[0]

    def checked_env_records(self) -> tuple[list[KnownEnv], list[tuple[str | None, str]]]:
        """Every readable env record, and `(path or None, why)` for each record that
        cannot be read or validated (a newer format, garbage): its env's mount point and
        namespace are then unknown, so it must never be judged gone from its path alone."""
        records: list[KnownEnv] = []
        problems: list[tuple[str | None, str]] = []
        try:
            names = sorted(n for n in os.listdir(self.envs_dir) if n.endswith(".json"))
        except FileNotFoundError:
            return [], []
        for name in names:
            try:
                data = _read_store_json(self.envs_dir / name)
            except FileNotFoundError:
                continue
            except (OSError, CorruptRefs) as exc:
                problems.append((None, f"{self.envs_dir / name}: {exc}"))
                continue
            record = fast_env(data) or _validated_env(data)
            if record is not None:
                records.append(record)
            else:
                path = data.get("path") if isinstance(data, dict) else None
                why = f"its record {self.envs_dir / name} cannot be read by this uvrefs"
                problems.append((path if isinstance(path, str) else None, why))
        return records, problems

    def save_env(
        self,
        env: str,
        site_dirs: list[str],
        mount: str | None,
        command: str,
        entries: list[str],
        *,
        mntns: str | None = None,
        identity: tuple[int, int] | None = None,
        sources: list[str] | None = None,
        projects: list[tuple[str, str | None]] | None = None,
        shared: tuple[str, str, str] | None = None,
    ) -> None:
        """Write an env record (schema.EnvRecord, field for field)."""
        _write_json(
            self.env_path(Path(env)),
            {
                "format": FORMAT,
                "path": env,
                "host": host_id(),
                "site_dirs": site_dirs,
                "mount": mount,
                "command": command,
                "recorded_at": now(),
                "entries": entries,
                "mntns": mntns,
                "identity": list(identity) if identity else None,
                "sources": sources or [],
                "projects": [list(p) for p in projects or []],
                "shared": list(shared) if shared else None,
            },
        )

    def forget_env(self, env: str) -> None:
        """Drop a gone env's record and stamp (under uv's exclusive lock: nothing can be
        recording it). A record a newer uvrefs wrote is left (`NewerFile`)."""
        _refuse_newer(self.env_path(Path(env)))
        for path in (self.env_path(Path(env)), Path(self.stamp_path(env))):
            path.unlink(missing_ok=True)

    def drop_referrers(self, entry_id: str, gone: Callable[[str, str], bool]) -> bool:
        """Remove the referrers `gone(host, env)` says were judged gone under uv's
        exclusive lock from an entry's refs. Store locked. True if rewritten."""
        try:
            data = self._read_raw(entry_id)
        except CorruptRefs:
            return False
        if data is None:
            return False
        kept = [
            r
            for r in data["referrers"]
            if not (
                isinstance(r.get("host"), str)
                and isinstance(r.get("env"), str)
                and gone(r["host"], r["env"])
            )
        ]
        if len(kept) == len(data["referrers"]):
            return False
        data["referrers"] = kept
        _write_json(self.refs_path(entry_id), data, checked=True)
        return True

    # -- the whole store at once (what collect, status, envs and why judge from)

    def read(self, previous: StoreView | None = None) -> StoreView:
        """Every refs file and env record of the store, and what it remembers (watched
        directories, holders, peers, uv's settings), as they are now. With `previous` (a
        read of this store moments ago) a file unchanged since (same inode, mtime and
        size, and older than that read by more than the clock's granularity) is not
        parsed again: the sweep reads every store again under uv's lock this way.
        Raises OSError if the store's directory cannot be listed."""
        import time

        old = previous.parsed if previous is not None and previous.store.dir == self.dir else {}
        cutoff = previous.read_at - RACY_NS if previous is not None else 0
        view = StoreView(self, time.time_ns())
        os.listdir(self.dir)  # a store we may not read raises: the caller decides

        def doc(path: Path, limit: int = 64 << 20) -> tuple[Any, bool] | None:
            """(parsed, reused) of a file, or None if it is missing."""
            key = str(path)
            if old:
                try:
                    st = os.stat(path, follow_symlinks=False)
                except FileNotFoundError:
                    return None
                except OSError:
                    st = None
                known = old.get(key)
                if st is not None and known is not None and known[0] == _stat_key(st):
                    if max(st.st_mtime_ns, st.st_ctime_ns) < cutoff:
                        view.parsed[key] = known
                        return known[1], True
            try:
                raw, st = files.read_file_stat(key, limit)
            except FileNotFoundError:
                return None
            except OSError as exc:
                return CorruptRefs(f"unreadable ({exc.strerror})"), False
            data = _parse_store_json(raw)
            view.parsed[key] = (_stat_key(st), data)
            return data, False

        for entry, name in self._refs_names():
            got = doc(self.refs_dir / name)
            if got is None:
                continue
            if name.endswith(REFS_SUFFIX):
                try:
                    view.refs[entry] = _refs_of(got[0], entry)
                except CorruptRefs as exc:
                    view.corrupt[entry] = str(exc)
                    if newer_format(got[0]) is not None:
                        view.newer.append(str(self.refs_dir / name))
            else:  # set aside by `doctor --repair`: who it named is not known, so it holds
                view.set_aside.setdefault(
                    entry,
                    f"its refs were set aside by `uvrefs doctor --repair` as {name}; delete "
                    "that file once no environment of another host or store needs the entry",
                )
        for name in self._names(self.envs_dir, ".json"):
            got = doc(self.envs_dir / name)
            if got is None:
                continue
            record = _record_of(got[0], str(self.envs_dir / name))
            if isinstance(record, RecordProblem):
                view.problems.append(record)
                if newer_format(got[0]) is not None:
                    view.newer.append(str(self.envs_dir / name))
            else:
                view.records[record.path] = record
        for name, key, attr in (
            ("watch.json", "dirs", "watched"),
            ("holders.json", "dirs", "holders"),
            ("peers.json", "stores", "peers"),
        ):
            got = doc(self.dir / name)
            values = got[0].get(key) if got is not None and isinstance(got[0], dict) else None
            if isinstance(values, list):
                setattr(view, attr, [v for v in values if isinstance(v, str)])
            if got is not None and newer_format(got[0]) is not None:
                view.newer.append(str(self.dir / name))
        got = doc(self.dir / SETTINGS)
        if got is not None:
            view.settings = Settings.of(got[0])
        return view

    def _refs_names(self) -> list[tuple[str, str]]:
        """(entry, file name) of every refs file, and of every one `doctor --repair` set
        aside; names that are not entry ids are ignored."""
        found = []
        for name in self._names(self.refs_dir, ""):
            entry, dot, rest = name.partition(REFS_SUFFIX)
            if dot and ENTRY_ID.fullmatch(entry) and (not rest or rest.startswith(SET_ASIDE)):
                found.append((entry, name))
        return found

    @staticmethod
    def _names(directory: Path, suffix: str) -> list[str]:
        try:
            return sorted(n for n in os.listdir(directory) if n.endswith(suffix))
        except FileNotFoundError:
            return []

    # -- uv's settings that say where roots live, as uvrefs commands have seen them

    def remember_settings(self, seen: Settings) -> None:
        """Add what a command saw to what the store remembers (directories kept while they
        exist), so a collect run with another environment (a scheduler's) still knows
        where tool environments and Pythons live. Store locked."""
        try:
            data = _read_store_json(self.dir / SETTINGS)
        except (OSError, CorruptRefs):
            data = None
        import time

        known = Settings.of(data) if data is not None else Settings()
        merged = known.merge(seen, time.time())
        if _named(merged) != _named(known) or _stale(known, time.time()):
            self._ensure_dirs()
            _write_json(self.dir / SETTINGS, {"format": FORMAT, **merged.as_json()})

    # -- directories watched for environments, and peer stores of the same cache

    def watched(self) -> list[str]:
        return self._string_list("watch.json", "dirs")

    def save_watched(self, dirs: list[str]) -> None:
        self._ensure_dirs()
        _write_json(self.dir / "watch.json", {"format": FORMAT, "dirs": sorted(set(dirs))})

    def remembered_holders(self) -> list[str]:
        return self._string_list("holders.json", "dirs")

    def save_holders(self, dirs: list[str]) -> None:
        self._ensure_dirs()
        _write_json(self.dir / "holders.json", {"format": FORMAT, "dirs": sorted(set(dirs))})

    def remembered_peers(self) -> list[str]:
        return self._string_list("peers.json", "stores")

    def save_peers(self, stores: list[str]) -> None:
        self._ensure_dirs()
        _write_json(self.dir / "peers.json", {"format": FORMAT, "stores": sorted(set(stores))})

    def _string_list(self, name: str, key: str) -> list[str]:
        """A list of strings kept in a store file; one a newer uvrefs wrote is read for
        that list all the same (its writers refuse to replace it: `NewerFile`)."""
        try:
            data = _read_store_json(self.dir / name)
        except FileNotFoundError:
            return []
        except CorruptRefs as exc:
            raise StoreError(f"{self.dir / name} is {exc}; fix or delete it") from None
        values = data.get(key) if isinstance(data, dict) else None
        if not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
            raise StoreError(f"{self.dir / name} is not a uvrefs {name}; fix or delete it")
        return values


RACY_NS = 2_000_000_000  # a file written this close to a read may have changed unseen
SETTINGS = "settings.json"


def _named(settings: Settings) -> tuple[object, ...]:
    """What a settings file says, its times apart (rewritten when this changes)."""
    return (
        tuple(sorted(settings.tool_dirs)),
        tuple(sorted(settings.python_dirs)),
        settings.preview_features,
        tuple(sorted(settings.hosts.items())),
    )


def _stale(settings: Settings, now: float) -> bool:
    """Whether a directory's last sighting is over a day old (refreshed once a day)."""
    return any(
        now - t > 86400 for t in (*settings.tool_dirs.values(), *settings.python_dirs.values())
    )


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    """What tells a store file unchanged: its inode, size, mtime and ctime (an mtime set
    back by hand, or a same-size rewrite within one mtime tick, still changes the ctime)."""
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


SETTINGS_KEEP = 365 * 86400.0  # seconds: a recorded directory missing this long is forgotten


class Settings(NamedTuple):
    """`settings.json`: where uv keeps tool environments and managed Pythons (each with
    when a uvrefs command last saw it named), and the preview features in effect, as
    uvrefs commands have seen them in their environment and uv's configuration. A
    collect searches every one of these directories that exists."""

    tool_dirs: Mapping[str, float] = {}
    python_dirs: Mapping[str, float] = {}
    preview_features: tuple[str, ...] = ()
    hosts: Mapping[str, str] = {}  # a `UVREFS_HOST` name -> the machine id it was used on

    @classmethod
    def of(cls, data: object) -> Settings:
        """Read leniently: a field this version does not know is ignored (and kept, since
        a file a newer uvrefs wrote is never written over)."""
        if not isinstance(data, dict):
            return cls()

        def dirs(key: str) -> dict[str, float]:
            value = data.get(key)
            if isinstance(value, list):  # as first written: no times
                value = dict.fromkeys(value, 0.0)
            if not isinstance(value, dict):
                return {}
            return {
                k: float(v)
                for k, v in value.items()
                if isinstance(k, str) and os.path.isabs(k) and type(v) in (int, float)
            }

        named = data.get("hosts")
        hosts = (
            {k: v for k, v in named.items() if isinstance(k, str) and isinstance(v, str)}
            if isinstance(named, dict)
            else {}
        )
        features = data.get("preview_features")
        names = (
            sorted({f for f in features if isinstance(f, str)})
            if isinstance(features, list)
            else []
        )
        return cls(dirs("tool_dirs"), dirs("python_dirs"), tuple(names), hosts)

    def merge(self, seen: Settings, now: float) -> Settings:
        """These and `seen` (seen `now`). A directory is forgotten only once it has been
        missing and unnamed for a year: one missing for a moment (renamed, unmounted, not
        made yet) is still searched when it is back."""

        def dirs(known: Mapping[str, float], new: Mapping[str, float]) -> dict[str, float]:
            merged = {**known, **dict.fromkeys(new, now)}
            return {
                d: t
                for d, t in sorted(merged.items())
                if now - t < SETTINGS_KEEP or os.path.isdir(d)
            }

        return Settings(
            dirs(self.tool_dirs, seen.tool_dirs),
            dirs(self.python_dirs, seen.python_dirs),
            tuple(sorted({*self.preview_features, *seen.preview_features})),
            dict(sorted({**self.hosts, **seen.hosts}.items())),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "tool_dirs": dict(self.tool_dirs),
            "python_dirs": dict(self.python_dirs),
            "preview_features": list(self.preview_features),
            "hosts": dict(self.hosts),
        }


@dataclass
class StoreView:
    """One store as read at one moment: its refs by entry (and why others cannot be read),
    its env records by path (and those that cannot be read), what it remembers, and the
    files a newer uvrefs wrote. `parsed` keeps each file's stat and parse for a re-read."""

    store: RefsStore
    read_at: int  # time.time_ns() when the read started
    refs: dict[str, Refs] = field(default_factory=dict)
    corrupt: dict[str, str] = field(default_factory=dict)
    set_aside: dict[str, str] = field(default_factory=dict)  # entry -> why it stays held
    records: dict[str, KnownEnv] = field(default_factory=dict)
    problems: list[RecordProblem] = field(default_factory=list)
    newer: list[str] = field(default_factory=list)
    watched: list[str] = field(default_factory=list)
    holders: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)
    parsed: dict[str, tuple[tuple[int, int, int, int], Any]] = field(default_factory=dict)


def _parse_store_json(raw: bytes) -> Any:
    """`raw` as a store document, or a `CorruptRefs` saying why it is not one."""
    if b"\0" in raw or b"\\u0000" in raw:
        return CorruptRefs("holds a NUL byte")
    try:
        return json.loads(raw)
    except RecursionError:
        return CorruptRefs("nested too deeply")
    except ValueError:
        return CorruptRefs("not valid JSON (truncated or garbage)")


def _refs_of(data: Any, entry: str) -> Refs:
    """A parsed refs file as `Refs` of `entry`; raises CorruptRefs if it is not one."""
    if isinstance(data, CorruptRefs):
        raise data
    refs = fast_refs(data)
    if refs is None:
        refs = _validated_refs(data)
    if refs.entry != entry:
        raise CorruptRefs(f"names entry {refs.entry!r}, not {entry!r}")
    return refs


def _record_of(data: Any, where: str) -> KnownEnv | RecordProblem:
    """A parsed env record, or what can still be read of one this uvrefs cannot take."""
    if not isinstance(data, CorruptRefs):
        record = fast_env(data) or _validated_env(data)
        if record is not None:
            return record
    if isinstance(data, CorruptRefs):
        return RecordProblem(None, f"its record {where} is {data}")
    path, host, entries = (
        data.get(k) if isinstance(data, dict) else None for k in ("path", "host", "entries")
    )
    version = newer_format(data)
    why = (
        f"its record {where} was written by a newer uvrefs (format {version}); upgrade uvrefs"
        if version is not None
        else f"its record {where} cannot be read by this uvrefs"
    )
    return RecordProblem(
        path if isinstance(path, str) else None,
        why,
        host if isinstance(host, str) else None,
        tuple(e for e in entries if isinstance(e, str)) if isinstance(entries, list) else (),
    )


def _read_store_json(path: Path, limit: int = 64 << 20) -> Any:
    """A store file's JSON. Raises FileNotFoundError if it is missing and CorruptRefs if it
    cannot be trusted: not a regular file (a FIFO would hang the reader, a symlink may
    lead anywhere), over `limit` bytes, unreadable, not JSON, nested too deeply to parse,
    or holding a NUL, raw or escaped (no path or name uvrefs writes has one; `os` refuses
    them)."""
    try:
        raw = files.read_file(str(path), limit)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CorruptRefs(f"unreadable ({exc.strerror})") from None
    if b"\0" in raw or b"\\u0000" in raw:
        raise CorruptRefs("holds a NUL byte")
    try:
        return json.loads(raw)
    except RecursionError:
        raise CorruptRefs("nested too deeply") from None
    except ValueError:
        raise CorruptRefs("not valid JSON (truncated or garbage)") from None


def _validated_refs(data: Any) -> Refs:
    """Refs the fast check did not take as they are: pydantic accepts them or says why."""
    from pydantic import ValidationError

    from uvrefs.store.schema import FORMAT, EntryRefs

    version = data.get("format") if isinstance(data, dict) else None
    if isinstance(version, int) and version > FORMAT:
        raise CorruptRefs(f"format {version} is newer than this uvrefs ({FORMAT}); upgrade")
    try:
        return refs_from_model(EntryRefs.model_validate(data))
    except ValidationError as exc:
        raise CorruptRefs(f"invalid: {exc.errors()[0]['msg']}") from None


def _validated_env(data: Any) -> KnownEnv | None:
    from pydantic import ValidationError

    from uvrefs.store.schema import EnvRecord

    try:
        return env_from_model(EnvRecord.model_validate(data))
    except ValidationError:
        return None


def _write_json(path: Path, data: Mapping[str, Any], *, checked: bool = False) -> None:
    """JSON through `json`: env paths may hold non-UTF-8 bytes as surrogate escapes, which
    `json` writes as `\\udcXX` and reads back, where pydantic's serializer refuses them.
    On one line: with `indent`, `json` falls back from its C encoder to a Python one,
    several times slower on an entry shared by many envs (`jq .` pretty-prints).
    Never over a file a newer uvrefs wrote (`NewerFile`); `checked`: the caller has just
    read the file it replaces and knows it is not one."""
    if not checked:
        _refuse_newer(path)
    files.write_atomic(str(path), json.dumps(data))


def newer_file(path: Path) -> int | None:
    """The format of the file at `path` if a newer uvrefs wrote it, else None (missing or
    unreadable: nothing a newer uvrefs wrote can be read there)."""
    try:
        return newer_format(_read_store_json(path, limit=1 << 30))
    except (OSError, CorruptRefs):
        return None


def _refuse_newer(path: Path) -> None:
    """Raise `NewerFile` if the file at `path` was written by a newer uvrefs."""
    version = newer_file(path)
    if version is not None:
        raise NewerFile(
            f"{path} was written by a newer uvrefs (format {version}); it is left as it is: "
            "upgrade uvrefs"
        )
