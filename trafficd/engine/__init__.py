"""The decision engine: pure functions from observations to desired site states.

`decide(previous, latest, policy, overrides, pause, now)` is the whole
interface; `evidence` reduces observations to verdicts, `decide` runs the
site lifecycle and the safety rules. The types it reads and returns
(`EngineState`, `Decision`, ...) live in trafficd.model. This package imports
nothing from asyncio, aiohttp, the configuration, the probers or the
actuators, and never reads a clock.
"""

from trafficd.engine.decide import decide, effective_hold_down
from trafficd.engine.policy import EnginePolicy, SiteSpec

__all__ = [
    "EnginePolicy",
    "SiteSpec",
    "decide",
    "effective_hold_down",
]
