"""Random interleavings of what Quay and its operators do to the tables the replication
figures come from, against a real PostgreSQL, with the daemon's monitor reading between
them: after every round its figures equal a full scan, or are marked stale; once the
writes stop, a count (and the re-scan it may start) makes them exact again.

Each step is one of: a push (some blobs without a size yet), a copy by the replication
worker, garbage collection of a blob, a manifest reference dropped, a placement
deleted (removelocation-style, one blob or a whole location), a backfill writing an
explicit id into a hole below the ids already read, a size filled in place, a
transaction holding its ids across steps (commits out of order, sometimes longer than
the monitor waits for a gap), a count, a re-scan page, a restart of the monitor, and
rounds. The monitor's clock moves two minutes a step, so gaps are given up on.
Seeded: a failure names its seed and step."""

from __future__ import annotations

import random
from pathlib import Path

import asyncpg
import pytest

from tests.replication.conftest import SUPERUSER_PASSWORD, QuayDB
from tests.replication.test_figures import NOW, fill
from tests.replication.test_incremental import assert_exact, full_scan, monitor_for
from trafficd.replication import ReplicationMonitor

pytestmark = pytest.mark.peers

STEPS = 30
LOCATIONS = ("usstorage", "eustorage", "apstorage", "oldstorage")


class World:
    """Quay's side: the writes, each as Quay (or an operator's tool) makes it."""

    def __init__(self, db: QuayDB, rng: random.Random) -> None:
        self.db = db
        self.rng = rng
        self.pushed = 0
        self.holes: list[int] = []  # placement ids taken and never used (rolled back)
        self.slow: tuple[asyncpg.Connection, asyncpg.transaction.Transaction] | None = None

    async def ids(self, sql: str) -> list[int]:
        return [int(r[0]) for r in await self.db.conn.fetch(sql)]

    async def blobs(self) -> list[int]:
        return await self.ids("SELECT id FROM imagestorage ORDER BY id")

    async def push(self) -> str:
        self.pushed += 1
        at = self.rng.sample(LOCATIONS[:3], self.rng.choice((1, 1, 2)))
        size = None if self.rng.random() < 0.2 else self.rng.randrange(1, 10_000)
        if self.rng.random() < 0.3:  # a transaction that rolled back: a hole in the ids
            self.holes.append(
                await self.db.conn.fetchval("SELECT nextval('imagestorageplacement_id_seq')")
            )
        await self.db.blob(f"pushed-{self.pushed}", size, at, manifests=self.rng.choice((0, 1, 2)))
        return f"push at {at}, size {size}"

    async def copy(self) -> str:
        rows = await self.db.conn.fetch(
            "SELECT s.id, l.id AS location FROM imagestorage s CROSS JOIN imagestoragelocation l"
            " WHERE l.name = ANY($1::text[]) AND NOT EXISTS (SELECT 1 FROM imagestorageplacement"
            " p WHERE p.storage_id = s.id AND p.location_id = l.id)",
            list(LOCATIONS),
        )
        if not rows:
            return "copy: nothing to copy"
        row = self.rng.choice(rows)
        await self.db.conn.execute(
            "INSERT INTO imagestorageplacement (storage_id, location_id) VALUES ($1, $2)",
            row["id"],
            row["location"],
        )
        return f"copy of blob {row['id']} to location {row['location']}"

    async def garbage_collect(self) -> str:
        """Quay's GC: the blob's manifest references, then its placements and itself."""
        blobs = await self.blobs()
        if not blobs:
            return "gc: no blob"
        blob = self.rng.choice(blobs)
        async with self.db.conn.transaction():
            await self.db.conn.execute("DELETE FROM manifestblob WHERE blob_id = $1", blob)
            await self.db.conn.execute(
                "DELETE FROM imagestorageplacement WHERE storage_id = $1", blob
            )
            await self.db.conn.execute("DELETE FROM imagestorage WHERE id = $1", blob)
        return f"gc of blob {blob}"

    async def unreference(self) -> str:
        refs = await self.ids("SELECT id FROM manifestblob")
        if not refs:
            return "unreference: none"
        ref = self.rng.choice(refs)
        await self.db.conn.execute("DELETE FROM manifestblob WHERE id = $1", ref)
        return f"manifest reference {ref} deleted"

    async def remove_placement(self) -> str:
        if self.rng.random() < 0.2:  # util.removelocation's delete, of a whole location
            location = self.rng.choice(LOCATIONS)
            await self.db.conn.execute(
                "DELETE FROM imagestorageplacement WHERE location_id = $1",
                self.db.locations[location],
            )
            return f"every placement at {location} deleted"
        placements = await self.ids("SELECT id FROM imagestorageplacement")
        if not placements:
            return "remove placement: none"
        placement = self.rng.choice(placements)
        await self.db.conn.execute("DELETE FROM imagestorageplacement WHERE id = $1", placement)
        return f"placement {placement} deleted"

    async def backfill(self) -> str:
        """A restore or backfill tool writing an explicit id, in a hole below the ids
        the monitor has read."""
        blobs = await self.blobs()
        if not self.holes or not blobs:
            return "backfill: no hole"
        hole = self.holes.pop(self.rng.randrange(len(self.holes)))
        blob = self.rng.choice(blobs)
        location = self.db.locations[self.rng.choice(LOCATIONS)]
        done = await self.db.conn.execute(
            "INSERT INTO imagestorageplacement (id, storage_id, location_id) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING",
            hole,
            blob,
            location,
        )
        return f"backfill of placement id {hole} (blob {blob}, location {location}): {done}"

    async def fill_size(self) -> str:
        """Quay fills a size left NULL when the blob is pushed again."""
        done = await self.db.conn.execute(
            "UPDATE imagestorage SET image_size = 4321 WHERE id = (SELECT min(id) FROM"
            " imagestorage WHERE image_size IS NULL)"
        )
        return f"size filled in place: {done}"

    async def hold(self) -> str:
        """A push in a transaction that commits at a later step: after higher ids,
        sometimes after the monitor stopped waiting for them. (Its own blob: a row of
        the other steps would wait on its locks.)"""
        if self.slow is not None:
            conn, tx = self.slow
            self.slow = None
            await tx.commit()
            await conn.close()
            return "the held push commits"
        conn = await asyncpg.connect(self.db.server.dsn(self.db.name), password=SUPERUSER_PASSWORD)
        tx = conn.transaction()
        await tx.start()
        held = QuayDB(self.db.server, self.db.name, conn, self.db.locations, self.db._manifests)
        self.pushed += 1
        await held.blob(f"held-{self.pushed}", 77, [self.rng.choice(LOCATIONS[:3])])
        self.slow = (conn, tx)
        return "a push holds its ids"

    async def close(self) -> None:
        if self.slow is not None:
            conn, tx = self.slow
            self.slow = None
            await tx.commit()
            await conn.close()


async def shown_exact_or_stale(db: QuayDB, monitor: ReplicationMonitor, where: str) -> bool:
    """After a round: the full scan's figures, or marked stale. True when exact."""
    figures = monitor.figures
    if figures is None:
        return False
    if figures.stale:
        return False
    truth = await full_scan(db, monitor)
    assert figures.locations == truth.locations, f"{where}: wrong and not stale"
    assert (figures.blobs, figures.replica_placements) == (truth.blobs, truth.replica_placements)
    return True


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_interleavings_are_exact_or_stale_after_every_round(
    quay_db: QuayDB, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    await fill(quay_db)
    world = World(quay_db, rng)
    clock = [NOW]
    monitor = monitor_for(quay_db, tmp_path, rescan_page=3)
    monitor.clock = lambda: clock[0]
    await monitor.round()
    await monitor.scan()
    await monitor.round()
    await assert_exact(quay_db, monitor)
    writes = (
        world.push,
        world.push,
        world.copy,
        world.garbage_collect,
        world.unreference,
        world.remove_placement,
        world.backfill,
        world.fill_size,
        world.hold,
    )
    log: list[str] = []
    exact_rounds = 0
    try:
        for step in range(STEPS):
            clock[0] += 120.0
            what = rng.random()
            if what < 0.55:
                log.append(await rng.choice(writes)())
            elif what < 0.7:
                log.append(f"count: {'confirmed' if await monitor.confirm() else 'not confirmed'}")
            elif what < 0.85:
                log.append(f"re-scan page: {'done' if await monitor.scan_page() else 'more'}")
            elif what < 0.9:
                await monitor.close()
                monitor = monitor_for(quay_db, tmp_path, rescan_page=3)
                monitor.clock = lambda: clock[0]
                log.append("restart")
            await monitor.round()
            where = f"seed {seed}, step {step}: " + "; ".join(log[-3:])
            exact_rounds += await shown_exact_or_stale(quay_db, monitor, where)
        await world.close()
        # The writes stop: a count confirms the figures, or starts a re-scan that does.
        for _ in range(3):
            await monitor.round()
            if monitor.figures is not None and not monitor.figures.stale:
                break
            if not await monitor.confirm():
                await monitor.scan()
        await assert_exact(quay_db, monitor)
    finally:
        await world.close()
        await monitor.close()
    print(f"seed {seed}: {exact_rounds} of {STEPS} rounds exact, the others stale")
