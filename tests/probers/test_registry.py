"""Every storage driver the configuration accepts has a prober, under the same name."""

from __future__ import annotations

from trafficd.config.storage import DRIVERS
from trafficd.model import Observation, Probe
from trafficd.probers import STORAGE_BACKENDS


def test_the_prober_registry_has_exactly_the_config_drivers() -> None:
    assert set(STORAGE_BACKENDS) == set(DRIVERS)


def test_observations_round_trip_through_the_timeline_format() -> None:
    obs = Observation(
        t=12.5,
        vantage="us-east",
        probe=Probe.ENDTOEND,
        target="eu",
        ok=False,
        status=503,
        reason="storage",
        services={"storage": False, "database": True},
        latency=0.0123,
        detail="storage: timeout",
    )
    line = obs.to_json()
    assert line["site"] == "eu" and "location" not in line
    assert Observation.from_json(line) == obs
    storage = Observation(t=1.0, vantage="v", probe=Probe.STORAGE, target="eustorage", ok=None)
    assert storage.to_json() == {
        "t": 1.0,
        "vantage": "v",
        "probe": "storage",
        "location": "eustorage",
        "ok": None,
    }
    assert Observation.from_json(storage.to_json()) == storage
