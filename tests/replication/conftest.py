"""A real PostgreSQL (Debian's) with Quay's tables, and a builder for their rows.

One cluster per test session, one fresh database per test, created from
quay_schema.sql (Quay's migrations, revisions named there). The builder writes
rows the way Quay does: a blob is an `imagestorage` row referenced by a
`manifestblob` (its `uploading` left at true, as every real v2 push leaves it),
placed at locations by `imagestorageplacement`; replication work is `queueitem`
rows of `imagestoragereplication/<uuid>/` with naive UTC times.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest

from trafficd.demo.peers import Postgres

SCHEMA = (Path(__file__).parent / "quay_schema.sql").read_text()
SUPERUSER_PASSWORD = "pg-test-superuser-password"
READONLY_PASSWORD = "trafficd-ro-test-password"
_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    # Not under pytest's tmp dir: PostgreSQL runs as its own user and must reach it.
    directory = Path(tempfile.mkdtemp(prefix="trafficd-pg.", dir="/tmp"))
    directory.chmod(0o755)
    server = Postgres(directory / "cluster", SUPERUSER_PASSWORD)
    server.start()
    # No autovacuum: an automatic ANALYZE ends a transaction of its own (it writes
    # pg_statistic), and the monitor's figures are exact only while no transaction has
    # ended since their confirmation: one at a random moment would make tests of that flaky.
    asyncio.run(_no_autovacuum(server))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def _no_autovacuum(server: Postgres) -> None:
    conn = await asyncpg.connect(server.dsn(), password=SUPERUSER_PASSWORD)
    try:
        await conn.execute("ALTER SYSTEM SET autovacuum = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def digest_of(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


@dataclass
class QuayDB:
    """One database with Quay's tables; rows are added through the superuser."""

    server: Postgres
    name: str
    conn: asyncpg.Connection
    locations: dict[str, int] = field(default_factory=dict)
    _manifests: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def readonly_dsn(self) -> str:
        """The role trafficd is given: SELECT on Quay's tables, nothing else."""
        return self.server.dsn(self.name, user="trafficd_ro")

    async def location(self, name: str) -> int:
        row = await self.conn.fetchrow(
            "INSERT INTO imagestoragelocation (name) VALUES ($1) RETURNING id", name
        )
        self.locations[name] = row["id"]
        return int(row["id"])

    async def blob(
        self,
        name: str,
        size: int | None,
        at: list[str],
        *,
        uploading: bool | None = True,
        manifests: int = 1,
        cas_path: bool = True,
    ) -> int:
        """A blob placed at `at`, referenced by `manifests` manifests (0: an orphan).
        `uploading` is true by default: real Quay never clears it (only its test
        fixtures write false)."""
        row = await self.conn.fetchrow(
            "INSERT INTO imagestorage (uuid, image_size, uploading, content_checksum, cas_path)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING id",
            str(uuid.uuid4()),
            size,
            uploading,
            digest_of(name),
            cas_path,
        )
        blob_id = int(row["id"])
        for loc in at:
            await self.conn.execute(
                "INSERT INTO imagestorageplacement (storage_id, location_id) VALUES ($1, $2)",
                blob_id,
                self.locations[loc],
            )
        for _ in range(manifests):
            n = next(self._manifests)
            manifest = await self.conn.fetchrow(
                "INSERT INTO manifest (repository_id, digest, media_type_id, manifest_bytes)"
                " VALUES (1, $1, 1, '{}') RETURNING id",
                digest_of(f"manifest-{n}"),
            )
            await self.conn.execute(
                "INSERT INTO manifestblob (repository_id, manifest_id, blob_id, blob_index)"
                " VALUES (1, $1, $2, 0)",
                manifest["id"],
                blob_id,
            )
        return blob_id

    async def queue_item(
        self,
        *,
        available_after: datetime,
        available: bool = True,
        processing_expires: datetime | None = None,
        retries: int = 5,
        queue: str | None = None,
    ) -> None:
        storage = str(uuid.uuid4())
        body = json.dumps({"namespace_user_id": 1, "storage_id": storage})
        await self.conn.execute(
            "INSERT INTO queueitem (queue_name, body, available_after, available,"
            " processing_expires, retries_remaining, state_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            queue or f"imagestoragereplication/{storage}/",
            body,
            available_after,
            available,
            processing_expires,
            retries,
            str(uuid.uuid4()),
        )


@pytest.fixture
async def quay_db(postgres: Postgres) -> AsyncIterator[QuayDB]:
    name = f"quay{next(_databases)}"
    admin = await asyncpg.connect(postgres.dsn(), password=SUPERUSER_PASSWORD)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        # Quay writes naive UTC whatever the server's zone: a far-off zone proves it.
        await admin.execute(f"ALTER DATABASE {name} SET timezone TO 'Pacific/Kiritimati'")
        exists = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'trafficd_ro'")
        if not exists:
            await admin.execute(f"CREATE ROLE trafficd_ro LOGIN PASSWORD '{READONLY_PASSWORD}'")
    finally:
        await admin.close()
    conn = await asyncpg.connect(postgres.dsn(name), password=SUPERUSER_PASSWORD)
    await conn.execute(SCHEMA)
    await conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO trafficd_ro")
    await conn.execute(
        "INSERT INTO mediatype (name) VALUES ('application/vnd.oci.image.manifest.v1+json')"
    )
    await conn.execute("INSERT INTO repository (name) VALUES ('org/repo')")
    try:
        yield QuayDB(postgres, name, conn)
    finally:
        await conn.close()
