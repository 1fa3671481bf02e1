"""Benchmark: how fast trafficd fails over and back, and what watching many sites costs.

Run: .venv/bin/python bench/failover.py [--runs 20] [--sites 2,50,200] [--seconds 30]
Needs BIND 9 and HAProxy from Debian and the demo extra (moto, boto3).

Part 1, failover (the demo's deployment plus BIND and HAProxy, `interval: 1s`,
`fall: 3`, `rise: 3`): `--runs` times, eu's S3 server is stopped, then started
again (the repair is timed from when it answers again, its bucket recreated). For
each run it measures, from the moment of the failure: the first failed
probe (eu's storage observation in the audit log), the drain decision (the
transition event), BIND no longer answering eu's address, HAProxy taking eu's server
out (`show servers state`); and the same four for the recovery (first good probe,
restore decision, DNS answer back, HAProxy ready). Prints p50/p99 of each and the
overhead of the decision above its floor (`fall x interval` on failure, `rise x
interval` on recovery). Target: p99 overhead under 500 ms.

Part 2, cost: `trafficd run` watching N sites (N from `--sites`) at `interval: 1s`,
each site a health endpoint on loopback (one aiohttp process serves them all) with
its own LocalStorage location; prints the daemon's CPU share of one core and peak
RSS over `--seconds`. Target: 200 sites under 25% of a core and 150 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any

from trafficd.demo.__main__ import PY, Demo, answers, wait
from trafficd.demo.peers import free_port
from trafficd.store import read_events

INTERVAL, FALL, RISE = 1.0, 3, 3


def poll_until(check: Any, timeout: float = 60.0) -> float:
    end = time.time() + timeout
    while time.time() < end:
        if check():
            return time.time()
        time.sleep(0.005)
    raise SystemExit("bench: timed out")


def quantiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return q[49], q[98]


def failover(runs: int, base: Path) -> None:
    demo = Demo(base / "demo")
    try:
        demo.up(prometheus=False)
        config = json.loads(demo.config_path.read_text())
        for site in ("us", "eu"):
            # Instances stay up: this measures traffic failover, repeated many times.
            del config["sites"][site]["command"]
        config["probes"] = {"interval": "1s", "timeout": "800ms"}
        config["policy"] = {
            "fall": FALL,
            "rise": RISE,
            "hold_down": "0s",
            "max_drains": 100,
            "shutdown_grace": "60s",
        }
        config["actuators"] = [a for a in config["actuators"] if a["type"] != "command"]
        demo.config_path.write_text(json.dumps(config))
        demo.restart_trafficd()
        wait("both active", lambda: demo.state("us") == demo.state("eu") == "active")
        state_dir = Path(config["state_dir"])
        down: dict[str, list[float]] = {k: [] for k in ("probe", "decision", "dns", "haproxy")}
        up: dict[str, list[float]] = {k: [] for k in ("probe", "decision", "dns", "haproxy")}

        def first(since: float, kind: str, match: Any) -> float:
            def found() -> bool:
                return any(match(e) for e in read_events(state_dir, since) if e["kind"] == kind)

            poll_until(found)
            events = [e for e in read_events(state_dir, since) if e["kind"] == kind and match(e)]
            return min(float(e["t"]) for e in events)

        for run in range(runs):
            poll_until(lambda: "eu" in demo.dns() and demo.haproxy_admin()["eu"] == 0)
            time.sleep(INTERVAL * (run % 4) / 4)  # failures at different phases of the probe round
            t0 = time.time()
            demo.stop_s3("eu")
            dns = poll_until(lambda: "eu" not in demo.dns())
            lb = poll_until(lambda: demo.haproxy_admin()["eu"] != 0)
            probe = first(
                t0, "observation", lambda e: e.get("location") == "eustorage" and e["ok"] is False
            )
            decision = first(
                t0, "transition", lambda e: e["site"] == "eu" and e["to"] == "draining"
            )
            for key, t in (("probe", probe), ("decision", decision), ("dns", dns), ("haproxy", lb)):
                down[key].append(t - t0)
            demo.start_s3("eu")  # moto takes about a second to start; the bucket is recreated
            t1 = time.time()  # the repair: storage answers again
            dns = poll_until(lambda: "eu" in demo.dns())
            lb = poll_until(lambda: demo.haproxy_admin()["eu"] == 0)
            probe = first(
                t1, "observation", lambda e: e.get("location") == "eustorage" and e["ok"] is True
            )
            decision = first(t1, "transition", lambda e: e["site"] == "eu" and e["to"] == "active")
            for key, t in (("probe", probe), ("decision", decision), ("dns", dns), ("haproxy", lb)):
                up[key].append(t - t1)
            print(
                f"run {run + 1:2d}: drain decision {down['decision'][-1]:.2f}s, "
                f"DNS {down['dns'][-1]:.2f}s; back: decision {up['decision'][-1]:.2f}s, "
                f"DNS {up['dns'][-1]:.2f}s",
                flush=True,
            )
    finally:
        demo.down()

    print(
        f"\nfailover, {runs} runs, interval {INTERVAL:g}s, fall {FALL}, rise {RISE} "
        "(seconds from the storage failure / repair):"
    )
    for title, data, floor in (
        ("failure", down, FALL * INTERVAL),
        ("recovery", up, RISE * INTERVAL),
    ):
        print(f"  {title}: floor {floor:g}s")
        for key in ("probe", "decision", "dns", "haproxy"):
            p50, p99 = quantiles(data[key])
            print(f"    to {key:<9} p50 {p50:6.3f}s  p99 {p99:6.3f}s")
        over = [d - floor for d in data["decision"]]
        p50, p99 = quantiles(over)
        print(
            f"    decision overhead above the floor: p50 {p50 * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms (target p99 < 500 ms: "
            f"{'met' if p99 < 0.5 else 'MISSED'})"
        )
        # The floor assumes the first probe to see the change comes a whole interval
        # late; what trafficd adds is the decision after the probe completing the rounds.
        rounds = (FALL if title == "failure" else RISE) - 1
        own = [
            d - p - rounds * INTERVAL for d, p in zip(data["decision"], data["probe"], strict=True)
        ]
        p50, p99 = quantiles(own)
        print(
            f"    decision after the probe completing {rounds + 1} rounds: "
            f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
        )


HEALTH_SERVER = textwrap.dedent("""
    import sys
    from aiohttp import web
    ENDTOEND = {"data": {"services": {"auth": True, "database": True, "redis": True,
                "storage": True}}, "status_code": 200}
    INSTANCE = {"data": {"services": {"auth": True, "database": True}}, "status_code": 200}
    async def main():
        app = web.Application()
        app.router.add_get("/health/endtoend", lambda r: web.json_response(ENDTOEND))
        app.router.add_get("/health/instance", lambda r: web.json_response(INSTANCE))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        ports = []
        for _ in range(int(sys.argv[1])):
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            ports.append(site._server.sockets[0].getsockname()[1])
        print(" ".join(map(str, ports)), flush=True)
        import asyncio
        await asyncio.Event().wait()
    import asyncio
    asyncio.run(main())
""")


def cost(n: int, seconds: float, base: Path) -> None:
    work = base / f"cost-{n}"
    work.mkdir()
    # The server binds its own ports (port 0): picking free ports here would race.
    server = subprocess.Popen(
        [PY, "-c", HEALTH_SERVER, str(n)], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert server.stdout is not None
        ports = [int(p) for p in server.stdout.readline().split()]
        assert len(ports) == n
        for i in range(n):
            (work / f"loc{i}").mkdir()  # each site's LocalStorage location, healthy
        config = {
            "vantage": "bench",
            "listen": f"127.0.0.1:{free_port()}",
            "state_dir": str(work / "state"),
            "storage": {
                f"loc{i}": ["LocalStorage", {"storage_path": str(work / f"loc{i}")}]
                for i in range(n)
            },
            "sites": {
                f"site{i}": {
                    "url": "http://quay.bench.test",
                    "connect": f"127.0.0.1:{port}",
                    "storage": [f"loc{i}"],
                    "addresses": [f"10.0.{i // 250}.{i % 250 + 1}"],
                }
                for i, port in enumerate(ports)
            },
            "probes": {"interval": "1s", "timeout": "800ms"},
        }
        (work / "config.yaml").write_text(json.dumps(config))
        proc = subprocess.Popen(
            [PY, "-m", "trafficd.cli", "run", "-c", str(work / "config.yaml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait("trafficd", lambda: answers(f"http://{config['listen']}/readyz"))
            time.sleep(3)  # past start-up
            ticks = os.sysconf("SC_CLK_TCK")

            def cpu() -> tuple[float, float]:
                """(user, system) seconds of the daemon."""
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                return int(fields[11]) / ticks, int(fields[12]) / ticks

            (u0, s0), t0 = cpu(), time.monotonic()
            time.sleep(seconds)
            (u1, s1), wall = cpu(), time.monotonic() - t0
            user, system = (u1 - u0) / wall, (s1 - s0) / wall
            share = user + system
            hwm = next(
                line
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                if line.startswith("VmHWM")
            )
            rss_mb = int(hwm.split()[1]) / 1024
            # A prober that fails is cheap or dear for the wrong reason: every probe must pass.
            with urllib.request.urlopen(f"http://{config['listen']}/metrics", timeout=5) as r:
                metrics = r.read().decode()
            failing = sum(
                1
                for line in metrics.splitlines()
                if line.startswith(("trafficd_probe_success{", "trafficd_storage_up{"))
                and not line.endswith(" 1.0")
            )
            if failing:
                print(f"  {n:4d} sites: {failing} probe series failing: figure not valid")
            ok = share < 0.25 and rss_mb < 150 and not failing
            print(
                f"  {n:4d} sites: {share * 100:5.1f}% of a core (user {user * 100:.1f}%, "
                f"kernel {system * 100:.1f}%), peak RSS {rss_mb:6.1f} MB"
                + (f"  (target for 200: {'met' if ok else 'MISSED'})" if n == 200 else "")
            )
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--sites", default="2,50,200")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trafficd-bench.") as tmp:
        if args.runs:
            failover(args.runs, Path(tmp))
        print(
            f"\ncost of watching N sites (interval 1s, one LocalStorage location each, "
            f"{args.seconds:g}s):"
        )
        for n in (int(x) for x in args.sites.split(",") if x):
            cost(n, args.seconds, Path(tmp))


if __name__ == "__main__":
    main()
