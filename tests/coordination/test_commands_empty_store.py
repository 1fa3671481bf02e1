"""Operators' commands while the shared store has come back empty (runtime/commands.py).

Two coordinated instances on a real redis-server or etcd. The store restarts empty;
until the leader's next round re-publishes the overrides and the pause it holds (and
writes a new generation), the leader still holds its state.json copy and merges it
back. A command that writes the shared state in that window is answered 503 (the
API's UnavailableError) rather than taken and then silently undone by the merge.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from tests.coordination.instances import answered_round, close, first_rounds, instance
from tests.coordination.peers import EtcdPeer, RedisPeer
from tests.coordination.test_store_loss import restart_empty
from trafficd.coordination import SharedStoreError
from trafficd.daemon import Daemon
from trafficd.model import Override
from trafficd.runtime.commands import Command, UnavailableError

pytestmark = pytest.mark.peers

EMPTY = "the shared store has come back empty"


async def refused_while_empty(daemon: Daemon, action: str, site: str | None) -> str:
    """The command's 503 message: the first tries may meet the dead connection."""
    message = ""
    for _ in range(5):
        with pytest.raises(UnavailableError) as refused:
            await daemon.runtime.commands.execute(Command.parse(action, site, "ops", {}))
        message = str(refused.value)
        if EMPTY in message:
            return message
    raise AssertionError(f"{action} was not refused for the empty store: {message}")


async def drained_eu(leader: Daemon, follower: Daemon) -> None:
    await first_rounds(leader, follower)
    await follower.runtime.commands.execute(
        Command.parse("drain", "eu", "ops", {"reason": "maintenance"})
    )
    await follower.runtime.commands.execute(
        Command.parse("pause", None, "ops", {"reason": "backup"})
    )
    await answered_round(leader)
    await answered_round(follower)
    assert "eu" in leader.runtime.rounds.overrides and leader.runtime.rounds.pause is not None


async def test_an_undrain_in_the_empty_store_window_is_refused_not_undone(
    store: RedisPeer | EtcdPeer, tmp_path: Path
) -> None:
    """Reviewer r19: the store restarts empty, an operator undrains eu through the
    follower (200), and the leader's next round merges its state.json copy back and
    re-publishes the drain the operator lifted. Now the undrain (and a resume) is a
    503 until the leader has re-published; taken then, it stays."""
    leader, follower = instance(tmp_path, "test", store), instance(tmp_path, "b", store)
    try:
        await drained_eu(leader, follower)
        restart_empty(store)
        message = await refused_while_empty(follower, "undrain", "eu")
        assert "retry after the leader's next round" in message
        await refused_while_empty(follower, "resume", None)
        assert (
            "eu" in follower.runtime.rounds.overrides and follower.runtime.rounds.pause is not None
        )
        await answered_round(leader)  # re-publishes the drain and the pause
        await follower.runtime.commands.execute(Command.parse("undrain", "eu", "ops", {}))
        await follower.runtime.commands.execute(Command.parse("resume", None, "ops", {}))
        assert "eu" not in follower.runtime.rounds.overrides
        await answered_round(leader)
        await answered_round(follower)
        for daemon in (leader, follower):
            assert "eu" not in daemon.runtime.rounds.overrides, daemon.config.vantage
            assert daemon.runtime.rounds.pause is None, daemon.config.vantage
    finally:
        await close(leader, follower)


async def test_a_store_that_restarts_empty_during_the_write_refuses_the_command(
    store: RedisPeer | EtcdPeer, tmp_path: Path
) -> None:
    """The generation is read before and after the write: a store that restarted
    between the first read and the write took the undrain into the empty store (where
    the leader's copy would bring the drain back); the operator is told, not ignored."""
    leader, follower = instance(tmp_path, "test", store), instance(tmp_path, "b", store)
    try:
        await drained_eu(leader, follower)
        coord = follower.runtime.live.coord
        assert coord is not None
        put_override = coord.put_override

        async def restart_then_put(site: str, override: Override | None) -> None:
            restart_empty(store)  # after the generation was read, before the write
            for _ in range(5):  # the first call may meet the dead connection
                with contextlib.suppress(SharedStoreError):
                    await put_override(site, override)
                    return
            raise AssertionError("the restarted store never took the write")

        coord.put_override = restart_then_put  # type: ignore[method-assign]
        with pytest.raises(UnavailableError, match=EMPTY):
            await follower.runtime.commands.execute(Command.parse("undrain", "eu", "ops", {}))
        coord.put_override = put_override  # type: ignore[method-assign]
        assert "eu" in follower.runtime.rounds.overrides, "a refused undrain changed the follower"
        await answered_round(leader)
        assert "eu" in leader.runtime.rounds.overrides  # what the operator was told: not taken
        await follower.runtime.commands.execute(Command.parse("undrain", "eu", "ops", {}))
        await answered_round(leader)
        assert "eu" not in leader.runtime.rounds.overrides
    finally:
        await close(leader, follower)


async def test_a_drain_is_taken_once_the_leader_has_republished(
    store: RedisPeer | EtcdPeer, tmp_path: Path
) -> None:
    leader, follower = instance(tmp_path, "test", store), instance(tmp_path, "b", store)
    answers: list[dict[str, Any]] = []
    try:
        await first_rounds(leader, follower)
        restart_empty(store)
        await refused_while_empty(follower, "release", "us")
        await answered_round(leader)
        answers.append(
            await follower.runtime.commands.execute(
                Command.parse("drain", "eu", "ops", {"reason": "upgrade"})
            )
        )
        await answered_round(leader)
        assert answers[0]["ok"] and "eu" in leader.runtime.rounds.overrides
    finally:
        await close(leader, follower)
