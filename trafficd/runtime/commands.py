"""Operators' commands: typed (`Command`, parsed by the API from a request's body) and run.

Between the face (api.py parses, the client sends) and the rounds. A drain is
first run through the pure engine on the would-be overrides: one a safety rule
refuses is answered with the rule's name and nothing is stored. With
coordination a command is written to the shared store first (any instance
takes it; the leader acts on it at its next round), and every instance keeps
it in its own state.json too; while the store has come back empty and the
leader has not re-published, a command is refused (503) rather than undone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from trafficd.clock import EngineClock
from trafficd.config.types import parse_duration
from trafficd.coordination import SharedStoreError
from trafficd.model import Decision, Override, Pause
from trafficd.runtime.effects import Effects
from trafficd.runtime.leader import Leader
from trafficd.runtime.live import Live
from trafficd.runtime.rounds import Rounds

Action = Literal["drain", "undrain", "hold", "release", "pause", "resume"]
SITE_ACTIONS: tuple[Action, ...] = ("drain", "undrain", "hold", "release")
WITH_REASON: tuple[Action, ...] = ("drain", "hold", "pause")  # the others need no body
# The keys each action takes (docs/design.md's API table). Any other key is refused:
# ignored, it would make a command that does less than the operator asked (`for` on a
# pause, which has no expiry, would pause for ever; `hands-off` a pause that reconciles).
KEYS: dict[Action, frozenset[str]] = {
    "drain": frozenset({"reason", "for", "force", "stop_instances"}),
    "hold": frozenset({"reason", "for"}),
    "pause": frozenset({"reason", "hands_off"}),
    "undrain": frozenset({"reason"}),
    "release": frozenset({"reason"}),
    "resume": frozenset({"reason"}),
}


class RefusedError(Exception):
    """A command refused by a safety rule: 409 with the rule's name."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class UnavailableError(Exception):
    """A command that cannot be taken now (the shared store is down): 503."""


class UnknownSiteError(Exception):
    pass


@dataclass(frozen=True)
class Command:
    action: Action
    site: str | None  # for the site actions; None for pause and resume
    who: str  # the token's name: the audit log's "who"
    reason: str = ""
    duration: float | None = None  # `for`: a drain's or a hold's time, from now
    force: bool = False
    stop_instances: bool = False
    hands_off: bool = False

    @classmethod
    def parse(cls, action: str, site: str | None, who: str, body: Mapping[str, Any]) -> Command:
        """A request's JSON object as a command; ValueError (the API's 400) names the key
        that is wrong and says what is expected."""
        if action not in get_args(Action):
            raise ValueError(f"unknown action {action}")
        act = cast(Action, action)
        if (site is not None) != (act in SITE_ACTIONS):
            raise ValueError(f"{act}: {'a' if site is None else 'no'} site is expected")
        unknown = sorted(set(body) - KEYS[act])
        if unknown:
            takes = ", ".join(sorted(KEYS[act]))
            raise ValueError(f"{unknown[0][:64]}: not taken by {act} (it takes {takes})")
        reason = body.get("reason", "")
        if act in WITH_REASON and not (isinstance(reason, str) and reason.strip()):
            raise ValueError("reason: a non-empty string is required")
        if not isinstance(reason, str):  # never an object's text in the audit log
            raise ValueError("reason: a string is expected")
        return cls(
            act,
            site,
            who,
            reason=reason.strip(),
            # null, as before this was checked: no duration (a client's unset field).
            duration=None if body.get("for") is None else _duration(body["for"]),
            force=_flag(body, "force"),
            stop_instances=_flag(body, "stop_instances"),
            hands_off=_flag(body, "hands_off"),
        )


def _flag(body: Mapping[str, Any], key: str) -> bool:
    """A JSON true or false; absent or null is false (as it always was). `"false"` or 0
    is refused, never taken as true (`bool("false")` would force a drain past
    min_active_sites)."""
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError(f"{key}: true or false is expected, not {_json_type(value)}")
    return value


def _duration(value: object) -> float:
    """`for`: a duration string above zero (an override that expires at once, or before
    it was taken, is a mistake to refuse, not a command to run)."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"for: {exc}") from None
    if not 0 < seconds < math.inf:
        raise ValueError(f"for: a finite duration above zero is expected, not {value!r}")
    return seconds


def _json_type(value: object) -> str:
    """What the client sent, named as JSON names it (never the value: it may be large)."""
    if value is None:
        return "null"
    names = {str: "a string", int: "a number", float: "a number", list: "an array"}
    return names.get(type(value), "an object")


class Commands:
    def __init__(
        self, live: Live, clock: EngineClock, rounds: Rounds, effects: Effects, leader: Leader
    ) -> None:
        self.live, self.clock, self.rounds = live, clock, rounds
        self.effects, self.leader = effects, leader

    async def execute(self, command: Command) -> dict[str, Any]:
        """Takes the command (stored, audited, sent) and, where this instance decides,
        runs a round on it at once: the answer says the site's state after it."""
        wall, now = self.clock.wall(), self.clock.now()  # wall: the command's own times
        site = command.site
        if site is not None and site not in self.live.config.sites:
            raise UnknownSiteError(site)
        expires = None if command.duration is None else wall + command.duration
        override: Override | None = None
        pause = self.rounds.pause
        if command.action in ("drain", "hold"):
            assert site is not None
            override = Override(
                kind=command.action,
                reason=command.reason,
                who=command.who,
                at=wall,
                expires=expires,
                force=command.force,
                stop_instances=command.stop_instances,
            )
            if command.action == "drain":
                self._check_drain(site, override, now, wall)
        elif command.action == "pause":
            pause = Pause(command.reason, command.who, wall, hands_off=command.hands_off)
        elif command.action == "resume":
            pause = None
        # undrain, release: the override goes; both hand the site back to automatic control
        await self._share(site, override, pause)
        self.rounds.command(site, override, pause)
        self.effects.announce(
            "manual",
            vantage=self.live.config.vantage,
            action=command.action,
            site=site,
            who=command.who,
            reason=command.reason,
            expires=expires,
            force=command.force,
            stop_instances=command.stop_instances,
            hands_off=command.hands_off,
        )
        self.effects.save()
        decision: Decision | None = self.rounds.decision  # the leader's, at its next round
        if self.live.leads():
            decision = self.leader.tick(now, wall=wall)
        view = decision.sites.get(site) if site and decision else None
        return {
            "ok": True,
            "action": command.action,
            "site": site,
            "state": view.state.value if view else None,
            "paused": self.rounds.pause is not None,
            "leader": self.live.view().get("leader"),
        }

    async def _share(
        self, site: str | None, override: Override | None, pause: Pause | None
    ) -> None:
        """With coordination: into the shared store, before anything else is kept.

        Not while the store has no generation (it came back empty and the leader has
        not re-published yet): the leader's next round merges the copy of the
        overrides and the pause it holds (state.json) into the store, and would bring
        back a drain or a pause this command lifted, silently. Refusing (503, retry
        after a round) is simpler than tombstones for deletions, which would need the
        store's format, the merge and the expiry to know them, and it keeps every
        command an operator is told was taken. The generation is read again after the
        write: a store that restarted in between (none, or the leader's new one) may
        have taken the write into the empty store, and the operator is told so too.
        """
        coord = self.live.coord
        if coord is None:
            return
        try:
            before = await coord.generation()
            # No generation and no shared state: the store came back empty. A shared
            # state without a generation is an older trafficd's store, during a rolling
            # upgrade: its overrides are the current ones (leader.py), commands go in.
            if before is None and await coord.load_state() is None:
                raise UnavailableError(
                    "the shared store has come back empty and the leader has not"
                    " re-published the overrides and the pause it holds yet: the command"
                    " is not taken (the leader's copy would undo it); retry after the"
                    " leader's next round"
                )
            if site is not None:
                await coord.put_override(site, override)
            else:
                await coord.put_pause(pause)
            after = await coord.generation()
        except SharedStoreError as exc:
            raise UnavailableError(f"the shared store cannot take the command: {exc}") from None
        if after != before:
            raise UnavailableError(
                "the shared store has come back empty while it took the command: the"
                " leader's copy may undo it; check the site and retry after the leader's"
                " next round"
            )

    def _check_drain(self, site: str, override: Override, now: float, wall: float) -> None:
        """The would-be drain through the pure engine first: a refusal stores nothing."""
        refusal = self.leader.trial(site, override, now, wall)
        if refusal is not None:
            self.effects.refused(refusal, t=now, who=override.who, action="drain")
            raise RefusedError(
                refusal.rule,
                f"drain of {site} refused by {refusal.rule}: {'; '.join(refusal.reasons)}",
            )
