"""`python -m trafficd.demo`: a local failover, start to finish, in about half a minute.

Starts, on loopback only: one moto S3 server per site (us, eu), the two
simulated Quay sites (their `/health/endtoend` writes to their own bucket),
and `trafficd run` with the command actuator, which stops a site's Quay after
a storage drain and starts it again on recovery. Then it stops eu's S3 server,
waits for trafficd to drain eu and stop its Quay, starts the S3 server again,
waits for eu to come back, prints the audit trail, and stops everything.
`--keep` leaves the deployment running (Ctrl-C to stop) so `trafficd status
-c DIR/trafficd.yaml` and the API can be explored.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

SITES = ("us", "eu")
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback
            return bool(resp.status < 500)
    except OSError:
        return False


def wait(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def say(text: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {text}", flush=True)


class Demo:
    def __init__(self, base: Path, stack: ExitStack) -> None:
        self.base = base
        self.stack = stack
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.s3_ports = {name: free_port() for name in SITES}
        self.site_ports = {name: free_port() for name in SITES}
        self.api_port = free_port()
        self.sites_dir = base / "sites"
        self.sites_dir.mkdir(parents=True, exist_ok=True)
        (base / "shared").mkdir(exist_ok=True)
        self.token = "demo-admin-token-" + os.urandom(8).hex()
        (base / "token").write_text(self.token + "\n")
        stack.callback(self.stop_all)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.base / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        log.close()

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        self.stop("trafficd")
        for site in SITES:
            subprocess.run(self.sitectl("stop", site), capture_output=True, check=False)
        for name in list(self.procs):
            self.stop(name)

    def sitectl(self, action: str, site: str) -> list[str]:
        return [PY, "-m", "trafficd.demo.sitectl", str(self.sites_dir), action, site]

    def start_s3(self, site: str) -> None:
        port = self.s3_ports[site]
        self.spawn(f"s3-{site}", [PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)])
        wait(f"{site}'s S3 server", lambda: answers(f"http://127.0.0.1:{port}/moto-api/"))
        import boto3

        boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="demo",
            aws_secret_access_key="demo",  # noqa: S106 - moto's
        ).create_bucket(Bucket=f"quay-{site}")

    def start_sites(self) -> None:
        for site in SITES:
            argv = [
                PY,
                "-m",
                "trafficd.demo.site",
                "--name",
                site,
                "--port",
                str(self.site_ports[site]),
                "--s3",
                f"http://127.0.0.1:{self.s3_ports[site]}",
                "--bucket",
                f"quay-{site}",
                "--shared",
                str(self.base / "shared"),
            ]
            (self.sites_dir / f"{site}.argv.json").write_text(json.dumps(argv))
            subprocess.run(self.sitectl("start", site), capture_output=True, check=True)
            url = f"http://127.0.0.1:{self.site_ports[site]}/health/instance"
            wait(f"site {site}", functools.partial(answers, url))

    def config(self) -> Path:
        config: dict[str, Any] = {
            "vantage": "demo",
            "listen": f"127.0.0.1:{self.api_port}",
            "state_dir": str(self.base / "state"),
            "api_token_file": str(self.base / "token"),
            "storage": {
                f"{site}storage": [
                    "S3Storage",
                    {
                        "s3_bucket": f"quay-{site}",
                        "storage_path": "/datastorage/registry",
                        "endpoint_url": f"http://127.0.0.1:{self.s3_ports[site]}",
                        "s3_access_key": "${env:DEMO_S3_KEY}",
                        "s3_secret_key": "${env:DEMO_S3_KEY}",
                    },
                ]
                for site in SITES
            },
            "sites": {
                site: {
                    "url": "http://quay.demo.test",
                    "connect": f"127.0.0.1:{self.site_ports[site]}",
                    "storage": [f"{site}storage"],
                    "addresses": ["192.0.2.10" if site == "us" else "192.0.2.20"],
                    "command": {
                        "stop": self.sitectl("stop", site),
                        "start": self.sitectl("start", site),
                        "status": self.sitectl("status", site),
                        "timeout": "20s",
                    },
                }
                for site in SITES
            },
            "probes": {"interval": "1s", "timeout": "800ms"},
            "policy": {"fall": 3, "rise": 3, "hold_down": "5s", "shutdown_grace": "3s"},
            "actuators": [{"type": "command"}],
        }
        path = self.base / "trafficd.yaml"
        path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        return path

    def start_trafficd(self, config: Path) -> None:
        self.spawn(
            "trafficd",
            [PY, "-m", "trafficd.cli", "run", "-c", str(config)],
            env={"DEMO_S3_KEY": "demo"},
        )
        wait("trafficd", lambda: answers(f"http://127.0.0.1:{self.api_port}/readyz"))

    def api(self, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}")
        request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read())

    def state(self, site: str) -> str:
        try:
            sites = self.api("/api/v1/sites")["sites"]
        except OSError:
            return "?"
        return str(next(s for s in sites if s["name"] == site)["state"])

    def site_running(self, site: str) -> bool:
        return subprocess.run(self.sitectl("status", site), check=False).returncode == 0


def follow(demo: Demo, seen: str, until: str, since: str) -> str:
    """Prints eu's transitions until it reaches `until`; at most a minute."""
    t0 = time.monotonic()
    while seen != until:
        state = demo.state("eu")
        if state != seen:
            say(f"eu: {seen} -> {state} ({time.monotonic() - t0:.1f}s {since})")
            seen = state
        if time.monotonic() - t0 > 60:
            raise SystemExit(f"demo: eu did not become {until} within 60s")
        time.sleep(0.2)
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trafficd.demo", description=__doc__)
    parser.add_argument("--dir", type=Path, help="where to keep configs, state and logs")
    parser.add_argument("--keep", action="store_true", help="leave it running; Ctrl-C stops")
    args = parser.parse_args(argv)
    base = args.dir or Path(tempfile.mkdtemp(prefix="trafficd-demo."))
    with ExitStack() as stack:
        demo = Demo(base, stack)
        say(f"working directory {base}")
        for site in SITES:
            demo.start_s3(site)
        demo.start_sites()
        config = demo.config()
        say("starting: trafficd run -c " + str(config))
        demo.start_trafficd(config)
        wait("both sites active", lambda: demo.state("us") == demo.state("eu") == "active")
        say("both sites active; now eu's S3 server goes away")
        demo.stop("s3-eu")
        seen = follow(demo, "active", "drained", "after the outage")
        wait("eu's Quay stopped", lambda: not demo.site_running("eu"))
        say("eu drained and its Quay stopped; us keeps serving. Now eu's S3 server returns")
        demo.start_s3("eu")
        follow(demo, seen, "active", "after the repair")
        say("eu is back. The audit trail:")
        for event in demo.api("/api/v1/events")["events"]:
            if event["kind"] in ("transition", "actuation", "refused"):
                detail = (
                    f"{event['site']}: {event['from']} -> {event['to']}  "
                    + "; ".join(event.get("reasons", []))
                    if event["kind"] == "transition"
                    else f"{event.get('actuator', event.get('site'))}: "
                    + "; ".join(event.get("applied") or [event.get("rule") or ""])
                )
                print(f"    {event['time']}  {event['kind']:<10} {detail}")
        if args.keep:
            say(f"still running: trafficd status -c {config}   (Ctrl-C stops everything)")
            with suppress(KeyboardInterrupt):
                signal.pause()
        say("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
