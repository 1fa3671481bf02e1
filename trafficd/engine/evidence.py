"""What one round of observations says, vantage by vantage, reduced by quorum.

First half of the engine: `gather` turns the latest observations into
verdicts (fail / ok / unknown) per storage location and per site check. The
second half, `decide`, turns verdicts and remembered counters into
transitions. Pure: `now` is an argument and nothing is read or written.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from trafficd.engine.policy import EnginePolicy
from trafficd.model import UNREACHABLE, Observation, Probe


class Verdict(Enum):
    FAIL = "fail"
    OK = "ok"
    UNKNOWN = "unknown"


class Tally(NamedTuple):
    """Votes of the vantages that count this round (a NamedTuple: thousands per round)."""

    fail: int
    ok: int
    quorum: int

    @property
    def verdict(self) -> Verdict:
        if self.fail >= self.quorum:
            return Verdict.FAIL
        if self.ok >= self.quorum:
            return Verdict.OK
        return Verdict.UNKNOWN

    def __str__(self) -> str:
        return f"{self.fail} failing, {self.ok} ok, quorum {self.quorum}"


@dataclass(frozen=True)
class Evidence:
    """Verdicts for one round."""

    abstaining: frozenset[str]
    locations: Tallies  # only observations new since the previous round
    global_storage: bool  # every location failing, on the latest fresh observations
    corroboration: Mapping[str, Tally]  # per site: FAIL = site confirms storage failure
    checks: Mapping[str, Tallies]  # check -> site -> tally, new observations only
    global_checks: frozenset[str]  # checks failing on every reachable site
    endtoend: Mapping[str, Tally]  # per site: is /health/endtoend healthy


Latest = Mapping[tuple[str, Probe, str], Observation]
_CHECK_PROBES = {Probe.INSTANCE: "instance", Probe.REGISTRY: "registry"}


def _abstaining(fresh: list[Observation], policy: EnginePolicy) -> frozenset[str]:
    """A vantage that sees every site and every location fail at once is the one cut off."""
    if not policy.sites or not policy.locations:
        return frozenset()
    everything = len(policy.sites) + len(policy.locations)
    failing: dict[str, int] = {}
    for o in fresh:
        if o.ok is False and o.probe is not Probe.INSTANCE and o.probe is not Probe.REGISTRY:
            failing[o.vantage] = failing.get(o.vantage, 0) + 1
    candidates = [v for v, n in failing.items() if n >= everything]
    if not candidates:  # the common case: no exact check needed
        return frozenset()
    targets = {(Probe.ENDTOEND, s.name) for s in policy.sites}
    targets |= {(Probe.STORAGE, loc) for loc in policy.locations}
    out = set()
    for v in candidates:
        seen = {(o.probe, o.target) for o in fresh if o.vantage == v and o.ok is False}
        if targets <= seen:
            out.add(v)
    return frozenset(out)


class _Votes:
    """Failing and healthy votes per key, plus the vantages whose failure needs a second look."""

    __slots__ = ("fail", "ok", "suspect")

    def __init__(self) -> None:
        self.fail: dict[str, int] = {}
        self.ok: dict[str, int] = {}
        self.suspect: dict[str, list[str]] = {}

    def tally(self, key: str, quorum: int) -> Tally:
        return Tally(self.fail.get(key, 0), self.ok.get(key, 0), quorum)


class Tallies(Mapping[str, Tally]):
    """Tallies made on access: most of a thousand sites are never looked at closely."""

    __slots__ = ("_keys", "_quorum", "_votes")

    def __init__(self, votes: _Votes, keys: tuple[str, ...], quorum: int) -> None:
        self._votes, self._keys, self._quorum = votes, keys, quorum

    def __getitem__(self, key: str) -> Tally:
        return self._votes.tally(key, self._quorum)

    @property
    def quorum(self) -> int:
        return self._quorum

    def counts(self, key: str) -> tuple[int, int]:
        """(failing, ok) votes without building a Tally: the engine's per-site fast path."""
        votes = self._votes
        return votes.fail.get(key, 0), votes.ok.get(key, 0)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def gather(latest: Latest, policy: EnginePolicy, now: float, since: float) -> Evidence:
    """Verdicts at `now`. Counters advance only on observations newer than `since` (the
    previous round), so that one observation is never counted as several rounds."""
    cutoff = now - policy.stale_after
    fresh = [o for o in latest.values() if cutoff <= o.t <= now]
    abstaining = _abstaining(fresh, policy)
    q = policy.quorum

    locations, corroboration, endtoend = _Votes(), _Votes(), _Votes()
    # What every fresh observation says now, new or not: rounds run as observations
    # arrive, so one round may hold a single new observation, and whether a failure is
    # global or local must be judged against the latest view of every site and location.
    current = _Votes()
    checks = {"instance": _Votes(), "registry": _Votes(), "database": _Votes()}
    # Per check and vantage: sites known and sites fine, to tell local from global.
    known: dict[tuple[str, str], int] = {}
    fine: dict[tuple[str, str], int] = {}
    endtoend_probe, storage_probe = Probe.ENDTOEND, Probe.STORAGE

    # The hot loop of the engine (one pass over every observation): plain dict
    # arithmetic, no helper calls, for the 1,000-site benchmark.
    for o in fresh:
        v = o.vantage
        if v in abstaining:
            continue
        ok = o.ok
        target = o.target
        probe = o.probe
        if probe is endtoend_probe:
            services = o.services
            if ok is not None:
                votes = endtoend.ok if ok else endtoend.fail
                votes[target] = votes.get(target, 0) + 1
                storage = services.get("storage")
                if storage is False or (not ok and o.reason in UNREACHABLE):
                    corroboration.fail[target] = corroboration.fail.get(target, 0) + 1
                elif storage is True:
                    corroboration.ok[target] = corroboration.ok.get(target, 0) + 1
            # database/redis false at this site (inlined: the hot loop)
            database, redis = services.get("database"), services.get("redis")
            if database is None and redis is None:
                continue
            check, failing = "database", database is False or redis is False
        elif ok is None:
            continue
        elif probe is storage_probe:
            votes = current.ok if ok else current.fail
            votes[target] = votes.get(target, 0) + 1
            if o.t > since:
                votes = locations.ok if ok else locations.fail
                votes[target] = votes.get(target, 0) + 1
            continue
        else:
            check, failing = _CHECK_PROBES[probe], not ok
        key = (check, v)
        known[key] = known.get(key, 0) + 1
        if not failing:
            fine[key] = fine.get(key, 0) + 1
        if o.t <= since:  # counted in an earlier round
            continue
        if failing:
            checks[check].suspect.setdefault(target, []).append(v)
        else:
            votes = checks[check].ok
            votes[target] = votes.get(target, 0) + 1

    names = tuple(s.name for s in policy.sites)

    def tallies(votes: _Votes, keys: tuple[str, ...]) -> Tallies:
        return Tallies(votes, keys, q)

    location_tallies = tallies(locations, policy.locations)
    global_storage = bool(policy.locations) and all(
        t.verdict is Verdict.FAIL for t in tallies(current, policy.locations).values()
    )
    check_tallies: dict[str, Tallies] = {}
    global_checks = set()
    for check, check_votes in checks.items():
        everywhere = sum(
            1
            for (c, v), n in known.items()
            if c == check and n and not fine.get((c, v)) and len(names) > 1
        )
        if everywhere >= q:
            global_checks.add(check)
        for site, vantages in check_votes.suspect.items():
            for v in vantages:
                others, others_fine = known[(check, v)] - 1, fine.get((check, v), 0)
                # Site-local only while most other sites are fine from that vantage.
                if others and others_fine * 2 > others:
                    check_votes.fail[site] = check_votes.fail.get(site, 0) + 1
        check_tallies[check] = tallies(check_votes, names)
    return Evidence(
        abstaining=abstaining,
        locations=location_tallies,
        global_storage=global_storage,
        corroboration=tallies(corroboration, names),
        checks=check_tallies,
        global_checks=frozenset(global_checks),
        endtoend=tallies(endtoend, names),
    )
