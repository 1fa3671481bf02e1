"""Backends named in the registration maps, imported when first used.

Beside the maps it serves (`probers.STORAGE_BACKENDS`, `actuators.ACTUATORS`,
`coordination.BACKENDS`): each maps a configuration name to `lazy("module:Class")`,
so a daemon pays the memory of an SDK only for the backends its configuration
names. The SDKs are the larger part of trafficd's memory: kubernetes_asyncio
about 34 MB, azure-storage-blob 18 MB, aiobotocore 8 MB, redis 6 MB (resident,
measured importing each on Python 3.11), against about 125 MB for everything.
"""

from __future__ import annotations

import pkgutil
from typing import Any


def lazy(target: str) -> Any:
    """A callable standing for `module:attr`: each call resolves it (the first imports
    the module) and calls it. `.target` names it, for the tests that resolve every entry."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return pkgutil.resolve_name(target)(*args, **kwargs)

    call.target = target  # type: ignore[attr-defined]
    return call
