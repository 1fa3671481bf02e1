"""One-shot reads of every blob in pages: `trafficd replication status` and
`check-removal` at any registry size.

Beside the pipeline, used by the CLI (cli.py). A single query over 10^7 blobs
outlasts any sensible statement timeout. So the blobs are read by id range,
`SCAN_PAGE` ids a statement, over `PARALLEL` connections at once, each page in its
own snapshot (a blob lives in one page and is counted once, as it was when its
page was read); as many pages as a multiple of `PARALLEL`, so the connections end
together. `status` stops at its deadline (the configured
`statement_timeout`): what it has read then is printed as partial figures, marked
with the share of blob ids covered, every count a lower bound. `check-removal`
has no deadline but every page must finish within `statement_timeout`: it is
exact, or it refuses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from trafficd.config.model import Replication
from trafficd.replication.base import (
    EXAMPLES,
    HOLDING_SQL,
    PAGE_STREAMING,
    Figures,
    Removal,
    ReplicationError,
    Sets,
    _location_names,
    _snapshot,
    _why,
    add_sets,
    build_figures,
    connect,
    read_queue,
    small_ids,
)
from trafficd.replication.incremental import FINGERPRINT_SQL, NO_END, Tracker, mask_of, page_sql

PARALLEL = 3  # connections reading pages at once
SCAN_PAGE = 250_000  # blob ids a statement
T = TypeVar("T")

# Blobs of ids [$2, $3) placed at location $1 and at no location of $4 (those that
# stay), with their sizes and up to EXAMPLES digests; and how many are placed there.
REMOVAL_PAGE_SQL = f"""
    WITH here AS (
        SELECT s.id, COALESCE(s.image_size, 0) AS size, s.content_checksum
        FROM imagestorageplacement p JOIN imagestorage s ON s.id = p.storage_id
        WHERE p.location_id = $1 AND p.storage_id >= $2::bigint AND p.storage_id < $3::bigint
          AND EXISTS (SELECT 1 FROM manifestblob mb WHERE mb.blob_id = s.id)
    ),
    lost AS (
        SELECT h.* FROM here h WHERE NOT EXISTS (
            SELECT 1 FROM imagestorageplacement q
            WHERE q.storage_id = h.id AND q.location_id = ANY($4::int[]))
    )
    SELECT (SELECT count(*) FROM here) AS placed,
           (SELECT count(*) FROM lost) AS lost_blobs,
           (SELECT COALESCE(sum(size), 0)::bigint FROM lost) AS lost_bytes,
           ARRAY(SELECT content_checksum FROM lost ORDER BY id LIMIT {EXAMPLES}) AS examples
"""
TOP_SQL = "SELECT COALESCE(max(id), 0) FROM imagestorage"


async def read_status_from_state(
    settings: Replication,
    tracker: Tracker,
    defaults: Sequence[str],
    configured: Sequence[str],
    now: float,
    *,
    budget: float | None = None,
) -> Figures | None:
    """The figures of the daemon's saved state (incremental.py) brought up to date by
    reading what changed since it was saved, as the daemon's next round would: a cost
    that follows what changed, not the registry's size. The state is not written back
    (it is the daemon's). None when it cannot serve: no confirmed figures, another
    database, or more changes than fit in the budget."""
    if tracker.live is None:
        return None
    deadline = time.monotonic() + (budget if budget is not None else settings.statement_timeout)
    conn = await connect(settings)
    try:
        async with _snapshot(conn):
            if await conn.fetchval(FINGERPRINT_SQL) != tracker.fingerprint:
                return None
            await tracker.advance(conn, now)
            while tracker.catching_up:
                if time.monotonic() > deadline:
                    return None
                await tracker.advance(conn, now)
            names = await _location_names(conn)
            holding = {r["name"] for r in await conn.fetch(HOLDING_SQL)}
            queue = await read_queue(conn, now)
    finally:
        conn.terminate()
    assert tracker.live is not None
    saved = f"saved {now - tracker.saved_at:.0f}s ago" if tracker.saved_at else "saved"
    note = tracker.stale_note()
    return build_figures(
        tracker.live,
        names,
        defaults,
        configured,
        holding,
        queue,
        stale=tracker.stale,
        confirmed_at=tracker.confirmed_at,
        note=note,
        source=f"the daemon's figures ({saved}) and the rows inserted since",
    )


def pages(top: int, size: int, parallel: int = 1) -> list[tuple[int, int]]:
    """Id ranges covering every blob id, at most `size` ids each, as many as a multiple
    of `parallel` (the connections reading them end together); the last has no end
    (blobs pushed meanwhile)."""
    count = max(1, -(-(top + 1) // size))
    count = -(-count // parallel) * parallel if top >= parallel else count
    step = -(-(top + 1) // count)
    out = [(low, low + step) for low in range(0, top + 1, step)]
    if out:
        out[-1] = (out[-1][0], NO_END)
    return out or [(0, NO_END)]


async def _connections(settings: Replication, n: int) -> list[asyncpg.Connection]:
    """`n` sessions, opened at once."""
    opened = await asyncio.gather(*(connect(settings) for _ in range(n)), return_exceptions=True)
    conns = [c for c in opened if isinstance(c, asyncpg.Connection)]
    for failed in opened:
        if isinstance(failed, BaseException):
            for conn in conns:
                conn.terminate()
            raise failed
    return conns


async def _run_pages(
    conns: Sequence[asyncpg.Connection],
    work: Callable[[asyncpg.Connection, tuple[int, int]], Awaitable[T]],
    ranges: list[tuple[int, int]],
    deadline: float | None,
    first: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> dict[tuple[int, int], T]:
    """`work` on every range, over `conns` at once (the first of them runs `first`
    before), until done or `deadline` (monotonic time): the results of the ranges that
    finished. The connections are closed."""
    done: dict[tuple[int, int], T] = {}
    todo = list(reversed(ranges))
    errors: list[ReplicationError] = []

    async def worker(conn: asyncpg.Connection, prelude: bool) -> None:
        try:
            if prelude and first is not None:
                await first(conn)
            while todo and not errors:
                page = todo.pop()
                try:
                    done[page] = await work(conn, page)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    errors.append(ReplicationError(f"reading a page failed: {_why(exc)}"))
        finally:
            conn.terminate()  # at once: a query cut at the deadline is cancelled with it

    tasks = [asyncio.create_task(worker(conn, i == 0)) for i, conn in enumerate(conns)]
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()  # asyncpg asks the server to cancel the running query too
    if pending:
        # Not waiting on the server's answer beyond a moment: the deadline is the user's.
        await asyncio.wait(pending, timeout=0.3)
    for task in tasks:
        if not task.done() or task.cancelled():
            continue
        exc = task.exception()
        if isinstance(exc, ReplicationError):
            errors.append(exc)
        elif exc is not None:
            raise exc
    if errors and (deadline is None or not done):
        raise errors[0]
    return done


async def read_status(
    settings: Replication,
    defaults: Sequence[str],
    configured: Sequence[str],
    now: float,
    *,
    budget: float | None = None,
    page: int = SCAN_PAGE,
) -> Figures:
    """Every figure, read in pages within `budget` seconds (default: the statement
    timeout); partial (and said so) if the budget runs out first. The connections
    open at once; the first reads the locations and the top id (the pages' ranges),
    then, while the others start on the pages, the queue, then pages too."""
    started = time.monotonic()
    deadline = started + (budget if budget is not None else settings.statement_timeout)
    conns = await _connections(settings, PARALLEL)
    try:
        async with _snapshot(conns[0]):
            names = await _location_names(conns[0])
            top = await conns[0].fetchval(TOP_SQL)
    except BaseException:
        for conn in conns:
            conn.terminate()
        raise
    small = small_ids(names)
    sql = page_sql(small=small, watermarked=False)
    meta: dict[str, Any] = {}

    async def queue_and_holders(c: asyncpg.Connection) -> None:
        async with _snapshot(c):
            meta["holding"] = {r["name"] for r in await c.fetch(HOLDING_SQL)}
            meta["queue"] = await read_queue(c, now)

    async def one(c: asyncpg.Connection, r: tuple[int, int]) -> Sets:
        async with c.transaction(readonly=True, isolation="repeatable_read"):
            await c.execute(PAGE_STREAMING)
            rows = await c.fetch(sql, r[0], r[1])
        sets: Sets = {}
        for row in rows:
            held = row["held"]
            add_sets(sets, held if small else mask_of(held), row["blobs"], row["bytes"])
        return sets

    ranges = pages(top, page, PARALLEL)
    done = await _run_pages(conns, one, ranges, deadline, first=queue_and_holders)
    if "queue" not in meta:
        raise ReplicationError(
            f"the replication queue could not be read within {deadline - started:g}s"
        )
    total: Sets = {}
    for sets in done.values():
        for mask, (blobs, bytes_) in sets.items():
            add_sets(total, mask, blobs, bytes_)
    partial: dict[str, Any] = {}
    if len(done) < len(ranges):
        covered = sum(min(high, top + 1) - low for low, high in done)
        partial = {
            "partial": True,
            "coverage": covered / (top + 1) if top else 0.0,
            "note": f"{len(done)} of {len(ranges)} pages of blob ids read within "
            f"{deadline - started:g}s",
        }
    return build_figures(
        total,
        names,
        defaults,
        configured,
        meta["holding"],
        meta["queue"],
        source="Quay's database, read in pages",
        **partial,
    )


async def check_removal_paged(
    settings: Replication,
    location: str,
    *,
    page: int = SCAN_PAGE,
    configured: Sequence[str] | None = None,
) -> Removal | None:
    """What removing `location` would lose, exactly: every page must be read (each within
    the statement timeout) or ReplicationError says why the answer cannot be given.
    A copy counts only at a `configured` location (None: any row of Quay's table): a
    placement at a location trafficd's config does not name (boot.py's built-in rows,
    one Quay no longer serves) is no copy anyone can pull. None when Quay has no such
    location."""
    conn = await connect(settings)
    try:
        async with _snapshot(conn):
            names = await _location_names(conn)
            ids = {name: i for i, name in names.items()}
            if location not in ids:
                return None
            holds = bool(
                await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM imagestorageplacement WHERE location_id = $1)",
                    ids[location],
                )
            )
            holding = {r["name"] for r in await conn.fetch(HOLDING_SQL)}
            top = await conn.fetchval(TOP_SQL)
    finally:
        conn.terminate()
    here = ids[location]
    staying = sorted(
        i
        for name, i in ids.items()
        if name != location and (configured is None or name in configured)
    )
    uncounted = sorted(
        name
        for name in holding
        if name != location and configured is not None and name not in configured
    )

    async def one(c: asyncpg.Connection, r: tuple[int, int]) -> asyncpg.Record:
        async with c.transaction(readonly=True, isolation="repeatable_read"):
            return await c.fetchrow(REMOVAL_PAGE_SQL, here, r[0], r[1], staying)

    ranges = pages(top, page, PARALLEL)
    done = await _run_pages(await _connections(settings, PARALLEL), one, ranges, None)
    if len(done) != len(ranges):  # never expected: an answer without every page is a guess
        raise ReplicationError(f"only {len(done)} of {len(ranges)} pages of blob ids were read")
    placed = lost = lost_bytes = 0
    examples: list[str] = []
    for r in sorted(done):
        row = done[r]
        placed += row["placed"]
        lost += row["lost_blobs"]
        lost_bytes += row["lost_bytes"]
        examples += [e for e in row["examples"] if e]
    return Removal(
        location, placed, lost, lost_bytes, examples[:EXAMPLES], holds, uncounted=uncounted
    )
