"""The file thread on real threads: results and errors come back in order, and a job that
blocks (a real thread waiting, as one on a hung mount waits in the kernel) keeps its thread
while the jobs behind it move to a new one."""

from __future__ import annotations

import asyncio
import functools
import threading
import time

import pytest

from trafficd.probers.filethread import FileThread


async def test_results_and_errors_come_back_to_their_callers() -> None:
    files = FileThread()
    ran: list[int] = []

    def work(n: int) -> int:
        ran.append(n)
        if n == 3:
            raise PermissionError("no")
        return n * n

    jobs = [files.submit(functools.partial(work, n)) for n in range(6)]
    results = await asyncio.gather(*(j.future for j in jobs), return_exceptions=True)
    assert results[:3] == [0, 1, 4] and results[4:] == [16, 25]
    assert isinstance(results[3], PermissionError)
    assert ran == list(range(6))  # one thread, in order
    assert files.replaced == 0
    files.stop()


async def test_a_blocked_job_keeps_its_thread_and_the_others_move_on() -> None:
    files = FileThread(stuck_after=0.05)
    release = threading.Event()
    threads: list[str] = []

    def hang() -> str:
        threads.append(threading.current_thread().name)
        release.wait(10)
        return "returned"

    def quick() -> float:
        threads.append(threading.current_thread().name)
        return time.monotonic()

    submitted = time.monotonic()
    blocked = files.submit(hang)
    behind = files.submit(quick)  # queued behind the blocked job
    # The watchdog moves it to a fresh thread; nothing else is submitted meanwhile.
    done_at = await asyncio.wait_for(behind.future, 2)
    assert done_at - submitted < 1.0
    assert files.replaced == 1
    assert blocked.stuck(time.monotonic(), files.stuck_after)
    # Later jobs run on the new thread while the old one still waits.
    assert await asyncio.wait_for(files.submit(lambda: 42).future, 2) == 42
    assert files.replaced == 1
    release.set()
    assert await asyncio.wait_for(blocked.future, 2) == "returned"
    assert not blocked.stuck(time.monotonic(), files.stuck_after)
    files.stop()


async def test_a_caller_that_stopped_waiting_loses_nothing_else() -> None:
    files = FileThread()
    gate = threading.Event()
    slow = files.submit(lambda: gate.wait(5))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(slow.future, 0.01)  # cancels the wait, not the job
    gate.set()
    assert await asyncio.wait_for(files.submit(lambda: "next").future, 2) == "next"
    assert slow.finished
    files.stop()
