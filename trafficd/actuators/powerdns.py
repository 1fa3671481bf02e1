"""The PowerDNS actuator: the global name's A/AAAA RRsets through the authoritative HTTP API.

Reads the zone (GET), plans with `base.plan_address_sets` (the same
semantics as rfc2136), and PATCHes only the changed RRsets (changetype
REPLACE) with the `X-API-Key` header. Its one target is the zone.
"""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

from trafficd.actuators.base import (
    Actuator,
    ActuatorAuthError,
    ActuatorError,
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

Current = dict[str, tuple[int, frozenset[str]]]


class PowerDNS(Actuator, Splitting, TrafficReporting):
    role: Role = "traffic"

    def __init__(self, config: PowerDNSActuator, context: BuildContext | None = None) -> None:
        self.ident = config.ident
        self.config = config
        if context is not None and context.metrics is not None:
            context.metrics.dns_ttl.labels(actuator=self.ident).set(config.ttl)
        base = config.api_url.rstrip("/")
        self.zone_url = f"{base}/api/v1/servers/{config.server_id}/zones/{config.zone}"
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=config.tls_ca_file) if config.tls_ca_file else True
        )
        self._session: aiohttp.ClientSession | None = None

    def split(self) -> dict[str, PowerDNS]:
        return {self.config.zone: self}

    def serves(self, target: DesiredSite) -> bool:
        return dns_serves(target)

    def sends_traffic(self, current: Current, target: DesiredSite) -> bool:
        return dns_sends_traffic({k: v[1] for k, v in current.items()}, target)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"X-API-Key": self.config.api_key.get_secret_value()},
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            )
        return self._session

    async def _call(self, method: str, body: Any = None) -> Any:
        try:
            async with self.session().request(
                method, self.zone_url, json=body, ssl=self._ssl
            ) as resp:
                text = await resp.text()
                if resp.status in (401, 403):
                    raise ActuatorAuthError(
                        f"{self.ident}: the API refused the key (HTTP {resp.status})"
                    )
                if resp.status >= 300:
                    raise ActuatorError(
                        f"{self.ident}: {method} zone {self.config.zone}: HTTP {resp.status} "
                        f"{text[:200]}"
                    )
                return await resp.json(content_type=None) if text else None
        except aiohttp.ClientError as exc:
            raise ActuatorError(
                f"{self.ident}: cannot reach the API: {type(exc).__name__}"
            ) from None
        except TimeoutError:
            raise ActuatorError(f"{self.ident}: the API did not answer in time") from None

    async def read(self) -> Current:
        zone = await self._call("GET")
        current: Current = {
            "A": (self.config.ttl, frozenset()),
            "AAAA": (self.config.ttl, frozenset()),
        }
        for rrset in zone.get("rrsets", []):
            if rrset.get("name") == self.config.name and rrset.get("type") in current:
                records = frozenset(
                    r["content"] for r in rrset.get("records", []) if not r.get("disabled")
                )
                current[rrset["type"]] = (int(rrset.get("ttl", self.config.ttl)), records)
        return current

    def plan(self, current: Current, desired: Desired) -> Plan:
        targets, notes = plan_address_sets(
            {k: v[1] for k, v in current.items()}, desired, ident=self.ident
        )
        plan = Plan(notes=notes, payload=[])
        for rdtype, want in targets.items():
            ttl, had = current[rdtype]
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
        return plan

    async def apply(self, plan: Plan) -> None:
        await self._call("PATCH", {"rrsets": plan.payload})

    async def preflight(self) -> None:
        await self._call("GET")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
