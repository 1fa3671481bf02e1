"""The webhook actuator against a real aiohttp receiver that checks signature and payload."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from tests.peers import free_port
from trafficd.actuators import build
from trafficd.actuators.base import BuildContext
from trafficd.actuators.webhook import Webhook, alertmanager_payload
from trafficd.config.model import WebhookActuator
from trafficd.metrics import Metrics

HMAC = "hmac-secret-for-the-test"
TOKEN = "bearer-token-for-the-test"

EVENT = {
    "kind": "transition",
    "site": "eu",
    "from": "active",
    "to": "draining",
    "cause": "storage",
    "reasons": ["location eustorage: put failed (connect) 3 rounds", "eu corroborates"],
    "vantage": "us-east",
    "time": "2026-11-23T10:00:00Z",
}


class Receiver:
    """Answers `fail_first` POSTs with 503, then verifies and keeps each delivery."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.rejected: list[str] = []
        self.fail_first = 0
        self.attempts = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.attempts <= self.fail_first:
            return web.Response(status=503)
        body = await request.read()
        expected = "sha256=" + hmac.new(HMAC.encode(), body, hashlib.sha256).hexdigest()
        signature = request.headers.get("X-Trafficd-Signature", "")
        if not hmac.compare_digest(signature, expected):
            self.rejected.append("signature")
            return web.Response(status=401)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.rejected.append("token")
            return web.Response(status=401)
        self.received.append(json.loads(body))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield rec, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


def webhook(url: str, metrics: Metrics | None = None, **extra: Any) -> Webhook:
    cfg = WebhookActuator.model_validate(
        {"type": "webhook", "url": url, "token": TOKEN, "hmac_secret": HMAC, **extra}
    )
    hook = build(cfg, BuildContext(metrics=metrics))
    assert isinstance(hook, Webhook)
    hook.max_backoff = 0.01
    return hook


async def test_json_event_signed_and_delivered(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    registry = CollectorRegistry()
    hook = webhook(url, Metrics(registry))
    assert await hook.notify(EVENT) is None
    await hook.close()
    assert rec.received == [EVENT]
    assert rec.rejected == []
    assert (
        registry.get_sample_value(
            "trafficd_actuations_total",
            {"actuator": "webhook", "target": "webhook", "result": "success"},
        )
        == 1
    )


async def test_alertmanager_format(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    hook = webhook(url, format="alertmanager")
    assert await hook.notify(EVENT) is None
    assert await hook.notify({**EVENT, "from": "restoring", "to": "active", "reasons": []}) is None
    await hook.close()
    firing, resolved = rec.received
    assert firing["version"] == "4" and firing["status"] == "firing"
    alert = firing["alerts"][0]
    assert alert["labels"] == {
        "alertname": "TrafficdSiteTransition",
        "site": "eu",
        "state": "draining",
        "vantage": "us-east",
        "severity": "critical",
        "cause": "storage",
    }
    assert alert["annotations"]["summary"] == "site eu: active -> draining"
    assert alert["annotations"]["description"].startswith("location eustorage: put failed")
    assert alert["startsAt"] == "2026-11-23T10:00:00Z"
    assert resolved["status"] == "resolved" and resolved["alerts"][0]["endsAt"] == EVENT["time"]
    assert alert["fingerprint"] == resolved["alerts"][0]["fingerprint"]


def test_alertmanager_format_of_a_blocked_shutdown() -> None:
    blocked = {
        "kind": "shutdown_blocked",
        "site": "eu",
        "blocked": True,
        "holders": ["lb /run/haproxy/admin.sock: No such file or directory"],
        "vantage": "us-east",
        "time": "2026-11-23T10:05:00Z",
    }
    firing = alertmanager_payload(blocked)
    alert = firing["alerts"][0]
    assert firing["status"] == "firing"
    assert alert["labels"]["alertname"] == "TrafficdSiteShutdownBlocked"
    assert alert["annotations"] == {
        "summary": "site eu: instances kept up, traffic not confirmed off",
        "description": "lb /run/haproxy/admin.sock: No such file or directory",
    }
    resolved = alertmanager_payload({**blocked, "blocked": False, "holders": []})
    assert resolved["status"] == "resolved"
    assert resolved["alerts"][0]["annotations"]["summary"] == "site eu: traffic confirmed off"


async def test_retried_until_delivered(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    rec.fail_first = 2
    hook = webhook(url)
    assert await hook.notify(EVENT) is None
    await hook.close()
    assert rec.attempts == 3 and rec.received == [EVENT]


async def test_gives_up_and_reports_without_the_secrets(receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    rec.fail_first = 100
    registry = CollectorRegistry()
    hook = webhook(url, Metrics(registry))
    error = await hook.notify(EVENT)
    await hook.close()
    assert error == "webhook: the receiver answered HTTP 503"
    assert rec.attempts == 4
    assert (
        registry.get_sample_value(
            "trafficd_actuations_total",
            {"actuator": "webhook", "target": "webhook", "result": "error"},
        )
        == 1
    )


async def test_wrong_hmac_secret_is_refused_by_the_receiver(
    receiver: tuple[Receiver, str],
) -> None:
    rec, url = receiver
    hook = webhook(url, hmac_secret="not-the-receivers-secret")
    error = await hook.notify(EVENT)
    await hook.close()
    assert error == "webhook: the receiver answered HTTP 401"
    assert rec.rejected == ["signature"] * 4
    assert HMAC not in error and "not-the-receivers-secret" not in error


async def test_unreachable_receiver() -> None:
    hook = webhook(f"http://127.0.0.1:{free_port()}/hook")
    error = await hook.notify(EVENT)
    await hook.close()
    assert error is not None and error.startswith("webhook: ClientConnectorError")
    assert TOKEN not in error
