"""The one place where the runtime's outcomes reach the world: audit, log, notify,
export, save and wake.

Between the pure half of the runtime (observations, rounds) and everything
outside it: the audit log and state.json (store.py), the metrics (export.py),
the process log, the notification queue the webhook actuators read, and the
events that wake the engine loop and the reconcile loops. Every other part
says what happened; this module makes it happen, the same way wherever it
came from (a probe, a round, a command, a reload, a take-over).

A state.json that cannot be written (a full or read-only disk) stops nothing: the
decision is in force and the reconcile loops are woken first; the failure is
logged, counted (`trafficd_state_save_errors_total`) and the save tried again
every round until it succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from trafficd.clock import EngineClock
from trafficd.coordination import Coordinator
from trafficd.metrics import Metrics
from trafficd.model import Observation, Override, State
from trafficd.runtime.export import Export, Holder
from trafficd.runtime.live import Live
from trafficd.runtime.memory import Memory
from trafficd.runtime.replication import Replication
from trafficd.runtime.rounds import Round, Rounds
from trafficd.store import Store

if TYPE_CHECKING:
    from trafficd.model import Refusal
    from trafficd.restoregate import GateResult

log = logging.getLogger(__name__)

NOTICES = 1000  # events queued for the notify actuators; beyond, the newest are dropped


class Effects:
    def __init__(
        self,
        live: Live,
        clock: EngineClock,
        store: Store,
        metrics: Metrics,
        rounds: Rounds,
        memory: Memory,
        replication: Replication,
    ) -> None:
        self.live, self.store, self.clock = live, store, clock
        self.rounds, self.memory, self.replication = rounds, memory, replication
        self.export = Export(metrics)
        self.export.configured(live.config)
        self.notices: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=NOTICES)
        self.round_due = asyncio.Event()  # new input for the engine: decide now
        self.wakeups: dict[str, asyncio.Event] = {}  # one per reconcile loop
        # A return step began: read the canary now, its base (actuation's canary loop),
        # so the step is counted from its start, not from up to an interval later.
        self.canary_due = asyncio.Event()
        self.unsaved = False  # the last save failed: tried again every round

    # --- audit, log, notify -----------------------------------------------------------

    def audit(self, kind: str, **fields: Any) -> dict[str, Any]:
        """An event into the audit log, at wall time unless it says its own `t`."""
        fields.setdefault("t", self.clock.wall())
        return self.store.event(kind, **fields)

    def notify(self, event: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.notices.put_nowait(event)

    def announce(self, kind: str, **fields: Any) -> dict[str, Any]:
        """An event audited and sent to the notify actuators."""
        event = self.audit(kind, **fields)
        self.notify(event)
        return event

    # --- what happened ----------------------------------------------------------------

    def observed(self, obs: Observation, changed: bool) -> None:
        """A probe's result: exported; audited when it says something new."""
        self.export.observation(obs)
        self.round_due.set()
        if changed:
            self.store.event("observation", **obs.to_json())

    def round(self, rnd: Round, now: float) -> None:
        """A round's outcome: expiries, transitions, return steps and refusals audited,
        logged and sent; the gauges; and, when anything changed, the state saved and every
        reconcile loop woken (first: a save that fails must not keep the decision from
        them); the state saved again while a save failed."""
        self.expired(rnd.expired)
        decision = rnd.decision
        vantage = self.live.config.vantage
        for tr in decision.transitions:
            reasons = list(tr.reasons)
            if tr.to_state is State.DRAINING:  # said once, when the drain starts
                reasons = self.replication.with_risk(tr.site, tr.reasons, tr.cause, tr.to_state)
            self.announce(
                "transition",
                t=now,
                site=tr.site,
                **{"from": tr.from_state.value, "to": tr.to_state.value},
                cause=tr.cause.value if tr.cause else None,
                reasons=reasons,
                automatic=tr.automatic,
                vantage=vantage,
            )
            self.export.metrics.transitions.labels(
                site=tr.site, from_state=tr.from_state.value, to_state=tr.to_state.value
            ).inc()
            log.warning(
                "site %s: %s -> %s (%s)",
                tr.site,
                tr.from_state.value,
                tr.to_state.value,
                "; ".join(reasons),
            )
        for step in decision.steps:
            self.announce(
                "return_step",
                t=now,
                site=step.site,
                step=step.step,
                of=len(self.live.config.policy.return_steps),
                percent=step.percent,
                weight=step.weight,
                reasons=list(step.reasons),
                vantage=vantage,
            )
            log.warning(
                "site %s: return step %d (%d%%, weight %d)",
                step.site,
                step.step,
                step.percent,
                step.weight,
            )
        if decision.steps:
            self.canary_due.set()
        for refusal in decision.refusals:
            self.refused(refusal, t=now)
        self.decided()
        if rnd.changed:
            self.wake_actuators()
        if rnd.changed or self.unsaved:
            self.save()

    def decided(self) -> None:
        """The gauges of the decision in force (decided here, or followed)."""
        if self.rounds.decision is not None:
            self.export.decision(self.rounds.decision, self.rounds.overrides, self.rounds.pause)

    def expired(self, expired: Sequence[tuple[str, Override]]) -> None:
        for site, o in expired:
            self.audit("manual", site=site, action="expired", who=o.who, reason=o.reason)

    def refused(self, refusal: Refusal, **extra: Any) -> None:
        """A change a safety rule refused, automatic or an operator's."""
        self.announce(
            "refused",
            site=refusal.site,
            rule=refusal.rule,
            reasons=list(refusal.reasons),
            vantage=self.live.config.vantage,
            **extra,
        )
        self.export.metrics.safety_blocks.labels(site=refusal.site, rule=refusal.rule).inc()
        log.warning("site %s: change refused by %s", refusal.site, refusal.rule)

    def blocked(
        self, site: str, before: Sequence[Holder], holders: Sequence[Holder], now: float
    ) -> None:
        """A drain's stop held past `shutdown_deadline` (or no longer): exported, and
        said when the targets holding it change."""
        self.export.blocked(site, before, holders)
        if {(a, t) for a, t, _ in before} == {(a, t) for a, t, _ in holders}:
            return
        deadline = self.live.config.policy.shutdown_deadline
        said = [f"{a} {t}: {why}" for a, t, why in holders]
        if holders:
            log.error(
                "site %s: instances kept up: traffic not confirmed off within %gs: %s",
                site,
                deadline,
                "; ".join(said),
            )
        else:
            log.warning("site %s: traffic confirmed off or drain ended; unblocked", site)
        self.announce(
            "shutdown_blocked",
            t=now,
            site=site,
            blocked=bool(holders),
            holders=said,
            deadline=deadline,
            vantage=self.live.config.vantage,
        )

    def gate_result(self, result: GateResult) -> None:
        """Every restore-gate check is audited; one that keeps a site out is also sent."""
        event = self.audit(
            "restore_gate",
            location=result.location,
            sites=self.replication.gated_sites(result.location),
            passed=result.passed,
            sampled=result.sampled,
            missing=result.missing,
            examples=list(result.examples),
            error=result.error,
            skipped=result.skipped,
            reason=result.reason(),
            vantage=self.live.config.vantage,
        )
        if result.passed:
            log.info("%s", result.reason())
        else:
            log.warning("%s", result.reason())
            self.notify(event)
        self.round_due.set()  # a passed gate may let a site return: decide now

    def coordination(self, coord: Coordinator | None) -> None:
        """Every coordinated round ends here, a follower's too: a failed save retried."""
        self.export.coordination(coord, self.live.config)
        if self.unsaved:
            self.save()

    # --- save and wake ----------------------------------------------------------------

    def save(self) -> None:
        """state.json written; on an OSError (ENOSPC, EROFS, EIO) the state is marked
        unsaved, to be saved again at the next round, and said once until it is saved:
        the decision, the command or the apply that asked for the save stands."""
        r = self.rounds
        try:
            self.store.save(r.engine, r.overrides, r.pause, self.memory.collect())
        except OSError as exc:
            self.export.metrics.state_save_errors.inc()
            if not self.unsaved:
                # strerror, not the exception: nothing but the cause and the file
                log.error(
                    "%s not saved: %s; tried again every round",
                    self.store.state_path,
                    exc.strerror or type(exc).__name__,
                )
            self.unsaved = True
            return
        if self.unsaved:
            log.warning("%s saved again", self.store.state_path)
        self.unsaved = False

    def wake_actuators(self) -> None:
        for wake in self.wakeups.values():
            wake.set()
