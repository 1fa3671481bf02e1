"""The daemon's engine clock: wall time with wall-clock steps taken out."""

from __future__ import annotations

from trafficd.clock import EngineClock


class Clocks:
    def __init__(self) -> None:
        self.mono, self.wall_offset = 50.0, 1_800_000_000.0

    def wall(self) -> float:
        return self.mono + self.wall_offset

    def monotonic(self) -> float:
        return self.mono


def test_without_a_step_the_engine_clock_is_the_wall_clock() -> None:
    c = Clocks()
    clock = EngineClock(c.wall, c.monotonic)
    for _ in range(5):
        c.mono += 1.0
        assert clock.now() == c.wall()
        assert clock.stamp(c.wall() - 0.25) == c.wall() - 0.25  # probers' stamps unchanged


def test_a_step_back_or_forward_changes_no_duration() -> None:
    c = Clocks()
    clock = EngineClock(c.wall, c.monotonic)
    start = clock.now()
    c.mono += 10.0
    c.wall_offset -= 1800.0  # the wall clock steps back 30 minutes
    assert clock.now() == start + 10.0
    assert clock.stamp(c.wall()) == start + 10.0  # an observation stamped after the step
    c.mono += 5.0
    c.wall_offset += 5400.0  # and forward an hour
    assert clock.now() == start + 15.0
    assert clock.wall() == c.wall()  # operators' expiries still read the wall clock


def test_a_small_drift_is_no_step() -> None:
    c = Clocks()
    clock = EngineClock(c.wall, c.monotonic)
    c.mono += 1.0
    c.wall_offset += 0.01  # NTP slewing
    assert clock.now() == c.wall()


def test_a_clock_stepped_back_while_stopped_resumes_after_the_saved_round() -> None:
    c = Clocks()
    saved_round = c.wall() + 600.0  # the state was saved before the wall clock went back
    clock = EngineClock(c.wall, c.monotonic, resume_at=saved_round)
    assert clock.now() == saved_round
    c.mono += 2.0
    assert clock.now() == saved_round + 2.0
