"""The LocalStorage prober on a real directory (and a FIFO for a hung filesystem)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable
from pathlib import Path

from trafficd.config.storage import DRIVERS, StorageLocation
from trafficd.model import Observation
from trafficd.probers import StorageBackend, backend_for, probe_storage
from trafficd.probers.base import StorageProbeSettings
from trafficd.probers.filethread import FileThread
from trafficd.probers.local import LocalBackend


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


async def test_a_hung_filesystem_holds_one_thread_and_no_other_location(tmp_path: Path) -> None:
    """The canary's path is a FIFO: opening it to write blocks in the kernel until a reader
    comes, as a call on a hung NFS mount does. The probe times out; another location's
    probe of the same moment is not held up behind it; the next probe of the hung
    location fails at once instead of taking another thread."""
    files = FileThread(stuck_after=0.05)
    hung, healthy = tmp_path / "hung", tmp_path / "healthy"
    (hung / "trafficd" / "us-east").mkdir(parents=True)
    healthy.mkdir()
    fifo = hung / "trafficd" / "us-east" / "canary"
    os.mkfifo(fifo)
    a = LocalBackend(location(hung), timeout=0.5, files=files)
    b = LocalBackend(location(healthy), timeout=0.5, files=files)

    def probe_of(backend: LocalBackend, path: Path) -> Awaitable[Observation]:
        return probe_storage(
            backend,
            location=path.name,
            storage_path=str(path),
            settings=StorageProbeSettings("us-east", 0.5),
        )

    first, other = await asyncio.gather(probe_of(a, hung), probe_of(b, healthy))
    assert (first.ok, first.reason) == (False, "timeout"), first
    assert other.ok is True and other.latency is not None and other.latency < 0.5, other
    assert files.replaced == 1
    again = await probe_of(a, hung)
    assert (again.ok, again.reason) == (False, "timeout")
    assert again.detail is not None and "has not returned" in again.detail
    assert again.latency is not None and again.latency < 0.1  # refused, not queued
    assert files.replaced == 1  # no second thread for it

    # The mount comes back: a peer opens the FIFO to read (the canary's write goes
    # through), then to write (the canary's read gets an empty file and ends).
    def peer() -> None:
        fd = os.open(fifo, os.O_RDONLY)
        while os.read(fd, 4096):
            pass
        os.close(fd)
        os.close(os.open(fifo, os.O_WRONLY))

    helper = threading.Thread(target=peer, daemon=True)
    helper.start()
    helper.join(5)
    assert not helper.is_alive()
    for _ in range(50):  # the stuck operation returns on its own thread
        if a._last is not None and a._last.finished:
            break
        await asyncio.sleep(0.02)
    assert not fifo.exists()  # the canary went on to delete it
    back = await probe_of(a, hung)
    assert back.ok is True, back
    files.stop()
