"""The probers: trafficd's eyes, one small module per kind, registered in one literal map.

`quay` probes each site's health endpoints; `s3`, `azure`, `swift` and `local`
each implement `base.StorageBackend` for one storage family, and
`STORAGE_BACKENDS` maps every Quay driver name (the same names as
`trafficd.config.storage.DRIVERS`) to the backend that checks it.
`probe_storage` runs the canary against any backend. Probers never raise.
Backends are imported when a location first needs one (`trafficd.lazy`).
"""

from __future__ import annotations

from typing import Protocol

from trafficd.config.storage import StorageLocation
from trafficd.lazy import lazy
from trafficd.probers.base import StorageBackend, StorageProbeSettings, probe_storage


class BackendFactory(Protocol):
    def __call__(
        self, location: StorageLocation, *, timeout: float, endpoint: str | None = None
    ) -> StorageBackend: ...


_LOCAL = lazy("trafficd.probers.local:LocalBackend")
_S3 = lazy("trafficd.probers.s3:S3Backend")
_SWIFT = lazy("trafficd.probers.swift:SwiftBackend")
_AZURE = lazy("trafficd.probers.azure:AzureBackend")

STORAGE_BACKENDS: dict[str, BackendFactory] = {
    "LocalStorage": _LOCAL,
    "S3Storage": _S3,
    "STSS3Storage": _S3,
    "GoogleCloudStorage": _S3,
    "RadosGWStorage": _S3,
    "RHOCSStorage": _S3,
    "IBMCloudStorage": _S3,
    "SwiftStorage": _SWIFT,
    "CloudFrontedS3Storage": _S3,
    "CloudFlareStorage": _S3,
    "AkamaiS3Storage": _S3,
    "MultiCDNStorage": _S3,
    "AzureStorage": _AZURE,
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
