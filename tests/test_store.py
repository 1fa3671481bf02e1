"""The store: atomic state that survives a restart, and the rotated audit log."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from trafficd.model import (
    NEVER,
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
from trafficd.store import (
    SavedState,
    StateFileError,
    Store,
    decisions_from_json,
    decisions_to_json,
    memory_from_json,
    memory_to_json,
    read_events,
)


def test_state_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path)
    engine = EngineState(
        sites={
            "eu": SiteMemory(
                state=State.DRAINED,
                cause=Cause.STORAGE,
                since=10.0,
                drained_at=10.0,
                fails={"storage": 3},
                drains=(10.0,),
                manual=True,  # a manual drain stacked on the storage cause
                seen={"instance": "1 failing, 0 ok, quorum 1"},
                refused="paused",
            ),
            "us": SiteMemory(),  # 'never' timestamps are -inf in memory, null on disk
            # Returning in steps: at 50% since t=20, the canary's counters per socket as
            # last read at t=23, and what they counted since the step's first reading.
            "ap": SiteMemory(
                state=State.ACTIVE,
                since=14.0,
                active_since=14.0,
                returning=50,
                step_since=20.0,
                step_responses={
                    "total": Responses(total=9, errors=9),  # a source may have any name
                    "/run/a.sock be/eu": Responses(total=412, errors=3, started="4711"),
                    "/run/b.sock be/eu": Responses(total=7, errors=0),
                },
                step_read_at=23.0,
                step_counted=Responses(total=120, errors=1),
            ),
        },
        locations={
            "eustorage": LocationMemory(down=4, seen="1 failing, 0 ok, quorum 1"),
            "usstorage": LocationMemory(down=1, unreachable=True),
        },
        drains=(10.0,),
        last_round=12.0,
        unreachable={"v1": frozenset({"usstorage"})},  # what the vantage knows it cannot reach
        waiting={"eustorage": 11.0},  # votes too few to decide, waiting for the next round's
    )
    overrides = {"us": Override("hold", "release day", "admin", 5.0, expires=3605.0)}
    pause = Pause("dns migration", "ops", 7.0, hands_off=True)
    store.highest_token = 41  # the highest fencing token seen (coordination)
    store.save(engine, overrides, pause, {"command": {"believed": {"eu": "stopped"}}})
    raw = json.loads((tmp_path / "state.json").read_text())  # strict JSON: no Infinity
    assert raw["engine"]["sites"]["us"]["since"] is None
    loaded = Store(tmp_path).load()
    assert isinstance(loaded, SavedState)
    assert loaded.engine.sites == engine.sites
    assert loaded.engine.locations == engine.locations
    assert loaded.engine.last_round == 12.0
    assert loaded.engine.unreachable == engine.unreachable
    assert loaded.engine.waiting == engine.waiting
    assert loaded.overrides == overrides
    assert loaded.pause == pause
    assert loaded.actuator_memory == {"command": {"believed": {"eu": "stopped"}}}
    assert loaded.highest_token == 41
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".state.")] == []
    store.close()


def test_the_highest_token_loaded_is_kept_by_every_later_save(tmp_path: Path) -> None:
    """Saves come from callers that know nothing of the token (a command, a reload):
    the token a restarted instance read back must not be lost on its first save."""
    first = Store(tmp_path)
    first.highest_token = 7
    first.save(EngineState(), {}, None, {})
    first.close()
    again = Store(tmp_path)
    assert again.load().highest_token == 7 and again.highest_token == 7
    again.save(EngineState(last_round=3.0), {}, None, {})
    again.close()
    assert Store(tmp_path).load().highest_token == 7


def test_a_state_file_from_before_the_gradual_return_loads_as_not_returning() -> None:
    old = {"state": "active", "cause": None, "since": 1.0, "active_since": 1.0}
    memory = memory_from_json(old)
    assert (memory.returning, memory.step_since, memory.step_responses) == (0, NEVER, None)


def test_a_returning_sites_decision_survives_the_shared_store() -> None:
    decision = SiteDecision(
        site="eu",
        state=State.ACTIVE,
        cause=None,
        weight=10,
        instances="running",
        actuate=True,
        would_drain=False,
        reasons=("returning: step 1 (weight 10) of 3",),
        return_step=1,
        return_percent=10,
    )
    sent = json.loads(json.dumps(decisions_to_json({"eu": decision})))
    assert decisions_from_json(sent) == {"eu": decision}


def test_unreadable_state_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"engine": {"sites": {"eu": {"state": "gone"}}}}')
    with pytest.raises(
        StateFileError, match=r"state\.json: unreadable state: 'gone' is not a valid State"
    ):
        Store(tmp_path).load()


def test_no_state_file_is_the_fresh_state(tmp_path: Path) -> None:
    assert Store(tmp_path).load() == SavedState()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"engine": {"sites": {"eu": {', "Expecting"),  # cut short by a full disk
        ("[1, 2]", "expected an object, not list"),
        ('{"overrides": {"eu": {"kind": "drain"}}}', "override: missing key 'reason'"),
        ('{"overrides": {"eu": [1]}}', "expected an object, not list"),
        ('{"pause": {"reason": "r", "who": "w", "at": "soon"}}', "could not convert"),
        ('{"actuators": {"command": ["stopped"]}}', "every actuator's memory must be an object"),
        ('{"version": 2, "engine": {}}', "format 2 is newer than this trafficd reads"),
        ('{"highest_token": "12"}', "highest_token: expected a whole number >= 0, not '12'"),
        ('{"highest_token": -1}', "highest_token: expected a whole number >= 0, not -1"),
    ],
)
def test_a_corrupt_state_file_is_an_error_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / "state.json").write_text(text)
    with pytest.raises(StateFileError, match=r"state\.json: unreadable state: ") as info:
        Store(tmp_path).load()
    assert message in str(info.value)


def test_an_older_state_file_loads_with_fresh_values_for_what_it_lacks(tmp_path: Path) -> None:
    """An older trafficd wrote no version, no pause and no actuators, and site memories
    without the later counters; keys a newer trafficd adds are ignored."""
    (tmp_path / "state.json").write_text(
        json.dumps(
            {
                "engine": {
                    "sites": {"eu": {"state": "drained", "cause": "storage", "since": 10.0}},
                    "last_round": 12.0,
                },
                "overrides": {
                    "us": {"kind": "hold", "reason": "r", "who": "ops", "at": 5.0, "later": 1}
                },
            }
        )
    )
    loaded = Store(tmp_path).load()
    assert loaded.engine.sites == {
        "eu": SiteMemory(state=State.DRAINED, cause=Cause.STORAGE, since=10.0)
    }
    assert loaded.engine.locations == {} and loaded.engine.last_round == 12.0
    assert loaded.overrides == {"us": Override("hold", "r", "ops", 5.0)}
    assert loaded.pause is None and loaded.actuator_memory == {}
    assert loaded.highest_token == 0  # kept since coordination numbers above it


def test_a_crash_during_save_keeps_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    store.save(EngineState(last_round=1.0), {}, None, {})

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.save(EngineState(last_round=2.0), {}, None, {})
    monkeypatch.undo()
    assert Store(tmp_path).load().engine.last_round == 1.0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".state.")] == []
    store.close()


def test_audit_log_rotates_and_reads_back_in_order(tmp_path: Path) -> None:
    store = Store(tmp_path, max_bytes=2000, backups=3)
    for i in range(80):
        store.event("manual", t=1000.0 + i, action="hold", site="eu", who="admin", reason=f"n{i}")
    store.close()
    assert (tmp_path / "events.jsonl.1").exists()
    events = list(read_events(tmp_path))
    ts = [e["t"] for e in events]
    assert ts == sorted(ts) and ts[-1] == 1079.0
    assert len(events) < 80  # the oldest rotated away: bounded by max_bytes x backups
    assert [e["t"] for e in read_events(tmp_path, since=1075.0)] == [1075.0 + i for i in range(5)]


def test_a_state_file_with_one_summed_canary_count_loads_with_no_base() -> None:
    """Written when a step kept one sum over every socket: that sum cannot be split per
    socket, so the step's next reading is its base (counted from the step's start on)."""
    old = {
        "state": "active",
        "returning": 10,
        "step_since": 30.0,
        "step_responses": {"total": 412, "errors": 3},
    }
    memory = memory_from_json(old)
    assert (memory.returning, memory.step_responses, memory.step_counted) == (10, None, None)
    assert memory.step_read_at == 30.0


def test_per_source_counts_are_kept_where_a_trafficd_of_one_sum_does_not_read_them() -> None:
    """Issue 21 review: the per-source base was written under "step_responses", where the
    trafficd before it read one sum and failed (KeyError 'total') on a downgrade or in
    a rolling upgrade's older follower. There it finds no base now."""
    memory = SiteMemory(
        state=State.ACTIVE,
        returning=10,
        step_since=30.0,
        step_responses={"/run/a.sock be/eu": Responses(412, 3)},
        step_read_at=31.0,
    )
    saved = memory_to_json(memory)
    assert "step_responses" not in saved
    assert saved["step_sources"] == {"/run/a.sock be/eu": {"total": 412, "errors": 3}}
    assert memory_from_json(saved) == memory


def test_a_state_file_that_cannot_be_read_is_a_state_file_error(tmp_path: Path) -> None:
    """A directory where state.json should be (or no permission): the same clear error as
    a malformed file, naming it, not an OSError's traceback (issue 19 review)."""
    store = Store(tmp_path)
    store.state_path.mkdir()
    with pytest.raises(StateFileError, match=r"state\.json: Is a directory"):
        store.load()
    store.close()
