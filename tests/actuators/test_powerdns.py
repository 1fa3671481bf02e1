"""The powerdns actuator's `weighted: true` (a LUA record of pickwrandom), against real PowerDNS.

A site on a step of a gradual return gets the step's share of the answers, a
server that does not run LUA records is never given one (it would answer the
name with nothing), and turning `weighted` off goes back to plain RRsets. The
pure parts (the record's text, the weights of a site with several addresses)
are checked without a server.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.actuators.test_contract import ADDRESSES, ALL_UP, EU_DOWN, EU_STEP
from tests.peers import NAME, ZONE, PowerDNSPeer
from trafficd.actuators import build
from trafficd.actuators.base import Reconciler
from trafficd.actuators.powerdns import PowerDNS, Zone, lua_content, parse_lua
from trafficd.config.model import PowerDNSActuator


def config(peer: PowerDNSPeer | None, *, weighted: bool = True) -> PowerDNSActuator:
    return PowerDNSActuator.model_validate(
        {
            "type": "powerdns",
            "id": "pdns",
            "api_url": peer.api if peer else "http://127.0.0.1:1",
            "api_key": PowerDNSPeer.API_KEY,
            "zone": ZONE,
            "name": NAME,
            "ttl": 30,
            "weighted": weighted,
        }
    )


def reconciler(peer: PowerDNSPeer, *, weighted: bool = True) -> Reconciler:
    return Reconciler(build(config(peer, weighted=weighted)), attempts=1)


@pytest.fixture
def lua_pdns(tmp_path: Path) -> Iterator[PowerDNSPeer]:
    peer = PowerDNSPeer(tmp_path, lua_records=True)
    peer.start()
    try:
        peer.create_zone()
        yield peer
    finally:
        peer.stop()


@pytest.fixture
def plain_pdns(tmp_path: Path) -> Iterator[PowerDNSPeer]:
    peer = PowerDNSPeer(tmp_path)  # enable-lua-records left at its default: no
    peer.start()
    try:
        peer.create_zone()
        yield peer
    finally:
        peer.stop()


def answers(peer: PowerDNSPeer, n: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _ in range(n):
        (address,) = peer.addresses()  # one address per answer
        counts[address] = counts.get(address, 0) + 1
    return counts


@pytest.mark.peers
async def test_the_answers_follow_the_steps_weight(lua_pdns: PowerDNSPeer) -> None:
    r = reconciler(lua_pdns)
    assert await r.preflight() is None
    assert (await r.reconcile(EU_DOWN)).in_sync
    assert {rr["type"] for rr in lua_pdns.rrsets()} == {"LUA"}  # the plain A RRset is gone
    assert answers(lua_pdns, 50) == {ADDRESSES["us"]: 50}
    step = await r.reconcile(EU_STEP)
    assert step.applied == [
        f"{NAME} LUA A: 192.0.2.10=100 -> 192.0.2.10=100, 192.0.2.20=10",
    ]
    counts = answers(lua_pdns, 1100)
    # eu's share is 10/110: 100 of 1100 expected, sd about 9.5; the bounds are 5 sd.
    assert 52 <= counts.get(ADDRESSES["eu"], 0) <= 148, counts
    assert sum(counts.values()) == 1100
    await r.actuator.close()


@pytest.mark.peers
async def test_a_server_without_lua_records_is_never_given_one(plain_pdns: PowerDNSPeer) -> None:
    """PowerDNS 4.7 takes a LUA record it does not run and answers the name with nothing:
    trafficd refuses to write it, and the plain RRset keeps answering."""
    r = reconciler(plain_pdns)
    error = await r.preflight()
    assert error is not None and "enable-lua-records" in error
    outcome = await r.reconcile(EU_DOWN)
    assert outcome.error is not None and "nothing written" in outcome.error
    assert plain_pdns.addresses() == set(ADDRESSES.values())
    await r.actuator.close()


def txt(peer: PowerDNSPeer) -> set[str]:
    import dns.message
    import dns.query

    query = dns.message.make_query(NAME, "TXT")
    answer = dns.query.udp(query, "127.0.0.1", port=peer.dns_port, timeout=2)
    return {rr.to_text() for rrset in answer.answer for rr in rrset}


def add_lua_txt(peer: PowerDNSPeer) -> None:
    """Someone's own LUA record at the name, of another type, beside trafficd's."""
    (lua,) = [r for r in peer.rrsets() if r["type"] == "LUA"]
    records = [*lua["records"], {"content": "TXT \"'hello from lua'\"", "disabled": False}]
    patch = {"rrsets": [{**lua, "changetype": "REPLACE", "records": records}]}
    request = urllib.request.Request(
        f"{peer.api}/api/v1/servers/localhost/zones/{ZONE}",
        method="PATCH",
        data=json.dumps(patch).encode(),
        headers={"X-API-Key": PowerDNSPeer.API_KEY, "Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).read()


@pytest.mark.peers
async def test_weighted_off_goes_back_to_plain_rrsets(lua_pdns: PowerDNSPeer) -> None:
    """Both ways keep someone's LUA record of another type at the name."""
    weighted = reconciler(lua_pdns)
    assert (await weighted.reconcile(EU_DOWN)).in_sync
    add_lua_txt(lua_pdns)
    assert txt(lua_pdns) == {'"hello from lua"'}
    assert (await weighted.reconcile(EU_STEP)).in_sync
    assert txt(lua_pdns) == {'"hello from lua"'}
    await weighted.actuator.close()
    plain = reconciler(lua_pdns, weighted=False)
    outcome = await plain.reconcile(EU_STEP)
    assert outcome.in_sync
    assert f"{NAME} LUA A: removed (weighted: false)" in outcome.applied
    assert {rr["type"] for rr in lua_pdns.rrsets()} == {"A", "LUA"}
    assert lua_pdns.addresses() == set(ADDRESSES.values())  # every address in each answer
    assert txt(lua_pdns) == {'"hello from lua"'}
    assert (await plain.reconcile(EU_STEP)).applied == []
    await plain.actuator.close()


def test_the_record_trafficd_writes_is_the_one_it_reads() -> None:
    weights = {"192.0.2.20": 10, "192.0.2.10": 100}
    content = lua_content("A", weights)
    assert content == "A \"pickwrandom({{100,'192.0.2.10'},{10,'192.0.2.20'}})\""
    assert parse_lua(content) == ("A", weights)
    assert parse_lua("AAAA \"pickwrandom({ {5, '2001:db8::1'} })\"") == (
        "AAAA",
        {"2001:db8::1": 5},
    )
    # Lua code of someone else's: trafficd cannot tell what it answers.
    assert parse_lua("A \"ifportup(443, {'192.0.2.1'})\"") == ("A", None)
    assert parse_lua("A \"pickwrandom({{1,'192.0.2.1'}, os.exit()})\"") == ("A", None)
    assert parse_lua('TXT "hello"') is None


def test_a_site_with_two_addresses_keeps_its_share() -> None:
    """us has two addresses, eu one: each of us's carries half its weight (scaled so the
    shares stay exact), so us still gets 100 of 110 answers."""
    two = dataclasses.replace(ALL_UP["us"], addresses=("192.0.2.10", "192.0.2.11"))
    desired = {**EU_STEP, "us": two}
    actuator = PowerDNS(config(None))
    zone = Zone(plain={"A": (30, frozenset({"192.0.2.10", "192.0.2.20"}))}, lua={})
    plan = actuator.plan(zone, desired)
    (lua,) = [r for r in plan.payload if r["type"] == "LUA"]
    (record,) = lua["records"]
    parsed = parse_lua(record["content"])
    assert parsed == ("A", {"192.0.2.10": 100, "192.0.2.11": 100, "192.0.2.20": 20})
    # The plain RRset would be answered beside the LUA record: removed in the same PATCH.
    assert {"name": NAME, "type": "A", "changetype": "DELETE"} in plan.payload
