"""The scenario explorer's world: ground truth, the observations it produces, the invariants.

Used by `tests/engine/test_explorer.py` (hypothesis stateful testing, in CI) and
`bench/explore.py` (long searches). A `World` knows what is really broken: which
locations are dead, which vantage is cut from what, whose instances are down,
which site lost the database, whether the database or Redis is down for all.
It turns that into the observations each vantage would report (v3.17 or v3.18
storage semantics, Quay's debug text or not, storage and instance probes at
their own intervals), and the live traffic each site's load balancer counts
(`Responses`, the engine's canary input: each round a site takes requests in
proportion to its weight, half of them 5xx under the `errors_5xx` fault), and
states the invariants of issue 17 (and those of issue 21's gradual return) in
its own terms.

Two engines run every history side by side: `base`, and `disturbed`, whose
wall clock is stepped by the history's clock events (invariant 8) and whose
state is saved and loaded at the history's restarts (invariant 9). Their
decisions must be identical.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from trafficd.clock import EngineClock
from trafficd.engine import EnginePolicy, SiteSpec, decide
from trafficd.engine.decide import SAFETY_RULES, step_weight, trial_drain
from trafficd.model import (
    CanaryReading,
    Cause,
    Decision,
    EngineState,
    Observation,
    Override,
    Pause,
    Probe,
    Responses,
    State,
)
from trafficd.store import engine_from_json, engine_to_json

FAULTS = (
    "location_dead",  # a bucket dies
    "location_flap",  # a bucket dies every other round
    "cut_location",  # one vantage cannot reach a bucket; Quay can
    "cut_site",  # one vantage cannot reach a site
    "instances_down",  # a site's Quay instances fail
    "database_cut",  # one site cannot reach the (shared) database
    "global_database",
    "global_redis",
)
# Only in the gradual return's explorer (its own rule): a site's Quay answers half of the
# requests live traffic sends it 5xx while its probes pass (the canary's input).
ERRORS_5XX = "errors_5xx"
EVENTS = ("drain", "undrain", "hold", "release", "pause", "resume", "wall_step", "restart")


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str = ""  # a location or a site
    vantage: str = ""  # for cuts
    reason: str = "timeout"  # timeout or refused: how the cut shows


@dataclass
class Truth:
    """What is really broken, and the world's fixed facts."""

    sites: dict[str, tuple[str, ...]]
    vantages: tuple[str, ...]
    v318: bool  # Quay v3.18: every preferred location checked; else only the first
    debug: bool  # probes.debug_secret set: the failure text names the location
    storage_every: int  # storage probes run every k rounds
    instance_every: int  # instance probes run every k rounds
    faults: list[Fault] = field(default_factory=list)
    # Per vantage, the round its storage probes are offset by: vantages are separate
    # processes whose probe loops start at random offsets (probers.schedule), so storage
    # probes slower than rounds (probes.storage_interval) report in different rounds.
    # (Site probes run at probes.interval, one per round: `instance_every` > 1 stands
    # for a slow or lost answer, not an offset.)
    phase: dict[str, int] = field(default_factory=dict)

    def probes_storage(self, v: str, r: int) -> bool:
        """Whether vantage v's storage probes run in round r."""
        return (r + self.phase.get(v, 0)) % self.storage_every == 0

    @property
    def locations(self) -> tuple[str, ...]:
        return tuple(sorted({loc for locs in self.sites.values() for loc in locs}))

    def dead(self, loc: str, r: int) -> bool:
        for f in self.faults:
            if f.target == loc and (
                f.kind == "location_dead" or (f.kind == "location_flap" and r % 2 == 0)
            ):
                return True
        return False

    def has(self, kind: str, target: str = "", vantage: str = "") -> bool:
        return any(
            f.kind == kind and f.target == target and f.vantage == vantage for f in self.faults
        )

    def cut(self, kind: str, vantage: str, target: str) -> Fault | None:
        return next(
            (
                f
                for f in self.faults
                if f.kind == kind and f.vantage == vantage and f.target == target
            ),
            None,
        )

    # --- ground truth the invariants are stated in ---------------------------------

    def own_failure(self, site: str, r: int) -> str | None:
        """The site's own failure: its first location dead, its instances down, or its
        database cut. None when the site itself is fine."""
        if self.dead(self.sites[site][0], r):
            return "storage"
        if self.has("instances_down", site):
            return "instance"
        # Cut from a quorum of vantages: the world cannot reach the site, which is then
        # as good as down (the vantages stand for the clients' regions).
        cuts = {f.vantage for f in self.faults if f.kind == "cut_site" and f.target == site}
        if len(cuts) >= len(self.vantages) // 2 + 1:
            return "instance"
        if self.has("database_cut", site):
            return "database"
        return None

    def global_failure(self, r: int) -> bool:
        return (
            all(self.dead(loc, r) for loc in self.locations)
            or self.has("global_database")
            or self.has("global_redis")
        )

    def touched(self, site: str, r: int) -> bool:
        """Anything at all wrong that concerns the site (for the recovery invariant)."""
        if any(self.dead(loc, r) for loc in self.sites[site]):
            return True
        return any(
            f.target in (site, *self.sites[site]) or f.kind.startswith("global")
            for f in self.faults
        )

    # --- what the vantages can see (the limits of the evidence) ---------------------

    def checked(self, site: str) -> tuple[str, ...]:
        """The locations the site's Quay checks: every preferred one (v3.18), else the first."""
        prefs = self.sites[site]
        return prefs if self.v318 else prefs[:1]

    def answering(self, site: str, stopped: set[str]) -> list[str]:
        """The vantages the site's Quay answers (its endtoend has a body)."""
        if site in stopped or self.has("instances_down", site):
            return []
        return [v for v in self.vantages if self.cut("cut_site", v, site) is None]

    def probe_fails(self, v: str, loc: str, r: int) -> bool:
        return self.dead(loc, r) or self.cut("cut_location", v, loc) is not None

    # --- observations --------------------------------------------------------------

    def observations(self, r: int, t: float, stopped: Iterable[str]) -> list[Observation]:
        """What every vantage reports in round r (at wall time t); `stopped`: the sites
        whose instances this engine has stopped (they refuse connections)."""
        stopped = set(stopped)
        out = []
        for v in self.vantages:
            if self.probes_storage(v, r):
                for loc in self.locations:
                    cut = self.cut("cut_location", v, loc)
                    if self.dead(loc, r) or cut is not None:
                        reason = cut.reason if cut is not None else "connect"
                        out.append(Observation(t, v, Probe.STORAGE, loc, False, reason=reason))
                    else:
                        out.append(Observation(t, v, Probe.STORAGE, loc, True))
            for site, prefs in self.sites.items():
                cut = self.cut("cut_site", v, site)
                down = site in stopped or self.has("instances_down", site)
                if cut is not None:
                    out.append(Observation(t, v, Probe.ENDTOEND, site, False, reason=cut.reason))
                elif down:
                    out.append(Observation(t, v, Probe.ENDTOEND, site, False, reason="refused"))
                else:
                    checked = prefs if self.v318 else prefs[:1]
                    failed = [loc for loc in checked if self.dead(loc, r)]
                    services = {
                        "auth": True,
                        "database": not (
                            self.has("global_database") or self.has("database_cut", site)
                        ),
                        "redis": not self.has("global_redis"),
                        "storage": not failed,
                    }
                    ok = all(services.values())
                    detail = None
                    if self.debug and failed:
                        detail = "; ".join(
                            f"storage: Preferred storage '{loc}' check failed: Could not "
                            "connect to the endpoint URL"
                            for loc in failed
                        )
                    out.append(
                        Observation(
                            t,
                            v,
                            Probe.ENDTOEND,
                            site,
                            ok,
                            status=200 if ok else 503,
                            reason=None if ok else "unhealthy",
                            services=services,
                            detail=detail,
                        )
                    )
                if r % self.instance_every == 0:
                    if cut is not None:
                        out.append(
                            Observation(t, v, Probe.INSTANCE, site, False, reason=cut.reason)
                        )
                    elif down:
                        out.append(Observation(t, v, Probe.INSTANCE, site, False, reason="refused"))
                    else:
                        out.append(Observation(t, v, Probe.INSTANCE, site, True, status=200))
        return out


@dataclass
class Sight:
    """What the vantages have seen of the locations, and so the limits of the evidence.

    Direct probes run every `storage_every` rounds: `failing` is each vantage's last direct
    probe, not the truth of this round. `proven`: a vantage whose direct probe failed
    while a site's storage: true proved the location healthy knows it is cut from it
    (vantage_unreachable), until its direct probe passes again; it cannot see that
    location at all: its failing probe neither confirms nor denies a failure. Without
    such proof a failing direct probe looks like a dead location. The sites' answers
    (endtoend, every round) are this round's."""

    truth: Truth
    proven: set[tuple[str, str]] = field(default_factory=set)  # (vantage, location)
    failing: set[tuple[str, str]] = field(default_factory=set)  # (vantage, location)
    stopped: set[str] = field(default_factory=set)  # sites trafficd stopped (no evidence)
    _looks: dict[tuple[int, str], bool] = field(default_factory=dict)  # this round's

    @property
    def quorum(self) -> int:
        return len(self.truth.vantages) // 2 + 1

    def learn(self, r: int, stopped: set[str]) -> None:
        """Round r's direct probes (when they run) and what they prove; `stopped`: the
        sites trafficd had stopped, or was starting again, when the round began."""
        t, self.stopped = self.truth, stopped
        self._looks = {}
        for v in t.vantages:
            if not t.probes_storage(v, r):
                continue
            for loc in t.locations:
                if not t.probe_fails(v, loc, r):
                    self.proven.discard((v, loc))
                    self.failing.discard((v, loc))
                    continue
                self.failing.add((v, loc))
                if self.shown_healthy(loc, r, 1):
                    self.proven.add((v, loc))

    def shown_healthy(self, loc: str, r: int, by: int) -> bool:
        """Whether a site whose Quay checks `loc` answers storage: true to `by` vantages:
        Quay itself reaches `loc`. Sites trafficd stopped are no evidence."""
        t = self.truth
        return any(
            loc in t.checked(site)
            and not any(t.dead(x, r) for x in t.checked(site))
            and len(t.answering(site, self.stopped)) >= by
            for site in t.sites
        )

    def named(self, loc: str, r: int) -> bool:
        """Quay's debug text names `loc`: it is dead and a site that checks it answers."""
        t = self.truth
        return (
            t.debug
            and t.dead(loc, r)
            and any(
                loc in t.checked(site) and len(t.answering(site, self.stopped)) >= self.quorum
                for site in t.sites
            )
        )

    def hidden(self, loc: str) -> int:
        """How many vantages' last direct probe of `loc` failed."""
        return sum(1 for v in self.truth.vantages if (v, loc) in self.failing)

    def looks_failed(self, loc: str, r: int) -> bool:
        """Whether `loc` looks failed to the vantages, dead or not: a quorum's direct
        probes fail, one at least without proof of a cut, and no site shows it healthy;
        or Quay's debug text names it."""
        looks = self._looks.get((r, loc))
        if looks is None:
            seen = any(
                (v, loc) not in self.proven for v in self.truth.vantages if (v, loc) in self.failing
            )
            looks = self._looks[r, loc] = not self.shown_healthy(loc, r, self.quorum) and (
                self.named(loc, r) or (seen and self.hidden(loc) >= self.quorum)
            )
        return looks

    def looks_global(self, r: int) -> bool:
        """Every location looks failed, though not every one is dead."""
        t = self.truth
        return all(self.looks_failed(loc, r) for loc in t.locations) and not all(
            t.dead(loc, r) for loc in t.locations
        )

    def unseen_death(self, r: int) -> bool:
        """A dead location no vantage can see die, and no debug text names it: each
        vantage knows itself cut from it (to them it is the cut they know of, not an
        outage), or it died since their last direct probe."""
        t = self.truth
        return any(t.dead(loc, r) and not self.looks_failed(loc, r) for loc in t.locations)

    def first_in_doubt(self, site: str, r: int) -> bool:
        """Whether the site's first location, alive, cannot be told from dead, so that the
        site's storage: false may be its own failure: no debug text says which location
        that answer is about, and the first either looks failed, or is hidden from a
        quorum of vantages (each knows itself cut) while no other location it checks
        looks failed to take the blame."""
        t = self.truth
        first = t.sites[site][0]
        if t.debug or t.dead(first, r):
            return False
        if self.looks_failed(first, r):
            return True
        if self.hidden(first) < self.quorum or self.shown_healthy(first, r, self.quorum):
            return False
        others = [loc for loc in t.checked(site) if loc != first]
        return any(t.dead(loc, r) for loc in others) and not any(
            self.looks_failed(loc, r) for loc in others
        )


def make_policy(truth: Truth, **kw: Any) -> EnginePolicy:
    vantages = truth.vantages
    return EnginePolicy(
        sites=tuple(
            SiteSpec(n, locs, storage_check="all" if truth.v318 else "first")
            for n, locs in sorted(truth.sites.items())
        ),
        locations=truth.locations,
        vantages=vantages,
        quorum=len(vantages) // 2 + 1,
        interval=1.0,
        storage_interval=float(truth.storage_every),
        return_min_requests=50,
        **kw,
    )


class Engine:
    """One engine driven like the daemon: EngineClock, overrides, pause, save and load."""

    def __init__(self, policy: EnginePolicy, start: float) -> None:
        self.policy = policy
        self.state = EngineState()
        self.latest: dict[tuple[str, Probe, str], Observation] = {}
        self.overrides: dict[str, Override] = {}
        self.pause: Pause | None = None
        self.mono, self.step = start, 0.0
        self.clock = EngineClock(wall=lambda: self.mono + self.step, monotonic=lambda: self.mono)
        self.decision: Decision | None = None
        self.command_refusals: list[tuple[str, str]] = []
        # The load balancer's counters per site: what live traffic got from each.
        self.responses: dict[str, Responses] = {}

    def stopped(self) -> list[str]:
        d = self.decision
        if d is None:
            return []
        return [s for s, sd in d.sites.items() if sd.instances == "stopped"]

    def restart(self) -> None:
        self.state = engine_from_json(json.loads(json.dumps(engine_to_json(self.state))))

    def command(self, kind: str, site: str, stop_instances: bool = False) -> str | None:
        """An operator's command; `stop_instances`: a drain's --stop-instances."""
        wall = self.clock.wall()
        if kind in ("drain", "hold"):
            override = Override(
                kind=kind,
                reason="explorer",
                who="ops",
                at=wall,
                stop_instances=stop_instances and kind == "drain",
            )
            if kind == "drain":
                refusal = trial_drain(
                    self.state,
                    self.latest,
                    self.policy,
                    self.overrides,
                    self.pause,
                    self.clock.now(),
                    site,
                    override,
                    wall=wall,
                )
                if refusal is not None:
                    return refusal.rule
            self.overrides[site] = override
        elif kind in ("undrain", "release"):
            self.overrides.pop(site, None)
        elif kind == "pause":
            self.pause = Pause(reason="explorer", who="ops", at=wall)
        elif kind == "resume":
            self.pause = None
        return None

    def serve(self, truth: Truth) -> None:
        """One round of live traffic: each site takes requests in proportion to the weight
        this engine gave it last round; under `errors_5xx` half of them fail."""
        weights = {s: d.weight for s, d in (self.decision.sites if self.decision else {}).items()}
        for site in truth.sites:
            seen = self.responses.get(site, Responses(0, 0))
            # At least a hundred requests a round while it takes any: enough for the canary
            # to judge one round even at a 1% step.
            weight = weights.get(site, 100)
            total = max(100, 10 * weight) if weight else 0
            errors = total // 2 if truth.has(ERRORS_5XX, site) else 0
            self.responses[site] = Responses(seen.total + total, seen.errors + errors)

    def round(self, truth: Truth, r: int) -> Decision:
        self.mono = 1000.0 + r * self.policy.interval
        wall = self.clock.wall()
        for o in truth.observations(r, wall, self.stopped()):
            stamped = self.clock.stamp(o.t)
            self.latest[o.key] = o if stamped == o.t else _at(o, stamped)
        self.serve(truth)
        self.decision = decide(
            self.state,
            self.latest,
            self.policy,
            self.overrides,
            self.pause,
            self.clock.now(),
            wall=self.clock.wall(),
            canary={
                s: CanaryReading(self.clock.now(), {"lb": r}) for s, r in self.responses.items()
            },
        )
        self.state = self.decision.state
        return self.decision


def _at(o: Observation, t: float) -> Observation:
    from dataclasses import replace

    return replace(o, t=t)


def signature(d: Decision) -> tuple[Any, ...]:
    """What must not change with wall-clock steps or restarts: every transition, every
    refusal, every return step, every site's state, cause, instances and weight."""
    return (
        tuple((t.site, t.from_state, t.to_state, t.cause, t.automatic) for t in d.transitions),
        tuple((x.site, x.rule) for x in d.refusals),
        tuple((x.site, x.step, x.weight) for x in d.steps),
        tuple(
            (s, sd.state, sd.cause, sd.instances, sd.weight, sd.return_step)
            for s, sd in sorted(d.sites.items())
        ),
    )


@dataclass
class History:
    """What the invariants need to remember of the rounds so far."""

    own: dict[str, list[str | None]] = field(default_factory=dict)  # per site, per round
    global_: list[bool] = field(default_factory=list)
    touched: dict[str, list[bool]] = field(default_factory=dict)
    paused: list[bool] = field(default_factory=list)
    overridden: dict[str, list[bool]] = field(default_factory=dict)
    cut_first: set[str] = field(
        default_factory=set
    )  # sites whose first location a vantage was cut from
    blurred: dict[str, list[bool]] = field(default_factory=dict)  # see _blurred, per round
    sight: Sight | None = None  # what the vantages have seen (made by the first check)
    # Per round (and per site): Sight.looks_global, Sight.unseen_death, Sight.first_in_doubt.
    looks_global: list[bool] = field(default_factory=list)
    unseen_death: list[bool] = field(default_factory=list)
    first_in_doubt: dict[str, list[bool]] = field(default_factory=dict)
    errors: dict[str, list[bool]] = field(default_factory=dict)  # errors_5xx, per round
    # Per site: its return step after the previous round (None: not returning) and the
    # unpaused rounds it has spent at that step.
    step: dict[str, tuple[int | None, int]] = field(default_factory=dict)
    began: dict[str, int] = field(default_factory=dict)  # the round each return began


def check(
    truth: Truth,
    policy: EnginePolicy,
    engine: Engine,
    decision: Decision,
    history: History,
    r: int,
    active_before: int,
    stopped: set[str],
) -> list[str]:
    """The invariants of issue 17 after round r; returns the violations. `stopped`: the
    sites trafficd had stopped, or was starting again, when the round began."""
    problems: list[str] = []
    lag = max(truth.storage_every, truth.instance_every)
    sites = sorted(truth.sites)
    sight = history.sight = history.sight or Sight(truth)
    sight.learn(r, stopped)
    history.looks_global.append(sight.looks_global(r))
    history.unseen_death.append(sight.unseen_death(r))
    for s in sites:
        history.first_in_doubt.setdefault(s, []).append(sight.first_in_doubt(s, r))
        history.own.setdefault(s, []).append(truth.own_failure(s, r))
        history.touched.setdefault(s, []).append(truth.touched(s, r))
        history.overridden.setdefault(s, []).append(s in engine.overrides)
        history.blurred.setdefault(s, []).append(_blurred(truth, s, engine))
        history.errors.setdefault(s, []).append(truth.has(ERRORS_5XX, s))
        if any(f.kind == "cut_location" and f.target == truth.sites[s][0] for f in truth.faults):
            history.cut_first.add(s)
    history.global_.append(truth.global_failure(r))
    history.paused.append(engine.pause is not None)

    def recent(values: list[Any], n: int) -> list[Any]:
        return values[max(0, len(values) - n) :]

    active_after = sum(1 for sd in decision.sites.values() if sd.state is State.ACTIVE)
    for t in decision.transitions:
        if not t.automatic:
            continue
        # 5. Under pause, no automatic transition happens.
        if engine.pause is not None:
            problems.append(f"5: automatic {t.site} {t.from_state}->{t.to_state} under pause")
        if t.to_state is State.DRAINING and t.from_state is State.ACTIVE:
            own = recent(history.own[t.site], lag + 1)
            # 1. No site is drained automatically unless its own failure is true (for the
            # canary, see 12). Beyond the evidence: its first location, alive but cut from
            # the vantages, cannot be told from dead (Sight.first_in_doubt).
            if (
                not any(own)
                and t.cause is not Cause.CANARY
                and not (
                    t.cause is Cause.STORAGE
                    and any(recent(history.first_in_doubt[t.site], lag + 1))
                )
            ):
                problems.append(f"1: {t.site} drained ({t.cause}) without its own failure")
            # 3. A global failure drains nothing (beyond a site's own, local failure).
            # Beyond the evidence: a location died where no vantage can see it (each knows
            # itself cut from it), with no debug text naming it.
            if (
                t.cause is Cause.STORAGE
                and all(
                    all(truth.dead(loc, k) for loc in truth.locations)
                    for k in range(max(0, r - lag), r + 1)
                )
                and not any(recent(history.unseen_death, lag + 1))
            ):
                problems.append(f"3: {t.site} drained for storage in a global storage outage")
            if t.cause is Cause.DATABASE and not truth.has("database_cut", t.site):
                problems.append(f"3: {t.site} drained for the database, which fails for all")
            # 12. Only live traffic's 5xx abandons a return for the canary.
            began = history.began.get(t.site, 0)
            if t.cause is Cause.CANARY and not any(history.errors[t.site][began:]):
                problems.append(f"12: {t.site}'s return abandoned by the canary without 5xx")
            # 6. Automation never breaks min_active_sites.
            if active_after < policy.min_active_sites:
                problems.append(
                    f"6: {t.site} drained leaving {active_after} active "
                    f"(min_active_sites {policy.min_active_sites}, before {active_before})"
                )
    problems += _steps(policy, engine, decision, history)
    # 2. A site whose own failure has been true, and seen by a quorum, for fall + 1
    # rounds is draining, or a refusal names the rule. A round is one of the slowest
    # probe's: `fall` counts failing probe results, never one result twice.
    window = (policy.fall + 1) * lag + 1
    for s in sites:
        memory = engine.state.site(s)
        own = recent(history.own[s], window)
        if (
            len(own) == window
            and all(o is not None and o == own[-1] for o in own)
            and not any(recent(history.global_, window))
            # Beyond the evidence: every location looks failed to the vantages (a cut no
            # site's Quay has shown them looks like a dead location): a global outage.
            and not any(recent(history.looks_global, window))
            and not any(recent(history.overridden[s], window))
            and s not in history.cut_first
            and not any(recent(history.blurred[s], window))
            and memory.state is State.ACTIVE
            and memory.refused not in SAFETY_RULES
        ):
            problems.append(f"2: {s}'s own failure ({own[-1]}) for {window} rounds, still active")
    # 4. A drained site whose cause has been gone for rise + 1 rounds (gate passing) is
    # restoring or active, unless paused or held (or a rule such as hold_down says so).
    window = (policy.rise + 1) * lag + 2  # rounds of the slowest probe, as for 2
    for s in sites:
        memory = engine.state.site(s)
        touched = recent(history.touched[s], window)
        if (
            len(touched) == window
            and not any(touched)
            and not any(recent(history.own[s], window))
            and not any(recent(history.paused, window))
            and not any(recent(history.overridden[s], window))
            and memory.state is State.DRAINED
            and memory.refused not in SAFETY_RULES
        ):
            problems.append(f"4: {s} still drained {window} rounds after its cause went")
    return problems


def _steps(policy: EnginePolicy, engine: Engine, decision: Decision, history: History) -> list[str]:
    """Issue 21's invariants of the gradual return, after each round."""
    problems: list[str] = []
    steps = policy.return_steps
    entered = {t.site for t in decision.transitions if t.to_state is State.ACTIVE}
    reached = {x.site: x for x in decision.steps}
    for spec in policy.sites:
        s, sd = spec.name, decision.sites[spec.name]
        before, rounds = history.step.get(s, (None, 0))
        now = sd.return_step
        # 10. A site's weight is never above its step's: a returning site has exactly
        # its step's share, a site out has none, an active one otherwise its own.
        if now is not None:
            percent = sd.return_percent
            if sd.state is not State.ACTIVE or percent not in steps or percent == 100:
                problems.append(f"10: {s} at return step {now} ({percent}%) while {sd.state}")
            elif steps.index(percent) + 1 != now or sd.weight != step_weight(spec, percent):
                problems.append(f"10: {s} at step {now} ({percent}%) has weight {sd.weight}")
        elif sd.weight != (spec.weight if sd.state is State.ACTIVE else 0):
            problems.append(f"10: {s} not returning, {sd.state}, has weight {sd.weight}")
        # 11. A site never skips a step: it enters at the first as it turns active, then
        # goes up one at a time, each after return_step of unpaused rounds, and leaves
        # the steps only at the last (100%) or by leaving active.
        up = before is not None and (now == before + 1 or (now is None and s in reached))
        if now == before:
            pass
        elif before is None and now is not None:
            history.began[s] = len(history.errors[s]) - 1
            if now != 1 or s not in entered:
                problems.append(
                    f"11: {s} entered the return at step {now} (turned active: {s in entered})"
                )
        elif up:
            # The round of the step up counts: healthy time runs from the step's start.
            if (rounds + 1) * policy.interval < policy.return_step or engine.pause is not None:
                problems.append(
                    f"11: {s} up from step {before} after {rounds} round(s) "
                    f"(return_step {policy.return_step:g}s, paused: {engine.pause is not None})"
                )
            if now is None and before != len(steps) - 1:
                problems.append(f"11: {s} completed its return from step {before} of {len(steps)}")
        elif not (now is None and sd.state is not State.ACTIVE):
            problems.append(f"11: {s} went from return step {before} to {now} ({sd.state})")
        if now is None:
            history.step[s] = (None, 0)
        elif now != before:
            history.step[s] = (now, 0)
        else:
            history.step[s] = (now, rounds + (engine.pause is None))
    return problems


def _blurred(truth: Truth, site: str, engine: Engine) -> bool:
    """Whether the site's own failure is beyond what the evidence can show: a vantage is
    cut from the site, or so many other sites fail alike that it cannot be local."""
    if any(f.kind == "cut_site" for f in truth.faults):
        return True
    kind = truth.own_failure(site, 0)
    if kind in ("instance", "database"):
        # The other sites that answer this check: not stopped, not cut, and for the
        # database (read from endtoend bodies) with their instances up. For the instance
        # check a site whose instances are down answers it too (failing): it is one of
        # the sites that fail alike, so it must not be left out of the count.
        stopped = set(engine.stopped())
        fault = "instances_down" if kind == "instance" else "database_cut"
        others = [
            s
            for s in truth.sites
            if s != site
            and s not in stopped
            and (kind == "instance" or not truth.has("instances_down", s))
            and not any(f.kind == "cut_site" and f.target == s for f in truth.faults)
        ]
        alike = sum(1 for s in others if truth.has(fault, s))
        if not others or alike * 2 >= len(others):
            return True
    return False
