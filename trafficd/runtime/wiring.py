"""The runtime's parts, wired together, and the configuration's tasks started and stopped.

Under the daemon (daemon.py: the process, its listeners, signals and reloads)
and over every other module of this package. `Runtime` builds each part once
on one configuration, one store, one metrics registry and one clock (an
EngineClock: its engine reading for durations, wall time for display and
operators' expiries; tests give it a fake one), and is what the API serves
(api.py's `Controller`; the tokens are the daemon's). `start` spawns the
configuration's tasks (probe loops, engine loop, reconcile loops, preflight,
notify, replication) under the supervisor, `stop` ends them, `reload` puts a
new configuration in force for every part at once, `close` saves a last time.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

from prometheus_client import CollectorRegistry

from trafficd.clock import EngineClock
from trafficd.config.model import Config
from trafficd.coordination import BACKENDS, Coordinator
from trafficd.metrics import Metrics
from trafficd.model import Observation
from trafficd.policy import engine_policy
from trafficd.runtime.actuation import Actuation
from trafficd.runtime.commands import Commands
from trafficd.runtime.effects import Effects
from trafficd.runtime.leader import Leader
from trafficd.runtime.live import Live
from trafficd.runtime.memory import Memory
from trafficd.runtime.observations import Observations
from trafficd.runtime.probing import Probing
from trafficd.runtime.replication import Replication
from trafficd.runtime.rounds import Rounds
from trafficd.runtime.supervisor import Supervisor
from trafficd.runtime.views import Views
from trafficd.store import Store

log = logging.getLogger(__name__)


class ReloadError(Exception):
    """A new configuration loaded but could not start; the old one runs again."""


class Runtime:
    def __init__(
        self,
        config: Config,
        store: Store,
        metrics: Metrics,
        clock: EngineClock,
        *,
        state_dir: Path,
        dry_run: bool = False,
    ) -> None:
        self.store, self.metrics, self.clock, self.state_dir = store, metrics, clock, state_dir
        self.alive = False  # the configuration's loops run
        saved = store.load()
        last = saved.engine.last_round
        if not math.isinf(last):
            clock.resume(last)  # never run the engine backwards after a restart
        live = self.live = Live(config)
        rounds = self.rounds = Rounds(
            engine_policy(config), saved.engine, saved.overrides, saved.pause
        )
        memory = self.memory = Memory(saved.actuator_memory)
        observations = self.observations = Observations(clock)
        replication = self.replication = Replication(live, rounds)
        effects = self.effects = Effects(live, clock, store, metrics, rounds, memory, replication)
        actuation = self.actuation = Actuation(
            live, clock, metrics, rounds, effects, memory, replication, dry_run=dry_run
        )
        leader = self.leader = Leader(
            live, clock, observations, rounds, effects, actuation, replication
        )
        self.commands = Commands(live, clock, rounds, effects, leader)
        self.views = Views(live, clock, store, observations, rounds, actuation, replication)
        self.supervisor = Supervisor(metrics)
        self.probing = Probing()
        self._tasks: list[str] = []

    @classmethod
    def open(
        cls, config: Config, path: Path, *, clock: EngineClock | None = None, dry_run: bool = False
    ) -> Runtime:
        """On the configuration's `state_dir` (relative to its file), a registry of its
        own, and the system's wall and monotonic clocks unless `clock` is given."""
        state_dir = Path(config.state_dir)
        if not state_dir.is_absolute():
            state_dir = path.parent / state_dir
        metrics = Metrics(CollectorRegistry())
        return cls(
            config,
            Store(state_dir),
            metrics,
            clock or EngineClock(),
            state_dir=state_dir,
            dry_run=dry_run,
        )

    @property
    def ready(self) -> bool:
        return self.leader.ready

    def observe(self, obs: Observation) -> None:
        """A probe's result: kept as its key's latest; exported, audited, and a round due."""
        self.effects.observed(obs, self.observations.put(obs))

    async def reload(self, config: Config) -> None:
        """A new configuration in force: saved, the old one's tasks stopped, every part
        on the new one at once, its tasks started, and (alone) a round decided on it now,
        so that no loop acts on the old sites (one added would have no decision) for up
        to an interval.

        A configuration that loads but cannot start (an actuator's CA bundle gone, say)
        raises ReloadError after the old one is started again: a failed reload keeps the
        old configuration running. The coordinator is kept when its settings are the
        same: a reload hands no leadership over."""
        self.effects.save()
        old = self.live.config
        keep = old.coordination == config.coordination and old.vantage == config.vantage
        await self.stop(reloading=True, keep_coordinator=keep)
        try:
            self._configure(config)
            self.start()
        except Exception as exc:
            log.error("reload: the new configuration could not start: %s", exc)
            await self.stop(reloading=True, keep_coordinator=keep)
            self._configure(old)
            self.start()  # what ran before: if this fails too, the daemon is not alive
            raise ReloadError(str(exc)) from exc
        if self.live.coord is None:
            self.leader.tick()

    def _configure(self, config: Config) -> None:
        self.live.config = config
        self.effects.export.configured(config)
        self.rounds.policy = engine_policy(config)
        self.observations.retain({*config.sites, *config.storage})

    def start(self) -> None:
        """The configuration's tasks, each under the supervisor (a coordinator kept over
        a reload goes on with the new configuration's vantages and interval)."""
        config = self.live.config
        self.alive = False
        if self.live.coord is not None:
            self.live.coord.configure(config)
        elif config.coordination.backend != "none":
            backend = BACKENDS[config.coordination.backend](
                list(config.coordination.urls), timeout=max(1.0, config.probes.timeout)
            )
            self.live.coord = Coordinator(config, backend)
        self.observations.coordinate(self.live.coord is not None, config.vantage)
        self.effects.coordination(self.live.coord)
        tasks = [
            *self.probing.start(config, self.observe),
            *self.actuation.build(),
            ("engine", self.leader.engine_loop),
            *self.replication.start(
                self.metrics, self.state_dir, self.probing.backends, self.effects.gate_result
            ),
        ]
        for name, factory in tasks:
            self.supervisor.spawn(name, factory)
        self._tasks = [name for name, _ in tasks]
        self.alive = True

    async def stop(self, *, reloading: bool = False, keep_coordinator: bool = False) -> None:
        """The configuration's tasks ended and its clients closed; `reloading`: the Quay
        probers stay for the next configuration to keep or close, else every task ends;
        `keep_coordinator`: the lease and the store's client stay for the next one."""
        if not reloading:
            self.alive = False
        await self.supervisor.cancel(self._tasks)
        coord = self.live.coord
        if coord is not None and not keep_coordinator:
            self.live.coord = None
            await coord.resign()  # a successor need not wait for the lease to expire
            with contextlib.suppress(Exception):
                await coord.backend.close()
        await self.replication.close()
        await self.actuation.close()
        await self.probing.stop(reloading=reloading)
        if not reloading:
            await self.supervisor.cancel(list(self.supervisor.tasks))

    def close(self) -> None:
        """The state saved a last time and the store closed (after `stop`)."""
        self.effects.save()
        self.effects.audit("stopped")
        self.store.close()
