"""The configuration in force and its coordination store: one object every part shares.

A reload replaces `config` (and `coord`, the configuration's coordinator) here
once, between stopping the old configuration's tasks and starting the new
one's, so every part (rounds, effects, actuation, views, commands) sees the
same configuration at the same moment, and asks here whether this instance
leads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trafficd.config.model import Config
from trafficd.coordination import Coordinator


@dataclass
class Live:
    config: Config
    coord: Coordinator | None = None  # with coordination: the shared store, the lease

    def leads(self) -> bool:
        """Whether this instance may change the backends (alone, it always may)."""
        return self.coord is None or self.coord.leading()

    def token(self) -> int | None:
        """The leader's fencing token, while this instance leads."""
        return self.coord.token if self.coord is not None and self.coord.leading() else None

    def view(self) -> dict[str, Any]:
        if self.coord is None:
            me = self.config.vantage
            return {"backend": "none", "leader": me, "self": me}
        return self.coord.view()
