"""The simulated Quay site answers as real Quay does, and models both storage checks.

v3.17 checks only the first preferred location; v3.18 checks every preferred
location (so a dead second location fails endtoend too). Bodies, headers, the
503 status line, debug mode's `_csrf_token` session and the failure texts are
those seen on real Quay. Real moto S3 server; the second location's endpoint is
a closed port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.peers import free_port, moto_server
from trafficd.demo.site import boto_config, build_app

pytestmark = pytest.mark.peers

Client = TestClient[web.Request, web.Application]
SECRET = "demo-site-debug-secret"


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[str]:
    with moto_server(tmp_path) as url:
        boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket="quay-eu")
        yield url


def site_args(tmp_path: Path, s3: str, **kw: Any) -> argparse.Namespace:
    (tmp_path / "secret").write_text(SECRET + "\n")
    values: dict[str, Any] = {
        "name": "eu",
        "port": 0,
        "s3": s3,
        "bucket": "quay-eu",
        "locations": None,
        "preferred": None,
        "shared": str(tmp_path),
        "quay_version": "3.18",
        "aws_max_attempts": 1,
        "debug_secret_file": str(tmp_path / "secret"),
    }
    return argparse.Namespace(**(values | kw))


@pytest.mark.parametrize(("version", "storage"), [("3.17", True), ("3.18", False)])
async def test_second_location_down(
    s3: str,
    tmp_path: Path,
    version: str,
    storage: bool,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    args = site_args(tmp_path, f"{s3},{dead}", bucket="quay-eu,quay-us", quay_version=version)
    client = await aiohttp_client(build_app(args))
    resp = await client.get("/health/endtoend")
    body = await resp.json()
    assert body["data"]["services"]["storage"] is storage
    assert resp.status == (200 if storage else 503) == body["status_code"]
    (tmp_path / "database-down").touch()
    body = await (await client.get("/health/instance")).json()
    assert body == {
        "data": {
            "services": {
                "auth": True,
                "database": False,
                "disk_space": True,
                "registry_gunicorn": True,
                "service_key": True,
                "web_gunicorn": True,
            }
        },
        "status_code": 503,
    }


async def test_answers_as_real_quay(
    s3: str, tmp_path: Path, aiohttp_client: Callable[[web.Application], Awaitable[Client]]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    args = site_args(
        tmp_path, f"{s3},{dead}", bucket="quay-eu,quay-us", locations="eustorage,usstorage"
    )
    client = await aiohttp_client(build_app(args))
    resp = await client.get("/health/endtoend")
    raw = await resp.read()
    assert (resp.status, resp.reason) == (503, "SERVICE UNAVAILABLE")
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Cache-Control"] == "no-cache, no-store, must-revalidate"
    assert resp.headers["Vary"] == "Cookie"
    assert raw == json.dumps(json.loads(raw), separators=(",", ":"), sort_keys=True).encode()
    assert "services_expanded" not in json.loads(raw)["data"]
    assert "Set-Cookie" not in resp.headers

    # Debug mode lives in the `_csrf_token` session; no `health_debug` cookie exists.
    wrong = await client.get("/health/enabledebug/not-the-secret")
    assert wrong.status == 404 and "Set-Cookie" not in wrong.headers
    enabled = await client.get(f"/health/enabledebug/{SECRET}")
    assert enabled.status == 200 and enabled.content_type == "text/html"
    assert await enabled.text() == "Health check debug information enabled"
    assert set(enabled.cookies) == {"_csrf_token"}
    (tmp_path / "redis-down").touch()
    body = await (await client.get("/health/endtoend")).json()
    data = body["data"]
    assert {"notes", "is_testing", "config_provider", "local_service_key_id", "hostname"} <= set(
        data
    )
    expanded = data["services_expanded"]
    assert expanded["auth"] == {"status": True}
    assert expanded["redis"] == {
        "status": False,
        "failure": "Could not connect to redis: Error 111 connecting to 127.0.0.1:6379. "
        "Connection refused.",
    }
    failure = expanded["storage"]["failure"]
    assert failure.startswith("Preferred storage 'usstorage' check failed: ")
    assert "Could not connect to the endpoint URL" in failure
    assert data["services"] == {"auth": True, "database": True, "redis": False, "storage": False}


async def test_a_non_preferred_location_down_is_a_message(
    s3: str, tmp_path: Path, aiohttp_client: Callable[[web.Application], Awaitable[Client]]
) -> None:
    """Real Quay v3.18 with preference [own]: another site's dead bucket leaves endtoend 200,
    `storage: true`, with a message naming that location."""
    dead = f"http://127.0.0.1:{free_port()}"
    args = site_args(
        tmp_path,
        f"{s3},{dead}",
        bucket="quay-eu,quay-us",
        locations="eustorage,usstorage",
        preferred=1,
    )
    client = await aiohttp_client(build_app(args))
    assert (await client.get(f"/health/enabledebug/{SECRET}")).status == 200
    resp = await client.get("/health/endtoend")
    data = (await resp.json())["data"]
    assert resp.status == 200 and data["services"]["storage"] is True
    message = data["services_expanded"]["storage"]
    assert message["status"] is True
    assert message["message"].startswith("Non-preferred storage 'usstorage' unavailable: ")


async def test_boto_retries_are_an_option(
    tmp_path: Path, aiohttp_client: Callable[[web.Application], Awaitable[Client]]
) -> None:
    """Quay's AWS_MAX_ATTEMPTS: 1 (the default here) answers a dead bucket in tens of ms;
    more attempts back off in between; 0 keeps boto's own (5 attempts: 7-10 s, as on
    real Quay). A bucket endpoint that drops every connection counts them."""
    attempts = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        args = site_args(tmp_path, f"http://127.0.0.1:{port}", aws_max_attempts=3)
        client = await aiohttp_client(build_app(args))
        body = await (await client.get("/health/endtoend")).json()
    finally:
        server.close()
        await server.wait_closed()
    assert body["data"]["services"]["storage"] is False
    assert attempts == 3
    assert boto_config(0).retries is None  # boto's defaults, untouched
