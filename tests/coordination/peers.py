"""Real shared stores for the coordination tests: redis-server and etcd (Debian packages).

Both run on 127.0.0.1 with free ports, are started and stopped by PID, and can
be stopped and started again on the same port (and, for etcd, the same data
directory) to test an outage. Redis runs without persistence, so a restart
comes back empty, as a cache-only Redis would.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.peers import free_port, stop


def _wait(check: object, what: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer within {timeout}s")


class RedisPeer:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = tmp / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["/usr/bin/redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

        def ping() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")

        _wait(ping, "redis-server", self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


class EtcdPeer:
    def __init__(self, tmp: Path) -> None:
        self.client, self.peer = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.client}"
        self.data = tmp / "etcd-data"
        self.log = tmp / "etcd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer}"
        argv = [
            "/usr/bin/etcd",
            "--data-dir",
            str(self.data),
            "--listen-client-urls",
            self.url,
            "--advertise-client-urls",
            self.url,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"default={peer}",
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

        def healthy() -> bool:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                return b'"true"' in resp.read()

        _wait(healthy, "etcd", self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
