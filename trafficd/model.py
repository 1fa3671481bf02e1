"""The data that flows between trafficd's parts: observations in, decisions out.

Probers produce `Observation`s; the engine reads them and produces a
`Decision` (with the round's `Evidence` and the next `EngineState`, the
engine's memory); actuators, the API, the store and the audit log read that.
The bottom layer (docs/design.md, "Layers"): it imports nothing of trafficd.
Everything here is frozen data with no behaviour beyond (de)serialising the
timeline format and a few derived properties.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum, StrEnum
from typing import Any, NamedTuple


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
    # Live traffic through the load balancer answered 5xx above policy.return_max_error_ratio
    # while the site returned in steps: no probe sees it, so it ends with the hold-down.
    CANARY = "canary"


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
    subject: str  # what was observed: the site, or the location for storage probes
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
        return (self.vantage, self.probe, self.subject)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Observation:
        """One line of the timeline format (docs/design.md); raises ValueError when malformed."""
        try:
            probe = Probe(obj["probe"])
            subject = obj["location"] if probe is Probe.STORAGE else obj["site"]
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
                subject=str(subject),
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
            out.update(probe=self.probe.value, location=self.subject)
        else:
            out.update(site=self.subject, probe=self.probe.value)
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


@dataclass(frozen=True, slots=True)
class Responses:
    """The HTTP responses live traffic got from one site, as one load balancer counter
    counts them: cumulative since the counter started (HAProxy's `show stat` of the
    site's server on one socket; a reload or restart of HAProxy starts it from zero).

    The runtime reads them; the engine's canary compares them with the last reading it
    counted in a return step (`decide(..., canary=...)`). `started` names the process
    that counts (HAProxy's pid; empty where unknown): counts of another process are a
    restarted counter's, even when they have already grown past the old ones."""

    total: int  # every response: hrsp_1xx .. hrsp_5xx and hrsp_other
    errors: int  # 5xx responses (hrsp_5xx)
    started: str = ""


@dataclass(frozen=True, slots=True)
class CanaryReading:
    """One site's live responses as the runtime read them at `at` (the engine clock),
    per counter: `counts` maps each source (one load balancer socket's row for the
    site's server) to what it counted since it started.

    Per source, not summed: a reload that adds a socket, or one socket that restarts
    from zero, must change only that source's share of a step's count (a sum would
    take in the new socket's lifetime, or hide one socket's restart behind another's
    growth). `at` lets the engine count only readings taken in the step.

    `unread` names the sockets that count the site but could not be read this time:
    such a reading counts nothing and holds the site's step (its traffic there would
    go unjudged); a site no load balancer counts has no reading at all."""

    at: float
    counts: Mapping[str, Responses]
    unread: tuple[str, ...] = ()


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

    def to_json(self) -> dict[str, Any]:
        """As state.json and the shared store keep it: every field, by name."""
        return asdict(self)

    @classmethod
    def from_json(cls, obj: object) -> Override:
        """Read back what `to_json` wrote; keys it does not know (a newer trafficd's) are
        ignored. Raises ValueError when malformed."""
        o = _json_object(obj)
        try:
            expires = o.get("expires")
            return cls(
                kind=str(o["kind"]),
                reason=str(o["reason"]),
                who=str(o["who"]),
                at=float(o["at"]),
                expires=None if expires is None else float(expires),
                force=bool(o.get("force", False)),
                stop_instances=bool(o.get("stop_instances", False)),
            )
        except KeyError as exc:
            raise ValueError(f"override: missing key {exc.args[0]!r}") from None
        except TypeError as exc:
            raise ValueError(f"override: {exc}") from None


@dataclass(frozen=True)
class Pause:
    reason: str
    who: str
    at: float
    hands_off: bool = False

    def to_json(self) -> dict[str, Any]:
        """As state.json and the shared store keep it: every field, by name."""
        return asdict(self)

    @classmethod
    def from_json(cls, obj: object) -> Pause:
        """Read back what `to_json` wrote, ignoring unknown keys; ValueError when malformed."""
        o = _json_object(obj)
        try:
            return cls(
                reason=str(o["reason"]),
                who=str(o["who"]),
                at=float(o["at"]),
                hands_off=bool(o.get("hands_off", False)),
            )
        except KeyError as exc:
            raise ValueError(f"pause: missing key {exc.args[0]!r}") from None
        except TypeError as exc:
            raise ValueError(f"pause: {exc}") from None


def _json_object(obj: object) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected an object, not {type(obj).__name__}")
    return obj


# "Never happened": the time of a transition or drain that has not been.
NEVER = float("-inf")


# --- the engine's evidence: what one round of observations says -------------------


class Verdict(Enum):
    FAIL = "fail"
    OK = "ok"
    UNKNOWN = "unknown"


class Tally(NamedTuple):
    """Votes of the vantages that count this round (a NamedTuple: thousands per round)."""

    fail: int
    ok: int
    quorum: int

    @property
    def verdict(self) -> Verdict:
        if self.fail >= self.quorum:
            return Verdict.FAIL
        if self.ok >= self.quorum:
            return Verdict.OK
        return Verdict.UNKNOWN

    def __str__(self) -> str:
        return f"{self.fail} failing, {self.ok} ok, quorum {self.quorum}"

    @property
    def empty(self) -> bool:
        """No vantage voted this round (no new observation): not evidence of anything."""
        return not self.fail and not self.ok


class Tallies(Mapping[str, Tally]):
    """Tallies made on access: most of a thousand sites are never looked at closely."""

    __slots__ = ("_fail", "_keys", "_ok", "_quorum")

    def __init__(
        self, fail: Mapping[str, int], ok: Mapping[str, int], keys: tuple[str, ...], quorum: int
    ) -> None:
        self._fail, self._ok, self._keys, self._quorum = fail, ok, keys, quorum

    def __getitem__(self, key: str) -> Tally:
        return Tally(self._fail.get(key, 0), self._ok.get(key, 0), self._quorum)

    @property
    def quorum(self) -> int:
        return self._quorum

    def counts(self, key: str) -> tuple[int, int]:
        """(failing, ok) votes without building a Tally: the engine's per-site fast path."""
        return self._fail.get(key, 0), self._ok.get(key, 0)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


@dataclass(frozen=True)
class Evidence:
    """Verdicts for one round."""

    abstaining: frozenset[str]
    # Only observations new since the previous round, or since `waiting` says for the
    # location: votes too few to decide wait for the next round's.
    locations: Tallies
    # Every location failing, on the latest fresh observations: direct probes fail from
    # a quorum (a vantage that knows it cannot reach a location counts only beside one
    # that sees it fail), or Quay's debug text names it.
    global_storage: bool
    corroboration: Mapping[str, Tally]  # per site: FAIL = site says storage false (or hangs)
    checks: Mapping[str, Tallies]  # check -> site -> tally, new observations only
    global_checks: frozenset[str]  # checks failing on every reachable site
    endtoend: Mapping[str, Tally]  # per site: is /health/endtoend healthy
    # Per site whose storage fails: one entry per failing vote, the locations Quay's
    # debug text names ("Preferred storage 'LOC' check failed"), empty without text.
    named: Mapping[str, tuple[frozenset[str], ...]] = field(default_factory=dict)
    # Per site: the vantages' endtoend answers had every service but storage healthy
    # (the site answers; only storage fails), counted like `endtoend`.
    storage_only: Mapping[str, int] = field(default_factory=dict)
    # Per vantage, the locations it knows it cannot reach (vantage_unreachable): its
    # direct probe failed while a site's storage: true proved the location healthy. Kept
    # until its direct probe passes again (EngineState.unreachable).
    unreachable: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Per location whose direct probes' new votes were too few to decide (vantages probe
    # storage at their own times, at storage_interval): since when they wait, to be
    # counted with the next round's (EngineState.waiting). A quorum must never need
    # its votes to arrive in one round.
    waiting: Mapping[str, float] = field(default_factory=dict)


# --- the engine's memory and its decisions ----------------------------------------


@dataclass(frozen=True, slots=True)
class SiteMemory:
    state: State = State.ACTIVE
    cause: Cause | None = None
    since: float = NEVER  # last transition
    active_since: float = NEVER
    drained_at: float = NEVER
    stop_instances: bool = False
    fails: Mapping[str, int] = field(default_factory=dict)  # consecutive failing rounds per check
    oks: Mapping[str, int] = field(default_factory=dict)  # consecutive healthy rounds per check
    drains: tuple[float, ...] = ()  # automatic drain times, for damping
    refused: str | None = None  # the rule refusing this site's wish, reported once
    # A manual drain stacked on the site. `cause` is then the automatic cause when there
    # is one (effects follow the strongest cause), else Cause.MANUAL.
    manual: bool = False
    # The last failing votes seen per check: a reason quotes them when a round brings
    # no new observation (staggered rounds, a drained site's stopped probes).
    seen: Mapping[str, str] = field(default_factory=dict)
    # The gradual return (policy.return_steps): the percent of its weight the active site
    # is at while it returns in steps, 0 once it has its whole weight (or is out). The
    # percent, not the step's number, so that a reload changing the steps never raises
    # a site's weight at once.
    returning: int = 0
    step_since: float = NEVER  # the step's start; a troubled round starts it over
    # The canary of the step (see decide's judge_canary): the last reading counted, per
    # source (None until the step's first reading, its base); when it was read (the
    # step's start until then: an older reading is never counted in the step); and the
    # responses counted since the base (None until a second reading).
    step_responses: Mapping[str, Responses] | None = None
    step_read_at: float = NEVER
    step_counted: Responses | None = None


_FRESH_SITE = SiteMemory()


@dataclass(frozen=True, slots=True)
class LocationMemory:
    down: int = 0
    up: int = 0
    # Direct probes fail while a site whose first location this is says storage: true:
    # this vantage cannot reach it (kept until the direct probes pass again).
    unreachable: bool = False
    seen: str = ""  # the last votes of a failing round, for reasons


@dataclass(frozen=True)
class EngineState:
    sites: Mapping[str, SiteMemory] = field(default_factory=dict)
    locations: Mapping[str, LocationMemory] = field(default_factory=dict)
    drains: tuple[float, ...] = ()  # automatic drain times, for max_drains
    last_round: float = NEVER
    # Per vantage, the locations it knows it cannot reach (Evidence.unreachable); per
    # location, since when its too few votes wait (Evidence.waiting).
    unreachable: Mapping[str, frozenset[str]] = field(default_factory=dict)
    waiting: Mapping[str, float] = field(default_factory=dict)
    # The previous round's decisions, reused for sites whose memory did not change
    # (a cache of derived data: it keeps 1,000-site rounds fast).
    decisions: Mapping[str, SiteDecision] = field(default_factory=dict)

    def site(self, name: str) -> SiteMemory:
        return self.sites.get(name, _FRESH_SITE)


@dataclass(frozen=True)
class Transition:
    site: str
    from_state: State
    to_state: State
    cause: Cause | None
    reasons: tuple[str, ...]
    automatic: bool


@dataclass(frozen=True)
class Refusal:
    site: str
    rule: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class ReturnStep:
    """A returning site reached a step of policy.return_steps: the first when it turns
    active, then one more each healthy `return_step`; the last (100%) ends the return."""

    site: str
    step: int  # 1-based number of the step in policy.return_steps
    percent: int  # the step's percent of the site's configured weight
    weight: int  # the weight the site now takes
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class SiteDecision:
    site: str
    state: State
    cause: Cause | None
    weight: int  # the traffic weight to give: 0 unless active; a return step's share of it
    instances: str  # "running" | "stopped"
    actuate: bool  # False for sites in observe mode
    would_drain: bool
    reasons: tuple[str, ...]
    # While an active site returns in steps (policy.return_steps): the 1-based number of
    # its step and that step's percent of its configured weight; None otherwise.
    return_step: int | None = None
    return_percent: int | None = None


@dataclass(frozen=True)
class Decision:
    state: EngineState
    sites: Mapping[str, SiteDecision]
    transitions: tuple[Transition, ...]
    refusals: tuple[Refusal, ...]
    evidence: Evidence
    steps: tuple[ReturnStep, ...] = ()  # return steps reached this round
