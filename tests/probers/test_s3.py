"""The S3-family prober against a real moto_server, one test per Quay driver name.

Each location is configured the way Quay's config.yaml configures it; where
Quay's endpoint rules point at AWS or Google, `probes.storage_endpoints`
redirects this vantage to the test server.
"""

from __future__ import annotations

import contextlib
import time
import urllib.request
from typing import Any

import pytest
from aiobotocore.session import get_session

from tests.peers import FaultProxy
from tests.probers.conftest import closed_port_url, make_proxy
from trafficd.config.storage import DRIVERS, StorageLocation
from trafficd.probers import backend_for, probe_storage
from trafficd.probers.base import StorageProbeSettings
from trafficd.probers.s3 import s3_target

KEYS = {"s3_access_key": "AKIATESTACCESSKEY", "s3_secret_key": "test-secret-key-for-moto"}
RGW = {"access_key": "AKIATESTACCESSKEY", "secret_key": "test-secret-key-for-moto"}


def location(driver: str, params: dict[str, Any]) -> StorageLocation:
    return StorageLocation(
        name="loc", driver=driver, params=DRIVERS[driver].model_validate(params), source="test"
    )


def quay_style(driver: str, moto: str) -> tuple[dict[str, Any], bool]:
    """(params as Quay's config.yaml would have them, whether the endpoint must be overridden)."""
    host, port = moto.removeprefix("http://").split(":")
    bucket = f"quay-{driver.lower()}"
    s3 = {"s3_bucket": bucket, "storage_path": "/datastorage/registry", **KEYS}
    rgw = {
        "bucket_name": bucket,
        "storage_path": "/datastorage/registry",
        "hostname": host,
        "port": int(port),
        "is_secure": False,
        **RGW,
    }
    table: dict[str, tuple[dict[str, Any], bool]] = {
        "S3Storage": ({**s3, "endpoint_url": moto}, False),
        "STSS3Storage": (
            {
                "s3_bucket": bucket,
                "storage_path": "/registry",
                "sts_role_arn": "arn:aws:iam::123456789012:role/quay",
                "sts_user_access_key": "AKIASTSUSER",
                "sts_user_secret_key": "sts-secret",
                "endpoint_url": moto,
            },
            False,
        ),
        "CloudFrontedS3Storage": (
            {
                **s3,
                "host": "s3.amazonaws.com",
                "cloudfront_distribution_domain": "d1.cloudfront.net",
                "cloudfront_key_id": "K1",
                "cloudfront_privatekey_filename": "/conf/cf.pem",
            },
            True,
        ),
        "CloudFlareStorage": (
            {**s3, "s3_region": "us-east-1", "cloudflare_domain": "cdn.example.com"},
            True,
        ),
        "AkamaiS3Storage": (
            {
                **s3,
                "s3_region": "us-east-1",
                "akamai_domain": "a.example.net",
                "akamai_shared_secret": "akamai-secret",
            },
            True,
        ),
        "MultiCDNStorage": (
            {
                "storage_config": {**s3, "s3_region": "us-east-1"},
                "providers": {"cf": ["CloudFlareStorage", {"cloudflare_domain": "c.example.com"}]},
                "default_provider": "cf",
            },
            True,
        ),
        "GoogleCloudStorage": (
            {
                "bucket_name": bucket,
                "storage_path": "/registry",
                "access_key": "GOOGTESTKEY",
                "secret_key": "goog-secret",
            },
            True,
        ),
        "RadosGWStorage": (rgw, False),
        "RHOCSStorage": (rgw, False),
        "IBMCloudStorage": (rgw, False),
    }
    return table[driver]


S3_DRIVERS = [d for d in DRIVERS if d not in ("AzureStorage", "SwiftStorage", "LocalStorage")]
SETTINGS = StorageProbeSettings(vantage="us-east", timeout=2.0)


def s3_client(endpoint: str) -> Any:
    """An S3 client of the test's own on `endpoint` (moto checks no signature)."""
    return get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
    )


async def create_bucket(endpoint: str, bucket: str) -> None:
    async with s3_client(endpoint) as s3:
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            await s3.create_bucket(Bucket=bucket)


async def list_keys(endpoint: str, bucket: str) -> list[str]:
    async with s3_client(endpoint) as s3:
        answer = await s3.list_objects_v2(Bucket=bucket)
        return [o["Key"] for o in answer.get("Contents", [])]


def test_every_s3_family_driver_is_covered() -> None:
    assert set(S3_DRIVERS) == {
        "S3Storage",
        "STSS3Storage",
        "CloudFrontedS3Storage",
        "CloudFlareStorage",
        "AkamaiS3Storage",
        "MultiCDNStorage",
        "GoogleCloudStorage",
        "RadosGWStorage",
        "RHOCSStorage",
        "IBMCloudStorage",
    }


@pytest.mark.peers
@pytest.mark.parametrize("driver", S3_DRIVERS)
async def test_write_probe_passes_and_cleans_up(driver: str, moto: str) -> None:
    params, override = quay_style(driver, moto)
    loc = location(driver, params)
    target = s3_target(loc, moto if override else None)
    await create_bucket(moto, target.bucket)
    backend = backend_for(loc, timeout=2.0, endpoint=moto if override else None)
    try:
        obs = await probe_storage(
            backend, location="loc", storage_path=target.storage_path, settings=SETTINGS
        )
        read = await probe_storage(
            backend,
            location="loc",
            storage_path=target.storage_path,
            settings=StorageProbeSettings("us-east", 2.0, "read"),
        )
    finally:
        await backend.close()
    assert obs.ok is True, obs
    assert obs.reason is None
    assert obs.detail is not None and "put=" in obs.detail and "delete=" in obs.detail
    assert read.ok is True
    assert await list_keys(moto, target.bucket) == []  # the canary was deleted


def test_quay_endpoint_rules() -> None:
    loc = location(
        "S3Storage",
        {
            "s3_bucket": "b",
            "storage_path": "/p",
            "s3_region": "eu-west-1",
            "endpoint_url": "http://ignored:1",
        },
    )
    assert s3_target(loc).endpoint_url == "https://s3.eu-west-1.amazonaws.com"
    loc = location(
        "S3Storage",
        {"s3_bucket": "b", "storage_path": "/p", "host": "s3.example.com", "port": 8443},
    )
    assert s3_target(loc).endpoint_url == "https://s3.example.com:8443"
    loc = location(
        "RadosGWStorage",
        {"bucket_name": "b", "storage_path": "/p", "hostname": "rgw", "is_secure": True, **RGW},
    )
    assert s3_target(loc).endpoint_url == "https://rgw"
    loc = location(
        "GoogleCloudStorage",
        {"bucket_name": "b", "storage_path": "/p", "access_key": "k", "secret_key": "s"},
    )
    assert s3_target(loc).endpoint_url == "https://storage.googleapis.com"
    assert "secret" not in repr(s3_target(loc))


@pytest.mark.peers
@pytest.mark.parametrize(("driver", "sse"), [("S3Storage", True), ("RadosGWStorage", False)])
async def test_uploads_send_sse_exactly_where_quay_does(
    driver: str, sse: bool, moto: str, proxy_factory: list[FaultProxy]
) -> None:
    proxy = await make_proxy(proxy_factory, moto)
    params, _ = quay_style(driver, moto)
    loc = location(driver, params)
    await create_bucket(moto, s3_target(loc).bucket)
    backend = backend_for(loc, timeout=2.0, endpoint=proxy.url)
    try:
        obs = await probe_storage(backend, location="loc", storage_path="/r", settings=SETTINGS)
    finally:
        await backend.close()
    assert obs.ok is True, obs
    puts = [h for method, _, h in proxy.requests if method == "PUT"]
    assert len(puts) == 1
    header = {k.lower(): v for k, v in puts[0].items()}.get("x-amz-server-side-encryption")
    assert header == ("AES256" if sse else None)


async def s3_probe_through(proxy_url: str, moto: str, timeout: float = 2.0) -> Any:
    params, _ = quay_style("S3Storage", moto)
    loc = location("S3Storage", params)
    await create_bucket(moto, s3_target(loc).bucket)
    backend = backend_for(loc, timeout=timeout, endpoint=proxy_url)
    try:
        return await probe_storage(
            backend,
            location="loc",
            storage_path="/r",
            settings=StorageProbeSettings("us-east", timeout),
        )
    finally:
        await backend.close()


async def s3_probe_latency(proxy_url: str, moto: str, timeout: float) -> tuple[Any, float]:
    params, _ = quay_style("S3Storage", moto)
    loc = location("S3Storage", params)
    await create_bucket(moto, s3_target(loc).bucket)
    backend = backend_for(loc, timeout=timeout, endpoint=proxy_url)
    try:
        start = time.monotonic()
        obs = await probe_storage(
            backend,
            location="loc",
            storage_path="/r",
            settings=StorageProbeSettings("us-east", timeout),
        )
        return obs, time.monotonic() - start
    finally:
        await backend.close()


@pytest.mark.peers
async def test_server_stopped_is_connect(moto: str) -> None:
    obs = await s3_probe_through(closed_port_url(), moto)
    assert (obs.ok, obs.reason) == (False, "connect")


@pytest.mark.peers
async def test_hanging_server_times_out_within_the_bound(
    moto: str, proxy_factory: list[FaultProxy]
) -> None:
    proxy = await make_proxy(proxy_factory, moto)
    proxy.mode = "hang"
    obs, elapsed = await s3_probe_latency(proxy.url, moto, timeout=0.5)
    assert (obs.ok, obs.reason) == (False, "timeout")
    assert elapsed < 0.5 + 0.1


@pytest.mark.peers
async def test_server_error_names_the_step_and_code(
    moto: str, proxy_factory: list[FaultProxy]
) -> None:
    proxy = await make_proxy(proxy_factory, moto)
    proxy.mode = "status500"
    obs = await s3_probe_through(proxy.url, moto)
    assert (obs.ok, obs.reason) == (False, "put")
    assert obs.detail is not None and obs.detail.startswith("InternalError (HTTP 500)")


@pytest.mark.peers
async def test_corrupted_read_fails_the_compare(moto: str, proxy_factory: list[FaultProxy]) -> None:
    proxy = await make_proxy(proxy_factory, moto)
    proxy.mode = "corrupt"
    obs = await s3_probe_through(proxy.url, moto)
    assert obs.ok is False
    assert obs.reason == "compare", obs


@pytest.mark.peers
async def test_wrong_credentials_are_auth_and_never_show_the_key(moto: str) -> None:
    def reset_auth(value: bytes) -> None:
        request = urllib.request.Request(
            f"{moto}/moto-api/reset-auth", data=value, headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(request, timeout=5).read()

    params, _ = quay_style("S3Storage", moto)
    await create_bucket(moto, params["s3_bucket"])
    backend = backend_for(location("S3Storage", params), timeout=2.0, endpoint=moto)
    reset_auth(b"0")  # from now on moto refuses every key: 403 InvalidAccessKeyId
    try:
        obs = await probe_storage(backend, location="loc", storage_path="/r", settings=SETTINGS)
    finally:
        reset_auth(b"inf")
        await backend.close()
    assert (obs.ok, obs.reason) == (False, "auth")
    assert "InvalidAccessKeyId" in (obs.detail or "")
    assert KEYS["s3_secret_key"] not in repr(obs)
    assert KEYS["s3_access_key"] not in repr(obs)
