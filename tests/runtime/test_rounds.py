"""The pure half of a round (runtime/rounds.py): expiries on wall time, the shared store's
overrides taken, a follower's view, and what counts as a change to act on."""

from __future__ import annotations

from pathlib import Path

from tests.runtime.fakes import T0
from tests.test_api import write_config
from trafficd.config import load
from trafficd.model import EngineState, Observation, Override, Pause, Probe, State
from trafficd.policy import engine_policy
from trafficd.runtime.rounds import Rounds


def rounds(tmp: Path) -> Rounds:
    tmp.mkdir(exist_ok=True)
    policy = engine_policy(load(write_config(tmp)))
    return Rounds(policy, EngineState(), {}, None)


def healthy(t: float) -> dict[tuple[str, Probe, str], Observation]:
    out = [Observation(t, "test", Probe.ENDTOEND, s, True, 200) for s in ("us", "eu")]
    out += [Observation(t, "test", Probe.INSTANCE, s, True, 200) for s in ("us", "eu")]
    out += [Observation(t, "test", Probe.STORAGE, s, True) for s in ("usstorage", "eustorage")]
    return {o.key: o for o in out}


def test_an_override_expires_on_wall_time_whatever_the_engine_clock_says(tmp_path: Path) -> None:
    r = rounds(tmp_path)
    r.command("eu", Override("drain", "window", "ops", T0, expires=T0 + 60), None)
    first = r.tick(healthy(T0), T0, T0, restore_blocks=None, traffic_off={})
    assert first.expired == () and first.changed  # the first round: every site is new
    assert first.decision.sites["eu"].state is State.DRAINING
    # The engine clock says an hour later, the wall clock only 30 s: still live.
    later = r.tick(healthy(T0 + 3600), T0 + 3600, T0 + 30, restore_blocks=None, traffic_off={})
    assert later.expired == () and "eu" in r.overrides and not later.changed
    gone = r.tick(healthy(T0 + 3601), T0 + 3601, T0 + 60, restore_blocks=None, traffic_off={})
    assert [site for site, _ in gone.expired] == ["eu"] and r.overrides == {}


def test_the_stores_overrides_are_taken_only_when_they_differ(tmp_path: Path) -> None:
    r = rounds(tmp_path)
    hold = {"us": Override("hold", "keep", "ops", T0)}
    assert r.take(hold, None)
    assert not r.take(dict(hold), None)
    assert r.take(hold, Pause("backup", "ops", T0))
    assert r.pause is not None and r.overrides == hold and r.overrides is not hold


def test_a_trial_drain_keeps_nothing(tmp_path: Path) -> None:
    r = rounds(tmp_path)
    r.tick(healthy(T0), T0, T0, restore_blocks=None, traffic_off={})
    r.command("us", Override("drain", "one", "ops", T0), None)
    r.tick(healthy(T0 + 1), T0 + 1, T0 + 1, restore_blocks=None, traffic_off={})
    refusal = r.trial(
        healthy(T0 + 2),
        "eu",
        Override("drain", "two", "ops", T0 + 2),
        T0 + 2,
        T0 + 2,
        restore_blocks=None,
    )
    assert refusal is not None and refusal.rule == "min_active_sites"
    assert set(r.overrides) == {"us"}


def test_a_follower_keeps_its_view_of_another_configuration(tmp_path: Path) -> None:
    leader, follower = rounds(tmp_path / "a"), rounds(tmp_path / "b")
    decided = leader.tick(healthy(T0), T0, T0, restore_blocks=None, traffic_off={}).decision
    assert follower.follow(decided.state, decided.sites, healthy(T0), T0)
    assert follower.decision is not None and follower.decision.sites == decided.sites
    fewer = {"us": decided.sites["us"]}
    assert not follower.follow(decided.state, fewer, healthy(T0), T0)
    assert follower.decision.sites == decided.sites  # the last view is kept
