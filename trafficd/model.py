"""The data that flows between trafficd's parts: observations in, decisions out.

Probers produce `Observation`s; the engine reads them and produces a
`Decision`; actuators, the API and the audit log read that. Everything here
is a frozen dataclass with no behaviour beyond (de)serialising the timeline
format of docs/design.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Probe(StrEnum):
    ENDTOEND = "endtoend"
    INSTANCE = "instance"
    REGISTRY = "registry"
    STORAGE = "storage"


class State(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"
    DRAINED = "drained"
    RESTORING = "restoring"


class Cause(StrEnum):
    STORAGE = "storage"
    DATABASE = "database"
    INSTANCE = "instance"
    REGISTRY = "registry"
    MANUAL = "manual"


# Reasons of a failed probe that mean "the site could not be reached": for a
# storage failure they corroborate it as much as `storage: false` does, since
# Quay's storage check has no timeout and a hung bucket hangs /health/endtoend.
UNREACHABLE = frozenset({"timeout", "connect", "refused", "reset", "unreachable"})


@dataclass(frozen=True, slots=True)
class Observation:
    """What one vantage saw of one site probe or one storage location."""

    t: float
    vantage: str
    probe: Probe
    target: str  # the site, or the location for storage probes
    ok: bool | None  # None: the prober could not tell
    status: int | None = None
    reason: str | None = None
    services: Mapping[str, bool] = field(default_factory=dict)
    latency: float | None = None  # seconds the probe took
    detail: str | None = None  # failure text: Quay's debug output, an SDK error code
    steps: Mapping[str, float] = field(default_factory=dict)  # seconds per step (registry)
    # Quay's debug mode (site probes): the text of each service in `services_expanded`,
    # its `failure` or, on a passing check, its `message`.
    service_texts: Mapping[str, str] = field(default_factory=dict)
    # The storage locations those texts name: location -> "preferred" (Quay's `Preferred
    # storage 'LOC' check failed`: `storage` false) or "non_preferred" (`Non-preferred
    # storage 'LOC' unavailable`: `storage` may stay true).
    storage_faults: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, Probe, str]:
        return (self.vantage, self.probe, self.target)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Observation:
        """One line of the timeline format (docs/design.md); raises ValueError when malformed."""
        try:
            probe = Probe(obj["probe"])
            target = obj["location"] if probe is Probe.STORAGE else obj["site"]
            ok = obj["ok"]
            if ok is not None and not isinstance(ok, bool):
                raise ValueError("ok must be true, false or null")
            services = obj.get("services") or {}
            if not isinstance(services, dict):
                raise ValueError("services must be an object")
            return cls(
                t=float(obj["t"]),
                vantage=str(obj["vantage"]),
                probe=probe,
                target=str(target),
                ok=ok,
                status=obj.get("status"),
                reason=obj.get("reason"),
                services={str(k): bool(v) for k, v in services.items()},
                latency=None if obj.get("latency") is None else float(obj["latency"]),
                detail=None if obj.get("detail") is None else str(obj["detail"]),
                steps={str(k): float(v) for k, v in (obj.get("steps") or {}).items()},
                service_texts={str(k): str(v) for k, v in (obj.get("service_texts") or {}).items()},
                storage_faults={
                    str(k): str(v) for k, v in (obj.get("storage_faults") or {}).items()
                },
            )
        except KeyError as exc:
            raise ValueError(f"missing key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": self.t, "vantage": self.vantage}
        if self.probe is Probe.STORAGE:
            out.update(probe=self.probe.value, location=self.target)
        else:
            out.update(site=self.target, probe=self.probe.value)
        out["ok"] = self.ok
        if self.status is not None:
            out["status"] = self.status
        if self.reason is not None:
            out["reason"] = self.reason
        if self.services:
            out["services"] = dict(self.services)
        if self.latency is not None:
            out["latency"] = round(self.latency, 6)
        if self.detail is not None:
            out["detail"] = self.detail
        if self.steps:
            out["steps"] = {k: round(v, 6) for k, v in self.steps.items()}
        if self.service_texts:
            out["service_texts"] = dict(self.service_texts)
        if self.storage_faults:
            out["storage_faults"] = dict(self.storage_faults)
        return out


@dataclass(frozen=True)
class Override:
    """An operator's command on one site: a manual drain or a hold."""

    kind: str  # "drain" | "hold"
    reason: str
    who: str
    at: float
    expires: float | None = None
    force: bool = False
    stop_instances: bool = False

    def live(self, now: float) -> bool:
        return self.expires is None or now < self.expires


@dataclass(frozen=True)
class Pause:
    reason: str
    who: str
    at: float
    hands_off: bool = False
