"""Every figure of `trafficd replication status`, exactly, against a real PostgreSQL
holding Quay's tables; check-removal; a database that stops; a statement timeout."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest
from pydantic import SecretStr

from tests.replication.conftest import READONLY_PASSWORD, SUPERUSER_PASSWORD, QuayDB, digest_of
from trafficd.config.model import Replication
from trafficd.replication import (
    LocationFigures,
    ReplicationError,
    check_removal,
    connect,
    naive_utc,
    read_figures,
    render_status,
)

pytestmark = pytest.mark.peers

NOW = 1_795_400_000.0  # a fixed clock: figures never depend on the database's own
DEFAULTS = ["usstorage", "eustorage"]
CONFIGURED = ["usstorage", "eustorage", "apstorage", "oldstorage"]


def settings(db: QuayDB, timeout: str = "5s") -> Replication:
    return Replication(
        dsn=SecretStr(db.readonly_dsn),
        password=SecretStr(READONLY_PASSWORD),
        statement_timeout=timeout,
    )


async def fill(db: QuayDB, at: float = NOW) -> None:
    """The rows every test reads; queue times are relative to `at`."""
    for name in ("usstorage", "eustorage", "apstorage", "oldstorage"):
        await db.location(name)
    # Every blob reads uploading = true, as real Quay's v2 pushes leave them; b5 and b8
    # carry what Quay's test fixtures and older rows may hold: the column is no signal.
    await db.blob("b1", 100, ["usstorage", "eustorage", "oldstorage"])  # replicated
    await db.blob("b2", 200, ["usstorage"])  # pushed at us, not yet copied
    await db.blob("b3", 300, ["eustorage"])  # pushed at eu, not yet copied
    await db.blob("b4", 400, ["usstorage"], manifests=2)  # shared by two manifests
    await db.blob("b5", 500, ["usstorage"], uploading=False)  # as Quay's fixtures write
    await db.blob("b6", 600, ["usstorage"], manifests=0)  # orphan
    await db.blob("b7", 700, ["apstorage"])  # only at a non-default location
    await db.blob("b8", None, ["eustorage"], uploading=None)  # no size yet
    now = naive_utc(at)
    await db.queue_item(available_after=now - timedelta(seconds=100))  # available
    await db.queue_item(available_after=now + timedelta(seconds=60))  # not yet
    await db.queue_item(  # claimed, expired 30 min ago: available again, and stuck
        available_after=now - timedelta(hours=1),
        available=False,
        processing_expires=now - timedelta(minutes=30),
        retries=3,
    )
    await db.queue_item(  # claimed and still being processed
        available_after=now - timedelta(hours=2),
        available=False,
        processing_expires=now + timedelta(minutes=10),
    )
    await db.queue_item(available_after=now - timedelta(hours=3), retries=0)  # dead
    await db.queue_item(available_after=now - timedelta(hours=4), queue="chunk_cleanup/x/")


async def test_every_figure_exactly(quay_db: QuayDB) -> None:
    await fill(quay_db)
    conn = await connect(settings(quay_db))
    try:
        figures = await read_figures(conn, DEFAULTS, NOW, CONFIGURED)
    finally:
        await conn.close()
    # Counted blobs: b1 b2 b3 b4 b5 b7 b8 (b6 is an orphan): 7 blobs, 2200 bytes.
    assert figures.blobs == 7
    assert figures.locations == {
        # us holds b1 b2 b4 b5; missing b3 b7 b8; alone holds b2 b4 b5
        "usstorage": LocationFigures(
            backlog_blobs=3, backlog_bytes=1000, at_risk_blobs=3, at_risk_bytes=1100
        ),
        # eu holds b1 b3 b8; missing b2 b4 b5 b7
        "eustorage": LocationFigures(
            backlog_blobs=4, backlog_bytes=1800, at_risk_blobs=2, at_risk_bytes=300
        ),
        # not default locations: no backlog; ap alone holds b7
        "apstorage": LocationFigures(at_risk_blobs=1, at_risk_bytes=700),
        "oldstorage": LocationFigures(),
    }
    assert figures.queue_items == 2
    assert figures.oldest_item_age_seconds == 3600.0
    assert figures.dead_items == 1
    assert figures.stuck_items == 1
    assert figures.replica_placements == 2  # b1's second and third copies
    assert figures.to_json()["locations"]["usstorage"] == {
        "backlog_blobs": 3,
        "backlog_bytes": 1000,
        "at_risk_blobs": 3,
        "at_risk_bytes": 1100,
        "configured": True,
    }


async def test_a_completed_copy_moves_the_figures(quay_db: QuayDB) -> None:
    await fill(quay_db)
    conn = await connect(settings(quay_db))
    try:
        before = await read_figures(conn, DEFAULTS, NOW, CONFIGURED)
        # The replication worker copies b2 to eu: one placement more.
        b2 = await quay_db.conn.fetchval(
            "SELECT id FROM imagestorage WHERE content_checksum = $1", digest_of("b2")
        )
        await quay_db.conn.execute(
            "INSERT INTO imagestorageplacement (storage_id, location_id) VALUES ($1, $2)",
            b2,
            quay_db.locations["eustorage"],
        )
        after = await read_figures(conn, DEFAULTS, NOW, CONFIGURED)
    finally:
        await conn.close()
    assert (
        after.locations["eustorage"].backlog_blobs
        == before.locations["eustorage"].backlog_blobs - 1
    )
    assert (
        after.locations["usstorage"].at_risk_blobs
        == before.locations["usstorage"].at_risk_blobs - 1
    )
    assert after.replica_placements == before.replica_placements + 1


async def test_check_removal_safe_and_unsafe(quay_db: QuayDB) -> None:
    await fill(quay_db)
    conn = await connect(settings(quay_db))
    try:
        old = await check_removal(conn, "oldstorage")
        eu = await check_removal(conn, "eustorage")
    finally:
        await conn.close()
    assert old is not None and eu is not None
    assert old.safe and old.placed == 1 and old.lost_blobs == 0
    assert not eu.safe
    assert (eu.placed, eu.lost_blobs, eu.lost_bytes) == (3, 2, 300)
    assert eu.examples == [digest_of("b3"), digest_of("b8")]


async def test_only_configured_locations_are_listed_and_others_holding_data_are_marked(
    quay_db: QuayDB,
) -> None:
    """Quay's table holds boot.py's 8 built-in rows beside the configured ones: they hold
    nothing and are not shown. A location that holds placements but that trafficd's
    config does not name (oldstorage here) is shown, marked as not configured."""
    await fill(quay_db)
    conn = await connect(settings(quay_db))
    try:
        figures = await read_figures(conn, DEFAULTS, NOW, ["usstorage", "eustorage", "apstorage"])
    finally:
        await conn.close()
    builtin = await quay_db.conn.fetchval("SELECT count(*) FROM imagestoragelocation")
    assert builtin == 8 + 4  # the fixture is as real Quay's: the built-in rows are there
    assert sorted(figures.locations) == ["apstorage", "eustorage", "oldstorage", "usstorage"]
    assert figures.locations["oldstorage"] == LocationFigures(configured=False)
    assert figures.locations["apstorage"].configured
    assert figures.to_json()["locations"]["oldstorage"]["configured"] is False
    table = render_status(figures)
    old = next(line for line in table.splitlines() if line.startswith("oldstorage"))
    assert old.endswith("(not configured: holds placements)")
    assert "s3_us_east_1" not in table


# The removal query of trafficd before issue 16, kept to prove what it answered on a
# database as real Quay writes it.
OLD_REMOVAL_SQL = """
    WITH blob AS (
        SELECT s.id, COALESCE(s.image_size, 0) AS size FROM imagestorage s
        WHERE s.uploading IS NOT TRUE
          AND EXISTS (SELECT 1 FROM manifestblob mb WHERE mb.blob_id = s.id)
    ),
    here AS (
        SELECT b.id, b.size FROM blob b
        JOIN imagestorageplacement p ON p.storage_id = b.id
        JOIN imagestoragelocation l ON l.id = p.location_id WHERE l.name = $1
    ),
    lost AS (
        SELECT h.id, h.size FROM here h WHERE NOT EXISTS (
            SELECT 1 FROM imagestorageplacement p
            JOIN imagestoragelocation l ON l.id = p.location_id
            WHERE p.storage_id = h.id AND l.name = ANY($2::text[]))
    )
    SELECT (SELECT count(*) FROM here) AS placed, (SELECT count(*) FROM lost) AS lost_blobs
"""


async def real_quay_push_with_eu_down(db: QuayDB) -> None:
    """What real Quay left after a push to us while eu's bucket was down: 2 blobs placed
    only at us, `uploading` true on both, their replication still queued."""
    await db.location("usstorage")
    await db.location("eustorage")
    await db.blob("layer", 2_000_000, ["usstorage"])
    await db.blob("config", 1_500, ["usstorage"])
    for _ in range(2):
        await db.queue_item(available_after=naive_utc(NOW - 30))


async def test_blobs_as_real_quay_writes_them_are_counted_and_the_old_filter_said_safe(
    quay_db: QuayDB,
) -> None:
    await real_quay_push_with_eu_down(quay_db)
    conn = await connect(settings(quay_db))
    try:
        old = await conn.fetchrow(OLD_REMOVAL_SQL, "usstorage", ["eustorage"])
        removal = await check_removal(conn, "usstorage")
        figures = await read_figures(conn, DEFAULTS, NOW, DEFAULTS)
    finally:
        await conn.close()
    # Before: "safe to remove: all 0 blob(s)": following it would have lost both blobs.
    assert (old["placed"], old["lost_blobs"]) == (0, 0)
    assert removal is not None and not removal.safe
    assert (removal.placed, removal.lost_blobs, removal.lost_bytes) == (2, 2, 2_001_500)
    assert figures.locations["eustorage"].backlog_blobs == 2
    assert figures.locations["usstorage"].at_risk_blobs == 2
    assert figures.locations["usstorage"].at_risk_bytes == 2_001_500


async def test_check_removal_refuses_when_the_location_holds_data_but_no_blob_counts(
    quay_db: QuayDB,
) -> None:
    await quay_db.location("usstorage")
    await quay_db.location("eustorage")
    await quay_db.blob("unreferenced", 10, ["eustorage"], manifests=0)
    conn = await connect(settings(quay_db))
    try:
        eu = await check_removal(conn, "eustorage")
        us = await check_removal(conn, "usstorage")
    finally:
        await conn.close()
    assert eu is not None and eu.holds and eu.placed == 0
    assert eu.refused and not eu.safe
    assert us is not None and not us.holds and us.safe  # truly empty: nothing to lose


async def test_the_monitor_cannot_write(quay_db: QuayDB) -> None:
    conn = await connect(settings(quay_db))
    try:
        with pytest.raises(asyncpg.PostgresError):
            # Even a role with rights could not: every transaction is read-only.
            await conn.execute("CREATE TEMP TABLE x (id int)")
    finally:
        await conn.close()


async def test_a_slow_query_is_cut_by_the_statement_timeout(quay_db: QuayDB) -> None:
    await fill(quay_db)
    conn = await connect(settings(quay_db, timeout="300ms"))
    locker = await asyncpg.connect(quay_db.server.dsn(quay_db.name), password=SUPERUSER_PASSWORD)
    try:
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE imagestorage IN ACCESS EXCLUSIVE MODE")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ReplicationError, match="statement timeout"):
            await read_figures(conn, DEFAULTS, NOW, CONFIGURED)
        assert loop.time() - started < 3
        await tx.rollback()
        figures = await read_figures(conn, DEFAULTS, NOW, CONFIGURED)  # usable again
        assert figures.blobs == 7
    finally:
        await locker.close()
        await conn.close()


async def test_wrong_password_and_unreachable_database_are_clear_errors(quay_db: QuayDB) -> None:
    bad = Replication(dsn=SecretStr(quay_db.readonly_dsn), password=SecretStr("nope-wrong"))
    with pytest.raises(ReplicationError) as err:
        await connect(bad)
    assert "nope-wrong" not in str(err.value) and "InvalidPasswordError" in str(err.value)
    down = Replication(dsn=SecretStr("postgresql://trafficd_ro@127.0.0.1:1/quay"))
    with pytest.raises(ReplicationError, match="cannot connect"):
        await connect(down)
