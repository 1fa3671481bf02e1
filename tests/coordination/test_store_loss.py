"""A shared store that restarts empty loses no override and no pause (daemon + coordinator).

Two coordinated instances on a real store: a non-persistent redis-server
(`--save "" --appendonly no`, as Quay's cache-only Redis) or an etcd whose data
directory is gone. Operators drain eu, hold us and pause hands-off; the store
restarts empty. Every instance kept them in its state.json; the leader finds no
generation in the store, re-publishes what it holds and records
`store_republished`. Nothing is restored, nothing is unpaused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.coordination.instances import answered_round, close, first_rounds, instance
from tests.coordination.peers import EtcdPeer, RedisPeer
from trafficd.coordination import BACKENDS, Coordinator
from trafficd.model import State
from trafficd.runtime.commands import Command
from trafficd.store import Store

pytestmark = pytest.mark.peers


def restart_empty(peer: RedisPeer | EtcdPeer) -> None:
    peer.stop()
    if isinstance(peer, EtcdPeer):
        shutil.rmtree(peer.data)  # etcd keeps its data on disk: a new member starts empty
    peer.start()


async def test_the_leader_republishes_overrides_and_pause_into_an_empty_store(
    store: RedisPeer | EtcdPeer, tmp_path: Path
) -> None:
    leader, follower = instance(tmp_path, "test", store), instance(tmp_path, "b", store)
    try:
        await first_rounds(leader, follower)
        # Commands reach the store through either instance.
        await follower.runtime.commands.execute(
            Command.parse("drain", "eu", "ops", {"reason": "maintenance"})
        )
        await leader.runtime.commands.execute(
            Command.parse("hold", "us", "ops", {"reason": "keep serving"})
        )
        await follower.runtime.commands.execute(
            Command.parse("pause", None, "ops", {"reason": "backup", "hands_off": True})
        )
        await answered_round(leader)
        await answered_round(follower)
        assert leader.runtime.rounds.decision is not None
        assert leader.runtime.rounds.decision.sites["eu"].state is State.DRAINING

        restart_empty(store)
        await answered_round(leader)  # the leader notices first and re-publishes
        await answered_round(follower)

        for daemon in (leader, follower):
            assert set(daemon.runtime.rounds.overrides) == {"eu", "us"}, daemon.config.vantage
            assert daemon.runtime.rounds.overrides["eu"].kind == "drain"
            assert daemon.runtime.rounds.overrides["us"].kind == "hold"
            assert daemon.runtime.rounds.pause is not None and daemon.runtime.rounds.pause.hands_off
            saved = Store(daemon.store.dir).load()  # durably, in every state_dir
            assert set(saved.overrides) == {"eu", "us"}
            assert saved.pause is not None and saved.pause.hands_off
        assert leader.runtime.rounds.decision.sites["eu"].state is State.DRAINING  # not restoring
        assert leader.registry.get_sample_value("trafficd_paused") == 1

        # The store holds them again, for any instance and any future leader.
        kind = "redis" if isinstance(store, RedisPeer) else "etcd"
        reader = Coordinator(follower.config, BACKENDS[kind]([store.url], timeout=1.0))
        try:
            assert set(await reader.overrides()) == {"eu", "us"}
            pause = await reader.pause()
            assert pause is not None and pause.hands_off and pause.reason == "backup"
            assert await reader.generation() is not None
        finally:
            await reader.backend.close()

        republished = [
            e for e in leader.runtime.views.events(None) if e["kind"] == "store_republished"
        ]
        assert republished[-1]["overrides"] == ["eu", "us"]
        assert republished[-1]["paused"] is True
        assert republished[-1]["previous"] is not None  # it had seen the store's generation
        assert not [
            e for e in follower.runtime.views.events(None) if e["kind"] == "store_republished"
        ]
    finally:
        await close(leader, follower)
