"""The latest observation per probe key, as the engine reads it: put, merge, retain.

Between the probe loops (which put what they observe) and the rounds (which
read `latest`). Alone, an instance's own observations are the engine's input.
With coordination each instance publishes only its own (`own`) and the round
reads every vantage's through the shared store (`merge`), each stamped with
when it first arrived here. Pure data: no metrics, no audit, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping

from trafficd.clock import EngineClock
from trafficd.model import Observation, Probe

Key = tuple[str, Probe, str]  # (vantage, probe, target)


class Observations:
    def __init__(self, clock: EngineClock) -> None:
        self.clock = clock
        self.latest: dict[Key, Observation] = {}  # what the engine decides on
        # With coordination: this vantage's own observations (published), and when each
        # key's current observation first arrived here (see merge).
        self.coordinated = False
        self.own: dict[Key, Observation] = {}
        self._seen: dict[Key, float] = {}

    def put(self, obs: Observation) -> bool:
        """Keeps `obs` as its key's latest, on the engine clock (probers stamp wall time);
        True when it says something other than the one before (a change to audit)."""
        mine = self.own if self.coordinated else self.latest
        before = mine.get(obs.key)
        t = self.clock.stamp(obs.t)
        mine[obs.key] = obs if t == obs.t else dataclasses.replace(obs, t=t)
        return before is None or (before.ok, before.reason, dict(before.services)) != (
            obs.ok,
            obs.reason,
            dict(obs.services),
        )

    def merge(
        self, published: Mapping[str, list[Observation]], now: float, vantages: Collection[str]
    ) -> None:
        """Every listed vantage's observations into `latest`, stamped with when they first
        arrived here: the engine counts an observation in the first round after its
        time, and one published late (another instance's clock, the publish grid)
        must still count once, never zero times and never twice. An observer not in
        `vantages` has no vote."""
        merged: dict[Key, Observation] = {}
        seen: dict[Key, float] = {}
        for vantage, observations in published.items():
            if vantage not in vantages:
                continue
            for o in observations:
                previous = self.latest.get(o.key)
                if previous is not None and self._seen.get(o.key) == o.t:
                    merged[o.key], seen[o.key] = previous, o.t  # the same one as last round
                else:
                    merged[o.key], seen[o.key] = dataclasses.replace(o, t=now), o.t
        self.latest, self._seen = merged, seen

    def retain(self, targets: Collection[str]) -> None:
        """A reload: only the observations of targets (sites, locations) still configured."""
        self.latest = {k: v for k, v in self.latest.items() if k[2] in targets}

    def coordinate(self, on: bool, vantage: str) -> None:
        """Coordination turned on (at start, or by a reload) or off. On: only this vantage's
        own observations are published, and the merged view is rebuilt from the store at
        the next round. Off: back to one instance, its own observations the input."""
        if on:
            mine = {**self.latest, **self.own}
            self.own = {k: o for k, o in mine.items() if k[0] == vantage}
            self.latest, self._seen = {}, {}
        elif self.own:
            self.latest, self.own = dict(self.own), {}
        self.coordinated = on
