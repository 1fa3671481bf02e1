"""Test-wide settings: hypothesis is derandomized and keeps no example database.

Tests stay deterministic: the same examples run on every machine and every run,
and no example saved by an earlier run (of an older strategy) is replayed.
"""

from hypothesis import settings

settings.register_profile("trafficd", derandomize=True, database=None)
settings.load_profile("trafficd")
