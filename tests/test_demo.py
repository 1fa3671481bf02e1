"""The README's demo: `up` starts everything, `break`/`repair` fail and heal a site's
storage, `watch` shows the failover, `down` stops everything by PID; `tour` does it all.

Real servers throughout (moto S3, BIND 9, HAProxy, Prometheus from Debian); the Quay
sites are the demo's simulated ones (trafficd/demo/site.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trafficd.demo.__main__ import Demo
from trafficd.demo.peers import alive, promql, wait_until

pytestmark = pytest.mark.peers


def demo(base: Path, *argv: str, timeout: float = 120) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "trafficd.demo", "--dir", str(base), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_up_break_watch_repair_down(tmp_path: Path) -> None:
    base = tmp_path / "demo"
    try:
        shown = demo(base, "up")
        for where in ("trafficd status", "/metrics", "dig +short", "Prometheus", "break eu"):
            assert where in shown, shown
        d = Demo(base)
        assert set(d.running()) == {
            "s3-us", "s3-eu", "named", "haproxy", "trafficd", "prometheus"
        }  # fmt: skip
        assert d.dns() == {"us", "eu"} and d.haproxy_admin() == {"us": 0, "eu": 0}
        # A second `up` finds it running and starts nothing.
        assert "already up" in demo(base, "up")
        assert Demo(base).pids == d.pids

        demo(base, "break", "eu")
        watched = demo(base, "watch", "--until", "drained", "--timeout", "30")
        assert "eu=draining | DNS answers ['us'] | HAProxy holds out ['eu']" in watched, watched
        d = Demo(base)
        assert d.dns() == {"us"} and d.haproxy_admin()["eu"] != 0
        # The command actuator stops eu's Quay once it is drained.
        wait_until("eu's Quay stopped", lambda: not d.site_running("eu"), timeout=10)
        status = subprocess.run(
            [sys.executable, "-m", "trafficd.cli", "status", "-c", str(d.config_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert status.returncode == 0 and re.search(r"eu\s+drained", status.stdout), status

        # Prometheus scraped it: eu is drained there too, and the alert is pending or firing.
        assert d.prometheus is not None
        deadline = time.monotonic() + 10
        while not promql(d.prometheus, 'trafficd_site_state{site="eu",state="drained"} == 1'):
            assert time.monotonic() < deadline, "Prometheus never saw eu drained"
            time.sleep(0.5)
        # The rule is evaluated on its own 1 s cycle: the first after that scrape raises it.
        while not promql(d.prometheus, 'ALERTS{alertname="TrafficdSiteDrained",site="eu"}'):
            assert time.monotonic() < deadline + 5, "TrafficdSiteDrained never pending or firing"
            time.sleep(0.5)

        demo(base, "repair", "eu")
        demo(base, "watch", "--until", "active", "--timeout", "30")
        time.sleep(0.5)
        assert Demo(base).dns() == {"us", "eu"}
    finally:
        pids = dict(Demo(base).pids)
        stopped = demo(base, "down")
    assert "trafficd" in stopped and "site-us" in stopped
    assert not any(alive(pid) for pid in pids.values()), pids
    d = Demo(base)
    assert d.pids == {} and not d.site_running("us") and not d.site_running("eu")
    assert "nothing" in demo(base, "down")


def test_tour_drains_and_restores_eu(tmp_path: Path) -> None:
    base = tmp_path / "demo"
    try:
        out = demo(base, "tour", "--no-prometheus", timeout=180)
    finally:
        demo(base, "down")
    states = re.findall(r"eu=(\w+) \|", out)
    # Straight through, no detour back to drained while eu's Quay boots.
    seen = [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]
    assert seen == ["active", "draining", "drained", "restoring", "active"], out
    # eu returns in steps (policy.return_steps [10, 50, 100]) as HAProxy holds them, and
    # the tour waits for the last one; us keeps its whole weight throughout.
    weights = re.findall(r"HAProxy weights eu=(\d+) us=(\d+)", out)
    eu = [int(e) for e, _ in weights]
    eu = [w for i, w in enumerate(eu) if i == 0 or w != eu[i - 1]]
    assert eu == [100, 0, 10, 50, 100], out
    assert {int(u) for _, u in weights} == {100}, out
    for step, weight in ((1, 10), (2, 50), (3, 100)):
        assert f"return_step eu: step {step} of 3 ({weight}%, weight {weight})" in out, out
    assert "actuation  command: stop site eu" in out
    assert "actuation  command: start site eu" in out
    assert "actuation  bind: quay.demo.test. A" in out
    assert (base / "state" / "events.jsonl").exists()


def test_demo_sh_up_then_down(tmp_path: Path) -> None:
    """The README's first command, and the second invocation that stops it."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRAFFICD_DEMO_DIR": str(tmp_path / "demo")}

    def sh(*argv: str) -> str:
        out = subprocess.run(
            [str(repo / "demo.sh"), *argv],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    try:
        shown = sh("up")
        assert "up: us=active eu=active | DNS answers ['eu', 'us']" in shown, shown
        assert "Prometheus" in shown
    finally:
        stopped = sh("down")
    assert "stopped trafficd" in stopped and "prometheus" in stopped, stopped
    assert Demo(tmp_path / "demo").running() == []
