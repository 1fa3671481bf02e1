"""Saving and waking (runtime/effects.py) when state.json cannot be written: the
decision in force still reaches the reconcile loops, a command still answers, and the
save is counted, said and retried every round until the disk takes it."""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.runtime.test_runtime import Rig
from trafficd.model import State
from trafficd.runtime.commands import Command
from trafficd.store import Store

ERRORS = "trafficd_state_save_errors_total"


class FullDisk:
    """Store.save as on a full disk (ENOSPC) while `full`, the real one after."""

    def __init__(self, store: Store) -> None:
        self.real, self.full, self.calls = store.save, True, 0

    def __call__(self, *args: object) -> None:
        self.calls += 1
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.real(*args)  # type: ignore[arg-type]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.runtime.store.close()


def errors(rig: Rig) -> float | None:
    return rig.runtime.metrics.registry.get_sample_value(ERRORS)


async def test_a_full_disk_does_not_keep_a_transition_from_the_actuators(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """The round's decision is in force though state.json cannot be written: the
    reconcile loops are woken to act on it (else the engine loop died and they waited
    for their resync, up to 30 s), and the failure is counted and said."""
    await rig.interval()
    rig.prober.down = {"eustorage"}
    await rig.interval()
    disk = FullDisk(rig.runtime.store)
    rig.runtime.store.save = disk  # type: ignore[method-assign,assignment]
    for wake in rig.runtime.effects.wakeups.values():
        wake.clear()
    rig.clock.advance(1.0)
    for task in rig.prober.tasks():
        rig.runtime.observe(await task.run())
    caplog.set_level(logging.ERROR, logger="trafficd.runtime.effects")
    decision = rig.runtime.leader.tick()  # raised OSError before the fix
    assert decision.sites["eu"].state is State.DRAINING
    woken = [k for k, w in rig.runtime.effects.wakeups.items() if w.is_set()]
    assert sorted(woken) == sorted(rig.runtime.effects.wakeups)
    assert disk.calls == 1
    assert errors(rig) == 1
    assert "No space left on device" in caplog.text
    assert "state.json" in caplog.text


async def test_an_unsaved_state_is_saved_at_the_next_round_once_the_disk_takes_it(
    rig: Rig,
) -> None:
    """No change is needed for the retry: every round tries again while the state is
    unsaved, and stops trying once it is saved."""
    await rig.interval()
    disk = FullDisk(rig.runtime.store)
    rig.runtime.store.save = disk  # type: ignore[method-assign,assignment]
    rig.prober.down = {"eustorage"}
    await rig.until("eu", State.DRAINING, within=3)  # a change: its save refused
    refused = disk.calls
    assert refused >= 1 and errors(rig) == refused
    await rig.interval()  # nothing changed, but unsaved: tried again (and refused)
    assert disk.calls == refused + 1 and errors(rig) == refused + 1
    disk.full = False
    await rig.interval()
    assert disk.calls == refused + 2
    assert rig.runtime.store.load().engine.sites["eu"].state is State.DRAINING
    for _ in range(2):
        await rig.interval()  # saved, and nothing changed: no save, no error
    assert (disk.calls, errors(rig)) == (refused + 2, refused + 1)
    assert rig.runtime.rounds.decision is not None
    assert rig.runtime.rounds.decision.sites["eu"].state is State.DRAINING


async def test_a_command_on_a_full_disk_answers_what_it_did(rig: Rig) -> None:
    """The override is in force (a round decides on it) though state.json cannot be
    written: the API answers with it rather than a 500 after it took effect."""
    await rig.interval()
    disk = FullDisk(rig.runtime.store)
    rig.runtime.store.save = disk  # type: ignore[method-assign,assignment]
    answer = await rig.runtime.commands.execute(
        Command.parse("drain", "eu", "ops", {"reason": "maintenance", "force": True})
    )
    assert answer["ok"] is True and answer["state"] == "draining"
    assert (errors(rig) or 0) >= 1
    disk.full = False
    await rig.interval()
    assert rig.runtime.store.load().overrides["eu"].reason == "maintenance"
