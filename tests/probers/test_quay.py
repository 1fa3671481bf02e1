"""The Quay endpoint prober against a local app with Quay's exact bodies, over http and TLS."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from tests.peers import free_port
from tests.probers.quay_app import DEBUG_SECRET, QuayApp, quay_body
from trafficd.config.model import Probes, Site
from trafficd.model import Probe
from trafficd.probers.quay import QuayProber, Target, make_session


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


class Server:
    def __init__(self, quay: QuayApp, port: int, runner: web.AppRunner) -> None:
        self.quay, self.port, self.runner = quay, port, runner


async def serve(quay: QuayApp, ssl_context: Any = None) -> Server:
    runner = web.AppRunner(quay.app(), shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    return Server(quay, port, runner)


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.quay.release.set()
        await s.runner.cleanup()


async def run_probe(
    port: int,
    kind: Probe = Probe.ENDTOEND,
    *,
    url: str = "http://quay.example.com",
    timeout: float = 1.0,
    **probes: Any,
) -> Any:
    site = Site(url=url, connect=f"127.0.0.1:{port}", storage=["x"])
    settings = Probes(interval=f"{timeout * 2}s", timeout=f"{timeout}s", **probes)
    async with make_session() as session:
        prober = QuayProber(Target.from_site("eu", site), settings, session, vantage="us-east")
        start = time.monotonic()
        obs = await prober.probe(kind)
        return obs, time.monotonic() - start


async def test_healthy_site(servers: list[Server]) -> None:
    server = await serve(QuayApp())
    servers.append(server)
    for kind in (Probe.ENDTOEND, Probe.INSTANCE):
        obs, _ = await run_probe(server.port, kind)
        assert obs.ok is True
        assert obs.status == 200
        assert obs.services == {"auth": True, "database": True, "redis": True, "storage": True}
        assert obs.probe is kind and obs.target == "eu" and obs.vantage == "us-east"
        assert obs.latency is not None and obs.latency > 0
    assert server.quay.hosts == ["quay.example.com", "quay.example.com"]


@pytest.mark.parametrize(
    ("services", "reason"),
    [
        ({"storage": False}, "storage"),
        ({"database": False}, "shared_dependency"),
        ({"redis": False}, "shared_dependency"),
        ({"storage": False, "redis": False}, "storage,shared_dependency"),
        ({"auth": False}, "unhealthy"),
    ],
)
async def test_failed_services_are_classified(
    servers: list[Server], services: dict[str, bool], reason: str
) -> None:
    quay = QuayApp()
    quay.services.update(services)
    server = await serve(quay)
    servers.append(server)
    obs, _ = await run_probe(server.port)
    assert (obs.ok, obs.status, obs.reason) == (False, 503, reason)
    assert obs.services == quay.services


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ((503, b"<html>Service Unavailable</html>", {}), "unparsable"),
        ((200, b'{"data": {"services": "yes"}}', {}), "unparsable"),
        ((503, b"{not json", {}), "unparsable"),
        ((200, quay_body({"storage": True}) + b" " * 70_000, {}), "oversized"),
        ((302, b"", {"Location": "https://elsewhere.example.com/"}), "redirect"),
        ((502, b"Bad gateway", {}), "http_502"),
    ],
)
async def test_malformed_oversized_and_redirected_answers_fail(
    servers: list[Server], raw: tuple[int, bytes, dict[str, str]], reason: str
) -> None:
    server = await serve(QuayApp(raw=raw))
    servers.append(server)
    obs, _ = await run_probe(server.port)
    assert (obs.ok, obs.reason) == (False, reason)
    assert len(server.quay.hosts) == 1  # no redirect followed


async def test_a_hung_endtoend_is_a_timeout_within_the_bound(servers: list[Server]) -> None:
    server = await serve(QuayApp(hang=True))
    servers.append(server)
    obs, elapsed = await run_probe(server.port, timeout=0.5)
    assert (obs.ok, obs.reason) == (False, "timeout")
    assert elapsed < 0.5 + 0.1


async def test_connection_refused() -> None:
    obs, _ = await run_probe(free_port())
    assert (obs.ok, obs.reason) == (False, "connect")


async def test_tls_with_host_and_sni_of_the_global_name(
    servers: list[Server], ca: trustme.CA, ca_file: str
) -> None:
    quay = QuayApp()
    cert = ca.issue_cert("quay.example.com")
    server = await serve(quay, quay.server_context(cert))
    servers.append(server)
    obs, _ = await run_probe(server.port, url="https://quay.example.com", tls_ca_file=ca_file)
    assert obs.ok is True, obs
    assert quay.snis == ["quay.example.com"]
    assert quay.hosts == ["quay.example.com"]


async def test_tls_certificate_for_another_name_fails(
    servers: list[Server], ca: trustme.CA, ca_file: str
) -> None:
    quay = QuayApp()
    server = await serve(quay, quay.server_context(ca.issue_cert("other.example.com")))
    servers.append(server)
    obs, _ = await run_probe(server.port, url="https://quay.example.com", tls_ca_file=ca_file)
    assert (obs.ok, obs.reason) == (False, "tls")
    assert quay.hosts == []


async def test_tls_is_verified_by_default(servers: list[Server], ca: trustme.CA) -> None:
    quay = QuayApp()
    server = await serve(quay, quay.server_context(ca.issue_cert("quay.example.com")))
    servers.append(server)
    obs, _ = await run_probe(server.port, url="https://quay.example.com")  # system CAs only
    assert (obs.ok, obs.reason) == (False, "tls")
    insecure, _ = await run_probe(server.port, url="https://quay.example.com", tls_insecure=True)
    assert insecure.ok is True


async def test_debug_mode_keeps_the_failure_text(servers: list[Server]) -> None:
    quay = QuayApp()
    quay.services["storage"] = False
    quay.expanded = {
        "storage": {"status": False, "failure": "S3 error: connect timeout on quay-eu"},
        "auth": {"status": True},
    }
    server = await serve(quay)
    servers.append(server)
    obs, _ = await run_probe(server.port, debug_secret=DEBUG_SECRET)
    assert obs.ok is False
    assert obs.detail == "storage: S3 error: connect timeout on quay-eu"
    plain, _ = await run_probe(server.port)
    assert plain.detail is None
