"""The shared store's small interface (`SharedStore`), and what every one raises.

Beside the pipeline: the coordinator (coordinator.py) keeps the vantages'
observations, the leader's lease and the shared state in a store that every
trafficd instance reaches. A backend (`redis`, `etcd`) is a key-value store with
TTLs, one lease-backed lock whose holder gets a fencing token that only grows,
and writes fenced by that lock. Everything the coordinator needs is here.

A store that restarts empty (a cache-only Redis, an etcd whose data is gone)
would number from 1 again, and rfc2136's fence compares tokens for equality: a
stale former leader could hold the very token a new one is given. So every
client remembers the highest token it has been given or has read
(`highest_token`; the runtime keeps it in state.json across restarts), and an
acquisition sets the store's counter above it in the same atomic step. (Not a
token made of the store's generation and a counter: the generation is a random
id, unordered, written only after the election; nor a wall clock, which can step
back. What an instance has seen needs neither.)
"""

from __future__ import annotations

from typing import Protocol


class SharedStoreError(Exception):
    """The shared store could not be reached or refused; the message holds no secret.
    (The state file's own error is `trafficd.store.StateFileError`.)"""


class TokenMemory:
    """`SharedStore.highest_token`, kept the same way by every backend: raised by every
    token a client is given or reads (`seen`)."""

    highest_token = 0

    def seen(self, token: int) -> int:
        self.highest_token = max(self.highest_token, token)
        return token


class SharedStore(Protocol):
    # The highest fencing token this client was given (`campaign`) or read (`holder`),
    # or was told of by raising it (the runtime, from state.json): every acquisition
    # through this client gets a larger one, even from a store that restarted empty.
    highest_token: int

    async def put(self, key: str, value: str, ttl: float | None = None) -> None:
        """Set `key`; with `ttl`, it disappears `ttl` seconds after the last put."""

    async def get(self, key: str) -> str | None: ...

    async def delete(self, key: str) -> None: ...

    async def delete_if(self, key: str, value: str) -> bool:
        """Delete `key` only while it holds exactly `value` (compare-and-delete); False
        when it holds something else (or nothing)."""

    async def scan(self, prefix: str) -> dict[str, str]:
        """Every key under `prefix`, with its value."""

    async def campaign(self, lock: str, holder: str, ttl: float) -> int | None:
        """Take the lock or renew it for `ttl`: the fencing token while `holder` holds
        it (new on every acquisition, larger than every earlier one and than
        `highest_token`), else None."""

    async def holder(self, lock: str) -> tuple[str, int] | None:
        """Who holds the lock now, and its token."""

    async def fenced_put(self, lock: str, holder: str, token: int, key: str, value: str) -> bool:
        """Set `key` only while `holder` holds the lock with `token`; False otherwise."""

    async def resign(self, lock: str, holder: str, token: int) -> None: ...

    async def close(self) -> None: ...
