"""The fencing token across a shared store that restarts empty (real redis-server / etcd).

base.py's `campaign`: the token is new on every acquisition and larger than
every earlier one. rfc2136's fence record compares tokens for equality, so a
store that numbers from 1 again after an empty restart (Redis's counter, etcd's
revisions) could give a new leader the token a stale former leader still
holds. Found by reviewer r19.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.coordination.conftest import backend_name
from tests.coordination.peers import EtcdPeer, RedisPeer
from tests.coordination.test_store_loss import restart_empty
from trafficd.coordination import BACKENDS, SharedStore

pytestmark = pytest.mark.peers

LOCK = "t/leader"


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
        for _ in range(3):
            token = await backend.campaign(LOCK, "a", 5.0)
            await backend.resign(LOCK, "a", token or 0)
        before = await backend.campaign(LOCK, "a", 5.0)
        assert before is not None
        restart_empty(store)
        await asyncio.sleep(0.2)
        after = await _campaign_after_restart(backend, "b")
        assert after is not None and after > before, f"token {after} after {before}"
    finally:
        await backend.close()
