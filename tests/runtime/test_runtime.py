"""The runtime on a fake clock: a scripted prober, recording actuators, the real parts.

Each interval the test moves the clock, hands every probe's answer to the runtime
(`observe`), runs a round (`Leader.tick`, the one place rounds run) and one pass of
every target's reconcile loop (`Actuation.reconcile`): what the engine decides, what
the actuators are asked to change, what the audit log says and when, with every
duration on the fake monotonic clock and expiries on its wall clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.fakes import T0, FakeClock, RecordingActuator, ScriptedProber
from tests.test_api import write_config
from trafficd.config import load
from trafficd.model import Cause, Decision, EngineState, Override, SiteMemory, State
from trafficd.runtime.commands import Command
from trafficd.runtime.wiring import Runtime
from trafficd.store import Store, read_events

GRACE = 60.0  # policy.shutdown_grace's default


class Rig:
    """`policy`: the configuration's `policy:` line in its place; `lb`: the traffic
    actuator (a recording one unless given)."""

    def __init__(
        self, tmp: Path, *, policy: str | None = None, lb: RecordingActuator | None = None
    ) -> None:
        path = write_config(tmp)
        if policy is not None:
            lines = path.read_text().split("\n")
            path.write_text("\n".join(policy if x.startswith("policy:") else x for x in lines))
        config = load(path)
        self.clock = FakeClock()
        self.runtime = Runtime.open(config, path, clock=self.clock.engine)
        self.prober = ScriptedProber(self.clock, config)
        self.lb = lb or RecordingActuator("lb", "traffic")
        self.instances = RecordingActuator("sites", "instances")
        self.runtime.actuation.build([self.lb, self.instances])  # their loops are not run

    async def interval(self, seconds: float = 1.0) -> Decision:
        """One interval: every probe answers, the canary loop's one pass, a round (the
        reconcile loops' wakes cleared before it, to see what it wakes), one pass of
        every target's loop."""
        self.clock.advance(seconds)
        for task in self.prober.tasks():
            self.runtime.observe(await task.run())
        await self.runtime.actuation.read_canary()
        for wake in self.runtime.effects.wakeups.values():
            wake.clear()
        decision = self.runtime.leader.tick()
        for rec in self.runtime.actuation.targets:
            await self.runtime.actuation.reconcile(rec)
        return decision

    async def until(self, site: str, state: State, *, within: int, step: float = 1.0) -> float:
        """Intervals until `site` is in `state`; the engine time it got there."""
        for _ in range(within):
            if (await self.interval(step)).sites[site].state is state:
                return self.clock.engine.now()
        raise AssertionError(f"{site} not {state.value} within {within} intervals")

    def transitions(self, site: str) -> list[tuple[str, float]]:
        events = read_events(self.runtime.store.dir)
        return [
            (e["to"], e["t"]) for e in events if e["kind"] == "transition" and e["site"] == site
        ]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.runtime.store.close()


async def test_a_storage_failure_drains_stops_and_restores_the_site(rig: Rig) -> None:
    await rig.interval()
    assert rig.lb.applied == [] and rig.instances.applied == []  # all as configured
    rig.prober.down = {"eustorage"}
    drained_at = await rig.until("eu", State.DRAINING, within=3)
    assert rig.lb.applied == ["eu 0"]  # traffic first, read back at once: confirmed off
    assert rig.runtime.actuation.confirmation.traffic_off == {"eu": drained_at}
    assert rig.instances.applied == []  # instances keep running through the grace
    stopped_at = await rig.until("eu", State.DRAINED, within=10, step=10.0)
    assert stopped_at - drained_at == GRACE
    assert rig.instances.applied == ["eu stopped"]

    rig.prober.down = set()
    await rig.until("eu", State.RESTORING, within=3)
    assert rig.instances.applied == ["eu stopped", "eu running"]  # instances first
    assert rig.lb.applied == ["eu 0"]  # no traffic until its endtoend answers healthy
    await rig.until("eu", State.ACTIVE, within=3)
    assert rig.lb.applied == ["eu 0", "eu 100"]
    assert [to for to, _ in rig.transitions("eu")] == ["draining", "drained", "restoring", "active"]
    assert rig.transitions("eu")[1][1] == stopped_at  # audited at the round's engine time
    assert rig.runtime.views.verdict("eu") == (True, "active")


async def test_a_wall_clock_step_during_the_grace_changes_no_duration(rig: Rig) -> None:
    await rig.interval()
    rig.prober.down = {"eustorage"}
    drained_at = await rig.until("eu", State.DRAINING, within=3)
    await rig.interval(10)
    rig.clock.step(-1800)  # the wall clock steps back half an hour
    await rig.interval(10)
    rig.clock.step(+3600)  # and forward an hour
    stopped_at = await rig.until("eu", State.DRAINED, within=10, step=10.0)
    assert stopped_at - drained_at == GRACE
    assert rig.runtime.rounds.engine.site("eu").since == stopped_at


async def test_an_operators_expiry_runs_on_wall_time(rig: Rig) -> None:
    await rig.interval()
    command = Command.parse("drain", "eu", "ops", {"reason": "window", "for": "30s"})
    answer = await rig.runtime.commands.execute(command)
    assert answer["state"] == "draining" and rig.lb.applied == []  # the loops act next
    await rig.interval()
    assert rig.lb.applied == ["eu 0"]
    override = rig.runtime.rounds.overrides["eu"]
    assert override.expires == override.at + 30 == rig.clock.wall() - 1 + 30
    rig.clock.step(+30)  # 30 s of wall time pass in 1 s of monotonic time (a resumed VM)
    await rig.interval()
    assert rig.runtime.rounds.overrides == {}
    expired = [e for e in read_events(rig.runtime.store.dir) if e.get("action") == "expired"]
    assert [(e["site"], e["who"], e["reason"]) for e in expired] == [("eu", "ops", "window")]


async def test_a_hands_off_pause_touches_no_backend(rig: Rig) -> None:
    await rig.interval()
    command = Command.parse("pause", None, "ops", {"reason": "backup", "hands_off": True})
    await rig.runtime.commands.execute(command)
    rig.prober.down = {"eustorage", "eu"}
    for _ in range(5):
        decision = await rig.interval()
    assert decision.sites["eu"].state is State.ACTIVE  # frozen: no automatic transition
    assert rig.lb.applied == [] and rig.instances.applied == []
    value = rig.runtime.metrics.registry.get_sample_value("trafficd_paused")
    assert value == 1


async def test_before_the_first_round_the_saved_state_answers(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    store = Store(tmp_path / "state")
    eu = SiteMemory(State.DRAINED, Cause.MANUAL, since=T0 - 3600, drained_at=T0 - 3600)
    drain: dict[str, Any] = {"eu": Override("drain", "maintenance", "ops", T0 - 3600)}
    store.save(EngineState(sites={"eu": eu}, last_round=T0 - 60), drain, None, {})
    store.close()
    rig = Rig(tmp_path)
    try:
        views = rig.runtime.views
        assert views.verdict("eu") == (False, "drained")
        assert views.verdict("us") == (False, "unknown")  # not in the saved state
        assert not rig.runtime.ready
        await rig.interval(0.5)
        assert views.verdict("us") == (True, "active") and not rig.runtime.ready
        await rig.interval(0.5)  # one interval since the start: every probe had its chance
        assert rig.runtime.ready and views.verdict("eu") == (False, "drained")
    finally:
        rig.runtime.store.close()


async def test_a_clock_behind_the_saved_state_resumes_from_it(tmp_path: Path) -> None:
    """A restart with the wall clock stepped back while the process was down: the engine
    goes on from the saved state's last round, never backwards."""
    (tmp_path / "state").mkdir()
    store = Store(tmp_path / "state")
    store.save(EngineState(last_round=T0 + 3600), {}, None, {})
    store.close()
    rig = Rig(tmp_path)
    try:
        assert rig.clock.engine.now() == T0 + 3600
        decision = await rig.interval()
        assert decision.state.last_round == T0 + 3601
    finally:
        rig.runtime.store.close()
