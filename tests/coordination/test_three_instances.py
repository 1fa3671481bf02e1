"""Three `trafficd run` processes (vantages a, b, c), one decision, against real peers.

The end-to-end deployment of tests/e2e (two simulated Quay sites on moto S3, BIND 9,
HAProxy, the command actuator through sitectl) watched by three instances that share
a real store (redis-server or etcd, both Debian packages). Instance c's `connect`
address for eu is a closed port: c alone cannot reach eu. The scenarios run in order,
as incidents would unfold:

1. c's disagreement: eu unreachable from c alone drains nothing; status shows it.
2. A manual drain sent to a follower takes effect through the leader; undrain too.
3. eu's storage fails, seen by all: one leader drains it; only it actuates.
4. kill -9 the leader mid-drain: another leads within lease + interval and the
   drain completes exactly once (one stop of eu's Quay).
   The killed instance is started again and follows.
5. The store stops: nobody actuates (eu's repaired storage is not acted on);
   it starts again: the instances converge and eu is restored once. (The quorum
   needs two vantages that see eu healthy: a and b; c cannot reach eu at all.)
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.coordination.peers import EtcdPeer, RedisPeer
from tests.e2e.test_failover import (
    ADDRESSES,
    ADMIN_TOKEN,
    REPO,
    Moto,
    running_peers,
    spawn_trafficd,
    wait_for,
    write_config,
)
from tests.peers import HAProxyPeer, Named, free_port, stop

pytestmark = pytest.mark.peers

VANTAGES = ("a", "b", "c")
INTERVAL, LEASE, GRACE = 0.5, 2.0, 3.0


@dataclass
class Instance:
    name: str
    tmp: Path
    config: Path
    api: str
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = spawn_trafficd(self.config, self.tmp / "trafficd.log")

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self.proc = None

    def http(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
        except (OSError, ValueError):
            return 0, None

    def leads(self) -> bool:
        code, text = 0, ""
        try:
            with urllib.request.urlopen(self.api + "/metrics", timeout=2) as resp:
                code, text = resp.status, resp.read().decode()
        except OSError:
            return False
        return code == 200 and f'trafficd_leader{{vantage="{self.name}"}} 1.0' in text

    def sites(self) -> dict[str, Any]:
        code, body = self.http("GET", "/api/v1/sites")
        return {s["name"]: s for s in body["sites"]} if code == 200 else {}

    def state(self, site: str) -> str | None:
        state = self.sites().get(site, {}).get("state")
        return str(state) if state is not None else None

    def events(self, kind: str) -> list[dict[str, Any]]:
        path = self.tmp / "state" / "events.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event.get("kind") == kind:
                out.append(event)
        return out


@dataclass
class World:
    tmp: Path
    store: RedisPeer | EtcdPeer
    moto: dict[str, Moto]
    named: Named
    haproxy: HAProxyPeer
    sites: Path
    instances: dict[str, Instance] = field(default_factory=dict)

    def dns(self) -> set[str]:
        return {name for name, a in ADDRESSES.items() if a in self.named.addresses()}

    def leader(self) -> Instance | None:
        leading = [i for i in self.instances.values() if i.proc is not None and i.leads()]
        assert len(leading) <= 1, f"split brain: {[i.name for i in leading]}"
        return leading[0] if leading else None

    def running(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.proc is not None]

    def transitions(self, to: str, site: str = "eu") -> list[tuple[str, dict[str, Any]]]:
        return [
            (i.name, e)
            for i in self.instances.values()
            for e in i.events("transition")
            if e["site"] == site and e["to"] == to
        ]

    def stops_of_eu(self) -> int:
        path = self.sites / "sitectl.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return sum(1 for line in lines if " stop eu" in line)


def instance_config(
    base: dict[str, Any], name: str, tmp: Path, store: str, url: str
) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(json.dumps(base))
    config["vantage"] = name
    config["vantages"] = list(VANTAGES)
    config["listen"] = f"127.0.0.1:{free_port()}"
    config["state_dir"] = str(tmp / "state")
    config["coordination"] = {"backend": store, "urls": [url], "lease": f"{LEASE:g}s"}
    config["probes"]["interval"] = f"{int(INTERVAL * 1000)}ms"
    config["policy"]["shutdown_grace"] = f"{GRACE:g}s"
    config["policy"]["quorum"] = "majority"
    if name == "c":  # c's route to eu is cut: its connect address for eu is a closed port
        config["sites"]["eu"]["connect"] = f"127.0.0.1:{free_port()}"
    return config


@pytest.fixture(params=["redis", "etcd"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    store: RedisPeer | EtcdPeer = (
        RedisPeer(tmp_path) if request.param == "redis" else EtcdPeer(tmp_path)
    )
    store.start()
    try:
        with running_peers(tmp_path) as p:
            base_path = write_config(
                tmp_path, p.moto, p.ports, p.named, p.haproxy, p.sites, free_port()
            )
            base = json.loads(base_path.read_text())
            w = World(tmp_path, store, p.moto, p.named, p.haproxy, p.sites)
            try:
                for name in VANTAGES:
                    directory = tmp_path / name
                    directory.mkdir()
                    config = instance_config(base, name, directory, request.param, store.url)
                    path = directory / "trafficd.yaml"
                    path.write_text(json.dumps(config, indent=1))
                    instance = Instance(name, directory, path, f"http://{config['listen']}")
                    w.instances[name] = instance
                    instance.start()
                for i in w.instances.values():
                    wait_for(f"{i.name} /readyz", functools.partial(_ready, i))
                yield w
            finally:
                for i in w.instances.values():
                    if i.proc is not None:
                        stop(i.proc)
    finally:
        store.stop()


def _ready(instance: Instance) -> bool:
    return instance.http("GET", "/readyz")[0] == 200


def test_three_instances_one_decision(world: World) -> None:
    w = world
    a, b = w.instances["a"], w.instances["b"]
    wait_for("a leader", lambda: w.leader() is not None)
    wait_for("both sites in DNS", lambda: w.dns() == {"us", "eu"})

    # --- 1: eu unreachable from c alone: nothing drains; status shows c's view -------------
    def c_disagrees() -> bool:
        health = a.sites().get("eu", {}).get("health", {})
        return (
            health.get("c", {}).get("endtoend", {}).get("ok") is False
            and health.get("a", {}).get("endtoend", {}).get("ok") is True
            and health.get("b", {}).get("endtoend", {}).get("ok") is True
        )

    wait_for("every instance sees c's disagreement", c_disagrees)
    time.sleep(6 * INTERVAL)  # more than fall rounds of c failing alone
    assert all(i.state("eu") == "active" for i in w.running())
    assert w.dns() == {"us", "eu"} and not w.transitions("draining")
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "trafficd.cli",
            "status",
            "--api",
            b.api,
            "--token-file",
            str(w.tmp / "admin.token"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert status.returncode == 0, status.stderr
    leader = w.leader()
    assert leader is not None
    assert f"leader: {leader.name}" in status.stdout
    assert "vantage c: fresh" in status.stdout
    assert "c: endtoend=FAIL(connect)" in status.stdout, status.stdout

    # --- 2: a manual drain sent to a follower takes effect through the leader ----------------
    follower = next(i for i in w.running() if i is not leader)
    code, answer = follower.http("POST", "/api/v1/sites/eu/drain", {"reason": "maintenance"})
    assert code == 200 and answer["leader"] == leader.name, answer
    wait_for("eu out of DNS", lambda: w.dns() == {"us"})
    assert [n for n, _ in w.transitions("draining")] == [leader.name]
    other = next(i for i in w.running() if i not in (leader, follower))
    assert other.http("POST", "/api/v1/sites/eu/undrain")[0] == 200
    wait_for("eu back in DNS", lambda: w.dns() == {"us", "eu"}, timeout=30)
    wait_for("eu active everywhere", lambda: all(i.state("eu") == "active" for i in w.running()))

    # --- 3: eu's storage fails, seen by all three: one instance drains and actuates ----------
    before = {i.name: len(i.events("actuation")) for i in w.running()}
    w.moto["eu"].stop()
    wait_for("eu draining", lambda: leader.state("eu") == "draining", timeout=30)
    wait_for("eu out of DNS", lambda: w.dns() == {"us"})
    drains = [(n, e) for n, e in w.transitions("draining") if e.get("cause") == "storage"]
    assert [n for n, _ in drains] == [leader.name], drains
    # The actuation is audited after its read-back, a moment after DNS shows it.
    wait_for(
        "the leader's actuation audited",
        lambda: len(leader.events("actuation")) > before[leader.name],
    )
    acted = {i.name for i in w.running() if len(i.events("actuation")) > before[i.name]}
    assert acted == {leader.name}, acted

    # --- 4: kill -9 the leader mid-drain: another leads within lease + interval ----------------
    stops_before = w.stops_of_eu()
    killed_at = time.monotonic()
    leader.kill9()
    took_over = wait_for("a new leader", lambda: w.leader() is not None, timeout=LEASE * 5)
    failover = took_over - killed_at
    print(
        f"\nleader failover ({type(w.store).__name__}): {failover:.2f}s "
        f"(lease {LEASE:g}s + interval {INTERVAL:g}s)"
    )
    # lease + interval, plus the metrics poll's own cadence
    assert failover <= LEASE + INTERVAL + 1.0, failover
    new_leader = w.leader()
    assert new_leader is not None and new_leader is not leader
    wait_for(
        "eu drained by the new leader", lambda: new_leader.state("eu") == "drained", timeout=30
    )
    wait_for("eu's Quay stopped", lambda: w.stops_of_eu() == stops_before + 1, timeout=30)
    time.sleep(4 * INTERVAL)
    assert w.stops_of_eu() == stops_before + 1  # exactly once
    assert len([1 for _, e in w.transitions("drained") if e.get("cause") == "storage"]) == 1
    assert [e["vantage"] for e in new_leader.events("leader")][-1] == new_leader.name
    # The killed instance comes back (as an operator would restart it) and follows.
    leader.start()
    wait_for("it serves again", lambda: leader.http("GET", "/readyz")[0] == 200, timeout=30)
    wait_for("it shows eu drained", lambda: leader.state("eu") == "drained")
    assert w.leader() is new_leader

    # --- 5: the store stops: nobody actuates; it returns: they converge ----------------------
    w.store.stop()
    wait_for("no leader without the store", lambda: w.leader() is None, timeout=LEASE * 3)
    w.moto["eu"].start()  # eu's storage is repaired meanwhile
    time.sleep(8 * INTERVAL)  # more than rise rounds
    assert w.dns() == {"us"}, "nothing may be actuated while the store is down"
    assert not [e for _, e in w.transitions("restoring") if e.get("cause") == "storage"]
    w.store.start()
    wait_for("a leader again", lambda: w.leader() is not None, timeout=LEASE * 5)
    wait_for("eu restored", lambda: w.dns() == {"us", "eu"}, timeout=60)
    wait_for(
        "every instance shows eu active",
        lambda: all(i.state("eu") == "active" for i in w.running()),
        timeout=30,
    )
    restores = [n for n, e in w.transitions("restoring") if e.get("cause") == "storage"]
    assert len(restores) == 1, restores
