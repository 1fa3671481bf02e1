"""The restore gate: a storage-drained site returns only to a location that still holds its blobs.

Between the replication monitor and the engine. A location whose probes pass
again may still have come back empty (a rebuilt Ceph pool, a bucket restored
from nothing): its canary writes work, but every pull of an older blob would
fail. So, with `replication` configured, while a storage-drained site's first
location recovers, the gate HEADs a random sample of the blobs that Quay's
database places there (`replication.restore_sample`, at Quay's own paths) and
hands the engine a block, with the count of missing blobs, until a sample is
found whole. The engine keeps the site out and says why; the daemon audits
every check. A database that cannot be read makes the gate step aside (said
in the audit log): the monitor never holds the lifecycle hostage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from trafficd.config.model import Config
from trafficd.metrics import Metrics
from trafficd.model import Cause, EngineState, State
from trafficd.probers.base import StepError, StorageBackend
from trafficd.replication import PlacedBlob, ReplicationError, ReplicationMonitor

log = logging.getLogger(__name__)

CONCURRENCY = 8  # HEADs in flight at once against one location
EXAMPLES = 5


@dataclass(frozen=True)
class GateResult:
    location: str
    at: float
    sampled: int = 0
    missing: int = 0
    examples: tuple[str, ...] = ()
    error: str | None = None  # the storage could not be checked: stays blocked
    skipped: str | None = None  # the database could not be read: the gate steps aside
    # The location holds placements, yet no counted blob was sampled: nothing was
    # checked, so the gate cannot pass (an empty sample of a location with data is
    # exactly how an `uploading` filter once restored a site onto an empty bucket).
    unchecked: bool = False

    @property
    def passed(self) -> bool:
        return self.error is None and self.missing == 0 and not self.unchecked

    @property
    def outcome(self) -> tuple[object, ...]:
        """What a repeated check must change before it is reported again."""
        return (self.passed, self.sampled, self.missing, self.error, self.skipped, self.unchecked)

    def reason(self) -> str:
        if self.skipped is not None:
            return f"restore gate: skipped for {self.location}: {self.skipped}"
        if self.error is not None:
            return f"restore gate: could not check the blobs at {self.location}: {self.error}"
        if self.unchecked:
            return (
                f"restore gate: Quay's database holds placements at {self.location} but no "
                "blob referenced by a manifest to sample: nothing could be checked, so the "
                "site stays out (undrain it by hand once its data is verified)"
            )
        if self.missing:
            examples = ", ".join(self.examples)
            return (
                f"restore gate: {self.missing} of {self.sampled} sampled blob(s) that Quay's "
                f"database places at {self.location} are missing from its storage "
                f"(e.g. {examples}): it came back without its data; pulls of them would fail"
            )
        return f"restore gate: all {self.sampled} sampled blob(s) found at {self.location}"


async def check_sample(
    backend: StorageBackend,
    storage_path: str,
    blobs: Sequence[PlacedBlob],
    *,
    timeout: float,
) -> tuple[list[str], str | None]:
    """HEAD every sampled blob: (the missing ones, an error that kept some unchecked).
    A blob is missing only on a clear "not found"; any other failure is an error."""
    limit = asyncio.Semaphore(CONCURRENCY)

    async def look(blob: PlacedBlob) -> bool | str:
        async with limit:
            try:
                return await backend.exists(blob.path(storage_path))
            except StepError as exc:
                return f"{exc.reason}: {exc.detail}"
            except Exception as exc:  # the gate must never raise into its loop
                known = backend.classify(exc)
                return f"{known.reason}: {known.detail}" if known else type(exc).__name__

    try:
        async with asyncio.timeout(timeout):
            found = await asyncio.gather(*(look(b) for b in blobs))
    except TimeoutError:
        return [], f"no answer within {timeout:g}s"
    missing = sorted(b.name for b, f in zip(blobs, found, strict=True) if f is False)
    errors = [f for f in found if isinstance(f, str)]
    return missing, (errors[0] if errors else None)


class RestoreGate:
    """Per recovering location, the last check; `blocks` is what the engine is given."""

    def __init__(
        self,
        config: Config,
        monitor: ReplicationMonitor,
        backends: Mapping[str, StorageBackend],
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert config.replication is not None
        self.size = config.replication.restore_sample
        self.monitor = monitor
        self.backends = backends
        self.metrics = metrics
        self.clock = clock
        self.interval = config.probes.effective_storage_interval
        # A sample of HEADs may take several probe timeouts; it is bounded all the same.
        self.timeout = max(5.0, 4 * config.probes.timeout)
        self.first = {n: s.storage[0] for n, s in config.sites.items() if s.storage}
        self.paths = {
            n: str(getattr(loc.params, "storage_path", "")) for n, loc in config.storage.items()
        }
        self.results: dict[str, GateResult] = {}

    def gated(self, engine: EngineState) -> set[str]:
        """First locations of the sites that are out because their storage failed."""
        out = set()
        for site, location in self.first.items():
            memory = engine.sites.get(site)
            if (
                memory is not None
                and memory.cause is Cause.STORAGE
                and memory.state in (State.DRAINING, State.DRAINED)
            ):
                out.add(location)
        return out

    def blocks(self, engine: EngineState) -> dict[str, str]:
        out = {}
        for location in self.gated(engine):
            result = self.results.get(location)
            if result is None:
                out[location] = f"restore gate: the blobs at {location} are not checked yet"
            elif not result.passed:
                out[location] = result.reason()
        return out

    async def round(self, engine: EngineState) -> list[GateResult]:
        """Check each recovering gated location that has no passing result; the results
        that differ from the location's previous one (a failing check is repeated every
        storage interval, and reported when its outcome changes)."""
        gated = self.gated(engine)
        for location in list(self.results):
            if location not in gated:
                del self.results[location]  # restored, or no longer out for storage
        new = []
        now = self.clock()
        for location in sorted(gated):
            memory = engine.locations.get(location)
            if memory is None or memory.down > 0 or memory.up == 0:
                # Still failing: whatever was found before may change; check afresh later.
                self.results.pop(location, None)
                continue
            last = self.results.get(location)
            if last is not None and (last.passed or now - last.at < self.interval):
                continue
            result = await self.check(location)
            self.results[location] = result
            if last is None or last.outcome != result.outcome:
                new.append(result)
        return new

    async def check(self, location: str) -> GateResult:
        now = self.clock()
        try:
            sample = await self.monitor.sample(location, self.size)
        except ReplicationError as exc:
            return GateResult(location, now, skipped=str(exc))
        blobs = sample.blobs
        if not blobs and sample.holds:
            return GateResult(location, now, unchecked=True)
        backend = self.backends.get(location)
        if backend is None:
            return GateResult(location, now, skipped="no storage backend for it")
        missing, error = await check_sample(
            backend, self.paths.get(location, ""), blobs, timeout=self.timeout
        )
        result = GateResult(
            location,
            now,
            sampled=len(blobs),
            missing=len(missing),
            examples=tuple(missing[:EXAMPLES]),
            error=error,
        )
        if error is None:
            self.metrics.restore_gate_missing.labels(location=location).set(len(missing))
        return result

    async def run(
        self, engine: Callable[[], EngineState], report: Callable[[GateResult], None]
    ) -> None:
        while True:
            for result in await self.round(engine()):
                report(result)
            await asyncio.sleep(self.interval)
