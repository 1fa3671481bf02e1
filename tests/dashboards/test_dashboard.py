"""The Grafana dashboard: well-formed, valid PromQL, and only metrics trafficd exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.test_prometheus_rules import exported_names, promtool

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((REPO / "dashboards/trafficd.json").read_text())


def queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in DASHBOARD["panels"] for t in p["targets"]]


def test_structure() -> None:
    panels = DASHBOARD["panels"]
    assert DASHBOARD["uid"] == "trafficd" and panels
    assert len({p["id"] for p in panels}) == len(panels)
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in (
        "state",
        "weight",
        "probe",
        "storage matrix",
        "quay services",
        "actuations",
        "in sync",
        "safety",
        "manual",
        "reload",
    ):
        assert topic in titles, topic


def test_every_metric_is_exported() -> None:
    exported = exported_names()
    for title, expr in queries():
        used = set(re.findall(r"\btrafficd_[a-z_]+", expr))
        assert used and used <= exported, (title, used - exported)


@pytest.mark.peers
def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:query_{i}",
                        # Grafana's variables, as Grafana would substitute them.
                        "expr": expr.replace("$__rate_interval", "1m").replace("$site", ".*"),
                    }
                    for i, (_, expr) in enumerate(queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
