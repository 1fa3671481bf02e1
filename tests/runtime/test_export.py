"""The site gauges (runtime/export.py) of a returning site and of a canary drain."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from trafficd.engine import EnginePolicy, SiteSpec, decide
from trafficd.metrics import Metrics
from trafficd.model import Cause, EngineState, SiteMemory, State
from trafficd.runtime.export import Export


def test_a_returning_site_shows_its_step_and_weight_and_a_canary_drain_its_cause() -> None:
    policy = EnginePolicy(
        sites=(SiteSpec("eu", ("eustorage",), weight=50), SiteSpec("us", ("usstorage",))),
        locations=("eustorage", "usstorage"),
        vantages=("v1",),
        quorum=1,
        return_steps=(10, 50, 100),
    )
    state = EngineState(
        sites={
            "eu": SiteMemory(State.ACTIVE, active_since=0.0, returning=50, step_since=0.0),
            "us": SiteMemory(State.DRAINED, Cause.CANARY, since=0.0, drained_at=0.0),
        }
    )
    decision = decide(state, {}, policy, {}, None, 1.0)
    registry = CollectorRegistry()
    Export(Metrics(registry)).decision(decision, {}, None)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("trafficd_site_weight", site="eu") == 25  # 50% of 50
    assert value("trafficd_site_return_step", site="eu") == 2
    assert value("trafficd_site_state", site="eu", state="active") == 1
    assert value("trafficd_site_return_step", site="us") == 0
    assert value("trafficd_site_weight", site="us") == 0
    assert value("trafficd_site_cause", site="us", cause="canary") == 1
