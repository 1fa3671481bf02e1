"""The Quay endpoint prober against a local app with Quay's exact bodies, over http and TLS."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from tests.peers import free_port
from tests.probers.quay_app import DEBUG_SECRET, HEALTHY, QuayApp, quay_body
from trafficd.config.model import Probes, Site
from trafficd.demo.quay import endpoint_unreachable, non_preferred_unavailable, preferred_failed
from trafficd.model import Observation, Probe
from trafficd.probers.quay import QuayProber, SiteEndpoint, _Cookies, make_session, storage_faults


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


class Server:
    def __init__(self, quay: QuayApp, port: int, runner: web.AppRunner) -> None:
        self.quay, self.port, self.runner = quay, port, runner


async def serve(quay: QuayApp, ssl_context: Any = None) -> Server:
    runner = web.AppRunner(quay.app(), shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    return Server(quay, port, runner)


@pytest.fixture
async def servers() -> AsyncIterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.quay.release.set()
        await s.runner.cleanup()


async def run_probe(
    port: int,
    kind: Probe = Probe.ENDTOEND,
    *,
    url: str = "http://quay.example.com",
    timeout: float = 1.0,
    **probes: Any,
) -> Any:
    site = Site(url=url, connect=f"127.0.0.1:{port}", storage=["x"])
    settings = Probes(interval=f"{timeout * 2}s", timeout=f"{timeout}s", **probes)
    async with make_session() as session:
        prober = QuayProber(
            SiteEndpoint.from_site("eu", site), settings, session, vantage="us-east"
        )
        start = time.monotonic()
        obs = await prober.probe(kind)
        return obs, time.monotonic() - start


async def test_healthy_site(servers: list[Server]) -> None:
    server = await serve(QuayApp())
    servers.append(server)
    for kind in (Probe.ENDTOEND, Probe.INSTANCE):
        obs, _ = await run_probe(server.port, kind)
        assert obs.ok is True
        assert obs.status == 200
        assert obs.services == {"auth": True, "database": True, "redis": True, "storage": True}
        assert obs.probe is kind and obs.subject == "eu" and obs.vantage == "us-east"
        assert obs.latency is not None and obs.latency > 0
    assert server.quay.hosts == ["quay.example.com", "quay.example.com"]


@pytest.mark.parametrize(
    ("services", "reason"),
    [
        ({"storage": False}, "storage"),
        ({"database": False}, "shared_dependency"),
        ({"redis": False}, "shared_dependency"),
        ({"storage": False, "redis": False}, "storage,shared_dependency"),
        ({"auth": False}, "unhealthy"),
    ],
)
async def test_failed_services_are_classified(
    servers: list[Server], services: dict[str, bool], reason: str
) -> None:
    quay = QuayApp()
    quay.services.update(services)
    server = await serve(quay)
    servers.append(server)
    obs, _ = await run_probe(server.port)
    assert (obs.ok, obs.status, obs.reason) == (False, 503, reason)
    assert obs.services == quay.services


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ((503, b"<html>Service Unavailable</html>", {}), "unparsable"),
        ((200, b'{"data": {"services": "yes"}}', {}), "unparsable"),
        ((503, b"{not json", {}), "unparsable"),
        # Nested past json's recursion limit, yet under the body limit: a failed probe
        # (before: RecursionError, an unknown observation instead of a failure).
        ((200, b"[" * 60_000, {}), "unparsable"),
        ((200, quay_body({"storage": True}) + b" " * 70_000, {}), "oversized"),
        ((302, b"", {"Location": "https://elsewhere.example.com/"}), "redirect"),
        ((502, b"Bad gateway", {}), "http_502"),
    ],
)
async def test_malformed_oversized_and_redirected_answers_fail(
    servers: list[Server], raw: tuple[int, bytes, dict[str, str]], reason: str
) -> None:
    server = await serve(QuayApp(raw=raw))
    servers.append(server)
    obs, _ = await run_probe(server.port)
    assert (obs.ok, obs.reason) == (False, reason)
    assert len(server.quay.hosts) == 1  # no redirect followed


async def test_a_hung_endtoend_is_a_timeout_within_the_bound(servers: list[Server]) -> None:
    server = await serve(QuayApp(hang=True))
    servers.append(server)
    obs, elapsed = await run_probe(server.port, timeout=0.5)
    assert (obs.ok, obs.reason) == (False, "timeout")
    assert elapsed < 0.5 + 0.1


async def test_connection_refused() -> None:
    obs, _ = await run_probe(free_port())
    assert (obs.ok, obs.reason) == (False, "connect")


async def test_tls_with_host_and_sni_of_the_global_name(
    servers: list[Server], ca: trustme.CA, ca_file: str
) -> None:
    quay = QuayApp()
    cert = ca.issue_cert("quay.example.com")
    server = await serve(quay, quay.server_context(cert))
    servers.append(server)
    obs, _ = await run_probe(server.port, url="https://quay.example.com", tls_ca_file=ca_file)
    assert obs.ok is True, obs
    assert quay.snis == ["quay.example.com"]
    assert quay.hosts == ["quay.example.com"]


async def test_tls_certificate_for_another_name_fails(
    servers: list[Server], ca: trustme.CA, ca_file: str
) -> None:
    quay = QuayApp()
    server = await serve(quay, quay.server_context(ca.issue_cert("other.example.com")))
    servers.append(server)
    obs, _ = await run_probe(server.port, url="https://quay.example.com", tls_ca_file=ca_file)
    assert (obs.ok, obs.reason) == (False, "tls")
    assert quay.hosts == []


async def test_tls_is_verified_by_default(servers: list[Server], ca: trustme.CA) -> None:
    quay = QuayApp()
    server = await serve(quay, quay.server_context(ca.issue_cert("quay.example.com")))
    servers.append(server)
    obs, _ = await run_probe(server.port, url="https://quay.example.com")  # system CAs only
    assert (obs.ok, obs.reason) == (False, "tls")
    insecure, _ = await run_probe(server.port, url="https://quay.example.com", tls_insecure=True)
    assert insecure.ok is True


async def test_debug_mode_keeps_the_failure_text(servers: list[Server]) -> None:
    quay = QuayApp()
    quay.services["storage"] = False
    quay.expanded = {
        "storage": {"status": False, "failure": "S3 error: connect timeout on quay-eu"},
        "auth": {"status": True},
    }
    server = await serve(quay)
    servers.append(server)
    obs, _ = await run_probe(server.port, debug_secret=DEBUG_SECRET)
    assert obs.ok is False
    assert obs.detail == "storage: S3 error: connect timeout on quay-eu"
    plain, _ = await run_probe(server.port)
    assert plain.detail is None


# --- debug mode: Quay's session cookie, one enable per session ---------------------------


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def debug_prober(
    session: Any, port: int, clock: FakeClock, *, timeout: float = 1.0, secret: str = DEBUG_SECRET
) -> QuayProber:
    site = Site(url="http://quay.example.com", connect=f"127.0.0.1:{port}", storage=["x"])
    settings = Probes(interval=f"{timeout * 2}s", timeout=f"{timeout}s", debug_secret=secret)
    return QuayProber(
        SiteEndpoint.from_site("eu", site), settings, session, vantage="v", clock=clock
    )


PREFERRED_EU = preferred_failed("eu", endpoint_unreachable("http://127.0.0.1:1/eu/_verify"))


async def test_debug_mode_is_enabled_once_per_session(servers: list[Server]) -> None:
    quay = QuayApp(services={**HEALTHY, "storage": False}, texts={"storage": PREFERRED_EU})
    server = await serve(quay)
    servers.append(server)
    clock = FakeClock()
    async with make_session() as session:
        prober = debug_prober(session, server.port, clock)
        seen = []
        for i in range(40):
            clock.now += 0.5
            seen.append(await prober.probe(Probe.ENDTOEND if i % 2 else Probe.INSTANCE))
        prober.close()
    # Before: one enable per probe, since no `health_debug` cookie ever came back.
    assert quay.enables == prober.enables == 1
    assert all(o.detail == f"storage: {PREFERRED_EU}" for o in seen), seen[:2]
    assert all(o.service_texts == {"storage": PREFERRED_EU} for o in seen)
    assert all(o.storage_faults == {"eu": "preferred"} for o in seen)
    # Quay's session cookie went back with every probe; no cookie of another name exists.
    assert all(c is not None and c.startswith("_csrf_token=") for c in quay.cookies), quay.cookies
    assert len(set(quay.cookies)) == 1


async def test_debug_mode_is_enabled_again_after_quay_restarts(servers: list[Server]) -> None:
    quay = QuayApp(services={**HEALTHY, "storage": False}, texts={"storage": PREFERRED_EU})
    server = await serve(quay)
    servers.append(server)
    clock = FakeClock()
    async with make_session() as session:
        prober = debug_prober(session, server.port, clock)
        for _ in range(5):
            clock.now += 1
            assert (await prober.probe(Probe.ENDTOEND)).service_texts
        assert quay.enables == 1
        quay.restart()  # a new session key: the kept cookie no longer holds health_debug
        clock.now += QuayProber.ENABLE_INTERVAL
        off = await prober.probe(Probe.ENDTOEND)
        assert off.ok is False and off.service_texts == {} and off.detail is None
        after = [await prober.probe(Probe.ENDTOEND) for _ in range(5)]
        prober.close()
    assert quay.enables == 2  # once, on the first answer that showed debug mode off
    assert all(o.service_texts == {"storage": PREFERRED_EU} for o in after)


async def test_a_site_that_keeps_forgetting_is_enabled_once_a_minute(
    servers: list[Server],
) -> None:
    """Each enable writes the secret into Quay's access log: never once per probe."""
    quay = QuayApp()
    server = await serve(quay)
    servers.append(server)
    clock = FakeClock()
    async with make_session() as session:
        prober = debug_prober(session, server.port, clock)
        for _ in range(30):
            quay.restart()  # every answer shows debug mode off
            clock.now += 1
            assert (await prober.probe(Probe.ENDTOEND)).ok is True
        assert quay.enables == 1
        clock.now += QuayProber.ENABLE_INTERVAL
        await prober.probe(Probe.ENDTOEND)
        prober.close()
    assert quay.enables == 2


async def test_an_answer_to_an_older_session_does_not_turn_debug_mode_off(
    servers: list[Server],
) -> None:
    """A request sent with the session Quay forgot (it restarted) answers without debug
    text after the prober has enabled a new session: that answer says nothing of the new
    one. Before, it turned debug mode off for good, and the prober enabled once more a
    minute later (the secret into Quay's access log again) though every answer had shown
    debug mode on."""
    quay = QuayApp(
        hang=True, services={**HEALTHY, "storage": False}, texts={"storage": PREFERRED_EU}
    )
    server = await serve(quay)
    servers.append(server)
    clock = FakeClock()
    async with make_session() as session:
        prober = debug_prober(session, server.port, clock, timeout=0.2)
        clock.now += 1
        assert (await prober.probe(Probe.ENDTOEND)).reason == "timeout"  # pending, session 1
        quay.hang = False
        quay.restart()
        clock.now += QuayProber.ENABLE_INTERVAL
        assert (await prober.probe(Probe.INSTANCE)).service_texts == {}  # session 1 is void
        clock.now += 1
        assert (await prober.probe(Probe.INSTANCE)).service_texts  # session 2, enabled
        assert quay.enables == 2
        quay.release.set()  # the endtoend sent with session 1 answers, without debug text
        await wait_for(lambda: not prober.pending(Probe.ENDTOEND), "the pending request answered")
        clock.now += 1
        assert (await prober.probe(Probe.ENDTOEND)).service_texts == {}
        later = []
        for _ in range(20):
            clock.now += 10
            later += [await prober.probe(Probe.ENDTOEND), await prober.probe(Probe.INSTANCE)]
        prober.close()
    assert quay.enables == 2
    assert all(o.service_texts == {"storage": PREFERRED_EU} for o in later), later[-1]


@pytest.mark.parametrize("secret", ["with space", "a#b?c%d"])
async def test_a_secret_of_any_characters_reaches_quay_as_it_is(
    servers: list[Server], secret: str
) -> None:
    """The secret is one path segment, percent-encoded (Quay's route decodes it). Before, it
    went into the request line raw: a space broke the request, `#` or `?` cut the path."""
    quay = QuayApp(
        debug_secret=secret, services={**HEALTHY, "storage": False}, texts={"storage": "x"}
    )
    server = await serve(quay)
    servers.append(server)
    clock = FakeClock()
    async with make_session() as session:
        prober = debug_prober(session, server.port, clock, secret=secret)
        clock.now += 1
        obs = await prober.probe(Probe.ENDTOEND)
        prober.close()
    assert obs.service_texts == {"storage": "x"}, obs
    assert quay.enables == 1


async def test_the_debug_secret_reaches_no_observation_nor_log(
    servers: list[Server], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-secret-4567-never-logged"
    quay = QuayApp(services={**HEALTHY, "storage": False})
    server = await serve(quay)
    servers.append(server)
    clock = FakeClock()
    seen = []
    async with make_session() as session:
        for port, secret in (
            (server.port, wrong),
            (free_port(), wrong),
            (server.port, DEBUG_SECRET),
        ):
            prober = debug_prober(session, port, clock, secret=secret)
            for _ in range(3):
                clock.now += 1
                seen.append(await prober.probe(Probe.ENDTOEND))
            prober.close()
    assert quay.enables == 2  # the wrong secret (404) is not tried again within the minute
    assert {o.reason for o in seen} == {"storage", "connect"}
    # The simulated Quay's own access log (aiohttp.access) holds it, as Quay's does.
    logged = [r.getMessage() for r in caplog.records if r.name != "aiohttp.access"]
    for text in [repr(o) for o in seen] + [json.dumps(o.to_json()) for o in seen] + logged:
        assert wrong not in text and DEBUG_SECRET not in text
        assert "_csrf_token" not in text


def test_storage_faults_name_the_location() -> None:
    other = non_preferred_unavailable("us", "An error occurred (404) when calling HeadBucket")
    assert storage_faults(PREFERRED_EU) == {"eu": "preferred"}
    assert storage_faults(other) == {"us": "non_preferred"}
    assert storage_faults(f"{PREFERRED_EU}; {other}") == {"eu": "preferred", "us": "non_preferred"}
    assert storage_faults("Storage check failed with exception boom") == {}
    assert storage_faults(None) == {}


# --- one request per probe in flight -------------------------------------------------------


async def wait_for(check: Any, what: str, bound: float = 5.0) -> None:
    deadline = time.monotonic() + bound
    while not check():
        assert time.monotonic() < deadline, f"{what} within {bound}s"
        await asyncio.sleep(0.01)


async def test_a_pending_request_is_not_sent_again(servers: list[Server]) -> None:
    """Quay keeps working on a request whose prober gave up: while one is unanswered, the
    rounds record timeouts and send nothing; its answer is the next round's observation."""
    quay = QuayApp(hang=True)
    server = await serve(quay)
    servers.append(server)
    clock = FakeClock()
    async with make_session() as session:
        prober = debug_prober(session, server.port, clock, timeout=0.2)
        rounds = []
        for _ in range(6):
            clock.now += 1
            rounds.append(await prober.probe(Probe.ENDTOEND))
        assert [o.reason for o in rounds] == ["timeout"] * 6
        assert all(o.ok is False for o in rounds)
        assert all("unanswered after" in (o.detail or "") for o in rounds[1:]), rounds
        assert len(quay.hosts) == 1  # before: one request per round, 6 running at Quay
        # Quay's 7-10 s storage check ends in a failure: that answer is the next round.
        quay.services["storage"] = False
        quay.texts["storage"] = PREFERRED_EU
        quay.release.set()
        await wait_for(lambda: not prober.pending(Probe.ENDTOEND), "the pending request answered")
        clock.now += 1
        late = await prober.probe(Probe.ENDTOEND)
        assert (late.ok, late.reason, late.status) == (False, "storage", 503)
        assert late.storage_faults == {"eu": "preferred"} and late.t == clock.now
        assert len(quay.hosts) == 1
        clock.now += 1
        fresh = await prober.probe(Probe.ENDTOEND)
        prober.close()
    assert len(quay.hosts) == 2 and fresh.reason == "storage" and fresh.latency is not None
    assert fresh.latency < 0.2


async def test_a_late_success_is_still_a_timeout(servers: list[Server]) -> None:
    quay = QuayApp(delay=0.3)
    server = await serve(quay)
    servers.append(server)
    clock = FakeClock()
    async with make_session() as session:
        prober = debug_prober(session, server.port, clock, timeout=0.1)
        first = await prober.probe(Probe.ENDTOEND)
        assert prober.pending(Probe.ENDTOEND)
        await wait_for(lambda: not prober.pending(Probe.ENDTOEND), "the slow request answered")
        late = await prober.probe(Probe.ENDTOEND)
        prober.close()
    assert (first.reason, late.reason, late.ok) == ("timeout", "timeout", False)
    assert late.status == 200 and "over the 0.1s timeout" in (late.detail or "")
    assert len(quay.hosts) == 1


async def test_a_round_that_sends_nothing_reports_no_latency(servers: list[Server]) -> None:
    """The latency an observation carries is trafficd_probe_duration_seconds. Before, a
    round that only found its request still pending reported about 0 s, and a late
    success the time since its round began: while Quay hung, the probe duration fell to
    nothing. Now a round that sends nothing reports none, a late answer its request's own."""
    quay = QuayApp(delay=0.4)
    server = await serve(quay)
    servers.append(server)
    clock = FakeClock()
    async with make_session() as session:
        prober = debug_prober(session, server.port, clock, timeout=0.1)
        first = await prober.probe(Probe.ENDTOEND)
        clock.now += 1
        waiting = await prober.probe(Probe.ENDTOEND)
        await wait_for(lambda: not prober.pending(Probe.ENDTOEND), "the slow request answered")
        clock.now += 1
        late = await prober.probe(Probe.ENDTOEND)
        prober.close()
    assert first.latency is not None and first.latency >= 0.1
    assert "unanswered after" in (waiting.detail or "") and waiting.latency is None
    assert late.reason == "timeout" and late.latency is not None and late.latency >= 0.4


async def test_each_probe_has_its_own_request_in_flight(servers: list[Server]) -> None:
    """A hung endtoend does not hold /health/instance back, nor stops it being sent."""
    quay = QuayApp(hang=True)
    server = await serve(quay)
    servers.append(server)
    clock = FakeClock()
    async with make_session() as session:
        prober = debug_prober(session, server.port, clock, timeout=0.2)
        for _ in range(3):
            clock.now += 1
            await prober.probe(Probe.ENDTOEND)
            await prober.probe(Probe.INSTANCE)
        prober.close()
    assert len(quay.hosts) == 2


async def test_a_request_unanswered_for_a_minute_is_given_up(servers: list[Server]) -> None:
    quay = QuayApp(hang=True)
    server = await serve(quay)
    servers.append(server)
    clock = FakeClock()
    async with make_session() as session:
        prober = debug_prober(session, server.port, clock, timeout=0.2)
        await prober.probe(Probe.ENDTOEND)
        clock.now += QuayProber.ABANDON_AFTER - 1
        await prober.probe(Probe.ENDTOEND)
        assert len(quay.hosts) == 1
        clock.now += 1
        again = await prober.probe(Probe.ENDTOEND)
        prober.close()
    assert again.reason == "timeout" and again.detail is None
    assert len(quay.hosts) == 2  # a dead connection is not waited on for ever


# --- real Quay's recorded answers, replayed through the prober ------------------------------


@pytest.fixture(scope="module")
def real_quay() -> Path:
    """Answers recorded from real Quay (quay/quay after v3.18.0), read in place from the
    shared test data (`TRAFFICD_SHARED_DIR`, whose `data/` holds them; .ci/run sets it)."""
    root = os.environ.get("TRAFFICD_SHARED_DIR")
    if not root:
        pytest.fail(
            "TRAFFICD_SHARED_DIR is not set: point it at the directory whose data/ holds "
            "real-quay/health-responses.jsonl (.ci/run sets it)"
        )
    path = Path(root) / "data" / "real-quay"
    for name in ("health-responses.jsonl", "faults.log"):
        if not (path / name).is_file():
            pytest.fail(f"{path / name} not found (TRAFFICD_SHARED_DIR={root})")
    return path


async def test_real_quay_answers_replayed_through_the_prober(
    servers: list[Server], real_quay: Path
) -> None:
    """Every answer real Quay gave (services_expanded as recorded), served in Quay's format
    to a prober in debug mode: verdict, services, texts and locations as Quay said them."""
    lines = (real_quay / "health-responses.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    answered = [r for r in records if isinstance(r["body"], dict)]
    quay = QuayApp()
    server = await serve(quay)
    servers.append(server)
    clock = FakeClock()
    kinds: set[str] = set()
    seen: list[tuple[dict[str, Any], Observation]] = []
    async with make_session() as session:
        prober = debug_prober(session, server.port, clock)
        for record in answered:
            services = {name: bool(v["status"]) for name, v in record["body"].items()}
            quay.services, quay.expanded = services, record["body"]
            clock.now += 1
            obs = await prober.probe(Probe(record["ep"]))
            seen.append((record, obs))
            back = Observation.from_json(obs.to_json())  # the audit log's and peers' format
            assert (back.service_texts, back.storage_faults) == (
                obs.service_texts,
                obs.storage_faults,
            )
            assert obs.status == record["code"], record
            assert obs.ok is (record["code"] == 200), (record, obs)
            assert obs.services == services
            texts = {
                name: v.get("failure") or v.get("message")
                for name, v in record["body"].items()
                if v.get("failure") or v.get("message")
            }
            assert obs.service_texts == texts, record
            storage = texts.get("storage", "")
            if storage.startswith("Preferred storage 'eu' check failed: "):
                assert (obs.reason, obs.storage_faults) == ("storage", {"eu": "preferred"})
                kinds.add("preferred")
            elif storage.startswith("Non-preferred storage 'eu' unavailable: "):
                assert (obs.ok, obs.storage_faults) == (True, {"eu": "non_preferred"})
                kinds.add("non_preferred")
            else:
                assert obs.storage_faults == {}, record
            if texts.get("redis", "").startswith("Could not connect to redis"):
                assert obs.reason == "shared_dependency" and obs.detail is not None
                kinds.add("redis")
            if texts.get("database", "").startswith("Could not connect to the database"):
                assert obs.reason is not None and "shared_dependency" in obs.reason
                kinds.add("database")
        prober.close()
    assert quay.enables == 1  # 600-odd probes, one session
    assert kinds == {"preferred", "non_preferred", "redis", "database"}
    assert len(answered) > 600
    # The fault log's scenario S2 (eu's bucket down, each site preferring its own): eu
    # fails naming eu as preferred, us passes naming eu as a non-preferred location.
    events = {" ".join(line.split()[2:]): float(line.split()[0]) for line in faults(real_quay)}
    start, end = events["S2 stop moto-eu"], events["S2 restart moto-eu"]
    during = [(r, o) for r, o in seen if start < r["t"] < end and r["ep"] == "endtoend"]
    assert {r["site"] for r, _ in during} == {"eu", "us"}
    for record, obs in during:
        if record["site"] == "eu":
            assert (obs.ok, obs.reason, obs.storage_faults) == (
                False,
                "storage",
                {"eu": "preferred"},
            )
        else:
            assert (obs.ok, obs.storage_faults) == (True, {"eu": "non_preferred"})


def faults(real_quay: Path) -> list[str]:
    """`faults.log`: `EPOCH HH:MM:SS.mmm SCENARIO what`, one fault or repair a line."""
    return [line for line in (real_quay / "faults.log").read_text().splitlines() if line.strip()]


def test_the_session_cookie_follows_what_the_site_sets() -> None:
    jar = _Cookies()
    jar.update([b"_csrf_token=eyJoZWFsdGhfZGVidWciOnRydWV9.abc-_; HttpOnly; Path=/"])
    assert jar.header() == "_csrf_token=eyJoZWFsdGhfZGVidWciOnRydWV9.abc-_"
    jar.update([b"_csrf_token=second.sig; Path=/", b"other=1"])
    assert jar.header() == "_csrf_token=second.sig; other=1"
    # Flask deletes a session with an empty value, an Expires in the past and Max-Age=0.
    jar.update([b"_csrf_token=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/"])
    jar.update([b"other=1; Expires=Thu, 01 Jan 1970 00:00:00 GMT"])
    assert jar.header() is None


@pytest.mark.parametrize(
    ("header", "sent"),
    [
        # Attributes Python's SimpleCookie does not know: it dropped the whole cookie
        # (Partitioned: Flask's SESSION_COOKIE_PARTITIONED) or took one for a cookie.
        (b"_csrf_token=abc.d; HttpOnly; Path=/; SameSite=Lax; Partitioned", "_csrf_token=abc.d"),
        (b"_csrf_token=abc.d; Secure; HttpOnly; Priority=High", "_csrf_token=abc.d"),
        # A quoted value goes back as it came (SimpleCookie sent it unquoted).
        (b'_csrf_token="a\\"b"; Path=/', '_csrf_token="a\\"b"'),
        (
            b"_csrf_token=.eJyr.x; Expires=Sat, 02 Jan 2100 04:20:00 GMT; Path=/",
            "_csrf_token=.eJyr.x",
        ),
    ],
)
def test_the_session_cookie_is_read_as_rfc_6265_says(header: bytes, sent: str) -> None:
    jar = _Cookies()
    jar.update([header])
    assert jar.header() == sent
