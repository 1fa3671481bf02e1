"""The LocalStorage prober: a directory, through a thread so the event loop never blocks.

Implements `base.StorageBackend` and `base.OneCallCanary` (the whole canary in
one thread hand-off); a hung filesystem (NFS) blocks only the worker thread,
and the probe's timeout still answers.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path

from trafficd.config.storage import LocalStorageParams, StorageLocation
from trafficd.probers.base import StepError


class LocalBackend:
    def __init__(
        self, location: StorageLocation, *, timeout: float, endpoint: str | None = None
    ) -> None:
        params = location.params
        assert isinstance(params, LocalStorageParams)
        self.root = Path(params.storage_path)

    def _path(self, key: str) -> Path:
        # Keys start with storage_path (stripped of its leading slash); the root is absolute.
        relative = key.removeprefix(str(self.root).strip("/")).lstrip("/")
        return self.root / relative

    def _write(self, path: Path, data: bytes) -> None:
        if not self.root.is_dir():  # a missing mount must fail, not be created
            raise StepError("connect", "the directory does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, self._path(key), data)

    async def canary(self, key: str, data: bytes, steps: dict[str, float]) -> bytes:
        path = self._path(key)

        def roundtrip() -> bytes:
            begin = time.perf_counter()
            self._write(path, data)
            steps["put"] = (now := time.perf_counter()) - begin
            got = path.read_bytes()
            steps["get"] = (begin := time.perf_counter()) - now
            path.unlink()
            steps["delete"] = time.perf_counter() - begin
            return got

        return await asyncio.to_thread(roundtrip)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._path(key).read_bytes)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink)

    async def exists(self, key: str) -> bool:
        def look() -> bool:
            if not self.root.is_dir():  # an unmounted volume is not an empty one
                raise StepError("connect", "the directory does not exist")
            return self._path(key).is_file()

        return await asyncio.to_thread(look)

    async def reachable(self) -> None:
        if not await asyncio.to_thread(self.root.is_dir):
            raise StepError("connect", "the directory does not exist")

    def classify(self, exc: BaseException) -> StepError | None:
        if isinstance(exc, PermissionError):
            return StepError("auth", "permission denied")
        if isinstance(exc, OSError):
            return StepError("error", errno.errorcode.get(exc.errno or 0, type(exc).__name__))
        return None

    async def close(self) -> None:
        return None
