"""The probers: trafficd's eyes, one small module per kind, registered in one literal map.

`quay` probes each site's health endpoints; `s3`, `azure`, `swift` and `local`
each implement `base.StorageBackend` for one storage family, and
`STORAGE_BACKENDS` maps every Quay driver name (the same names as
`trafficd.config.storage.DRIVERS`) to the backend that checks it.
`probe_storage` runs the canary against any backend. Probers never raise.
"""

from __future__ import annotations

from typing import Protocol

from trafficd.config.storage import StorageLocation
from trafficd.probers.azure import AzureBackend
from trafficd.probers.base import StorageBackend, StorageProbeSettings, probe_storage
from trafficd.probers.local import LocalBackend
from trafficd.probers.s3 import S3Backend
from trafficd.probers.swift import SwiftBackend


class BackendFactory(Protocol):
    def __call__(
        self, location: StorageLocation, *, timeout: float, endpoint: str | None = None
    ) -> StorageBackend: ...


STORAGE_BACKENDS: dict[str, BackendFactory] = {
    "LocalStorage": LocalBackend,
    "S3Storage": S3Backend,
    "STSS3Storage": S3Backend,
    "GoogleCloudStorage": S3Backend,
    "RadosGWStorage": S3Backend,
    "RHOCSStorage": S3Backend,
    "IBMCloudStorage": S3Backend,
    "SwiftStorage": SwiftBackend,
    "CloudFrontedS3Storage": S3Backend,
    "CloudFlareStorage": S3Backend,
    "AkamaiS3Storage": S3Backend,
    "MultiCDNStorage": S3Backend,
    "AzureStorage": AzureBackend,
}


def backend_for(
    location: StorageLocation, *, timeout: float, endpoint: str | None = None
) -> StorageBackend:
    return STORAGE_BACKENDS[location.driver](location, timeout=timeout, endpoint=endpoint)


__all__ = [
    "STORAGE_BACKENDS",
    "StorageBackend",
    "StorageProbeSettings",
    "backend_for",
    "probe_storage",
]
