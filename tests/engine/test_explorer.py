"""The scenario explorer: compound fault histories (hypothesis stateful testing) checked
against the invariants of issue 17 after every round.

2-4 sites with shared and distinct preference lists, 1-3 vantages, v3.17 and v3.18,
debug text or not, storage and instance probes at their own intervals. Rules start
and end faults (`explorer.FAULTS`), give operators' commands, step the wall clock of
one engine and restart another; `advance` runs rounds and checks the invariants
(`explorer.check`) and that the three engines decide alike (invariants 8 and 9).
Every counterexample found so far is a named timeline under `timelines/`.

`ReturnExplorer` runs such histories with the gradual return of issue 21: ramped
`policy.return_steps`, live traffic through a load balancer whose 5xx the canary
reads, and a rule that starts `errors_5xx` (a site answering half of it 5xx while
its probes pass). The return's invariants (10-12 in `explorer.check`) hold in the
histories of both. It is a machine of its own, leaving `Explorer`'s source as it
was: hypothesis derives a machine's derandomized histories from its source.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.engine.explorer import (
    ERRORS_5XX,
    FAULTS,
    Engine,
    Fault,
    History,
    Truth,
    check,
    make_policy,
    signature,
)
from trafficd.engine.decide import stopped_sites
from trafficd.model import State

# CI (.ci/run sets the counts): >= 2,000 histories in about a minute, derandomized by
# the test-wide profile; the fast tier's edit-test loop runs the first 200 of them.
HISTORIES = int(os.environ.get("TRAFFICD_EXPLORER_HISTORIES", "200"))
COVERED: set[frozenset[str]] = set()  # fault combinations seen, for bench/explore.py
HISTORY_COUNT: list[int] = []  # one entry per history run


class Explorer(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.r = 0
        self.problems: list[str] = []
        self.kinds: set[str] = set()

    @initialize(data=st.data())
    def world(self, data: st.DataObject) -> None:
        n = data.draw(st.integers(2, 4), label="sites")
        names = ["a", "b", "c", "d"][:n]
        shared = data.draw(st.booleans(), label="shared preference lists")
        sites: dict[str, tuple[str, ...]] = {}
        for i, name in enumerate(names):
            own, other = f"l{name}", f"l{names[(i + 1) % n]}"
            sites[name] = (own, other) if shared else (own,)
        vantages = tuple(f"v{i}" for i in range(data.draw(st.integers(1, 3), label="vantages")))
        # Storage probes slower than rounds report in the same round, or each vantage's in
        # its own (Truth.phase).
        staggered = data.draw(st.booleans(), label="vantages' storage probes staggered")
        self.truth = Truth(
            sites=sites,
            vantages=vantages,
            v318=data.draw(st.booleans(), label="v3.18"),
            debug=data.draw(st.booleans(), label="debug"),
            storage_every=data.draw(st.sampled_from([1, 1, 2, 3]), label="storage every"),
            instance_every=data.draw(st.sampled_from([1, 1, 2]), label="instance every"),
            phase={v: i for i, v in enumerate(vantages)} if staggered else {},
        )
        self.policy = make_policy(
            self.truth,
            fall=data.draw(st.integers(1, 3), label="fall"),
            rise=data.draw(st.integers(1, 3), label="rise"),
            min_active_sites=data.draw(st.integers(0, n - 1), label="min_active_sites"),
            max_drains=data.draw(st.integers(1, 3), label="max_drains"),
            drain_window=float(data.draw(st.integers(5, 60), label="drain_window")),
            hold_down=float(data.draw(st.sampled_from([0, 0, 3, 10]), label="hold_down")),
            shutdown_grace=float(data.draw(st.integers(0, 3), label="shutdown_grace")),
            restore_timeout=float(data.draw(st.integers(3, 20), label="restore_timeout")),
        )
        # `disturbed` gets the wall-clock steps and the restarts; `base` neither.
        self.engines = {k: Engine(self.policy, 1000.0) for k in ("base", "disturbed")}
        self.disturbed: list[str] = []  # what `disturbed` went through, for the report
        self.history = History()

    # --- faults -----------------------------------------------------------------

    @rule(data=st.data())
    def fault_starts(self, data: st.DataObject) -> None:
        t = self.truth
        kind = data.draw(st.sampled_from(FAULTS), label="fault")
        site = data.draw(st.sampled_from(sorted(t.sites)), label="site")
        loc = data.draw(st.sampled_from(t.locations), label="location")
        vantage = data.draw(st.sampled_from(t.vantages), label="vantage")
        reason = data.draw(st.sampled_from(["timeout", "refused"]), label="cut shows as")
        if kind in ("location_dead", "location_flap"):
            fault = Fault(kind, loc)
        elif kind == "cut_location":
            fault = Fault(kind, loc, vantage, reason)
        elif kind == "cut_site":
            fault = Fault(kind, site, vantage, reason)
        elif kind in ("instances_down", "database_cut"):
            fault = Fault(kind, site)
        else:
            fault = Fault(kind)
        self._start(fault)

    @rule(data=st.data())
    def cut_then_kill(self, data: st.DataObject) -> None:
        """A bias: vantages cut from one site's first location, some rounds later (while
        the sites' Quay still shows it healthy, or at once) the next sites' first
        locations die, around the ring of preference lists. Every location then fails
        from the cut vantages, yet only the dead ones' sites fail on their own; drawn
        uniformly, such histories are too rare to be found."""
        t = self.truth
        names = sorted(t.sites)
        start = data.draw(st.integers(0, len(names) - 1), label="ring starts at")
        kills = data.draw(st.integers(1, len(names) - 1), label="ring kills")
        cut = data.draw(
            st.lists(st.sampled_from(t.vantages), min_size=1, unique=True), label="cut vantages"
        )
        reason = data.draw(st.sampled_from(["timeout", "refused"]), label="cut shows as")
        first = t.sites[names[start]][0]
        for v in sorted(cut):
            self._start(Fault("cut_location", first, v, reason))
        for i in range(1, kills + 1):
            self.advance(data.draw(st.integers(0, 3), label="rounds before the next death"))
            self._start(Fault("location_dead", t.sites[names[(start + i) % len(names)]][0]))

    def _start(self, fault: Fault) -> None:
        if fault not in self.truth.faults:
            self.truth.faults.append(fault)
            self.kinds.add(fault.kind)

    @precondition(lambda self: bool(self.truth.faults))
    @rule(data=st.data())
    def fault_ends(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.truth.faults) - 1), label="ends")
        self.truth.faults.pop(i)

    # --- operators, clocks, restarts -------------------------------------------------

    @rule(
        kind=st.sampled_from(["drain", "undrain", "hold", "release", "pause", "resume"]),
        data=st.data(),
    )
    def command(self, kind: str, data: st.DataObject) -> None:
        site = data.draw(st.sampled_from(sorted(self.truth.sites)), label="command site")
        # A drain with --stop-instances: a site trafficd stopped itself, in the evidence
        # of the other sites' failures (as a storage drain's stopped site is).
        stop = kind == "drain" and data.draw(st.booleans(), label="--stop-instances")
        answers = {name: e.command(kind, site, stop) for name, e in self.engines.items()}
        assert len(set(answers.values())) == 1, answers  # 8, 9: the trials agree
        self.kinds.add(kind)

    @rule(step=st.sampled_from([-3600.0, -1800.0, 0.0, 1800.0, 3600.0]))
    def disturb(self, step: float) -> None:
        """A wall-clock step for one engine (0: a restart of another instead)."""
        if step:
            self.engines["disturbed"].step += step
            self.kinds.add("wall_step")
        else:
            self.engines["disturbed"].restart()
            self.kinds.add("restart")
        what = f"wall step {step:+g} s" if step else "restart"
        self.disturbed.append(f"round {self.r}: {what}")

    @rule(n=st.integers(2, 6))
    def advance(self, n: int) -> None:
        for _ in range(n):
            base = self.engines["base"]
            before = sum(1 for s in self.truth.sites if base.state.site(s).state is State.ACTIVE)
            stopped = set(stopped_sites(base.state, self.policy))
            decisions = {name: e.round(self.truth, self.r) for name, e in self.engines.items()}
            d = decisions["base"]
            # 8 and 9: wall-clock steps and restarts change no decision.
            assert signature(decisions["disturbed"]) == signature(d), (
                f"8/9: round {self.r} differs after {self.disturbed}"
            )
            self.problems += check(
                self.truth, self.policy, base, d, self.history, self.r, before, stopped
            )
            self.r += 1

    @invariant()
    def no_violation(self) -> None:
        assert not self.problems, self.problems

    def teardown(self) -> None:
        COVERED.add(frozenset(self.kinds))
        HISTORY_COUNT.append(self.r)


Explorer.TestCase.settings = settings(
    max_examples=HISTORIES,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    # bench/explore.py searches without shrinking (TRAFFICD_EXPLORER_SHRINK=0).
    phases=tuple(Phase)
    if os.environ.get("TRAFFICD_EXPLORER_SHRINK", "1") == "1"
    else tuple(p for p in Phase if p not in (Phase.shrink, Phase.explain)),
    report_multiple_bugs=False,
)
# pytest's 120 s default is for one test of I/O; this one runs 2,000 histories.
TestExplorer = pytest.mark.timeout(600)(Explorer.TestCase)

# The gradual return: fewer, longer histories (a site must drain and come back first).
RETURN_HISTORIES = int(os.environ.get("TRAFFICD_RETURN_EXPLORER_HISTORIES", "50"))


class ReturnExplorer(Explorer):
    @initialize(data=st.data())
    def world(self, data: st.DataObject) -> None:
        super().world(data)
        steps = data.draw(st.sampled_from([(10, 50, 100), (1, 100), (50, 100)]), label="steps")
        self.policy = replace(
            self.policy,
            return_steps=steps,
            return_step=float(data.draw(st.integers(1, 4), label="return_step")),
        )
        self.engines = {k: Engine(self.policy, 1000.0) for k in ("base", "disturbed")}

    @rule(data=st.data())
    def errors_start(self, data: st.DataObject) -> None:
        """Live traffic through a site gets 5xx; its probes pass (the canary's fault)."""
        fault = Fault(ERRORS_5XX, data.draw(st.sampled_from(sorted(self.truth.sites))))
        if fault not in self.truth.faults:
            self.truth.faults.append(fault)
            self.kinds.add(ERRORS_5XX)


ReturnExplorer.TestCase.settings = settings(
    Explorer.TestCase.settings, max_examples=RETURN_HISTORIES, stateful_step_count=50
)
TestReturnExplorer = pytest.mark.timeout(600)(ReturnExplorer.TestCase)
