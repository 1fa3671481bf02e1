"""The HTTP API in process: routes, tokens, errors, the public listener, manual commands.

The API is served from a runtime (runtime/wiring.py: its views and commands), with no
daemon around it: its engine, store and metrics are real; observations are fed by
hand and rounds run with an explicit `now`, so every answer is deterministic.
The end-to-end test (tests/e2e) covers the same API through a running process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from trafficd.api import (
    MAX_BODY,
    MAX_PEERS,
    FailureBuckets,
    Token,
    authenticate,
    build_apps,
    load_tokens,
)
from trafficd.config import load
from trafficd.daemon import Daemon
from trafficd.model import Observation, Probe
from trafficd.runtime.commands import Command
from trafficd.runtime.wiring import Runtime
from trafficd.simulate import read_timeline
from trafficd.store import read_events

ADMIN, READ = "admin-token-0123456789abcdef", "read-token-0123456789abcdef"
T0 = 1_800_000_000.0
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


def write_config(tmp: Path, extra: str = "") -> Path:
    (tmp / "token").write_text(ADMIN + "\n")
    (tmp / "read").write_text(READ + "\n")
    path = tmp / "trafficd.yaml"
    path.write_text(f"""
vantage: test
state_dir: state
api_token_file: token
api_tokens:
  - {{name: grafana, role: read, token: "${{file:read}}"}}
storage:
  usstorage: [LocalStorage, {{storage_path: {tmp}/us}}]
  eustorage: [LocalStorage, {{storage_path: {tmp}/eu}}]
sites:
  us: {{url: "http://q.test", connect: "127.0.0.1:1", storage: [usstorage],
        addresses: [192.0.2.10]}}
  eu: {{url: "http://q.test", connect: "127.0.0.1:2", storage: [eustorage],
        addresses: [192.0.2.20]}}
probes: {{interval: 1s, timeout: 500ms}}
policy: {{fall: 2, rise: 2, hold_down: 0s, min_active_sites: 1}}
{extra}
""")
    return path


class Observer(Protocol):
    def observe(self, obs: Observation) -> None: ...


def healthy(observer: Observer, t: float, *, eu_storage: bool = True) -> None:
    for site in ("us", "eu"):
        services = {"auth": True, "database": True, "redis": True, "storage": True}
        if site == "eu" and not eu_storage:  # corroborated by eu's own endtoend
            bad = {**services, "storage": False}
            observer.observe(
                Observation(t, "test", Probe.ENDTOEND, site, False, 503, "storage", bad)
            )
        else:
            observer.observe(
                Observation(t, "test", Probe.ENDTOEND, site, True, 200, None, services)
            )
        observer.observe(Observation(t, "test", Probe.INSTANCE, site, True, 200))
    for loc in ("usstorage", "eustorage"):
        up = eu_storage or loc != "eustorage"
        observer.observe(
            Observation(t, "test", Probe.STORAGE, loc, up, reason=None if up else "connect")
        )


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    path = write_config(tmp_path)
    r = Runtime.open(load(path), path)
    yield r
    r.store.close()


Apps = tuple[web.Application, web.Application | None]


def served(runtime: Runtime, *, public_separate: bool) -> Apps:
    """The API's apps on the runtime, with the tokens of its configuration file."""
    path = runtime.state_dir.parent / "trafficd.yaml"  # write_config's
    tokens = load_tokens(runtime.live.config, path)
    return build_apps(runtime, lambda: tokens, public_separate=public_separate)


@pytest.fixture
async def api(runtime: Runtime, aiohttp_client: MakeClient) -> Client:
    main, public = served(runtime, public_separate=False)
    assert public is None
    return await aiohttp_client(main)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_readiness_and_verdicts(runtime: Runtime, api: Client) -> None:
    assert (await api.get("/healthz")).status == 503  # loops not running yet
    assert (await api.get("/readyz")).status == 503
    runtime.alive = True
    healthy(runtime, T0)
    runtime.leader.tick(T0)
    assert (await api.get("/healthz")).status == 200
    assert (await api.get("/readyz")).status == 200
    resp = await api.get("/sites/eu/verdict")
    assert resp.status == 200 and await resp.text() == "active\n"
    resp = await api.get("/sites/nowhere/verdict")
    assert resp.status == 404 and await resp.json() == {"error": "unknown site 'nowhere'"}
    metrics = await (await api.get("/metrics")).text()
    assert 'trafficd_site_state{site="eu",state="active"} 1.0' in metrics


async def test_tokens(runtime: Runtime, api: Client) -> None:
    assert (await api.get("/api/v1/sites")).status == 401
    resp = await api.get("/api/v1/sites", headers=auth("wrong"))
    assert resp.status == 401
    assert await resp.json() == {"error": "missing or unknown bearer token"}
    resp = await api.get("/api/v1/sites", headers={"Authorization": f"Basic {READ}"})
    assert resp.status == 401
    assert (await api.get("/api/v1/sites", headers=auth(READ))).status == 200
    resp = await api.post("/api/v1/pause", headers=auth(READ), json={"reason": "x"})
    assert resp.status == 403 and await resp.json() == {"error": "token 'grafana' may only read"}
    assert runtime.rounds.pause is None

    # Every failure counted by route (each guarded route's series starts at 0); a 403 is not one.
    def failures(route: str) -> float | None:
        return runtime.metrics.registry.get_sample_value(
            "trafficd_api_auth_failures_total", {"route": route}
        )

    assert failures("/api/v1/sites") == 3
    assert failures("/api/v1/pause") == 0 and failures("/api/v1/sites/{site}/drain") == 0


async def test_bad_input(runtime: Runtime, api: Client) -> None:
    healthy(runtime, T0)
    runtime.leader.tick(T0)
    h = auth(ADMIN)
    resp = await api.post("/api/v1/sites/eu/drain", headers=h, data=b"{not json")
    assert resp.status == 400 and await resp.json() == {"error": "body is not JSON"}
    resp = await api.post("/api/v1/sites/eu/drain", headers=h, json=["reason"])
    assert resp.status == 400 and await resp.json() == {"error": "body must be a JSON object"}
    resp = await api.post("/api/v1/sites/eu/drain", headers=h, json={"reason": " "})
    assert resp.status == 400
    assert await resp.json() == {"error": "reason: a non-empty string is required"}
    resp = await api.post("/api/v1/sites/eu/drain", headers=h, json={"reason": "x", "for": "soon"})
    assert resp.status == 400 and "soon" in (await resp.json())["error"]
    # A flag that is not a JSON boolean: refused, never taken as true (issue 19 review).
    resp = await api.post(
        "/api/v1/sites/eu/drain", headers=h, json={"reason": "x", "force": "false"}
    )
    assert resp.status == 400 and (await resp.json())["error"].startswith("force: ")
    assert runtime.rounds.overrides == {}
    resp = await api.post("/api/v1/sites/mars/drain", headers=h, json={"reason": "x"})
    assert resp.status == 404 and await resp.json() == {"error": "unknown site 'mars'"}
    resp = await api.post(
        "/api/v1/sites/eu/drain", headers=h, data=b'{"reason": "' + b"x" * MAX_BODY + b'"}'
    )
    assert resp.status == 413
    assert await resp.json() == {"error": f"request body larger than {MAX_BODY} bytes"}
    assert (await api.get("/api/v1/nothing", headers=h)).status == 404
    assert runtime.rounds.overrides == {}


async def test_manual_drain_refusal_undrain_and_events(runtime: Runtime, api: Client) -> None:
    healthy(runtime, T0)
    runtime.leader.tick(T0)
    h = auth(ADMIN)
    resp = await api.post(
        "/api/v1/sites/us/drain", headers=h, json={"reason": "maintenance", "for": "30m"}
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["state"] == "draining"
    assert runtime.rounds.overrides["us"].who == "admin"
    assert runtime.rounds.overrides["us"].expires == pytest.approx(
        runtime.rounds.overrides["us"].at + 1800
    )
    # Draining eu too would leave no active site: refused with the rule's name, nothing stored.
    resp = await api.post("/api/v1/sites/eu/drain", headers=h, json={"reason": "also"})
    assert resp.status == 409
    body = await resp.json()
    assert body["rule"] == "min_active_sites" and body["error"].startswith(
        "drain of eu refused by min_active_sites"
    )
    assert "eu" not in runtime.rounds.overrides
    sites = {
        s["name"]: s for s in (await (await api.get("/api/v1/sites", headers=h)).json())["sites"]
    }
    assert sites["us"]["state"] == "draining" and sites["us"]["cause"] == "manual"
    assert sites["us"]["override"]["reason"] == "maintenance"
    assert sites["eu"]["health"]["test"]["endtoend"]["ok"] is True
    assert (await api.post("/api/v1/sites/us/undrain", headers=h)).status == 200
    assert "us" not in runtime.rounds.overrides
    events = (await (await api.get("/api/v1/events", headers=auth(READ))).json())["events"]
    kinds = [(e["kind"], e.get("rule") or e.get("action") or e.get("to")) for e in events]
    assert ("manual", "drain") in kinds and ("refused", "min_active_sites") in kinds
    assert ("manual", "undrain") in kinds
    assert ("transition", "draining") in kinds


async def test_pause_and_hands_off(runtime: Runtime, api: Client) -> None:
    h = auth(ADMIN)
    resp = await api.post(
        "/api/v1/pause", headers=h, json={"reason": "dns migration", "hands_off": True}
    )
    assert resp.status == 200 and (await resp.json())["paused"] is True
    assert (
        runtime.rounds.pause is not None
        and runtime.rounds.pause.hands_off
        and runtime.rounds.pause.who == "admin"
    )
    assert (await api.post("/api/v1/resume", headers=h)).status == 200
    assert runtime.rounds.pause is None


async def test_public_listener_serves_only_public_routes(
    runtime: Runtime, aiohttp_client: MakeClient
) -> None:
    _, public = served(runtime, public_separate=True)
    assert public is not None
    client = await aiohttp_client(public)
    assert (await client.get("/metrics")).status == 200
    verdict = await client.get("/sites/eu/verdict")  # no decision, no saved state yet
    assert verdict.status == 503 and await verdict.text() == "unknown\n"
    resp = await client.get("/api/v1/sites", headers=auth(ADMIN))
    assert resp.status == 404 and (await resp.json())["error"] == "no route /api/v1/sites"
    resp = await client.post("/api/v1/pause", headers=auth(ADMIN), json={"reason": "x"})
    assert resp.status in (404, 405)


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    first = Daemon(path, load(path))
    healthy(first.runtime, T0)
    first.runtime.leader.tick(T0)
    await first.runtime.commands.execute(
        Command.parse("drain", "eu", "admin", {"reason": "maintenance", "stop_instances": True})
    )
    for r in range(1, 4):  # the manual drain goes on to drained after shutdown_grace (60 s)
        healthy(first.runtime, T0 + 60 * r)
        first.runtime.leader.tick(T0 + 60 * r)
    assert first.runtime.rounds.engine.site("eu").state.value == "drained"
    first.store.close()
    second = Daemon(path, load(path))  # what `trafficd run` does at start
    assert second.runtime.rounds.engine.site("eu").state.value == "drained"
    assert second.runtime.rounds.overrides["eu"].reason == "maintenance"
    healthy(second.runtime, T0 + 300)
    decision = second.runtime.leader.tick(T0 + 300)
    assert decision.sites["eu"].state.value == "drained"
    assert decision.sites["eu"].instances == "stopped"
    assert decision.transitions == ()
    second.store.close()


async def test_audit_log_replays_through_simulate(runtime: Runtime) -> None:
    for r in range(6):
        healthy(runtime, T0 + r, eu_storage=r < 2)
        runtime.leader.tick(T0 + r)
    lines = [json.dumps(e) for e in read_events(runtime.store.dir)]
    observations = read_timeline(lines, "events.jsonl")
    # Only changes are logged: the first healthy round, then eu's two failing probes.
    assert len(observations) == 6 + 2
    transition = next(e for e in map(json.loads, lines) if e["kind"] == "transition")
    assert transition["t"] == T0 + 3  # stamped with its round's time: fall = 2
    assert any(e["kind"] == "transition" and e["site"] == "eu" for e in map(json.loads, lines))


def test_failure_buckets_slow_one_peer_only() -> None:
    now = [0.0]
    buckets = FailureBuckets(burst=3, rate=2.0, max_delay=5.0, clock=lambda: now[0])
    assert [buckets.fail("a") for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert buckets.fail("a") == pytest.approx(0.5)  # one token short, at 2 a second
    assert buckets.fail("a") == pytest.approx(1.0)
    assert buckets.fail("b") == 0.0  # another peer has its own bucket
    for _ in range(100):
        delay = buckets.fail("a")
    assert delay == pytest.approx(5.0)  # the debt is bounded: at most max_delay
    now[0] = 100.0  # regained, up to the burst
    assert [buckets.fail("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.fail("a") > 0


def test_failure_buckets_remember_a_bounded_number_of_peers() -> None:
    buckets = FailureBuckets(burst=1, rate=1.0, max_delay=1.0, clock=lambda: 0.0)
    buckets.fail("first")
    for i in range(MAX_PEERS):
        buckets.fail(f"10.0.{i // 256}.{i % 256}")
    assert len(buckets._peers) == MAX_PEERS
    assert buckets.fail("first") == 0.0  # forgotten: the oldest went first


def test_an_empty_bearer_token_matches_no_token() -> None:
    """Even an empty configured token (check-config refuses one) is never "Bearer " alone."""
    tokens = [Token("empty", "admin", ""), Token("ops", "admin", "s3cret")]
    assert authenticate(tokens, "Bearer ") is None
    assert authenticate(tokens, "Bearer    ") is None
    assert authenticate(tokens, "Bearer s3cret") == tokens[1]
