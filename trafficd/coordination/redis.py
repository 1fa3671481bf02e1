"""The Redis backend (redis-py's asyncio client): the Redis a geo-replicated Quay shares.

Implements `base.SharedStore`. The lock is `SET NX PX` semantics in one Lua script
that also takes the next value of a counter (`INCR`) as the fencing token, so
acquiring and numbering cannot be separated; the counter is first raised to the
client's `highest_token` if it is lower (a Redis that restarted empty has none,
base.py); renewing is a compare-and-PEXPIRE,
a fenced write a compare-and-SET, an override's expiry a compare-and-DEL, all
scripts (atomic on the server). The lock's value is `holder|token`.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from trafficd.coordination.base import SharedStoreError, TokenMemory

_CAMPAIGN = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local holder, token = string.match(cur, '^(.*)|(%d+)$')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
  return false
end
local counter = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if counter < tonumber(ARGV[3]) then
  redis.call('SET', KEYS[2], ARGV[3])
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. token, 'PX', ARGV[2])
return token
"""
_FENCED_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
"""
_DELETE_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisStore(TokenMemory):
    def __init__(self, urls: list[str], *, timeout: float) -> None:
        # One endpoint: Redis replicas do not take writes (Sentinel is left for later).
        self.url = urls[0]
        self._client: Any = aioredis.from_url(
            self.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            retry_on_timeout=False,
        )
        self._campaign = self._client.register_script(_CAMPAIGN)
        self._fenced = self._client.register_script(_FENCED_SET)
        self._resign = self._client.register_script(_RESIGN)
        self._delete_if = self._client.register_script(_DELETE_IF)

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except (RedisError, OSError) as exc:
            raise SharedStoreError(f"redis {what}: {type(exc).__name__}") from None

    async def put(self, key: str, value: str, ttl: float | None = None) -> None:
        px = int(ttl * 1000) if ttl else None
        await self._call("SET", self._client.set(key, value, px=px))

    async def get(self, key: str) -> str | None:
        value: str | None = await self._call("GET", self._client.get(key))
        return value

    async def delete(self, key: str) -> None:
        await self._call("DEL", self._client.delete(key))

    async def delete_if(self, key: str, value: str) -> bool:
        done = await self._call("compare-and-DEL", self._delete_if(keys=[key], args=[value]))
        return bool(done)

    async def scan(self, prefix: str) -> dict[str, str]:
        async def read() -> dict[str, str]:
            keys = [k async for k in self._client.scan_iter(match=_glob(prefix) + "*", count=500)]
            if not keys:
                return {}
            values = await self._client.mget(keys)
            return {k: v for k, v in zip(keys, values, strict=True) if v is not None}

        result: dict[str, str] = await self._call("SCAN", read())
        return result

    async def campaign(self, lock: str, holder: str, ttl: float) -> int | None:
        args: list[str | int] = [holder, int(ttl * 1000), self.highest_token]
        token = await self._call(
            "campaign", self._campaign(keys=[lock, lock + ":epoch"], args=args)
        )
        if not token:
            return None
        return self.seen(int(token))

    async def holder(self, lock: str) -> tuple[str, int] | None:
        value = await self.get(lock)
        if value is None or "|" not in value:
            return None
        name, _, token = value.rpartition("|")
        return name, self.seen(int(token))

    async def fenced_put(self, lock: str, holder: str, token: int, key: str, value: str) -> bool:
        done = await self._call(
            "fenced SET", self._fenced(keys=[lock, key], args=[f"{holder}|{token}", value])
        )
        return bool(done)

    async def resign(self, lock: str, holder: str, token: int) -> None:
        await self._call("resign", self._resign(keys=[lock], args=[f"{holder}|{token}"]))

    async def close(self) -> None:
        await self._client.aclose()


def _glob(prefix: str) -> str:
    """`prefix` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
