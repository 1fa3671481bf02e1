"""The engine's policy built from the configuration: the one place the two meet.

Runtime side (docs/design.md, "Layers"): the daemon builds it at start and on
every reload, `trafficd simulate` for a replay. The engine itself imports no
configuration; it reads only the plain frozen `EnginePolicy` made here.
"""

from __future__ import annotations

from trafficd.config.model import Config
from trafficd.engine import EnginePolicy, SiteSpec


def engine_policy(config: Config) -> EnginePolicy:
    """What the engine needs of `config`: sites in name order, locations, vantages, policy."""
    p = config.policy
    sites = tuple(
        SiteSpec(
            name=name,
            storage=tuple(site.storage or ()),
            weight=site.weight,
            observe=site.mode == "observe",
            storage_check=site.storage_check,
        )
        for name, site in sorted(config.sites.items())
    )
    return EnginePolicy(
        sites=sites,
        locations=tuple(sorted(config.storage)),
        vantages=tuple(config.all_vantages),
        quorum=config.quorum_size,
        interval=config.probes.interval,
        storage_interval=config.probes.effective_storage_interval,
        fall=p.fall,
        rise=p.rise,
        min_active_sites=p.min_active_sites,
        hold_down=p.hold_down,
        max_drains=p.max_drains,
        drain_window=p.drain_window,
        shutdown_grace=p.shutdown_grace,
        restore_timeout=p.restore_timeout,
        damping_window=p.damping_window,
        max_hold_down=p.max_hold_down,
        return_steps=tuple(p.return_steps),
        return_step=p.return_step,
        return_max_error_ratio=p.return_max_error_ratio,
        return_min_requests=p.return_min_requests,
    )
