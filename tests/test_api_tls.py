"""The API over TLS: handshakes, mutual TLS, certificates re-read on SIGHUP, verifying clients.

A real daemon object serves on 127.0.0.1 (free ports) with certificates made in
the test by trustme; clients are the standard library's (the client commands'
urllib) and aiohttp's, each verifying against the test's CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme

from tests.peers import free_port, stop
from tests.test_api import ADMIN, write_config
from trafficd.cli import main
from trafficd.client import EXIT_UNREACHABLE, ClientError, call, tls_context
from trafficd.config import load
from trafficd.daemon import Daemon

OPS_SUBJECT = "CN=ops,OU=sre,O=trafficd-test"
REPO = Path(__file__).resolve().parents[1]


def write_leaf(ca: trustme.CA, directory: Path, name: str, *identities: str) -> tuple[Path, Path]:
    """A certificate issued by `ca` and its key (mode 0600, as check-config requires)."""
    leaf = ca.issue_cert(*identities, common_name=name)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.unlink(missing_ok=True)
    key.unlink(missing_ok=True)
    for pem in leaf.cert_chain_pems:
        pem.write_to_path(cert, append=True)
    key.touch(mode=0o600)
    leaf.private_key_pem.write_to_path(key)
    return cert, key


class Served:
    def __init__(self, daemon: Daemon, port: int, ca_file: Path) -> None:
        self.daemon, self.port, self.ca_file = daemon, port, ca_file
        self.base = f"https://127.0.0.1:{port}"

    def context(self, ca_file: Path | None = None) -> ssl.SSLContext:
        context = tls_context(self.base, str(ca_file or self.ca_file), None, None)
        assert context is not None
        return context

    async def get(self, path: str, context: ssl.SSLContext, token: str = ADMIN) -> object:
        return await asyncio.to_thread(call, self.base, token, "GET", path, context=context)


@contextlib.contextmanager
def running_trafficd(path: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`trafficd run -c path` (uvloop, as in production) until it listens on `port`;
    its output goes to trafficd.log beside the config. Stopped by PID."""
    log = path.parent / "trafficd.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trafficd.cli", "run", "-c", str(path)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        end = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < end, "trafficd did not listen within 20 s"
                time.sleep(0.05)
        yield proc
    finally:
        stop(proc)


async def serve_daemon(path: Path) -> AsyncIterator[Daemon]:
    daemon = Daemon(path, load(path))
    await daemon.start_listeners()
    try:
        yield daemon
    finally:
        await daemon.runtime.stop()
        await daemon.runtime.supervisor.cancel(list(daemon.runtime.supervisor.tasks))
        await daemon.listeners.stop()
        daemon.store.close()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(path)
    return path


@pytest.fixture
async def served(ca: trustme.CA, ca_file: Path, tmp_path: Path) -> AsyncIterator[Served]:
    cert, key = write_leaf(ca, tmp_path, "server", "127.0.0.1", "localhost")
    write_leaf(ca, tmp_path, "ops")
    port = free_port()
    extra = f"listen: 127.0.0.1:{port}\ntls_cert_file: {cert.name}\ntls_key_file: {key.name}\n"
    async for daemon in serve_daemon(write_config(tmp_path, extra)):
        yield Served(daemon, port, ca_file)


async def test_handshake_tls12_or_newer_and_a_verified_answer(served: Served) -> None:
    answer = await served.get("/api/v1/sites", served.context())
    assert isinstance(answer, dict) and {s["name"] for s in answer["sites"]} == {"us", "eu"}
    # TLS 1.2 is taken; anything older is refused by the daemon (the client allows it).
    tls12 = served.context()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert isinstance(await served.get("/api/v1/sites", tls12), dict)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(served.ca_file)
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # deprecated versions, which is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ClientError) as caught:
        await served.get("/api/v1/sites", old)
    assert caught.value.code == EXIT_UNREACHABLE and "TLS" in str(caught.value)
    # Plain HTTP on the TLS port gets no answer from the API.
    with pytest.raises(ClientError):
        await asyncio.to_thread(
            call, f"http://127.0.0.1:{served.port}", ADMIN, "GET", "/api/v1/sites"
        )


async def test_a_client_refuses_an_unknown_ca(served: Served, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(other)
    with pytest.raises(ClientError) as caught:
        await served.get("/api/v1/sites", served.context(other))
    assert caught.value.code == EXIT_UNREACHABLE
    assert "does not trust" in str(caught.value) and "--ca-file" in str(caught.value)
    # The system trust store does not know the test CA either: no silent fallback.
    system = tls_context(served.base, None, None, None)
    assert system is not None
    with pytest.raises(ClientError, match="does not trust"):
        await served.get("/api/v1/sites", system)


async def test_the_client_commands_take_the_tls_options(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    token = served.daemon.config_path.parent / "token"
    args = ["status", "--json", "--api", served.base, "--token-file", str(token)]
    code = await asyncio.to_thread(main, [*args, "--ca-file", str(served.ca_file)])
    assert code == 0 and {s["name"] for s in json.loads(capsys.readouterr().out)} == {"us", "eu"}
    assert await asyncio.to_thread(main, args) == EXIT_UNREACHABLE  # system trust: unknown CA
    assert "does not trust" in capsys.readouterr().err


def fetch(url: str, context: ssl.SSLContext) -> bytes:
    with urllib.request.urlopen(url, context=context, timeout=5) as resp:
        body: bytes = resp.read()
    return body


async def test_metrics_listen_over_tls_without_client_certificates(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    cert, key = write_leaf(ca, tmp_path, "server", "127.0.0.1")
    port, metrics_port = free_port(), free_port()
    extra = (
        f"listen: 127.0.0.1:{port}\nmetrics_listen: 127.0.0.1:{metrics_port}\n"
        f"tls_cert_file: {cert.name}\ntls_key_file: {key.name}\n"
        f"tls_client_ca_file: {ca_file.name}\n"
        f"metrics_tls_cert_file: {cert.name}\nmetrics_tls_key_file: {key.name}\n"
    )
    async for daemon in serve_daemon(write_config(tmp_path, extra)):
        public = Served(daemon, metrics_port, ca_file)
        text = await asyncio.to_thread(fetch, public.base + "/metrics", public.context())
        assert b"trafficd_config_last_reload_successful 1.0" in text


async def test_reload_with_a_bad_certificate_keeps_the_old_one(
    served: Served, ca: trustme.CA, tmp_path: Path
) -> None:
    daemon = served.daemon
    first = await asyncio.to_thread(peer_serial, served)
    (tmp_path / "server.pem").write_text("-----BEGIN CERTIFICATE-----\nnot one\n")
    assert await daemon.reload() is False
    assert daemon.registry.get_sample_value("trafficd_config_last_reload_successful") == 0
    assert await asyncio.to_thread(peer_serial, served) == first  # the listener kept it
    assert isinstance(await served.get("/api/v1/sites", served.context()), dict)
    # A good new certificate is taken by the next handshake, on the same socket.
    write_leaf(ca, tmp_path, "server", "127.0.0.1")
    assert await daemon.reload() is True
    assert daemon.registry.get_sample_value("trafficd_config_last_reload_successful") == 1
    assert await asyncio.to_thread(peer_serial, served) != first


async def test_reload_logs_why_the_certificate_was_kept(
    served: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "server.key").write_text("")
    assert await served.daemon.reload() is False
    rejected = [r.getMessage() for r in caplog.records if "reload rejected" in r.getMessage()]
    assert rejected and "tls_cert_file" in rejected[0]


def peer_serial(served: Served) -> int:
    with (
        socket.create_connection(("127.0.0.1", served.port), timeout=5) as raw,
        served.context().wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    from cryptography import x509

    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
async def mutual(ca: trustme.CA, ca_file: Path, tmp_path: Path) -> AsyncIterator[Served]:
    cert, key = write_leaf(ca, tmp_path, "server", "127.0.0.1")
    port = free_port()
    extra = (
        f"listen: 127.0.0.1:{port}\ntls_cert_file: {cert.name}\ntls_key_file: {key.name}\n"
        f"tls_client_ca_file: {ca_file.name}\n"
    )
    path = write_config(tmp_path, extra)
    text = path.read_text().replace(
        "api_tokens:\n",
        f'api_tokens:\n  - {{name: ops, role: admin, subject: "{OPS_SUBJECT}"}}\n',
    )
    path.write_text(text)
    async for daemon in serve_daemon(path):
        yield Served(daemon, port, ca_file)


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    mutual: Served, ca: trustme.CA, tmp_path: Path
) -> None:
    with pytest.raises(ClientError) as caught:
        await mutual.get("/api/v1/sites", mutual.context())
    assert caught.value.code == EXIT_UNREACHABLE
    assert "client certificate" in str(caught.value)
    # A certificate from another CA is refused too.
    stranger_cert, stranger_key = write_leaf(trustme.CA(), tmp_path, "stranger")
    context = tls_context(mutual.base, str(mutual.ca_file), str(stranger_cert), str(stranger_key))
    assert context is not None
    with pytest.raises(ClientError, match="client certificate"):
        await mutual.get("/api/v1/sites", context)


async def test_a_client_certificate_subject_is_the_who(
    mutual: Served, ca: trustme.CA, tmp_path: Path
) -> None:
    leaf = ca.issue_cert(
        common_name="ops", organization_name="trafficd-test", organization_unit_name="sre"
    )
    cert, key = tmp_path / "ops-client.pem", tmp_path / "ops-client.key"
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    context = tls_context(mutual.base, str(mutual.ca_file), str(cert), str(key))
    assert context is not None
    # No token: the certificate's subject, mapped by api_tokens, is the admin "ops".
    result = await asyncio.to_thread(
        call, mutual.base, "", "POST", "/api/v1/pause", {"reason": "tls"}, context=context
    )
    assert isinstance(result, dict) and result["paused"] is True
    assert (
        mutual.daemon.runtime.rounds.pause is not None
        and mutual.daemon.runtime.rounds.pause.who == "ops"
    )
    # A token, when given, decides: a bad one fails even with a good certificate.
    with pytest.raises(ClientError) as caught:
        await mutual.get("/api/v1/sites", context, token="wrong-token")
    assert caught.value.code == 5
    # A certificate of the right CA whose subject no token names: 401, counted.
    other_cert, other_key = write_leaf(ca, tmp_path, "nobody")
    context = tls_context(mutual.base, str(mutual.ca_file), str(other_cert), str(other_key))
    assert context is not None
    with pytest.raises(ClientError, match="HTTP 401"):
        await mutual.get("/api/v1/sites", context, token="")
    failures = mutual.daemon.registry.get_sample_value(
        "trafficd_api_auth_failures_total", {"route": "/api/v1/sites"}
    )
    assert failures == 2


def test_sighup_in_trafficd_run_rereads_the_certificate(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    cert, key = write_leaf(ca, tmp_path, "server", "127.0.0.1")
    port = free_port()
    path = write_config(
        tmp_path,
        f"listen: 127.0.0.1:{port}\ntls_cert_file: {cert.name}\ntls_key_file: {key.name}\n",
    )
    with running_trafficd(path, port) as proc:
        served = Served(None, port, ca_file)  # type: ignore[arg-type]

        def reload_metric() -> str:
            body = fetch(served.base + "/metrics", served.context()).decode()
            return next(x for x in body.splitlines() if x.startswith("trafficd_config_last_reload"))

        def after_sighup(expect: str) -> None:
            proc.send_signal(signal.SIGHUP)
            end = time.monotonic() + 10
            while reload_metric() != f"trafficd_config_last_reload_successful {expect}":
                assert time.monotonic() < end, reload_metric()
                time.sleep(0.05)

        first = peer_serial(served)
        with socket.create_connection(("127.0.0.1", port)) as raw:  # stays open throughout
            kept = served.context().wrap_socket(raw, server_hostname="127.0.0.1")
            cert.write_text("-----BEGIN CERTIFICATE-----\nnot one\n")
            after_sighup("0.0")
            assert peer_serial(served) == first
            write_leaf(ca, tmp_path, "server", "127.0.0.1")
            after_sighup("1.0")
            assert peer_serial(served) != first
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert kept.recv(100).startswith(b"HTTP/1.1 ")  # the old connection still answers
            kept.close()
    log = (tmp_path / "trafficd.log").read_text()
    assert "reload rejected" in log and "tls_cert_file" in log


async def test_reload_takes_a_new_client_ca(
    mutual: Served, ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    new_ca = trustme.CA()
    old_cert, old_key = write_leaf(ca, tmp_path, "old-client")
    new_cert, new_key = write_leaf(new_ca, tmp_path, "new-client")

    server_ca = tmp_path / "server-ca.pem"  # what the client verifies the daemon with
    ca.cert_pem.write_to_path(server_ca)

    def with_client(cert: Path, key: Path) -> ssl.SSLContext:
        context = tls_context(mutual.base, str(server_ca), str(cert), str(key))
        assert context is not None
        return context

    assert isinstance(await mutual.get("/api/v1/sites", with_client(old_cert, old_key)), dict)
    # The server's own certificate stays from the first CA; only the client CA changes.
    new_ca.cert_pem.write_to_path(ca_file)
    assert await mutual.daemon.reload() is True
    assert isinstance(await mutual.get("/api/v1/sites", with_client(new_cert, new_key)), dict)
    with pytest.raises(ClientError, match="client certificate"):
        await mutual.get("/api/v1/sites", with_client(old_cert, old_key))


def _get_resuming(
    port: int, context: ssl.SSLContext, session: ssl.SSLSession | None
) -> tuple[bytes, ssl.SSLSession | None, bool]:
    """GET /api/v1/sites without a token (the certificate is the who), offering
    `session` for resumption: the status line, the session, whether it was resumed."""
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as tls,
    ):
        tls.sendall(b"GET /api/v1/sites HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
        return answer.split(b"\r\n")[0], tls.session, bool(tls.session_reused)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_a_replaced_client_ca_admits_no_resumed_session(
    mutual: Served, ca: trustme.CA, ca_file: Path, tmp_path: Path, version: ssl.TLSVersion
) -> None:
    """A client CA replaced on SIGHUP (its certificates no longer trusted) lets no client
    back in by resuming a TLS session from before: a session carries its certificate,
    verified by the CA of then."""
    leaf = ca.issue_cert(
        common_name="ops", organization_name="trafficd-test", organization_unit_name="sre"
    )
    cert, key = tmp_path / "ops-client.pem", tmp_path / "ops-client.key"
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    server_ca = tmp_path / "server-ca.pem"
    ca.cert_pem.write_to_path(server_ca)
    context = tls_context(mutual.base, str(server_ca), str(cert), str(key))
    assert context is not None
    context.maximum_version = version
    line, session, _ = await asyncio.to_thread(_get_resuming, mutual.port, context, None)
    line, session, resumed = await asyncio.to_thread(_get_resuming, mutual.port, context, session)
    assert (line, resumed) == (b"HTTP/1.1 200 OK", True)  # resumption itself is kept
    trustme.CA().cert_pem.write_to_path(ca_file)
    assert await mutual.daemon.reload() is True
    try:
        line, _, resumed = await asyncio.to_thread(_get_resuming, mutual.port, context, session)
    except (ssl.SSLError, ConnectionError):
        return  # refused at the handshake (TLS 1.2)
    # With TLS 1.3 the refusal of a client certificate comes after the client's
    # handshake: the connection is closed before any answer.
    assert (line, resumed) == (b"", False)
