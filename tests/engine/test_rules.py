"""Table-driven scenarios for every rule of the site lifecycle, on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from tests.engine.helpers import STORAGE_FALSE, Sim, make_policy
from trafficd.engine import effective_hold_down
from trafficd.model import Cause, Pause, Probe, State


def test_corroborated_storage_failure_drains_after_fall_rounds_then_stops_instances() -> None:
    sim = Sim(make_policy(fall=3, shutdown_grace=5.0))
    fail: dict[str, Any] = {"storage": {"eustorage": False}, "endtoend": {"eu": STORAGE_FALSE}}
    sim.rounds(2, **fail)
    assert sim.states() == {"eu": "active", "us": "active"}
    d = sim.round(**fail)
    assert sim.states()["eu"] == "draining"
    assert d.sites["eu"].weight == 0 and d.sites["eu"].cause is Cause.STORAGE
    assert d.sites["eu"].instances == "running"  # still up for the grace period
    assert (
        "storage: location eustorage failed direct probes for 3 rounds"
        in d.transitions[0].reasons[0]
    )
    sim.rounds(4, **fail)
    assert sim.states()["eu"] == "draining"
    d = sim.round(**fail)
    assert sim.states()["eu"] == "drained"
    assert d.sites["eu"].instances == "stopped"
    assert d.sites["us"].weight == 100


@pytest.mark.parametrize("reason", ["timeout", "connect"])
def test_unreachable_or_hung_endtoend_corroborates(reason: str) -> None:
    sim = Sim(make_policy())
    sim.rounds(3, storage={"eustorage": False}, endtoend={"eu": reason})
    assert sim.states()["eu"] == "draining"


def test_direct_failure_the_site_contradicts_is_vantage_unreachable() -> None:
    sim = Sim(make_policy())
    decisions = sim.rounds(6, storage={"eustorage": False})
    assert sim.states()["eu"] == "active"
    assert any("vantage_unreachable" in r for r in decisions[-1].sites["eu"].reasons)


def test_shared_preference_drains_only_the_site_whose_first_location_died() -> None:
    sites = {"us": ("usstorage", "eustorage"), "eu": ("eustorage", "usstorage")}
    sim = Sim(make_policy(sites=sites))
    d = sim.rounds(
        3, storage={"eustorage": False}, endtoend={"eu": STORAGE_FALSE, "us": STORAGE_FALSE}
    )[-1]
    assert sim.states() == {"eu": "draining", "us": "active"}
    assert any("replication risk" in r for r in d.sites["us"].reasons)


def test_every_location_failing_at_once_is_global_and_drains_nothing() -> None:
    sim = Sim(make_policy(min_active_sites=0, max_drains=5))
    both = {"eustorage": False, "usstorage": False}
    # us's endtoend cannot tell (None): a site saying storage: true would prove its first
    # location healthy, and that location unreachable from here, not part of an outage
    # (timeline unreachable-location-fakes-global-outage).
    d = sim.rounds(5, storage=both, endtoend={"eu": "timeout", "us": None})[-1]
    assert sim.states() == {"eu": "active", "us": "active"}
    assert d.evidence.global_storage
    assert any(r.startswith("global: every storage location") for r in d.sites["eu"].reasons)
    # When both sites answer storage: false, Quay itself fails both locations: the vantage
    # reached the sites, so it is not cut off, and the outage is global.
    d = sim.rounds(5, storage=both, endtoend={"eu": STORAGE_FALSE, "us": STORAGE_FALSE})[-1]
    assert sim.states() == {"eu": "active", "us": "active"}
    assert not d.evidence.abstaining
    assert any(r.startswith("global: every storage location") for r in d.sites["eu"].reasons)
    # When it reaches no site either, it cannot tell a global failure from being cut off.
    d = sim.rounds(5, storage=both, endtoend={"eu": "timeout", "us": "connect"})[-1]
    assert sim.states() == {"eu": "active", "us": "active"}
    assert any(r.startswith("abstain: vantage(s) v1") for r in d.sites["eu"].reasons)


def test_a_known_cut_is_no_part_of_a_global_outage_until_the_probe_passes() -> None:
    sites = {"eu": ("eustorage", "usstorage"), "us": ("usstorage", "eustorage")}
    sim = Sim(make_policy(sites, min_active_sites=0, max_drains=5))
    # The direct probe fails while eu's storage: true proves eustorage healthy.
    d = sim.rounds(2, storage={"eustorage": False})[-1]
    assert d.evidence.unreachable == {"v1": frozenset({"eustorage"})}
    # Then usstorage dies: every location fails from here, but one of them is the cut.
    both = {"eustorage": False, "usstorage": False}
    d = sim.rounds(4, storage=both, endtoend={"eu": STORAGE_FALSE, "us": STORAGE_FALSE})[-1]
    assert not d.evidence.global_storage
    assert sim.states() == {"eu": "active", "us": "draining"}
    # Once the direct probe passes, the cut is forgotten: both failing again is global.
    sim2 = Sim(make_policy(sites, min_active_sites=0, max_drains=5))
    sim2.rounds(2, storage={"eustorage": False})
    d = sim2.round()
    assert d.evidence.unreachable == {}
    d = sim2.rounds(4, storage=both, endtoend={"eu": STORAGE_FALSE, "us": STORAGE_FALSE})[-1]
    assert d.evidence.global_storage
    assert sim2.states() == {"eu": "active", "us": "active"}


def test_database_false_everywhere_is_global() -> None:
    sim = Sim(make_policy(min_active_sites=0, max_drains=5))
    bad = {"database": False}
    d = sim.rounds(5, endtoend={"eu": bad, "us": bad})[-1]
    assert sim.states() == {"eu": "active", "us": "active"}
    assert "global: database fails on every reachable site; nothing drains" in d.sites["eu"].reasons


def test_database_cut_at_one_site_drains_it_and_leaves_instances_running() -> None:
    sim = Sim(make_policy(shutdown_grace=0.0))
    sim.rounds(3, endtoend={"eu": {"redis": False}})
    assert sim.state.site("eu").cause is Cause.DATABASE
    d = sim.round(endtoend={"eu": {"redis": False}})
    assert sim.states()["eu"] == "drained"
    assert d.sites["eu"].instances == "running"


def test_instance_failure_drains_while_others_answer() -> None:
    sim = Sim(make_policy())
    sim.rounds(3, instance={"eu": False})
    assert sim.state.site("eu").cause is Cause.INSTANCE
    sim2 = Sim(make_policy(min_active_sites=0, max_drains=5))
    sim2.rounds(5, instance={"eu": False, "us": False})
    assert sim2.states() == {"eu": "active", "us": "active"}


def test_storage_recovery_goes_through_restoring_to_active() -> None:
    sim = Sim(make_policy(rise=2, shutdown_grace=0.0))
    sim.rounds(4, storage={"eustorage": False}, endtoend={"eu": STORAGE_FALSE})
    assert sim.states()["eu"] == "drained"
    sim.round(endtoend={"eu": STORAGE_FALSE})  # location up once: not yet
    assert sim.states()["eu"] == "drained"
    d = sim.round(endtoend={"eu": STORAGE_FALSE})
    assert sim.states()["eu"] == "restoring"
    assert d.sites["eu"].instances == "running" and d.sites["eu"].weight == 0
    sim.round(endtoend={"eu": STORAGE_FALSE})
    assert sim.states()["eu"] == "restoring"  # waits for endtoend
    d = sim.round()
    assert sim.states()["eu"] == "active" and d.sites["eu"].weight == 100


def test_a_restore_gate_block_keeps_a_storage_drained_site_out_and_says_why() -> None:
    sim = Sim(make_policy(rise=2, shutdown_grace=0.0))
    sim.rounds(4, storage={"eustorage": False}, endtoend={"eu": STORAGE_FALSE})
    assert sim.states()["eu"] == "drained"
    why = "restore gate: 3 of 20 sampled blob(s) ... are missing"
    sim.restore_blocks = {"eustorage": why}
    decisions = sim.rounds(5, endtoend={"eu": STORAGE_FALSE})
    assert sim.states()["eu"] == "drained"  # the location passes its probes all along
    reasons = decisions[-1].sites["eu"].reasons
    assert f"location eustorage passed 2 direct probe round(s) of 2; {why}" in reasons
    assert not any(why in r for r in decisions[0].sites["eu"].reasons)  # not before rise
    # A block on another location, or on a site out for another cause, changes nothing.
    sim.restore_blocks = {"usstorage": why}
    sim.round(endtoend={"eu": STORAGE_FALSE})
    assert sim.states()["eu"] == "restoring"
    sim.round()
    assert sim.states()["eu"] == "active"


def test_restore_timeout_sends_a_site_back_to_drained() -> None:
    sim = Sim(make_policy(rise=1, shutdown_grace=0.0, restore_timeout=3.0))
    sim.rounds(4, storage={"eustorage": False}, endtoend={"eu": STORAGE_FALSE})
    sim.round(endtoend={"eu": {"auth": False}})
    assert sim.states()["eu"] == "restoring"
    d = sim.rounds(4, endtoend={"eu": {"auth": False}})[-1]
    assert sim.states()["eu"] == "drained"
    assert d.transitions[0].reasons[0].startswith("restore_timeout")


def test_min_active_sites_refuses_the_drain_that_would_break_it() -> None:
    sites = {"a": ("la",), "b": ("lb",), "c": ("lc",)}
    sim = Sim(make_policy(sites=sites, min_active_sites=2, max_drains=5))
    fail: dict[str, Any] = {
        "storage": {"la": False, "lb": False},
        "endtoend": {"a": STORAGE_FALSE, "b": STORAGE_FALSE},
    }
    sim.rounds(4, **fail)
    assert sim.states() == {"a": "draining", "b": "active", "c": "active"}
    assert sim.refusals() == [("b", "min_active_sites")]  # reported once, not every round


def test_max_drains_per_window() -> None:
    sites = {"a": ("la",), "b": ("lb",), "c": ("lc",)}
    sim = Sim(make_policy(sites=sites, min_active_sites=1, max_drains=1, drain_window=10.0))
    fail: dict[str, Any] = {
        "storage": {"la": False, "lb": False},
        "endtoend": {"a": STORAGE_FALSE, "b": STORAGE_FALSE},
    }
    sim.rounds(4, **fail)
    assert sim.states()["b"] == "active"
    assert ("b", "max_drains") in sim.refusals()
    sim.rounds(10, **fail)  # the window has passed
    assert sim.states()["b"] in ("draining", "drained")


def test_hold_down_keeps_a_drained_site_down_and_a_restored_site_up() -> None:
    sim = Sim(make_policy(rise=1, hold_down=10.0, shutdown_grace=0.0))
    fail: dict[str, Any] = {"storage": {"eustorage": False}, "endtoend": {"eu": STORAGE_FALSE}}
    sim.rounds(3, **fail)
    drained_at = sim.now - 1
    sim.rounds(3)
    assert sim.states()["eu"] in ("draining", "drained")
    assert ("eu", "hold_down") in sim.refusals()
    while sim.states()["eu"] != "restoring":
        sim.round()
    assert sim.now - 1 - drained_at >= 10.0
    sim.round()
    assert sim.states()["eu"] == "active"
    sim.rounds(5, **fail)
    assert sim.states()["eu"] == "active"  # restored less than hold_down ago


def test_damping_doubles_hold_down_per_recent_drain_up_to_the_cap() -> None:
    sim = Sim(make_policy(hold_down=10.0, max_hold_down=25.0, damping_window=100.0))
    memory = sim.state.site("eu")
    from dataclasses import replace

    assert effective_hold_down(memory, sim.policy, 0.0) == 10.0
    assert effective_hold_down(replace(memory, drains=(0.0,)), sim.policy, 1.0) == 10.0
    assert effective_hold_down(replace(memory, drains=(0.0, 1.0)), sim.policy, 2.0) == 20.0
    assert effective_hold_down(replace(memory, drains=(0.0, 1.0, 2.0)), sim.policy, 3.0) == 25.0
    # Decay: drains older than the window no longer count.
    assert effective_hold_down(replace(memory, drains=(0.0, 1.0, 2.0)), sim.policy, 101.5) == 10.0


def test_stale_observations_are_unknown_and_a_site_unknown_everywhere_keeps_its_state() -> None:
    sim = Sim(make_policy())
    sim.rounds(2, storage={"eustorage": False}, endtoend={"eu": STORAGE_FALSE})
    sim.rounds(10, silent=True)  # nothing new: no round counts twice, then all goes stale
    assert sim.states()["eu"] == "active"
    assert sim.state.locations["eustorage"].down == 2
    assert sim.history[-1].evidence.corroboration["eu"].fail == 0


def test_quorum_of_configured_vantages() -> None:
    policy = make_policy(vantages=("v1", "v2", "v3"))
    sim = Sim(policy)
    sim.rounds(4, storage={"eustorage": False}, endtoend={"eu": STORAGE_FALSE}, only=("v1",))
    assert sim.states()["eu"] == "active"
    sim2 = Sim(policy)
    fail: dict[str, Any] = {"storage": {"eustorage": False}, "endtoend": {"eu": STORAGE_FALSE}}
    sim2.rounds(3, **fail, only=("v1", "v2"))
    assert sim2.states()["eu"] == "draining"


def test_a_vantage_that_sees_everything_fail_abstains() -> None:
    sim = Sim(make_policy(vantages=("v1", "v2", "v3"), quorum=1))
    everything: dict[str, Any] = {
        "storage": {"eustorage": False, "usstorage": False},
        "endtoend": {"eu": "connect", "us": "connect"},
    }
    d = sim.rounds(4, **everything, only=("v1",))[-1]
    assert d.evidence.abstaining == frozenset({"v1"})
    assert sim.states() == {"eu": "active", "us": "active"}


def test_manual_drain_undrain_and_force() -> None:
    sim = Sim(make_policy(min_active_sites=1, shutdown_grace=2.0))
    sim.drain("eu", stop_instances=True)
    d = sim.round()
    assert sim.states()["eu"] == "draining" and d.sites["eu"].cause is Cause.MANUAL
    sim.rounds(2)
    assert sim.round().sites["eu"].instances == "stopped"
    sim.drain("us")
    sim.round()
    assert sim.states()["us"] == "active"
    assert ("us", "min_active_sites") in sim.refusals()
    sim.drain("us", force=True)
    sim.round()
    assert sim.states()["us"] == "draining"
    del sim.overrides["eu"], sim.overrides["us"]
    sim.round()
    assert sim.states() == {"eu": "restoring", "us": "restoring"}
    sim.round()
    assert sim.states() == {"eu": "active", "us": "active"}


def test_manual_drain_expires() -> None:
    sim = Sim(make_policy())
    sim.drain("eu", expires=3.0)
    sim.rounds(3)
    assert sim.states()["eu"] != "active"
    sim.rounds(2)
    assert sim.states()["eu"] == "active"


def test_hold_pins_a_site_active() -> None:
    sim = Sim(make_policy())
    sim.hold("eu")
    sim.rounds(5, storage={"eustorage": False}, endtoend={"eu": STORAGE_FALSE})
    assert sim.states()["eu"] == "active"
    assert sim.refusals() == [("eu", "hold")]


def test_pause_freezes_automation_but_not_operators() -> None:
    sim = Sim(make_policy())
    sim.pause = Pause(reason="incident", who="admin", at=0.0)
    sim.rounds(5, storage={"eustorage": False}, endtoend={"eu": STORAGE_FALSE})
    assert sim.states()["eu"] == "active" and sim.refusals() == [("eu", "paused")]
    sim.drain("us")
    sim.round()
    assert sim.states()["us"] == "draining"


def test_observe_mode_decides_but_does_not_actuate_or_spend_max_drains() -> None:
    sites = {"a": ("la",), "b": ("lb",), "c": ("lc",)}
    sim = Sim(make_policy(sites=sites, observe=("a",), max_drains=1))
    fail: dict[str, Any] = {
        "storage": {"la": False, "lb": False},
        "endtoend": {"a": STORAGE_FALSE, "b": STORAGE_FALSE},
    }
    d = sim.rounds(3, **fail)[-1]
    assert d.sites["a"].would_drain and not d.sites["a"].actuate
    assert sim.states() == {"a": "draining", "b": "draining", "c": "active"}


def test_same_inputs_same_outputs() -> None:
    runs = []
    for _ in range(2):
        sim = Sim(make_policy())
        sim.rounds(6, storage={"eustorage": False}, endtoend={"eu": STORAGE_FALSE})
        runs.append((sim.transitions(), sim.state))
    assert runs[0] == runs[1]
    assert runs[0][1].site("eu").state is State.DRAINING


def test_registry_failure_drains_and_restores_when_pulls_work_again() -> None:
    sim = Sim(make_policy(rise=2, shutdown_grace=0.0))
    for _ in range(3):
        sim.observe("v1", Probe.REGISTRY, "eu", False, reason="blob_redirect")
        sim.observe("v1", Probe.REGISTRY, "us", True)
        sim.round()
    assert sim.state.site("eu").cause is Cause.REGISTRY
    sim.round()
    assert sim.states()["eu"] == "drained"
    for _ in range(2):
        sim.observe("v1", Probe.REGISTRY, "eu", True)
        sim.observe("v1", Probe.REGISTRY, "us", True)
        sim.round()
    assert sim.states()["eu"] == "restoring"
    sim.round()
    assert sim.states()["eu"] == "active"


def test_instance_drain_restores_after_rise_healthy_rounds() -> None:
    sim = Sim(make_policy(rise=3, shutdown_grace=0.0))
    sim.rounds(4, instance={"eu": False})
    assert sim.states()["eu"] == "drained"
    sim.rounds(2)
    assert sim.states()["eu"] == "drained"
    sim.round()
    assert sim.states()["eu"] == "restoring"


def test_instances_booting_after_a_storage_drain_do_not_drain_the_site_again() -> None:
    """Found by the demo: while trafficd keeps a site's Quay stopped, its instance and
    endtoend probes fail; once storage is back and instances start, those expected
    failures must not send the restoring site back to drained (restore_timeout bounds
    a site that never comes up)."""
    sim = Sim(make_policy(fall=2, rise=2, shutdown_grace=1.0, hold_down=0.0, restore_timeout=30.0))
    down: dict[str, Any] = {
        "storage": {"eustorage": False},
        "endtoend": {"eu": "connect"},
        "instance": {"eu": False},
    }
    sim.rounds(6, **down)
    assert sim.states()["eu"] == "drained"
    assert sim.history[-1].sites["eu"].instances == "stopped"
    booting: dict[str, Any] = {"endtoend": {"eu": "connect"}, "instance": {"eu": False}}
    sim.rounds(2, **booting)  # storage passes `rise` rounds: restore, start instances
    assert sim.states()["eu"] == "restoring"
    assert sim.history[-1].sites["eu"].instances == "running"
    sim.rounds(5, **booting)  # Quay still booting
    assert sim.states()["eu"] == "restoring"
    sim.round()
    assert sim.states()["eu"] == "active"
    sim2 = Sim(make_policy(fall=2, rise=2, shutdown_grace=1.0, hold_down=0.0, restore_timeout=5.0))
    sim2.rounds(6, **down)
    sim2.rounds(2, **booting)
    assert sim2.states()["eu"] == "restoring"
    sim2.rounds(6, **booting)  # never comes up: restore_timeout sends it back
    assert sim2.states()["eu"] == "drained"
    assert "restore_timeout" in sim2.transitions()[-1][3] or any(
        "restore_timeout" in r for d in sim2.history for t in d.transitions for r in t.reasons
    )
