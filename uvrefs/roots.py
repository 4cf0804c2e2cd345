"""Roots: every environment whose packages must stay. Found from our refs store and every
peer store of the same cache, uv's own cached and tool environments, and the directories
uvrefs watches (where a renamed project, or one made with plain uv, is found again).
Nothing here judges an entry: uvrefs.mark scans the roots, uvrefs.plan decides."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from uvrefs.cache import Cache, Pointer
from uvrefs.errors import StoreError
from uvrefs.refs import CorruptRefs, KnownEnv, Refs, RefsStore

RootKind = Literal["tracked", "peer", "uv-cached", "uv-project", "tool", "discovered"]
REGISTRY = ".uvrefs-stores"  # in the cache root: one file per refs store tracking it
SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}
HOLDER_DEPTH = 2  # a tracked env's holder: <holder>/<project>/.venv, <holder>/<venv>
WATCH_DEPTH = 4  # a watched directory (`uvrefs watch add`), as `adopt --discover`


@dataclass(frozen=True)
class Root:
    """An environment to mark from: its path, what made it a root, and the record a store
    holds of it (None for uv's cached envs and environments found by discovery)."""

    path: str
    kind: RootKind
    record: KnownEnv | None = None
    store: RefsStore | None = None  # the store holding its record and stamp
    unreadable: str | None = None  # why its record cannot be read (then it is never gone)
    # A project env in uv's cache: the `.venv` links (or redirect files) known to have led
    # to it, each with its mount point (recorded, and found by discovery now).
    links: tuple[tuple[str, str | None], ...] = ()

    @property
    def label(self) -> str:
        if self.kind == "uv-cached":
            return f"uv's cached environment {Path(self.path).name}"
        if self.kind == "uv-project":
            owner = f" of {os.path.dirname(self.links[0][0])}" if self.links else ""
            return f"uv's project environment {Path(self.path).name}{owner}"
        return self.path if self.kind in ("tracked", "peer") else f"{self.path} ({self.kind})"


@dataclass
class Roots:
    """Every root, keyed by path, plus the refs every store holds and what could not be
    read. `blocked` says why nothing may be freed (a peer store that cannot be read)."""

    envs: dict[str, Root] = field(default_factory=dict)
    refs: dict[str, Refs] = field(default_factory=dict)  # ours and every peer's, merged
    own: set[str] = field(default_factory=set)  # entries our store tracks
    corrupt: dict[str, str] = field(default_factory=dict)
    blocked: str | None = None

    def add(self, root: Root) -> None:
        known = self.envs.get(root.path)
        if known is None or (known.record is None and root.record is not None):
            self.envs[root.path] = root

    def add_links(self, env: str, links: Iterable[tuple[str, str | None]]) -> None:
        """More `.venv` links known to lead to a project env of uv's cache."""
        root = self.envs.get(env)
        if root is not None:
            merged = dict(root.links)
            for link, mount in links:
                merged.setdefault(link, mount)
            self.envs[env] = replace(root, links=tuple(sorted(merged.items())))


def find_roots(
    cache: Cache,
    store: RefsStore,
    pointers: Mapping[str, list[Pointer]],
    host: str,
    *,
    discover_envs: bool = True,
) -> Roots:
    """Read every store of this cache and list every root."""
    roots = Roots()
    _read_store(store, roots, host, "tracked", cache, own=True)
    for peer in peer_stores(cache, store):
        try:
            _read_store(peer, roots, host, "peer", cache, own=False)
        except FileNotFoundError:
            continue  # deleted since it was found: it tracks nothing any more
        except (OSError, StoreError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else str(exc)
            roots.blocked = (
                f"the refs store {peer.dir}, which tracks this cache too, cannot be read "
                f"({why}); delete its entry in {cache.root / REGISTRY} if it is gone"
            )
    for archive_id, ps in pointers.items():
        if any(p.bucket == "environments" for p in ps):
            path = cache.archive_path(archive_id)
            if path is not None and os.path.isfile(path / "pyvenv.cfg"):
                roots.add(Root(str(path), "uv-cached"))
    projects = set(project_envs(cache))
    for env in env_dirs(cache):
        if env not in projects:  # a script's: a root while it exists, as uv's cached envs
            roots.add(Root(env, "uv-cached"))
            continue
        roots.add(Root(env, "uv-project"))
        known = roots.envs[env]
        if known.record is not None:
            roots.add_links(env, known.record.projects)
    if discover_envs:
        unlistable: list[str] = []
        links: dict[str, list[tuple[str, str | None]]] = {}
        found = discover(watched_dirs(store, roots), cache.root, unlistable=unlistable, links=links)
        for env in found:
            roots.add(Root(env, "discovered"))
        for env, env_links in links.items():
            roots.add_links(env, env_links)
        for env in discover([(tool_dir(), 1)], cache.root, unlistable=unlistable):
            roots.add(Root(env, "tool"))
        if unlistable:
            roots.blocked = roots.blocked or (
                f"{unlistable[0]}, under a watched directory, cannot be listed: an environment "
                "there could not be seen (fix its permissions, or `uvrefs watch remove`)"
            )
    return roots


def _read_store(
    store: RefsStore, roots: Roots, host: str, kind: RootKind, cache: Cache, own: bool
) -> None:
    """Add a store's refs (merged by entry) and its environments as roots. Referrers on
    other hosts are not roots (they cannot be scanned here); the planner keeps them.
    A recorded env inside the cache is one of uv's cached environments."""

    inside = os.path.join(cache.root, "")
    centralized = set(project_envs(cache))

    def kind_of(path: str) -> RootKind:
        if path in centralized:
            return "uv-project"
        return "uv-cached" if path.startswith(inside) else kind

    if not own:
        os.listdir(store.dir)  # an unreadable peer store raises: nothing may be freed
    for entry in store.entry_ids():
        try:
            loaded = store.load(entry)
        except CorruptRefs as exc:
            if own:
                roots.corrupt[entry] = str(exc)
                continue
            raise StoreError(f"refs of {entry} unreadable: {exc}") from None
        if loaded is None:
            continue
        if own:
            roots.own.add(entry)
        known = roots.refs.get(entry)
        if known is None:
            roots.refs[entry] = loaded
        else:
            roots.refs[entry] = known._replace(referrers=known.referrers + loaded.referrers)
        # A relative path means nothing here (it would be judged from the collector's
        # working directory): not scanned, so its referrers stay uncertain and keep.
        for r in loaded.referrers:
            if r.host == host and os.path.isabs(r.env):
                roots.add(Root(r.env, kind_of(r.env), store=store))
    records, problems = store.checked_env_records()
    for record in records:
        if record.host == host and os.path.isabs(record.path):
            roots.add(Root(record.path, kind_of(record.path), record, store))
    for path, why in problems:
        if path is not None and os.path.isabs(path):
            roots.envs[path] = Root(path, kind_of(path), None, store, unreadable=why)
        else:
            roots.blocked = roots.blocked or f"an env record cannot be read ({why})"


# ---------------------------------------------------------------- peer stores


def registry_name(store_dir: Path) -> str:
    return hashlib.sha256(os.fsencode(os.path.realpath(store_dir))).hexdigest()[:20]


def register_store(cache_root: Path, store_dir: Path) -> None:
    """Say in the cache that `store_dir` tracks it, so a collect run with any other store
    (another user, another UVREFS_DIR) treats this store's environments as roots. Best
    effort: a read-only cache cannot hold it (the other stores' collects then find this
    one only at the default locations or where they saw it before)."""
    registry = cache_root / REGISTRY
    name = registry / registry_name(store_dir)
    if os.path.lexists(name):
        return
    try:
        try:
            registry.mkdir()
            made = True
        except FileExistsError:
            made = False
        # Through a descriptor opened without following links: a link planted under the
        # registry's name (its parent is the cache root) is never chmod-ed or written into.
        from uvrefs.files import open_dir, write_atomic

        fd = open_dir(str(registry))
        try:
            st = os.fstat(fd)
            if made and st.st_uid == os.geteuid():
                os.fchmod(fd, 0o1777)  # sticky: every user registers, none replaces another
            write_atomic(
                f"/proc/self/fd/{fd}/{name.name}" if os.path.isdir("/proc/self/fd") else str(name),
                os.fsdecode(os.path.realpath(store_dir)),
            )
        finally:
            os.close(fd)
    except OSError:
        pass


def peer_stores(cache: Cache, store: RefsStore) -> list[RefsStore]:
    """Every other store of this cache: registered in the cache, remembered by ours, or at
    the default location of a local user's state directory. Remembers what it found."""
    from uvrefs import stamps

    mine = os.path.realpath(store.dir)
    found: set[str] = set()
    try:
        remembered = store.remembered_peers()
    except StoreError:
        remembered = []
    found.update(remembered)
    registry = cache.root / REGISTRY
    try:
        names = os.listdir(registry) if not registry.is_symlink() else []
    except OSError:
        names = []
    for name in names:
        text = _read_small(registry / name)
        if text and os.path.isabs(text):
            found.add(text)
    for home in _homes():
        state = os.path.join(home, ".local", "state", "uvrefs")
        candidate = stamps.store_dir(state, str(cache.root))
        if os.path.isdir(candidate):
            found.add(os.path.realpath(candidate))
    # A peer is a directory holding a store, or one we may not read (then it blocks).
    peers = sorted(
        p
        for p in found
        if os.path.realpath(p) != mine
        and (os.path.lexists(os.path.join(p, "store.json")) or _unreadable_dir(p))
    )
    if sorted(remembered) != peers:
        try:
            with store.locked():
                store.save_peers(peers)
        except (OSError, StoreError):
            pass  # remembered next time; this run still uses what it found
    return [RefsStore.at(Path(p), cache.root) for p in peers]


def _unreadable_dir(path: str) -> bool:
    try:
        os.listdir(path)
    except PermissionError:
        return True
    except OSError:
        return False
    return False


def _read_small(path: Path, limit: int = 4096) -> str | None:
    """A registry file's text: a regular file, not a link, not a FIFO, a few bytes."""
    from uvrefs.files import read_file

    try:
        raw = read_file(str(path), limit)
    except OSError:
        return None
    return os.fsdecode(raw).strip() or None


def _homes() -> list[str]:
    """Home directories of local users (their default refs stores are peers)."""
    try:
        import pwd

        homes = {p.pw_dir for p in pwd.getpwall() if p.pw_dir and p.pw_dir != "/"}
    except (ImportError, OSError):
        homes = set()
    homes.add(os.path.expanduser("~"))
    return sorted(homes)


# ---------------------------------------------------------------- watched directories


PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")


def holders(records: Iterable[Root]) -> list[str]:
    """The directories that hold tracked environments: a project's env (`proj/.venv`, or
    any env in a directory with a pyproject.toml, setup.py or .git) is held by the
    directory holding the project, so renaming the project is followed whatever its env is
    called (a vanished parent counts as a project); any other env by its parent (`venvs/a`
    renamed `venvs/b` is followed). Never `/`."""
    found = set()
    for root in records:
        for link, _mount in root.links:  # a project env in uv's cache: its project's holder
            holder = Path(link).parent.parent
            if os.path.isabs(link) and holder != Path(holder.anchor):
                found.add(str(holder))
        if root.kind != "tracked" or not os.path.isabs(root.path):
            continue
        path = Path(root.path)
        # A vanished parent may have been a renamed project: search where it was held.
        in_project = (
            path.name == ".venv"
            or not os.path.lexists(path.parent)
            or any(os.path.lexists(path.parent / marker) for marker in PROJECT_MARKERS)
        )
        holder = path.parent.parent if in_project else path.parent
        if holder != Path(holder.anchor):
            found.add(str(holder))
    return sorted(found)


def watched_dirs(store: RefsStore, roots: Roots) -> list[tuple[str, int]]:
    """Holders of tracked envs, now and remembered (searched 2 levels deep), and the
    user's watched directories (4 levels). Holders are remembered in the store, so an env
    renamed after its record was dropped is still searched for where it was."""
    try:
        user = store.watched()
    except StoreError:
        user = []
    now = holders(roots.envs.values())
    try:
        known = store.remembered_holders()
    except StoreError:
        known = []
    kept = sorted({h for h in [*known, *now] if os.path.isdir(h)})
    if kept != sorted(known):
        try:
            with store.locked():
                store.save_holders(kept)
        except (OSError, StoreError):
            pass  # searched this time all the same
    return [(d, HOLDER_DEPTH) for d in kept] + [(d, WATCH_DEPTH) for d in user]


def tool_dir(environ: Mapping[str, str] = os.environ) -> str:
    """uv's tool directory, as uv computes it (`UV_TOOL_DIR`, else the XDG data dir)."""
    if environ.get("UV_TOOL_DIR"):
        return os.path.abspath(os.path.expanduser(environ["UV_TOOL_DIR"]))
    data = environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data, "uv", "tools")


# uv names a centralized project environment `[<name>-]<implementation><version>-<digest>`
# (`centralized_environment_root`); a script's (`<name>-<digest>`) has no version in it.
PROJECT_ENV = re.compile(r"(?:[a-z0-9-]+-)?[a-z]+\d+\.\d+[0-9a-z.+]*-[0-9a-f]{16}")


def project_envs(cache: Cache) -> list[str]:
    """Project environments uv keeps in its cache (preview `centralized-project-envs`),
    named as uv names them, among `env_dirs`."""
    return [env for env in env_dirs(cache) if is_project_env(cache, env)]


def is_project_env(cache: Cache, env: str) -> bool:
    """Whether the real path `env` is where uv keeps a project environment: directly in an
    `environments-v*` bucket, named as uv names those (no listing of the bucket)."""
    bucket, name = os.path.split(env)
    return PROJECT_ENV.fullmatch(name) is not None and any(
        str(d) == bucket and d.name.startswith("environments-") for d in cache.pointer_dirs
    )


def env_dirs(cache: Cache) -> list[str]:
    """Environments that are real directories directly in an `environments-v*` bucket
    (holding `pyvenv.cfg`): centralized project envs and scripts' envs. uv's other cached
    environments there are links to archives."""
    found = []
    for bucket in cache.pointer_dirs:
        if not bucket.name.startswith("environments-"):
            continue
        try:
            with os.scandir(bucket) as it:
                entries = [e for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for entry in entries:
            try:
                if stat.S_ISREG(os.lstat(os.path.join(entry.path, "pyvenv.cfg")).st_mode):
                    found.append(entry.path)
            except OSError:
                continue
    return sorted(found)


def discover(
    dirs: Iterable[str | tuple[str, int]],
    cache_root: Path | None = None,
    max_depth: int = 4,
    unlistable: list[str] | None = None,
    links: dict[str, list[tuple[str, str | None]]] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[str]:
    """Virtual environments (directories with `pyvenv.cfg`) under `dirs` (each a path, or
    a path and how deep to look), not descending into an env, VCS metadata, node_modules
    or the cache. Directories below the top that exist but cannot be listed (where an env
    could hide) are added to `unlistable`; `.venv` links and redirect files leading into
    the cache (its project environments) are added to `links` (env -> [(link, mount)]).
    `progress` hears of each environment found (how many there are is not known ahead)."""
    skip = os.path.realpath(cache_root) if cache_root else None
    found: list[str] = []
    seen_links: list[str] = []
    for spec in dirs:
        top, depth = spec if isinstance(spec, tuple) else (spec, max_depth)
        top = os.path.abspath(os.path.expanduser(top))
        for env in _walk_for_venvs(
            top, depth, skip, unlistable if unlistable is not None else [], seen_links
        ):
            found.append(env)
            if progress:
                progress("finding environments", len(found), 0)
    if links is not None and skip is not None:
        from uvrefs.envs import mount_point
        from uvrefs.targets import follow_redirect, project_link

        inside = os.path.join(skip, "")
        for seen in dict.fromkeys(seen_links):
            link = project_link(seen)
            env = os.path.realpath(follow_redirect(seen))
            if link is not None and env.startswith(inside):
                links.setdefault(env, []).append((link, mount_point(Path(link))))
    return sorted(dict.fromkeys(found))


def _walk_for_venvs(
    top: str, depth: int, skip: str | None, unlistable: list[str], links: list[str]
) -> Iterator[str]:
    """One `scandir` per directory, as `find` reads it: an env is a directory whose
    listing holds `pyvenv.cfg` (no stat of a name that is not there). A `.venv` that is a
    link or a file (a redirect) is added to `links`."""
    stack = [(top, depth)]
    while stack:
        current, left = stack.pop()
        if current == skip:
            continue
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except PermissionError:
            if current != top:
                unlistable.append(current)
            continue
        except OSError:
            continue
        if any(e.name == "pyvenv.cfg" for e in entries):
            yield os.path.realpath(current)
            continue
        links += [
            e.path for e in entries if e.name == ".venv" and not e.is_dir(follow_symlinks=False)
        ]
        if left > 0:
            stack.extend(
                (e.path, left - 1)
                for e in entries
                if e.name not in SKIP_DIRS and e.is_dir(follow_symlinks=False)
            )
