"""The haproxy actuator's per-socket targets and residual sessions, against real HAProxy.

Two HAProxy processes in front of the same two backends (a pair of load
balancers): each socket is reconciled on its own, so one that is down is
reported while the other still follows. After a drain, `show stat` tells how
many new sessions the drained server still takes: here clients that carry a
persistence cookie, which HAProxy honours for a server in `drain` state. The
same counters give the canary of a gradual return: each site's responses and
5xx ones, summed over both load balancers (the backends are Python's
http.server, which answers 501 to a method it does not know).
"""

from __future__ import annotations

import dataclasses
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.actuators.test_contract import ALL_UP, EU_DOWN, EU_MANUAL
from tests.peers import HAProxyPeer, free_port
from trafficd.actuators import build
from trafficd.actuators.base import BuildContext, Reconciler, read_canary
from trafficd.config.model import HAProxyActuator, Site
from trafficd.metrics import Metrics
from trafficd.model import State

pytestmark = pytest.mark.peers


def sticky(peer: HAProxyPeer) -> HAProxyPeer:
    """Cookie persistence on the backend: a client with SRV=eu goes to eu while it drains."""
    cfg = peer.dir / "haproxy.cfg"
    text = cfg.read_text().replace(
        "    balance roundrobin\n", "    balance roundrobin\n    cookie SRV insert indirect\n"
    )
    lines = []
    for line in text.splitlines():
        if line.startswith("    server "):
            line += f" cookie {line.split()[1]}"
        lines.append(line)
    cfg.write_text("\n".join(lines) + "\n")
    return peer


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[HAProxyPeer, HAProxyPeer]]:
    ports = {"us": free_port(), "eu": free_port()}
    first = sticky(HAProxyPeer(tmp_path / "a", backends=ports))
    second = sticky(HAProxyPeer(tmp_path / "b", backends=ports))
    first.start_backends()
    try:
        first.start()
        second.start()
        yield first, second
    finally:
        first.stop_all()
        second.stop()


def sites() -> dict[str, Site]:
    return {
        name: Site.model_validate(
            {
                "connect": "127.0.0.1:1",
                "addresses": [address],
                "haproxy": {"backend": "quay", "server": name},
            }
        )
        for name, address in (("us", "192.0.2.10"), ("eu", "192.0.2.20"))
    }


def lb(peers: tuple[HAProxyPeer, ...], metrics: Metrics) -> Reconciler:
    config = HAProxyActuator.model_validate(
        {"type": "haproxy", "id": "lb", "sockets": [p.admin_socket for p in peers]}
    )
    actuator = build(config, BuildContext(sites=sites(), metrics=metrics))
    return Reconciler(actuator, metrics, attempts=2, max_backoff=0.1)


def get(peer: HAProxyPeer, cookie: str | None = None, method: str = "GET") -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{peer.frontend}/", method=method)
    if cookie:
        request.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            return str(resp.read().decode())
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"


async def test_a_dead_socket_is_reported_and_the_live_one_follows(
    pair: tuple[HAProxyPeer, HAProxyPeer],
) -> None:
    first, second = pair
    metrics = Metrics(CollectorRegistry())
    r = lb((second, first), metrics)  # the dead one first
    assert (await r.reconcile(ALL_UP)).in_sync
    second.stop()
    outcome = await r.reconcile(EU_DOWN)
    assert not outcome.in_sync and outcome.error and second.admin_socket in outcome.error
    assert first.admin_states() == {"us": 0, "eu": 1}  # the live one: eu in maint
    value = metrics.registry.get_sample_value
    assert (
        value("trafficd_actuator_in_sync", {"actuator": "lb", "target": second.admin_socket}) == 0
    )
    assert value("trafficd_actuator_in_sync", {"actuator": "lb", "target": first.admin_socket}) == 1
    assert r.traffic[second.admin_socket] is None  # unknown: never a confirmation
    assert r.traffic[first.admin_socket] == {"us": True, "eu": False}
    second.start()  # back with its configured state: eu ready
    assert (await r.reconcile(EU_DOWN)).in_sync
    assert second.admin_states() == {"us": 0, "eu": 1}
    await r.actuator.close()


async def test_residual_sessions_of_a_drained_server(
    pair: tuple[HAProxyPeer, HAProxyPeer],
) -> None:
    first, _ = pair
    metrics = Metrics(CollectorRegistry())
    r = lb((first,), metrics)
    assert (await r.reconcile(ALL_UP)).in_sync
    assert get(first, "SRV=eu") == "eu"  # a session before the drain: not residual
    assert (await r.reconcile(EU_MANUAL)).in_sync  # eu in drain: only persistent clients
    assert first.admin_states()["eu"] == 8
    for _ in range(3):
        assert get(first, "SRV=eu") == "eu"  # a client that still holds eu
    assert get(first) == "us"  # a new client goes to the serving server
    await r.reconcile(EU_MANUAL)  # reads show stat
    labels = {"site": "eu", "target": first.admin_socket}
    residual = metrics.registry.get_sample_value("trafficd_site_residual_sessions", labels)
    assert residual == 3
    assert (
        metrics.registry.get_sample_value(
            "trafficd_site_residual_sessions", {"site": "us", "target": first.admin_socket}
        )
        == 0
    )
    await r.reconcile(ALL_UP)  # back in traffic: nothing residual any more
    assert metrics.registry.get_sample_value("trafficd_site_residual_sessions", labels) == 0
    await r.actuator.close()


async def test_a_returning_site_gets_its_steps_weight_before_it_is_ready(
    pair: tuple[HAProxyPeer, HAProxyPeer],
) -> None:
    """During a gradual return the server holds the step's weight (10 of 100), set before
    `state ready`; real requests through the frontend follow the weights."""
    first, _ = pair
    r = lb((first,), Metrics(CollectorRegistry()))
    assert (await r.reconcile(EU_DOWN)).in_sync
    assert first.admin_states()["eu"] == 1 and first.weights()["eu"] == 100
    step = {**ALL_UP, "eu": dataclasses.replace(ALL_UP["eu"], state=State.ACTIVE, weight=10)}
    outcome = await r.reconcile(step)
    assert outcome.in_sync
    socket = first.admin_socket
    assert outcome.applied == [
        f"{socket}: set server quay/eu weight 10",
        f"{socket}: set server quay/eu state ready",
    ]
    assert first.admin_states() == {"us": 0, "eu": 0}
    assert first.weights() == {"us": 100, "eu": 10}
    hits = first.hits(110)  # one round of roundrobin at weights 100 and 10
    assert hits == {"us": 100, "eu": 10}
    outcome = await r.reconcile(ALL_UP)  # the last step: the configured weight
    assert outcome.applied == [f"{socket}: set server quay/eu weight 100"]
    assert first.weights() == {"us": 100, "eu": 100}
    await r.actuator.close()


async def test_the_canary_counts_each_sites_responses_on_every_socket_apart(
    pair: tuple[HAProxyPeer, HAProxyPeer],
) -> None:
    first, second = pair
    r = lb((first, second), Metrics(CollectorRegistry()))
    assert (await r.reconcile(ALL_UP)).in_sync
    before = (await read_canary([r.actuator])).responses  # cumulative: the start-up checks'
    assert set(before) == {"eu", "us"}
    a, b = (f"{peer.admin_socket} quay/eu" for peer in (first, second))
    assert set(before["eu"]) == {a, b}  # one counter per socket, not a sum
    assert all(c.errors == 0 for c in before["eu"].values())
    for peer, gets, errors in ((first, 3, 1), (second, 2, 2)):
        for _ in range(gets):
            assert get(peer, "SRV=eu") == "eu"
        for _ in range(errors):
            assert get(peer, "SRV=eu", method="PATCH") == "HTTP 501"
    assert get(first, "SRV=us") == "us"
    canary = await read_canary([r.actuator])
    assert not canary.incomplete
    eu, us = canary.responses["eu"], canary.responses["us"]
    assert (eu[a].total - before["eu"][a].total, eu[a].errors) == (4, 1)  # 3 GET, 1 PATCH
    assert (eu[b].total - before["eu"][b].total, eu[b].errors) == (4, 2)  # 2 GET, 2 PATCH
    u = f"{first.admin_socket} quay/us"
    assert (us[u].total - before["us"][u].total, us[u].errors) == (1, 0)
    # Two haproxy actuators of one socket each count the same as one of both sockets.
    apart = [lb((peer,), Metrics(CollectorRegistry())).actuator for peer in (first, second)]
    assert await read_canary(apart) == canary
    # A socket that cannot be read: no reading for its sites that round, not a partial one.
    second.stop()
    canary = await read_canary([r.actuator])
    assert canary.responses == {}
    assert canary.incomplete == {"eu": (second.admin_socket,), "us": (second.admin_socket,)}
    # Started again: its counters are another process's (a new pid), whatever they read.
    second.start()
    again = (await read_canary([r.actuator])).responses["eu"]
    assert again[b].started.isdigit() and eu[b].started.isdigit()
    assert again[b].started != eu[b].started and again[a].started == eu[a].started
    await r.actuator.close()


async def test_a_socket_without_the_sites_server_adds_no_counter_for_it(
    tmp_path: Path, pair: tuple[HAProxyPeer, HAProxyPeer]
) -> None:
    """An HAProxy that fronts only some sites sends the others nothing (as sends_traffic
    says): no counter of it for them, and they are not unread (an unread site's step
    waits, and this one would wait for ever)."""
    first, _ = pair
    only_us = sticky(HAProxyPeer(tmp_path / "c", backends={"us": first.backends["us"]}))
    only_us.start()
    try:
        r = lb((first, only_us), Metrics(CollectorRegistry()))
        canary = await read_canary([r.actuator])
        assert canary.incomplete == {}
        assert set(canary.responses["eu"]) == {f"{first.admin_socket} quay/eu"}
        assert set(canary.responses["us"]) == {
            f"{first.admin_socket} quay/us",
            f"{only_us.admin_socket} quay/us",
        }
        await r.actuator.close()
    finally:
        only_us.stop()
