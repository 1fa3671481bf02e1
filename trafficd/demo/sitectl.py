"""`systemctl` for the simulated Quay sites (demo, end-to-end test): what the command actuator runs.

Run: python -m trafficd.demo.sitectl DIR start|stop|status NAME
`DIR/NAME.argv.json` holds the site's command line; `DIR/NAME.pid` its PID.
Every call is appended to `DIR/sitectl.log` with trafficd's environment
(TRAFFICD_ACTION, TRAFFICD_CAUSE), so the test can tell what ran and when.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def main() -> int:
    directory, action, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    pidfile = directory / f"{name}.pid"
    with (directory / "sitectl.log").open("a") as log:
        log.write(
            f"{time.time():.3f} {action} {name} cause={os.environ.get('TRAFFICD_CAUSE', '')}\n"
        )
    pid = int(pidfile.read_text()) if pidfile.exists() else None
    running = pid is not None and alive(pid)
    if action == "status":
        return 0 if running else 3
    if action == "start":
        if running:
            print(f"{name} already running ({pid})")
            return 0
        argv = json.loads((directory / f"{name}.argv.json").read_text())
        with (directory / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        pidfile.write_text(str(proc.pid))
        print(f"{name} started ({proc.pid})")
        return 0
    if action == "stop":
        if running:
            assert pid is not None
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not alive(pid):
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
        pidfile.unlink(missing_ok=True)
        print(f"{name} stopped")
        return 0
    print(f"unknown action {action}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
