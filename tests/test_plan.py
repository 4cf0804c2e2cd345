"""Tier 1: the planner is a pure function of facts; properties hold for any facts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from uvrefs.envs import EnvScan
from uvrefs.gc.plan import (
    Facts,
    Policy,
    apply_policy,
    plan_collection,
    referrer_verdict,
    untracked_ids,
)
from uvrefs.names import normalize
from uvrefs.store.schema import EntryRefs, Referrer

HOST = "this-host"
ENTRIES = [f"entry{i:02d}" for i in range(8)]
ENVS = [f"/envs/e{i}" for i in range(5)]
WHEN = datetime(2026, 1, 1, tzinfo=UTC)

referrers = st.builds(
    Referrer,
    env=st.sampled_from(ENVS),
    host=st.sampled_from([HOST, HOST, HOST, "other-host"]),
    how=st.sampled_from(["symlink", "hardlink", "content", "build"]),
    command=st.just("install"),
    recorded_at=st.just(WHEN),
)


@st.composite
def facts(draw: st.DrawFn) -> Facts:
    archives = frozenset(draw(st.sets(st.sampled_from(ENTRIES))))
    tracked = draw(st.sets(st.sampled_from(ENTRIES)))
    refs = {
        e: EntryRefs(
            entry=e, dist="d", version="1", referrers=draw(st.lists(referrers, max_size=4))
        )
        for e in tracked
    }
    corrupt = {e: "garbage" for e in draw(st.sets(st.sampled_from(ENTRIES), max_size=2))}
    envs = {}
    for env in ENVS:
        state = draw(st.sampled_from(["alive", "gone", "unknown"]))
        uses = (
            {e: "hardlink" for e in draw(st.sets(st.sampled_from(ENTRIES)))}
            if state == "alive"
            else {}
        )
        moved = state == "gone" and draw(st.booleans())  # gone from its path: moved?
        envs[env] = EnvScan(Path(env), state, "", uses, maybe_moved=moved)
    uv_owned = frozenset(draw(st.sets(st.sampled_from(ENTRIES), max_size=2)))
    linked = frozenset(draw(st.sets(st.sampled_from(ENTRIES), max_size=2)))
    # The live set: what every living root uses (tracked envs' uses, and roots no refs
    # name, such as uv's cached envs or discovered envs).
    live: dict[str, tuple[str, ...]] = {}
    for env, scan in envs.items():
        for entry in scan.uses if scan.state == "alive" else {}:
            live.setdefault(entry, ())
            live[entry] += (env,)
    for entry in draw(st.sets(st.sampled_from(ENTRIES), max_size=2)):
        live[entry] = (*live.get(entry, ()), "/uv-cached")
    own = frozenset(draw(st.sets(st.sampled_from(sorted(tracked)))) if tracked else set())
    own = frozenset(tracked) if draw(st.booleans()) else own  # peers track the rest
    blocked = draw(st.sampled_from([None, None, None, "a peer store cannot be read"]))
    listed = {e: ("/envs/recorded",) for e in draw(st.sets(st.sampled_from(ENTRIES), max_size=2))}
    set_aside = {e: "set aside" for e in draw(st.sets(st.sampled_from(ENTRIES), max_size=2))}
    return Facts(
        HOST,
        archives,
        refs,
        corrupt,
        envs,
        uv_owned,
        linked,
        live,
        own,
        blocked,
        listed=listed,
        set_aside=set_aside,
    )


@settings(max_examples=500)
@given(facts())
def test_never_plans_an_entry_that_is_live_unsure_or_untracked(f: Facts) -> None:
    for d in plan_collection(f).free:
        assert d.entry in f.refs and d.entry in f.archives
        assert (
            d.entry not in f.corrupt
            and d.entry not in f.set_aside
            and d.entry not in f.uv_owned
            and d.entry not in f.linked_elsewhere
        )
        assert d.entry not in f.live and f.is_own(d.entry) and not f.blocked
        for r in f.refs[d.entry].referrers:
            scan = f.envs[r.env]
            assert r.host == HOST and scan.state != "unknown"
            assert not (scan.state == "alive" and (d.entry in scan.uses or r.how == "build"))


@settings(max_examples=500)
@given(facts())
def test_frees_exactly_tracked_entries_with_no_holding_or_uncertain_referrer(f: Facts) -> None:
    plan = plan_collection(f)
    expected = set()
    for entry in f.archives:
        if (
            entry in f.corrupt
            or entry in f.set_aside
            or entry not in f.refs
            or entry in f.uv_owned
            or entry in f.linked_elsewhere
            or entry in f.live
            or not f.is_own(entry)
            or f.blocked
        ):
            continue
        verdicts = {referrer_verdict(r, entry, f)[0] for r in f.refs[entry].referrers}
        if verdicts <= {"dead"}:
            expected.add(entry)
    assert {d.entry for d in plan.free} == expected
    assert not {d.entry for d in plan.free} & {d.entry for d in plan.keep}
    for (
        d
    ) in plan.free:  # freed after the grace period iff an env it was dead through may have moved
        gone = [r.env for r in f.refs[d.entry].referrers if f.envs[r.env].state == "gone"]
        assert d.grace == any(f.envs[env].maybe_moved for env in gone)
    no_refs = [
        e for e in f.archives if e not in f.refs and e not in f.corrupt and e not in f.set_aside
    ]
    assert plan.uv_own == len([e for e in no_refs if e in f.uv_owned])
    assert plan.live_untracked == len([e for e in no_refs if e in f.live and e not in f.uv_owned])
    # An entry no refs track is held, not untracked, when a record lists it or a store that
    # may track it cannot be read.
    held = [e for e in no_refs if e not in f.uv_owned and e not in f.live]
    held = [e for e in held if e in f.listed or f.blocked]
    assert {d.entry for d in plan.keep if d.entry in no_refs} == set(held)
    assert plan.untracked + plan.live_untracked + plan.uv_own + len(held) == len(no_refs)
    states = {d.entry: d.state for d in plan.keep}
    assert all(states[e] == "live" for e in states if e in f.live and e not in f.uv_owned)
    assert all(d.state == "dead" for d in plan.free)
    assert set(plan.stale) == {e for e in set(f.refs) - f.archives if f.is_own(e)}


def ref(env: str, host: str = HOST, how: str = "hardlink") -> Referrer:
    return Referrer(env=env, host=host, how=how, command="install", recorded_at=WHEN)  # type: ignore[arg-type]


def test_reasons_name_the_deciding_env() -> None:
    envs = {
        "/a": EnvScan(Path("/a"), "alive", "", {"x": "hardlink"}),
        "/b": EnvScan(Path("/b"), "gone", "no longer exists"),
        "/c": EnvScan(Path("/c"), "unknown", "unreadable (Permission denied)"),
        "/d": EnvScan(Path("/d"), "alive", "", {}),
    }
    refs = {
        "x": EntryRefs(entry="x", referrers=[ref("/b"), ref("/a")]),
        "y": EntryRefs(entry="y", referrers=[ref("/b")]),
        "z": EntryRefs(entry="z", referrers=[ref("/b"), ref("/c")]),
        "w": EntryRefs(entry="w", referrers=[ref("/d")]),
        "v": EntryRefs(entry="v", referrers=[ref("/d", how="build")]),
        "u": EntryRefs(entry="u", referrers=[ref("/a", host="elsewhere")]),
        "t": EntryRefs(entry="t", referrers=[]),
    }
    plan = plan_collection(Facts(HOST, frozenset("xyzwvut") | {"s"}, refs, {}, envs))
    reasons = {d.entry: (d.free, d.reason) for d in plan.free + plan.keep}
    assert reasons == {
        "x": (False, "used by /a"),
        "y": (True, "/b no longer exists"),
        "z": (False, "uncertain: /c unreadable (Permission denied)"),
        "w": (True, "/d no longer uses it"),
        "v": (False, "built for /d"),
        "u": (False, "uncertain: recorded on another host (elsewhere) for /a"),
        "t": (True, "no environment uses it any more"),
    }
    assert plan.untracked == 1


policies = st.builds(
    Policy,
    min_age=st.sampled_from([0.0, 3600.0]),
    grace=st.sampled_from([0.0, 5000.0]),
    max_freed=st.one_of(st.none(), st.integers(0, 5000)),
    keep=st.sets(st.sampled_from(["d", "u"])).map(frozenset),
    untracked=st.booleans(),
    budget=st.one_of(st.none(), st.integers(0, 20000)),
)


@st.composite
def measured_facts(draw: st.DrawFn) -> Facts:
    f = draw(facts())
    sizes = {e: draw(st.integers(0, 2000)) for e in ENTRIES}
    dead_since = {e: draw(st.sampled_from([0.0, 9000.0, 10000.0])) for e in ENTRIES}
    unpacked = {e: draw(st.sampled_from([0.0, 9000.0])) for e in ENTRIES}
    names = {e: ("u", "1") for e in ENTRIES}
    return f._replace(
        sizes=sizes,
        dead_since=dead_since,
        unpacked_at=unpacked,
        names=names,
        now=10000.0,
        total=draw(st.integers(0, 30000)),
    )


@settings(max_examples=500)
@given(measured_facts(), policies)
def test_policies_only_narrow_dead_entries_or_add_unlinked_untracked_ones(
    f: Facts, policy: Policy
) -> None:
    base = plan_collection(f)
    plan = apply_policy(base, f, policy)
    dead = {d.entry for d in base.free}
    untracked = set(untracked_ids(f))
    freed = [d for d in plan.free]
    for d in freed:
        assert d.entry in dead or (
            d.untracked and d.entry in untracked and (policy.untracked or policy.budget is not None)
        )
        assert d.entry not in f.linked_elsewhere and d.entry not in f.live
        assert d.entry not in f.uv_owned and not f.blocked
        assert normalize(d.dist) not in policy.keep
        since = f.unpacked_at if d.untracked else f.dead_since
        assert f.now - since.get(d.entry, f.now) >= policy.min_age
        if d.grace:  # dead through an env that may have moved: after the grace period
            assert f.now - since.get(d.entry, f.now) >= policy.grace
    if policy.max_freed is not None:
        assert sum(f.sizes[d.entry] for d in freed) <= policy.max_freed
    if policy.budget is None and not policy.untracked:
        assert not any(d.untracked for d in freed)
    if plan.note:
        assert policy.budget is not None
    # Every entry judged dead, and every env that may have moved (their grace is timed).
    moved = {e for e, s in f.envs.items() if s.state == "gone" and s.maybe_moved}
    assert plan.dead == frozenset(dead) | moved
