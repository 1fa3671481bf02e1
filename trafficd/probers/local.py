"""The LocalStorage prober: a directory, through a thread so the event loop never blocks.

Implements `base.StorageBackend` and `base.OneCallCanary` (the whole canary in
one thread hand-off). Every location's file operations run on the shared
`filethread.FILES`; a hung filesystem (NFS) blocks only a thread of its own,
the probe's timeout still answers, and until the stuck operation returns the
location's probes fail at once with `timeout` instead of queueing more.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from trafficd.config.storage import LocalStorageParams, StorageLocation
from trafficd.probers.base import StepError
from trafficd.probers.filethread import FILES, FileThread, Job

T = TypeVar("T")
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


class LocalBackend:
    def __init__(
        self,
        location: StorageLocation,
        *,
        timeout: float,
        endpoint: str | None = None,
        files: FileThread = FILES,
    ) -> None:
        params = location.params
        assert isinstance(params, LocalStorageParams)
        self.root = Path(params.storage_path)
        self._files = files
        self._last: Job[Any] | None = None  # this location's latest file operation

    def _path(self, key: str) -> Path:
        # Keys start with storage_path (stripped of its leading slash); the root is absolute.
        relative = key.removeprefix(str(self.root).strip("/")).lstrip("/")
        return self.root / relative

    async def _run(self, fn: Callable[[], T]) -> T:
        last = self._last
        now = time.monotonic()
        if last is not None and last.stuck(now, self._files.stuck_after):
            raise StepError(
                "timeout",
                f"its last file operation has not returned for {last.running_for(now):.1f}s: "
                "the filesystem does not answer",
            )
        job = self._files.submit(fn)
        self._last = job
        return await job.future

    def _write(self, path: Path, data: bytes) -> None:
        # The canary is this vantage's own file: written in place, no temporary and rename.
        try:
            fd = os.open(path, _WRITE, 0o644)
        except FileNotFoundError:
            if not self.root.is_dir():  # a missing mount must fail, not be created
                raise StepError("connect", "the directory does not exist") from None
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, _WRITE, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    @staticmethod
    def _read(path: Path) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        await self._run(lambda: self._write(path, data))

    async def canary(self, key: str, data: bytes, steps: dict[str, float]) -> bytes:
        path = self._path(key)

        def roundtrip() -> bytes:
            begin = time.perf_counter()
            self._write(path, data)
            steps["put"] = (now := time.perf_counter()) - begin
            got = self._read(path)
            steps["get"] = (begin := time.perf_counter()) - now
            os.unlink(path)
            steps["delete"] = time.perf_counter() - begin
            return got

        return await self._run(roundtrip)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        return await self._run(lambda: self._read(path))

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await self._run(lambda: os.unlink(path))

    async def exists(self, key: str) -> bool:
        path = self._path(key)

        def look() -> bool:
            if not self.root.is_dir():  # an unmounted volume is not an empty one
                raise StepError("connect", "the directory does not exist")
            return path.is_file()

        return await self._run(look)

    async def reachable(self) -> None:
        if not await self._run(self.root.is_dir):
            raise StepError("connect", "the directory does not exist")

    def classify(self, exc: BaseException) -> StepError | None:
        if isinstance(exc, PermissionError):
            return StepError("auth", "permission denied")
        if isinstance(exc, OSError):
            return StepError("error", errno.errorcode.get(exc.errno or 0, type(exc).__name__))
        return None

    async def close(self) -> None:
        return None
