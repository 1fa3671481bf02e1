"""The OpenStack Swift prober (aiohttp): Keystone token auth, then object PUT/GET/DELETE.

Implements `base.StorageBackend` for `SwiftStorage`. Auth follows what
python-swiftclient does with Quay's parameters: Keystone v3 (password auth,
scope and domains from `os_options`), v2 (`/tokens` with passwordCredentials)
or v1 (`X-Auth-User`/`X-Auth-Key`). The token and the object-store URL are
cached until the token expires. Written on aiohttp rather than swiftclient
because swiftclient is synchronous and would block the probe loop.
"""

from __future__ import annotations

import ssl
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from trafficd.config.storage import StorageLocation, SwiftStorageParams
from trafficd.probers.base import StepError

TOKEN_MARGIN = 60.0  # renew a token this long before it expires
DEFAULT_LIFETIME = 3600.0  # when Keystone gives no expiry (v1)


def _expiry(text: str | None) -> float:
    if not text:
        return time.time() + DEFAULT_LIFETIME
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time() + DEFAULT_LIFETIME


class SwiftBackend:
    def __init__(
        self, location: StorageLocation, *, timeout: float, endpoint: str | None = None
    ) -> None:
        params = location.params
        assert isinstance(params, SwiftStorageParams)
        self.params = params
        self.options: dict[str, Any] = dict(params.os_options or {})
        self.version = params.auth_version or 2
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.endpoint = endpoint or self.options.get("object_storage_url")
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=params.ca_cert_path) if params.ca_cert_path else True
        )
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._storage_url: str | None = None
        self._expires = 0.0

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def _auth(self) -> tuple[str, str]:
        if self._token and self._storage_url and time.time() < self._expires - TOKEN_MARGIN:
            return self._token, self._storage_url
        p = self.params
        password = p.swift_password.get_secret_value()
        auth_url = p.auth_url.rstrip("/")
        if self.version == 1:
            headers = {"X-Auth-User": p.swift_user, "X-Auth-Key": password}
            async with self.session().get(auth_url, headers=headers, ssl=self._ssl) as resp:
                self._check_auth(resp.status)
                token, url = resp.headers.get("X-Auth-Token"), resp.headers.get("X-Storage-Url")
                expires = _expiry(None)
        elif self.version == 3:
            token, url, expires = await self._auth_v3(auth_url, password)
        else:
            token, url, expires = await self._auth_v2(auth_url, password)
        if not token or not (self.endpoint or url):
            raise StepError("auth", "Keystone gave no token or no object-store endpoint")
        self._token, self._storage_url = token, (self.endpoint or url or "").rstrip("/")
        self._expires = expires
        return self._token, self._storage_url

    def _check_auth(self, status: int) -> None:
        if status in (401, 403):
            raise StepError("auth", f"Keystone refused the credentials (HTTP {status})")
        if status >= 300:
            raise StepError("auth", f"Keystone answered HTTP {status}")

    def _pick(self, endpoints: list[dict[str, Any]], interface_key: str | None) -> str | None:
        region = self.options.get("region_name")
        wanted = self.options.get("endpoint_type", "publicURL")
        for endpoint in endpoints:
            if region and endpoint.get("region", endpoint.get("region_id")) != region:
                continue
            if interface_key is None:  # v2: one entry holds every interface's URL
                url = endpoint.get(wanted)
                if url:
                    return str(url)
            elif endpoint.get("interface") == wanted.removesuffix("URL"):
                return str(endpoint.get("url"))
        return None

    async def _auth_v3(self, auth_url: str, password: str) -> tuple[str | None, str | None, float]:
        o, p = self.options, self.params
        user: dict[str, Any] = {"name": p.swift_user, "password": password}
        if "user_domain_id" in o:
            user["domain"] = {"id": o["user_domain_id"]}
        else:
            user["domain"] = {"name": o.get("user_domain_name", "Default")}
        body: dict[str, Any] = {
            "auth": {"identity": {"methods": ["password"], "password": {"user": user}}}
        }
        project: dict[str, Any] = {}
        if o.get("project_id") or o.get("tenant_id"):
            project["id"] = o.get("project_id") or o.get("tenant_id")
        elif o.get("project_name") or o.get("tenant_name"):
            project["name"] = o.get("project_name") or o.get("tenant_name")
            if "project_domain_id" in o:
                project["domain"] = {"id": o["project_domain_id"]}
            else:
                project["domain"] = {"name": o.get("project_domain_name", "Default")}
        if project:
            body["auth"]["scope"] = {"project": project}
        url = auth_url if auth_url.endswith("/auth/tokens") else f"{auth_url}/auth/tokens"
        async with self.session().post(url, json=body, ssl=self._ssl) as resp:
            self._check_auth(resp.status)
            token = resp.headers.get("X-Subject-Token")
            doc = await resp.json(content_type=None)
        info = doc.get("token", {}) if isinstance(doc, dict) else {}
        storage = None
        for service in info.get("catalog", []):
            if service.get("type") == "object-store":
                storage = self._pick(service.get("endpoints", []), "interface")
        return token, storage, _expiry(info.get("expires_at"))

    async def _auth_v2(self, auth_url: str, password: str) -> tuple[str | None, str | None, float]:
        o, p = self.options, self.params
        auth: dict[str, Any] = {
            "passwordCredentials": {"username": p.swift_user, "password": password}
        }
        if o.get("tenant_id"):
            auth["tenantId"] = o["tenant_id"]
        elif o.get("tenant_name"):
            auth["tenantName"] = o["tenant_name"]
        url = auth_url if auth_url.endswith("/tokens") else f"{auth_url}/tokens"
        async with self.session().post(url, json={"auth": auth}, ssl=self._ssl) as resp:
            self._check_auth(resp.status)
            doc = await resp.json(content_type=None)
        access = doc.get("access", {}) if isinstance(doc, dict) else {}
        token = access.get("token", {})
        storage = None
        for service in access.get("serviceCatalog", []):
            if service.get("type") == "object-store":
                storage = self._pick(service.get("endpoints", []), None)
        return token.get("id"), storage, _expiry(token.get("expires"))

    async def _object(
        self, method: str, key: str, data: bytes | None = None, *, missing_ok: bool = False
    ) -> bytes | None:
        token, storage_url = await self._auth()
        url = f"{storage_url}/{quote(self.params.swift_container)}/{quote(key)}"
        async with self.session().request(
            method, url, data=data, headers={"X-Auth-Token": token}, ssl=self._ssl
        ) as resp:
            if resp.status == 401:
                self._token = None  # revoked or expired early: authenticate again next time
                raise StepError("auth", "Swift refused the token (HTTP 401)")
            if resp.status == 404 and missing_ok:
                return None
            if resp.status >= 300:
                raise StepError("error", f"HTTP {resp.status}")
            return await resp.read() if method == "GET" else b""

    async def put(self, key: str, data: bytes) -> None:
        await self._object("PUT", key, data)

    async def get(self, key: str) -> bytes:
        return await self._object("GET", key) or b""

    async def exists(self, key: str) -> bool:
        return await self._object("HEAD", key, missing_ok=True) is not None

    async def delete(self, key: str) -> None:
        await self._object("DELETE", key)

    async def reachable(self) -> None:
        token, storage_url = await self._auth()
        url = f"{storage_url}/{quote(self.params.swift_container)}"
        async with self.session().head(url, headers={"X-Auth-Token": token}, ssl=self._ssl) as r:
            if r.status >= 300:
                raise StepError("auth" if r.status in (401, 403) else "error", f"HTTP {r.status}")

    def classify(self, exc: BaseException) -> StepError | None:
        if isinstance(exc, aiohttp.ClientConnectorError):
            return StepError("connect", "could not connect")
        if isinstance(exc, aiohttp.ClientError):
            return StepError("error", type(exc).__name__)
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
