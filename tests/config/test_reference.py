"""docs/configuration.md's reference is the one generated from the model."""

from __future__ import annotations

from pathlib import Path

from trafficd.config.reference import BEGIN, END, render

CONFIGURATION = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_reference_is_up_to_date() -> None:
    text = CONFIGURATION.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == render(), "run: python -m trafficd.config.reference"


def test_every_key_of_the_model_is_documented() -> None:
    text = CONFIGURATION.read_text()
    for line in render().splitlines():
        if line.startswith("| `") and not line.startswith("| `type"):
            key = line.split("`")[1]
            assert f"`{key}`" in text
