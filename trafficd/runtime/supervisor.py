"""Named, guarded asyncio tasks: the runtime's loops, restarted when they die.

Under the runtime's wiring (runtime/wiring.py spawns every loop of the
configuration here, the daemon its reloads) and above nothing: a task is a
name and a factory of its coroutine. A task that raises is logged, counted in
`trafficd_task_restarts_total{task}` and started again after `restart_delay`;
it never takes the process down. A loop is meant to run until it is
cancelled: one that returns is a bug, and is said so (a warning naming it)
rather than silently gone. A `once` task (a reload) may end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from trafficd.metrics import Metrics

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0
CANCEL_AGAIN = 0.2  # a task still running this long after its cancel is cancelled again

Factory = Callable[[], Awaitable[None]]


class Supervisor:
    def __init__(self, metrics: Metrics, *, restart_delay: float = RESTART_DELAY) -> None:
        self.metrics = metrics
        self.restart_delay = restart_delay
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def spawn(self, name: str, factory: Factory, *, once: bool = False) -> None:
        """Runs `factory()` as the task `name`, restarted whenever it raises; `once`: a
        job, not a loop, which is never run again (a failed reload is not retried).

        A task of that name still running is a fault of the caller (two sets of loops
        would act at once), never replaced silently: RuntimeError."""
        if self.running(name):
            raise RuntimeError(f"task {name} is already running")

        async def guarded() -> None:
            while True:
                try:
                    await factory()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    if once:
                        log.exception("task %s failed", name)
                        return
                    log.exception("task %s died; restarting in %gs", name, self.restart_delay)
                    self.metrics.task_restarts.labels(task=name).inc()
                    await asyncio.sleep(self.restart_delay)
                    continue
                if not once:
                    log.warning("task %s returned; a loop should run until it is stopped", name)
                return

        self.tasks[name] = asyncio.create_task(guarded(), name=name)

    def running(self, name: str) -> bool:
        task = self.tasks.get(name)
        return task is not None and not task.done()

    async def cancel(self, names: Iterable[str]) -> None:
        """Cancels the tasks and waits for them. A cancellation that lands as an inner
        timeout expires can be lost (Python 3.11's asyncio.timeout and wait_for, as in
        dnspython's queries): such a task runs on to its next long sleep, so it is
        cancelled again until it ends (a stop after a reload took the whole 4 s)."""
        pending = {self.tasks.pop(n) for n in list(names) if n in self.tasks}
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN)
