"""The simulated Quay site models both Quay behaviours of the storage health check.

v3.17 checks only the first preferred location; v3.18 checks every preferred
location (so a dead second location fails endtoend too). Real moto S3 server;
the second location's endpoint is a closed port.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import boto3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.peers import free_port, moto_server
from trafficd.demo.site import build_app

pytestmark = pytest.mark.peers

Client = TestClient[web.Request, web.Application]


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


@pytest.mark.parametrize(("version", "storage"), [("3.17", True), ("3.18", False)])
async def test_second_location_down(
    s3: str,
    tmp_path: Path,
    version: str,
    storage: bool,
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    args = argparse.Namespace(
        name="eu",
        port=0,
        s3=f"{s3},{dead}",
        bucket="quay-eu,quay-us",
        shared=str(tmp_path),
        quay_version=version,
    )
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
