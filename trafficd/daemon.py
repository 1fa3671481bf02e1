"""The daemon (`trafficd run`): probers -> engine -> actuators, supervised, persisted, served.

Wires the pipeline of docs/design.md together under one asyncio supervisor of
named, guarded tasks: one probe loop per target (jittered), one engine tick
per `probes.interval`, one reconcile loop per actuator (woken when the
desired state changes, and periodically to correct drift), a preflight loop,
a notification loop for webhooks, and the HTTP listeners. A task that dies
is logged, counted (`trafficd_task_restarts_total`) and restarted; it never
takes the daemon down.

Ordering needs no scheduler of its own: the engine's states carry it. A
draining site has weight 0 while its instances still run. The reconcile
loops read every traffic target back (each HAProxy socket, DNS server or
zone); once all that serve the site hold it out, the runtime feeds that
confirmation to the engine (`traffic_off`), and only `shutdown_grace` after
it (state `drained`) do the instance actuators stop the instances. A drain
whose traffic is not confirmed off within `policy.shutdown_deadline` keeps
its instances up and is reported (`trafficd_site_shutdown_blocked`, an
event naming the targets holding it). Restoring starts instances first
(`restoring`: instances running, weight 0) and traffic returns only when the
site's endtoend answers healthy. Every target has its own reconcile loop,
so a backend that is down or a site that never becomes available holds up
nothing else.

Operators' commands are checked by running the pure engine on the would-be
overrides first: a drain that a safety rule refuses is answered 409 with the
rule's name and nothing is stored. State is saved atomically after every
change (store.py) and reloaded at start, so a restart mid-drain neither
restores a drained site nor repeats an action. SIGHUP reloads the
configuration and the listeners' certificates (a bad file or certificate keeps
the old one running), SIGTERM/SIGINT stop within seconds without touching the
backends.

With `coordination` (several instances), rounds run on a wall-clock grid: each
instance publishes its own observations and reads every vantage's through the
store (coordination/), the leader alone decides, writes the shared state and
actuates, and the followers show the leader's decisions.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import math
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from trafficd.api import (
    Controller,
    ServerTLS,
    Token,
    build_apps,
    serve,
    server_context,
)
from trafficd.clock import EngineClock
from trafficd.config.loader import config_file, load
from trafficd.config.model import Config
from trafficd.config.source import ConfigError
from trafficd.coordination import BACKENDS, Coordinator
from trafficd.engine import EnginePolicy
from trafficd.metrics import Metrics
from trafficd.model import (
    Decision,
    EngineState,
    Observation,
    Override,
    Pause,
    Probe,
    SiteDecision,
    State,
)
from trafficd.policy import engine_policy
from trafficd.probers.quay import QuayProber, make_session
from trafficd.probers.schedule import ProberKey, probe_tasks, run_probe_loop
from trafficd.runtime.actuation import Actuation
from trafficd.runtime.commands import Command, Commands, UnknownSiteError
from trafficd.runtime.effects import Effects
from trafficd.runtime.leader import Leader
from trafficd.runtime.live import Live
from trafficd.runtime.memory import Memory
from trafficd.runtime.observations import Observations
from trafficd.runtime.replication import Replication
from trafficd.runtime.rounds import Rounds
from trafficd.runtime.supervisor import Supervisor
from trafficd.store import (
    Store,
    read_events,
)

if TYPE_CHECKING:
    from trafficd.restoregate import GateResult

log = logging.getLogger(__name__)

PREFLIGHT_EVERY = 300.0
RESYNC_EVERY = 30.0
ROUND_GAP = 0.1  # shortest time between two engine rounds


def load_tokens(config: Config, config_path: Path) -> list[Token]:
    tokens = []
    if config.api_token_file:
        path = Path(config.api_token_file)
        if not path.is_absolute():
            path = config_path.parent / path
        secret = path.read_text().strip()
        if secret:
            tokens.append(Token("admin", "admin", secret))
    for t in config.api_tokens:
        value = t.token.get_secret_value() if t.token is not None else None
        tokens.append(Token(t.name, t.role, value, t.subject))
    return tokens


TLSFiles = tuple[Path, Path, Path | None]


def listener_tls(config: Config, config_dir: Path) -> dict[str, TLSFiles | None]:
    """Each listener's certificate, key and client CA (only `listen` asks for client
    certificates: kubelet probes and Prometheus scrape `metrics_listen`)."""
    out: dict[str, TLSFiles | None] = {"listen": None, "metrics_listen": None}
    if config.tls_cert_file and config.tls_key_file:
        ca = config.tls_client_ca_file
        out["listen"] = (
            config_file(config_dir, config.tls_cert_file),
            config_file(config_dir, config.tls_key_file),
            config_file(config_dir, ca) if ca else None,
        )
    if config.metrics_tls_cert_file and config.metrics_tls_key_file:
        out["metrics_listen"] = (
            config_file(config_dir, config.metrics_tls_cert_file),
            config_file(config_dir, config.metrics_tls_key_file),
            None,
        )
    return out


class Daemon(Controller):
    def __init__(self, config_path: str | Path, config: Config, *, dry_run: bool = False) -> None:
        self.config_path = Path(config_path)
        self.live = Live(config)
        self.dry_run = dry_run
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.metrics.config_last_reload_successful.set(1)
        self.tokens = load_tokens(config, self.config_path)
        self.store = Store(self._state_dir(config))
        saved = self.store.load()
        self.rounds = Rounds(engine_policy(config), saved.engine, saved.overrides, saved.pause)
        self.memory = Memory(saved.actuator_memory)
        # Durations run on a monotonic clock; wall time only for display and expiries.
        last = self.engine.last_round
        self.clock = EngineClock(resume_at=None if math.isinf(last) else last)
        self.observations = Observations(self.clock)
        self.replication = Replication(self.live, self.rounds)
        self.effects = Effects(
            self.live,
            self.store,
            self.metrics,
            self.clock,
            self.rounds,
            self.memory,
            self.replication,
        )
        self.actuation = Actuation(
            self.live,
            self.metrics,
            self.clock,
            self.rounds,
            self.effects,
            self.memory,
            self.replication,
            dry_run=dry_run,
        )
        self.leader = Leader(
            self.live,
            self.clock,
            self.observations,
            self.rounds,
            self.effects,
            self.actuation,
            self.memory,
            self.replication,
        )
        self.alive = False
        self.stopping = asyncio.Event()
        self.commands = Commands(
            self.live,
            self.clock,
            self.observations,
            self.rounds,
            self.effects,
            self.leader,
            self.replication,
        )
        self.supervisor = Supervisor(self.metrics)
        self._tasks = self.supervisor.tasks  # the same dict: every task by name
        self._config_tasks: list[str] = []
        self._session: aiohttp.ClientSession | None = None
        self._backends: dict[str, Any] = {}
        self._closers: list[Callable[[], None]] = []
        # Kept over a reload: their debug sessions and pending requests (probe_tasks).
        self._quay_probers: dict[ProberKey, QuayProber] = {}
        self._runners: list[web.AppRunner] = []
        self._tls: dict[str, ServerTLS] = {}  # listener ("listen", "metrics_listen") -> TLS
        # One reload at a time (two at once orphan a set of tasks); a SIGHUP during
        # one queues one more, however many arrive.
        self._reload_lock = asyncio.Lock()
        self._reload_pending = False

    def _state_dir(self, config: Config) -> Path:
        path = Path(config.state_dir)
        return path if path.is_absolute() else self.config_path.parent / path

    @property
    def config(self) -> Config:
        return self.live.config

    @property
    def coord(self) -> Coordinator | None:
        return self.live.coord

    @coord.setter
    def coord(self, coord: Coordinator | None) -> None:
        self.live.coord = coord

    # The round's state, in rounds.Rounds.

    @property
    def engine(self) -> EngineState:
        return self.rounds.engine

    @engine.setter
    def engine(self, engine: EngineState) -> None:
        self.rounds.engine = engine

    @property
    def overrides(self) -> dict[str, Override]:
        return self.rounds.overrides

    @property
    def pause(self) -> Pause | None:
        return self.rounds.pause

    @property
    def decision(self) -> Decision | None:
        return self.rounds.decision

    @property
    def policy(self) -> EnginePolicy:
        return self.rounds.policy

    # --- supervision ---------------------------------------------------------------------

    def spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        self.supervisor.spawn(name, factory)

    async def cancel(self, names: list[str]) -> None:
        await self.supervisor.cancel(names)

    # --- observations --------------------------------------------------------------------

    def observe(self, obs: Observation) -> None:
        self.effects.observed(obs, self.observations.put(obs))

    # --- the engine ----------------------------------------------------------------------

    def tick(self, now: float | None = None, *, wall: float | None = None) -> Decision:
        return self.leader.tick(now, wall=wall)

    @property
    def ready(self) -> bool:
        return self.leader.ready

    def restore_blocks(self) -> dict[str, str] | None:
        return self.replication.restore_blocks()

    def gate_result(self, result: GateResult) -> None:
        self.effects.gate_result(result)

    def save(self) -> None:
        self.effects.save()

    async def coordinated_round(self) -> None:
        await self.leader.coordinated_round()

    def coordination_view(self) -> dict[str, Any]:
        return self.live.view()

    # --- the configuration's tasks -------------------------------------------------------

    def start_config_tasks(self) -> None:
        config = self.config
        self.coord = None
        if config.coordination.backend != "none":
            backend = BACKENDS[config.coordination.backend](
                list(config.coordination.urls), timeout=max(1.0, config.probes.timeout)
            )
            self.coord = Coordinator(config, backend)
        self.observations.coordinate(self.coord is not None, config.vantage)
        self.effects.coordination(self.coord)
        self._session = make_session()
        tasks, self._backends = probe_tasks(config, self._session, self._quay_probers)
        self._closers = [t.close for t in tasks if t.close is not None]
        names = []
        for task in tasks:
            name = f"probe/{task.name}"

            def factory(task: Any = task) -> Awaitable[None]:
                return run_probe_loop(task, self.observe, vantage=config.vantage)

            self.spawn(name, factory)
            names.append(name)
        for name, start in self.actuation.build():
            self.spawn(name, start)
            names.append(name)
        self.spawn("engine", self.leader.engine_loop)
        self._config_tasks = [*names, "engine"]
        state_dir = self._state_dir(config)
        for job, start in self.replication.start(
            self.metrics, state_dir, self._backends, self.gate_result
        ):
            self.spawn(job, start)
            self._config_tasks.append(job)

    async def stop_config_tasks(self, *, reloading: bool = False) -> None:
        """`reloading`: the Quay probers stay for the next configuration to keep or close."""
        await self.cancel(self._config_tasks)
        if self.coord is not None:
            await self.coord.resign()  # a successor need not wait for the lease to expire
            with contextlib.suppress(Exception):
                await self.coord.backend.close()
        await self.replication.close()
        await self.actuation.close()
        for backend in self._backends.values():
            with contextlib.suppress(Exception):
                await backend.close()
        if not reloading:
            for close in self._closers:
                close()
            self._quay_probers.clear()
        self._closers = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def reload(self) -> bool:
        """SIGHUP: a bad new file is rejected with check-config's messages; the old one runs on."""
        async with self._reload_lock:
            return await self._reload()

    async def _reload(self) -> bool:
        try:
            new = load(self.config_path)
        except ConfigError as exc:
            for line in str(exc).splitlines():
                log.error("reload rejected: %s", line)
            self.metrics.config_last_reload_successful.set(0)
            return False
        except OSError as exc:
            log.error("reload rejected: %s: %s", self.config_path, exc.strerror or exc)
            self.metrics.config_last_reload_successful.set(0)
            return False
        if not self._reload_tls(new):
            self.metrics.config_last_reload_successful.set(0)
            return False
        if new.listen != self.config.listen or new.metrics_listen != self.config.metrics_listen:
            log.warning("reload: listen addresses change only at restart")
        if new.api_limits != self.config.api_limits:
            log.warning("reload: api_limits change only at restart")
        self.save()
        await self.stop_config_tasks(reloading=True)
        self.live.config = new
        self.effects.export.configured(new)
        self.rounds.policy = engine_policy(new)
        self.tokens = load_tokens(new, self.config_path)
        self.observations.retain({*new.sites, *new.storage})
        self.start_config_tasks()
        if self.coord is None:
            # Decide for the new configuration now: the new loops must not act on the
            # old one's sites (a site added would have no decision) for up to an interval.
            self.tick()
        self.metrics.config_last_reload_successful.set(1)
        log.info("configuration reloaded from %s", self.config_path)
        return True

    # --- the API's view ------------------------------------------------------------------

    def _site_decision(self, site: str) -> SiteDecision | None:
        if site not in self.config.sites:
            raise UnknownSiteError(site)
        return self.decision.sites.get(site) if self.decision else None

    def verdict(self, site: str) -> tuple[bool, str]:
        d = self._site_decision(site)
        if d is not None:
            return d.weight > 0, d.state.value
        # No decision yet (just started, or the shared store unreachable): the saved
        # state answers; a site it does not know is unknown, not active.
        memory = self.engine.sites.get(site)
        if memory is None:
            return False, "unknown"
        active = memory.state is State.ACTIVE and self.config.sites[site].weight > 0
        return active, memory.state.value

    def sites_view(self) -> list[dict[str, Any]]:
        health: dict[str, dict[str, dict[str, Any]]] = {}  # site -> vantage -> probe
        for (vantage, probe, target), obs in sorted(self.observations.latest.items()):
            if probe is not Probe.STORAGE:
                health.setdefault(target, {}).setdefault(vantage, {})[probe.value] = {
                    "ok": obs.ok,
                    "reason": obs.reason,
                    "status": obs.status,
                    "services": dict(obs.services),
                    "t": obs.t,
                }
        out = []
        confirmation = self.actuation.confirmation
        desired = self.actuation.desired() if self.decision is not None else None
        for name in sorted(self.config.sites):
            d = self._site_decision(name)
            memory = self.engine.site(name)
            o = self.overrides.get(name)
            out.append(
                {
                    "name": name,
                    "state": d.state.value if d else memory.state.value,
                    "cause": (d.cause.value if d and d.cause else None),
                    "weight": d.weight if d else 0,
                    "instances": d.instances if d else "running",
                    "mode": self.config.sites[name].mode,
                    "reasons": (
                        self.replication.with_risk(name, d.reasons, d.cause, d.state) if d else []
                    ),
                    "since": None if memory.since == float("-inf") else memory.since,
                    "health": health.get(name, {}),
                    "override": dataclasses.asdict(o) if o else None,
                    "traffic_off": confirmation.traffic_off.get(name),
                    "shutdown_blocked": [
                        f"{a} {t}: {w}" for a, t, w in confirmation.blocked.get(name, [])
                    ],
                    "out_of_sync": self.actuation.out_of_sync(desired[name]) if desired else [],
                }
            )
        return out

    def events(self, since: float | None) -> list[dict[str, Any]]:
        cutoff = None if since is None else time.time() - since
        return list(collections.deque(read_events(self.store.dir, cutoff), maxlen=1000))

    async def command(
        self, action: str, site: str | None, who: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        return await self.commands.execute(Command.parse(action, site, who, body))

    async def execute(self, command: Command) -> dict[str, Any]:
        return await self.commands.execute(command)

    # --- lifecycle -----------------------------------------------------------------------

    def _reload_tls(self, new: Config) -> bool:
        """SIGHUP re-reads every certificate and key. All load or none is taken: a bad
        one keeps the listeners on the ones they have, and the reload is rejected."""
        files = listener_tls(new, self.config_path.parent)
        loaded: list[tuple[ServerTLS, ssl.SSLContext]] = []
        for name, tls in self._tls.items():
            wanted = files[name]
            if wanted is None or (wanted[2] is not None) != tls.mutual:
                log.warning(
                    "reload: turning TLS or client certificates on or off on %s takes a restart",
                    name,
                )
                continue
            try:
                context = server_context(*wanted)
            except (OSError, ssl.SSLError) as exc:
                log.error(
                    "reload rejected: %s: cannot load %s with %s: %s; keeping the "
                    "certificate in use",
                    name,
                    wanted[0],
                    wanted[1],
                    getattr(exc, "strerror", None) or exc,
                )
                return False
            loaded.append((tls, context))
        for name in files:
            if files[name] is not None and name not in self._tls and self._runners:
                log.warning("reload: turning TLS on on %s takes a restart", name)
        for tls, context in loaded:
            tls.current = context  # the next handshake on that listener takes it
        return True

    async def start_listeners(self) -> list[str]:
        main, public = build_apps(
            self,
            public_separate=self.config.metrics_listen is not None,
            limits=self.config.api_limits,
        )
        files = listener_tls(self.config, self.config_path.parent)
        bound = []
        for name, app, address in (
            ("listen", main, self.config.listen),
            ("metrics_listen", public, self.config.metrics_listen),
        ):
            if app is None or address is None:
                continue
            wanted = files[name]
            tls = ServerTLS(*wanted) if wanted is not None else None
            if tls is not None:
                self._tls[name] = tls
            runner = await serve(app, address, tls=tls, limits=self.config.api_limits)
            self._runners.append(runner)
            bound.append(f"{'https' if tls else 'http'}://{address}")
        return bound

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            bound = await self.start_listeners()
            log.info("listening on %s", ", ".join(bound))
            self.start_config_tasks()
            self.alive = True
            self.effects.audit("started", vantage=self.config.vantage, pid=os.getpid())
            await self.stopping.wait()
        finally:
            self.alive = False
            log.info("stopping")
            try:
                async with asyncio.timeout(4):
                    await self.stop_config_tasks()
                    await self.cancel(list(self._tasks))
                    for runner in self._runners:
                        await runner.cleanup()
            except TimeoutError:
                log.error("some tasks did not stop within 4s; exiting anyway")
            self.save()
            self.effects.audit("stopped")
            self.store.close()

    def request_reload(self) -> None:
        """SIGHUP: a reload, or, while one runs, one more after it (at most one pending)."""
        if self.supervisor.running("reload"):
            self._reload_pending = True
            return
        self.supervisor.spawn("reload", self._reload_task, once=True)

    async def _reload_task(self) -> None:
        await self.reload()
        while self._reload_pending:  # SIGHUPs since this task was spawned: one more
            self._reload_pending = False
            await self.reload()
