"""Test doubles behind the runtime's real interfaces: a fake clock (its two readings), a
scripted prober (probe tasks, probers/schedule.py's `ProbeTask`) and recording
actuators (actuators/base.py's `Actuator`, reconciled by the real `Reconciler`) and
a shared store in memory (coordination's `SharedStore`). Nothing here sleeps or
reads the system's time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

from trafficd.actuators.base import (
    Actuator,
    Canary,
    Desired,
    DesiredSite,
    Plan,
    ResponseCounting,
    Role,
    TrafficReporting,
)
from trafficd.clock import EngineClock
from trafficd.config.model import Config
from trafficd.model import Observation, Probe, Responses
from trafficd.probers.schedule import ProbeTask

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


@dataclass
class ScriptedProber:
    """Every probe of a configuration, answering as the test says: a site or location in
    `down` fails (a site's endtoend also fails when its first location is down, as
    Quay's storage check does), each observation stamped with the clock's wall time."""

    clock: FakeClock
    config: Config
    down: set[str] = field(default_factory=set)

    def tasks(self) -> list[ProbeTask]:
        out = []
        for name in sorted(self.config.sites):
            for probe in (Probe.ENDTOEND, Probe.INSTANCE):
                out.append(self._task(probe, name))
        out += [self._task(Probe.STORAGE, loc) for loc in sorted(self.config.storage)]
        return out

    def _task(self, probe: Probe, subject: str) -> ProbeTask:
        interval = self.config.probes.interval

        def run() -> Awaitable[Observation]:
            return self._answer(probe, subject)

        return ProbeTask(f"{probe.value}/{subject}", probe, subject, interval, run)

    async def _answer(self, probe: Probe, subject: str) -> Observation:
        t, vantage = self.clock.wall(), self.config.vantage
        if probe is Probe.STORAGE:
            up = subject not in self.down
            return Observation(t, vantage, probe, subject, up, reason=None if up else "connect")
        if probe is Probe.INSTANCE or subject in self.down:
            up = subject not in self.down
            return Observation(t, vantage, probe, subject, up, 200 if up else 503)
        storage = self.config.sites[subject].storage or []
        ok = not storage or storage[0] not in self.down
        services = {"auth": True, "database": True, "redis": True, "storage": ok}
        status, reason = (200, None) if ok else (503, "storage")
        return Observation(t, vantage, probe, subject, ok, status, reason, services)


@dataclass
class RecordingActuator(Actuator[dict[str, Any], tuple[str, Any]], TrafficReporting[Any]):
    """A backend held in memory: each site's weight (`traffic`) or whether its
    instances run (`instances`); every change applied is recorded, in order."""

    ident: str
    role: Role  # "traffic" or "instances"
    held: dict[str, Any] = field(default_factory=dict)
    applied: list[str] = field(default_factory=list)

    def serves(self, site: DesiredSite) -> bool:
        return site.managed

    def sends_traffic(self, current: Any, site: DesiredSite) -> bool:
        return bool(self._have(current, site))

    async def read(self) -> dict[str, Any]:
        return dict(self.held)

    def _want(self, site: DesiredSite) -> Any:
        return site.weight if self.role == "traffic" else site.instances

    def _have(self, current: Any, site: DesiredSite) -> Any:
        default = site.configured_weight if self.role == "traffic" else "running"
        return current.get(site.name, default)

    def plan(self, current: dict[str, Any], desired: Desired) -> Plan[tuple[str, Any]]:
        want = {n: self._want(s) for n, s in desired.items() if self.serves(s)}
        change = {n: v for n, v in want.items() if self._have(current, desired[n]) != v}
        return Plan([f"{n} {v}" for n, v in sorted(change.items())], payload=sorted(change.items()))

    async def apply(self, plan: Plan[tuple[str, Any]]) -> None:
        self.held.update(plan.payload)
        self.applied += plan.changes

    async def preflight(self) -> None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class CountingActuator(RecordingActuator, ResponseCounting):
    """A load balancer that also counts each site's HTTP responses, as HAProxy's `show
    stat` does (cumulative since it started): the test adds to `counts` (site ->
    (responses, 5xx)); a site in `unreadable` cannot be read this time."""

    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)

    def canary_sites(self) -> Iterable[str]:
        return sorted(self.counts)

    async def responses(self) -> Canary:
        readable = {s: c for s, c in self.counts.items() if s not in self.unreadable}
        return Canary(
            {s: {self.ident: Responses(total, errors)} for s, (total, errors) in readable.items()},
            {s: (self.ident,) for s in sorted(self.unreadable)},
        )


class MemoryStore:
    """A double of coordination's SharedStore, in a dict (the real ones are tested against
    redis-server and etcd in tests/coordination/): `gate` names an operation whose next
    call waits for `release`, to hold a round between two of its reads."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.highest_token = 0
        self.counter = 0
        self.gate: str | None = None
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def _op(self, name: str) -> None:
        await asyncio.sleep(0)
        if self.gate == name:
            self.gate = None
            self.reached.set()
            await self.release.wait()

    async def put(self, key: str, value: str, ttl: float | None = None) -> None:
        await self._op("put")
        self.data[key] = value

    async def get(self, key: str) -> str | None:
        await self._op("get:" + key.rsplit("/", 1)[-1])
        return self.data.get(key)

    async def delete(self, key: str) -> None:
        await self._op("delete")
        self.data.pop(key, None)

    async def delete_if(self, key: str, value: str) -> bool:
        if self.data.get(key) == value:
            del self.data[key]
            return True
        return False

    async def scan(self, prefix: str) -> dict[str, str]:
        await self._op("scan")
        return {k: v for k, v in self.data.items() if k.startswith(prefix)}

    async def campaign(self, lock: str, holder: str, ttl: float) -> int | None:
        cur = self.data.get(lock)
        if cur is not None:
            name, _, tok = cur.rpartition("|")
            return int(tok) if name == holder else None
        self.counter = max(self.counter, self.highest_token) + 1
        self.data[lock] = f"{holder}|{self.counter}"
        self.highest_token = self.counter
        return self.counter

    async def holder(self, lock: str) -> tuple[str, int] | None:
        cur = self.data.get(lock)
        if cur is None:
            return None
        name, _, tok = cur.rpartition("|")
        return name, int(tok)

    async def fenced_put(self, lock: str, holder: str, token: int, key: str, value: str) -> bool:
        if self.data.get(lock) != f"{holder}|{token}":
            return False
        self.data[key] = value
        return True

    async def resign(self, lock: str, holder: str, token: int) -> None:
        self.data.pop(lock, None)

    async def close(self) -> None:
        pass
