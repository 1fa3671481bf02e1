"""The daemon's lifecycle (trafficd/daemon.py) under faults a reload, a SIGHUP or a
SIGTERM meet, on a whole Daemon with its runtime's real parts (issue 19 review):
a reload that cannot start keeps the old configuration, a SIGHUP while the daemon
starts queues its reload, a stop during a reload leaves nothing running."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.peers import free_port
from tests.test_api import write_config
from trafficd.config import load
from trafficd.daemon import Daemon


async def test_a_reload_whose_actuators_cannot_be_built_keeps_the_old_tasks(
    tmp_path: Path,
) -> None:
    """A file load() accepts whose webhook CA bundle is missing: the reload is rejected
    (the old configuration runs, the gauge at 0), not retried every second with no
    loop running and the gauge at 1."""
    path = write_config(tmp_path)
    daemon = Daemon(path, load(path))
    daemon.runtime.start()
    daemon._running = True  # as run() sets it once the tasks are started
    try:
        write_config(
            tmp_path,
            "actuators:\n  - {type: webhook, id: hook, url: 'http://127.0.0.1:1/',"
            f" tls_ca_file: {tmp_path}/missing.pem}}\n",
        )
        assert load(path).actuators  # check-config accepts it
        daemon.request_reload()
        await asyncio.sleep(2.5)
        registry = daemon.registry
        assert registry.get_sample_value("trafficd_task_restarts_total", {"task": "reload"}) is None
        assert daemon.runtime.supervisor.running("engine")
        assert registry.get_sample_value("trafficd_config_last_reload_successful") == 0
        assert daemon.runtime.alive and daemon.config.actuators == []  # the old one
    finally:
        await daemon.runtime.stop()
        daemon.runtime.close()


async def test_a_stop_during_a_reload_leaves_nothing_running(tmp_path: Path) -> None:
    """SIGTERM while a reload is between its stop and its start: Daemon.run's stop ends
    the reload first, so no configuration's tasks start after the stop began."""
    path = write_config(tmp_path, f"listen: 127.0.0.1:{free_port()}\n")
    daemon = Daemon(path, load(path))
    runtime = daemon.runtime
    close = runtime.actuation.close

    async def slow_close() -> None:  # a backend slow to close (an HTTP session, a socket)
        await asyncio.sleep(0.3)
        await close()

    run = asyncio.create_task(daemon.run())
    for _ in range(50):
        if runtime.supervisor.running("engine"):
            break
        await asyncio.sleep(0.05)
    runtime.actuation.close = slow_close  # type: ignore[method-assign]
    daemon.request_reload()
    await asyncio.sleep(0.1)  # the reload is in its stop now
    daemon.stopping.set()
    await asyncio.wait_for(run, 10)
    await asyncio.sleep(0.5)
    running = sorted(n for n, t in runtime.supervisor.tasks.items() if not t.done())
    assert not running, f"tasks still running after the stop: {running}"
    assert not runtime.alive


async def test_a_sighup_while_the_daemon_starts_is_queued_and_runs_once_started(
    tmp_path: Path,
) -> None:
    """A SIGHUP before the tasks run (a logrotate postrotate, `systemctl reload` right
    after start) used to start a second set of loops beside run()'s own."""
    path = write_config(tmp_path, f"listen: 127.0.0.1:{free_port()}\n")
    daemon = Daemon(path, load(path))
    start = daemon.listeners.start

    async def slow_start(*args: object) -> list[str]:  # a TLS key to read, a slow bind
        await asyncio.sleep(0.3)
        return await start(*args)  # type: ignore[arg-type]

    daemon.listeners.start = slow_start  # type: ignore[method-assign,assignment]
    run = asyncio.create_task(daemon.run())
    await asyncio.sleep(0.05)
    daemon.request_reload()  # what the SIGHUP handler calls
    assert not daemon.runtime.supervisor.running("reload")  # queued, not run
    await asyncio.sleep(1.0)
    try:
        engines = [t for t in asyncio.all_tasks() if t.get_name() == "engine" and not t.done()]
        assert len(engines) == 1, f"{len(engines)} engine loops"
        assert daemon.registry.get_sample_value("trafficd_config_last_reload_successful") == 1
        assert not daemon._reload_pending  # the queued reload ran
    finally:
        daemon.stopping.set()
        await asyncio.wait_for(run, 10)


async def test_a_reload_whose_token_file_is_missing_is_rejected(tmp_path: Path) -> None:
    """load() does not read api_token_file; the tokens were read only after the new
    configuration was in force: the error escaped, the new configuration ran with the
    old tokens and the gauge said the reload succeeded (issue 19 review)."""
    path = write_config(tmp_path)
    daemon = Daemon(path, load(path))
    daemon.runtime.start()
    daemon._running = True
    try:
        path.write_text(
            path.read_text().replace("api_token_file: token", "api_token_file: missing-token")
        )
        load(path)  # check-config accepts it
        assert await daemon.reload() is False
        assert daemon.registry.get_sample_value("trafficd_config_last_reload_successful") == 0
        assert daemon.config.api_token_file == "token"  # the old one runs on
    finally:
        await daemon.runtime.stop()
        daemon.runtime.close()
