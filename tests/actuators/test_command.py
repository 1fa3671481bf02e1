"""The command actuator against real processes.

`quayctl` (written by the fixture) is a small script that starts a real
background process (a sleeping Python, standing in for a site's Quay),
stops it and reports its status by its PID file, as `systemctl` or
`podman` would. Timeouts and failing commands use real processes too.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from trafficd.actuators import build
from trafficd.actuators.base import BuildContext, DesiredSite, Reconciler
from trafficd.actuators.command import Command
from trafficd.config.model import CommandActuator, Site
from trafficd.model import Cause, State

QUAYCTL = """#!/bin/sh
# quayctl start|stop|status: a stand-in for systemctl managing one real process.
pidfile="$DIR/$1.pid"
case "$ACTION" in
  start)
    echo "starting for $TRAFFICD_SITE ($TRAFFICD_REASON)" >> "$DIR/log"
    "$PY" -c 'import time; time.sleep(600)' >/dev/null 2>&1 &
    echo $! > "$pidfile"
    echo "started $!" ;;
  stop)
    echo "stopping $TRAFFICD_SITE cause=$TRAFFICD_CAUSE reason=$TRAFFICD_REASON" >> "$DIR/log"
    kill "$(cat "$pidfile")" && rm -f "$pidfile"
    echo "stopped" ;;
  status)
    test -f "$pidfile" && kill -0 "$(cat "$pidfile")" 2>/dev/null ;;
esac
"""


def running(pidfile: Path) -> bool:
    if not pidfile.exists():
        return False
    try:
        os.kill(int(pidfile.read_text()), 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    script = tmp_path / "quayctl"
    script.write_text(QUAYCTL)
    script.chmod(0o755)
    return tmp_path


def site_config(workdir: Path, *, status: bool = True, timeout: str = "10s") -> Site:
    def argv(action: str) -> list[str]:
        return [
            "env",
            f"DIR={workdir}",
            f"PY={sys.executable}",
            f"ACTION={action}",
            str(workdir / "quayctl"),
            "eu",
        ]

    cfg = {
        "connect": "127.0.0.1:8443",
        "addresses": ["192.0.2.20"],
        "command": {"stop": argv("stop"), "start": argv("start"), "timeout": timeout},
    }
    if status:
        cfg["command"]["status"] = argv("status")  # type: ignore[index]
    return Site.model_validate(cfg)


def target(instances: str, site: Site) -> dict[str, DesiredSite]:
    stopped = instances == "stopped"
    return {
        "eu": DesiredSite(
            name="eu",
            state=State.DRAINED if stopped else State.ACTIVE,
            cause=Cause.STORAGE if stopped else None,
            weight=0 if stopped else 100,
            configured_weight=100,
            addresses=("192.0.2.20",),
            instances=instances,
            reasons=("location eustorage failed 3 rounds",) if stopped else (),
            command=site.command,
        )
    }


def actuator(site: Site) -> Command:
    a = build(CommandActuator.model_validate({"type": "command"}), BuildContext(sites={"eu": site}))
    assert isinstance(a, Command)
    return a


async def test_stop_and_start_a_real_process(workdir: Path) -> None:
    site = site_config(workdir)
    cmd = actuator(site)
    rec = Reconciler(cmd)
    pidfile = workdir / "eu.pid"
    # Starts the process: status says stopped at first, the engine wants it running.
    outcome = await rec.reconcile(target("running", site))
    assert outcome.applied == ["start site eu"] and outcome.in_sync
    assert running(pidfile)
    pid = int(pidfile.read_text())

    outcome = await rec.reconcile(target("stopped", site))
    assert outcome.applied == ["stop site eu"] and outcome.in_sync, outcome
    assert not running(pidfile)
    for _ in range(50):  # the killed process is reaped by init shortly after
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    log = (workdir / "log").read_text()
    assert "stopping eu cause=storage reason=location eustorage failed 3 rounds" in log
    assert cmd.runs["eu/stop"].exit_code == 0 and cmd.runs["eu/stop"].tail == ("stopped",)

    # Idempotent: a second reconcile reads the status and changes nothing.
    again = await rec.reconcile(target("stopped", site))
    assert again.applied == [] and again.in_sync
    assert (workdir / "log").read_text() == log


async def test_status_is_the_truth(workdir: Path) -> None:
    """Someone started Quay by hand while it should be stopped: the next reconcile stops it."""
    site = site_config(workdir)
    rec = Reconciler(actuator(site))
    await rec.reconcile(target("running", site))
    await rec.reconcile(target("stopped", site))
    await rec.reconcile(target("running", site))  # started again: a hand start looks the same
    assert running(workdir / "eu.pid")
    outcome = await rec.reconcile(target("stopped", site))
    assert outcome.applied == ["stop site eu"]
    assert not running(workdir / "eu.pid")


async def test_without_status_the_last_action_is_believed_and_persisted(workdir: Path) -> None:
    site = site_config(workdir, status=False)
    cmd = actuator(site)
    # With nothing known, trafficd believes the instances run: a start changes nothing.
    assert (await Reconciler(cmd).reconcile(target("running", site))).applied == []
    assert not (workdir / "log").exists()
    cmd.believed["eu"] = "stopped"  # as after a stop
    assert (await Reconciler(cmd).reconcile(target("running", site))).applied == ["start site eu"]
    assert running(workdir / "eu.pid")
    assert (await Reconciler(cmd).reconcile(target("stopped", site))).in_sync
    saved = cmd.export_memory()
    assert saved == {"believed": {"eu": "stopped"}}
    # A restarted trafficd with the saved state does not run stop again.
    fresh = actuator(site)
    fresh.import_memory(saved)
    log = (workdir / "log").read_text()
    outcome = await Reconciler(fresh).reconcile(target("stopped", site))
    assert outcome.applied == [] and outcome.in_sync
    assert (workdir / "log").read_text() == log


async def test_timeout_kills_the_whole_process_group(workdir: Path) -> None:
    hang = workdir / "hang"
    hang.write_text(
        "#!/bin/sh\necho about to hang\n"
        f'"{sys.executable}" -c "import time; time.sleep(600)" &\n'
        f"echo $! > {workdir}/child.pid\nwait\n"
    )
    hang.chmod(0o755)
    site = Site.model_validate(
        {
            "connect": "127.0.0.1:8443",
            "addresses": ["192.0.2.20"],
            "command": {"stop": [str(hang)], "start": [str(hang)], "timeout": "500ms"},
        }
    )
    cmd = actuator(site)
    start = time.monotonic()
    outcome = await Reconciler(cmd, attempts=1).reconcile(target("stopped", site))
    assert time.monotonic() - start < 5
    assert outcome.error == "command: eu: stop timed out after 0.5s: about to hang"
    assert cmd.runs["eu/stop"].exit_code is None
    child = int((workdir / "child.pid").read_text())
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the command's child survived the timeout")


async def test_failing_command_is_retried_and_reported(workdir: Path) -> None:
    counter = workdir / "attempts"
    flaky = workdir / "flaky"
    flaky.write_text(
        f"#!/bin/sh\necho x >> {counter}\necho 'unit quay.service not found' >&2\nexit 5\n"
    )
    flaky.chmod(0o755)
    site = Site.model_validate(
        {
            "connect": "127.0.0.1:8443",
            "addresses": ["192.0.2.20"],
            "command": {"stop": [str(flaky)], "start": [str(flaky)]},
        }
    )
    outcome = await Reconciler(actuator(site), attempts=3, max_backoff=0.01).reconcile(
        target("stopped", site)
    )
    assert outcome.error is not None
    assert outcome.error.startswith("command: eu: stop exited 5 after ")
    assert outcome.error.endswith("s: unit quay.service not found")
    assert counter.read_text().count("x") == 3  # retried with backoff, then reported
    assert not outcome.in_sync


async def test_preflight_finds_a_missing_program(workdir: Path) -> None:
    site = Site.model_validate(
        {
            "connect": "127.0.0.1:8443",
            "addresses": ["192.0.2.20"],
            "command": {"stop": ["/nonexistent/quayctl", "stop"], "start": ["true"]},
        }
    )
    error = await Reconciler(actuator(site)).preflight()
    assert error == "command: not found or not executable: /nonexistent/quayctl"
    assert await Reconciler(actuator(site_config(workdir))).preflight() is None


async def test_observe_mode_sites_are_left_alone(workdir: Path) -> None:
    site = site_config(workdir)
    t = target("stopped", site)
    outcome = await Reconciler(actuator(site)).reconcile({"eu": replace(t["eu"], managed=False)})
    assert outcome.applied == [] and outcome.in_sync
    assert not (workdir / "log").exists()
