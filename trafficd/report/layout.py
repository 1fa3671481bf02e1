"""What a report needs to know of a deployment: its sites and its actuators.

Beside the audit-log reader (incident.py): an actuation event names its
actuator and lists its changes as text, but not the sites they concern, so
the report matches each change against the sites' addresses, HAProxy
servers and Route 53 set identifiers, and each actuator's `role` (traffic
or instances) says which milestone it answers.

`read_layout` takes these from a configuration file without resolving its
secrets (as the client commands do): a postmortem is often written on
another machine than the daemon's, without its S3 keys or TSIG secret.
`Layout.from_config` takes them from a loaded configuration (`simulate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trafficd.actuators import ACTUATORS
from trafficd.config.model import Config, PowerDNSActuator
from trafficd.config.source import ConfigError, Problem, read
from trafficd.lazy import Lazy


@dataclass(frozen=True)
class SiteLayout:
    name: str
    storage: tuple[str, ...] | None  # None: not in the file (imported from Quay's config)
    addresses: tuple[str, ...] = ()
    haproxy: tuple[str, str] | None = None  # (backend, server)
    set_identifier: str | None = None  # Route 53; default: the site's name


@dataclass(frozen=True)
class ActuatorLayout:
    ident: str
    type: str
    role: str  # "traffic" | "instances" | "notify": the actuator class's own `role`
    # Its changes carry each site's weight (a return step's share): a return in steps is
    # whole there only once it reads back the site's whole weight. Address sets (rfc2136,
    # PowerDNS without `weighted`) hold the site whole from its first step on.
    weighted: bool = False


# The actuator types whose records are weights; PowerDNS's are with `weighted: true`.
WEIGHTED_TYPES = frozenset({"haproxy", "route53"})


def role_of(actuator_type: str) -> str:
    """The `role` its implementation declares (imports that one module only)."""
    factory = ACTUATORS.get(actuator_type)
    if not isinstance(factory, Lazy):
        return "notify"
    return str(factory.resolve().role)


@dataclass(frozen=True)
class Layout:
    sites: Mapping[str, SiteLayout]
    actuators: tuple[ActuatorLayout, ...]
    state_dir: str | None = None

    def traffic_actuators(self, site: str) -> list[ActuatorLayout]:
        """The traffic actuators that serve `site` (HAProxy only where it has a server)."""
        spec = self.sites.get(site)
        return [
            a
            for a in self.actuators
            if a.role == "traffic" and (a.type != "haproxy" or (spec and spec.haproxy))
        ]

    def instance_actuators(self) -> list[ActuatorLayout]:
        return [a for a in self.actuators if a.role == "instances"]

    @classmethod
    def from_config(cls, config: Config) -> Layout:
        sites = {
            name: SiteLayout(
                name=name,
                storage=tuple(site.storage or ()),
                addresses=tuple(str(a) for a in site.addresses),
                haproxy=(site.haproxy.backend, site.haproxy.server) if site.haproxy else None,
                set_identifier=site.route53.set_identifier if site.route53 else None,
            )
            for name, site in sorted(config.sites.items())
        }
        actuators = tuple(
            ActuatorLayout(
                a.ident,
                a.type,
                role_of(a.type),
                a.type in WEIGHTED_TYPES or (isinstance(a, PowerDNSActuator) and a.weighted),
            )
            for a in config.actuators
        )
        return cls(sites, actuators, config.state_dir)


def _strings(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def read_layout(path: str | Path) -> Layout:
    """Sites, actuators and `state_dir` of a configuration file, secrets left unresolved.

    Raises ConfigError (FILE:LINE: key.path: message) for what the report cannot read.
    """
    source, problems = read(Path(path))
    data = source.data if isinstance(source.data, dict) else {}
    sites: dict[str, SiteLayout] = {}
    raw_sites = data.get("sites")
    if not isinstance(raw_sites, dict) or not raw_sites:
        problems.append(source.problem(("sites",), "a mapping of sites expected"))
        raw_sites = {}
    for name, raw in raw_sites.items():
        if not isinstance(raw, dict):
            problems.append(source.problem(("sites", name), "a mapping expected"))
            continue
        storage = raw.get("storage")
        if storage is not None and _strings(storage) is None:
            problems.append(source.problem(("sites", name, "storage"), "a list of locations"))
        addresses = raw.get("addresses", [])
        if _strings(addresses) is None:
            problems.append(source.problem(("sites", name, "addresses"), "a list of addresses"))
        haproxy = raw.get("haproxy")
        server = None
        if isinstance(haproxy, dict) and isinstance(haproxy.get("server"), str):
            server = (str(haproxy.get("backend", "")), str(haproxy["server"]))
        route53 = raw.get("route53")
        ident = route53.get("set_identifier") if isinstance(route53, dict) else None
        sites[str(name)] = SiteLayout(
            name=str(name),
            storage=_strings(storage),
            addresses=_strings(addresses) or (),
            haproxy=server,
            set_identifier=ident if isinstance(ident, str) else None,
        )
    actuators = []
    raw_actuators = data.get("actuators", [])
    if not isinstance(raw_actuators, list):
        problems.append(source.problem(("actuators",), "a list of actuators expected"))
        raw_actuators = []
    for i, raw in enumerate(raw_actuators):
        kind = raw.get("type") if isinstance(raw, dict) else None
        if not isinstance(kind, str) or kind not in ACTUATORS:
            known = ", ".join(sorted(ACTUATORS))
            problems.append(source.problem(("actuators", i, "type"), f"one of {known}"))
            continue
        ident = raw.get("id") or kind
        weighted = kind in WEIGHTED_TYPES or (kind == "powerdns" and raw.get("weighted") is True)
        actuators.append(ActuatorLayout(str(ident), kind, role_of(kind), weighted))
    state_dir = data.get("state_dir", Config.model_fields["state_dir"].default)
    if not isinstance(state_dir, str):
        problems.append(source.problem(("state_dir",), "a path expected"))
    if problems:
        raise ConfigError(problems)
    return Layout(sites, tuple(actuators), state_dir)


__all__ = ["ActuatorLayout", "ConfigError", "Layout", "Problem", "SiteLayout", "read_layout"]
