"""The webhook actuator: POSTs an event on every transition, refused change and manual command.

A `notify` actuator: it has no backend state to reconcile (its plans are
empty); the daemon hands it each audit event. An event is a JSON object
with at least `kind` (`transition`, `refused`, `manual`, `shutdown_blocked`), `site`, `from`,
`to`, `reasons`, `vantage` and `time` (RFC 3339, UTC). `format: json` posts
the event as is; `format: alertmanager` wraps it the way Alertmanager's
webhook receiver posts (version 4: `status`, `alerts[]` with `labels`,
`annotations`, `startsAt`), so receivers written for Alertmanager accept it.
With `token` an `Authorization: Bearer` header is sent; with `hmac_secret`
the header `X-Trafficd-Signature: sha256=<hex HMAC-SHA256 of the body>`.
Failed POSTs are retried with bounded backoff, then counted and reported.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import ssl
from collections.abc import Mapping
from typing import Any, Never

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from trafficd.actuators.base import (
    Actuator,
    ActuatorError,
    BuildContext,
    Desired,
    Notifying,
    Plan,
    Role,
)
from trafficd.config.model import WebhookActuator
from trafficd.metrics import Metrics

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Trafficd-Signature"


def alertmanager_payload(event: Mapping[str, Any]) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) for one event: firing unless the site is active."""
    kind = str(event.get("kind", "event"))
    blocked = kind == "shutdown_blocked"
    firing = bool(event.get("blocked")) if blocked else event.get("to") not in (None, "active")
    labels = {
        "alertname": "TrafficdSite" + "".join(w.capitalize() for w in kind.split("_")),
        "site": str(event.get("site", "")),
        "state": str(event.get("to") or ""),
        "vantage": str(event.get("vantage", "")),
        "severity": "critical" if firing else "info",
    }
    if event.get("cause"):
        labels["cause"] = str(event["cause"])
    if event.get("rule"):
        labels["rule"] = str(event["rule"])
    summary = f"site {event.get('site')}: {event.get('from')} -> {event.get('to')}"
    if event.get("kind") == "refused":
        summary = f"site {event.get('site')}: change refused by {event.get('rule')}"
    if blocked:
        summary = (
            f"site {event.get('site')}: instances kept up, traffic not confirmed off"
            if firing
            else f"site {event.get('site')}: traffic confirmed off"
        )
    alert = {
        "status": "firing" if firing else "resolved",
        "labels": labels,
        "annotations": {
            "summary": summary,
            "description": "; ".join(
                str(r) for r in event.get("reasons", event.get("holders", []))
            ),
        },
        "startsAt": event.get("time", ""),
        "endsAt": "0001-01-01T00:00:00Z" if firing else event.get("time", ""),
        "generatorURL": "",
        "fingerprint": hashlib.sha256(labels["site"].encode()).hexdigest()[:16],
    }
    return {
        "version": "4",
        "groupKey": f'{{}}:{{site="{labels["site"]}"}}',
        "truncatedAlerts": 0,
        "status": alert["status"],
        "receiver": "trafficd",
        "groupLabels": {"site": labels["site"]},
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": "",
        "alerts": [alert],
    }


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Webhook(Actuator[None, Never], Notifying):
    role: Role = "notify"

    def __init__(
        self,
        config: WebhookActuator,
        context: BuildContext | None = None,
        *,
        attempts: int = 4,
        max_backoff: float = 5.0,
    ) -> None:
        self.ident = config.ident
        self.config = config
        self.metrics: Metrics | None = context.metrics if context else None
        self.attempts = attempts
        self.max_backoff = max_backoff
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=config.tls_ca_file) if config.tls_ca_file else True
        )
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"Content-Type": "application/json", "User-Agent": "trafficd"}
            if self.config.token is not None:
                headers["Authorization"] = f"Bearer {self.config.token.get_secret_value()}"
            self._session = aiohttp.ClientSession(
                headers=headers, timeout=aiohttp.ClientTimeout(total=self.config.timeout)
            )
        return self._session

    def body(self, event: Mapping[str, Any]) -> bytes:
        payload = alertmanager_payload(event) if self.config.format == "alertmanager" else event
        return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()

    async def _post(self, body: bytes) -> None:
        headers = {}
        if self.config.hmac_secret is not None:
            headers[SIGNATURE_HEADER] = sign(
                self.config.hmac_secret.get_secret_value().encode(), body
            )
        try:
            async with self.session().post(
                self.config.url, data=body, headers=headers, ssl=self._ssl, allow_redirects=False
            ) as resp:
                if resp.status >= 300:
                    raise ActuatorError(f"{self.ident}: the receiver answered HTTP {resp.status}")
        except aiohttp.ClientError as exc:
            raise ActuatorError(f"{self.ident}: {type(exc).__name__}: {exc}") from None
        except TimeoutError:
            raise ActuatorError(
                f"{self.ident}: no answer within {self.config.timeout:g}s"
            ) from None

    async def notify(self, event: Mapping[str, Any]) -> str | None:
        """Sends one event; retried, counted; returns None when delivered, else the error."""
        body = self.body(event)
        error: str | None = None
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.attempts),
                wait=wait_exponential(multiplier=0.1, max=self.max_backoff),
                retry=retry_if_exception_type(ActuatorError),
                reraise=True,
            ):
                with attempt:
                    await self._post(body)
        except ActuatorError as exc:
            error = str(exc)
            log.error("%s: event for site %s not delivered: %s", self.ident, event.get("site"), exc)
        if self.metrics is not None:
            result = "error" if error else "success"
            self.metrics.actuations.labels(
                actuator=self.ident, target=self.ident, result=result
            ).inc()
        return error

    # --- the reconciler's interface: nothing to reconcile ---------------------------------

    async def read(self) -> None:
        return None

    def plan(self, current: None, desired: Desired) -> Plan[Never]:
        return Plan()

    async def apply(self, plan: Plan[Never]) -> None:
        return None

    async def preflight(self) -> None:
        """Nothing is sent: a test event would page someone. The URL was checked at load."""
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
