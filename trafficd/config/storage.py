"""Quay's storage configuration, `LOCATION: [Driver, {params}]`, validated per driver.

Part of the configuration layer: `loader` validates every entry of `storage`
(inline or imported from Quay's `DISTRIBUTED_STORAGE_CONFIG`) against
`DRIVERS`, the one registry of driver names; the storage probers register
their implementations under the same names.

Parameter lists follow each driver class's constructor in Quay v3.18.0
(`storage/cloud.py`, `azurestorage.py`, `swift.py`, `local.py`,
`cloudflarestorage.py`, `akamaistorage.py`, `multicdnstorage.py`), so that a
real Quay `config.yaml` always loads. Unlike Quay, which turns an unknown
driver name into a fake storage that accepts everything, an unknown driver is
an error here.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

QUAY_RELEASE = "v3.18.0"

Family = Literal["s3", "gcs", "azure", "swift", "local", "multicdn"]


class DriverParams(BaseModel):
    """Parameters common to every driver."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    family: ClassVar[str] = ""  # which prober family checks it
    storage_path: str


class _S3Params(DriverParams):
    """`S3Storage(context, storage_path, s3_bucket, ...)`."""

    s3_bucket: str
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_region: str | None = None
    host: str | None = None
    port: int | None = None
    endpoint_url: str | None = None
    aws_session_token: SecretStr | None = None
    signature_version: str | None = None
    maximum_chunk_size_gb: float | None = None
    server_side_assembly: bool | None = None

    @model_validator(mode="after")
    def _host_has_no_scheme(self) -> _S3Params:
        if self.host and self.host.startswith(("http:", "https:")):
            # Quay raises the same: host is a bare name; endpoint_url takes URLs.
            raise ValueError("host: must not start with http:// or https:// (use endpoint_url)")
        if (self.s3_access_key is None) != (self.s3_secret_key is None):
            raise ValueError("s3_access_key and s3_secret_key go together")
        return self


class S3StorageParams(_S3Params):
    family: ClassVar[str] = "s3"


class STSS3StorageParams(DriverParams):
    """`STSS3Storage`: AssumeRole with `sts_role_arn`, then S3."""

    family: ClassVar[str] = "s3"
    s3_bucket: str
    sts_role_arn: str | None = None
    sts_user_access_key: SecretStr | None = None
    sts_user_secret_key: SecretStr | None = None
    s3_region: str | None = None
    endpoint_url: str | None = None
    signature_version: str | None = None
    maximum_chunk_size_gb: float | None = None
    server_side_assembly: bool | None = None


class CloudFrontedS3StorageParams(_S3Params):
    """`CloudFrontedS3Storage`: S3 for writes, CloudFront-signed URLs for downloads."""

    family: ClassVar[str] = "s3"
    cloudfront_distribution_domain: str
    cloudfront_key_id: str
    cloudfront_privatekey_filename: str
    cloudfront_distribution_org_overrides: dict[str, Any] | None = None


class CloudFlareStorageParams(_S3Params):
    """`CloudFlareS3Storage`: S3 for writes, a Cloudflare domain for downloads."""

    family: ClassVar[str] = "s3"
    cloudflare_domain: str


class AkamaiS3StorageParams(_S3Params):
    """`AkamaiS3Storage`: S3 for writes, Akamai EdgeAuth-signed downloads."""

    family: ClassVar[str] = "s3"
    akamai_domain: str
    akamai_shared_secret: SecretStr
    s3_region: str | None = None


class MultiCDNStorageParams(BaseModel):
    """`MultiCDNStorage`: one S3 bucket (`storage_config`) behind several CDN providers."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    family: ClassVar[str] = "multicdn"
    storage_config: S3StorageParams
    providers: dict[str, list[Any]]
    default_provider: str
    rules: list[dict[str, Any]] = []

    @property
    def storage_path(self) -> str:
        return self.storage_config.storage_path

    @model_validator(mode="after")
    def _providers_known(self) -> MultiCDNStorageParams:
        if self.default_provider not in self.providers:
            raise ValueError(f"default_provider: {self.default_provider!r} is not in providers")
        for name, spec in self.providers.items():
            if not spec or spec[0] not in _CDN_PROVIDERS:
                known = ", ".join(sorted(_CDN_PROVIDERS))
                raise ValueError(f"provider {name!r}: the provider must be one of {known}")
        for rule in self.rules:
            unknown = set(rule) - {"namespace", "continent", "host", "target"}
            if unknown:
                raise ValueError(f"rules: unknown rule key(s) {', '.join(sorted(unknown))}")
            if rule.get("target") not in self.providers:
                raise ValueError(f"rules: target {rule.get('target')!r} is not in providers")
        return self


_CDN_PROVIDERS = {"CloudFrontedS3Storage", "CloudFlareStorage", "AkamaiS3Storage"}


class GoogleCloudStorageParams(DriverParams):
    """`GoogleCloudStorage`: the S3-interoperable API with HMAC keys."""

    family: ClassVar[str] = "gcs"
    access_key: SecretStr
    secret_key: SecretStr
    bucket_name: str
    boto_timeout: float | None = None
    signature_version: str | None = None


class RadosGWStorageParams(DriverParams):
    """`RadosGWStorage` (and `RHOCSStorage`, the same constructor)."""

    family: ClassVar[str] = "s3"
    hostname: str
    is_secure: bool
    access_key: SecretStr
    secret_key: SecretStr
    bucket_name: str
    port: int | None = None
    region_name: str | None = None
    signature_version: str | None = None
    server_side_assembly: bool | None = None
    minimum_chunk_size_mb: int | None = None
    maximum_chunk_size_mb: int | None = None


class IBMCloudStorageParams(DriverParams):
    """`IBMCloudStorage`: IBM COS over the S3 API."""

    family: ClassVar[str] = "s3"
    hostname: str
    is_secure: bool
    access_key: SecretStr
    secret_key: SecretStr
    bucket_name: str
    port: int | None = None
    maximum_chunk_size_mb: int | None = None


class AzureStorageParams(DriverParams):
    """`AzureStorage`: a blob container, shared key or SAS token."""

    family: ClassVar[str] = "azure"
    azure_container: str
    azure_account_name: str
    azure_account_key: SecretStr | None = None
    sas_token: SecretStr | None = None
    connection_string: SecretStr | None = None
    endpoint_url: str | None = None


class SwiftStorageParams(DriverParams):
    """`SwiftStorage`: Keystone auth (v1, v2, or v3 with `os_options`), Swift API."""

    family: ClassVar[str] = "swift"
    swift_container: str
    auth_url: str
    swift_user: str
    swift_password: SecretStr
    auth_version: int | None = None
    os_options: dict[str, Any] | None = None
    ca_cert_path: str | None = None
    temp_url_key: SecretStr | None = None
    simple_path_concat: bool = False
    connect_timeout: float | None = None
    retry_count: int | None = None
    retry_on_ratelimit: bool = True

    @model_validator(mode="after")
    def _auth_version(self) -> SwiftStorageParams:
        if self.auth_version not in (None, 1, 2, 3):
            raise ValueError("auth_version: must be 1, 2 or 3")
        return self


class LocalStorageParams(DriverParams):
    """`LocalStorage`: a directory. Geo-replication cannot use it."""

    family: ClassVar[str] = "local"


# The one registry of storage driver names (Quay's STORAGE_DRIVER_CLASSES plus
# the drivers it adds in other modules).
DRIVERS: dict[str, type[BaseModel]] = {
    "LocalStorage": LocalStorageParams,
    "S3Storage": S3StorageParams,
    "STSS3Storage": STSS3StorageParams,
    "GoogleCloudStorage": GoogleCloudStorageParams,
    "RadosGWStorage": RadosGWStorageParams,
    "RHOCSStorage": RadosGWStorageParams,
    "IBMCloudStorage": IBMCloudStorageParams,
    "SwiftStorage": SwiftStorageParams,
    "CloudFrontedS3Storage": CloudFrontedS3StorageParams,
    "CloudFlareStorage": CloudFlareStorageParams,
    "AkamaiS3Storage": AkamaiS3StorageParams,
    "MultiCDNStorage": MultiCDNStorageParams,
    "AzureStorage": AzureStorageParams,
}


class StorageLocation(BaseModel):
    """One validated entry of `storage`: its driver name and parameters."""

    model_config = ConfigDict(frozen=True)
    name: str
    driver: str
    params: BaseModel
    source: str  # the file it came from: the trafficd config or Quay's config.yaml

    @property
    def family(self) -> Family:
        family: Family = self.params.family  # type: ignore[attr-defined]
        return family
