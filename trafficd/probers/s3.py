"""The S3-family storage prober (aiobotocore): every driver whose bucket speaks the S3 API.

Implements `base.StorageBackend` for S3Storage, STSS3Storage, the CDN-fronted
drivers (the CDN only serves downloads; the bucket underneath is probed),
MultiCDNStorage, GoogleCloudStorage (HMAC interoperability keys),
RadosGWStorage, RHOCSStorage and IBMCloudStorage. Endpoints follow Quay's
rules (its storage drivers' endpoint logic); uploads carry `ServerSideEncryption: AES256`
exactly where Quay's driver sends it, since buckets that require SSE reject
anything else.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import botocore.exceptions
from aiobotocore.session import get_session
from botocore.config import Config as BotoConfig
from pydantic import BaseModel, SecretStr

from trafficd.config.storage import (
    GoogleCloudStorageParams,
    IBMCloudStorageParams,
    MultiCDNStorageParams,
    RadosGWStorageParams,
    StorageLocation,
    STSS3StorageParams,
    _S3Params,
)
from trafficd.probers.base import StepError

AUTH_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "ExpiredToken",
        "InvalidToken",
        "AuthorizationHeaderMalformed",
        "InvalidClientTokenId",
    }
)
STS_REFRESH_MARGIN = 300.0  # seconds before expiry when assumed-role keys are renewed


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


@dataclass(frozen=True)
class S3Target:
    bucket: str
    storage_path: str
    endpoint_url: str | None
    region: str
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    signature_version: str = "s3v4"
    sse: bool = False
    path_style: bool = True
    sts_role_arn: str | None = None

    def __repr__(self) -> str:  # keys never reach a log line
        return f"S3Target(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"


def _host_url(hostname: str, port: int | None, secure: bool) -> str:
    scheme = "https" if secure else "http"
    return f"{scheme}://{hostname}" + (f":{port}" if port else "")


def s3_target(location: StorageLocation, endpoint_override: str | None = None) -> S3Target:
    """Quay's endpoint and credential rules for each S3-family driver."""
    params: BaseModel = location.params
    if isinstance(params, MultiCDNStorageParams):
        params = params.storage_config
    if isinstance(params, _S3Params):
        if params.s3_region:  # Quay ignores endpoint_url when a region is set
            endpoint: str | None = f"https://s3.{params.s3_region}.amazonaws.com"
        elif params.endpoint_url:
            endpoint = params.endpoint_url
        elif params.host:
            endpoint = _host_url(params.host, params.port, True)
        else:
            endpoint = None
        target = S3Target(
            bucket=params.s3_bucket,
            storage_path=params.storage_path,
            endpoint_url=endpoint,
            region=params.s3_region or "us-east-1",
            access_key=_secret(params.s3_access_key),
            secret_key=_secret(params.s3_secret_key),
            session_token=_secret(params.aws_session_token),
            signature_version=params.signature_version or "s3v4",
            sse=True,
            path_style=endpoint is not None and not params.s3_region,
        )
    elif isinstance(params, STSS3StorageParams):
        target = S3Target(
            bucket=params.s3_bucket,
            storage_path=params.storage_path,
            endpoint_url=params.endpoint_url,
            region=params.s3_region or "us-east-1",
            access_key=_secret(params.sts_user_access_key),
            secret_key=_secret(params.sts_user_secret_key),
            signature_version=params.signature_version or "s3v4",
            sse=True,
            path_style=params.endpoint_url is not None,
            sts_role_arn=params.sts_role_arn,
        )
    elif isinstance(params, GoogleCloudStorageParams):
        target = S3Target(
            bucket=params.bucket_name,
            storage_path=params.storage_path,
            endpoint_url="https://storage.googleapis.com",
            region="auto",
            access_key=params.access_key.get_secret_value(),
            secret_key=params.secret_key.get_secret_value(),
            signature_version=params.signature_version or "s3v4",
        )
    elif isinstance(params, RadosGWStorageParams | IBMCloudStorageParams):
        region = getattr(params, "region_name", None) or "us-east-1"
        target = S3Target(
            bucket=params.bucket_name,
            storage_path=params.storage_path,
            endpoint_url=_host_url(params.hostname, params.port, params.is_secure),
            region=region,
            access_key=params.access_key.get_secret_value(),
            secret_key=params.secret_key.get_secret_value(),
            signature_version=getattr(params, "signature_version", None) or "s3v4",
        )
    else:
        raise TypeError(f"{location.driver} is not an S3-family driver")
    if endpoint_override is not None:
        target = S3Target(
            **{**target.__dict__, "endpoint_url": endpoint_override, "path_style": True}
        )
    return target


class S3Backend:
    """One bucket, one long-lived client (re-created when assumed-role keys expire)."""

    def __init__(
        self, location: StorageLocation, *, timeout: float, endpoint: str | None = None
    ) -> None:
        self.target = s3_target(location, endpoint)
        self.timeout = timeout
        self._session = get_session()
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._expires = float("inf")

    def _config(self) -> BotoConfig:
        return BotoConfig(
            signature_version=self.target.signature_version,
            connect_timeout=self.timeout,
            read_timeout=self.timeout,
            retries={"total_max_attempts": 1},  # the probe loop is the retry
            s3={"addressing_style": "path" if self.target.path_style else "auto"},
        )

    async def _credentials(self) -> dict[str, str | None]:
        t = self.target
        if t.sts_role_arn is None:
            return {
                "aws_access_key_id": t.access_key,
                "aws_secret_access_key": t.secret_key,
                "aws_session_token": t.session_token,
            }
        async with self._session.create_client(
            "sts",
            endpoint_url=t.endpoint_url,
            region_name=t.region,
            aws_access_key_id=t.access_key,
            aws_secret_access_key=t.secret_key,
            config=self._config(),
        ) as sts:
            answer = await sts.assume_role(RoleArn=t.sts_role_arn, RoleSessionName="trafficd")
        creds = answer["Credentials"]
        self._expires = creds["Expiration"].timestamp()
        return {
            "aws_access_key_id": creds["AccessKeyId"],
            "aws_secret_access_key": creds["SecretAccessKey"],
            "aws_session_token": creds["SessionToken"],
        }

    async def client(self) -> Any:
        if self._client is not None and time.time() < self._expires - STS_REFRESH_MARGIN:
            return self._client
        await self.close()
        credentials = await self._credentials()
        stack = AsyncExitStack()
        self._client = await stack.enter_async_context(
            self._session.create_client(
                "s3",
                endpoint_url=self.target.endpoint_url,
                region_name=self.target.region,
                config=self._config(),
                **credentials,
            )
        )
        self._stack = stack
        return self._client

    async def put(self, key: str, data: bytes) -> None:
        extra = {"ServerSideEncryption": "AES256"} if self.target.sse else {}
        client = await self.client()
        await client.put_object(Bucket=self.target.bucket, Key=key, Body=data, **extra)

    async def get(self, key: str) -> bytes:
        client = await self.client()
        answer = await client.get_object(Bucket=self.target.bucket, Key=key)
        async with answer["Body"] as stream:
            data: bytes = await stream.read()
        return data

    async def delete(self, key: str) -> None:
        client = await self.client()
        await client.delete_object(Bucket=self.target.bucket, Key=key)

    async def exists(self, key: str) -> bool:
        client = await self.client()
        try:
            await client.head_object(Bucket=self.target.bucket, Key=key)
        except botocore.exceptions.ClientError as exc:
            # HEAD answers have no body: the code is the HTTP status.
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                return False
            raise
        return True

    async def reachable(self) -> None:
        client = await self.client()
        await client.head_bucket(Bucket=self.target.bucket)

    def classify(self, exc: BaseException) -> StepError | None:
        if isinstance(exc, botocore.exceptions.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"{code} (HTTP {status})"
            if code in AUTH_CODES or status in (401, 403):
                return StepError("auth", detail)
            return StepError("error", detail)
        if isinstance(exc, botocore.exceptions.FlexibleChecksumError):
            return StepError("compare", "the read failed its checksum")
        if isinstance(
            exc,
            botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError,
        ):
            return StepError("auth", "no credentials")
        if isinstance(
            exc, botocore.exceptions.ConnectTimeoutError | botocore.exceptions.ReadTimeoutError
        ):
            return StepError("timeout", type(exc).__name__)
        if isinstance(exc, botocore.exceptions.EndpointConnectionError):
            return StepError("connect", "could not connect to the endpoint")
        if isinstance(exc, botocore.exceptions.BotoCoreError):
            return StepError("error", type(exc).__name__)
        return None

    async def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            await stack.aclose()
