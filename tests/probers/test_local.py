"""The LocalStorage prober on a real directory."""

from __future__ import annotations

from pathlib import Path

from trafficd.config.storage import DRIVERS, StorageLocation
from trafficd.model import Observation
from trafficd.probers import StorageBackend, backend_for, probe_storage
from trafficd.probers.base import StorageProbeSettings


def location(path: Path) -> StorageLocation:
    params = DRIVERS["LocalStorage"].model_validate({"storage_path": str(path)})
    return StorageLocation(name="local", driver="LocalStorage", params=params, source="test")


async def probe(backend: StorageBackend, path: Path, mode: str = "write") -> Observation:
    return await probe_storage(
        backend,
        location="local",
        storage_path=str(path),
        settings=StorageProbeSettings("us-east", 2.0, mode),
    )


async def test_canary_round_trip_in_the_directory(tmp_path: Path) -> None:
    backend = backend_for(location(tmp_path), timeout=2.0)
    obs = await probe(backend, tmp_path)
    assert obs.ok is True, obs
    assert (tmp_path / "trafficd" / "us-east").is_dir()
    assert not (tmp_path / "trafficd" / "us-east" / "canary").exists()


async def test_a_missing_mount_fails_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    backend = backend_for(location(missing), timeout=2.0)
    for mode in ("write", "read"):
        obs = await probe(backend, missing, mode)
        assert (obs.ok, obs.reason) == (False, "connect")
    assert not missing.exists()


async def test_the_one_call_canary_names_the_step_that_failed(tmp_path: Path) -> None:
    # Where the canary's directory should be there is a file: the put cannot happen.
    (tmp_path / "trafficd").write_text("in the way")
    backend = backend_for(location(tmp_path), timeout=2.0)
    obs = await probe(backend, tmp_path)
    assert (obs.ok, obs.reason) == (False, "put")
    # A healthy round trip reports the time of each of its steps.
    (tmp_path / "trafficd").unlink()
    obs = await probe(backend, tmp_path)
    assert obs.ok is True and obs.detail is not None
    assert all(f"{step}=" in obs.detail for step in ("put", "get", "delete")), obs.detail
