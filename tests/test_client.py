"""The client side of the command line: rendering, and `trafficd run`'s log formats."""

from __future__ import annotations

import http.server
import io
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from trafficd.client import (
    EXIT_ERROR,
    EXIT_INVALID,
    ClientError,
    JSONFormatter,
    RedactingFilter,
    call,
    locate,
    render_event,
    render_status,
    tls_context,
)
from trafficd.config.secrets import Redactor


def _logger(formatter: logging.Formatter, redactor: Redactor) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter(redactor))
    logger = logging.getLogger("trafficd.test-client")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def test_json_log_lines_without_secrets() -> None:
    redactor = Redactor()
    redactor.add("s3cr3t-tsig-key-value")
    logger, out = _logger(JSONFormatter(), redactor)
    logger.warning("bind: update refused with key %s", "s3cr3t-tsig-key-value")
    record = json.loads(out.getvalue())
    assert record["level"] == "warning" and record["logger"] == "trafficd.test-client"
    assert "s3cr3t-tsig-key-value" not in out.getvalue()
    assert record["message"].startswith("bind: update refused with key ")
    assert record["time"].endswith("Z")


def test_text_log_lines_are_redacted_too() -> None:
    redactor = Redactor()
    redactor.add("another-long-secret")
    logger, out = _logger(logging.Formatter("%(message)s"), redactor)
    logger.info("token another-long-secret in %s", "a message")
    assert "another-long-secret" not in out.getvalue()
    assert out.getvalue().endswith("in a message\n")


def test_status_table_and_events() -> None:
    sites: list[dict[str, Any]] = [
        {
            "name": "eu",
            "state": "drained",
            "cause": "storage",
            "weight": 0,
            "since": None,
            "reasons": ["storage: location eustorage failed"],
            "override": None,
            "health": {"us-east": {"endtoend": {"ok": False, "reason": "storage"}}},
        },
        {
            "name": "us",
            "state": "active",
            "cause": None,
            "weight": 100,
            "since": None,
            "reasons": [],
            "override": {"kind": "hold", "who": "admin", "reason": "release"},
            "health": {},
        },
    ]
    table = render_status(sites).splitlines()
    assert table[0].split()[:6] == ["SITE", "STATE", "CAUSE", "WEIGHT", "STEP", "SINCE"]
    assert table[1].split()[:5] == ["eu", "drained", "storage", "0", "-"]
    assert "us-east: endtoend=FAIL(storage)" in table[1]
    assert "hold by admin: release" in table[2]
    line = render_event(
        {
            "time": "T",
            "kind": "transition",
            "site": "eu",
            "from": "active",
            "to": "draining",
            "reasons": ["r1", "r2"],
        }
    )
    assert line == "T  transition  eu: active -> draining  r1; r2"
    line = render_event(
        {"time": "T", "kind": "refused", "site": "eu", "rule": "min_active_sites", "reasons": ["x"]}
    )
    assert line == "T  refused     eu: refused by min_active_sites  x"


def test_status_shows_a_returning_sites_step_and_weight() -> None:
    site = {"name": "eu", "state": "active", "weight": 13, "return_step": 2, "return_percent": 50}
    assert render_status([site]).splitlines()[1].split()[:5] == [
        "eu",
        "active",
        "-",
        "13",
        "2",
    ]
    assert "2 (50%)" in render_status([site])


def test_status_shows_out_of_sync_targets_and_blocked_shutdowns() -> None:
    socket = "/run/haproxy/b.sock"
    held = f"lb {socket}: No such file or directory"
    sites: list[dict[str, Any]] = [
        {
            "name": "eu",
            "state": "draining",
            "cause": "manual",
            "weight": 0,
            "since": None,
            "reasons": [],
            "override": None,
            "health": {},
            "out_of_sync": [held],
            "shutdown_blocked": [held],
        },
        # The same socket serves us too: listed once.
        {"name": "us", "state": "active", "weight": 100, "out_of_sync": [held]},
    ]
    lines = render_status(sites).splitlines()
    assert lines[3:] == [
        "out of sync:",
        f"  {held}",
        f"eu: instances kept up, traffic not confirmed off: {held}",
    ]
    # All in sync: the table alone.
    assert render_status([{**sites[1], "out_of_sync": []}]).count("\n") == 1
    event = {"time": "T", "kind": "actuation", "actuator": "lb", "target": socket}
    assert (
        render_event({**event, "applied": [], "error": held})
        == f"T  actuation   lb {socket}: -  ERROR {held}"
    )
    blocked = {"time": "T", "kind": "shutdown_blocked", "site": "eu", "holders": [held]}
    assert render_event({**blocked, "blocked": True}) == (
        f"T  shutdown_blocked eu: instances kept up: {held}"
    )


def test_a_client_finds_the_daemon_without_the_configs_secrets(tmp_path: Path) -> None:
    # The S3 key and TSIG secret live in the daemon's environment, not the operator's.
    (tmp_path / "token").write_text("admin-token\n")
    config = tmp_path / "trafficd.yaml"
    config.write_text(
        "vantage: v\nlisten: 0.0.0.0:9790\napi_token_file: token\n"
        "storage:\n  us: [S3Storage, {s3_bucket: b, storage_path: /r, "
        "s3_access_key: ${env:NOT_SET_ANYWHERE}, s3_secret_key: ${file:/nonexistent}}]\n"
    )
    assert locate(None, str(config), None) == ("http://127.0.0.1:9790", "admin-token")
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [not, an, address]\n")
    with pytest.raises(ClientError) as caught:
        locate(None, str(bad), None)
    assert str(caught.value).endswith("bad.yaml:1: listen: HOST:PORT expected")


def test_tls_options_on_a_plain_url_are_refused() -> None:
    with pytest.raises(ClientError) as caught:
        tls_context("http://127.0.0.1:9780", "/etc/ssl/ca.pem", None, None)
    assert caught.value.code == EXIT_INVALID and "--ca-file" in str(caught.value)
    with pytest.raises(ClientError, match="go together"):
        tls_context("https://127.0.0.1:9780", None, "client.pem", None)
    with pytest.raises(ClientError, match="http:// or https://"):
        locate("127.0.0.1:9780", None, None)


def test_the_config_scheme_is_followed(tmp_path: Path) -> None:
    config = tmp_path / "trafficd.yaml"
    config.write_text("vantage: v\nlisten: 0.0.0.0:9790\ntls_cert_file: server.pem\n")
    assert locate(None, str(config), None)[0] == "https://127.0.0.1:9790"


def test_a_token_a_header_cannot_carry_is_refused_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # http.client's own error would quote the whole header, token and all.
    token_file = tmp_path / "token"
    token_file.write_text("secret-part\nsecond-line\n")
    with pytest.raises(ClientError) as caught:
        locate("http://127.0.0.1:9780", None, str(token_file))
    assert caught.value.code == EXIT_INVALID and str(token_file) in str(caught.value)
    assert "secret" not in str(caught.value) and "second" not in str(caught.value)
    monkeypatch.setenv("TRAFFICD_TOKEN", "secret-part\x01")
    with pytest.raises(ClientError) as caught:
        locate("http://127.0.0.1:9780", None, None)
    assert "TRAFFICD_TOKEN" in str(caught.value) and "secret" not in str(caught.value)


def test_a_redirect_is_not_followed_with_the_token(tmp_path: Path) -> None:
    """The API never redirects: following one would send the token elsewhere, over
    http:// too (TLS and its verification dropped without a word)."""
    seen: list[str | None] = []

    class Elsewhere(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    elsewhere = http.server.HTTPServer(("127.0.0.1", 0), Elsewhere)

    class Redirecting(Elsewhere):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{elsewhere.server_port}/x")
            self.send_header("Content-Length", "0")
            self.end_headers()

    redirecting = http.server.HTTPServer(("127.0.0.1", 0), Redirecting)
    threads = [
        threading.Thread(target=s.serve_forever, daemon=True) for s in (elsewhere, redirecting)
    ]
    for thread in threads:
        thread.start()
    try:
        with pytest.raises(ClientError) as caught:
            call(f"http://127.0.0.1:{redirecting.server_port}", "the-token", "GET", "/api/v1/sites")
    finally:
        for server in (elsewhere, redirecting):
            server.shutdown()
            server.server_close()
    assert seen == []
    assert caught.value.code == EXIT_ERROR and "redirect" in str(caught.value)
    assert "the-token" not in str(caught.value)
