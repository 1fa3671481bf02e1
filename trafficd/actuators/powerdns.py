"""The PowerDNS actuator: the global name's A/AAAA RRsets through the authoritative HTTP API.

Reads the zone (GET), plans with `base.plan_address_sets` (the same
semantics as rfc2136), and PATCHes only the changed RRsets (changetype
REPLACE) with the `X-API-Key` header. Its one target is the zone.

With `weighted: true` the name is one LUA record per address type instead,
`A "pickwrandom({{100,'192.0.2.10'},{10,'192.0.2.20'}})"`: each answer is one
address, picked with the weight of its site, so a site on a step of a gradual
return gets that step's share of the answers (plain RRsets answer all or
nothing). The addresses it holds follow the same semantics as the plain sets;
a site with several addresses of a type has its weight spread over them. The
server must run with `enable-lua-records` (or the zone carry the
`ENABLE-LUA-RECORDS` metadata): preflight checks it, and no LUA record is
written before the server proved it once. Plain A/AAAA RRsets at
the name would be answered beside the LUA record, so each mode removes the
other's records in the same PATCH, which PowerDNS applies as one transaction.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from trafficd.actuators.base import (
    Actuator,
    ActuatorAuthError,
    ActuatorError,
    ActuatorPermanentError,
    BuildContext,
    Desired,
    DesiredSite,
    Plan,
    Role,
    Splitting,
    TrafficReporting,
    dns_sends_traffic,
    dns_serves,
    plan_address_sets,
)
from trafficd.config.model import PowerDNSActuator

ADDRESS_TYPES = ("A", "AAAA")
_LUA = re.compile(r'^(A|AAAA)\s+"\s*pickwrandom\(\s*\{(.*)\}\s*\)\s*"$', re.DOTALL)
_PAIR = re.compile(r"\{\s*(\d+)\s*,\s*'([0-9A-Fa-f.:]+)'\s*\}")


@dataclass(frozen=True)
class Zone:
    """What the zone holds at the global name."""

    plain: Mapping[str, tuple[int, frozenset[str]]]  # rdtype -> (ttl, addresses)
    # The LUA RRset's records by the type they answer: address -> weight, or None for a
    # record trafficd did not write (any other Lua code): it may answer anything.
    lua: Mapping[str, Mapping[str, int] | None]
    lua_ttl: int | None = None  # None: no LUA RRset at the name
    lua_other: tuple[str, ...] = ()  # its records of other types (TXT, ...): kept as they are

    def served(self) -> dict[str, frozenset[str]]:
        """The addresses the name can answer with, per type."""
        out = {}
        for rdtype in ADDRESS_TYPES:
            weights = self.lua.get(rdtype) or {}
            lua = {a for a, w in weights.items() if w > 0}
            out[rdtype] = self.plain.get(rdtype, (0, frozenset()))[1] | lua
        return out


def lua_content(rdtype: str, weights: Mapping[str, int]) -> str:
    """One LUA record's content: `A "pickwrandom({{W,'ADDRESS'},...})"`."""
    pairs = ",".join(f"{{{w},'{a}'}}" for a, w in sorted(weights.items()))
    return f'{rdtype} "pickwrandom({{{pairs}}})"'


def parse_lua(content: str) -> tuple[str, dict[str, int] | None] | None:
    """The type a LUA record answers and its weights; (type, None) for Lua code that is not
    a `pickwrandom` of literal addresses; None for a type other than A and AAAA."""
    rdtype = content.split(None, 1)[0].upper() if content.strip() else ""
    if rdtype not in ADDRESS_TYPES:
        return None
    match = _LUA.match(content.strip())
    if match is None:
        return rdtype, None
    body = match.group(2)
    pairs = _PAIR.findall(body)
    if _PAIR.sub("", body).replace(",", "").strip():
        return rdtype, None  # something besides {weight, 'address'} pairs
    return rdtype, {a: int(w) for w, a in pairs}


def _text(weights: Mapping[str, int] | None) -> str:
    if weights is None:
        return "(not written by trafficd)"
    return ", ".join(f"{a}={w}" for a, w in sorted(weights.items())) or "(none)"


Change = dict[str, Any]  # one RRset of a PATCH, as the PowerDNS API takes it


class PowerDNS(Actuator[Zone, Change], Splitting, TrafficReporting[Zone]):
    role: Role = "traffic"

    def __init__(self, config: PowerDNSActuator, context: BuildContext | None = None) -> None:
        self.ident = config.ident
        self.config = config
        if context is not None and context.metrics is not None:
            context.metrics.dns_ttl.labels(actuator=self.ident).set(config.ttl)
        base = config.api_url.rstrip("/")
        self.server_url = f"{base}/api/v1/servers/{config.server_id}"
        self.zone_url = f"{self.server_url}/zones/{config.zone}"
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=config.tls_ca_file) if config.tls_ca_file else True
        )
        self._session: aiohttp.ClientSession | None = None
        self._lua_enabled = False  # proved once: the server runs LUA records

    def split(self) -> dict[str, PowerDNS]:
        return {self.config.zone: self}

    def serves(self, target: DesiredSite) -> bool:
        return dns_serves(target)

    def sends_traffic(self, current: Zone, target: DesiredSite) -> bool:
        if any(current.lua.get(t, {}) is None for t in ADDRESS_TYPES):
            return True  # Lua code of someone else's: it may answer with any address
        return dns_sends_traffic(current.served(), target)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"X-API-Key": self.config.api_key.get_secret_value()},
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            )
        return self._session

    async def _call(self, method: str, body: Any = None, *, url: str | None = None) -> Any:
        what = "zone " + self.config.zone if url is None else url.removeprefix(self.server_url)
        try:
            async with self.session().request(
                method, url or self.zone_url, json=body, ssl=self._ssl
            ) as resp:
                text = await resp.text()
                if resp.status in (401, 403):
                    raise ActuatorAuthError(
                        f"{self.ident}: the API refused the key (HTTP {resp.status})"
                    )
                if resp.status >= 300:
                    raise ActuatorError(
                        f"{self.ident}: {method} {what}: HTTP {resp.status} {text[:200]}"
                    )
                return await resp.json(content_type=None) if text else None
        except aiohttp.ClientError as exc:
            raise ActuatorError(
                f"{self.ident}: cannot reach the API: {type(exc).__name__}"
            ) from None
        except TimeoutError:
            raise ActuatorError(f"{self.ident}: the API did not answer in time") from None

    async def read(self) -> Zone:
        zone = await self._call("GET")
        plain = {t: (self.config.ttl, frozenset[str]()) for t in ADDRESS_TYPES}
        lua: dict[str, Mapping[str, int] | None] = {}
        lua_ttl = None
        other: list[str] = []
        for rrset in zone.get("rrsets", []):
            if rrset.get("name") != self.config.name:
                continue
            ttl = int(rrset.get("ttl", self.config.ttl))
            records = [r["content"] for r in rrset.get("records", []) if not r.get("disabled")]
            if rrset.get("type") in plain:
                plain[rrset["type"]] = (ttl, frozenset(records))
            elif rrset.get("type") == "LUA":
                lua_ttl = ttl
                for content in records:
                    parsed = parse_lua(content)
                    if parsed is None:
                        other.append(content)
                        continue
                    rdtype, weights = parsed
                    # Two records of one type: not trafficd's; answered as PowerDNS likes.
                    lua[rdtype] = None if rdtype in lua else weights
        return Zone(plain, lua, lua_ttl, tuple(other))

    def plan(self, current: Zone, desired: Desired) -> Plan[Change]:
        targets, notes = plan_address_sets(current.served(), desired, ident=self.ident)
        plan: Plan[Change] = Plan(notes=notes)
        if self.config.weighted:
            self._plan_lua(current, targets, desired, plan)
        else:
            self._plan_plain(current, targets, plan)
        return plan

    def _plan_plain(
        self, current: Zone, targets: Mapping[str, frozenset[str]], plan: Plan[Change]
    ) -> None:
        for rdtype, want in targets.items():
            ttl, had = current.plain[rdtype]
            if want == had and (ttl == self.config.ttl or not want):
                continue
            before, after = sorted(had) or "(none)", sorted(want) or "(none)"
            plan.changes.append(f"{self.config.name} {rdtype}: {before} -> {after}")
            rrset: dict[str, Any] = {
                "name": self.config.name,
                "type": rdtype,
                "ttl": self.config.ttl,
            }
            if want:
                rrset.update(
                    changetype="REPLACE",
                    records=[{"content": a, "disabled": False} for a in sorted(want)],
                )
            else:
                rrset["changetype"] = "DELETE"
            plan.payload.append(rrset)
        if current.lua:
            types = "/".join(sorted(current.lua))
            plan.changes.append(f"{self.config.name} LUA {types}: removed (weighted: false)")
            plan.payload.append(self._lua_rrset(current, [], current.lua_ttl or self.config.ttl))

    def _plan_lua(
        self,
        current: Zone,
        targets: Mapping[str, frozenset[str]],
        desired: Desired,
        plan: Plan[Change],
    ) -> None:
        want = {
            rdtype: weights
            for rdtype, addresses in targets.items()
            if (weights := self._weights(rdtype, addresses, current, desired))
        }
        held = dict(current.lua)
        if held != want or (want and current.lua_ttl != self.config.ttl):
            changes = [
                f"{self.config.name} LUA {rdtype}: "
                f"{_text(held[rdtype]) if rdtype in held else '(none)'} -> "
                f"{_text(want[rdtype]) if rdtype in want else '(none)'}"
                for rdtype in ADDRESS_TYPES
                if held.get(rdtype, {}) != want.get(rdtype, {})
            ]
            plan.changes += changes or [
                f"{self.config.name} LUA: ttl {current.lua_ttl} -> {self.config.ttl}"
            ]
            records = [lua_content(t, w) for t, w in sorted(want.items())]
            plan.payload.append(self._lua_rrset(current, records, self.config.ttl))
        for rdtype, (_, had) in current.plain.items():
            if had:  # answered beside the LUA record: the weights would not hold
                plan.changes.append(
                    f"{self.config.name} {rdtype}: {sorted(had)} -> (none): the LUA record answers"
                )
                plan.payload.append(
                    {"name": self.config.name, "type": rdtype, "changetype": "DELETE"}
                )

    def _lua_rrset(self, current: Zone, records: list[str], ttl: int) -> dict[str, Any]:
        """The name's LUA RRset holding `records` and, as they were, its LUA records of
        other types (someone's TXT); deleted when that leaves nothing."""
        contents = [*records, *current.lua_other]
        if not contents:
            return {"name": self.config.name, "type": "LUA", "changetype": "DELETE"}
        return {
            "name": self.config.name,
            "type": "LUA",
            "ttl": ttl,
            "changetype": "REPLACE",
            "records": [{"content": c, "disabled": False} for c in contents],
        }

    @staticmethod
    def _weights(
        rdtype: str, addresses: frozenset[str], current: Zone, desired: Desired
    ) -> dict[str, int]:
        """Each address's weight: its site's, spread evenly over the site's addresses of
        the type (scaled by their least common multiple, so the shares stay exact)."""
        owner = {a: t for t in desired.values() for a in t.addresses}
        counts: dict[str, int] = {}
        for a in addresses:
            site = owner[a].name if a in owner else a
            counts[site] = counts.get(site, 0) + 1
        scale = math.lcm(*counts.values()) if counts else 1
        held = current.lua.get(rdtype) or {}
        out = {}
        for a in sorted(addresses):
            t = owner.get(a)
            if t is not None and t.managed and t.active:
                out[a] = t.weight * scale // counts[t.name]
            elif held.get(a):  # observe mode, or a last address kept: as it is
                out[a] = held[a]
            else:
                weight = t.configured_weight * scale // counts[t.name] if t is not None else 1
                out[a] = max(1, weight)
        return out

    async def apply(self, plan: Plan[Change]) -> None:
        if any(r["type"] == "LUA" and r.get("records") for r in plan.payload):
            await self._check_lua()
        await self._call("PATCH", {"rrsets": plan.payload})

    async def preflight(self) -> None:
        await self._call("GET")
        if self.config.weighted:
            await self._check_lua()

    async def _check_lua(self) -> None:
        """A server without LUA records takes the record and answers the name with
        nothing at all (seen on 4.7): never write one before it proves it runs them."""
        if self._lua_enabled:
            return
        settings = await self._call("GET", url=f"{self.server_url}/config")
        metadata = await self._call("GET", url=f"{self.zone_url}/metadata")
        server = any(
            s.get("name") == "enable-lua-records"
            and str(s.get("value", "no")).lower() not in ("no", "false", "")
            for s in settings or []
        )
        zone = any(
            m.get("kind") == "ENABLE-LUA-RECORDS" and "1" in (m.get("metadata") or [])
            for m in metadata or []
        )
        if not (server or zone):
            raise ActuatorPermanentError(
                f"{self.ident}: weighted: true needs LUA records: set enable-lua-records=yes "
                f"on the server, or the ENABLE-LUA-RECORDS metadata of {self.config.zone} to 1; "
                "nothing written"
            )
        self._lua_enabled = True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
