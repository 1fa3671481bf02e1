"""What one round of observations says, vantage by vantage, reduced by quorum.

First half of the engine: `gather` turns the latest observations into
verdicts (fail / ok / unknown) per storage location and per site check. The
second half, `decide`, turns verdicts and remembered counters into
transitions. Pure: `now` is an argument and nothing is read or written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from trafficd.engine.policy import EnginePolicy
from trafficd.model import UNREACHABLE, Evidence, Observation, Probe, Tallies

# Quay's debug failure text names the location (docs/design.md, "What real Quay does").
_PREFERRED_FAILED = re.compile(r"Preferred storage '([^']+)' check failed")


Latest = Mapping[tuple[str, Probe, str], Observation]
_CHECK_PROBES = {Probe.INSTANCE: "instance", Probe.REGISTRY: "registry"}
SHARED_SERVICES = ("database", "redis")  # one for the whole deployment (docs/design.md)


def named_locations(o: Observation) -> frozenset[str]:
    """The locations a failing endtoend's debug text blames; empty without debug mode.
    The prober's `storage_faults` first, else the texts themselves (older audit logs)."""
    faults = getattr(o, "storage_faults", None)
    if faults:
        return frozenset(loc for loc, kind in faults.items() if kind == "preferred")
    texts = getattr(o, "service_texts", None) or {}
    text = texts.get("storage") or o.detail
    if not text or "storage" not in text:
        return frozenset()
    return frozenset(_PREFERRED_FAILED.findall(text))


def _abstaining(
    fresh: list[Observation], policy: EnginePolicy, stopped: frozenset[str]
) -> frozenset[str]:
    """A vantage that reaches no site and sees every location fail at once is the one cut
    off. Only a site it cannot reach (UNREACHABLE) counts: a site that answers, even 503
    storage: false, is Quay's word and reached the vantage, so it is no sign of the
    vantage's own network. Sites whose instances trafficd stopped fail by design and are
    no sign of it either."""
    sites = [s.name for s in policy.sites if s.name not in stopped]
    if not sites or not policy.locations:
        return frozenset()
    everything = len(sites) + len(policy.locations)
    failing: dict[str, int] = {}
    for o in fresh:
        if o.ok is False and (
            o.probe is Probe.STORAGE
            or (o.probe is Probe.ENDTOEND and o.subject not in stopped and o.reason in UNREACHABLE)
        ):
            failing[o.vantage] = failing.get(o.vantage, 0) + 1
    candidates = [v for v, n in failing.items() if n >= everything]
    if not candidates:  # the common case: no exact check needed
        return frozenset()
    subjects = {(Probe.ENDTOEND, name) for name in sites}
    subjects |= {(Probe.STORAGE, loc) for loc in policy.locations}
    out = set()
    for v in candidates:
        seen = {
            (o.probe, o.subject)
            for o in fresh
            if o.vantage == v
            and o.ok is False
            and (o.probe is Probe.STORAGE or o.reason in UNREACHABLE)
        }
        if subjects <= seen:
            out.add(v)
    return frozenset(out)


def _unreachable(
    previous: Mapping[str, frozenset[str]],
    policy: EnginePolicy,
    failed: list[tuple[str, str]],
    passed: list[tuple[str, str]],
    proven: frozenset[str],
) -> dict[str, frozenset[str]]:
    """Per vantage, the locations it knows it cannot reach: a new failing direct probe
    while `proven` (sites not stopped whose Quay says storage: true, on the fresh
    observations) holds a site whose storage: true proves the location healthy;
    forgotten when its direct probe passes again."""
    if not failed and not any(previous.values()):
        return {}
    known = {v: set(locs) for v, locs in previous.items() if v in policy.vantages}
    for v, loc in passed:
        if v in known:
            known[v].discard(loc)
    for v, loc in failed:
        if any(site in proven for site in policy.proven_by.get(loc, ())):
            known.setdefault(v, set()).add(loc)
    wanted = set(policy.locations)
    return {v: frozenset(locs & wanted) for v, locs in sorted(known.items()) if locs & wanted}


class _Votes:
    """Failing and healthy votes per key, plus the vantages whose failure needs a second look."""

    __slots__ = ("fail", "ok", "suspect")

    def __init__(self) -> None:
        self.fail: dict[str, int] = {}
        self.ok: dict[str, int] = {}
        self.suspect: dict[str, list[str]] = {}


def gather(
    latest: Latest,
    policy: EnginePolicy,
    now: float,
    since: float,
    stopped: frozenset[str] = frozenset(),
    unreachable: Mapping[str, frozenset[str]] | None = None,
    waiting: Mapping[str, float] | None = None,
) -> Evidence:
    """Verdicts at `now`. Counters advance only on observations newer than `since` (the
    previous round), so that one observation is never counted as several rounds.

    `stopped`: sites whose instances trafficd itself stopped (or is starting again).
    Their failing probes are trafficd's own doing: they say nothing about whether a
    failure elsewhere is local or global, nor about a vantage being cut off.

    `unreachable`, `waiting`: the previous round's `Evidence.unreachable` (what each
    vantage knew it cannot reach) and `Evidence.waiting`."""
    cutoff = now - policy.stale_after
    # Storage probes may run at their own, slower interval: each kind is stale after
    # three of its own intervals, or a global outage looks local between two probes.
    storage_cutoff = now - policy.storage_stale_after
    fresh = [
        o
        for o in latest.values()
        if (storage_cutoff if o.probe is Probe.STORAGE else cutoff) <= o.t <= now
    ]
    abstaining = _abstaining(fresh, policy, stopped)
    q = policy.quorum
    named: dict[str, list[frozenset[str]]] = {}
    storage_only: dict[str, int] = {}

    locations, corroboration, endtoend = _Votes(), _Votes(), _Votes()
    # What every fresh observation says now, new or not: rounds run as observations
    # arrive, so one round may hold a single new observation, and whether a failure is
    # global or local must be judged against the latest view of every site and location.
    current = _Votes()
    # New direct probes, for what each vantage knows it cannot reach (`_unreachable`).
    failed: list[tuple[str, str]] = []
    passed: list[tuple[str, str]] = []
    unreachable_before = unreachable or {}
    waiting_before = waiting or {}
    checks = {"instance": _Votes(), "registry": _Votes(), "database": _Votes(), "redis": _Votes()}
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
        subject = o.subject
        probe = o.probe
        if probe is endtoend_probe:
            services = o.services
            if ok is not None:
                votes = endtoend.ok if ok else endtoend.fail
                votes[subject] = votes.get(subject, 0) + 1
                storage = services.get("storage")
                if storage is False or (not ok and o.reason in UNREACHABLE):
                    corroboration.fail[subject] = corroboration.fail.get(subject, 0) + 1
                    named.setdefault(subject, []).append(named_locations(o))
                    if storage is False and all(
                        healthy for name, healthy in services.items() if name != "storage"
                    ):
                        storage_only[subject] = storage_only.get(subject, 0) + 1
                elif storage is True:
                    corroboration.ok[subject] = corroboration.ok.get(subject, 0) + 1
            if subject in stopped:
                continue
            # database and redis, each judged local or global on its own (inlined: the
            # hot loop); a global outage names the service that failed.
            for check in SHARED_SERVICES:
                healthy = services.get(check)
                if healthy is None:
                    continue
                key = (check, v)
                known[key] = known.get(key, 0) + 1
                if healthy:
                    fine[key] = fine.get(key, 0) + 1
                if o.t <= since:  # counted in an earlier round
                    continue
                if not healthy:
                    checks[check].suspect.setdefault(subject, []).append(v)
                else:
                    votes = checks[check].ok
                    votes[subject] = votes.get(subject, 0) + 1
            continue
        elif ok is None:
            continue
        elif probe is storage_probe:
            votes = current.ok if ok else current.fail
            votes[subject] = votes.get(subject, 0) + 1
            if o.t > since:
                if not ok:
                    failed.append((v, subject))
                elif v in unreachable_before:
                    passed.append((v, subject))
            if o.t > (waiting_before.get(subject, since) if waiting_before else since):
                votes = locations.ok if ok else locations.fail
                votes[subject] = votes.get(subject, 0) + 1
            continue
        elif subject in stopped:
            continue  # failing by trafficd's own doing: no evidence either way
        else:
            check, failing = _CHECK_PROBES[probe], not ok
        key = (check, v)
        known[key] = known.get(key, 0) + 1
        if not failing:
            fine[key] = fine.get(key, 0) + 1
        if o.t <= since:  # counted in an earlier round
            continue
        if failing:
            checks[check].suspect.setdefault(subject, []).append(v)
        else:
            votes = checks[check].ok
            votes[subject] = votes.get(subject, 0) + 1

    names = tuple(s.name for s in policy.sites)

    def tallies(votes: _Votes, keys: tuple[str, ...]) -> Tallies:
        return Tallies(votes.fail, votes.ok, keys, q)

    location_tallies = tallies(locations, policy.locations)
    waiting_now = _waiting(locations, waiting_before, policy, since)
    proven = frozenset(site for site in corroboration.ok if site not in stopped)
    unreachable_now = _unreachable(unreachable_before, policy, failed, passed, proven)
    global_storage = bool(policy.locations) and _everywhere(
        current, unreachable_now, latest, policy, q, storage_cutoff, now, abstaining, named
    )
    check_tallies: dict[str, Tallies] = {}
    global_checks = set()
    reachable = len(names) - len(stopped)  # stopped sites are no sign of anything
    for check, check_votes in checks.items():
        everywhere = sum(
            1
            for (c, v), n in known.items()
            # Global takes two sites answering and failing alike: one answering site
            # alone cannot tell a local cut from a global outage.
            if c == check and n > 1 and not fine.get((c, v)) and reachable > 1
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
        named={site: tuple(sets) for site, sets in named.items()},
        storage_only=storage_only,
        unreachable=unreachable_now,
        waiting=waiting_now,
    )


def _waiting(
    locations: _Votes, before: Mapping[str, float], policy: EnginePolicy, since: float
) -> dict[str, float]:
    """The locations whose votes this round were too few to decide, and since when their
    votes wait (a location without new votes keeps waiting)."""
    quorum = policy.quorum
    out: dict[str, float] = {}
    if before:  # rare: only while some vantage's votes wait (a reload may drop a location)
        wanted = set(policy.locations)
        out = {loc: t for loc, t in before.items() if loc in wanted}
    fail, ok = locations.fail, locations.ok
    for loc in {*fail, *ok} if len(fail) + len(ok) else ():
        if fail.get(loc, 0) >= quorum or ok.get(loc, 0) >= quorum:
            out.pop(loc, None)
        else:
            out.setdefault(loc, since)
    return out


def _everywhere(
    current: _Votes,
    unreachable: Mapping[str, frozenset[str]],
    latest: Latest,
    policy: EnginePolicy,
    quorum: int,
    cutoff: float,
    now: float,
    abstaining: frozenset[str],
    named: Mapping[str, list[frozenset[str]]],
) -> bool:
    """Whether every location fails, on the latest fresh observations. A vantage that
    knows it cannot reach a location cannot tell whether it is down too: its failing
    probe is no vote of its own, yet it does not stand against the vantages that see
    the location fail (it counts toward their quorum, never alone). Quay's debug text
    naming a location (from a quorum of one site's answers) is Quay's own failure."""
    explained: dict[str, int] = {}
    for v, locs in unreachable.items():
        if v in abstaining:
            continue
        for loc in locs:
            o = latest.get((v, Probe.STORAGE, loc))
            if o is not None and o.ok is False and cutoff <= o.t <= now:
                explained[loc] = explained.get(loc, 0) + 1
    by_quay: set[str] = set()
    for votes in named.values():
        counts: dict[str, int] = {}
        for names in votes:
            for loc in names:
                counts[loc] = counts.get(loc, 0) + 1
        by_quay.update(loc for loc, n in counts.items() if n >= quorum)
    for loc in policy.locations:
        if loc in by_quay:
            continue
        unexplained = current.fail.get(loc, 0) - explained.get(loc, 0)
        if unexplained < 1 or unexplained + explained.get(loc, 0) < quorum:
            return False
    return True
