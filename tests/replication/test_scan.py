"""One-shot reads in pages (`status`, `check-removal`) against a real PostgreSQL
holding Quay's tables: equal to one pass; partial and said so when out of time;
check-removal exact or refused, never partial."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.replication.conftest import SUPERUSER_PASSWORD, QuayDB, digest_of
from tests.replication.test_commands import write_config
from tests.replication.test_figures import CONFIGURED, DEFAULTS, NOW, fill, settings
from trafficd.replication import ReplicationError, check_removal, connect, read_figures
from trafficd.replication.scan import check_removal_paged, pages, read_status

pytestmark = pytest.mark.peers

CLI = (sys.executable, "-m", "trafficd.cli", "replication")


@pytest.fixture
async def locked(quay_db: QuayDB) -> AsyncIterator[None]:
    """Quay's rows (test_figures.fill), then manifestblob locked by another session:
    every page waits on it."""
    await fill(quay_db)
    locker = await asyncpg.connect(quay_db.server.dsn(quay_db.name), password=SUPERUSER_PASSWORD)
    tx = locker.transaction()
    await tx.start()
    await locker.execute("LOCK TABLE manifestblob IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        await tx.rollback()
        await locker.close()


def test_pages_cover_every_id_and_the_last_is_open() -> None:
    assert pages(0, 10) == [(0, 1 << 62)]
    assert pages(25, 10) == [(0, 9), (9, 18), (18, 1 << 62)]
    # As many as a multiple of the connections reading them, of even sizes: 4 pages of
    # 250,000 ids on 3 connections left one reading the last alone.
    assert pages(1_000_000, 250_000, 3) == [
        (i * 166_667, (i + 1) * 166_667 if i < 5 else 1 << 62) for i in range(6)
    ]


async def test_pages_equal_one_pass(quay_db: QuayDB) -> None:
    await fill(quay_db)
    conn = await connect(settings(quay_db))
    try:
        one = await read_figures(conn, DEFAULTS, NOW, CONFIGURED)
        removal = await check_removal(conn, "eustorage")
    finally:
        await conn.close()
    paged = await read_status(settings(quay_db), DEFAULTS, CONFIGURED, NOW, page=2)
    assert not paged.partial and paged.coverage == 1.0
    assert paged.locations == one.locations
    assert (paged.blobs, paged.replica_placements) == (one.blobs, one.replica_placements)
    assert paged.queue_items == one.queue_items
    paged_removal = await check_removal_paged(settings(quay_db), "eustorage", page=2)
    assert paged_removal == removal
    assert paged_removal is not None and paged_removal.examples == [
        digest_of("b3"),
        digest_of("b8"),
    ]
    assert await check_removal_paged(settings(quay_db), "nosuch") is None


async def test_status_out_of_time_prints_partial_figures_said_so(
    quay_db: QuayDB, locked: None
) -> None:
    figures = await read_status(settings(quay_db), DEFAULTS, CONFIGURED, NOW, budget=0.5)
    assert figures.partial and figures.coverage == 0.0
    assert "pages of blob ids read within 0.5s" in (figures.note or "")
    assert figures.to_json()["partial"] is True
    assert figures.queue_items == 2  # read in full before the pages


async def test_the_cli_answers_within_its_statement_timeout_partial_or_not(
    quay_db: QuayDB, locked: None, tmp_path: Path
) -> None:
    config = write_config(tmp_path, quay_db.readonly_dsn)
    config.write_text(config.read_text().replace('"5s"', '"1s"'))
    out = subprocess.run(
        [*CLI, "status", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("PARTIAL: only 0% of the blobs (by id) were read in time")


async def test_check_removal_is_exact_or_refuses(
    quay_db: QuayDB, locked: None, tmp_path: Path
) -> None:
    with pytest.raises(ReplicationError, match="statement timeout"):
        await check_removal_paged(settings(quay_db, timeout="300ms"), "oldstorage")
    config = write_config(tmp_path, quay_db.readonly_dsn)
    config.write_text(config.read_text().replace('"5s"', '"300ms"'))
    out = subprocess.run(
        [*CLI, "check-removal", "oldstorage", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 1
    assert "REFUSED: no answer without reading every blob" in out.stderr
    assert "safe to remove" not in out.stdout
