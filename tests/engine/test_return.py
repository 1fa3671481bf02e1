"""The gradual return's rules that the timelines do not show: weights, the canary's
limit and inputs, reloads of the steps, a manual drain's trial (engine/decide.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.engine.helpers import STORAGE_FALSE, Sim, make_policy
from trafficd.engine import SiteSpec
from trafficd.engine.decide import step_weight, trial_drain
from trafficd.model import Cause, Override, Responses, State

DOWN: dict[str, Any] = {"storage": {"eustorage": False}, "endtoend": {"eu": STORAGE_FALSE}}


def returning(steps: tuple[int, ...] = (10, 50, 100), **kw: Any) -> Sim:
    """eu drained for its storage and back: active at the first of `steps`."""
    sim = Sim(make_policy(return_steps=steps, return_step=5.0, shutdown_grace=0.0, **kw))
    sim.rounds(4, **DOWN)
    assert sim.states()["eu"] == "drained"
    for _ in range(6):
        d = sim.round()
        if d.sites["eu"].state is State.ACTIVE:
            break
    assert d.sites["eu"].return_step == 1
    return sim


@pytest.mark.parametrize(
    ("weight", "percent", "expected"),
    [(100, 10, 10), (25, 10, 3), (25, 50, 13), (1, 10, 1), (3, 1, 1), (0, 10, 0), (255, 100, 255)],
)
def test_a_steps_weight_is_its_share_rounded_half_up_and_at_least_one(
    weight: int, percent: int, expected: int
) -> None:
    assert step_weight(SiteSpec("eu", (), weight=weight), percent) == expected


@pytest.mark.parametrize(("errors", "abandoned"), [(5, False), (6, True)])
def test_the_canary_abandons_only_above_its_limit(errors: int, abandoned: bool) -> None:
    sim = returning(return_max_error_ratio=0.05, return_min_requests=100)
    sim.canary = {"eu": Responses(1000, 7)}
    sim.round()  # the step's counters, first seen
    sim.canary = {"eu": Responses(1100, 7 + errors)}  # 5 of 100 is the limit itself
    d = sim.round()
    assert (d.sites["eu"].state is State.DRAINING) is abandoned
    if abandoned:
        assert d.sites["eu"].cause is Cause.CANARY
        assert d.transitions[0].reasons[0] == (
            "return abandoned at step 1 of 3 (weight 10): canary: 6 of 100 responses 5xx "
            "(6.0%), limit 5.0%"
        )


def test_the_canary_waits_for_its_minimum_of_responses() -> None:
    sim = returning(return_min_requests=100)
    sim.canary = {"eu": Responses(0, 0)}
    sim.round()
    sim.canary = {"eu": Responses(99, 99)}
    d = sim.round()
    assert d.sites["eu"].state is State.ACTIVE
    assert any(
        "canary: 99 of 99 responses 5xx (100.0%) in this step" in r for r in d.sites["eu"].reasons
    )


def test_without_the_sites_counters_only_the_probes_decide() -> None:
    sim = returning()
    sim.canary = {"us": Responses(1000, 1000)}  # another site's counters: not eu's
    decisions = sim.rounds(12)
    # Up one step every return_step (5 rounds) from the entry, the last at 100%.
    assert [d.sites["eu"].return_step for d in decisions] == [1] * 4 + [2] * 5 + [None] * 3
    assert not any("canary" in r for d in decisions for r in d.sites["eu"].reasons)


def test_a_new_steps_counters_start_from_its_own_start() -> None:
    """Errors of step 1 below the minimum are not carried into step 2."""
    sim = returning(return_min_requests=100)
    sim.canary = {"eu": Responses(0, 0)}
    sim.round()
    sim.canary = {"eu": Responses(50, 50)}
    decisions = sim.rounds(5)
    assert decisions[-1].sites["eu"].return_step == 2
    sim.canary = {"eu": Responses(150, 51)}  # 1 of 100 in step 2
    assert sim.round().sites["eu"].state is State.ACTIVE


def test_a_reload_of_the_steps_never_raises_a_weight_at_once() -> None:
    sim = returning(steps=(10, 50, 100))
    sim.rounds(5)
    assert sim.state.site("eu").returning == 50
    sim.with_policy(return_steps=(10, 25, 100))  # 50 is no step any more
    d = sim.round()
    assert (d.sites["eu"].weight, d.sites["eu"].return_percent) == (50, 50)
    sim.with_policy(return_steps=(100,))
    decisions = sim.rounds(5)
    assert [d.sites["eu"].weight for d in decisions] == [50, 50, 50, 100, 100]


def test_a_manual_drain_of_a_returning_site_is_tried_like_any_active_sites() -> None:
    sim = returning()
    sim.with_policy(min_active_sites=2)  # eu, returning, is one of the two active sites
    drain = Override(kind="drain", reason="test", who="admin", at=sim.now)
    refusal = trial_drain(sim.state, sim.latest, sim.policy, {}, None, sim.now, "eu", drain)
    assert refusal is not None and refusal.rule == "min_active_sites"
    sim.with_policy(min_active_sites=1)
    assert trial_drain(sim.state, sim.latest, sim.policy, {}, None, sim.now, "eu", drain) is None


def test_a_step_holds_while_its_load_balancer_cannot_be_read() -> None:
    """Issue 21 review: a socket that counts eu but cannot be read left eu out of the
    readings, so its step went up on the probes alone over 5xx nobody saw."""
    sim = returning(return_min_requests=100)
    sim.canary = {"eu": Responses(1000, 0)}
    sim.round()  # step 1's base
    sim.unread = {"eu"}
    decisions = sim.rounds(12)
    assert {d.sites["eu"].return_step for d in decisions} == {1}
    assert any("lb could not be read" in r for r in decisions[-1].sites["eu"].reasons)
    assert any("waiting for the canary to be read" in r for r in decisions[-1].sites["eu"].reasons)
    sim.unread = set()
    sim.canary = {"eu": Responses(1200, 60)}  # 60 of 200 5xx while it was unread: seen now
    d = sim.round()
    assert d.sites["eu"].state is State.DRAINING and d.sites["eu"].cause is Cause.CANARY


def test_responses_between_two_steps_are_counted_in_the_next() -> None:
    """Issue 21 review: with readings taken before the rounds (read_lag), what the site
    served between step 1's last reading and step 2's first was judged by neither."""
    sim = returning(return_min_requests=100, return_max_error_ratio=0.05)
    sim.read_lag = 0.5
    total = 1000
    while sim.state.site("eu").returning == 10:
        total += 100
        sim.canary = {"eu": Responses(total, 0)}
        sim.round()
    sim.canary = {"eu": Responses(total + 300, 300)}  # since step 1's last reading
    d = sim.round()
    assert d.sites["eu"].state is State.DRAINING, d.sites["eu"].reasons
    assert (
        "return abandoned at step 2 of 3 (weight 50): canary: 300 of 300"
        in (d.transitions[0].reasons[0])
    )


def test_a_step_goes_up_only_on_a_reading_taken_at_its_end() -> None:
    """Issue 21 review: the last step went to 100 on a reading taken before its end, so
    what came after was never judged (the canary stops at 100)."""
    sim = returning(steps=(10, 100), return_min_requests=100)
    sim.read_lag = 0.5
    total = 1000
    while True:
        total += 100
        sim.canary = {"eu": Responses(total, 0)}
        before = sim.state.site("eu")
        read_at = sim.now - sim.read_lag
        d = sim.round()
        if d.steps:
            break
    assert d.steps[0].percent == 100
    assert read_at >= before.step_since + sim.policy.return_step
    assert before.step_read_at < before.step_since + sim.policy.return_step  # waited
