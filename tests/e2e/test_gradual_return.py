"""End to end: a site returning in steps behind a real HAProxy carrying real requests,
abandoned by the canary when its share of 5xx responses is too high.

The deployment of test_failover.py (two simulated Quay sites on moto, BIND, HAProxy,
`trafficd run` with the rfc2136, haproxy and command actuators) with
`policy.return_steps: [10, 50, 100]`. A small load generator in the test sends
requests through HAProxy's frontend the whole time. eu's bucket dies, eu is drained;
its bucket comes back, but eu answers 500 to a third of the requests
(`trafficd/demo/site.py`'s errors file). What clients would see: eu's weight goes
10 → back out of HAProxy, the canary's counts in the reason; us's weight stays 100.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_failover import Deployment, deployed, wait_for

pytestmark = pytest.mark.peers


class Load:
    """Threads sending GETs through HAProxy's frontend until stopped; what answered each
    (the body names the site, or the status)."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url = url
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=2) as resp:
                    what = resp.read().decode()
            except urllib.error.HTTPError as exc:
                what = f"HTTP {exc.code}"
            except OSError:
                what = "connection failed"
            with self.lock:
                self.counts[what] = self.counts.get(what, 0) + 1

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for t in self.threads:
            t.join(timeout=5)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    steps = {"return_steps": [10, 50, 100], "return_step": "4s"}
    canary = {"return_max_error_ratio": 0.05, "return_min_requests": 20}
    with deployed(tmp_path, **steps, **canary) as dep:
        yield dep


def events(dep: Deployment, kind: str) -> list[dict[str, Any]]:
    lines = (dep.tmp / "state" / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


def test_a_return_with_5xx_is_abandoned_at_its_first_step(deployment: Deployment) -> None:
    dep = deployment
    frontend = f"http://127.0.0.1:{dep.haproxy.frontend}/v2/"
    us_weights: list[int] = []
    eu_weights: list[int] = []

    def sample() -> dict[str, int]:
        """The share HAProxy gives each site: its weight, 0 while in maintenance (how the
        haproxy actuator takes a drained site out)."""
        weights, admin = dep.haproxy.weights(), dep.haproxy.admin_states()
        share = {name: 0 if admin[name] else w for name, w in weights.items()}
        us_weights.append(share["us"])
        if not eu_weights or eu_weights[-1] != share["eu"]:
            eu_weights.append(share["eu"])
        return share

    with Load(frontend) as load:
        wait_for("requests reach both sites", lambda: len(load.counts) >= 2)
        dep.moto["eu"].stop()
        wait_for("eu drained", lambda: dep.status()["eu"]["state"] == "drained", timeout=30)
        eu_weights.clear()
        # The bucket comes back; eu fails a third of the pulls for a while.
        (dep.tmp / "shared" / "eu-errors").write_text("0.34\n")
        dep.moto["eu"].start()

        def abandoned() -> bool:
            sample()
            drains = [
                e
                for e in events(dep, "transition")
                if e["site"] == "eu" and e.get("cause") == "canary"
            ]
            return bool(drains)

        wait_for("eu's return abandoned by the canary", abandoned, timeout=60)
        wait_for("eu out of HAProxy", lambda: sample()["eu"] == 0, timeout=10)
    # hold_down is 0: eu may come back (and be abandoned) again since; the first return.
    drain = next(
        e for e in events(dep, "transition") if e["site"] == "eu" and e.get("cause") == "canary"
    )
    steps = [
        (e["step"], e["weight"])
        for e in events(dep, "return_step")
        if e["site"] == "eu" and e["t"] <= drain["t"]
    ]
    assert steps == [(1, 10)], dep.audit()
    assert drain["from"] == "active" and drain["to"] == "draining"
    why = " ".join(drain["reasons"])
    assert "return abandoned at step 1 of 3 (weight 10)" in why, why
    assert "responses 5xx" in why and "limit 5.0%" in why, why
    assert eu_weights == [0, 10, 0], eu_weights  # out, the first step, out again
    assert set(us_weights) == {100}, us_weights  # the healthy site kept its whole weight
    assert load.counts.get("HTTP 500", 0) > 0 and load.counts.get("site us", 0) > 0, load.counts
