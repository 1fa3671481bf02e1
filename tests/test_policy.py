"""`engine_policy` gives the engine what it needs of a configuration, as plain data."""

from __future__ import annotations

from pathlib import Path

from trafficd.config.loader import load
from trafficd.engine import EnginePolicy, SiteSpec
from trafficd.policy import engine_policy

CONFIG = """\
vantage: us-east
storage:
  usstorage: [LocalStorage, {storage_path: /us}]
  eustorage: [LocalStorage, {storage_path: /eu}]
sites:
  us: {url: "https://quay.example.com", connect: "10.0.1.10:443", storage: [usstorage]}
  eu:
    url: "https://quay.example.com"
    connect: "10.0.2.10:443"
    storage: [eustorage, usstorage]
    weight: 50
    mode: observe
    storage_check: all
probes: {interval: 2s, timeout: 1s}
policy: {fall: 4, rise: 6, hold_down: 30s, max_drains: 2, return_steps: [10, 50, 100],
         return_step: 1m, return_max_error_ratio: 0.02, return_min_requests: 500}
"""


def test_engine_policy_is_the_configuration_as_plain_data(tmp_path: Path) -> None:
    path = tmp_path / "trafficd.yaml"
    path.write_text(CONFIG)
    policy = engine_policy(load(path, environ={}))
    assert isinstance(policy, EnginePolicy)
    assert policy.sites == (
        SiteSpec("eu", ("eustorage", "usstorage"), weight=50, observe=True, storage_check="all"),
        SiteSpec("us", ("usstorage",)),
    )
    assert policy.locations == ("eustorage", "usstorage")
    assert (policy.vantages, policy.quorum) == (("us-east",), 1)
    assert (policy.interval, policy.fall, policy.rise) == (2.0, 4, 6)
    assert (policy.hold_down, policy.max_drains) == (30.0, 2)
    assert (policy.return_steps, policy.return_step) == ((10, 50, 100), 60.0)
    assert (policy.return_max_error_ratio, policy.return_min_requests) == (0.02, 500)
