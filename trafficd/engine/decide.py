"""The site lifecycle: counters, causes, safety rules and overrides, one round at a time.

Second half of the engine (after `evidence.gather`): `decide(previous,
latest, policy, overrides, pause, now)` returns the next `EngineState` and a
`Decision` with the desired traffic and instance state of every site and the
reasons for every transition and every refused change. Pure and
deterministic: no clock, no I/O; sites are processed in name order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from trafficd.engine.evidence import Latest, gather
from trafficd.engine.policy import EnginePolicy, SiteSpec
from trafficd.model import (
    NEVER,
    CanaryReading,
    Cause,
    Decision,
    EngineState,
    Evidence,
    LocationMemory,
    Override,
    Pause,
    Refusal,
    Responses,
    ReturnStep,
    SiteDecision,
    SiteMemory,
    State,
    Tally,
    Transition,
    Verdict,
)

# Every rule that may refuse a change (the `rule` of Refusal, trafficd_safety_blocks_total).
SAFETY_RULES = ("min_active_sites", "max_drains", "hold_down", "hold", "paused")

# When several causes fail at once the most fundamental one is named.
CAUSE_ORDER = (Cause.STORAGE, Cause.DATABASE, Cause.INSTANCE, Cause.REGISTRY)
# The site checks, most fundamental first, and the cause each one drains for: database
# and redis are both the shared dependency (a site-local cut drains for `database`), but
# each is judged, counted and named on its own.
_CHECK_CAUSES = (
    ("database", Cause.DATABASE),
    ("redis", Cause.DATABASE),
    ("instance", Cause.INSTANCE),
    ("registry", Cause.REGISTRY),
)
_CHECKS = tuple(check for check, _ in _CHECK_CAUSES)
_CAUSE_CHECKS = {
    cause: tuple(c for c, k in _CHECK_CAUSES if k is cause) for _, cause in _CHECK_CAUSES
}


def step_number(policy: EnginePolicy, percent: int) -> int:
    """The 1-based number of the return step at `percent` (steps below it, plus one)."""
    return 1 + sum(1 for p in policy.return_steps if p < percent)


def step_weight(spec: SiteSpec, percent: int) -> int:
    """A site's weight at a return step: `percent` of its weight, rounded half up, and at
    least 1, since a step is some traffic (a weight of 0 stays 0)."""
    if not spec.weight:
        return 0
    return max(1, (spec.weight * percent + 50) // 100)


def site_weight(spec: SiteSpec, memory: SiteMemory) -> int:
    """The weight a site takes: none unless active, its step's while it returns."""
    if memory.state is not State.ACTIVE:
        return 0
    return step_weight(spec, memory.returning) if memory.returning else spec.weight


def effective_hold_down(memory: SiteMemory, policy: EnginePolicy, now: float) -> float:
    """Each automatic drain within the damping window doubles the hold-down, up to a cap."""
    recent = sum(1 for t in memory.drains if now - t < policy.damping_window)
    cap = max(policy.max_hold_down, policy.hold_down)
    return float(min(policy.hold_down * 2 ** max(0, recent - 1), cap))


def _count(prev: Mapping[str, int], key: str, hit: bool, keep: bool) -> int:
    if keep:
        return prev.get(key, 0)
    return prev.get(key, 0) + 1 if hit else 0


def _shown(tally: Tally, seen: str) -> str:
    """A tally for a reason: this round's votes, or the last failing votes when the round
    brought no new observation (never an empty "0 failing, 0 ok")."""
    if tally.empty and seen:
        return f"last evidence: {seen}"
    return str(tally)


def stopped_sites(previous: EngineState, policy: EnginePolicy) -> frozenset[str]:
    """Sites whose instances trafficd stopped (drained) or is starting again (restoring)."""
    return frozenset(
        s.name
        for s in policy.sites
        if previous.site(s.name).state in (State.DRAINED, State.RESTORING)
        and _instances_stopped(previous.site(s.name))
    )


def _returned(memory: SiteMemory) -> SiteMemory:
    """No return in steps under way: at its whole weight, or out of active."""
    return replace(
        memory,
        returning=0,
        step_since=NEVER,
        step_responses=None,
        step_read_at=NEVER,
        step_counted=None,
    )


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
        wall: float,
        stopped: frozenset[str],
        traffic_off: Mapping[str, float] | None = None,
        canary: Mapping[str, CanaryReading] | None = None,
    ) -> None:
        self.prev = previous
        self.restore_blocks = restore_blocks
        self.traffic_off = traffic_off
        self.canary = canary
        self.steps: list[ReturnStep] = []
        self.ev = evidence
        self.policy = policy
        # Operator-given expiries are absolute wall times; everything else runs on `now`.
        self.overrides = {k: o for k, o in overrides.items() if o.live(wall)}
        self.pause = pause
        self.now = now
        self.stopped = stopped
        self.sites: dict[str, SiteMemory] = {}
        self.transitions: list[Transition] = []
        self.refusals: list[Refusal] = []
        self.notes: dict[str, list[str]] = {}
        self.drains = tuple(t for t in previous.drains if now - t < policy.drain_window)
        self._quay_ok: dict[str, str | None] = {}
        # Every location failing is global only while no site's Quay shows one of them
        # healthy: a location this vantage cannot reach is no part of an outage.
        self.global_storage = evidence.global_storage and all(
            self.quay_ok(loc) is None for loc in policy.locations
        )
        self.locations = self._locations()
        # Traffic keeps flowing to observe-mode sites whatever they "decide".
        self.active = sum(
            1 for s in policy.sites if s.observe or previous.site(s.name).state is State.ACTIVE
        )

    # --- evidence per location ------------------------------------------------------

    def quay_ok(self, loc: str) -> str | None:
        """The site whose Quay says storage: true (a quorum of vantages) and checks `loc`:
        Quay itself reaches `loc`. None when no such site. A site with storage_check
        first (v3.17) checks only its first location; with all (v3.18) every one."""
        if loc not in self._quay_ok:
            found = None
            for name in self.policy.proven_by.get(loc, ()):
                if name in self.stopped:
                    continue
                if self.ev.corroboration[name].ok >= self.ev.corroboration[name].quorum:
                    found = name
                    break
            self._quay_ok[loc] = found
        return self._quay_ok[loc]

    def explain(self, spec: SiteSpec, named: frozenset[str]) -> tuple[frozenset[str], str]:
        """Which of the site's locations explain one failing storage answer, and the
        evidence used: Quay's debug text when it names them; else the locations that
        fail direct probes (and are not vantage_unreachable) among those no other site
        shows healthy; else every location not shown healthy."""
        mine = frozenset(spec.storage)
        if named & mine:
            names = ", ".join(sorted(named & mine))
            return named & mine, f"Quay's debug text names {names}"
        candidates = [loc for loc in spec.storage if self.quay_ok(loc) is None]
        failing = [
            loc
            for loc in candidates
            if self.locations[loc].down and not self.locations[loc].unreachable
        ]
        if failing:
            return frozenset(failing), f"{', '.join(failing)} fail(s) direct probes"
        if candidates:
            return frozenset(candidates), (
                f"{', '.join(candidates)}: the location(s) of its list no site shows healthy"
            )
        return mine, "every location of its list"

    def attributed(self, spec: SiteSpec, loc: str) -> tuple[Tally, str, frozenset[str]]:
        """The site's storage failures that `loc` explains (FAIL: the site confirms `loc`
        failing), the evidence, and the locations that explain the others."""
        corroboration = self.ev.corroboration[spec.name]
        reports = self.ev.named.get(spec.name, ())
        fail, evidence, elsewhere = 0, "", frozenset[str]()
        for named in reports:
            explained, why = self.explain(spec, named)
            if loc in explained:
                fail += 1
                evidence = evidence or why
            else:
                elsewhere |= explained
                evidence = evidence or why
        if not reports and corroboration.fail:  # observations without services
            fail = corroboration.fail
        return Tally(fail, corroboration.ok, corroboration.quorum), evidence, elsewhere

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
                unreachable = prev.unreachable or self.quay_ok(loc) is not None
                out[loc] = LocationMemory(
                    down=prev.down + 1, up=0, unreachable=unreachable, seen=str(tallies[loc])
                )
            elif ok >= quorum:
                up = min(prev.up + 1, rise)  # only "at least rise" matters
                if prev.down == 0 and prev.up == up and not prev.unreachable:
                    out[loc] = prev
                else:
                    out[loc] = LocationMemory(0, up, seen=prev.seen)
            else:
                out[loc] = prev  # unknown: neither evidence of failure nor of health
        return out

    def _counters(self, spec: SiteSpec, memory: SiteMemory) -> SiteMemory:
        fails, oks = dict(memory.fails), dict(memory.oks)
        seen = memory.seen
        rise = self.policy.rise
        # Instances trafficd stopped (or is starting again) fail their checks by design;
        # counting those rounds would drain the site again the moment it is back.
        stopped = memory.state is not State.ACTIVE and _instances_stopped(memory)
        for check in _CHECKS:
            tally = self.ev.checks[check][spec.name]
            verdict = tally.verdict
            unknown = verdict is Verdict.UNKNOWN
            if stopped and check in _STOPPED_CHECKS:
                fails[check] = 0
            else:
                fails[check] = _count(memory.fails, check, verdict is Verdict.FAIL, unknown)
                if tally.fail and seen.get(check) != str(tally):
                    seen = {**seen, check: str(tally)}
            # Only "at least rise" matters; capping keeps a healthy site's memory unchanged.
            oks[check] = min(rise, _count(memory.oks, check, verdict is Verdict.OK, unknown))
        if fails == memory.fails and oks == memory.oks and seen is memory.seen:
            return memory
        return replace(memory, fails=fails, oks=oks, seen=seen)

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
            location = self.locations[first]
            down = location.down
            if self.global_storage:
                if down:
                    notes.append("global: every storage location fails at once; nothing drains")
            elif down >= fall:
                direct = _shown(self.ev.locations[first], location.seen)
                tally, evidence, elsewhere = self.attributed(spec, first)
                healthy = self.quay_ok(first)
                if healthy is not None:
                    notes.append(
                        f"vantage_unreachable: location {first} fails direct probes ({direct}) "
                        f"but site {healthy}'s endtoend says storage: true; not draining"
                    )
                elif tally.verdict is Verdict.FAIL:
                    notes.append(
                        f"storage: location {first} failed direct probes for {down} rounds "
                        f"({direct}) and the site confirms it ({tally}; evidence: "
                        f"{evidence or 'the site hangs or refuses'})"
                    )
                    return Cause.STORAGE, notes
                elif elsewhere and tally.fail < tally.quorum:
                    names = ", ".join(sorted(elsewhere))
                    unreachable = " (vantage_unreachable)" if location.unreachable else ""
                    notes.append(
                        f"storage: location {first}{unreachable} fails direct probes ({direct}) "
                        f"but the site's storage: false is explained by {names} "
                        f"(evidence: {evidence}); not draining"
                    )
            for other in spec.storage[1:]:
                if self.locations[other].down >= fall and not self.global_storage:
                    notes.append(
                        f"replication risk: non-first location {other} is down; blobs held "
                        "only there cannot be read, but pushes here still work"
                    )
        for check, cause in _CHECK_CAUSES:
            if check in self.ev.global_checks:
                notes.append(f"global: {check} fails on every reachable site; nothing drains")
                continue
            if memory.fails.get(check, 0) >= fall:
                shown = _shown(self.ev.checks[check][spec.name], memory.seen.get(check, ""))
                notes.append(f"{check}: failing for {memory.fails[check]} rounds ({shown})")
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
        if cause is Cause.CANARY:
            # Nothing probes live traffic while the site is out: once drained (the traffic
            # it served confirmed off) and answering healthy, only the hold-down, doubled
            # by each abandoned return, keeps it out; the next return is judged afresh.
            endtoend = self.ev.endtoend[spec.name]
            progress = f"canary: drained, endtoend healthy ({endtoend}); next return judged afresh"
            return memory.state is State.DRAINED and endtoend.verdict is Verdict.OK, progress
        checks = _CAUSE_CHECKS.get(cause) if cause is not None else None
        if checks:
            oks = min(memory.oks.get(check, 0) for check in checks)
            names = " and ".join(checks)
            return oks >= rise, f"{names} passed {oks} round(s) of {rise}"
        return False, ""

    def own_cause_cleared(self, spec: SiteSpec, memory: SiteMemory) -> str | None:
        """A storage-drained site restoring while its endtoend stays false for another
        location (v3.18 checks every preferred one): its own cause is gone when its first
        location passes and the site's only failing check, storage, is explained by
        other locations. Returns the reason, or None."""
        if memory.cause is not Cause.STORAGE or not spec.storage:
            return None
        first = spec.storage[0]
        location = self.locations[first]
        if location.down or location.up < self.policy.rise:
            return None
        elsewhere = self.explained_elsewhere(spec)
        if elsewhere is None:
            return None
        return (
            f"storage: location {first}, the cause of this drain, passed {location.up} direct "
            f"probe round(s); the site answers and its {elsewhere}"
        )

    def explained_elsewhere(self, spec: SiteSpec) -> str | None:
        """Whether the site's only failing check, storage (a quorum of endtoend answers
        with every other service healthy), is explained by locations other than its
        first (v3.18 checks every preferred one): says by which, else None."""
        quorum = self.ev.endtoend[spec.name].quorum
        if not spec.storage or self.ev.storage_only.get(spec.name, 0) < quorum:
            return None
        tally, evidence, elsewhere = self.attributed(spec, spec.storage[0])
        if tally.fail or not elsewhere:
            return None
        names = ", ".join(sorted(elsewhere))
        return f"storage: false is explained by {names} (evidence: {evidence})"

    # --- the gradual return --------------------------------------------------------

    def trouble(self, spec: SiteSpec, memory: SiteMemory) -> str | None:
        """What keeps a returning site's probes from being healthy this round (a step
        counts only healthy time), or None. Failures too short for a cause count too."""
        failing = sorted(check for check, n in memory.fails.items() if n)
        if failing:
            return f"{' and '.join(failing)} failed"
        if spec.storage:
            first = spec.storage[0]
            location = self.locations[first]
            if location.down and not location.unreachable:
                return f"location {first} fails direct probes"
        endtoend = self.ev.endtoend[spec.name]
        if endtoend.verdict is Verdict.FAIL and self.explained_elsewhere(spec) is None:
            return f"endtoend unhealthy ({endtoend})"
        return None

    def judge_canary(self, spec: SiteSpec, memory: SiteMemory) -> tuple[SiteMemory, str | None]:
        """The canary: live traffic's 5xx share in the step, from the load balancer's
        cumulative counters. Returns the memory (the reading counted, if new) and the
        failure, if the share counted in the step is over the limit on enough responses.

        Only a reading taken in the step counts: its first is the base, each later one
        adds what every source counted since the reading before. A source new since
        then (a reload added a socket) is counted from its first reading, a source that
        went back (its HAProxy restarted) with all it counted since it started: both
        are counted alone, so a reload never folds in counts from before the step nor
        hides another source's errors."""
        reading = None if self.canary is None else self.canary.get(spec.name)
        base = memory.step_responses
        fresh = reading is not None and (
            reading.at > memory.step_read_at or (base is None and reading.at >= memory.step_read_at)
        )
        if reading is not None and reading.unread:
            self.notes[spec.name].append(
                f"canary: {', '.join(reading.unread)} could not be read: nothing counted"
            )
        elif reading is not None and fresh:
            if base is None:
                memory = replace(memory, step_responses=reading.counts, step_read_at=reading.at)
            else:
                total, errors, restarted = 0, 0, []
                for source, now in sorted(reading.counts.items()):
                    was = base.get(source)
                    if was is None:
                        continue  # new here: its counts so far may be from before the step
                    other = bool(was.started and now.started) and was.started != now.started
                    if other or now.total < was.total or now.errors < was.errors:
                        restarted.append(source)
                        was = Responses(0, 0)
                    total, errors = total + now.total - was.total, errors + now.errors - was.errors
                if restarted:
                    self.notes[spec.name].append(
                        f"canary: the counters of {', '.join(restarted)} started again "
                        "(a reload?); counting what they counted since"
                    )
                so_far = memory.step_counted or Responses(0, 0)
                memory = replace(
                    memory,
                    step_responses=reading.counts,
                    step_read_at=reading.at,
                    step_counted=Responses(so_far.total + total, so_far.errors + errors),
                )
        counted = memory.step_counted
        if counted is None:
            if reading is not None:
                self.notes[spec.name].append("canary: no response counted yet in this step")
            return memory, None  # no load balancer, or no reading in the step: probes decide
        total, errors = counted.total, counted.errors
        policy = self.policy
        limit = policy.return_max_error_ratio
        share = f"{errors} of {total} responses 5xx ({errors / total:.1%})" if total else ""
        if total >= policy.return_min_requests and errors / total > limit:
            return memory, f"canary: {share}, limit {limit:.1%}"
        if total >= policy.return_min_requests:
            self.notes[spec.name].append(f"canary: {share} in this step (limit {limit:.1%})")
        else:
            self.notes[spec.name].append(
                f"canary: {share or 'no response yet'} in this step "
                f"(judged once there are {policy.return_min_requests}, limit {limit:.1%})"
            )
        return memory, None

    def abandon_refusal(self, spec: SiteSpec, held: bool) -> str | None:
        """The rules that may keep a failing returning site in. Not hold_down (the steps
        are the site's probation) nor max_drains (the site was out a moment ago: taking
        it out again is no new blast); the abandon still counts against both."""
        if self.pause is not None:
            return "paused"
        if held:
            return "hold"
        if not spec.observe and self.active - 1 < self.policy.min_active_sites:
            return "min_active_sites"
        return None

    def returning(
        self,
        spec: SiteSpec,
        memory: SiteMemory,
        cause: Cause | None,
        notes: list[str],
        held: bool,
    ) -> SiteMemory:
        """An active site returning in steps: abandoned at the first failure, frozen
        while paused, one step up after a whole healthy `return_step`."""
        policy, now, name = self.policy, self.now, spec.name
        percent = memory.returning
        number, weight = step_number(policy, percent), step_weight(spec, percent)
        of = len(policy.return_steps)
        at = f"step {number} of {of} (weight {weight})"
        memory, canary = self.judge_canary(spec, memory)
        # failing() names the cause it returns in its last note.
        failure = notes[-1] if cause is not None else canary
        if failure is not None:
            others = notes[:-1] if cause is not None else notes
            rule = self.abandon_refusal(spec, held)
            if rule is not None:
                why = f"the return at {at} would be abandoned: {failure}"
            else:
                why = f"return abandoned at {at}: {failure}"
            # The decision says it too, in place of the bare cause.
            shown = self.notes[name]
            if cause is not None:
                shown.remove(failure)
            shown.insert(0, why)
            if rule is not None:
                memory = replace(memory, step_since=now)  # no healthy time either
                return self.refuse(spec, memory, rule, [why, *others])
            return self.move(
                spec, memory, State.DRAINING, cause or Cause.CANARY, [why, *others], automatic=True
            )
        memory = memory if memory.refused is None else replace(memory, refused=None)
        trouble = self.trouble(spec, memory)
        if trouble is not None:
            self.notes[name].append(f"return {at} starts over: {trouble}")
            return memory if memory.step_since == now else replace(memory, step_since=now)
        if self.pause is not None:
            # Paused time is no healthy time seen: the step's clock stops with the rest.
            gap = now - self.prev.last_round if self.prev.last_round > NEVER else 0.0
            self.notes[name].append(f"return {at}: paused (the step's clock stops)")
            return replace(memory, step_since=memory.step_since + gap) if gap else memory
        healthy = now - memory.step_since
        if healthy < policy.return_step or self.ev.endtoend[name].verdict is not Verdict.OK:
            self.notes[name].append(
                f"returning: {at}, healthy for {healthy:.0f}s of {policy.return_step:g}s"
            )
            return memory
        reading = None if self.canary is None else self.canary.get(name)
        if reading is not None:
            # A load balancer counts this site: the step goes up only on a count that
            # reaches its end (a step shorter than two readings, or one judged on a
            # reading from before its end, would pass on the probes alone), and never
            # while a socket cannot be read (its share of the traffic would go unseen).
            end = memory.step_since + policy.return_step
            if reading.unread:
                self.notes[name].append(f"returning: {at}: waiting for the canary to be read")
                return memory
            if memory.step_counted is None or memory.step_read_at < end:
                self.notes[name].append(f"returning: {at}: waiting for the canary's count")
                return memory
        up = next((p for p in policy.return_steps if p > percent), 100)
        number, weight = step_number(policy, up), step_weight(spec, up)
        done = "; the return is complete" if up >= 100 else ""
        self.steps.append(
            ReturnStep(
                name,
                number,
                up,
                weight,
                (
                    f"healthy for {healthy:.0f}s at {at}: up to step {number} of {of} "
                    f"(weight {weight}){done}",
                ),
            )
        )
        if up >= 100:
            return _returned(memory)
        # The step's last reading is the next step's base: what is served from it on is
        # counted there, so no response between two steps goes unjudged.
        return replace(memory, returning=up, step_since=now, step_counted=None)

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

    def grace_over(self, spec: SiteSpec, memory: SiteMemory) -> bool:
        """A draining site is drained `shutdown_grace` after its traffic was confirmed
        off (the runtime's read-back, `traffic_off`); without that input, after the drain."""
        if self.traffic_off is None:
            start = memory.since
        else:
            confirmed = self.traffic_off.get(spec.name)
            if confirmed is None:
                return False
            start = max(confirmed, memory.since)
        return self.now - start >= self.policy.shutdown_grace

    def stop_confirmed(self, spec: SiteSpec) -> bool:
        """Whether a drained site's instances may stop: its traffic confirmed off at least
        `shutdown_grace` ago. A drain that stops them only later (a cause stacked on a
        maintenance drain, `--stop-instances` on a drained site) needs a confirmation as
        fresh as the drain's; without the input, always."""
        if self.traffic_off is None:
            return True
        confirmed = self.traffic_off.get(spec.name)
        return confirmed is not None and self.now - confirmed >= self.policy.shutdown_grace

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
        manual: bool = False,
    ) -> SiteMemory:
        if automatic and self.pause is not None:
            # Pause means no automatic transition at all: the site stays as it is.
            return self.refuse(spec, memory, "paused", reasons)
        first = self.policy.return_steps[0]
        if to is State.ACTIVE and first < 100:
            # A site that comes back takes the first return step's share of its weight.
            weight, of = step_weight(spec, first), len(self.policy.return_steps)
            entered = f"returning in steps: step 1 of {of} (weight {weight})"
            reasons = [*reasons, entered]
            self.steps.append(ReturnStep(spec.name, 1, first, weight, (entered,)))
        self.transitions.append(
            Transition(spec.name, memory.state, to, cause, tuple(reasons), automatic)
        )
        if not spec.observe:
            self.active += (to is State.ACTIVE) - (memory.state is State.ACTIVE)
        new = replace(memory, state=to, cause=cause, since=self.now, refused=None)
        if to is State.ACTIVE:
            new = replace(
                new,
                active_since=self.now,
                cause=None,
                stop_instances=False,
                manual=False,
                returning=first if first < 100 else 0,
                step_since=self.now,
                step_responses=None,
                step_read_at=self.now,
                step_counted=None,
            )
        elif memory.returning or memory.step_read_at > NEVER:
            new = _returned(new)
        if to is State.DRAINING and memory.state in (State.ACTIVE, State.RESTORING):
            new = replace(new, drained_at=self.now, stop_instances=stop_instances, manual=manual)
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
            or memory.returning
            or memory.refused is not None
            or self.ev.abstaining
            or self.global_storage
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
            if memory.returning:
                number = step_number(policy, memory.returning)
                weight = step_weight(spec, memory.returning)
                of = len(policy.return_steps)
                why.append(f"the return ends at step {number} of {of} (weight {weight})")
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
                    manual=True,
                )
            # Causes stack: a manual drain on a site already out for an automatic cause
            # keeps that cause (and its effects: the strongest cause present wins); an
            # automatic cause found while manually drained is stacked the same way.
            strongest = memory.cause if memory.cause is not Cause.MANUAL else cause
            memory = replace(
                memory,
                cause=strongest or Cause.MANUAL,
                manual=True,
                stop_instances=override.stop_instances,
            )
            if state is State.DRAINING and self.grace_over(spec, memory):
                return self.move(
                    spec,
                    memory,
                    State.DRAINED,
                    memory.cause,
                    [*why, "shutdown grace over"],
                    automatic=False,
                )
            return memory if memory.refused is None else replace(memory, refused=None)

        held = override is not None and override.kind == "hold"
        if memory.manual and not held and state in (State.DRAINING, State.DRAINED):
            # The manual drain was lifted (undrain, expiry): an automatic cause stacked
            # under it, or found now, keeps the site out with its own end conditions.
            if memory.cause is Cause.MANUAL and cause is not None:
                memory = replace(memory, cause=cause)
            if memory.cause is not Cause.MANUAL:
                memory = replace(memory, manual=False, stop_instances=False, refused=None)
        if state is State.ACTIVE and memory.returning:
            return self.returning(spec, memory, cause, notes, held)
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
            cleared = self.own_cause_cleared(spec, memory)
            if cleared is not None and cause is None:
                return self.move(spec, memory, State.ACTIVE, None, [cleared], automatic=True)
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
            return memory if memory.refused is None else replace(memory, refused=None)

        # draining or drained
        if memory.cause is Cause.MANUAL or held:
            # Undrained, expired, or pinned by a hold: back to automatic control.
            if cause is not None and not held:
                return replace(memory, cause=cause, stop_instances=False, refused=None)
            ended = "hold: pinned active by an operator" if held else "manual drain ended"
            return self.move(
                spec,
                replace(memory, manual=False),
                State.RESTORING,
                memory.cause,
                [ended],
                automatic=False,
            )
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
        if state is State.DRAINING and self.grace_over(spec, memory):
            return self.move(
                spec, memory, State.DRAINED, memory.cause, ["shutdown grace over"], automatic=True
            )
        return memory if memory.refused is None else replace(memory, refused=None)


def _instances_stopped(memory: SiteMemory) -> bool:
    """Whether this drain stops the site's instances (docs/design.md's cause table): the
    strongest cause present decides, a stacked manual drain adds its own choice."""
    return memory.cause is Cause.STORAGE or (
        (memory.manual or memory.cause is Cause.MANUAL) and memory.stop_instances
    )


stops_instances = _instances_stopped  # the runtime's name for it (shutdown_blocked)


_STOPPED_CHECKS = frozenset({"instance", "registry"})


def _site_decision(
    spec: SiteSpec,
    memory: SiteMemory,
    notes: list[str],
    policy: EnginePolicy,
    *,
    confirmed: bool = True,
) -> SiteDecision:
    stopped = memory.state is State.DRAINED and _instances_stopped(memory) and confirmed
    if memory.manual and memory.cause is not Cause.MANUAL and memory.state is not State.ACTIVE:
        notes = [*notes, f"manual drain stacked on the automatic cause {memory.cause}"]
    returning = memory.returning if memory.state is State.ACTIVE else 0
    return SiteDecision(
        site=spec.name,
        state=memory.state,
        cause=memory.cause,
        weight=site_weight(spec, memory),
        instances="stopped" if stopped else "running",
        actuate=not spec.observe,
        would_drain=spec.observe and memory.state is not State.ACTIVE,
        reasons=tuple(notes),
        return_step=step_number(policy, returning) if returning else None,
        return_percent=returning or None,
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
    wall: float | None = None,
    traffic_off: Mapping[str, float] | None = None,
    canary: Mapping[str, CanaryReading] | None = None,
) -> Decision:
    """One round: from the previous state and the latest observations to the next state.

    `now` is a monotonic clock (seconds): every duration and every observation's `t` is
    measured on it. `wall` (default: `now`) is the wall clock, used only for the
    absolute expiries an operator gave (`Override.expires`): a wall-clock step changes
    no decision.

    `restore_blocks` names storage locations that pass their probes but may not take a
    storage-drained site back yet (the restore gate: sampled blobs are missing there),
    with the reason; such a site stays out and says why.

    `traffic_off` is a fact the runtime read back from the traffic backends: when (on
    `now`'s clock) every traffic target confirmed each draining site's traffic off. A
    draining site becomes drained (instances may stop) only `shutdown_grace` after that;
    a site missing from it stays draining. Without it (None) the grace counts from the
    drain itself.

    `canary` is the live traffic's HTTP responses per site, as the load balancer counts
    them (cumulative per counter, stamped with when they were read; `CanaryReading`).
    While a site returns in steps (policy.return_steps),
    a step whose 5xx share is above policy.return_max_error_ratio over at least
    policy.return_min_requests responses abandons the return. None (no load balancer)
    or a site missing from it: only the probes decide."""
    stopped = stopped_sites(previous, policy)
    evidence = gather(
        latest,
        policy,
        now,
        previous.last_round,
        stopped,
        previous.unreachable,
        previous.waiting,
    )
    rnd = _Round(
        previous,
        evidence,
        policy,
        overrides,
        pause,
        now,
        restore_blocks or {},
        now if wall is None else wall,
        stopped,
        traffic_off,
        canary,
    )
    for spec in policy.sites:
        rnd.sites[spec.name] = rnd.step(spec)
    sites = {}
    for spec in policy.sites:
        memory, notes = rnd.sites[spec.name], rnd.notes[spec.name]
        cached = previous.decisions.get(spec.name)
        unchanged = memory is previous.sites.get(spec.name) and not notes
        confirmed = memory.state is not State.DRAINED or rnd.stop_confirmed(spec)
        if (
            unchanged
            and cached is not None
            and not cached.reasons
            and cached.actuate is not spec.observe  # a reload may change the spec
            and not memory.returning  # a reload may change the steps
            and cached.weight == site_weight(spec, memory)
            and confirmed  # else the confirmation may have changed the instances
        ):
            sites[spec.name] = cached
        else:
            sites[spec.name] = _site_decision(spec, memory, notes, policy, confirmed=confirmed)
    state = EngineState(
        sites=dict(rnd.sites),
        locations=rnd.locations,
        drains=rnd.drains,
        last_round=now,
        unreachable=evidence.unreachable,
        waiting=evidence.waiting,
        decisions=sites,
    )
    return Decision(
        state=state,
        sites=sites,
        transitions=tuple(rnd.transitions),
        refusals=tuple(rnd.refusals),
        evidence=evidence,
        steps=tuple(rnd.steps),
    )


def trial_drain(
    previous: EngineState,
    latest: Latest,
    policy: EnginePolicy,
    overrides: Mapping[str, Override],
    pause: Pause | None,
    now: float,
    site: str,
    override: Override,
    *,
    restore_blocks: Mapping[str, str] | None = None,
    wall: float | None = None,
) -> Refusal | None:
    """Would this manual drain be refused? The answer does not depend on whether the
    site already carries the same refusal (a refusal is reported once per round it
    starts, but a trial must see it every time)."""
    memory = previous.site(site)
    trial = replace(previous, sites={**previous.sites, site: replace(memory, refused=None)})
    result = decide(
        trial,
        latest,
        policy,
        {**overrides, site: override},
        pause,
        now,
        restore_blocks=restore_blocks,
        wall=wall,
    )
    return next((r for r in result.refusals if r.site == site), None)
