"""The supervisor (runtime/supervisor.py): a task that dies is restarted and counted; a
loop that returns is said so; a cancelled task ends."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry

from trafficd.metrics import Metrics
from trafficd.runtime.supervisor import Supervisor


def restarts(supervisor: Supervisor, task: str) -> float | None:
    registry = supervisor.metrics.registry
    return registry.get_sample_value("trafficd_task_restarts_total", {"task": task})


async def test_a_dying_task_is_restarted_and_counted() -> None:
    supervisor = Supervisor(Metrics(CollectorRegistry()), restart_delay=0.01)
    runs = 0
    done = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("a bug")
        done.set()
        await asyncio.Event().wait()  # then runs until cancelled

    supervisor.spawn("flaky", flaky)
    await asyncio.wait_for(done.wait(), 5)
    assert runs == 3
    assert restarts(supervisor, "flaky") == 2
    assert supervisor.running("flaky")
    await supervisor.cancel(["flaky"])
    assert not supervisor.running("flaky") and "flaky" not in supervisor.tasks


async def test_a_loop_that_returns_is_said_so_and_a_once_task_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="trafficd.runtime.supervisor")
    supervisor = Supervisor(Metrics(CollectorRegistry()))

    async def returns() -> None:
        return None

    supervisor.spawn("loop", returns)
    supervisor.spawn("reload", returns, once=True)
    await asyncio.wait(list(supervisor.tasks.values()))
    said = [r.getMessage() for r in caplog.records]
    assert said == ["task loop returned; a loop should run until it is stopped"]
    assert restarts(supervisor, "loop") is None  # not restarted: a return is no crash
