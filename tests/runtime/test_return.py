"""A gradual return through the runtime, on a fake clock: each step reaches the load
balancer in the round it is decided (every reconcile loop woken, not at the next
resync), is audited as a `return_step` event, and the canary the runtime reads from a
response-counting load balancer abandons the return.

The engine's own rules for the steps are tested in tests/engine/test_return.py; here
the parts around it: the canary read (`Actuation.read_canary`), passed through
`Leader.tick` to the round, and the effects of a step.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime import test_runtime as runtime
from tests.runtime.fakes import CountingActuator
from trafficd.model import CanaryReading, Cause, Decision, Responses, State
from trafficd.store import read_events

STEP = 10.0  # policy.return_step below
POLICY = (
    "policy: {fall: 2, rise: 2, hold_down: 0s, min_active_sites: 1, "
    "return_steps: [10, 50, 100], return_step: 10s, "
    "return_max_error_ratio: 0.05, return_min_requests: 100}"
)


class Rig(runtime.Rig):
    lb: CountingActuator

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, policy=POLICY, lb=CountingActuator("lb", "traffic"))

    def woken(self) -> bool:
        """Every reconcile loop was woken by the last round."""
        wakeups = self.runtime.effects.wakeups.values()
        return bool(wakeups) and all(w.is_set() for w in wakeups)

    async def reach(self, check: Any, *, within: int, step: float = 1.0) -> Decision:
        for _ in range(within):
            decision = await self.interval(step)
            if check(decision):
                return decision
        raise AssertionError(f"not reached within {within} intervals")

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in read_events(self.runtime.store.dir) if e["kind"] == kind]

    async def drain_and_heal(self) -> Decision:
        """eu's storage fails, eu is drained and stopped, its storage comes back: eu is
        active again at its first step."""
        await self.interval()
        self.prober.down = {"eustorage"}
        await self.reach(lambda d: d.sites["eu"].state is State.DRAINED, within=20, step=10.0)
        self.prober.down = set()
        return await self.reach(lambda d: d.sites["eu"].state is State.ACTIVE, within=10)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.runtime.store.close()


async def test_each_step_reaches_the_load_balancer_in_its_round_and_is_audited(rig: Rig) -> None:
    decision = await rig.drain_and_heal()
    assert decision.sites["eu"].return_step == 1 and rig.lb.held["eu"] == 10
    steps = []
    while decision.sites["eu"].return_step is not None:
        decision = await rig.interval()
        if decision.steps:
            assert rig.woken(), "a step's round woke every reconcile loop"
            steps.append(rig.lb.held["eu"])  # applied in the same round
    assert steps == [50, 100]
    assert rig.lb.applied == ["eu 0", "eu 10", "eu 50", "eu 100"]
    events = rig.events("return_step")
    assert [(e["site"], e["step"], e["percent"], e["weight"]) for e in events] == [
        ("eu", 1, 10, 10),
        ("eu", 2, 50, 50),
        ("eu", 3, 100, 100),
    ]
    assert [b["t"] - a["t"] for a, b in itertools.pairwise(events)] == [STEP, STEP]
    assert all(e["reasons"] and e["vantage"] == "test" for e in events)


async def test_the_canary_read_from_the_load_balancer_abandons_the_return(rig: Rig) -> None:
    rig.lb.counts = {"eu": (5000, 10), "us": (9000, 0)}  # before the return: not counted
    decision = await rig.drain_and_heal()
    assert decision.sites["eu"].return_step == 1
    await rig.interval()  # the step's first reading: its base
    rig.lb.counts = {"eu": (5000 + 200, 10 + 30), "us": (9900, 0)}
    decision = await rig.reach(lambda d: d.sites["eu"].state is not State.ACTIVE, within=3)
    eu = decision.sites["eu"]
    assert eu.state is State.DRAINING and eu.cause is Cause.CANARY
    assert rig.lb.held["eu"] == 0
    why = rig.events("transition")[-1]
    assert why["to"] == "draining" and why["cause"] == "canary"
    assert any("30 of 200 responses 5xx" in r for r in why["reasons"]), why["reasons"]
    assert any("step 1 of 3 (weight 10)" in r for r in why["reasons"]), why["reasons"]
    assert decision.sites["us"].weight == 100


async def test_an_unreadable_canary_holds_the_step_and_what_it_hid_is_judged_later(
    rig: Rig,
) -> None:
    """Issue 21 review: an unread socket left the site out of the readings, and its
    steps went up on the probes alone while all its responses were 5xx."""
    rig.lb.counts = {"eu": (0, 0)}
    decision = await rig.drain_and_heal()
    rig.lb.unreadable = {"eu"}  # one socket of the load balancer does not answer
    rig.lb.counts = {"eu": (1000, 1000)}
    for _ in range(3 * int(STEP)):
        decision = await rig.interval()
        assert decision.sites["eu"].return_step == 1 and rig.lb.held["eu"] == 10
    assert rig.runtime.actuation.readings["eu"].unread == ("lb",)
    assert any("waiting for the canary to be read" in r for r in decision.sites["eu"].reasons)
    rig.lb.unreadable = set()
    await rig.interval()  # the step's base at last: what it hid was before
    rig.lb.counts = {"eu": (1200, 1100)}
    decision = await rig.reach(lambda d: d.sites["eu"].state is not State.ACTIVE, within=3)
    assert decision.sites["eu"].cause is Cause.CANARY


async def test_no_canary_is_read_while_no_site_returns(rig: Rig) -> None:
    rig.lb.counts = {"eu": (0, 0)}
    await rig.interval()
    assert rig.runtime.actuation.canary.responses == {}
    await rig.drain_and_heal()
    rig.lb.counts = {"eu": (7, 1)}
    await rig.interval()  # eu returns: the canary is read
    assert rig.runtime.actuation.canary.responses == {"eu": {"lb": Responses(7, 1)}}
    assert rig.runtime.actuation.readings == {
        "eu": CanaryReading(rig.clock.engine.now(), {"lb": Responses(7, 1)})
    }
    await rig.reach(lambda d: d.sites["eu"].return_step is None, within=40)
    await rig.interval()
    assert rig.runtime.actuation.canary.responses == {}  # the return is over
    assert rig.runtime.actuation.readings == {}


async def test_a_step_asks_for_the_canary_at_once_and_counts_from_its_first_reading(
    rig: Rig,
) -> None:
    """The round that begins a step wakes the canary loop (the step's base is read as
    it begins, not up to an interval later), and each reading is stamped: the engine
    counts in a step only readings taken after it began (issue 21 review)."""
    rig.lb.counts = {"eu": (1000, 0)}
    decision = await rig.drain_and_heal()
    assert decision.steps and rig.runtime.effects.canary_due.is_set()
    assert rig.runtime.actuation.readings == {}  # read before the round began the step
    began = rig.clock.engine.now()
    rig.lb.counts = {"eu": (1100, 60)}  # the step's base: what came before is not counted
    await rig.interval()
    assert rig.runtime.actuation.readings["eu"].at > began
    memory = rig.runtime.rounds.engine.site("eu")
    assert memory.step_responses == {"lb": Responses(1100, 60)} and memory.step_counted is None
    rig.lb.counts = {"eu": (1200, 61)}
    decision = await rig.interval()
    assert decision.sites["eu"].state is State.ACTIVE
    assert rig.runtime.rounds.engine.site("eu").step_counted == Responses(100, 1)
