"""The daemon's kubernetes actuation with one site that never becomes available.

The daemon runs in process (its real loops: probes, engine rounds, one
reconcile loop per target) against the FAKE Kubernetes API server of
tests/actuators/kube_fake.py, one cluster per site. Site `a` has pods that never
become available (a crash loop): its wait for availability is bounded and
reported. Site `b` is drained with --stop-instances meanwhile, and its stop must
not wait for `a`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.actuators.kube_fake import FakeCluster, deployment, kubeconfig, serve
from trafficd.config import load
from trafficd.daemon import Daemon
from trafficd.runtime.commands import Command

NS = "quay"
WAIT = 3.0  # the kubernetes actuator's timeout (its bounded wait for availability)


@pytest.fixture
async def clusters(tmp_path: Path) -> AsyncIterator[dict[str, FakeCluster]]:
    out = {"a": FakeCluster(), "b": FakeCluster()}
    for cluster in out.values():
        cluster.add_deployment(NS, deployment("quay-app", NS, 2, env={}))
    # a's pods crash-loop: two replicas wanted, none ever available.
    out["a"].objects[("deployments", NS, "quay-app")]["status"]["availableReplicas"] = 0
    async with serve(*out.values()):
        yield out


def write_config(tmp: Path, kube: Path) -> Path:
    (tmp / "token").write_text("admin-token-0123456789abcdef\n")
    sites = {
        name: {
            "url": "http://q.test",
            "connect": f"127.0.0.1:{port}",  # nothing answers: the probes fail, and
            "storage": [f"{name}storage"],  # fall is high enough that nothing drains
            "addresses": [address],
            "kubernetes": {"context": f"{name}-cluster", "namespace": NS, "deployment": "quay-app"},
        }
        for name, port, address in (("a", 1, "192.0.2.10"), ("b", 2, "192.0.2.20"))
    }
    config = {
        "vantage": "test",
        "state_dir": str(tmp / "state"),
        "api_token_file": "token",
        "storage": {
            f"{name}storage": ["LocalStorage", {"storage_path": str(tmp / name)}] for name in sites
        },
        "sites": sites,
        "probes": {"interval": "200ms", "timeout": "100ms"},
        "policy": {"fall": 1000, "hold_down": "0s", "shutdown_grace": "0s"},
        "actuators": [
            {
                "type": "kubernetes",
                "id": "kube",
                "kubeconfig": str(kube),
                "timeout": f"{int(WAIT * 1000)}ms",
            }
        ],
    }
    path = tmp / "trafficd.yaml"
    path.write_text(json.dumps(config))
    return path


def replicas(cluster: FakeCluster) -> int:
    return int(cluster.objects[("deployments", NS, "quay-app")]["spec"]["replicas"])


async def wait_until(what: str, check: Any, timeout: float) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return time.monotonic()
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for: {what}")


async def test_a_site_never_available_does_not_delay_another_sites_stop(
    tmp_path: Path, clusters: dict[str, FakeCluster]
) -> None:
    path = write_config(tmp_path, kubeconfig(tmp_path / "kubeconfig", clusters))
    d = Daemon(path, load(path))
    d.runtime.start()
    try:
        await wait_until(
            "a first decision", lambda: d.runtime.rounds.decision is not None, timeout=5
        )
        await asyncio.sleep(0.5)  # a's reconcile is now inside its wait for availability
        asked = time.monotonic()
        answer = await d.runtime.commands.execute(
            Command.parse("drain", "b", "admin", {"reason": "drill", "stop_instances": True})
        )
        assert answer["state"] == "draining", answer
        stopped = await wait_until("b scaled to 0", lambda: replicas(clusters["b"]) == 0, WAIT)
        print(f"\nmeasured: drain b -> b scaled to 0: {stopped - asked:.2f}s (a waits {WAIT:g}s)")
        assert stopped - asked < 1.5
        assert replicas(clusters["a"]) == 2  # a is left as it is: running, still waiting

        def a_reported() -> bool:
            value = d.registry.get_sample_value(
                "trafficd_site_instances_unavailable", {"site": "a"}
            )
            return value == 1

        await wait_until("a reported unavailable", a_reported, WAIT + 2)
        events = [
            json.loads(line)
            for line in (tmp_path / "state" / "events.jsonl").read_text().splitlines()
        ]
        errors = [e for e in events if e["kind"] == "actuation" and e.get("target") == "a"]
        assert errors and "no available replica" in (errors[-1]["error"] or ""), errors
        in_sync = d.registry.get_sample_value(
            "trafficd_actuator_in_sync", {"actuator": "kube", "target": "a"}
        )
        assert in_sync == 0
        assert (
            d.registry.get_sample_value(
                "trafficd_actuator_in_sync", {"actuator": "kube", "target": "b"}
            )
            == 1
        )
        assert d.runtime.views.sites()[0]["out_of_sync"][0].startswith("kube a: ")
    finally:
        await d.runtime.stop()
        await d.runtime.supervisor.cancel(list(d._tasks))
        d.store.close()
