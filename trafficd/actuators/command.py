"""The command actuator: stop and start a standalone site's Quay with configured argvs.

An instance actuator (engine -> desired `instances` per site -> here). For
every site with a `command:` section, `stop` runs when the engine wants the
site's instances stopped and `start` when it wants them running again, with
the site, action, cause and reasons in the environment (`TRAFFICD_SITE`,
`TRAFFICD_ACTION`, `TRAFFICD_CAUSE`, `TRAFFICD_REASON`). The optional
`status` argv tells the truth (exit 0 = running); without it, the last
action that succeeded is what trafficd believes, kept in its state so a
restart does not repeat it. Each run is bounded by the site's `timeout`; its
exit code and last output lines are kept for status and errors. Commands
run without a shell: the argv is exactly what the configuration says. Each
site is a target of its own (`split`): a slow stop of one site never delays
another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trafficd.actuators.base import (
    Actuator,
    ActuatorError,
    BuildContext,
    Desired,
    DesiredSite,
    Plan,
    Remembering,
    Role,
    Serving,
    Splitting,
    views,
)
from trafficd.config.model import CommandActuator, SiteCommand
from trafficd.model import Cause

log = logging.getLogger(__name__)

TAIL_LINES = 10
MAX_OUTPUT = 1024 * 1024  # bytes of output read per run; the rest is drained and dropped


@dataclass(frozen=True)
class Run:
    """One finished command: what ran, how it ended, its last output lines."""

    site: str
    action: str
    exit_code: int | None  # None: killed at the timeout
    tail: tuple[str, ...]
    seconds: float
    at: float

    def describe(self) -> str:
        how = "timed out" if self.exit_code is None else f"exited {self.exit_code}"
        last = f": {self.tail[-1]}" if self.tail else ""
        return f"{self.action} {how} after {self.seconds:.1f}s{last}"


# One change: the site, `stop` or `start`, and the cause and reasons its command is told.
Change = tuple[str, str, Cause | None, tuple[str, ...]]


class Command(Actuator[dict[str, str], Change], Splitting, Serving, Remembering):
    role: Role = "instances"

    def __init__(self, config: CommandActuator, context: BuildContext | None = None) -> None:
        self.ident = config.ident
        sites = context.sites if context else {}
        self.sites: dict[str, SiteCommand] = {
            name: site.command for name, site in sorted(sites.items()) if site.command
        }
        # What the last successful action left, for sites without a `status` argv.
        self.believed: dict[str, str] = {}
        self.runs: dict[str, Run] = {}

    # --- memory the daemon persists ------------------------------------------------------

    def export_memory(self) -> dict[str, Any]:
        return {"believed": dict(self.believed)}

    def import_memory(self, memory: Mapping[str, Any]) -> None:
        believed = memory.get("believed", {})
        self.believed.clear()  # in place: every site's view (split) shares it
        self.believed.update(
            {k: v for k, v in believed.items() if k in self.sites and v in ("running", "stopped")}
        )

    def serves(self, site: DesiredSite) -> bool:
        return site.name in self.sites

    def split(self) -> dict[str, Command]:
        """One view per site: a slow stop or start of one site never delays another's."""
        return views(self, "sites", {site: {site: cfg} for site, cfg in self.sites.items()})

    # --- the reconciler's interface -------------------------------------------------------

    async def run(
        self, site: str, action: str, argv: list[str], env: Mapping[str, str] | None = None
    ) -> Run:
        """Runs one argv in its own process group; kills the whole group at the timeout."""
        timeout = self.sites[site].timeout
        start = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )
        except OSError as exc:
            raise ActuatorError(
                f"{self.ident}: {site}: {action}: cannot run {argv[0]}: {exc.strerror or exc}"
            ) from None
        assert proc.stdout is not None
        tail: deque[str] = deque(maxlen=TAIL_LINES)

        async def collect() -> None:
            assert proc.stdout is not None
            seen = 0
            while line := await proc.stdout.readline():
                seen += len(line)
                if seen <= MAX_OUTPUT:
                    tail.append(line.decode(errors="replace").rstrip())
            await proc.wait()

        exit_code: int | None
        try:
            await asyncio.wait_for(collect(), timeout)
            exit_code = proc.returncode
        except TimeoutError:
            exit_code = None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        result = Run(site, action, exit_code, tuple(tail), time.monotonic() - start, time.time())
        self.runs[f"{site}/{action}"] = result
        # Status runs every reconcile: worth a line only when debugging.
        level = logging.DEBUG if action == "status" else logging.INFO
        log.log(level, "%s: %s: %s", self.ident, site, result.describe())
        return result

    async def read(self) -> dict[str, str]:
        """Each site's instances now: from `status` where there is one, else as believed."""
        current = {}
        for site, cfg in self.sites.items():
            if cfg.status:
                result = await self.run(site, "status", cfg.status)
                if result.exit_code is None:
                    raise ActuatorError(f"{self.ident}: {site}: {result.describe()}")
                current[site] = "running" if result.exit_code == 0 else "stopped"
            else:
                current[site] = self.believed.get(site, "running")
        return current

    def plan(self, current: dict[str, str], desired: Desired) -> Plan[Change]:
        plan: Plan[Change] = Plan()
        for site in self.sites:
            target = desired.get(site)
            if target is None or not target.managed or current.get(site) == target.instances:
                continue
            action = "stop" if target.instances == "stopped" else "start"
            plan.changes.append(f"{action} site {site}")
            plan.payload.append((site, action, target.cause, target.reasons))
        return plan

    async def apply(self, plan: Plan[Change]) -> None:
        failures = []
        for site, action, cause, reasons in plan.payload:
            cfg = self.sites[site]
            argv = cfg.stop if action == "stop" else cfg.start
            env = {
                "TRAFFICD_SITE": site,
                "TRAFFICD_ACTION": action,
                "TRAFFICD_CAUSE": cause.value if cause else "",
                "TRAFFICD_REASON": "; ".join(reasons),
            }
            result = await self.run(site, action, argv, env)
            if result.exit_code == 0:
                self.believed[site] = "stopped" if action == "stop" else "running"
            else:
                failures.append(f"{site}: {result.describe()}")
        if failures:
            raise ActuatorError(f"{self.ident}: {'; '.join(failures)}")

    async def preflight(self) -> None:
        """Every argv's program exists and is executable; nothing is run."""
        missing = sorted(
            {
                argv[0]
                for cfg in self.sites.values()
                for argv in (cfg.stop, cfg.start, cfg.status or [])
                if argv and shutil.which(argv[0]) is None
            }
        )
        if missing:
            raise ActuatorError(f"{self.ident}: not found or not executable: {', '.join(missing)}")

    async def close(self) -> None:
        return None
