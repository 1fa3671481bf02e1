"""Every metric of docs/design.md's contract, built on a registry passed in (never the global one).

Beside the pipeline: probers, the engine's runner, actuators and the API
update the `Metrics` object the daemon creates; tests build their own
registry and read values back with `get_sample_value`. Names, types and
labels are fixed by the contract. `forget` removes the series of a site or a location
no longer configured (a reload), so that its gauges do not show it for ever.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from trafficd import __version__

M = TypeVar("M", Gauge, Counter, Histogram)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # Every labelled metric with its label names in order: remove() takes the values
        # in that order, and prometheus_client keeps the names private.
        self._labelled: list[tuple[Gauge | Counter | Histogram, tuple[str, ...]]] = []

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return keep(Gauge(name, doc, labels, registry=registry), labels)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return keep(Counter(name, doc, labels, registry=registry), labels)

        def histogram(name: str, doc: str, labels: tuple[str, ...]) -> Histogram:
            metric = Histogram(name, doc, labels, registry=registry, buckets=LATENCY_BUCKETS)
            return keep(metric, labels)

        def keep(metric: M, labels: tuple[str, ...]) -> M:
            if labels:
                self._labelled.append((metric, labels))
            return metric

        self.site_state = gauge(
            "trafficd_site_state", "1 for the site's current state", ("site", "state")
        )
        self.site_cause = gauge(
            "trafficd_site_cause", "1 for the current drain cause", ("site", "cause")
        )
        self.site_weight = gauge("trafficd_site_weight", "desired traffic weight", ("site",))
        self.site_return_step = gauge(
            "trafficd_site_return_step",
            "the return step (1-based, of policy.return_steps) the site is at; 0: not returning",
            ("site",),
        )
        self.site_would_drain = gauge(
            "trafficd_site_would_drain", "observe-mode site that would be drained", ("site",)
        )
        self.probe_success = gauge(
            "trafficd_probe_success", "last probe succeeded", ("site", "probe", "vantage")
        )
        self.probe_duration = histogram(
            "trafficd_probe_duration_seconds", "probe latency", ("site", "probe", "vantage")
        )
        self.storage_up = gauge(
            "trafficd_storage_up", "last storage probe succeeded", ("location", "vantage")
        )
        self.storage_probe_duration = histogram(
            "trafficd_storage_probe_duration_seconds",
            "storage probe latency",
            ("location", "vantage"),
        )
        self.quay_service_up = gauge(
            "trafficd_quay_service_up",
            "service health from /health/endtoend",
            ("site", "service", "vantage"),
        )
        self.registry_probe_step = histogram(
            "trafficd_registry_probe_step_seconds",
            "synthetic pull step latency",
            ("site", "step", "vantage"),
        )
        self.transitions = counter(
            "trafficd_transitions_total",
            "site state transitions",
            ("site", "from_state", "to_state"),
        )
        self.actuations = counter(
            "trafficd_actuations_total",
            "actuator applies, per target (HAProxy socket, DNS server or zone, site)",
            ("actuator", "target", "result"),
        )
        self.actuator_in_sync = gauge(
            "trafficd_actuator_in_sync",
            "the target (HAProxy socket, DNS server or zone, site) holds the desired state",
            ("actuator", "target"),
        )
        self.site_shutdown_blocked = gauge(
            "trafficd_site_shutdown_blocked",
            "a drain that stops the site's instances whose traffic is not confirmed off "
            "within policy.shutdown_deadline: the instances stay up",
            ("site",),
        )
        self.site_shutdown_holder = gauge(
            "trafficd_site_shutdown_holder",
            "1 for each traffic target not confirming a blocked site's traffic off",
            ("site", "actuator", "target"),
        )
        self.site_traffic_off_seconds = gauge(
            "trafficd_site_traffic_off_seconds",
            "seconds since every traffic target confirmed the drained site's traffic off "
            "(0 while not confirmed)",
            ("site",),
        )
        self.site_residual_sessions = gauge(
            "trafficd_site_residual_sessions",
            "new sessions HAProxy took for the site since its traffic was confirmed off "
            "(show stat stot): clients that cached the old DNS answer",
            ("site", "target"),
        )
        self.site_instances_unavailable = gauge(
            "trafficd_site_instances_unavailable",
            "the site's instances, started or running, have no available replica within "
            "the actuator's timeout",
            ("site",),
        )
        self.dns_ttl = gauge(
            "trafficd_dns_ttl_seconds",
            "the TTL the DNS actuators give the global name (bounds what resolvers cache)",
            ("actuator",),
        )
        self.actuator_ready = gauge(
            "trafficd_actuator_ready",
            "last preflight passed (credentials, reachability)",
            ("actuator",),
        )
        self.task_restarts = counter(
            "trafficd_task_restarts_total",
            "supervised daemon tasks that died and were restarted",
            ("task",),
        )
        self.storage_preference_drift = gauge(
            "trafficd_storage_preference_drift",
            "the site's real QUAY_DISTRIBUTED_STORAGE_PREFERENCE differs from its storage list",
            ("site",),
        )
        self.safety_blocks = counter(
            "trafficd_safety_blocks_total", "changes refused by a safety rule", ("site", "rule")
        )
        self.manual_override = gauge(
            "trafficd_manual_override", "operator override", ("site", "kind")
        )
        self.paused = gauge("trafficd_paused", "automatic changes paused")
        self.state_save_errors = counter(
            "trafficd_state_save_errors_total",
            "state.json writes that failed (a full or read-only disk); the state is saved "
            "again every round until one succeeds",
        )
        self.config_last_reload_successful = gauge(
            "trafficd_config_last_reload_successful", "the last configuration load succeeded"
        )
        self.api_auth_failures = counter(
            "trafficd_api_auth_failures_total",
            "API requests refused for a missing or unknown token or certificate subject",
            ("route",),
        )
        self.build_info = gauge("trafficd_build_info", "trafficd version", ("version",))
        self.build_info.labels(version=__version__).set(1)
        self.replication_backlog_blobs = gauge(
            "trafficd_replication_backlog_blobs", "blobs missing at a location", ("location",)
        )
        self.replication_backlog_bytes = gauge(
            "trafficd_replication_backlog_bytes", "bytes missing at a location", ("location",)
        )
        self.replication_at_risk_blobs = gauge(
            "trafficd_replication_at_risk_blobs", "blobs held only at a location", ("location",)
        )
        self.replication_at_risk_bytes = gauge(
            "trafficd_replication_at_risk_bytes", "bytes held only at a location", ("location",)
        )
        self.replication_queue_items = gauge(
            "trafficd_replication_queue_items", "available queue items"
        )
        self.replication_oldest_item_age = gauge(
            "trafficd_replication_oldest_item_age_seconds", "age of the oldest available item"
        )
        self.replication_dead_items = gauge(
            "trafficd_replication_dead_items", "queue items with no retries left"
        )
        self.replication_stuck_items = gauge(
            "trafficd_replication_stuck_items", "items claimed past their expiry by over 10 minutes"
        )
        self.replication_last_success = gauge(
            "trafficd_replication_last_success_timestamp_seconds",
            "last successful replication read",
        )
        self.replication_stale = gauge(
            "trafficd_replication_stale",
            "1 while the figures are not proven exact as of the last round "
            "(a transaction ended since the count that confirmed them, or a re-scan runs)",
        )
        self.replication_confirmed = gauge(
            "trafficd_replication_confirmed_timestamp_seconds",
            "the figures count every row deleted or changed before this moment "
            "(the count that last confirmed them)",
        )
        self.replication_up = gauge(
            "trafficd_replication_up", "the last read of Quay's database succeeded"
        )
        self.replication_replica_placements = gauge(
            "trafficd_replication_replica_placements",
            "placements beyond each blob's first: rises with every completed copy",
        )
        self.restore_gate_missing = gauge(
            "trafficd_restore_gate_missing_blobs",
            "sampled blobs the database places at a recovering location that its storage "
            "lacks (the last restore-gate check)",
            ("location",),
        )
        self.leader = gauge("trafficd_leader", "this instance holds the lease", ("vantage",))
        self.vantage_fresh = gauge(
            "trafficd_vantage_fresh", "a vantage's observations are fresh", ("vantage",)
        )
        self.coordination_up = gauge("trafficd_coordination_up", "the shared store answers")

    def forget(self, label: str, values: Collection[str]) -> None:
        """Every series whose `label` is one of `values` removed, from every metric with
        that label (a histogram's buckets, sum and count with it)."""
        if values:
            self._remove({label}, lambda labels: labels.get(label) in values)

    def forget_where(self, labels: Mapping[str, str]) -> None:
        """Every series whose labels include all of `labels` removed, from every metric
        that has them all (a target an actuator no longer has: its actuator and target)."""
        self._remove(set(labels), lambda held: all(held.get(k) == v for k, v in labels.items()))

    def _remove(self, needed: set[str], match: Callable[[Mapping[str, str]], bool]) -> None:
        for metric, names in self._labelled:
            if not needed <= set(names):
                continue
            held = {
                tuple(sample.labels[n] for n in names)
                for family in metric.collect()
                for sample in family.samples
                if match(sample.labels)
            }
            for labelvalues in held:
                metric.remove(*labelvalues)
