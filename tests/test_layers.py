"""The layers of docs/design.md hold: the import-linter contracts of pyproject.toml.

`.ci/run` runs `lint-imports` too; here the fast tier sees a broken layer at once.
The engine's purity (no I/O, no clock, no configuration) is one of the contracts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent


def test_every_import_contract_is_kept(capsys: pytest.CaptureFixture[str]) -> None:
    status = lint_imports(str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    assert status == 0, capsys.readouterr().out
