"""The actuators: make DNS, load balancers and instances follow the engine's decisions.

One module per backend, each a small class behind `base.Actuator`; `ACTUATORS`
maps the configuration's `type` names (`trafficd.config.model.ACTUATOR_TYPES`,
the same names) to implementations. `base.Reconciler` runs any of them.
Each declares its `role`: `traffic` (DNS, load balancers), `instances`
(kubernetes, command) or `notify` (webhook), so the daemon can drain traffic
first and stop instances after `shutdown_grace`, and restore in reverse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trafficd.actuators.base import Actuator, BuildContext, Reconciler, desired_state
from trafficd.actuators.command import Command
from trafficd.actuators.haproxy import HAProxy
from trafficd.actuators.kubernetes import Kubernetes
from trafficd.actuators.powerdns import PowerDNS
from trafficd.actuators.rfc2136 import RFC2136
from trafficd.actuators.route53 import Route53
from trafficd.actuators.webhook import Webhook

ACTUATORS: dict[str, Callable[[Any, BuildContext | None], Actuator]] = {
    "rfc2136": RFC2136,
    "haproxy": HAProxy,
    "powerdns": PowerDNS,
    "route53": Route53,
    "kubernetes": Kubernetes,
    "command": Command,
    "webhook": Webhook,
}


def build(config: Any, context: BuildContext | None = None) -> Actuator:
    """The actuator for one `actuators[]` section; `context` gives it the sites and metrics."""
    return ACTUATORS[config.type](config, context)


__all__ = ["ACTUATORS", "Actuator", "BuildContext", "Reconciler", "build", "desired_state"]
