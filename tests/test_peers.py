"""The fast tier stays fast: a test not marked `peers` cannot start a real server.

tests/conftest.py refuses, in any test without the mark, a subprocess whose program is
one of tests.peers.PEER_PROGRAMS (or a Python module of PEER_MODULES), before it
starts; `pytest -m "not peers"` therefore never starts a server, and a forgotten mark
fails in CI's full run too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers import HAProxyPeer, peer_program


@pytest.mark.parametrize(
    ("argv", "program"),
    [
        (["/usr/sbin/named", "-g", "-c", "named.conf"], "named"),
        (["redis-server", "--port", "0"], "redis-server"),
        ("/usr/bin/etcd --data-dir x", "etcd"),
        ([sys.executable, "-m", "moto.server", "-p", "5000"], "python -m moto.server"),
        ([sys.executable, "-m", "trafficd.demo", "up"], "python -m trafficd.demo"),
        (["bash", "./demo.sh", "up"], "demo.sh"),
        (["/usr/lib/postgresql/15/bin/initdb", "-D", "x"], "initdb"),
        ([sys.executable, "-c", "print(1)"], None),
        (["/bin/sh", "-c", "exit 0"], None),
        (["trafficd", "check-config", "-c", "named"], None),
    ],
)
def test_peer_programs_are_recognised(argv: list[str] | str, program: str | None) -> None:
    assert peer_program(argv) == program


def test_an_unmarked_test_cannot_start_a_server() -> None:
    with pytest.raises(RuntimeError, match=r"starts 'redis-server'.*not marked peers"):
        subprocess.Popen(["redis-server", "--port", "0"])


def test_an_unmarked_test_may_run_other_programs() -> None:
    out = subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True, check=True)
    assert out.stdout == b"ok\n"


def test_a_failed_haproxy_start_stops_the_backends_it_started(tmp_path: Path) -> None:
    # The guard refuses haproxy here, after the backends (Python http.servers) run:
    # they used to outlive the test, one pair per failed start.
    peer = HAProxyPeer(tmp_path)
    with pytest.raises(RuntimeError, match="starts 'haproxy'"):
        peer.start_all()
    assert len(peer.servers) == 2
    assert all(server.poll() is not None for server in peer.servers)


@pytest.mark.peers
def test_a_marked_test_starts_what_it_needs() -> None:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, check=True)
    assert out.stdout.startswith(b"Redis server")
