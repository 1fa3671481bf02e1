"""The README's first command: `python -m trafficd.demo` runs a failover and recovery."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_demo_drains_and_restores_eu(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trafficd.demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    states = [m.group(1) for line in lines if (m := re.search(r"\] eu: \w+ -> (\w+)", line))]
    # Straight through: no detour back to drained while eu's Quay boots.
    assert states == ["draining", "drained", "restoring", "active"], out.stdout
    assert any("actuation  command: stop site eu" in line for line in lines)
    assert any("actuation  command: start site eu" in line for line in lines)
    assert (tmp_path / "demo" / "state" / "events.jsonl").exists()
