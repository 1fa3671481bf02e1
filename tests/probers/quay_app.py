"""A test stand-in for Quay's health endpoints, answering as real Quay does.

Bodies, headers, status lines, debug mode's session cookie (`_csrf_token`, set
by `/health/enabledebug/<secret>`) and failure texts come from
`trafficd.demo.quay`, the simulation the demo's sites share. It also records
the Host header, TLS SNI and Cookie header each health request arrived with,
and can hang (until `release`) or answer late (`delay`), as a Quay whose storage
check runs through boto's retries does.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from trafficd.demo.quay import Sessions, dumps, health_response

HEALTHY = {"auth": True, "database": True, "redis": True, "storage": True}
DEBUG_SECRET = "health-debug-secret-0123"


def quay_body(services: dict[str, bool], expanded: dict[str, Any] | None = None) -> bytes:
    """A body in Quay's format (compact, sorted), for answers given raw."""
    status = 200 if all(services.values()) else 503
    data: dict[str, Any] = {"services": services}
    if expanded is not None:
        data["services_expanded"] = expanded
    return dumps({"data": data, "status_code": status})


@dataclass
class QuayApp:
    services: dict[str, bool] = field(default_factory=lambda: dict(HEALTHY))
    texts: dict[str, str] = field(default_factory=dict)  # failure or message per service
    expanded: dict[str, Any] | None = None  # a recorded services_expanded, served as is
    raw: tuple[int, bytes, dict[str, str]] | None = None  # overrides the body
    hang: bool = False
    delay: float = 0.0  # seconds each health answer takes
    debug_secret: str | None = DEBUG_SECRET
    hosts: list[str] = field(default_factory=list)
    snis: list[str | None] = field(default_factory=list)
    cookies: list[str | None] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    sessions: Sessions = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.debug_secret)

    @property
    def enables(self) -> int:
        return self.sessions.enables

    def restart(self) -> None:
        """Quay restarted: its sessions are void, so debug mode is off for every client."""
        self.sessions.restart()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health/endtoend", self.health)
        app.router.add_get("/health/instance", self.health)
        app.router.add_get("/health/enabledebug/{secret}", self.sessions.enable)
        return app

    async def health(self, request: web.Request) -> web.Response:
        self.hosts.append(request.headers.get("Host", ""))
        self.cookies.append(request.headers.get("Cookie"))
        # Quay finishes a request whose client went away: the answer is computed anyway.
        return await asyncio.shield(self._answer(request))

    async def _answer(self, request: web.Request) -> web.Response:
        if self.hang:
            await self.release.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.raw is not None:
            status, body, headers = self.raw
            return web.Response(status=status, body=body, headers=headers)
        return health_response(
            self.services,
            self.texts,
            debug=self.sessions.debug(request),
            expanded_services=self.expanded,
        )

    def server_context(self, cert: Any) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)

        def record_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
            self.snis.append(name)

        context.sni_callback = record_sni
        return context
