"""The Azure prober against Azurite (the Azure Blob emulator, from npm)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from azure.storage.blob.aio import BlobServiceClient

from tests.peers import AZURITE_ACCOUNT, AZURITE_KEY, FaultProxy
from tests.probers.conftest import closed_port_url, make_proxy
from trafficd.config.storage import DRIVERS, StorageLocation
from trafficd.probers import backend_for, probe_storage
from trafficd.probers.base import StorageProbeSettings

CONTAINER = "quay-container"


def location(endpoint: str, key: str = AZURITE_KEY) -> StorageLocation:
    params = {
        "azure_container": CONTAINER,
        "storage_path": "/datastorage/registry",
        "azure_account_name": AZURITE_ACCOUNT,
        "azure_account_key": key,
        "endpoint_url": endpoint,
    }
    return StorageLocation(
        name="az",
        driver="AzureStorage",
        params=DRIVERS["AzureStorage"].model_validate(params),
        source="test",
    )


async def ensure_container(url: str) -> None:
    creds = {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
    async with BlobServiceClient(account_url=url, credential=creds) as service:
        container = service.get_container_client(CONTAINER)
        if not await container.exists():
            await container.create_container()


async def blobs(url: str) -> list[str]:
    creds = {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
    async with BlobServiceClient(account_url=url, credential=creds) as service:
        return [b.name async for b in service.get_container_client(CONTAINER).list_blobs()]


async def probe(
    endpoint: str, *, key: str = AZURITE_KEY, timeout: float = 2.0, mode: str = "write"
) -> tuple[Any, float]:
    backend = backend_for(location(endpoint, key), timeout=timeout)
    try:
        start = time.monotonic()
        obs = await probe_storage(
            backend,
            location="az",
            storage_path="/datastorage/registry",
            settings=StorageProbeSettings("us-east", timeout, mode),
        )
        return obs, time.monotonic() - start
    finally:
        await backend.close()


@pytest.mark.peers
async def test_write_and_read_probes_pass_and_clean_up(azurite_url: str) -> None:
    await ensure_container(azurite_url)
    obs, _ = await probe(azurite_url)
    assert obs.ok is True, obs
    read, _ = await probe(azurite_url, mode="read")
    assert read.ok is True, read
    assert await blobs(azurite_url) == []


async def test_stopped_server_is_connect() -> None:
    obs, _ = await probe(closed_port_url() + f"/{AZURITE_ACCOUNT}")
    assert (obs.ok, obs.reason) == (False, "connect")


@pytest.mark.peers
async def test_wrong_key_is_auth_and_never_shows_the_key(azurite_url: str) -> None:
    await ensure_container(azurite_url)
    wrong = "d3JvbmctYXp1cml0ZS1rZXktZm9yLXRoZS10ZXN0LTAxMjM0NTY3ODk="
    obs, _ = await probe(azurite_url, key=wrong)
    assert (obs.ok, obs.reason) == (False, "auth")
    assert "403" in (obs.detail or "")
    assert wrong not in repr(obs)


@pytest.mark.peers
async def test_hanging_server_times_out_within_the_bound(
    azurite_url: str, proxy_factory: list[FaultProxy]
) -> None:
    proxy = await make_proxy(proxy_factory, azurite_url.rsplit("/", 1)[0])
    proxy.mode = "hang"
    obs, elapsed = await probe(f"{proxy.url}/{AZURITE_ACCOUNT}", timeout=0.5)
    assert (obs.ok, obs.reason) == (False, "timeout")
    assert elapsed < 0.5 + 0.1


@pytest.mark.peers
async def test_server_error_names_the_step(
    azurite_url: str, proxy_factory: list[FaultProxy]
) -> None:
    proxy = await make_proxy(proxy_factory, azurite_url.rsplit("/", 1)[0])
    proxy.mode = "status500"
    obs, _ = await probe(f"{proxy.url}/{AZURITE_ACCOUNT}")
    assert (obs.ok, obs.reason) == (False, "put")
    assert "HTTP 500" in (obs.detail or "")


@pytest.mark.peers
async def test_corrupted_read_fails_the_compare(
    azurite_url: str, proxy_factory: list[FaultProxy]
) -> None:
    await ensure_container(azurite_url)
    proxy = await make_proxy(proxy_factory, azurite_url.rsplit("/", 1)[0])
    proxy.mode = "corrupt"
    obs, _ = await probe(f"{proxy.url}/{AZURITE_ACCOUNT}")
    assert (obs.ok, obs.reason) == (False, "compare")
