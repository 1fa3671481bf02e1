"""Coordinated daemons in this process, on a real shared store: rounds driven by the test.

Each `Daemon` gets its own state_dir and vantage and a `Coordinator` on the store
(redis-server or etcd, tests/coordination/peers.py); nothing runs until the test
calls `coordinated_round()`, so the order of the instances' rounds is the test's.
"""

from __future__ import annotations

from pathlib import Path

from tests.coordination.conftest import backend_name
from tests.coordination.peers import EtcdPeer, RedisPeer
from tests.test_api import write_config
from trafficd.config import load
from trafficd.coordination import BACKENDS, Coordinator
from trafficd.daemon import Daemon

VANTAGES = ("test", "b")


def instance(tmp: Path, vantage: str, peer: RedisPeer | EtcdPeer) -> Daemon:
    directory = tmp / vantage
    directory.mkdir()
    kind = backend_name(peer)
    extra = (
        f"vantages: [{', '.join(VANTAGES)}]\n"
        f"coordination: {{backend: {kind}, urls: ['{peer.url}'], lease: 10s}}\n"
    )
    path = write_config(directory, extra)
    path.write_text(path.read_text().replace("vantage: test", f"vantage: {vantage}", 1))
    daemon = Daemon(path, load(path))
    daemon.runtime.live.coord = Coordinator(daemon.config, BACKENDS[kind]([peer.url], timeout=1.0))
    return daemon


async def answered_round(daemon: Daemon) -> None:
    """A round that reached the store (the first after a restart may meet a dead connection)."""
    assert daemon.runtime.live.coord is not None
    for _ in range(5):
        await daemon.runtime.leader.coordinated_round()
        if daemon.runtime.live.coord.up:
            return
    raise AssertionError(
        f"{daemon.config.vantage}: the store never answered: {daemon.runtime.live.coord.error}"
    )


async def first_rounds(leader: Daemon, follower: Daemon) -> Coordinator:
    """Each instance's first round answered, `leader`'s first: it leads (its coordinator)."""
    await answered_round(leader)
    await answered_round(follower)
    coord = leader.runtime.live.coord
    assert coord is not None and coord.leading()
    return coord


async def close(*daemons: Daemon) -> None:
    for daemon in daemons:
        if daemon.runtime.live.coord is not None:
            await daemon.runtime.live.coord.backend.close()
        daemon.store.close()
