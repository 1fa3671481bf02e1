"""What each actuator type declares it can do beyond `Actuator`: the optional
capabilities the reconciler and the daemon test with isinstance (actuators/base.py)."""

from __future__ import annotations

import pytest

from trafficd.actuators import ACTUATORS
from trafficd.actuators.base import (
    Fencing,
    Notifying,
    Remembering,
    Serving,
    Splitting,
    TrafficReporting,
)
from trafficd.config.model import ACTUATOR_TYPES
from trafficd.lazy import Lazy

CAPABILITIES: tuple[type, ...] = (
    Splitting,
    Serving,
    TrafficReporting,
    Fencing,
    Remembering,
    Notifying,
)
DNS_OR_LB: set[type] = {Splitting, Serving, TrafficReporting}
EXPECTED: dict[str, set[type]] = {
    "rfc2136": DNS_OR_LB | {Fencing},  # a TXT record the updates are conditioned on
    "haproxy": DNS_OR_LB,
    "powerdns": DNS_OR_LB,
    "route53": DNS_OR_LB,
    # Instance actuators serve the sites they start and stop, and remember what they did.
    "kubernetes": {Splitting, Serving, Remembering},
    "command": {Splitting, Serving, Remembering},
    "webhook": {Notifying},
}


def test_every_actuator_type_is_listed() -> None:
    assert set(EXPECTED) == set(ACTUATORS) == set(ACTUATOR_TYPES)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_actuator_declares_its_capabilities(kind: str) -> None:
    factory = ACTUATORS[kind]
    assert isinstance(factory, Lazy)
    cls = factory.resolve()
    assert {c for c in CAPABILITIES if issubclass(cls, c)} == EXPECTED[kind]
    # Declared as bases (so mypy checks the signatures), not only shaped alike.
    for capability in EXPECTED[kind]:
        assert capability in cls.__mro__, capability.__name__
