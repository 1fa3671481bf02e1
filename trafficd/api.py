"""The HTTP API (aiohttp): docs/design.md's routes, bearer tokens, JSON errors.

The daemon's face (pipeline: store and engine state -> here -> operators,
Prometheus, external health checkers). `build_apps` returns the full app for
`listen` and, when `metrics_listen` is set, a public app that serves only
`/metrics`, `/healthz`, `/readyz` and the verdicts. Tokens are compared in
constant time (hmac.compare_digest) against every configured token, so the
time taken does not tell which one nearly matched; the token's name is the
audit log's "who". Request bodies are capped; every error is `{"error": str}`.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from trafficd.config.types import parse_duration

MAX_BODY = 16 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Token:
    name: str
    role: str  # "read" | "admin"
    secret: str


class RefusedError(Exception):
    """A command refused by a safety rule: 409 with the rule's name."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class UnavailableError(Exception):
    """A command that cannot be taken now (the shared store is down): 503."""


class UnknownSiteError(Exception):
    pass


class Controller(Protocol):
    registry: CollectorRegistry
    ready: bool
    alive: bool
    tokens: list[Token]

    def sites_view(self) -> list[dict[str, Any]]: ...

    def verdict(self, site: str) -> tuple[bool, str]: ...

    async def command(
        self, action: str, site: str | None, who: str, body: Mapping[str, Any]
    ) -> dict[str, Any]: ...

    def coordination_view(self) -> dict[str, Any]: ...

    def events(self, since: float | None) -> list[dict[str, Any]]: ...


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


def authenticate(tokens: list[Token], header: str | None) -> Token | None:
    if not header or not header.startswith("Bearer "):
        return None
    given = header[len("Bearer ") :].strip().encode()
    found = None
    for token in tokens:  # no early exit: every token is compared
        if hmac.compare_digest(given, token.secret.encode()):
            found = token
    return found


def build_apps(
    ctl: Controller, *, public_separate: bool
) -> tuple[web.Application, web.Application | None]:
    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(ctl.registry)
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
            active, state = ctl.verdict(request.match_info["site"])
        except UnknownSiteError:
            return error(404, f"unknown site {request.match_info['site']!r}")
        return web.Response(text=state + "\n", status=200 if active else 503)

    def guarded(role: str, fn: Callable[[web.Request, Token], Awaitable[web.Response]]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            token = authenticate(ctl.tokens, request.headers.get("Authorization"))
            if token is None:
                return error(401, "missing or unknown bearer token")
            if role == "admin" and token.role != "admin":
                return error(403, f"token {token.name!r} may only read")
            return await fn(request, token)

        return handler

    async def sites(request: web.Request, token: Token) -> web.Response:
        return web.json_response(
            {"sites": ctl.sites_view(), "coordination": ctl.coordination_view()}
        )

    async def coordination(request: web.Request, token: Token) -> web.Response:
        return web.json_response(ctl.coordination_view())

    async def events(request: web.Request, token: Token) -> web.Response:
        since = None
        if "since" in request.query:
            try:
                since = parse_duration(request.query["since"])
            except ValueError as exc:
                return error(400, f"since: {exc}")
        return web.json_response({"events": ctl.events(since)})

    def command(action: str, *, per_site: bool, needs_body: bool) -> Handler:
        async def run(request: web.Request, token: Token) -> web.Response:
            body: Any = {}
            if request.can_read_body:
                raw = await request.read()
                if raw.strip():
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        return error(400, "body is not JSON")
            if not isinstance(body, dict):
                return error(400, "body must be a JSON object")
            reason = body.get("reason")
            if needs_body and not (isinstance(reason, str) and reason.strip()):
                return error(400, "reason: a non-empty string is required")
            site = request.match_info.get("site") if per_site else None
            try:
                result = await ctl.command(action, site, token.name, body)
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
    for action, needs in (("drain", True), ("undrain", False), ("hold", True), ("release", False)):
        main.router.add_post(
            f"/api/v1/sites/{{site}}/{action}", command(action, per_site=True, needs_body=needs)
        )
    main.router.add_post("/api/v1/pause", command("pause", per_site=False, needs_body=True))
    main.router.add_post("/api/v1/resume", command("resume", per_site=False, needs_body=False))
    public = None
    if public_separate:
        public = web.Application(client_max_size=MAX_BODY, middlewares=[json_errors])
        public_routes(public)
    return main, public
