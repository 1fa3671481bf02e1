"""A real Prometheus scrapes a running trafficd through a drain and a restore; then every
dashboard query and every alert expression is evaluated through Prometheus's HTTP API.

The deployment is the demo's (trafficd/demo: moto S3 per site, simulated Quay sites,
BIND, HAProxy, `trafficd run`), with Debian's Prometheus scraping every second and
loading the alert rules. A dashboard query must return series over the
window; an alert expression must evaluate without error and every trafficd metric it
names must have series, except the metrics of features not built yet (listed below).
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from trafficd.demo.__main__ import Demo, wait
from trafficd.demo.peers import promql

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy/prometheus/trafficd-rules.yaml"
DASHBOARD = json.loads((REPO / "dashboards/trafficd.json").read_text())
# Exported only with a `replication` section: the demo has no Quay database; and
# only while a site's shutdown is blocked, one series per holding target (the demo's
# backends all answer).
NOT_YET = {
    "trafficd_replication_backlog_blobs",
    "trafficd_replication_at_risk_blobs",
    "trafficd_replication_replica_placements",
    "trafficd_replication_up",
    "trafficd_site_shutdown_holder",
}


def query_range(base: str, expr: str, start: float, end: float) -> list[Any]:
    return promql(base, expr, start=start, end=end, step="1s")


def test_dashboard_and_alerts_against_a_live_prometheus(tmp_path: Path) -> None:
    demo = Demo(tmp_path / "demo")
    try:
        demo.up()  # Prometheus scrapes trafficd every second and loads the alert rules
        assert demo.prometheus is not None
        base = demo.prometheus
        start = time.time()
        wait("both sites active", lambda: demo.state("us") == demo.state("eu") == "active")
        time.sleep(3)
        demo.stop_s3("eu")
        wait("eu drained", lambda: demo.state("eu") == "drained")
        # A manual drain of us now would leave no active site: refused (a safety block).
        request = urllib.request.Request(
            f"http://127.0.0.1:{demo.api_port}/api/v1/sites/us/drain",
            data=b'{"reason": "test"}',
            method="POST",
            headers={"Authorization": f"Bearer {demo.token}", "Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 409
        demo.start_s3("eu")
        wait("eu active", lambda: demo.state("eu") == "active")
        time.sleep(3)  # a few more scrapes after the restore
        end = time.time()

        problems = []
        for panel in DASHBOARD["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "5s").replace("$site", ".*")
                if not query_range(base, expr, start, end):
                    problems.append(f"panel {panel['title']!r}: no series for {expr}")
        # The site state panel shows eu draining and drained, then active again.
        states = query_range(
            base, 'max by (state) (trafficd_site_state{site="eu"}) == 1', start, end
        )
        assert {s["metric"]["state"] for s in states} >= {"active", "draining", "drained"}

        for group in yaml.safe_load(RULES.read_text())["groups"]:
            for rule in group["rules"]:
                query_range(base, rule["expr"], start, end)  # evaluates without error
                for name in set(re.findall(r"\btrafficd_[a-z_]+", rule["expr"])) - NOT_YET:
                    if not query_range(base, name, start, end):
                        problems.append(f"alert {rule['alert']}: no series for {name}")
        assert not problems, "\n".join(problems)
        firing = query_range(
            base, 'ALERTS{alertname="TrafficdSafetyRuleBlockingDrain"}', start, end
        )
        assert firing, "the refused drain should have fired TrafficdSafetyRuleBlockingDrain"
    finally:
        demo.down()
