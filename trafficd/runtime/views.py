"""What the runtime shows: each site's view, its verdict, the audit log, coordination.

Read-only, beside the rounds: the API (api.py) answers `/api/v1/sites`,
`/sites/{site}/verdict`, `/api/v1/events` and `/api/v1/coordination` from here,
and nothing here changes a thing. Before the first decision the saved state
answers: a site drained in state.json is `drained` from the first request, a
site the saved state does not know is `unknown` (never `active`).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from trafficd.clock import EngineClock
from trafficd.model import Probe, SiteDecision, State
from trafficd.runtime.actuation import Actuation
from trafficd.runtime.commands import UnknownSiteError
from trafficd.runtime.live import Live
from trafficd.runtime.observations import Observations
from trafficd.runtime.replication import Replication
from trafficd.runtime.rounds import Rounds
from trafficd.store import Store, read_events

EVENTS = 1000  # the newest events an answer holds


class Views:
    def __init__(
        self,
        live: Live,
        clock: EngineClock,
        store: Store,
        observations: Observations,
        rounds: Rounds,
        actuation: Actuation,
        replication: Replication,
    ) -> None:
        self.live, self.clock, self.store = live, clock, store
        self.observations, self.rounds = observations, rounds
        self.actuation, self.replication = actuation, replication

    def _decided(self, site: str) -> SiteDecision | None:
        if site not in self.live.config.sites:
            raise UnknownSiteError(site)
        decision = self.rounds.decision
        return decision.sites.get(site) if decision else None

    def verdict(self, site: str) -> tuple[bool, str]:
        """Whether the site should take traffic, and its state."""
        d = self._decided(site)
        if d is not None:
            return d.weight > 0, d.state.value
        # No decision yet (just started, or the shared store unreachable): the saved
        # state answers; a site it does not know is unknown, not active.
        memory = self.rounds.engine.sites.get(site)
        if memory is None:
            return False, "unknown"
        active = memory.state is State.ACTIVE and self.live.config.sites[site].weight > 0
        return active, memory.state.value

    def sites(self) -> list[dict[str, Any]]:
        """Every site: its decision, reasons, health per vantage and probe, override,
        confirmation of traffic off, what holds its stop and what is out of sync."""
        health: dict[str, dict[str, dict[str, Any]]] = {}  # site -> vantage -> probe
        for (vantage, probe, target), obs in sorted(self.observations.latest.items()):
            if probe is not Probe.STORAGE:
                health.setdefault(target, {}).setdefault(vantage, {})[probe.value] = {
                    "ok": obs.ok,
                    "reason": obs.reason,
                    "status": obs.status,
                    "services": dict(obs.services),
                    "t": obs.t,
                }
        config, confirmation = self.live.config, self.actuation.confirmation
        desired = self.actuation.desired() if self.rounds.decision is not None else None
        out = []
        for name in sorted(config.sites):
            d = self._decided(name)
            memory = self.rounds.engine.site(name)
            o = self.rounds.overrides.get(name)
            reasons = self.replication.with_risk(name, d.reasons, d.cause, d.state) if d else []
            held = confirmation.blocked.get(name, [])
            out.append(
                {
                    "name": name,
                    "state": d.state.value if d else memory.state.value,
                    "cause": (d.cause.value if d and d.cause else None),
                    "weight": d.weight if d else 0,
                    # While it returns in steps: the step's 1-based number and percent.
                    "return_step": d.return_step if d else None,
                    "return_percent": d.return_percent if d else None,
                    "instances": d.instances if d else "running",
                    "mode": config.sites[name].mode,
                    "reasons": reasons,
                    "since": None if memory.since == float("-inf") else memory.since,
                    "health": health.get(name, {}),
                    "override": dataclasses.asdict(o) if o else None,
                    "traffic_off": confirmation.traffic_off.get(name),
                    "shutdown_blocked": [f"{a} {t}: {why}" for a, t, why in held],
                    "out_of_sync": self.actuation.out_of_sync(desired[name]) if desired else [],
                }
            )
        return out

    def events(self, since: float | None) -> list[dict[str, Any]]:
        """The audit log's newest events, of the last `since` seconds (wall time)."""
        cutoff = None if since is None else self.clock.wall() - since
        return list(collections.deque(read_events(self.store.dir, cutoff), maxlen=EVENTS))

    def coordination(self) -> dict[str, Any]:
        return self.live.view()
