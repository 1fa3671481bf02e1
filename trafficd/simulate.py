"""`trafficd simulate`: replay a recorded observation timeline through the engine.

Sits beside the daemon, not inside it: it reads a JSON-lines timeline (the
audit log's format, docs/design.md), evaluates one engine round per
`probes.interval` of timeline time, and prints every transition and every
refused change. No network, no daemon, no clock. `audit_records` turns a
replay back into audit-log records, for `simulate --report` to draw
(trafficd.report).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from trafficd.engine import EnginePolicy, EngineState, decide
from trafficd.model import Observation, Probe


class TimelineError(ValueError):
    """A malformed timeline line: names the line."""


class Timeline(list[Observation]):
    """Observations in time order; `audit` when read from trafficd's audit log, whose
    last event (`end`) may come long after its last observation change."""

    audit = False
    end = float("-inf")


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
                if obj["kind"] != "observation":
                    continue  # an audit log's other events: replay reads its observations only
            obs = Observation.from_json(obj)
        except ValueError as exc:
            raise TimelineError(f"{name}:{n}: {exc}") from None
        if obs.t < last_t and not audit:
            raise TimelineError(f"{name}:{n}: lines must be in time order ({obs.t} < {last_t})")
        last_t = max(last_t, obs.t)
        out.append(obs)
    if audit:
        out.sort(key=lambda o: o.t)
        out.audit = True
    return out


@dataclass(frozen=True)
class Event:
    t: float
    body: dict[str, Any]


def simulate(
    observations: list[Observation],
    policy: EnginePolicy,
    *,
    end: float | None = None,
    carry_forward: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yield docs/design.md's simulate objects: transitions, refusals, then the final states.

    `carry_forward` is for audit logs, which record an observation only when it
    changes: each one stands, fresh, until the next change for its probe.
    """
    state = EngineState()
    latest: dict[tuple[str, Probe, str], Observation] = {}
    if observations:
        start = observations[0].t
        end = max(observations[-1].t, end if end is not None else float("-inf"))
        i, rounds = 0, int((end - start) // policy.interval) + 1
        for r in range(rounds):
            now = start + r * policy.interval
            while i < len(observations) and observations[i].t <= now:
                latest[observations[i].key] = observations[i]
                i += 1
            if carry_forward:
                latest = {k: replace(o, t=now) for k, o in latest.items()}
            decision = decide(state, latest, policy, {}, None, now)
            state = decision.state
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
    final = {}
    for spec in policy.sites:
        memory = state.site(spec.name)
        weight = spec.weight if memory.state.value == "active" else 0
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
    what = f"{obj['from']} -> {obj['to']}" if "to" in obj else f"refused by {obj['refused']}"
    reasons = "; ".join(obj["reasons"])
    return f"t={obj['t']:g} {obj['site']}: {what}" + (f": {reasons}" if reasons else "")
