"""The daemon's replication monitor: metrics, a database that stops mid-run and comes
back, and the blobs at risk carried by a storage drain (real PostgreSQL throughout)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import asyncpg
import pytest

from tests.replication.conftest import (
    READONLY_PASSWORD,
    SCHEMA,
    SUPERUSER_PASSWORD,
    QuayDB,
)
from tests.replication.test_figures import NOW, fill
from tests.test_api import healthy, write_config
from trafficd.actuators import build
from trafficd.actuators.base import BuildContext, Reconciler
from trafficd.config import load
from trafficd.config.model import CommandActuator
from trafficd.demo.peers import Postgres
from trafficd.replication import ReplicationMonitor
from trafficd.runtime.wiring import Runtime
from trafficd.store import read_events

pytestmark = pytest.mark.peers


def replication_section(tmp: Path, dsn: str) -> str:
    (tmp / "db-password").write_text(READONLY_PASSWORD + "\n")
    return (
        f"replication: {{dsn: '{dsn}', password: '${{file:db-password}}', "
        "default_locations: [usstorage, eustorage], interval: 1s, statement_timeout: 2s}"
    )


async def refresh(monitor: ReplicationMonitor) -> None:
    """A round, a whole re-scan (the daemon runs it in the background) and a round."""
    await monitor.round()
    await monitor.scan()
    await monitor.round()


def sample(runtime: Runtime, name: str, **labels: str) -> float | None:
    value = runtime.metrics.registry.get_sample_value(name, labels)
    return value


async def test_a_storage_drain_says_which_blobs_it_leaves_unreadable(
    quay_db: QuayDB, tmp_path: Path
) -> None:
    await fill(quay_db)
    path = write_config(tmp_path, replication_section(tmp_path, quay_db.readonly_dsn))
    runtime = Runtime.open(load(path), path)
    try:
        monitor = ReplicationMonitor(runtime.live.config, runtime.metrics, clock=lambda: NOW)
        runtime.replication.monitor = monitor
        await refresh(monitor)
        assert sample(runtime, "trafficd_replication_up") == 1
        assert sample(runtime, "trafficd_replication_at_risk_blobs", location="eustorage") == 2
        assert sample(runtime, "trafficd_replication_backlog_bytes", location="usstorage") == 1000
        assert sample(runtime, "trafficd_replication_stuck_items") == 1
        t = 1_800_000_000.0
        for i in range(4):  # eu's storage fails, corroborated: drained after `fall` rounds
            healthy(runtime, t + i, eu_storage=False)
            runtime.leader.tick(t + i)
        drain = [
            e
            for e in read_events(runtime.store.dir)
            if e["kind"] == "transition" and e["site"] == "eu" and e["to"] == "draining"
        ]
        assert len(drain) == 1
        expected = (
            "replication: 2 blob(s) (300 bytes) exist only at eustorage: "
            "pulls of them fail from every site until it returns"
        )
        assert expected in drain[0]["reasons"]
        eu = next(s for s in runtime.views.sites() if s["name"] == "eu")
        assert expected in eu["reasons"]
    finally:
        runtime.store.close()
        await monitor.close()


def multi_location_config(tmp: Path, dsn: str, stop: list[str]) -> Path:
    """eu prefers [eustorage, usstorage] (v3.18 multi-preference) and is stopped by a
    command on a storage drain."""
    path = write_config(tmp, replication_section(tmp, dsn) + "\nactuators: [{type: command}]")
    text = path.read_text()
    text = text.replace(
        "storage: [eustorage],",
        f'storage: [eustorage, usstorage], command: {{stop: {json.dumps(stop)}, start: ["true"]}},',
    )
    text = text.replace("min_active_sites: 1}", "min_active_sites: 1, shutdown_grace: 0s}")
    path.write_text(text)
    return path


async def test_a_multi_location_site_counts_only_the_blobs_of_the_location_that_failed(
    quay_db: QuayDB, tmp_path: Path
) -> None:
    """eu's storage list is [eustorage, usstorage]; eustorage fails. Blobs held only at
    usstorage (3 of them, it is up) stay readable and are not eu's drain's risk; the
    reason the stop command is given (TRAFFICD_REASON) carries the same text as the
    audit event."""
    await fill(quay_db)
    reason_file = tmp_path / "reason"
    stop = ["sh", "-c", f'printf %s "$TRAFFICD_REASON" > {reason_file}']
    path = multi_location_config(tmp_path, quay_db.readonly_dsn, stop)
    runtime = Runtime.open(load(path), path)
    monitor = ReplicationMonitor(runtime.live.config, runtime.metrics, clock=lambda: NOW)
    runtime.replication.monitor = monitor
    try:
        await refresh(monitor)
        t = 1_800_000_000.0
        for i in range(4):
            healthy(runtime, t + i, eu_storage=False)
            runtime.leader.tick(t + i)
        drain = next(
            e
            for e in read_events(runtime.store.dir)
            if e["kind"] == "transition" and e["site"] == "eu" and e["to"] == "draining"
        )
        expected = (
            "replication: 2 blob(s) (300 bytes) exist only at eustorage: "
            "pulls of them fail from every site until it returns"
        )
        assert expected in drain["reasons"], drain["reasons"]
        assert not any("usstorage" in r and "exist only" in r for r in drain["reasons"])
        target = runtime.actuation.desired()["eu"]
        assert target.instances == "stopped"
        actuator = build(
            CommandActuator.model_validate({"type": "command"}),
            BuildContext(sites=runtime.live.config.sites),
        )
        outcome = await Reconciler(actuator).reconcile(runtime.actuation.desired())
        assert outcome.applied == ["stop site eu"], outcome
        assert expected in reason_file.read_text().split("; ")
        # Both of its locations down: each one's own blobs, said per location.
        assert monitor.at_risk("eu", ["eustorage", "usstorage"]) == (
            "replication: 2 blob(s) (300 bytes) exist only at eustorage; 3 blob(s) "
            "(1100 bytes) exist only at usstorage: pulls of them fail from every site "
            "until it returns"
        )
    finally:
        runtime.store.close()
        await monitor.close()


async def test_the_database_stops_mid_run_and_comes_back(tmp_path: Path) -> None:
    directory = Path(tempfile.mkdtemp(prefix="trafficd-pg.", dir="/tmp"))
    directory.chmod(0o755)
    server = Postgres(directory / "cluster", SUPERUSER_PASSWORD)
    server.start()
    monitor: ReplicationMonitor | None = None
    try:
        admin = await asyncpg.connect(server.dsn(), password=SUPERUSER_PASSWORD)
        await admin.execute(f"CREATE ROLE trafficd_ro LOGIN PASSWORD '{READONLY_PASSWORD}'")
        await admin.execute(SCHEMA)
        await admin.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO trafficd_ro")
        await admin.execute(
            "INSERT INTO mediatype (name) VALUES ('m'); INSERT INTO repository (name) VALUES ('r')"
        )
        await fill(QuayDB(server, "postgres", admin))
        await admin.close()
        dsn = server.dsn("postgres", user="trafficd_ro")
        path = write_config(tmp_path, replication_section(tmp_path, dsn))
        runtime = Runtime.open(load(path), path)
        monitor = ReplicationMonitor(runtime.live.config, runtime.metrics, clock=lambda: NOW)
        await refresh(monitor)
        assert monitor.error is None and monitor.figures is not None
        assert sample(runtime, "trafficd_replication_up") == 1
        server.stop()
        await monitor.round()  # must not raise
        assert monitor.error is not None and "Quay's database" in monitor.error
        assert READONLY_PASSWORD not in monitor.error
        assert sample(runtime, "trafficd_replication_up") == 0
        assert sample(runtime, "trafficd_replication_at_risk_blobs", location="eustorage") == 2
        assert "as of the last read" in (monitor.at_risk("eu") or "")
        server.start()
        await monitor.round()
        assert monitor.error is None
        assert sample(runtime, "trafficd_replication_up") == 1
        runtime.store.close()
    finally:
        if monitor is not None:
            await monitor.close()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
