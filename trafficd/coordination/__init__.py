"""Coordination of several trafficd instances: the shared stores by name, and the coordinator.

`BACKENDS` maps each `coordination.backend` name (the same names the config
accepts) to its `SharedStore` class; `none` has no entry: a single instance keeps
everything in its own state_dir. See coordinator.py for how the instances
share observations, elect a leader and continue each other's work. A backend's
client library is imported when a configuration first names it (`trafficd.lazy`).
"""

from __future__ import annotations

from typing import Protocol

from trafficd.coordination.base import SharedStore, SharedStoreError
from trafficd.coordination.coordinator import Coordinator
from trafficd.lazy import lazy


class SharedStoreFactory(Protocol):
    def __call__(self, urls: list[str], *, timeout: float) -> SharedStore: ...


BACKENDS: dict[str, SharedStoreFactory] = {
    "redis": lazy("trafficd.coordination.redis:RedisStore"),
    "etcd": lazy("trafficd.coordination.etcd:EtcdStore"),
}

__all__ = ["BACKENDS", "Coordinator", "SharedStore", "SharedStoreError"]
