"""A test stand-in for Quay's health endpoints, answering in Quay's exact body format.

Bodies are those of quay/quay's health endpoints (reference/quay.md):
`{"data": {"services": {...}}, "status_code": N}`, with `services_expanded`
in debug mode (the `health_debug` cookie set by `/health/enabledebug/<secret>`).
It also records the Host header and TLS SNI each request arrived with.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

HEALTHY = {"auth": True, "database": True, "redis": True, "storage": True}
DEBUG_SECRET = "health-debug-secret-0123"


def quay_body(services: dict[str, bool], expanded: dict[str, Any] | None = None) -> bytes:
    status = 200 if all(services.values()) else 503
    data: dict[str, Any] = {"services": services}
    if expanded is not None:
        data.update(
            services_expanded=expanded,
            notes=[],
            hostname="quay-app-1",
            is_testing=False,
            config_provider="file",
        )
    return json.dumps({"data": data, "status_code": status}).encode()


@dataclass
class QuayApp:
    services: dict[str, bool] = field(default_factory=lambda: dict(HEALTHY))
    expanded: dict[str, Any] | None = None
    raw: tuple[int, bytes, dict[str, str]] | None = None  # overrides the body
    hang: bool = False
    hosts: list[str] = field(default_factory=list)
    snis: list[str | None] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health/endtoend", self.health)
        app.router.add_get("/health/instance", self.health)
        app.router.add_get("/health/enabledebug/{secret}", self.enable_debug)
        return app

    async def health(self, request: web.Request) -> web.Response:
        self.hosts.append(request.headers.get("Host", ""))
        if self.hang:
            await self.release.wait()
        if self.raw is not None:
            status, body, headers = self.raw
            return web.Response(status=status, body=body, headers=headers)
        debug = request.cookies.get("health_debug") == "true"
        body = quay_body(self.services, self.expanded if debug else None)
        status = 200 if all(self.services.values()) else 503
        return web.Response(status=status, body=body, content_type="application/json")

    async def enable_debug(self, request: web.Request) -> web.Response:
        if request.match_info["secret"] != DEBUG_SECRET:
            return web.Response(status=404)
        response = web.Response(text="Health check debug information enabled")
        response.set_cookie("health_debug", "true")
        return response

    def server_context(self, cert: Any) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)

        def record_sni(sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
            self.snis.append(name)

        context.sni_callback = record_sni
        return context
