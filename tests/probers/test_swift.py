"""The Swift prober against a FAKE Keystone + Swift (fake_swift.py): no real Swift runs here."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web

from tests.peers import free_port
from tests.probers.conftest import closed_port_url
from tests.probers.fake_swift import PASSWORD, USER, FakeSwift
from trafficd.config.storage import DRIVERS, StorageLocation
from trafficd.probers import backend_for, probe_storage
from trafficd.probers.base import StorageProbeSettings


def location(auth_url: str, version: int, password: str = PASSWORD) -> StorageLocation:
    params: dict[str, Any] = {
        "swift_container": "quay",
        "storage_path": "/datastorage/registry",
        "auth_url": auth_url,
        "swift_user": USER,
        "swift_password": password,
        "auth_version": version,
    }
    if version == 3:
        params["os_options"] = {
            "project_id": "0a1b2c3d",
            "user_domain_name": "Default",
            "region_name": "RegionOne",
        }
    if version == 2:
        params["os_options"] = {"tenant_name": "quay"}
    return StorageLocation(
        name="sw",
        driver="SwiftStorage",
        params=DRIVERS["SwiftStorage"].model_validate(params),
        source="test",
    )


AUTH_PATHS = {1: "/auth/v1.0", 2: "/v2.0", 3: "/v3"}


async def probe(backend: Any, timeout: float = 2.0, mode: str = "write") -> tuple[Any, float]:
    start = time.monotonic()
    obs = await probe_storage(
        backend,
        location="sw",
        storage_path="/datastorage/registry",
        settings=StorageProbeSettings("us-east", timeout, mode),
    )
    return obs, time.monotonic() - start


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_probe_passes_and_caches_the_token(swift: FakeSwift, version: int) -> None:
    backend = backend_for(location(swift.base + AUTH_PATHS[version], version), timeout=2.0)
    try:
        first, _ = await probe(backend)
        second, _ = await probe(backend)
        read, _ = await probe(backend, mode="read")
    finally:
        await backend.close()
    assert first.ok is True, first
    assert second.ok is True and read.ok is True
    assert swift.auth_calls == 1  # one token, reused until it expires
    assert swift.containers["quay"] == {}  # the canary was deleted


async def test_wrong_password_is_auth(swift: FakeSwift) -> None:
    backend = backend_for(location(swift.base + "/v3", 3, "wrong-password-0123"), timeout=2.0)
    try:
        obs, _ = await probe(backend)
    finally:
        await backend.close()
    assert (obs.ok, obs.reason) == (False, "auth")
    assert "wrong-password-0123" not in repr(obs)


@pytest.mark.parametrize(("mode", "reason"), [("status500", "put"), ("corrupt", "compare")])
async def test_server_faults(swift: FakeSwift, mode: str, reason: str) -> None:
    swift.mode = mode
    backend = backend_for(location(swift.base + "/v3", 3), timeout=2.0)
    try:
        obs, _ = await probe(backend)
    finally:
        await backend.close()
    assert (obs.ok, obs.reason) == (False, reason)


async def test_stopped_server_is_connect() -> None:
    backend = backend_for(location(closed_port_url() + "/v3", 3), timeout=2.0)
    try:
        obs, _ = await probe(backend)
    finally:
        await backend.close()
    assert (obs.ok, obs.reason) == (False, "connect")


async def test_hanging_server_times_out_within_the_bound() -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=504)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    backend = backend_for(location(f"http://127.0.0.1:{port}/v3", 3), timeout=0.5)
    try:
        obs, elapsed = await probe(backend, timeout=0.5)
    finally:
        await backend.close()
        release.set()
        await runner.cleanup()
    assert (obs.ok, obs.reason) == (False, "timeout")
    assert elapsed < 0.5 + 0.1
