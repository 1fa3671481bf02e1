"""Test-wide settings: deterministic hypothesis, and the `peers` tier kept honest.

Tests stay deterministic: the same examples run on every machine and every run,
and no example saved by an earlier run (of an older strategy) is replayed.

A test that starts a real server (or runs one of its tools) is marked `peers`;
`pytest -m "not peers"` is the fast tier that needs nothing beyond the Python
environment. A test without the mark that starts one anyway fails at once, naming
the program, in every session (CI's full run included), so a forgotten mark
cannot slip into the fast tier. The programs are `tests.peers.PEER_PROGRAMS`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Generator
from typing import Any

import pytest
from hypothesis import settings

from tests.peers import peer_program

settings.register_profile("trafficd", derandomize=True, database=None)
settings.load_profile("trafficd")

_unmarked: list[str] = []  # the node id of the running test when it is not marked peers
_popen_init = subprocess.Popen.__init__


def _guarded_init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
    if _unmarked and (program := peer_program(args)) is not None:
        raise RuntimeError(
            f"{_unmarked[0]} starts {program!r}, a real server or its tool, but is not "
            "marked peers: add `pytestmark = pytest.mark.peers` to its module"
        )
    _popen_init(self, args, *rest, **kwargs)


subprocess.Popen.__init__ = _guarded_init  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    # Setup, call and teardown alike: a module- or session-scoped fixture that starts
    # a server runs inside the first test that needs it.
    if item.get_closest_marker("peers") is None:
        _unmarked.append(item.nodeid)
    try:
        return (yield)
    finally:
        _unmarked.clear()
