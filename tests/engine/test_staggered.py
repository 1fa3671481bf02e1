"""Rounds that hold one new observation each, as the daemon runs them with one vantage.

The daemon decides as soon as a probe completes, so a round usually carries a single
new observation. Whether a failure is local or global must still be judged against
the latest view of every site and location, or a global failure would drain a site
and a status snapshot would flicker between explanations.
"""

from __future__ import annotations

from tests.engine.helpers import STORAGE_FALSE, Sim, make_policy
from trafficd.model import Cause


def staggered(**kw: object) -> Sim:
    sim = Sim(make_policy(**kw))  # type: ignore[arg-type]
    sim.staggered = True
    return sim


def test_database_false_everywhere_is_global_in_every_round() -> None:
    sim = staggered(min_active_sites=0, max_drains=5)
    bad = {"database": False}
    sim.rounds(6, endtoend={"eu": bad, "us": bad})
    assert sim.states() == {"eu": "active", "us": "active"}
    note = "global: database fails on every reachable site; nothing drains"
    # Every decision after the first full interval explains itself the same way,
    # whichever probe's completion triggered it.
    per_interval = len(sim.history) // 6
    for d in sim.history[per_interval:]:
        assert note in d.sites["eu"].reasons, d.sites["eu"].reasons
        assert note in d.sites["us"].reasons


def test_database_cut_at_one_site_still_drains_it() -> None:
    sim = staggered(shutdown_grace=0.0)
    sim.rounds(4, endtoend={"eu": {"redis": False}})
    assert sim.state.site("eu").cause is Cause.DATABASE
    assert sim.states() == {"eu": "drained", "us": "active"}


def test_every_location_failing_is_global_and_drains_nothing() -> None:
    sim = staggered(min_active_sites=0, max_drains=5)
    both = {"eustorage": False, "usstorage": False}
    # us's endtoend cannot tell (None): a site saying storage: true would prove its first
    # location healthy, and that location unreachable from here, not part of an outage
    # (timeline unreachable-location-fakes-global-outage).
    sim.rounds(6, storage=both, endtoend={"eu": "timeout", "us": None})
    assert sim.states() == {"eu": "active", "us": "active"}
    assert not sim.transitions()


def test_one_location_failing_drains_its_site_after_fall_intervals() -> None:
    sim = staggered(shutdown_grace=0.0)
    sim.rounds(3, storage={"eustorage": False}, endtoend={"eu": STORAGE_FALSE})
    assert sim.states()["eu"] in ("draining", "drained")
    assert sim.state.site("eu").cause is Cause.STORAGE
    assert sim.states()["us"] == "active"


def test_instance_failure_at_one_site_drains_it_but_everywhere_is_global() -> None:
    sim = staggered()
    sim.rounds(4, instance={"eu": False})
    assert sim.state.site("eu").cause is Cause.INSTANCE
    sim2 = staggered(min_active_sites=0, max_drains=5)
    sim2.rounds(6, instance={"eu": False, "us": False})
    assert sim2.states() == {"eu": "active", "us": "active"}


def test_a_site_back_from_a_storage_drain_is_not_drained_again_by_its_booting_instances() -> None:
    """Found by the end-to-end test: while trafficd kept eu's Quay stopped, its instance
    probe failed every round; when eu went active, those rounds must not count."""
    sim = staggered(fall=2, rise=2, shutdown_grace=1.0, restore_timeout=30.0, max_drains=5)
    down: dict[str, object] = {
        "storage": {"eustorage": False},
        "endtoend": {"eu": "connect"},
        "instance": {"eu": False},
    }
    sim.rounds(12, **down)
    assert sim.states()["eu"] == "drained"
    sim.rounds(3, endtoend={"eu": "connect"}, instance={"eu": False})
    assert sim.states()["eu"] == "restoring"
    # endtoend answers before the instance probe catches up
    sim.round(instance={"eu": False})
    assert sim.states()["eu"] == "active"
    sim.rounds(3)
    assert sim.states()["eu"] == "active"
    assert [t[1:] for t in sim.transitions()][-1] == ("eu", "restoring", "active")
