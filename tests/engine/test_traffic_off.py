"""`traffic_off`: the runtime's read-back confirmation gates `draining -> drained`.

The engine stays pure: the daemon feeds it, as an observation-like fact, when
every traffic target confirmed each draining site's traffic off, and
`shutdown_grace` counts from then. Without confirmation a site stays draining
with its instances running, however long the drain has lasted.
"""

from __future__ import annotations

from typing import Any

from tests.engine.helpers import STORAGE_FALSE, Sim, make_policy

FAIL: dict[str, Any] = {"storage": {"eustorage": False}, "endtoend": {"eu": STORAGE_FALSE}}


def sim(grace: float = 5.0) -> Sim:
    """A Sim fed the daemon's confirmations, set by hand in `traffic_off`."""
    s = Sim(make_policy(fall=3, shutdown_grace=grace))
    s.traffic_off = {}
    return s


def test_no_confirmation_keeps_the_site_draining_with_its_instances_up() -> None:
    s = sim()
    s.rounds(3, **FAIL)
    assert s.states()["eu"] == "draining"
    for d in s.rounds(30, **FAIL):
        assert d.sites["eu"].state.value == "draining"
        assert d.sites["eu"].instances == "running" and d.sites["eu"].weight == 0


def test_the_grace_counts_from_the_confirmation() -> None:
    s = sim(grace=5.0)
    s.rounds(3, **FAIL)
    s.rounds(10, **FAIL)  # far past the grace counted from the drain
    assert s.states()["eu"] == "draining"
    s.traffic_off = {"eu": s.now}
    confirmed = s.now
    s.rounds(5, **FAIL)
    assert s.states()["eu"] == "draining"  # grace not over: 4 s after the confirmation
    d = s.round(**FAIL)
    assert s.states()["eu"] == "drained" and d.sites["eu"].instances == "stopped"
    assert s.transitions()[-1] == (confirmed + 5.0, "eu", "draining", "drained")


def test_a_confirmation_older_than_the_drain_counts_from_the_drain() -> None:
    s = sim(grace=2.0)
    s.traffic_off = {"eu": -100.0}  # a stale fact must not shorten the grace
    s.rounds(3, **FAIL)
    drained_at = s.now - 1.0
    s.round(**FAIL)
    assert s.states()["eu"] == "draining"
    s.round(**FAIL)
    assert s.states()["eu"] == "drained"
    assert s.transitions()[-1] == (drained_at + 2.0, "eu", "draining", "drained")


def test_a_stop_asked_for_after_the_drain_waits_for_a_fresh_confirmation() -> None:
    # A maintenance drain keeps the instances up; a storage failure stacked on it later
    # stops them, but only shutdown_grace after the traffic is confirmed off again (the
    # runtime withdrew the drain's confirmation: a target no longer confirms it).
    s = sim(grace=5.0)
    s.round()
    s.drain("eu")
    s.traffic_off = {"eu": s.now}
    s.rounds(6)
    assert s.states()["eu"] == "drained"
    assert s.history[-1].sites["eu"].instances == "running"
    s.traffic_off = {}
    for d in s.rounds(8, **FAIL):
        assert d.sites["eu"].state.value == "drained"
        assert d.sites["eu"].instances == "running"
    s.traffic_off = {"eu": s.now}
    for d in s.rounds(5, **FAIL):
        assert d.sites["eu"].instances == "running"
    assert s.round(**FAIL).sites["eu"].instances == "stopped"
