"""The configuration in force, one object shared by every part of the runtime.

A reload replaces `config` here once, between stopping the old configuration's
tasks and starting the new one's, so every part (rounds, effects, actuation,
views, commands) sees the same configuration at the same moment.
"""

from __future__ import annotations

from dataclasses import dataclass

from trafficd.config.model import Config


@dataclass
class Live:
    config: Config
