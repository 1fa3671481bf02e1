"""The daemon (`trafficd run`): the runtime wired to a configuration file, served, signalled.

Part of the face: it builds the runtime (runtime/wiring.py: probes -> rounds
-> actuators, each part in its own module) on the configuration file's
settings, serves the API on it (listeners.py, api.py), and owns the process's
lifecycle: start, SIGHUP reloads (one at a time; SIGHUPs during one queue one
more; a bad file or certificate keeps the old configuration running), and
SIGTERM/SIGINT stops within seconds without touching the backends. State is
saved before a reload and at the stop, and reloaded at start (store.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

from trafficd.api import load_tokens
from trafficd.clock import EngineClock
from trafficd.config.loader import load
from trafficd.config.model import Config
from trafficd.config.source import ConfigError
from trafficd.listeners import Listeners
from trafficd.runtime.wiring import ReloadError, Runtime

log = logging.getLogger(__name__)

STOP_WITHIN = 4.0  # seconds the tasks and listeners get to stop (the 5 s stop budget)


class Daemon:
    def __init__(
        self,
        config_path: str | Path,
        config: Config,
        *,
        dry_run: bool = False,
        clock: EngineClock | None = None,
    ) -> None:
        """`clock`: the runtime's (default: the system's wall and monotonic clocks)."""
        self.config_path = Path(config_path)
        self.tokens = load_tokens(config, self.config_path)
        self.runtime = Runtime.open(config, self.config_path, clock=clock, dry_run=dry_run)
        self.store, self.metrics = self.runtime.store, self.runtime.metrics
        self.registry = self.metrics.registry
        self.metrics.config_last_reload_successful.set(1)
        self.listeners = Listeners(self.config_path.parent)
        self.stopping = asyncio.Event()
        # One reload at a time (two at once orphan a set of tasks); a SIGHUP during
        # one queues one more, however many arrive.
        self._reload_lock = asyncio.Lock()
        self._reload_pending = False
        # The configuration's tasks run (set by run(); tests that start the runtime
        # themselves set it too): before, a SIGHUP only queues its reload.
        self._running = False
        self._tasks = self.runtime.supervisor.tasks  # every task by name (the same dict)

    # --- what a running daemon shows (the runtime's parts hold it) ----------------------

    @property
    def config(self) -> Config:
        return self.runtime.live.config

    # --- start, reload, stop ----------------------------------------------------------

    async def start_listeners(self) -> list[str]:
        return await self.listeners.start(self.runtime, lambda: self.tokens, self.config)

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
        certificates = self.listeners.load_tls(new)  # in use only if the reload is taken
        if certificates is None:
            self.metrics.config_last_reload_successful.set(0)
            return False
        old = self.config
        if (new.listen, new.metrics_listen) != (old.listen, old.metrics_listen):
            log.warning("reload: listen addresses change only at restart")
        if new.api_limits != old.api_limits:
            log.warning("reload: api_limits change only at restart")
        try:
            tokens = load_tokens(new, self.config_path)  # load() does not read the files
        except OSError as exc:  # the file's name and the reason, never its content
            log.error("reload rejected: api_token_file: %s: %s", exc.filename, exc.strerror)
            self.metrics.config_last_reload_successful.set(0)
            return False
        try:
            await self.runtime.reload(new)
        except ReloadError as exc:
            log.error("reload rejected: %s; the old configuration runs on", exc)
            self.metrics.config_last_reload_successful.set(0)
            return False
        except Exception:
            # Not even the old configuration started again: nothing runs. Not alive, so
            # /healthz fails and a supervisor restarts the daemon.
            log.exception("reload: no configuration could start; the daemon is not alive")
            self.runtime.alive = False
            self.metrics.config_last_reload_successful.set(0)
            return False
        self.tokens = tokens
        self.listeners.use_tls(certificates)
        self.metrics.config_last_reload_successful.set(1)
        log.info("configuration reloaded from %s", self.config_path)
        return True

    def request_reload(self) -> None:
        """SIGHUP: a reload, or, while one runs or the tasks are not started yet, one more
        after it (at most one pending)."""
        if not self._running or self.runtime.supervisor.running("reload"):
            self._reload_pending = True
            return
        self._reload_pending = False
        self.runtime.supervisor.spawn("reload", self._reload_task, once=True)

    async def _reload_task(self) -> None:
        await self.reload()
        while self._reload_pending:  # SIGHUPs since this task was spawned: one more
            self._reload_pending = False
            await self.reload()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            bound = await self.start_listeners()
            log.info("listening on %s", ", ".join(bound))
            self.runtime.start()
            self._running = True
            if self._reload_pending:  # a SIGHUP while starting: the file may have changed
                self.request_reload()
            self.runtime.effects.audit("started", vantage=self.config.vantage, pid=os.getpid())
            await self.stopping.wait()
        finally:
            log.info("stopping")
            self._running = False  # a SIGHUP from here on starts nothing
            try:
                async with asyncio.timeout(STOP_WITHIN):
                    # A reload under way would start its tasks after this stop: ended first.
                    await self.runtime.supervisor.cancel(["reload"])
                    await self.runtime.stop()
                    await self.listeners.stop()
            except TimeoutError:
                log.error("some tasks did not stop within %gs; exiting anyway", STOP_WITHIN)
            self.runtime.close()
