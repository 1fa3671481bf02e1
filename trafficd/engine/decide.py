"""The site lifecycle: counters, causes, safety rules and overrides, one round at a time.

Second half of the engine (after `evidence.gather`): `decide(previous,
latest, policy, overrides, pause, now)` returns the next `EngineState` and a
`Decision` with the desired traffic and instance state of every site and the
reasons for every transition and every refused change. Pure and
deterministic: no clock, no I/O; sites are processed in name order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from trafficd.engine.evidence import Evidence, Latest, Verdict, gather
from trafficd.engine.policy import EnginePolicy, SiteSpec
from trafficd.model import Cause, Override, Pause, State

NEVER = float("-inf")
# Every rule that may refuse a change (the `rule` of Refusal, trafficd_safety_blocks_total).
SAFETY_RULES = ("min_active_sites", "max_drains", "hold_down", "hold", "paused")

# When several causes fail at once the most fundamental one is named.
CAUSE_ORDER = (Cause.STORAGE, Cause.DATABASE, Cause.INSTANCE, Cause.REGISTRY)
_CHECK_OF = {Cause.DATABASE: "database", Cause.INSTANCE: "instance", Cause.REGISTRY: "registry"}
_CHECKS = tuple(_CHECK_OF.values())


@dataclass(frozen=True, slots=True)
class SiteMemory:
    state: State = State.ACTIVE
    cause: Cause | None = None
    since: float = NEVER  # last transition
    active_since: float = NEVER
    drained_at: float = NEVER
    stop_instances: bool = False
    fails: Mapping[str, int] = field(default_factory=dict)  # consecutive failing rounds per check
    oks: Mapping[str, int] = field(default_factory=dict)  # consecutive healthy rounds per check
    drains: tuple[float, ...] = ()  # automatic drain times, for damping
    refused: str | None = None  # the rule refusing this site's wish, reported once


_FRESH_SITE = SiteMemory()


@dataclass(frozen=True, slots=True)
class LocationMemory:
    down: int = 0
    up: int = 0


@dataclass(frozen=True)
class EngineState:
    sites: Mapping[str, SiteMemory] = field(default_factory=dict)
    locations: Mapping[str, LocationMemory] = field(default_factory=dict)
    drains: tuple[float, ...] = ()  # automatic drain times, for max_drains
    last_round: float = NEVER
    # The previous round's decisions, reused for sites whose memory did not change
    # (a cache of derived data: it keeps 1,000-site rounds fast).
    decisions: Mapping[str, SiteDecision] = field(default_factory=dict)

    def site(self, name: str) -> SiteMemory:
        return self.sites.get(name, _FRESH_SITE)


@dataclass(frozen=True)
class Transition:
    site: str
    from_state: State
    to_state: State
    cause: Cause | None
    reasons: tuple[str, ...]
    automatic: bool


@dataclass(frozen=True)
class Refusal:
    site: str
    rule: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class SiteDecision:
    site: str
    state: State
    cause: Cause | None
    weight: int
    instances: str  # "running" | "stopped"
    actuate: bool  # False for sites in observe mode
    would_drain: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    state: EngineState
    sites: Mapping[str, SiteDecision]
    transitions: tuple[Transition, ...]
    refusals: tuple[Refusal, ...]
    evidence: Evidence


def effective_hold_down(memory: SiteMemory, policy: EnginePolicy, now: float) -> float:
    """Each automatic drain within the damping window doubles the hold-down, up to a cap."""
    recent = sum(1 for t in memory.drains if now - t < policy.damping_window)
    cap = max(policy.max_hold_down, policy.hold_down)
    return float(min(policy.hold_down * 2 ** max(0, recent - 1), cap))


def _count(prev: Mapping[str, int], key: str, hit: bool, keep: bool) -> int:
    if keep:
        return prev.get(key, 0)
    return prev.get(key, 0) + 1 if hit else 0


class _Round:
    """The mutable bookkeeping of one call to `decide`."""

    def __init__(
        self,
        previous: EngineState,
        evidence: Evidence,
        policy: EnginePolicy,
        overrides: Mapping[str, Override],
        pause: Pause | None,
        now: float,
        restore_blocks: Mapping[str, str],
    ) -> None:
        self.prev = previous
        self.restore_blocks = restore_blocks
        self.ev = evidence
        self.policy = policy
        self.overrides = {k: o for k, o in overrides.items() if o.live(now)}
        self.pause = pause
        self.now = now
        self.sites: dict[str, SiteMemory] = {}
        self.transitions: list[Transition] = []
        self.refusals: list[Refusal] = []
        self.notes: dict[str, list[str]] = {}
        self.drains = tuple(t for t in previous.drains if now - t < policy.drain_window)
        self.locations = self._locations()
        # Traffic keeps flowing to observe-mode sites whatever they "decide".
        self.active = sum(
            1 for s in policy.sites if s.observe or previous.site(s.name).state is State.ACTIVE
        )

    # --- counters -------------------------------------------------------------

    def _locations(self) -> dict[str, LocationMemory]:
        out = {}
        tallies, rise, previous = self.ev.locations, self.policy.rise, self.prev.locations
        quorum = tallies.quorum
        fresh = LocationMemory()
        for loc in self.policy.locations:
            prev = previous.get(loc, fresh)
            fail, ok = tallies.counts(loc)  # Tally.verdict, inlined: 1,000 locations a round
            if fail >= quorum:
                out[loc] = LocationMemory(down=prev.down + 1, up=0)
            elif ok >= quorum:
                up = min(prev.up + 1, rise)  # only "at least rise" matters
                out[loc] = prev if prev.down == 0 and prev.up == up else LocationMemory(0, up)
            else:
                out[loc] = prev  # unknown: neither evidence of failure nor of health
        return out

    def _counters(self, spec: SiteSpec, memory: SiteMemory) -> SiteMemory:
        fails, oks = dict(memory.fails), dict(memory.oks)
        rise = self.policy.rise
        # Instances trafficd stopped (or is starting again) fail their checks by design;
        # counting those rounds would drain the site again the moment it is back.
        stopped = memory.state is not State.ACTIVE and _instances_stopped(memory)
        for check in _CHECK_OF.values():
            verdict = self.ev.checks[check][spec.name].verdict
            unknown = verdict is Verdict.UNKNOWN
            if stopped and check in _STOPPED_CHECKS:
                fails[check] = 0
            else:
                fails[check] = _count(memory.fails, check, verdict is Verdict.FAIL, unknown)
            # Only "at least rise" matters; capping keeps a healthy site's memory unchanged.
            oks[check] = min(rise, _count(memory.oks, check, verdict is Verdict.OK, unknown))
        if fails == memory.fails and oks == memory.oks:
            return memory
        return replace(memory, fails=fails, oks=oks)

    # --- causes ---------------------------------------------------------------

    def failing(self, spec: SiteSpec, memory: SiteMemory) -> tuple[Cause | None, list[str]]:
        """The cause that should drain this site now, and the reasons either way."""
        notes: list[str] = []
        fall = self.policy.fall
        if self.ev.abstaining:
            names = ", ".join(sorted(self.ev.abstaining))
            notes.append(
                f"abstain: vantage(s) {names} see every site and location fail at once "
                "(cut off, or a global failure); they do not count"
            )
        if spec.storage:
            first = spec.storage[0]
            down = self.locations[first].down
            corroboration = self.ev.corroboration[spec.name]
            if self.ev.global_storage:
                if down:
                    notes.append("global: every storage location fails at once; nothing drains")
            elif down >= fall:
                if corroboration.verdict is Verdict.FAIL:
                    notes.append(
                        f"storage: location {first} failed direct probes for {down} rounds "
                        f"({self.ev.locations[first]}) and the site confirms it "
                        f"({corroboration})"
                    )
                    return Cause.STORAGE, notes
                if corroboration.verdict is Verdict.OK:
                    notes.append(
                        f"vantage_unreachable: location {first} fails direct probes but the "
                        "site's endtoend says storage: true; not draining"
                    )
            for other in spec.storage[1:]:
                if self.locations[other].down >= fall and not self.ev.global_storage:
                    notes.append(
                        f"replication risk: non-first location {other} is down; blobs held "
                        "only there cannot be read, but pushes here still work"
                    )
        for cause in CAUSE_ORDER[1:]:
            check = _CHECK_OF[cause]
            if check in self.ev.global_checks:
                notes.append(f"global: {check} fails on every reachable site; nothing drains")
                continue
            if memory.fails.get(check, 0) >= fall:
                tally = self.ev.checks[check][spec.name]
                notes.append(f"{check}: failing for {memory.fails[check]} rounds ({tally})")
                return cause, notes
        return None, notes

    def recovered(self, spec: SiteSpec, memory: SiteMemory) -> tuple[bool, str]:
        rise = self.policy.rise
        cause = memory.cause
        if cause is Cause.STORAGE:
            first = spec.storage[0]
            up = self.locations[first].up
            progress = f"location {first} passed {up} direct probe round(s) of {rise}"
            block = self.restore_blocks.get(first)
            if up >= rise and block is not None:
                self.notes[spec.name].append(f"{progress}; {block}")  # said while it holds
                return False, f"{progress}; {block}"
            return up >= rise, progress
        if cause in _CHECK_OF:
            check = _CHECK_OF[cause]
            oks = memory.oks.get(check, 0)
            return oks >= rise, f"{check} passed {oks} round(s) of {rise}"
        return False, ""

    # --- safety ---------------------------------------------------------------

    def drain_refusal(self, spec: SiteSpec, memory: SiteMemory) -> str | None:
        if self.pause is not None:
            return "paused"
        hold = self.overrides.get(spec.name)
        if hold is not None and hold.kind == "hold":
            return "hold"
        if self.now - memory.active_since < effective_hold_down(memory, self.policy, self.now):
            return "hold_down"
        if spec.observe:
            return None
        if len(self.drains) >= self.policy.max_drains:
            return "max_drains"
        if self.active - 1 < self.policy.min_active_sites:
            return "min_active_sites"
        return None

    # --- transitions ----------------------------------------------------------

    def move(
        self,
        spec: SiteSpec,
        memory: SiteMemory,
        to: State,
        cause: Cause | None,
        reasons: list[str],
        *,
        automatic: bool,
        stop_instances: bool = False,
    ) -> SiteMemory:
        self.transitions.append(
            Transition(spec.name, memory.state, to, cause, tuple(reasons), automatic)
        )
        if not spec.observe:
            self.active += (to is State.ACTIVE) - (memory.state is State.ACTIVE)
        new = replace(memory, state=to, cause=cause, since=self.now, refused=None)
        if to is State.ACTIVE:
            new = replace(new, active_since=self.now, cause=None, stop_instances=False)
        if to is State.DRAINING and memory.state in (State.ACTIVE, State.RESTORING):
            new = replace(new, drained_at=self.now, stop_instances=stop_instances)
            if automatic:
                new = replace(new, drains=(*memory.drains, self.now))
                if not spec.observe:
                    self.drains = (*self.drains, self.now)
        return new

    def refuse(
        self, spec: SiteSpec, memory: SiteMemory, rule: str, reasons: list[str]
    ) -> SiteMemory:
        if memory.refused != rule:
            self.refusals.append(Refusal(spec.name, rule, tuple(reasons)))
        return replace(memory, refused=rule)

    def quiet(self, spec: SiteSpec, memory: SiteMemory) -> bool:
        """An active, healthy, unremarkable site: nothing to decide (the common case)."""
        if (
            memory.state is not State.ACTIVE
            or memory.refused is not None
            or self.ev.abstaining
            or self.ev.global_storage
            or self.ev.global_checks
            or spec.name in self.overrides
        ):
            return False
        locations = self.locations
        if any(locations[loc].down for loc in spec.storage):
            return False
        checks, name, rise = self.ev.checks, spec.name, self.policy.rise
        for check in _CHECKS:
            tallies = checks[check]
            fail, ok = tallies.counts(name)
            # Unchanged counters: no failing vote, and healthy for `rise` rounds or unknown.
            if fail or (ok >= tallies.quorum and memory.oks.get(check) != rise):
                return False
        return not any(memory.fails.values())

    def step(self, spec: SiteSpec) -> SiteMemory:
        previous = self.prev.site(spec.name)
        if self.quiet(spec, previous):
            self.notes[spec.name] = []
            return previous
        memory = self._counters(spec, previous)
        cause, notes = self.failing(spec, memory)
        self.notes[spec.name] = list(notes)
        override = self.overrides.get(spec.name)
        now, policy = self.now, self.policy
        state = memory.state

        if override is not None and override.kind == "drain":
            why = [f"manual: {override.reason} (by {override.who})"]
            if state in (State.ACTIVE, State.RESTORING):
                if (
                    not override.force
                    and not spec.observe
                    and state is State.ACTIVE
                    and self.active - 1 < policy.min_active_sites
                ):
                    return self.refuse(spec, memory, "min_active_sites", why)
                return self.move(
                    spec,
                    memory,
                    State.DRAINING,
                    Cause.MANUAL,
                    why,
                    automatic=False,
                    stop_instances=override.stop_instances,
                )
            memory = replace(memory, cause=Cause.MANUAL, stop_instances=override.stop_instances)
            if state is State.DRAINING and now - memory.since >= policy.shutdown_grace:
                return self.move(
                    spec,
                    memory,
                    State.DRAINED,
                    Cause.MANUAL,
                    [*why, "shutdown grace over"],
                    automatic=False,
                    stop_instances=override.stop_instances,
                )
            return memory if memory.refused is None else replace(memory, refused=None)

        held = override is not None and override.kind == "hold"
        if state is State.ACTIVE:
            if cause is None:
                return memory if memory.refused is None else replace(memory, refused=None)
            rule = self.drain_refusal(spec, memory)
            if rule is not None:
                return self.refuse(spec, memory, rule, notes)
            return self.move(spec, memory, State.DRAINING, cause, notes, automatic=True)

        if state is State.RESTORING:
            if self.ev.endtoend[spec.name].verdict is Verdict.OK:
                return self.move(
                    spec,
                    memory,
                    State.ACTIVE,
                    None,
                    [f"endtoend healthy ({self.ev.endtoend[spec.name]})"],
                    automatic=True,
                )
            if cause is not None and not held:
                return self.move(spec, memory, State.DRAINED, cause, notes, automatic=True)
            if not held and now - memory.since > policy.restore_timeout:
                return self.move(
                    spec,
                    memory,
                    State.DRAINED,
                    memory.cause,
                    [f"restore_timeout: endtoend not healthy after {policy.restore_timeout:g}s"],
                    automatic=True,
                )
            return memory

        # draining or drained
        if memory.cause is Cause.MANUAL or held:
            # Undrained, expired, or pinned by a hold: back to automatic control.
            if cause is not None and not held:
                return replace(memory, cause=cause, stop_instances=False, refused=None)
            ended = "hold: pinned active by an operator" if held else "manual drain ended"
            return self.move(spec, memory, State.RESTORING, memory.cause, [ended], automatic=False)
        ok, progress = self.recovered(spec, memory)
        if ok:
            if self.pause is not None:
                return self.refuse(spec, memory, "paused", [progress])
            hold_down = effective_hold_down(memory, policy, now)
            if now - memory.drained_at < hold_down:
                return self.refuse(
                    spec, memory, "hold_down", [progress, f"drained less than {hold_down:g}s ago"]
                )
            return self.move(
                spec, memory, State.RESTORING, memory.cause, [progress], automatic=True
            )
        if state is State.DRAINING and now - memory.since >= policy.shutdown_grace:
            return self.move(
                spec, memory, State.DRAINED, memory.cause, ["shutdown grace over"], automatic=True
            )
        return memory if memory.refused is None else replace(memory, refused=None)


def _instances_stopped(memory: SiteMemory) -> bool:
    """Whether this drain stops the site's instances (docs/design.md's cause table)."""
    return memory.cause is Cause.STORAGE or (memory.cause is Cause.MANUAL and memory.stop_instances)


_STOPPED_CHECKS = frozenset({"instance", "registry"})


def _site_decision(spec: SiteSpec, memory: SiteMemory, notes: list[str]) -> SiteDecision:
    stopped = memory.state is State.DRAINED and _instances_stopped(memory)
    return SiteDecision(
        site=spec.name,
        state=memory.state,
        cause=memory.cause,
        weight=spec.weight if memory.state is State.ACTIVE else 0,
        instances="stopped" if stopped else "running",
        actuate=not spec.observe,
        would_drain=spec.observe and memory.state is not State.ACTIVE,
        reasons=tuple(notes),
    )


def decide(
    previous: EngineState,
    latest: Latest,
    policy: EnginePolicy,
    overrides: Mapping[str, Override],
    pause: Pause | None,
    now: float,
    *,
    restore_blocks: Mapping[str, str] | None = None,
) -> Decision:
    """One round: from the previous state and the latest observations to the next state.

    `restore_blocks` names storage locations that pass their probes but may not take a
    storage-drained site back yet (the restore gate: sampled blobs are missing there),
    with the reason; such a site stays out and says why."""
    evidence = gather(latest, policy, now, previous.last_round)
    rnd = _Round(previous, evidence, policy, overrides, pause, now, restore_blocks or {})
    for spec in policy.sites:
        rnd.sites[spec.name] = rnd.step(spec)
    sites = {}
    for spec in policy.sites:
        memory, notes = rnd.sites[spec.name], rnd.notes[spec.name]
        cached = previous.decisions.get(spec.name)
        unchanged = memory is previous.sites.get(spec.name) and not notes
        if (
            unchanged
            and cached is not None
            and not cached.reasons
            and cached.actuate is not spec.observe  # a reload may change the spec
            and cached.weight == (spec.weight if memory.state is State.ACTIVE else 0)
        ):
            sites[spec.name] = cached
        else:
            sites[spec.name] = _site_decision(spec, memory, notes)
    state = EngineState(
        sites=dict(rnd.sites),
        locations=rnd.locations,
        drains=rnd.drains,
        last_round=now,
        decisions=sites,
    )
    return Decision(
        state=state,
        sites=sites,
        transitions=tuple(rnd.transitions),
        refusals=tuple(rnd.refusals),
        evidence=evidence,
    )
