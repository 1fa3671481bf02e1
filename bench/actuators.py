"""Benchmark: time from an actuator's `apply()` call to the change being visible.

Run: .venv/bin/python bench/actuators.py [--changes 50]
Needs BIND 9 (`named`, `tsig-keygen`) and HAProxy from Debian, as `.ci/run` installs.

Starts the same real peers as the contract test (tests/peers.py) on loopback,
then alternates draining and restoring site eu, `--changes` times per backend:
- rfc2136: `apply()` sends the TSIG-signed update to BIND; visible when a plain
  UDP query for the global name no longer (or again) answers eu's address;
- haproxy: `apply()` sends the runtime API commands; visible when `show
  servers state` on a separate connection reports eu's new admin state.
Prints p50/p99/max in milliseconds. Target (issue 5): p99 under 50 ms for both.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.peers import HAProxyPeer, Named
from trafficd.actuators import build
from trafficd.actuators.base import Actuator, Desired, DesiredSite
from trafficd.config.model import HAProxyActuator, RFC2136Actuator
from trafficd.model import Cause, State

ADDRESSES = {"us": "192.0.2.10", "eu": "192.0.2.20"}


def targets(eu_active: bool) -> Desired:
    out = {}
    for name, address in ADDRESSES.items():
        active = eu_active or name == "us"
        out[name] = DesiredSite(
            name=name,
            state=State.ACTIVE if active else State.DRAINED,
            cause=None if active else Cause.STORAGE,
            weight=100 if active else 0,
            configured_weight=100,
            addresses=(address,),
            haproxy=("quay", name),
        )
    return out


async def measure(
    actuator: Actuator[Any, Any], visible: Callable[[bool], bool], changes: int
) -> list[float]:
    """Milliseconds from apply() to `visible(eu_active)` holding, per change."""
    out = []
    eu_active = True
    for _ in range(changes):
        eu_active = not eu_active
        desired = targets(eu_active)
        plan = actuator.plan(await actuator.read(), desired)
        assert not plan.empty, "each change must change something"
        start = time.perf_counter()
        await actuator.apply(plan)
        while not visible(eu_active):
            await asyncio.sleep(0)
        out.append((time.perf_counter() - start) * 1000)
    return out


def report(name: str, samples: list[float]) -> None:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    print(
        f"{name:8s} changes={len(samples):3d}  p50={q[49]:6.2f} ms  p99={q[98]:6.2f} ms  "
        f"max={max(samples):6.2f} ms  (target p99 < 50 ms: "
        f"{'met' if q[98] < 50 else 'MISSED'})"
    )


async def main(changes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        named = Named(Path(tmp))
        peer = HAProxyPeer(Path(tmp))
        named.start()
        peer.start_backends()
        peer.start()
        try:
            bind = build(RFC2136Actuator.model_validate(named.rfc2136_section(named.secret)))
            lb = build(
                HAProxyActuator.model_validate(
                    {"type": "haproxy", "id": "lb", "sockets": [peer.admin_socket]}
                )
            )
            runs: list[tuple[str, Actuator[Any, Any], Callable[[bool], bool]]] = [
                ("rfc2136", bind, lambda up: (ADDRESSES["eu"] in named.addresses()) == up),
                ("haproxy", lb, lambda up: (peer.admin_states()["eu"] == 0) == up),
            ]
            for name, actuator, visible in runs:
                await measure(actuator, visible, 4)  # warm-up: connections, caches
                report(name, await measure(actuator, visible, changes))
                await actuator.close()
        finally:
            named.stop()
            peer.stop_all()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50)
    asyncio.run(main(parser.parse_args().changes))
