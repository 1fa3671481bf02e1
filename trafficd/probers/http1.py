"""A lean HTTP/1.1 GET for the health probes: kept-alive connections, httptools' parser.

Beside `quay.py`, which it serves. Watching hundreds of sites means hundreds
of tiny GETs a second, and aiohttp's general client path costs about 0.49 ms
of CPU per probe where this costs about 0.22 ms (bench/probes.py, 200 sites,
uvloop). A health probe needs far less than a general client: a request known
in advance, a bounded body, no redirects, cookies, proxies or decompression.
So the request bytes are built once per target, responses are parsed by
httptools (MagicStack's C parser, the one uvicorn uses), and connections are
asyncio protocols kept per target and reused while the server allows. TLS is
asyncio's own, verified against the global hostname (SNI) unless the
configuration opts out.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import httptools

# Bytes of a response's status line and headers: Quay's are under 1 KiB. The head is
# bounded as the body is, or a site could stream headers (Set-Cookies) without end.
HEAD_LIMIT = 64 * 1024


class TooLargeError(Exception):
    """The body passed the limit."""


class ResetError(Exception):
    """The server closed the connection before the response was complete."""


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1."""


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]  # names lowercased; a repeated header keeps its last value
    body: bytes
    set_cookies: list[bytes] = field(default_factory=list)  # every Set-Cookie, in order


@dataclass
class _Reply:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    set_cookies: list[bytes] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    too_large: bool = False
    head: int = 0  # bytes received while the head was incomplete
    head_done: bool = False
    until_close: bool = False  # no length given: the body ends where the server closes
    keep_alive: bool = False  # read while parsing: llhttp forgets it once the message ends


class _Connection(asyncio.Protocol):
    """One kept-alive connection; one request at a time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.reply = _Reply()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
            if not self.reply.head_done:
                self.reply.head += len(data)
                if self.reply.head > HEAD_LIMIT:
                    self._fail(TooLargeError())
        except httptools.HttpParserUpgrade:
            self._fail(ProtocolError("unexpected protocol upgrade"))
        except httptools.HttpParserCallbackError:
            self._fail(TooLargeError() if self.reply.too_large else ProtocolError("bad body"))
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(str(exc) or "not an HTTP/1.1 response"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if exc is None and self.reply.until_close:  # httptools cannot be told of EOF
                self.waiter.set_result(None)
            else:
                self.waiter.set_exception(ResetError("the server closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self.reply.headers[name] = value
        if name == b"set-cookie":  # the one header that repeats and cannot be joined
            self.reply.set_cookies.append(value)

    def on_headers_complete(self) -> None:
        self.reply.head_done = True
        self.reply.keep_alive = self.parser.should_keep_alive()
        length = self.reply.headers.get(b"content-length")
        status = self.parser.get_status_code()
        # RFC 9112 6.3: neither a length nor chunked coding, the body is read until the close.
        self.reply.until_close = (
            length is None
            and b"transfer-encoding" not in self.reply.headers
            and status >= 200
            and status not in (204, 304)
        )
        if length is not None and length.isdigit() and int(length) > self.limit:
            self.reply.too_large = True
            raise TooLargeError()

    def on_body(self, chunk: bytes) -> None:
        self.reply.body += chunk
        if len(self.reply.body) > self.limit:
            self.reply.too_large = True
            raise TooLargeError()

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def get(self, request: bytes, on_sent: Callable[[], None] | None = None) -> Response:
        assert self.transport is not None
        self.reply = _Reply()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        if on_sent is not None:
            on_sent()
        try:
            await self.waiter
        finally:
            self.waiter = None
        status = self.parser.get_status_code()
        if not self.reply.keep_alive:
            self.close()
        return Response(status, self.reply.headers, bytes(self.reply.body), self.reply.set_cookies)


class Endpoint:
    """One target (address, port, TLS settings) and its idle connections."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        server_hostname: str | None,
        limit: int,
        keep: int = 2,
    ) -> None:
        self.host, self.port = host, port
        self.ssl, self.server_hostname = ssl_context, server_hostname
        self.limit, self.keep = limit, keep
        self._idle: deque[_Connection] = deque()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(
            lambda: _Connection(self.limit),
            self.host,
            self.port,
            ssl=self.ssl,
            server_hostname=self.server_hostname if self.ssl else None,
        )
        return conn

    async def get(self, request: bytes, on_sent: Callable[[], None] | None = None) -> Response:
        """Send `request` (a whole GET, built once by the caller) and read the answer;
        `on_sent` is called once the request is written (the server is then working on it)."""
        while self._idle:
            conn = self._idle.popleft()
            if conn.closed:
                continue
            try:
                response = await conn.get(request, on_sent)
            except ResetError:
                continue  # closed while idle (the server's keep-alive timeout): a new one
            except BaseException:
                conn.close()
                raise
            self._release(conn)
            return response
        conn = await self._connect()
        try:
            response = await conn.get(request, on_sent)
        except BaseException:
            conn.close()
            raise
        self._release(conn)
        return response

    def _release(self, conn: _Connection) -> None:
        if conn.closed or len(self._idle) >= self.keep:
            conn.close()
        else:
            self._idle.append(conn)

    def close(self) -> None:
        while self._idle:
            self._idle.popleft().close()
