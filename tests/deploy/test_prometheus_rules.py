"""The alert rules: valid for promtool, unit-tested by promtool, and about real metrics.

Needs Debian's `prometheus` package (promtool), which .ci/run installs; without it
the test fails rather than skips.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from trafficd.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy/prometheus/trafficd-rules.yaml"
RULE_TESTS = Path(__file__).parent / "trafficd-rules.test.yaml"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's prometheus package (.ci/run does)")
    return path


def exported_names() -> set[str]:
    """Every series name trafficd's /metrics can show."""
    names = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
        }.get(family.type, ("",))
        names |= {family.name + s for s in suffixes}
    return names


@pytest.mark.peers
def test_promtool_checks_the_rules() -> None:
    out = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 22 rules found" in out.stdout


@pytest.mark.peers
def test_promtool_unit_tests_pass() -> None:
    out = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_metric_in_the_rules_is_exported_and_every_alert_has_a_runbook() -> None:
    doc = yaml.safe_load(RULES.read_text())
    exported = exported_names()
    alerts = [rule for group in doc["groups"] for rule in group["rules"]]
    for rule in alerts:
        used = set(re.findall(r"\btrafficd_[a-z_]+", rule["expr"]))
        assert used or rule["alert"] == "TrafficdDown", rule["alert"]  # that one reads `up`
        assert used <= exported, (rule["alert"], used - exported)
        assert rule["annotations"]["summary"] and len(rule["annotations"]["runbook"]) > 40
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
    names = {rule["alert"] for rule in alerts}
    assert len(names) == len(alerts)  # no alert defined twice


def test_every_runbook_url_is_a_page_of_the_repository() -> None:
    doc = yaml.safe_load(RULES.read_text())
    for rule in (rule for group in doc["groups"] for rule in group["rules"]):
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/runbooks/{rule['alert']}.md", rule["alert"]
        page = REPO / url
        assert page.is_file(), url
        assert page.read_text().startswith(f"# {rule['alert']}\n"), url
    pages = {f"docs/runbooks/{p.name}" for p in (REPO / "docs/runbooks").glob("*.md")}
    linked = {
        rule["annotations"]["runbook_url"] for group in doc["groups"] for rule in group["rules"]
    }
    assert pages == linked  # one page per alert, each linked from its rule
