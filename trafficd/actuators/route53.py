"""The Route 53 actuator (aiobotocore): one weighted record per site.

Each site has a weighted record (`SetIdentifier` = the site's name or its
`set_identifier`) holding its addresses or an alias target; a drained site's
weight becomes 0, an active site's its desired weight: the configured one, or a
step's during a gradual return (10 beside another site's 100: one answer in
eleven). Weights are never all set to 0, since Route 53 then answers with
every record, the failed site included. Reads `ListResourceRecordSets` first
and sends all changes in one `ChangeResourceRecordSets` batch whose DELETE
names the exact current record, so a concurrent edit makes the batch fail
instead of being overwritten.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import botocore.exceptions
from aiobotocore.session import get_session
from botocore.config import Config as BotoConfig

from trafficd.actuators.base import (
    Actuator,
    ActuatorAuthError,
    ActuatorError,
    BuildContext,
    ConcurrentChangeError,
    Desired,
    DesiredSite,
    Plan,
    Role,
    Splitting,
    TrafficReporting,
    family,
)
from trafficd.config.model import Route53Actuator

Current = dict[str, dict[str, Any]]  # SetIdentifier -> record as Route 53 returns it
AUTH_CODES = {
    "AccessDenied",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
}


Change = dict[str, Any]  # one change of a ChangeResourceRecordSets batch


class Route53(Actuator[Current, Change], Splitting, TrafficReporting[Current]):
    role: Role = "traffic"

    def __init__(self, config: Route53Actuator, context: BuildContext | None = None) -> None:
        self.ident = config.ident
        self.config = config
        if context is not None and context.metrics is not None:
            context.metrics.dns_ttl.labels(actuator=self.ident).set(config.ttl)
        self._session = get_session()
        self._stack: AsyncExitStack | None = None
        self._client: Any = None

    def split(self) -> dict[str, Route53]:
        """One target: the hosted zone."""
        return {self.config.hosted_zone_id: self}

    def serves(self, target: DesiredSite) -> bool:
        return target.managed

    def sends_traffic(self, current: Current, target: DesiredSite) -> bool:
        """A record with weight above 0, or any record when every weight is 0 (Route 53
        then answers with all of them)."""
        have = current.get(target.set_identifier or target.name)
        if have is None:
            return False
        if any(int(r.get("Weight", 0)) for r in current.values()):
            return int(have.get("Weight", 0)) > 0
        return True

    async def client(self) -> Any:
        if self._client is None:
            c = self.config
            keys = {}
            if c.access_key_id is not None and c.secret_access_key is not None:
                keys = {
                    "aws_access_key_id": c.access_key_id.get_secret_value(),
                    "aws_secret_access_key": c.secret_access_key.get_secret_value(),
                }
            stack = AsyncExitStack()
            self._client = await stack.enter_async_context(
                self._session.create_client(
                    "route53",
                    region_name=c.region,
                    endpoint_url=c.endpoint_url,
                    config=BotoConfig(
                        retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10
                    ),
                    **keys,
                )
            )
            self._stack = stack
        return self._client

    def _error(self, exc: Exception, what: str) -> ActuatorError:
        if isinstance(exc, botocore.exceptions.ClientError):
            code = exc.response.get("Error", {}).get("Code", "Unknown")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in AUTH_CODES or status in (401, 403):
                return ActuatorAuthError(f"{self.ident}: {what}: credentials refused ({code})")
            if code in ("InvalidChangeBatch", "PriorRequestNotComplete"):
                message = str(exc.response.get("Error", {}).get("Message", ""))[:300]
                return ConcurrentChangeError(f"{self.ident}: {what}: {code}: {message}; re-reading")
            return ActuatorError(f"{self.ident}: {what}: {code} (HTTP {status})")
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return ActuatorAuthError(f"{self.ident}: no AWS credentials")
        return ActuatorError(f"{self.ident}: {what}: {type(exc).__name__}")

    async def read(self) -> Current:
        c = self.config
        current: Current = {}
        try:
            client = await self.client()
            kwargs: dict[str, Any] = {
                "HostedZoneId": c.hosted_zone_id,
                "StartRecordName": c.name,
                "StartRecordType": c.record_type,
            }
            seen_ours = False
            while True:
                page = await client.list_resource_record_sets(**kwargs)
                for record in page["ResourceRecordSets"]:
                    name = record["Name"].lower().rstrip(".") + "."
                    if name == c.name and record["Type"] == c.record_type:
                        seen_ours = True
                        if "SetIdentifier" in record:
                            current[record["SetIdentifier"]] = record
                    elif seen_ours:  # listed in order: past our records
                        return current
                if not page.get("IsTruncated"):
                    return current
                kwargs = {
                    "HostedZoneId": c.hosted_zone_id,
                    "StartRecordName": page["NextRecordName"],
                    "StartRecordType": page["NextRecordType"],
                }
                if "NextRecordIdentifier" in page:
                    kwargs["StartRecordIdentifier"] = page["NextRecordIdentifier"]
        except ActuatorError:
            raise
        except Exception as exc:
            raise self._error(exc, "list records") from None

    def _record(self, target: DesiredSite, weight: int) -> dict[str, Any]:
        c = self.config
        record: dict[str, Any] = {
            "Name": c.name,
            "Type": c.record_type,
            "SetIdentifier": target.set_identifier or target.name,
            "Weight": weight,
        }
        if target.alias is not None and c.record_type != "CNAME":
            record["AliasTarget"] = {
                "DNSName": target.alias[0],
                "HostedZoneId": target.alias[1],
                "EvaluateTargetHealth": False,
            }
        else:
            values = (
                [target.alias[0]]
                if target.alias is not None
                else [a for a in target.addresses if family(a) == c.record_type]
            )
            record["TTL"] = c.ttl
            record["ResourceRecords"] = [{"Value": v} for v in values]
        return record

    @staticmethod
    def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
        def key(r: dict[str, Any]) -> tuple[Any, ...]:
            alias = r.get("AliasTarget")
            return (
                r.get("Weight"),
                r.get("TTL"),
                sorted(x["Value"] for x in r.get("ResourceRecords", [])),
                (alias["DNSName"].rstrip(".").lower(), alias["HostedZoneId"]) if alias else None,
            )

        return key(a) == key(b)

    def plan(self, current: Current, desired: Desired) -> Plan[Change]:
        plan: Plan[Change] = Plan()
        weights = {t.name: t.weight for t in desired.values()}  # a return's step, or 0
        for t in desired.values():
            if not t.managed:  # observe mode: whatever Route 53 holds stays
                weights[t.name] = int(current.get(t.set_identifier or t.name, {}).get("Weight", 0))
        if not any(weights.values()):
            plan.notes.append(
                f"{self.ident}: every weight would be 0 (Route 53 would then answer with all "
                "records); keeping the current weights"
            )
            weights = {
                n: int(current.get(desired[n].set_identifier or n, {}).get("Weight", 0))
                for n in weights
            }
        known = set()
        for target in desired.values():
            ident = target.set_identifier or target.name
            known.add(ident)
            if not target.managed:
                continue
            want = self._record(target, weights[target.name])
            have = current.get(ident)
            if have is not None and self._same(have, want):
                continue
            if have is not None:
                plan.payload.append({"Action": "DELETE", "ResourceRecordSet": have})
            plan.payload.append({"Action": "CREATE", "ResourceRecordSet": want})
            before = have.get("Weight") if have else "(none)"
            plan.changes.append(f"{self.config.name} {ident}: weight {before} -> {want['Weight']}")
        for ident, have in current.items():
            if ident not in known:
                plan.notes.append(
                    f"{self.ident}: drift: record {ident} belongs to no site; removing"
                )
                plan.payload.append({"Action": "DELETE", "ResourceRecordSet": have})
                plan.changes.append(f"{self.config.name} {ident}: delete")
        return plan

    async def apply(self, plan: Plan[Change]) -> None:
        try:
            client = await self.client()
            await client.change_resource_record_sets(
                HostedZoneId=self.config.hosted_zone_id,
                ChangeBatch={"Comment": "trafficd", "Changes": plan.payload},
            )
        except Exception as exc:
            raise self._error(exc, "change records") from None

    async def preflight(self) -> None:
        await self.read()

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            await stack.aclose()
