"""The fencing token across a shared store that restarts empty (real redis-server / etcd).

base.py's `campaign`: the token is new on every acquisition and larger than
every earlier one. rfc2136's fence record compares tokens for equality, so a
store that numbers from 1 again after an empty restart (Redis's counter, etcd's
revisions) could give a new leader the token a stale former leader still
holds. Found by reviewer r19. Every client keeps the highest token it was given
or read, every instance keeps it in its state.json, and an acquisition numbers
above it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.coordination.conftest import backend_name
from tests.coordination.instances import answered_round, close, first_rounds, instance
from tests.coordination.peers import EtcdPeer, RedisPeer
from tests.coordination.test_store_loss import restart_empty
from trafficd.config import load
from trafficd.coordination import BACKENDS, Coordinator, SharedStore
from trafficd.daemon import Daemon
from trafficd.store import Store

pytestmark = pytest.mark.peers

LOCK = "t/leader"


async def _several_acquisitions(backend: SharedStore) -> int:
    """Three acquisitions given up, then a fourth held: its token (a counter past 1)."""
    for _ in range(3):
        token = await backend.campaign(LOCK, "a", 5.0)
        await backend.resign(LOCK, "a", token or 0)
    held = await backend.campaign(LOCK, "a", 5.0)
    assert held is not None
    return held


async def _campaign_after_restart(backend: SharedStore, holder: str) -> int | None:
    for _ in range(5):  # the first call may meet the dead connection
        try:
            return await backend.campaign(LOCK, holder, 5.0)
        except Exception:
            await asyncio.sleep(0.2)
    return None


async def test_the_fencing_token_still_grows_after_the_store_restarts_empty(
    store: RedisPeer | EtcdPeer, tmp_path: Path
) -> None:
    """base.py: the token is 'new on every acquisition, larger than every earlier one'."""
    kind = backend_name(store)
    backend = BACKENDS[kind]([store.url], timeout=1.0)
    try:
        before = await _several_acquisitions(backend)
        restart_empty(store)
        await asyncio.sleep(0.2)
        after = await _campaign_after_restart(backend, "b")
        assert after is not None and after > before, f"token {after} after {before}"
    finally:
        await backend.close()


async def test_a_token_read_as_a_follower_is_numbered_above(
    store: RedisPeer | EtcdPeer, tmp_path: Path
) -> None:
    """b never led: it only read a's token (`holder`, as a follower does every round)."""
    kind = backend_name(store)
    a = BACKENDS[kind]([store.url], timeout=1.0)
    b = BACKENDS[kind]([store.url], timeout=1.0)
    try:
        first = await _several_acquisitions(a)
        assert await b.holder(LOCK) == ("a", first)
        assert b.highest_token == first
        restart_empty(store)
        await asyncio.sleep(0.2)
        after = await _campaign_after_restart(b, "b")
        assert after is not None and after > first, f"token {after} after {first}"
        assert await b.holder(LOCK) == ("b", after)
    finally:
        await a.close()
        await b.close()


async def test_a_new_client_told_the_highest_token_numbers_above_it(
    store: RedisPeer | EtcdPeer,
) -> None:
    """What the runtime does with the token state.json kept, on a store never used."""
    backend = BACKENDS[backend_name(store)]([store.url], timeout=1.0)
    try:
        backend.highest_token = 1000
        token = await backend.campaign(LOCK, "a", 5.0)
        assert token is not None and token > 1000
        assert await backend.campaign(LOCK, "a", 5.0) == token  # renewing keeps it
        assert await backend.fenced_put(LOCK, "a", token, "t/state", "x")
        assert not await backend.fenced_put(LOCK, "a", token - 1, "t/state", "y")
        assert await backend.get("t/state") == "x"
    finally:
        await backend.close()


def _restarted(daemon: Daemon, peer: RedisPeer | EtcdPeer) -> Daemon:
    """The same instance started again: its config, its state_dir, a new store client."""
    again = Daemon(daemon.config_path, load(daemon.config_path))
    again.runtime.live.coord = Coordinator(
        again.config, BACKENDS[backend_name(peer)]([peer.url], timeout=1.0)
    )
    return again


async def test_every_instance_keeps_the_highest_token_and_leads_above_it_after_restarts(
    store: RedisPeer | EtcdPeer, tmp_path: Path
) -> None:
    """Both instances kept the leader's token in state.json; the store and the leader
    restart (the leader with a new client that saw nothing); the follower stops, so
    the restarted one leads again, above the token it held."""
    leader, follower = instance(tmp_path, "test", store), instance(tmp_path, "b", store)
    running = [leader, follower]
    try:
        before = (await first_rounds(leader, follower)).token
        assert before is not None
        for daemon in (leader, follower):
            kept = Store(daemon.store.dir).load().highest_token
            assert kept == before, daemon.config.vantage
        await close(*running)
        running = []

        restart_empty(store)
        again = _restarted(leader, store)
        running = [again]
        await answered_round(again)
        assert again.runtime.live.coord is not None and again.runtime.live.coord.leading()
        after = again.runtime.live.coord.token
        assert after is not None and after > before, f"token {after} after {before}"
        assert Store(again.store.dir).load().highest_token == after
    finally:
        await close(*running)
