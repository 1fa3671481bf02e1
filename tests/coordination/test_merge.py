"""Merging every vantage's published observations: each one counts in exactly one round.

Observations come from other instances' clocks and reach the leader on the publish
grid, so one may arrive after the round that its own time belongs to. The runtime
stamps each with when it first arrived; the engine then counts it once, never zero
times (it arrived late) and never twice (it is read again next round). Pure: no store.
"""

from __future__ import annotations

from pathlib import Path

from tests.test_api import write_config
from trafficd.config import load
from trafficd.model import Observation, Probe
from trafficd.runtime.wiring import Runtime

T0 = 1_800_000_000.0


def coordinated(tmp: Path) -> Runtime:
    extra = (
        "vantages: [test, b, c]\n"
        "coordination: {backend: redis, urls: ['redis://127.0.0.1:1/0'], lease: 2s}\n"
    )
    path = write_config(tmp, extra)
    return Runtime.open(load(path), path)


def storage(vantage: str, t: float, ok: bool) -> Observation:
    return Observation(t, vantage, Probe.STORAGE, "eustorage", ok, reason=None if ok else "connect")


def test_a_late_observation_counts_once_and_an_unlisted_vantage_not_at_all(tmp_path: Path) -> None:
    runtime = coordinated(tmp_path)
    try:
        # b's failure was made before the previous round but arrives only now.
        runtime.leader.tick(T0)
        late = storage("b", T0 - 0.4, False)
        also = storage("c", T0 + 0.3, False)
        stranger = storage("x", T0 + 0.3, False)  # not in `vantages`
        vantages = runtime.live.config.all_vantages
        seen = runtime.observations
        seen.merge({"b": [late], "c": [also], "x": [stranger]}, T0 + 1, vantages)
        assert seen.latest[late.key].t == T0 + 1  # stamped on arrival
        assert stranger.key not in seen.latest
        runtime.leader.tick(T0 + 1)
        assert runtime.rounds.engine.locations["eustorage"].down == 1  # 2 of 3 vantages: quorum
        # The same observations read again next round: not new, not counted again.
        seen.merge({"b": [late], "c": [also]}, T0 + 2, vantages)
        assert seen.latest[late.key].t == T0 + 1
        runtime.leader.tick(T0 + 2)
        assert runtime.rounds.engine.locations["eustorage"].down == 1
        # New ones from both: the next round counts them.
        again = {"b": [storage("b", T0 + 2.1, False)], "c": [storage("c", T0 + 2.2, False)]}
        seen.merge(again, T0 + 3, vantages)
        runtime.leader.tick(T0 + 3)
        assert runtime.rounds.engine.locations["eustorage"].down == 2
    finally:
        runtime.store.close()
