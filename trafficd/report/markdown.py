"""`trafficd report --format markdown`: the summary tables as text, for chat and tickets.

Beside page.py: the same milestones (incident.py), one Markdown table per
incident; times exactly as the log wrote them, offsets from the first
failing probe in seconds to the millisecond.
"""

from __future__ import annotations

from trafficd.report.incident import Report, clock


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report, title: str = "trafficd incident report") -> str:
    lines = [
        f"# {title}",
        "",
        f"{clock(report.start)} to {clock(report.end)} ({report.end - report.start:.3f} s), "
        f"{report.events} event(s) from {', '.join(report.sources) or 'a replayed timeline'}",
    ]
    for site in report.sites:
        lines += ["", f"## site {site.name}"]
        if not site.incidents:
            lines += ["", "no drain in this window"]
        for inc in site.incidents:
            origin = inc.origin
            lines += [
                "",
                f"### drain of {site.name} ({inc.cause or 'unknown cause'}), "
                f"decided {clock(inc.start)}",
                "",
                "| milestone | time (UTC) | since first failure | from the log |",
                "|---|---|---|---|",
            ]
            for m in inc.milestones:
                when = m.time or "—"
                offset = "" if m.t is None else f"+{m.t - origin:.3f} s"
                lines.append(f"| {_cell(m.what)} | {when} | {offset} | {_cell(m.detail)} |")
            if inc.blobs_at_risk is not None:
                blobs, size = inc.blobs_at_risk
                lines += ["", f"Blobs at risk when drained: {blobs} blob(s), {size} bytes."]
    return "\n".join(lines) + "\n"
