"""One shared store per test, of each kind: the same tests run against Redis and etcd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.coordination.peers import EtcdPeer, RedisPeer


@pytest.fixture(params=["redis", "etcd"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisPeer | EtcdPeer]:
    peer: RedisPeer | EtcdPeer = (
        RedisPeer(tmp_path) if request.param == "redis" else EtcdPeer(tmp_path)
    )
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()


def backend_name(peer: RedisPeer | EtcdPeer) -> str:
    return "redis" if isinstance(peer, RedisPeer) else "etcd"
