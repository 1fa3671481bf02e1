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
)

pytestmark = pytest.mark.peers

NOW = 1_795_400_000.0  # a fixed clock: figures never depend on the database's own
DEFAULTS = ["usstorage", "eustorage"]


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
    await db.blob("b1", 100, ["usstorage", "eustorage", "oldstorage"])  # replicated
    await db.blob("b2", 200, ["usstorage"])  # pushed at us, not yet copied
    await db.blob("b3", 300, ["eustorage"])  # pushed at eu, not yet copied
    await db.blob("b4", 400, ["usstorage"], manifests=2)  # shared by two manifests
    await db.blob("b5", 500, ["usstorage"], uploading=True)  # upload not finished
    await db.blob("b6", 600, ["usstorage"], manifests=0)  # orphan
    await db.blob("b7", 700, ["apstorage"])  # only at a non-default location
    await db.blob("b8", None, ["eustorage"], uploading=None)  # no size yet, not uploading
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
        figures = await read_figures(conn, DEFAULTS, NOW)
    finally:
        await conn.close()
    # Counted blobs: b1 b2 b3 b4 b7 b8 (b5 uploading, b6 orphan): 6 blobs, 1700 bytes.
    assert figures.blobs == 6
    assert figures.locations == {
        # us holds b1 b2 b4; missing b3 b7 b8
        "usstorage": LocationFigures(
            backlog_blobs=3, backlog_bytes=1000, at_risk_blobs=2, at_risk_bytes=600
        ),
        # eu holds b1 b3 b8; missing b2 b4 b7
        "eustorage": LocationFigures(
            backlog_blobs=3, backlog_bytes=1300, at_risk_blobs=2, at_risk_bytes=300
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
        "at_risk_blobs": 2,
        "at_risk_bytes": 600,
    }


async def test_a_completed_copy_moves_the_figures(quay_db: QuayDB) -> None:
    await fill(quay_db)
    conn = await connect(settings(quay_db))
    try:
        before = await read_figures(conn, DEFAULTS, NOW)
        # The replication worker copies b2 to eu: one placement more.
        b2 = await quay_db.conn.fetchval(
            "SELECT id FROM imagestorage WHERE content_checksum = $1", digest_of("b2")
        )
        await quay_db.conn.execute(
            "INSERT INTO imagestorageplacement (storage_id, location_id) VALUES ($1, $2)",
            b2,
            quay_db.locations["eustorage"],
        )
        after = await read_figures(conn, DEFAULTS, NOW)
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
            await read_figures(conn, DEFAULTS, NOW)
        assert loop.time() - started < 3
        await tx.rollback()
        figures = await read_figures(conn, DEFAULTS, NOW)  # the session is usable again
        assert figures.blobs == 6
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
