"""The shared-store contract, run against each real store (redis-server, etcd).

Every backend must give the coordinator the same guarantees: TTL keys vanish,
one holder at a time holds the lock, a new acquisition gets a larger token,
a write fenced by a stale token is refused, and an unreachable store raises
SharedStoreError (never hangs, never answers wrong).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.coordination.conftest import backend_name
from tests.coordination.peers import EtcdPeer, RedisPeer
from tests.peers import free_port
from trafficd.coordination import BACKENDS, SharedStore, SharedStoreError

LOCK = "t/leader"


def connect(peer: RedisPeer | EtcdPeer) -> SharedStore:
    return BACKENDS[backend_name(peer)]([peer.url], timeout=2.0)


@pytest.mark.peers
async def test_keys_values_prefixes_and_ttl(store: RedisPeer | EtcdPeer) -> None:
    b = connect(store)
    try:
        await b.put("t/obs/a", "A", ttl=2)
        await b.put("t/obs/b", "B")
        await b.put("t/other", "X")
        assert await b.scan("t/obs/") == {"t/obs/a": "A", "t/obs/b": "B"}
        assert await b.get("t/other") == "X" and await b.get("t/missing") is None
        await b.delete("t/other")
        assert await b.get("t/other") is None
        await asyncio.sleep(3.2)  # the TTL runs out (etcd counts whole seconds)
        assert await b.scan("t/obs/") == {"t/obs/b": "B"}
    finally:
        await b.close()


@pytest.mark.peers
async def test_one_holder_at_a_time_and_tokens_only_grow(store: RedisPeer | EtcdPeer) -> None:
    a, b = connect(store), connect(store)  # two instances, two clients
    try:
        first = await a.campaign(LOCK, "a", 2)
        assert first is not None
        assert await b.campaign(LOCK, "b", 2) is None
        assert await a.campaign(LOCK, "a", 2) == first  # renewing keeps the token
        assert await b.holder(LOCK) == ("a", first)
        await a.resign(LOCK, "a", first)
        second = await b.campaign(LOCK, "b", 2)
        assert second is not None and second > first
        # a's lease lapses if it stops renewing: b took over above; now b stops.
        await asyncio.sleep(3.2)
        third = await a.campaign(LOCK, "a", 2)
        assert third is not None and third > second
    finally:
        await a.close()
        await b.close()


@pytest.mark.peers
async def test_a_write_fenced_by_a_stale_token_is_refused(store: RedisPeer | EtcdPeer) -> None:
    a, b = connect(store), connect(store)
    try:
        old = await a.campaign(LOCK, "a", 2)
        assert old is not None
        assert await a.fenced_put(LOCK, "a", old, "t/state", "from a")
        await a.resign(LOCK, "a", old)
        new = await b.campaign(LOCK, "b", 2)
        assert new is not None
        assert not await a.fenced_put(LOCK, "a", old, "t/state", "stale a")  # fenced out
        assert await b.fenced_put(LOCK, "b", new, "t/state", "from b")
        assert await b.get("t/state") == "from b"
    finally:
        await a.close()
        await b.close()


@pytest.mark.peers
async def test_compare_and_delete_deletes_only_the_value_read(store: RedisPeer | EtcdPeer) -> None:
    b = connect(store)
    try:
        await b.put("t/override/eu", "old")
        await b.put("t/override/eu", "new")  # written after "old" was read
        assert not await b.delete_if("t/override/eu", "old")
        assert await b.get("t/override/eu") == "new"
        assert await b.delete_if("t/override/eu", "new")
        assert await b.get("t/override/eu") is None
        assert not await b.delete_if("t/override/eu", "new")  # nothing left to delete
    finally:
        await b.close()


@pytest.mark.parametrize("kind", ["redis", "etcd"])
async def test_an_unreachable_store_raises_store_error(kind: str, tmp_path: Path) -> None:
    url = (
        f"redis://127.0.0.1:{free_port()}/0"
        if kind == "redis"
        else f"http://127.0.0.1:{free_port()}"
    )
    b = BACKENDS[kind]([url], timeout=1.0)
    try:
        for call in (b.get("k"), b.put("k", "v"), b.campaign(LOCK, "a", 2), b.scan("t/")):
            with pytest.raises(SharedStoreError):
                await call
    finally:
        await b.close()
