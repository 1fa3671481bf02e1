"""The HTML page of `trafficd report`: one file, inline SVG and CSS, no script.

Draws what incident.py built: per site the summary table, the timeline and
the numbered list of the events marked on it. It can be mailed or attached
to a ticket: no script, no font, image or style sheet is fetched.

Every drawn band and mark carries its times in data- attributes
(`data-start`, `data-end`, `data-t`) beside its x coordinates, and each
timeline its scale (`data-t0`, `data-t1`, `data-x0`, `data-x1`), so a test can
read the rendered page back and check each boundary against the log.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from html import escape

from trafficd import __version__
from trafficd.report.incident import Band, Incident, Mark, Report, SiteReport, clock

X0, X1 = 250.0, 1170.0  # the plot area of every timeline, in SVG pixels
WIDTH = 1190
ROW, GAP, TOP = 16, 4, 26  # band height, space between rows, room for the time axis

COLOURS = {
    "ok": "#1e8e3e",
    "fail": "#d93025",
    "unknown": "#f9ab00",
    "active": "#81c995",
    "draining": "#fbbc04",
    "drained": "#c5221f",
    "restoring": "#4285f4",
    "info": "#3c4043",
    "error": "#d93025",
    "pending": "#f9ab00",
}

CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  margin: 24px; color: #202124; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
.meta { color: #5f6368; margin: 0 0 12px; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid #dadce0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f1f3f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.when { white-space: nowrap; font-variant-numeric: tabular-nums; }
.missing { color: #80868b; }
.caption { color: #5f6368; font-size: 12px; margin: 10px 0 4px; }
.risk { color: #c5221f; font-weight: 600; }
svg.timeline { display: block; border: 1px solid #dadce0; background: #fff; }
svg text { font: 11px system-ui, sans-serif; fill: #3c4043; }
svg text.mark-n { font-size: 9px; fill: #fff; text-anchor: middle; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 14px; height: 10px; margin-right: 4px; }
table.events td { font-size: 12px; }
"""


def _x(t: float, t0: float, t1: float) -> float:
    return X0 + (t - t0) * (X1 - X0) / (t1 - t0 if t1 > t0 else 1.0)


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def _tick_step(span: float) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if span / step <= 10:
            return float(step)
    return 7200.0 * math.ceil(span / 7200.0 / 10)


def _tick_label(t: float, step: float) -> str:
    if t < 1e9:
        return f"t={t:g}"
    text = datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")
    return text[:-5] if step < 1 else text[:-7]


def _band_class(ok: bool | None) -> str:
    return {True: "ok", False: "fail", None: "unknown"}[ok]


def _rect(cls: str, x0: float, x1: float, y: float, colour: str, attrs: str, title: str) -> str:
    width = max(x1 - x0, 1.0)  # a band of one probe round stays visible
    return (
        f'<rect class="{cls}" x="{_fmt(x0)}" y="{y}" width="{_fmt(width)}" height="{ROW}" '
        f'fill="{colour}" data-x0="{_fmt(x0)}" data-x1="{_fmt(x1)}" {attrs}>'
        f"<title>{escape(title)}</title></rect>"
    )


def timeline(site: SiteReport, t0: float, t1: float, view: str = "site") -> str:
    """The site's timeline from t0 to t1; `view` names it in every element's data-view
    (`site` for the whole window, `incident-N` for the close-up of one drain)."""
    marks = [m for m in site.marks if t0 <= m.t <= t1]
    lanes = ["decisions", *sorted({m.lane for m in marks} - {"decisions"})]
    height = TOP + (len(site.rows) + 1 + len(lanes)) * (ROW + GAP) + 10
    tag = f'data-site="{escape(site.name)}" data-view="{view}"'
    out = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}" {tag} '
        f'data-t0="{t0!r}" data-t1="{t1!r}" data-x0="{X0}" data-x1="{X1}">'
    ]
    # Time axis.
    step = _tick_step(t1 - t0)
    tick = math.ceil(t0 / step) * step
    while tick <= t1 + 1e-9:
        x = _fmt(_x(tick, t0, t1))
        out.append(
            f'<line class="tick" x1="{x}" x2="{x}" y1="{TOP - 6}" y2="{height - 6}" '
            'stroke="#e8eaed"/>'
            f'<text x="{x}" y="{TOP - 10}" text-anchor="middle">{_tick_label(tick, step)}</text>'
        )
        tick += step
    y = float(TOP)
    for label in site.rows:
        out.append(_row_label(label, y))
        out.append(
            f'<rect class="nodata" x="{X0}" y="{y}" width="{X1 - X0}" height="{ROW}" '
            'fill="#f1f3f4"/>'
        )
        for b in site.bands:
            if b.row == label and b.end >= t0 and b.start <= t1:
                clipped = replace(b, start=max(b.start, t0), end=min(b.end, t1))
                out.append(_band(clipped, t0, t1, y, tag))
        y += ROW + GAP
    out.append(_row_label("state", y))
    for s in site.states:
        if s.end < t0 or s.start > t1:
            continue
        start, end = max(s.start, t0), min(s.end, t1)
        x0, x1 = _x(start, t0, t1), _x(end, t0, t1)
        attrs = (
            f'{tag} data-row="state" data-state="{s.state}" '
            f'data-start="{start!r}" data-end="{end!r}"'
        )
        title = f"{s.state} from {clock(s.start)}: {s.text}"
        out.append(_rect(f"state {s.state}", x0, x1, y, COLOURS[s.state], attrs, title))
        if x1 - x0 > 60:
            ink = "#fff" if s.state in ("drained", "restoring") else "#202124"
            out.append(
                f'<text x="{_fmt(x0 + 4)}" y="{y + ROW - 4}" style="fill:{ink}">{s.state}</text>'
            )
    y += ROW + GAP
    lane_y = {lane: y + i * (ROW + GAP) for i, lane in enumerate(lanes)}
    for lane, ly in lane_y.items():
        out.append(_row_label(lane, ly))
    for mark in marks:
        out.append(_mark(mark, t0, t1, lane_y[mark.lane], TOP, tag))
    out.append("</svg>")
    return "\n".join(out)


def _row_label(label: str, y: float) -> str:
    return f'<text class="row-label" x="8" y="{y + ROW - 4}">{escape(label)}</text>'


def _band(band: Band, t0: float, t1: float, y: float, tag: str) -> str:
    cls = _band_class(band.ok)
    x0, x1 = _x(band.start, t0, t1), _x(band.end, t0, t1)
    attrs = (
        f'{tag} data-row="{escape(band.row)}" '
        f'data-vantage="{escape(band.vantage)}" '
        f'data-probe="{band.probe}" data-target="{escape(band.target)}" '
        f'data-ok="{cls}" data-start="{band.start!r}" data-end="{band.end!r}"'
    )
    title = f"{band.row}: {band.text} (from {band.time})"
    return _rect(f"band {cls}", x0, x1, y, COLOURS[cls], attrs, title)


def _mark(mark: Mark, t0: float, t1: float, y: float, top: float, tag: str) -> str:
    x = _fmt(_x(mark.t, t0, t1))
    colour = COLOURS[mark.status]
    guide = ""
    if mark.lane == "decisions":  # a decision crosses every row
        guide = (
            f'<line x1="{x}" x2="{x}" y1="{top}" y2="{y}" stroke="{colour}" '
            'stroke-dasharray="3 3" stroke-width="1"/>'
        )
    cy = y + ROW / 2
    return (
        f'<g class="mark {mark.status}" {tag} data-n="{mark.n}" '
        f'data-lane="{escape(mark.lane)}" '
        f'data-t="{mark.t!r}" data-x="{x}">{guide}'
        f'<circle cx="{x}" cy="{cy}" r="7" fill="{colour}"/>'
        f'<text class="mark-n" x="{x}" y="{cy + 3}">{mark.n}</text>'
        f"<title>{mark.n}. {escape(mark.time)} {escape(mark.title)}: {escape(mark.text)}</title>"
        "</g>"
    )


def close_up(incident: Incident, t0: float, t1: float) -> tuple[float, float] | None:
    """The window of one drain, from its first failing probe to its last milestone with
    a margin, when the whole report's window would squeeze it into under half the width."""
    times = [m.t for m in incident.milestones if m.t is not None]
    lo, hi = min(times, default=incident.start), max(times, default=incident.start)
    if incident.end is None:
        hi = t1
    pad = max((hi - lo) * 0.1, 1.0)
    lo, hi = max(t0, lo - pad), min(t1, hi + pad)
    return (lo, hi) if hi > lo and hi - lo < (t1 - t0) / 2 else None


def _offset(t: float | None, origin: float) -> str:
    return "" if t is None else f"+{t - origin:.3f} s"


def summary_table(incident: Incident) -> str:
    origin = incident.origin
    rows = []
    for m in incident.milestones:
        when = escape(m.time) if m.time else '<span class="missing">—</span>'
        t = f' data-t="{m.t!r}"' if m.t is not None else ""
        rows.append(
            f'<tr data-milestone="{escape(m.what)}"{t}><td>{escape(m.what)}</td>'
            f'<td class="when">{when}</td><td class="num">{_offset(m.t, origin)}</td>'
            f"<td>{escape(m.detail)}</td></tr>"
        )
    risk = ""
    if incident.blobs_at_risk is not None:
        blobs, size = incident.blobs_at_risk
        risk = (
            f'<p class="risk" data-blobs="{blobs}" data-bytes="{size}">blobs at risk when '
            f"drained: {blobs} blob(s), {size} bytes</p>"
        )
    return (
        f'<table class="summary" data-site="{escape(incident.site)}" '
        f'data-start="{incident.start!r}"><tr><th>milestone</th><th>time (UTC, from the log)'
        f"</th><th>since first failure</th><th>from the log</th></tr>"
        + "".join(rows)
        + "</table>"
        + risk
    )


def event_table(marks: Iterable[Mark]) -> str:
    rows = [
        f'<tr class="event {m.status}" data-n="{m.n}" data-t="{m.t!r}"><td class="num">{m.n}</td>'
        f'<td class="when">{escape(m.time)}</td><td>{escape(m.lane)}</td>'
        f"<td>{escape(m.title)}</td><td>{escape(m.text)}</td></tr>"
        for m in marks
    ]
    if not rows:
        return '<p class="missing">no decision, command or actuation in this window</p>'
    return (
        '<table class="events"><tr><th>#</th><th>time</th><th>lane</th><th>event</th>'
        "<th>detail</th></tr>" + "".join(rows) + "</table>"
    )


def _legend() -> str:
    items = [
        ("ok", "probe ok"),
        ("fail", "probe failing"),
        ("unknown", "unknown"),
        ("active", "active"),
        ("draining", "draining"),
        ("drained", "drained"),
        ("restoring", "restoring"),
    ]
    spans = "".join(
        f'<span><i style="background:{COLOURS[k]}"></i>{escape(text)}</span>' for k, text in items
    )
    return (
        f'<p class="legend">{spans}<span>grey: no observation recorded '
        "(the daemon was down)</span></p>"
    )


def render_html(report: Report, title: str = "trafficd incident report") -> str:
    t0, t1 = report.start, report.end
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta" data-t0="{t0!r}" data-t1="{t1!r}">{escape(clock(t0))} to '
        f"{escape(clock(t1))} ({t1 - t0:.3f} s), {report.events} event(s) from "
        f"{escape(', '.join(report.sources) or 'a replayed timeline')}; "
        f"trafficd {escape(__version__)}</p>",
        _legend(),
    ]
    for site in report.sites:
        parts.append(
            f'<section class="site" id="site-{escape(site.name)}" data-site="{escape(site.name)}">'
        )
        parts.append(f"<h2>site {escape(site.name)}</h2>")
        if not site.incidents:
            parts.append('<p class="missing">no drain in this window</p>')
        for n, inc in enumerate(site.incidents, 1):
            cause = inc.cause or "unknown cause"
            parts.append(
                f"<h3>drain of {escape(site.name)} ({escape(cause)}), decided "
                f"{escape(clock(inc.start))}</h3>"
            )
            parts.append(summary_table(inc))
            window = close_up(inc, t0, t1)
            if window is not None:
                parts.append(
                    f'<p class="caption">close-up: {escape(clock(window[0]))} to '
                    f"{escape(clock(window[1]))}</p>"
                )
                parts.append(timeline(site, *window, view=f"incident-{n}"))
        parts.append(
            f'<p class="caption">{escape(site.name)}, the whole window: {escape(clock(t0))} '
            f"to {escape(clock(t1))}</p>"
        )
        parts.append(timeline(site, t0, t1))
        parts.append(event_table(site.marks))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
