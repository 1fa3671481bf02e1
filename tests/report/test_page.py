"""The report's HTML, as real headless Chromium renders it.

`--dump-dom` gives the DOM Chromium built: every part of the page must be in it,
and each band's drawn boundaries must sit where the audit log's timestamps put
them. `--screenshot` must give a picture with the bands' colours in it.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from tests.report.chromium import dump_dom, elements, screenshot
from tests.report.conftest import recorded
from trafficd.report import Report
from trafficd.report.page import COLOURS, render_html

pytestmark = pytest.mark.peers  # headless Chromium


def rendered(report: Report, tmp_path: Path) -> Path:
    page = tmp_path / "incident.html"
    page.write_text(render_html(report), encoding="utf-8")
    return page


def test_page_is_self_contained(report: Report) -> None:
    html = render_html(report)
    lowered = html.lower()
    assert "<script" not in lowered and " on" + "load=" not in lowered
    assert "<link" not in lowered and "<img" not in lowered and "@import" not in lowered
    assert (
        "url(" not in lowered
        and "src=" not in lowered
        and "http://" not in lowered.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )


def test_every_element_is_in_the_dom(report: Report, tmp_path: Path) -> None:
    dom = elements(dump_dom(rendered(report, tmp_path)))
    sections = [e for e in dom if e.tag == "section"]
    assert sorted(e.attrs["data-site"] for e in sections) == ["eu", "us"]
    views = sorted((e.attrs["data-site"], e.attrs["data-view"]) for e in dom if e.tag == "svg")
    # us's manual drain takes 1.5 s of the 22.7 s window: it gets a close-up too.
    assert views == [("eu", "site"), ("us", "incident-1"), ("us", "site")]
    dom = [e for e in dom if e.attrs.get("data-view") in (None, "site")]
    summaries = [e for e in dom if e.tag == "table" and "summary" in e.attrs.get("class", "")]
    assert sorted(e.attrs["data-site"] for e in summaries) == ["eu", "us"]
    rows = {
        (e.attrs["data-milestone"], e.attrs.get("data-t"))
        for e in dom
        if "data-milestone" in e.attrs
    }
    for site in report.sites:
        for inc in site.incidents:
            for m in inc.milestones:
                assert (m.what, None if m.t is None else repr(m.t)) in rows, m
    # Bands for every probe row, in the three colours; the state lane; numbered marks.
    bands = [e for e in dom if e.tag == "rect" and e.attrs.get("class", "").startswith("band")]
    rows_seen = {(e.attrs["data-row"], e.attrs["data-ok"]) for e in bands}
    assert ("test · storage eustorage", "fail") in rows_seen
    assert ("test · storage eustorage", "ok") in rows_seen
    assert ("test · endtoend", "fail") in rows_seen
    states = [e.attrs["data-state"] for e in dom if e.tag == "rect" and "data-state" in e.attrs]
    assert Counter(states) == Counter(s.state for site in report.sites for s in site.states)
    marks = [e for e in dom if e.tag == "g" and "mark" in e.attrs.get("class", "")]
    events = [e for e in dom if e.tag == "tr" and "event" in e.attrs.get("class", "").split()]
    want = sorted((s.name, m.n, repr(m.t)) for s in report.sites for m in s.marks)
    assert len(marks) == len(events) == len(want)
    lanes = {e.attrs["data-lane"] for e in marks}
    assert {"decisions", "refused", "manual", "actuator bind", "actuator lb"} <= lanes
    texts = " ".join(e.text for e in events)
    assert "refused by min_active_sites" in texts and "drain by admin" in texts
    assert "why: maintenance" in texts and "stop site eu" in texts


def test_band_boundaries_match_the_logs_timestamps(report: Report, tmp_path: Path) -> None:
    dom = elements(dump_dom(rendered(report, tmp_path)))
    logged: dict[tuple[str, str, str], list[float]] = {}
    for e in recorded():
        if e["kind"] == "observation":
            target = e["location"] if e["probe"] == "storage" else e["site"]
            logged.setdefault((e["vantage"], e["probe"], target), []).append(e["t"])
    lives = {e["t"] for e in recorded() if e["kind"] in ("started", "stopped")}
    checked = 0
    for svg in [e for e in dom if e.tag == "svg"]:
        t0, t1 = float(svg.attrs["data-t0"]), float(svg.attrs["data-t1"])
        x0, x1 = float(svg.attrs["data-x0"]), float(svg.attrs["data-x1"])
        view = svg.attrs["data-view"]
        if view == "site":
            assert (t0, t1) == (recorded()[0]["t"], max(e["t"] for e in recorded()))
        else:  # the close-up: us's manual drain, a second either side
            assert (t0, t1) == (1796181355.6317337 - 1.0, 1796181357.1964626 + 1.0)

        def x(t: float) -> float:
            return x0 + (t - t0) * (x1 - x0) / (t1 - t0)  # noqa: B023 - used in this loop

        site = svg.attrs["data-site"]
        site_bands = [
            e
            for e in dom
            if e.tag == "rect"
            and e.attrs.get("class", "").startswith("band")
            and (e.attrs["data-site"], e.attrs["data-view"]) == (site, view)
        ]
        drawn = {
            (b.attrs["data-vantage"], b.attrs["data-probe"], b.attrs["data-target"])
            for b in site_bands
        }
        assert drawn  # and each drawn probe is checked against every one of its log lines:
        for key, every in logged.items():
            if key not in drawn:
                continue
            # A close-up starts with the band standing at its left edge.
            times = [t for t in every if t0 <= t <= t1]
            if view != "site" and min(every) < t0:
                times = [t0, *times]
            mine = [
                b
                for b in site_bands
                if (b.attrs["data-vantage"], b.attrs["data-probe"], b.attrs["data-target"]) == key
            ]
            starts = [float(b.attrs["data-start"]) for b in mine]
            assert starts == sorted(times), key  # one band per logged observation, exact
            later = [t for t in sorted(every) if t > t1][:1]
            ends = [*sorted(times)[1:], *(later or [t1])]
            for band, following in zip(mine, ends, strict=True):
                end = float(band.attrs["data-end"])
                assert end == min(following, t1) or end in lives, (key, band.attrs)
                # Drawn where the timestamps say, to the thousandth of a pixel.
                assert abs(float(band.attrs["x"]) - x(float(band.attrs["data-start"]))) < 1e-3
                assert abs(float(band.attrs["data-x1"]) - x(end)) < 1e-3
                checked += 1
        marks = [
            e
            for e in dom
            if e.tag == "g" and (e.attrs.get("data-site"), e.attrs.get("data-view")) == (site, view)
        ]
        assert marks
        for mark in marks:
            assert abs(float(mark.attrs["data-x"]) - x(float(mark.attrs["data-t"]))) < 1e-3
    assert checked >= 10


def test_screenshot_is_not_blank_and_shows_the_bands(report: Report, tmp_path: Path) -> None:
    png = tmp_path / "incident.png"
    screenshot(rendered(report, tmp_path), png)
    image = Image.open(io.BytesIO(png.read_bytes())).convert("RGB")
    assert image.size == (1280, 1600)
    spread = ImageStat.Stat(image.convert("L")).stddev[0]
    assert spread > 20, spread  # a blank or one-colour page has none
    pixels = Counter({colour: n for n, colour in image.getcolors(1 << 24) or []})

    def rgb(hex_colour: str) -> tuple[int, int, int]:
        return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]

    for name in ("ok", "fail", "drained", "active"):
        assert pixels[rgb(COLOURS[name])] > 500, name


def test_readme_screenshot_is_a_picture_of_a_report() -> None:
    readme = Path(__file__).resolve().parents[2] / "README.md"
    assert "![trafficd report of the demo tour](docs/report.png)" in readme.read_text()
    image = Image.open(readme.parent / "docs" / "report.png").convert("RGB")
    assert image.width >= 1000 and ImageStat.Stat(image.convert("L")).stddev[0] > 20
    colours = {colour for _, colour in image.getcolors(1 << 24) or []}
    assert {(30, 142, 62), (217, 48, 37)} <= colours  # probe ok and failing bands
