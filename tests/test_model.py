"""The model's (de)serialisation: what state.json and the shared store keep."""

from __future__ import annotations

import pytest

from trafficd.model import Override, Pause


def test_override_and_pause_round_trip() -> None:
    override = Override("drain", "storage migration", "ops", 5.0, 3605.0, True, True)
    assert Override.from_json(override.to_json()) == override
    pause = Pause("dns migration", "ops", 7.0, hands_off=True)
    assert Pause.from_json(pause.to_json()) == pause


def test_unknown_keys_are_ignored_and_missing_optional_ones_take_defaults() -> None:
    obj = {"kind": "hold", "reason": "r", "who": "w", "at": 1, "from_a_newer_trafficd": 1}
    assert Override.from_json(obj) == Override("hold", "r", "w", 1.0)
    assert Pause.from_json({"reason": "r", "who": "w", "at": 2}) == Pause("r", "w", 2.0)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (["drain"], "expected an object, not list"),
        ({"kind": "drain", "reason": "r", "who": "w"}, "override: missing key 'at'"),
        ({"kind": "drain", "reason": "r", "who": "w", "at": None}, "override: "),
    ],
)
def test_a_malformed_override_is_a_value_error(obj: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Override.from_json(obj)
