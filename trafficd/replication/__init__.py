"""Replication risk read from Quay's database: backlog, blobs at risk, the replication queue.

Beside the pipeline. base.py holds the definitions and the one-shot reads
(`trafficd replication status|check-removal`, the restore gate's samples);
scan.py pages a one-shot read under a deadline; incremental.py and monitor.py
keep the daemon's figures from what changed. Never writes: every query runs in a
read-only transaction under a statement timeout.
"""

from typing import TYPE_CHECKING, Any

from trafficd.replication.base import (
    EXAMPLES,
    HOLDING_SQL,
    MASKS_SQL,
    QUEUE_PREFIX,
    QUEUE_SQL,
    REMOVAL_SQL,
    SAMPLE_SQL,
    SETS_SQL,
    STREAMING,
    Figures,
    LocationFigures,
    PlacedBlob,
    Queue,
    Removal,
    ReplicationError,
    Sample,
    Sets,
    build_figures,
    check_removal,
    configured_locations,
    connect,
    default_locations,
    naive_utc,
    read_figures,
    read_queue,
    render_status,
    sample_placed,
)

if TYPE_CHECKING:
    from trafficd.replication.monitor import ReplicationMonitor


def __getattr__(name: str) -> Any:
    """The daemon's monitor, imported when first asked for: it brings the metrics
    (prometheus_client), which the one-shot commands never use (the CLI's start-up)."""
    if name == "ReplicationMonitor":
        from trafficd.replication.monitor import ReplicationMonitor

        return ReplicationMonitor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EXAMPLES",
    "HOLDING_SQL",
    "MASKS_SQL",
    "QUEUE_PREFIX",
    "QUEUE_SQL",
    "REMOVAL_SQL",
    "SAMPLE_SQL",
    "SETS_SQL",
    "STREAMING",
    "Figures",
    "LocationFigures",
    "PlacedBlob",
    "Queue",
    "Removal",
    "ReplicationError",
    "ReplicationMonitor",
    "Sample",
    "Sets",
    "build_figures",
    "check_removal",
    "configured_locations",
    "connect",
    "default_locations",
    "naive_utc",
    "read_figures",
    "read_queue",
    "render_status",
    "sample_placed",
]
