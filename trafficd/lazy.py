"""Backends named in the registration maps, imported when first used.

Beside the maps it serves (`probers.STORAGE_BACKENDS`, `actuators.ACTUATORS`,
`coordination.BACKENDS`): each maps a configuration name to `lazy("module:Class")`,
so a daemon pays the memory of an SDK only for the backends its configuration
names. The SDKs are the larger part of trafficd's memory: kubernetes_asyncio
about 34 MB, azure-storage-blob 18 MB, aiobotocore 8 MB, redis 6 MB (resident,
measured importing each on Python 3.11), against about 125 MB for everything.
"""

from __future__ import annotations

import importlib
from typing import Any


def lazy(target: str) -> Any:
    """A callable standing for `module:attr`: the first call imports it and calls it."""
    module, _, attr = target.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return resolve(target)(*args, **kwargs)

    call.target = target  # type: ignore[attr-defined]  # for the tests that resolve every entry
    call.__qualname__ = call.__name__ = attr
    call.__module__ = module
    return call


def resolve(target: str) -> Any:
    """What `module:attr` names (imported now if it was not)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
