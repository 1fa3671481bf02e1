"""Property tests: random observation timelines never break the safety rules.

2-6 sites, 1-4 locations, 1-3 vantages; every round each vantage reports each
location, each site's endtoend and instance probe as healthy, failing or unknown.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.engine.helpers import Sim, make_policy
from trafficd.engine import EnginePolicy
from trafficd.model import Cause, Probe, State


@dataclass
class World:
    policy: EnginePolicy
    rounds: list[dict[tuple[str, Probe, str], tuple[bool | None, dict[str, bool], str | None]]]
    # One engine call per observation, as the daemon runs a single vantage.
    staggered: bool = False


@st.composite
def worlds(draw: st.DrawFn, rounds: int = 25) -> World:
    n_locs = draw(st.integers(1, 4))
    locs = [f"l{i}" for i in range(n_locs)]
    n_sites = draw(st.integers(2, 6))
    sites = {}
    for i in range(n_sites):
        prefs = draw(st.permutations(locs))
        k = draw(st.integers(1, n_locs))
        sites[f"s{i}"] = tuple(prefs[:k])
    vantages = tuple(f"v{i}" for i in range(draw(st.integers(1, 3))))
    policy = make_policy(
        sites=sites,
        vantages=vantages,
        fall=draw(st.integers(1, 3)),
        rise=draw(st.integers(1, 3)),
        min_active_sites=draw(st.integers(0, n_sites)),
        max_drains=draw(st.integers(0, 3)),
        drain_window=float(draw(st.integers(1, 20))),
        hold_down=float(draw(st.integers(0, 5))),
        shutdown_grace=float(draw(st.integers(0, 3))),
        restore_timeout=float(draw(st.integers(1, 10))),
    )
    ok = st.sampled_from([True, True, True, False, None])
    timeline = []
    for _ in range(rounds):
        seen: dict[tuple[str, Probe, str], tuple[bool | None, dict[str, bool], str | None]] = {}
        for v in vantages:
            for loc in locs:
                seen[(v, Probe.STORAGE, loc)] = (draw(ok), {}, None)
            for s in sites:
                services = {k: draw(ok) is not False for k in ("database", "redis", "storage")}
                e_ok = all(services.values())
                reason = draw(st.sampled_from([None, None, "timeout"]))
                seen[(v, Probe.ENDTOEND, s)] = (False if reason else e_ok, services, reason)
                seen[(v, Probe.INSTANCE, s)] = (draw(ok), {}, None)
        timeline.append(seen)
    staggered = len(vantages) == 1 and draw(st.booleans())
    return World(policy, timeline, staggered)


def run(world: World) -> Sim:
    sim = Sim(world.policy)
    sim.staggered = world.staggered
    for seen in world.rounds:
        for (v, probe, target), (ok, services, reason) in seen.items():
            sim.observe(v, probe, target, ok, services=services, reason=reason)
        sim.round(silent=True)
    return sim


def active(sim: Sim, decision_index: int) -> int:
    d = sim.history[decision_index]
    return sum(1 for s in d.sites.values() if s.state is State.ACTIVE)


@settings(max_examples=80, deadline=None)
@given(worlds())
def test_automation_never_goes_below_min_active_sites(world: World) -> None:
    sim = run(world)
    floor = world.policy.min_active_sites
    for i in range(len(sim.history)):
        assert active(sim, i) >= floor


@settings(max_examples=80, deadline=None)
@given(worlds())
def test_never_drains_on_a_global_failure(world: World) -> None:
    sim = run(world)
    for d in sim.history:
        for t in d.transitions:
            if t.to_state is State.DRAINING and t.automatic:
                if d.evidence.global_storage:
                    assert t.cause is not Cause.STORAGE
                check = {Cause.DATABASE: "database", Cause.INSTANCE: "instance"}.get(t.cause)  # type: ignore[arg-type]
                assert check is None or check not in d.evidence.global_checks


@settings(max_examples=80, deadline=None)
@given(worlds())
def test_never_more_than_max_drains_per_window(world: World) -> None:
    sim = run(world)
    p = world.policy
    times = [
        at
        for at, d in zip(sim.times, sim.history, strict=True)
        for t in d.transitions
        if t.automatic and t.to_state is State.DRAINING and t.from_state is State.ACTIVE
    ]
    for start in times:
        assert sum(1 for t in times if start <= t < start + p.drain_window) <= p.max_drains


@settings(max_examples=60, deadline=None)
@given(worlds(), st.data())
def test_a_site_that_stays_healthy_is_never_drained(world: World, data: st.DataObject) -> None:
    site = data.draw(st.sampled_from([s.name for s in world.policy.sites]))
    spec = world.policy.site(site)
    for seen in world.rounds:
        for v in world.policy.vantages:
            for loc in spec.storage:
                seen[(v, Probe.STORAGE, loc)] = (True, {}, None)
            healthy = {"database": True, "redis": True, "storage": True}
            seen[(v, Probe.ENDTOEND, site)] = (True, healthy, None)
            seen[(v, Probe.INSTANCE, site)] = (True, {}, None)
    sim = run(world)
    assert all(d.sites[site].state is State.ACTIVE for d in sim.history)


@settings(max_examples=60, deadline=None)
@given(worlds(), st.data())
def test_a_persistent_corroborated_storage_failure_drains_within_fall_rounds(
    world: World, data: st.DataObject
) -> None:
    site = data.draw(st.sampled_from([s.name for s in world.policy.sites]))
    first = world.policy.site(site).storage[0]
    others = [loc for loc in world.policy.locations if loc != first]
    for seen in world.rounds:
        for v in world.policy.vantages:
            seen[(v, Probe.STORAGE, first)] = (False, {}, None)
            for loc in others:  # not global, and no vantage abstains
                seen[(v, Probe.STORAGE, loc)] = (True, {}, None)
            bad = {"database": True, "redis": True, "storage": False}
            # Every site whose first location it is fails too: a site saying storage: true
            # with `first` first would prove Quay reaches it (vantage_unreachable).
            for s in world.policy.sites:
                if s.storage[0] == first:
                    seen[(v, Probe.ENDTOEND, s.name)] = (False, bad, None)
    sim = run(world)
    fall = world.policy.fall
    drained = any(
        t.site == site and t.to_state is State.DRAINING
        for d in sim.first_rounds(fall)
        for t in d.transitions
    )
    refused = any(r.site == site for d in sim.first_rounds(fall) for r in d.refusals)
    if others:
        assert drained or refused
    else:  # the only location: a global failure, which never drains
        assert not drained


@settings(max_examples=60, deadline=None)
@given(worlds(rounds=40))
def test_flapping_storage_drains_at_most_once_per_damping_window(world: World) -> None:
    p = world.policy
    for i, seen in enumerate(world.rounds):
        for v in p.vantages:
            for loc in p.locations:
                seen[(v, Probe.STORAGE, loc)] = (i % 2 == 0 or loc != p.locations[0], {}, None)
            for s in p.sites:
                services = {"database": True, "redis": True, "storage": i % 2 == 0}
                seen[(v, Probe.ENDTOEND, s.name)] = (i % 2 == 0, services, None)
                seen[(v, Probe.INSTANCE, s.name)] = (True, {}, None)
    sim = run(world)
    for s in p.sites:
        times = [
            at
            for at, d in zip(sim.times, sim.history, strict=True)
            for t in d.transitions
            if t.site == s.name and t.to_state is State.DRAINING and t.automatic
        ]
        if p.rise >= 2 or p.fall >= 2:
            # A flap never gives `fall` failing or `rise` healthy rounds in a row.
            for start in times:
                assert sum(1 for t in times if start <= t < start + p.damping_window) <= 1
        else:
            # fall = rise = 1 asks to follow every round; the doubling hold-down spaces drains.
            for n, (a, b) in enumerate(itertools.pairwise(times)):
                assert b - a >= min(p.hold_down * 2**n, max(p.max_hold_down, p.hold_down))
