"""`python -m trafficd.demo`: a complete local geo-replicated deployment, on loopback only.

    up            start it and print where to look (the README's first command, via ./demo.sh)
    break SITE    stop SITE's S3 server (its storage fails)
    repair SITE   start it again
    watch         print each site's transitions, the DNS answer and HAProxy's state
    tour          up, break eu, watch it drain, repair, watch it return, print the audit trail
    down          stop everything started by `up`, by PID

`up` starts one moto S3 server per site (us, eu), the two simulated Quay sites
(site.py: their `/health/endtoend` writes to their own bucket), BIND 9 serving
`quay.demo.test`, HAProxy in front of both sites, `trafficd run` with the
rfc2136, haproxy and command actuators, and Prometheus scraping trafficd with
its alert rules. Everything it started is recorded in DIR/demo.json (DIR is
`.demo` in the current directory unless --dir says otherwise), so that later
invocations find it and `down` stops it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trafficd.demo.peers import (
    Bind,
    HAProxy,
    Prometheus,
    alive,
    dns_addresses,
    free_port,
    haproxy_admin_states,
    haproxy_weights,
    spawn,
    stop_pid,
    wait_until,
)

SITES = ("us", "eu")
ADDRESSES = {"us": "192.0.2.10", "eu": "192.0.2.20"}
NAME = "quay.demo.test."
PY = sys.executable


def rules_file() -> Path | None:
    """The alert rules of the checkout this runs from (a wheel install does not carry them)."""
    relative = Path("deploy/prometheus/trafficd-rules.yaml")
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / relative).is_file():
            return root / relative
    return None


# Start order; `down` stops in reverse so trafficd goes before what it watches.
ORDER = ("s3-us", "s3-eu", "named", "haproxy", "trafficd", "prometheus")


def answers(url: str) -> bool:
    """Whether `url` answers below 500."""
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback
            return bool(resp.status < 500)
    except OSError:
        return False


def wait(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    try:
        wait_until(what, check, timeout)
    except RuntimeError as exc:
        raise SystemExit(f"demo: {exc}") from None


def say(text: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {text}", flush=True)


class Demo:
    """The deployment in `base`: ports, PIDs and paths, kept in base/demo.json."""

    def __init__(self, base: Path) -> None:
        self.base = base.resolve()
        self.file = self.base / "demo.json"
        self.sites_dir = self.base / "sites"
        if self.file.exists():
            saved = json.loads(self.file.read_text())
        else:
            saved = {
                "s3": {site: free_port() for site in SITES},
                "site": {site: free_port() for site in SITES},
                "api": free_port(),
                "haproxy_stats": free_port(),
                "pids": {},
                "token": "demo-admin-token-" + os.urandom(8).hex(),
            }
        self.s3_ports: dict[str, int] = saved["s3"]
        self.site_ports: dict[str, int] = saved["site"]
        self.api_port: int = saved["api"]
        self.haproxy_stats: int = saved["haproxy_stats"]
        self.pids: dict[str, int] = saved["pids"]
        self.token: str = saved["token"]
        self.dns_port: int | None = saved.get("dns")
        self.haproxy_socket: str | None = saved.get("haproxy_socket")
        self.prometheus: str | None = saved.get("prometheus")
        # Children started by this process, reaped by `down`; a later invocation
        # (`python -m trafficd.demo down`) stops them by PID alone.
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def save(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        data = {
            "s3": self.s3_ports,
            "site": self.site_ports,
            "api": self.api_port,
            "haproxy_stats": self.haproxy_stats,
            "pids": self.pids,
            "token": self.token,
            "dns": self.dns_port,
            "haproxy_socket": self.haproxy_socket,
            "prometheus": self.prometheus,
        }
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.file)

    @property
    def config_path(self) -> Path:
        return self.base / "trafficd.yaml"

    def running(self) -> list[str]:
        return [name for name, pid in self.pids.items() if alive(pid)]

    # --- starting -------------------------------------------------------------------

    def up(self, prometheus: bool = True) -> None:
        """Starts every server; each one is recorded as soon as it runs."""
        for d in (self.base, self.sites_dir, self.base / "shared"):
            d.mkdir(parents=True, exist_ok=True)
        for name, secret in (("token", self.token), ("s3.key", "demo")):
            (self.base / name).write_text(secret + "\n")
            (self.base / name).chmod(0o600)
        # Quay's ENABLE_HEALTH_DEBUG_SECRET, read by the sites and by trafficd; kept across
        # `up`s, since sites that still run read it when they started.
        debug = self.base / "health-debug.secret"
        if not debug.exists():
            debug.write_text("demo-health-debug-" + os.urandom(8).hex() + "\n")
            debug.chmod(0o600)
        self.save()
        for site in SITES:
            self.start_s3(site)
        self.start_sites()
        bind = Bind(self.base / "bind", "demo.test", {"quay": list(ADDRESSES.values())})
        self._record("named", bind.start())
        self.dns_port = bind.port
        haproxy = HAProxy(self.base / "haproxy", self.site_ports, self.haproxy_stats)
        self._record("haproxy", haproxy.start())
        self.haproxy_socket = haproxy.admin_socket
        self.write_config(bind)
        self.start_trafficd()
        if prometheus:
            rules = rules_file()
            if rules is None:
                say("no deploy/prometheus/trafficd-rules.yaml here: Prometheus runs without alerts")
            prom = Prometheus(self.base / "prometheus", [f"127.0.0.1:{self.api_port}"], rules)
            self._record("prometheus", prom.start())
            self.prometheus = prom.url
        self.save()

    def _record(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.pids[name] = proc.pid
        self._children[proc.pid] = proc
        self.save()

    def start_s3(self, site: str) -> None:
        port = self.s3_ports[site]
        argv = [PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        proc = spawn(argv, self.base / f"s3-{site}.log")
        self._record(f"s3-{site}", proc)
        wait(f"{site}'s S3 server", lambda: answers(f"http://127.0.0.1:{port}/moto-api/"))
        import boto3

        boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="demo",
            aws_secret_access_key="demo",  # noqa: S106 - moto's
        ).create_bucket(Bucket=f"quay-{site}")

    def stop_s3(self, site: str) -> None:
        pid = self.pids.pop(f"s3-{site}", None)
        if pid is not None:
            self._stop(pid)
        self.save()

    def _stop(self, pid: int) -> None:
        stop_pid(pid)
        child = self._children.pop(pid, None)
        if child is not None:
            child.wait(timeout=5)

    def sitectl(self, action: str, site: str) -> list[str]:
        return [PY, "-m", "trafficd.demo.sitectl", str(self.sites_dir), action, site]

    def start_sites(self) -> None:
        for site in SITES:
            # Each site prefers its own location and checks the other's too, as Quay v3.18
            # does with DISTRIBUTED_STORAGE_PREFERENCE [own]: the other's failure is a message.
            order = [site, *(s for s in SITES if s != site)]
            argv = [
                PY,
                "-m",
                "trafficd.demo.site",
                "--name",
                site,
                "--port",
                str(self.site_ports[site]),
                "--s3",
                ",".join(f"http://127.0.0.1:{self.s3_ports[s]}" for s in order),
                "--bucket",
                ",".join(f"quay-{s}" for s in order),
                "--locations",
                ",".join(f"{s}storage" for s in order),
                "--preferred",
                "1",
                "--debug-secret-file",
                str(self.base / "health-debug.secret"),
                "--shared",  # last: tests find the shared directory there
                str(self.base / "shared"),
            ]
            (self.sites_dir / f"{site}.argv.json").write_text(json.dumps(argv))
            subprocess.run(self.sitectl("start", site), capture_output=True, check=True)
            url = f"http://127.0.0.1:{self.site_ports[site]}/health/instance"
            wait(f"site {site}", functools.partial(answers, url))

    def write_config(self, bind: Bind | None = None) -> Path:
        actuators: list[dict[str, Any]] = []
        if bind is not None:
            secret = f"${{file:{bind.dir / 'tsig.secret'}}}"
            actuators.append(bind.rfc2136_section(secret))
        if self.haproxy_socket is not None:
            actuators.append({"type": "haproxy", "id": "lb", "socket": self.haproxy_socket})
        actuators.append({"type": "command"})
        key = f"${{file:{self.base / 's3.key'}}}"  # moto accepts any key
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
                        "s3_access_key": key,
                        "s3_secret_key": key,
                    },
                ]
                for site in SITES
            },
            "sites": {
                site: {
                    "url": "http://quay.demo.test",
                    "connect": f"127.0.0.1:{self.site_ports[site]}",
                    "storage": [f"{site}storage"],
                    "addresses": [ADDRESSES[site]],
                    "haproxy": {"backend": "quay", "server": site},
                    "command": {
                        "stop": self.sitectl("stop", site),
                        "start": self.sitectl("start", site),
                        "status": self.sitectl("status", site),
                        "timeout": "20s",
                    },
                }
                for site in SITES
            },
            "probes": {
                "interval": "1s",
                "timeout": "800ms",
                "debug_secret": f"${{file:{self.base / 'health-debug.secret'}}}",
            },
            # A site comes back in steps: 10% of its weight, 50%, then all of it, 3 s
            # each, abandoned if its probes fail or HAProxy counts too many 5xx.
            "policy": {
                "fall": 3,
                "rise": 3,
                "hold_down": "5s",
                "shutdown_grace": "3s",
                "return_steps": [10, 50, 100],
                "return_step": "3s",
            },
            "actuators": actuators,
        }
        self.config_path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        return self.config_path

    def restart_trafficd(self) -> None:
        """Stops trafficd if it runs and starts it again with the config file as it is now."""
        pid = self.pids.pop("trafficd", None)
        if pid is not None:
            self._stop(pid)
        self.start_trafficd()

    def start_trafficd(self) -> None:
        argv = [PY, "-m", "trafficd.cli", "run", "-c", str(self.config_path)]
        proc = spawn(argv, self.base / "trafficd.log")
        self._record("trafficd", proc)
        wait("trafficd", lambda: answers(f"http://127.0.0.1:{self.api_port}/readyz"))

    # --- stopping -------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stops what `up` started (trafficd first, so it does not react), then the sites."""
        stopped = []
        names = sorted(self.pids, key=lambda n: -ORDER.index(n) if n in ORDER else 0)
        for name in ["trafficd", *[n for n in names if n != "trafficd"]]:
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            if alive(pid):
                stopped.append(name)
            self._stop(pid)
            self.save()
        for site in SITES:
            if self.site_running(site):
                stopped.append(f"site-{site}")
            if (self.sites_dir / f"{site}.argv.json").exists():
                subprocess.run(self.sitectl("stop", site), capture_output=True, check=False)
        return stopped

    # --- looking --------------------------------------------------------------------

    def api(self, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}")
        request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read())

    def site(self, site: str) -> dict[str, Any]:
        try:
            sites = self.api("/api/v1/sites")["sites"]
        except OSError:
            return {"state": "?"}
        return dict(next(s for s in sites if s["name"] == site))

    def state(self, site: str) -> str:
        return str(self.site(site)["state"])

    def returning(self, site: str) -> bool:
        """The site is active but still returns in steps (policy.return_steps)."""
        return self.site(site).get("return_step") is not None

    def site_running(self, site: str) -> bool:
        argv = self.sitectl("status", site)
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0

    def dns(self) -> set[str]:
        """The sites whose address BIND answers for quay.demo.test now."""
        if self.dns_port is None:
            return set()
        got = dns_addresses(self.dns_port, NAME)
        return {site for site, address in ADDRESSES.items() if address in got}

    def haproxy_admin(self) -> dict[str, int]:
        if self.haproxy_socket is None:
            return {}
        return haproxy_admin_states(self.haproxy_socket)

    def haproxy_shares(self) -> dict[str, int]:
        """The weight HAProxy gives each site's server; 0 while it holds it out."""
        if self.haproxy_socket is None:
            return {}
        admin = haproxy_admin_states(self.haproxy_socket)
        weights = haproxy_weights(self.haproxy_socket)
        return {site: 0 if admin.get(site) else w for site, w in weights.items()}

    def where(self) -> str:
        cli = Path(PY).with_name("trafficd")
        trafficd = str(cli) if cli.exists() else f"{PY} -m trafficd.cli"
        me = f"{PY} -m trafficd.demo --dir {self.base}"
        lines = [
            f"trafficd status      {trafficd} status -c {self.config_path}",
            f"audit trail          {trafficd} events -c {self.config_path}",
            f"metrics              curl -s http://127.0.0.1:{self.api_port}/metrics"
            " | grep '^trafficd_site_state'",
            f"DNS answer           dig +short @127.0.0.1 -p {self.dns_port} {NAME} A"
            "   (us 192.0.2.10, eu 192.0.2.20)",
            f"HAProxy stats        http://127.0.0.1:{self.haproxy_stats}/",
        ]
        if self.prometheus:
            lines.append(f"Prometheus           {self.prometheus}/alerts")
        lines += [
            f"break eu's storage   {me} break eu",
            f"watch the failover   {me} watch",
            f"repair it            {me} repair eu",
            f"stop everything      {me} down",
            f"logs                 {self.base}/*.log",
        ]
        return "\n".join("    " + line for line in lines)


def snapshot(demo: Demo) -> str:
    states = {site: demo.state(site) for site in SITES}
    lb = demo.haproxy_admin()
    held = sorted(s for s, v in lb.items() if v)
    shares = demo.haproxy_shares()
    return (
        " ".join(f"{s}={v}" for s, v in states.items())
        + f" | DNS answers {sorted(demo.dns())}"
        + f" | HAProxy holds out {held or 'nothing'}"
        + " | HAProxy weights "
        + " ".join(f"{s}={w}" for s, w in sorted(shares.items()))
    )


def watch(demo: Demo, site: str, until: str | None, timeout: float) -> None:
    """Prints every change of the sites' states, DNS and HAProxy until `site` is `until`."""
    t0, last = time.monotonic(), ""
    while True:
        now = snapshot(demo)
        if now != last:
            say(f"+{time.monotonic() - t0:4.1f}s  {now}")
            last = now
        # Active is reached once the return's last step is: the site has its whole weight.
        reached = until is not None and demo.state(site) == until
        if reached and (until != "active" or not demo.returning(site)):
            return
        if time.monotonic() - t0 > timeout:
            if until is None:
                return
            raise SystemExit(f"demo: {site} did not become {until} within {timeout:g}s")
        time.sleep(0.2)


def print_audit(demo: Demo) -> None:
    for event in demo.api("/api/v1/events")["events"]:
        if event["kind"] == "transition":
            detail = f"{event['site']}: {event['from']} -> {event['to']}  " + "; ".join(
                event.get("reasons", [])
            )
        elif event["kind"] == "return_step":
            detail = (
                f"{event['site']}: step {event['step']} of {event.get('of', '?')}"
                f" ({event['percent']}%, weight {event['weight']})"
            )
        elif event["kind"] in ("actuation", "refused"):
            detail = f"{event.get('actuator', event.get('site'))}: " + "; ".join(
                event.get("applied") or [event.get("rule") or ""]
            )
        else:
            continue
        print(f"    {event['time']}  {event['kind']:<10} {detail}")


def cmd_up(demo: Demo, prometheus: bool, show: bool = True) -> int:
    if demo.running():
        say(f"already up in {demo.base} ({', '.join(demo.running())}); here is where to look:")
        print(demo.where())
        return 0
    say(f"starting in {demo.base}: S3 servers, Quay sites, BIND, HAProxy, trafficd, Prometheus")
    try:
        demo.up(prometheus=prometheus)
    except (RuntimeError, SystemExit) as exc:
        demo.down()
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    wait("both sites active", lambda: demo.state("us") == demo.state("eu") == "active")
    say("up: " + snapshot(demo))
    if show:
        print(demo.where())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trafficd.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dir", type=Path, default=Path(".demo"), help="default: ./.demo")
    sub = parser.add_subparsers(dest="command")
    up = sub.add_parser("up")
    up.add_argument("--no-prometheus", action="store_true")
    for name in ("break", "repair"):
        sub.add_parser(name).add_argument("site", choices=SITES)
    w = sub.add_parser("watch")
    w.add_argument("--site", default="eu", choices=SITES)
    w.add_argument("--until", help="stop when --site reaches this state")
    w.add_argument("--timeout", type=float, default=60.0)
    tour = sub.add_parser("tour")
    tour.add_argument("--no-prometheus", action="store_true")
    sub.add_parser("down")
    args = parser.parse_args(argv)
    demo = Demo(args.dir)
    command = args.command or "up"

    if command == "up":
        return cmd_up(demo, prometheus=not getattr(args, "no_prometheus", False))
    if command == "down":
        stopped = demo.down()
        say(f"stopped {', '.join(stopped) or 'nothing (it was not running)'}")
        return 0
    tour_up = command == "tour" and not demo.running()
    if tour_up and cmd_up(demo, prometheus=not args.no_prometheus, show=False):
        return 1
    if not demo.running():
        print(f"demo: not running in {demo.base}; start it with `up`", file=sys.stderr)
        return 1
    if command == "break":
        demo.stop_s3(args.site)
        say(f"{args.site}'s S3 server stopped; trafficd drains {args.site} after 3 failed rounds")
        return 0
    if command == "repair":
        if f"s3-{args.site}" not in demo.running():
            demo.start_s3(args.site)
        say(f"{args.site}'s S3 server is back; trafficd restores {args.site} after 3 good rounds")
        return 0
    if command == "watch":
        watch(demo, args.site, args.until, args.timeout)
        return 0
    # tour
    say("both sites active; now eu's S3 server goes away")
    demo.stop_s3("eu")
    watch(demo, "eu", "drained", 60)
    wait("eu's Quay stopped", lambda: not demo.site_running("eu"))
    say("eu drained and its Quay stopped; us keeps serving. Now eu's S3 server returns")
    demo.start_s3("eu")
    say("eu returns in steps: HAProxy gives it 10% of its weight, then 50%, then all of it")
    watch(demo, "eu", "active", 60)
    wait("eu back in DNS", lambda: demo.dns() == set(SITES), timeout=10)
    say("eu is back: " + snapshot(demo))
    say("the audit trail:")
    print_audit(demo)
    say("still running; where to look:")
    print(demo.where())
    return 0


if __name__ == "__main__":
    sys.exit(main())
