"""Benchmark: one engine decision round for 10, 100 and 1,000 sites seen from 3 vantages.

Run: .venv/bin/python bench/engine.py [--rounds N]
Prints microseconds per round (median and best of N rounds after warm-up).
Target (issue 4): 1,000 sites under 10 ms per round.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from trafficd.engine import EnginePolicy, SiteSpec, decide
from trafficd.model import EngineState, Observation, Probe

VANTAGES = ("us-east", "eu-west", "ap-south")
SERVICES = {"auth": True, "database": True, "redis": True, "storage": True}


Round = dict[tuple[str, Probe, str], Observation]


def world(n_sites: int, failing_share: int) -> tuple[EnginePolicy, Callable[[float], Round]]:
    sites = tuple(
        SiteSpec(f"site{i}", (f"loc{i}", f"loc{(i + 1) % n_sites}")) for i in range(n_sites)
    )
    policy = EnginePolicy(
        sites=sites,
        locations=tuple(f"loc{i}" for i in range(n_sites)),
        vantages=VANTAGES,
        quorum=2,
        interval=1.0,
        max_drains=n_sites,
        min_active_sites=1,
        hold_down=0.0,
    )

    def round_obs(t: float) -> Round:
        latest = {}
        for v in VANTAGES:
            for i, spec in enumerate(sites):
                failing = failing_share and i % failing_share == 0 and t >= 3
                obs = [
                    Observation(t, v, Probe.STORAGE, f"loc{i}", not failing),
                    Observation(
                        t,
                        v,
                        Probe.ENDTOEND,
                        spec.name,
                        not failing,
                        services={**SERVICES, "storage": not failing},
                    ),
                    Observation(t, v, Probe.INSTANCE, spec.name, True),
                ]
                for o in obs:
                    latest[o.key] = o
        return latest

    return policy, round_obs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    header = ("sites", "scenario", "median us/round", "best us/round", "transitions")
    print("{:>6} {:>22} {:>16} {:>14} {:>12}".format(*header))
    scenarios = {"all healthy": 0, "1 in 10 storage down": 10}
    for n, (name, share) in ((n, sc) for n in (10, 100, 1000) for sc in scenarios.items()):
        policy, make_round = world(n, share)
        rounds = [make_round(float(r)) for r in range(args.rounds)]  # built outside the timing
        state = EngineState()
        times, transitions = [], 0
        for r in range(args.rounds):
            latest = rounds[r]
            start = time.perf_counter()
            decision = decide(state, latest, policy, {}, None, float(r))
            times.append(time.perf_counter() - start)
            state = decision.state
            transitions += len(decision.transitions)
        steady = times[5:] or times  # after the drains of round 3 have settled
        median, best = statistics.median(steady) * 1e6, min(steady) * 1e6
        print(f"{n:>6} {name:>22} {median:>16.0f} {best:>14.0f} {transitions:>12}")


if __name__ == "__main__":
    main()
