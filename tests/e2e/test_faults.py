"""Faults injected against real peers: the stop follows the traffic, and one dead backend
never blocks the others.

The deployment of test_failover (two simulated Quay sites, BIND 9, HAProxy,
trafficd as its own process with the rfc2136, haproxy and command actuators),
with the faults of a real incident: the HAProxy admin socket gone at drain time,
one of two load balancers killed, BIND stopped in the middle of a drain. Each
scenario fails on a trafficd whose ordering rule holds only when every backend
answers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_failover import (
    ADMIN_TOKEN,
    GRACE,
    Deployment,
    Peers,
    running_peers,
    wait_for,
    write_config,
)
from tests.peers import HAProxyPeer, free_port, stop

pytestmark = pytest.mark.peers

DEADLINE = 2.0  # policy.shutdown_deadline in these tests


def deploy(
    tmp: Path, p: Peers, *, sockets: list[str] | None = None, deadline: bool = False
) -> Deployment:
    """test_failover's configuration, optionally with a short shutdown_deadline and
    several HAProxy sockets."""
    api_port = free_port()
    path = write_config(tmp, p.moto, p.ports, p.named, p.haproxy, p.sites, api_port)
    config: dict[str, Any] = json.loads(path.read_text())
    if deadline:
        config["policy"]["shutdown_deadline"] = f"{int(DEADLINE * 1000)}ms"
    if sockets is not None:
        lb = next(a for a in config["actuators"] if a["type"] == "haproxy")
        del lb["socket"]
        lb["sockets"] = sockets
    path.write_text(json.dumps(config, indent=1))
    return Deployment(
        tmp, path, f"http://127.0.0.1:{api_port}", p.moto, p.named, p.haproxy, p.sites
    )


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[Peers]:
    with running_peers(tmp_path) as p:
        yield p


def events(d: Deployment, kind: str) -> list[dict[str, Any]]:
    path = d.tmp / "state" / "events.jsonl"
    found = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in found if e.get("kind") == kind]


def stops_of(d: Deployment, site: str) -> list[float]:
    """When sitectl ran `stop SITE` (wall clock), as it logged it."""
    return [float(line.split()[0]) for line in d.sitectl_log() if f" stop {site} " in line]


def test_socket_missing_at_drain_keeps_the_instances_until_haproxy_is_back(
    tmp_path: Path, peers: Peers
) -> None:
    d = deploy(tmp_path, peers, deadline=True)
    try:
        d.start_trafficd()
        wait_for("both sites active", lambda: d.dns() == {"us", "eu"})
        wait_for("HAProxy serves both", lambda: d.haproxy_admin() == {"us": 0, "eu": 0})
        socket = d.haproxy.admin_socket
        d.haproxy.stop()
        Path(socket).unlink(missing_ok=True)  # the admin socket is gone

        asked = time.monotonic()
        out = d.cli("drain", "eu", "--reason", "upgrade", "--stop-instances", "-c", str(d.config))
        assert out.returncode == 0, out.stderr
        wait_for("eu out of DNS", lambda: d.dns() == {"us"}, timeout=5)
        # Past the grace and the deadline, HAProxy could still send clients there: no stop.
        time.sleep(max(0.0, asked + DEADLINE + GRACE + 0.5 - time.monotonic()))
        assert d.site_running("eu") and stops_of(d, "eu") == [], d.audit()
        blocked_at = wait_for(
            "eu's shutdown reported blocked",
            lambda: d.metric("trafficd_site_shutdown_blocked", site="eu") == 1,
            timeout=5,
        )
        assert blocked_at - asked >= DEADLINE
        assert d.metric("trafficd_site_shutdown_holder", site="eu", actuator="lb", target=socket)
        blocked = events(d, "shutdown_blocked")
        assert blocked and blocked[-1]["blocked"] and blocked[-1]["site"] == "eu", blocked
        assert any(h.startswith(f"lb {socket}: ") for h in blocked[-1]["holders"]), blocked
        eu = d.status()["eu"]
        assert eu["state"] == "draining", eu
        assert any(t.startswith(f"lb {socket}: ") for t in eu["out_of_sync"]), eu
        token = str(d.tmp / "admin.token")
        text = d.cli("status", "--api", d.api, "--token-file", token).stdout
        assert "out of sync:" in text and socket in text, text
        assert "eu: instances kept up, traffic not confirmed off: lb " in text, text

        # HAProxy back: the server goes out there, then the stop follows after the grace.
        d.haproxy.start()
        back = time.time()
        wait_for("eu's Quay stopped", lambda: not d.site_running("eu"), timeout=15)
        assert d.haproxy_admin()["eu"] != 0
        (stopped,) = stops_of(d, "eu")
        assert stopped - back >= GRACE - 0.05, (stopped - back, d.audit())
        assert d.metric("trafficd_site_shutdown_blocked", site="eu") == 0
        assert events(d, "shutdown_blocked")[-1]["blocked"] is False
        assert d.status()["eu"]["state"] == "drained"
    finally:
        if d.trafficd is not None:
            stop(d.trafficd)


def test_one_dead_load_balancer_does_not_block_the_live_one(tmp_path: Path, peers: Peers) -> None:
    second = HAProxyPeer(tmp_path / "second", backends=peers.ports)
    second.start()
    dead = second.admin_socket
    # The dead one first: a reconcile that stops at the first error never reaches the other.
    d = deploy(tmp_path, peers, sockets=[dead, peers.haproxy.admin_socket])
    try:
        d.start_trafficd()
        wait_for("both sites active", lambda: d.dns() == {"us", "eu"})
        second.stop()
        asked = time.monotonic()  # through the API: a CLI process's start is not the bound's
        code, body = d.http("POST", "/api/v1/sites/eu/drain", ADMIN_TOKEN, {"reason": "drill"})
        assert code == 200, body
        live_at = wait_for("the live LB holds eu out", lambda: d.haproxy_admin()["eu"] != 0)
        print(f"\nmeasured: drain -> live HAProxy holds eu out: {live_at - asked:.2f}s (bound 2s)")
        assert live_at - asked < 2.0
        assert d.haproxy_admin()["us"] == 0
        labels = {"actuator": "lb"}
        wait_for(
            "the dead LB reported",
            lambda: d.metric("trafficd_actuator_in_sync", **labels, target=dead) == 0,
            timeout=5,
        )
        live = peers.haproxy.admin_socket
        wait_for(
            "the live LB in sync",
            lambda: d.metric("trafficd_actuator_in_sync", **labels, target=live) == 1,
            timeout=5,
        )
        out_of_sync = d.status()["eu"]["out_of_sync"]
        assert [t for t in out_of_sync if t.startswith(f"lb {dead}: ")], out_of_sync
        assert not [t for t in out_of_sync if t.startswith(f"lb {live}:")], out_of_sync

        second.start()  # restarted with eu ready, as its configuration says
        wait_for("the restarted LB converges", lambda: second.admin_states()["eu"] != 0)
        wait_for(
            "the restarted LB in sync",
            lambda: d.metric("trafficd_actuator_in_sync", **labels, target=dead) == 1,
            timeout=5,
        )
        assert second.admin_states()["us"] == 0
    finally:
        if d.trafficd is not None:
            stop(d.trafficd)
        second.stop()


def test_bind_stopped_mid_drain_converges_and_keeps_the_last_address(
    tmp_path: Path, peers: Peers
) -> None:
    d = deploy(tmp_path, peers)
    try:
        d.start_trafficd()
        wait_for("both sites active", lambda: d.dns() == {"us", "eu"})
        d.named.stop()
        out = d.cli("drain", "eu", "--reason", "move", "-c", str(d.config))
        assert out.returncode == 0, out.stderr
        wait_for("HAProxy holds eu out", lambda: d.haproxy_admin()["eu"] != 0, timeout=5)
        time.sleep(1.5)  # a few failed updates while BIND is down
        d.named.start()
        seen: list[set[str]] = []

        def converged() -> bool:
            seen.append(d.dns())
            return seen[-1] == {"us"}

        wait_for("the zone converges once BIND is back", converged, timeout=10)
        # With BIND back the rfc2136 target is in sync again.
        wait_for(
            "bind in sync",
            lambda: d.metric("trafficd_actuator_in_sync", actuator="bind", target=bind(d)) == 1,
            timeout=5,
        )
        # Now even a forced drain of the last site keeps its address in the zone.
        token = str(d.tmp / "admin.token")
        out = d.cli(
            "drain", "us", "--reason", "x", "--force", "--api", d.api, "--token-file", token
        )
        assert out.returncode == 0, out.stderr
        end = time.monotonic() + 3
        while time.monotonic() < end:
            seen.append(d.dns())
            time.sleep(0.1)
        assert all(answer for answer in seen), seen  # never an empty answer
        assert seen[-1] == {"us"}
        log = (d.tmp / "trafficd.log").read_text()
        assert (
            "bind: A: no site should take traffic; keeping the last address(es) 192.0.2.10" in log
        )
    finally:
        if d.trafficd is not None:
            stop(d.trafficd)


def bind(d: Deployment) -> str:
    """The rfc2136 actuator's target: its server."""
    return f"127.0.0.1:{d.named.port}"
