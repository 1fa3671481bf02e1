"""`StorageBackend.exists` (the restore gate's HEAD) on every storage family.

Real peers where they run here (moto_server for S3, Azurite for Azure, a
directory for LocalStorage); Swift against the FAKE Swift of fake_swift.py.
The contract: True for an object that is there, False for a clear "not found",
an exception for anything else (a dead backend is not an empty one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.probers import test_azure as azure
from tests.probers import test_swift as swift_tests
from tests.probers.conftest import closed_port_url
from tests.probers.fake_swift import FakeSwift
from tests.probers.test_s3 import KEYS, create_bucket
from trafficd.config.storage import DRIVERS, StorageLocation
from trafficd.probers import StorageBackend, backend_for
from trafficd.probers.base import StepError

KEY = "datastorage/registry/sha256/ab/abcdef"


def s3_location(endpoint: str) -> StorageLocation:
    params = {
        "s3_bucket": "quay-exists",
        "storage_path": "/datastorage/registry",
        "endpoint_url": endpoint,
        **KEYS,
    }
    return StorageLocation(
        name="s3",
        driver="S3Storage",
        params=DRIVERS["S3Storage"].model_validate(params),
        source="t",
    )


def local_location(root: Path) -> StorageLocation:
    params = {"storage_path": str(root / "datastorage/registry")}
    params_model = DRIVERS["LocalStorage"].model_validate(params)
    return StorageLocation(name="local", driver="LocalStorage", params=params_model, source="t")


async def contract(backend: StorageBackend) -> None:
    try:
        assert await backend.exists(KEY) is False
        await backend.put(KEY, b"layer bytes")
        assert await backend.exists(KEY) is True
        await backend.delete(KEY)
        assert await backend.exists(KEY) is False
    finally:
        await backend.close()


@pytest.mark.peers
async def test_s3(moto: str) -> None:
    await create_bucket(moto, "quay-exists")
    await contract(backend_for(s3_location(moto), timeout=2.0))


@pytest.mark.peers
async def test_azure(azurite_url: str) -> None:
    await azure.ensure_container(azurite_url)
    await contract(backend_for(azure.location(azurite_url), timeout=2.0))


async def test_swift(swift: FakeSwift) -> None:
    location = swift_tests.location(swift.base + "/v3", 3)
    await contract(backend_for(location, timeout=2.0))


async def test_local(tmp_path: Path) -> None:
    (tmp_path / "datastorage/registry").mkdir(parents=True)
    await contract(backend_for(local_location(tmp_path), timeout=2.0))


@pytest.mark.parametrize("kind", ["s3", "azure", "local"])
async def test_an_unreachable_backend_raises_rather_than_answering_missing(
    kind: str, tmp_path: Path
) -> None:
    dead = closed_port_url()
    locations: dict[str, Any] = {
        "s3": lambda: s3_location(dead),
        "azure": lambda: azure.location(dead + "/devstoreaccount1"),
        "local": lambda: local_location(tmp_path / "unmounted"),
    }
    backend = backend_for(locations[kind](), timeout=1.0)
    try:
        with pytest.raises(Exception) as caught:  # noqa: PT011 - each SDK has its own
            await backend.exists(KEY)
        error = caught.value
        known = error if isinstance(error, StepError) else backend.classify(error)
        assert known is not None and known.reason == "connect", error
    finally:
        await backend.close()
