"""A fake-clock driver for the engine: builds each round's observations and calls `decide`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from trafficd.engine import EnginePolicy, SiteSpec, decide
from trafficd.model import (
    CanaryReading,
    Decision,
    EngineState,
    Observation,
    Override,
    Pause,
    Probe,
    Responses,
)

HEALTHY = {"auth": True, "database": True, "redis": True, "storage": True}


def make_policy(
    sites: Mapping[str, tuple[str, ...]] | None = None,
    vantages: tuple[str, ...] = ("v1",),
    quorum: int | None = None,
    observe: tuple[str, ...] = (),
    **kw: Any,
) -> EnginePolicy:
    sites = sites or {"eu": ("eustorage",), "us": ("usstorage",)}
    defaults: dict[str, Any] = dict(
        interval=1.0,
        fall=3,
        rise=2,
        min_active_sites=1,
        hold_down=0.0,
        max_drains=1,
        drain_window=600.0,
        shutdown_grace=5.0,
        restore_timeout=60.0,
        damping_window=3600.0,
        max_hold_down=3600.0,
    )
    defaults.update(kw)
    locations = tuple(sorted({loc for locs in sites.values() for loc in locs}))
    return EnginePolicy(
        sites=tuple(SiteSpec(n, locs, 100, n in observe) for n, locs in sorted(sites.items())),
        locations=locations,
        vantages=vantages,
        quorum=quorum if quorum is not None else len(vantages) // 2 + 1,
        **defaults,
    )


class Sim:
    """One engine and a fake clock that advances one interval per round."""

    def __init__(self, policy: EnginePolicy) -> None:
        self.policy = policy
        self.state = EngineState()
        self.latest: dict[tuple[str, Probe, str], Observation] = {}
        self.now = 0.0
        self.overrides: dict[str, Override] = {}
        self.pause: Pause | None = None
        self.restore_blocks: dict[str, str] = {}  # the daemon's restore gate, by hand
        # The daemon's traffic-off confirmations, by hand (None: the engine without them).
        self.traffic_off: dict[str, float] | None = None
        # The load balancer's response counters per site, by hand (None: no load balancer):
        # one counter each, read afresh every round (`readings` wraps them), `read_lag`
        # seconds before the round (the runtime's canary loop is not in phase with the
        # rounds); a site in `unread` is counted but its socket cannot be read.
        self.canary: dict[str, Responses] | None = None
        self.read_lag = 0.0
        self.unread: set[str] = set()
        self.history: list[Decision] = []
        # Staggered: one engine call per observation, as the daemon does with one vantage
        # (rounds run as probes complete); otherwise one call per interval.
        self.staggered = False
        self._pending: list[Observation] = []
        self.times: list[float] = []  # when each decision in history was made
        self.round_of: list[int] = []  # which round (interval) each decision belongs to
        self._round = 0

    def observe(self, vantage: str, probe: Probe, target: str, ok: bool | None, **kw: Any) -> None:
        o = Observation(t=self.now, vantage=vantage, probe=probe, subject=target, ok=ok, **kw)
        if self.staggered:
            self._pending.append(o)
        else:
            self.latest[o.key] = o

    def readings(self) -> dict[str, CanaryReading] | None:
        """`canary` as the runtime reads it: at this round's time, one counter per site."""
        if self.canary is None:
            return None
        at = self.now - self.read_lag
        return {
            s: CanaryReading(at, {}, ("lb",)) if s in self.unread else CanaryReading(at, {"lb": r})
            for s, r in self.canary.items()
        }

    def round(
        self,
        *,
        storage: Mapping[str, bool | None] | None = None,
        endtoend: Mapping[str, Mapping[str, bool] | str | None] | None = None,
        instance: Mapping[str, bool | None] | None = None,
        only: tuple[str, ...] | None = None,
        silent: bool = False,
    ) -> Decision:
        """Everything healthy unless said otherwise; endtoend takes services or a reason.

        With `only`, the failures are seen by those vantages alone; the others see health.
        """
        failures = (storage or {}, endtoend or {}, instance or {})
        if not silent:
            for v in self.policy.vantages:
                seen = failures if only is None or v in only else ({}, {}, {})
                storage, endtoend, instance = seen
                for loc in self.policy.locations:
                    self.observe(v, Probe.STORAGE, loc, storage.get(loc, True))
                for spec in self.policy.sites:
                    e = endtoend.get(spec.name, HEALTHY)
                    if isinstance(e, str):
                        self.observe(v, Probe.ENDTOEND, spec.name, False, reason=e)
                    elif e is None:
                        self.observe(v, Probe.ENDTOEND, spec.name, None)
                    else:
                        services = {**HEALTHY, **e}
                        self.observe(
                            v,
                            Probe.ENDTOEND,
                            spec.name,
                            all(services.values()),
                            status=200 if all(services.values()) else 503,
                            services=services,
                        )
                    self.observe(v, Probe.INSTANCE, spec.name, instance.get(spec.name, True))
        self._round += 1
        if not self._pending:
            decision = self._decide()
            self.now += self.policy.interval
            return decision
        start, step = self.now, self.policy.interval / len(self._pending)
        pending, self._pending = self._pending, []
        for i, o in enumerate(pending):
            self.now = start + i * step
            self.latest[o.key] = replace(o, t=self.now)
            decision = self._decide()
        self.now = start + self.policy.interval
        return decision

    def _decide(self) -> Decision:
        decision = decide(
            self.state,
            self.latest,
            self.policy,
            self.overrides,
            self.pause,
            self.now,
            restore_blocks=self.restore_blocks,
            traffic_off=self.traffic_off,
            canary=self.readings(),
        )
        self.state = decision.state
        self.history.append(decision)
        self.times.append(self.now)
        self.round_of.append(self._round - 1)
        return decision

    def first_rounds(self, n: int) -> list[Decision]:
        """The decisions made in the first `n` rounds (several each when staggered)."""
        return [d for d, r in zip(self.history, self.round_of, strict=True) if r < n]

    def rounds(self, n: int, **kw: Any) -> list[Decision]:
        return [self.round(**kw) for _ in range(n)]

    def states(self) -> dict[str, str]:
        return {s.name: self.state.site(s.name).state.value for s in self.policy.sites}

    def transitions(self) -> list[tuple[float, str, str, str]]:
        out = []
        for at, d in zip(self.times, self.history, strict=True):
            for t in d.transitions:
                out.append((at, t.site, t.from_state.value, t.to_state.value))
        return out

    def refusals(self) -> list[tuple[str, str]]:
        return [(r.site, r.rule) for d in self.history for r in d.refusals]

    def drain(self, site: str, **kw: Any) -> None:
        self.overrides[site] = Override(kind="drain", reason="test", who="admin", at=self.now, **kw)

    def hold(self, site: str) -> None:
        self.overrides[site] = Override(kind="hold", reason="test", who="admin", at=self.now)

    def with_policy(self, **kw: Any) -> None:
        self.policy = replace(self.policy, **kw)


STORAGE_FALSE = {"storage": False}
