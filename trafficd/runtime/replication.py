"""The configuration's replication monitor and restore gate, as the runtime uses them.

With `replication` configured: a site out for storage says which blobs it leaves
unreadable (its drain event, `trafficd status`, the command actuator's
TRAFFICD_REASON), and a location whose sampled blobs are missing may not take
a storage-drained site back yet (`restore_blocks`, given to the engine). Both
run as tasks of their own, so a slow or dead database never delays probing or
draining. Without it every answer here is empty.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trafficd.metrics import Metrics
from trafficd.model import Cause, State
from trafficd.probers.base import StorageBackend
from trafficd.runtime.live import Live
from trafficd.runtime.rounds import Rounds

if TYPE_CHECKING:
    from trafficd.replication import ReplicationMonitor
    from trafficd.restoregate import GateResult, RestoreGate

Task = tuple[str, Callable[[], Awaitable[None]]]


class Replication:
    def __init__(self, live: Live, rounds: Rounds) -> None:
        self.live, self.rounds = live, rounds
        self.monitor: ReplicationMonitor | None = None
        self.gate: RestoreGate | None = None

    def with_risk(
        self, site: str, reasons: Sequence[str], cause: Cause | None, state: State
    ) -> list[str]:
        """`reasons`, and for a site out for storage the blobs it leaves unreadable."""
        out = list(reasons)
        if self.monitor is not None and cause is Cause.STORAGE and state is not State.ACTIVE:
            risk = self.monitor.at_risk(site, self._failed_locations(site))
            if risk is not None:
                out.append(risk)
        return out

    def _failed_locations(self, site: str) -> list[str]:
        """The locations of a storage-drained site that failed: its first (whose failure
        drains it) and any other of its own that fails now. Blobs held only at a location
        that is up stay readable: they are no risk of this drain."""
        spec = self.live.config.sites.get(site)
        locations = list(spec.storage or []) if spec is not None else []
        down = {n for n, memory in self.rounds.engine.locations.items() if memory.down > 0}
        return [loc for i, loc in enumerate(locations) if i == 0 or loc in down]

    def restore_blocks(self) -> dict[str, str] | None:
        return self.gate.blocks(self.rounds.engine) if self.gate is not None else None

    def gated_sites(self, location: str) -> list[str]:
        """The sites whose first location a gate check was about."""
        first = self.gate.first if self.gate is not None else {}
        return [n for n, loc in first.items() if loc == location]

    def start(
        self,
        metrics: Metrics,
        state_dir: Path,
        backends: Mapping[str, StorageBackend],
        report: Callable[[GateResult], None],
    ) -> list[Task]:
        """The configuration's monitor and gate (none without `replication`), as tasks."""
        config = self.live.config
        self.monitor, self.gate = None, None
        if config.replication is None:
            return []
        # Imported here: asyncpg is for configurations that read Quay's database.
        from trafficd.replication import ReplicationMonitor
        from trafficd.restoregate import RestoreGate

        monitor = self.monitor = ReplicationMonitor(config, metrics, state_dir=state_dir)
        tasks: list[Task] = [("replication", monitor.run)]
        if config.replication.restore_sample > 0:
            gate = self.gate = RestoreGate(config, monitor, backends, metrics)

            def run_gate() -> Awaitable[None]:
                return gate.run(lambda: self.rounds.engine, report)

            tasks.append(("restore-gate", run_gate))
        return tasks

    async def close(self) -> None:
        if self.monitor is not None:
            await self.monitor.close()
