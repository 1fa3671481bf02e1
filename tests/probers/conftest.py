"""Peers for the prober tests: moto_server and Azurite per module, fault proxies per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.peers import FaultProxy, azurite, free_port, moto_server
from tests.probers.fake_swift import FakeSwift


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


@pytest.fixture(scope="module")
def azurite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with azurite(tmp_path_factory.mktemp("azurite")) as url:
        yield url


@pytest.fixture
async def swift() -> AsyncIterator[FakeSwift]:
    """The FAKE Keystone + Swift of fake_swift.py (no real Swift runs here)."""
    fake = FakeSwift()
    runner = web.AppRunner(fake.app(), shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.base = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


@pytest.fixture
async def proxy_factory() -> AsyncIterator[list[FaultProxy]]:
    proxies: list[FaultProxy] = []
    yield proxies
    for p in proxies:
        await p.close()


async def make_proxy(proxies: list[FaultProxy], upstream: str) -> FaultProxy:
    proxy = await FaultProxy(upstream).start()
    proxies.append(proxy)
    return proxy


def closed_port_url() -> str:
    from tests.peers import free_port

    return f"http://127.0.0.1:{free_port()}"


__all__ = ["Path", "closed_port_url", "make_proxy"]
