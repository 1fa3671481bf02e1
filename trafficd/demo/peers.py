"""The real servers around trafficd in the demo (and the tests): BIND 9, HAProxy, Prometheus.

Outside the pipeline. Each class writes its server's configuration into its own
directory, binds only to 127.0.0.1 on ports given to it, starts the Debian
binary as its own process group and knows how to ask it what it holds now (the
DNS answer, HAProxy's admin state, a PromQL query). The demo keeps them running
across invocations by PID; the tests start and stop them per test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dns.message
import dns.query

TSIG_NAME = "trafficd-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def binary(name: str, package: str) -> str:
    """The Debian binary, or a clear error naming the package that provides it."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError(f"{name} not found: install the Debian package {package}")


def spawn(
    argv: Sequence[str], log: Path, env: dict[str, str] | None = None, user: str | None = None
) -> subprocess.Popen[bytes]:
    """Starts a process in its own group (so stopping it stops its children too)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            user=user,
            group=user,
        )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def stop_pid(pid: int, grace: float = 5.0) -> None:
    """SIGTERM to the process group, SIGKILL after `grace` seconds."""
    for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            if not alive(pid):
                return
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        stop_pid(proc.pid)
        proc.wait(timeout=5)


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")


def http_answers(url: str) -> bool:
    """Whether anything answers HTTP at `url` (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _started(proc: subprocess.Popen[bytes], what: str, check: Callable[[], bool]) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        return check()

    wait_until(what, ready, timeout=30)


class Bind:
    """BIND 9 as the primary for `zone`, dynamic updates allowed with one TSIG key.

    `records` are the zone's A records at start; the first is the name trafficd manages.
    """

    def __init__(self, directory: Path, zone: str, records: dict[str, list[str]]) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.zone = zone.rstrip(".") + "."
        self.name = f"{next(iter(records))}.{self.zone}"
        self.port = free_port()
        keygen = binary("tsig-keygen", "bind9-utils")
        out = subprocess.run(
            [keygen, "-a", "hmac-sha256", TSIG_NAME], capture_output=True, text=True, check=True
        ).stdout
        self.secret = out.split('secret "')[1].split('"')[0]
        (self.dir / "key.conf").write_text(out)
        (self.dir / "tsig.secret").write_text(self.secret + "\n")
        (self.dir / "tsig.secret").chmod(0o600)
        bare = self.zone.rstrip(".")
        (self.dir / "named.conf").write_text(f"""
include "{self.dir}/key.conf";
options {{
    directory "{self.dir}";
    pid-file "{self.dir}/named.pid";
    session-keyfile "{self.dir}/session.key";
    managed-keys-directory "{self.dir}";
    listen-on port {self.port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-query {{ 127.0.0.1; }};
    allow-transfer {{ none; }};
}};
controls {{ }};
zone "{bare}" {{
    type primary;
    file "{self.dir}/db.zone";
    allow-update {{ key "{TSIG_NAME}"; }};
}};
""")
        lines = [
            "$TTL 60",
            f"@ IN SOA ns1.{self.zone} hostmaster.{self.zone} ( 1 60 60 600 60 )",
            f"  IN NS ns1.{self.zone}",
            "ns1 IN A 127.0.0.1",
        ]
        for name, addresses in records.items():
            lines += [f"{name} IN A {address}" for address in addresses]
        (self.dir / "db.zone").write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [binary("named", "bind9"), "-g", "-c", str(self.dir / "named.conf")]

    def start(self) -> subprocess.Popen[bytes]:
        self.proc = spawn(self.argv(), self.dir / "named.log")
        _started(self.proc, "named", self._answers)
        return self.proc

    def _answers(self) -> bool:
        try:
            query = dns.message.make_query(self.zone, "SOA")
            dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2)
            return True
        except Exception:
            return False

    def addresses(self, rdtype: str = "A") -> set[str]:
        """What a plain DNS client is told for the managed name now (UDP query)."""
        return dns_addresses(self.port, self.name, rdtype)

    def rfc2136_section(self, secret: str, ident: str = "bind") -> dict[str, Any]:
        """An `rfc2136` actuator section for this server; `secret` as the config says it."""
        return {
            "type": "rfc2136",
            "id": ident,
            "server": f"127.0.0.1:{self.port}",
            "zone": self.zone,
            "name": self.name,
            "ttl": 30,
            "tsig": {"name": TSIG_NAME, "algorithm": "hmac-sha256", "secret": secret},
        }


def dns_addresses(port: int, name: str, rdtype: str = "A") -> set[str]:
    """The addresses a plain DNS client is told for `name` by the server on `port`."""
    query = dns.message.make_query(name, rdtype)
    answer = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
    return {rr.to_text() for rrset in answer.answer for rr in rrset}


class HAProxy:
    """HAProxy in front of the sites: one `quay` backend, an admin and a user-level socket."""

    def __init__(
        self, directory: Path, backends: dict[str, int], stats_port: int | None = None
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.frontend = free_port()
        self.backends = backends
        self.stats_port = stats_port
        self.admin_socket = str(self.dir / "admin.sock")
        self.user_socket = str(self.dir / "user.sock")
        servers = "\n".join(
            f"    server {name} 127.0.0.1:{port} weight 100" for name, port in backends.items()
        )
        stats = (
            f"frontend stats\n    bind 127.0.0.1:{stats_port}\n    stats enable\n"
            "    stats uri /\n    stats refresh 2s\n"
            if stats_port
            else ""
        )
        (self.dir / "haproxy.cfg").write_text(f"""
global
    stats socket {self.admin_socket} mode 600 level admin
    stats socket {self.user_socket} mode 600 level user
    pidfile {self.dir}/haproxy.pid
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    option http-server-close
frontend fe
    bind 127.0.0.1:{self.frontend}
    default_backend quay
{stats}backend quay
    balance roundrobin
{servers}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [binary("haproxy", "haproxy"), "-db", "-f", str(self.dir / "haproxy.cfg")]

    def start(self) -> subprocess.Popen[bytes]:
        # A socket file left by an earlier run would look ready before HAProxy listens.
        for path in (self.admin_socket, self.user_socket):
            Path(path).unlink(missing_ok=True)
        self.proc = spawn(self.argv(), self.dir / "haproxy.log")
        _started(self.proc, "haproxy", self._accepts)
        return self.proc

    def _accepts(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(self.admin_socket)
        except OSError:
            return False
        return http_answers(f"http://127.0.0.1:{self.frontend}/")

    def admin_states(self, backend: str = "quay") -> dict[str, int]:
        return haproxy_admin_states(self.admin_socket, backend)

    def weights(self, backend: str = "quay") -> dict[str, int]:
        return haproxy_weights(self.admin_socket, backend)


def _servers_state(admin_socket: str, backend: str) -> list[list[str]]:
    """The rows of `show servers state BACKEND`: be_id be_name srv_id srv_name srv_addr
    srv_op_state srv_admin_state srv_uweight ..."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(admin_socket)
        s.sendall(f"show servers state {backend}\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [line.split() for line in data.decode().splitlines()[2:] if line.strip()]


def haproxy_admin_states(admin_socket: str, backend: str = "quay") -> dict[str, int]:
    """srv_admin_state of each server of `backend`, from `show servers state` (0 = ready)."""
    return {f[3]: int(f[6]) for f in _servers_state(admin_socket, backend) if len(f) > 6}


def haproxy_weights(admin_socket: str, backend: str = "quay") -> dict[str, int]:
    """The weight HAProxy holds for each server of `backend` (srv_uweight, what `set
    server B/S weight` sets)."""
    return {f[3]: int(f[7]) for f in _servers_state(admin_socket, backend) if len(f) > 7}


class Prometheus:
    """Debian's Prometheus scraping trafficd every second, with trafficd's alert rules."""

    def __init__(self, directory: Path, targets: list[str], rules: Path | None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)] if rules else [],
            "scrape_configs": [{"job_name": "trafficd", "static_configs": [{"targets": targets}]}],
        }
        (self.dir / "prometheus.yml").write_text(json.dumps(config, indent=1))  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        return [
            binary("prometheus", "prometheus"),
            f"--config.file={self.dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    def start(self) -> subprocess.Popen[bytes]:
        self.proc = spawn(self.argv(), self.dir / "prometheus.log")
        _started(self.proc, "prometheus", lambda: http_answers(f"{self.url}/-/ready"))
        return self.proc

    def query(self, expr: str, **params: float | str) -> list[Any]:
        return promql(self.url, expr, **params)


def promql(url: str, expr: str, **params: float | str) -> list[Any]:
    """An instant query (a range query when start/end/step are given) through the HTTP API."""
    path = "query_range" if "start" in params else "query"
    args = urllib.parse.urlencode({"query": expr, **params})
    with urllib.request.urlopen(f"{url}/api/v1/{path}?{args}", timeout=10) as resp:  # noqa: S310
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise RuntimeError(f"prometheus: {expr}: {body}")
    return list(body["data"]["result"])


def _postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not versions:
        raise RuntimeError("postgres not found: install the Debian package postgresql")
    return versions[-1].parent


class Postgres:
    """A PostgreSQL cluster of its own in `directory`, on 127.0.0.1, password login over TCP.

    As root it runs as the `postgres` user (PostgreSQL refuses root), so `directory`
    is handed to that user.
    """

    def __init__(self, directory: Path, password: str) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self._user = "postgres" if os.geteuid() == 0 else None

    def _own(self, path: Path) -> None:
        if self._user:
            shutil.chown(path, self._user, self._user)

    def start(self) -> subprocess.Popen[bytes]:
        bindir = _postgres_bin()
        data = self.dir / "data"
        self._own(self.dir)
        self.dir.chmod(0o700)
        if not data.exists():
            pwfile = self.dir / "pw"
            pwfile.write_text(self.password + "\n")
            self._own(pwfile)
            initdb = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                check=False,
                capture_output=True,
                text=True,
                user=self._user,
                group=self._user,
                cwd=self.dir,
            )
            pwfile.unlink()
            if initdb.returncode != 0:
                raise RuntimeError(f"initdb failed: {initdb.stderr.strip()}")
        log = self.dir / "postgres.log"
        log.touch()
        self._own(log)
        argv = [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(self.port),
            "-k",
            str(self.dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
        ]
        self.proc = spawn(argv, log, user=self._user)
        _started(self.proc, "postgres", self._accepts)
        return self.proc

    def _accepts(self) -> bool:
        out = subprocess.run(
            [str(_postgres_bin() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
            check=False,
        )
        return out.returncode == 0

    def stop(self) -> None:
        """A fast shutdown (SIGINT: clients are disconnected, the data is consistent)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    stop(self.proc)
            self.proc = None

    def dsn(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"
