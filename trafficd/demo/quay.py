"""Quay's health HTTP as real Quay answers it, for the simulated Quay sites.

Shared by the demo's simulated site (`site.py`) and the prober tests' stand-in
(`tests/probers/quay_app.py`), so that both answer as real Quay (quay/quay after
v3.18.0) was seen to when trafficd ran against it:

- bodies are compact JSON with sorted keys,
  `{"data":{"services":{...}},"status_code":200}`, with `Content-Type:
  application/json`, `Cache-Control: no-cache, no-store, must-revalidate` and
  `Vary: Cookie`; a 503's status line reads `503 SERVICE UNAVAILABLE`;
- debug mode: `/health/enabledebug/<secret>` answers 200 text/html and stores
  `health_debug` in Quay's signed Flask session, the cookie `_csrf_token` (no
  cookie named `health_debug` exists); a wrong secret is a 404. A request that
  sends that session back gets `services_expanded` (`{NAME: {"status": bool,
  "failure"|"message": str}}`), `notes`, `is_testing`, `config_provider`,
  `local_service_key_id` and `hostname` in `data`. `Sessions.restart()` is a
  Quay restart with a new session key: earlier cookies no longer count;
- the failure texts of the storage, Redis and database checks (`preferred_failed`,
  `non_preferred_unavailable`, `redis_refused`, `database_refused`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from typing import Any

from aiohttp import web

SESSION_COOKIE = "_csrf_token"  # Quay's SESSION_COOKIE_NAME
NO_CACHE = "no-cache, no-store, must-revalidate"
HEALTH_HEADERS = {"Cache-Control": NO_CACHE, "Vary": "Cookie"}
ENABLED_TEXT = "Health check debug information enabled"


def dumps(doc: Any) -> bytes:
    """Flask's jsonify as Quay configures it: compact, keys sorted."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def preferred_failed(location: str, error: str) -> str:
    return f"Preferred storage '{location}' check failed: {error}"


def non_preferred_unavailable(location: str, error: str) -> str:
    return f"Non-preferred storage '{location}' unavailable: {error}"


def endpoint_unreachable(url: str) -> str:
    """botocore's EndpointConnectionError, as Quay quotes it."""
    return f'Could not connect to the endpoint URL: "{url}"'


def redis_refused(port: int, host: str = "127.0.0.1") -> str:
    return f"Could not connect to redis: Error 111 connecting to {host}:{port}. Connection refused."


def database_refused(port: int, host: str = "127.0.0.1") -> str:
    return (
        f'Could not connect to the database: connection to server at "{host}", port {port} '
        "failed: Connection refused\n\tIs the server running on that host and accepting "
        "TCP/IP connections?\n"
    )


def expanded(services: Mapping[str, bool], texts: Mapping[str, str]) -> dict[str, Any]:
    """`services_expanded`: a failed check's text is its `failure`, a passing one's its
    `message` (a non-preferred storage warning, say)."""
    out: dict[str, Any] = {}
    for name, ok in services.items():
        entry: dict[str, Any] = {"status": ok}
        if name in texts:
            entry["message" if ok else "failure"] = texts[name]
        out[name] = entry
    return out


def health_response(
    services: Mapping[str, bool],
    texts: Mapping[str, str] | None = None,
    *,
    debug: bool,
    hostname: str = "quay-app-1",
    expanded_services: Mapping[str, Any] | None = None,
) -> web.Response:
    """One answer of `/health/endtoend` or `/health/instance`; `expanded_services` replaces
    the computed `services_expanded` (a recorded one, replayed)."""
    status = 200 if all(services.values()) else 503
    data: dict[str, Any] = {"services": dict(services)}
    if debug:
        data.update(
            services_expanded=(
                dict(expanded_services)
                if expanded_services is not None
                else expanded(services, texts or {})
            ),
            notes=[],
            is_testing=False,
            config_provider="file",
            local_service_key_id="quay-simulated-key",
            hostname=hostname,
        )
    return web.Response(
        status=status,
        reason="SERVICE UNAVAILABLE" if status == 503 else "OK",
        body=dumps({"data": data, "status_code": status}),
        content_type="application/json",
        headers=HEALTH_HEADERS,
    )


class Sessions:
    """Quay's signed session cookie, holding `health_debug` once enabled."""

    def __init__(self, debug_secret: str | None) -> None:
        self.debug_secret = debug_secret
        self.enables = 0  # calls of the enable route, good secret or not
        self._key = secrets.token_bytes(32)

    def restart(self) -> None:
        """A restarted Quay with a new session key: every earlier session is void."""
        self._key = secrets.token_bytes(32)

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()

    def load(self, request: web.Request) -> dict[str, Any]:
        value = request.cookies.get(SESSION_COOKIE, "")
        payload, _, signature = value.rpartition(".")
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        except ValueError:
            return {}
        if not payload or not hmac.compare_digest(self._sign(raw), signature):
            return {}
        try:
            session = json.loads(raw)
        except ValueError:
            return {}
        return session if isinstance(session, dict) else {}

    def debug(self, request: web.Request) -> bool:
        return self.load(request).get("health_debug") is True

    def save(self, response: web.StreamResponse, session: Mapping[str, Any]) -> None:
        raw = dumps(dict(session))
        payload = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        response.set_cookie(SESSION_COOKIE, f"{payload}.{self._sign(raw)}", httponly=True, path="/")

    async def enable(self, request: web.Request) -> web.Response:
        """`/health/enabledebug/{secret}`."""
        self.enables += 1
        if not self.debug_secret or request.match_info["secret"] != self.debug_secret:
            return web.Response(status=404, reason="NOT FOUND", text="Not Found")
        session = self.load(request)
        session["health_debug"] = True
        response = web.Response(text=ENABLED_TEXT, content_type="text/html", headers=HEALTH_HEADERS)
        self.save(response, session)
        return response
