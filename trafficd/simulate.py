"""`trafficd simulate`: replay a recorded observation timeline through the engine.

Sits beside the daemon, not inside it: it reads a JSON-lines timeline (the
audit log's format, docs/design.md), evaluates one engine round per
`probes.interval` of timeline time, and prints every transition and every
refused change. No network, no daemon, no clock. `audit_records` turns a
replay back into audit-log records, for `simulate --report` to draw
(trafficd.report).

Besides observations, a timeline (or an audit log) may hold the events that
change decisions without being observations, replayed as the daemon would
act on them: `manual` (an operator's drain, undrain, hold, release, pause,
resume; a drain is tried first and a refusal stores nothing, like the API's
409), `clock` (`step`: seconds the wall clock jumps; observations are then
stamped with the stepped wall time, as probers do, and the daemon's
EngineClock takes the step out), `restart` (the engine state is saved
and loaded, as across a daemon restart) and `responses` (a site's
cumulative HTTP response counters as its load balancer counts them, read at
the event's time: the engine's canary input; `total` and `errors` for one
counter, or `sources` mapping each counter, one socket's, to its `total` and
`errors` (and `started`, the counting process: HAProxy's pid), or `unread`: the
sockets that could not be read; a timeline without any has no load balancer).
Each reading stands, with its time, until the next: the daemon reads every
interval, a timeline gives the readings that matter, and a step goes up only
once a reading at or after its end counted it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from trafficd.clock import EngineClock
from trafficd.config.types import parse_duration
from trafficd.engine import EnginePolicy, decide
from trafficd.engine.decide import trial_drain
from trafficd.model import (
    CanaryReading,
    EngineState,
    Observation,
    Override,
    Pause,
    Probe,
    Responses,
)
from trafficd.store import engine_from_json, engine_to_json

EVENT_KINDS = ("manual", "clock", "restart", "responses")


class TimelineError(ValueError):
    """A malformed timeline line: names the line."""


class Timeline(list[Observation]):
    """Observations in time order; `audit` when read from trafficd's audit log, whose
    last event (`end`) may come long after its last observation change."""

    audit = False
    end = float("-inf")

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[float, dict[str, Any]]] = []


def read_timeline(lines: Iterable[str], name: str) -> Timeline:
    """A timeline file must be in time order already; an audit log (lines with `kind`)
    is sorted, since probes are logged when they finish, not when they start."""
    out = Timeline()
    last_t = float("-inf")
    audit = False
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("each line must be a JSON object")
            if "kind" in obj:
                audit = True
                if isinstance(obj.get("t"), int | float):
                    out.end = max(out.end, float(obj["t"]))
                if obj["kind"] in EVENT_KINDS:
                    out.events.append((float(obj["t"]), _event(obj)))
                    continue
                if obj["kind"] != "observation":
                    continue  # an audit log's other events: replay reads what decides
            obs = Observation.from_json(obj)
        except ValueError as exc:
            raise TimelineError(f"{name}:{n}: {exc}") from None
        if obs.t < last_t and not audit:
            raise TimelineError(f"{name}:{n}: lines must be in time order ({obs.t} < {last_t})")
        last_t = max(last_t, obs.t)
        out.append(obs)
    if audit:
        out.sort(key=lambda o: o.t)
        out.events.sort(key=lambda e: e[0])
        out.audit = True
    return out


_ACTIONS = ("drain", "undrain", "hold", "release", "pause", "resume")


def _event(obj: dict[str, Any]) -> dict[str, Any]:
    """Checks one event line; raises ValueError (with the line named by the caller)."""
    kind = obj["kind"]
    if kind == "manual":
        if obj.get("action") not in _ACTIONS:
            raise ValueError(f"action must be one of {', '.join(_ACTIONS)}")
        if obj["action"] not in ("pause", "resume") and not isinstance(obj.get("site"), str):
            raise ValueError("a manual event needs its site")
        if obj.get("for") is not None:
            parse_duration(obj["for"])
        for flag in ("force", "stop_instances", "hands_off"):
            # As the API: only a JSON boolean (a string "false" would be taken as true).
            if obj.get(flag) is not None and not isinstance(obj[flag], bool):
                raise ValueError(f"{flag}: true or false is expected")
    elif kind == "clock" and not isinstance(obj.get("step"), int | float):
        raise ValueError("a clock event needs step (seconds the wall clock jumps)")
    elif kind == "responses":
        if not isinstance(obj.get("site"), str):
            raise ValueError("a responses event needs its site")
        unread = obj.get("unread")
        if unread is not None:
            if (
                not isinstance(unread, list)
                or not unread
                or not all(isinstance(u, str) for u in unread)
            ):
                raise ValueError("a responses event's unread lists the sockets not read")
            return obj
        sources = obj.get("sources")
        if sources is not None and (not isinstance(sources, dict) or not sources):
            raise ValueError("a responses event's sources map each counter to its counts")
        for counts in sources.values() if sources is not None else (obj,):
            for key in ("total", "errors"):
                value = counts.get(key) if isinstance(counts, dict) else None
                if type(value) is not int or value < 0:
                    raise ValueError(f"a responses event needs {key}, a count (0 or more)")
    return obj


def _reading(obj: dict[str, Any], at: float) -> CanaryReading:
    """A `responses` event as the runtime reads it: one counter (`lb`) or its sources."""
    if obj.get("unread"):
        return CanaryReading(at, {}, tuple(obj["unread"]))
    sources = obj.get("sources") or {"lb": obj}
    return CanaryReading(
        at,
        {
            str(k): Responses(int(v["total"]), int(v["errors"]), str(v.get("started") or ""))
            for k, v in sources.items()
        },
    )


@dataclass(frozen=True)
class Event:
    t: float
    body: dict[str, Any]


class _Operator:
    """The overrides and the pause, changed by `manual` events as the daemon's API would."""

    def __init__(self) -> None:
        self.overrides: dict[str, Override] = {}
        self.pause: Pause | None = None

    def apply(
        self,
        obj: dict[str, Any],
        state: EngineState,
        latest: Any,
        policy: EnginePolicy,
        now: float,
        wall: float,
    ) -> dict[str, Any] | None:
        """Applies one command; returns a refusal object when a drain is refused."""
        action, site = obj["action"], str(obj.get("site", ""))
        who, reason = str(obj.get("who", "operator")), str(obj.get("reason", ""))
        expires = obj.get("expires")
        if obj.get("for") is not None:
            expires = wall + parse_duration(obj["for"])
        if action in ("drain", "hold"):
            override = Override(
                kind=action,
                reason=reason,
                who=who,
                at=wall,
                expires=None if expires is None else float(expires),
                force=bool(obj.get("force", False)),
                stop_instances=bool(obj.get("stop_instances", False)),
            )
            if action == "drain":
                refusal = trial_drain(
                    state,
                    latest,
                    policy,
                    self.overrides,
                    self.pause,
                    now,
                    site,
                    override,
                    wall=wall,
                )
                if refusal is not None:
                    return {
                        "site": site,
                        "refused": refusal.rule,
                        "command": "drain",
                        "reasons": list(refusal.reasons),
                    }
            self.overrides[site] = override
        elif action in ("undrain", "release"):
            self.overrides.pop(site, None)
        elif action == "pause":
            self.pause = Pause(
                reason=reason, who=who, at=wall, hands_off=bool(obj.get("hands_off"))
            )
        else:
            self.pause = None
        return None


def simulate(
    observations: list[Observation],
    policy: EnginePolicy,
    *,
    end: float | None = None,
    carry_forward: bool = False,
    events: list[tuple[float, dict[str, Any]]] | None = None,
    every_round: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield docs/design.md's simulate objects: transitions, refusals, then the final states.

    `carry_forward` is for audit logs, which record an observation only when it
    changes: each one stands, fresh, until the next change for its probe.
    `events`: manual commands, wall-clock steps, restarts and response counters, at
    their times.
    `every_round`: also yield each round's site decisions ({"t", "sites"}).
    """
    state = EngineState()
    # The load balancer's response counters per site; None until the timeline gives
    # some (no load balancer: only the probes decide a return).
    canary: dict[str, CanaryReading] | None = None
    weights = {spec.name: spec.weight for spec in policy.sites}
    latest: dict[tuple[str, Probe, str], Observation] = {}
    events = sorted(events or [], key=lambda e: e[0])
    operator = _Operator()
    # Timeline times are the daemon's steady time; `clock` events step the wall clock
    # the daemon reads, which its EngineClock takes out again.
    mono, steps = [0.0], [0.0]
    clock = EngineClock(wall=lambda: mono[0] + steps[0], monotonic=lambda: mono[0])
    if observations or events:
        start = min([o.t for o in observations[:1]] + [e[0] for e in events[:1]])
        last = max([o.t for o in observations[-1:]] + [e[0] for e in events[-1:]])
        end = max(last, end if end is not None else float("-inf"))
        i, j, rounds = 0, 0, int((end - start) // policy.interval) + 1
        mono[0] = start
        clock = EngineClock(wall=lambda: mono[0] + steps[0], monotonic=lambda: mono[0])
        for r in range(rounds):
            mono[0] = start + r * policy.interval
            while j < len(events) and events[j][0] <= mono[0]:
                obj = events[j][1]
                j += 1
                if obj["kind"] == "clock":
                    steps[0] += float(obj["step"])
                elif obj["kind"] == "restart":
                    state = engine_from_json(json.loads(json.dumps(engine_to_json(state))))
                elif obj["kind"] == "responses":
                    canary = {} if canary is None else canary
                    canary[str(obj["site"])] = _reading(obj, clock.now())
                else:
                    refused = operator.apply(obj, state, latest, policy, clock.now(), clock.wall())
                    if refused is not None:
                        yield {"t": mono[0], **refused}
            while i < len(observations) and observations[i].t <= mono[0]:
                o = observations[i]
                # stamped with the wall time a prober would read, then on the engine clock
                latest[o.key] = replace(o, t=clock.stamp(o.t + steps[0]))
                i += 1
            now = clock.now()
            if carry_forward:
                latest = {k: replace(o, t=now) for k, o in latest.items()}
            decision = decide(
                state,
                latest,
                policy,
                operator.overrides,
                operator.pause,
                now,
                wall=clock.wall(),
                canary=canary,
            )
            state = decision.state
            weights = {name: d.weight for name, d in decision.sites.items()}
            now = mono[0]
            if every_round:
                yield {
                    "t": now,
                    "sites": {
                        name: {
                            "state": d.state.value,
                            "cause": d.cause.value if d.cause else None,
                            "instances": d.instances,
                            "weight": d.weight,
                            "return_step": d.return_step,
                            "reasons": list(d.reasons),
                        }
                        for name, d in decision.sites.items()
                    },
                }
            for tr in decision.transitions:
                yield {
                    "t": now,
                    "site": tr.site,
                    "from": tr.from_state.value,
                    "to": tr.to_state.value,
                    "cause": tr.cause.value if tr.cause else None,
                    "reasons": list(tr.reasons),
                }
            for refusal in decision.refusals:
                yield {
                    "t": now,
                    "site": refusal.site,
                    "refused": refusal.rule,
                    "reasons": list(refusal.reasons),
                }
            for step in decision.steps:
                yield {
                    "t": now,
                    "site": step.site,
                    "step": step.step,
                    "percent": step.percent,
                    "weight": step.weight,
                    "reasons": list(step.reasons),
                }
    final = {}
    for spec in policy.sites:
        memory = state.site(spec.name)
        weight = weights.get(spec.name, spec.weight) if memory.state.value == "active" else 0
        final[spec.name] = {"state": memory.state.value, "weight": weight}
    yield {"final": final}


def audit_records(
    observations: list[Observation], replay: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The replay as the daemon's audit log would hold it: the timeline's observations
    (each logged when it changes, as the daemon does) and the engine's transitions and
    refusals, in time order."""
    out: list[dict[str, Any]] = []
    last: dict[tuple[str, Probe, str], tuple[bool | None, str | None, dict[str, bool]]] = {}
    for obs in observations:
        seen = (obs.ok, obs.reason, dict(obs.services))
        if last.get(obs.key) != seen:
            last[obs.key] = seen
            out.append({"kind": "observation", **obs.to_json()})
    for obj in replay:
        if "to" in obj:
            out.append({"kind": "transition", "automatic": True, **obj})
        elif "step" in obj:
            out.append({"kind": "return_step", **obj})
        elif "refused" in obj:
            rule = obj["refused"]
            out.append(
                {
                    "kind": "refused",
                    "t": obj["t"],
                    "site": obj["site"],
                    "rule": rule,
                    "reasons": obj["reasons"],
                }
            )
    out.sort(key=lambda r: float(r["t"]))
    return out


def render_text(obj: dict[str, Any]) -> str:
    if "final" in obj:
        return "final: " + ", ".join(
            f"{site}={v['state']} (weight {v['weight']})" for site, v in obj["final"].items()
        )
    if "to" in obj:
        what = f"{obj['from']} -> {obj['to']}"
    elif "step" in obj:
        what = f"return step {obj['step']} ({obj['percent']}%, weight {obj['weight']})"
    else:
        what = f"refused by {obj['refused']}"
    if "command" in obj:
        what = f"{obj['command']} {what}"
    reasons = "; ".join(obj["reasons"])
    return f"t={obj['t']:g} {obj['site']}: {what}" + (f": {reasons}" if reasons else "")
