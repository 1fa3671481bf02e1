"""Rounds: when they run, and with coordination who decides (publish, round, take-over,
follow).

Between the observations and rounds (what a round decides on and keeps) and
the effects (what its outcome makes happen). `Leader.tick` is the one place a
round is run: the confirmation of traffic off, the pure round, its effects,
readiness; the engine loop, an operator's command and a reload all come here.
Alone, an instance decides as soon as new observations arrive. With several
(coordination), every instance publishes its own observations on a wall-clock
grid and reads every vantage's through the shared store; the lease holder
alone decides, writes the shared state (fenced) and actuates, a new one
continues from that state, and the others show it and keep a local copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from trafficd.clock import EngineClock
from trafficd.coordination import Coordinator, SharedStoreError
from trafficd.model import Decision, Override, Refusal
from trafficd.runtime.actuation import Actuation
from trafficd.runtime.effects import Effects
from trafficd.runtime.live import Live
from trafficd.runtime.observations import Observations
from trafficd.runtime.replication import Replication
from trafficd.runtime.rounds import Rounds
from trafficd.store import decisions_from_json, decisions_to_json, engine_from_json, engine_to_json

log = logging.getLogger(__name__)

ROUND_GAP = 0.1  # shortest time between two engine rounds


class Leader:
    def __init__(
        self,
        live: Live,
        clock: EngineClock,
        observations: Observations,
        rounds: Rounds,
        effects: Effects,
        actuation: Actuation,
        replication: Replication,
    ) -> None:
        self.live, self.clock, self.observations = live, clock, observations
        self.rounds, self.effects, self.actuation = rounds, effects, actuation
        self.memory = actuation.memory  # what the actuators remember, shared as leader
        self.replication = replication
        self.ready = False  # a decision every probe had its chance to inform
        self._started = clock.now()
        self._generation: str | None = None  # the shared store's, last seen
        self._followed = ""  # the leader's memory last kept locally (as a follower)

    def tick(self, now: float | None = None, *, wall: float | None = None) -> Decision:
        """One round at `now` (the engine clock); `wall` for operators' expiries."""
        if now is None:
            now, wall = self.clock.now(), self.clock.wall()
        wall = now if wall is None else wall
        self.actuation.check_traffic(now)
        rnd = self.rounds.tick(
            self.observations.latest,
            now,
            wall,
            restore_blocks=self.replication.restore_blocks(),
            traffic_off=self.actuation.confirmation.traffic_off,
            canary=self.actuation.readings,
        )
        self.effects.round(rnd, now)
        # Ready once every probe had its chance to report (probes start jittered).
        if now - self._started >= self.live.config.probes.interval:
            self.ready = True
        return rnd.decision

    def trial(self, site: str, override: Override, now: float, wall: float) -> Refusal | None:
        """Would this drain be refused? A round on the would-be overrides, nothing kept:
        the engine leaves out the overrides expired by `wall`, and the next round expires
        them (here, with coordination, the store's copy would come back in that round
        and be expired, and audited, a second time)."""
        blocks = self.replication.restore_blocks()
        latest = self.observations.latest
        return self.rounds.trial(latest, site, override, now, wall, restore_blocks=blocks)

    async def engine_loop(self) -> None:
        """With one vantage: a round as soon as new observations arrive (at most one per
        ROUND_GAP), and at least one per interval. A fixed grid would add up to an
        interval to every decision; the engine counts each new observation once, so
        extra rounds change nothing else (see evidence.gather).

        With several vantages, rounds stay on the interval grid: a round's quorum is made
        of the observations new in that round, and rounds on every arrival would split
        the vantages' votes over several rounds."""
        config = self.live.config
        interval = config.probes.interval
        if self.live.coord is not None:
            # The wall-clock grid every instance shares: each publishes half an interval
            # before the round, so the leader's round sees every vantage's latest.
            half = interval / 2
            while True:
                phase = self.clock.wall() % interval
                if phase < half:
                    await asyncio.sleep(half - phase)
                    await self.publish()
                else:
                    await asyncio.sleep(interval - phase)
                    await self.coordinated_round()
        eager = len(config.all_vantages) == 1
        loop = asyncio.get_running_loop()
        next_at = loop.time() + interval
        while True:
            if eager:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a
                # cancellation (a reload's) that comes as the event is set.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await self.effects.round_due.wait()
                self.effects.round_due.clear()
            else:
                await asyncio.sleep(max(0.0, next_at - loop.time()))
                next_at += interval
            self.tick()
            if eager:
                await asyncio.sleep(min(ROUND_GAP, interval / 10))

    # --- coordination (several instances) ---------------------------------------------

    async def publish(self) -> None:
        coord = self.live.coord
        assert coord is not None
        try:
            await coord.publish(self.observations.own.values())
        except SharedStoreError as exc:
            coord.lost(exc)
            self.effects.coordination(coord)

    async def coordinated_round(self) -> None:
        """One round with coordination: read every vantage, renew or take the lease; the
        leader decides and writes the shared state (fenced), the others show it."""
        coord = self.live.coord
        assert coord is not None
        now, wall = self.clock.now(), self.clock.wall()
        was_leading = coord.leading()
        self._seed_token(coord)
        commands = self.rounds.commands
        try:
            published = await coord.observations()
            leading = await coord.campaign()
            shared = await coord.load_state()
            overrides, pause = await coord.overrides(), await coord.pause()
            generation = await coord.generation()
        except SharedStoreError as exc:
            coord.lost(exc)  # nothing is decided or actuated until the store answers
            self.effects.coordination(coord)
            return
        coord.found()
        self._keep_token(coord)
        read = overrides  # as the store holds them: what the expiry below deletes from
        overrides = {s: o for s, o in overrides.items() if self.rounds.expired.get(s) != o}
        self.observations.merge(published, now, self.live.config.all_vantages)
        if generation is not None:
            self._generation = generation
        elif shared is None:
            # A store with neither a generation nor a shared state started empty
            # (restarted without persistence, or never used): what this instance holds
            # (state.json) stands, with any command taken since; the leader re-publishes
            # it below. (A shared state without a generation is an older trafficd's
            # store: its overrides are the current ones.)
            overrides = {**self.rounds.overrides, **overrides}
            pause = pause or self.rounds.pause
        if self.rounds.commands != commands:
            # A command was taken here while this round awaited the store: what it read
            # is older than what this instance holds (and wrote to the store); the next
            # round reads both.
            overrides, pause = dict(self.rounds.overrides), self.rounds.pause
        elif self.rounds.take(overrides, pause):
            self.effects.save()  # kept durably by every instance, for a store that comes back empty
        if leading and not was_leading:
            self._take_over(coord, shared)
        if leading:
            decision = self.tick(now, wall=wall)
            for site in set(read) - set(self.rounds.overrides):  # expired, here or in the round
                with contextlib.suppress(SharedStoreError):
                    await coord.expire_override(site)  # never one written meanwhile
                self.rounds.expired.pop(site, None)
            try:
                if generation is None:
                    await self._republish(coord)
                await coord.save_state(self._shared_doc(decision))
            except SharedStoreError as exc:
                coord.lost(exc)
        elif shared is not None:
            self._follow(shared, now)
        self.ready = self.ready or self.rounds.decision is not None
        self.effects.coordination(coord)

    def _seed_token(self, coord: Coordinator) -> None:
        """The highest fencing token state.json kept reaches the store's client before it
        campaigns: a store that restarted empty numbers the next leader above it
        (coordination/base.py)."""
        backend, kept = coord.backend, self.effects.store.highest_token
        backend.highest_token = max(backend.highest_token, kept)

    def _keep_token(self, coord: Coordinator) -> None:
        """A token seen for the first time (ours or the leader's) is saved before this
        round acts on it."""
        store, seen = self.effects.store, coord.backend.highest_token
        if seen > store.highest_token:
            store.highest_token = seen
            self.effects.save()

    def _shared_doc(self, decision: Decision) -> dict[str, Any]:
        return {
            "engine": engine_to_json(self.rounds.engine),
            "decisions": decisions_to_json(decision.sites),
            "actuators": self.memory.collect(),
            "leader": self.live.config.vantage,
            "t": self.clock.wall(),
        }

    async def _republish(self, coord: Coordinator) -> None:
        """The shared store holds no generation: the leader writes back the overrides and
        the pause it holds, and says so in the audit log."""
        overrides, pause = self.rounds.overrides, self.rounds.pause
        generation = await coord.republish(overrides, pause)
        if generation is None:
            return  # the lease moved on: the next leader does it
        seen, self._generation = self._generation, generation
        self.effects.announce(
            "store_republished",
            vantage=self.live.config.vantage,
            generation=generation,
            previous=seen,
            overrides=sorted(overrides),
            paused=pause is not None,
        )
        log.warning(
            "coordination: the shared store held no generation (it started empty); "
            "re-published %d override(s)%s",
            len(overrides),
            " and the pause" if pause else "",
        )

    def _take_over(self, coord: Coordinator, shared: Mapping[str, Any] | None) -> None:
        """A new leader continues exactly where the old one stopped; with nothing in
        the store (a store that restarted empty), from what this instance last knew."""
        if shared is not None:
            self.rounds.engine = engine_from_json(shared.get("engine", {}))
            self.memory.replace(shared.get("actuators", {}), restore=True)
        vantage = self.live.config.vantage
        self.effects.announce(
            "leader",
            vantage=vantage,
            token=coord.token,
            previous=shared.get("leader") if shared else None,
        )
        log.warning("coordination: this instance (%s) leads now", vantage)
        self.effects.wake_actuators()

    def _follow(self, shared: Mapping[str, Any], now: float) -> None:
        """A follower shows the leader's decisions and keeps its memory current."""
        engine = engine_from_json(shared.get("engine", {}))
        self.memory.replace(shared.get("actuators", {}), restore=False)
        sites = decisions_from_json(shared.get("decisions", {}))
        if not self.rounds.follow(engine, sites, self.observations.latest, now):
            return  # the leader runs another configuration: keep the last view
        self.effects.decided()
        memory = json.dumps([shared.get("engine"), shared.get("actuators")], sort_keys=True)
        if memory != self._followed:  # the local copy, for a store that comes back empty
            self._followed = memory
            self.effects.save()
