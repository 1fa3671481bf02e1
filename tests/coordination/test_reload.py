"""A reload under coordination, on a real redis-server and etcd: the leader keeps its
lease over a reload whose coordination settings are unchanged (issue 19 review: every
SIGHUP resigned it, and a SIGHUP storm made leadership flap between instances, each
take-over with its fencing writes and `leader` events)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.coordination.instances import answered_round, close, first_rounds, instance
from tests.coordination.peers import EtcdPeer, RedisPeer

pytestmark = pytest.mark.peers


async def test_a_reload_of_the_leader_keeps_the_lease(
    store: RedisPeer | EtcdPeer, tmp_path: Path
) -> None:
    leader, follower = instance(tmp_path, "test", store), instance(tmp_path, "b", store)
    try:
        token = (await first_rounds(leader, follower)).token
        await leader.runtime.reload(leader.config)  # what a SIGHUP runs, the same file
        await answered_round(follower)
        assert follower.runtime.live.coord is not None and not follower.runtime.live.coord.leading()
        assert leader.runtime.live.coord is not None and leader.runtime.live.coord.leading()
        assert leader.runtime.live.coord.token == token  # no new election, no new fencing token
    finally:
        await leader.runtime.stop()
        await close(leader, follower)
