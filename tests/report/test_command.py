"""`trafficd report` on the command line: where it reads, what it writes, its errors."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.report.conftest import CONFIG, EVENTS, recorded
from trafficd.cli import main


def deployment(tmp_path: Path) -> Path:
    """The recorded log in a state_dir, split as the store rotates it (events.jsonl.1
    holds the older half), and a config that names that state_dir."""
    state = tmp_path / "state"
    state.mkdir()
    lines = EVENTS.read_text().splitlines(keepends=True)
    (state / "events.jsonl.1").write_text("".join(lines[:20]))
    (state / "events.jsonl").write_text("".join(lines[20:]))
    config = tmp_path / "trafficd.yaml"
    config.write_text(
        CONFIG.read_text().replace("state_dir: /nonexistent/use/--events", f"state_dir: {state}")
    )
    return config


def test_reads_state_dir_with_rotated_files_and_prints_markdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = deployment(tmp_path)
    assert main(["report", "-c", str(config), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    drain = next(e for e in recorded() if e["kind"] == "transition" and e["to"] == "draining")
    assert (
        f"| drain decided | {drain['time']} | +0.505 s | active → draining: "
        f"{drain['reasons'][0]} |" in out
    )
    assert "### drain of eu (storage), decided 2026-12-02T03:15:40.935+00:00" in out
    assert "| instances stopped (command) | 2026-12-02T03:15:42.843+00:00 | +2.413 s |" in out
    assert "### drain of us (manual)" in out
    assert f"{len(recorded())} event(s) from {tmp_path}/state/events.jsonl" in out


def test_site_and_output_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "incident.html"
    argv = ["report", "-c", str(CONFIG), "--events", str(EVENTS), "--site", "us"]
    assert main([*argv, "-o", str(page)]) == 0
    assert capsys.readouterr().out == ""
    html = page.read_text()
    assert 'data-site="us"' in html and 'data-site="eu"' not in html
    assert html.startswith("<!DOCTYPE html>")


def test_events_of_several_instances_are_merged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`trafficd events --json` output of two instances, one file each."""
    events = recorded()
    other = tmp_path / "other.jsonl"
    other.write_text(
        "".join(
            json.dumps({**e, "vantage": "eu-west"}) + "\n"
            for e in events
            if e["kind"] == "observation"
        )
    )
    argv = ["report", "-c", str(CONFIG), "--events", str(EVENTS), "--events", str(other)]
    assert main([*argv, "--site", "eu"]) == 0
    html = capsys.readouterr().out
    assert 'data-row="eu-west · storage eustorage"' in html
    assert 'data-row="test · storage eustorage"' in html


def test_since_is_a_duration_before_now(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fresh = tmp_path / "fresh.jsonl"
    now = time.time()
    shift = now - recorded()[-1]["t"]  # the recording, moved to end now
    fresh.write_text(
        "".join(json.dumps({**e, "t": e["t"] + shift, "time": None}) + "\n" for e in recorded())
    )
    argv = ["report", "-c", str(CONFIG), "--events", str(fresh), "--format", "markdown"]
    assert main([*argv, "--since", "8s"]) == 0
    out = capsys.readouterr().out
    assert "### drain of us (manual)" in out and "### drain of eu" not in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--since", "2"],
            "trafficd report: --since: invalid duration '2': use a number and a unit",
        ),
        (["--since", "2x"], "trafficd report: --since: invalid duration '2x'"),
        (["--site", "asia"], "trafficd report: unknown site 'asia' (sites: us, eu)"),
        (["--events", "/nonexistent.jsonl"], "trafficd report: cannot read: [Errno 2]"),
    ],
)
def test_bad_arguments(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["report", "-c", str(CONFIG)]
    if "--events" not in extra:
        argv += ["--events", str(EVENTS)]
    assert main([*argv, *extra]) == 2
    assert capsys.readouterr().err.startswith(message)


def test_no_audit_log_names_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "trafficd.yaml"
    config.write_text(CONFIG.read_text().replace("/nonexistent/use/--events", str(tmp_path)))
    assert main(["report", "-c", str(config)]) == 2
    assert capsys.readouterr().err == (
        f"trafficd report: {tmp_path}/events.jsonl: no audit log (state_dir of {config}); "
        "--events FILE reads a copy\n"
    )


def test_config_problems_are_file_line_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("sites:\n  eu:\n    addresses: 192.0.2.20\nactuators:\n  - type: bind9\n")
    assert main(["report", "-c", str(config), "--events", str(EVENTS)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{config}:3: sites.eu.addresses: a list of addresses",
        f"{config}:5: actuators[0].type: one of command, haproxy, kubernetes, powerdns, "
        "rfc2136, route53, webhook",
    ]


def test_secrets_are_not_resolved(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A postmortem machine without the daemon's secrets can still draw the report."""
    config = tmp_path / "trafficd.yaml"
    text = CONFIG.read_text().replace(
        "{type: rfc2136, id: bind,",
        "{type: rfc2136, id: bind, tsig: {name: k, secret: ${env:NOPE_TSIG}},",
    )
    config.write_text(text)
    assert "NOPE_TSIG" not in os.environ
    argv = ["report", "-c", str(config), "--events", str(EVENTS), "--format", "markdown"]
    assert main(argv) == 0
    assert "traffic off (bind, rfc2136)" in capsys.readouterr().out


def test_a_window_without_events_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["report", "-c", str(CONFIG), "--events", str(EVENTS), "--since", "1m"]
    assert main([*argv, "--format", "markdown"]) == 0  # the recording is long past
    out = capsys.readouterr().out
    assert "0 event(s)" in out and out.count("no drain in this window") == 2
    assert main(argv) == 0
    html = capsys.readouterr().out
    assert html.count('<svg class="timeline"') == 2 and 'class="band' not in html
