"""`trafficd report`: an incident as one picture, read from the audit log.

Beside the daemon, like `simulate`: it reads the audit log that store.py
writes (`state_dir/events.jsonl` and its rotated files, or copies of it),
never the API, so it works when the daemon is down, which is when a
postmortem is written. incident.py turns the events into bands, marks and
milestones; page.py draws them as one self-contained HTML file (inline SVG
and CSS, no script, no external asset); markdown.py prints the summary.
"""

from __future__ import annotations

from trafficd.report.incident import Report, build_report
from trafficd.report.layout import Layout, read_layout

__all__ = ["Layout", "Report", "build_report", "read_layout"]
