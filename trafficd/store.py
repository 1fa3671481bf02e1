"""The store: what survives a restart, and the audit log.

Beside the pipeline (docs/design.md's data flow: the engine's state and the
operators' commands go in, the daemon reloads them at start). `state.json`
in `state_dir` holds overrides, the pause, every site's engine memory
(state, cause, timestamps, counters), each actuator's memory (replica
counts, believed instance states) and, with coordination, the highest fencing
token the instance has seen (a shared store that restarts empty numbers its next
leader above it, coordination/base.py); `Store.load` reads it back as a typed
`SavedState`. It is written atomically: a
temporary file, fsync, rename, fsync of the directory, so a crash leaves
the old file or the new one, never half of one.

`events.jsonl` is the audit log: one JSON object per line with `time` (RFC
3339), `t` (epoch seconds) and `kind`: `observation` (in docs/design.md's
timeline format, written when an observation changes, so `trafficd
simulate` can replay the log), `transition`, `refused`, `manual`,
`actuation`. It rotates by size through the standard library's
RotatingFileHandler; `read_events` reads the rotated files too.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trafficd.model import (
    Cause,
    EngineState,
    LocationMemory,
    Override,
    Pause,
    Responses,
    SiteDecision,
    SiteMemory,
    State,
)

STATE_FILE = "state.json"
EVENTS_FILE = "events.jsonl"
FORMAT_VERSION = 1


def _time(value: float | None) -> float | None:
    """JSON has no infinity: 'never' is stored as null."""
    return None if value is None or math.isinf(value) else value


def _untime(value: float | None) -> float:
    return float("-inf") if value is None else float(value)


def memory_to_json(m: SiteMemory) -> dict[str, Any]:
    return {
        "state": m.state.value,
        "cause": m.cause.value if m.cause else None,
        "since": _time(m.since),
        "active_since": _time(m.active_since),
        "drained_at": _time(m.drained_at),
        "stop_instances": m.stop_instances,
        "fails": dict(m.fails),
        "oks": dict(m.oks),
        "drains": list(m.drains),
        "manual": m.manual,
        "seen": dict(m.seen),
        "refused": m.refused,
        "returning": m.returning,
        "step_since": _time(m.step_since),
        # Not "step_responses": that key held one sum before the counts were kept per
        # source, and a trafficd of then reading this file (a downgrade, a follower in
        # a rolling upgrade) must find no base rather than fail on per-source counts.
        "step_sources": (
            None
            if m.step_responses is None
            else {k: _responses_to_json(r) for k, r in sorted(m.step_responses.items())}
        ),
        "step_read_at": _time(m.step_read_at),
        "step_counted": None if m.step_counted is None else _responses_to_json(m.step_counted),
    }


def _responses_to_json(r: Responses) -> dict[str, Any]:
    out: dict[str, Any] = {"total": r.total, "errors": r.errors}
    if r.started:
        out["started"] = r.started
    return out


def _responses(obj: Any) -> Responses:
    return Responses(int(obj["total"]), int(obj["errors"]), str(obj.get("started") or ""))


def _step_sources(obj: Any) -> dict[str, Responses] | None:
    """Per source. A file written before the counts were kept per source holds one sum
    under "step_responses", not read: no base then, the step's next reading is its
    base."""
    if not isinstance(obj, Mapping):
        return None
    return {str(k): _responses(v) for k, v in obj.items()}


def memory_from_json(obj: Mapping[str, Any]) -> SiteMemory:
    return SiteMemory(
        state=State(obj["state"]),
        cause=Cause(obj["cause"]) if obj.get("cause") else None,
        since=_untime(obj.get("since")),
        active_since=_untime(obj.get("active_since")),
        drained_at=_untime(obj.get("drained_at")),
        stop_instances=bool(obj.get("stop_instances", False)),
        fails={str(k): int(v) for k, v in dict(obj.get("fails", {})).items()},
        oks={str(k): int(v) for k, v in dict(obj.get("oks", {})).items()},
        drains=tuple(float(t) for t in obj.get("drains", ())),
        manual=bool(obj.get("manual", False)),
        seen={str(k): str(v) for k, v in dict(obj.get("seen", {})).items()},
        refused=None if obj.get("refused") is None else str(obj["refused"]),
        # Absent from files written before the gradual return: not returning.
        returning=int(obj.get("returning") or 0),
        step_since=_untime(obj.get("step_since")),
        step_responses=_step_sources(obj.get("step_sources")),
        step_read_at=_untime(obj.get("step_read_at", obj.get("step_since"))),
        step_counted=(None if obj.get("step_counted") is None else _responses(obj["step_counted"])),
    )


def engine_to_json(state: EngineState) -> dict[str, Any]:
    return {
        "sites": {name: memory_to_json(m) for name, m in sorted(state.sites.items())},
        "locations": {
            name: {"down": m.down, "up": m.up, "unreachable": m.unreachable, "seen": m.seen}
            for name, m in sorted(state.locations.items())
        },
        "drains": list(state.drains),
        "last_round": _time(state.last_round),
        "unreachable": {v: sorted(locs) for v, locs in sorted(state.unreachable.items())},
        "waiting": dict(sorted(state.waiting.items())),
    }


def engine_from_json(obj: Mapping[str, Any]) -> EngineState:
    return EngineState(
        sites={name: memory_from_json(m) for name, m in dict(obj.get("sites", {})).items()},
        locations={
            name: LocationMemory(
                int(m.get("down", 0)),
                int(m.get("up", 0)),
                bool(m.get("unreachable", False)),
                str(m.get("seen", "")),
            )
            for name, m in dict(obj.get("locations", {})).items()
        },
        drains=tuple(float(t) for t in obj.get("drains", ())),
        last_round=_untime(obj.get("last_round")),
        unreachable={
            str(v): frozenset(str(loc) for loc in locs)
            for v, locs in dict(obj.get("unreachable", {})).items()
        },
        waiting={str(loc): float(t) for loc, t in dict(obj.get("waiting", {})).items()},
    )


def decisions_to_json(sites: Mapping[str, SiteDecision]) -> dict[str, Any]:
    """The leader's decisions, as the other instances show them (coordination)."""
    return {
        name: {
            "state": d.state.value,
            "cause": d.cause.value if d.cause else None,
            "weight": d.weight,
            "instances": d.instances,
            "actuate": d.actuate,
            "would_drain": d.would_drain,
            "reasons": list(d.reasons),
            "return_step": d.return_step,
            "return_percent": d.return_percent,
        }
        for name, d in sorted(sites.items())
    }


def decisions_from_json(obj: Mapping[str, Any]) -> dict[str, SiteDecision]:
    return {
        name: SiteDecision(
            site=name,
            state=State(d["state"]),
            cause=Cause(d["cause"]) if d.get("cause") else None,
            weight=int(d["weight"]),
            instances=str(d["instances"]),
            actuate=bool(d["actuate"]),
            would_drain=bool(d["would_drain"]),
            reasons=tuple(str(r) for r in d.get("reasons", ())),
            return_step=None if d.get("return_step") is None else int(d["return_step"]),
            return_percent=None if d.get("return_percent") is None else int(d["return_percent"]),
        )
        for name, d in obj.items()
    }


class StateFileError(Exception):
    """The state file cannot be read: named, with the reason; the daemon refuses to start.
    (The shared store's error is `trafficd.coordination.SharedStoreError`.)"""


# What one actuator remembers across restarts (replica counts, believed instance
# states): its own JSON object, kept under its `id`.
ActuatorMemory = Mapping[str, Any]


@dataclass(frozen=True)
class SavedState:
    """What state.json holds, read back; a missing file is the fresh state."""

    engine: EngineState = field(default_factory=EngineState)
    overrides: Mapping[str, Override] = field(default_factory=dict)
    pause: Pause | None = None
    actuator_memory: Mapping[str, ActuatorMemory] = field(default_factory=dict)
    highest_token: int = 0  # the highest fencing token seen (coordination); 0: none

    @classmethod
    def from_json(cls, raw: object) -> SavedState:
        """The state.json document. Keys an older trafficd did not write take their
        fresh value; keys a newer one wrote are ignored. Raises ValueError, KeyError or
        TypeError when malformed."""
        if not isinstance(raw, dict):
            raise ValueError(f"expected an object, not {type(raw).__name__}")
        version = raw.get("version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(f"format {version!r} is newer than this trafficd reads")
        memory = dict(raw.get("actuators", {}))
        if not all(isinstance(m, dict) for m in memory.values()):
            raise ValueError("actuators: every actuator's memory must be an object")
        return cls(
            engine=engine_from_json(raw.get("engine", {})),
            overrides={
                str(site): Override.from_json(o)
                for site, o in dict(raw.get("overrides", {})).items()
            },
            pause=Pause.from_json(raw["pause"]) if raw.get("pause") else None,
            actuator_memory={str(ident): m for ident, m in memory.items()},
            # Absent from files written before it was kept, and alone (no coordination).
            highest_token=_token(raw.get("highest_token", 0)),
        )


def _token(obj: object) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int) or obj < 0:
        raise ValueError(f"highest_token: expected a whole number >= 0, not {obj!r}")
    return obj


class Store:
    def __init__(
        self, state_dir: str | Path, *, max_bytes: int = 10 << 20, backups: int = 5
    ) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state_path = self.dir / STATE_FILE
        self.events_path = self.dir / EVENTS_FILE
        self._audit = logging.getLogger(f"trafficd.audit.{id(self)}")
        self._audit.propagate = False
        self._audit.setLevel(logging.INFO)
        self._handler = logging.handlers.RotatingFileHandler(
            self.events_path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._audit.addHandler(self._handler)
        # The highest fencing token this instance has seen (coordination): `load` reads
        # it back, every `save` writes it, the runtime raises it (runtime/leader.py), so
        # the callers that save the engine and the overrides need not carry it.
        self.highest_token = 0

    def close(self) -> None:
        self._audit.removeHandler(self._handler)
        self._handler.close()

    # --- state.json ----------------------------------------------------------------------

    def load(self) -> SavedState:
        if not self.state_path.exists():
            return SavedState()
        try:
            text = self.state_path.read_text()
        except OSError as exc:  # a directory in its place, no permission, an I/O error
            raise StateFileError(f"{self.state_path}: {exc.strerror or exc}") from None
        try:
            saved = SavedState.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateFileError(f"{self.state_path}: unreadable state: {exc}") from None
        self.highest_token = max(self.highest_token, saved.highest_token)
        return saved

    def save(
        self,
        engine: EngineState,
        overrides: Mapping[str, Override],
        pause: Pause | None,
        actuator_memory: Mapping[str, ActuatorMemory],
    ) -> None:
        doc = {
            "version": FORMAT_VERSION,
            "saved_at": time.time(),
            "engine": engine_to_json(engine),
            "overrides": {site: o.to_json() for site, o in sorted(overrides.items())},
            "pause": pause.to_json() if pause else None,
            "actuators": dict(actuator_memory),
            "highest_token": self.highest_token,
        }
        data = json.dumps(doc, indent=1, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=".state.", dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # --- the audit log -------------------------------------------------------------------

    def event(self, kind: str, **fields_: Any) -> dict[str, Any]:
        now = fields_.pop("t", None) or time.time()
        record = {
            "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "t": now,
            "kind": kind,
            **fields_,
        }
        self._audit.info(json.dumps(record, sort_keys=True, default=str))
        return record


def read_events(state_dir: str | Path, since: float | None = None) -> Iterator[dict[str, Any]]:
    """The audit log, oldest first, rotated files included; unparsable lines are skipped."""
    base = Path(state_dir) / EVENTS_FILE
    rotated = sorted(
        (p for p in base.parent.glob(EVENTS_FILE + ".*") if p.suffix[1:].isdigit()),
        key=lambda p: int(p.suffix[1:]),
        reverse=True,
    )
    for path in [*rotated, base]:
        if not path.exists():
            continue
        with path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and (since is None or record.get("t", 0) >= since):
                    yield record
