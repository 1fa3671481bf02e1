"""Long searches of the scenario explorer (tests/engine/test_explorer.py) beyond CI's 2,000.

Run: .venv/bin/python bench/explore.py --histories N [--random]
Prints histories per second, and the fault and event combinations covered: the
distinct sets of kinds one history combined, and how many of the possible pairs
of kinds (a fault with a fault, a fault with an event) some history combined.
Without shrinking: a violation is printed as found, as hypothesis reports it.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TRAFFICD_EXPLORER_SHRINK", "0")

from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.engine import test_explorer
from tests.engine.explorer import EVENTS, FAULTS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=10_000)
    parser.add_argument(
        "--random", action="store_true", help="a fresh random search (default: derandomized)"
    )
    args = parser.parse_args()
    chosen = settings(
        max_examples=args.histories,
        stateful_step_count=25,
        deadline=None,
        database=None,
        derandomize=not args.random,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    start = time.perf_counter()
    failed = None
    try:
        run_state_machine_as_test(test_explorer.Explorer, settings=chosen)
    except AssertionError as exc:  # a violation: the report, then the figures so far
        failed = exc
    elapsed = time.perf_counter() - start
    covered = test_explorer.COVERED
    histories = len(test_explorer.HISTORY_COUNT)
    kinds = (*FAULTS, *EVENTS)
    pairs = {frozenset(p) for combo in covered for p in itertools.combinations(sorted(combo), 2)}
    possible = len(list(itertools.combinations(kinds, 2)))
    rounds = sum(test_explorer.HISTORY_COUNT)
    print(f"histories: {histories} in {elapsed:.1f} s ({histories / elapsed:.0f} per second)")
    print(f"engine rounds: {rounds} ({rounds / max(1, histories):.1f} per history, two engines)")
    print(f"fault/event sets combined in one history: {len(covered)} distinct")
    print(f"pairs of kinds combined: {len(pairs)} of {possible}")
    print(f"largest combination: {max((len(c) for c in covered), default=0)} kinds")
    if failed is not None:
        print(f"VIOLATION: {failed}")
        for note in getattr(failed, "__notes__", ()):  # hypothesis: the history's steps
            print(note)
        return 1
    print("violations: none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
