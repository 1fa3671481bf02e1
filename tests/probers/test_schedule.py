"""Probe scheduling on a fake clock: jitter, intervals, the start grid, overruns, and a
failing task."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

import pytest
from aiohttp import web

from tests.peers import free_port
from tests.probers.quay_app import DEBUG_SECRET, QuayApp
from trafficd.config import load
from trafficd.model import Observation, Probe
from trafficd.probers.quay import QuayProber, make_session
from trafficd.probers.schedule import ProberKey, ProbeTask, Sink, probe_tasks, run_probe_loop


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if len(self.sleeps) > 6:
            raise asyncio.CancelledError

    async def run(
        self, task: ProbeTask, sink: Sink, *, seed: int, grid: float | None = None
    ) -> None:
        """`task`'s loop on this clock, for six probes."""
        with pytest.raises(asyncio.CancelledError):
            await run_probe_loop(
                task,
                sink,
                vantage="v",
                sleep=self.sleep,
                clock=self.clock,
                rng=random.Random(seed),
                grid=grid,
            )


def obs(target: str = "eu") -> Observation:
    return Observation(t=0.0, vantage="v", probe=Probe.ENDTOEND, subject=target, ok=True)


async def test_jittered_start_then_one_probe_per_interval() -> None:
    fake = FakeClock()
    seen: list[Observation] = []

    async def run() -> Observation:
        fake.now += 0.3  # the probe takes 300 ms
        return obs()

    task = ProbeTask("endtoend/eu", Probe.ENDTOEND, "eu", 2.0, run)
    await fake.run(task, seen.append, seed=7, grid=0)
    assert 0 <= fake.sleeps[0] < 2.0
    assert fake.sleeps[1:] == pytest.approx([1.7] * 6)  # interval minus the probe's own time
    assert len(seen) == 6


async def test_an_overrunning_probe_skips_ticks_instead_of_bursting() -> None:
    fake = FakeClock()

    async def run() -> Observation:
        fake.now += 5.0
        return obs()

    task = ProbeTask("endtoend/eu", Probe.ENDTOEND, "eu", 2.0, run)
    await fake.run(task, lambda o: None, seed=1, grid=0)
    assert fake.sleeps[1:] == [0.0] * 6


async def test_probes_start_on_the_grid_and_keep_their_interval() -> None:
    """Every start is a grid point (50 ms for a 1 s interval): many targets' probes share
    a wake-up. The interval does not drift: each start is the first grid point at or
    after `offset + k * interval`."""
    starts: dict[int, list[float]] = {}
    for seed in range(20):
        fake = FakeClock()
        fake.now = 1000.013  # not itself on the grid

        async def run(fake: FakeClock = fake, seed: int = seed) -> Observation:
            starts.setdefault(seed, []).append(fake.now)
            fake.now += 0.0123
            return obs()

        task = ProbeTask("endtoend/eu", Probe.ENDTOEND, "eu", 1.0, run)
        await fake.run(task, lambda o: None, seed=seed)
    slots = set()
    for times in starts.values():
        assert len(times) == 6
        for t in times:
            assert t / 0.05 == pytest.approx(round(t / 0.05), abs=1e-6)  # on the grid
        assert [b - a for a, b in itertools.pairwise(times)] == pytest.approx([1.0] * 5)
        slots.add(round(times[0] % 1.0, 3))
    assert len(slots) > 10  # 20 targets spread over the interval, not bunched


async def test_a_short_interval_gets_a_finer_grid() -> None:
    fake = FakeClock()
    starts: list[float] = []

    async def run() -> Observation:
        starts.append(fake.now)
        return obs()

    task = ProbeTask("endtoend/eu", Probe.ENDTOEND, "eu", 0.2, run)  # grid: 10 ms
    await fake.run(task, lambda o: None, seed=3)
    for t in starts:
        assert t / 0.01 == pytest.approx(round(t / 0.01), abs=1e-6)
    assert [b - a for a, b in itertools.pairwise(starts)] == pytest.approx([0.2] * 5)


async def test_a_task_that_raises_becomes_an_unknown_observation() -> None:
    fake = FakeClock()
    seen: list[Observation] = []

    async def run() -> Observation:
        raise RuntimeError("prober bug")

    task = ProbeTask("storage/x", Probe.STORAGE, "x", 1.0, run)
    await fake.run(task, seen.append, seed=1, grid=0)
    assert {(o.ok, o.reason, o.detail, o.subject) for o in seen} == {
        (None, "error", "RuntimeError", "x")
    }


async def test_probe_tasks_cover_every_site_probe_and_location(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text(
        "vantage: v\n"
        "storage:\n"
        "  a: [LocalStorage, {storage_path: /a}]\n"
        "  b: [LocalStorage, {storage_path: /b}]\n"
        "sites:\n  one: {url: 'http://q.example.com', connect: '127.0.0.1:1', storage: [a]}\n"
        "probes: {interval: 1s, timeout: 500ms, storage_interval: 5s}\n"
    )
    config = load(conf)
    async with make_session() as session:
        tasks, backends = probe_tasks(config, session)
        assert [(t.name, t.interval) for t in tasks] == [
            ("endtoend/one", 1.0),
            ("instance/one", 1.0),
            ("storage/a", 5.0),
            ("storage/b", 5.0),
        ]
        assert len(backends) == 2
        result = await tasks[0].run()  # nothing listens on port 1
        assert (result.ok, result.reason, result.subject) == (False, "connect", "one")


async def test_a_reload_keeps_the_quay_probers_it_still_wants(tmp_path: Path) -> None:
    """A reload (probe_tasks again, its probe loops cancelled first) keeps each Quay prober
    the new configuration still wants: its debug session and the requests Quay still works
    on. Before, every reload enabled debug mode again (the secret into Quay's access log)
    and sent a second request beside each pending one."""
    quay = QuayApp(hang=True)
    runner = web.AppRunner(quay.app(), shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    (tmp_path / "secret").write_text(DEBUG_SECRET + "\n")

    def config(timeout: str) -> Path:
        conf = tmp_path / "c.yaml"
        conf.write_text(
            "vantage: v\n"
            "storage:\n  a: [LocalStorage, {storage_path: /a}]\n"
            f"sites:\n  one: {{url: 'http://q.example.com', connect: '127.0.0.1:{port}',"
            " storage: [a]}\n"
            f"probes: {{interval: 1s, timeout: {timeout}, debug_secret: "
            f"'${{file:{tmp_path / 'secret'}}}'}}\n"
        )
        return conf

    probers: dict[ProberKey, QuayProber] = {}
    try:
        async with make_session() as session:
            tasks, _ = probe_tasks(load(config("200ms")), session, probers)
            endtoend, instance = tasks[0], tasks[1]
            assert (await endtoend.run()).reason == "timeout"  # pending at Quay
            running = asyncio.ensure_future(instance.run())
            while len(quay.hosts) < 2:
                await asyncio.sleep(0.01)
            running.cancel()  # the reload cancels the probe loops mid-request
            with pytest.raises(asyncio.CancelledError):
                await running
            (prober,) = probers.values()
            tasks, _ = probe_tasks(load(config("200ms")), session, probers)  # the reload
            assert list(probers.values()) == [prober]
            again = [await tasks[0].run(), await tasks[1].run()]
            assert [o.reason for o in again] == ["timeout", "timeout"]
            assert all("unanswered after" in (o.detail or "") for o in again), again
            assert (len(quay.hosts), quay.enables) == (2, 1)
            # A reload that changes how the site is probed makes a new prober, and the old
            # one lets go of its requests.
            tasks, _ = probe_tasks(load(config("300ms")), session, probers)
            assert list(probers.values()) != [prober]
            assert not prober.pending(Probe.ENDTOEND) and not prober.pending(Probe.INSTANCE)
            assert (await tasks[0].run()).reason == "timeout"
            assert (len(quay.hosts), quay.enables) == (3, 2)
            for p in probers.values():
                p.close()
    finally:
        quay.release.set()
        await runner.cleanup()
