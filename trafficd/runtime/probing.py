"""The configuration's probe loops: one per site probe and per storage location.

Beside the observations (each loop hands what it observes to a sink, the
runtime's `observe`). The HTTP session and the storage backends live as long
as the configuration; the Quay probers are kept over a reload when the new
configuration probes the same target the same way, with their debug session
and pending requests (probers/schedule.py's `probe_tasks`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import aiohttp

from trafficd.config.model import Config
from trafficd.probers.base import StorageBackend
from trafficd.probers.quay import QuayProber, make_session
from trafficd.probers.schedule import ProberKey, ProbeTask, Sink, probe_tasks, run_probe_loop

Task = tuple[str, Callable[[], Awaitable[None]]]


class Probing:
    def __init__(self) -> None:
        self.backends: dict[str, StorageBackend] = {}  # by location; the restore gate's too
        self._session: aiohttp.ClientSession | None = None
        self._closers: list[Callable[[], None]] = []
        self._quay: dict[ProberKey, QuayProber] = {}  # kept over a reload

    def start(self, config: Config, sink: Sink) -> list[Task]:
        self._session = make_session()
        tasks, self.backends = probe_tasks(config, self._session, self._quay)
        self._closers = [t.close for t in tasks if t.close is not None]

        def loop(task: ProbeTask) -> Callable[[], Awaitable[None]]:
            return lambda: run_probe_loop(task, sink, vantage=config.vantage)

        return [(f"probe/{task.name}", loop(task)) for task in tasks]

    async def stop(self, *, reloading: bool) -> None:
        """`reloading`: the Quay probers stay for the next configuration to keep or close."""
        for backend in self.backends.values():
            with contextlib.suppress(Exception):
                await backend.close()
        if not reloading:
            for close in self._closers:
                close()
            self._quay.clear()
        self._closers = []
        if self._session is not None:
            await self._session.close()
            self._session = None
