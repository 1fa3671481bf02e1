"""Real servers for tests: started on 127.0.0.1 with free ports, stopped by PID.

`moto_server` (S3 and STS) and Azurite (Azure Blob) run as child processes;
`FaultProxy` is an in-process HTTP proxy in front of a real server that can
make it fail on demand (500, hang, corrupted reads) and records what clients
sent, so that faults are injected without faking the server itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from trafficd.demo.peers import Bind, HAProxy
from trafficd.demo.peers import free_port as free_port  # re-exported for the tests
from trafficd.demo.peers import stop as stop

ROOT = Path(__file__).resolve().parents[1]

# Programs that make a test a `peers` test (tests/conftest.py refuses them in a test
# without the mark): the real servers, their tools, and the demo that starts them.
PEER_PROGRAMS = frozenset(
    {
        "named",
        "tsig-keygen",
        "rndc",
        "dig",
        "haproxy",
        "pdns_server",
        "pdnsutil",
        "prometheus",
        "promtool",
        "postgres",
        "initdb",
        "pg_ctl",
        "psql",
        "redis-server",
        "etcd",
        "docker-registry",
        "skopeo",
        "chromium",
        "chromium-browser",
        "azurite-blob",
        "node",
        "demo.sh",
    }
)
# Python modules run with `-m` that start servers: moto's S3 server, the demo.
PEER_MODULES = frozenset({"moto.server", "trafficd.demo"})
_INTERPRETERS = frozenset({"sh", "bash", "env"})


def peer_program(args: Any) -> str | None:
    """The peer program that `subprocess.Popen(args)` would start, or None."""
    if isinstance(args, str):
        argv = args.split()
    elif isinstance(args, bytes | os.PathLike):
        argv = [os.fsdecode(args)]
    else:
        argv = [os.fsdecode(a) for a in args]
    names = [Path(a).name for a in argv]
    if not names:
        return None
    if names[0] in _INTERPRETERS and len(names) > 1:
        names = names[1:]
    if names[0] in PEER_PROGRAMS:
        return names[0]
    if names[0].startswith("python") and "-m" in argv[:-1]:
        module = argv[argv.index("-m") + 1]
        if module in PEER_MODULES:
            return f"python -m {module}"
    return None


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str, deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url} within {deadline}s")


@contextlib.contextmanager
def process(
    argv: list[str], ready_url: str, what: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(ready_url, proc, what)
        yield proc
    finally:
        stop(proc)


@contextlib.contextmanager
def moto_server(tmp: Path) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    with process(argv, f"{url}/moto-api/", "moto_server", tmp / "moto.log"):
        yield url


def azurite_binary() -> str:
    """Azurite from npm: .ci/run installs it under .peers/; a test without it fails loudly."""
    candidates = [
        os.environ.get("TRAFFICD_AZURITE_BLOB", ""),
        str(ROOT / ".peers" / "node_modules" / ".bin" / "azurite-blob"),
        shutil.which("azurite-blob") or "",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError(
        "azurite-blob not found: run `npm install --prefix .peers azurite@3` (as .ci/run does)"
    )


AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's documented well-known development key (not a secret).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@contextlib.contextmanager
def azurite(tmp: Path) -> Iterator[str]:
    port = free_port()
    data = tmp / "azurite"
    data.mkdir(exist_ok=True)
    argv = [
        azurite_binary(),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(data),
        "--silent",
        "--skipApiVersionCheck",
        "--loose",
    ]
    url = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    with process(argv, f"http://127.0.0.1:{port}/", "azurite", tmp / "azurite.log"):
        yield url


class FaultProxy:
    """An HTTP proxy in front of a real server; `mode` says how to misbehave."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = "pass"  # pass | status500 | hang | corrupt
        self.only: str | None = None  # misbehave only for requests whose path holds this
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._release = asyncio.Event()
        self.url = ""

    async def start(self) -> FaultProxy:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs, dict(request.headers)))
        mode = self.mode if self.only is None or self.only in request.path_qs else "pass"
        if mode == "hang":
            await self._release.wait()  # until the test closes the proxy
            return web.Response(status=504)
        if mode == "status500":
            body = (
                b"<?xml version='1.0'?>"
                b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
            )
            return web.Response(status=500, body=body, content_type="application/xml")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        headers["Host"] = self.upstream.split("://", 1)[1].split("/", 1)[0]
        body_in = await request.read()
        # Signed requests (S3 SigV4, Azure shared key) break if headers are added.
        skip_auto = ["Content-Type", "Accept-Encoding", "User-Agent", "Accept"]
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body_in or None,
            allow_redirects=False,
            skip_auto_headers=skip_auto,
        ) as upstream:
            body = await upstream.read()
            if mode == "corrupt" and request.method == "GET" and body:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            skip = {"content-length", "transfer-encoding", "content-encoding", "connection"}
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in skip}
            return web.Response(status=upstream.status, body=body, headers=out)

    async def close(self) -> None:
        self._release.set()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()


# --- DNS and load balancer peers for the actuator contract test -------------------------

ZONE = "example.test."
NAME = "quay.example.test."


class Named(Bind):
    """BIND 9 as a primary for example.test (quay.example.test: us and eu), TSIG updates."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp / "bind", ZONE, {"quay": ["192.0.2.10", "192.0.2.20"]})

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


class HAProxyPeer(HAProxy):
    """HAProxy with an admin socket, a user-level socket, and real backend servers."""

    def __init__(self, tmp: Path, backends: dict[str, int] | None = None) -> None:
        super().__init__(tmp / "haproxy", backends or {"us": free_port(), "eu": free_port()})
        self.servers: list[subprocess.Popen[bytes]] = []

    def start_backends(self) -> None:
        for name, port in self.backends.items():
            root = self.dir / name
            root.mkdir(exist_ok=True)
            (root / "index.html").write_text(name)
            self.servers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "http.server",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--directory",
                        str(root),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        for port in self.backends.values():
            _wait_http(f"http://127.0.0.1:{port}/", self.servers[0], "backend http.server")

    def start_all(self) -> None:
        """The backends, then HAProxy; a failure on the way stops what already runs."""
        try:
            self.start_backends()
            self.start()
        except BaseException:
            self.stop_all()
            raise

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def stop_all(self) -> None:
        self.stop()
        for server in self.servers:
            stop(server)

    def hits(self, n: int = 20) -> dict[str, int]:
        """Real HTTP requests through the frontend: which backend answered each."""
        counts: dict[str, int] = {}
        for _ in range(n):
            try:
                url = f"http://127.0.0.1:{self.frontend}/"
                body = urllib.request.urlopen(url, timeout=2).read().decode()
            except urllib.error.HTTPError as exc:
                body = f"HTTP {exc.code}"
            counts[body] = counts.get(body, 0) + 1
        return counts


class PowerDNSPeer:
    """PowerDNS Authoritative with the sqlite3 backend and the HTTP API on loopback."""

    API_KEY = "pdns-test-api-key-0123"

    def __init__(self, tmp: Path, *, lua_records: bool = False) -> None:
        import sqlite3

        self.dir = tmp / "pdns"
        self.dir.mkdir()
        self.dns_port = free_port()
        self.api_port = free_port()
        schema = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql").read_text()
        db = sqlite3.connect(self.dir / "pdns.sqlite3")
        db.executescript(schema)
        db.close()
        (self.dir / "pdns.conf").write_text(f"""
launch=gsqlite3
gsqlite3-database={self.dir}/pdns.sqlite3
local-address=127.0.0.1:{self.dns_port}
socket-dir={self.dir}
daemon=no
guardian=no
disable-syslog=yes
api=yes
api-key={self.API_KEY}
webserver=yes
webserver-address=127.0.0.1
webserver-port={self.api_port}
webserver-allow-from=127.0.0.1/32
cache-ttl=0
negquery-cache-ttl=0
query-cache-ttl=0
zone-cache-refresh-interval=0
security-poll-suffix=
{"enable-lua-records=yes" if lua_records else ""}
""")
        self.proc: subprocess.Popen[bytes] | None = None
        self.api = f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        with (self.dir / "pdns.log").open("ab") as log:
            self.proc = subprocess.Popen(
                ["/usr/sbin/pdns_server", f"--config-dir={self.dir}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_http(f"{self.api}/api/v1/servers", self.proc, "pdns_server")

    def create_zone(self) -> None:
        import json

        zone = {
            "name": ZONE,
            "kind": "Native",
            "nameservers": ["ns1.example.test."],
            "rrsets": [
                {
                    "name": NAME,
                    "type": "A",
                    "ttl": 60,
                    "records": [
                        {"content": "192.0.2.10", "disabled": False},
                        {"content": "192.0.2.20", "disabled": False},
                    ],
                }
            ],
        }
        request = urllib.request.Request(
            f"{self.api}/api/v1/servers/localhost/zones",
            data=json.dumps(zone).encode(),
            headers={"X-API-Key": self.API_KEY, "Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=5).read()

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def addresses(self) -> set[str]:
        import dns.message
        import dns.query

        answer = dns.query.udp(
            dns.message.make_query(NAME, "A"), "127.0.0.1", port=self.dns_port, timeout=2
        )
        return {rr.to_text() for rrset in answer.answer for rr in rrset}

    def rrsets(self, name: str = NAME) -> list[dict[str, Any]]:
        """The zone's RRsets at `name`, as the API gives them."""
        import json

        request = urllib.request.Request(
            f"{self.api}/api/v1/servers/localhost/zones/{ZONE}",
            headers={"X-API-Key": self.API_KEY},
        )
        zone = json.loads(urllib.request.urlopen(request, timeout=5).read())
        return [r for r in zone["rrsets"] if r["name"] == name]
