"""The leader's override expiry is compare-and-delete (daemon + coordinator + backends).

An expired override is removed by the leader after its round. An operator's
new override for the same site, written through another instance between the
leader's read and its delete, must stay. The store's backend is wrapped so that
this write lands exactly there, on a real redis-server or etcd.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.coordination.conftest import backend_name
from tests.coordination.instances import answered_round, close, instance
from tests.coordination.peers import EtcdPeer, RedisPeer
from trafficd.coordination import BACKENDS, Coordinator, SharedStore
from trafficd.model import Override

pytestmark = pytest.mark.peers


class WriteBeforeDelete:
    """A backend whose next delete of `key` lets another writer go first, once."""

    def __init__(self, inner: SharedStore, key: str, write: Callable[[], Awaitable[None]]) -> None:
        self.inner, self.key, self.write, self.fired = inner, key, write, False

    @property
    def highest_token(self) -> int:
        return self.inner.highest_token

    @highest_token.setter
    def highest_token(self, token: int) -> None:
        self.inner.highest_token = token

    async def _interleave(self, key: str) -> None:
        if key == self.key and not self.fired:
            self.fired = True
            await self.write()

    async def delete(self, key: str) -> None:
        await self._interleave(key)
        await self.inner.delete(key)

    async def delete_if(self, key: str, value: str) -> bool:
        await self._interleave(key)
        return await self.inner.delete_if(key, value)

    async def put(self, key: str, value: str, ttl: float | None = None) -> None:
        await self.inner.put(key, value, ttl)

    async def get(self, key: str) -> str | None:
        return await self.inner.get(key)

    async def scan(self, prefix: str) -> dict[str, str]:
        return await self.inner.scan(prefix)

    async def campaign(self, lock: str, holder: str, ttl: float) -> int | None:
        return await self.inner.campaign(lock, holder, ttl)

    async def holder(self, lock: str) -> tuple[str, int] | None:
        return await self.inner.holder(lock)

    async def fenced_put(self, lock: str, holder: str, token: int, key: str, value: str) -> bool:
        return await self.inner.fenced_put(lock, holder, token, key, value)

    async def resign(self, lock: str, holder: str, token: int) -> None:
        await self.inner.resign(lock, holder, token)

    async def close(self) -> None:
        await self.inner.close()


async def test_an_override_written_during_the_round_survives_the_expiry(
    store: RedisPeer | EtcdPeer, tmp_path: Path
) -> None:
    leader = instance(tmp_path, "test", store)
    other = Coordinator(leader.config, BACKENDS[backend_name(store)]([store.url], timeout=1.0))
    try:
        await answered_round(leader)
        assert leader.runtime.live.coord is not None and leader.runtime.live.coord.leading()
        now = time.time()
        expired = Override("drain", "old window", "ops", now - 120, expires=now - 60)
        fresh = Override("hold", "new window", "oncall", now)
        await other.put_override("eu", expired)
        coord = leader.runtime.live.coord
        real = coord.backend
        wrapped = WriteBeforeDelete(
            real, coord.keys["override"] + "eu", lambda: other.put_override("eu", fresh)
        )
        coord.backend = wrapped
        await answered_round(leader)  # reads the expired one, expires it, deletes
        coord.backend = real
        assert wrapped.fired
        assert await other.overrides() == {"eu": fresh}
        expiries = [e for e in leader.runtime.views.events(None) if e.get("action") == "expired"]
        assert [(e["site"], e["reason"]) for e in expiries] == [("eu", "old window")]

        await answered_round(leader)  # the next round acts on the fresh one
        assert leader.runtime.rounds.overrides == {"eu": fresh}

        # An expired override nobody replaced is removed.
        await other.put_override("us", expired)
        await answered_round(leader)
        assert "us" not in await other.overrides()
        assert await other.overrides() == {"eu": fresh}
    finally:
        await other.backend.close()
        await close(leader)
