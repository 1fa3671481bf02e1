"""Values in the shared store that are not an override or a pause (hand-written, or
from a broken writer) are skipped with a warning: never fatal to the leader's round."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.coordination.instances import answered_round, close, instance
from tests.coordination.peers import EtcdPeer, RedisPeer
from trafficd.model import Override

pytestmark = pytest.mark.peers

# Valid JSON that is no object, an object missing keys, and no JSON at all.
UNREADABLE = {"eu": "[1]", "ap": '"drain"', "sa": '{"kind": "drain"}', "af": "not json"}


async def test_unreadable_overrides_and_pause_are_skipped(
    store: RedisPeer | EtcdPeer, tmp_path: Path
) -> None:
    leader = instance(tmp_path, "test", store)
    coord = leader.runtime.live.coord
    assert coord is not None
    try:
        hold = Override("hold", "release day", "ops", time.time())
        await coord.put_override("us", hold)
        for site, raw in UNREADABLE.items():
            await coord.backend.put(coord.keys["override"] + site, raw)
        await coord.backend.put(coord.keys["pause"], "[1]")
        assert await coord.overrides() == {"us": hold}
        assert await coord.pause() is None
        await answered_round(leader)  # the leader's round reads them too
        assert (
            leader.runtime.rounds.overrides == {"us": hold} and leader.runtime.rounds.pause is None
        )
    finally:
        await close(leader)
