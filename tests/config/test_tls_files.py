"""check-config on the listeners' TLS files: pairs, loadable files, keys nobody else reads.

The files are made by trustme in the test; every problem is `FILE:LINE: key.path: message`
through `trafficd check-config`, as an operator sees it.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from trafficd.cli import main
from trafficd.config import ConfigError, load

BASE = """vantage: v
storage:
  us: [LocalStorage, {storage_path: /tmp/us}]
sites:
  us: {url: "https://q.test", connect: "127.0.0.1:1", storage: [us]}
"""


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(tmp_path / "server.pem")
    (tmp_path / "server.key").touch(mode=0o600)
    leaf.private_key_pem.write_to_path(tmp_path / "server.key")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    return tmp_path


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = main(["check-config", "-c", str(path)])
    return code, capsys.readouterr().err.splitlines()


def test_tls_files_that_load_pass(tls_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tls_dir / "c.yaml"
    path.write_text(
        BASE + "tls_cert_file: server.pem\ntls_key_file: server.key\n"
        "tls_client_ca_file: ca.pem\nmetrics_listen: 127.0.0.1:9781\n"
        f"metrics_tls_cert_file: {tls_dir}/server.pem\nmetrics_tls_key_file: server.key\n"
        'api_tokens:\n  - {name: ops, role: admin, subject: "CN=ops"}\n'
    )
    assert check(path, capsys)[0] == 0
    assert load(path).api_tokens[0].token is None


def test_a_key_readable_by_others_is_an_error(
    tls_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tls_dir / "server.key").chmod(0o644)
    path = tls_dir / "c.yaml"
    path.write_text(BASE + "tls_cert_file: server.pem\ntls_key_file: server.key\n")
    code, err = check(path, capsys)
    assert code == 2
    assert err == [
        f"{path}:7: tls_key_file: server.key is readable by others (mode 0644): chmod o-rwx it"
    ]
    (tls_dir / "server.key").chmod(0o640)  # the group (a Secret's fsGroup) may read it
    assert check(path, capsys)[0] == 0


def test_tls_problems_name_their_key(tls_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tls_dir / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nnot one\n")
    path = tls_dir / "c.yaml"
    path.write_text(
        BASE + "tls_cert_file: bad.pem\ntls_key_file: server.key\n"
        "metrics_tls_cert_file: server.pem\n"
        "tls_client_ca_file: missing.pem\n"
    )
    with pytest.raises(ConfigError) as caught:
        load(path)
    problems = {(p.line, p.path, p.message.split(":")[0]) for p in caught.value.problems}
    assert problems == {
        (8, "metrics_tls_cert_file", "needs metrics_tls_key_file too"),
        (6, "tls_cert_file", "cannot load bad.pem with server.key"),
        (9, "tls_client_ca_file", "cannot load missing.pem"),
    }


def test_a_subject_needs_mutual_tls(tls_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tls_dir / "c.yaml"
    path.write_text(BASE + 'api_tokens:\n  - {name: ops, role: read, subject: "CN=ops"}\n')
    code, err = check(path, capsys)
    assert code == 2
    assert err == [f"{path}:7: api_tokens[0].subject: needs tls_client_ca_file (mutual TLS)"]
    path.write_text(BASE + "api_tokens:\n  - {name: ops, role: read}\n")
    code, err = check(path, capsys)
    assert err == [f"{path}:7: api_tokens[0].token: required (or a client certificate subject)"]


def test_an_encrypted_key_is_an_error_not_a_prompt(tls_dir: Path) -> None:
    """OpenSSL asks a terminal for an encrypted key's passphrase: check-config (and the
    daemon, on SIGHUP, its event loop) would wait on it. Run on a terminal, it must not."""
    key = serialization.load_pem_private_key((tls_dir / "server.key").read_bytes(), None)
    (tls_dir / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    path = tls_dir / "c.yaml"
    path.write_text(BASE + "tls_cert_file: server.pem\ntls_key_file: server.key\n")
    pid, terminal = pty.fork()
    if pid == 0:  # the child, on the terminal
        os.execv(  # noqa: S606 - this test's own interpreter
            sys.executable, [sys.executable, "-m", "trafficd.cli", "check-config", "-c", str(path)]
        )
    output, end = b"", time.monotonic() + 20
    try:
        while time.monotonic() < end and b"\n" not in output.strip():
            if select.select([terminal], [], [], 0.2)[0]:
                try:
                    chunk = os.read(terminal, 4096)
                except OSError:  # the child has exited
                    break
                output += chunk
                if not chunk or b"pass phrase" in output:
                    break
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(terminal)
    assert b"pass phrase" not in output
    assert output.decode().strip() == (
        f"{path}:7: tls_key_file: server.key is encrypted: give it without a passphrase"
    )
