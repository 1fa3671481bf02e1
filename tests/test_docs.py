"""The documentation is the project's own and agrees with the code.

The README starts with the two commands; no file points outside the repository;
every relative link in README.md and docs/ leads to a file that exists; every
metric trafficd exports is in docs/design.md's table.
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from trafficd.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Written in pieces so that this file does not match itself.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "DESIGN" + r"\.md", "/wo" + "rk/"]))


def test_readme_starts_with_the_two_commands() -> None:
    first_block = (ROOT / "README.md").read_text().split("```")[1]
    assert "./demo.sh up" in first_block  # runs trafficd on the local demo deployment
    assert ".ci/run" in first_block


def test_no_file_refers_to_anything_outside_the_repository() -> None:
    tops = ("trafficd", "tests", "bench", "docs", "deploy", "dashboards", "examples", ".ci")
    files = [
        *(ROOT / name for name in ("README.md", "demo.sh", "pyproject.toml")),
        *(p for top in tops for p in (ROOT / top).rglob("*") if p.is_file()),
    ]
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in files
        if "__pycache__" not in path.parts
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not found, "\n".join(found)


def test_every_relative_link_leads_to_a_file() -> None:
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_every_exported_metric_is_in_the_design_table() -> None:
    table = (ROOT / "docs" / "design.md").read_text()
    for family in Metrics(CollectorRegistry()).registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"`{name}`" in table, name
