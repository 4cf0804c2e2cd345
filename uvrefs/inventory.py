"""Seeing what uvrefs sees: adopting environments made with plain uv, listing tracked
environments, and saying which environments keep a package's entries. Read-only apart
from `adopt`, which records refs exactly as a tracked install does."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from uvrefs import uv
from uvrefs.cache import Cache
from uvrefs.envs import ArchiveIndex
from uvrefs.errors import UvrefsError
from uvrefs.footprints import Footprints
from uvrefs.gc.collect import SizeMemory, Survey, gather_facts, write_back
from uvrefs.gc.mark import Progress
from uvrefs.gc.plan import Facts, Policy, entry_states, referrer_verdict, used_by
from uvrefs.gc.roots import discover
from uvrefs.names import normalize
from uvrefs.store.refs import RefsStore
from uvrefs.targets import target_of_path
from uvrefs.track import record_env
from uvrefs.tuples import NamedTuple


class Adopted(NamedTuple):
    env: str
    entries: int
    refs_written: int


class Adoption(NamedTuple):
    """What `adopt` did: the environments recorded, and `(path, why)` for each that could
    not be (the others are adopted all the same)."""

    adopted: tuple[Adopted, ...]
    failed: tuple[tuple[str, str], ...]


def adopt(
    cache: Cache,
    store: RefsStore,
    paths: Iterable[str],
    progress: Progress | None = None,
    command: str = "adopt",
) -> Adoption:
    """Record existing environments as referrers, without installing anything. Holds uv's
    lock shared, like a tracked install; adopting an env twice writes nothing new. An env
    that cannot be adopted (not an env, unreadable, a broken interpreter) is reported and
    the others are adopted."""
    paths = list(paths)
    adopted, failed = [], []
    with uv.CacheLock(cache.root, exclusive=False, timeout=uv.lock_timeout()):
        index = ArchiveIndex(cache)
        for number, path in enumerate(paths):
            if progress:
                progress("adopting environments", number, len(paths))
            try:
                target = target_of_path(path)
                result = record_env(cache, store, target, command, index=index)
            except UvrefsError as exc:
                failed.append((path, str(exc)))
                continue
            adopted.append(Adopted(target.path, result.entries, result.changed))
    return Adoption(tuple(adopted), tuple(failed))


def uv_tool_envs() -> list[str]:
    """The environments of `uv tool install`ed tools (`uv tool dir`)."""
    try:
        tool_dir = uv.query(uv.find_uv(), ["tool", "dir"])
    except Exception:  # no uv, or no tools: nothing to add
        return []
    return discover([tool_dir], max_depth=1)


class EnvView(NamedTuple):
    path: str
    state: str
    detail: str
    python: str | None
    link_modes: tuple[str, ...]
    entries: int
    sole_bytes: int  # bytes only this env keeps alive: freed once it goes
    kind: str = "tracked"  # tracked, peer, uv-cached, tool, discovered, other host
    sizes_from_memory: int = 0  # of the archives in sole_bytes (measured before, unchanged)


def list_envs(cache: Cache, store: RefsStore, progress: Progress | None = None) -> list[EnvView]:
    """Every root collect marks from, and every env a referrer names: its state (as
    collect judges it), what made it a root, and the bytes only it keeps alive (the live
    set, so an entry two roots use is nobody's alone)."""
    survey = gather_facts(cache, store, progress)
    facts = survey.facts
    holders: dict[str, set[str]] = {}
    for root_path, root_scan in facts.envs.items():
        for entry in root_scan.uses if root_scan.state == "alive" else ():
            holders.setdefault(entry, set()).add(root_path)
    for entry, refs in facts.refs.items():  # unknown envs still hold what they used
        for ref in refs.referrers:
            if referrer_verdict(ref, entry, facts)[0] == "unsure":
                holders.setdefault(entry, set()).add(ref.env)
    others = {r.env for refs in facts.refs.values() for r in refs.referrers if r.host != facts.host}
    sole: dict[str, list[str]] = {}
    for entry, who in holders.items():
        if len(who) == 1 and entry in facts.archives:
            sole.setdefault(next(iter(who)), []).append(entry)
    memory = SizeMemory(survey)
    footprints = memory.footprints(cache)
    views = []
    for env in set(survey.roots.envs) | others:
        scan = facts.envs.get(env)
        root = survey.roots.envs.get(env)
        if scan is None:
            state, detail = "unknown", "recorded on another host"
        else:
            state, detail = scan.state, scan.detail
        modes = tuple(sorted(set(scan.uses.values()))) if scan and not scan.reused else ()
        alone = sole.get(env, [])
        views.append(
            EnvView(
                env,
                state,
                detail,
                _python_of(env),
                modes,
                len(scan.uses) if scan else 0,
                sum(footprints.frees(alone, outside=False).values()),
                root.kind if root else "other host",
                len(footprints.remembered.intersection(alone)),
            )
        )
    memory.save(facts.archives)
    write_back(survey)
    return sorted(views, key=lambda v: (-v.sole_bytes, v.path))


def _python_of(env: str) -> str | None:
    from uvrefs.files import read_utf8

    try:  # a FIFO or a link planted as pyvenv.cfg is never waited on or followed
        text = read_utf8(os.path.join(env, "pyvenv.cfg"), 65536)
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version_info", "version"):
            return value.strip()
    return None


class Keeper(NamedTuple):
    env: str
    verdict: str  # holds | dead | unsure
    why: str


class EntryView(NamedTuple):
    """One entry as collect judges it now: `state` is live, dead, held, untracked or uv's
    own (the words `status` uses), `reason` says why, `referrers` each ref's verdict."""

    entry: str
    dist: str | None
    version: str | None
    tags: tuple[str, ...]
    tracked: bool
    referrers: tuple[Keeper, ...]
    state: str = ""
    reason: str = ""
    bytes: int = 0  # what its archive occupies


def policy_with(host_lease: float | None) -> Policy:
    """The policy collect judges by (its defaults), with `--host-lease` if given."""
    return Policy() if host_lease is None else Policy(host_lease=host_lease)


def why(
    cache: Cache,
    store: RefsStore,
    query: str,
    progress: Progress | None = None,
    *,
    host_lease: float | None = None,
) -> list[EntryView]:
    """Every entry of a package (any version or build), or the entry with that id, its
    state and each referrer's verdict, as `collect` would judge it now."""
    from uvrefs.gc.collect import plan_with_policy

    survey: Survey = gather_facts(cache, store, progress, reuse=True)  # as collect judges
    # the plan collect makes (outside hard links read), so `why` says what status counts
    plan = plan_with_policy(cache, survey, policy_with(host_lease), progress, sized=False)
    facts = survey.facts
    states = entry_states(plan, facts)
    wanted = normalize(query)
    memory = SizeMemory(survey)

    def remembered(entry: os.DirEntry[str]) -> tuple[str, ...] | None:
        try:
            found = memory.recall(entry.name, entry.stat(follow_symlinks=False))
        except OSError:
            return None
        return found[3] if found is not None else None

    matched = []
    for archive in cache.archives(remembered):
        names = [n.removesuffix(".dist-info").rpartition("-")[0] for n in archive.dist_infos]
        if archive.id == query or wanted in {normalize(n) for n in names}:
            matched.append(archive)
    # what each occupies, remembered or walked now (no other archive is looked at)
    sizes = Footprints.measure([(a.id, str(a.path)) for a in matched], memory.known)
    memory.new.update(sizes.walked)
    memory.save(facts.archives)
    write_back(survey)
    labels = {root.label: root.path for root in survey.roots.envs.values()}
    views = []
    for archive in matched:
        refs = facts.refs.get(archive.id)
        dist, version, tags = cache.describe(archive.id)
        keepers = []
        for ref in refs.referrers if refs else []:
            verdict, because = referrer_verdict(ref, archive.id, facts)
            if verdict == "holds" and _evidence(facts, archive.id, ref.env) == "content":
                because += " (by content)"
            keepers.append(Keeper(ref.env, verdict, because))
        state, reason = states[archive.id]
        users = facts.live.get(archive.id, ())
        if state == "live" and users and reason == used_by(users):
            content = _evidence(facts, archive.id, labels.get(users[0], "")) == "content"
            reason = used_by((users[0] + " (by content)" * content, *users[1:]))
        if state == "dead":
            reason = f"the next collect frees it ({reason})"
        views.append(
            EntryView(
                archive.id,
                normalize(dist) if dist else None,
                version,
                tuple(tags),
                refs is not None,
                tuple(keepers),
                state,
                reason,
                sizes.occupied.get(archive.id, 0),
            )
        )
    return sorted(views, key=lambda v: (-v.bytes, v.dist or "", v.version or "", v.entry))


def _evidence(facts: Facts, entry: str, env: str) -> str | None:
    """How `env` uses `entry` (symlink, hardlink, content, build): from its scan, or,
    when its record stood in for a scan, from what its referrer recorded."""
    scan = facts.envs.get(env)
    if scan is not None and not scan.reused:
        return scan.uses.get(entry)
    refs = facts.refs.get(entry)
    return next((r.how for r in refs.referrers if r.env == env), None) if refs else None


class Share(NamedTuple):
    entries: int
    bytes: int


class PackageView(NamedTuple):
    """One package (by uv's normalised name) across its cache entries: versions, builds
    (wheel tags), what its entries occupy, how many are in each state and the environments
    that use them."""

    name: str
    versions: tuple[str, ...]
    builds: tuple[str, ...]
    bytes: int
    entries: int
    states: dict[str, int]
    envs: tuple[str, ...]

    @property
    def state(self) -> str:
        """`live`, or with counts when mixed: `live 1, dead 2`."""
        if len(self.states) == 1:
            return next(iter(self.states))
        return ", ".join(f"{state} {n}" for state, n in self.states.items())


class Status(NamedTuple):
    """The cache split the way collect sees it. `total` is counted as `uv cache size`
    counts (every inode once); `dead_frees` is what the next collect really frees.
    live: some living root uses it; dead: the next collect frees it (its archives, and the
    pointers and sdist revisions that go with them); held: tracked, no root uses it, kept
    all the same (uncertain, hard-linked, another store's, unreadable refs); untracked: no
    root uses it and no store ever tracked it. A file several archives share counts once,
    in the one collect keeps longest."""

    cache: str
    total: int
    live: Share
    dead: Share
    dead_frees: int
    untracked: Share
    uv_own: int  # index metadata, interpreters, cached environments, builds, pointers
    held: Share = Share(0, 0)
    remembered: int = 0  # archives whose size came from an earlier walk (unchanged since)
    archives: int = 0
    packages: tuple[PackageView, ...] | None = None  # with `packages`: largest first
    warnings: tuple[str, ...] = ()  # about the store as read (`collect.survey_warnings`)


STATES = ("live", "uv's own", "held", "untracked", "dead")  # the order collect keeps them in


def status(
    cache: Cache,
    store: RefsStore,
    progress: Progress | None = None,
    *,
    packages: bool = False,
    host_lease: float | None = None,
) -> Status:
    """The split of the cache, from one look at it (the total, and each archive's share)
    and the same mark and plan as a dry run. An archive measured before (by a status, an
    envs or a dry run) and unchanged since is not walked again: uv never changes one.
    With `packages`, the same figures per package too."""
    from uvrefs.footprints import cache_total
    from uvrefs.gc.collect import plan_with_policy, survey_warnings

    survey = gather_facts(cache, store, progress, reuse=True)
    memory = SizeMemory(survey)
    plan = plan_with_policy(cache, survey, policy_with(host_lease), progress, memory=memory)
    states = entry_states(plan, survey.facts)
    by_state: dict[str, list[str]] = {}
    for entry, (state, _) in states.items():
        by_state.setdefault(state, []).append(entry)
    rank = {state: number for number, state in enumerate(STATES)}

    def kept_longest(entry: str) -> tuple[int, str]:
        return rank.get(states.get(entry, ("",))[0], len(rank)), entry

    footprints = None if survey.blobs.where else memory.footprints(cache)
    total, per_archive, walked = cache_total(cache, footprints, kept_longest)
    if walked is not None:
        memory.new.update(walked)
    memory.save(per_archive)
    write_back(survey)
    remembered = footprints.from_memory if footprints is not None and walked is None else 0
    going = {d.entry: memory.beside.get(d.entry, 0) for d in plan.free}  # its pointers
    shares = {
        name: Share(len(ids), sum(per_archive.get(e, 0) + going.get(e, 0) for e in ids))
        for name in ("live", "dead", "held", "untracked")
        for ids in [by_state.get(name, [])]
    }
    archived = sum(s.bytes for s in shares.values())
    views = None
    if packages:
        sizes = {e: per_archive.get(e, 0) + going.get(e, 0) for e in states}
        views = package_views(cache, survey, states, sizes)
    return Status(
        str(cache.root),
        total,
        shares["live"],
        shares["dead"],
        sum(d.bytes for d in plan.free),
        shares["untracked"],
        total - archived,
        shares["held"],
        remembered,
        len(per_archive),
        views,
        tuple(survey_warnings(survey)),
    )


def package_views(
    cache: Cache,
    survey: Survey,
    states: dict[str, tuple[str, str]],
    sizes: dict[str, int],
) -> tuple[PackageView, ...]:
    """One row per package (uv's normalised name) over the archives holding a dist-info,
    largest first: names, versions and tags from the refs, else from the archive."""
    facts = survey.facts
    rows: dict[str, dict[str, Any]] = {}
    for entry in sorted(states):
        refs = facts.refs.get(entry)
        dist: str | None
        version: str | None
        if refs is not None and refs.dist:
            dist, version, tags = refs.dist, refs.version, list(refs.tags)
        else:
            dist, version, tags = cache.describe(entry)
        if not dist:
            continue  # no dist-info: one of uv's cached environments (uv's own)
        row = rows.setdefault(
            normalize(dist),
            {"versions": set(), "builds": set(), "bytes": 0, "states": {}, "envs": set()},
        )
        row["versions"].add(version or "?")
        row["builds"].update(tags)
        row["bytes"] += sizes.get(entry, 0)
        state = states[entry][0]
        row["states"][state] = row["states"].get(state, 0) + 1
        row["envs"].update(facts.live.get(entry, ()))
    views = [
        PackageView(
            name,
            tuple(sorted(row["versions"], key=_version_key)),
            tuple(sorted(row["builds"])),
            row["bytes"],
            sum(row["states"].values()),
            {s: row["states"][s] for s in STATES if s in row["states"]},
            tuple(sorted(row["envs"])),
        )
        for name, row in rows.items()
    ]
    return tuple(sorted(views, key=lambda v: (-v.bytes, v.name)))


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Versions in numeric order where they are numbers (`2.10` after `2.9`)."""
    parts = version.replace("-", ".").replace("+", ".").split(".")
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


# ---------------------------------------------------------------- hosts


class HostView(NamedTuple):
    """One host of this cache's store: its lease, its envs, and what only they keep."""

    host: str
    name: str  # its host name at its last lease ("" without one)
    container: bool
    this: bool  # this host (under any of its names)
    seen: float | None  # its last lease, by the store's clock; None: no lease
    recorded: float  # its newest record or referrer (its own clock), 0 if none
    state: str  # this host | alive | expired | no lease
    envs: int  # envs it recorded (records or referrers)
    shared_envs: int  # of those, on a filesystem this host mounts too (judged here)
    sole_entries: int  # entries only its envs keep (as if it were alive)
    sole_bytes: int  # what freeing them frees (a file shared with another entry counted once)
    sizes_from_memory: int = 0


class HostsReport(NamedTuple):
    hosts: tuple[HostView, ...]
    lease: float  # --host-lease: another host unseen this long is judged gone
    clock: float  # now, by the store's clock


def list_hosts(
    cache: Cache,
    store: RefsStore,
    progress: Progress | None = None,
    *,
    host_lease: float | None = None,
) -> HostsReport:
    """Every host of this cache: this one, each with a lease in a store, each named by a
    record or referrer; its lease state (by `--host-lease`), its envs, and the entries
    only its envs keep: what the next collect frees once its lease is over (or
    `hosts forget`), counted as if it were alive."""

    from uvrefs.gc.plan import epoch
    from uvrefs.hosts import Lease, lease_over, leases

    policy = policy_with(host_lease)
    survey = gather_facts(cache, store, progress, reuse=True)
    facts = survey.facts._replace(gone_hosts={})  # what each would keep if alive
    roots = survey.roots
    clock = survey.clock

    def owner(host: str, env: str) -> str:
        """Whose an env is: its host's, or nobody's alone on a shared filesystem."""
        if host != facts.host and (host, env) in roots.shared:
            return ""
        return host

    keepers: dict[str, set[str]] = {}
    shared_here = set(roots.shared.values())
    for path, scan in facts.envs.items():
        if scan.state == "alive":
            keeper = "" if path in shared_here else facts.host
            for entry in scan.uses:
                keepers.setdefault(entry, set()).add(keeper)
    envs: dict[str, set[str]] = {}
    shared: dict[str, set[str]] = {}
    recorded: dict[str, float] = {}

    def saw(host: str, env: str, when: object) -> None:
        envs.setdefault(host, set()).add(env)
        if not owner(host, env):
            shared.setdefault(host, set()).add(env)
        recorded[host] = max(recorded.get(host, 0.0), epoch(when))

    for entry, refs in facts.refs.items():
        for ref in refs.referrers:
            saw(ref.host, ref.env, ref.recorded_at)
            if referrer_verdict(ref, entry, facts)[0] != "dead":
                keepers.setdefault(entry, set()).add(owner(ref.host, ref.env))
    for view in roots.views:
        for record in view.records.values():
            saw(facts.host if record.host in roots.hosts else record.host, record.path,
                record.recorded_at)  # fmt: skip
    lease_of: dict[str, Lease] = {}
    for view in roots.views:
        for read in leases(str(view.store.dir)).values():
            whose = facts.host if read.host in roots.hosts else read.host
            if whose not in lease_of or read.seen > lease_of[whose].seen:
                lease_of[whose] = read
    sole: dict[str, list[str]] = {}
    for entry, who in keepers.items():
        if len(who) == 1 and entry in facts.archives and (only := next(iter(who))):
            sole.setdefault(only, []).append(entry)
    memory = SizeMemory(survey)
    footprints = memory.footprints(cache)
    views = []
    for host in sorted({facts.host, *envs, *lease_of}):
        lease = lease_of.get(host)
        if host == facts.host:
            state = "this host"
        elif lease is None:
            state = "no lease"
        else:
            over = clock and lease_over(clock - lease.seen, policy.host_lease)
            state = "expired" if over else "alive"
        alone = sole.get(host, [])
        views.append(
            HostView(
                host,
                lease.name if lease else "",
                lease.container if lease else False,
                host == facts.host,
                lease.seen if lease else None,
                recorded.get(host, 0.0),
                state,
                len(envs.get(host, ())),
                len(shared.get(host, ())),
                len(alone),
                sum(footprints.frees(alone, outside=False).values()),
                len(footprints.remembered.intersection(alone)),
            )
        )
    memory.save(facts.archives)
    write_back(survey)
    order = {"this host": 0, "alive": 1, "no lease": 2, "expired": 3}
    views.sort(key=lambda v: (order[v.state], -(v.seen or v.recorded), v.host))
    return HostsReport(tuple(views), policy.host_lease, clock)


def forget_host(cache: Cache, store: RefsStore, query: str) -> tuple[str, int, int]:
    """Forget a host gone for good: drop from our store its lease, the records of its envs
    and its referrers, except those of envs on a filesystem this host mounts too (judged
    here, whoever recorded them). `query`: a host id, its unique prefix, or its host name.
    (host, envs forgotten, referrers dropped). What only it kept goes at the next collect."""
    from uvrefs.gc.sweep import drop_from_store
    from uvrefs.hosts import leases

    survey = gather_facts(cache, store, None, reuse=True)
    write_back(survey)  # before forgetting: the roots found here are remembered
    facts, roots = survey.facts, survey.roots
    named = {r.host for refs in facts.refs.values() for r in refs.referrers}
    named |= {rec.host for view in roots.views for rec in view.records.values()}
    names = {lease.host: lease.name for lease in leases(str(store.dir)).values()}
    named |= set(names)
    exact = [h for h in named if h == query]
    matches = exact or sorted(
        {h for h in named if h.startswith(query) or names.get(h) == query} if query else set()
    )
    if not matches:  # a host known only by its registrations (its store on its own disk)
        from uvrefs.hosts import host_key
        from uvrefs.store.registry import unregister_host

        ours = {host_key(h) for h in roots.hosts}
        keys = {r.key for r in roots.registered if r.key and r.key not in ours}
        found = [
            k for k in keys if k == host_key(query) or (len(query) >= 8 and k.startswith(query))
        ]
        if len(found) == 1:
            unregister_host(cache.root, found[0])
            return query, 0, 0
    if not matches:
        raise UvrefsError(f"no host {query!r} in this cache's store (see `uvrefs hosts`)")
    if len(matches) > 1:
        raise UvrefsError(
            f"{query!r} names {len(matches)} hosts ({', '.join(m[:24] for m in matches[:4])}"
            f"{', ...' if len(matches) > 4 else ''}): give more of its id"
        )
    host = matches[0]
    if host in roots.hosts or host == facts.host:
        raise UvrefsError(
            f"{host[:24]} is this host: its envs are judged here (delete them, then collect)"
        )

    def dropped(named_host: str, env: str) -> bool:
        return named_host == host and (named_host, env) not in roots.shared

    local = {
        r.env for refs in facts.refs.values() for r in refs.referrers if dropped(r.host, r.env)
    }
    local |= {
        rec.path
        for view in roots.views[:1]
        for rec in view.records.values()
        if dropped(rec.host, rec.path)
    }
    count = drop_from_store(store, facts, roots, dropped, hosts=[host])
    from uvrefs.hosts import host_key
    from uvrefs.store.registry import unregister_host

    unregister_host(cache.root, host_key(host))
    return host, len(local), count
