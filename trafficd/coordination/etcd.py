"""The etcd v3 backend, through etcd's JSON gateway over aiohttp.

Implements `base.SharedStore` for operators who want consensus across three
regions. The gateway (`/v3/kv/*`, `/v3/lease/*`, base64 keys and values) is
part of every etcd server, so no gRPC client is needed; each URL of
`coordination.urls` is tried in turn. The lock is a key created in a
transaction only if absent (`create_revision == 0`), attached to a lease of
`ttl` seconds that renewing keeps alive; its value is `holder|token`. The
fencing token is one more than the largest of a counter key beside the lock
(`<lock>:epoch`), the client's `highest_token` and the store's revision, and
the same transaction writes it to the counter, comparing the counter unchanged.
(It was the lock's create revision: an etcd that restarted empty numbers its
revisions from 1 again, base.py. The revision stays in the maximum so that a
token is still larger than an older trafficd's, numbered by revision.) A fenced
write is a transaction comparing the lock's value, a compare-and-delete one
comparing the key's value. Keys written with a TTL share one lease per TTL,
refreshed on every put.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import aiohttp

from trafficd.coordination.base import SharedStoreError, TokenMemory


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _int(text: str) -> int:
    """A counter's value; an unreadable one counts as 0 (the other terms of the maximum
    still hold the token above every earlier one)."""
    try:
        return int(text)
    except ValueError:
        return 0


def _holder(kv: Mapping[str, Any]) -> tuple[str, int]:
    """The lock's holder and token: `holder|token`, or an older trafficd's value (the
    holder alone, numbered by the key's create revision)."""
    value = _unb64(kv.get("value", ""))
    name, bar, token = value.rpartition("|")
    if bar and token.isascii() and token.isdigit():
        return name, int(token)
    return value, int(kv["create_revision"])


def _range_end(prefix: str) -> str:
    """The key just past every key starting with `prefix` (etcd's prefix range)."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return base64.b64encode(b"\0").decode()
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


class EtcdStore(TokenMemory):
    def __init__(self, urls: list[str], *, timeout: float) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._leases: dict[int, str] = {}  # ttl seconds -> lease id, for keys with a TTL
        self._lock_lease: str | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last = "no endpoint"
        for url in self.urls:
            try:
                async with self._http().post(url + path, json=body) as resp:
                    doc = await resp.json(content_type=None)
                    if resp.status != 200:
                        message = (
                            doc.get("message") or doc.get("error") if isinstance(doc, dict) else ""
                        )
                        raise SharedStoreError(f"etcd {path}: HTTP {resp.status}: {message}")
                    return doc if isinstance(doc, dict) else {}
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                last = f"{url}: {type(exc).__name__}"
        raise SharedStoreError(f"etcd {path}: {last}")

    async def _lease(self, ttl: float) -> str:
        seconds = max(2, math.ceil(ttl))  # etcd's leases count whole seconds
        lease = self._leases.get(seconds)
        if lease is not None:
            answer = await self._post("/v3/lease/keepalive", {"ID": lease})
            if int(answer.get("result", {}).get("TTL", 0)) > 0:
                return lease
        granted = await self._post("/v3/lease/grant", {"TTL": seconds})
        self._leases[seconds] = str(granted["ID"])
        return self._leases[seconds]

    async def put(self, key: str, value: str, ttl: float | None = None) -> None:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if ttl:
            body["lease"] = await self._lease(ttl)
        await self._post("/v3/kv/put", body)

    async def _range(self, key: str, prefix: bool = False) -> list[dict[str, Any]]:
        body = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _range_end(key)
        kvs: list[dict[str, Any]] = (await self._post("/v3/kv/range", body)).get("kvs", [])
        return kvs

    async def get(self, key: str) -> str | None:
        kvs = await self._range(key)
        return _unb64(kvs[0].get("value", "")) if kvs else None

    async def delete(self, key: str) -> None:
        await self._post("/v3/kv/deleterange", {"key": _b64(key)})

    async def delete_if(self, key: str, value: str) -> bool:
        answer = await self._post(
            "/v3/kv/txn",
            {
                "compare": [
                    {"key": _b64(key), "target": "VALUE", "result": "EQUAL", "value": _b64(value)}
                ],
                "success": [{"request_delete_range": {"key": _b64(key)}}],
            },
        )
        return bool(answer.get("succeeded"))

    async def scan(self, prefix: str) -> dict[str, str]:
        return {
            _unb64(kv["key"]): _unb64(kv.get("value", "")) for kv in await self._range(prefix, True)
        }

    async def campaign(self, lock: str, holder: str, ttl: float) -> int | None:
        kvs = await self._range(lock)
        if kvs:
            kv = kvs[0]
            if _holder(kv)[0] != holder or kv.get("lease") != self._lock_lease:
                return None
            answer = await self._post("/v3/lease/keepalive", {"ID": self._lock_lease})
            if int(answer.get("result", {}).get("TTL", 0)) <= 0:
                return None  # expired meanwhile: the key goes with it
            return self.seen(_holder(kv)[1])
        counter = lock + ":epoch"
        read = await self._post("/v3/kv/range", {"key": _b64(counter)})
        found = read.get("kvs", [])
        seen = _int(_unb64(found[0].get("value", ""))) if found else 0
        revision = int(read.get("header", {}).get("revision", 0))
        token = max(seen, self.highest_token, revision) + 1
        granted = await self._post("/v3/lease/grant", {"TTL": max(2, math.ceil(ttl))})
        lease = str(granted["ID"])
        answer = await self._post(
            "/v3/kv/txn",
            {
                "compare": [
                    {
                        "key": _b64(lock),
                        "target": "CREATE",
                        "result": "EQUAL",
                        "create_revision": 0,
                    },
                    # Nobody numbered meanwhile (a counter never written has 0).
                    {
                        "key": _b64(counter),
                        "target": "MOD",
                        "result": "EQUAL",
                        "mod_revision": int(found[0]["mod_revision"]) if found else 0,
                    },
                ],
                "success": [
                    {
                        "request_put": {
                            "key": _b64(lock),
                            "value": _b64(f"{holder}|{token}"),
                            "lease": lease,
                        }
                    },
                    {"request_put": {"key": _b64(counter), "value": _b64(str(token))}},
                ],
            },
        )
        if not answer.get("succeeded"):
            await self._post("/v3/lease/revoke", {"ID": lease})
            return None
        self._lock_lease = lease
        return self.seen(token)

    async def holder(self, lock: str) -> tuple[str, int] | None:
        kvs = await self._range(lock)
        if not kvs:
            return None
        name, token = _holder(kvs[0])
        return name, self.seen(token)

    async def fenced_put(self, lock: str, holder: str, token: int, key: str, value: str) -> bool:
        # The value names the acquisition: no two acquisitions share a token.
        answer = await self._post(
            "/v3/kv/txn",
            {
                "compare": [
                    {
                        "key": _b64(lock),
                        "target": "VALUE",
                        "result": "EQUAL",
                        "value": _b64(f"{holder}|{token}"),
                    },
                ],
                "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}],
            },
        )
        return bool(answer.get("succeeded"))

    async def resign(self, lock: str, holder: str, token: int) -> None:
        if self._lock_lease is not None:
            await self._post("/v3/lease/revoke", {"ID": self._lock_lease})
            self._lock_lease = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
