"""The verdict before the first decision (daemon.py's view, api.py's route), on `trafficd run`.

A load balancer or a DNS health check follows `/sites/{site}/verdict` from the
moment the process listens. Before the engine has decided anything the saved
state answers: eu, drained by hand in state.json, is 503 `drained` from the first
request; a site the saved state does not know is 503 `unknown`; `/readyz` is 503
all along. Two cases: the coordination store unreachable (no decision ever comes),
and a single instance right after a restart (until its first round).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.peers import free_port, stop
from tests.test_api import write_config
from trafficd.model import Cause, EngineState, Override, SiteMemory, State
from trafficd.store import Store

REPO = Path(__file__).resolve().parents[1]
T0 = time.time() - 3600  # the drain began an hour ago


def get(url: str) -> tuple[int, str] | None:
    """(status, body); None while nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()
    except (urllib.error.URLError, ConnectionError):
        return None


def save_drained_eu(tmp: Path, *, us_known: bool) -> None:
    """state.json as a daemon leaves it with eu drained by hand (and us active)."""
    sites = {"eu": SiteMemory(State.DRAINED, Cause.MANUAL, since=T0, drained_at=T0)}
    if us_known:
        sites["us"] = SiteMemory(State.ACTIVE, since=T0 - 86400, active_since=T0 - 86400)
    store = Store(tmp / "state")
    try:
        drain = Override("drain", "maintenance", "ops", T0)
        store.save(EngineState(sites=sites, last_round=T0), {"eu": drain}, None, {})
    finally:
        store.close()


def start(tmp: Path, port_url: str, extra: str) -> subprocess.Popen[bytes]:
    port = port_url.rsplit(":", 1)[1]
    path = write_config(tmp, f"listen: 127.0.0.1:{port}\n{extra}")
    with (tmp / "trafficd.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "trafficd.cli", "run", "-c", str(path)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def first_answers(
    url: str, paths: list[str], polls: int, gap: float
) -> list[dict[str, tuple[int, str]]]:
    """From the first moment the API answers: `polls` rounds of every path."""
    end = time.monotonic() + 20
    while get(url + "/healthz") is None:
        assert time.monotonic() < end, "trafficd never listened"
        time.sleep(0.01)
    rounds = []
    for _ in range(polls):
        answers = {}
        for path in paths:
            answer = get(url + path)
            assert answer is not None
            answers[path] = answer
        rounds.append(answers)
        time.sleep(gap)
    return rounds


PATHS = ["/sites/eu/verdict", "/sites/us/verdict", "/readyz"]


def test_with_the_store_unreachable_the_saved_state_answers(tmp_path: Path) -> None:
    save_drained_eu(tmp_path, us_known=False)
    url = f"http://127.0.0.1:{free_port()}"
    proc = start(
        tmp_path,
        url,
        "vantages: [test, b]\n"
        "coordination: {backend: redis, urls: ['redis://127.0.0.1:1/0'], lease: 2s}\n",
    )
    try:
        rounds = first_answers(url, PATHS, polls=8, gap=0.3)  # across 2 intervals and more
    finally:
        stop(proc)
    for answers in rounds:
        assert answers["/sites/eu/verdict"] == (503, "drained")
        assert answers["/sites/us/verdict"] == (503, "unknown")  # not in the saved state
        assert answers["/readyz"][0] == 503


def test_a_single_instance_right_after_restart_answers_from_the_saved_state(
    tmp_path: Path,
) -> None:
    save_drained_eu(tmp_path, us_known=True)
    url = f"http://127.0.0.1:{free_port()}"
    proc = start(tmp_path, url, "")
    try:
        rounds = first_answers(url, PATHS, polls=6, gap=0.05)
        # Once decided: eu is still drained by hand.
        end = time.monotonic() + 10
        while get(url + "/readyz") != (200, '{"status": "ready"}'):
            assert time.monotonic() < end, "never ready"
            time.sleep(0.05)
        assert get(url + "/sites/eu/verdict") == (503, "drained")
    finally:
        stop(proc)
    for answers in rounds:
        assert answers["/sites/eu/verdict"] == (503, "drained")
        assert answers["/sites/us/verdict"] == (200, "active")
    assert rounds[0]["/readyz"][0] == 503  # one interval (1 s) to the first full round
