"""What the actuators remember (replica counts, instance states they believe), kept.

Beside the actuation: actuators that remember something are `Remembering`
(actuators/base.py: `export_memory()`, `import_memory()`). Their memory is saved
with the engine's state (state.json) and, with coordination, in the shared
state, so a restart or a new leader starts from what the last one knew.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trafficd.actuators.base import Actuator, Remembering


class Memory:
    def __init__(self, saved: Mapping[str, Any]) -> None:
        self.saved: dict[str, Any] = dict(saved)  # actuator id -> its exported state
        self.actuators: list[Actuator[Any, Any]] = []  # the configuration's, whose memory is kept

    def adopt(self, actuator: Actuator[Any, Any]) -> None:
        """One of the configuration's actuators, given what it last remembered; before
        its targets are split off (they share its memory as it is then)."""
        self._restore(actuator)
        self.actuators.append(actuator)

    def _restore(self, actuator: Actuator[Any, Any]) -> None:
        memory = self.saved.get(actuator.ident)
        if memory is not None and isinstance(actuator, Remembering):
            actuator.import_memory(memory)

    def replace(self, saved: Mapping[str, Any], *, restore: bool) -> None:
        """Another instance's memory (the leader's, from the shared state); `restore`:
        into the actuators too (this instance takes over and acts next)."""
        self.saved = dict(saved)
        if restore:
            for actuator in self.actuators:
                self._restore(actuator)

    def collect(self) -> dict[str, Any]:
        """What the actuators remember, now."""
        for actuator in self.actuators:
            if isinstance(actuator, Remembering):
                self.saved[actuator.ident] = actuator.export_memory()
        return dict(self.saved)
