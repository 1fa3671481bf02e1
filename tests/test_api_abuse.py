"""The API under abuse: bounded connections, headers and bodies; a token flood; slowloris.

The bounds are checked in process against a daemon object's listener. The flood
and slowloris run against `trafficd run` in its own process, from attacker
processes (this file run as a script: `python -m tests.test_api_abuse flood|slow`)
on their own loopback addresses (127.0.0.2, 127.0.0.3), while this process
measures `/sites/{site}/verdict` from 127.0.0.1: the attackers' CPU is not
charged to the latency measured, and one peer's abuse is seen apart from
another's. Counts and times are bounded: 10^4 bad tokens, 200 slow connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.peers import free_port, stop
from tests.test_api import ADMIN, READ, write_config
from tests.test_api_tls import running_trafficd, serve_daemon, write_leaf
from trafficd.daemon import Daemon

REPO = Path(__file__).resolve().parents[1]
FLOOD, FLOOD_CONNECTIONS, SLOW = 10_000, 64, 200
HEADER_TIMEOUT, MAX_DELAY, BURST = 2.0, 0.1, 20


# --- the attackers (run as `python -m tests.test_api_abuse ...`) ---------------------------


async def _answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(
        (int(x.split(":")[1]) for x in lines if x.lower().startswith("content-length:")), 0
    )
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def flood(port: int, count: int, connections: int) -> dict[str, Any]:
    """`count` requests with bad tokens over `connections` keep-alive connections."""
    todo = iter(range(count))
    statuses: Counter[int] = Counter()
    latencies: list[float] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.2", 0)
        )
        for i in todo:
            start = time.perf_counter()
            writer.write(
                f"GET /api/v1/sites HTTP/1.1\r\nHost: t\r\n"
                f"Authorization: Bearer bad-token-{i:05d}\r\n\r\n".encode()
            )
            statuses[await _answer(reader)] += 1
            latencies.append(time.perf_counter() - start)
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return {
        "statuses": dict(statuses),
        "latencies": latencies,
        "elapsed": time.perf_counter() - start,
    }


async def slow(port: int, count: int) -> dict[str, Any]:
    """`count` connections sending a request head a byte every 200 ms, never finishing;
    how long each lasts until the daemon closes it."""

    async def one() -> float:
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=("127.0.0.3", 0)
        )
        writer.write(b"GET /api/v1/sites HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        try:
            while time.perf_counter() - start < 30:
                writer.write(b"a")
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(1024), 0.2) == b"":
                        break  # closed by the daemon
                except TimeoutError:
                    continue
                break  # an answer (400, 408) ends it too
        except ConnectionError:
            pass
        writer.close()
        return time.perf_counter() - start

    lasted = await asyncio.gather(*(one() for _ in range(count)))
    return {"lasted": list(lasted)}


class Attack:
    """An attacker process; its report goes to a file (a pipe would fill and stall it)."""

    def __init__(self, kind: str, port: int, tmp: Path) -> None:
        self.out = tmp / f"{kind}.json"
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.test_api_abuse", kind, str(port)],
                cwd=REPO,
                stdout=out,
                start_new_session=True,
            )

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            self.proc.wait(timeout)
        finally:
            stop(self.proc)
        assert self.proc.returncode == 0, self.out.read_text()
        answer: dict[str, Any] = json.loads(self.out.read_text())
        return answer


# --- the daemon in its own process ----------------------------------------------------------


def limits(**extra: object) -> str:
    values = {
        "header_timeout": f"{HEADER_TIMEOUT:g}s",
        "auth_failure_burst": BURST,
        "auth_failure_rate": 1.0,
        "auth_failure_max_delay": f"{MAX_DELAY * 1000:g}ms",
        "max_connections_per_peer": 256,
        **extra,
    }
    return "api_limits: {" + ", ".join(f"{k}: {v}" for k, v in values.items()) + "}\n"


@pytest.fixture
def daemon_port(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    path = write_config(tmp_path, f"listen: 127.0.0.1:{port}\n" + limits())
    with running_trafficd(path, port):
        yield port
    log_text = (tmp_path / "trafficd.log").read_text()
    # Failures are logged with route and peer, never with what was sent.
    assert "authentication failed: GET /api/v1/sites from 127.0.0.2" in log_text
    assert "bad-token-" not in log_text


class Sampler:
    """HTTP from one source address, timing each answer. Kept alive only when asked: the
    daemon closes a connection idle for the header timeout, as it should."""

    def __init__(self, port: int, source: str = "127.0.0.1", *, keep_alive: bool = False) -> None:
        self.keep_alive = keep_alive
        self.conn = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=10, source_address=(source, 0)
        )

    def get(self, path: str, token: str | None = None) -> tuple[int, float]:
        status, _, seconds = self.fetch(path, token)
        return status, seconds

    def fetch(self, path: str, token: str | None = None) -> tuple[int, str, float]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        start = time.perf_counter()
        self.conn.request("GET", path, headers=headers)
        resp = self.conn.getresponse()
        body = resp.read().decode()
        seconds = time.perf_counter() - start
        if not self.keep_alive:
            self.conn.close()  # the next request connects anew
        return resp.status, body, seconds

    def close(self) -> None:
        self.conn.close()


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def test_flood_and_slowloris_leave_verdicts_fast_and_good_tokens_working(
    daemon_port: int, tmp_path: Path
) -> None:
    port = daemon_port
    # us's verdict is 200 once decided (before the first decision it is 503 unknown).
    ready, end = Sampler(port), time.monotonic() + 20
    while ready.get("/readyz")[0] != 200:
        assert time.monotonic() < end, "trafficd not ready within 20 s"
        time.sleep(0.05)
    ready.close()
    verdicts = Sampler(port, keep_alive=True)  # back to back: never idle
    others, from_the_attacker = Sampler(port), Sampler(port, "127.0.0.2")
    try:
        check_under_abuse(port, tmp_path, verdicts, others, from_the_attacker)
    finally:
        for sampler in (verdicts, others, from_the_attacker):
            sampler.close()


def measure(
    floods: Attack, verdicts: Sampler, others: Sampler, from_the_attacker: Sampler
) -> tuple[list[float], list[float], list[tuple[int, float]], list[tuple[int, float]]]:
    """Verdicts back to back while the flood lasts; now and then a scrape, a good token
    from the attacker's own address and from another, and another peer's bad token."""
    latencies: list[float] = []
    scrapes: list[float] = []
    good: list[tuple[int, float]] = []
    foreign_failures: list[tuple[int, float]] = []
    start = time.monotonic()
    while floods.proc.poll() is None and time.monotonic() - start < 50:
        status, seconds = verdicts.get("/sites/us/verdict")
        assert status == 200
        latencies.append(seconds)
        if len(latencies) % 50 == 0:
            status, seconds = others.get("/metrics")
            assert status == 200
            scrapes.append(seconds)
        if len(latencies) % 100 == 0:
            good.append(from_the_attacker.get("/api/v1/sites", READ))
            good.append(others.get("/api/v1/sites", ADMIN))
            if len(foreign_failures) < 5:
                foreign_failures.append(others.get("/api/v1/sites", "not-a-token"))
        time.sleep(0.005)
    return latencies, scrapes, good, foreign_failures


def check_under_abuse(
    port: int, tmp_path: Path, verdicts: Sampler, others: Sampler, from_the_attacker: Sampler
) -> None:
    floods = Attack("flood", port, tmp_path)
    slows = Attack("slow", port, tmp_path)
    try:
        latencies, scrapes, good, foreign_failures = measure(
            floods, verdicts, others, from_the_attacker
        )
    finally:
        stop(floods.proc)
        stop(slows.proc)
    flooded = floods.result(10)
    slowed = slows.result(10)

    # 10^4 bad tokens, every one refused; after the burst each answer waits.
    assert flooded["statuses"] == {"401": FLOOD}
    later = sorted(flooded["latencies"][BURST * 2 :])
    assert later[len(later) // 2] >= MAX_DELAY * 0.9
    # 200 slow request heads: each closed by the daemon after the header timeout.
    assert len(slowed["lasted"]) == SLOW
    assert min(slowed["lasted"]) >= HEADER_TIMEOUT * 0.9
    assert max(slowed["lasted"]) <= HEADER_TIMEOUT + 3
    # Meanwhile: verdicts fast, good tokens answered, another peer's failures not slowed.
    assert len(latencies) >= 200
    assert p99(latencies) < 0.050, f"verdict p99 {p99(latencies) * 1000:.1f} ms"
    assert len(scrapes) >= 4 and p99(scrapes) < 0.100, f"/metrics {max(scrapes) * 1000:.1f} ms"
    assert good and all(status == 200 for status, _ in good)
    assert [s for s, _ in foreign_failures] == [401] * 5
    assert all(seconds < MAX_DELAY * 0.9 for _, seconds in foreign_failures)
    status, text, _ = others.fetch("/metrics")
    assert status == 200
    expected = FLOOD + len(foreign_failures)
    assert f'trafficd_api_auth_failures_total{{route="/api/v1/sites"}} {expected:.1f}' in text
    print(
        f"flood {FLOOD} in {flooded['elapsed']:.1f}s; verdict p99 {p99(latencies) * 1000:.1f} ms "
        f"over {len(latencies)}; /metrics p99 {p99(scrapes) * 1000:.1f} ms; slow heads "
        f"closed after {min(slowed['lasted']):.2f}-{max(slowed['lasted']):.2f}s"
    )


# --- bounds, in process ------------------------------------------------------------------------


@pytest.fixture
async def bounded(tmp_path: Path) -> AsyncIterator[tuple[Daemon, int]]:
    port = free_port()
    extra = f"listen: 127.0.0.1:{port}\n" + limits(
        header_timeout="1s", max_connections=5, max_connections_per_peer=3
    )
    async for daemon in serve_daemon(write_config(tmp_path, extra)):
        yield daemon, port


async def _closed_at_once(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 0.5) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


async def test_open_connections_are_bounded_in_all_and_per_peer(
    bounded: tuple[Daemon, int],
) -> None:
    _, port = bounded
    opened = []
    for source in ("127.0.0.2",) * 3 + ("127.0.0.3",) * 2:
        opened.append(await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)))
    await asyncio.sleep(0.1)
    assert not any([await _closed_at_once(r) for r, _ in opened[:1]])
    # A fourth from 127.0.0.2 is over its peer's bound; one from 127.0.0.4 over the total.
    for source in ("127.0.0.2", "127.0.0.4"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        assert await _closed_at_once(reader), source
        writer.close()
    for _, writer in opened:
        writer.close()
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.4", 0))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert await _answer(reader) == 503  # admitted once the others closed (loops not started)
    writer.close()


@pytest.fixture
async def bounded_tls(tmp_path: Path) -> AsyncIterator[tuple[int, ssl.SSLContext]]:
    ca = trustme.CA()
    cert, key = write_leaf(ca, tmp_path, "server", "127.0.0.1")
    port = free_port()
    extra = (
        f"listen: 127.0.0.1:{port}\ntls_cert_file: {cert.name}\ntls_key_file: {key.name}\n"
        + limits(header_timeout="2s", max_connections=5, max_connections_per_peer=3)
    )
    client = ssl.create_default_context()
    ca.configure_trust(client)
    async for _ in serve_daemon(write_config(tmp_path, extra)):
        yield port, client


async def test_connections_in_their_tls_handshake_count_against_the_bounds(
    bounded_tls: tuple[int, ssl.SSLContext],
) -> None:
    """A connection that never finishes its handshake holds a socket as long as one that
    did: the bounds count it from its accept, not from its handshake's end."""
    port, client = bounded_tls
    opened = []
    for source in ("127.0.0.2",) * 3 + ("127.0.0.3",) * 2:  # silent: no ClientHello
        opened.append(await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)))
    await asyncio.sleep(0.1)
    assert not await _closed_at_once(opened[0][0])
    for source in ("127.0.0.2", "127.0.0.4"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        assert await _closed_at_once(reader), source
        writer.close()
    for _, writer in opened:
        writer.close()
    await asyncio.sleep(0.2)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client, local_addr=("127.0.0.4", 0)
    )
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert await _answer(reader) == 503  # admitted once the others closed (loops not started)
    writer.close()


async def test_a_tls_handshake_too_slow_is_closed(
    bounded_tls: tuple[int, ssl.SSLContext],
) -> None:
    """Silent, or a ClientHello's first bytes then nothing: closed after header_timeout."""
    port, _ = bounded_tls
    silent = await asyncio.open_connection("127.0.0.1", port)
    partial = await asyncio.open_connection("127.0.0.1", port)
    partial[1].write(b"\x16\x03\x01\x02\x00\x01\x00")  # a record header, a hello begun
    start = time.monotonic()
    for reader, writer in (silent, partial):
        with contextlib.suppress(ConnectionResetError):  # an abort reads as a reset
            assert await asyncio.wait_for(reader.read(1), 5) == b""
        writer.close()
    assert 1.5 <= time.monotonic() - start < 4


async def test_header_sizes_and_slow_bodies_are_bounded(bounded: tuple[Daemon, int]) -> None:
    daemon, port = bounded

    async def send(raw: bytes) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        try:
            return await _answer(reader)
        finally:
            writer.close()

    assert await send(
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    ) in (
        400,
        431,
    )
    many = b"".join(b"X-%d: a\r\n" % i for i in range(70))
    assert await send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n") in (400, 431)
    # A body announced and sent too slowly: 408 after the header timeout, nothing done.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /api/v1/pause HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
        + ADMIN.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{"
    )
    start = time.monotonic()
    assert await asyncio.wait_for(_answer(reader), 5) == 408
    assert 0.9 <= time.monotonic() - start < 3
    assert daemon.runtime.rounds.pause is None
    writer.close()


async def test_a_malformed_token_line_is_logged_without_it(
    bounded: tuple[Daemon, int], caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp's parser quotes the offending header line in its exception; the log
    keeps the exception's kind, never the line (it carries the token)."""
    _, port = bounded
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /api/v1/sites HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
        + ADMIN.encode()
        + b"\x01\r\n\r\n"
    )
    assert await _answer(reader) == 400
    writer.close()
    logged = caplog.text + "".join(
        logging.Formatter().formatException(r.exc_info) for r in caplog.records if r.exc_info
    )
    assert "bad request from 127.0.0.1" in logged
    assert ADMIN not in logged and "Bearer" not in logged


async def test_a_token_that_is_not_utf8_is_an_authentication_failure(
    bounded: tuple[Daemon, int],
) -> None:
    daemon, port = bounded

    def failures() -> float | None:
        return daemon.registry.get_sample_value(
            "trafficd_api_auth_failures_total", {"route": "/api/v1/sites"}
        )

    assert failures() == 0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/v1/sites HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer a\xff\r\n\r\n")
    assert await _answer(reader) == 401
    writer.close()
    assert failures() == 1


if __name__ == "__main__":
    kind, port_ = sys.argv[1], int(sys.argv[2])
    if kind == "flood":
        out = asyncio.run(flood(port_, FLOOD, FLOOD_CONNECTIONS))
    else:
        out = asyncio.run(slow(port_, SLOW))
    sys.stdout.write(json.dumps(out))
    sys.stdout.flush()
    os._exit(0)
