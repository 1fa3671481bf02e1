"""The command line offers every command of docs/design.md; unbuilt ones say so plainly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from trafficd.cli import main

COMMANDS = [
    "run",
    "check-config",
    "status",
    "drain",
    "undrain",
    "hold",
    "release",
    "pause",
    "resume",
    "events",
    "simulate",
    "replication",
]


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trafficd.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize(
    "argv",
    [
        ["replication", "status", "-c", "x.yaml"],
        ["replication", "check-removal", "eustorage", "-c", "x.yaml"],
    ],
)
def test_replication_commands_need_a_replication_section(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = Path(__file__).resolve().parents[1] / "examples" / "demo.yaml"
    assert main([*argv[:-1], str(config)]) == 2
    assert "no replication section: nothing to read" in capsys.readouterr().err


def test_check_config_requires_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check-config"])
    assert info.value.code == 2


def test_client_without_a_daemon_location(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 2
    assert "say where the daemon is: --api URL or -c FILE" in capsys.readouterr().err


def test_client_with_the_daemon_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.peers import free_port

    api = f"http://127.0.0.1:{free_port()}"
    assert main(["drain", "eu", "--reason", "maintenance", "--api", api]) == 4
    err = capsys.readouterr().err
    assert err.startswith(f"trafficd drain: cannot reach the daemon at {api}: ")


def test_run_with_a_bad_config_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-c", "does-not-exist.yaml"]) == 2
    assert "does-not-exist.yaml:1: cannot read file" in capsys.readouterr().err
