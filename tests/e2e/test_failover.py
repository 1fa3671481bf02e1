"""End to end: `trafficd run` as its own process against real peers, through a failover.

Two simulated Quay sites (trafficd/demo/site.py: Quay's health format, storage
computed against each site's own moto S3 server), BIND 9 serving the global
name, HAProxy in front of both sites, and trafficd with the rfc2136, haproxy
and command actuators (the command actuator stops and starts the simulated
site's process through trafficd/demo/sitectl.py). The scenarios run in order on
one deployment, as an incident would unfold.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.peers import HAProxyPeer, Named, _wait_http, free_port, stop

pytestmark = pytest.mark.peers

REPO = Path(__file__).resolve().parents[2]
INTERVAL, FALL, RISE, GRACE = 0.5, 2, 2, 1.0
ADDRESSES = {"us": "192.0.2.10", "eu": "192.0.2.20"}
ADMIN_TOKEN = "admin-token-for-the-e2e-test-0123456789"
READ_TOKEN = "read-token-for-the-e2e-test-0123456789"


def spawn_trafficd(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`trafficd run -c config` in its own session, its output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "trafficd.cli", "run", "-c", str(config)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "S3_KEY": "testing"},
        )


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> float:
    """Polls `check` until true; returns when it became true (time.monotonic())."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for: {what}")


class Moto:
    """A moto S3 server on a fixed port, so it can be stopped and started again."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"moto-{name}.log"
        self.bucket = f"quay-{name}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_http(f"{self.url}/moto-api/", self.proc, "moto_server")
        boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket=self.bucket)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


@dataclass
class Deployment:
    tmp: Path
    config: Path
    api: str
    moto: dict[str, Moto]
    named: Named
    haproxy: HAProxyPeer
    sites: Path
    trafficd: subprocess.Popen[bytes] | None = None

    def start_trafficd(self) -> None:
        self.trafficd = spawn_trafficd(self.config, self.tmp / "trafficd.log")
        wait_for("trafficd /readyz", lambda: self.http("GET", "/readyz")[0] == 200)

    def http(
        self, method: str, path: str, token: str | None = None, body: object = None
    ) -> tuple[int, str]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api + path, data=data, method=method)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "trafficd.cli", *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "S3_KEY": "testing"},
        )

    def status(self) -> dict[str, dict[str, Any]]:
        token = str(self.tmp / "admin.token")
        out = self.cli("status", "--api", self.api, "--token-file", token, "--json")
        assert out.returncode == 0, out.stderr
        return {s["name"]: s for s in json.loads(out.stdout)}

    def audit(self, lines: int = 30) -> str:
        """The audit log's latest decisions and actuations, for assertion messages."""
        events = (self.tmp / "state" / "events.jsonl").read_text().splitlines()
        return "\n".join([e for e in events if '"kind": "observation"' not in e][-lines:])

    def dns(self) -> set[str]:
        return {name for name, a in ADDRESSES.items() if a in self.named.addresses()}

    def haproxy_admin(self) -> dict[str, int]:
        return self.haproxy.admin_states()

    def metric(self, name: str, **labels: str) -> float | None:
        _, text = self.http("GET", "/metrics")
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                series, _, value = line.rpartition(" ")
                got = series[len(name) :].strip("{}")
                if sorted(got.split(",")) == sorted(want.split(",")) or (not want and not got):
                    return float(value)
        return None

    def site_running(self, name: str) -> bool:
        return (
            subprocess.run(
                [sys.executable, "-m", "trafficd.demo.sitectl", str(self.sites), "status", name],
                cwd=REPO,
            ).returncode
            == 0
        )

    def sitectl_log(self) -> list[str]:
        path = self.sites / "sitectl.log"
        return path.read_text().splitlines() if path.exists() else []


def write_config(
    tmp: Path,
    moto: dict[str, Moto],
    ports: dict[str, int],
    named: Named,
    haproxy: HAProxyPeer,
    sites: Path,
    api_port: int,
) -> Path:
    (tmp / "admin.token").write_text(ADMIN_TOKEN + "\n")
    (tmp / "read.token").write_text(READ_TOKEN + "\n")
    (tmp / "tsig.key").write_text(named.secret + "\n")

    def ctl(action: str, name: str) -> list[str]:
        return [sys.executable, "-m", "trafficd.demo.sitectl", str(sites), action, name]

    config = {
        "vantage": "test",
        "listen": f"127.0.0.1:{api_port}",
        "state_dir": str(tmp / "state"),
        "api_token_file": str(tmp / "admin.token"),
        "api_tokens": [{"name": "grafana", "role": "read", "token": f"${{file:{tmp}/read.token}}"}],
        "storage": {
            f"{name}storage": [
                "S3Storage",
                {
                    "s3_bucket": m.bucket,
                    "storage_path": "/datastorage/registry",
                    "endpoint_url": m.url,
                    "s3_access_key": "${env:S3_KEY}",
                    "s3_secret_key": "${env:S3_KEY}",
                },
            ]
            for name, m in moto.items()
        },
        "sites": {
            name: {
                "url": "http://quay.example.test",
                "connect": f"127.0.0.1:{ports[name]}",
                "storage": [f"{name}storage"],
                "addresses": [ADDRESSES[name]],
                "haproxy": {"backend": "quay", "server": name},
                "command": {
                    "stop": ctl("stop", name),
                    "start": ctl("start", name),
                    "status": ctl("status", name),
                    "timeout": "15s",
                },
            }
            for name in ("us", "eu")
        },
        "probes": {"interval": f"{int(INTERVAL * 1000)}ms", "timeout": "400ms"},
        "policy": {
            "fall": FALL,
            "rise": RISE,
            "hold_down": "0s",
            "max_drains": 5,
            "shutdown_grace": f"{int(GRACE * 1000)}ms",
            "restore_timeout": "60s",
        },
        "actuators": [
            named.rfc2136_section(f"${{file:{tmp}/tsig.key}}"),
            {"type": "haproxy", "id": "lb", "socket": haproxy.admin_socket},
            {"type": "command"},
        ],
    }
    path = tmp / "trafficd.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    return path


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass
class Peers:
    """Everything trafficd watches and drives: two Quay sites on moto, BIND, HAProxy."""

    moto: dict[str, Moto]
    ports: dict[str, int]
    sites: Path
    named: Named
    haproxy: HAProxyPeer


@contextlib.contextmanager
def running_peers(tmp: Path) -> Iterator[Peers]:
    """The peers started (sites through sitectl, as trafficd's command actuator does) and
    stopped by PID at the end."""
    moto = {name: Moto(tmp, name) for name in ("us", "eu")}
    sites = tmp / "sites"
    sites.mkdir()
    shared = tmp / "shared"
    shared.mkdir()
    ports = {name: free_port() for name in moto}
    peers = Peers(moto, ports, sites, Named(tmp), HAProxyPeer(tmp, backends=ports))
    try:
        for name, m in moto.items():
            m.start()
            argv = [sys.executable, "-m", "trafficd.demo.site", "--name", name]
            argv += ["--port", str(ports[name]), "--s3", m.url, "--bucket", m.bucket]
            argv += ["--shared", str(shared)]
            (sites / f"{name}.argv.json").write_text(json.dumps(argv))
            subprocess.run(
                [sys.executable, "-m", "trafficd.demo.sitectl", str(sites), "start", name],
                cwd=REPO,
                check=True,
                capture_output=True,
            )
            url = f"http://127.0.0.1:{ports[name]}/health/instance"
            wait_for(f"site {name} answers", functools.partial(_answers, url))
        peers.named.start()
        peers.haproxy.start()
        yield peers
    finally:
        for name in moto:
            subprocess.run(
                [sys.executable, "-m", "trafficd.demo.sitectl", str(sites), "stop", name],
                cwd=REPO,
                capture_output=True,
            )
            moto[name].stop()
        peers.named.stop()
        peers.haproxy.stop()


@contextlib.contextmanager
def deployed(tmp: Path, **policy: Any) -> Iterator[Deployment]:
    """The peers and `trafficd run` on them, `policy` added to the configuration's;
    trafficd stopped by PID at the end, then the peers."""
    with running_peers(tmp) as p:
        api_port = free_port()
        path = write_config(tmp, p.moto, p.ports, p.named, p.haproxy, p.sites, api_port)
        if policy:
            config = json.loads(path.read_text())
            config["policy"].update(policy)
            path.write_text(json.dumps(config, indent=1))
        dep = Deployment(
            tmp, path, f"http://127.0.0.1:{api_port}", p.moto, p.named, p.haproxy, p.sites
        )
        try:
            dep.start_trafficd()
            yield dep
        finally:
            if dep.trafficd is not None:
                stop(dep.trafficd)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    with deployed(tmp_path) as dep:
        yield dep


def test_failover_end_to_end(deployment: Deployment) -> None:
    d = deployment
    wait_for("both sites active", lambda: d.dns() == {"us", "eu"})
    wait_for("eu verdict 200", lambda: d.http("GET", "/sites/eu/verdict")[0] == 200)

    # --- 6: authentication --------------------------------------------------------------
    assert d.http("GET", "/api/v1/sites")[0] == 401
    assert d.http("GET", "/api/v1/sites", "not-a-token")[0] == 401
    assert d.http("GET", "/api/v1/sites", READ_TOKEN)[0] == 200
    code, body = d.http("POST", "/api/v1/sites/eu/drain", READ_TOKEN, {"reason": "x"})
    assert code == 403 and json.loads(body) == {"error": "token 'grafana' may only read"}
    assert d.http("POST", "/api/v1/sites/nowhere/drain", ADMIN_TOKEN, {"reason": "x"})[0] == 404
    (d.tmp / "wrong.token").write_text("not-the-token\n")
    out = d.cli("status", "--api", d.api, "--token-file", str(d.tmp / "wrong.token"))
    assert out.returncode == 5
    assert out.stderr == "trafficd status: HTTP 401: missing or unknown bearer token\n"

    # --- 1: eu's storage dies -----------------------------------------------------------
    storage_wall = time.time()  # wall clock, as the audit log's `t` (for check_report)
    d.moto["eu"].stop()
    stopped_at = time.monotonic()
    dns_at = wait_for("eu out of DNS", lambda: d.dns() == {"us"})
    dns_wall = time.time()
    detection = dns_at - stopped_at
    print(
        f"\nmeasured: storage stopped -> BIND stops answering eu: {detection:.2f}s "
        f"(bound {FALL * INTERVAL + 2:.1f}s)"
    )
    assert detection < FALL * INTERVAL + 2
    wait_for("HAProxy holds eu out", lambda: d.haproxy_admin()["eu"] != 0, timeout=5)
    lb_wall = time.time()
    assert d.haproxy_admin()["us"] == 0
    assert d.http("GET", "/sites/eu/verdict")[0] == 503
    wait_for("eu's Quay stopped after the grace", lambda: not d.site_running("eu"))
    stop_lines = [line for line in d.sitectl_log() if " stop eu " in line]
    assert stop_lines and stop_lines[-1].endswith("cause=storage")
    # Instances stop only after the grace (the DNS poll lags the change by up to 50 ms).
    assert float(stop_lines[-1].split()[0]) - dns_wall >= GRACE - 0.5
    eu = d.status()["eu"]
    assert eu["state"] == "drained" and eu["cause"] == "storage", eu
    assert any("eustorage" in r for r in eu["reasons"]) or eu["reasons"] == [], eu
    assert d.metric("trafficd_site_state", site="eu", state="drained") == 1
    assert d.metric("trafficd_site_cause", site="eu", cause="storage") == 1
    assert d.metric("trafficd_site_weight", site="eu") == 0

    # --- 3: kill -9 trafficd while eu is drained; nothing is repeated ------------------
    assert d.trafficd is not None
    os.kill(d.trafficd.pid, signal.SIGKILL)
    d.trafficd.wait()
    before = [line for line in d.sitectl_log() if " status " not in line]
    d.start_trafficd()
    time.sleep(6 * INTERVAL)
    assert d.status()["eu"]["state"] == "drained"
    assert d.dns() == {"us"}
    assert [line for line in d.sitectl_log() if " status " not in line] == before

    # --- 2: eu's storage returns: instances first, then traffic -------------------------
    d.moto["eu"].start()
    started_at = wait_for("eu's Quay started", lambda: d.site_running("eu"))
    back_at = wait_for("eu back in DNS", lambda: d.dns() == {"us", "eu"})
    back_wall = time.time()
    assert started_at <= back_at
    wait_for("HAProxy serves eu", lambda: d.haproxy_admin() == {"us": 0, "eu": 0}, timeout=5)
    assert d.status()["eu"]["state"] == "active", d.audit()
    wait_for("eu verdict 200", lambda: d.http("GET", "/sites/eu/verdict")[0] == 200, timeout=5)

    # --- 4: the shared database fails: nothing drains ----------------------------------
    flag = Path(json.loads((d.sites / "eu.argv.json").read_text())[-1]) / "database-down"
    flag.touch()
    time.sleep((FALL + 3) * INTERVAL)
    status = d.status()
    assert {s["state"] for s in status.values()} == {"active"}, status
    assert any("global" in r for s in status.values() for r in s["reasons"]), (status, d.audit())
    assert d.dns() == {"us", "eu"}
    flag.unlink()

    # --- 5: manual drain, a refused second drain, undrain -------------------------------
    token = str(d.tmp / "admin.token")
    out = d.cli("drain", "us", "--reason", "maintenance", "-c", str(d.config))
    assert out.returncode == 0, out.stderr
    wait_for("us out of DNS", lambda: d.dns() == {"eu"})
    assert d.haproxy_admin()["us"] != 0
    out = d.cli("drain", "eu", "--reason", "also", "--api", d.api, "--token-file", token)
    assert out.returncode == 6, (out.returncode, out.stderr)
    assert "min_active_sites" in out.stderr
    events = d.cli("events", "-c", str(d.config), "--json")
    manual = [json.loads(line) for line in events.stdout.splitlines()]
    assert any(
        e["kind"] == "manual"
        and e["action"] == "drain"
        and e["site"] == "us"
        and e["who"] == "admin"
        and e["reason"] == "maintenance"
        for e in manual
    )
    assert d.cli("undrain", "us", "-c", str(d.config)).returncode == 0
    wait_for("us back in DNS", lambda: d.dns() == {"us", "eu"})

    # --- 6: a broken config on reload keeps the old one running -------------------------
    good = d.config.read_text()
    d.config.write_text(good.replace('"fall": 2', '"fall": 0'))
    assert d.trafficd is not None
    d.trafficd.send_signal(signal.SIGHUP)
    wait_for("reload rejected", lambda: d.metric("trafficd_config_last_reload_successful") == 0)
    assert d.status()["us"]["state"] == "active"
    d.config.write_text(good)
    d.trafficd.send_signal(signal.SIGHUP)
    wait_for("reload accepted", lambda: d.metric("trafficd_config_last_reload_successful") == 1)
    log = (d.tmp / "trafficd.log").read_text()
    assert "reload rejected" in log and "policy.fall" in log
    assert ADMIN_TOKEN not in log and READ_TOKEN not in log and d.named.secret not in log

    # --- SIGTERM: a clean stop within 5 s that leaves the backends alone ----------------
    t0 = time.monotonic()
    d.trafficd.send_signal(signal.SIGTERM)
    assert d.trafficd.wait(timeout=5) == 0
    assert time.monotonic() - t0 < 5
    d.trafficd = None
    assert d.dns() == {"us", "eu"}

    # --- the incident as `trafficd report` reads it from the audit log -------------------
    check_report(d, storage_wall, dns_wall, lb_wall, back_wall)


def test_hung_bucket_hangs_endtoend_and_drains(deployment: Deployment) -> None:
    """Quay v3.18's storage check has no timeout: a frozen bucket hangs /health/endtoend.

    SIGSTOP freezes eu's S3 server with its socket still open, so connections are
    accepted and never answered (a hung bucket, not a refused one). trafficd's own
    timeouts turn both the direct probe and eu's endtoend into `timeout` failures,
    which corroborate each other.
    """
    d = deployment
    wait_for("both sites active", lambda: d.dns() == {"us", "eu"})
    proc = d.moto["eu"].proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        try:
            dns_at = wait_for("eu out of DNS", lambda: d.dns() == {"us"})
        except AssertionError:
            print(json.dumps(d.status()["eu"], indent=1))
            metrics = d.http("GET", "/metrics")[1].splitlines()
            print([line for line in metrics if "_count" in line])
            raise
        print(f"\nmeasured: bucket frozen -> BIND stops answering eu: {dns_at - frozen_at:.2f}s")
        assert dns_at - frozen_at < FALL * INTERVAL + 2
        eu = d.status()["eu"]
        assert eu["cause"] == "storage", eu
        assert eu["health"]["test"]["endtoend"]["reason"] == "timeout", eu
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    wait_for("eu back in DNS", lambda: d.dns() == {"us", "eu"}, timeout=40)


def check_report(
    d: Deployment, storage_wall: float, dns_wall: float, lb_wall: float, back_wall: float
) -> None:
    """`trafficd report` over the audit log this run wrote, with the daemon stopped (as
    in a postmortem): its figures against what the test itself saw of the peers."""
    from trafficd.report import build_report, read_layout
    from trafficd.store import read_events

    events = list(read_events(d.tmp / "state"))
    report = build_report(read_layout(d.config), [events])
    [eu] = [s for s in report.sites if s.name == "eu"]
    storage = [i for i in eu.incidents if i.cause == "storage"]
    assert len(storage) == 1, d.audit()
    m = {x.what: x for x in storage[0].milestones}
    drain = next(
        e
        for e in events
        if e["kind"] == "transition" and e["site"] == "eu" and e["to"] == "draining"
    )
    assert (m["drain decided"].t, m["drain decided"].time) == (drain["t"], drain["time"])
    first = m["first failing probe"]
    assert first.t is not None and first.t <= drain["t"], first
    # A failing run that began before the fault can only be a probe that timed out on a
    # loaded machine (400 ms) and stayed pending into the outage (one request in flight).
    assert storage_wall <= first.t or first.detail.endswith("timeout"), first
    # The direct storage probe and eu's endtoend (whose storage check reaches the same
    # dead S3 server) race to be first: either is the incident's first failing probe.
    assert first.detail.startswith(
        ("test · storage eustorage: failing", "test · endtoend: failing")
    ), first
    # Each backend's read-back: after the decision, before the test saw the peer follow
    # (plus the time the event takes to reach the log after the read-back).
    # One milestone per target: the rfc2136 server, the HAProxy socket.
    bind, lb = f"bind 127.0.0.1:{d.named.port}", f"lb {d.haproxy.admin_socket}"
    off = {f"traffic off ({bind}, rfc2136)": dns_wall, f"traffic off ({lb}, haproxy)": lb_wall}
    for what, seen in off.items():
        t = m[what].t
        assert t is not None and drain["t"] <= t <= seen + 1.0, (what, m[what], seen)
    stops = [float(line.split()[0]) for line in d.sitectl_log() if " stop eu " in line]
    stopped = m["instances stopped (command)"].t
    assert stopped is not None and stops[0] <= stopped, (m["instances stopped (command)"], stops)
    assert stopped - drain["t"] >= GRACE
    starts = [float(line.split()[0]) for line in d.sitectl_log() if " start eu " in line]
    started = m["instances started (command)"].t
    assert started is not None and starts[-1] <= started, (m["instances started (command)"], starts)
    returned, restore = m["traffic fully returned"].t, m["restore decided"].t
    assert returned is not None and restore is not None
    assert restore < started <= returned <= back_wall + 1.0, (restore, started, returned)
    # The command line prints the same figures, times as the log wrote them, and the page.
    out = d.cli("report", "-c", str(d.config), "--since", "10m", "--format", "markdown")
    assert out.returncode == 0, out.stderr
    offset = drain["t"] - first.t
    assert f"| drain decided | {drain['time']} | +{offset:.3f} s |" in out.stdout, out.stdout
    page = d.tmp / "incident.html"
    out = d.cli("report", "-c", str(d.config), "--site", "eu", "-o", str(page))
    assert out.returncode == 0, out.stderr
    html = page.read_text()
    assert '<svg class="timeline"' in html and "<script" not in html
    assert html.count('class="band fail"') >= 2
