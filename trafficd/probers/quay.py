"""The Quay endpoint prober: `/health/endtoend` and `/health/instance` of one site, directly.

First stage of the pipeline for site health. It connects to the site's
`connect` address while sending the global hostname from `url` as Host header
and TLS SNI, and verifies the certificate against that hostname (what `curl
--connect-to` does), so the global load balancer is bypassed. Requests go
through `http1` (kept-alive connections per site). Quay's body (`{"data":
{"services": {...}}, "status_code": N}`, docs/design.md, "What real Quay does") becomes an
`Observation`, with, in debug mode, each service's failure text
(`service_texts`) and the storage locations those texts name
(`storage_faults`); nothing raises into the caller. `QuayProber` says how debug
mode's session is kept and why one request per probe is in flight at a time.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from trafficd import __version__
from trafficd.config.model import Probes, Site
from trafficd.config.types import split_host_port
from trafficd.model import Observation, Probe
from trafficd.probers import http1

MAX_BODY = 64 * 1024
MAX_TEXT = 500  # characters kept of each of Quay's failure texts
PATHS = {Probe.ENDTOEND: "/health/endtoend", Probe.INSTANCE: "/health/instance"}


@dataclass(frozen=True)
class SiteEndpoint:
    """Where and how to reach one site directly."""

    site: str
    scheme: str
    hostname: str  # the global name: Host header and SNI
    host_header: str
    base: str  # scheme://connect-address

    @classmethod
    def from_site(cls, name: str, site: Site) -> SiteEndpoint:
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


@dataclass(frozen=True)
class Health:
    """What one of Quay's health answers says."""

    services: dict[str, bool]
    # services_expanded (debug mode only): NAME -> its failure or message text, if any.
    expanded: dict[str, str | None] | None

    @property
    def failures(self) -> str | None:
        """The failed services' texts, for the observation's `detail`."""
        failed = [
            f"{name}: {text or 'failed'}"
            for name, text in sorted((self.expanded or {}).items())
            if self.services.get(name) is False
        ]
        return "; ".join(failed) or None

    @property
    def texts(self) -> dict[str, str]:
        return {name: text for name, text in sorted((self.expanded or {}).items()) if text}


def parse_body(body: bytes) -> Health | None:
    """Quay's services map and, in debug mode, each service's text; None if unparsable."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json parses
        return None
    data = doc.get("data") if isinstance(doc, dict) else None
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict) or not all(isinstance(v, bool) for v in services.values()):
        return None
    assert isinstance(data, dict)
    expanded: dict[str, str | None] | None = None
    raw = data.get("services_expanded")
    if isinstance(raw, dict):
        expanded = {}
        for name, info in raw.items():
            text = None
            if isinstance(info, dict):
                text = info.get("failure") or info.get("message")
            expanded[str(name)] = str(text)[:MAX_TEXT] if text else None
    return Health({str(k): v for k, v in services.items()}, expanded)


# Quay's storage check names the location it could not use, as real Quay was seen to.
_STORAGE_FAULT = re.compile(
    r"(?P<kind>Preferred storage|Non-preferred storage) '(?P<location>[^']+)' "
    r"(?:check failed|unavailable)"
)


def storage_faults(text: str | None) -> dict[str, str]:
    """`Preferred storage 'eu' check failed: ...` -> {"eu": "preferred"}; a location that
    Quay names both ways counts as preferred."""
    faults: dict[str, str] = {}
    for match in _STORAGE_FAULT.finditer(text or ""):
        kind = "preferred" if match["kind"] == "Preferred storage" else "non_preferred"
        if faults.get(match["location"]) != "preferred":
            faults[match["location"]] = kind
    return faults


class _Cookies:
    """The cookies a site set (Quay's Flask session `_csrf_token`), sent back on every request.

    One site, one client: no domains or paths to match. Each Set-Cookie is read as RFC 6265
    5.2 says a client reads it: the name and value are what comes before the first `;`, sent
    back byte for byte; of the attributes only the expiry counts. (Python's SimpleCookie,
    used before, dropped a cookie carrying an attribute it does not know, `Partitioned`
    say, and took `Priority=High` for a cookie.) A cookie is dropped when the site deletes
    it (empty value, `Max-Age=0`, or an `Expires` in the past)."""

    LIMIT = 8  # cookies kept per site; Quay sets one

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self._header: str | None = None

    def update(self, headers: list[bytes]) -> None:
        if not headers:
            return
        for header in headers:
            pair, *attributes = header.decode("latin-1").split(";")
            name, eq, value = pair.partition("=")
            name, value = name.strip(), value.strip()
            if not eq or not name or any(c in name + value for c in "\r\n\0"):
                continue  # not a cookie (RFC 6265 5.2 step 2)
            if not value or _expired(attributes):
                self.values.pop(name, None)
            elif name in self.values or len(self.values) < self.LIMIT:
                self.values[name] = value
        self._header = "; ".join(f"{k}={v}" for k, v in self.values.items()) or None

    def header(self) -> str | None:
        """The Cookie header's value, None without cookies."""
        return self._header


def _expired(attributes: list[str]) -> bool:
    """Whether a Set-Cookie's attributes delete it: Max-Age wins over Expires (RFC 6265)."""
    found: dict[str, str] = {}
    for attribute in attributes:
        key, _, value = attribute.partition("=")
        found[key.strip().lower()] = value.strip()
    max_age = found.get("max-age", "")
    if max_age.lstrip("-").isdigit():
        return int(max_age) <= 0
    if found.get("expires"):
        try:
            return parsedate_to_datetime(found["expires"]).timestamp() <= time.time()
        except (TypeError, ValueError):
            return False
    return False


@dataclass
class _Flight:
    """One request to a site probe: when it started and whether it reached the site."""

    started: float
    task: asyncio.Task[Observation] | None = None
    sent: bool = False

    def mark_sent(self) -> None:
        self.sent = True


class QuayProber:
    """Probes one site's health endpoints through a shared session.

    Debug mode: with `probes.debug_secret`, the prober calls `/health/enabledebug/<secret>`
    once, keeps the session cookie Quay answers with (`_csrf_token`: Quay's signed Flask
    session, which holds `health_debug`; no `health_debug` cookie exists) and sends it back
    on every probe. It enables again only when an answer to the session it keeps shows
    debug mode off (no `services_expanded`: a restarted Quay with a new session key; an
    answer to a request sent with an earlier session says nothing of the current one), and
    at most once per `ENABLE_INTERVAL`, because every enable writes the secret into Quay's
    access log.

    One request per probe in flight: Quay finishes a request whose client gave up (its
    storage check has no timeout; 7-10 s under boto's retries), so a probe that times out
    leaves its request running and the next rounds record a timeout without sending
    another until it answers. The answer, when it comes, is the next round's observation
    (a failure as Quay said it, with its debug text; a success as a timeout). A request
    unanswered for `ABANDON_AFTER` is given up (a dead connection, not a busy Quay)."""

    ENABLE_INTERVAL = 60.0
    ABANDON_AFTER = 60.0

    def __init__(
        self,
        endpoint: SiteEndpoint,
        probes: Probes,
        session: aiohttp.ClientSession,
        *,
        vantage: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = endpoint
        self.session = session
        self.vantage = vantage
        self.timeout = probes.timeout
        self.clock = clock
        self.ssl: ssl.SSLContext | bool = (
            ssl_context(probes) if endpoint.scheme == "https" else False
        )
        self._debug_secret = probes.debug_secret
        self._cookies = _Cookies()
        self._debug_on = False  # as far as the last answer showed
        self._enable_after = -math.inf  # clock time of the next enable allowed
        self._enable_lock = asyncio.Lock()  # endtoend and instance share the session
        self.enables = 0  # enable requests sent
        self._flights: dict[Probe, _Flight] = {}
        base = URL(self.endpoint.base)
        context = self.ssl if isinstance(self.ssl, ssl.SSLContext) else None
        if endpoint.scheme == "https" and context is None:
            context = _unverified()  # tls_insecure: encrypted, not verified
        self._endpoint = http1.Endpoint(
            (base.raw_host or "").strip("[]"),
            base.port or (443 if endpoint.scheme == "https" else 80),
            ssl_context=context,
            server_hostname=self.endpoint.hostname or None,
            limit=MAX_BODY,
        )
        # Built once per cookie value: a site endpoint's probes never change but for Quay's session.
        self._requests: dict[Probe, tuple[str | None, bytes]] = {}

    def _request_bytes(self, path: str) -> bytes:
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {self.endpoint.host_header}",
            "Accept: application/json",
            f"User-Agent: trafficd/{__version__}",
        ]
        cookie = self._cookies.header()
        if cookie is not None:
            lines.append(f"Cookie: {cookie}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _probe_request(self, kind: Probe) -> bytes:
        cookie = self._cookies.header()
        built = self._requests.get(kind)
        if built is None or built[0] != cookie:
            built = self._requests[kind] = (cookie, self._request_bytes(PATHS[kind]))
        return built[1]

    def pending(self, kind: Probe) -> bool:
        """Whether a request of `kind` that outlived its round is still unanswered."""
        flight = self._flights.get(kind)
        return flight is not None and flight.task is not None and not flight.task.done()

    def close(self) -> None:
        for flight in self._flights.values():
            if flight.task is not None:
                flight.task.cancel()
        self._flights.clear()
        self._endpoint.close()

    async def _enable_debug(self) -> None:
        """Put `health_debug` into Quay's session, at most once per `ENABLE_INTERVAL`."""
        async with self._enable_lock:
            now = self.clock()
            if self._debug_on or now < self._enable_after:
                return
            self._enable_after = now + self.ENABLE_INTERVAL
            self.enables += 1
            assert self._debug_secret is not None
            # One path segment: percent-encoded, as Quay's route decodes it.
            secret = quote(self._debug_secret.get_secret_value(), safe="")
            request = self._request_bytes(f"/health/enabledebug/{secret}")
            # Never raises: the probe that follows says why the site cannot be reached,
            # and no error here may carry the request (it holds the secret).
            try:
                async with asyncio.timeout(self.timeout):
                    answer = await self._endpoint.get(request)
            except (TimeoutError, OSError, http1.TooLargeError, http1.ResetError):
                return  # OSError: ssl.SSLError too
            except http1.ProtocolError:
                return
            self._cookies.update(answer.set_cookies)
            self._debug_on = answer.status == 200 and bool(answer.set_cookies)

    def _observation(
        self, kind: Probe, started: float, ok: bool | None, reason: str | None = None, **kw: Any
    ) -> Observation:
        # Stamped when known, not when asked: the engine counts an observation in
        # the first round after it arrives, and a slow probe (a timeout) must count.
        return Observation(
            t=self.clock(),
            vantage=self.vantage,
            probe=kind,
            subject=self.endpoint.site,
            ok=ok,
            reason=reason,
            latency=time.perf_counter() - started,
            **kw,
        )

    async def probe(self, kind: Probe) -> Observation:
        """One probe of `/health/endtoend` or `/health/instance`. Never raises."""
        started = time.perf_counter()
        flight = self._flights.pop(kind, None)
        if flight is not None and flight.task is not None:
            if flight.task.done():
                return self._late(flight.task.result(), kind, started)
            age = self.clock() - flight.started
            if age < self.ABANDON_AFTER:
                self._flights[kind] = flight
                waiting = self._observation(
                    kind,
                    started,
                    False,
                    "timeout",
                    detail=f"the previous request is unanswered after {age:.1f}s",
                )
                # Nothing was sent: no duration to report (trafficd_probe_duration_seconds).
                return replace(waiting, latency=None)
            flight.task.cancel()  # given up: the next request goes on a new connection
        flight = _Flight(started=self.clock())
        task = asyncio.get_running_loop().create_task(self._attempt(kind, started, flight))
        flight.task = task
        try:
            # Waits without cancelling it (cheaper than wait_for over a shield).
            await asyncio.wait((task,), timeout=self.timeout)
        except asyncio.CancelledError:  # the probe loop stops (a reload): Quay works on
            if flight.sent:  # a sent request all the same, so it stays the one in flight
                self._flights[kind] = flight
            else:
                task.cancel()
            raise
        if task.done():
            return task.result()
        if flight.sent:  # Quay is working on it: wait for its answer, send nothing more
            self._flights[kind] = flight
        else:  # still connecting: nothing runs at the site, try afresh next round
            task.cancel()
        # Quay's storage check has no timeout: a hung bucket is a hung endtoend.
        return self._observation(kind, started, False, "timeout")

    def _late(self, answer: Observation, kind: Probe, started: float) -> Observation:
        """The answer to a request that outlived its round, as this round's observation."""
        if answer.ok is not False:  # no later than `timeout` is the bound of a pass
            waited = answer.latency or 0.0
            late = self._observation(
                kind,
                started,
                False,
                "timeout",
                status=answer.status,
                detail=f"answered after {waited:.1f}s, over the {self.timeout:g}s timeout",
            )
            return replace(late, latency=answer.latency)  # the request's, not this round's
        return replace(answer, t=self.clock())

    async def _attempt(self, kind: Probe, started: float, flight: _Flight) -> Observation:
        def obs(ok: bool | None, reason: str | None = None, **kw: Any) -> Observation:
            return self._observation(kind, started, ok, reason, **kw)

        try:
            if self._debug_secret is not None and not self._debug_on:
                await self._enable_debug()
            return await self._request(kind, obs, flight)
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
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never into the loop: the prober could not tell
            return obs(None, "error", detail=type(exc).__name__)

    async def _request(
        self, kind: Probe, obs: Callable[..., Observation], flight: _Flight
    ) -> Observation:
        session = self._cookies.header()  # the session this request is sent with
        answer = await self._endpoint.get(self._probe_request(kind), flight.mark_sent)
        # Only an answer to the session now kept tells whether it is in debug mode: a
        # request sent before a re-enable (pending through it) answers for a void one.
        current = session == self._cookies.header()
        self._cookies.update(answer.set_cookies)
        status, body = answer.status, answer.body
        if 300 <= status < 400:
            return obs(False, "redirect", status=status)
        if status not in (200, 503):
            return obs(False, f"http_{status}", status=status)
        health = parse_body(body)
        if health is None:
            return obs(False, "unparsable", status=status)
        if current:  # no services_expanded: Quay forgot the session (restarted): enable again
            self._debug_on = health.expanded is not None
        services = health.services
        healthy = status == 200 and all(services.values())
        texts = health.texts
        return obs(
            healthy,
            None if healthy else classify(services),
            status=status,
            services=services,
            detail=health.failures,
            service_texts=texts,
            storage_faults=storage_faults(texts.get("storage")),
        )


def _unverified() -> ssl.SSLContext:
    """`probes.tls_insecure: true`: encrypted, not verified (never in production)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def classify(services: Mapping[str, bool]) -> str:
    """`storage` is site-local; `database`/`redis` are shared by every site (docs/design.md)."""
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
