"""Real headless Chromium (Debian's `chromium`) for the report's tests: the DOM it builds
from a page and a screenshot of it, offline.

Chromium runs as root here, so without a sandbox; the flags keep it off the network
(no component updates, sync or background requests) and a fresh profile per run keeps
one run from seeing another's. A missing binary fails the test: `.ci/run` installs it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def binary() -> str:
    path = shutil.which("chromium")
    assert path is not None, "chromium is not installed (Debian's chromium; .ci/run installs it)"
    return path


def _run(*args: str) -> subprocess.CompletedProcess[bytes]:
    with tempfile.TemporaryDirectory(prefix="trafficd-chromium-") as profile:
        argv = [binary(), *FLAGS, f"--user-data-dir={profile}", *args]
        result = subprocess.run(argv, capture_output=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result


def dump_dom(page: Path) -> str:
    """The DOM Chromium built from `page`, serialised (`--dump-dom`)."""
    return _run("--dump-dom", page.resolve().as_uri()).stdout.decode()


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 1600) -> None:
    _run(f"--window-size={width},{height}", f"--screenshot={png}", page.resolve().as_uri())
    assert png.is_file() and png.stat().st_size > 0, "chromium wrote no screenshot"


@dataclass(frozen=True)
class Element:
    tag: str
    attrs: dict[str, str]
    text: str


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[tuple[str, dict[str, str], list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open.append((tag, {k: v or "" for k, v in attrs}, []))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}, ""))

    def handle_data(self, data: str) -> None:
        for _, _, text in self._open:
            text.append(data)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                for t, attrs, text in reversed(self._open[i:]):
                    self.elements.append(Element(t, attrs, "".join(text)))
                del self._open[i:]
                return


def elements(dom: str) -> list[Element]:
    """Every element of a serialised DOM with its attributes and text."""
    collector = _Collector()
    collector.feed(dom)
    collector.close()
    return collector.elements
