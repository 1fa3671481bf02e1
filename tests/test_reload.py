"""Reloads (daemon.py): serialized, and seen by every loop at once, against a real HAProxy.

The daemon runs in this process (`Daemon.run`, its signal handlers installed), so
the test can count the asyncio tasks themselves, orphans included: the proof that
the task set after several SIGHUPs is one configuration's. The haproxy actuator
talks to a real HAProxy's admin socket.

1. Several SIGHUPs close together: one reload runs, one more is queued, and every
   task of the configuration exists once; a further reload that removes the
   haproxy actuator leaves no reconcile task for it.
2. A reload that adds a site: the reconcile loop applies the new site at once
   (no KeyError, no restart, no wait for the 30 s resync).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.peers import HAProxyPeer, free_port
from trafficd.config import load
from trafficd.daemon import Daemon

pytestmark = pytest.mark.peers

SITES = {"us": ("192.0.2.10", 100), "eu": ("192.0.2.20", 100), "ap": ("192.0.2.30", 50)}


def write_config(tmp: Path, port: int, sites: list[str], haproxy: str | None) -> Path:
    # A long interval and fall 3: no probe failure can change a decision during the test.
    lines = [
        "vantage: test",
        f"listen: 127.0.0.1:{port}",
        "state_dir: state",
        "storage:",
        f"  localstorage: [LocalStorage, {{storage_path: {tmp}/data}}]",
        "sites:",
    ]
    for name in sites:
        address, weight = SITES[name]
        lines.append(
            f"  {name}: {{url: 'http://q.test', connect: '127.0.0.1:1', storage: [localstorage],"
            f" addresses: [{address}], weight: {weight},"
            f" haproxy: {{backend: quay, server: {name}}}}}"
        )
    lines += [
        "probes: {interval: 30s, timeout: 500ms}",
        "policy: {fall: 3, rise: 2, hold_down: 0s, min_active_sites: 1}",
    ]
    if haproxy is not None:
        lines += ["actuators:", f"  - {{type: haproxy, id: lb, socket: {haproxy}}}"]
    path = tmp / "trafficd.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def weights(admin_socket: str) -> dict[str, int]:
    """Each server's current weight, from HAProxy's `show servers state`."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(admin_socket)
        s.sendall(b"show servers state quay\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows = [line.split() for line in data.decode().splitlines()[2:] if line.strip()]
    return {f[3]: int(f[7]) for f in rows if len(f) > 7}


def task_names() -> collections.Counter[str]:
    """Every live task of the loop by name: orphans a daemon no longer tracks count too.
    The haproxy actuator's loops (one per socket, `reconcile/lb/SOCKET`) count as
    `reconcile/lb`."""
    names = (t.get_name() for t in asyncio.all_tasks() if not t.done())
    return collections.Counter(
        "reconcile/lb" if n.startswith("reconcile/lb/") else n for n in names
    )


async def until(what: str, check: object, timeout: float = 10.0) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < timeout:
        if check():  # type: ignore[operator]
            return loop.time() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for: {what}")


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[HAProxyPeer]:
    peer = HAProxyPeer(tmp_path, {name: free_port() for name in SITES})
    peer.start_all()
    try:
        yield peer
    finally:
        peer.stop_all()


@pytest.fixture
async def running(tmp_path: Path, haproxy: HAProxyPeer) -> AsyncIterator[Daemon]:
    path = write_config(tmp_path, free_port(), ["us", "eu"], haproxy.admin_socket)
    daemon = Daemon(path, load(path))
    run = asyncio.create_task(daemon.run())
    try:
        await until("the daemon runs", lambda: daemon.runtime.alive)
        # A first decision now: the probes' first round is up to 30 s away.
        daemon.runtime.leader.tick()
        yield daemon
    finally:
        daemon.stopping.set()
        await asyncio.wait_for(run, 10)


def sample(daemon: Daemon, name: str, **labels: str) -> float:
    return daemon.registry.get_sample_value(name, labels) or 0.0


def restarts(daemon: Daemon, task: str) -> float:
    return sample(daemon, "trafficd_task_restarts_total", task=task)


async def test_sighups_close_together_leave_one_configurations_tasks(
    running: Daemon, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = running
    caplog.set_level(logging.INFO, logger="trafficd.daemon")
    before = task_names()
    assert before["reconcile/lb"] == 1
    probes = {n: c for n, c in before.items() if n.startswith("probe/")}
    assert probes and set(probes.values()) == {1}

    # Four SIGHUPs at once (an operator's `systemctl reload`, pressed repeatedly): the
    # loop handles all four before the first reload starts.
    for _ in range(4):
        os.kill(os.getpid(), signal.SIGHUP)

    def reloads() -> int:
        return sum(r.getMessage().startswith("configuration reloaded") for r in caplog.records)

    await until("the reloads are done", lambda: reloads() > 0 and task_names()["reload"] == 0)
    await asyncio.sleep(0.2)  # and no further one comes
    after = task_names()
    for name in ("reconcile/lb", "engine", "preflight", "notify", *probes):
        assert after[name] == 1, f"{name}: {after[name]} tasks after the reloads"
    assert reloads() == 2  # the first, and one queued for the three that came during it

    # A further reload that removes the haproxy actuator leaves no reconcile task for it.
    write_config(tmp_path, int(daemon.config.listen.rsplit(":", 1)[1]), ["us", "eu"], None)
    os.kill(os.getpid(), signal.SIGHUP)
    await until("the reload is done", lambda: not daemon.config.actuators)
    await until("the reload task ends", lambda: task_names()["reload"] == 0)
    assert task_names()["reconcile/lb"] == 0
    assert task_names()["engine"] == 1


async def test_a_reload_that_adds_a_site_is_applied_at_once(
    running: Daemon, tmp_path: Path, haproxy: HAProxyPeer
) -> None:
    daemon = running

    def in_sync() -> bool:
        target = haproxy.admin_socket
        return sample(daemon, "trafficd_actuator_in_sync", actuator="lb", target=target) == 1

    await until("lb in sync", in_sync)
    assert weights(haproxy.admin_socket)["ap"] == 100  # HAProxy's own configuration

    port = int(daemon.config.listen.rsplit(":", 1)[1])
    write_config(tmp_path, port, ["us", "eu", "ap"], haproxy.admin_socket)
    assert await daemon.reload()
    took = await until("ap at its weight", lambda: weights(haproxy.admin_socket)["ap"] == 50, 3.0)
    assert took < 1.0
    assert restarts(daemon, f"reconcile/lb/{haproxy.admin_socket}") == 0
    assert daemon.runtime.rounds.decision is not None and set(
        daemon.runtime.rounds.decision.sites
    ) == {"us", "eu", "ap"}

    # And removed again: the decision drops it at once and the loop runs without it.
    write_config(tmp_path, port, ["us", "eu"], haproxy.admin_socket)
    assert await daemon.reload()
    assert set(daemon.runtime.rounds.decision.sites) == {"us", "eu"}
    await until("lb in sync", in_sync, 3.0)
    assert restarts(daemon, f"reconcile/lb/{haproxy.admin_socket}") == 0
