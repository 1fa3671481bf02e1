"""The layers of docs/design.md hold: the import-linter contracts of pyproject.toml.

`.ci/run` runs `lint-imports` too; here the fast tier sees a broken layer at once.
The engine's purity (no I/O, no clock, no configuration) is one of the contracts.

import-linter runs in a child process: in-process, its CLI configures logging and
disables every logger that exists by then, so later tests in the same session lost
the daemon's log records (test_reload waited for "configuration reloaded" in vain).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_import_contract_is_kept() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command;"
            " sys.exit(lint_imports_command())",
            "--config",
            str(ROOT / "pyproject.toml"),
            "--no-cache",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" in result.stdout and " 0 broken" in result.stdout, result.stdout
