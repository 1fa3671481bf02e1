"""The leader's coordinated round (trafficd/runtime/leader.py) against a shared store
in memory (tests/runtime/fakes.MemoryStore; the real stores are tested in
tests/coordination/): what it takes from the store never undoes a command this
instance took while the round awaited its reads (issue 19 review)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.fakes import MemoryStore
from tests.runtime.test_runtime import Rig
from trafficd.config import load
from trafficd.coordination import Coordinator
from trafficd.model import State
from trafficd.runtime.commands import Command
from trafficd.runtime.wiring import ReloadError
from trafficd.store import read_events


def coordinated(rig: Rig) -> MemoryStore:
    store = MemoryStore()
    clock = rig.clock.engine
    rig.runtime.live.coord = Coordinator(
        rig.runtime.live.config, store, clock=clock.wall, monotonic=clock.now
    )
    return store


async def test_a_drain_taken_by_the_leader_during_its_round_is_not_dropped(
    tmp_path: Path,
) -> None:
    """The round read the overrides (none); a drain through the same instance is taken
    and decided while the round awaits the generation; the round then took what it had
    read: the drain was dropped (draining -> restoring) with no event, and back in the
    next round."""
    rig = Rig(tmp_path)
    store = coordinated(rig)
    try:
        await rig.interval()
        await rig.runtime.leader.coordinated_round()  # leads; the generation written
        assert rig.runtime.live.leads()
        store.gate = "get:generation"  # the round's generation read waits
        round_task = asyncio.create_task(rig.runtime.leader.coordinated_round())
        await store.reached.wait()
        answer = await rig.runtime.commands.execute(
            Command.parse("drain", "eu", "ops", {"reason": "maintenance", "force": True})
        )
        assert answer["state"] == "draining"
        store.release.set()
        await round_task
        assert "eu" in rig.runtime.rounds.overrides
        decision = rig.runtime.rounds.decision
        assert decision is not None and decision.sites["eu"].state is State.DRAINING
        await rig.runtime.leader.coordinated_round()  # the next round reads it, as kept
        assert rig.runtime.rounds.overrides["eu"].reason == "maintenance"
    finally:
        rig.runtime.store.close()


async def test_a_command_is_taken_while_an_older_trafficd_leads(tmp_path: Path) -> None:
    """A rolling upgrade from a trafficd that writes no generation: its shared state is
    there, so its overrides are the current ones; commands through an upgraded
    instance were all 503 for as long as an old instance led."""
    rig = Rig(tmp_path)
    store = coordinated(rig)
    coord = rig.runtime.live.coord
    assert coord is not None
    store.data[coord.keys["lock"]] = "old|5"  # an older trafficd leads
    store.data[coord.keys["state"]] = json.dumps({"engine": {}, "decisions": {}, "leader": "old"})
    try:
        await rig.interval()
        await rig.runtime.leader.coordinated_round()  # a follower
        assert not rig.runtime.live.leads()
        answer = await rig.runtime.commands.execute(
            Command.parse("drain", "eu", "ops", {"reason": "maintenance", "force": True})
        )
        assert answer["ok"]
        assert coord.keys["override"] + "eu" in store.data
    finally:
        rig.runtime.store.close()


async def test_a_rejected_reload_keeps_the_lease(tmp_path: Path) -> None:
    """A reload whose configuration cannot start is rolled back; the rollback resigned
    the lease the reload had kept, so every rejected SIGHUP handed leadership over."""
    rig = Rig(tmp_path)
    store = coordinated(rig)
    runtime = rig.runtime
    try:
        await rig.interval()
        await runtime.leader.coordinated_round()
        assert runtime.live.leads()
        lock = runtime.live.coord.keys["lock"]  # type: ignore[union-attr]
        build, calls = runtime.actuation.build, [0]

        def failing_once(actuators: Any = None) -> Any:
            calls[0] += 1
            if calls[0] == 1:
                raise OSError("the CA bundle is gone")
            return build(actuators)

        runtime.actuation.build = failing_once  # type: ignore[method-assign]
        with pytest.raises(ReloadError):
            await runtime.reload(load(tmp_path / "trafficd.yaml"))
        assert lock in store.data and runtime.live.leads()
    finally:
        await runtime.stop()
        runtime.close()


async def test_an_expired_hold_is_audited_once_when_a_drain_is_tried_first(
    tmp_path: Path,
) -> None:
    """A drain's trial expired the overrides past their time locally and audited it; the
    leader's next round took the store's copy back and expired it again: two `expired`
    events for one hold (issue 19 review)."""
    rig = Rig(tmp_path)
    coordinated(rig)
    runtime = rig.runtime
    try:
        await rig.interval()
        await runtime.leader.coordinated_round()
        assert runtime.live.leads()
        hold = {"reason": "keep serving", "for": "2s"}
        await runtime.commands.execute(Command.parse("hold", "us", "ops", hold))
        rig.clock.advance(3.0)  # the hold's time is over (no round of the rig's own)
        drain = {"reason": "maintenance", "force": True}
        await runtime.commands.execute(Command.parse("drain", "eu", "ops", drain))
        await runtime.leader.coordinated_round()
        await runtime.leader.coordinated_round()
        expired = [
            e
            for e in read_events(runtime.store.dir)
            if e["kind"] == "manual" and e.get("action") == "expired"
        ]
        assert [e["site"] for e in expired] == ["us"]
        assert "us" not in runtime.rounds.overrides
    finally:
        runtime.store.close()
