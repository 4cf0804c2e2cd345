"""Roots: every environment whose packages must stay. Found from our refs store and every
peer store of the same cache, uv's own cached and tool environments, the Pythons uv
installed, and the directories uvrefs watches (where a renamed project, or one made with
plain uv, is found again). Nothing here judges an entry: uvrefs.gc.mark scans the roots,
uvrefs.gc.plan decides.

`find_roots` is the one root finder: collect calls it when planning and again under uv's
exclusive lock with the same inputs (the cache, the stores and the host), passing the
first answer so that what did not change is not read twice. It reads nothing from the
environment of the process that runs it: where uv keeps tools and Pythons comes from what
uvrefs commands recorded in the stores (`uvrefs.settings`)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal

from uvrefs.cache import Cache, is_project_env
from uvrefs.hosts import Lease, SharedPlace, leases, local_homes, local_path, place_on
from uvrefs.store.refs import RACY_NS, KnownEnv, Refs, RefsStore, Settings, StoreView
from uvrefs.store.registry import Registration, peer_stores, registry_dir
from uvrefs.tuples import NamedTuple

RootKind = Literal[
    "tracked", "peer", "shared", "uv-cached", "uv-project", "tool", "python", "discovered"
]
SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}
HOLDER_DEPTH = 2  # a tracked env's holder: <holder>/<project>/.venv, <holder>/<venv>
WATCH_DEPTH = 4  # a watched directory (`uvrefs watch add`), as `adopt --discover`
TOOL_DEPTH = 1  # <tool dir>/<tool>


class Root(NamedTuple):
    """An environment to mark from: its path, what made it a root, and the record a store
    holds of it (None for uv's cached envs and environments found by discovery)."""

    path: str
    kind: RootKind
    record: KnownEnv | None = None
    store: RefsStore | None = None  # the store holding its record and stamp
    # Why its record cannot be read, or is missing: then it is never judged gone, and
    # what it was recorded using (`held`, where that can be read) is kept.
    unreadable: str | None = None
    held: tuple[str, ...] = ()
    # A project env in uv's cache: the `.venv` links (or redirect files) known to have led
    # to it, each with the mount point of the project's directory.
    links: tuple[tuple[str, str | None], ...] = ()

    @property
    def label(self) -> str:
        if self.kind == "uv-cached":
            return f"uv's cached environment {Path(self.path).name}"
        if self.kind == "uv-project":
            owner = f" of {os.path.dirname(self.links[0][0])}" if self.links else ""
            return f"uv's project environment {Path(self.path).name}{owner}"
        return self.path if self.kind in ("tracked", "peer") else f"{self.path} ({self.kind})"


class Searched(NamedTuple):
    """A directory searched for environments, how deep, and why (for `watch list`)."""

    path: str
    depth: int
    why: str


class Roots:
    """Every root, keyed by path, plus the refs every store holds and what could not be
    read. `blocked` says why nothing may be freed (a peer store that cannot be read).
    `views` are the stores as read (ours first), `discovery` the directories searched:
    both are handed back to `find_roots` under the lock, which reads again only what
    changed. `listed` maps each entry to the env records (of any host, readable or not)
    that list it, so an entry whose refs were lost is never taken for untracked."""

    def __init__(self) -> None:
        self.envs: dict[str, Root] = {}
        self.refs: dict[str, Refs] = {}  # ours and every peer's, merged
        self.own: set[str] = set()  # entries our store tracks
        self.corrupt: dict[str, str] = {}
        # held: refs `--repair` set aside
        self.set_aside: dict[str, str] = {}
        self.blocked: str | None = None
        self.views: list[StoreView] = []
        self.discovery: Discovery | None = None
        self.listed: dict[str, list[str]] = {}
        self.newer: list[str] = []  # store files a newer uvrefs wrote
        self.peers: list[str] = []  # other stores of this cache
        self.searched: list[Searched] = []
        self.uv_owned: frozenset[str] = frozenset()  # archives uv's cached environments are
        # A recorded env path reached through a symbolic link now -> the env's real path,
        # under which it is a root (one env, listed and scanned once).
        self.aliases: dict[str, str] = {}
        # Every name this machine's envs are recorded under: its machine id and the
        # `UVREFS_HOST` names commands on it used (referrers and records under any of them are
        # this host's, and read as `host`).
        self.hosts: frozenset[str] = frozenset()
        # Other hosts' envs on a filesystem this host mounts too: (host, their path) -> where
        # it is here (a "shared" root); and when each other host last renewed its lease (the
        # store's clock). A host with no lease (an older uvrefs) is never judged gone.
        self.shared: dict[tuple[str, str], str] = {}
        self.host_seen: dict[str, float] = {}
        # The identity of the directory another host's record of a shared env names: (host,
        # path) -> (st_dev, st_ino) as that host saw it. A referrer of that host naming another
        # directory at the path (a local env of its own, where a job in a namespace of its own
        # saw the share) is not judged by the env here.
        self.shared_ids: dict[tuple[str, str], tuple[int, int]] = {}
        # Other hosts' envs whose record this uvrefs cannot read (a newer format, garbage):
        # (host, path) -> why. Never judged, whatever their host's lease: what they name is held.
        self.unjudged: dict[tuple[str, str], str] = {}
        # Stores of this cache another host registered that cannot be read here (on that
        # host's own disk, or at a path this host does not have): what each says -> its
        # registration's age, by the clock of the filesystem the cache is on. While one is
        # younger than `--host-lease` nothing is freed (it may track any entry).
        self.hidden: dict[str, float] = {}
        self.registered: list[Registration] = []
        self.seen: Settings = Settings()  # `find_roots`' `seen`  # `find_roots`' `seen`

    def add(self, root: Root) -> None:
        """Add a root; one with a record replaces one found without (by discovery, uv's
        cache), but never one of ours by a peer store's (anyone may register a store), nor
        one whose record cannot be read (unknown is final)."""
        known = self.envs.get(root.path)
        if known is not None and (
            known.unreadable or (known.kind == "tracked" and root.kind == "peer")
        ):
            return
        if known is None or (known.record is None and root.record is not None):
            self.envs[root.path] = root

    def add_links(self, env: str, links: Iterable[tuple[str, str | None]]) -> None:
        """More `.venv` links known to lead to a project env of uv's cache."""
        root = self.envs.get(env)
        if root is not None:
            merged = dict(root.links)
            for link, mount in links:
                merged.setdefault(link, mount)
            self.envs[env] = root._replace(links=tuple(sorted(merged.items())))

    def kinds(self) -> dict[str, str]:
        """path -> kind: what the equality of two root findings is judged on."""
        return {path: root.kind for path, root in self.envs.items()}

    @property
    def holders(self) -> list[str]:
        """The holders searched this time (to remember in the store)."""
        return sorted({s.path for s in self.searched if s.why.startswith("holds ")})


def find_roots(
    cache: Cache,
    store: RefsStore,
    host: str,
    *,
    previous: Roots | None = None,
    discover_envs: bool = True,
    ours: StoreView | None = None,
    seen: Settings | None = None,
) -> Roots:
    """Read every store of this cache and list every root. `ours`: our store as the
    command read it at its start (`Snapshot`), read here if not given; `seen`: uv's
    settings as the command sees them, merged into what our store remembers. With
    `previous` (this cache's roots found moments ago, by this function), files and
    directories unchanged since are not read again, and the same `seen` counts; the
    answer is the one a fresh call would give."""
    from uvrefs.store.snapshot import read_view

    roots = Roots()
    roots.seen = seen = previous.seen if previous is not None else (seen or Settings())
    earlier = {str(v.store.dir): v for v in previous.views} if previous else {}
    if ours is None:
        ours = read_view(store, seen, earlier.get(str(store.dir)))
    roots.views.append(ours)
    roots.peers, registered = peer_stores(cache, store, ours.peers)
    for peer_dir in roots.peers:
        peer = RefsStore.at(Path(peer_dir), cache.root)
        try:
            roots.views.append(peer.read(earlier.get(str(peer.dir))))
        except FileNotFoundError:
            continue  # deleted since it was found: it tracks nothing any more
        except OSError as exc:
            roots.blocked = (
                f"the refs store {peer.dir}, which tracks this cache too, cannot be read "
                f"({exc.strerror}); delete its entry in {registry_dir(cache)} if it is gone"
            )
    from uvrefs.store.refs import own_names

    mine = own_names()  # a container's: its image's machine id is every other container's too
    named = {a for v in roots.views for a, m in v.settings.hosts.items() if m in mine}
    roots.hosts = frozenset({host, *mine, *named})
    centralized = set(project_envs(cache))
    for view in roots.views:
        _add_store(roots, view, host, cache, centralized, own=view is ours)
    _add_other_hosts(roots, ours)
    _add_hidden_stores(roots, cache, registered)
    _add_missing_records(roots, host)
    roots.uv_owned = frozenset(cache.pointers(buckets=("environments",)))
    for archive_id in sorted(roots.uv_owned):
        path = cache.archive_path(archive_id)
        if path is not None and os.path.isfile(path / "pyvenv.cfg"):
            roots.add(Root(str(path), "uv-cached"))
    for env in env_dirs(cache):
        if env not in centralized:  # a script's: a root while it exists, as uv's cached envs
            roots.add(Root(env, "uv-cached"))
            continue
        roots.add(Root(env, "uv-project"))
        known = roots.envs[env]
        if known.record is not None:
            roots.add_links(env, known.record.projects)
    settings = [v.settings for v in roots.views]
    for python in python_installs(d for s in settings for d in s.python_dirs):
        roots.add(Root(python, "python"))
    if discover_envs:
        tops = [Searched(d, TOOL_DEPTH, "tool") for s in settings for d in s.tool_dirs]
        tops += searched_dirs(roots, ours)
        roots.discovery = discover_roots(tops, cache.root, previous.discovery if previous else None)
        roots.searched = [t for t in tops if t.why != "tool"]
        for env, why in roots.discovery.envs.items():
            roots.add(Root(env, "tool" if why == "tool" else "discovered"))
        for env, env_links in roots.discovery.links.items():
            roots.add_links(env, env_links)
        if roots.discovery.unlistable:
            roots.blocked = roots.blocked or (
                f"{roots.discovery.unlistable[0]}, under a watched directory, cannot be "
                "listed: an environment there could not be seen (fix its permissions, or "
                "`uvrefs watch remove`)"
            )
    _fold_aliases(roots)
    return roots


def _fold_aliases(roots: Roots) -> None:
    """Key every env by its real path: a recorded path that now leads through a symbolic
    link (a folder above it was moved and linked back) is the env at the link's target,
    one root, found once. What its record says of its place is taken from the real path
    (the filesystem it is on, its site directories by their real paths), never from the
    link that led to it."""
    from uvrefs.envs import mount_point

    for path, root in list(roots.envs.items()):
        if root.kind in ("uv-cached", "uv-project") or not os.path.exists(path):
            continue
        real = os.path.realpath(path)
        if real == path:
            continue
        roots.aliases[path] = real
        del roots.envs[path]
        record = root.record
        if record is not None:
            sites = tuple(os.path.realpath(s) for s in record.site_dirs)
            record = record._replace(path=real, mount=mount_point(Path(real)), site_dirs=sites)
        known = roots.envs.get(real)
        if known is None or (known.record is None and record is not None):
            roots.envs[real] = root._replace(path=real, record=record)


def _add_store(
    roots: Roots, view: StoreView, host: str, cache: Cache, centralized: set[str], *, own: bool
) -> None:
    """Add a store's refs (merged by entry), its environments as roots, and what its
    records list. Referrers on other hosts are not roots (they cannot be scanned here);
    the planner keeps them. A recorded env inside the cache is one of uv's cached envs."""
    kind: RootKind = "tracked" if own else "peer"
    inside = os.path.join(cache.root, "")

    def kind_of(path: str) -> RootKind:
        if path in centralized:
            return "uv-project"
        return "uv-cached" if path.startswith(inside) else kind

    roots.newer += view.newer

    def ours(named: str | None) -> bool:
        return named in roots.hosts

    for entry, why in view.set_aside.items():
        roots.set_aside.setdefault(entry, why)
    for entry, why in view.corrupt.items():
        if own:
            roots.corrupt[entry] = why
        else:  # a peer's unreadable refs may name roots we would not know of otherwise
            roots.blocked = roots.blocked or (
                f"the refs of {entry} in {view.store.dir} cannot be read ({why})"
            )
    for entry, read in view.refs.items():
        if own:
            roots.own.add(entry)
        # Referrers of this machine under another of its names read as `host` (the read
        # is kept as it is when none is: most refs, on most machines).
        if any(r.host != host and ours(r.host) for r in read.referrers):
            referrers = tuple(r._replace(host=host) if ours(r.host) else r for r in read.referrers)
            loaded = read._replace(referrers=referrers)
        else:
            loaded = read
        known = roots.refs.get(entry)
        if known is None:
            roots.refs[entry] = loaded
        else:
            roots.refs[entry] = known._replace(referrers=known.referrers + loaded.referrers)
    for read_record in view.records.values():
        renamed = read_record.host != host and ours(read_record.host)
        record = read_record._replace(host=host) if renamed else read_record
        label = record.path if record.host == host else f"{record.path} (on host {record.host})"
        for entry in record.entries:
            roots.listed.setdefault(entry, []).append(label)
        # A relative path means nothing here (it would be judged from the collector's
        # working directory): never a root, so its referrers stay uncertain and keep.
        if record.host == host and os.path.isabs(record.path):
            roots.add(Root(record.path, kind_of(record.path), record, view.store))
    for problem in view.problems:
        for entry in problem.entries:
            roots.listed.setdefault(entry, []).append(f"{problem.path} ({problem.why})")
        if problem.path is not None and os.path.isabs(problem.path):
            if (problem.host is None or ours(problem.host)) and problem.path not in roots.envs:
                roots.envs[problem.path] = Root(
                    problem.path,
                    kind_of(problem.path),
                    None,
                    view.store,
                    unreadable=problem.why,
                    held=problem.entries,
                )
        else:
            roots.blocked = roots.blocked or f"an env record cannot be read ({problem.why})"
        if problem.path is not None and not ours(problem.host):  # "": any host's
            roots.unjudged.setdefault((problem.host or "", problem.path), problem.why)
    for loaded in view.refs.values():
        for r in loaded.referrers:
            if ours(r.host) and os.path.isabs(r.env) and r.env not in roots.envs:
                roots.envs[r.env] = Root(r.env, kind_of(r.env), None, view.store)


def _add_other_hosts(roots: Roots, ours: StoreView | None) -> None:
    """Another host's envs on a filesystem this host mounts too (the same export, NFS or
    sshfs or ...) are judged here: each is a root ("shared") where this host sees it, with
    the filesystem's mount point here and no mount namespace (it is visible here). When
    each other host last renewed its lease, in any store (by that store's clock).

    A referrer of another host whose env has no record of that host's (another host
    recorded the env since: records are one per path) is judged where its host's network
    mounts (its lease) say the env is, if that is a root here already (one with a record,
    so known how to judge); else it stays another host's."""
    from uvrefs.envs import mount_point

    seen: dict[str, float] = {}
    lease_of: dict[str, Lease] = {}
    for view in roots.views:
        for lease in leases(str(view.store.dir)).values():
            if lease.host not in roots.hosts and lease.seen > seen.get(lease.host, 0.0):
                seen[lease.host] = lease.seen
                lease_of[lease.host] = lease
        for record in view.records.values():
            if record.host in roots.hosts:
                continue
            here = local_path(SharedPlace(*record.shared)) if record.shared else None
            if here is None or not os.path.isabs(here):
                continue
            if view is not ours and here in roots.envs:
                continue  # a peer's record never stands for an env of ours
            roots.shared[record.host, record.path] = here
            if record.identity is not None:
                roots.shared_ids[record.host, record.path] = record.identity
            sites = _sites_here(record, here, lease_of.get(record.host))
            if sites is None:
                why = (
                    f"recorded on host {record.host[:24]} with packages outside it, in "
                    "directories not known to be on a filesystem this host mounts"
                )
                roots.envs[here] = Root(here, "shared", None, view.store, unreadable=why,
                                        held=record.entries)  # fmt: skip
                continue
            local = record._replace(
                path=here, site_dirs=sites, mount=mount_point(Path(here)), mntns=None
            )
            roots.add(Root(here, "shared", local, view.store))
    # A name a machine's commands used (`UVREFS_HOST`) is alive while that machine is: its
    # collect, run without the variable, renews only the machine's own lease.
    for view in roots.views:
        for name, machine in view.settings.hosts.items():
            if name in seen and machine in seen and name not in roots.hosts:
                seen[name] = max(seen[name], seen[machine])
    roots.host_seen = seen
    looked: set[tuple[str, str]] = set()
    for view in roots.views if lease_of else ():
        for refs in view.refs.values():
            for r in refs.referrers:
                pair = (r.host, r.env)
                if r.host not in lease_of or pair in roots.shared or pair in looked:
                    continue
                if not lease_of[r.host].placeable:
                    continue  # where its paths are cannot be told: another host's
                looked.add(pair)
                place = place_on(lease_of[r.host].mounts, r.env)
                here = local_path(place) if place is not None else None
                if here is not None and here in roots.envs and roots.envs[here].record:
                    roots.shared[pair] = here


def _sites_here(record: KnownEnv, here: str, lease: Lease | None) -> tuple[str, ...] | None:
    """Another host's record's site directories where this host sees them: inside the env,
    rebased onto where the env is here; outside it, by that host's network mounts (its
    lease) and this host's; None if one cannot be placed here."""
    sites = []
    for site in record.site_dirs:
        below = os.path.relpath(site, record.path) if os.path.isabs(site) else ".."
        if below != ".." and not below.startswith("../"):
            sites.append(os.path.normpath(os.path.join(here, below)))
            continue
        place = place_on(lease.mounts, site) if lease is not None and lease.placeable else None
        there = local_path(place) if place is not None else None
        if there is None:
            return None
        sites.append(there)
    return tuple(sites)


def _add_missing_records(roots: Roots, host: str) -> None:
    """A tracked env named only by referrers has lost its record (every recorder writes
    the record first): only the record says where its packages live (a `--target` dir,
    a system interpreter's dist-packages) and which filesystem and namespace it was on.
    Unless it is a virtual environment in place (then its layout says it all), it is
    unknown, and what its referrers name stays held."""
    for path, root in list(roots.envs.items()):
        if root.kind not in ("tracked", "peer") or root.record or root.unreadable:
            continue
        try:
            is_venv = stat.S_ISREG(os.stat(os.path.join(path, "pyvenv.cfg")).st_mode)
        except OSError:
            is_venv = False
        if not is_venv:
            why = (
                f"its record is missing from the refs store {root.store.dir if root.store else ''}"
                " (deleted?), so where its packages live is not known; `uvrefs adopt` it "
                "if it still exists"
            )
            roots.envs[path] = root._replace(unreadable=why)


# ---------------------------------------------------------------- peer stores


def _add_hidden_stores(roots: Roots, cache: Cache, registered: Iterable[Registration]) -> None:
    """A store another host registered is read here if its registration names the id of
    one of the stores read (`stamps.store_id`); otherwise it is hidden from this host (on
    the other host's own disk, reached there by a path this one lacks, or registered in a
    way this uvrefs cannot read), and may track anything (`Roots.hidden`, with the
    registration's age: collect frees nothing while one is younger than --host-lease).
    One this machine made (by its own names, never a `UVREFS_HOST` name, which another
    host may use too) is read if its path leads to a store read here."""
    from uvrefs.hosts import host_key
    from uvrefs.store.refs import own_names

    roots.registered = list(registered)
    mine = {host_key(h) for h in own_names()}
    names = {host_key(lease_host): lease_host for lease_host in roots.host_seen}
    read = {v.id for v in roots.views} - {None}
    read_dirs = {os.path.realpath(v.store.dir) for v in roots.views}
    clocks: dict[str, float] = {}
    for reg in registered:
        if reg.problem is not None:  # what is registered there cannot be known
            roots.hidden[reg.problem] = 0.0
            continue
        if reg.store in read or (
            reg.key in mine and reg.path is not None and os.path.realpath(reg.path) in read_dirs
        ):
            continue
        if reg.registry not in clocks:
            clocks[reg.registry] = _clock_in(cache.root, reg.registry)
        clock = clocks[reg.registry]
        who = names.get(reg.key, f"host {reg.key[:12]}" if reg.key else "a host")
        where = (
            f"at {reg.path}"
            if reg.path is not None
            else f"that {reg.registry}/{reg.name} names "
            "in a way this uvrefs cannot read (a newer uvrefs?)"
        )
        what = (
            f"{who} keeps a refs store of this cache {where}, which this host cannot read "
            "(on that host's own disk?): put every host's store on the shared filesystem "
            f"(UVREFS_DIR), or `uvrefs hosts forget {reg.key[:12] or reg.name}` if that host "
            "is gone for good"
        )
        age = max(clock - reg.mtime, 0.0) if clock else 0.0
        roots.hidden[what] = min(age, roots.hidden.get(what, age))


def _clock_in(root: Path, directory: str) -> float:
    """`hosts.fs_clock` in a registry, through a descriptor opened from the cache root
    without following a link (`registry.open_registry`: a link swapped in since it was
    listed never leads the probe file elsewhere)."""
    from uvrefs.hosts import fs_clock
    from uvrefs.store.registry import open_registry

    try:
        fd = open_registry(root, directory)
    except (OSError, ValueError):
        return 0.0
    try:
        return fs_clock(fd)
    finally:
        os.close(fd)


def hidden_store(roots: Roots, host_lease: float) -> str | None:
    """Why nothing may be freed, if a store this host cannot read was registered (or
    renewed) within `host_lease`: at planning and again under uv's lock, the same rule."""
    from uvrefs.hosts import lease_over

    return next((why for why, age in roots.hidden.items() if not lease_over(age, host_lease)), None)


# ---------------------------------------------------------------- watched directories


PROJECT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")


def holder_of(path: str) -> str | None:
    """The directory searched for a tracked env when it is gone from its path: a project's
    env (`proj/.venv`, or any env in a directory with a pyproject.toml, setup.py or .git,
    or whose directory is gone) is held by the directory holding the project, so renaming
    the project is followed whatever its env is called; any other env by its parent
    (`venvs/a` renamed `venvs/b` is followed). Never `/` nor a directory above a user's
    home (`~/.venv` is held by `~`, not by `/home`, which holds other users' homes)."""
    env = Path(path)
    in_project = (
        env.name == ".venv"
        or not os.path.lexists(env.parent)
        or any(os.path.lexists(env.parent / marker) for marker in PROJECT_MARKERS)
    )
    for holder in (env.parent.parent, env.parent) if in_project else (env.parent,):
        if _may_hold(str(holder)):
            return str(holder)
    return None


def _may_hold(holder: str) -> bool:
    if holder == os.path.dirname(holder):  # the root
        return False
    inside = os.path.join(holder, "")
    return not any(home.startswith(inside) for home in local_homes())


def searched_dirs(roots: Roots, ours: StoreView) -> list[Searched]:
    """Holders of tracked envs, now and remembered (searched 2 levels deep), and the
    user's watched directories (4 levels), in the order they are searched."""
    found: dict[str, str] = {}
    for root in roots.envs.values():
        for link, _mount in root.links:  # a project env in uv's cache: its project's holder
            holder = holder_of(link) if os.path.isabs(link) else None
            if holder:
                found.setdefault(holder, f"holds {link}")
        if root.kind == "tracked" and os.path.isabs(root.path):
            holder = holder_of(root.path)
            if holder:
                found.setdefault(holder, f"holds {root.path}")
    for holder in ours.holders:  # an env renamed after its record was dropped
        if _may_hold(holder):
            found.setdefault(holder, "holds environments it held before")
    searched = [Searched(d, HOLDER_DEPTH, why) for d, why in sorted(found.items())]
    return searched + [Searched(d, WATCH_DEPTH, "watched") for d in sorted(set(ours.watched))]


def project_envs(cache: Cache) -> list[str]:
    """Project environments uv keeps in its cache (preview `centralized-project-envs`),
    named as uv names them, among `env_dirs`."""
    return [env for env in env_dirs(cache) if is_project_env(cache, env)]


def env_dirs(cache: Cache) -> list[str]:
    """Environments that are real directories directly in an `environments-v*` bucket
    (holding `pyvenv.cfg`): centralized project envs and scripts' envs. uv's other cached
    environments there are links to archives."""
    found = []
    for bucket in cache.pointer_dirs:
        if not bucket.name.startswith("environments-"):
            continue
        for entry in _subdirs(bucket):
            try:
                if stat.S_ISREG(os.lstat(os.path.join(entry.path, "pyvenv.cfg")).st_mode):
                    found.append(entry.path)
            except OSError:
                continue
    return sorted(found)


def _subdirs(directory: str | Path) -> list[os.DirEntry[str]]:
    """The directories (not links to one) directly in `directory`; none if it cannot be
    read."""
    try:
        with os.scandir(directory) as it:
            return [e for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def python_installs(dirs: Iterable[str]) -> list[str]:
    """The Pythons uv installed in its Python directories (each a prefix with `lib/`,
    whose site-packages `uv pip install --system` installs into); minor-version links
    uv makes beside them are the same installs."""
    found = set()
    for directory in dirs:
        for entry in _subdirs(directory):
            if not entry.name.startswith(".") and os.path.isdir(os.path.join(entry.path, "lib")):
                found.add(os.path.realpath(entry.path))
    return sorted(found)


# ---------------------------------------------------------------- discovery


class Listing(NamedTuple):
    """A directory as discovery read it: its identity and times when read, whether it is
    an environment, its subdirectories, its symbolic links (any of which may lead to a
    directory now: they are looked at again every time, since a link's target can appear
    without its directory changing) and its `.venv` links or redirect files. `racy`:
    changed too close to the read to be trusted unchanged later on the strength of its
    times."""

    ident: tuple[int, int, int, int]  # st_dev, st_ino, st_mtime_ns, st_ctime_ns
    env: bool
    subdirs: tuple[str, ...]
    symlinks: tuple[str, ...]
    links: tuple[str, ...]
    racy: bool


class Discovery:
    """What a search found: environments (real path -> why its top was searched), the
    `.venv` links leading into the cache (env -> [(link, mount of its directory)]),
    directories that exist but cannot be listed, and every listing (to search again)."""

    def __init__(self) -> None:
        self.envs: dict[str, str] = {}
        self.links: dict[str, list[tuple[str, str | None]]] = {}
        self.unlistable: list[str] = []
        self.listings: dict[str, Listing] = {}
        self.relisted: int = 0  # directories listed (not taken from the previous search)


def discover_roots(
    tops: Iterable[Searched],
    cache_root: Path | None,
    previous: Discovery | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Discovery:
    """Environments (directories holding `pyvenv.cfg`) under each top, as deep as it says;
    see `_walk`. With `previous`, a directory whose identity and mtime are unchanged (and
    were not racy) is not listed again: creating, removing or renaming anything in a
    directory changes its mtime, so the answer is what a full search would find."""
    found = Discovery()
    skip = _ident(str(cache_root)) if cache_root else None
    inside = os.path.join(os.path.realpath(cache_root), "") if cache_root else None
    seen_links: list[str] = []
    visited: dict[tuple[int, int], int] = {}
    for top in tops:
        for env in _walk(top, (skip, inside), previous, found, visited, seen_links):
            found.envs.setdefault(env, top.why)
            if progress:
                progress("finding environments", len(found.envs), 0)
    if inside is not None:
        from uvrefs.envs import link_mount
        from uvrefs.targets import follow_redirect, project_link

        for seen in dict.fromkeys(seen_links):
            link = project_link(seen)
            env = os.path.realpath(follow_redirect(seen))
            if link is not None and env.startswith(inside):
                found.links.setdefault(env, []).append((link, link_mount(link)))
    return found


def discover(
    dirs: Iterable[str | tuple[str, int]],
    cache_root: Path | None = None,
    max_depth: int = WATCH_DEPTH,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[str]:
    """Environments under `dirs` (each a path, or a path and how deep to look), by real
    path: `adopt --discover` and `watch add`."""
    tops = []
    for spec in dirs:
        top, depth = spec if isinstance(spec, tuple) else (spec, max_depth)
        tops.append(Searched(os.path.abspath(os.path.expanduser(top)), depth, "watched"))
    return sorted(discover_roots(tops, cache_root, progress=progress).envs)


def _ident(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _walk(
    top: Searched,
    cache: tuple[tuple[int, int] | None, str | None],
    previous: Discovery | None,
    found: Discovery,
    visited: dict[tuple[int, int], int],
    links: list[str],
) -> Iterator[str]:
    """One `scandir` per directory, as `find -L` reads it: an env is a directory whose
    listing holds `pyvenv.cfg`; symbolic links to directories are followed (read only), a
    directory reached twice (a link loop, two links to one place) is read once (by
    `(st_dev, st_ino)`, with the most levels left); never into VCS metadata,
    node_modules, an env or the cache. A `.venv` that is a link or a file (a redirect)
    is added to `links`; a directory that exists but cannot be listed (an env in it could
    not be seen) to `found.unlistable`, the top included if the user asked for it to be
    searched (watched): a holder is only searched in case a tracked env was renamed there,
    and one the collector may not list hides nothing it was asked to see."""
    skip, inside = cache  # the cache root's identity, and its real path with a "/"
    stack = [(top.path, top.depth, False)]
    hidden = found.unlistable if top.why == "watched" else []
    now = time.time_ns()
    while stack:
        current, left, via_link = stack.pop()
        if via_link and inside and os.path.realpath(current).startswith(inside):
            continue  # a link into the cache: uv's own environments are found there
        try:
            st = os.stat(current)
        except (FileNotFoundError, NotADirectoryError):
            continue  # gone, or a dangling link: nothing there to see
        except OSError:
            (hidden if current == top.path else found.unlistable).append(current)
            continue
        key = (st.st_dev, st.st_ino)
        if not stat.S_ISDIR(st.st_mode) or key == skip or visited.get(key, -1) >= left:
            continue
        visited[key] = left
        listing = _listing(current, st, previous, now)
        if listing is None:
            (hidden if current == top.path else found.unlistable).append(current)
            continue
        if listing is not previous_listing(previous, current):
            found.relisted += 1
        found.listings[current] = listing
        if listing.env:
            yield os.path.realpath(current)
            continue
        if listing.links:
            links += [os.path.join(current, n) for n in listing.links]
        if left > 0:  # a link is followed only if it leads to a directory when popped
            prefix = current + os.sep if current != os.sep else current
            linked = set(listing.symlinks)
            children = sorted((*listing.subdirs, *listing.symlinks), reverse=True)
            stack.extend((prefix + n, left - 1, n in linked) for n in children)


def previous_listing(previous: Discovery | None, path: str) -> Listing | None:
    return previous.listings.get(path) if previous is not None else None


def _listing(path: str, st: os.stat_result, previous: Discovery | None, now: int) -> Listing | None:
    """The directory's listing: the previous one if nothing in it changed since (the same
    directory, the same mtime and ctime: setting an mtime back, as `rsync -a` or `tar` do,
    still changes the ctime), else read now (one pass over its entries: a million-file
    tree passes through here). None if it cannot be listed (permission, an I/O error): an
    env there could not be seen."""
    ident = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    known = previous.listings.get(path) if previous is not None else None
    if known is not None and known.ident == ident and not known.racy:
        return known
    env = False
    subdirs: list[str] = []
    symlinks: list[str] = []
    venv_links: list[str] = []
    try:
        with os.scandir(path) as it:
            for entry in it:
                name = entry.name
                if name == "pyvenv.cfg":
                    env = True
                elif entry.is_dir(follow_symlinks=False):
                    if name not in SKIP_DIRS:
                        subdirs.append(name)
                    continue
                if name == ".venv":  # a link, or a file: a redirect
                    venv_links.append(name)
                if entry.is_symlink() and name not in SKIP_DIRS:
                    symlinks.append(name)
    except (FileNotFoundError, NotADirectoryError):
        return Listing(ident, False, (), (), (), True)  # gone meanwhile
    except OSError:
        return None
    racy = now - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_NS
    return Listing(ident, env, tuple(subdirs), tuple(symlinks), tuple(venv_links), racy)
