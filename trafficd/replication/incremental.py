"""The daemon's replication figures, kept from what changed rather than re-read whole.

Between Quay's database and the monitor (monitor.py). Quay's ids only grow, so a
round reads the placements, manifest references and blobs inserted since the last
one by id (`id > high`), takes the blobs they touch, and moves each of those blobs
from the set of locations it had to the one it has now: a round costs what changed,
not what the registry holds (10^3 pushes at 10^7 blobs: a few thousand index
lookups).

What ids cannot show (rows deleted by garbage collection or `util.removelocation`,
a size filled in place, a row inserted below the ids already read: a backfill with
explicit ids, a transaction that held its id longer than `GAP_TTL`) no cheap read
shows as it happens: PostgreSQL's row counters (`pg_stat_user_tables`) lag by up to
10 s after a commit, longer while the writing session stays busy. So the figures
are never called exact on their word. They are *confirmed*: a count (`COUNT_SQL`:
the number of rows and sums of their columns, per table, over the rows the rounds
know, in one snapshot: one pass over three tables, about half a re-scan) equal to
what the rounds expect proves that nothing they cannot see happened since the
previous count; from then the figures are exact but for what changed after it.
A round's figures are exact, and shown so (not stale), only while the cluster's
snapshot (`pg_current_snapshot()`: which transactions have ended) is still the
confirming count's: no transaction has ended since, so no row changed. Otherwise
they are stale: every insert seen is counted, and `confirmed_at` says since when
a delete or an in-place change may be missing.

A count that finds more or less than expected starts a paged full re-scan, in
the background, on its own connection and its own longer timeout: it never
blocks a round. The re-scan reads blobs by id range (`rescan_page` blob ids a
page), each page with the watermarks of the moment it starts, so it sees exactly
the rows the rounds know; the rounds' changes to blobs a page has covered are
added to the re-scan's sum (those made while the page runs are kept and added
when it ends). When the last page ends, the re-scan's sum replaces the figures,
confirmed as of the count it started with (its pages read the rows as they were
then or later). PostgreSQL's row counters serve only as a hint that a re-scan is
due (deletes shown there start one at once), never as proof.

Exactness under concurrent commits: an id is assigned when a row is inserted and
becomes visible when its transaction commits, so a round may see id 101 before
id 100. Ids between the previous high mark and the new one that are not visible
yet are kept as gaps and read again every round until they appear (or
`GAP_TTL` passes: a rolled-back transaction's id never appears; the next count
finds a transaction slower than that). A blob's "before" is computed from the
rows known at the previous round (ids up to the old high mark, gaps excluded)
and its "after" from the rows known now, both read in one snapshot, so each
change is counted once.

The whole state (marks, gaps, expected counts, both sums, the re-scan's cursor)
is a few kilobytes, saved after every round, count and page: a restart resumes
them where they were.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from trafficd.replication.base import (
    MAX_MASK_ID,
    PAGE_STREAMING,
    Sets,
    add_sets,
)

VERSION = 2
STATE_FILE = "replication-monitor.json"  # in state_dir: the daemon's, read by `status` too
GAP_TTL = 600.0  # seconds an unseen id is waited for (longer: the next count's business)
MAX_GAPS = 10_000  # per table; beyond, the oldest are given up on (the next count's too)
ROUND_ROWS = 200_000  # ids read per table and round; more waits for the next round
NO_END = 1 << 62  # the last page of a re-scan has no upper bound

# The high ids of one snapshot, and the snapshot itself (which transactions have
# ended: equal snapshots, equal rows). max(id) walks each primary key from its end.
HIGH_SQL = """
    SELECT (SELECT COALESCE(max(id), 0) FROM imagestorageplacement) AS placements,
           (SELECT COALESCE(max(id), 0) FROM manifestblob) AS manifests,
           (SELECT COALESCE(max(id), 0) FROM imagestorage) AS storages,
           pg_current_snapshot()::text AS snapshot
"""
# Rows inserted since the last round (and the gaps' rows that have appeared), by
# primary key range.
NEW_PLACEMENTS_SQL = """
    SELECT id, storage_id AS blob, location_id FROM imagestorageplacement
    WHERE (id > $1::bigint AND id <= $2::bigint) OR id = ANY($3::bigint[])
"""
NEW_MANIFESTS_SQL = """
    SELECT id, blob_id AS blob FROM manifestblob
    WHERE (id > $1::bigint AND id <= $2::bigint) OR id = ANY($3::bigint[])
"""
# Read for the counts only (a blob's size in the figures is read with its placements).
NEW_STORAGES_SQL = """
    SELECT id, COALESCE(image_size, 0) AS size FROM imagestorage
    WHERE (id > $1::bigint AND id <= $2::bigint) OR id = ANY($3::bigint[])
"""
# Each touched blob before (the rows known at the previous round) and after (those
# known now). Index lookups on imagestorageplacement_storage_id and
# manifestblob_blob_id, a handful per blob: the LIMIT 1 subqueries (not EXISTS) keep
# the planner from hashing all of manifestblob instead, 10^7 rows for 10^3 blobs.
STATES_SQL = """
    SELECT s.id, COALESCE(s.image_size, 0) AS size,
      ARRAY(SELECT p.location_id FROM imagestorageplacement p
            WHERE p.storage_id = s.id AND p.id <= $2::bigint AND p.id <> ALL($3::bigint[]))
        AS before,
      ARRAY(SELECT p.location_id FROM imagestorageplacement p
            WHERE p.storage_id = s.id AND p.id <= $4::bigint AND p.id <> ALL($5::bigint[]))
        AS after,
      (SELECT true FROM manifestblob mb
       WHERE mb.blob_id = s.id AND mb.id <= $6::bigint AND mb.id <> ALL($7::bigint[])
       LIMIT 1) IS NOT NULL AS counted_before,
      (SELECT true FROM manifestblob mb
       WHERE mb.blob_id = s.id AND mb.id <= $8::bigint AND mb.id <> ALL($9::bigint[])
       LIMIT 1) IS NOT NULL AS counted_after
    FROM imagestorage s WHERE s.id = ANY($1::bigint[])
"""
# The same when the round has read every visible row (no backlog of ids left): "after"
# is then every visible row, read from the indexes alone, and "before" is "after"
# less this round's new rows (known in Python). The references are counted up to $2
# (one more than the most new references of a touched blob): a base layer that 10^5
# manifests share costs $2 index entries, not 10^5.
CAUGHT_UP_STATES_SQL = """
    SELECT s.id, COALESCE(s.image_size, 0) AS size,
      ARRAY(SELECT p.location_id FROM imagestorageplacement p WHERE p.storage_id = s.id)
        AS after,
      (SELECT count(*) FROM (SELECT 1 FROM manifestblob mb WHERE mb.blob_id = s.id
                             LIMIT $2) AS refs) AS refs
    FROM imagestorage s WHERE s.id = ANY($1::bigint[])
"""
# Rows deleted or updated in the tables the figures come from, as PostgreSQL counts
# them (readable by any role). A hint only, that a re-scan is due: the writing
# sessions report them up to 10 s after they commit, or later while they stay busy.
CHANGES_SQL = """
    SELECT COALESCE(sum(n_tup_del + n_tup_upd), 0)::bigint FROM pg_stat_user_tables
    WHERE relname IN ('imagestorage', 'imagestorageplacement', 'manifestblob')
      AND schemaname = current_schema()
"""
# Which database this is: a state saved for another one is not resumed. The oids
# alone do not tell: every cluster created the same way (initdb, CREATE DATABASE,
# Quay's migrations) has the same ones. The cluster's system identifier (initdb's,
# kept by its physical replicas, readable by any role) names the cluster.
FINGERPRINT_SQL = """
    SELECT (SELECT system_identifier FROM pg_control_system())::text
           || '/' || current_database() || '/' || (SELECT oid FROM pg_database
                                          WHERE datname = current_database())::text
           || '/' || 'imagestorage'::regclass::oid::text
"""

# The columns of each table the figures depend on; a count sums them (with the rows'
# number) over the rows the rounds know. A row deleted, inserted unseen or changed in
# any of them moves a sum.
COLUMNS = {
    "placements": ("imagestorageplacement", ("id", "storage_id", "location_id")),
    "manifests": ("manifestblob", ("id", "blob_id")),
    "storages": ("imagestorage", ("id", "COALESCE(image_size, 0)")),
}


def count_sql(table: str, columns: Iterable[str], where: str) -> str:
    """One pass over `table` (a sequential scan): its rows' number and column sums."""
    sums = ", ".join(f"COALESCE(sum({c}), 0)::bigint" for c in columns)
    return f"SELECT count(*), {sums} FROM {table} WHERE {where}"


Counts = dict[str, list[int]]
"""Per table (placements, manifests, storages): [rows, sum of each column]."""


def zero_counts() -> Counts:
    return {name: [0] * (1 + len(columns)) for name, (_, columns) in COLUMNS.items()}


def add_counts(into: Counts, other: Counts, sign: int = 1) -> None:
    for name, values in other.items():
        into[name] = [a + sign * b for a, b in zip(into[name], values, strict=True)]


# A one-shot page (status), location ids in a bit mask: each blob's placements reduced
# to its mask first, from imagestorageplacement_storage_id_location_id alone, and only
# then merge-joined with the blobs (one row a blob, not one a placement): 0.56 s
# against 0.72 s for 10^6 blobs in 6 pages over 3 connections (median of 8,
# bench/replication.py's data, a quiet machine).
STATUS_PAGE_SQL = """
    SELECT held, count(*) AS blobs, COALESCE(sum(size), 0)::bigint AS bytes
    FROM (
        SELECT COALESCE(s.image_size, 0) AS size, COALESCE(p.held, 0) AS held
        FROM imagestorage s
        LEFT JOIN (SELECT storage_id, bit_or(1::bigint << location_id) AS held
                   FROM imagestorageplacement
                   WHERE storage_id >= $1::bigint AND storage_id < $2::bigint
                   GROUP BY storage_id) AS p ON p.storage_id = s.id
        WHERE s.id >= $1::bigint AND s.id < $2::bigint
          AND EXISTS (SELECT 1 FROM manifestblob mb
                      WHERE mb.blob_id = s.id
                        AND mb.blob_id >= $1::bigint AND mb.blob_id < $2::bigint)
    ) AS per_blob
    GROUP BY held
"""


def page_sql(*, small: bool, watermarked: bool) -> str:
    """The counted blobs of ids [$1, $2) per set of locations holding them. Watermarked
    (the re-scan): only rows known to the rounds ($3..$6: the high ids and gaps of
    manifestblob and imagestorageplacement). Else (a one-shot read): every row, which
    lets both joins read the indexes alone."""
    mb_filter = " AND mb.id <= $3::bigint AND mb.id <> ALL($4::bigint[])" if watermarked else ""
    p_filter = " AND p.id <= $5::bigint AND p.id <> ALL($6::bigint[])" if watermarked else ""
    held = (
        "COALESCE(bit_or(1::bigint << p.location_id), 0)"
        if small
        else "array_remove(array_agg(p.location_id ORDER BY p.location_id), NULL)"
    )
    if small and not watermarked:
        return STATUS_PAGE_SQL
    # The id range is repeated on every table so each index is entered at the page's
    # first id, not read from its start (a merge join would: quadratic over the pages).
    return f"""
    WITH blob AS (
        SELECT s.id, COALESCE(s.image_size, 0) AS size FROM imagestorage s
        WHERE s.id >= $1::bigint AND s.id < $2::bigint
          AND EXISTS (SELECT 1 FROM manifestblob mb
                      WHERE mb.blob_id = s.id
                        AND mb.blob_id >= $1::bigint AND mb.blob_id < $2::bigint{mb_filter})
    )
    SELECT held, count(*) AS blobs, COALESCE(sum(size), 0)::bigint AS bytes
    FROM (
        SELECT min(b.size) AS size, {held} AS held
        FROM blob b LEFT JOIN imagestorageplacement p
          ON p.storage_id = b.id
         AND p.storage_id >= $1::bigint AND p.storage_id < $2::bigint{p_filter}
        GROUP BY b.id
    ) AS per_blob
    GROUP BY held
    """


def mask_of(ids: Iterable[int]) -> int:
    mask = 0
    for i in ids:
        mask |= 1 << i
    return mask


@dataclass
class Mark:
    """How far a table's rows are known: every id up to `high` but the `gaps` (ids not
    visible when passed, with the time they were first missed)."""

    high: int = 0
    gaps: dict[int, float] = field(default_factory=dict)

    def ids(self) -> list[int]:
        return sorted(self.gaps)

    def to_json(self) -> dict[str, Any]:
        return {"high": self.high, "gaps": [[i, t] for i, t in sorted(self.gaps.items())]}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Mark:
        return cls(int(doc["high"]), {int(i): float(t) for i, t in doc["gaps"]})

    def copy(self) -> Mark:
        return Mark(self.high, dict(self.gaps))


@dataclass(frozen=True)
class Change:
    """One blob moved by a round: its set before and after (None: not counted)."""

    blob: int
    size: int
    before: int | None
    after: int | None

    def apply(self, sets: Sets) -> None:
        if self.before is not None:
            add_sets(sets, self.before, -1, -self.size)
        if self.after is not None:
            add_sets(sets, self.after, 1, self.size)


def sets_to_json(sets: Sets) -> list[list[int]]:
    return [[mask, blobs, bytes_] for mask, (blobs, bytes_) in sorted(sets.items())]


def sets_from_json(doc: Iterable[Iterable[int]]) -> Sets:
    out: Sets = {}
    for mask, blobs, bytes_ in doc:
        out[int(mask)] = (int(blobs), int(bytes_))
    return out


@dataclass
class Rescan:
    """A full re-scan in progress: blobs with ids below `cursor` are summed in `sets`.
    It confirms the figures as of the count it started with (`confirms_at`, at the
    cluster snapshot `confirms_snapshot`)."""

    started_at: float
    confirms_at: float
    confirms_snapshot: str
    cursor: int = 0
    sets: Sets = field(default_factory=dict)
    pages: int = 0


@dataclass
class PageInFlight:
    """A page being read: its range, the watermarks it reads at, and the rounds' changes
    to its blobs since it started (added to the re-scan's sum when it ends)."""

    low: int
    high: int
    placements: Mark
    manifests: Mark
    changes: list[Change] = field(default_factory=list)


@dataclass(frozen=True)
class CountInFlight:
    """A count being read: the rounds' watermarks when it started and what they expected
    it to find there."""

    at: float
    marks: dict[str, Mark]
    expected: Counts


@dataclass
class Tracker:
    """The incremental state. `live` is None until a first full scan has ended."""

    fingerprint: str = ""
    placements: Mark = field(default_factory=Mark)
    manifests: Mark = field(default_factory=Mark)
    storages: Mark = field(default_factory=Mark)
    live: Sets | None = None
    # What a count at the current marks finds if nothing the rounds cannot see has
    # happened since the last count (`counted`: one has run, else this is a partial sum).
    expected: Counts = field(default_factory=zero_counts)
    counted: bool = False
    snapshot: str | None = None  # the cluster's snapshot at the last round
    # The figures are exact but for what changed after `confirmed_at`, when the cluster's
    # snapshot was `confirmed_snapshot`.
    confirmed_at: float | None = None
    confirmed_snapshot: str | None = None
    unseen_at: float | None = None  # a count found changes the rounds did not see
    last_count: float | None = None  # when the last count started
    changes: int = 0  # deletes and updates PostgreSQL counted (a hint), at the last round
    changes_at_count: int = 0  # ... when the last count started
    rescan: Rescan | None = None
    last_rescan_end: float | None = None
    page: PageInFlight | None = None  # not saved: a restart reads the page again
    catching_up: bool = False  # the last round read ROUND_ROWS ids: more are waiting
    saved_at: float | None = None

    def marks(self) -> dict[str, Mark]:
        return {
            "placements": self.placements,
            "manifests": self.manifests,
            "storages": self.storages,
        }

    # --- the state on disk -------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        rescan = self.rescan
        return {
            "version": VERSION,
            "fingerprint": self.fingerprint,
            **{name: mark.to_json() for name, mark in self.marks().items()},
            "live": None if self.live is None else sets_to_json(self.live),
            "expected": self.expected,
            "counted": self.counted,
            "snapshot": self.snapshot,
            "confirmed_at": self.confirmed_at,
            "confirmed_snapshot": self.confirmed_snapshot,
            "unseen_at": self.unseen_at,
            "last_count": self.last_count,
            "changes": self.changes,
            "changes_at_count": self.changes_at_count,
            "last_rescan_end": self.last_rescan_end,
            "saved_at": self.saved_at,
            "rescan": None
            if rescan is None
            else {
                "started_at": rescan.started_at,
                "confirms_at": rescan.confirms_at,
                "confirms_snapshot": rescan.confirms_snapshot,
                "cursor": rescan.cursor,
                "sets": sets_to_json(rescan.sets),
                "pages": rescan.pages,
            },
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Tracker:
        if doc.get("version") != VERSION:
            raise ValueError(f"state version {doc.get('version')!r}, expected {VERSION}")
        r = doc.get("rescan")
        expected = zero_counts()
        for name, values in doc["expected"].items():
            if name not in expected or len(values) != len(expected[name]):
                raise ValueError(f"expected counts of {name!r}: not of this version")
            expected[name] = [int(v) for v in values]
        return cls(
            fingerprint=str(doc["fingerprint"]),
            placements=Mark.from_json(doc["placements"]),
            manifests=Mark.from_json(doc["manifests"]),
            storages=Mark.from_json(doc["storages"]),
            live=None if doc["live"] is None else sets_from_json(doc["live"]),
            expected=expected,
            counted=bool(doc["counted"]),
            snapshot=doc.get("snapshot"),
            confirmed_at=doc.get("confirmed_at"),
            confirmed_snapshot=doc.get("confirmed_snapshot"),
            unseen_at=doc.get("unseen_at"),
            last_count=doc.get("last_count"),
            changes=int(doc["changes"]),
            changes_at_count=int(doc["changes_at_count"]),
            last_rescan_end=doc.get("last_rescan_end"),
            saved_at=doc.get("saved_at"),
            rescan=None
            if r is None
            else Rescan(
                started_at=float(r["started_at"]),
                confirms_at=float(r["confirms_at"]),
                confirms_snapshot=str(r["confirms_snapshot"]),
                cursor=int(r["cursor"]),
                sets=sets_from_json(r["sets"]),
                pages=int(r["pages"]),
            ),
        )

    def save(self, path: Path, now: float | None = None) -> None:
        """Atomically: a crash mid-write leaves the previous state."""
        self.saved_at = now
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), separators=(",", ":")))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Tracker | None:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # unreadable or from another version: start afresh

    # --- how fresh the figures are ----------------------------------------------------

    @property
    def stale(self) -> bool:
        """Not proven exact as of the last round: no full scan yet, a count found changes
        a re-scan is still reading, or a transaction has ended since the confirmation."""
        return (
            self.live is None
            or self.unseen_at is not None
            or self.confirmed_snapshot is None
            or self.snapshot != self.confirmed_snapshot
        )

    def stale_note(self) -> str | None:
        if self.live is None or self.confirmed_at is None:
            return "no full scan has confirmed them yet"
        if self.unseen_at is not None:
            return (
                "rows were deleted, changed or inserted below the ids already read "
                "(garbage collection, removelocation, a backfill): a re-scan is reading them"
            )
        if self.stale:
            return (
                "rows changed since they were last confirmed (confirmed_at): every insert "
                "is counted; a row deleted or changed since is counted once the next "
                "count finds it"
            )
        return None

    # --- one round -------------------------------------------------------------------

    async def begin(self, conn: asyncpg.Connection, now: float) -> None:
        """A fresh state: the marks at today's ids (unseen recent ids as gaps) and no
        figures until a first full scan ends."""
        fingerprint = await conn.fetchval(FINGERPRINT_SQL)
        high = await conn.fetchrow(HIGH_SQL)
        changes = await conn.fetchval(CHANGES_SQL)
        fresh = Tracker(
            fingerprint=fingerprint,
            changes=changes,
            changes_at_count=changes,
            snapshot=high["snapshot"],
        )
        for mark, table, top in (
            (fresh.placements, "imagestorageplacement", high["placements"]),
            (fresh.manifests, "manifestblob", high["manifests"]),
            (fresh.storages, "imagestorage", high["storages"]),
        ):
            window = max(0, top - 1000)  # recent ids: a transaction may still hold some
            seen = {
                r["id"] for r in await conn.fetch(f"SELECT id FROM {table} WHERE id > $1", window)
            }
            mark.high = top
            mark.gaps = {i: now for i in range(window + 1, top + 1) if i not in seen}
        self.__dict__.update(fresh.__dict__)

    async def advance(self, conn: asyncpg.Connection, now: float) -> list[Change]:
        """Reads what changed since the last round (inside the caller's snapshot) and
        applies it: to `live`, to the re-scan's sum for blobs it has passed, and to the
        page in flight's list for blobs in its range."""
        high = await conn.fetchrow(HIGH_SQL)
        self.snapshot = high["snapshot"]
        changes = await conn.fetchval(CHANGES_SQL)
        if changes < self.changes:
            self.changes_at_count = -1  # statistics reset: nothing can be assumed
        self.changes = changes
        new_p, p_high = await self._read(
            conn, NEW_PLACEMENTS_SQL, self.placements, high["placements"], now
        )
        new_m, m_high = await self._read(
            conn, NEW_MANIFESTS_SQL, self.manifests, high["manifests"], now
        )
        new_s, s_high = await self._read(
            conn, NEW_STORAGES_SQL, self.storages, high["storages"], now
        )
        self.catching_up = (
            p_high.high < high["placements"]
            or m_high.high < high["manifests"]
            or s_high.high < high["storages"]
        )
        touched = sorted({r["blob"] for r in new_p} | {r["blob"] for r in new_m})
        out: list[Change] = []
        if touched and not self.catching_up:
            new_locations: dict[int, int] = {}
            new_refs: dict[int, int] = {}
            for r in new_p:
                new_locations[r["blob"]] = new_locations.get(r["blob"], 0) | 1 << r["location_id"]
            for r in new_m:
                new_refs[r["blob"]] = new_refs.get(r["blob"], 0) + 1
            limit = 1 + max(new_refs.values(), default=0)
            for r in await conn.fetch(CAUGHT_UP_STATES_SQL, touched, limit):
                held = mask_of(r["after"])
                fresh = new_refs.get(r["id"], 0)
                before = held & ~new_locations.get(r["id"], 0) if r["refs"] > fresh else None
                after = held if r["refs"] > 0 else None
                if before != after:
                    out.append(Change(r["id"], r["size"], before, after))
        elif touched:
            old_p, old_m = self.placements, self.manifests
            rows = await conn.fetch(
                STATES_SQL,
                touched,
                old_p.high,
                old_p.ids(),
                p_high.high,
                p_high.ids(),
                old_m.high,
                old_m.ids(),
                m_high.high,
                m_high.ids(),
            )
            for r in rows:
                before = mask_of(r["before"]) if r["counted_before"] else None
                after = mask_of(r["after"]) if r["counted_after"] else None
                if before != after:
                    out.append(Change(r["id"], r["size"], before, after))
        self.placements, self.manifests, self.storages = p_high, m_high, s_high
        add_counts(
            self.expected,
            {
                "placements": _sums(((r["id"], r["blob"], r["location_id"]) for r in new_p), 3),
                "manifests": _sums(((r["id"], r["blob"]) for r in new_m), 2),
                "storages": _sums(((r["id"], r["size"]) for r in new_s), 2),
            },
        )
        self.apply(out)
        return out

    async def _read(
        self, conn: asyncpg.Connection, sql: str, mark: Mark, top: int, now: float
    ) -> tuple[list[asyncpg.Record], Mark]:
        """The rows past `mark` (and its gaps that appeared) and the mark after them. A
        gap given up on (too old, or too many) is left to the next count: should its row
        appear, the count finds it."""
        upto = min(top, mark.high + ROUND_ROWS)
        rows = await conn.fetch(sql, mark.high, upto, mark.ids())
        seen = {r["id"] for r in rows}
        gaps = {i: t for i, t in mark.gaps.items() if i not in seen and now - t < GAP_TTL}
        for i in range(mark.high + 1, upto + 1):
            if i not in seen:
                gaps[i] = now
        if len(gaps) > MAX_GAPS:
            for i in sorted(gaps, key=lambda i: gaps[i])[: len(gaps) - MAX_GAPS]:
                del gaps[i]
        return rows, Mark(max(mark.high, upto), gaps)

    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            if self.live is not None:
                change.apply(self.live)
            if self.rescan is not None and change.blob < self.rescan.cursor:
                change.apply(self.rescan.sets)
            elif self.page is not None and self.page.low <= change.blob < self.page.high:
                self.page.changes.append(change)

    # --- counts and re-scans ---------------------------------------------------------

    def due(
        self, now: float, interval: float, confirm_interval: float, rescan_interval: float
    ) -> str | None:
        """What the background has to do: "rescan" when one runs, none has ended yet, a
        count found changes the rounds did not see, or the last one ended
        `rescan_interval` ago; else "count" when PostgreSQL's counters show rows deleted
        or updated since the last count (a hint: no sooner than `interval` after it), or
        a transaction ended since the last confirmation and no count ran for
        `confirm_interval`; else None."""
        if self.rescan is not None or self.live is None or self.unseen_at is not None:
            return "rescan"
        if self.last_rescan_end is None or now - self.last_rescan_end >= rescan_interval:
            return "rescan"
        since = None if self.last_count is None else now - self.last_count
        if self.changes != self.changes_at_count and (since is None or since >= interval):
            return "count"
        if self.snapshot != self.confirmed_snapshot and (
            since is None or since >= confirm_interval
        ):
            return "count"
        return None

    def start_count(self, now: float) -> CountInFlight:
        """A count of the rows the rounds know now (no await may come between this and
        the count's query: the marks and what they expect are the count's)."""
        self.last_count = now
        self.changes_at_count = self.changes
        expected = {name: list(values) for name, values in self.expected.items()}
        marks = {name: mark.copy() for name, mark in self.marks().items()}
        return CountInFlight(now, marks, expected)

    def end_count(
        self, count: CountInFlight, snapshot: str, found: Counts, *, rescan: bool = False
    ) -> bool:
        """What a count found, against what the rounds expected; True when equal. Equal:
        nothing the rounds cannot see happened since the previous count, and the figures
        are confirmed as of this one. Else (or with `rescan`) a re-scan starts, confirming
        them as of this count when it ends. Either way, what it found is what the next
        count expects, plus the rows the rounds read meanwhile."""
        same = self.counted and found == count.expected
        add_counts(self.expected, found)
        add_counts(self.expected, count.expected, -1)
        self.counted = True
        if self.rescan is not None:  # never expected: counts run between re-scans
            return same
        if same and self.live is not None:
            self.confirmed_at, self.confirmed_snapshot = count.at, snapshot
        if not same and self.live is not None:
            self.unseen_at = count.at
        if rescan or not same:
            self.rescan = Rescan(
                started_at=count.at, confirms_at=count.at, confirms_snapshot=snapshot
            )
        return same

    def start_page(self, now: float, size: int, top_blob: int) -> PageInFlight:
        """The next page, at the rounds' current watermarks (no await may come between
        this and the page's query: the watermarks are the page's)."""
        assert self.rescan is not None, "a re-scan starts with a count"
        low = self.rescan.cursor
        high = low + size if low + size <= top_blob else NO_END
        self.page = PageInFlight(low, high, self.placements.copy(), self.manifests.copy())
        return self.page

    def end_page(self, page: PageInFlight, sets: Sets, now: float) -> bool:
        """Adds a page's sum (and the rounds' changes to its blobs meanwhile); True when
        the re-scan is complete and its sum has replaced the figures."""
        assert self.rescan is not None
        assert self.page is page
        self.page = None
        for mask, (blobs, bytes_) in sets.items():
            add_sets(self.rescan.sets, mask, blobs, bytes_)
        for change in page.changes:
            change.apply(self.rescan.sets)
        self.rescan.cursor = page.high
        self.rescan.pages += 1
        if page.high < NO_END:
            return False
        # Every page read the rows as they were at the count or later: the sum is exact
        # but for what changed after the count (the next count finds it).
        rescan, self.rescan = self.rescan, None
        self.live = rescan.sets
        self.confirmed_at, self.confirmed_snapshot = rescan.confirms_at, rescan.confirms_snapshot
        self.unseen_at = None
        self.last_rescan_end = now
        return True

    def abandon_page(self) -> None:
        """A page that failed (timed out, connection lost): read again later, whole."""
        self.page = None


def _sums(rows: Iterable[tuple[int, ...]], width: int) -> list[int]:
    """[rows, sum of each of `width` columns] of rows a round read, as a count sums them."""
    out = [0] * (1 + width)
    for row in rows:
        out[0] += 1
        for i, value in enumerate(row, 1):
            out[i] += value
    return out


async def read_count(conn: asyncpg.Connection, count: CountInFlight) -> tuple[str, Counts]:
    """A count, in one snapshot: the cluster's snapshot, and per table the rows the
    rounds know (up to its high mark, its gaps excepted) and their column sums."""
    found = zero_counts()
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        # First: the snapshot of the rows read below (a repeatable read's first statement).
        snapshot = await conn.fetchval("SELECT pg_current_snapshot()::text")
        for name, (table, columns) in COLUMNS.items():
            mark = count.marks[name]
            row = await conn.fetchrow(count_sql(table, columns, "id <= $1::bigint"), mark.high)
            found[name] = list(row)
            if mark.gaps:  # rows of gaps that appeared since: not known to the rounds yet
                gap = await conn.fetchrow(
                    count_sql(table, columns, "id = ANY($1::bigint[])"), mark.ids()
                )
                found[name] = [a - b for a, b in zip(found[name], gap, strict=True)]
    return snapshot, found


async def read_page(conn: asyncpg.Connection, page: PageInFlight, names: Mapping[int, str]) -> Sets:
    """One page of the re-scan, in its own snapshot, at the page's watermarks."""
    small = all(0 <= i <= MAX_MASK_ID for i in names)
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        await conn.execute(PAGE_STREAMING)
        rows = await conn.fetch(
            page_sql(small=small, watermarked=True),
            page.low,
            page.high,
            page.manifests.high,
            page.manifests.ids(),
            page.placements.high,
            page.placements.ids(),
        )
    sets: Sets = {}
    for row in rows:
        held = row["held"]
        add_sets(sets, held if small else mask_of(held), row["blobs"], row["bytes"])
    return sets
