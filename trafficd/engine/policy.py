"""What the engine needs to know of the configuration, as plain frozen data.

Built once per (re)load from the configuration by `trafficd.policy.engine_policy`,
outside the engine: the engine reads nothing else of the configuration and
imports none of it, which keeps it testable with hand-made policies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Literal


@dataclass(frozen=True)
class SiteSpec:
    name: str
    storage: tuple[str, ...]  # preferred locations, first one first
    weight: int = 100
    observe: bool = False
    # What the site's endtoend storage: true proves healthy: "first" (Quay v3.17 and
    # older check only the first preferred location) or "all" (v3.18 checks every one).
    storage_check: Literal["first", "all"] = "first"

    @property
    def checked(self) -> tuple[str, ...]:
        """The locations the site's storage: true proves healthy."""
        return self.storage if self.storage_check == "all" else self.storage[:1]


@dataclass(frozen=True)
class EnginePolicy:
    sites: tuple[SiteSpec, ...]
    locations: tuple[str, ...]
    vantages: tuple[str, ...]
    quorum: int
    interval: float = 2.0
    storage_interval: float | None = None  # storage probes' own interval (default: interval)
    fall: int = 3
    rise: int = 5
    min_active_sites: int = 1
    hold_down: float = 60.0
    max_drains: int = 1
    drain_window: float = 600.0
    shutdown_grace: float = 60.0
    restore_timeout: float = 600.0
    damping_window: float = 3600.0
    max_hold_down: float = 3600.0
    # The gradual return: percents of its weight a returning site passes through (the
    # last is 100), the time at each, and the canary's limits on live traffic's 5xx.
    return_steps: tuple[int, ...] = (100,)
    return_step: float = 120.0
    return_max_error_ratio: float = 0.05
    return_min_requests: int = 100

    @property
    def stale_after(self) -> float:
        """Observations older than 3 intervals are unknown (docs/design.md)."""
        return 3 * self.interval

    @property
    def storage_stale_after(self) -> float:
        """Storage observations: three of the storage probes' own intervals."""
        return 3 * max(self.interval, self.storage_interval or self.interval)

    @cached_property
    def firsts(self) -> Mapping[str, tuple[str, ...]]:
        """Per location, the sites whose first preferred location it is."""
        out: dict[str, list[str]] = {}
        for s in self.sites:
            if s.storage:
                out.setdefault(s.storage[0], []).append(s.name)
        return {loc: tuple(names) for loc, names in out.items()}

    @cached_property
    def proven_by(self) -> Mapping[str, tuple[str, ...]]:
        """Per location, the sites whose storage: true proves it healthy: those whose
        first location it is, then those that check every location and list it."""
        out: dict[str, list[str]] = {loc: list(names) for loc, names in self.firsts.items()}
        for s in self.sites:
            for loc in s.checked[1:]:
                out.setdefault(loc, []).append(s.name)
        return {loc: tuple(names) for loc, names in out.items()}

    def site(self, name: str) -> SiteSpec:
        return next(s for s in self.sites if s.name == name)
