"""What every storage prober shares: the backend interface and the canary procedure.

Probers sit at the start of the pipeline (probers -> observations -> engine).
Each storage family (`s3`, `azure`, `swift`, `local`) implements the small
`StorageBackend` interface; `probe_storage` runs the canary put/get/compare/
delete (or a reachability check) against it, times each step, bounds the
whole probe in time, and turns every outcome, exceptions included, into an
`Observation`. It never raises into its caller.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from trafficd.model import Observation, Probe

log = logging.getLogger(__name__)

CANARY_BYTES = 64


class StepError(Exception):
    """A failure a backend has already classified: `reason` and a credential-free `detail`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StorageBackend(Protocol):
    """One storage location, as one driver family reaches it."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def delete(self, key: str) -> None: ...

    async def exists(self, key: str) -> bool:
        """Whether an object is there (a HEAD; no body is read). Errors other than
        "not found" raise, so that a dead backend is not taken for an empty one."""

    async def reachable(self) -> None:
        """Read-only check that the bucket/container answers (storage_mode: read)."""

    def classify(self, exc: BaseException) -> StepError | None:
        """Map an SDK exception to `connect`/`auth` or an error code; None if unknown."""

    async def close(self) -> None: ...


@runtime_checkable
class OneCallCanary(Protocol):
    """A backend whose canary is cheaper as one call than as put, get and delete: the
    LocalStorage backend hands one job to its thread instead of three (a thread
    hand-off costs more than the file operations; bench/failover.py, cost part)."""

    async def canary(self, key: str, data: bytes, steps: dict[str, float]) -> bytes:
        """Put, get, then delete `key`; records each finished step's seconds in `steps`
        as it goes (so a failure names the step that was under way); returns what the
        get read."""


CANARY_STEPS = ("put", "get", "delete")


@dataclass(frozen=True)
class StorageProbeSettings:
    vantage: str
    timeout: float
    mode: str = "write"  # write | read


def canary_key(storage_path: str, vantage: str) -> str:
    """Where the canary lives: `<storage_path>/trafficd/<vantage>/canary`, no leading slash."""
    path = storage_path.strip("/")
    return f"{path}/trafficd/{vantage}/canary" if path else f"trafficd/{vantage}/canary"


async def probe_storage(
    backend: StorageBackend,
    *,
    location: str,
    storage_path: str,
    settings: StorageProbeSettings,
    clock: Callable[[], float] = time.time,
) -> Observation:
    """Run one storage probe. Always returns an observation, never raises."""
    started = time.perf_counter()
    step = "connect"
    steps: dict[str, float] = {}

    def observation(
        ok: bool | None, reason: str | None = None, detail: str | None = None
    ) -> Observation:
        timings = " ".join(f"{k}={v * 1000:.1f}ms" for k, v in steps.items())
        text = "; ".join(x for x in (detail, timings) if x) or None
        return Observation(
            t=clock(),  # when known (see QuayProber.probe)
            vantage=settings.vantage,
            probe=Probe.STORAGE,
            subject=location,
            ok=ok,
            reason=reason,
            latency=time.perf_counter() - started,
            detail=text,
        )

    async def timed(name: str, coro_fn: Callable[[], object]) -> object:
        nonlocal step
        step = name
        begin = time.perf_counter()
        result = await coro_fn()  # type: ignore[misc]
        steps[name] = time.perf_counter() - begin
        return result

    try:
        async with asyncio.timeout(settings.timeout):
            if settings.mode == "read":
                await timed("reachable", backend.reachable)
            else:
                key = canary_key(storage_path, settings.vantage)
                data = secrets.token_bytes(CANARY_BYTES)
                if isinstance(backend, OneCallCanary):
                    step = "put"
                    if await backend.canary(key, data, steps) != data:
                        return observation(False, "compare", "the canary read back differs")
                    return observation(True)
                await timed("put", lambda: backend.put(key, data))
                got = await timed("get", lambda: backend.get(key))
                if got != data:
                    return observation(False, "compare", "the canary read back differs")
                await timed("delete", lambda: backend.delete(key))
        return observation(True)
    except TimeoutError:
        step = _under_way(step, steps)
        return observation(False, "timeout", f"no answer within {settings.timeout:g}s at {step}")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the prober must never raise into its loop
        step = _under_way(step, steps)
        known = exc if isinstance(exc, StepError) else backend.classify(exc)
        if known is not None:
            # Reasons that say more than the step keep their name; others name the step.
            keep = ("connect", "auth", "timeout", "compare")
            reason = known.reason if known.reason in keep else step
            return observation(False, reason, known.detail)
        log.warning("storage probe of %s failed at %s: %s", location, step, type(exc).__name__)
        return observation(False, step, type(exc).__name__)


def _under_way(step: str, steps: dict[str, float]) -> str:
    """The step a one-call canary had not finished (the others name theirs as they go)."""
    if step == "put" and "put" in steps:
        return next((s for s in CANARY_STEPS if s not in steps), "delete")
    return step
