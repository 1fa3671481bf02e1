"""What every actuator shares: the desired state, the plan, and the reconcile loop.

The last stage of the pipeline (engine -> desired state -> actuators). An
actuator is a small class with `read()` (what the backend holds now),
`plan(current, desired)` (pure: the difference, as changes and notes),
`apply(plan)` and `preflight()` (prove it could act, changing nothing), typed
per actuator (`Actuator[C, P]`: what it reads, one change of its plan).
`Reconciler` runs read -> plan -> apply only the difference -> read again,
retries transient errors with bounded backoff (tenacity), reports
`trafficd_actuations_total` and `trafficd_actuator_in_sync`, and never
raises: one failing backend never stops the others.

What an actuator can do beyond that it declares by naming the capability
Protocols below as its bases (mypy checks them; the reconciler and the daemon
test them with isinstance). `Splitting`: several targets (HAProxy sockets, DNS
servers, Kubernetes sites), one view of itself per target, sharing its memory;
each target is read, planned, applied and retried on its own, so a target that
is down is reported (`target` label) and the others still follow. `Serving`:
which sites it acts on. `TrafficReporting`: whether, as read back, each site
it serves still gets traffic: the daemon stops a site's instances only once
every traffic target confirms that site's traffic off. `Fencing`: takes a new
leader's token. `Remembering`: its memory, kept across restarts. `Notifying`:
sends the daemon's events on. `ResponseCounting`: a load balancer that counts
its sites' HTTP responses (HAProxy's `show stat`); `read_canary` gathers them per
site and counter over every such actuator: the canary the engine judges a gradual
return by.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from trafficd.config.model import Config, Site, SiteCommand, SiteKubernetes
from trafficd.metrics import Metrics
from trafficd.model import Cause, Responses, SiteDecision, State

log = logging.getLogger(__name__)


class ActuatorError(Exception):
    """A failed read or apply. The message names the actuator and never holds a secret."""


class ActuatorPermanentError(ActuatorError):
    """Retrying will not help until the configuration or the backend changes."""


class ActuatorAuthError(ActuatorPermanentError):
    """Credentials refused."""


class ConcurrentChangeError(ActuatorError):
    """The backend changed between read and apply: read again and re-plan."""


@dataclass(frozen=True)
class DesiredSite:
    """What one site should look like to the actuators: its traffic and its instances."""

    name: str
    state: State
    cause: Cause | None
    weight: int  # desired weight: the configured one while active, else 0
    configured_weight: int
    addresses: tuple[str, ...]
    managed: bool = True  # False for sites in observe mode: left as they are
    haproxy: tuple[str, str] | None = None  # (backend, server)
    set_identifier: str | None = None  # Route 53
    alias: tuple[str, str] | None = None  # Route 53 (dns_name, hosted_zone_id)
    instances: str = "running"  # "running" | "stopped": what the instance actuators make true
    reasons: tuple[str, ...] = ()
    command: SiteCommand | None = None
    kubernetes: SiteKubernetes | None = None

    @property
    def active(self) -> bool:
        return self.weight > 0


Desired = Mapping[str, DesiredSite]


def desired_state(config: Config, decisions: Mapping[str, SiteDecision]) -> dict[str, DesiredSite]:
    """The engine's decisions joined with each site's backend settings.

    A site the decisions do not cover yet (a reload just added it) is left as it
    is, as in observe mode, until the engine has decided it.
    """
    out = {}
    for name, site in sorted(config.sites.items()):
        d = decisions.get(name) or SiteDecision(
            site=name,
            state=State.ACTIVE,
            cause=None,
            weight=site.weight,
            instances="running",
            actuate=False,
            would_drain=False,
            reasons=("no decision yet",),
        )
        out[name] = DesiredSite(
            name=name,
            state=d.state,
            cause=d.cause,
            weight=d.weight,
            configured_weight=site.weight,
            addresses=tuple(site.addresses),
            managed=d.actuate,
            haproxy=(site.haproxy.backend, site.haproxy.server) if site.haproxy else None,
            set_identifier=(site.route53.set_identifier if site.route53 else None) or name,
            alias=(
                (site.route53.alias.dns_name, site.route53.alias.hosted_zone_id)
                if site.route53 and site.route53.alias
                else None
            ),
            instances=d.instances,
            reasons=d.reasons,
            command=site.command,
            kubernetes=site.kubernetes,
        )
    return out


# Each actuator's own types: what `read` gives (its backend as it holds the sites now)
# and one change of its plan, as its `apply` takes it (an HAProxy command, a Route 53
# change, an RRset). The reconciler and the runtime hold any actuator (Actuator[Any,
# Any]); within one actuator mypy checks that read, plan and apply agree.
C = TypeVar("C")
P = TypeVar("P")
C_contra = TypeVar("C_contra", contravariant=True)


@dataclass
class Plan(Generic[P]):
    """The difference between the backend and the desired state."""

    changes: list[str] = field(default_factory=list)  # one line per change, for logs
    notes: list[str] = field(default_factory=list)  # protected addresses, drift found, ...
    payload: list[P] = field(default_factory=list)  # what `apply` needs, in order

    @property
    def empty(self) -> bool:
        return not self.changes


Role = Literal["traffic", "instances", "notify"]


@dataclass(frozen=True)
class BuildContext:
    """What an actuator may need beyond its own section: the sites, the metrics."""

    sites: Mapping[str, Site] = field(default_factory=dict)
    metrics: Metrics | None = None


class Actuator(Protocol[C, P]):
    """`role` tells the daemon the order: traffic first on drain, instances first on restore.

    `C`: what `read` gives; `P`: one change of a plan. `notify` actuators (webhook)
    have empty plans; the daemon sends them events.
    """

    ident: str
    role: Role

    async def read(self) -> C: ...

    def plan(self, current: C, desired: Desired) -> Plan[P]: ...

    async def apply(self, plan: Plan[P]) -> None: ...

    async def preflight(self) -> None: ...

    async def close(self) -> None: ...


# --- optional capabilities ---------------------------------------------------------
# An actuator declares what it can beyond `Actuator` by naming these as its bases,
# so mypy checks the signatures; the reconciler and the daemon test for them with
# isinstance.


@runtime_checkable
class Splitting(Protocol):
    """Several targets (HAProxy sockets, DNS servers, one site each): one view of
    itself per target, sharing its clients and memory (see `views`)."""

    def split(self) -> Mapping[str, Actuator[Any, Any]]: ...


@runtime_checkable
class Serving(Protocol):
    """Says which sites it acts on."""

    def serves(self, site: DesiredSite) -> bool: ...


@runtime_checkable
class TrafficReporting(Serving, Protocol[C_contra]):
    """A traffic actuator that says, from what it read back (its `read`'s `C`), whether a
    site it serves still gets traffic from it: the daemon stops instances only on that
    word."""

    def sends_traffic(self, current: C_contra, site: DesiredSite) -> bool: ...


@runtime_checkable
class Fencing(Protocol):
    """Can make its backend refuse an older leader's changes: a new leader's fencing
    token reaches it before that leader's first change."""

    async def take_over(self, token: int) -> None: ...


@runtime_checkable
class Remembering(Protocol):
    """Remembers facts across restarts (replica counts, believed instance states): its
    memory, a JSON object the daemon keeps in state.json under the actuator's id."""

    def export_memory(self) -> dict[str, Any]: ...

    def import_memory(self, memory: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Notifying(Protocol):
    """Sends the daemon's events on (webhook); its plans are empty. Returns the error,
    or None when the event was delivered."""

    async def notify(self, event: Mapping[str, Any]) -> str | None: ...


@runtime_checkable
class ResponseCounting(Protocol):
    """A load balancer that counts its sites' HTTP responses: the canary of a return."""

    def canary_sites(self) -> Iterable[str]:
        """The sites it can count responses for."""
        ...

    async def responses(self) -> Canary: ...


_View = TypeVar("_View")


def views(actuator: _View, attribute: str, parts: Mapping[str, object]) -> dict[str, _View]:
    """One shallow copy of `actuator` per part, with `attribute` set to that part alone:
    the views share the actuator's clients and memory (baselines, remembered replicas),
    and each is reconciled as a target of its own (`split()`)."""
    out = {}
    for name, part in parts.items():
        view = copy.copy(actuator)
        setattr(view, attribute, part)
        out[name] = view
    return out


def split(actuator: Actuator[Any, Any]) -> dict[str, Actuator[Any, Any]]:
    """The actuator's targets, each a view of it reconciled on its own (name -> view).

    An actuator without `split()` is one target named like the actuator."""
    if not isinstance(actuator, Splitting):
        return {actuator.ident: actuator}
    return dict(actuator.split())


@dataclass
class Outcome:
    actuator: str
    in_sync: bool
    applied: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    target: str | None = None


def family(address: str) -> str:
    return "AAAA" if ipaddress.ip_address(address).version == 6 else "A"


def plan_address_sets(
    current: Mapping[str, frozenset[str]], desired: Desired, *, ident: str
) -> tuple[dict[str, frozenset[str]], list[str]]:
    """DNS semantics shared by rfc2136 and powerdns: the new A and AAAA sets, and notes.

    The name answers with the addresses of the sites whose desired weight is above
    zero. Addresses of sites in observe mode stay as they are. An address that
    belongs to no site is drift and is removed. The last address of a type is never
    deleted: an empty desired set keeps the current one.
    """
    targets: dict[str, frozenset[str]] = {}
    notes: list[str] = []
    owned = {a for t in desired.values() for a in t.addresses}
    for rdtype in ("A", "AAAA"):
        have = current.get(rdtype, frozenset())
        want = {
            a
            for t in desired.values()
            if t.managed and t.active
            for a in t.addresses
            if family(a) == rdtype
        }
        want |= {
            a
            for t in desired.values()
            if not t.managed
            for a in t.addresses
            if family(a) == rdtype and a in have
        }
        if not want and have:
            # Never delete the last address: keep the sites' ones (or all, if none is a site's).
            want = {a for a in have if a in owned} or set(have)
            notes.append(
                f"{ident}: {rdtype}: no site should take traffic; keeping the last "
                f"address(es) {', '.join(sorted(want))}"
            )
        drift = sorted(a for a in have - want if a not in owned)
        if drift:
            notes.append(
                f"{ident}: {rdtype} drift: {', '.join(drift)} belong(s) to no site; removing"
            )
        targets[rdtype] = frozenset(want)
    return targets, notes


def dns_serves(target: DesiredSite) -> bool:
    """DNS actuators route the sites with addresses (observe-mode ones are left alone)."""
    return bool(target.addresses) and target.managed


def dns_sends_traffic(current: Mapping[str, frozenset[str]], target: DesiredSite) -> bool:
    """Whether the name, as read back, still answers with one of the site's addresses."""
    served = set().union(*current.values()) if current else set()
    return any(a in served for a in target.addresses)


@dataclass(frozen=True)
class Canary:
    """Per site, the HTTP responses each load balancer counter serving it counted: site
    -> source (one socket's row for the site's server) -> counts.

    `responses` holds only the sites read on every socket that counts them. A site
    that a socket could not give (`incomplete`: site -> those sockets) is unread that
    round: a step judged on part of the traffic could pass on the healthy part alone,
    so it waits. A site no socket counts is in neither.
    """

    responses: Mapping[str, Mapping[str, Responses]] = field(default_factory=dict)
    incomplete: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


async def read_canary(actuators: Iterable[Actuator[Any, Any]]) -> Canary:
    """The canary of every actuator that counts responses, their sources side by side.

    Never raises: an actuator whose reading fails makes its sites incomplete."""
    sources = [a for a in actuators if isinstance(a, ResponseCounting)]
    readings: list[Canary | BaseException] = await asyncio.gather(
        *(a.responses() for a in sources), return_exceptions=True
    )
    counts: dict[str, dict[str, Responses]] = {}
    incomplete: dict[str, tuple[str, ...]] = {}
    for source, reading in zip(sources, readings, strict=True):
        if isinstance(reading, BaseException):
            if not isinstance(reading, Exception):
                raise reading  # a cancellation
            log.warning("%s: canary not read: %s", source.ident, type(reading).__name__)
            for site in source.canary_sites():
                incomplete[site] = (*incomplete.get(site, ()), source.ident)
            continue
        for site, by_source in reading.responses.items():
            # Two actuators on one socket read the same counter: one source, not two.
            counts.setdefault(site, {}).update(by_source)
        for site, sockets in reading.incomplete.items():
            incomplete[site] = (*incomplete.get(site, ()), *sockets)
    return Canary(
        {s: dict(sorted(c.items())) for s, c in sorted(counts.items()) if s not in incomplete},
        dict(sorted(incomplete.items())),
    )


class Reconciler:
    """Runs one actuator: read, plan, apply the difference, verify; retried, reported.

    With `target`, only that target of the actuator (see `split`); without, every
    target, each on its own and at the same time, the outcome being all of theirs.
    """

    def __init__(
        self,
        actuator: Actuator[Any, Any],
        metrics: Metrics | None = None,
        *,
        target: str | None = None,
        dry_run: bool = False,
        attempts: int = 3,
        max_backoff: float = 2.0,
        guard: Callable[[], Awaitable[bool]] | None = None,
        fence: Callable[[], int | None] | None = None,
    ) -> None:
        self.actuator = actuator
        parts = split(actuator)
        if target is not None:
            parts = {target: parts[target]}
        self.parts = parts
        self.target = target
        self.metrics = metrics
        self.dry_run = dry_run
        self.attempts = attempts
        self.max_backoff = max_backoff
        # Coordination: `guard` says, right before each apply, whether this instance
        # still leads; `fence` gives the leader's token, which actuators that can
        # enforce it (`take_over`) receive once per leadership, before any apply.
        self.guard = guard
        self.fence = fence
        self._fenced: dict[str, int] = {}
        # Per target: the sites it serves and whether each still gets traffic, as last
        # read back (None: not read, or the last reconcile failed), and the last outcome.
        self.traffic: dict[str, dict[str, bool] | None] = dict.fromkeys(parts)
        self.outcomes: dict[str, Outcome] = {}

    def _record_traffic(
        self, name: str, part: Actuator[Any, Any], current: Any, desired: Desired
    ) -> None:
        if part.role != "traffic" or not isinstance(part, TrafficReporting):
            return
        self.traffic[name] = {
            t.name: bool(part.sends_traffic(current, t)) for t in desired.values() if part.serves(t)
        }

    async def _once(self, name: str, part: Actuator[Any, Any], desired: Desired) -> Outcome:
        ident = self.actuator.ident
        current = await part.read()
        plan = part.plan(current, desired)
        for note in plan.notes:
            log.warning("%s", note)
        if plan.empty:
            self._record_traffic(name, part, current, desired)
            return Outcome(ident, True, notes=plan.notes, target=name)
        if self.dry_run:
            for change in plan.changes:
                log.info("%s: dry run: would %s", ident, change)
            self._record_traffic(name, part, current, desired)
            return Outcome(ident, False, notes=plan.notes, target=name)
        log.debug("%s: %s: applying %s", ident, name, plan.payload)
        if self.guard is not None and not await self.guard():
            raise ActuatorPermanentError(f"{ident}: not the leader any more; nothing applied")
        try:
            await part.apply(plan)
        except ActuatorError:
            self._count(name, "error")
            raise
        self._count(name, "success")
        for change in plan.changes:
            log.info("%s: %s", ident, change)
        current = await part.read()
        self._record_traffic(name, part, current, desired)
        after = part.plan(current, desired)
        return Outcome(ident, after.empty, applied=plan.changes, notes=plan.notes, target=name)

    def _count(self, target: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.actuations.labels(
                actuator=self.actuator.ident, target=target, result=result
            ).inc()

    async def _take_over(self, name: str, part: Actuator[Any, Any]) -> None:
        """A new leader's token reaches the backend before the leader's first change."""
        token = self.fence() if self.fence is not None else None
        if token is None or not isinstance(part, Fencing) or token == self._fenced.get(name):
            return
        # Asked first: a former leader writing its token would fence the new one out.
        if self.guard is not None and not await self.guard():
            ident = self.actuator.ident
            raise ActuatorPermanentError(f"{ident}: not the leader any more; nothing applied")
        await part.take_over(token)
        self._fenced[name] = token

    async def _reconcile_target(
        self, name: str, part: Actuator[Any, Any], desired: Desired
    ) -> Outcome:
        ident = self.actuator.ident
        try:
            if not self.dry_run:
                await self._take_over(name, part)
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.attempts),
                wait=wait_exponential(multiplier=0.05, max=self.max_backoff),
                # Only actuator errors are retried: a cancellation (shutdown, reload) is not.
                retry=retry_if_exception(
                    lambda e: (
                        isinstance(e, ActuatorError) and not isinstance(e, ActuatorPermanentError)
                    )
                ),
                reraise=True,
            ):
                with attempt:
                    outcome = await self._once(name, part, desired)
        except ActuatorError as exc:
            outcome = Outcome(ident, False, error=str(exc), target=name)
        except Exception as exc:  # a bug in one actuator must not stop the others
            log.exception("%s: %s: reconcile failed", ident, name)
            outcome = Outcome(ident, False, error=f"{ident}: {type(exc).__name__}", target=name)
        if outcome.error:
            self.traffic[name] = None  # unknown: never taken as confirmation
            log.error("%s", outcome.error)
        if self.metrics is not None:
            self.metrics.actuator_in_sync.labels(actuator=ident, target=name).set(
                1 if outcome.in_sync else 0
            )
        self.outcomes[name] = outcome
        return outcome

    async def reconcile(self, desired: Desired) -> Outcome:
        """Never raises: an error is logged, counted and returned. Targets run at once;
        the outcome is in sync only when every target is."""
        results = await asyncio.gather(
            *(self._reconcile_target(n, p, desired) for n, p in self.parts.items())
        )
        if len(results) == 1:
            return results[0]
        errors = [r.error for r in results if r.error]
        return Outcome(
            self.actuator.ident,
            all(r.in_sync for r in results),
            applied=[c for r in results for c in r.applied],
            notes=[n for r in results for n in r.notes],
            error="; ".join(errors) if errors else None,
            target=self.target,
        )

    async def preflight(self) -> str | None:
        """Prove the actuator could act, changing nothing; None when ready, else why not."""
        ident = self.actuator.ident
        try:
            await self.actuator.preflight()
            error = None
        except ActuatorError as exc:
            error = str(exc)
        except Exception as exc:
            error = f"{ident}: preflight failed: {type(exc).__name__}"
        if self.metrics is not None:
            self.metrics.actuator_ready.labels(actuator=ident).set(0 if error else 1)
        return error
