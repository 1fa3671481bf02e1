"""The Quay endpoint prober: `/health/endtoend` and `/health/instance` of one site, directly.

First stage of the pipeline for site health. It connects to the site's
`connect` address while sending the global hostname from `url` as Host header
and TLS SNI, and verifies the certificate against that hostname (what `curl
--connect-to` does), so the global load balancer is bypassed. One shared
aiohttp session serves every site. Quay's body
(`{"data": {"services": {...}}, "status_code": N}`, reference/quay.md) becomes
an `Observation`; nothing raises into the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from trafficd import __version__
from trafficd.config.model import Probes, Site
from trafficd.config.types import split_host_port
from trafficd.model import Observation, Probe
from trafficd.probers import http1

MAX_BODY = 64 * 1024
PATHS = {Probe.ENDTOEND: "/health/endtoend", Probe.INSTANCE: "/health/instance"}


@dataclass(frozen=True)
class Target:
    """Where and how to reach one site directly."""

    site: str
    scheme: str
    hostname: str  # the global name: Host header and SNI
    host_header: str
    base: str  # scheme://connect-address

    @classmethod
    def from_site(cls, name: str, site: Site) -> Target:
        url = urlsplit(site.url or "")
        host, port = split_host_port(site.connect)
        address = f"[{host}]" if ":" in host else host
        default_port = 443 if url.scheme == "https" else 80
        host_header = url.hostname or ""
        if url.port and url.port != default_port:
            host_header = f"{host_header}:{url.port}"
        return cls(
            site=name,
            scheme=url.scheme,
            hostname=url.hostname or "",
            host_header=host_header,
            base=f"{url.scheme}://{address}:{port}",
        )


def ssl_context(probes: Probes) -> ssl.SSLContext | bool:
    """Verified by default; a CA bundle replaces the system store; opting out is explicit."""
    if probes.tls_insecure:
        return False
    context = ssl.create_default_context(cafile=probes.tls_ca_file)
    return context


def make_session(limit: int = 256) -> aiohttp.ClientSession:
    """The one session every site probe shares; cookies are handled per site by hand."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=4, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True
    )


def parse_body(body: bytes) -> tuple[dict[str, bool] | None, str | None]:
    """Quay's services map and, in debug mode, the failure texts; (None, None) if unparsable."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    data = doc.get("data") if isinstance(doc, dict) else None
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict) or not all(isinstance(v, bool) for v in services.values()):
        return None, None
    failures = []
    expanded = data.get("services_expanded") if isinstance(data, dict) else None
    if isinstance(expanded, dict):
        for name, info in sorted(expanded.items()):
            if isinstance(info, dict) and info.get("status") is False:
                text = info.get("failure") or info.get("message") or "failed"
                failures.append(f"{name}: {str(text)[:500]}")
    return {str(k): v for k, v in services.items()}, "; ".join(failures) or None


class QuayProber:
    """Probes one site's health endpoints through a shared session."""

    def __init__(
        self,
        target: Target,
        probes: Probes,
        session: aiohttp.ClientSession,
        *,
        vantage: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target = target
        self.session = session
        self.vantage = vantage
        self.timeout = probes.timeout
        self.clock = clock
        self.ssl: ssl.SSLContext | bool = ssl_context(probes) if target.scheme == "https" else False
        self._debug_secret = probes.debug_secret
        self._debug_cookie: str | None = None
        # Built once: a target's probes never change but for Quay's debug cookie.
        base = URL(self.target.base)
        context = self.ssl if isinstance(self.ssl, ssl.SSLContext) else None
        if target.scheme == "https" and context is None:
            context = _unverified()  # tls_insecure: encrypted, not verified
        self._endpoint = http1.Endpoint(
            (base.raw_host or "").strip("[]"),
            base.port or (443 if target.scheme == "https" else 80),
            ssl_context=context,
            server_hostname=self.target.hostname or None,
            limit=MAX_BODY,
        )
        self._requests = {kind: self._request_bytes(path) for kind, path in PATHS.items()}

    def _request_bytes(self, path: str) -> bytes:
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {self.target.host_header}",
            "Accept: application/json",
            f"User-Agent: trafficd/{__version__}",
        ]
        if self._debug_cookie is not None:
            lines.append(f"Cookie: health_debug={self._debug_cookie}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def close(self) -> None:
        self._endpoint.close()

    def _headers(self) -> Mapping[str, str]:
        headers = {"Host": self.target.host_header, "Accept": "application/json"}
        if self._debug_cookie is not None:
            headers["Cookie"] = f"health_debug={self._debug_cookie}"
        return headers

    async def _enable_debug(self) -> None:
        """Quay shows failure texts to a client holding the `health_debug` cookie."""
        if self._debug_secret is None or self._debug_cookie is not None:
            return
        path = f"/health/enabledebug/{self._debug_secret.get_secret_value()}"
        async with self.session.get(
            self.target.base + path,
            headers=self._headers(),
            ssl=self.ssl,
            server_hostname=self.target.hostname if self.ssl else None,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        ) as resp:
            cookie = resp.cookies.get("health_debug")
            if resp.status == 200 and cookie is not None:
                self._debug_cookie = cookie.value

    async def probe(self, kind: Probe) -> Observation:
        """One probe of `/health/endtoend` or `/health/instance`. Never raises."""
        started = time.perf_counter()

        def obs(ok: bool | None, reason: str | None = None, **kw: Any) -> Observation:
            # Stamped when known, not when asked: the engine counts an observation in
            # the first round after it arrives, and a slow probe (a timeout) must count.
            return Observation(
                t=self.clock(),
                vantage=self.vantage,
                probe=kind,
                target=self.target.site,
                ok=ok,
                reason=reason,
                latency=time.perf_counter() - started,
                **kw,
            )

        try:
            async with asyncio.timeout(self.timeout):
                if self._debug_secret is not None and self._debug_cookie is None:
                    with contextlib.suppress(aiohttp.ClientError):  # the probe will say why
                        await self._enable_debug()
                return await self._request(kind, obs)
        except TimeoutError:
            # Quay's storage check has no timeout: a hung bucket is a hung endtoend.
            return obs(False, "timeout")
        except http1.TooLargeError:
            return obs(False, "oversized")
        except http1.ResetError as exc:
            return obs(False, "reset", detail=str(exc))
        except http1.ProtocolError as exc:
            return obs(False, "protocol", detail=_short(exc))
        except ssl.SSLCertVerificationError as exc:
            return obs(False, "tls", detail=_short(exc.verify_message or exc))
        except ssl.SSLError as exc:
            return obs(False, "tls", detail=_short(exc.reason or exc))
        except (ConnectionResetError, BrokenPipeError) as exc:
            return obs(False, "reset", detail=type(exc).__name__)
        except OSError as exc:
            return obs(False, "connect", detail=_short(exc.strerror or exc))
        except aiohttp.ClientConnectorCertificateError as exc:
            return obs(False, "tls", detail=_short(exc.certificate_error))
        except aiohttp.ClientSSLError as exc:
            return obs(False, "tls", detail=_short(exc))
        except aiohttp.ClientConnectorError as exc:
            return obs(False, "connect", detail=_short(exc.os_error))
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            return obs(False, "reset", detail=type(exc).__name__)
        except aiohttp.ClientResponseError as exc:
            return obs(False, "protocol", detail=_short(exc.message))
        except aiohttp.ClientError as exc:
            return obs(None, "error", detail=type(exc).__name__)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never into the loop: the prober could not tell
            return obs(None, "error", detail=type(exc).__name__)

    async def _request(self, kind: Probe, obs: Callable[..., Observation]) -> Observation:
        request = self._requests[kind]
        if self._debug_cookie is not None:
            request = self._request_bytes(PATHS[kind])
        answer = await self._endpoint.get(request)
        status, body = answer.status, answer.body
        services, failures = parse_body(body)
        if 300 <= status < 400:
            return obs(False, "redirect", status=status)
        if status not in (200, 503):
            return obs(False, f"http_{status}", status=status)
        if services is None:
            return obs(False, "unparsable", status=status)
        if status == 503 and failures is None and self._debug_cookie is not None:
            self._debug_cookie = None  # expired or refused: ask again next time
        healthy = status == 200 and all(services.values())
        return obs(
            healthy,
            None if healthy else classify(services),
            status=status,
            services=services,
            detail=failures,
        )


def _unverified() -> ssl.SSLContext:
    """`probes.tls_insecure: true`: encrypted, not verified (never in production)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def classify(services: Mapping[str, bool]) -> str:
    """`storage` is site-local; `database`/`redis` are shared by every site (quay.md)."""
    kinds = []
    if services.get("storage") is False:
        kinds.append("storage")
    if services.get("database") is False or services.get("redis") is False:
        kinds.append("shared_dependency")
    others = [k for k, v in services.items() if not v and k not in ("storage", "database", "redis")]
    if others or not kinds:
        kinds.append("unhealthy")
    return ",".join(kinds)


def _short(value: object) -> str:
    return str(value).splitlines()[0][:200] if str(value) else type(value).__name__
