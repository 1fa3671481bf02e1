"""The decision engine: pure functions from observations to desired site states.

`decide(previous, latest, policy, overrides, pause, now)` is the whole
interface; `evidence` reduces observations to verdicts, `decide` runs the
site lifecycle and the safety rules. This package imports nothing from
asyncio, aiohttp, the probers or the actuators, and never reads a clock.
"""

from trafficd.engine.decide import (
    Decision,
    EngineState,
    Refusal,
    SiteDecision,
    Transition,
    decide,
    effective_hold_down,
)
from trafficd.engine.policy import EnginePolicy, SiteSpec

__all__ = [
    "Decision",
    "EnginePolicy",
    "EngineState",
    "Refusal",
    "SiteDecision",
    "SiteSpec",
    "Transition",
    "decide",
    "effective_hold_down",
]
