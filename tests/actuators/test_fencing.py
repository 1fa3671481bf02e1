"""The leader's fencing token, enforced by the backends themselves (coordination).

RFC 2136 against a real BIND 9: the leader writes its token to the fence TXT
record on taking over and every update requires it, so a former leader that
still believes it leads is refused by the server. A guard that says "no longer
the leader" stops a Reconciler before it applies anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import pytest

from tests.actuators.test_contract import ALL_UP, EU_DOWN, BindHarness, sites_of
from tests.peers import NAME
from trafficd.actuators import build
from trafficd.actuators.base import ActuatorPermanentError, Reconciler
from trafficd.actuators.rfc2136 import RFC2136

pytestmark = pytest.mark.peers


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[BindHarness]:
    harness = BindHarness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


def fence_token(bind: BindHarness) -> set[str]:
    query = dns.message.make_query(f"_trafficd-fence.{NAME}", "TXT")
    answer = dns.query.udp(query, "127.0.0.1", port=bind.named.port, timeout=2)
    return {b"".join(r.strings).decode() for rrset in answer.answer for r in rrset}


async def test_a_former_leader_is_refused_by_bind(bind: BindHarness) -> None:
    old, new = build(bind.config), build(bind.config)
    assert isinstance(old, RFC2136) and isinstance(new, RFC2136)
    try:
        await old.take_over(7)
        assert fence_token(bind) == {"7"}
        await old.apply(old.plan(await old.read(), EU_DOWN))  # the leader's update holds
        assert sites_of(bind.named.addresses()) == {"us"}
        await new.take_over(8)  # another instance leads now
        assert fence_token(bind) == {"8"}
        with pytest.raises(
            ActuatorPermanentError, match="fenced out: the fence record holds token 8"
        ):
            await old.apply(old.plan(await old.read(), ALL_UP))
        assert sites_of(bind.named.addresses()) == {"us"}  # nothing changed
        await new.apply(new.plan(await new.read(), ALL_UP))
        assert sites_of(bind.named.addresses()) == {"us", "eu"}
    finally:
        await old.close()
        await new.close()


async def test_the_reconciler_takes_over_once_and_stops_when_the_guard_says_so(
    bind: BindHarness,
) -> None:
    leading = True
    token = 3

    async def guard() -> bool:
        return leading

    actuator = build(bind.config)
    rec = Reconciler(actuator, guard=guard, fence=lambda: token)
    try:
        outcome = await rec.reconcile(EU_DOWN)
        assert outcome.error is None and outcome.in_sync, outcome
        assert fence_token(bind) == {"3"}
        leading = False  # the lease was lost between the decision and the apply
        outcome = await rec.reconcile(ALL_UP)
        assert outcome.error is not None and "not the leader any more" in outcome.error
        assert sites_of(bind.named.addresses()) == {"us"}
    finally:
        await actuator.close()


async def test_a_former_leader_never_writes_its_token_over_the_new_leaders(
    bind: BindHarness,
) -> None:
    """Issue 19 review: the take-over wrote the fence record before asking the guard, so
    a former leader whose fence() still gave its old token (a reload re-runs the take-
    over) overwrote the new leader's token, and the new leader, fenced once, never wrote
    it again: the former leader's updates then held and the new leader's failed."""
    new = build(bind.config)
    assert isinstance(new, RFC2136)
    former = build(bind.config)

    async def not_leading() -> bool:
        return False

    rec = Reconciler(former, guard=not_leading, fence=lambda: 7)
    try:
        await new.take_over(8)
        outcome = await rec.reconcile(ALL_UP)
        assert outcome.error is not None and "not the leader any more" in outcome.error
        assert fence_token(bind) == {"8"}  # the new leader's, untouched
    finally:
        await new.close()
        await former.close()
