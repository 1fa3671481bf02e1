"""The thread LocalStorage's file operations run on: one at a time, replaced when stuck.

Beside `local.py`, which it serves. A file operation cannot be abandoned once
started: on a hung mount (NFS) it blocks its thread in the kernel. So file
operations leave the event loop, but not for asyncio's default executor. There,
the canaries of every location due at the same moment run on as many threads,
which release and retake the GIL around every system call and spend more on
that than on the calls (200 locations at 1 s: the daemon took 19-27% of a core
with the default executor, 15% with this thread; bench/failover.py, cost
part). And a hung mount takes one more thread of that shared pool every
interval, until the pool and everything else that uses it stops.

Here the operations of every location run in order on one thread, which hands
back the results of a burst in one wake-up of the event loop. A job running
longer than `stuck_after` keeps its thread to itself: the jobs queued behind it
move to a new thread (checked at each submission and by a watchdog timer while
jobs are outstanding), and the old thread ends when its job returns. The
caller refuses to give a location whose job is stuck another one (`Job.stuck`),
so a hung mount holds one thread, not one per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

STUCK_AFTER = 0.1  # seconds: a local file operation takes well under a millisecond


@dataclass(eq=False)
class Job(Generic[T]):
    fn: Callable[[], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    started: float | None = None  # time.monotonic(), set on the worker thread
    finished: bool = False
    result: T | None = None
    error: BaseException | None = None

    def running_for(self, now: float) -> float:
        """Seconds the job has been running, 0 when queued or finished."""
        started = self.started
        return 0.0 if started is None or self.finished else now - started

    def stuck(self, now: float, after: float) -> bool:
        return self.running_for(now) > after


_STOP = object()


@dataclass(eq=False)
class _Worker:
    jobs: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    current: Job[Any] | None = None

    def __post_init__(self) -> None:
        # A daemon thread: one blocked on a hung mount must not hold up the exit.
        threading.Thread(target=self._serve, name="trafficd-files", daemon=True).start()

    def _serve(self) -> None:
        while True:
            item = self.jobs.get()
            done: list[Job[Any]] = []
            while item is not _STOP:
                job: Job[Any] = item
                self.current = job
                job.started = time.monotonic()
                try:
                    job.result = job.fn()
                except BaseException as exc:  # handed to the caller, whatever it is
                    job.error = exc
                job.finished = True
                self.current = None
                done.append(job)
                try:
                    item = self.jobs.get_nowait()
                except queue.Empty:
                    break
            _deliver(done)
            if item is _STOP:
                return


def _deliver(done: list[Job[Any]]) -> None:
    for loop, jobs in itertools.groupby(done, key=lambda j: j.loop):
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            loop.call_soon_threadsafe(_settle, list(jobs))


def _settle(jobs: list[Job[Any]]) -> None:
    for job in jobs:
        if job.future.done():  # the caller stopped waiting (its probe timed out)
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.result)


class FileThread:
    """Runs blocking file operations in order, off the event loop."""

    def __init__(self, stuck_after: float = STUCK_AFTER) -> None:
        self.stuck_after = stuck_after
        self._worker: _Worker | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._watch_loop: asyncio.AbstractEventLoop | None = None
        self.replaced = 0  # threads left to a stuck job (for tests and curiosity)

    def submit(self, fn: Callable[[], T]) -> Job[T]:
        """Queue `fn`; await `job.future` for its result (cancelling it abandons the wait,
        not the operation)."""
        loop = asyncio.get_running_loop()
        self._replace_if_stuck()
        if self._worker is None:
            self._worker = _Worker()
        job: Job[T] = Job(fn, loop, loop.create_future())
        self._worker.jobs.put(job)
        if self._watch is None or self._watch_loop is not loop:
            self._watch_loop = loop
            self._watch = loop.call_later(self.stuck_after, self._watchdog)
        return job

    def _watchdog(self) -> None:
        self._watch = None
        self._replace_if_stuck()
        worker = self._worker
        if worker is not None and (worker.current is not None or not worker.jobs.empty()):
            assert self._watch_loop is not None
            self._watch = self._watch_loop.call_later(self.stuck_after, self._watchdog)

    def _replace_if_stuck(self) -> None:
        worker = self._worker
        if worker is None or (current := worker.current) is None:
            return
        if not current.stuck(time.monotonic(), self.stuck_after):
            return
        # Move what waits behind the stuck job; the old thread may take one more as it
        # returns, which is as good: each job runs once, on one thread or the other.
        moved = []
        with contextlib.suppress(queue.Empty):
            while True:
                moved.append(worker.jobs.get_nowait())
        worker.jobs.put(_STOP)
        self._worker = fresh = _Worker()
        self.replaced += 1
        for item in moved:  # jobs only: _STOP goes to a worker only as it is let go
            fresh.jobs.put(item)

    def stop(self) -> None:
        """Let the thread end (a stuck one ends when its job returns)."""
        if self._worker is not None:
            self._worker.jobs.put(_STOP)
            self._worker = None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None


FILES = FileThread()  # shared by every LocalStorage location of the process
