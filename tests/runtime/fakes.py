"""Test doubles behind the runtime's real interfaces: a fake clock (its two readings), and
later a scripted prober and a recording actuator. Nothing here sleeps or reads time."""

from __future__ import annotations

from trafficd.clock import EngineClock

T0 = 1_800_000_000.0


class FakeClock:
    """A wall and a monotonic clock moved by the test: `advance` moves both, `step` only
    the wall clock (NTP, an operator); `engine` is the EngineClock the runtime takes."""

    def __init__(self, wall: float = T0) -> None:
        self.mono, self.offset = 1000.0, wall - 1000.0
        self.engine = EngineClock(self.wall, self.monotonic)

    def wall(self) -> float:
        return self.mono + self.offset

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.mono += seconds

    def step(self, seconds: float) -> None:
        self.offset += seconds
