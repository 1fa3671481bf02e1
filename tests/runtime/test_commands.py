"""Typed commands (runtime/commands.py): what the API parses from a request's body."""

from __future__ import annotations

import pytest

from trafficd.runtime.commands import Command


def test_a_drain_parses_its_options_and_duration() -> None:
    body = {"reason": " upgrade ", "for": "30m", "stop_instances": True, "force": True}
    command = Command.parse("drain", "eu", "ops", body)
    assert command == Command(
        "drain", "eu", "ops", reason="upgrade", duration=1800.0, force=True, stop_instances=True
    )


def test_the_commands_that_change_something_need_a_reason() -> None:
    for action, site in (("drain", "eu"), ("hold", "eu"), ("pause", None)):
        for body in ({}, {"reason": " "}, {"reason": 3}):
            with pytest.raises(ValueError, match="reason: a non-empty string is required"):
                Command.parse(action, site, "ops", body)
    assert Command.parse("undrain", "eu", "ops", {}).reason == ""
    assert Command.parse("resume", None, "ops", {}) == Command("resume", None, "ops")


def test_a_bad_duration_site_or_action_is_refused() -> None:
    with pytest.raises(ValueError, match="soon"):
        Command.parse("drain", "eu", "ops", {"reason": "x", "for": "soon"})
    with pytest.raises(ValueError, match="a site is expected"):
        Command.parse("drain", None, "ops", {"reason": "x"})
    with pytest.raises(ValueError, match="no site is expected"):
        Command.parse("pause", "eu", "ops", {"reason": "x"})
    with pytest.raises(ValueError, match="unknown action"):
        Command.parse("explode", "eu", "ops", {"reason": "x"})
    pause = Command.parse("pause", None, "ops", {"reason": "backup", "hands_off": True})
    assert pause.hands_off and pause.site is None


@pytest.mark.parametrize("flag", ["force", "stop_instances", "hands_off"])
@pytest.mark.parametrize("value", ["false", "no", 0, 1, 0.5, [], {"x": 1}])
def test_a_flag_that_is_not_a_boolean_is_refused(flag: str, value: object) -> None:
    """`{"force": "false"}` must not mean force: a ValueError (the API's 400) naming it."""
    action, site = ("pause", None) if flag == "hands_off" else ("drain", "eu")
    with pytest.raises(ValueError, match=f"{flag}: true or false is expected"):
        Command.parse(action, site, "ops", {"reason": "x", flag: value})


def test_null_is_absent_as_it_always_was() -> None:
    """A client that sends its unset fields as null (`"for": null`, `"force": null`)
    was served before the body was checked; it still is: no duration, not forced."""
    body = {"reason": "x", "for": None, "force": None, "stop_instances": None}
    command = Command.parse("drain", "eu", "ops", body)
    assert (command.duration, command.force, command.stop_instances) == (None, False, False)


def test_a_flag_is_true_or_false_and_absent_is_false() -> None:
    body = {"reason": "x", "force": False, "stop_instances": False}
    assert Command.parse("drain", "eu", "ops", body) == Command("drain", "eu", "ops", reason="x")
    pause = Command.parse("pause", None, "ops", {"reason": "x", "hands_off": False})
    assert pause == Command("pause", None, "ops", reason="x")
    assert Command.parse("pause", None, "ops", {"reason": "x"}).hands_off is False


def test_a_reason_that_is_not_a_string_is_refused_on_every_action() -> None:
    for action, site in (
        ("drain", "eu"),
        ("undrain", "eu"),
        ("hold", "eu"),
        ("release", "eu"),
        ("pause", None),
        ("resume", None),
    ):
        for reason in ({"a": 1}, ["x"], 3, None, True):
            with pytest.raises(ValueError, match=r"reason: .*string"):
                Command.parse(action, site, "ops", {"reason": reason})
    assert Command.parse("undrain", "eu", "ops", {"reason": " done "}).reason == "done"


def test_a_pause_for_a_duration_is_refused() -> None:
    """A Pause has no expiry: `for` on it would be dropped and the pause kept for ever."""
    with pytest.raises(ValueError, match=r"for: .*pause"):
        Command.parse("pause", None, "ops", {"reason": "backup", "for": "1h"})


def test_a_key_the_action_does_not_take_is_refused() -> None:
    """A key that would be ignored (a typo, a flag of another action) is a 400, not a
    command that does less than the operator asked."""
    for action, site, body in (
        ("undrain", "eu", {"for": "1h"}),
        ("release", "eu", {"force": True}),
        ("resume", None, {"hands_off": True}),
        ("hold", "eu", {"reason": "x", "force": True}),
        ("hold", "eu", {"reason": "x", "stop_instances": False}),
        ("drain", "eu", {"reason": "x", "hands_off": True}),
        ("pause", None, {"reason": "x", "hands-off": True}),
        ("drain", "eu", {"reason": "x", "stop-instances": True}),
    ):
        key = next(k for k in body if k != "reason")
        with pytest.raises(ValueError, match=f"{key}: not taken by {action}"):
            Command.parse(action, site, "ops", body)


@pytest.mark.parametrize("value", ["0s", "0ms", "0h0m"])
def test_a_zero_duration_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="for: a finite duration above zero"):
        Command.parse("drain", "eu", "ops", {"reason": "x", "for": value})


@pytest.mark.parametrize("value", ["-5m", 30, True])
def test_a_negative_or_non_string_duration_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="for: "):
        Command.parse("hold", "eu", "ops", {"reason": "x", "for": value})


def test_a_duration_too_large_for_a_float_is_refused() -> None:
    with pytest.raises(ValueError, match="for: a finite duration above zero"):
        Command.parse("drain", "eu", "ops", {"reason": "x", "for": "9" * 400 + "h"})
