"""The actuators: make DNS, load balancers and instances follow the engine's decisions.

One module per backend, each a small class behind `base.Actuator`; `ACTUATORS`
maps the configuration's `type` names (`trafficd.config.model.ACTUATOR_TYPES`,
the same names) to implementations. `base.Reconciler` runs any of them.
Each declares its `role`: `traffic` (DNS, load balancers), `instances`
(kubernetes, command) or `notify` (webhook), so the daemon can drain traffic
first and stop instances once every traffic target reads the site back off
(and `shutdown_grace` after that), and restore in reverse. `split()` gives
an actuator's targets, each reconciled on its own.
Each module is imported when a configuration first names it (`trafficd.lazy`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trafficd.actuators.base import Actuator, BuildContext, Reconciler, desired_state
from trafficd.lazy import lazy

ACTUATORS: dict[str, Callable[[Any, BuildContext | None], Actuator[Any, Any]]] = {
    "rfc2136": lazy("trafficd.actuators.rfc2136:RFC2136"),
    "haproxy": lazy("trafficd.actuators.haproxy:HAProxy"),
    "powerdns": lazy("trafficd.actuators.powerdns:PowerDNS"),
    "route53": lazy("trafficd.actuators.route53:Route53"),
    "kubernetes": lazy("trafficd.actuators.kubernetes:Kubernetes"),
    "command": lazy("trafficd.actuators.command:Command"),
    "webhook": lazy("trafficd.actuators.webhook:Webhook"),
}


def build(config: Any, context: BuildContext | None = None) -> Actuator[Any, Any]:
    """The actuator for one `actuators[]` section; `context` gives it the sites and metrics."""
    return ACTUATORS[config.type](config, context)


__all__ = ["ACTUATORS", "Actuator", "BuildContext", "Reconciler", "build", "desired_state"]
