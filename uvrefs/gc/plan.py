"""Plan: which tracked entries to free, as a pure function of what mark found (the live
set, each referrer's environment, uv's own entries), narrowed by the user's policy.
Nothing here reads the disk; tests/test_plan.py holds it to its properties."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache

from uvrefs.envs import EnvScan
from uvrefs.hosts import HOST_LEASE
from uvrefs.names import normalize
from uvrefs.store.refs import Ref, Refs
from uvrefs.tuples import NamedTuple
from uvrefs.units import human_duration, human_size


class Decision(NamedTuple):
    """What happens to one entry, and why."""

    entry: str
    dist: str | None
    version: str | None
    tags: tuple[str, ...]
    free: bool
    reason: str
    bytes: int = 0
    untracked: bool = False  # freed under --untracked/--budget: no refs to re-read
    state: str = ""  # dead, live, held or uv's own: the words `status` and `why` use
    # Dead because an env that linked into the cache is gone from its path, where it may
    # have been moved out of sight: freed only after the grace period (`Policy.grace`),
    # which starts no earlier than the newest record of such an env (`grace_from`, epoch
    # seconds): a stamp older than that (a clock set back) cannot shorten it.
    grace: bool = False
    grace_from: float = 0.0


GRACE = 7 * 86400.0  # seconds: the default wait for entries of envs that may have moved


class Policy(NamedTuple):
    """What a user asked collect to hold back or add: `min_age` seconds an entry must have
    been dead (or, untracked, unpacked), at most `max_freed` bytes, packages to `keep`,
    `untracked` entries too, or a `budget` for the whole cache."""

    min_age: float = 0.0
    max_freed: int | None = None
    keep: frozenset[str] = frozenset()
    untracked: bool = False
    budget: int | None = None
    # How long what only a maybe-moved env used waits (`Decision.grace`); an explicit
    # --min-age sets both. Julia's Pkg waits 7 days before deleting orphans, cargo a month.
    grace: float = GRACE
    # How long another host may stay unseen before its local envs are judged gone.
    host_lease: float = HOST_LEASE

    @property
    def needs_sizes(self) -> bool:
        """Whether what to free depends on sizes (a cap, a budget, untracked entries)."""
        return self.untracked or self.budget is not None or self.max_freed is not None


class Facts(NamedTuple):
    """Everything the planner needs, read once.

    `refs` holds every store's referrers of an entry (ours and peer stores'); `own` the
    entries our store tracks (the only ones this collector may free; None: all of `refs`).
    `envs` is a scan of every environment a referrer names; `live` maps each entry some
    living root uses now to the roots that use it (marked from every root, whether or not
    a refs file lists them). `blocked` names a reason nothing may be freed at all (a peer
    store that cannot be read)."""

    host: str
    archives: frozenset[str]
    refs: Mapping[str, Refs]
    corrupt: Mapping[str, str] = {}
    envs: Mapping[str, EnvScan] = {}
    uv_owned: frozenset[str] = frozenset()
    linked_elsewhere: frozenset[str] = frozenset()
    live: Mapping[str, tuple[str, ...]] = {}
    own: frozenset[str] | None = None
    blocked: str | None = None
    # Measured for the policies: when each entry was first seen dead (by a collect), when
    # each archive was unpacked, entry sizes, names of untracked entries, the cache total.
    now: float = 0.0
    dead_since: Mapping[str, float] = {}
    unpacked_at: Mapping[str, float] = {}
    sizes: Mapping[str, int] = {}
    names: Mapping[str, tuple[str | None, str | None]] = {}
    total: int = 0
    # Project environments in uv's cache whose project is gone (`centralized-project-envs`).
    dead_project_envs: frozenset[str] = frozenset()
    # Entries env records list (any host, readable or not): with no refs they are not
    # untracked (their refs were lost or set aside), but held.
    listed: Mapping[str, tuple[str, ...]] = {}
    # Entries whose refs `doctor --repair` set aside (in any store): who they named is not
    # known, so they are held (unless live), quietly: the reason says what to do.
    set_aside: Mapping[str, str] = {}
    # Other hosts' envs on a filesystem this host mounts too: (host, their path) -> where
    # it is here (a root, scanned here); and when each other host was last seen, and
    # those whose lease is over (`Policy.host_lease`): their local envs are gone.
    shared: Mapping[tuple[str, str], str] = {}
    host_seen: Mapping[str, float] = {}
    gone_hosts: Mapping[str, float] = {}
    # The directory (st_dev, st_ino) another host's record of a shared env names, and
    # other hosts' envs whose record cannot be read ((host or "", path) -> why).
    shared_ids: Mapping[tuple[str, str], tuple[int, int]] = {}
    unjudged: Mapping[tuple[str, str], str] = {}
    host_lease: float = HOST_LEASE  # the policy's, for the sweep's judging under the lock

    def is_own(self, entry: str) -> bool:
        return entry in self.refs if self.own is None else entry in self.own


class Plan(NamedTuple):
    free: tuple[Decision, ...]
    keep: tuple[Decision, ...]
    untracked: int  # no store tracks them and no root uses them
    stale: tuple[str, ...]  # refs of entries no longer in the cache
    note: str | None = None  # e.g. a budget that cannot be met
    # Every entry (and project env) judged dead, before any policy: when each was first
    # seen dead is remembered from these (`--min-age`, the grace period).
    dead: frozenset[str] = frozenset()
    live_untracked: int = 0  # no store tracks them, a root uses them (uv's own apart)
    uv_own: int = 0  # untracked entries that are uv's cached environments themselves
    free_envs: tuple[str, ...] = ()  # project envs in uv's cache whose project is gone
    held_envs: tuple[tuple[str, str], ...] = ()  # (project env, why) kept by a policy
    # Envs that may have moved and whose grace period is over: their referrers and
    # records may go (until then they are what holds their entries).
    forgettable: frozenset[str] = frozenset()


Verdict = tuple[str, str]  # ("holds" | "dead" | "unsure", why)


def referrer_verdict(ref: Ref, entry: str, facts: Facts) -> Verdict:
    """("holds" | "dead" | "unsure", why) for one reference to `entry`. Another host's env
    is judged here if it is on a filesystem this host mounts too (`facts.shared`), judged
    gone if it is local to a host whose lease is over (`facts.gone_hosts`), else unsure."""
    env = ref.env
    if ref.host != facts.host:
        pair = (ref.host, ref.env)
        why = facts.unjudged.get(pair) or facts.unjudged.get(("", ref.env))
        if why is not None:  # whatever its host's lease: its record may say it is shared
            return "unsure", f"recorded on host {ref.host[:24]} for {ref.env}, whose {why}"
        here = facts.shared.get(pair)
        if here is None and ref.host in facts.gone_hosts:
            return "dead", f"host {ref.host[:24]} not seen since {day(facts.gone_hosts[ref.host])}"
        if here is None:
            return "unsure", f"recorded on another host ({ref.host[:24]}) for {ref.env}"
        recorded = facts.shared_ids.get(pair)
        if ref.identity is not None and recorded is not None and ref.identity != recorded:
            return "unsure", (
                f"recorded on host {ref.host[:24]} for another directory at {ref.env} than "
                "its record names (a namespace of its own?)"
            )
        env = here  # where this host sees it
    scan = facts.envs.get(env)
    if scan is None:
        return "unsure", f"{ref.env} was not scanned"
    if scan.state == "unknown":
        return "unsure", f"{ref.env} {scan.detail}"
    if scan.state == "gone":
        if scan.maybe_moved and scan.detail.startswith("moved to "):
            return "dead", f"{ref.env} {scan.detail}"  # by its inode: maybe, so it waits
        if scan.maybe_moved:
            return "dead", f"gone from {ref.env}, maybe moved"
        return "dead", f"{ref.env} {scan.detail or 'no longer exists'}"
    if ref.how == "build":
        return "holds", f"built for {ref.env}"
    if entry in scan.uses:
        return "holds", f"used by {ref.env}"
    if replaced(ref, scan):
        return "dead", f"gone from {ref.env} (another env is there now), maybe moved"
    return "dead", f"{ref.env} no longer uses it"


def replaced(ref: Ref, scan: EnvScan) -> bool:
    """Whether the env a referrer names is not the one at its path now (another directory
    was made there since it was recorded): the one recorded may have moved away."""
    return ref.identity is not None and scan.identity is not None and ref.identity != scan.identity


def maybe_moved(env: str, facts: Facts) -> bool:
    scan = facts.envs.get(env)
    return scan is not None and scan.maybe_moved


def scan_of(ref: Ref, facts: Facts) -> EnvScan | None:
    """The scan of a referrer's env: ours by its path, another host's where this host
    sees it (a shared filesystem); None for another host's local env."""
    if ref.host == facts.host:
        return facts.envs.get(ref.env)
    here = facts.shared.get((ref.host, ref.env))
    return facts.envs.get(here) if here is not None else None


def moved_referrer(ref: Ref, facts: Facts) -> bool:
    """A referrer whose env may have moved out of sight with its links into the cache:
    gone from its path (`maybe_moved`), or another env at its path now while it was
    recorded linking into the cache (symlink mode)."""
    scan = scan_of(ref, facts)
    if scan is None:
        return False
    return scan.maybe_moved or (ref.how == "symlink" and replaced(ref, scan))


def day(when: float) -> str:
    """A time as a date and minute, local time."""
    from datetime import datetime

    return datetime.fromtimestamp(when).astimezone().strftime("%Y-%m-%d %H:%M")


def epoch(when: object) -> float:
    """An RFC 3339 time as uvrefs writes it (or a datetime), in epoch seconds (0 if
    unreadable)."""
    from datetime import datetime

    if isinstance(when, datetime):
        return when.timestamp()
    return _epoch(str(when))


@lru_cache(maxsize=8192)  # the referrers of one recording share one time
def _epoch(when: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def used_by(roots: tuple[str, ...]) -> str:
    more = f" (+{len(roots) - 1} more)" if len(roots) > 1 else ""
    return f"used by {roots[0]}{more}"


UNCERTAIN = "uncertain: "  # a live-set label of a root that may use an entry (`mark.live_set`)
# The live-set label of an entry kept as a build dependency (`mark.live_set`): its "build"
# referrers are what says so, and stay while it is kept so (`sweep.drop_from_store`).
BUILD_DEPENDENCY = "build dependency of "


def live_state(labels: tuple[str, ...]) -> tuple[str, str]:
    """(state, why) of an entry in the live set: live if a living root uses it, held if
    only roots that cannot be judged (unknown: unreadable, another mount namespace, an
    unmounted disk) may."""
    certain = tuple(label for label in labels if not label.startswith(UNCERTAIN))
    if certain:
        return "live", used_by(certain)
    more = f" (+{len(labels) - 1} more)" if len(labels) > 1 else ""
    return "held", labels[0] + more


def plan_collection(facts: Facts) -> Plan:
    """Free an entry only when our store tracks it, no living root uses it, and no
    referrer is uncertain; keep everything untracked, unreadable, live, uncertain, uv's
    own, or still hard-linked from elsewhere."""
    free: list[Decision] = []
    keep: list[Decision] = []
    untracked = live_untracked = uv_own = 0
    for entry in sorted(facts.archives):
        refs = facts.refs.get(entry)
        if entry in facts.corrupt or entry in facts.set_aside:
            if entry in facts.live:
                state, why = live_state(facts.live[entry])
            elif entry in facts.corrupt:
                why, state = f"refs unreadable: {facts.corrupt[entry]}", "held"
            else:
                why, state = facts.set_aside[entry], "held"
            keep.append(Decision(entry, None, None, (), False, why, state=state))
            continue
        if refs is None:
            state, why = untracked_state(entry, facts)
            if state == "held":
                keep.append(Decision(entry, None, None, (), False, why, state=state))
                continue
            uv_own += state == "uv's own"
            live_untracked += state == "live"
            untracked += state == "untracked"
            continue

        def decide(state: str, reason: str, refs: Refs = refs, grace: bool = False) -> Decision:
            return Decision(
                refs.entry,
                refs.dist,
                refs.version,
                tuple(refs.tags),
                state == "dead",
                reason,
                state=state,
                grace=grace,
            )

        verdicts = [referrer_verdict(r, entry, facts) for r in refs.referrers]
        holding = [why for verdict, why in verdicts if verdict == "holds"]
        unsure = [why for verdict, why in verdicts if verdict == "unsure"]
        if entry in facts.uv_owned:
            keep.append(decide("uv's own", "uv's own: a cached environment"))
        elif entry in facts.live and not (holding and live_state(facts.live[entry])[0] == "held"):
            keep.append(decide(*live_state(facts.live[entry])))
        elif holding:
            more = f" (+{len(holding) - 1} more)" if len(holding) > 1 else ""
            keep.append(decide("live", holding[0] + more))
        elif unsure:
            keep.append(decide("held", "uncertain: " + unsure[0]))
        elif not facts.is_own(entry):
            keep.append(decide("held", "tracked only by another refs store (its collect decides)"))
        elif facts.blocked:
            keep.append(decide("held", "uncertain: " + facts.blocked))
        elif entry in facts.linked_elsewhere:
            keep.append(decide("held", "files still hard-linked elsewhere (an untracked env?)"))
        else:
            dead = [why for verdict, why in verdicts if verdict == "dead"]
            movers = [
                (why, ref)
                for (verdict, why), ref in zip(verdicts, refs.referrers, strict=True)
                if verdict == "dead" and moved_referrer(ref, facts)
            ]
            why = ([w for w, _ in movers] or dead or ["no environment uses it any more"])[0]
            decision = decide("dead", why, grace=bool(movers))
            since = max((epoch(r.recorded_at) for _, r in movers), default=0.0)
            free.append(decision._replace(grace_from=since))
    stale = tuple(sorted(e for e in set(facts.refs) - facts.archives if facts.is_own(e)))
    gone = frozenset(p for p, s in facts.envs.items() if s.state == "gone" and s.maybe_moved)
    return Plan(
        tuple(free),
        tuple(keep),
        untracked,
        stale,
        dead=frozenset(d.entry for d in free) | facts.dead_project_envs | gone,
        live_untracked=live_untracked,
        uv_own=uv_own,
        free_envs=() if facts.blocked else tuple(sorted(facts.dead_project_envs)),
    )


def untracked_state(entry: str, facts: Facts) -> tuple[str, str]:
    """(state, why) of an entry no store tracks: uv's own, live, held (an env record lists
    it: its refs were lost or set aside), or untracked."""
    if entry in facts.uv_owned:
        return "uv's own", "a cached environment of uv's"
    if entry in facts.live:
        return live_state(facts.live[entry])
    if entry in facts.listed:
        return "held", f"its refs are gone, but the record of {facts.listed[entry][0]} lists it"
    if facts.blocked:  # a store or directory that may track it cannot be read
        return "held", f"uncertain: {facts.blocked}"
    return "untracked", "no environment uvrefs knows uses it, and none ever did; kept"


def entry_states(plan: Plan, facts: Facts) -> dict[str, tuple[str, str]]:
    """entry -> (state, why) for every archive, in the words status, why and collect
    share: dead (the plan frees it), live, held, uv's own, untracked."""
    states = {d.entry: (d.state, d.reason) for d in (*plan.keep, *plan.free)}
    for entry in facts.archives:
        if entry not in states:
            states[entry] = untracked_state(entry, facts)
    return states


def untracked_ids(facts: Facts) -> list[str]:
    """Untracked entries no living root uses, oldest unpacked first."""
    ids = [
        a
        for a in facts.archives
        if a not in facts.refs
        and a not in facts.corrupt
        and a not in facts.set_aside
        and a not in facts.uv_owned
        and a not in facts.live
        and a not in facts.listed
    ]
    return sorted(ids, key=lambda a: (facts.unpacked_at.get(a, facts.now), a))


def apply_policy(plan: Plan, facts: Facts, policy: Policy) -> Plan:
    """Narrow (or, for untracked entries, widen) a plan as the user asked. Pure; never adds
    an entry a living root uses: only dead entries, and untracked ones that no root uses
    and no installed file links to."""
    keep = list(plan.keep)
    note = None

    def held(d: Decision, why: str) -> None:
        keep.append(d._replace(free=False, bytes=0, reason=why, state="held"))

    dead: list[Decision] = []
    for d in sorted(plan.free, key=lambda d: _dead_order(d.entry, facts)):
        since = facts.dead_since.get(d.entry, facts.now)
        if d.grace:  # a wait starts no earlier than the record of the env that may have moved
            since = max(since, min(d.grace_from, facts.now))
        dead_for = facts.now - since
        if normalize(d.dist) in policy.keep:
            held(d, "kept by --keep")
        elif d.grace and dead_for < max(policy.grace, policy.min_age):
            held(d, graced(d.reason, since + max(policy.grace, policy.min_age)))
        elif dead_for < policy.min_age:
            minimum = human_duration(policy.min_age)
            held(d, f"dead for {human_duration(dead_for)}, less than --min-age ({minimum})")
        else:
            dead.append(d)
    wait = max(policy.grace, policy.min_age)
    forgettable = frozenset(
        p
        for p in plan.dead
        if maybe_moved(p, facts) and facts.now - facts.dead_since.get(p, facts.now) >= wait
    )
    free_envs, held_envs = [], list(plan.held_envs)
    for env in plan.free_envs:
        scan = facts.envs.get(env)
        since = facts.dead_since.get(env, facts.now)
        moved = scan is not None and scan.maybe_moved
        wait = max(policy.grace, policy.min_age) if moved else policy.min_age
        if facts.now - since >= wait:
            free_envs.append(env)
        elif moved:
            held_envs.append(
                (env, graced(f"{scan.detail if scan else ''}, maybe moved", since + wait))
            )
        else:
            minimum, gone_for = human_duration(policy.min_age), human_duration(facts.now - since)
            held_envs.append((env, f"dead for {gone_for}, less than --min-age ({minimum})"))
    extra: list[Decision] = []
    if (policy.untracked or policy.budget is not None) and not facts.blocked:
        for entry in untracked_ids(facts):
            dist, version = facts.names.get(entry, (None, None))
            unpacked = facts.now - facts.unpacked_at.get(entry, facts.now)
            if (
                entry in facts.linked_elsewhere
                or normalize(dist) in policy.keep
                or unpacked < policy.min_age
            ):
                continue
            extra.append(
                Decision(
                    entry,
                    dist,
                    version,
                    (),
                    True,
                    f"untracked, no root uses it, unpacked {human_duration(unpacked)} ago",
                    untracked=True,
                )
            )
    chosen = dead + extra
    if policy.budget is not None:
        over = facts.total - policy.budget
        within: list[Decision] = []
        for d in chosen:
            if over <= 0:
                if not d.untracked:
                    held(d, "not needed to meet --budget")
                continue
            within.append(d)
            over -= facts.sizes.get(d.entry, 0)
        chosen = within
        note = _over_budget(over, policy.budget)
    elif not policy.untracked:
        chosen = dead
    if policy.max_freed is not None:
        total, within = 0, []
        for d in chosen:  # oldest first; an entry that does not fit is skipped, not the rest
            size = facts.sizes.get(d.entry, 0)
            if total + size > policy.max_freed:
                if not d.untracked:
                    held(d, "over --max-freed")
            else:
                total += size
                within.append(d)
        chosen = within
    return plan._replace(
        free=tuple(chosen),
        keep=tuple(keep),
        note=note,
        free_envs=tuple(free_envs),
        held_envs=tuple(held_envs),
        forgettable=forgettable,
    )


def graced(why: str, until: float) -> str:
    """Why an entry (or env) dead through an env that may have moved is kept, and until
    when: the grace period lets whoever moved it say where it went."""
    from datetime import datetime

    when = datetime.fromtimestamp(until).astimezone().strftime("%Y-%m-%d %H:%M")
    return (
        f"kept until {when}: {why}; `uvrefs watch add` its new place, or `--min-age 0` "
        "to free it now"
    )


def _dead_order(entry: str, facts: Facts) -> tuple[float, str]:
    return facts.dead_since.get(entry, facts.now), entry


def oldest_first(decisions: Iterable[Decision], facts: Facts) -> list[str]:
    """Dead entries in the order `apply_policy` frees them: dead longest first."""
    return sorted((d.entry for d in decisions), key=lambda e: _dead_order(e, facts))


def budget_note(total: int, plan: Plan, budget: int) -> str | None:
    """What `--budget` could not do, with the plan's entries measured as they go."""
    return _over_budget(total - sum(d.bytes for d in plan.free) - budget, budget)


def _over_budget(over: int, budget: int) -> str | None:
    if over <= 0:
        return None
    return (
        f"--budget {human_size(budget)} cannot be met without touching live entries (nor "
        f"held ones, nor uv's own files): the cache stays {human_size(over)} over it"
    )
