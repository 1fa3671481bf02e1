"""The daemon's replication monitor: incremental rounds, background counts and re-scans.

Beside the pipeline (runtime/replication.py runs it in its own tasks). Every
`replication.interval` a round reads what changed in Quay's database since the
last one (incremental.py) and the queue, under `statement_timeout`. A background
task, on its own connection under `rescan_timeout`, confirms the figures with a
count of the rows they come from (every `confirm_interval` while rows change) and
pages through every blob when a count finds what the rounds could not see
(`rescan_page` blobs a statement), so neither ever delays a round. The figures
are exported as `trafficd_replication_*` and added to the reasons of a storage
drain; `trafficd_replication_stale` says when they are not proven exact as of
the round, `trafficd_replication_confirmed_timestamp_seconds` since when. The
state is saved in `state_dir` (replication-monitor.json) after every round,
count and page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from trafficd.config.model import Config
from trafficd.metrics import Metrics
from trafficd.replication.base import (
    HOLDING_SQL,
    Figures,
    LocationFigures,
    Queue,
    ReplicationError,
    Sample,
    _location_names,
    _snapshot,
    _why,
    build_figures,
    configured_locations,
    connect,
    default_locations,
    read_queue,
    sample_placed,
)
from trafficd.replication.incremental import (
    FINGERPRINT_SQL,
    STATE_FILE,
    Tracker,
    read_count,
    read_page,
)

log = logging.getLogger(__name__)

TOP_BLOB_SQL = "SELECT COALESCE(max(id), 0) FROM imagestorage"
RETRY = 10.0  # seconds before a failed page is read again


class ReplicationMonitor:
    """The daemon's reader: one round per `replication.interval`, exported as metrics.

    A failed round keeps the last figures (they age; `trafficd_replication_up` and
    the last-success timestamp say so), drops the connection and tries again next
    round; it never raises into the daemon, so probing and draining go on.
    """

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        state_dir: Path | None = None,
    ) -> None:
        assert config.replication is not None
        self.settings = config.replication
        self.defaults = default_locations(config)
        self.configured = configured_locations(config)
        self.site_locations = {n: list(site.storage or []) for n, site in config.sites.items()}
        self.metrics = metrics
        self.clock = clock
        # Where the state is kept across restarts (None: not kept, a restart re-scans).
        self.path = state_dir / STATE_FILE if state_dir is not None else None
        self.tracker = (Tracker.load(self.path) if self.path else None) or Tracker()
        self.figures: Figures | None = None
        self.error: str | None = None
        self.scan_error: str | None = None
        self._conn: asyncpg.Connection | None = None
        self._scan_conn: asyncpg.Connection | None = None
        self._queue_conn: asyncpg.Connection | None = None
        self._names: dict[int, str] = {}
        # One connection, two users (the rounds and the restore gate's samples).
        self._lock = asyncio.Lock()
        self._scan_wanted = asyncio.Event()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect(self.settings)
        return self._conn

    async def _queue_connection(self) -> asyncpg.Connection:
        if self._queue_conn is None or self._queue_conn.is_closed():
            self._queue_conn = await connect(self.settings)
        return self._queue_conn

    async def _read_queue(self, now: float) -> Queue:
        """The queue, on its own connection: read while the blobs' changes are (its cost
        is the queue's length, theirs what changed; a round waits for the longer)."""
        conn = await self._queue_connection()
        async with _snapshot(conn):
            return await read_queue(conn, now)

    async def _read_changes(self, now: float) -> set[str]:
        async with self._lock:
            fresh = self._conn is None or self._conn.is_closed()
            conn = await self._connection()
            async with _snapshot(conn):
                fingerprint = self.tracker.fingerprint
                # Which database: asked once a connection (a DSN may be repointed).
                if not fingerprint or (fresh and not await self._same_database(conn, fingerprint)):
                    if fingerprint:
                        log.warning("replication: another database: its state starts afresh")
                    await self.tracker.begin(conn, now)
                else:
                    await self.tracker.advance(conn, now)
                self._names = await _location_names(conn)
                return {r["name"] for r in await conn.fetch(HOLDING_SQL)}

    async def round(self) -> None:
        """One incremental round: what changed, applied; the queue read afresh."""
        now = self.clock()
        try:
            changes = asyncio.create_task(self._read_changes(now))
            queue_task = asyncio.create_task(self._read_queue(now))
            try:
                holding, queue = await changes, await queue_task
            finally:
                for task in (changes, queue_task):
                    task.cancel()
                await asyncio.gather(changes, queue_task, return_exceptions=True)
        except ReplicationError as exc:
            if self.error != str(exc):
                log.warning("replication: %s", exc)
            self.error = str(exc)
            self.metrics.replication_up.set(0)
            await self._close_round()
            return
        if self.error is not None:
            log.info("replication: Quay's database answers again")
        self.error = None
        self._save()
        if self._due(now) is not None:
            self._scan_wanted.set()
        live = self.tracker.live
        if live is None:
            self.metrics.replication_up.set(1)
            self.metrics.replication_stale.set(1)
            return  # no figures before a first full scan: none is better than a guess
        t = self.tracker
        self.figures = build_figures(
            live,
            self._names,
            self.defaults,
            self.configured,
            holding,
            queue,
            stale=t.stale,
            confirmed_at=t.confirmed_at,
            note=t.stale_note(),
        )
        self._export(self.figures, now)

    async def _same_database(self, conn: asyncpg.Connection, fingerprint: str) -> bool:
        return bool(await conn.fetchval(FINGERPRINT_SQL) == fingerprint)

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.tracker.save(self.path, self.clock())
        except OSError as exc:
            log.warning("replication: cannot save %s: %s", self.path, exc.strerror or exc)

    def _export(self, figures: Figures, now: float) -> None:
        m = self.metrics
        for name, f in figures.locations.items():
            m.replication_backlog_blobs.labels(location=name).set(f.backlog_blobs)
            m.replication_backlog_bytes.labels(location=name).set(f.backlog_bytes)
            m.replication_at_risk_blobs.labels(location=name).set(f.at_risk_blobs)
            m.replication_at_risk_bytes.labels(location=name).set(f.at_risk_bytes)
        m.replication_queue_items.set(figures.queue_items)
        m.replication_oldest_item_age.set(figures.oldest_item_age_seconds)
        m.replication_dead_items.set(figures.dead_items)
        m.replication_stuck_items.set(figures.stuck_items)
        m.replication_replica_placements.set(figures.replica_placements)
        m.replication_stale.set(1 if figures.stale else 0)
        if figures.confirmed_at is not None:
            m.replication_confirmed.set(figures.confirmed_at)
        m.replication_last_success.set(now)
        m.replication_up.set(1)

    # --- counts and the re-scan ------------------------------------------------------

    def _due(self, now: float) -> str | None:
        s = self.settings
        return self.tracker.due(now, s.interval, s.confirm_interval, s.rescan_interval)

    async def _scan_connection(self) -> asyncpg.Connection:
        if self._scan_conn is None or self._scan_conn.is_closed():
            self._scan_conn = await connect(self.settings, self.settings.rescan_timeout)
        return self._scan_conn

    async def _scan_failed(self, exc: ReplicationError, what: str) -> ReplicationError:
        error = f"{what}: {exc}"
        if self.scan_error != error:
            log.warning("replication: %s (the figures wait for it, marked stale)", error)
        self.scan_error = error
        await self._close_scan()
        return ReplicationError(error)

    async def _count(self, *, rescan: bool) -> bool:
        """A count of the rows the figures come from (incremental.read_count): True when
        it found what the rounds expected. Starts a re-scan when not (or `rescan`)."""
        if not self.tracker.fingerprint:
            raise ReplicationError("no round has read Quay's database yet")
        try:
            conn = await self._scan_connection()
            count = self.tracker.start_count(self.clock())
            try:
                snapshot, found = await read_count(conn, count)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                raise ReplicationError(f"reading a count failed: {_why(exc)}") from None
        except ReplicationError as exc:
            raise await self._scan_failed(exc, "count") from None
        same = self.tracker.end_count(count, snapshot, found, rescan=rescan)
        self.scan_error = None
        self._save()
        if not same and self.tracker.live is not None:
            log.info(
                "replication: a count found rows deleted, changed or inserted below the ids "
                "already read: a re-scan reads them"
            )
        return same

    async def confirm(self) -> bool:
        """One count (tests, and the scan loop): True when it confirmed the figures. A
        count that cannot be read leaves them as they were, marked stale."""
        if self.tracker.rescan is not None:
            return False  # the re-scan confirms them when it ends
        return await self._count(rescan=False)

    async def scan_page(self) -> bool:
        """One page of the re-scan (starting one, with its count, when none runs); True
        when it completed the re-scan. A page that fails or times out is read again
        later: the figures stay as they were, marked stale, never half-replaced."""
        if self.tracker.rescan is None:
            await self._count(rescan=True)
        try:
            conn = await self._scan_connection()
            async with _snapshot(conn):
                top = await conn.fetchval(TOP_BLOB_SQL)
                names = await _location_names(conn)
            page = self.tracker.start_page(self.clock(), self.settings.rescan_page, top)
            try:
                sets = await read_page(conn, page, names)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                raise ReplicationError(f"reading a page failed: {_why(exc)}") from None
        except ReplicationError as exc:
            self.tracker.abandon_page()
            raise await self._scan_failed(exc, "re-scan") from None
        done = self.tracker.end_page(page, sets, self.clock())
        self.scan_error = None
        self._save()
        if done:
            log.info("replication: a full re-scan confirmed the figures")
        return done

    async def scan(self) -> None:
        """A whole re-scan, page after page (tests, and the scan loop)."""
        while not await self.scan_page():
            pass

    async def scan_loop(self) -> None:
        while True:
            await self._scan_wanted.wait()
            self._scan_wanted.clear()
            try:
                # A count that finds changes starts a re-scan: done in the same turn.
                while (work := self._due(self.clock())) is not None:
                    if work == "rescan":
                        await self.scan()
                    else:
                        await self.confirm()
                        if self.tracker.rescan is None:
                            break  # counted; the next is due confirm_interval from now
            except ReplicationError:
                await asyncio.sleep(RETRY)
                self._scan_wanted.set()
                continue
            # Rounds meanwhile asked for it: not again. The next round asks if one is due.
            self._scan_wanted.clear()
            await self.round()  # the confirmed figures, exported at once

    # --- the rest ----------------------------------------------------------------------

    def at_risk(self, site: str, failing: Sequence[str] | None = None) -> str | None:
        """What a storage drain of `site` leaves unreadable: the blobs held only at a
        location that failed (`failing`, default the site's first location, the one whose
        failure drains it), counted per location. A blob held only at a location of the
        site that is up stays readable and is not counted."""
        if self.figures is None:
            if self.tracker.fingerprint and self.error is None:
                return "replication: blobs at risk not known yet (a first full scan is running)"
            return None
        locations = self.site_locations.get(site, [])
        down = [loc for loc in locations if loc in (failing or locations[:1])]
        if not down:
            return None
        parts = []
        for loc in down:
            f = self.figures.locations.get(loc, LocationFigures())
            parts.append(f"{f.at_risk_blobs} blob(s) ({f.at_risk_bytes} bytes) exist only at {loc}")
        notes = []
        if self.error:
            notes.append(f"as of the last read; now: {self.error}")
        elif self.figures.stale:
            notes.append(f"stale: {self._stale_short()}")
        stale = f" ({'; '.join(notes)})" if notes else ""
        return (
            f"replication: {'; '.join(parts)}: "
            f"pulls of them fail from every site until it returns{stale}"
        )

    def _stale_short(self) -> str:
        t = self.tracker
        if t.unseen_at is not None:
            return "a re-scan is reading rows deleted or changed since"
        if t.confirmed_at is None:
            return "no full scan has confirmed them yet"
        since = datetime.fromtimestamp(t.confirmed_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"rows deleted or changed since {since} are not counted yet"

    async def sample(self, location: str, n: int) -> Sample:
        """A sample for the restore gate, on the monitor's connection."""
        try:
            async with self._lock:
                return await sample_placed(await self._connection(), location, n)
        except ReplicationError:
            await self._close_round()
            raise

    async def run(self) -> None:
        scanner = asyncio.create_task(self.scan_loop(), name="replication-rescan")
        try:
            while True:
                await self.round()
                await asyncio.sleep(self.settings.interval)
        finally:
            scanner.cancel()
            await asyncio.gather(scanner, return_exceptions=True)

    async def _close_round(self) -> None:
        conn, self._conn = self._conn, None
        queue, self._queue_conn = self._queue_conn, None
        await _close(conn)
        await _close(queue)

    async def _close_scan(self) -> None:
        conn, self._scan_conn = self._scan_conn, None
        await _close(conn)

    async def close(self) -> None:
        await self._close_round()
        await self._close_scan()


async def _close(conn: asyncpg.Connection | None) -> None:
    if conn is not None:
        try:
            await asyncio.wait_for(conn.close(), timeout=2)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            conn.terminate()
