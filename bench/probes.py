"""Benchmark: the Quay endpoint prober against N local health servers, beside blackbox_exporter.

Run: .venv/bin/python bench/probes.py [--sites 10 100 500] [--duration 30] [--interval 1]
Needs the Debian package prometheus-blackbox-exporter for the comparison
(skipped with a message when it is absent).

For each N it starts N health endpoints (Quay's body) in a separate process,
then probes every endpoint once per interval for `duration` seconds:
1. with trafficd's QuayProber (one shared session, the daemon's own scheduler:
   jittered starts on its grid) and prints probes/s, CPU seconds per 1,000
   probes of this process, p50/p99 latency and peak RSS;
2. through blackbox_exporter's /probe endpoint (module http_2xx) at the same
   rate, and prints the exporter's own CPU seconds per 1,000 probes, read from
   /proc/PID/stat, and the ratio.
Targets: CPU per probe no more than blackbox_exporter's; 500 sites at 1 s on
one core with p99 under 50 ms on loopback.

Then the registry prober (a whole synthetic pull: /v2/, token, manifest HEAD
and GET, blob redirect, presigned S3 read, digest) against a local
docker-registry (Debian package, htpasswd auth) on a moto S3 server, with
`--registry-sites` probers at the same interval: pulls/s, CPU seconds per
1,000 pulls of this process, p50/p99. moto (a Python S3 server) and the
registry run in their own processes and are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from trafficd.config.model import Probes, RegistryProbe, Site
from trafficd.model import Observation, Probe
from trafficd.probers.quay import QuayProber, SiteEndpoint, make_session
from trafficd.probers.registry import RegistryProber
from trafficd.probers.schedule import ProbeTask, run_probe_loop

ROOT = Path(__file__).resolve().parents[1]

SERVER = r"""
import asyncio, json, sys
from aiohttp import web
BODY = json.dumps({"data": {"services": {"auth": True, "database": True, "redis": True,
                   "storage": True}}, "status_code": 200}).encode()
async def health(request):
    return web.Response(body=BODY, content_type="application/json")
async def main(ports):
    app = web.Application()
    app.router.add_get("/health/endtoend", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for port in ports:
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main([int(p) for p in sys.argv[1:]]))
"""

BLACKBOX_CONFIG = """
modules:
  http_2xx:
    prober: http
    timeout: 1s
    http:
      preferred_ip_protocol: ip4
"""


def free_ports(n: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
        ports.append(s.getsockname()[1])
    for s in sockets:
        s.close()
    return ports


def cpu_of(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_loops(
    n: int, duration: float, interval: float, probe_one: Callable[[int], Awaitable[float | None]]
) -> list[float]:
    """Each site probed once per interval by the daemon's own scheduler (jittered starts on
    its grid, probers/schedule.py) for `duration` seconds; returns latencies."""
    latencies: list[float] = []

    def task(i: int) -> ProbeTask:
        async def run() -> Observation:
            latency = await probe_one(i)
            if latency is not None:
                latencies.append(latency)
            return Observation(
                t=time.time(),
                vantage="bench",
                probe=Probe.ENDTOEND,
                subject=f"s{i}",
                ok=latency is not None,
            )

        return ProbeTask(f"bench/{i}", Probe.ENDTOEND, f"s{i}", interval, run)

    loops = [
        asyncio.create_task(run_probe_loop(task(i), lambda obs: None, vantage="bench"))
        for i in range(n)
    ]
    await asyncio.sleep(duration)
    for loop in loops:
        loop.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    return latencies


async def bench_trafficd(ports: list[int], duration: float, interval: float) -> dict[str, float]:
    probes = Probes(interval=f"{interval}s", timeout=f"{interval * 0.9}s")
    async with make_session(limit=len(ports) + 10) as session:
        probers = [
            QuayProber(
                SiteEndpoint.from_site(
                    f"s{i}", Site(url="http://quay.example.com", connect=f"127.0.0.1:{p}")
                ),
                probes,
                session,
                vantage="bench",
            )
            for i, p in enumerate(ports)
        ]
        failures = 0

        async def probe_one(i: int) -> float | None:
            nonlocal failures
            obs = await probers[i].probe(Probe.ENDTOEND)
            if not obs.ok:
                failures += 1
            return obs.latency

        cpu0, t0 = self_cpu(), time.monotonic()
        latencies = await run_loops(len(ports), duration, interval, probe_one)
        cpu, wall = self_cpu() - cpu0, time.monotonic() - t0
    return summary(latencies, cpu, wall, failures)


async def bench_blackbox(
    exporter: str, ports: list[int], duration: float, interval: float
) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "blackbox.yml"
        config.write_text(BLACKBOX_CONFIG)
        port = free_ports(1)[0]
        proc = subprocess.Popen(
            [exporter, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            connector = aiohttp.TCPConnector(limit=len(ports) + 10)
            async with aiohttp.ClientSession(connector=connector) as session:
                for _ in range(100):
                    try:
                        async with session.get(base + "/-/healthy") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
                failures = 0

                async def probe_one(i: int) -> float | None:
                    nonlocal failures
                    target = f"http://127.0.0.1:{ports[i]}/health/endtoend"
                    start = time.perf_counter()
                    async with session.get(
                        base + "/probe", params={"target": target, "module": "http_2xx"}
                    ) as r:
                        text = await r.text()
                    if "probe_success 1" not in text:
                        failures += 1
                    return time.perf_counter() - start

                cpu0, t0 = cpu_of(proc.pid), time.monotonic()
                latencies = await run_loops(len(ports), duration, interval, probe_one)
                cpu, wall = cpu_of(proc.pid) - cpu0, time.monotonic() - t0
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return summary(latencies, cpu, wall, failures)


async def bench_registry(n: int, duration: float, interval: float) -> dict[str, float]:
    """`n` registry probers (one per simulated site) pulling from one local registry."""
    sys.path.insert(0, str(ROOT))  # the registry test peer lives with the tests
    from tests.peers import moto_server
    from tests.probers.registry_peer import PASSWORD, USER, Layout, Registry
    from tests.probers.test_s3 import create_bucket

    with tempfile.TemporaryDirectory() as tmp, moto_server(Path(tmp)) as moto:
        await create_bucket(moto, "registry")
        registry = await Registry(Path(tmp) / "registry", moto, auth="htpasswd").start()
        try:
            layout = Layout(Path(tmp) / "layout")
            layout.tag("latest", layout.image("amd64", "bench"))
            await registry.push(layout.root, "latest")
            site = Site(url="http://registry.example.test", connect=f"127.0.0.1:{registry.port}")
            settings = RegistryProbe.model_validate(
                {"repository": "trafficd/canary", "username": USER, "password": PASSWORD}
            )
            probes = Probes(interval=f"{interval}s", timeout=f"{interval * 0.9}s")
            async with make_session(limit=n + 10) as session:
                probers = [
                    RegistryProber(
                        SiteEndpoint.from_site(f"s{i}", site),
                        probes,
                        settings,
                        session,
                        vantage="b",
                    )
                    for i in range(n)
                ]
                failures = 0

                async def probe_one(i: int) -> float | None:
                    nonlocal failures
                    obs = await probers[i].probe()
                    if not obs.ok:
                        failures += 1
                    return obs.latency

                cpu0, t0 = self_cpu(), time.monotonic()
                latencies = await run_loops(n, duration, interval, probe_one)
                cpu, wall = self_cpu() - cpu0, time.monotonic() - t0
        finally:
            await registry.close()
    return summary(latencies, cpu, wall, failures)


def summary(latencies: list[float], cpu: float, wall: float, failures: int) -> dict[str, float]:
    latencies.sort()
    n = len(latencies)
    return {
        "probes": n,
        "per_s": n / wall,
        "cpu_per_1000": cpu / n * 1000 if n else float("nan"),
        "cpu_share": cpu / wall,
        "p50_ms": statistics.median(latencies) * 1000 if n else float("nan"),
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
        "failures": failures,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--registry-sites", type=int, nargs="*", default=[1, 10])
    args = parser.parse_args()
    exporter = shutil.which("prometheus-blackbox-exporter")
    print(
        f"{'who':>10} {'sites':>6} {'probes/s':>9} {'CPU s/1000':>11} {'CPU %':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'failed':>6} {'peak RSS MiB':>13}"
    )
    for n in args.sites:
        ports = free_ports(n)
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, *map(str, ports)], stdout=subprocess.PIPE, text=True
        )
        try:
            if server.stdout is None or server.stdout.readline().strip() != "ready":
                raise RuntimeError("the health servers did not start")
            ours = await bench_trafficd(ports, args.duration, args.interval)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"{'trafficd':>10} {n:>6} {ours['per_s']:>9.1f} {ours['cpu_per_1000']:>11.3f} "
                f"{ours['cpu_share'] * 100:>6.1f} {ours['p50_ms']:>7.2f} {ours['p99_ms']:>7.2f} "
                f"{ours['failures']:>6.0f} {rss:>13.1f}"
            )
            if exporter is None:
                print("  (prometheus-blackbox-exporter not installed: no comparison)")
                continue
            theirs = await bench_blackbox(exporter, ports, args.duration, args.interval)
            print(
                f"{'blackbox':>10} {n:>6} {theirs['per_s']:>9.1f} "
                f"{theirs['cpu_per_1000']:>11.3f} {theirs['cpu_share'] * 100:>6.1f} "
                f"{theirs['p50_ms']:>7.2f} {theirs['p99_ms']:>7.2f} {theirs['failures']:>6.0f}"
            )
            ratio = ours["cpu_per_1000"] / theirs["cpu_per_1000"]
            print(
                f"{'ratio':>10} {n:>6} trafficd CPU per probe / blackbox_exporter's = {ratio:.2f}"
            )
        finally:
            server.terminate()
            server.wait(timeout=10)
    for n in args.registry_sites:
        pulls = await bench_registry(n, args.duration, args.interval)
        print(
            f"{'registry':>10} {n:>6} {pulls['per_s']:>9.1f} {pulls['cpu_per_1000']:>11.3f} "
            f"{pulls['cpu_share'] * 100:>6.1f} {pulls['p50_ms']:>7.2f} {pulls['p99_ms']:>7.2f} "
            f"{pulls['failures']:>6.0f}   (a whole pull per probe)"
        )


if __name__ == "__main__":
    asyncio.run(main())
