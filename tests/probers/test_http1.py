"""The health probes' HTTP/1.1 client against real servers: reuse, closes, framing, limits.

An aiohttp web server (keep-alive, chunked bodies) and raw asyncio servers that
answer byte for byte what a misbehaving peer would: `Connection: close`,
HTTP/1.0, a connection closed while idle, a body past the limit announced or
streamed, garbage instead of HTTP. Under uvloop too, which `trafficd run` uses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvloop
from aiohttp import web

from tests.peers import free_port
from trafficd.probers import http1

REQUEST = b"GET /health/endtoend HTTP/1.1\r\nHost: quay.example.com\r\n\r\n"


def endpoint(port: int, limit: int = 1024) -> http1.Endpoint:
    return http1.Endpoint("127.0.0.1", port, ssl_context=None, server_hostname=None, limit=limit)


@pytest.fixture
async def app_server() -> AsyncIterator[tuple[int, list[int]]]:
    """An aiohttp server; the list holds the client port of every request (its connection)."""
    peers: list[int] = []

    async def health(request: web.Request) -> web.StreamResponse:
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peers.append(peername[1] if peername else 0)
        if request.query.get("chunked"):
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(int(request.query["chunked"])):
                await resp.write(b"x" * 100)
            await resp.write_eof()
            return resp
        return web.json_response({"data": {"services": {"storage": True}}, "status_code": 200})

    app = web.Application()
    app.router.add_get("/health/endtoend", health)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port, peers
    await runner.cleanup()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """An asyncio server answering with `handler`; closing it closes every connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.port = free_port()
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await self.handler(reader, writer)

    async def start(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@contextlib.asynccontextmanager
async def raw_endpoint(answer: Handler) -> AsyncIterator[http1.Endpoint]:
    """A raw server answering with `answer`, and an endpoint to it; both closed after."""
    server = await RawServer(answer).start()
    ep = endpoint(server.port)
    try:
        yield ep
    finally:
        ep.close()
        await server.close()


async def test_connections_are_kept_and_reused(app_server: tuple[int, list[int]]) -> None:
    port, peers = app_server
    ep = endpoint(port)
    try:
        for _ in range(5):
            answer = await ep.get(REQUEST)
            assert answer.status == 200 and b'"storage": true' in answer.body
        assert len(set(peers)) == 1  # one connection for five probes
    finally:
        ep.close()


async def test_chunked_bodies_and_the_limit_while_streaming(
    app_server: tuple[int, list[int]],
) -> None:
    port, _ = app_server
    ep = endpoint(port, limit=1000)
    try:
        ok = await ep.get(b"GET /health/endtoend?chunked=5 HTTP/1.1\r\nHost: q\r\n\r\n")
        assert ok.body == b"x" * 500
        with pytest.raises(http1.TooLargeError):
            await ep.get(b"GET /health/endtoend?chunked=20 HTTP/1.1\r\nHost: q\r\n\r\n")
    finally:
        ep.close()


async def test_an_announced_body_past_the_limit_is_refused_before_it_is_read() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 10)
        await writer.drain()
        await asyncio.sleep(1)
        writer.close()

    async with raw_endpoint(answer) as ep:
        with pytest.raises(http1.TooLargeError):
            await asyncio.wait_for(ep.get(REQUEST), 0.5)


@pytest.mark.parametrize(
    "line",
    [b"X-Pad-%d: " + b"a" * 1000 + b"\r\n", b"Set-Cookie: c%d=" + b"a" * 500 + b"\r\n"],
    ids=["many-headers", "many-cookies"],
)
async def test_a_head_past_its_bound_is_refused_while_it_streams(line: bytes) -> None:
    """The head has a bound as the body has (`HEAD_LIMIT`): before, 20 MB of headers (or
    Set-Cookies) ahead of a small body were read, kept and answered as a success."""
    sent = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(20_000):
            writer.write(line % i)
            sent += 1
            await writer.drain()
        writer.write(b"Content-Length: 2\r\n\r\nok")
        await writer.drain()

    async with raw_endpoint(answer) as ep:
        with pytest.raises(http1.TooLargeError):
            await asyncio.wait_for(ep.get(REQUEST), 5)
    assert sent < 20_000  # refused while it streamed, not once it was whole


async def test_a_head_within_its_bound_is_read() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        pad = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 100) for i in range(100))
        writer.write(b"HTTP/1.1 200 OK\r\n" + pad + b"Content-Length: 2\r\n\r\nok")
        await writer.drain()

    async with raw_endpoint(answer) as ep:
        assert (await asyncio.wait_for(ep.get(REQUEST), 2)).body == b"ok"


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_a_server_that_does_not_keep_alive_gets_a_new_connection(reply: bytes) -> None:
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    async with raw_endpoint(answer) as ep:
        for _ in range(3):
            assert (await ep.get(REQUEST)).body == b"ok"
        assert connections == 3


@pytest.mark.parametrize(
    "head",
    [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\n"],
    ids=["http-1.1", "http-1.0"],
)
async def test_a_body_without_a_length_ends_where_the_server_closes(head: bytes) -> None:
    """RFC 9112 6.3: neither Content-Length nor chunked, the body is all until the close.
    Before, such an answer was a reset: a healthy site read as a failing one."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head + b"o")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"k")
        writer.close()

    async with raw_endpoint(answer) as ep:
        for _ in range(2):
            answer_ = await asyncio.wait_for(ep.get(REQUEST), 2)
            assert (answer_.status, answer_.body) == (200, b"ok")


async def test_a_connection_closed_while_idle_is_replaced_not_reported() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()  # a keep-alive timeout shorter than the probe interval

    async with raw_endpoint(answer) as ep:
        assert (await ep.get(REQUEST)).body == b"ok"
        await asyncio.sleep(0.2)
        assert (await ep.get(REQUEST)).body == b"ok"


async def test_garbage_and_an_early_close_are_errors() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhalf")
        await writer.drain()
        writer.close()

    for handler, error in ((garbage, http1.ProtocolError), (early, http1.ResetError)):
        async with raw_endpoint(handler) as ep:
            with pytest.raises(error):
                await asyncio.wait_for(ep.get(REQUEST), 2)


def test_under_uvloop_as_trafficd_run_uses_it() -> None:
    async def main() -> list[int]:
        peers: list[int] = []

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peers.append(writer.get_extra_info("peername")[1])
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        async with raw_endpoint(answer) as ep:
            for _ in range(3):
                assert (await ep.get(REQUEST)).body == b"ok"
            await asyncio.sleep(0.05)  # the server side sees the close
        return peers

    assert len(uvloop.run(main())) == 1  # kept alive under uvloop's transports too
