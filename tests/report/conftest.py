"""The recorded incident the report tests read: one run of tests/e2e/test_failover.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trafficd.report import Report, build_report, read_layout

TESTDATA = Path(__file__).parent / "testdata"
CONFIG = TESTDATA / "e2e.yaml"
EVENTS = TESTDATA / "e2e-events.jsonl"


def recorded() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EVENTS.read_text().splitlines()]


@pytest.fixture
def report() -> Report:
    return build_report(read_layout(CONFIG), [recorded()], names=[str(EVENTS)])
