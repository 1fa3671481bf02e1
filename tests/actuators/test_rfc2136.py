"""The rfc2136 actuator with several `servers`, against two real BIND 9 processes.

Each server is a target of its own: read back and reported on its own. An
update goes to the server being reconciled first, then to the others in order,
until one accepts it. Both servers here are primaries of their own copy of the
zone (a setup without one primary), with the same TSIG key; one refuses updates
in the last test (a secondary's answer), so its updates go to the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.actuators.test_contract import ALL_UP, BOTH_DOWN, EU_DOWN
from tests.peers import NAME, ZONE, Named
from trafficd.actuators import build
from trafficd.actuators.base import BuildContext, Reconciler
from trafficd.config.model import RFC2136Actuator
from trafficd.metrics import Metrics

pytestmark = pytest.mark.peers

US, EU = "192.0.2.10", "192.0.2.20"


def pair(tmp: Path, *, second_refuses: bool = False) -> tuple[Named, Named]:
    first, second = Named(tmp / "a"), Named(tmp / "b")
    # One key for both, as one actuator signs for both.
    (second.dir / "key.conf").write_text((first.dir / "key.conf").read_text())
    second.secret = first.secret
    if second_refuses:
        conf = second.dir / "named.conf"
        text = conf.read_text()
        start = text.index("allow-update {")
        end = text.index("};", start) + 2
        conf.write_text(text[:start] + "allow-update { none; };" + text[end:])
    return first, second


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Named, Named]]:
    first, second = pair(tmp_path)
    try:
        first.start()
        second.start()
        yield first, second
    finally:
        first.stop()
        second.stop()


def reconciler(servers: tuple[Named, ...], metrics: Metrics) -> Reconciler:
    config = RFC2136Actuator.model_validate(
        {
            "type": "rfc2136",
            "id": "dns",
            "servers": [f"127.0.0.1:{s.port}" for s in servers],
            "zone": ZONE,
            "name": NAME,
            "ttl": 30,
            "tsig": {
                "name": "trafficd-key",
                "algorithm": "hmac-sha256",
                "secret": servers[0].secret,
            },
        }
    )
    actuator = build(config, BuildContext(metrics=metrics))
    return Reconciler(actuator, metrics, attempts=2, max_backoff=0.1)


def in_sync(metrics: Metrics, server: Named) -> float | None:
    return metrics.registry.get_sample_value(
        "trafficd_actuator_in_sync", {"actuator": "dns", "target": f"127.0.0.1:{server.port}"}
    )


async def test_each_server_is_a_target_and_a_dead_one_is_reported(
    servers: tuple[Named, Named],
) -> None:
    first, second = servers
    metrics = Metrics(CollectorRegistry())
    r = reconciler((second, first), metrics)
    assert (await r.reconcile(ALL_UP)).in_sync
    second.stop()
    outcome = await r.reconcile(EU_DOWN)
    assert not outcome.in_sync and outcome.error and f"{second.port}" in outcome.error
    assert first.addresses() == {US}  # the live server follows
    assert in_sync(metrics, first) == 1 and in_sync(metrics, second) == 0
    second.start()  # back with its old copy: both sites
    assert second.addresses() == {US, EU}
    assert (await r.reconcile(EU_DOWN)).in_sync
    assert second.addresses() == {US}
    assert in_sync(metrics, second) == 1
    # Never the last address, on either server.
    outcome = await r.reconcile(BOTH_DOWN)
    assert outcome.in_sync and first.addresses() == {US} and second.addresses() == {US}
    await r.actuator.close()


async def test_a_server_that_refuses_updates_hands_them_on_and_disagrees(
    tmp_path: Path,
) -> None:
    first, refusing = pair(tmp_path, second_refuses=True)
    first.start()
    refusing.start()
    try:
        metrics = Metrics(CollectorRegistry())
        r = reconciler((refusing, first), metrics)
        assert await r.preflight() is None  # one server takes updates: ready
        outcome = await r.reconcile(EU_DOWN)
        # The refusing server's update went to the next server; it still answers both.
        assert first.addresses() == {US}
        assert refusing.addresses() == {US, EU}
        assert not outcome.in_sync
        assert in_sync(metrics, first) == 1 and in_sync(metrics, refusing) == 0
        await r.actuator.close()
    finally:
        first.stop()
        refusing.stop()
