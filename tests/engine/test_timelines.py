"""Named regression timelines, replayed through the real engine with `trafficd simulate`.

Each directory under `timelines/` is one defect: `config.yaml` (a trafficd
configuration, loaded by the real loader), `timeline.jsonl` (observations in
the audit log's format, plus manual commands, wall-clock steps and restarts)
and `expected.jsonl`: every transition and refusal, exactly, in order, and
`{"at": T, "site": S, ...}` lines that check one round's decision for S
(`state`, `cause`, `instances`, `weight`, `return_step`; `reason` a text one of
its reasons contains, `no_reason` one none contains).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trafficd.config.loader import load
from trafficd.policy import engine_policy
from trafficd.simulate import read_timeline, simulate

TIMELINES = sorted(p for p in (Path(__file__).parent / "timelines").iterdir() if p.is_dir())


def replay(path: Path) -> list[dict[str, Any]]:
    policy = engine_policy(load(path / "config.yaml", environ={}))
    with open(path / "timeline.jsonl", encoding="utf-8") as f:
        timeline = read_timeline(f, str(path / "timeline.jsonl"))
    return list(
        simulate(
            timeline,
            policy,
            end=timeline.end if timeline.audit else None,
            carry_forward=timeline.audit,
            events=timeline.events,
            every_round=True,
        )
    )


def test_there_is_a_timeline_for_every_named_regression() -> None:
    assert len(TIMELINES) >= 11
    assert all((p / "expected.jsonl").is_file() for p in TIMELINES)


@pytest.mark.parametrize("path", TIMELINES, ids=lambda p: p.name)
def test_timeline_gives_exactly_its_expected_transitions(path: Path) -> None:
    lines = [json.loads(line) for line in (path / "expected.jsonl").read_text().splitlines()]
    expected = [e for e in lines if "at" not in e]
    checks = [e for e in lines if "at" in e]
    out = replay(path)
    changes = [
        {k: v for k, v in o.items() if k != "reasons"}
        for o in out
        if "sites" not in o and "final" not in o
    ]
    assert changes == expected
    rounds = {o["t"]: o["sites"] for o in out if "sites" in o}
    assert checks or expected
    for check in checks:
        site = rounds[check["at"]][check["site"]]
        for key in ("state", "cause", "instances", "weight", "return_step"):
            if key in check:
                assert site[key] == check[key], check
        if "reason" in check:
            assert any(check["reason"] in r for r in site["reasons"]), (check, site)
        if "no_reason" in check:
            assert not any(check["no_reason"] in r for r in site["reasons"]), (check, site)
