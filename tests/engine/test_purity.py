"""The engine is pure: it imports no I/O, no asyncio, no clock, no prober or actuator."""

from __future__ import annotations

import ast
from pathlib import Path

import trafficd.engine

FORBIDDEN = (
    "asyncio",
    "aiohttp",
    "time",
    "datetime",
    "socket",
    "os",
    "subprocess",
    "random",
    "trafficd.probers",
    "trafficd.actuators",
    "trafficd.runtime",
    "trafficd.api",
)


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_engine_modules_import_nothing_impure() -> None:
    package = Path(trafficd.engine.__file__).parent
    files = sorted(package.glob("*.py"))
    assert len(files) >= 3
    for path in files:
        for name in imported_modules(path):
            for bad in FORBIDDEN:
                assert name != bad and not name.startswith(bad + "."), f"{path.name} imports {name}"
