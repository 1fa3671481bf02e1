"""The report's reading of the audit log: milestones, bands and marks of a real incident.

The figures are those of tests/report/testdata/e2e-events.jsonl, a log the end-to-end
test wrote (eu's storage stopped, trafficd killed and restarted while eu was drained,
eu's storage back, a global database failure, a manual drain of us and a refused one
of eu); each expected time below can be read in that file.
"""

from __future__ import annotations

from typing import Any

from tests.report.conftest import CONFIG, recorded
from trafficd.report import Report, build_report, read_layout
from trafficd.report.incident import Incident, Milestone, clock, effects
from trafficd.report.layout import SiteLayout


def milestones(incident: Incident) -> dict[str, Milestone]:
    return {m.what: m for m in incident.milestones}


def test_storage_incident_figures_are_the_logs_own(report: Report) -> None:
    eu = next(s for s in report.sites if s.name == "eu")
    assert len(eu.incidents) == 1
    inc = eu.incidents[0]
    assert inc.cause == "storage"
    m = milestones(inc)
    assert list(m) == [
        "first failing probe",
        "drain decided",
        "traffic off (bind, rfc2136)",
        "traffic off (lb, haproxy)",
        "instances stopped (command)",
        "cause cleared",
        "restore decided",
        "instances started (command)",
        "traffic back (bind, rfc2136)",
        "traffic back (lb, haproxy)",
        "traffic fully returned",
    ]
    expected = {
        "first failing probe": (1796181340.430328, "2026-12-02T03:15:40.430+00:00"),
        "drain decided": (1796181340.9350617, "2026-12-02T03:15:40.935+00:00"),
        "traffic off (bind, rfc2136)": (1796181340.992778, "2026-12-02T03:15:40.992+00:00"),
        "traffic off (lb, haproxy)": (1796181340.9766393, "2026-12-02T03:15:40.976+00:00"),
        "instances stopped (command)": (1796181342.843397, "2026-12-02T03:15:42.843+00:00"),
        "restore decided": (1796181350.4614003, "2026-12-02T03:15:50.461+00:00"),
        "instances started (command)": (1796181351.0124164, "2026-12-02T03:15:51.012+00:00"),
        "traffic back (bind, rfc2136)": (1796181351.9672487, "2026-12-02T03:15:51.967+00:00"),
        "traffic back (lb, haproxy)": (1796181351.9506555, "2026-12-02T03:15:51.950+00:00"),
        # The last backend's read-back, after the decision at 03:15:51.922.
        "traffic fully returned": (1796181351.9672487, "2026-12-02T03:15:51.967+00:00"),
    }
    for what, (t, when) in expected.items():
        assert (m[what].t, m[what].time) == (t, when), what
    assert m["first failing probe"].detail.startswith("test · storage eustorage: failing; connect")
    # Cleared when eustorage's direct probe passed again, not when eu's endtoend did
    # (it failed on while eu's instances were stopped).
    assert m["cause cleared"].detail == "passing again: test · storage eustorage"
    assert m["restore decided"].t is not None and m["cause cleared"].t is not None
    assert m["cause cleared"].t < m["restore decided"].t
    assert inc.origin == expected["first failing probe"][0]


def test_manual_drain_has_no_failing_probe_and_clears_on_undrain(report: Report) -> None:
    us = next(s for s in report.sites if s.name == "us")
    [inc] = us.incidents
    m = milestones(inc)
    assert inc.cause == "manual"
    # us's endtoend was failing then (the global database failure): not this drain's cause.
    assert m["first failing probe"].t is None
    assert m["first failing probe"].detail == "no probe was failing: drained by admin (maintenance)"
    assert m["cause cleared"].detail == "undrain by admin"
    assert m["cause cleared"].time == "2026-12-02T03:15:56.997+00:00"
    assert m["instances stopped (command)"].t is None  # a manual drain leaves them running
    assert inc.origin == m["drain decided"].t


def test_refusal_manual_commands_and_actuations_are_marked(report: Report) -> None:
    eu = next(s for s in report.sites if s.name == "eu")
    us = next(s for s in report.sites if s.name == "us")
    refused = [mk for mk in eu.marks if mk.lane == "refused"]
    assert [(mk.time, mk.title, mk.text) for mk in refused] == [
        (
            "2026-12-02T03:15:56.133+00:00",
            "refused by min_active_sites (admin: drain)",
            "manual: also (by admin)",
        )
    ]
    manual = [(mk.title, mk.text) for mk in us.marks if mk.lane == "manual"]
    assert manual == [("drain by admin", "why: maintenance"), ("undrain by admin", "why: —")]
    lanes = {mk.lane for mk in eu.marks}
    assert lanes == {"decisions", "refused", "actuator bind", "actuator lb", "actuator command"}
    # The first bind actuation (a TTL fix, both addresses kept) is about neither site.
    assert all(mk.t > 1796181340 for mk in eu.marks if mk.lane == "actuator bind")
    assert [mk.n for mk in eu.marks] == list(range(1, len(eu.marks) + 1))


def test_bands_follow_the_logged_observations_and_the_daemons_lives(report: Report) -> None:
    events = recorded()
    eu = next(s for s in report.sites if s.name == "eu")
    assert eu.rows == ["test · endtoend", "test · instance", "test · storage eustorage"]
    storage = [b for b in eu.bands if b.probe == "storage"]
    logged = sorted(
        e["t"] for e in events if e["kind"] == "observation" and e.get("location") == "eustorage"
    )
    assert [b.start for b in storage] == logged
    lives = sorted(e["t"] for e in events if e["kind"] in ("started", "stopped"))
    for band, following in zip(storage, [*logged[1:], None], strict=True):
        # Each band ends at the next observation, or where its daemon's life ended
        # (trafficd was killed at about 03:15:43 and started again at 03:15:44.564).
        assert band.end == following or band.end in lives, band
    killed = [b for b in storage if b.end in lives and b.end != report.end]
    assert [b.end for b in killed] == [1796181344.5644393]


def test_explicit_confirmation_event_is_read_first() -> None:
    """An event that says a backend confirmed the site's traffic off (issue 18's shape)
    wins over the actuation's own read-back."""
    events = recorded()
    confirm: dict[str, Any] = {
        "kind": "traffic_off",
        "site": "eu",
        "actuator": "lb",
        "target": "/run/haproxy/admin.sock",
        "t": 1796181340.95,
        "time": "2026-12-02T03:15:40.950+00:00",
    }
    report = build_report(read_layout(CONFIG), [[*events, confirm]])
    eu = next(s for s in report.sites if s.name == "eu")
    m = milestones(eu.incidents[0])
    lb = m["traffic off (lb, haproxy)"]
    assert (lb.t, lb.time) == (1796181340.95, "2026-12-02T03:15:40.950+00:00")
    assert lb.detail == "confirmed /run/haproxy/admin.sock (traffic_off event)"
    assert any(mk.title == "traffic confirmed off /run/haproxy/admin.sock" for mk in eu.marks)


def test_unconfirmed_backend_is_said_so() -> None:
    """An actuation that errs, or is not in sync on read-back, confirms nothing."""
    events = [
        e
        for e in recorded()
        if not (e["kind"] == "actuation" and e["actuator"] == "bind" and e["t"] < 1796181341)
    ]
    failed = {
        "kind": "actuation",
        "actuator": "bind",
        "applied": [],
        "error": "bind: 127.0.0.1:53: timed out",
        "in_sync": False,
        "notes": [],
        "t": 1796181340.99,
        "time": "2026-12-02T03:15:40.990+00:00",
    }
    report = build_report(read_layout(CONFIG), [[*events, failed]])
    eu = next(s for s in report.sites if s.name == "eu")
    m = milestones(eu.incidents[0])
    assert m["traffic off (bind, rfc2136)"].t is None
    assert m["traffic off (bind, rfc2136)"].detail == "no confirmation in the log"
    errors = [mk for mk in eu.marks if mk.lane == "actuator bind" and mk.status == "error"]
    assert [mk.text for mk in errors] == [
        "error: bind: 127.0.0.1:53: timed out; not in sync on read-back"
    ]


def test_since_keeps_the_state_before_the_window() -> None:
    since = 1796181353.0  # after eu's return, before us's manual drain
    report = build_report(read_layout(CONFIG), [recorded()], since=since)
    eu = next(s for s in report.sites if s.name == "eu")
    assert eu.incidents == []
    assert [s.state for s in eu.states] == ["active"]
    assert report.start >= since
    us = next(s for s in report.sites if s.name == "us")
    assert [inc.cause for inc in us.incidents] == ["manual"]


def test_blobs_at_risk_are_read_from_the_drain_reasons() -> None:
    events = recorded()
    risk = "replication: 12 blob(s) (3456 bytes) exist only at eustorage: pulls of them fail"
    for e in events:
        if e["kind"] == "transition" and e["site"] == "eu" and e["to"] == "draining":
            e["reasons"] = [*e["reasons"], risk]
    report = build_report(read_layout(CONFIG), [events])
    eu = next(s for s in report.sites if s.name == "eu")
    assert eu.incidents[0].blobs_at_risk == (12, 3456)
    assert [(mk.lane, mk.title) for mk in eu.marks if mk.lane == "blobs at risk"] == [
        ("blobs at risk", "12 blob(s) at risk")
    ]


def test_effects_of_each_actuators_changes() -> None:
    eu = SiteLayout("eu", ("eustorage",), ("192.0.2.20",), ("quay", "eu"), None)
    cases = {
        "quay.example.test. A: ['192.0.2.10', '192.0.2.20'] -> ['192.0.2.10'] ttl 30": {"off"},
        "quay.example.test. A: ['192.0.2.10'] -> ['192.0.2.10', '192.0.2.20'] ttl 30": {"on"},
        "quay.example.test. A: ['192.0.2.10', '192.0.2.20'] -> ['192.0.2.10', '192.0.2.20']": set(),
        "quay.example.test. A: (none) -> ['192.0.2.20']": {"on"},
        "/run/haproxy.sock: set server quay/eu state maint": {"off"},
        "/run/haproxy.sock: set server quay/eu state drain": {"off"},
        "/run/haproxy.sock: set server quay/eu state ready": {"on"},
        "/run/haproxy.sock: set server quay/us state maint": set(),
        # A return step's weight (HAProxy sets it before `state ready`, and for each step).
        "/run/haproxy.sock: set server quay/eu weight 100": {"weight 100"},
        "/run/haproxy.sock: set server quay/eu weight 10": {"weight 10"},
        "/run/haproxy.sock: set server quay/us weight 10": set(),
        "quay.example.com. eu: weight 100 -> 0": {"off"},
        "quay.example.com. eu: weight 0 -> 100": {"on", "weight 100"},
        "quay.example.com. eu: weight 10 -> 50": {"weight 50"},
        "quay.example.com. us: weight 10 -> 50": set(),
        "quay.example.com. us: weight 100 -> 0": set(),
        # PowerDNS with `weighted: true`: one LUA record of every site's address and weight.
        "quay.example.com LUA A: 192.0.2.10=100 -> 192.0.2.10=100, 192.0.2.20=10": {
            "on",
            "weight 10",
        },
        "quay.example.com LUA A: 192.0.2.10=100, 192.0.2.20=10 -> 192.0.2.10=100, 192.0.2.20=50": {
            "weight 50"
        },
        "quay.example.com LUA A: 192.0.2.10=100, 192.0.2.20=50 -> 192.0.2.10=100": {"off"},
        "quay.example.com LUA A: (none) -> 192.0.2.20=100": {"on", "weight 100"},
        "quay.example.com LUA A: 192.0.2.10=100 -> 192.0.2.10=50": set(),
        # Another site's step: eu's own weight, listed on both sides, did not change.
        "quay.example.com LUA A: 192.0.2.10=10, 192.0.2.20=100 -> "
        "192.0.2.10=50, 192.0.2.20=100": set(),
        "stop site eu": {"stop"},
        "start site eu": {"start"},
        "stop site us": set(),
        "wait for site eu's instances to become available": {"wait"},
    }
    for change, want in cases.items():
        assert effects(change, eu) == want, change


def test_each_target_of_an_actuator_confirms_on_its_own() -> None:
    """Actuation events that name their target (one HAProxy socket each, as a daemon
    reconciling per target writes them): one milestone per target. A dead load balancer
    confirms only once it is back and read back in sync, and a drain blocked meanwhile
    is marked."""
    events: list[dict[str, Any]] = []
    for e in recorded():
        if e["kind"] == "actuation" and e["actuator"] == "lb":
            events.append({**e, "target": "/run/a.sock"})
            if e["t"] < 1796181341:  # the drain: b is down
                events.append(
                    {
                        **e,
                        "target": "/run/b.sock",
                        "applied": [],
                        "in_sync": False,
                        "error": "lb: /run/b.sock: connection refused",
                    }
                )
            else:
                events.append({**e, "target": "/run/b.sock"})
        else:
            events.append(e)
    late = {
        "kind": "actuation",
        "actuator": "lb",
        "target": "/run/b.sock",
        "in_sync": True,
        "error": None,
        "notes": [],
        "t": 1796181341.5,
        "time": "2026-12-02T03:15:41.500+00:00",
        "applied": ["/run/b.sock: set server quay/eu state maint"],
    }
    blocked = {
        "kind": "shutdown_blocked",
        "site": "eu",
        "blocked": True,
        "t": 1796181341.2,
        "time": "2026-12-02T03:15:41.200+00:00",
        "holders": ["lb /run/b.sock: connection refused"],
    }
    report = build_report(read_layout(CONFIG), [[*events, late, blocked]])
    eu = next(s for s in report.sites if s.name == "eu")
    m = milestones(eu.incidents[0])
    a, b = m["traffic off (lb /run/a.sock, haproxy)"], m["traffic off (lb /run/b.sock, haproxy)"]
    assert a.time == "2026-12-02T03:15:40.976+00:00"
    assert b.time == "2026-12-02T03:15:41.500+00:00"
    assert "traffic off (lb, haproxy)" not in m
    marks = [(mk.lane, mk.status, mk.title, mk.text) for mk in eu.marks if mk.lane == "shutdown"]
    assert marks == [
        (
            "shutdown",
            "error",
            "instances kept up: traffic not confirmed off",
            "lb /run/b.sock: connection refused",
        )
    ]


ACTIVE = 1796181351.9229014  # eu: restoring -> active in the recorded incident


def _step(t: float, step: int, percent: int) -> dict[str, Any]:
    return {
        "kind": "return_step",
        "t": t,
        "site": "eu",
        "step": step,
        "of": 3,
        "percent": percent,
        "weight": percent,
        "reasons": [f"return step {step} of 3: healthy for the whole step"],
        "vantage": "test",
    }


def _eu_after(
    t: float, frm: str, to: str, cause: str | None, why: str, *, automatic: bool = True
) -> dict[str, Any]:
    return {
        "kind": "transition",
        "t": t,
        "site": "eu",
        "from": frm,
        "to": to,
        "cause": cause,
        "reasons": [why],
        "automatic": automatic,
        "vantage": "test",
    }


def _lb(
    t: float, applied: list[str], *, in_sync: bool = True, error: str | None = None
) -> dict[str, Any]:
    """An actuation of the HAProxy actuator `lb` (its socket as in the recorded log)."""
    return {
        "kind": "actuation",
        "actuator": "lb",
        "applied": [f"/run/haproxy/admin.sock: {c}" for c in applied],
        "in_sync": in_sync,
        "error": error,
        "notes": [],
        "t": t,
    }


def test_a_stepped_return_is_fully_returned_at_its_last_step() -> None:
    """With policy.return_steps, the site is active at its first step's weight: traffic
    is fully back only at the last step, and each step is a mark."""
    steps = [_step(ACTIVE, 1, 10), _step(ACTIVE + 10, 2, 50), _step(ACTIVE + 20, 3, 100)]
    report = build_report(read_layout(CONFIG), [[*recorded(), *steps]])
    eu = next(s for s in report.sites if s.name == "eu")
    [inc] = eu.incidents
    full = milestones(inc)["traffic fully returned"]
    assert full.t == ACTIVE + 20 and inc.end == ACTIVE + 20
    assert "step 3 of 3 (100%, weight 100)" in full.detail, full.detail
    titles = [mk.title for mk in eu.marks if mk.lane == "decisions"]
    assert "return step 2 of 3 (50%, weight 50)" in titles


def test_an_abandoned_return_stays_one_incident() -> None:
    """A return abandoned at a step (the canary, a failing probe) is the same incident
    going on, not a new one; the abandon is a milestone with its reasons."""
    why = "return abandoned at step 1 of 3 (weight 10): canary: 30 of 200 responses 5xx (15.0%)"
    later = [
        _step(ACTIVE, 1, 10),
        _eu_after(ACTIVE + 5, "active", "draining", "canary", why),
        _eu_after(ACTIVE + 6, "draining", "drained", "canary", "traffic confirmed off"),
        _eu_after(ACTIVE + 40, "drained", "restoring", None, "cause cleared"),
        _eu_after(ACTIVE + 42, "restoring", "active", None, "endtoend healthy"),
        _step(ACTIVE + 42, 1, 10),
        _step(ACTIVE + 52, 2, 50),
        _step(ACTIVE + 62, 3, 100),
    ]
    report = build_report(read_layout(CONFIG), [[*recorded(), *later]])
    eu = next(s for s in report.sites if s.name == "eu")
    [inc] = eu.incidents
    assert inc.cause == "storage" and inc.end == ACTIVE + 62
    m = milestones(inc)
    assert m["return abandoned"].t == ACTIVE + 5 and why in m["return abandoned"].detail
    assert m["restore decided"].t == ACTIVE + 40  # the return that completed
    assert m["traffic fully returned"].t == ACTIVE + 62


def test_a_return_still_in_steps_is_not_fully_returned() -> None:
    report = build_report(read_layout(CONFIG), [[*recorded(), _step(ACTIVE, 1, 10)]])
    eu = next(s for s in report.sites if s.name == "eu")
    [inc] = eu.incidents
    m = milestones(inc)
    full = m["traffic fully returned"]
    assert full.t is None and inc.end is None
    assert "step 1 of" in full.detail and "10%" in full.detail, full.detail
    # Back at the first step's weight: each backend's read-back says when.
    assert m["traffic back (lb, haproxy)"].time == "2026-12-02T03:15:51.950+00:00"
    assert m["traffic back (bind, rfc2136)"].time == "2026-12-02T03:15:51.967+00:00"


def test_a_weight_change_is_an_actuation_on_the_site() -> None:
    """A return step HAProxy applies is a weight change alone: it is marked on the site's
    timeline with its actuator and result, like a change of state."""
    later = [
        _step(ACTIVE, 1, 10),
        _step(ACTIVE + 10, 2, 50),
        _lb(ACTIVE + 10.05, ["set server quay/eu weight 50"]),
        _lb(ACTIVE + 10.06, ["set server quay/us weight 50"]),  # us's server: not eu's mark
    ]
    report = build_report(read_layout(CONFIG), [[*recorded(), *later]])
    eu = next(s for s in report.sites if s.name == "eu")
    marks = [(mk.t, mk.status, mk.title, mk.text) for mk in eu.marks if mk.t > ACTIVE + 1]
    assert (
        ACTIVE + 10.05,
        "ok",
        "lb: weight 50",
        "/run/haproxy/admin.sock: set server quay/eu weight 50; read back in sync",
    ) in marks
    assert [m for m in marks if m[0] == ACTIVE + 10.06] == []


def _stepped_return(*actuations: dict[str, Any]) -> Incident:
    steps = [_step(ACTIVE, 1, 10), _step(ACTIVE + 10, 2, 50), _step(ACTIVE + 20, 3, 100)]
    report = build_report(read_layout(CONFIG), [[*recorded(), *steps, *actuations]])
    eu = next(s for s in report.sites if s.name == "eu")
    [inc] = eu.incidents
    return inc


def test_a_stepped_return_is_full_when_the_backend_read_back_the_whole_weight() -> None:
    """The last step is a decision; traffic is fully back when the load balancer holds
    the site's whole weight: the first read-back in sync after it applied it."""
    inc = _stepped_return(
        _lb(ACTIVE + 10.05, ["set server quay/eu weight 50"]),
        _lb(ACTIVE + 20.05, ["set server quay/eu weight 100"], in_sync=False),
        _lb(ACTIVE + 21.5, []),  # in sync again: logged because it changed
    )
    m = milestones(inc)
    full = m["traffic fully returned"]
    assert (full.t, full.time) == (ACTIVE + 21.5, clock(ACTIVE + 21.5)), full
    assert full.detail.startswith("→ step 3 of 3 (100%, weight 100): return step 3"), full.detail
    lb = m["full weight (lb, haproxy)"]
    assert lb.t == ACTIVE + 21.5, lb
    assert lb.detail == f"read back in sync (applied at {clock(ACTIVE + 20.05)})", lb.detail
    # The rfc2136 backend carries no weight: its address, back at step 1, was all of it.
    assert "full weight (bind, rfc2136)" not in m
    assert inc.end == ACTIVE + 20  # the return's own end: the decision, as a transition's


def test_a_stepped_return_no_backend_confirmed_keeps_the_decision_time() -> None:
    """A load balancer that never read back the whole weight (down at the last step, or
    holding the step before) leaves the decision's time, and says which one did not."""
    inc = _stepped_return(
        _lb(ACTIVE + 10.05, ["set server quay/eu weight 50"]),
        _lb(ACTIVE + 20.05, [], in_sync=False, error="lb: /run/haproxy/admin.sock: refused"),
    )
    m = milestones(inc)
    full = m["traffic fully returned"]
    assert full.t == ACTIVE + 20, full
    assert full.detail.startswith(
        "→ step 3 of 3 (100%, weight 100): not confirmed by lb (haproxy): return step 3"
    ), full.detail
    assert m["full weight (lb, haproxy)"].t is None
    assert m["full weight (lb, haproxy)"].detail == "no confirmation in the log"
    # The step before's weight, read back after the last step, is not the whole weight.
    inc = _stepped_return(_lb(ACTIVE + 20.05, ["set server quay/eu weight 50"]))
    assert milestones(inc)["traffic fully returned"].detail.startswith(
        "→ step 3 of 3 (100%, weight 100): not confirmed by lb (haproxy)"
    )


def test_a_manual_drain_during_a_return_is_an_incident_of_its_own() -> None:
    """An operator's drain while the site returns in steps is not the return abandoned:
    the storage incident's return stops there (never fully back), and the manual drain
    opens its own incident, with its own cause, clearing and return."""
    drain = _eu_after(
        ACTIVE + 5,
        "active",
        "draining",
        "manual",
        "manual: maintenance (by admin)",
        automatic=False,
    )
    drain["reasons"].append("the return ends at step 1 of 3 (weight 10)")
    manual = {
        "kind": "manual",
        "action": "drain",
        "site": "eu",
        "who": "admin",
        "reason": "maintenance",
        "t": ACTIVE + 5.0001,
    }
    undrain = {**manual, "action": "undrain", "reason": "", "t": ACTIVE + 30}
    later = [
        _step(ACTIVE, 1, 10),
        drain,
        manual,
        _eu_after(ACTIVE + 6, "draining", "drained", "manual", "shutdown grace over"),
        undrain,
        _eu_after(ACTIVE + 30, "drained", "restoring", "manual", "manual drain ended"),
        _eu_after(ACTIVE + 32, "restoring", "active", None, "endtoend healthy"),
        _step(ACTIVE + 32, 1, 10),
        _step(ACTIVE + 42, 2, 50),
        _step(ACTIVE + 52, 3, 100),
    ]
    report = build_report(read_layout(CONFIG), [[*recorded(), *later]])
    eu = next(s for s in report.sites if s.name == "eu")
    storage, by_hand = eu.incidents
    assert (storage.cause, by_hand.cause) == ("storage", "manual")
    first = milestones(storage)
    assert "return abandoned" not in first
    full = first["traffic fully returned"]
    assert full.t is None
    assert full.detail == (
        f"never: the return stopped at step 1 of 3 (10%, weight 10), drained by hand at "
        f"{clock(ACTIVE + 5)} (admin: maintenance)"
    ), full.detail
    assert storage.end == ACTIVE + 5
    # Its traffic did come back, at the first step (the recorded return's read-backs).
    assert first["traffic back (lb, haproxy)"].time == "2026-12-02T03:15:51.950+00:00"
    m = milestones(by_hand)
    assert by_hand.start == ACTIVE + 5
    assert m["first failing probe"].detail == "no probe was failing: drained by admin (maintenance)"
    assert m["cause cleared"].detail == "undrain by admin"
    assert m["restore decided"].t == ACTIVE + 30
    assert m["traffic fully returned"].t == ACTIVE + 52 and by_hand.end == ACTIVE + 52
    assert "return abandoned" not in m


def test_a_later_incidents_read_back_is_not_this_ones() -> None:
    """The load balancer that never read back the whole weight of this return does not
    confirm it with the whole weight of the next incident's return."""
    later = [
        _step(ACTIVE, 1, 10),
        _step(ACTIVE + 10, 2, 50),
        _step(ACTIVE + 20, 3, 100),  # lb logs nothing: it holds weight 50
        _eu_after(ACTIVE + 100, "active", "draining", "manual", "manual: x", automatic=False),
        _eu_after(ACTIVE + 130, "draining", "active", None, "manual drain ended"),
        _lb(ACTIVE + 130.1, ["set server quay/eu weight 100", "set server quay/eu state ready"]),
    ]
    report = build_report(read_layout(CONFIG), [[*recorded(), *later]])
    eu = next(s for s in report.sites if s.name == "eu")
    stepped, by_hand = eu.incidents
    m = milestones(stepped)
    assert m["full weight (lb, haproxy)"].t is None
    assert m["traffic fully returned"].t == ACTIVE + 20
    assert "not confirmed by lb (haproxy)" in m["traffic fully returned"].detail
    assert milestones(by_hand)["traffic back (lb, haproxy)"].t == ACTIVE + 130.1
