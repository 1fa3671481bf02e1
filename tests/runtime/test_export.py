"""The site gauges (runtime/export.py) of a returning site and of a canary drain, and
the series of the sites and locations a reload removes."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from tests.runtime.test_runtime import Rig
from trafficd.config import load
from trafficd.engine import EnginePolicy, SiteSpec, decide
from trafficd.metrics import Metrics
from trafficd.model import Cause, EngineState, SiteMemory, State
from trafficd.runtime.commands import Command
from trafficd.runtime.export import Export
from trafficd.runtime.wiring import Runtime


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


async def test_a_reload_that_removes_a_site_removes_its_series(tmp_path: Path) -> None:
    """eu drained by hand, then removed from the file: its gauges (state, override,
    weight, probes) must not go on saying drained, or its alerts fire for ever."""
    rig = Rig(tmp_path)
    runtime = rig.runtime
    try:
        await rig.interval()
        await runtime.commands.execute(
            Command.parse("drain", "eu", "ops", {"reason": "retire", "force": True})
        )
        sample = runtime.metrics.registry.get_sample_value
        assert sample("trafficd_site_state", {"site": "eu", "state": "draining"}) == 1
        path = tmp_path / "trafficd.yaml"
        text = path.read_text()
        path.write_text(text[: text.index("  eu: {")] + text[text.index("probes:") :])
        new = load(path)
        assert set(new.sites) == {"us"}
        await runtime.reload(new)
        assert not series(runtime.metrics.registry, "site", "eu")
        assert sample("trafficd_site_state", {"site": "us", "state": "active"}) == 1
        assert sample("trafficd_storage_up", {"location": "eustorage", "vantage": "test"}) == 1
    finally:
        await runtime.stop()
        runtime.close()


async def test_a_location_removed_by_a_reload_loses_its_series_and_added_back_shows_them(
    tmp_path: Path,
) -> None:
    """eustorage (and eu, on it) removed: every location series goes, whoever wrote it
    (the probes, the replication monitor); both configured again: their gauges are
    written again at once, not left out as unchanged."""
    rig = Rig(tmp_path)
    runtime = rig.runtime
    try:
        await rig.interval()
        runtime.metrics.replication_backlog_blobs.labels(location="eustorage").set(3)
        path = tmp_path / "trafficd.yaml"
        old = path.read_text()
        text = old.replace(f"  eustorage: [LocalStorage, {{storage_path: {tmp_path}/eu}}]\n", "")
        path.write_text(text[: text.index("  eu: {")] + text[text.index("probes:") :])
        new = load(path)
        assert set(new.storage) == {"usstorage"}
        await runtime.reload(new)
        registry = runtime.metrics.registry
        assert not series(registry, "location", "eustorage")
        assert not series(registry, "site", "eu")
        assert series(registry, "location", "usstorage")
        path.write_text(old)
        await runtime.reload(load(path))  # eu and eustorage again: shown at once
        sample = registry.get_sample_value
        assert sample("trafficd_site_state", {"site": "eu", "state": "active"}) == 1
        assert sample("trafficd_manual_override", {"site": "eu", "kind": "drain"}) == 0
        rig.prober.config = runtime.live.config
        await rig.interval()
        assert sample("trafficd_storage_up", {"location": "eustorage", "vantage": "test"}) == 1
        assert (
            sample("trafficd_probe_success", {"site": "eu", "probe": "endtoend", "vantage": "test"})
            == 1
        )
    finally:
        await runtime.stop()
        runtime.close()


def series(registry: CollectorRegistry, label: str, value: str) -> list[str]:
    """Every sample (by name) of the registry whose `label` is `value`."""
    return [
        s.name
        for family in registry.collect()
        for s in family.samples
        if s.labels.get(label) == value
    ]


async def test_an_actuator_or_vantage_removed_by_a_reload_loses_its_series(
    tmp_path: Path,
) -> None:
    """A removed actuator's out-of-sync gauge would keep TrafficdActuatorOutOfSync firing
    for ever, a removed vantage's staleness its alert (review of issue 19's reloads)."""
    rig = Rig(tmp_path)
    runtime = rig.runtime
    try:
        await rig.interval()
        runtime.metrics.actuator_in_sync.labels(actuator="lb", target="lb").set(0)
        runtime.metrics.vantage_fresh.labels(vantage="gone").set(0)
        runtime.effects.export._vantages.add("gone")  # configured before this reload
        assert series(runtime.metrics.registry, "actuator", "lb")
        await runtime.reload(load(tmp_path / "trafficd.yaml"))  # lb is no longer built
        assert not series(runtime.metrics.registry, "actuator", "lb")
        assert not series(runtime.metrics.registry, "vantage", "gone")
        assert series(runtime.metrics.registry, "vantage", "test")  # still configured
    finally:
        await runtime.stop()
        runtime.close()


async def test_a_target_removed_from_an_actuator_that_stays_loses_its_series(
    tmp_path: Path,
) -> None:
    """A command actuator's targets are its sites: eu removed, its out-of-sync gauge
    (trafficd_actuator_in_sync{actuator=systemd,target=eu} 0) kept the critical alert
    firing for ever (issue 19 review)."""

    def config(sites: tuple[str, ...]) -> Path:
        lines = [
            "vantage: test",
            "state_dir: state",
            "storage:",
            *(f"  {s}storage: [LocalStorage, {{storage_path: {tmp_path}/{s}}}]" for s in sites),
            "sites:",
            *(
                f'  {s}: {{url: "http://q.test", connect: "127.0.0.1:{i + 1}",'
                f" storage: [{s}storage], addresses: [192.0.2.{i + 10}],"
                " command: {stop: [/bin/true], start: [/bin/true], timeout: 5s}}"
                for i, s in enumerate(sites)
            ),
            "probes: {interval: 1s, timeout: 500ms}",
            "policy: {fall: 2, rise: 2, hold_down: 0s, min_active_sites: 1}",
            "actuators:",
            "  - {type: command, id: systemd}",
        ]
        path = tmp_path / "trafficd.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    path = config(("us", "eu"))
    runtime = Runtime.open(load(path), path)
    try:
        runtime.start()
        runtime.metrics.actuator_in_sync.labels(actuator="systemd", target="eu").set(0)
        runtime.metrics.actuator_in_sync.labels(actuator="systemd", target="us").set(1)
        config(("us",))
        await runtime.reload(load(path))
        sample = runtime.metrics.registry.get_sample_value
        assert sample("trafficd_actuator_in_sync", {"actuator": "systemd", "target": "eu"}) is None
        assert sample("trafficd_actuator_in_sync", {"actuator": "systemd", "target": "us"}) == 1
    finally:
        await runtime.stop()
        runtime.close()
