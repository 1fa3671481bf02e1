"""`trafficd simulate` replays a recorded incident through the engine, offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trafficd.cli import main

CONFIG = """\
vantage: us-east
storage:
  usstorage: [LocalStorage, {storage_path: /us}]
  eustorage: [LocalStorage, {storage_path: /eu}]
sites:
  us: {url: "https://quay.example.com", connect: "10.0.1.10:443", storage: [usstorage]}
  eu: {url: "https://quay.example.com", connect: "10.0.2.10:443", storage: [eustorage]}
probes: {interval: 2s, timeout: 1s}
policy: {fall: 3, rise: 2, hold_down: 0s, shutdown_grace: 4s}
"""


def incident(rounds_down: int, rounds_up: int) -> list[dict[str, object]]:
    """eustorage dies for a while (the site says storage: false), then comes back."""
    lines: list[dict[str, object]] = []
    for r in range(rounds_down + rounds_up):
        t = 10.0 + 2 * r
        down = r < rounds_down
        for loc in ("usstorage", "eustorage"):
            ok = not (down and loc == "eustorage")
            lines.append(
                {
                    "t": t,
                    "vantage": "us-east",
                    "probe": "storage",
                    "location": loc,
                    "ok": ok,
                    **({} if ok else {"reason": "connect"}),
                }
            )
        for site in ("us", "eu"):
            storage = not (down and site == "eu")
            services = {"auth": True, "database": True, "redis": True, "storage": storage}
            lines.append(
                {
                    "t": t,
                    "vantage": "us-east",
                    "site": site,
                    "probe": "endtoend",
                    "ok": storage,
                    "status": 200 if storage else 503,
                    "services": services,
                }
            )
            lines.append(
                {
                    "t": t,
                    "vantage": "us-east",
                    "site": site,
                    "probe": "instance",
                    "ok": True,
                    "status": 200,
                }
            )
    return lines


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "trafficd.yaml"
    config.write_text(CONFIG)
    timeline = tmp_path / "incident.jsonl"
    timeline.write_text("".join(json.dumps(x) + "\n" for x in incident(6, 4)))
    return config, timeline


def test_simulate_json_prints_every_transition_and_the_final_states(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, timeline = files
    assert main(["simulate", "-c", str(config), "--timeline", str(timeline), "--json"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    moves = [(o["t"], o["site"], o["from"], o["to"]) for o in out if "to" in o]
    assert moves == [
        (14.0, "eu", "active", "draining"),
        (18.0, "eu", "draining", "drained"),
        (24.0, "eu", "drained", "restoring"),
        (26.0, "eu", "restoring", "active"),
    ]
    assert all(o["reasons"] for o in out if "to" in o)
    assert out[-1] == {
        "final": {
            "eu": {"state": "active", "weight": 100},
            "us": {"state": "active", "weight": 100},
        }
    }


def test_simulate_reports_refusals(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, timeline = files
    config = tmp_path / "strict.yaml"
    config.write_text(CONFIG.replace("policy: {", "policy: {min_active_sites: 2, "))
    assert main(["simulate", "-c", str(config), "--timeline", str(timeline), "--json"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o for o in out if "refused" in o] == [
        {"t": 14.0, "site": "eu", "refused": "min_active_sites", "reasons": [out[0]["reasons"][0]]}
    ]
    assert out[0]["reasons"][0].startswith("storage: location eustorage failed")
    assert out[-1]["final"]["eu"]["state"] == "active"


def test_simulate_text_output(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config, timeline = files
    assert main(["simulate", "-c", str(config), "--timeline", str(timeline)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("t=14 eu: active -> draining: storage: location eustorage")
    assert lines[-1] == "final: eu=active (weight 100), us=active (weight 100)"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "incident.jsonl:2: Expecting value: line 1 column 1 (char 0)"),
        (
            '{"t": 1, "vantage": "v", "probe": "dns", "site": "us", "ok": true}',
            "incident.jsonl:2: 'dns' is not a valid Probe",
        ),
        (
            '{"t": 1, "vantage": "v", "probe": "storage", "ok": true}',
            "incident.jsonl:2: missing key 'location'",
        ),
        (
            '{"t": 0, "vantage": "v", "probe": "instance", "site": "us", "ok": "yes"}',
            "incident.jsonl:2: ok must be true, false or null",
        ),
        (
            '{"kind": "manual", "t": 1, "action": "drain", "site": "us", "reason": "x",'
            ' "force": "false"}',
            "incident.jsonl:2: force: true or false is expected",
        ),
        (
            '{"kind": "responses", "t": 1, "site": "us", "unread": []}',
            "incident.jsonl:2: a responses event's unread lists the sockets not read",
        ),
    ],
)
def test_a_malformed_timeline_names_the_line(
    tmp_path: Path, line: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    timeline = tmp_path / "incident.jsonl"
    first = '{"t": 0, "vantage": "v", "probe": "instance", "site": "us", "ok": true}'
    timeline.write_text(first + "\n" + line + "\n")
    assert main(["simulate", "-c", str(config), "--timeline", str(timeline)]) == 2
    assert capsys.readouterr().err.strip() == f"{tmp_path}/{message}"


@pytest.mark.peers  # headless Chromium
def test_simulate_report_draws_the_replay(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`--report` draws the replayed decisions as `trafficd report` draws the daemon's,
    rendered by real Chromium; its milestones are the replay's own times."""
    from tests.report.chromium import dump_dom, elements

    config, timeline = files
    page = tmp_path / "replay.html"
    argv = ["simulate", "-c", str(config), "--timeline", str(timeline), "--report", str(page)]
    assert main([*argv, "--json"]) == 0
    moves = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert moves[0]["cause"] == "storage"  # transitions name their cause
    dom = elements(dump_dom(page))
    milestones = {e.attrs["data-milestone"]: e for e in dom if "data-milestone" in e.attrs}
    times = {k: float(e.attrs["data-t"]) for k, e in milestones.items() if "data-t" in e.attrs}
    assert times == {
        "first failing probe": 10.0,  # eustorage failed from the timeline's first line
        "drain decided": 14.0,
        "cause cleared": 22.0,  # its first passing probe
        "restore decided": 24.0,
        "traffic fully returned": 26.0,  # no actuator here: the decision itself
    }
    assert "t=10.000" in milestones["first failing probe"].text
    bands = [e for e in dom if e.tag == "rect" and e.attrs.get("data-target") == "eustorage"]
    assert [(b.attrs["data-ok"], b.attrs["data-start"], b.attrs["data-end"]) for b in bands] == [
        ("fail", "10.0", "22.0"),
        ("ok", "22.0", "28.0"),
    ]
    states = [e.attrs["data-state"] for e in dom if e.attrs.get("data-row") == "state"]
    assert states == ["active", "draining", "drained", "restoring", "active", "active"]
