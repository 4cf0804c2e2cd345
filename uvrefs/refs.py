"""The refs store: outside uv's cache (uv prune deletes whatever it does not know there),
one directory per cache keyed by the cache's canonical path, holding one `<entry>.refs`
per tracked entry and one record per tracked environment.

Writes go to a temp file in the same directory and are renamed into place; every
read-modify-write holds the store's file lock, so parallel installs never lose a ref.

The formats are defined (and validated on every read) by the pydantic models in
`uvrefs.formats`. The install path writes them with `json` alone, because importing
pydantic costs more than uv's own no-op install; `tests/test_formats.py` pins the two
together (what `record` writes is exactly what the models dump)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uvrefs import stamps
from uvrefs.cache import ENTRY_ID
from uvrefs.errors import StoreError

if TYPE_CHECKING:
    from uvrefs.envs import How
    from uvrefs.formats import EntryRefs, EnvRecord

FORMAT = 1  # the version of every file written here; equals formats.FORMAT (a test pins it)
REFS_SUFFIX = ".refs"
LOCK_TIMEOUT = 60.0


@cache
def host_id() -> str:
    """This machine's identity: `UVREFS_HOST` if set (CI runners that share one cache and
    store across machines set it to one name), else the systemd machine id, else the host
    name."""
    if os.environ.get("UVREFS_HOST"):
        return os.environ["UVREFS_HOST"]
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text:
            return text
    import socket

    return socket.gethostname()


def now() -> str:
    """UTC now, written as pydantic writes datetimes."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class CorruptRefs(Exception):
    """A refs file that cannot be trusted; its entry is kept (fail closed)."""


class RefsStore:
    """The refs of one uv cache. Constructing it touches nothing on disk."""

    def __init__(self, state_dir: Path, cache_root: Path) -> None:
        self.cache_root = cache_root
        self.dir = Path(stamps.store_dir(str(state_dir), str(cache_root)))
        self.refs_dir = self.dir / "refs"
        self.envs_dir = self.dir / "envs"

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
                _write_json(info, {"format": FORMAT, "cache": str(self.cache_root)})
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

    def load(self, entry_id: str) -> EntryRefs | None:
        """The refs of an entry, None if it has none; raises CorruptRefs if unreadable."""
        from pydantic import ValidationError

        from uvrefs.formats import FORMAT, EntryRefs

        try:
            raw = self.refs_path(entry_id).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CorruptRefs(f"unreadable ({exc.strerror})") from None
        try:
            data = json.loads(raw)
        except ValueError:
            raise CorruptRefs("not valid JSON (truncated or garbage)") from None
        version = data.get("format") if isinstance(data, dict) else None
        if isinstance(version, int) and version > FORMAT:
            raise CorruptRefs(f"format {version} is newer than this uvrefs ({FORMAT}); upgrade")
        try:
            refs = EntryRefs.model_validate(data)
        except ValidationError as exc:
            raise CorruptRefs(f"invalid: {exc.errors()[0]['msg']}") from None
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
    ) -> tuple[int, list[str]]:
        """Add `env` as a referrer of every entry in `uses` (id -> how). Call with the
        store locked. Returns how many files changed and the ids whose refs are unreadable
        (left as they are: rewriting them would drop referrers we cannot read)."""
        changed, corrupt = 0, []
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
            if mine and mine[0].get("how") == how:
                continue
            me = {
                "env": str(env),
                "host": host_id(),
                "how": how,
                "command": command,
                "recorded_at": now(),
            }
            data["referrers"] = [r for r in data["referrers"] if r not in mine] + [me]
            _write_json(self.refs_path(entry_id), data)
            changed += 1
        return changed, corrupt

    def _read_raw(self, entry_id: str) -> dict[str, Any] | None:
        """A refs file as plain JSON, checked just enough to add a referrer safely."""
        try:
            data = json.loads(self.refs_path(entry_id).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CorruptRefs(str(exc)) from None
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
            data = json.loads((self.dir / "dead-since.json").read_bytes())
            return {k: float(v) for k, v in data["dead_since"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}

    def save_dead_since(self, dead: set[str], now: float) -> None:
        """Stamp entries first seen dead now; forget those no longer dead. Store locked."""
        known = self.dead_since()
        stamped = {e: known.get(e, now) for e in sorted(dead)}
        _write_json(self.dir / "dead-since.json", {"format": FORMAT, "dead_since": stamped})

    # -- environment records

    def env_path(self, env: Path) -> Path:
        return self.envs_dir / f"{stamps.env_key(str(env))}.json"

    def env_records(self) -> list[EnvRecord]:
        from pydantic import ValidationError

        from uvrefs.formats import EnvRecord

        records = []
        try:
            names = sorted(n for n in os.listdir(self.envs_dir) if n.endswith(".json"))
        except FileNotFoundError:
            return []
        for name in names:
            try:
                records.append(
                    EnvRecord.model_validate(json.loads((self.envs_dir / name).read_bytes()))
                )
            except (OSError, ValueError, ValidationError):
                continue
        return records

    def save_env(
        self, env: str, site_dirs: list[str], mount: str | None, command: str, entries: list[str]
    ) -> None:
        """Write an env record (formats.EnvRecord, field for field)."""
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
            },
        )


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """JSON through `json`: env paths may hold non-UTF-8 bytes as surrogate escapes, which
    `json` writes as `\\udcXX` and reads back, where pydantic's serializer refuses them."""
    stamps.write_atomic(str(path), json.dumps(data, indent=2))
