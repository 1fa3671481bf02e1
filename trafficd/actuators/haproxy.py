"""The HAProxy actuator: each site's server state and weight through the runtime API.

Reads `show servers state BACKEND` on every socket (the usual pair of load
balancers), so a reload that lost runtime state is seen and re-applied.
The mode follows the drain's cause (docs/design.md): failure drains get `state
maint` plus `shutdown sessions server` (every request there fails, so
keep-alive clients must move now), manual drains `state drain` (graceful),
active sites `state ready` and their desired weight: the configured one, or a
step's during a gradual return (set before the state, so a returning server
never takes traffic at its old weight).

Each socket is a target of its own (`split`): a load balancer that is down is
reported and the others still get the change. Once a site's server is out on a
socket, `show stat` tells how many new sessions it still takes
(`trafficd_site_residual_sessions{site, target}`): clients whose resolvers
cached the old DNS answer, sent there by a load balancer in front of it.

`responses()` reads the same `show stat` for the canary of a gradual return:
each site's server's `hrsp_*` counters (every response, and the 5xx ones),
one counter per socket (the engine counts each apart: a reload that adds a
socket or restarts one moves only that counter). A socket that cannot be read
leaves its sites unread that round, and their steps wait (`base.Canary`).
"""

from __future__ import annotations

import asyncio
import csv
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from trafficd.actuators.base import (
    Actuator,
    ActuatorError,
    BuildContext,
    Canary,
    Desired,
    DesiredSite,
    Plan,
    ResponseCounting,
    Role,
    Splitting,
    TrafficReporting,
    views,
)
from trafficd.config.model import HAProxyActuator
from trafficd.config.types import split_host_port
from trafficd.model import Cause, Responses

log = logging.getLogger(__name__)

# srv_admin_state bits (HAProxy's server.h): forced and inherited maintenance, forced drain.
ADMIN_FMAINT, ADMIN_IMAINT, ADMIN_CMAINT, ADMIN_FDRAIN = 0x01, 0x02, 0x04, 0x08
MAX_REPLY = 4 * 1024 * 1024
# `show stat` columns of a server's HTTP responses by class: their sum is every response.
RESPONSE_COLUMNS = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")


@dataclass(frozen=True)
class ServerState:
    admin: int
    weight: int
    sessions: int = 0  # stot of `show stat`: every session the server took

    @property
    def mode(self) -> str:
        if self.admin & (ADMIN_FMAINT | ADMIN_IMAINT | ADMIN_CMAINT):
            return "maint"
        if self.admin & ADMIN_FDRAIN:
            return "drain"
        return "ready"


Current = dict[str, dict[tuple[str, str], ServerState]]  # socket -> (backend, server) -> state


def wanted_mode(target: DesiredSite) -> str:
    if target.active:
        return "ready"
    return "drain" if target.cause is Cause.MANUAL else "maint"


Change = tuple[str, str]  # the socket and the runtime API command sent to it


class HAProxy(Actuator[Current, Change], Splitting, TrafficReporting[Current], ResponseCounting):
    role: Role = "traffic"

    def __init__(self, config: HAProxyActuator, context: BuildContext | None = None) -> None:
        self.ident = config.ident
        self.sockets = config.all_sockets
        self.timeout = config.timeout
        sites = context.sites if context else {}
        self.servers = {
            name: (site.haproxy.backend, site.haproxy.server)
            for name, site in sorted(sites.items())
            if site.haproxy
        }
        self.metrics = context.metrics if context else None
        # (socket, backend, server) -> stot when the server was first read out of traffic;
        # shared by every socket's view.
        self.baseline: dict[tuple[str, str, str], int] = {}

    def split(self) -> dict[str, HAProxy]:
        """One view per socket, sharing the session baselines."""
        return views(self, "sockets", {socket: [socket] for socket in self.sockets})

    def serves(self, target: DesiredSite) -> bool:
        return target.haproxy is not None and target.managed

    def sends_traffic(self, current: Current, target: DesiredSite) -> bool:
        """True unless every socket read back holds the site's server out (drain or maint).

        A socket without the server sends it nothing."""
        assert target.haproxy is not None
        return any(
            state.mode == "ready"
            for states in current.values()
            if (state := states.get(target.haproxy)) is not None
        )

    async def command(self, socket: str, line: str) -> str:
        """One command per connection (non-interactive mode): write, read to EOF."""
        try:
            async with asyncio.timeout(self.timeout):
                if socket.startswith("/") or socket.startswith("."):
                    reader, writer = await asyncio.open_unix_connection(socket)
                else:
                    host, port = split_host_port(socket)
                    reader, writer = await asyncio.open_connection(host.strip("[]"), port)
                try:
                    writer.write(line.encode() + b"\n")
                    await writer.drain()
                    reply = await reader.read(MAX_REPLY)
                    while chunk := await reader.read(MAX_REPLY):
                        reply += chunk
                finally:
                    writer.close()
        except TimeoutError:
            raise ActuatorError(
                f"{self.ident}: {socket}: no answer within {self.timeout:g}s"
            ) from None
        except OSError as exc:
            raise ActuatorError(f"{self.ident}: {socket}: {exc.strerror or exc}") from None
        return reply.decode(errors="replace")

    async def read(self) -> Current:
        current: Current = {}
        for socket in self.sockets:
            text = await self.command(socket, "show servers state")
            states: dict[tuple[str, str], ServerState] = {}
            lines = text.splitlines()
            header: list[str] = []
            for line in lines:
                if line.startswith("# "):
                    header = line[2:].split()
                elif (
                    line
                    and not line.startswith("#")
                    and header
                    and len(line.split()) >= len(header) - 2
                ):
                    row = dict(zip(header, line.split(), strict=False))
                    key = (row["be_name"], row["srv_name"])
                    states[key] = ServerState(int(row["srv_admin_state"]), int(row["srv_uweight"]))
            if not header:
                raise ActuatorError(
                    f"{self.ident}: {socket}: unexpected answer to show servers state"
                )
            sessions = await self._sessions(socket)
            current[socket] = {
                key: ServerState(s.admin, s.weight, sessions.get(key, 0))
                for key, s in states.items()
            }
            self._residual(socket, current[socket])
        return current

    async def _stat(self, socket: str) -> dict[tuple[str, str], dict[str, str]]:
        """Every server's row of `show stat -1 4 -1` (servers only, CSV)."""
        text = await self.command(socket, "show stat -1 4 -1")
        if not text.startswith("# "):
            raise ActuatorError(f"{self.ident}: {socket}: unexpected answer to show stat")
        return {
            (row["pxname"], row["svname"]): row
            for row in csv.DictReader(text[2:].splitlines())
            if row.get("pxname") and row.get("svname")
        }

    async def _counters(self, socket: str) -> tuple[str, dict[tuple[str, str], dict[str, str]]]:
        """The pid of the HAProxy process behind the socket (`show info`), then its
        servers' rows: a reload or restart between two readings is a new pid, whose
        counters started from zero, even once they have grown past the old process's."""
        info = await self.command(socket, "show info")
        pid = next(
            (
                line.split(":", 1)[1].strip()
                for line in info.splitlines()
                if line.startswith("Pid:")
            ),
            "",
        )
        # A reload between the two commands stamps the new process's counters with the
        # old pid once: they went back, so they count as restarted all the same.
        return pid, await self._stat(socket)

    async def _sessions(self, socket: str) -> dict[tuple[str, str], int]:
        """stot of every server."""
        return {
            key: int(row["stot"])
            for key, row in (await self._stat(socket)).items()
            if (row.get("stot") or "").isdigit()
        }

    def canary_sites(self) -> Iterable[str]:
        return self.servers.keys()

    async def responses(self) -> Canary:
        """Each site's server's responses on every socket (read at once), one counter per
        socket: `SOCKET BACKEND/SERVER`.

        A socket that cannot be read makes its sites incomplete (their step waits: the
        traffic it carries would go unjudged). A socket without the site's server sends
        the site nothing (as `sends_traffic` says) and one whose server has no HTTP
        counters (a TCP-mode backend) cannot count it: neither adds a counter, and a
        site no socket counts has no reading (its probes alone judge its return)."""
        stats = await asyncio.gather(
            *(self._counters(socket) for socket in self.sockets), return_exceptions=True
        )
        counts: dict[str, dict[str, Responses]] = {site: {} for site in self.servers}
        incomplete: dict[str, tuple[str, ...]] = {}
        for socket, read in zip(self.sockets, stats, strict=True):
            if isinstance(read, BaseException):
                if not isinstance(read, ActuatorError):
                    raise read
                log.warning("%s: canary: %s", self.ident, read)
                for site in self.servers:
                    incomplete[site] = (*incomplete.get(site, ()), socket)
                continue
            pid, stat = read
            for site, (backend, server) in self.servers.items():
                row = stat.get((backend, server)) or {}
                values = [row.get(column) or "" for column in RESPONSE_COLUMNS]
                if not all(v.isdigit() for v in values):  # no such server, or not HTTP
                    continue
                total, errors = sum(map(int, values)), int(row["hrsp_5xx"])
                counts[site][f"{socket} {backend}/{server}"] = Responses(total, errors, pid)
        return Canary(
            {s: c for s, c in counts.items() if c and s not in incomplete},
            incomplete,
        )

    def _residual(self, socket: str, states: dict[tuple[str, str], ServerState]) -> None:
        """New sessions of each site's server since it was first read out of traffic here."""
        for site, key in self.servers.items():
            state = states.get(key)
            if state is None:
                continue
            mark = (socket, *key)
            if state.mode == "ready":
                self.baseline.pop(mark, None)
                residual = 0
            else:
                base = self.baseline.setdefault(mark, state.sessions)
                if state.sessions < base:  # HAProxy restarted: its counters start again
                    base = self.baseline[mark] = state.sessions
                residual = state.sessions - base
            if self.metrics is not None:
                self.metrics.site_residual_sessions.labels(site=site, target=socket).set(residual)

    def plan(self, current: Current, desired: Desired) -> Plan[Change]:
        plan: Plan[Change] = Plan()
        for socket, states in current.items():
            keep = self._last_servers(socket, states, desired, plan)
            for target in desired.values():
                if target.haproxy is None or not target.managed:
                    continue
                backend, server = target.haproxy
                state = states.get((backend, server))
                if state is None:
                    plan.notes.append(f"{self.ident}: {socket}: no server {backend}/{server}")
                    continue
                mode = "ready" if target.name in keep else wanted_mode(target)
                # The desired weight: a step's during a gradual return (10 of 100), else the
                # configured one; a last server kept serving keeps its configured weight.
                weight = target.weight if target.active else target.configured_weight
                commands = []
                if mode == "ready" and state.weight != weight:
                    # Before `state ready`: a returning server never takes a moment of
                    # traffic at the weight it had before its drain.
                    commands.append(f"set server {backend}/{server} weight {weight}")
                if state.mode != mode:
                    commands.append(f"set server {backend}/{server} state {mode}")
                    if mode == "maint":
                        commands.append(f"shutdown sessions server {backend}/{server}")
                for command in commands:
                    plan.changes.append(f"{socket}: {command}")
                    plan.payload.append((socket, command))
        return plan

    def _last_servers(
        self,
        socket: str,
        states: dict[tuple[str, str], ServerState],
        desired: Desired,
        plan: Plan[Change],
    ) -> set[str]:
        """Never take a backend's last serving servers out: keep them as they are."""
        keep: set[str] = set()
        backends = {t.haproxy[0] for t in desired.values() if t.haproxy is not None}
        for backend in sorted(backends):
            members = [t for t in desired.values() if t.haproxy and t.haproxy[0] == backend]
            if any(t.active or not t.managed for t in members):
                continue
            serving = [
                t for t in members if (s := states.get(t.haproxy or ("", ""))) and s.mode == "ready"
            ]
            if serving:
                keep |= {t.name for t in serving}
                names = ", ".join(t.name for t in serving)
                plan.notes.append(
                    f"{self.ident}: {socket}: no server of {backend} should take traffic; "
                    f"keeping the last one(s): {names}"
                )
        return keep

    async def apply(self, plan: Plan[Change]) -> None:
        for socket, command in plan.payload:
            reply = (await self.command(socket, command)).strip()
            if reply:  # the runtime API answers an accepted command with an empty line
                raise ActuatorError(f"{self.ident}: {socket}: {command!r}: {reply.splitlines()[0]}")

    async def preflight(self) -> None:
        for socket in self.sockets:
            reply = await self.command(socket, "show info")
            if "Name:" not in reply:
                raise ActuatorError(f"{self.ident}: {socket}: unexpected answer to show info")

    async def close(self) -> None:
        return None
