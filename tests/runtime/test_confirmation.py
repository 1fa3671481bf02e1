"""The confirmation of traffic off (runtime/confirmation.py), on explicit times: what it
feeds the engine, and how a drain that no traffic target confirms is reported.

The runtime is real (engine, store, metrics, an haproxy actuator's per-socket
reconcilers); what each socket read back is set by hand and rounds run with an
explicit `now`. The same rule against real HAProxy processes is in
tests/e2e/test_faults.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_api import healthy
from trafficd.actuators import build
from trafficd.actuators.base import BuildContext, Reconciler
from trafficd.config import load
from trafficd.runtime.commands import Command
from trafficd.runtime.wiring import Runtime
from trafficd.store import read_events

SOCKETS = ("/run/lb-a.sock", "/run/lb-b.sock")


def write_config(tmp: Path) -> Path:
    (tmp / "token").write_text("admin-token-0123456789abcdef\n")
    path = tmp / "trafficd.yaml"
    path.write_text(f"""
vantage: test
state_dir: state
api_token_file: token
storage:
  usstorage: [LocalStorage, {{storage_path: {tmp}/us}}]
  eustorage: [LocalStorage, {{storage_path: {tmp}/eu}}]
sites:
  us: {{url: "http://q.test", connect: "127.0.0.1:1", storage: [usstorage],
        addresses: [192.0.2.10], haproxy: {{backend: quay, server: us}}}}
  eu: {{url: "http://q.test", connect: "127.0.0.1:2", storage: [eustorage],
        addresses: [192.0.2.20], haproxy: {{backend: quay, server: eu}}}}
probes: {{interval: 1s, timeout: 500ms}}
policy: {{fall: 2, rise: 2, hold_down: 0s, shutdown_grace: 5s, shutdown_deadline: 10s}}
actuators:
  - {{type: haproxy, id: lb, sockets: [{", ".join(SOCKETS)}]}}
""")
    return path


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    path = write_config(tmp_path)
    d = Runtime.open(load(path), path)
    # The reconcile loops' per-target reconcilers, without their loops.
    section = d.live.config.actuators[0]
    actuator = build(section, BuildContext(sites=d.live.config.sites, metrics=d.metrics))
    d.actuation.targets = [Reconciler(actuator, d.metrics, target=s) for s in SOCKETS]
    yield d
    d.store.close()


def read_back(d: Runtime, socket: str, traffic: dict[str, bool] | None) -> None:
    rec = next(r for r in d.actuation.targets if r.target == socket)
    rec.traffic[socket] = traffic


def value(d: Runtime, name: str, **labels: str) -> float | None:
    return d.metrics.registry.get_sample_value(name, labels)


def blocked_events(d: Runtime) -> list[dict[str, Any]]:
    return [e for e in read_events(d.store.dir) if e["kind"] == "shutdown_blocked"]


async def drain(d: Runtime, stop_instances: bool) -> float:
    t0 = time.time()
    healthy(d, t0)
    d.leader.tick(t0)
    body = {"reason": "upgrade", "stop_instances": stop_instances}
    answer = await d.commands.execute(Command.parse("drain", "eu", "admin", body))
    assert answer["state"] == "draining"
    return t0


async def test_the_stop_waits_for_every_socket_and_the_grace_counts_from_then(
    runtime: Runtime,
) -> None:
    d = runtime
    t0 = await drain(d, stop_instances=True)
    read_back(d, SOCKETS[0], {"us": True, "eu": False})  # one socket holds eu out
    for t in (1, 5, 9):
        decision = d.leader.tick(t0 + t)
        assert decision.sites["eu"].state.value == "draining", t
        assert decision.sites["eu"].instances == "running"
    assert value(d, "trafficd_site_shutdown_blocked", site="eu") == 0
    assert blocked_events(d) == []

    # Past the deadline: reported, naming the socket that holds it.
    d.leader.tick(t0 + 11)
    assert value(d, "trafficd_site_shutdown_blocked", site="eu") == 1
    holder = {"site": "eu", "actuator": "lb", "target": SOCKETS[1]}
    assert value(d, "trafficd_site_shutdown_holder", **holder) == 1
    assert value(d, "trafficd_site_shutdown_holder", **{**holder, "target": SOCKETS[0]}) is None
    (event,) = blocked_events(d)
    assert event["blocked"] and event["site"] == "eu"
    assert event["holders"] == [f"lb {SOCKETS[1]}: not read back yet"]
    view = {s["name"]: s for s in d.views.sites()}["eu"]
    assert view["shutdown_blocked"] == event["holders"] and view["traffic_off"] is None
    d.leader.tick(t0 + 12)
    assert len(blocked_events(d)) == 1  # said once

    # A socket that reads eu back as still serving holds it too (the same holder: no
    # new event, the status says why now).
    read_back(d, SOCKETS[1], {"us": True, "eu": True})
    d.leader.tick(t0 + 13)
    view = {s["name"]: s for s in d.views.sites()}["eu"]
    assert view["shutdown_blocked"] == [f"lb {SOCKETS[1]}: still sends traffic"]
    assert len(blocked_events(d)) == 1

    # Both confirm: unblocked, and drained shutdown_grace (5 s) later.
    read_back(d, SOCKETS[1], {"us": True, "eu": False})
    d.leader.tick(t0 + 14)
    assert d.actuation.confirmation.traffic_off == {"eu": t0 + 14}
    assert value(d, "trafficd_site_shutdown_blocked", site="eu") == 0
    assert value(d, "trafficd_site_shutdown_holder", **holder) is None
    assert blocked_events(d)[-1]["blocked"] is False
    assert d.leader.tick(t0 + 18.9).sites["eu"].state.value == "draining"
    decision = d.leader.tick(t0 + 19)
    assert decision.sites["eu"].state.value == "drained"
    assert decision.sites["eu"].instances == "stopped"
    assert value(d, "trafficd_site_traffic_off_seconds", site="eu") == pytest.approx(5)


async def test_a_drain_that_keeps_its_instances_is_never_reported_blocked(
    runtime: Runtime,
) -> None:
    d = runtime
    t0 = await drain(d, stop_instances=False)
    d.leader.tick(t0 + 30)
    assert d.rounds.decision is not None and d.rounds.decision.sites["eu"].state.value == "draining"
    assert value(d, "trafficd_site_shutdown_blocked", site="eu") == 0
    assert blocked_events(d) == []


async def test_a_failed_read_is_never_a_confirmation(runtime: Runtime) -> None:
    d = runtime
    t0 = await drain(d, stop_instances=True)
    for socket in SOCKETS:
        read_back(d, socket, {"us": True, "eu": False})
    read_back(d, SOCKETS[0], None)  # its last reconcile failed
    d.leader.tick(t0 + 1)
    assert d.actuation.confirmation.traffic_off == {}
    read_back(d, SOCKETS[0], {"us": True, "eu": False})
    d.leader.tick(t0 + 2)
    assert d.actuation.confirmation.traffic_off == {"eu": t0 + 2}


async def test_a_confirmation_is_withdrawn_when_a_socket_sends_traffic_again(
    runtime: Runtime,
) -> None:
    # Both sockets confirm, then one reads eu back as serving (an operator's `set
    # server ready`, HAProxy restarted from its file) before the grace is over: the old
    # confirmation must not let the instances stop while that socket sends clients there.
    d = runtime
    t0 = await drain(d, stop_instances=True)
    for socket in SOCKETS:
        read_back(d, socket, {"us": True, "eu": False})
    d.leader.tick(t0 + 1)
    assert d.actuation.confirmation.traffic_off == {"eu": t0 + 1}
    read_back(d, SOCKETS[1], {"us": True, "eu": True})
    for t in (2, 6, 10):
        decision = d.leader.tick(t0 + t)
        assert decision.sites["eu"].state.value == "draining", t
        assert decision.sites["eu"].instances == "running", t
    assert d.actuation.confirmation.traffic_off == {}
    # Confirmed again: the grace counts from this confirmation, not the first one.
    read_back(d, SOCKETS[1], {"us": True, "eu": False})
    d.leader.tick(t0 + 11)
    assert d.actuation.confirmation.traffic_off == {"eu": t0 + 11}
    assert d.leader.tick(t0 + 15.9).sites["eu"].state.value == "draining"
    assert d.leader.tick(t0 + 16).sites["eu"].instances == "stopped"


async def test_a_socket_added_by_a_reload_holds_the_stop_until_it_is_read(
    runtime: Runtime,
) -> None:
    # The reload keeps the confirmation taken from the old sockets; a socket it adds was
    # never read, so it cannot have confirmed anything.
    d = runtime
    t0 = await drain(d, stop_instances=True)
    for socket in SOCKETS:
        read_back(d, socket, {"us": True, "eu": False})
    d.leader.tick(t0 + 1)
    assert d.actuation.confirmation.traffic_off == {"eu": t0 + 1}
    added = "/run/lb-c.sock"
    section = d.live.config.actuators[0]
    actuator = build(
        section.model_copy(update={"sockets": [*SOCKETS, added]}),
        BuildContext(sites=d.live.config.sites, metrics=d.metrics),
    )
    d.actuation.targets = [Reconciler(actuator, d.metrics, target=s) for s in (*SOCKETS, added)]
    for socket in SOCKETS:
        read_back(d, socket, {"us": True, "eu": False})
    for t in (6, 9):
        decision = d.leader.tick(t0 + t)
        assert decision.sites["eu"].instances == "running", t
    read_back(d, added, {"us": True, "eu": False})
    d.leader.tick(t0 + 10)
    assert d.actuation.confirmation.traffic_off == {"eu": t0 + 10}
    assert d.leader.tick(t0 + 15).sites["eu"].instances == "stopped"


async def test_a_reload_of_the_same_configuration_keeps_the_confirmation(
    runtime: Runtime,
) -> None:
    """Issue 19 review: a reload rebuilt every target with nothing read back, so the
    confirmation was withdrawn and the grace began again (a configuration agent that
    reloads every minute kept eu's instances up for ever). An unchanged target keeps
    its read-back; one whose sites changed must read back again."""
    d = runtime
    d.actuation.build()  # the configuration's targets, as start() builds them
    t0 = await drain(d, stop_instances=True)
    for socket in SOCKETS:
        read_back(d, socket, {"us": True, "eu": False})
    d.leader.tick(t0 + 1)
    assert d.actuation.confirmation.traffic_off == {"eu": t0 + 1}
    d.actuation.build()  # a reload of the same file
    assert d.leader.tick(t0 + 6).sites["eu"].instances == "stopped"
    assert d.actuation.confirmation.traffic_off == {"eu": t0 + 1}
    sites = dict(d.live.config.sites)
    sites["eu"] = sites["eu"].model_copy(update={"addresses": ["192.0.2.21"]})
    d.live.config = d.live.config.model_copy(update={"sites": sites})
    d.actuation.build()  # a reload that changes a site: nothing read back stands
    assert all(rec.traffic[rec.target or ""] is None for rec in d.actuation.targets)


async def test_a_drained_site_stops_later_only_on_a_fresh_confirmation(runtime: Runtime) -> None:
    # Drained for maintenance with its instances up; then the operator asks for the stop
    # (`drain --stop-instances` again) while a socket sends eu traffic again (or a reload
    # added one, an admin socket that never answers): the drain's old confirmation must
    # not stop the instances; the stop follows shutdown_grace after both confirm anew.
    d = runtime
    t0 = await drain(d, stop_instances=False)
    for socket in SOCKETS:
        read_back(d, socket, {"us": True, "eu": False})
    d.leader.tick(t0 + 1)
    decision = d.leader.tick(t0 + 6)
    assert decision.sites["eu"].state.value == "drained"
    assert decision.sites["eu"].instances == "running"
    read_back(d, SOCKETS[1], None)  # no answer any more
    d.leader.tick(t0 + 7)
    body = {"reason": "upgrade", "stop_instances": True}
    answer = await d.commands.execute(Command.parse("drain", "eu", "admin", body))
    assert answer["state"] == "drained"
    for t in (8, 12, 20):
        decision = d.leader.tick(t0 + t)
        assert decision.sites["eu"].instances == "running", t
    # Past the deadline counted from the drain: reported, naming the socket.
    assert value(d, "trafficd_site_shutdown_blocked", site="eu") == 1
    holder = {"site": "eu", "actuator": "lb", "target": SOCKETS[1]}
    assert value(d, "trafficd_site_shutdown_holder", **holder) == 1
    read_back(d, SOCKETS[1], {"us": True, "eu": False})
    d.leader.tick(t0 + 21)
    assert d.actuation.confirmation.traffic_off == {"eu": t0 + 21}
    assert value(d, "trafficd_site_shutdown_blocked", site="eu") == 0
    assert d.leader.tick(t0 + 25.9).sites["eu"].instances == "running"
    assert d.leader.tick(t0 + 26).sites["eu"].instances == "stopped"
    # Once stopped, a socket that loses its answer does not start them again.
    read_back(d, SOCKETS[1], None)
    assert d.leader.tick(t0 + 27).sites["eu"].instances == "stopped"


async def test_a_restart_keeps_a_stopped_drained_site_stopped(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    d = Runtime.open(load(path), path)
    section = d.live.config.actuators[0]
    actuator = build(section, BuildContext(sites=d.live.config.sites, metrics=d.metrics))
    d.actuation.targets = [Reconciler(actuator, d.metrics, target=s) for s in SOCKETS]
    t0 = await drain(d, stop_instances=True)
    for socket in SOCKETS:
        read_back(d, socket, {"us": True, "eu": False})
    d.leader.tick(t0 + 1)
    assert d.leader.tick(t0 + 6).sites["eu"].instances == "stopped"
    d.effects.save()
    d.store.close()
    again = Runtime.open(load(path), path)  # nothing read back yet
    again.actuation.targets = [Reconciler(actuator, again.metrics, target=s) for s in SOCKETS]
    try:
        healthy(again, t0 + 7)
        assert again.leader.tick(t0 + 7).sites["eu"].instances == "stopped"
        assert again.leader.tick(t0 + 8).sites["eu"].instances == "stopped"
    finally:
        again.store.close()
