"""`trafficd replication status` and `check-removal`, run as an operator runs them,
against a real PostgreSQL holding Quay's tables (the figures of test_figures.fill)."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.replication.conftest import READONLY_PASSWORD, QuayDB, digest_of
from tests.replication.test_figures import fill, real_quay_push_with_eu_down
from trafficd import replication
from trafficd.cli import main
from trafficd.config import load
from trafficd.metrics import Metrics
from trafficd.replication import ReplicationMonitor
from trafficd.replication.scan import check_removal_paged

pytestmark = pytest.mark.peers

LOCATIONS = ("usstorage", "eustorage", "apstorage", "oldstorage")


def write_config(tmp: Path, dsn: str) -> Path:
    (tmp / "db-password").write_text(READONLY_PASSWORD + "\n")
    config = {
        "vantage": "test",
        "state_dir": str(tmp / "state"),
        "storage": {loc: ["LocalStorage", {"storage_path": str(tmp / loc)}] for loc in LOCATIONS},
        "sites": {
            "us": {
                "url": "https://quay.example.test",
                "connect": "127.0.0.1:1",
                "storage": ["usstorage"],
                "addresses": ["192.0.2.10"],
            },
            "eu": {
                "url": "https://quay.example.test",
                "connect": "127.0.0.1:2",
                "storage": ["eustorage"],
                "addresses": ["192.0.2.20"],
            },
        },
        "replication": {
            "dsn": dsn,
            "password": f"${{file:{tmp / 'db-password'}}}",
            "default_locations": ["usstorage", "eustorage"],
            "statement_timeout": "5s",
        },
    }
    path = tmp / "trafficd.yaml"
    path.write_text(json.dumps(config, indent=1))
    return path


def trafficd(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trafficd.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_status_json_and_table(quay_db: QuayDB, tmp_path: Path) -> None:
    await fill(quay_db, time.time())  # the command reads with the real clock
    config = write_config(tmp_path, quay_db.readonly_dsn)
    out = trafficd("replication", "status", "-c", str(config), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["locations"]["eustorage"] == {
        "backlog_blobs": 4,
        "backlog_bytes": 1800,
        "at_risk_blobs": 2,
        "at_risk_bytes": 300,
        "configured": True,
    }
    assert sorted(doc["locations"]) == sorted(LOCATIONS)  # not boot.py's built-in rows
    assert doc["queue_items"] == 2
    assert set(doc) >= {"locations", "queue_items", "oldest_item_age_seconds"}
    table = trafficd("replication", "status", "-c", str(config))
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split()[:2] == ["LOCATION", "BACKLOG"]
    assert any(
        line.split()[:5] == ["usstorage", "3", "1000", "3", "1100"]
        for line in table.stdout.splitlines()
    )
    assert READONLY_PASSWORD not in out.stdout + out.stderr + table.stdout + table.stderr


async def test_status_in_process_leaves_the_collector_as_it_found_it(
    quay_db: QuayDB, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command freezes the collector's objects only at the process's exit (cli.py):
    called in-process, as tests do, it changes nothing of the caller's collector."""
    await fill(quay_db, time.time())
    config = write_config(tmp_path, quay_db.readonly_dsn)
    frozen = gc.get_freeze_count()
    argv = ["replication", "status", "-c", str(config), "--json"]
    assert await asyncio.to_thread(main, argv) == 0  # its own event loop
    assert gc.get_freeze_count() == frozen
    assert json.loads(capsys.readouterr().out)["queue_items"] == 2


async def test_check_removal_exit_codes(quay_db: QuayDB, tmp_path: Path) -> None:
    await fill(quay_db)
    config = write_config(tmp_path, quay_db.readonly_dsn)
    safe = trafficd("replication", "check-removal", "oldstorage", "-c", str(config))
    assert safe.returncode == 0, safe.stdout + safe.stderr
    assert "oldstorage: safe to remove" in safe.stdout
    unsafe = trafficd("replication", "check-removal", "eustorage", "-c", str(config))
    assert unsafe.returncode == 1
    assert "eustorage: NOT safe to remove: 2 of 3 blob(s)" in unsafe.stdout
    assert digest_of("b3") in unsafe.stdout and digest_of("b8") in unsafe.stdout
    unknown = trafficd("replication", "check-removal", "nosuch", "-c", str(config))
    assert unknown.returncode == 2 and "no such location" in unknown.stderr


async def test_check_removal_as_real_quay_writes_blobs(quay_db: QuayDB, tmp_path: Path) -> None:
    """The case that lost data: blobs pushed at us while eu was down, uploading = true.
    The command used to print "safe to remove: all 0 blob(s)" and exit 0."""
    await real_quay_push_with_eu_down(quay_db)
    config = write_config(tmp_path, quay_db.readonly_dsn)
    out = trafficd("replication", "check-removal", "usstorage", "-c", str(config))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "usstorage: NOT safe to remove: 2 of 2 blob(s)" in out.stdout
    assert "safe to remove: all" not in out.stdout


async def test_check_removal_refuses_an_empty_answer_about_a_location_with_data(
    quay_db: QuayDB, tmp_path: Path
) -> None:
    await quay_db.location("usstorage")
    await quay_db.location("eustorage")
    await quay_db.blob("unreferenced", 10, ["eustorage"], manifests=0)
    config = write_config(tmp_path, quay_db.readonly_dsn)
    out = trafficd("replication", "check-removal", "eustorage", "-c", str(config))
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.startswith(
        "eustorage: REFUSED: Quay's database holds placements at eustorage but none of a blob "
        "referenced by a manifest"
    )
    empty = trafficd("replication", "check-removal", "usstorage", "-c", str(config))
    assert empty.returncode == 0 and "safe to remove: all 0 blob(s)" in empty.stdout


async def test_a_database_that_is_down_is_a_clear_error(quay_db: QuayDB, tmp_path: Path) -> None:
    config = write_config(tmp_path, "postgresql://trafficd_ro@127.0.0.1:1/quay")
    out = trafficd("replication", "status", "-c", str(config))
    assert out.returncode == 1
    assert out.stderr.startswith("trafficd replication status: cannot connect to Quay's database")
    assert READONLY_PASSWORD not in out.stderr


async def test_status_serves_the_daemons_figures_brought_up_to_date(
    quay_db: QuayDB, tmp_path: Path
) -> None:
    """With the daemon's state in state_dir, `status` reads only what changed since the
    daemon saved it (its cost follows the changes, not the registry): equal to a read
    of every blob, said where it comes from; --full reads every blob."""
    await fill(quay_db, time.time())
    config = write_config(tmp_path, quay_db.readonly_dsn)
    (tmp_path / "state").mkdir()
    monitor = ReplicationMonitor(
        load(config), Metrics(CollectorRegistry()), state_dir=tmp_path / "state"
    )
    try:
        await monitor.round()
        await monitor.scan()
        await monitor.round()
    finally:
        await monitor.close()
    state_file = tmp_path / "state" / "replication-monitor.json"
    before = state_file.read_bytes()
    quiet = json.loads(trafficd("replication", "status", "-c", str(config), "--json").stdout)
    assert quiet["stale"] is False  # no transaction has ended since the daemon confirmed them
    await quay_db.blob("pushed-after", 5000, ["eustorage"])  # the daemon has not seen it
    saved = trafficd("replication", "status", "-c", str(config), "--json")
    full = trafficd("replication", "status", "-c", str(config), "--json", "--full")
    assert saved.returncode == 0 and full.returncode == 0, saved.stderr + full.stderr
    from_state, from_pages = json.loads(saved.stdout), json.loads(full.stdout)
    assert from_state["source"].startswith("the daemon's figures (saved ")
    assert from_pages["source"] == "Quay's database, read in pages"
    assert from_state["locations"] == from_pages["locations"]
    assert from_state["locations"]["usstorage"]["backlog_blobs"] == 4  # pushed-after too
    # Exact here, but not proven so: a delete since the daemon's confirmation would not
    # show (only a count of every row would prove none happened), so it says stale.
    assert from_state["stale"] is True and from_state["partial"] is False
    assert "every insert is counted" in from_state["note"]
    assert state_file.read_bytes() == before  # the command never writes the daemon's state


async def test_check_removal_does_not_count_a_copy_at_an_unconfigured_location(
    quay_db: QuayDB, tmp_path: Path
) -> None:
    """A blob's only other placement is at a location of Quay's table that trafficd's
    config does not name (boot.py's built-in `s3_us_east_1`, or a location Quay no
    longer serves): removing usstorage loses it. It used to print "safe to remove"."""
    for name in ("usstorage", "eustorage"):
        await quay_db.location(name)
    builtin = "SELECT id FROM imagestoragelocation WHERE name = 's3_us_east_1'"
    quay_db.locations["s3_us_east_1"] = await quay_db.conn.fetchval(builtin)
    await quay_db.blob("kept", 10, ["usstorage", "eustorage"])
    await quay_db.blob("stranded", 20, ["usstorage", "s3_us_east_1"])
    config = write_config(tmp_path, quay_db.readonly_dsn)
    out = trafficd("replication", "check-removal", "usstorage", "-c", str(config))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "usstorage: NOT safe to remove: 1 of 2 blob(s) placed there (20 bytes)" in out.stdout
    assert digest_of("stranded") in out.stdout and digest_of("kept") not in out.stdout
    assert "s3_us_east_1" in out.stdout  # where the uncounted copy is, for the operator


async def test_status_and_check_removal_agree_on_what_a_location_alone_holds(
    quay_db: QuayDB, tmp_path: Path
) -> None:
    """Only a copy at a configured location counts, in `status` as in `check-removal`:
    a blob at usstorage whose other placement is at boot.py's built-in s3_us_east_1 is
    at risk at usstorage. `status` used to count that placement as a copy (at risk: 0)
    while check-removal called removing usstorage a loss of it. Locations that are not
    configured are listed as holding placements; their at-risk figure is what
    check-removal would say removing them loses (blobs with no configured copy)."""
    for name in ("usstorage", "eustorage"):
        await quay_db.location(name)
    builtin = "SELECT id FROM imagestoragelocation WHERE name = 's3_us_east_1'"
    quay_db.locations["s3_us_east_1"] = await quay_db.conn.fetchval(builtin)
    await quay_db.blob("kept", 10, ["usstorage", "eustorage"])
    await quay_db.blob("stranded", 20, ["usstorage", "s3_us_east_1"])
    await quay_db.blob("only-builtin", 40, ["s3_us_east_1"])
    await quay_db.blob("everywhere", 80, ["usstorage", "eustorage", "s3_us_east_1"])
    config_path = write_config(tmp_path, quay_db.readonly_dsn)
    out = trafficd("replication", "status", "-c", str(config_path), "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)["locations"]
    assert status["usstorage"]["at_risk_blobs"] == 1 and status["usstorage"]["at_risk_bytes"] == 20
    assert status["s3_us_east_1"]["configured"] is False
    config = load(config_path)
    assert config.replication is not None
    configured = replication.configured_locations(config)
    monitor = ReplicationMonitor(config, Metrics(CollectorRegistry()))
    try:
        await monitor.round()
        await monitor.scan()
        await monitor.round()
    finally:
        await monitor.close()
    assert monitor.figures is not None
    for name, figures in status.items():
        removal = await check_removal_paged(config.replication, name, configured=configured)
        if removal is None:  # configured, not in Quay's table (apstorage, oldstorage here)
            assert figures["at_risk_blobs"] == 0, name
            continue
        assert (figures["at_risk_blobs"], figures["at_risk_bytes"]) == (
            removal.lost_blobs,
            removal.lost_bytes,
        ), name
        daemon = monitor.figures.locations[name]
        assert (daemon.at_risk_blobs, daemon.at_risk_bytes) == (
            removal.lost_blobs,
            removal.lost_bytes,
        )
