"""From audit events to an incident: probe bands, marks and a postmortem's milestones.

The reading half of `trafficd report` (page.py and markdown.py draw what
this builds). It takes the audit log's records (store.py: `observation`,
`transition`, `refused`, `manual`, `actuation`, `restore_gate`, `started`,
`stopped`) and, per site, builds:

- bands: one per run of unchanged observations of one probe by one vantage
  (the daemon logs an observation only when it changes, so a band runs from
  one logged observation to the next one of the same probe, or to the end of
  that daemon's life: its `stopped` event, or the next `started` in the same
  log after a kill);
- marks: decisions, refusals, manual commands, actuations, restore-gate checks,
  blobs at risk, each with its text;
- incidents: from a transition out of `active` to the next one back (returning
  in steps, to its last step; an operator's drain on the way opens the next
  one), with the milestones a postmortem asks for. Every time is an event's
  own `t` and `time`; nothing is estimated.

Actuation events name their actuator and list changes as text; `effects`
reads which site each change takes traffic from (or gives it back to, or sets
the weight of: a return step), or stops or starts, from the change formats of
the actuators. A confirmation that a backend's traffic is off is an actuation
of that actuator (of that target, where events name a `target`), after it
applied the site's removal, that read the backend back in sync and had no
error (a site's whole weight after a return in steps likewise, on the
actuators that carry weights); an explicit event of a kind in CONFIRMED_KINDS
(`{"kind": "traffic_off", "site": .., "actuator": .., "target": ..?}`) counts
first. `shutdown_blocked` events are marked.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from trafficd.report.layout import Layout, SiteLayout

# Explicit read-back confirmations, per actuator (and target), that a site's traffic is off.
CONFIRMED_KINDS = frozenset({"traffic_off", "traffic_confirmed_off"})
PROBES = ("endtoend", "instance", "registry", "storage")
# The probes whose failure a drain of each cause stands on (a manual drain: none), and
# the ones whose passing clears it (a storage drain's endtoend fails on while its
# instances are stopped: a consequence, not the cause).
CAUSE_PROBES: dict[str, tuple[str, ...]] = {
    "storage": ("storage", "endtoend"),
    "instance": ("instance",),
    "database": ("endtoend",),
    "registry": ("registry",),
    "manual": (),
}
CLEARING_PROBES = {"storage": ("storage",)}

_DNS = re.compile(
    r"(?P<rdtype>A|AAAA): (?P<before>\[[^\]]*\]|\(none\)) -> (?P<after>\[[^\]]*\]|\(none\))"
)
_HAPROXY = re.compile(
    r"set server (?P<backend>[^/\s]+)/(?P<server>\S+) "
    r"(?:state (?P<mode>\w+)|weight (?P<weight>\d+))"
)
# PowerDNS with `weighted: true`: `NAME LUA A: 192.0.2.10=100 -> 192.0.2.10=100, 192.0.2.20=10`.
_LUA = re.compile(r"LUA (?P<rdtype>A|AAAA): (?P<before>.+?) -> (?P<after>.+)$")
_ROUTE53 = re.compile(r"(?P<ident>\S+): weight (?P<before>\S+) -> (?P<after>\d+)$")
_INSTANCES = re.compile(r"(?:^|: )(?P<action>stop|start) site (?P<site>\S+)$")
_WAIT = re.compile(r"wait for site (?P<site>\S+)'s instances")
_RISK = re.compile(r"replication: (?P<blobs>\d+) blob\(s\) \((?P<bytes>\d+) bytes\)")


def clock(t: float, iso: str | None = None) -> str:
    """An event's time as the log wrote it; a replayed timeline's `t` is from any origin."""
    if iso:
        return iso
    if t >= 1e9:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
    return f"t={t:.3f}"


def _addresses(text: str) -> set[str]:
    if text == "(none)":
        return set()
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return set()
    return {str(v) for v in value} if isinstance(value, list) else set()


def _weights(text: str) -> dict[str, int]:
    """A LUA record's side of a change: `ADDRESS=WEIGHT, ...`, or `(none)`."""
    out = {}
    for part in text.split(","):
        address, _, weight = part.strip().rpartition("=")
        if address and weight.isdigit():
            out[address] = int(weight)
    return out


def effects(change: str, site: SiteLayout) -> set[str]:
    """What one applied change does to `site`: `off`, `on` (traffic), `weight N` (the
    share of traffic it takes: a return step's, or its whole weight), `stop`, `start`,
    `wait` (instances); empty when it concerns other sites."""
    out: set[str] = set()
    if m := _LUA.search(change):
        held, wanted = _weights(m["before"]), _weights(m["after"])
        for address in site.addresses:
            was, now = held.get(address, 0), wanted.get(address, 0)
            # The record lists every site: only a weight that changed is this site's.
            if was and not now:
                out.add("off")
            elif now != was:
                out.add(f"weight {now}")
                if not was:
                    out.add("on")
    elif m := _DNS.search(change):
        before, after = _addresses(m["before"]), _addresses(m["after"])
        mine = set(site.addresses)
        if mine & before - after:
            out.add("off")
        if mine & after - before:
            out.add("on")
    elif m := _HAPROXY.search(change):
        if site.haproxy == (m["backend"], m["server"]):
            # `weight N` is a return step's (HAProxy sets it before `state ready`).
            mode = m["mode"]
            out.add(f"weight {m['weight']}" if mode is None else "on" if mode == "ready" else "off")
    elif m := _INSTANCES.search(change):
        if m["site"] == site.name:
            out.add(m["action"])
    elif m := _WAIT.search(change):
        if m["site"] == site.name:
            out.add("wait")
    elif (m := _ROUTE53.search(change)) and m["ident"] == (site.set_identifier or site.name):
        was_off = m["before"] in ("0", "(none)")
        if int(m["after"]) == 0 and not was_off:
            out.add("off")
        elif int(m["after"]) > 0:
            out.add(f"weight {int(m['after'])}")
            if was_off:
                out.add("on")
    return out


Key = tuple[str, str, str]  # (vantage, probe, target), as Observation.key


def _step_text(step: Mapping[str, Any]) -> str:
    """A return step as said everywhere: `step 2 of 3 (50%, weight 50)`."""
    of = f" of {step['of']}" if step.get("of") else ""
    return f"step {step.get('step')}{of} ({step.get('percent')}%, weight {step.get('weight')})"


def row_name(key: Key) -> str:
    """A probe's row on the timeline: `us-east · endtoend`, `us-east · storage eustorage`."""
    vantage, probe, target = key
    return f"{vantage} · storage {target}" if probe == "storage" else f"{vantage} · {probe}"


@dataclass(frozen=True)
class Band:
    """One run of unchanged observations of one probe target, by one vantage."""

    vantage: str
    probe: str
    target: str  # the site, or the storage location
    start: float
    end: float
    ok: bool | None
    time: str  # the `time` of the observation that began it
    text: str

    @property
    def row(self) -> str:
        return row_name((self.vantage, self.probe, self.target))


@dataclass(frozen=True)
class StateBand:
    state: str
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Mark:
    """One event drawn on a site's timeline and listed under it, numbered."""

    t: float
    time: str
    lane: str  # "decisions", "refused", "manual", "actuator ID", "restore gate", "blobs at risk"
    status: str  # "ok", "error", "pending", "info"
    title: str
    text: str
    n: int = 0


@dataclass(frozen=True)
class Milestone:
    what: str
    t: float | None
    time: str | None
    detail: str


@dataclass
class Incident:
    site: str
    cause: str | None
    start: float  # the drain decision
    end: float | None  # back to active, if it came
    milestones: list[Milestone] = field(default_factory=list)
    blobs_at_risk: tuple[int, int] | None = None  # (blobs, bytes) when drained
    # The transitions that open it, decide the restore and close it.
    opened: Mapping[str, Any] = field(default_factory=dict, repr=False)
    restore: Mapping[str, Any] | None = field(default=None, repr=False)
    closed: Mapping[str, Any] | None = field(default=None, repr=False)  # or the last step
    # A return in steps (policy.return_steps): the step it is at while it returns, and
    # the returns abandoned on the way (the transitions out of active).
    step: Mapping[str, Any] | None = field(default=None, repr=False)
    abandons: list[Mapping[str, Any]] = field(default_factory=list, repr=False)
    # An operator's drain that stopped its return in steps (and opened the next incident):
    # the incident ends there, its traffic never fully back.
    interrupted: Mapping[str, Any] | None = field(default=None, repr=False)
    # The next incident's drain of the site: confirmations after it are that one's.
    until: float = field(default=float("inf"), repr=False)

    @property
    def origin(self) -> float:
        """Offsets count from the first failing probe, or from the decision."""
        return next((m.t for m in self.milestones if m.t is not None), self.start)


@dataclass
class SiteReport:
    name: str
    rows: list[str]
    bands: list[Band]
    states: list[StateBand]
    marks: list[Mark]
    incidents: list[Incident]


@dataclass
class Report:
    start: float
    end: float
    sites: list[SiteReport]
    sources: list[str]
    events: int


@dataclass(frozen=True)
class _Obs:
    t: float
    time: str
    vantage: str
    probe: str
    target: str
    ok: bool | None
    text: str
    life_end: float  # when the daemon that recorded it stopped (or was next started)


def _obs_text(e: Mapping[str, Any]) -> str:
    ok = {True: "ok", False: "failing", None: "unknown"}[e.get("ok")]
    parts = [ok]
    if e.get("status") is not None:
        parts.append(f"HTTP {e['status']}")
    if e.get("reason"):
        parts.append(str(e["reason"]))
    down = [k for k, v in dict(e.get("services") or {}).items() if not v]
    if down:
        parts.append("services down: " + ", ".join(sorted(down)))
    if e.get("detail"):
        parts.append(str(e["detail"])[:200])
    return "; ".join(parts)


def _observations(sources: Sequence[Sequence[Mapping[str, Any]]], end: float) -> list[_Obs]:
    """Each log's observations with the end of the daemon life that recorded them.

    A log is in writing order: its `started` events divide it into lives; a life ends
    at its `stopped` event, or at the next `started` when the daemon was killed.
    """
    out: list[_Obs] = []
    for records in sources:
        pending: list[Mapping[str, Any]] = []
        lives: list[tuple[list[Mapping[str, Any]], float]] = []
        for r in records:
            kind = r.get("kind")
            if (kind == "started" and pending) or kind == "stopped":
                lives.append((pending, float(r["t"])))
                pending = []
            elif kind == "observation":
                pending.append(r)
        lives.append((pending, end))
        for group, life_end in lives:
            for e in group:
                probe = str(e.get("probe"))
                target = e.get("location") if probe == "storage" else e.get("site")
                if probe not in PROBES or target is None or "t" not in e:
                    continue
                out.append(
                    _Obs(
                        t=float(e["t"]),
                        time=clock(float(e["t"]), e.get("time")),
                        vantage=str(e.get("vantage", "?")),
                        probe=probe,
                        target=str(target),
                        ok=e.get("ok") if isinstance(e.get("ok"), bool) else None,
                        text=_obs_text(e),
                        life_end=max(life_end, float(e["t"])),
                    )
                )
    out.sort(key=lambda o: o.t)
    return out


def _bands(obs: list[_Obs], lo: float, hi: float) -> list[Band]:
    by_key: dict[Key, list[_Obs]] = {}
    for o in obs:
        by_key.setdefault((o.vantage, o.probe, o.target), []).append(o)
    bands = []
    for (vantage, probe, target), items in by_key.items():
        for i, o in enumerate(items):
            nxt = items[i + 1].t if i + 1 < len(items) else hi
            stop = min(nxt, o.life_end, hi)
            start = max(o.t, lo)
            if stop <= start and not (stop == start == o.t):
                continue
            bands.append(Band(vantage, probe, target, start, stop, o.ok, o.time, o.text))
    return bands


def _key_state(obs: list[_Obs], key: Key, at: float) -> tuple[bool | None, float]:
    """The probe's result at `at` and since when it has been failing (or `at`)."""
    items = [o for o in obs if (o.vantage, o.probe, o.target) == key and o.t <= at]
    if not items or items[-1].ok is not False or items[-1].life_end < at:
        return (items[-1].ok if items else None), at
    since = items[-1].t
    for o in reversed(items):
        if o.ok is not False:
            break
        since = o.t
    return False, since


def _manual(transition: Mapping[str, Any]) -> bool:
    """An operator's decision (`trafficd drain`), not the engine's."""
    return transition.get("automatic") is False or transition.get("cause") == "manual"


def _life_time(e: Mapping[str, Any]) -> tuple[float, str]:
    t = float(e["t"])
    return t, clock(t, e.get("time"))


class _Builder:
    def __init__(
        self,
        layout: Layout,
        records: list[Mapping[str, Any]],
        obs: list[_Obs],
        lo: float,
        hi: float,
    ) -> None:
        self.layout = layout
        self.records = records
        self.obs = obs
        self.lo, self.hi = lo, hi

    def site_keys(self, spec: SiteLayout, probes: Iterable[str] = PROBES) -> list[Key]:
        wanted = set(probes)
        keys = {(o.vantage, o.probe, o.target) for o in self.obs}
        storage = set(spec.storage) if spec.storage is not None else None
        out = []
        for vantage, probe, target in keys:
            if probe not in wanted:
                continue
            if probe == "storage":
                if storage is None or target in storage:
                    out.append((vantage, probe, target))
            elif target == spec.name:
                out.append((vantage, probe, target))
        order = {p: i for i, p in enumerate(PROBES)}
        locations = list(spec.storage or ())

        def rank(k: Key) -> tuple[str, int, int, str]:
            loc = locations.index(k[2]) if k[1] == "storage" and k[2] in locations else 0
            return (k[0], order[k[1]], loc, k[2])

        return sorted(out, key=rank)

    def site(self, spec: SiteLayout) -> SiteReport:
        keys = self.site_keys(spec)
        wanted = set(keys)
        mine = [o for o in self.obs if (o.vantage, o.probe, o.target) in wanted]
        bands = _bands(mine, self.lo, self.hi)
        rows = []
        for k in keys:
            row = row_name(k)
            if row not in rows:
                rows.append(row)
        history = [
            r
            for r in self.records
            if r.get("kind") in ("transition", "return_step") and r.get("site") == spec.name
        ]
        transitions = [r for r in history if r.get("kind") == "transition"]
        states = self.states(transitions)
        marks = self.marks(spec)
        incidents = self.incidents(spec, history)
        return SiteReport(spec.name, rows, bands, states, marks, incidents)

    def states(self, transitions: list[Mapping[str, Any]]) -> list[StateBand]:
        out: list[StateBand] = []
        before = [t for t in transitions if float(t["t"]) < self.lo]
        inside = [t for t in transitions if self.lo <= float(t["t"]) <= self.hi]
        if before:
            state, start, text = (
                str(before[-1]["to"]),
                self.lo,
                "; ".join(before[-1].get("reasons") or []),
            )
        elif inside:
            state, start, text = str(inside[0]["from"]), self.lo, "before the first transition"
        else:  # every site starts active; the log would hold any move since
            state, start, text = "active", self.lo, "no transition in the log"
        for tr in inside:
            t = float(tr["t"])
            if t > start:
                out.append(StateBand(state, start, t, text))
            state, start = str(tr["to"]), t
            text = "; ".join(tr.get("reasons") or [])
        if self.hi > start:
            out.append(StateBand(state, start, self.hi, text))
        return out

    def marks(self, spec: SiteLayout) -> list[Mark]:
        marks: list[Mark] = []
        for r in self.records:
            t = r.get("t")
            if not isinstance(t, int | float) or not self.lo <= t <= self.hi:
                continue
            t, when = _life_time(r)
            kind = r.get("kind")
            site = r.get("site")
            reasons = "; ".join(str(x) for x in r.get("reasons") or [])
            if kind == "transition" and site == spec.name:
                auto = "automatic" if r.get("automatic", True) else "manual"
                cause = f" (cause {r['cause']})" if r.get("cause") else ""
                title = f"{r['from']} → {r['to']}{cause}"
                marks.append(Mark(t, when, "decisions", "info", title, f"{auto}: {reasons}"))
                if r.get("to") == "draining":
                    for reason in r.get("reasons") or []:
                        if m := _RISK.search(str(reason)):
                            status = "error" if int(m["blobs"]) else "ok"
                            marks.append(
                                Mark(
                                    t,
                                    when,
                                    "blobs at risk",
                                    status,
                                    f"{m['blobs']} blob(s) at risk",
                                    str(reason),
                                )
                            )
            elif kind == "return_step" and site == spec.name:
                title = f"return {_step_text(r)}"
                marks.append(Mark(t, when, "decisions", "info", title, reasons))
            elif kind == "refused" and site == spec.name:
                who = f" ({r['who']}: {r.get('action', '')})" if r.get("who") else ""
                marks.append(
                    Mark(t, when, "refused", "error", f"refused by {r.get('rule')}{who}", reasons)
                )
            elif kind == "manual" and site in (spec.name, None):
                what = r.get("action", "?")
                flags = [f for f in ("force", "stop_instances", "hands_off") if r.get(f)]
                extra = f" [{', '.join(flags)}]" if flags else ""
                until = f", until {clock(float(r['expires']))}" if r.get("expires") else ""
                marks.append(
                    Mark(
                        t,
                        when,
                        "manual",
                        "info",
                        f"{what} by {r.get('who', '?')}{extra}",
                        f"why: {r.get('reason') or '—'}{until}",
                    )
                )
            elif kind == "actuation":
                mark = self.actuation_mark(spec, r, t, when)
                if mark is not None:
                    marks.append(mark)
            elif kind in CONFIRMED_KINDS and site == spec.name:
                target = f" {r['target']}" if r.get("target") else ""
                marks.append(
                    Mark(
                        t,
                        when,
                        f"actuator {r.get('actuator')}",
                        "ok",
                        f"traffic confirmed off{target}",
                        reasons,
                    )
                )
            elif kind == "shutdown_blocked" and site == spec.name:
                if r.get("blocked"):
                    holders = "; ".join(str(h) for h in r.get("holders") or [])
                    title = "instances kept up: traffic not confirmed off"
                    marks.append(Mark(t, when, "shutdown", "error", title, holders))
                else:
                    title = "shutdown unblocked"
                    marks.append(Mark(t, when, "shutdown", "ok", title, "traffic confirmed off"))
            elif kind == "restore_gate" and spec.name in (r.get("sites") or []):
                status = "ok" if r.get("passed") else "error"
                marks.append(
                    Mark(
                        t,
                        when,
                        "restore gate",
                        status,
                        f"restore gate {r.get('location')}",
                        str(r.get("reason") or ""),
                    )
                )
        marks.sort(key=lambda m: m.t)
        return [
            Mark(m.t, m.time, m.lane, m.status, m.title, m.text, n) for n, m in enumerate(marks, 1)
        ]

    def actuation_mark(
        self, spec: SiteLayout, r: Mapping[str, Any], t: float, when: str
    ) -> Mark | None:
        applied = [str(c) for c in r.get("applied") or []]
        mine = [c for c in applied if effects(c, spec)]
        error = r.get("error")
        if not mine and not error:
            return None
        if error:
            status = "error"
        elif r.get("in_sync"):
            status = "ok"
        else:
            status = "pending"
        done = set().union(*(effects(c, spec) for c in mine)) if mine else set()
        title = ", ".join(sorted(done)) or "error"
        lines = mine + ([f"error: {error}"] if error else [])
        lines.append("read back in sync" if r.get("in_sync") else "not in sync on read-back")
        return Mark(
            t,
            when,
            f"actuator {r.get('actuator')}",
            status,
            f"{r.get('actuator')}: {title}",
            "; ".join(lines),
        )

    def incidents(self, spec: SiteLayout, history: list[Mapping[str, Any]]) -> list[Incident]:
        """From a site's transitions and return steps, in time order: an incident opens
        when the site leaves active and ends when it is back at its whole weight, at
        the transition to active or, returning in steps, at the last step (logged in the
        rounds after it). A return abandoned on the way (the engine's drain: a probe
        failed, the canary) is the same incident going on; an operator's drain during
        the return is not the return failing but a decision of its own: it ends the
        incident there, never fully returned, and opens the next."""
        out: list[Incident] = []
        current: Incident | None = None  # the last incident, while its return may go on
        for r in history:
            if r.get("kind") == "return_step":
                if current is None:
                    continue  # the log starts in the middle of a return
                current.step = r
                if int(r.get("percent", 100)) >= 100:
                    current.closed, current.end, current = r, float(r["t"]), None
                else:
                    current.closed = current.end = None  # active, not yet at its weight
            elif r.get("from") == "active" and r.get("to") != "active":
                if current is not None and current.step is not None:
                    if not _manual(r):
                        current.abandons.append(r)
                        current.step = current.restore = None
                        continue
                    current.interrupted, current.end = r, float(r["t"])
                current = Incident(spec.name, r.get("cause"), float(r["t"]), None, opened=r)
                out.append(current)
            elif current is not None and r.get("to") == "restoring":
                current.restore = r
            elif current is not None and r.get("to") == "active":
                current.end = float(r["t"])
                current.closed = r  # the incident's last, unless return steps follow
        for before, after in itertools.pairwise(out):
            before.until = after.start
        kept = []
        for inc in out:
            if (inc.end if inc.end is not None else self.hi) < self.lo or inc.start > self.hi:
                continue
            self.milestones(spec, inc)
            kept.append(inc)
        return kept

    def milestones(self, spec: SiteLayout, inc: Incident) -> None:
        opened, restore, closed = inc.opened, inc.restore, inc.closed
        end = inc.end if inc.end is not None else float("inf")
        ms: list[Milestone] = []
        reasons = "; ".join(str(x) for x in opened.get("reasons") or [])
        for reason in opened.get("reasons") or []:
            if m := _RISK.search(str(reason)):
                inc.blobs_at_risk = (int(m["blobs"]), int(m["bytes"]))
        # The first failing probe: the start of the failing run of each probe the
        # cause stands on, failing when the drain was decided.
        probes = CAUSE_PROBES.get(str(inc.cause), PROBES)
        failing = []
        for key in self.site_keys(spec, probes) if probes else []:
            ok, since = _key_state(self.obs, key, inc.start)
            if ok is False:
                failing.append((since, key))
        if failing:
            since, key = min(failing)
            o = next(o for o in self.obs if (o.vantage, o.probe, o.target) == key and o.t == since)
            row = row_name(key)
            ms.append(Milestone("first failing probe", o.t, o.time, f"{row}: {o.text}"))
        else:
            detail = "no probe was failing"
            if (manual := self.manual_drain(spec, inc.start)) is not None:
                detail += f": drained by {manual.get('who')} ({manual.get('reason')})"
            ms.append(Milestone("first failing probe", None, None, detail))
        t, when = _life_time(opened)
        ms.append(
            Milestone("drain decided", t, when, f"{opened['from']} → {opened['to']}: {reasons}")
        )
        ms += [m for _, m in self.backends(spec, inc.start, end, "off", "traffic off")]
        for act in self.layout.instance_actuators():
            ev = self.first_actuation(act.ident, spec, "stop", inc.start, end)
            if ev is None:
                ms.append(
                    Milestone(f"instances stopped ({act.ident})", None, None, "not in the log")
                )
            else:
                t, when = _life_time(ev)
                ms.append(
                    Milestone(
                        f"instances stopped ({act.ident})",
                        t,
                        when,
                        "; ".join(ev.get("applied") or []),
                    )
                )
        ms.append(self.cleared(spec, inc, failing, end))
        for abandon in inc.abandons:
            t, when = _life_time(abandon)
            text = "; ".join(str(x) for x in abandon.get("reasons") or [])
            ms.append(Milestone("return abandoned", t, when, f"active → {abandon['to']}: {text}"))
        if restore is not None:
            t, when = _life_time(restore)
            text = "; ".join(str(x) for x in restore.get("reasons") or [])
            ms.append(
                Milestone("restore decided", t, when, f"{restore['from']} → restoring: {text}")
            )
            for act in self.layout.instance_actuators():
                ev = self.first_actuation(act.ident, spec, "start", float(restore["t"]), end)
                if ev is not None:
                    t, when = _life_time(ev)
                    ms.append(
                        Milestone(
                            f"instances started ({act.ident})",
                            t,
                            when,
                            "; ".join(ev.get("applied") or []),
                        )
                    )
        back: list[tuple[str, Milestone]] = []
        if (came := closed or inc.step) is not None:
            # Back at the return to active (a return in steps: at its first step, so also
            # while it goes on); only confirmations before the next incident count.
            lo = float((restore or came)["t"])
            back = self.backends(spec, lo, inc.until, "on", "traffic back")
            ms += [m for _, m in back]
        if closed is not None:
            t, when = _life_time(closed)
            full = back
            stepped = closed.get("kind") == "return_step"
            if stepped:
                # Its traffic came back at the first step; it is whole once each backend
                # that carries weights read back the last step's (the site's whole one).
                weight = f"weight {closed.get('weight')}"
                held = self.backends(spec, t, inc.until, weight, "full weight", weighted=True)
                ms += [m for _, m in held]
                weighted = {name for name, _ in held}
                full = [*(b for b in back if b[0] not in weighted), *held]
            confirmed = [m for _, m in full if m.t is not None]
            if full and len(confirmed) == len(full):
                last = max(confirmed, key=lambda m: m.t or 0.0)
                if last.t is not None and last.t >= t:
                    t, when = last.t, last.time or when
            detail = "; ".join(str(x) for x in closed.get("reasons") or [])
            if missing := [name for name, m in full if m.t is None]:
                detail = f"not confirmed by {', '.join(missing)}: {detail}"
            to = _step_text(closed) if stepped else "active"
            ms.append(Milestone("traffic fully returned", t, when, f"→ {to}: {detail}"))
        elif inc.step is not None and inc.interrupted is not None:
            _, when = _life_time(inc.interrupted)
            by = ""
            if (manual := self.manual_drain(spec, float(inc.interrupted["t"]))) is not None:
                by = f" ({manual.get('who')}: {manual.get('reason')})"
            ms.append(
                Milestone(
                    "traffic fully returned",
                    None,
                    None,
                    f"never: the return stopped at {_step_text(inc.step)}, "
                    f"drained by hand at {when}{by}",
                )
            )
        elif inc.step is not None:
            _, when = _life_time(inc.step)
            at = _step_text(inc.step)
            ms.append(
                Milestone("traffic fully returned", None, None, f"not yet: at {at} since {when}")
            )
        else:
            ms.append(
                Milestone(
                    "traffic fully returned", None, None, "not yet (no return to active in the log)"
                )
            )
        inc.milestones = ms

    def cleared(
        self,
        spec: SiteLayout,
        inc: Incident,
        failing: list[tuple[float, Key]],
        end: float,
    ) -> Milestone:
        if not failing:
            for r in self.records:
                if (
                    r.get("kind") == "manual"
                    and r.get("site") == spec.name
                    and r.get("action") in ("undrain", "release", "expired")
                    and inc.start <= float(r["t"]) <= end
                ):
                    t, when = _life_time(r)
                    return Milestone("cause cleared", t, when, f"{r['action']} by {r.get('who')}")
            return Milestone("cause cleared", None, None, "not in the log")
        clearing = CLEARING_PROBES.get(str(inc.cause))
        keys = {k for _, k in failing if clearing is None or k[1] in clearing} or {
            k for _, k in failing
        }
        latest: dict[Key, bool | None] = {k: False for k in keys}
        for o in self.obs:
            key = (o.vantage, o.probe, o.target)
            if key not in keys or o.t <= inc.start or o.t > end:
                continue
            latest[key] = o.ok
            if all(v is True for v in latest.values()):
                names = ", ".join(row_name(k) for k in sorted(keys))
                return Milestone("cause cleared", o.t, o.time, f"passing again: {names}")
        return Milestone("cause cleared", None, None, "not in the log")

    def first_actuation(
        self, ident: str, spec: SiteLayout, effect: str, lo: float, hi: float
    ) -> Mapping[str, Any] | None:
        for r in self.records:
            if r.get("kind") != "actuation" or r.get("actuator") != ident or r.get("error"):
                continue
            if not lo <= float(r["t"]) <= hi:
                continue
            if any(effect in effects(str(c), spec) for c in r.get("applied") or []):
                return r
        return None

    def manual_drain(self, spec: SiteLayout, t: float) -> Mapping[str, Any] | None:
        """The operator's drain command of the site decided at `t` (logged just after)."""
        manual = [
            r
            for r in self.records
            if r.get("kind") == "manual"
            and r.get("site") == spec.name
            and r.get("action") == "drain"
            and float(r["t"]) <= t + 1.0
        ]
        return manual[-1] if manual else None

    def backends(
        self,
        spec: SiteLayout,
        lo: float,
        hi: float,
        effect: str,
        label: str,
        *,
        weighted: bool = False,
    ) -> list[tuple[str, Milestone]]:
        """Per traffic actuator (those that carry weights only, if `weighted`), and per
        target where its events name targets (HAProxy sockets, DNS servers): the
        read-back that confirmed `effect` (off, on, weight N) for the site, with the
        backend's name (`lb /run/a.sock (haproxy)`)."""
        out = []
        for act in self.layout.traffic_actuators(spec.name):
            if weighted and not act.weighted:
                continue
            targets: list[str | None] = []
            for r in self.records:
                if r.get("kind") == "actuation" and r.get("actuator") == act.ident:
                    target = r.get("target")
                    if target not in targets:
                        targets.append(target)
            named: list[str | None] = [t for t in targets if t is not None]
            for target in named or [None]:
                where = f"{act.ident} {target}" if target else act.ident
                name = f"{label} ({where}, {act.type})"
                found = self.confirmation(spec, act.ident, target, lo, hi, effect, name)
                missing = Milestone(name, None, None, "no confirmation in the log")
                out.append((f"{where} ({act.type})", found or missing))
        return out

    def confirmation(
        self,
        spec: SiteLayout,
        ident: str,
        target: str | None,
        lo: float,
        hi: float,
        effect: str,
        name: str,
    ) -> Milestone | None:
        applied: float | None = None
        for r in self.records:
            t = float(r.get("t", 0))
            if not lo <= t <= hi or r.get("actuator") != ident:
                continue
            kind = r.get("kind")
            if effect == "off" and kind in CONFIRMED_KINDS:
                if r.get("site") == spec.name and (
                    target is None or r.get("target") in (None, target)
                ):
                    t, when = _life_time(r)
                    on = f" {r['target']}" if r.get("target") else ""
                    return Milestone(name, t, when, f"confirmed{on} ({kind} event)")
                continue
            if kind != "actuation" or r.get("target") != target:
                continue
            if any(effect in effects(str(c), spec) for c in r.get("applied") or []):
                applied = t if applied is None else applied
            if applied is not None and not r.get("error") and r.get("in_sync"):
                t, when = _life_time(r)
                changes = [str(c) for c in r.get("applied") or [] if effects(str(c), spec)]
                # The changes this read-back applied, if any; one applied before it
                # (not read back in sync then) says when.
                text = "; ".join([*changes, "read back in sync"])
                if applied < t:
                    text += f" (applied at {clock(applied)})"
                return Milestone(name, t, when, text)
        return None


def build_report(
    layout: Layout,
    sources: Sequence[Sequence[Mapping[str, Any]]],
    *,
    since: float | None = None,
    sites: Sequence[str] | None = None,
    names: Sequence[str] = (),
    end: float | None = None,
) -> Report:
    """The report of the events at or after `since` (all when None), per site of `layout`.

    `sources` are whole audit logs in writing order (one per instance); the time
    before `since` still tells each site's state at its start. `end` extends the last
    bands (a replayed timeline's last probes changed nothing, so logged nothing).
    """
    records = sorted(
        (r for src in sources for r in src if isinstance(r.get("t"), int | float)),
        key=lambda r: float(r["t"]),
    )
    inside = [r for r in records if since is None or float(r["t"]) >= since]
    if inside:
        lo, hi = float(inside[0]["t"]), float(inside[-1]["t"])
    else:
        lo = hi = since or 0.0
    if end is not None:
        hi = max(hi, end)
    obs = _observations(sources, hi)
    builder = _Builder(layout, records, obs, lo, hi)
    chosen = [layout.sites[s] for s in (sites or sorted(layout.sites))]
    return Report(lo, hi, [builder.site(spec) for spec in chosen], list(names), len(inside))
