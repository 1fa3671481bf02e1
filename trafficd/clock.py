"""The daemon's engine clock: wall time with every wall-clock step taken out.

Beside the engine (which never reads a clock): the daemon stamps observations
and calls `decide` with `EngineClock.now()`, so every duration the engine
measures (fall/rise rounds, hold-downs, the drain window, shutdown grace,
restore_timeout) runs on the monotonic clock, while the values stay close to
epoch seconds for display. A step of the wall clock (NTP, an operator, a VM
resumed) shows as wall and monotonic time advancing by different amounts
between two readings; the difference is absorbed into `skew`. Wall time is
still used, unchanged, for the absolute expiries operators give.

Why not `time.monotonic()` itself: the engine's times are saved (state_dir) and
shared (coordination), and a monotonic clock's origin is per boot and per host,
so its values mean nothing to another process. Wall time minus the steps seen
keeps one process's durations monotonic while staying comparable with saved
state and with peers. Its limits, by design: a step while the daemon is down is
not seen (a backward one is caught by `resume_at`; a forward one counts as time
that passed), and with coordination each instance absorbs only the steps it saw
itself, so after a step on one host its engine times differ from the others' by
that step (observations it publishes, and shared state it writes as leader, are
on its own engine clock). Instances are expected to run NTP-synchronised
clocks; a step on one of them lasts only until that host's NTP corrects it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Wall and monotonic time may drift apart by slewing; only a jump this large is a step.
STEP = 1.0


class EngineClock:
    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        resume_at: float | None = None,
    ) -> None:
        """`resume_at`: the saved state's last round, so that a clock stepped back while
        the daemon was down never runs the engine backwards."""
        self._wall, self._monotonic = wall, monotonic
        self._last_wall, self._last_mono = wall(), monotonic()
        self.skew = 0.0  # wall - engine
        if resume_at is not None:
            self.resume(resume_at)

    def resume(self, at: float) -> None:
        """`at`: the saved state's last round; the engine clock goes on from there if the
        wall clock now reads earlier (stepped back while the daemon was down)."""
        now = self.now()
        if at > now:
            self.skew += now - at

    def now(self) -> float:
        wall, mono = self._wall(), self._monotonic()
        step = (wall - self._last_wall) - (mono - self._last_mono)
        if abs(step) >= STEP:
            self.skew += step
        self._last_wall, self._last_mono = wall, mono
        return wall - self.skew

    def wall(self) -> float:
        return self._wall()

    def stamp(self, t: float) -> float:
        """An observation's wall time `t` on the engine clock (probers stamp wall time)."""
        self.now()
        return t - self.skew
