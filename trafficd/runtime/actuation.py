"""The actuation: desired state, one reconcile loop per actuator target, preflight, notify.

Between the rounds (the decision in force) and the actuators (actuators/): the
decision joined with each site's backend settings is the desired state, and
every target of every actuator (each HAProxy socket, DNS server or zone,
Kubernetes or command site) is reconciled towards it in its own loop, woken by
every decision change (effects.py) and every `RESYNC_EVERY` to correct drift,
so a backend that is down or slow holds up no other. Only the leader (or a
lone instance) actuates, and nothing is touched during a hands-off pause. A
traffic target's read-back feeds the confirmation of traffic off at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from trafficd.actuators import build
from trafficd.actuators.base import (
    Actuator,
    BuildContext,
    Canary,
    DesiredSite,
    Notifying,
    Reconciler,
    Remembering,
    Serving,
    desired_state,
    read_canary,
)
from trafficd.clock import EngineClock
from trafficd.metrics import Metrics
from trafficd.model import CanaryReading
from trafficd.runtime.confirmation import Confirmation
from trafficd.runtime.effects import Effects
from trafficd.runtime.live import Live
from trafficd.runtime.memory import Memory
from trafficd.runtime.replication import Replication
from trafficd.runtime.rounds import Rounds

log = logging.getLogger(__name__)

PREFLIGHT_EVERY = 300.0
RESYNC_EVERY = 30.0

Task = tuple[str, Callable[[], Awaitable[None]]]


class Actuation:
    def __init__(
        self,
        live: Live,
        clock: EngineClock,
        metrics: Metrics,
        rounds: Rounds,
        effects: Effects,
        memory: Memory,
        replication: Replication,
        *,
        dry_run: bool = False,
    ) -> None:
        self.live, self.metrics, self.clock = live, metrics, clock
        self.rounds, self.effects, self.memory = rounds, effects, memory
        self.replication = replication
        self.dry_run = dry_run
        self.reconcilers: list[Reconciler] = []  # one per actuator: preflight, notify
        self.targets: list[Reconciler] = []  # one per actuator target, each its own loop
        self.confirmation = Confirmation(live, rounds, effects)
        self.canary = Canary()  # the last reading, while a site returns in steps
        self.readings: dict[str, CanaryReading] = {}  # the same, stamped: the engine's input
        # What the targets were built from (actuator id -> its section, or the object a
        # caller built) and the sites then: a reload keeps an unchanged target's read-back.
        self._made: dict[str, object] = {}
        self._sites: dict[str, object] = {}

    def build(self, actuators: list[Actuator[Any, Any]] | None = None) -> list[Task]:
        """The configuration's actuators (or `actuators`, already built) and their loops.

        On a reload, a target whose actuator and sites are unchanged keeps what it last
        read back: a drain's confirmation of traffic off stands (a reload every minute
        would otherwise start the shutdown grace over for ever), while a target added
        or changed by the reload must read back before it confirms anything."""
        config = self.live.config
        kept = {
            (rec.actuator.ident, name): (self._made.get(rec.actuator.ident), rec)
            for rec in self.targets
            for name in rec.parts
        }
        same_sites = self._sites == dict(config.sites)
        made: dict[str, object]
        if actuators is None:
            context = BuildContext(sites=config.sites, metrics=self.metrics)
            actuators = [build(section, context) for section in config.actuators]
            made = {a.ident: s for a, s in zip(actuators, config.actuators, strict=True)}
        else:
            made = {a.ident: a for a in actuators}  # built by the caller: the same object
        # An actuator the reload removed: its series go (an out-of-sync gauge left at 0
        # would keep TrafficdActuatorOutOfSync firing for ever); a target one that stays
        # no longer has (a site removed from a command actuator, an HAProxy socket) below.
        self.metrics.forget("actuator", set(self._made) - set(made))
        self._made, self._sites = made, dict(config.sites)
        self.reconcilers, self.targets, self.memory.actuators = [], [], []
        self.effects.wakeups = {}
        tasks: list[Task] = []
        for actuator in actuators:
            self.memory.adopt(actuator)
            self.reconcilers.append(self._reconciler(actuator))
            if actuator.role == "notify":
                continue
            for target in self.reconcilers[-1].parts:
                rec = self._reconciler(actuator, target)
                made_from, before = kept.get((actuator.ident, target), (None, None))
                if same_sites and before is not None and made_from == made[actuator.ident]:
                    rec.traffic[target] = before.traffic.get(target)
                    if target in before.outcomes:
                        rec.outcomes[target] = before.outcomes[target]
                self.targets.append(rec)
                wake = asyncio.Event()
                wake.set()
                self.effects.wakeups[f"{actuator.ident}\0{target}"] = wake

                def loop(rec: Reconciler = rec, wake: asyncio.Event = wake) -> Awaitable[None]:
                    return self.reconcile_loop(rec, wake)

                tasks.append((f"reconcile/{actuator.ident}/{target}", loop))
        built = {(rec.actuator.ident, name) for rec in self.targets for name in rec.parts}
        for ident, target in set(kept) - built:
            if ident in made:
                self.metrics.forget_where({"actuator": ident, "target": target})
        return [
            *tasks,
            ("preflight", self.preflight_loop),
            ("notify", self.notify_loop),
            ("canary", self.canary_loop),
        ]

    def _reconciler(self, actuator: Actuator[Any, Any], target: str | None = None) -> Reconciler:
        coord = self.live.coord
        return Reconciler(
            actuator,
            self.metrics,
            target=target,
            dry_run=self.dry_run,
            guard=coord.still_leading if coord is not None else None,
            fence=self.live.token if coord is not None else None,
        )

    def desired(self) -> dict[str, DesiredSite]:
        """What the actuators make true; a storage-drained site's reasons carry the blobs
        at risk, as its audit event does (the command actuator's TRAFFICD_REASON)."""
        decision = self.rounds.decision
        assert decision is not None
        sites = desired_state(self.live.config, decision.sites)
        if self.replication.monitor is None:
            return sites
        for name, site in sites.items():
            reasons = self.replication.with_risk(name, site.reasons, site.cause, site.state)
            if len(reasons) != len(site.reasons):
                sites[name] = dataclasses.replace(site, reasons=tuple(reasons))
        return sites

    def check_traffic(self, now: float) -> None:
        self.confirmation.check(now, self.targets, self.desired)

    def out_of_sync(self, site: DesiredSite) -> list[str]:
        """The actuator targets that act on the site and do not hold its desired state."""
        out = []
        for rec in self.targets:
            name = rec.target or rec.actuator.ident
            outcome = rec.outcomes.get(name)
            if outcome is None or outcome.in_sync:
                continue
            part = rec.parts[name]
            if isinstance(part, Serving) and part.serves(site):
                out.append(f"{rec.actuator.ident} {name}: {outcome.error or 'not in sync'}")
        return out

    async def reconcile(self, rec: Reconciler) -> bool:
        """One pass of a target's loop: reconciled towards the desired state when there
        is a decision, this instance leads and no hands-off pause holds; audited when
        it changed or failed. True: it should be retried soon (it failed)."""
        pause = self.rounds.pause
        if self.rounds.decision is None or (pause is not None and pause.hands_off):
            return False
        if not self.live.leads():
            return False  # another instance leads: only it changes the backends
        confirmed = set(self.confirmation.traffic_off)
        previous = rec.outcomes.get(rec.target or "")
        outcome = await rec.reconcile(self.desired())
        if (
            outcome.applied
            or outcome.error
            or (previous is not None and previous.in_sync != outcome.in_sync)
        ):
            self.effects.audit("actuation", **dataclasses.asdict(outcome))
        if rec.actuator.role == "traffic":
            # A confirmation counts from when it was read back, not the next round.
            self.check_traffic(self.clock.now())
            if self.confirmation.traffic_off.keys() - confirmed:
                self.effects.round_due.set()
        if outcome.applied and isinstance(rec.actuator, Remembering):
            self.effects.save()
        return outcome.error is not None

    async def reconcile_loop(self, rec: Reconciler, wake: asyncio.Event) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation
            # (a reload's) that comes as the wake is set, and the loop outlives its reload.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RESYNC_EVERY):
                    await wake.wait()
            wake.clear()
            if await self.reconcile(rec):
                # Retry sooner than the resync: the backend may be back in seconds.
                interval = self.live.config.probes.interval
                await asyncio.sleep(min(RESYNC_EVERY, max(1.0, interval)))
                wake.set()

    async def read_canary(self) -> None:
        """One reading of the canary: the load balancers' response counters, while a
        site returns in steps and this instance leads (the engine judges a step by
        them); else none. Stamped with the engine clock as the read starts, so that the
        engine counts in a step only what was read after it began."""
        decision = self.rounds.decision
        returning = decision is not None and any(
            d.return_step is not None for d in decision.sites.values()
        )
        if not returning or not self.live.leads():
            self.canary, self.readings = Canary(), {}
            return
        at = self.clock.now()
        self.canary = await read_canary(rec.actuator for rec in self.reconcilers)
        self.readings = {s: CanaryReading(at, c) for s, c in self.canary.responses.items()}
        for site, sockets in self.canary.incomplete.items():
            self.readings[site] = CanaryReading(at, {}, sockets)  # the step waits
        if self.readings:
            self.effects.round_due.set()  # a share over the limit abandons at once

    async def canary_loop(self) -> None:
        """A reading every interval, and at once when a step begins (its base)."""
        due = self.effects.canary_due
        while True:
            due.clear()
            await self.read_canary()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(due.wait(), self.live.config.probes.interval)

    async def preflight_loop(self) -> None:
        while True:
            for rec in self.reconcilers:
                error = await rec.preflight()
                if error:
                    log.error("preflight: %s", error)
            await asyncio.sleep(PREFLIGHT_EVERY)

    async def notify_loop(self) -> None:
        while True:
            event = await self.effects.notices.get()
            for rec in self.reconcilers:
                if isinstance(rec.actuator, Notifying):
                    await rec.actuator.notify(event)

    async def close(self) -> None:
        for rec in self.reconcilers:
            with contextlib.suppress(Exception):
                await rec.actuator.close()
