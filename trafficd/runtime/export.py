"""The runtime's metrics: probe results, decisions, blocked drains, coordination.

Written only by effects.py (the one place a round's outcome reaches the world),
on the `Metrics` of metrics.py. Series are looked up once and kept, and a
site's gauges are rewritten only when what they show changed: with a round per
arrival and hundreds of sites, prometheus_client's labels() would otherwise
cost more than the engine itself. A reload that removes a site or a storage
location removes its series too (`configured`): a gauge no one writes any more
would show the last value for ever, and its alert would fire for ever.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Gauge, Histogram

from trafficd.config.model import Config
from trafficd.coordination import Coordinator
from trafficd.engine.decide import SAFETY_RULES
from trafficd.metrics import Metrics
from trafficd.model import Cause, Decision, Observation, Override, Pause, Probe, State
from trafficd.runtime.observations import Key

Holder = tuple[str, str, str]  # (actuator, target, why) holding a drain's stop
CAUSES = tuple(cause.value for cause in Cause)  # every label value, canary too


class Export:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._probe_series: dict[Key, tuple[Gauge, Histogram]] = {}
        self._quay_series: dict[tuple[str, str, str], Gauge] = {}
        self._shown: dict[str, tuple[Any, ...]] = {}
        self._sites: set[str] = set()  # those of the configuration in force
        self._locations: set[str] = set()
        self._vantages: set[str] = set()

    def configured(self, config: Config) -> None:
        """The configuration in force (at start and at each reload): the series of the
        sites and locations it no longer has removed, whoever wrote them; and counters
        at 0 for every site, as Prometheus' increase() misses the first event of a
        series that appears already at 1."""
        sites, locations = set(config.sites), set(config.storage)
        vantages = set(config.all_vantages)
        gone_sites, gone_locations = self._sites - sites, self._locations - locations
        gone_vantages = self._vantages - vantages
        self._sites, self._locations, self._vantages = sites, locations, vantages
        self.metrics.forget("site", gone_sites)
        self.metrics.forget("location", gone_locations)
        self.metrics.forget("vantage", gone_vantages)
        for key in [
            (vantage, probe, target)
            for vantage, probe, target in self._probe_series
            if target in (gone_locations if probe is Probe.STORAGE else gone_sites)
            or vantage in gone_vantages
        ]:
            del self._probe_series[key]
        for quay in [k for k in self._quay_series if k[0] in gone_sites]:
            del self._quay_series[quay]
        for site in gone_sites:
            self._shown.pop(site, None)  # written again in full if it comes back
        for site in sites:
            for rule in SAFETY_RULES:
                self.metrics.safety_blocks.labels(site=site, rule=rule)

    def observation(self, obs: Observation) -> None:
        up, duration = self._series(obs)
        up.set(1 if obs.ok else 0)
        if obs.latency is not None:
            duration.observe(obs.latency)
        for service, healthy in obs.services.items():
            self._service_series(obs, service).set(1 if healthy else 0)
        for step, seconds in obs.steps.items():
            self.metrics.registry_probe_step.labels(
                site=obs.subject, step=step, vantage=obs.vantage
            ).observe(seconds)

    def _series(self, obs: Observation) -> tuple[Gauge, Histogram]:
        """The (up, duration) series of one probe target."""
        series = self._probe_series.get(obs.key)
        if series is None:
            m = self.metrics
            if obs.probe is Probe.STORAGE:
                labels = {"location": obs.subject, "vantage": obs.vantage}
                series = (
                    m.storage_up.labels(**labels),
                    m.storage_probe_duration.labels(**labels),
                )
            else:
                labels = {"site": obs.subject, "probe": obs.probe.value, "vantage": obs.vantage}
                series = (m.probe_success.labels(**labels), m.probe_duration.labels(**labels))
            self._probe_series[obs.key] = series
        return series

    def _service_series(self, obs: Observation, service: str) -> Gauge:
        key = (obs.subject, service, obs.vantage)
        gauge = self._quay_series.get(key)
        if gauge is None:
            gauge = self.metrics.quay_service_up.labels(
                site=obs.subject, service=service, vantage=obs.vantage
            )
            self._quay_series[key] = gauge
        return gauge

    def decision(
        self, decision: Decision, overrides: Mapping[str, Override], pause: Pause | None
    ) -> None:
        """Site gauges, written only for sites whose decision or override changed."""
        m = self.metrics
        for site, d in decision.sites.items():
            o = overrides.get(site)
            shown = (
                d.state,
                d.cause,
                d.weight,
                d.return_step,
                d.would_drain,
                o.kind if o else None,
            )
            if self._shown.get(site) == shown:
                continue
            self._shown[site] = shown
            for state in State:
                m.site_state.labels(site=site, state=state.value).set(1 if d.state is state else 0)
            for cause in CAUSES:
                m.site_cause.labels(site=site, cause=cause).set(
                    1 if d.cause is not None and d.cause.value == cause else 0
                )
            m.site_weight.labels(site=site).set(d.weight)
            m.site_return_step.labels(site=site).set(d.return_step or 0)
            m.site_would_drain.labels(site=site).set(1 if d.would_drain else 0)
            for kind in ("drain", "hold"):
                m.manual_override.labels(site=site, kind=kind).set(
                    1 if o is not None and o.kind == kind else 0
                )
        m.paused.set(1 if pause else 0)

    def traffic_off(self, site: str, seconds: float) -> None:
        self.metrics.site_traffic_off_seconds.labels(site=site).set(seconds)

    def blocked(self, site: str, before: Iterable[Holder], holders: Iterable[Holder]) -> None:
        """`trafficd_site_shutdown_blocked` and one series per target holding the stop."""
        m = self.metrics
        held = {(a, t) for a, t, _ in holders}
        m.site_shutdown_blocked.labels(site=site).set(1 if held else 0)
        for actuator, target in {(a, t) for a, t, _ in before} - held:
            m.site_shutdown_holder.remove(site, actuator, target)
        for actuator, target in held:
            m.site_shutdown_holder.labels(site=site, actuator=actuator, target=target).set(1)

    def coordination(self, coord: Coordinator | None, config: Config) -> None:
        m, me = self.metrics, config.vantage
        if coord is None:  # one instance: it leads, and its own view is the fresh one
            m.coordination_up.set(1)
            m.leader.labels(vantage=me).set(1)
            m.vantage_fresh.labels(vantage=me).set(1)
            return
        m.coordination_up.set(1 if coord.up else 0)
        m.leader.labels(vantage=me).set(1 if coord.leading() else 0)
        for v in config.all_vantages:
            m.vantage_fresh.labels(vantage=v).set(1 if coord.up and coord.fresh(v) else 0)
