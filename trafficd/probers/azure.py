"""The Azure Blob storage prober (azure-storage-blob's async client).

Implements `base.StorageBackend` for `AzureStorage`: the container of
`azure_container`, reached at `endpoint_url` or
`https://{azure_account_name}.blob.core.windows.net`, with the shared key
or the SAS token of Quay's parameters.
"""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob.aio import BlobServiceClient

from trafficd.config.storage import AzureStorageParams, StorageLocation
from trafficd.probers.base import StepError


class AzureBackend:
    def __init__(
        self, location: StorageLocation, *, timeout: float, endpoint: str | None = None
    ) -> None:
        params = location.params
        assert isinstance(params, AzureStorageParams)
        account = params.azure_account_name
        url = endpoint or params.endpoint_url or f"https://{account}.blob.core.windows.net"
        credential: Any
        if params.azure_account_key is not None:
            credential = {
                "account_name": account,
                "account_key": params.azure_account_key.get_secret_value(),
            }
        elif params.sas_token is not None:
            credential = params.sas_token.get_secret_value()
        else:
            credential = None
        if params.connection_string is not None and endpoint is None and not params.endpoint_url:
            self._service = BlobServiceClient.from_connection_string(
                params.connection_string.get_secret_value(),
                connection_timeout=timeout,
                read_timeout=timeout,
                retry_total=0,
            )
        else:
            self._service = BlobServiceClient(
                account_url=url,
                credential=credential,
                connection_timeout=timeout,
                read_timeout=timeout,
                retry_total=0,
            )
        self._container = self._service.get_container_client(params.azure_container)

    async def put(self, key: str, data: bytes) -> None:
        await self._container.upload_blob(key, data, overwrite=True)

    async def get(self, key: str) -> bytes:
        stream = await self._container.download_blob(key)
        data: bytes = await stream.readall()
        return data

    async def delete(self, key: str) -> None:
        await self._container.delete_blob(key)

    async def exists(self, key: str) -> bool:
        found: bool = await self._container.get_blob_client(key).exists()
        return found

    async def reachable(self) -> None:
        await self._container.get_container_properties()

    def classify(self, exc: BaseException) -> StepError | None:
        code = getattr(exc, "error_code", None)  # set by azure-core, not declared
        if isinstance(exc, ClientAuthenticationError):
            return StepError("auth", f"{code or 'AuthenticationFailed'} (HTTP {exc.status_code})")
        if isinstance(exc, HttpResponseError):
            code = code or "Error"
            if exc.status_code in (401, 403):
                return StepError("auth", f"{code} (HTTP {exc.status_code})")
            return StepError("error", f"{code} (HTTP {exc.status_code})")
        if isinstance(exc, ServiceRequestError):
            return StepError("connect", "could not connect to the endpoint")
        if isinstance(exc, ServiceResponseError):
            return StepError("error", "the connection broke during the response")
        return None

    async def close(self) -> None:
        await self._service.close()
