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
