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


class Lazy:
    """A callable standing for `module:attr` (its `import_path`): each call resolves it
    (the first imports the module) and calls it."""

    __slots__ = ("import_path",)

    def __init__(self, import_path: str) -> None:
        self.import_path = import_path

    def resolve(self) -> Any:
        return pkgutil.resolve_name(self.import_path)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


def lazy(import_path: str) -> Any:
    """A `Lazy` for `module:attr`, typed as whatever the map it enters holds (a factory
    Protocol, a class): the map's own type is what mypy checks callers against."""
    return Lazy(import_path)
