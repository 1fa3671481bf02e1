"""The HTTP API (aiohttp): docs/design.md's routes, bearer tokens, TLS, JSON errors, abuse bounds.

The daemon's face (pipeline: store and engine state -> here -> operators,
Prometheus, external health checkers). `build_apps` returns the full app for
`listen` and, when `metrics_listen` is set, a public app that serves only
`/metrics`, `/healthz`, `/readyz` and the verdicts; `serve` puts one on an
address. Tokens are compared in constant time (hmac.compare_digest) against
every configured token, so the time taken does not tell which one nearly
matched; the token's name is the audit log's "who". With mutual TLS a request
without a token may authenticate by its client certificate's subject.

Under abuse: failed authentications are counted
(`trafficd_api_auth_failures_total{route}`) and logged without what was sent,
and a peer that keeps failing gets its failures answered ever later (a token
bucket per peer address; its good tokens and every other peer are answered at
once). Each listener bounds its open connections (in all and per peer,
counted from the accept, so those still in their TLS handshake too), the
TLS handshake's time, the time to send a request's head (aiohttp's keep-alive timer
runs from the connection's start) and its body, the body's size and the
header sizes. Every error is `{"error": str}`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import ssl
import time
from asyncio.sslproto import SSLProtocol
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trafficd.config.loader import load_key_pair
from trafficd.config.model import APILimits, Config
from trafficd.config.types import parse_duration, split_host_port
from trafficd.metrics import Metrics
from trafficd.runtime.commands import (
    SITE_ACTIONS,
    Command,
    Commands,
    RefusedError,
    UnavailableError,
    UnknownSiteError,
)
from trafficd.runtime.views import Views

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
# Request line and each header at most 8 KiB, at most 64 headers: far above what the
# client commands, Prometheus or a health checker send.
MAX_LINE, MAX_FIELD, MAX_HEADERS = 8190, 8190, 64
# Peers whose failures are remembered (a bounded memory under a distributed attack).
MAX_PEERS = 10_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _BadRequestFilter(logging.Filter):
    """aiohttp logs a request its parser refuses with the exception, whose message
    quotes the offending header line: an Authorization line would put its token in the
    log. Such a record keeps only the exception's kind (a client's error, a warning)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "bad request from %s: %s (%s)"
            record.args = (remote, type(exc).__name__, exc.code)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


# The listeners' own log (aiohttp's request handler logs here), filtered as above.
http_log = logging.getLogger("trafficd.api.http")
http_log.addFilter(_BadRequestFilter())


@dataclass(frozen=True)
class Token:
    name: str
    role: str  # "read" | "admin"
    secret: str | None
    subject: str | None = None  # a client certificate subject (RFC 4514) that is this token


def load_tokens(config: Config, config_path: Path) -> list[Token]:
    """`api_token_file` (an admin token) and `api_tokens`, their secrets resolved."""
    tokens = []
    if config.api_token_file:
        path = Path(config.api_token_file)
        if not path.is_absolute():
            path = config_path.parent / path
        secret = path.read_text().strip()
        if secret:
            tokens.append(Token("admin", "admin", secret))
    for t in config.api_tokens:
        value = t.token.get_secret_value() if t.token is not None else None
        tokens.append(Token(t.name, t.role, value, t.subject))
    return tokens


class Controller(Protocol):
    """What the API serves: the runtime's views and commands (runtime/wiring.py)."""

    @property
    def metrics(self) -> Metrics: ...

    @property
    def alive(self) -> bool: ...

    @property
    def ready(self) -> bool: ...

    @property
    def views(self) -> Views: ...

    @property
    def commands(self) -> Commands: ...


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return error(413, f"request body larger than {MAX_BODY} bytes")
    except web.HTTPNotFound:
        return error(404, f"no route {request.path}")
    except web.HTTPMethodNotAllowed:
        return error(405, f"{request.method} not allowed on {request.path}")


def authenticate(tokens: Sequence[Token], header: str | None) -> Token | None:
    if not header or not header.startswith("Bearer "):
        return None
    # aiohttp decodes header bytes that are not UTF-8 as surrogates: they are only a
    # token that matches none (401, counted), not an error.
    given = header[len("Bearer ") :].strip().encode("utf-8", "surrogateescape")
    if not given:  # no token, whatever the configuration holds (check-config refuses "")
        return None
    found = None
    for token in tokens:  # no early exit: every token is compared
        if token.secret is not None and hmac.compare_digest(given, token.secret.encode()):
            found = token
    return found


def certificate_subject(request: web.Request) -> str | None:
    """The verified client certificate's subject, RFC 4514 (`CN=ops,O=Example`), as
    `openssl x509 -subject -nameopt RFC2253` prints it."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    from cryptography import x509  # only with mutual TLS

    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


class FailureBuckets:
    """A token bucket per peer address, drained by failed authentications only: a peer
    has `burst` failures answered at once, then regains `rate` a second; a failure
    beyond them is answered when its token would be there, at most `max_delay` later."""

    def __init__(
        self, burst: int, rate: float, max_delay: float, clock: Callable[[], float]
    ) -> None:
        self.burst, self.rate, self.max_delay, self.clock = burst, rate, max_delay, clock
        self._peers: dict[str, tuple[float, float]] = {}  # peer -> (tokens, at)

    def _tokens(self, peer: str, now: float) -> float:
        tokens, at = self._peers.get(peer, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.rate)

    def fail(self, peer: str) -> float:
        """Takes one failure's token; returns how long its answer waits."""
        now = self.clock()
        # The debt is bounded: a peer that keeps failing waits max_delay per answer.
        tokens = max(self._tokens(peer, now) - 1, -self.rate * self.max_delay)
        # Least recently failing first: beyond MAX_PEERS the oldest is forgotten.
        self._peers.pop(peer, None)
        self._peers[peer] = (tokens, now)
        if len(self._peers) > MAX_PEERS:
            del self._peers[next(iter(self._peers))]
        return max(0.0, -tokens / self.rate)


def build_apps(
    ctl: Controller,
    tokens: Callable[[], Sequence[Token]],
    *,
    public_separate: bool,
    limits: APILimits | None = None,
) -> tuple[web.Application, web.Application | None]:
    """`tokens`: the tokens in force, asked at each request (a reload may change them)."""
    limits = limits if limits is not None else APILimits()
    buckets = FailureBuckets(
        limits.auth_failure_burst,
        limits.auth_failure_rate,
        limits.auth_failure_max_delay,
        time.monotonic,
    )

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(ctl.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        if not ctl.alive:
            return error(503, "loops not running")
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        if not ctl.ready:
            return error(503, "not ready: no probe round done yet")
        return web.json_response({"status": "ready"})

    async def verdict(request: web.Request) -> web.Response:
        try:
            active, state = ctl.views.verdict(request.match_info["site"])
        except UnknownSiteError:
            return error(404, f"unknown site {request.match_info['site']!r}")
        return web.Response(text=state + "\n", status=200 if active else 503)

    async def refuse(request: web.Request, why: str) -> web.Response:
        """A failed authentication: counted, logged with its reason (never what was
        sent), answered after the peer's bucket allows."""
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        ctl.metrics.api_auth_failures.labels(route=route).inc()
        peer = request.remote or "?"
        delay = buckets.fail(peer)
        if delay == 0:
            log.warning(
                "authentication failed: %s %s from %s: %s", request.method, route, peer, why
            )
        else:
            log.debug("authentication failed from %s (answer delayed %.2fs)", peer, delay)
            await asyncio.sleep(delay)
        return error(401, "missing or unknown bearer token")

    def guarded(role: str, fn: Callable[[web.Request, Token], Awaitable[web.Response]]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            header = request.headers.get("Authorization")
            token = authenticate(tokens(), header)
            if token is None and header is None:
                subject = certificate_subject(request)
                if subject is None:
                    return await refuse(request, "no token")
                token = next((t for t in tokens() if t.subject == subject), None)
                if token is None:
                    return await refuse(
                        request, f"certificate subject {subject!r} not in api_tokens"
                    )
            elif token is None:
                return await refuse(request, "unknown or malformed token")
            if role == "admin" and token.role != "admin":
                return error(403, f"token {token.name!r} may only read")
            return await fn(request, token)

        return handler

    async def sites(request: web.Request, token: Token) -> web.Response:
        return web.json_response(
            {"sites": ctl.views.sites(), "coordination": ctl.views.coordination()}
        )

    async def coordination(request: web.Request, token: Token) -> web.Response:
        return web.json_response(ctl.views.coordination())

    async def events(request: web.Request, token: Token) -> web.Response:
        since = None
        if "since" in request.query:
            try:
                since = parse_duration(request.query["since"])
            except ValueError as exc:
                return error(400, f"since: {exc}")
        return web.json_response({"events": ctl.views.events(since)})

    def command(action: str, *, per_site: bool) -> Handler:
        async def run(request: web.Request, token: Token) -> web.Response:
            body: Any = {}
            if request.can_read_body:
                try:
                    async with asyncio.timeout(limits.header_timeout):
                        raw = await request.read()
                except TimeoutError:
                    return error(
                        408, f"request body not received within {limits.header_timeout:g}s"
                    )
                if raw.strip():
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        return error(400, "body is not JSON")
            if not isinstance(body, dict):
                return error(400, "body must be a JSON object")
            site = request.match_info.get("site") if per_site else None
            try:
                result = await ctl.commands.execute(Command.parse(action, site, token.name, body))
            except UnknownSiteError:
                return error(404, f"unknown site {site!r}")
            except RefusedError as exc:
                return error(409, str(exc), rule=exc.rule)
            except UnavailableError as exc:
                return error(503, str(exc))
            except ValueError as exc:
                return error(400, str(exc))
            return web.json_response(result)

        return guarded("admin", run)

    def public_routes(app: web.Application) -> None:
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/sites/{site}/verdict", verdict)

    main = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors])
    public_routes(main)
    main.router.add_get("/api/v1/sites", guarded("read", sites))
    main.router.add_get("/api/v1/coordination", guarded("read", coordination))
    main.router.add_get("/api/v1/events", guarded("read", events))
    for action in SITE_ACTIONS:
        main.router.add_post(f"/api/v1/sites/{{site}}/{action}", command(action, per_site=True))
    main.router.add_post("/api/v1/pause", command("pause", per_site=False))
    main.router.add_post("/api/v1/resume", command("resume", per_site=False))
    for resource in main.router.resources():  # at 0: increase() would miss a first failure
        if resource.canonical.startswith("/api/"):
            ctl.metrics.api_auth_failures.labels(route=resource.canonical)
    public = None
    if public_separate:
        public = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors])
        public_routes(public)
    return main, public


# --- TLS and listeners -----------------------------------------------------------------


def server_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """TLS 1.2 or newer with the standard library's defaults; with `client_ca` a client
    must present a certificate that chains to it (mutual TLS)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_key_pair(context, cert, key)  # an encrypted key: an error, not a prompt
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


class ServerTLS:
    """One listener's TLS: `current`, the newest context loaded, is the one each new
    connection's handshake takes (the gate builds every connection's TLS protocol), so
    setting it changes the certificate and client CA without closing the socket. A
    context holds its own session cache and ticket keys: a session from before a reload
    (a client certificate verified by the CA of then) is not resumed after it."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None) -> None:
        self.current = server_context(cert, key, client_ca)
        self.mutual = client_ca is not None


class _Gate(asyncio.Protocol):
    """Admits a connection when the listener has room for it (in all and for its peer
    address), else closes it at once; counted from its accept. A connection still in
    its TLS handshake holds a socket as long as one that finished, so it counts too:
    the gate sees the plain TCP connection and puts TLS in front of aiohttp's handler
    itself, as the event loop's create_server(ssl=...) would, handshake timeout included."""

    def __init__(self, site: Listener) -> None:
        self.site = site

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        site, limits = self.site, self.site.limits
        server = site.runner_server()
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else str(peer)
        hosts = [h.peername[0] for h in server.connections if isinstance(h.peername, tuple)]
        hosts += [h for done, h, _ in site.handshaking.values() if not done.done()]
        if len(hosts) >= limits.max_connections or hosts.count(host) >= (
            limits.max_connections_per_peer
        ):
            # uvloop's transports are asyncio.Transport in all but their class.
            cast(asyncio.Transport, transport).abort()
            return
        handler = server()
        if site.tls is None:
            transport.set_protocol(handler)
            handler.connection_made(transport)
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        # The handler's connection_made comes after the handshake; nothing is read before
        # the TLS protocol is in place (both set here, before the loop reads).
        tls = SSLProtocol(
            loop,
            handler,
            site.tls.current,
            done,
            server_side=True,
            # typeshed says int; the protocol hands it to loop.call_later.
            ssl_handshake_timeout=limits.header_timeout,  # type: ignore[arg-type]
        )
        key = id(done)
        site.handshaking[key] = (done, host, cast(asyncio.Transport, transport))
        done.add_done_callback(lambda _: site.handshaking.pop(key, None))
        transport.set_protocol(tls)
        tls.connection_made(transport)


class Listener(web.BaseSite):
    """aiohttp's TCPSite with the bounds it has no option for: open connections (a
    `_Gate` before each, from its accept) and the TLS handshake's time."""

    __slots__ = ("_host", "_port", "handshaking", "limits", "tls")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        tls: ServerTLS | None,
        limits: APILimits,
    ) -> None:
        super().__init__(runner, ssl_context=tls.current if tls is not None else None)
        self._host, self._port = host, port
        self.limits = limits
        self.tls = tls
        # Accepted, TLS handshake not done yet: its end, its peer address, its socket.
        self.handshaking: dict[int, tuple[asyncio.Future[None], str, asyncio.Transport]] = {}

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    def runner_server(self) -> web.Server:
        server = self._runner.server
        assert server is not None
        return server

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        # Plain TCP: the gate sees each connection at its accept and runs TLS itself.
        self._server = await loop.create_server(
            lambda: _Gate(self), self._host, self._port, backlog=128, reuse_address=True
        )

    async def stop(self) -> None:
        await super().stop()
        for _, _, transport in list(self.handshaking.values()):
            transport.abort()


async def serve(
    app: web.Application, address: str, *, tls: ServerTLS | None, limits: APILimits
) -> web.AppRunner:
    """Starts `app` on `address` (HOST:PORT) with the abuse bounds; the runner stops it."""
    host, port = split_host_port(address)
    runner = web.AppRunner(
        app,
        access_log=None,
        logger=http_log,
        # In-flight requests get a second at shutdown: the 5 s stop budget is the rule.
        shutdown_timeout=1.0,
        # From the connection's start (aiohttp >= 3.14) and after every answer: a client
        # that sends no complete request head in time is closed (slowloris).
        keepalive_timeout=limits.header_timeout,
        max_line_size=MAX_LINE,
        max_field_size=MAX_FIELD,
        max_headers=MAX_HEADERS,
    )
    await runner.setup()
    site = Listener(
        runner,
        host.strip("[]"),
        port,
        tls=tls,
        limits=limits,
    )
    await site.start()
    return runner
