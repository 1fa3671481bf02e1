"""Backends are imported when a configuration names them: every registered name resolves
to its class, and a daemon whose configuration names none of the heavy SDKs' backends
does not import them (the memory part of bench/failover.py's cost figure)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trafficd.actuators import ACTUATORS
from trafficd.coordination import BACKENDS
from trafficd.lazy import Lazy
from trafficd.probers import STORAGE_BACKENDS

HEAVY = ["aiobotocore", "asyncpg", "azure", "botocore", "kubernetes_asyncio", "redis"]


@pytest.mark.parametrize(
    "entry",
    [*STORAGE_BACKENDS.values(), *ACTUATORS.values(), *BACKENDS.values()],
    ids=lambda e: e.import_path,
)
def test_every_registered_name_resolves_to_its_class(entry: object) -> None:
    assert isinstance(entry, Lazy)
    cls = entry.resolve()
    assert isinstance(cls, type)
    assert f"{cls.__module__}:{cls.__name__}" == entry.import_path


def test_a_daemon_imports_only_the_sdks_its_configuration_names(tmp_path: Path) -> None:
    (tmp_path / "loc").mkdir()
    conf = tmp_path / "c.yaml"
    conf.write_text(
        textwrap.dedent(f"""\
        vantage: v
        state_dir: {tmp_path / "state"}
        storage:
          loc: [LocalStorage, {{storage_path: {tmp_path / "loc"}}}]
        sites:
          one: {{url: 'http://q.example.com', connect: '127.0.0.1:1', storage: [loc],
                 addresses: [192.0.2.1], haproxy: {{backend: q, server: one}}}}
          two: {{url: 'http://q.example.com', connect: '127.0.0.1:2', storage: [loc],
                 addresses: [192.0.2.2], haproxy: {{backend: q, server: two}}}}
        actuators:
          - type: haproxy
            socket: {tmp_path / "haproxy.sock"}
        """)
    )
    script = textwrap.dedent(f"""
        import asyncio, sys
        from trafficd.actuators import build
        from trafficd.actuators.base import BuildContext
        from trafficd.config import load
        from trafficd.daemon import Daemon
        from trafficd.probers.quay import make_session
        from trafficd.probers.schedule import probe_tasks

        config = load({str(conf)!r})
        async def main():
            daemon = Daemon({str(conf)!r}, config)
            async with make_session() as session:
                tasks, _ = probe_tasks(config, session)
                assert len(tasks) == 5, tasks
                for section in config.actuators:
                    build(section, BuildContext(sites=config.sites, metrics=daemon.metrics))
        asyncio.run(main())
        print(" ".join(sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))))
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == []
    # and the same process does import one when it is needed
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from trafficd.probers import STORAGE_BACKENDS as B; "
            "import pkgutil; pkgutil.resolve_name(B['S3Storage'].import_path); "
            "print('aiobotocore' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == "True"
