"""The engine's state, the operators' overrides and the pause: the pure half of a round.

Between the observations (its input) and the effects (what a round's outcome
makes happen). `Rounds` holds what the engine decides from and keeps, and runs
`decide` on it; it writes no file, metric or log and reads no clock: the time
of each round comes in as arguments (`now` on the engine clock, `wall` for the
operators' absolute expiries). What a round changed comes back as a `Round`
for the effects to act on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from trafficd.engine import EnginePolicy, decide
from trafficd.engine.decide import trial_drain
from trafficd.engine.evidence import gather
from trafficd.model import (
    CanaryReading,
    Decision,
    EngineState,
    Observation,
    Override,
    Pause,
    Refusal,
    SiteDecision,
)
from trafficd.runtime.observations import Key

Inputs = tuple[
    EngineState, Mapping[Key, Observation], EnginePolicy, dict[str, Override], Pause | None, float
]


@dataclass(frozen=True)
class Round:
    """One round's outcome: its decision, the one before, and the overrides it expired."""

    decision: Decision
    previous: Decision | None
    expired: tuple[tuple[str, Override], ...] = ()

    @property
    def resited(self) -> bool:
        """A reload added or removed a site: the sites change without a transition."""
        return self.previous is None or self.previous.sites.keys() != self.decision.sites.keys()

    @property
    def changed(self) -> bool:
        """Something to save and act on: a transition, a return step (a new weight for
        the load balancers), new sites."""
        return bool(self.decision.transitions or self.decision.steps) or self.resited


class Rounds:
    def __init__(
        self,
        policy: EnginePolicy,
        engine: EngineState,
        overrides: Mapping[str, Override],
        pause: Pause | None,
    ) -> None:
        self.policy = policy
        self.engine = engine
        self.overrides: dict[str, Override] = dict(overrides)
        self.pause = pause
        self.decision: Decision | None = None  # none until the first round (or followed)
        self.commands = 0  # operators' commands taken here, ever
        # The overrides this instance expired (and audited), by site: with coordination,
        # the store's copy is still there until the leader's round deletes it, and must
        # not be taken back and expired a second time.
        self.expired: dict[str, Override] = {}

    def expire(self, wall: float) -> tuple[tuple[str, Override], ...]:
        """Removes the overrides whose expiry (wall time) has passed; returns them."""
        expired = tuple((s, o) for s, o in self.overrides.items() if not o.live(wall))
        for site, o in expired:
            del self.overrides[site]
            self.expired[site] = o
        return expired

    def tick(
        self,
        latest: Mapping[Key, Observation],
        now: float,
        wall: float,
        *,
        restore_blocks: Mapping[str, str] | None,
        traffic_off: Mapping[str, float],
        canary: Mapping[str, CanaryReading] | None = None,
    ) -> Round:
        """One engine round at `now` (the engine clock) on `latest`; `canary`: the load
        balancers' response counters of the sites returning in steps."""
        expired = self.expire(wall)
        decision = decide(
            *self._inputs(latest, now),
            restore_blocks=restore_blocks,
            wall=wall,
            traffic_off=traffic_off,
            canary=canary,
        )
        previous, self.decision, self.engine = self.decision, decision, decision.state
        return Round(decision, previous, expired)

    def trial(
        self,
        latest: Mapping[Key, Observation],
        site: str,
        override: Override,
        now: float,
        wall: float,
        *,
        restore_blocks: Mapping[str, str] | None,
    ) -> Refusal | None:
        """Would this drain be refused? Run through the pure engine; nothing is kept."""
        inputs = self._inputs(latest, now)
        return trial_drain(*inputs, site, override, restore_blocks=restore_blocks, wall=wall)

    def _inputs(self, latest: Mapping[Key, Observation], now: float) -> Inputs:
        """What a round decides from, in `decide`'s order."""
        return self.engine, latest, self.policy, dict(self.overrides), self.pause, now

    def command(self, site: str | None, override: Override | None, pause: Pause | None) -> None:
        """An operator's command taken: the site's override set or removed, the pause
        (`commands` counts them: a coordinated round that read the store before one came
        in must not take its stale read over it)."""
        self.commands += 1
        if site is not None:
            if override is None:
                self.overrides.pop(site, None)
            else:
                self.overrides[site] = override
        self.pause = pause

    def take(self, overrides: Mapping[str, Override], pause: Pause | None) -> bool:
        """The shared store's overrides and pause (coordination); True when they differ
        from the ones held. A copy: a round's expiry compares what was read with what
        is left."""
        if (dict(overrides), pause) == (self.overrides, self.pause):
            return False
        self.overrides, self.pause = dict(overrides), pause
        return True

    def follow(
        self,
        engine: EngineState,
        sites: Mapping[str, SiteDecision],
        latest: Mapping[Key, Observation],
        now: float,
    ) -> bool:
        """A follower takes the leader's memory and, when the leader runs this
        configuration's sites, its decisions; False: the last view is kept."""
        self.engine = engine
        if set(sites) != {spec.name for spec in self.policy.sites}:
            return False  # the leader runs another configuration
        evidence = gather(
            latest,
            self.policy,
            now,
            engine.last_round,
            unreachable=engine.unreachable,
            waiting=engine.waiting,
        )
        self.decision = Decision(engine, sites, (), (), evidence)
        return True
