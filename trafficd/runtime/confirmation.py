"""Whether each draining site's traffic is off, as every traffic target read it back.

Between the reconcile loops (each target's last read-back) and the engine: a
draining site whose every traffic target (HAProxy socket, DNS server or zone)
confirms it gets no traffic from them is in `traffic_off` from then, and the
engine stops its instances only `shutdown_grace` after that. A drain not
confirmed within `shutdown_deadline` keeps its instances up and is reported
blocked, naming the targets holding it (through effects.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from trafficd.actuators.base import DesiredSite, Reconciler, Serving
from trafficd.engine.decide import stops_instances
from trafficd.model import State
from trafficd.runtime.effects import Effects
from trafficd.runtime.export import Holder
from trafficd.runtime.live import Live
from trafficd.runtime.rounds import Rounds


def holders(site: DesiredSite, targets: Sequence[Reconciler]) -> list[Holder]:
    """The traffic targets that do not confirm, from what they read back, that the site
    gets no traffic from them, as (actuator, target, why); empty: confirmed off."""
    if not site.managed:
        return []  # observe mode: nothing is actuated, nothing to wait for
    out = []
    for rec in targets:
        part = next(iter(rec.parts.values()))
        if part.role != "traffic" or not isinstance(part, Serving) or not part.serves(site):
            continue
        name = rec.target or rec.actuator.ident
        traffic = rec.traffic.get(name)
        outcome = rec.outcomes.get(name)
        if traffic is None:
            why = outcome.error if outcome and outcome.error else "not read back yet"
            out.append((rec.actuator.ident, name, why))
        elif traffic.get(site.name, False):
            out.append((rec.actuator.ident, name, "still sends traffic"))
    return out


class Confirmation:
    def __init__(self, live: Live, rounds: Rounds, effects: Effects) -> None:
        self.live, self.rounds, self.effects = live, rounds, effects
        # Draining sites whose traffic every traffic target confirmed off: since when (the
        # engine clock); and the sites reported blocked, with what holds them.
        self.traffic_off: dict[str, float] = {}
        self.blocked: dict[str, list[Holder]] = {}

    def check(
        self,
        now: float,
        targets: Sequence[Reconciler],
        desired: Callable[[], Mapping[str, DesiredSite]],
    ) -> None:
        """Each draining site's confirmation at `now`, and the drains it blocks past
        `shutdown_deadline` (instances kept up, reported). `desired` is asked only when
        a site waits for one."""
        policy = self.live.config.policy
        decision = self.rounds.decision
        wanted: Mapping[str, DesiredSite] | None = None
        for name in sorted(self.live.config.sites):
            memory = self.rounds.engine.site(name)
            if memory.state is State.ACTIVE and name not in self.traffic_off:
                if name in self.blocked:
                    self._blocked(name, [], now)
                continue  # the common case, cheaply
            draining = memory.state is State.DRAINING
            decided = decision is not None and name in decision.sites
            # A drained site whose instances should stop but do not yet (a cause stacked
            # on a maintenance drain, --stop-instances on a drained site) waits, as a
            # draining one does, for every target to confirm its traffic off now.
            waiting = (
                memory.state is State.DRAINED
                and decision is not None
                and decided
                and stops_instances(memory)
                and decision.sites[name].instances == "running"
            )
            held: list[Holder] = []
            if draining or waiting:
                if not decided:
                    held = [("trafficd", "engine", "no decision yet")]
                else:
                    wanted = wanted or desired()
                    held = holders(wanted[name], targets)
            if (draining or waiting) and not held:
                self.traffic_off.setdefault(name, now)
            elif draining or waiting:
                # A target that sends traffic again, or one a reload added and nobody has
                # read yet, withdraws the confirmation: the grace counts from the next one.
                self.traffic_off.pop(name, None)
            elif memory.state is State.DRAINED:
                # Drained before a restart: it was confirmed a grace before, at the latest.
                self.traffic_off.setdefault(name, memory.since - policy.shutdown_grace)
            else:
                self.traffic_off.pop(name, None)
            off = self.traffic_off.get(name)
            self.effects.export.traffic_off(name, 0 if off is None else now - off)
            blocked = (
                (draining or waiting)
                and bool(held)
                and stops_instances(memory)
                and now - memory.since >= policy.shutdown_deadline
            )
            self._blocked(name, held if blocked else [], now)

    def _blocked(self, site: str, held: list[Holder], now: float) -> None:
        before = self.blocked.get(site, [])
        if held:
            self.blocked[site] = held
        else:
            self.blocked.pop(site, None)
        self.effects.blocked(site, before, held, now)
