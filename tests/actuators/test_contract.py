"""One contract, four real backends: BIND 9 (RFC 2136), HAProxy, PowerDNS, Route 53 (moto).

Every scenario runs against each actuator through `Reconciler`, and checks
what the backend itself serves: plain DNS answers from BIND and PowerDNS,
`show servers state` and real HTTP through HAProxy's frontend, Route 53's
record list. PowerDNS runs twice: with plain RRsets, and with `weighted: true`
(a LUA record, answering one address per query).
"""

from __future__ import annotations

import dataclasses
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from prometheus_client import CollectorRegistry

from tests.peers import NAME, ZONE, FaultProxy, HAProxyPeer, Named, PowerDNSPeer, moto_server
from trafficd.actuators import build
from trafficd.actuators.base import DesiredSite, Reconciler
from trafficd.actuators.powerdns import parse_lua
from trafficd.config.model import (
    HAProxyActuator,
    PowerDNSActuator,
    RFC2136Actuator,
    Route53Actuator,
)
from trafficd.metrics import Metrics
from trafficd.model import Cause, State

pytestmark = pytest.mark.peers

ADDRESSES = {"us": "192.0.2.10", "eu": "192.0.2.20"}


def targets(**states: tuple[State, Cause | None]) -> dict[str, DesiredSite]:
    out = {}
    for name in ("eu", "us"):
        state, cause = states.get(name, (State.ACTIVE, None))
        out[name] = DesiredSite(
            name=name,
            state=state,
            cause=cause,
            weight=100 if state is State.ACTIVE else 0,
            configured_weight=100,
            addresses=(ADDRESSES[name],),
            haproxy=("quay", name),
            set_identifier=name,
        )
    return out


ALL_UP = targets()
EU_DOWN = targets(eu=(State.DRAINED, Cause.STORAGE))
# eu on the first step of a gradual return: active at 10 of its configured 100.
EU_STEP = {**ALL_UP, "eu": dataclasses.replace(ALL_UP["eu"], weight=10)}
EU_MANUAL = targets(eu=(State.DRAINING, Cause.MANUAL))
BOTH_DOWN = targets(eu=(State.DRAINED, Cause.STORAGE), us=(State.DRAINED, Cause.STORAGE))


class Harness:
    """How one backend is set up, observed, broken and tampered with."""

    kind = ""
    config: Any

    async def serving(self) -> set[str]:
        """The sites the backend sends traffic to now, as the backend itself says."""
        raise NotImplementedError

    async def tamper(self) -> None:
        """A hand edit that the next reconcile must correct."""
        raise NotImplementedError

    async def weights(self) -> dict[str, int] | None:
        """The weight the backend holds for each site; None for plain address sets."""
        return None

    async def break_backend(self) -> None:
        raise NotImplementedError

    async def heal_backend(self) -> None:
        raise NotImplementedError

    def bad_credentials(self) -> Any:
        raise NotImplementedError

    secret = ""


def sites_of(addresses: set[str]) -> set[str]:
    return {name for name, a in ADDRESSES.items() if a in addresses}


class BindHarness(Harness):
    kind = "rfc2136"

    def __init__(self, tmp: Path) -> None:
        self.named = Named(tmp)
        self.named.start()
        self.secret = self.named.secret
        self.config = self._config(self.named.secret)

    def _config(self, secret: str) -> RFC2136Actuator:
        return RFC2136Actuator.model_validate(
            {
                "type": "rfc2136",
                "id": "bind",
                "server": f"127.0.0.1:{self.named.port}",
                "zone": ZONE,
                "name": NAME,
                "ttl": 30,
                "tsig": {"name": "trafficd-key", "algorithm": "hmac-sha256", "secret": secret},
            }
        )

    async def serving(self) -> set[str]:
        return sites_of(self.named.addresses())

    async def tamper(self) -> None:
        import dns.name
        import dns.query
        import dns.tsigkeyring
        import dns.update

        ring = dns.tsigkeyring.from_text({"trafficd-key": ("hmac-sha256", self.secret)})
        update = dns.update.UpdateMessage(
            ZONE, keyring=ring, keyname=dns.name.from_text("trafficd-key")
        )
        update.add(NAME, 30, "A", "198.51.100.99")
        dns.query.tcp(update, "127.0.0.1", port=self.named.port, timeout=3)
        assert "198.51.100.99" in self.named.addresses()

    async def drift_gone(self) -> bool:
        return "198.51.100.99" not in self.named.addresses()

    async def break_backend(self) -> None:
        self.named.stop()

    async def heal_backend(self) -> None:
        self.named.start()

    def bad_credentials(self) -> RFC2136Actuator:
        return self._config("d3JvbmctdHNpZy1rZXktZm9yLXRoZS10ZXN0LTAxMjM=")

    def close(self) -> None:
        self.named.stop()


class HAProxyHarness(Harness):
    kind = "haproxy"

    def __init__(self, tmp: Path) -> None:
        self.peer = HAProxyPeer(tmp)
        self.peer.start_all()
        self.config = HAProxyActuator.model_validate(
            {"type": "haproxy", "id": "lb", "sockets": [self.peer.admin_socket]}
        )

    def _states(self) -> dict[str, str]:
        import socket as sock

        s = sock.socket(sock.AF_UNIX)
        s.connect(self.peer.admin_socket)
        s.sendall(b"show servers state quay\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        lines = [line.split() for line in data.decode().splitlines()[2:] if line.strip()]
        return {f[3]: f[6] for f in lines}  # srv_name -> srv_admin_state

    async def serving(self) -> set[str]:
        by_state = {name for name, admin in self._states().items() if int(admin) == 0}
        # One round of roundrobin at least: every ready server answers some of them.
        weights = self.peer.weights()
        hits = self.peer.hits(max(20, sum(weights[name] for name in by_state)))
        # Real requests through the frontend reach exactly the serving servers.
        assert set(hits) == by_state, (hits, by_state)
        return by_state

    async def weights(self) -> dict[str, int] | None:
        return self.peer.weights()

    async def tamper(self) -> None:
        import socket as sock

        s = sock.socket(sock.AF_UNIX)
        s.connect(self.peer.admin_socket)
        s.sendall(b"set server quay/us state maint\n")
        s.recv(1024)
        s.close()

    async def drift_gone(self) -> bool:
        return self._states()["us"] == "0"

    async def break_backend(self) -> None:
        self.peer.stop()

    async def heal_backend(self) -> None:
        self.peer.start()  # a fresh HAProxy: runtime state lost, as after a reload

    def bad_credentials(self) -> HAProxyActuator:
        return HAProxyActuator.model_validate(
            {"type": "haproxy", "id": "lb", "socket": self.peer.user_socket}
        )

    def close(self) -> None:
        self.peer.stop_all()


class PowerDNSHarness(Harness):
    kind = "powerdns"

    def __init__(self, tmp: Path, proxy: FaultProxy, *, weighted: bool = False) -> None:
        self.weighted = weighted
        if weighted:
            self.kind = "powerdns-lua"
        self.peer = PowerDNSPeer(tmp, lua_records=weighted)
        self.peer.start()
        self.peer.create_zone()
        self.proxy = proxy
        self.secret = PowerDNSPeer.API_KEY
        self.config = self._config(PowerDNSPeer.API_KEY)

    def _config(self, key: str) -> PowerDNSActuator:
        return PowerDNSActuator.model_validate(
            {
                "type": "powerdns",
                "id": "pdns",
                "api_url": self.proxy.url,
                "api_key": key,
                "zone": ZONE,
                "name": NAME,
                "ttl": 30,
                "weighted": self.weighted,
            }
        )

    async def serving(self) -> set[str]:
        if not self.weighted:
            return sites_of(self.peer.addresses())
        # One address per answer, picked by weight: enough answers to see a site at
        # 10 beside 100 (missed by all 300 with a chance of (10/11)^300, about 4e-13).
        return sites_of(set().union(*(self.peer.addresses() for _ in range(300))))

    async def weights(self) -> dict[str, int] | None:
        if not self.weighted:
            return None
        (record,) = [r for r in self.peer.rrsets() if r["type"] == "LUA"]
        (content,) = [r["content"] for r in record["records"]]
        parsed = parse_lua(content)
        assert parsed is not None and parsed[1] is not None, content
        return {name: w for a, w in parsed[1].items() for name in sites_of({a})}

    async def tamper(self) -> None:
        import json

        patch = {
            "rrsets": [
                {
                    "name": NAME,
                    "type": "A",
                    "ttl": 30,
                    "changetype": "REPLACE",
                    "records": [
                        {"content": a, "disabled": False}
                        for a in (*sorted(self.peer.addresses()), "198.51.100.99")
                    ],
                }
            ]
        }
        request = urllib.request.Request(
            f"{self.peer.api}/api/v1/servers/localhost/zones/{ZONE}",
            method="PATCH",
            data=json.dumps(patch).encode(),
            headers={"X-API-Key": PowerDNSPeer.API_KEY, "Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=5).read()
        assert any("198.51.100.99" in self.peer.addresses() for _ in range(50))

    async def drift_gone(self) -> bool:
        return all("198.51.100.99" not in self.peer.addresses() for _ in range(50))

    async def break_backend(self) -> None:
        self.proxy.mode = "status500"

    async def heal_backend(self) -> None:
        self.proxy.mode = "pass"

    def bad_credentials(self) -> PowerDNSActuator:
        return self._config("wrong-pdns-api-key-0123")

    def close(self) -> None:
        self.peer.stop()


class Route53Harness(Harness):
    kind = "route53"

    def __init__(self, moto: str, proxy: FaultProxy, zone_id: str) -> None:
        self.moto, self.proxy, self.zone_id = moto, proxy, zone_id
        self.secret = "route53-test-secret-key-0123"
        self.config = Route53Actuator.model_validate(
            {
                "type": "route53",
                "id": "r53",
                "hosted_zone_id": zone_id,
                "name": NAME,
                "record_type": "A",
                "ttl": 30,
                "endpoint_url": proxy.url,
                "access_key_id": "AKIAROUTE53TEST",
                "secret_access_key": self.secret,
            }
        )

    async def records(self) -> dict[str, Any]:
        async with get_session().create_client(
            "route53",
            endpoint_url=self.moto,
            region_name="us-east-1",
            aws_access_key_id="a",
            aws_secret_access_key="b",
        ) as client:
            page = await client.list_resource_record_sets(HostedZoneId=self.zone_id)
        return {r["SetIdentifier"]: r for r in page["ResourceRecordSets"] if "SetIdentifier" in r}

    async def serving(self) -> set[str]:
        records = await self.records()
        return {name for name, r in records.items() if r["Weight"] > 0 and name in ADDRESSES}

    async def weights(self) -> dict[str, int] | None:
        return {name: r["Weight"] for name, r in (await self.records()).items()}

    async def tamper(self) -> None:
        async with get_session().create_client(
            "route53",
            endpoint_url=self.moto,
            region_name="us-east-1",
            aws_access_key_id="a",
            aws_secret_access_key="b",
        ) as client:
            await client.change_resource_record_sets(
                HostedZoneId=self.zone_id,
                ChangeBatch={
                    "Changes": [
                        {
                            "Action": "CREATE",
                            "ResourceRecordSet": {
                                "Name": NAME,
                                "Type": "A",
                                "SetIdentifier": "by-hand",
                                "Weight": 50,
                                "TTL": 30,
                                "ResourceRecords": [{"Value": "198.51.100.99"}],
                            },
                        }
                    ]
                },
            )

    async def drift_gone(self) -> bool:
        return "by-hand" not in await self.records()

    async def break_backend(self) -> None:
        self.proxy.mode = "status500"

    async def heal_backend(self) -> None:
        self.proxy.mode = "pass"

    def bad_credentials(self) -> Route53Actuator:
        self._reset_auth(b"0")
        config: Route53Actuator = self.config
        return config

    def _reset_auth(self, value: bytes) -> None:
        request = urllib.request.Request(
            f"{self.moto}/moto-api/reset-auth", data=value, headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(request, timeout=5).read()

    def close(self) -> None:
        self._reset_auth(b"inf")


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


async def route53_zone(moto: str) -> str:
    async with get_session().create_client(
        "route53",
        endpoint_url=moto,
        region_name="us-east-1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
    ) as client:
        zone = await client.create_hosted_zone(Name=ZONE, CallerReference=str(id(client)))
        zone_id: str = zone["HostedZone"]["Id"].split("/")[-1]
        # UPSERT, not CREATE: moto refuses a CREATE identical to one in its change
        # journal while any record of that name exists (real Route 53 does not), so
        # the restore's CREATE of the original record would fail against moto alone.
        for site, address in ADDRESSES.items():
            await client.change_resource_record_sets(
                HostedZoneId=zone_id,
                ChangeBatch={
                    "Changes": [
                        {
                            "Action": "UPSERT",
                            "ResourceRecordSet": {
                                "Name": NAME,
                                "Type": "A",
                                "SetIdentifier": site,
                                "Weight": 100,
                                "TTL": 30,
                                "ResourceRecords": [{"Value": address}],
                            },
                        }
                    ]
                },
            )
    return zone_id


@pytest.fixture(params=["rfc2136", "haproxy", "powerdns", "powerdns-lua", "route53"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    kind = request.param
    proxies: list[FaultProxy] = []
    h: Any
    if kind == "rfc2136":
        h = BindHarness(tmp_path)
    elif kind == "haproxy":
        h = HAProxyHarness(tmp_path)
    elif kind in ("powerdns", "powerdns-lua"):
        peer_dir = tmp_path / "p"
        peer_dir.mkdir()
        proxy = await FaultProxy("http://placeholder").start()
        proxies.append(proxy)
        h = PowerDNSHarness(peer_dir, proxy, weighted=kind == "powerdns-lua")
        proxy.upstream = h.peer.api
    else:
        moto_url = request.getfixturevalue("moto")
        proxy = await FaultProxy(moto_url).start()
        proxies.append(proxy)
        h = Route53Harness(moto_url, proxy, await route53_zone(moto_url))
    try:
        yield h
    finally:
        h.close()
        for p in proxies:
            await p.close()


def reconciler(h: Harness, config: Any = None) -> tuple[Reconciler, Metrics]:
    metrics = Metrics(CollectorRegistry())
    return Reconciler(build(config or h.config), metrics, attempts=2, max_backoff=0.1), metrics


def only_target(r: Reconciler) -> str:
    """The `target` label of a one-target actuator: its socket, server or zone."""
    (name,) = r.parts
    return name


async def test_drain_restore_and_idempotence(harness: Harness) -> None:
    r, metrics = reconciler(harness)
    assert await r.preflight() is None
    assert (
        metrics.registry.get_sample_value("trafficd_actuator_ready", {"actuator": r.actuator.ident})
        == 1
    )
    outcome = await r.reconcile(EU_DOWN)
    assert outcome.error is None and outcome.in_sync and outcome.applied
    assert await harness.serving() == {"us"}
    again = await r.reconcile(EU_DOWN)
    assert again.in_sync and again.applied == []  # a second reconcile changes nothing
    restored = await r.reconcile(ALL_UP)
    assert restored.in_sync and restored.applied
    assert await harness.serving() == {"us", "eu"}
    target = {"actuator": r.actuator.ident, "target": only_target(r)}
    labels = {**target, "result": "success"}
    assert metrics.registry.get_sample_value("trafficd_actuations_total", labels) == 2
    assert metrics.registry.get_sample_value("trafficd_actuator_in_sync", target) == 1
    await r.actuator.close()


async def test_a_returning_site_on_its_first_step(harness: Harness) -> None:
    """eu at 10 of 100: backends with weights hold 10 (HAProxy, Route 53, PowerDNS's LUA
    record); plain address sets (BIND, PowerDNS's RRsets) serve it whole from the first
    step above 0, and the last step changes nothing there: all or nothing."""
    r, _ = reconciler(harness)
    assert (await r.reconcile(EU_DOWN)).in_sync
    assert await harness.serving() == {"us"}
    step = await r.reconcile(EU_STEP)
    assert step.in_sync and step.applied
    assert await harness.serving() == {"us", "eu"}
    weighted = await harness.weights()
    assert weighted in (None, {"us": 100, "eu": 10}), weighted
    assert (weighted is None) == (harness.kind in ("rfc2136", "powerdns"))
    assert (await r.reconcile(EU_STEP)).applied == []
    full = await r.reconcile(ALL_UP)
    assert full.in_sync and bool(full.applied) == (weighted is not None)
    assert await harness.weights() in (None, {"us": 100, "eu": 100})
    assert await harness.serving() == {"us", "eu"}
    await r.actuator.close()


async def test_the_last_address_or_server_is_never_removed(harness: Harness) -> None:
    r, _ = reconciler(harness)
    await r.reconcile(EU_DOWN)
    outcome = await r.reconcile(BOTH_DOWN)
    assert outcome.error is None
    assert await harness.serving() == {"us"}
    assert any("keeping" in note for note in outcome.notes)
    await r.actuator.close()


async def test_drift_is_corrected(harness: Harness) -> None:
    r, _ = reconciler(harness)
    await r.reconcile(ALL_UP)
    await harness.tamper()
    outcome = await r.reconcile(ALL_UP)
    assert outcome.in_sync and outcome.applied
    assert await harness.drift_gone()  # type: ignore[attr-defined]
    assert await harness.serving() == {"us", "eu"}
    await r.actuator.close()


async def test_backend_down_is_reported_and_converges_when_back(harness: Harness) -> None:
    r, metrics = reconciler(harness)
    await r.reconcile(ALL_UP)
    await harness.break_backend()
    failed = await r.reconcile(EU_DOWN)
    assert failed.error is not None and not failed.in_sync
    assert failed.error.startswith(r.actuator.ident + ":")
    target = {"actuator": r.actuator.ident, "target": only_target(r)}
    assert metrics.registry.get_sample_value("trafficd_actuator_in_sync", target) == 0
    await harness.heal_backend()
    outcome = await r.reconcile(EU_DOWN)
    assert outcome.error is None and outcome.in_sync
    assert await harness.serving() == {"us"}
    await r.actuator.close()


async def test_wrong_credentials_give_a_clear_error_without_the_secret(harness: Harness) -> None:
    r, metrics = reconciler(harness, harness.bad_credentials())
    error = await r.preflight() if harness.kind != "haproxy" else None
    outcome = await r.reconcile(EU_DOWN)
    message = outcome.error or ""
    assert message.startswith(r.actuator.ident + ":"), message
    if harness.secret:
        assert harness.secret not in message
    if error is not None:
        assert (
            metrics.registry.get_sample_value(
                "trafficd_actuator_ready", {"actuator": r.actuator.ident}
            )
            == 0
        )
    await r.actuator.close()


@pytest.fixture
def haproxy_harness(tmp_path: Path) -> Iterator[HAProxyHarness]:
    h = HAProxyHarness(tmp_path)
    try:
        yield h
    finally:
        h.close()


async def test_manual_drain_is_graceful_in_haproxy(haproxy_harness: HAProxyHarness) -> None:
    r, _ = reconciler(haproxy_harness)
    outcome = await r.reconcile(EU_MANUAL)
    assert outcome.in_sync
    assert haproxy_harness._states()["eu"] == "8"  # forced drain: existing sessions finish
    assert await haproxy_harness.serving() == {"us"}
    failure = await r.reconcile(EU_DOWN)
    assert failure.applied == [
        f"{haproxy_harness.peer.admin_socket}: set server quay/eu state maint",
        f"{haproxy_harness.peer.admin_socket}: shutdown sessions server quay/eu",
    ]
    assert haproxy_harness._states()["eu"] == "1"  # forced maintenance
    await r.actuator.close()


async def test_dry_run_plans_and_changes_nothing(harness: Harness) -> None:
    metrics = Metrics(CollectorRegistry())
    r = Reconciler(build(harness.config), metrics, dry_run=True, attempts=1)
    outcome = await r.reconcile(EU_DOWN)
    assert outcome.error is None
    assert not outcome.in_sync and outcome.applied == []
    assert await harness.serving() == {"us", "eu"}
    labels = {"actuator": r.actuator.ident, "target": only_target(r), "result": "success"}
    assert metrics.registry.get_sample_value("trafficd_actuations_total", labels) is None
    await r.actuator.close()
