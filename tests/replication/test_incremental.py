"""The daemon's incremental replication figures equal a full scan, against a real
PostgreSQL holding Quay's tables: after inserts, garbage-collection deletes, a
`removelocation`-style delete, a backfill, commits out of id order, a change made
while a re-scan page runs; figures that could be wrong (a delete PostgreSQL's
counters do not show yet, rows inserted below the ids already read) are marked
stale; a count confirms them, or finds what the rounds missed and starts a
re-scan; a count or a re-scan that times out leaves them stale, not wrong; a
restart mid-re-scan loses nothing. Random interleavings of all of these are
test_interleavings.py's."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from tests.replication.conftest import (
    READONLY_PASSWORD,
    SCHEMA,
    SUPERUSER_PASSWORD,
    QuayDB,
    digest_of,
)
from tests.replication.test_figures import NOW, fill, settings
from tests.replication.test_monitor import replication_section
from tests.test_api import write_config
from trafficd.config import load
from trafficd.demo.peers import Postgres
from trafficd.metrics import Metrics
from trafficd.replication import (
    Figures,
    ReplicationError,
    ReplicationMonitor,
    incremental,
    read_figures,
)
from trafficd.replication.base import connect
from trafficd.replication.incremental import STATE_FILE, read_count, read_page
from trafficd.replication.scan import read_status_from_state

pytestmark = pytest.mark.peers


def monitor_for(db: QuayDB, tmp: Path, **replication: object) -> ReplicationMonitor:
    path = write_config(tmp, replication_section(tmp, db.readonly_dsn))
    config = load(path)
    assert config.replication is not None
    config = config.model_copy(
        update={"replication": config.replication.model_copy(update=replication)}
    )
    return ReplicationMonitor(
        config, Metrics(CollectorRegistry()), clock=lambda: NOW, state_dir=tmp
    )


async def full_scan(db: QuayDB, monitor: ReplicationMonitor) -> Figures:
    conn = await connect(settings(db))
    try:
        return await read_figures(conn, monitor.defaults, monitor.clock(), monitor.configured)
    finally:
        await conn.close()


async def assert_equal(db: QuayDB, monitor: ReplicationMonitor) -> None:
    """The monitor's figures are the full scan's, to the blob and byte."""
    figures = monitor.figures
    truth = await full_scan(db, monitor)
    assert figures is not None
    assert figures.locations == truth.locations
    assert (figures.blobs, figures.replica_placements) == (truth.blobs, truth.replica_placements)
    assert (figures.queue_items, figures.dead_items) == (truth.queue_items, truth.dead_items)


async def assert_exact(db: QuayDB, monitor: ReplicationMonitor) -> None:
    """The full scan's figures, and said to be exact (not stale)."""
    await assert_equal(db, monitor)
    figures = monitor.figures
    assert figures is not None
    assert not figures.stale, figures.note


async def assert_exact_or_stale(db: QuayDB, monitor: ReplicationMonitor) -> None:
    """What the monitor may show: the full scan's figures, or figures marked stale."""
    figures = monitor.figures
    assert figures is not None
    if not figures.stale:
        await assert_exact(db, monitor)


async def confirmed(monitor: ReplicationMonitor) -> None:
    """A count confirms the figures (it finds what the rounds expect), and a round."""
    assert await monitor.confirm(), monitor.tracker.stale_note()
    await monitor.round()


async def started(db: QuayDB, tmp: Path, **replication: object) -> ReplicationMonitor:
    await fill(db)
    monitor = monitor_for(db, tmp, **replication)
    await monitor.round()
    assert monitor.figures is None  # no figures before a first full scan: no guess
    await monitor.scan()
    await monitor.round()
    await assert_exact(db, monitor)
    return monitor


async def blob_id(db: QuayDB, name: str) -> int:
    value = await db.conn.fetchval(
        "SELECT id FROM imagestorage WHERE content_checksum = $1", digest_of(name)
    )
    return int(value)


async def place(db: QuayDB, name: str, location: str) -> None:
    await db.conn.execute(
        "INSERT INTO imagestorageplacement (storage_id, location_id) VALUES ($1, $2)",
        await blob_id(db, name),
        db.locations[location],
    )


async def test_inserts_are_followed_exactly_without_a_rescan(
    quay_db: QuayDB, tmp_path: Path
) -> None:
    monitor = await started(quay_db, tmp_path)
    try:
        await quay_db.blob("new-1", 1000, ["usstorage"])  # a push at us
        await quay_db.blob("new-2", 2000, ["eustorage"], manifests=3)  # shared
        await quay_db.blob("pushing", 3000, ["usstorage"], manifests=0)  # no manifest yet
        await place(quay_db, "b2", "eustorage")  # the worker copied b2 to eu
        await place(quay_db, "new-1", "eustorage")
        # b6 was an orphan; a manifest now references it: it becomes a blob.
        await quay_db.conn.execute(
            "INSERT INTO manifest (repository_id, digest, media_type_id, manifest_bytes)"
            " VALUES (1, 'sha256:late', 1, '{}')"
        )
        await quay_db.conn.execute(
            "INSERT INTO manifestblob (repository_id, manifest_id, blob_id, blob_index)"
            " SELECT 1, id, $1, 0 FROM manifest WHERE digest = 'sha256:late'",
            await blob_id(quay_db, "b6"),
        )
        await quay_db.location("newstorage")
        await quay_db.blob("at-new", 50, ["newstorage"])
        scanned = monitor.tracker.last_rescan_end
        await monitor.round()
        await assert_equal(quay_db, monitor)
        assert monitor.figures is not None
        assert monitor.figures.locations["newstorage"].configured is False
        # Exact, but not proven so by a round: a delete would not show in it.
        assert monitor.figures.stale and "every insert is counted" in (monitor.figures.note or "")
        await confirmed(monitor)  # a count proves it, without a re-scan
        await assert_exact(quay_db, monitor)
        assert monitor.tracker.last_rescan_end == scanned
    finally:
        await monitor.close()


async def test_commits_out_of_id_order_are_not_missed(quay_db: QuayDB, tmp_path: Path) -> None:
    """A transaction takes placement id N, another takes N+1 and commits first: the round
    sees N+1, keeps N as a gap, and counts N when it commits."""
    monitor = await started(quay_db, tmp_path)
    slow = await asyncpg.connect(quay_db.server.dsn(quay_db.name), password=SUPERUSER_PASSWORD)
    try:
        b3 = await blob_id(quay_db, "b3")
        tx = slow.transaction()
        await tx.start()
        await slow.execute(
            "INSERT INTO imagestorageplacement (storage_id, location_id) VALUES ($1, $2)",
            b3,
            quay_db.locations["usstorage"],
        )
        await place(quay_db, "b2", "eustorage")  # a higher id, committed first
        await monitor.round()
        await assert_equal(quay_db, monitor)  # b3's copy is not visible yet
        assert monitor.tracker.placements.gaps  # and is waited for
        await confirmed(monitor)  # a count of the rows known (the gap's excepted)
        await assert_exact(quay_db, monitor)
        await tx.commit()
        await monitor.round()
        await assert_equal(quay_db, monitor)
        assert not monitor.tracker.placements.gaps
        await confirmed(monitor)
        await assert_exact(quay_db, monitor)
    finally:
        await slow.close()
        await monitor.close()


async def test_a_backfill_is_followed_exactly(quay_db: QuayDB, tmp_path: Path) -> None:
    """util.backfillreplication queues every blob missing a placement; the worker then
    writes their placements: many rows at once, all seen by id."""
    monitor = await started(quay_db, tmp_path)
    try:
        for name in ("b2", "b4", "b5"):
            await place(quay_db, name, "eustorage")
        for name in ("b3", "b8"):
            await place(quay_db, name, "usstorage")
        for name in ("b7",):
            await place(quay_db, name, "usstorage")
            await place(quay_db, name, "eustorage")
        await monitor.round()
        await assert_equal(quay_db, monitor)
        assert monitor.figures is not None
        assert monitor.figures.locations["eustorage"].backlog_blobs == 0
        assert monitor.figures.locations["usstorage"].at_risk_blobs == 0
        await confirmed(monitor)
        await assert_exact(quay_db, monitor)
    finally:
        await monitor.close()


async def test_garbage_collection_deletes_are_found_by_a_count_and_read_by_a_rescan(
    quay_db: QuayDB, tmp_path: Path
) -> None:
    monitor = await started(quay_db, tmp_path)
    try:
        before = monitor.figures
        # Quay's GC: b2's manifest goes, then b2 (no longer referenced) and its placements.
        b2 = await blob_id(quay_db, "b2")
        await quay_db.conn.execute("DELETE FROM manifestblob WHERE blob_id = $1", b2)
        await quay_db.conn.execute("DELETE FROM imagestorageplacement WHERE storage_id = $1", b2)
        await quay_db.conn.execute("DELETE FROM imagestorage WHERE id = $1", b2)
        await monitor.round()  # whatever PostgreSQL's row counters show by now
        figures = monitor.figures
        assert figures is not None and before is not None
        # Stale, not claimed exact: the last confirmed figures, said to be unconfirmed.
        assert figures.locations == before.locations
        assert figures.stale and figures.to_json()["stale"] is True
        assert monitor.metrics.registry.get_sample_value("trafficd_replication_stale") == 1
        assert not await monitor.confirm()  # the count finds fewer rows than expected
        assert monitor.tracker.rescan is not None  # and starts a re-scan
        await monitor.round()
        assert monitor.figures is not None and monitor.figures.stale
        assert "a re-scan is reading them" in (monitor.figures.note or "")
        assert monitor.tracker.due(NOW, 60, 300, 3600) == "rescan"
        await monitor.scan()
        await monitor.round()
        await assert_exact(quay_db, monitor)
        assert monitor.metrics.registry.get_sample_value("trafficd_replication_stale") == 0
    finally:
        await monitor.close()


async def test_a_removelocation_is_caught_by_the_rescan(quay_db: QuayDB, tmp_path: Path) -> None:
    """util.removelocation deletes a location's placements and its row; a backfill then
    adds copies of blobs that lost one."""
    monitor = await started(quay_db, tmp_path)
    try:
        old = quay_db.locations["oldstorage"]
        await quay_db.conn.execute("DELETE FROM imagestorageplacement WHERE location_id = $1", old)
        await quay_db.conn.execute("DELETE FROM imagestoragelocation WHERE id = $1", old)
        await monitor.round()
        assert monitor.figures is not None and monitor.figures.stale
        await place(quay_db, "b3", "usstorage")
        await monitor.round()
        await assert_exact_or_stale(quay_db, monitor)
        assert not await monitor.confirm()
        await monitor.scan()
        await monitor.round()
        await assert_exact(quay_db, monitor)
        assert monitor.figures is not None and "oldstorage" not in monitor.figures.locations
    finally:
        await monitor.close()


async def test_changes_made_while_a_page_is_read_are_counted_once(
    quay_db: QuayDB, tmp_path: Path
) -> None:
    """A page reads at the watermarks of its start; rounds during it add to it what they
    see. Driven step by step: start the page, change and round, then read the page."""
    monitor = await started(quay_db, tmp_path)
    try:
        conn = await connect(settings(quay_db))
        tracker = monitor.tracker
        count = tracker.start_count(NOW)  # a re-scan starts with a count
        snapshot, found = await read_count(conn, count)
        assert tracker.end_count(count, snapshot, found, rescan=True)
        page = tracker.start_page(NOW, 1000, 10)  # one page: the whole table
        await place(quay_db, "b3", "usstorage")
        await quay_db.blob("during", 77, ["eustorage"])
        await monitor.round()  # counts them in `live`, and keeps them for the page
        assert len(page.changes) == 2
        sets = await read_page(conn, page, monitor._names)
        await conn.close()
        assert tracker.end_page(page, sets, NOW)
        await monitor.round()
        await assert_equal(quay_db, monitor)
        await confirmed(monitor)
        await assert_exact(quay_db, monitor)
    finally:
        await monitor.close()


async def test_a_count_or_a_rescan_that_times_out_leaves_the_figures_stale_not_wrong(
    quay_db: QuayDB, tmp_path: Path
) -> None:
    monitor = await started(quay_db, tmp_path, rescan_timeout=0.3)
    locker = await asyncpg.connect(quay_db.server.dsn(quay_db.name), password=SUPERUSER_PASSWORD)

    async def locked() -> asyncpg.transaction.Transaction:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE manifestblob IN ACCESS EXCLUSIVE MODE")
        return tx

    try:
        before = monitor.figures
        b1 = await blob_id(quay_db, "b1")
        await quay_db.conn.execute(  # b1 loses its copy at eu: at risk nowhere still
            "DELETE FROM imagestorageplacement WHERE storage_id = $1 AND location_id = $2",
            b1,
            quay_db.locations["eustorage"],
        )
        await monitor.round()
        tx = await locked()
        with pytest.raises(ReplicationError, match=r"^count: reading a count failed: statement"):
            await monitor.confirm()
        await tx.rollback()
        await monitor.round()
        assert monitor.figures is not None and before is not None
        assert monitor.figures.stale and monitor.figures.locations == before.locations
        assert not await monitor.confirm()  # read now: it finds the delete, a re-scan starts
        tx = await locked()
        with pytest.raises(ReplicationError, match=r"^re-scan: reading a page failed: statement"):
            await monitor.scan_page()
        await tx.rollback()
        assert monitor.tracker.page is None and monitor.tracker.rescan is not None
        await monitor.round()
        assert monitor.figures.stale
        assert monitor.figures.locations == before.locations  # never half-replaced
        await monitor.scan()  # the page is read again, whole
        await monitor.round()
        await assert_equal(quay_db, monitor)
        # Exact as of the re-scan's count; the lock's transaction ended after it (an
        # exclusive lock takes a transaction id): proven by the next count.
        await confirmed(monitor)
        await assert_exact(quay_db, monitor)
    finally:
        await locker.close()
        await monitor.close()


async def test_a_restart_mid_rescan_loses_nothing(quay_db: QuayDB, tmp_path: Path) -> None:
    monitor = await started(quay_db, tmp_path, rescan_page=3)
    try:
        # A re-scan runs (started by the clock): two pages of three blob ids, then a stop.
        assert not await monitor.scan_page()
        assert not await monitor.scan_page()
        cursor = monitor.tracker.rescan.cursor if monitor.tracker.rescan else None
        assert cursor is not None and cursor > 1
    finally:
        await monitor.close()
    # While trafficd is down: a copy behind the re-scan's cursor, one ahead, a push.
    await place(quay_db, "b2", "eustorage")  # b2's id is behind the cursor
    await place(quay_db, "b8", "usstorage")  # b8's is ahead
    await quay_db.blob("while-down", 5, ["usstorage"])
    again = monitor_for(quay_db, tmp_path, rescan_page=3)
    try:
        assert again.tracker.rescan is not None and again.tracker.rescan.cursor == cursor
        await again.round()
        await assert_equal(quay_db, again)  # resumed: the saved figures plus what changed
        await again.scan()  # the re-scan resumes at its cursor
        assert again.tracker.rescan is None and again.tracker.confirmed_at == NOW
        await again.round()
        await assert_equal(quay_db, again)
        await confirmed(again)  # what the rounds read while it was down, counted
        await assert_exact(quay_db, again)
    finally:
        await again.close()


async def test_a_state_of_another_database_is_not_resumed(quay_db: QuayDB, tmp_path: Path) -> None:
    monitor = await started(quay_db, tmp_path)
    await monitor.close()
    state = monitor.tracker.to_json()
    state["fingerprint"] = "another/1/2"
    monitor.tracker.from_json(state).save(tmp_path / "replication-monitor.json")
    again = monitor_for(quay_db, tmp_path)
    try:
        await again.round()
        assert again.figures is None  # started afresh: a full scan first
        await again.scan()
        await again.round()
        await assert_exact(quay_db, again)
    finally:
        await again.close()


async def test_a_backlog_of_ids_is_read_over_several_rounds_exactly(
    quay_db: QuayDB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More new ids than a round reads (ROUND_ROWS): each round takes its share, counting
    only the rows up to its own mark, until it has caught up."""
    monitor = await started(quay_db, tmp_path)
    monkeypatch.setattr(incremental, "ROUND_ROWS", 2)
    try:
        for i in range(4):
            await quay_db.blob(f"burst-{i}", 10 + i, ["usstorage", "eustorage"], manifests=2)
        await place(quay_db, "b3", "usstorage")
        rounds = 0
        while True:
            await monitor.round()
            rounds += 1
            if not monitor.tracker.catching_up:
                break
        assert rounds >= 4
        await assert_equal(quay_db, monitor)
        await confirmed(monitor)
        await assert_exact(quay_db, monitor)
    finally:
        await monitor.close()


async def test_the_daemons_loops_scan_in_the_background_and_confirm(
    quay_db: QuayDB, tmp_path: Path
) -> None:
    """`run` as the daemon runs it: rounds every interval, the first full scan in its own
    task; the figures appear, confirmed, without a round waiting for the scan."""
    await fill(quay_db)
    monitor = monitor_for(quay_db, tmp_path, interval=0.2, confirm_interval=0.2)
    started = time.monotonic()  # a clock that moves: a second scan would move last_rescan_end
    monitor.clock = lambda: NOW + time.monotonic() - started
    task = asyncio.create_task(monitor.run())
    try:
        for _ in range(100):  # bounded: a few rounds and one scan of a small table
            await asyncio.sleep(0.05)
            if monitor.figures is not None and not monitor.figures.stale:
                break
        await assert_exact(quay_db, monitor)
        scanned = monitor.tracker.last_rescan_end
        await asyncio.sleep(0.6)  # three rounds: none starts another scan (none is due)
        assert monitor.tracker.rescan is None and monitor.tracker.last_rescan_end == scanned
        await quay_db.blob("while-running", 9, ["usstorage"])
        for _ in range(100):  # a round counts it; a count in the background confirms it
            await asyncio.sleep(0.05)
            f = monitor.figures
            if f is not None and f.blobs == 8 and not f.stale:
                break
        await assert_exact(quay_db, monitor)
        assert monitor.tracker.last_rescan_end == scanned  # confirmed without a re-scan
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await monitor.close()


async def fresh_cluster(directory: Path) -> tuple[Postgres, QuayDB]:
    """A new PostgreSQL cluster with one database of Quay's tables, created the same
    way every time: two of them share every oid (a staging and a production cluster,
    a disaster-recovery restore)."""
    directory.mkdir(mode=0o755)
    server = Postgres(directory / "cluster", SUPERUSER_PASSWORD)
    server.start()
    admin = await asyncpg.connect(server.dsn(), password=SUPERUSER_PASSWORD)
    try:
        await admin.execute("CREATE DATABASE quay")
        await admin.execute(f"CREATE ROLE trafficd_ro LOGIN PASSWORD '{READONLY_PASSWORD}'")
    finally:
        await admin.close()
    conn = await asyncpg.connect(server.dsn("quay"), password=SUPERUSER_PASSWORD)
    await conn.execute(SCHEMA)
    await conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO trafficd_ro")
    await conn.execute("INSERT INTO mediatype (name) VALUES ('m')")
    await conn.execute("INSERT INTO repository (name) VALUES ('org/repo')")
    return server, QuayDB(server, "quay", conn)


async def test_another_cluster_with_the_same_oids_is_another_database(tmp_path: Path) -> None:
    """The state saved for one cluster is not served for another whose database and
    table oids are the same (every cluster created the same way has them): the
    fingerprint names the cluster too. It used to bring cluster a's figures "up to
    date" from cluster b's rows and print them as exact."""
    base = Path(tempfile.mkdtemp(prefix="trafficd-pg.", dir="/tmp"))
    base.chmod(0o755)
    clusters = [await fresh_cluster(base / name) for name in ("a", "b")]
    try:
        (_, a), (_, b) = clusters
        for db in (a, b):
            for name in ("usstorage", "eustorage"):
                await db.location(name)
        await a.blob("only-at-us", 100, ["usstorage"])
        await b.blob("everywhere", 100, ["usstorage", "eustorage"])
        monitor = monitor_for(a, tmp_path)
        try:
            await monitor.round()
            await monitor.scan()
        finally:
            await monitor.close()
        tracker = incremental.Tracker.load(tmp_path / STATE_FILE)
        assert tracker is not None and tracker.live
        served = await read_status_from_state(
            settings(b), tracker, monitor.defaults, monitor.configured, NOW
        )
        assert served is None  # not a's figures: b is read in full
    finally:
        for server, db in clusters:
            await db.conn.close()
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


async def test_a_delete_the_statistics_do_not_show_yet_never_leaves_wrong_figures_unmarked(
    quay_db: QuayDB, tmp_path: Path
) -> None:
    """The reviewer's reproduction. Between two rounds b1 loses its placements at eu and
    old (removelocation-style), and a blob is pushed at eu. PostgreSQL's row counters
    (pg_stat_user_tables) show the delete only once the deleting session reports them,
    which it does when it next goes idle (here: after a sleep in the same request). The
    round sees the push by its id: it showed usstorage at risk 3 blobs / 1100 B against
    a truth of 4 / 1200 B, with stale false. Now stale until a count, which finds the
    delete whatever the counters show; the re-scan it starts reads it."""
    monitor = await started(quay_db, tmp_path)
    writer = await asyncpg.connect(quay_db.server.dsn(quay_db.name), password=SUPERUSER_PASSWORD)
    busy: asyncio.Task[str] | None = None
    try:
        b1 = await blob_id(quay_db, "b1")
        eu, old = quay_db.locations["eustorage"], quay_db.locations["oldstorage"]
        # One request: the delete commits, then the session stays busy, so its row counts
        # stay unreported (as they do for up to 10 s after any commit within a second of
        # its previous report, or while a busy session runs on).
        busy = asyncio.create_task(
            writer.execute(
                "BEGIN; DELETE FROM imagestorageplacement WHERE storage_id = "
                f"{b1} AND location_id IN ({eu}, {old}); COMMIT; SELECT pg_sleep(3)"
            )
        )
        for _ in range(100):  # bounded: the delete commits at once
            left = await quay_db.conn.fetchval(
                "SELECT count(*) FROM imagestorageplacement WHERE storage_id = $1", b1
            )
            if left == 1:
                break
            await asyncio.sleep(0.02)
        await quay_db.blob("pushed-at-eu", 50, ["eustorage"])
        await monitor.round()
        truth = await full_scan(quay_db, monitor)
        assert truth.locations["usstorage"].at_risk_blobs == 4  # b1 is now only at us
        await assert_exact_or_stale(quay_db, monitor)
        assert not busy.done()  # the deleting session has not reported its counts yet
        assert not await monitor.confirm()  # the count finds the delete all the same
        await monitor.scan()
        await monitor.round()
        await assert_exact(quay_db, monitor)
        await busy
    finally:
        if busy is not None:
            await asyncio.gather(busy, return_exceptions=True)
        await writer.close()
        await monitor.close()


async def test_rows_inserted_below_the_ids_already_read_never_leave_wrong_figures_unmarked(
    quay_db: QuayDB, tmp_path: Path
) -> None:
    """A placement whose id is below the rounds' high mark and no longer waited for: a
    transaction that held its id longer than GAP_TTL and then committed, or a restore or
    backfill writing explicit ids. The rounds never read it by id; the figures must not
    claim to be exact without it."""
    monitor = await started(quay_db, tmp_path)
    slow = await asyncpg.connect(quay_db.server.dsn(quay_db.name), password=SUPERUSER_PASSWORD)
    try:
        tx = slow.transaction()
        await tx.start()
        await slow.execute(
            "INSERT INTO imagestorageplacement (storage_id, location_id) VALUES ($1, $2)",
            await blob_id(quay_db, "b2"),
            quay_db.locations["eustorage"],
        )
        await place(quay_db, "b3", "usstorage")  # a higher id, committed first
        await monitor.round()
        assert monitor.tracker.placements.gaps  # b2's copy is waited for...
        later = NOW + incremental.GAP_TTL + 1
        monitor.clock = lambda: later
        await monitor.round()
        assert not monitor.tracker.placements.gaps  # ...and given up on
        await tx.commit()
        # And a backfill writing an explicit id in a hole below the mark.
        hole = await quay_db.conn.fetchval("SELECT nextval('imagestorageplacement_id_seq')")
        await place(quay_db, "b7", "usstorage")
        await quay_db.conn.execute(
            "INSERT INTO imagestorageplacement (id, storage_id, location_id) VALUES ($1, $2, $3)",
            hole,
            await blob_id(quay_db, "b8"),
            quay_db.locations["usstorage"],
        )
        for _ in range(3):
            await monitor.round()
            await assert_exact_or_stale(quay_db, monitor)
        assert not await monitor.confirm()  # two rows more than the rounds read
        await monitor.scan()
        await monitor.round()
        await assert_exact(quay_db, monitor)
    finally:
        await slow.close()
        await monitor.close()
