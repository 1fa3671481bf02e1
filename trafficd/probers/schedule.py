"""Probe scheduling: one jittered loop per site probe (every `interval`) and per storage
location (every `storage_interval`).

Between the probers and the engine: `probe_tasks(config, ...)` turns the
configuration into one task per site probe and per storage location, and
`run_probe_loop` runs one task forever, handing each observation to a sink
(the daemon's latest-observation store). Sleep, clock and randomness are
injected so the schedule is tested on a fake clock. A task that raises
(which probers never should) is reported as an unknown observation and the
loop goes on.

Probes start on a shared grid (`GRID`, 50 ms): each is due at its own jittered
time and starts at the first grid point after it, so the event loop wakes once
per grid point for every probe due there rather than once per probe. Waking
an idle process costs more than a health probe's own work: 200 health
endpoints at 1 s took 0.30 ms of CPU per probe on scattered wake-ups and
0.21 ms on the grid (bench/probes.py); the daemon watching 200 sites went
from 28% to 18% of a core (bench/failover.py, cost part). Probes of many
sites still spread over the whole interval, on `interval / GRID` points.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from trafficd.config.model import Config, Probes
from trafficd.model import Observation, Probe
from trafficd.probers import backend_for
from trafficd.probers.base import StorageBackend, StorageProbeSettings, probe_storage
from trafficd.probers.quay import QuayProber, SiteEndpoint
from trafficd.probers.registry import RegistryProber

Sink = Callable[[Observation], None]

GRID = 0.05  # seconds between the points at which probes start (see above)


@dataclass(frozen=True)
class ProbeTask:
    name: str  # e.g. "endtoend/eu", "storage/eustorage"
    probe: Probe
    subject: str  # the site or the storage location probed, as `Observation.subject`
    interval: float
    run: Callable[[], Awaitable[Observation]]
    close: Callable[[], None] | None = None  # its kept-alive connections, at shutdown


async def run_probe_loop(
    task: ProbeTask,
    sink: Sink,
    *,
    vantage: str,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] | None = None,
    rng: random.Random | None = None,
    grid: float | None = None,
) -> None:
    """Probe `task.subject` every `task.interval`, starting at a random offset (jitter), each
    probe at the first point of the `grid` (default `GRID`, at most a twentieth of the
    interval; 0: none) at or after it is due."""
    r = rng or random.Random()  # noqa: S311 - jitter, not cryptography
    # The loop's own clock: sleeps to one grid point then end at the same timer deadline.
    clock = clock or asyncio.get_running_loop().time
    step = min(GRID, task.interval / 20) if grid is None else grid
    # So that probes of many sites and locations do not align; the grid keeps them apart at 1/step.
    due = clock() + r.uniform(0, task.interval)
    while True:
        await sleep(max(0.0, _on_grid(due, step) - clock()))
        try:
            obs = await task.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a prober bug must not end the loop
            obs = Observation(
                t=time.time(),
                vantage=vantage,
                probe=task.probe,
                subject=task.subject,
                ok=None,
                reason="error",
                detail=type(exc).__name__,
            )
        sink(obs)
        # A probe that overran its interval skips the missed ticks instead of bursting.
        due = max(due + task.interval, clock())


def _on_grid(t: float, step: float) -> float:
    """The first grid point at or after `t` (a hair's float error is not a grid point late)."""
    if step <= 0:
        return t
    return math.ceil(t / step - 1e-6) * step


ProberKey = tuple[object, ...]


def probe_tasks(
    config: Config,
    session: aiohttp.ClientSession,
    probers: dict[ProberKey, QuayProber] | None = None,
) -> tuple[list[ProbeTask], dict[str, StorageBackend]]:
    """Every probe this vantage runs, and the storage backends by location (reused by the
    restore gate, closed at shutdown).

    `probers` (a reload's): the Quay probers in use before, by what they probe and how. One
    the new configuration still wants is kept, with its debug session (no new enable, the
    secret into Quay's access log again) and its pending requests (none sent beside one
    Quay still works on); the others are closed; `probers` is left holding those in use."""
    vantage, probes = config.vantage, config.probes
    old = dict(probers or {})
    kept: dict[ProberKey, QuayProber] = {}
    tasks: list[ProbeTask] = []
    for name, site in sorted(config.sites.items()):
        endpoint = SiteEndpoint.from_site(name, site)
        # SecretStr compares by value and shows none in a repr.
        key: ProberKey = (vantage, endpoint, probes.timeout, probes.tls_insecure)
        key += (_ca_version(probes), probes.debug_secret)
        prober = old.pop(key, None) or QuayProber(endpoint, probes, session, vantage=vantage)
        kept[key] = prober
        for kind in (Probe.ENDTOEND, Probe.INSTANCE):
            tasks.append(
                ProbeTask(
                    f"{kind.value}/{name}",
                    kind,
                    name,
                    probes.interval,
                    _bind_site(prober, kind),
                    close=prober.close,
                )
            )
        if config.registry_probe is not None:
            puller = RegistryProber(
                endpoint, probes, config.registry_probe, session, vantage=vantage
            )
            tasks.append(
                ProbeTask(f"registry/{name}", Probe.REGISTRY, name, probes.interval, puller.probe)
            )
    for unused in old.values():
        unused.close()
    if probers is not None:
        probers.clear()
        probers.update(kept)
    backends: dict[str, StorageBackend] = {}
    settings = StorageProbeSettings(vantage, probes.timeout, probes.storage_mode)
    for name, location in sorted(config.storage.items()):
        backend = backend_for(
            location, timeout=probes.timeout, endpoint=probes.storage_endpoints.get(name)
        )
        backends[name] = backend
        storage_path = str(getattr(location.params, "storage_path", ""))
        tasks.append(
            ProbeTask(
                f"storage/{name}",
                Probe.STORAGE,
                name,
                probes.effective_storage_interval,
                _bind_storage(backend, name, storage_path, settings),
            )
        )
    return tasks, backends


def _ca_version(probes: Probes) -> tuple[str, int] | None:
    """The CA bundle and when it last changed: a renewed bundle makes a new prober."""
    if probes.tls_ca_file is None:
        return None
    try:
        return str(probes.tls_ca_file), os.stat(probes.tls_ca_file).st_mtime_ns
    except OSError:
        return str(probes.tls_ca_file), -1


def _bind_site(prober: QuayProber, kind: Probe) -> Callable[[], Awaitable[Observation]]:
    async def run() -> Observation:
        return await prober.probe(kind)

    return run


def _bind_storage(
    backend: StorageBackend, name: str, storage_path: str, settings: StorageProbeSettings
) -> Callable[[], Awaitable[Observation]]:
    async def run() -> Observation:
        return await probe_storage(
            backend, location=name, storage_path=storage_path, settings=settings
        )

    return run
