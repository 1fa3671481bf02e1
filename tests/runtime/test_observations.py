"""The latest observation per key (runtime/observations.py): what counts as a change,
stamps on the engine clock, a reload's retain, and coordination turned on and off."""

from __future__ import annotations

from tests.runtime.fakes import FakeClock
from trafficd.model import Observation, Probe
from trafficd.runtime.observations import Observations


def endtoend(vantage: str, t: float, ok: bool, site: str = "eu") -> Observation:
    return Observation(t, vantage, Probe.ENDTOEND, site, ok, 200 if ok else 503)


def test_only_what_a_probe_says_differently_is_a_change() -> None:
    clock = FakeClock()
    seen = Observations(clock.engine)
    assert seen.put(endtoend("test", clock.wall(), True))  # the first one
    clock.advance(1)
    assert not seen.put(endtoend("test", clock.wall(), True))  # the same, later
    assert seen.put(endtoend("test", clock.wall(), False))
    assert seen.latest[("test", Probe.ENDTOEND, "eu")].ok is False


def test_an_observation_is_stamped_on_the_engine_clock_after_a_step() -> None:
    clock = FakeClock()
    seen = Observations(clock.engine)
    before = clock.engine.now()
    clock.advance(2)
    clock.step(-1800)  # the wall clock steps back half an hour
    seen.put(endtoend("test", clock.wall(), True))
    assert seen.latest[("test", Probe.ENDTOEND, "eu")].t == before + 2


def test_retain_keeps_only_configured_targets() -> None:
    clock = FakeClock()
    seen = Observations(clock.engine)
    seen.put(endtoend("test", clock.wall(), True, "eu"))
    seen.put(endtoend("test", clock.wall(), True, "ap"))
    seen.retain({"eu", "eustorage"})
    assert [k[2] for k in seen.latest] == ["eu"]


def test_coordination_publishes_only_this_vantages_own_and_back() -> None:
    clock = FakeClock()
    seen = Observations(clock.engine)
    seen.put(endtoend("test", clock.wall(), True))
    seen.coordinate(True, "test")
    assert seen.latest == {} and list(seen.own) == [("test", Probe.ENDTOEND, "eu")]
    seen.put(endtoend("test", clock.wall(), False))  # goes to own: published, not decided
    assert seen.latest == {}
    seen.merge({"test": list(seen.own.values()), "b": [endtoend("b", 1.0, True)]}, 5.0, ["test"])
    assert list(seen.latest) == [("test", Probe.ENDTOEND, "eu")]  # b is no listed vantage
    assert seen.latest[("test", Probe.ENDTOEND, "eu")].t == 5.0  # stamped on arrival
    seen.coordinate(False, "test")
    assert seen.latest[("test", Probe.ENDTOEND, "eu")].ok is False and seen.own == {}
