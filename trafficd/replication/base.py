"""Replication risk: the definitions, and one-shot reads of Quay's database.

Beside the pipeline (the package's docstring says where each part sits). The
daemon's monitor (monitor.py) keeps these figures incrementally;
`trafficd replication status|check-removal` and the restore gate read them here on
demand. Never writes: every query runs in a read-only transaction under the
configured statement timeout, so a slow or dead database costs one failed read
and nothing else.

Definitions (docs/design.md, to the letter): a blob is a row of `imagestorage` that at
least one `manifestblob` references. Its `uploading` column is no signal: real
Quay leaves it at its default `true` on every v2 push, so a filter on it would
drop every real blob (and call an unsafe removal safe). A blob is
in the backlog of L when L is a default location and the blob has no placement
there; it is at risk at L when L holds its only placement. Queue items are those
of the `imagestoragereplication/<uuid>/` queues that Quay itself considers
available (`available_after <= now AND (available OR processing_expires <= now)
AND retries_remaining > 0`), timestamps being naive UTC whatever the server's
time zone: `now` is passed in from trafficd's clock, never taken from SQL.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from trafficd.config.model import Config, Replication

log = logging.getLogger(__name__)

QUEUE_PREFIX = "imagestoragereplication/"
STUCK_AFTER = timedelta(minutes=10)  # docs/design.md: claimed past expiry by more than this
EXAMPLES = 20

# Counted blobs (orphans excluded; `uploading` deliberately not read). Uses
# pk_imagestorage and manifestblob_blob_id.
_BLOBS = """
    SELECT s.id, COALESCE(s.image_size, 0) AS size
    FROM imagestorage s
    WHERE EXISTS (SELECT 1 FROM manifestblob mb WHERE mb.blob_id = s.id)
"""

# One pass over the counted blobs and their placements: each blob reduced to the set
# of locations holding it, then counted per set. A few sets exist (2^locations at
# most), so every per-location figure follows from them without another scan. The
# set is a bit mask of location ids when they are small (always, in practice: one row
# per configured location), else an array.
#
# The pass streams over three of Quay's indexes in blob id order: pk_imagestorage,
# manifestblob_blob_id (index only) and imagestorageplacement_storage_id_location_id
# (index only), merge-joined and grouped as they come, in constant memory. Left to
# itself the planner hashes all three tables and then hashes a million groups, which
# spills to disk: 3-4 s at 10^6 blobs against about 1 s streaming (bench/replication.py).
# So hash joins are turned off for this one transaction (STREAMING).
STREAMING = "SET LOCAL enable_hashjoin = off"
# Pages by id range also merge-join the placements rather than look them up blob by
# blob (a nested loop: 1.3 s against 0.4 s for 250,000 blobs, bench/replication.py).
PAGE_STREAMING = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_nestloop = off"
MASKS_SQL = f"""
    WITH blob AS ({_BLOBS})
    SELECT held, count(*) AS blobs, COALESCE(sum(size), 0)::bigint AS bytes
    FROM (
        SELECT min(b.size) AS size, COALESCE(bit_or(1::bigint << p.location_id), 0) AS held
        FROM blob b LEFT JOIN imagestorageplacement p ON p.storage_id = b.id
        GROUP BY b.id
    ) AS per_blob
    GROUP BY held
"""
SETS_SQL = f"""
    WITH blob AS ({_BLOBS})
    SELECT held, count(*) AS blobs, COALESCE(sum(size), 0)::bigint AS bytes
    FROM (
        SELECT min(b.size) AS size,
               array_remove(array_agg(p.location_id ORDER BY p.location_id), NULL) AS held
        FROM blob b LEFT JOIN imagestorageplacement p ON p.storage_id = b.id
        GROUP BY b.id
    ) AS per_blob
    GROUP BY held
"""
MAX_MASK_ID = 62

# Uses queueitem_queue_name (a prefix match) and the available_after index.
QUEUE_SQL = """
    SELECT
      count(*) FILTER (WHERE available_after <= $1
                         AND (available OR processing_expires <= $1)
                         AND retries_remaining > 0) AS items,
      min(available_after) FILTER (WHERE available_after <= $1
                                     AND (available OR processing_expires <= $1)
                                     AND retries_remaining > 0) AS oldest,
      count(*) FILTER (WHERE retries_remaining <= 0) AS dead,
      count(*) FILTER (WHERE NOT available AND retries_remaining > 0
                         AND processing_expires < $2) AS stuck
    FROM queueitem
    WHERE queue_name LIKE 'imagestoragereplication/%'
"""

# Blobs placed at $1 with no placement at any location of $2 (the ones that stay).
REMOVAL_SQL = f"""
    WITH blob AS ({_BLOBS}),
    here AS (
        SELECT b.id, b.size FROM blob b
        JOIN imagestorageplacement p ON p.storage_id = b.id
        JOIN imagestoragelocation l ON l.id = p.location_id
        WHERE l.name = $1
    ),
    lost AS (
        SELECT h.id, h.size FROM here h
        WHERE NOT EXISTS (
            SELECT 1 FROM imagestorageplacement p
            JOIN imagestoragelocation l ON l.id = p.location_id
            WHERE p.storage_id = h.id AND l.name = ANY($2::text[])
        )
    )
    SELECT (SELECT count(*) FROM here) AS placed,
           EXISTS (SELECT 1 FROM imagestorageplacement p
                   JOIN imagestoragelocation l ON l.id = p.location_id
                   WHERE l.name = $1) AS holds,
           (SELECT count(*) FROM lost) AS lost_blobs,
           (SELECT COALESCE(sum(size), 0)::bigint FROM lost) AS lost_bytes,
           ARRAY(SELECT s.content_checksum FROM lost
                 JOIN imagestorage s ON s.id = lost.id
                 ORDER BY s.id LIMIT {EXAMPLES}) AS examples
"""


# Whether a location holds any placement at all (of a counted blob or not): an
# empty answer about a location that holds data is never "nothing to lose".
# Uses imagestorageplacement_location_id.
HOLDS_SQL = """
    SELECT EXISTS (SELECT 1 FROM imagestorageplacement p
                   WHERE p.location_id = (SELECT id FROM imagestoragelocation WHERE name = $1))
"""
# The locations holding any placement (one index probe each).
HOLDING_SQL = """
    SELECT l.name FROM imagestoragelocation l
    WHERE EXISTS (SELECT 1 FROM imagestorageplacement p WHERE p.location_id = l.id)
"""

# A random sample of the counted blobs placed at location id $1, for the restore gate:
# what the location must still hold before clients are sent back to it. For each random
# start id ($2), the first blob from there that the location holds: one short walk of
# imagestorageplacement_storage_id_location_id per start, whatever the registry's size
# (ORDER BY random() sorted every placement: 4 s at 10^6 blobs, past any timeout at
# 10^7). Runs only while a storage-drained site is about to return.
SAMPLE_SQL = """
    SELECT DISTINCT x.id, x.uuid, x.content_checksum, x.cas_path
    FROM unnest($2::bigint[]) AS r(start)
    CROSS JOIN LATERAL (
        SELECT s.id, s.uuid, s.content_checksum, s.cas_path
        FROM imagestorageplacement p JOIN imagestorage s ON s.id = p.storage_id
        WHERE p.location_id = $1 AND p.storage_id >= r.start AND s.id >= r.start
          AND EXISTS (SELECT 1 FROM manifestblob mb WHERE mb.blob_id = s.id)
        ORDER BY p.storage_id
        LIMIT 1
    ) AS x
"""
BOUNDS_SQL = "SELECT COALESCE(min(id), 0) AS low, COALESCE(max(id), 0) AS high FROM imagestorage"


class ReplicationError(Exception):
    """The database could not be read (down, refused, timed out); the message is safe to show."""


@dataclass(frozen=True)
class LocationFigures:
    backlog_blobs: int = 0
    backlog_bytes: int = 0
    at_risk_blobs: int = 0
    at_risk_bytes: int = 0
    # False for a location of Quay's table that trafficd's config does not name but
    # that holds placements (boot.py's built-in rows hold none and are not shown). Its
    # placements are no copies: its at-risk figures are the blobs no configured
    # location holds.
    configured: bool = True


@dataclass(frozen=True)
class Figures:
    locations: dict[str, LocationFigures]
    queue_items: int
    oldest_item_age_seconds: float
    dead_items: int
    stuck_items: int
    blobs: int = 0
    # Copies beyond each blob's first (at configured locations): grows by one with every
    # completed copy.
    replica_placements: int = 0
    # How far the figures can be trusted. Exact figures have all three at their default.
    # stale: not proven exact (the daemon's, incremental.py): a transaction ended since
    # the count that confirmed them, so rows may have been deleted or changed since
    # (every insert is counted), or a re-scan is reading such rows, or none has ended
    # yet. partial: a one-shot read ran out of time; only `coverage` of the blobs (by
    # id) were read, so every count is a lower bound.
    stale: bool = False
    partial: bool = False
    coverage: float = 1.0
    # Every row deleted or changed before this is counted (the confirming count's start).
    confirmed_at: float | None = None
    note: str | None = None  # why stale or partial, for people
    source: str | None = None  # where they come from, for people

    def to_json(self) -> dict[str, Any]:
        return {
            "locations": {
                name: {
                    "backlog_blobs": f.backlog_blobs,
                    "backlog_bytes": f.backlog_bytes,
                    "at_risk_blobs": f.at_risk_blobs,
                    "at_risk_bytes": f.at_risk_bytes,
                    "configured": f.configured,
                }
                for name, f in sorted(self.locations.items())
            },
            "queue_items": self.queue_items,
            "oldest_item_age_seconds": self.oldest_item_age_seconds,
            "dead_items": self.dead_items,
            "stuck_items": self.stuck_items,
            "stale": self.stale,
            "partial": self.partial,
            "coverage": self.coverage,
            "confirmed_at": self.confirmed_at,
            "note": self.note,
            "source": self.source,
        }


@dataclass(frozen=True)
class Removal:
    location: str
    placed: int
    lost_blobs: int
    lost_bytes: int
    examples: list[str] = field(default_factory=list)
    # The location holds placements (of counted blobs or not).
    holds: bool = False
    # Locations of Quay's table whose placements were not counted as copies (not in
    # trafficd's config): named when blobs would be lost, in case one holds them.
    uncounted: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        """Data is there but no counted blob is: no answer is trustworthy, so none is given."""
        return self.holds and self.placed == 0

    @property
    def safe(self) -> bool:
        return self.lost_blobs == 0 and not self.refused


def default_locations(config: Config) -> list[str]:
    """docs/design.md: the configured list, else Quay's DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS
    (imported by the loader into the same key), else every location."""
    assert config.replication is not None
    return list(config.replication.default_locations or sorted(config.storage))


def naive_utc(now: float) -> datetime:
    """Quay's queue timestamps are naive UTC."""
    return datetime.fromtimestamp(now, UTC).replace(tzinfo=None)


async def connect(
    settings: Replication, statement_timeout: float | None = None
) -> asyncpg.Connection:
    """A read-only session under the statement timeout (`statement_timeout`, default
    the configured one); errors become ReplicationError."""
    timeout_ms = str(int((statement_timeout or settings.statement_timeout) * 1000))
    password = settings.password.get_secret_value() if settings.password else None
    try:
        conn: asyncpg.Connection = await asyncpg.connect(
            settings.dsn.get_secret_value(),
            password=password,
            timeout=max(settings.statement_timeout, 1.0),
            statement_cache_size=0,
            server_settings={
                "statement_timeout": timeout_ms,
                "default_transaction_read_only": "on",
                # Enough for the queue's and the removal check's hashes in memory.
                "work_mem": "16MB",
                # One query, one core: its cost is predictable, and the command's pages
                # run on several connections already (worker start-up alone cost 70 ms).
                "max_parallel_workers_per_gather": "0",
                "application_name": "trafficd",
            },
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise ReplicationError(f"cannot connect to Quay's database: {_why(exc)}") from None
    return conn


def _why(exc: BaseException) -> str:
    """The reason without the DSN (which may carry a password)."""
    if isinstance(exc, asyncpg.QueryCanceledError):
        return "statement timeout"
    if isinstance(exc, asyncpg.PostgresError):
        return f"{type(exc).__name__}: {exc.args[0] if exc.args else ''}".strip()
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


@contextlib.asynccontextmanager
async def _snapshot(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """One read-only, consistent view; any database failure becomes a ReplicationError."""
    try:
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            yield
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        raise ReplicationError(f"reading Quay's database failed: {_why(exc)}") from None


async def _location_names(conn: asyncpg.Connection) -> dict[int, str]:
    rows = await conn.fetch("SELECT id, name FROM imagestoragelocation")
    return {row["id"]: row["name"] for row in rows}


def configured_locations(config: Config) -> list[str]:
    """The locations trafficd's config names (storage and default_locations)."""
    return sorted(set(config.storage) | set(default_locations(config)))


Sets = dict[int, tuple[int, int]]
"""Counted blobs per set of locations holding them: {bit mask of location ids: (blobs,
bytes)}. A few sets exist (2^locations at most): every per-location figure follows."""


def add_sets(sets: Sets, mask: int, blobs: int, bytes_: int) -> None:
    old_blobs, old_bytes = sets.get(mask, (0, 0))
    blobs, bytes_ = old_blobs + blobs, old_bytes + bytes_
    if blobs == 0 and bytes_ == 0:
        sets.pop(mask, None)
    else:
        sets[mask] = (blobs, bytes_)


def sets_of(rows: Sequence[Any], small: bool) -> Sets:
    """The rows of MASKS_SQL (a bit mask) or SETS_SQL (an array of location ids)."""
    sets: Sets = {}
    for row in rows:
        held = row["held"]
        mask = held if small else sum(1 << i for i in held)
        add_sets(sets, mask, row["blobs"], row["bytes"])
    return sets


@dataclass(frozen=True)
class Queue:
    items: int = 0
    oldest_item_age_seconds: float = 0.0
    dead_items: int = 0
    stuck_items: int = 0


async def read_queue(conn: asyncpg.Connection, now: float) -> Queue:
    now_utc = naive_utc(now)
    row = await conn.fetchrow(QUEUE_SQL, now_utc, now_utc - STUCK_AFTER)
    oldest = row["oldest"]
    age = (now_utc - oldest).total_seconds() if oldest is not None else 0.0
    return Queue(row["items"], max(0.0, age), row["dead"], row["stuck"])


def build_figures(
    sets: Sets,
    names: Mapping[int, str],
    defaults: Sequence[str],
    configured: Sequence[str] | None,
    holding: set[str],
    queue: Queue,
    **state: Any,
) -> Figures:
    """The figures of `status` from the counted blobs' sets. Shown: the `configured`
    locations (None: every row of Quay's table) and any other that holds placements,
    marked as not configured. Only a placement at a configured location counts as a
    copy, as in check-removal: a blob at L whose other placements are all elsewhere
    is at risk at L, and a location that is not configured shows the blobs no
    configured location holds. `state` says how fresh they are (Figures' own fields)."""
    known = set(names.values()) if configured is None else set(configured) | set(defaults)
    total_blobs = total_bytes = replicas = 0
    placed_blobs: dict[str, int] = dict.fromkeys(names.values(), 0)
    placed_bytes: dict[str, int] = dict.fromkeys(names.values(), 0)
    alone_blobs: dict[str, int] = dict.fromkeys(names.values(), 0)
    alone_bytes: dict[str, int] = dict.fromkeys(names.values(), 0)
    for held, (blobs, size) in sets.items():
        ids = [i for i in names if held >> i & 1]
        copies = [i for i in ids if names[i] in known]
        total_blobs += blobs
        total_bytes += size
        replicas += blobs * max(0, len(copies) - 1)
        for i in ids:
            placed_blobs[names[i]] += blobs
            placed_bytes[names[i]] += size
            # What removing location i loses (check-removal): no copy at another
            # configured location.
            if not [c for c in copies if c != i]:
                alone_blobs[names[i]] += blobs
                alone_bytes[names[i]] += size
    locations = {}
    for name in sorted(known | set(defaults) | holding):
        default = name in defaults
        locations[name] = LocationFigures(
            configured=name in known,
            backlog_blobs=total_blobs - placed_blobs.get(name, 0) if default else 0,
            backlog_bytes=total_bytes - placed_bytes.get(name, 0) if default else 0,
            at_risk_blobs=alone_blobs.get(name, 0),
            at_risk_bytes=alone_bytes.get(name, 0),
        )
    return Figures(
        locations=locations,
        queue_items=queue.items,
        oldest_item_age_seconds=queue.oldest_item_age_seconds,
        dead_items=queue.dead_items,
        stuck_items=queue.stuck_items,
        blobs=total_blobs,
        replica_placements=replicas,
        **state,
    )


def small_ids(names: Mapping[int, str]) -> bool:
    """Location ids that fit a bigint bit mask (always, in practice)."""
    return all(0 <= i <= MAX_MASK_ID for i in names)


async def read_figures(
    conn: asyncpg.Connection,
    defaults: Sequence[str],
    now: float,
    configured: Sequence[str] | None = None,
) -> Figures:
    """Every figure in one read-only snapshot, in one pass over every blob: exact, and
    as slow as the registry is large (10^6 blobs: about 1.5 s). The daemon keeps its
    figures incrementally instead (incremental.py); `status` pages (scan.py)."""
    async with _snapshot(conn):
        names = await _location_names(conn)
        holding = {r["name"] for r in await conn.fetch(HOLDING_SQL)}
        small = small_ids(names)
        await conn.execute(STREAMING)
        rows = await conn.fetch(MASKS_SQL if small else SETS_SQL)
        queue = await read_queue(conn, now)
    return build_figures(sets_of(rows, small), names, defaults, configured, holding, queue)


async def check_removal(conn: asyncpg.Connection, location: str) -> Removal | None:
    """What removing `location` would lose: blobs placed there and at no other location
    of Quay's database. None when Quay has no such location."""
    async with _snapshot(conn):
        names = set((await _location_names(conn)).values())
        if location not in names:
            return None
        staying = sorted(names - {location})
        row = await conn.fetchrow(REMOVAL_SQL, location, staying)
    return Removal(
        location=location,
        holds=row["holds"],
        placed=row["placed"],
        lost_blobs=row["lost_blobs"],
        lost_bytes=row["lost_bytes"],
        examples=[e for e in row["examples"] if e],
    )


@dataclass(frozen=True)
class PlacedBlob:
    uuid: str
    digest: str | None
    cas_path: bool

    def path(self, storage_path: str) -> str:
        """Where Quay keeps it (storage/basestorage.py, digest/digest_tools.py):
        `<storage_path>/sha256/<first 2 hex>/<hex>` for content-addressed blobs,
        `<storage_path>/sharedimages/<uuid>/layer` for the old v1 ones."""
        if self.cas_path and self.digest:
            algorithm, _, hex_ = self.digest.partition(":")
            relative = f"{algorithm.replace('+', '/').replace('.', '/')}/{hex_[:2].zfill(2)}/{hex_}"
        else:
            relative = f"sharedimages/{self.uuid}/layer"
        root = storage_path.strip("/")
        return f"{root}/{relative}" if root else relative

    @property
    def name(self) -> str:
        return self.digest or self.uuid


@dataclass(frozen=True)
class Sample:
    blobs: list[PlacedBlob]
    holds: bool  # the location holds placements (of counted blobs or not)


async def sample_placed(conn: asyncpg.Connection, location: str, n: int) -> Sample:
    """Up to `n` random counted blobs that Quay's database places at `location`, and
    whether it holds any placement at all."""
    async with _snapshot(conn):
        holds = bool(await conn.fetchval(HOLDS_SQL, location))
        here = await conn.fetchval("SELECT id FROM imagestoragelocation WHERE name = $1", location)
        bounds = await conn.fetchrow(BOUNDS_SQL)
        low, high = bounds["low"], bounds["high"]
        if not holds or here is None or n <= 0:
            return Sample([], holds)
        if high - low < 4 * n:
            starts = list(range(low, high + 1))  # a small table: every blob is a candidate
        else:
            starts = [secrets.randbelow(high - low + 1) + low for _ in range(2 * n)]
        rows = await conn.fetch(SAMPLE_SQL, here, starts)
    rows = list(rows)
    random.shuffle(rows)
    blobs = [PlacedBlob(str(r["uuid"]), r["content_checksum"], bool(r["cas_path"])) for r in rows]
    return Sample(blobs[:n], holds)


def render_status(figures: Figures) -> str:
    lines = [
        f"{'LOCATION':<20} {'BACKLOG':>10} {'BACKLOG BYTES':>15} {'AT RISK':>10} "
        f"{'AT RISK BYTES':>15}"
    ]
    for name, f in sorted(figures.locations.items()):
        note = "" if f.configured else "  (not configured: holds placements)"
        lines.append(
            f"{name:<20} {f.backlog_blobs:>10} {f.backlog_bytes:>15} {f.at_risk_blobs:>10} "
            f"{f.at_risk_bytes:>15}{note}"
        )
    lines.append(
        f"queue: {figures.queue_items} available item(s), oldest "
        f"{figures.oldest_item_age_seconds:.0f}s; {figures.dead_items} dead, "
        f"{figures.stuck_items} stuck"
    )
    if figures.source:
        lines.append(f"source: {figures.source}")
    if figures.partial:
        lines.insert(
            0,
            f"PARTIAL: only {figures.coverage:.0%} of the blobs (by id) were read in time; "
            "every count below is a lower bound" + (f" ({figures.note})" if figures.note else ""),
        )
    elif figures.stale:
        lines.insert(0, f"STALE: {figures.note or 'not confirmed yet'}")
    return "\n".join(lines)
