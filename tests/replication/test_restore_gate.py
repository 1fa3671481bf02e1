"""The restore gate: a storage-drained site returns only to a location that still holds
its blobs. Real PostgreSQL (Quay's tables) and a real S3 server (moto_server) holding
blobs at Quay's own paths; the runtime's engine driven by hand-fed observations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.peers import free_port, moto_server
from tests.probers.test_s3 import KEYS, create_bucket, s3_client
from tests.replication.conftest import READONLY_PASSWORD, QuayDB
from tests.test_api import healthy
from trafficd.config import load
from trafficd.probers import backend_for
from trafficd.replication import PlacedBlob, ReplicationMonitor
from trafficd.restoregate import GateResult, RestoreGate
from trafficd.runtime.wiring import Runtime
from trafficd.store import read_events

pytestmark = pytest.mark.peers

T0 = 1_800_000_000.0
STORAGE_PATH = "/datastorage/registry"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


def write_config(tmp: Path, moto: str, dsn: str, sample: int = 50) -> Path:
    (tmp / "token").write_text("admin-token-0123456789abcdef\n")
    (tmp / "db-password").write_text(READONLY_PASSWORD + "\n")
    keys = ", ".join(f"{k}: {v}" for k, v in KEYS.items())
    path = tmp / "trafficd.yaml"
    path.write_text(f"""
vantage: test
state_dir: state
api_token_file: token
storage:
  usstorage: [S3Storage, {{s3_bucket: gate-us, storage_path: {STORAGE_PATH},
              endpoint_url: "{moto}", {keys}}}]
  eustorage: [S3Storage, {{s3_bucket: gate-eu, storage_path: {STORAGE_PATH},
              endpoint_url: "{moto}", {keys}}}]
sites:
  us: {{url: "http://q.test", connect: "127.0.0.1:1", storage: [usstorage],
        addresses: [192.0.2.10]}}
  eu: {{url: "http://q.test", connect: "127.0.0.1:2", storage: [eustorage],
        addresses: [192.0.2.20]}}
probes: {{interval: 1s, timeout: 500ms}}
policy: {{fall: 2, rise: 2, hold_down: 0s, min_active_sites: 1, shutdown_grace: 0s}}
replication: {{dsn: '{dsn}', password: '${{file:db-password}}',
              default_locations: [usstorage, eustorage], restore_sample: {sample}}}
""")
    return path


async def put_blobs(moto: str, bucket: str, blobs: list[PlacedBlob]) -> None:
    async with s3_client(moto) as s3:
        for blob in blobs:
            await s3.put_object(Bucket=bucket, Key=blob.path(STORAGE_PATH), Body=b"layer")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class World:
    """A runtime whose site eu was drained because its bucket died."""

    def __init__(self, runtime: Runtime, gate: RestoreGate, clock: Clock) -> None:
        self.runtime, self.gate, self.clock = runtime, gate, clock
        self.results: list[GateResult] = []

    async def round(self, *, eu_storage: bool = True) -> None:
        """One interval: observations, the gate's check (on the engine's memory of the
        previous round, as the daemon's gate task sees it), the engine's round."""
        self.clock.now += 1
        healthy(self.runtime, self.clock.now, eu_storage=eu_storage)
        for result in await self.gate.round(self.runtime.rounds.engine):
            self.runtime.effects.gate_result(result)
            self.results.append(result)
        self.runtime.leader.tick(self.clock.now)

    async def close(self) -> None:
        self.runtime.store.close()
        await self.runtime.replication.close()
        for backend in self.gate.backends.values():
            await backend.close()

    def eu(self) -> dict[str, object]:
        return next(s for s in self.runtime.views.sites() if s["name"] == "eu")


@pytest.fixture
async def world(quay_db: QuayDB, tmp_path: Path, moto: str) -> AsyncIterator[World]:
    await world_db(quay_db)
    for bucket in ("gate-us", "gate-eu"):
        await create_bucket(moto, bucket)
    world = await make_world(tmp_path, moto, quay_db.readonly_dsn)
    yield world
    await world.close()


async def world_db(db: QuayDB) -> None:
    await db.location("usstorage")
    await db.location("eustorage")
    for i in range(5):
        await db.blob(f"eu-{i}", 10, ["eustorage"])
    await db.blob("eu-v1", 10, ["eustorage", "usstorage"], cas_path=False)  # a v1-era layer
    await db.blob("eu-orphan", 10, ["eustorage"], manifests=0)  # not counted: not sampled
    await db.blob("us-0", 10, ["usstorage"])


async def make_world(tmp: Path, moto: str, dsn: str, sample: int = 50) -> World:
    path = write_config(tmp, moto, dsn, sample)
    runtime = Runtime.open(load(path), path)
    clock = Clock()
    monitor = ReplicationMonitor(runtime.live.config, runtime.metrics, clock=clock)
    backends = {n: backend_for(loc, timeout=2.0) for n, loc in runtime.live.config.storage.items()}
    gate = RestoreGate(runtime.live.config, monitor, backends, runtime.metrics, clock=clock)
    runtime.replication.monitor, runtime.replication.gate = monitor, gate
    world = World(runtime, gate, clock)
    for _ in range(3):
        await world.round(eu_storage=False)
    assert runtime.rounds.engine.site("eu").state.value == "drained"
    return world


async def test_a_location_that_came_back_empty_keeps_its_site_drained(
    world: World, quay_db: QuayDB, moto: str
) -> None:
    monitor = world.runtime.replication.monitor
    assert monitor is not None
    placed = (await monitor.sample("eustorage", 100)).blobs
    assert len(placed) == 6  # the orphan is no blob
    v1 = next(b for b in placed if not b.cas_path)
    assert v1.path(STORAGE_PATH) == f"datastorage/registry/sharedimages/{v1.uuid}/layer"
    await put_blobs(moto, "gate-eu", placed[:2])  # the pool came back with 2 of its 6 blobs

    for _ in range(4):  # the location passes its probes (its canary writes work)
        await world.round()
    eu = world.eu()
    assert eu["state"] == "drained"
    assert world.results and world.results[0].missing == 4 and world.results[0].sampled == 6
    expected = (
        "restore gate: 4 of 6 sampled blob(s) that Quay's database places at eustorage are "
        "missing from its storage"
    )
    assert any(expected in r for r in eu["reasons"]), eu["reasons"]  # type: ignore[attr-defined]
    missing = sorted(b.name for b in placed[2:])
    assert list(world.results[0].examples) == missing
    value = world.runtime.metrics.registry.get_sample_value(
        "trafficd_restore_gate_missing_blobs", {"location": "eustorage"}
    )
    assert value == 4
    events = [e for e in read_events(world.runtime.store.dir) if e["kind"] == "restore_gate"]
    assert len(events) == 1  # checked every round, reported once while the outcome holds
    assert events[0]["missing"] == 4 and events[0]["sites"] == ["eu"]
    assert events[0]["passed"] is False

    await put_blobs(moto, "gate-eu", placed[2:])  # the data is back
    await world.round()  # checked again (a storage interval later): it returns at once
    assert world.results[-1].passed and world.results[-1].missing == 0
    assert world.eu()["state"] == "restoring"
    await world.round()
    assert world.eu()["state"] == "active"
    assert not world.gate.results  # forgotten once the site is back


async def test_a_location_whose_blobs_are_all_there_restores_without_delay(
    world: World, quay_db: QuayDB, moto: str
) -> None:
    monitor = world.runtime.replication.monitor
    assert monitor is not None
    sample = await monitor.sample("eustorage", 100)
    await put_blobs(moto, "gate-eu", sample.blobs)
    await world.round()
    assert world.eu()["state"] == "drained"  # rise is 2
    await world.round()
    assert world.eu()["state"] == "restoring"
    assert [r.passed for r in world.results] == [True]


async def test_storage_that_cannot_be_checked_keeps_the_block(
    world: World, quay_db: QuayDB
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for backend in world.gate.backends.values():
        await backend.close()
    world.gate.backends = {
        n: backend_for(loc, timeout=1.0, endpoint=dead)
        for n, loc in world.runtime.live.config.storage.items()
    }
    for _ in range(3):
        await world.round()
    assert world.eu()["state"] == "drained"
    assert world.results[0].error is not None and "connect" in world.results[0].error
    reasons = world.eu()["reasons"]
    assert any("restore gate: could not check the blobs at eustorage" in r for r in reasons)  # type: ignore[attr-defined]


async def test_a_database_that_cannot_be_read_does_not_hold_the_site_hostage(
    quay_db: QuayDB, tmp_path: Path, moto: str
) -> None:
    for bucket in ("gate-us", "gate-eu"):
        await create_bucket(moto, bucket)
    dead = f"postgresql://trafficd_ro@127.0.0.1:{free_port()}/quay"
    world = await make_world(tmp_path, moto, dead)
    try:
        for _ in range(2):
            await world.round()
        assert world.eu()["state"] == "restoring"
        assert world.results[0].skipped is not None
        assert "cannot connect to Quay's database" in world.results[0].skipped
        events = [e for e in read_events(world.runtime.store.dir) if e["kind"] == "restore_gate"]
        assert events[0]["reason"].startswith("restore gate: skipped for eustorage")
        assert READONLY_PASSWORD not in str(events)
    finally:
        await world.close()


async def test_an_empty_sample_of_a_location_that_holds_data_does_not_pass(
    quay_db: QuayDB, tmp_path: Path, moto: str
) -> None:
    """eustorage holds placements, but none of a blob that a manifest references: the
    sample is empty and nothing was checked. The gate used to pass it (an `uploading`
    filter once emptied every sample and restored a site onto an empty bucket)."""
    await quay_db.location("usstorage")
    await quay_db.location("eustorage")
    await quay_db.blob("eu-orphan", 10, ["eustorage"], manifests=0)
    for bucket in ("gate-us", "gate-eu"):
        await create_bucket(moto, bucket)
    world = await make_world(tmp_path, moto, quay_db.readonly_dsn)
    try:
        for _ in range(4):
            await world.round()
        assert world.eu()["state"] == "drained"
        assert world.results and world.results[0].unchecked and not world.results[0].passed
        assert world.results[0].sampled == 0
        expected = (
            "restore gate: Quay's database holds placements at eustorage but no blob "
            "referenced by a manifest to sample"
        )
        assert any(expected in r for r in world.eu()["reasons"]), world.eu()["reasons"]  # type: ignore[attr-defined]
    finally:
        await world.close()


async def test_a_location_that_holds_nothing_passes_on_an_empty_sample(
    quay_db: QuayDB, tmp_path: Path, moto: str
) -> None:
    """Nothing placed there, nothing to lose: an empty sample is the truth."""
    await quay_db.location("usstorage")
    await quay_db.location("eustorage")
    await quay_db.blob("us-only", 10, ["usstorage"])
    for bucket in ("gate-us", "gate-eu"):
        await create_bucket(moto, bucket)
    world = await make_world(tmp_path, moto, quay_db.readonly_dsn)
    try:
        for _ in range(2):
            await world.round()
        assert world.eu()["state"] == "restoring"
        assert world.results[0].passed and world.results[0].sampled == 0
    finally:
        await world.close()
