"""The RFC 2136 actuator (dnspython): the global name's A and AAAA RRsets follow the sites.

Reads the current RRsets from the primary itself over TCP, plans with
`base.plan_address_sets`, and sends one TSIG-signed UPDATE per changed type
whose prerequisite is the exact RRset it read (RFC 2136 value-dependent
"RRset exists", or "RRset does not exist"): a concurrent edit makes the
server refuse the update (NXRRSET) instead of being overwritten.

With coordination the leader's fencing token is enforced by the server too:
on taking over, the leader writes its token to a TXT record
(`fence_record`), and every update it sends carries the prerequisite that the
record holds exactly that token. A former leader that still believes it leads
is refused by BIND itself.

With several `servers` (no single primary, or a hidden primary and a
fallback), each server is a target of its own (`split`): it is read back and
reported on its own, and a server that disagrees is out of sync. An update
goes first to the server being reconciled, then to the others in order, until
one accepts it (a secondary that refuses updates hands them to the next).
"""

from __future__ import annotations

import secrets

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from trafficd.actuators.base import (
    Actuator,
    ActuatorAuthError,
    ActuatorError,
    ActuatorPermanentError,
    BuildContext,
    ConcurrentChangeError,
    Desired,
    DesiredSite,
    Fencing,
    Plan,
    Role,
    Splitting,
    TrafficReporting,
    dns_sends_traffic,
    dns_serves,
    plan_address_sets,
    views,
)
from trafficd.config.model import RFC2136Actuator
from trafficd.config.types import split_host_port

Current = dict[str, tuple[int, frozenset[str]]]  # rdtype -> (ttl, addresses)


# One change: the type (A, AAAA), the TTL read, the addresses held and those wanted.
Change = tuple[str, int, frozenset[str], frozenset[str]]


class RFC2136(Actuator[Current, Change], Splitting, TrafficReporting[Current], Fencing):
    role: Role = "traffic"

    def __init__(self, config: RFC2136Actuator, context: BuildContext | None = None) -> None:
        self.ident = config.ident
        self.config = config
        if context is not None and context.metrics is not None:
            context.metrics.dns_ttl.labels(actuator=self.ident).set(config.ttl)
        self.servers = config.all_servers
        self.server = self.servers[0]  # the server this view reads back
        self.zone = dns.name.from_text(config.zone)
        self.name = dns.name.from_text(config.name)
        self.fence_name = dns.name.from_text(
            config.fence_record or f"_trafficd-fence.{config.name}"
        )
        self.token: int | None = None  # the leader's, once written (coordination)
        self.keyring = None
        self.keyname = None
        self.algorithm = dns.tsig.HMAC_SHA256
        if config.tsig is not None:
            self.keyname = dns.name.from_text(config.tsig.name)
            self.algorithm = dns.name.from_text(config.tsig.algorithm)
            try:
                self.keyring = dns.tsigkeyring.from_text(
                    {
                        config.tsig.name: (
                            config.tsig.algorithm,
                            config.tsig.secret.get_secret_value(),
                        )
                    }
                )
            except Exception:
                raise ActuatorError(f"{self.ident}: the TSIG secret is not valid base64") from None

    def split(self) -> dict[str, RFC2136]:
        return views(self, "server", {server: server for server in self.servers})

    def serves(self, target: DesiredSite) -> bool:
        return dns_serves(target)

    def sends_traffic(self, current: Current, target: DesiredSite) -> bool:
        return dns_sends_traffic({k: v[1] for k, v in current.items()}, target)

    def _update(self) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(
            self.zone, keyring=self.keyring, keyname=self.keyname, keyalgorithm=self.algorithm
        )

    async def _send(
        self, message: dns.message.Message, server: str | None = None
    ) -> dns.message.Message:
        server = server or self.server
        host, port = split_host_port(server)
        try:
            return await dns.asyncquery.tcp(
                message, host.strip("[]"), port=port, timeout=self.config.timeout
            )
        except (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature, dns.tsig.PeerBadTime) as exc:
            key = self.config.tsig.name if self.config.tsig else "(none)"
            raise ActuatorAuthError(
                f"{self.ident}: the server refused the TSIG key {key} ({type(exc).__name__})"
            ) from None
        except dns.exception.Timeout:
            raise ActuatorError(f"{self.ident}: no answer from {server}") from None
        except OSError as exc:
            raise ActuatorError(
                f"{self.ident}: cannot reach {server}: {exc.strerror or exc}"
            ) from None

    async def _update_first(self, update: dns.update.UpdateMessage) -> dns.message.Message:
        """Sends an update to this view's server, then the others in order, until one
        accepts it; a failed prerequisite is an answer (the content differs), not a refusal."""
        refused: list[str] = []
        unreachable: list[str] = []
        for server in [self.server, *(s for s in self.servers if s != self.server)]:
            try:
                answer = await self._send(update, server)
            except ActuatorAuthError as exc:
                refused.append(str(exc))
                continue
            except ActuatorError as exc:
                unreachable.append(str(exc))
                continue
            rcode = answer.rcode()
            if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH, dns.rcode.NOTIMP):
                refused.append(
                    f"{self.ident}: {server} refused the update ({dns.rcode.to_text(rcode)})"
                )
                continue
            if rcode == dns.rcode.SERVFAIL:
                unreachable.append(f"{self.ident}: {server}: update failed: SERVFAIL")
                continue
            return answer
        if refused and not unreachable:
            raise ActuatorAuthError("; ".join(refused))
        raise ActuatorError("; ".join(unreachable + refused))

    async def read(self) -> Current:
        current: Current = {}
        for rdtype in ("A", "AAAA"):
            query = dns.message.make_query(self.name, rdtype)
            answer = await self._send(query)
            if answer.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                raise ActuatorError(
                    f"{self.ident}: query for {self.name} {rdtype} failed: "
                    f"{dns.rcode.to_text(answer.rcode())}"
                )
            rrset = answer.get_rrset(
                answer.answer, self.name, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype)
            )
            if rrset is None:
                current[rdtype] = (self.config.ttl, frozenset())
            else:
                current[rdtype] = (rrset.ttl, frozenset(r.address for r in rrset))
        return current

    def plan(self, current: Current, desired: Desired) -> Plan[Change]:
        have = {k: v[1] for k, v in current.items()}
        targets, notes = plan_address_sets(have, desired, ident=self.ident)
        plan: Plan[Change] = Plan(notes=notes)
        for rdtype, want in targets.items():
            ttl, had = current.get(rdtype, (self.config.ttl, frozenset()))
            if want == had and (ttl == self.config.ttl or not want):
                continue
            plan.changes.append(
                f"{self.name} {rdtype}: {sorted(had) or '(none)'} -> {sorted(want) or '(none)'}"
                f" ttl {self.config.ttl}"
            )
            plan.payload.append((rdtype, ttl, had, want))
        return plan

    def _fence(self) -> dns.rdataset.Rdataset:
        return dns.rdataset.from_text_list("IN", "TXT", 0, [f'"{self.token}"'])

    async def take_over(self, token: int) -> None:
        """A new leader's token goes to the fence record before its first update."""
        update = self._update()
        update.replace(self.fence_name, self.config.ttl, "TXT", f'"{token}"')
        answer = await self._update_first(update)
        if answer.rcode() != dns.rcode.NOERROR:
            raise ActuatorError(
                f"{self.ident}: writing the fencing token failed: "
                f"{dns.rcode.to_text(answer.rcode())}"
            )
        self.token = token

    async def _fenced_out(self) -> str | None:
        """The token the fence record holds when it is not ours, else None."""
        answer = await self._send(dns.message.make_query(self.fence_name, "TXT"))
        rrset = answer.get_rrset(
            answer.answer, self.fence_name, dns.rdataclass.IN, dns.rdatatype.TXT
        )
        found = {b"".join(r.strings).decode() for r in rrset} if rrset else set()
        return None if found == {str(self.token)} else ", ".join(sorted(found)) or "none"

    async def apply(self, plan: Plan[Change]) -> None:
        for rdtype, _ttl, had, want in plan.payload:
            update = self._update()
            if self.token is not None:
                update.present(self.fence_name, self._fence())
            if had:
                # RFC 2136 2.4.2: a value-dependent prerequisite carries TTL 0.
                present = dns.rdataset.from_text_list("IN", rdtype, 0, sorted(had))
                update.present(self.name, present)
            else:
                update.absent(self.name, rdtype)
            if want:
                update.replace(self.name, self.config.ttl, rdtype, *sorted(want))
            else:
                update.delete(self.name, rdtype)
            answer = await self._update_first(update)
            rcode = answer.rcode()
            if rcode in (dns.rcode.NXRRSET, dns.rcode.YXRRSET):
                if self.token is not None and (other := await self._fenced_out()) is not None:
                    raise ActuatorPermanentError(
                        f"{self.ident}: fenced out: the fence record holds token {other}, "
                        f"not this instance's {self.token}; another instance leads"
                    )
                raise ConcurrentChangeError(
                    f"{self.ident}: {self.name} {rdtype} changed since it was read; re-reading"
                )
            if rcode != dns.rcode.NOERROR:
                raise ActuatorError(f"{self.ident}: update failed: {dns.rcode.to_text(rcode)}")

    async def preflight(self) -> None:
        """A signed update whose prerequisite cannot hold: the key is checked, nothing
        changes. Ready when at least one server would take updates."""
        errors: list[ActuatorError] = []
        for server in self.servers:
            try:
                await self._preflight(server)
                return
            except ActuatorError as exc:
                errors.append(exc)
        if all(isinstance(e, ActuatorAuthError) for e in errors):
            raise ActuatorAuthError("; ".join(map(str, errors)))
        raise ActuatorError("; ".join(map(str, errors)))

    async def _preflight(self, server: str) -> None:
        update = self._update()
        probe = dns.name.from_text(f"trafficd-preflight-{secrets.token_hex(6)}", self.zone)
        update.present(probe)
        answer = await self._send(update, server)
        rcode = answer.rcode()
        if rcode in (dns.rcode.NXDOMAIN, dns.rcode.NXRRSET):
            return
        if rcode in (dns.rcode.REFUSED, dns.rcode.NOTAUTH, dns.rcode.NOTZONE):
            raise ActuatorAuthError(
                f"{self.ident}: {server} would refuse updates to {self.zone} "
                f"({dns.rcode.to_text(rcode)})"
            )
        raise ActuatorError(f"{self.ident}: {server}: preflight got {dns.rcode.to_text(rcode)}")

    async def close(self) -> None:
        return None
