"""Replication risk read from Quay's database: backlog, blobs at risk, the replication queue.

Beside the pipeline. base.py holds the definitions and the one-shot reads
(`trafficd replication status|check-removal`, the restore gate's samples);
scan.py pages a one-shot read under a deadline; incremental.py and monitor.py
keep the daemon's figures from what changed. Never writes: every query runs in a
read-only transaction under a statement timeout.
"""

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
from trafficd.replication.monitor import ReplicationMonitor

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
