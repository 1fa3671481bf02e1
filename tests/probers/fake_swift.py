"""A FAKE OpenStack Keystone + Swift server: no real Swift can run on these machines.

It follows the documented wire formats of what the prober uses and nothing
more: Keystone v3 `POST /v3/auth/tokens` (password method, token in the
`X-Subject-Token` header, catalog with interface/url endpoints), Keystone v2
`POST /v2.0/tokens` (`access.token.id`, `access.serviceCatalog` with
publicURL), Swift v1 auth (`X-Auth-User`/`X-Auth-Key` -> `X-Storage-Url`,
`X-Auth-Token`), and the Swift object API (`PUT`/`GET`/`DELETE
/v1/AUTH_<project>/<container>/<object>`, `HEAD` on a container, 401 on a bad
token, 404 on a missing container or object).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from aiohttp import web

USER, PASSWORD, PROJECT = "quay", "swift-test-password-0123", "0a1b2c3d"


class FakeSwift:
    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.containers: dict[str, dict[str, bytes]] = {"quay": {}}
        self.auth_calls = 0
        self.base = ""
        self.mode = "pass"  # pass | status500 | corrupt

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v3/auth/tokens", self.keystone_v3)
        app.router.add_post("/v2.0/tokens", self.keystone_v2)
        app.router.add_get("/auth/v1.0", self.auth_v1)
        app.router.add_route("*", "/v1/AUTH_{project}/{container}", self.container)
        app.router.add_route("*", "/v1/AUTH_{project}/{container}/{obj:.+}", self.object)
        return app

    def _issue(self) -> str:
        self.auth_calls += 1
        token = secrets.token_hex(16)
        self.tokens.add(token)
        return token

    def _expires(self) -> str:
        return (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000000Z")

    async def keystone_v3(self, request: web.Request) -> web.Response:
        body = await request.json()
        user = body["auth"]["identity"]["password"]["user"]
        if user.get("name") != USER or user.get("password") != PASSWORD:
            return web.json_response({"error": {"code": 401, "title": "Unauthorized"}}, status=401)
        token = self._issue()
        catalog = [
            {
                "type": "object-store",
                "name": "swift",
                "endpoints": [
                    {
                        "interface": "public",
                        "region": "RegionOne",
                        "url": f"{self.base}/v1/AUTH_{PROJECT}",
                    },
                    {
                        "interface": "internal",
                        "region": "RegionOne",
                        "url": "http://internal.invalid/v1",
                    },
                ],
            }
        ]
        doc = {"token": {"expires_at": self._expires(), "catalog": catalog}}
        return web.json_response(doc, status=201, headers={"X-Subject-Token": token})

    async def keystone_v2(self, request: web.Request) -> web.Response:
        body = await request.json()
        creds = body["auth"]["passwordCredentials"]
        if creds.get("username") != USER or creds.get("password") != PASSWORD:
            return web.json_response({"error": {"code": 401}}, status=401)
        token = self._issue()
        access = {
            "token": {"id": token, "expires": self._expires()},
            "serviceCatalog": [
                {
                    "type": "object-store",
                    "endpoints": [
                        {"region": "RegionOne", "publicURL": f"{self.base}/v1/AUTH_{PROJECT}"}
                    ],
                }
            ],
        }
        return web.json_response({"access": access})

    async def auth_v1(self, request: web.Request) -> web.Response:
        if (
            request.headers.get("X-Auth-User") != USER
            or request.headers.get("X-Auth-Key") != PASSWORD
        ):
            return web.Response(status=401)
        token = self._issue()
        return web.Response(
            status=200,
            headers={"X-Auth-Token": token, "X-Storage-Url": f"{self.base}/v1/AUTH_{PROJECT}"},
        )

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("X-Auth-Token") in self.tokens

    async def container(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401)
        if request.match_info["container"] not in self.containers:
            return web.Response(status=404)
        return web.Response(status=204)

    async def object(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401)
        if self.mode == "status500":
            return web.Response(status=500)
        objects = self.containers.get(request.match_info["container"])
        if objects is None:
            return web.Response(status=404)
        name = request.match_info["obj"]
        if request.method == "PUT":
            objects[name] = await request.read()
            return web.Response(status=201)
        if name not in objects:
            return web.Response(status=404)
        if request.method == "GET":
            data = objects[name]
            if self.mode == "corrupt":
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            return web.Response(body=data)
        if request.method == "HEAD":  # Swift answers 200 with the object's headers only
            return web.Response(status=200, headers={"Content-Length": str(len(objects[name]))})
        if request.method == "DELETE":
            del objects[name]
            return web.Response(status=204)
        return web.Response(status=405)
