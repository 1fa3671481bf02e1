"""The validated configuration: every section of docs/configuration.md.

The middle of the configuration layer: `loader` feeds parsed, secret-resolved
data into `Config`; the rest of trafficd reads only these frozen models.
Unknown keys are errors everywhere. Actuators are a union discriminated on
`type`, whose members are exactly the values of `ACTUATOR_TYPES`, the one
registry of actuator names. Cross-section rules (a site naming a location that
does not exist, an actuator needing per-site settings) live in `loader`, where
they can report the line of the offending key.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from trafficd.config.storage import StorageLocation
from trafficd.config.types import FQDN, Duration, HostPort, HttpURL, IPAddress, Name


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sites --------------------------------------------------------------------


class SiteHAProxy(_Model):
    backend: str = Field(description="HAProxy backend that holds this site's server")
    server: str = Field(description="the server's name inside that backend")


class SiteKubernetes(_Model):
    context: str | None = Field(
        None, description="kubeconfig context of the site's cluster (default: current)"
    )
    namespace: str = Field(description="namespace of Quay's Deployment or QuayRegistry")
    quayregistry: str | None = Field(
        None, description="name of the QuayRegistry to patch (Operator-managed Quay)"
    )
    deployment: str | None = Field(
        None, description="name of Quay's Deployment to scale (Quay without the Operator)"
    )
    mirror: bool = Field(False, description="scale the mirror workers too")

    @model_validator(mode="after")
    def _one_target(self) -> SiteKubernetes:
        if (self.quayregistry is None) == (self.deployment is None):
            raise ValueError("set exactly one of quayregistry and deployment")
        return self


class SiteCommand(_Model):
    stop: list[str] = Field(min_length=1, description="argv that stops the site's Quay")
    start: list[str] = Field(min_length=1, description="argv that starts it")
    status: list[str] | None = Field(
        None, description="argv that exits 0 while Quay runs (optional)"
    )
    timeout: Duration = Field(60.0, description="longest time one command may run")


class Route53Alias(_Model):
    dns_name: str = Field(description="alias target, e.g. a load balancer's DNS name")
    hosted_zone_id: str = Field(description="hosted zone of the alias target")


class SiteRoute53(_Model):
    set_identifier: str | None = Field(None, description="SetIdentifier (default: site name)")
    alias: Route53Alias | None = Field(None, description="alias target instead of addresses")


class Site(_Model):
    url: HttpURL | None = Field(
        None,
        description="the shared global URL: Host header and TLS SNI "
        "(default: https://SERVER_HOSTNAME from quay_config)",
    )
    connect: HostPort = Field(description="HOST:PORT where this site's Quay answers directly")
    storage: list[str] | None = Field(
        None,
        description="the site's preferred storage locations, first one first "
        "(default: DISTRIBUTED_STORAGE_PREFERENCE from quay_config)",
    )
    storage_check: Literal["first", "all"] = Field(
        "first",
        description="what this site's endtoend `storage: true` proves: all (Quay v3.18 "
        "and later check every preferred location) proves every location of `storage` "
        "healthy; first (v3.17 and older) only the first. Default first: it claims only "
        "what every Quay version checks, so a wrong setting can never hide a dead "
        "location (v3.18 sites set to first only lose evidence against a cut from a "
        "vantage)",
    )
    addresses: list[IPAddress] = Field(
        default_factory=list, description="what DNS hands out for this site (A and AAAA)"
    )
    weight: int = Field(100, ge=0, le=255, description="traffic weight while active")
    mode: Literal["enforce", "observe"] = Field(
        "enforce", description="observe: decide and report, actuate nothing"
    )
    haproxy: SiteHAProxy | None = Field(None, description="this site's HAProxy server")
    kubernetes: SiteKubernetes | None = Field(None, description="how to scale this site's Quay")
    command: SiteCommand | None = Field(None, description="how to stop and start standalone Quay")
    route53: SiteRoute53 | None = Field(None, description="this site's weighted record")

    @model_validator(mode="after")
    def _unique_addresses(self) -> Site:
        if len(set(self.addresses)) != len(self.addresses):
            raise ValueError("addresses: an address is listed twice")
        return self


# --- probes and policy ----------------------------------------------------------


class Probes(_Model):
    interval: Duration = Field(2.0, gt=0, description="time between probe rounds")
    timeout: Duration = Field(1.5, gt=0, description="total time one probe may take")
    storage_interval: Duration | None = Field(
        None, gt=0, description="time between storage probes (default: interval)"
    )
    tls_ca_file: str | None = Field(
        None, description="CA bundle for the sites' TLS (default: system trust store)"
    )
    tls_insecure: bool = Field(False, description="skip TLS verification (never in production)")
    storage_mode: Literal["write", "read"] = Field(
        "write", description="write: put/get/delete a canary; read: reachability only"
    )
    debug_secret: SecretStr | None = Field(
        None, description="Quay's ENABLE_HEALTH_DEBUG_SECRET, to read failure texts"
    )
    storage_endpoints: dict[str, HttpURL] = Field(
        default_factory=dict,
        description="LOCATION: URL where this vantage reaches a bucket, instead of "
        "the endpoint Quay's parameters give (an internal endpoint, a test server)",
    )

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> Probes:
        if self.timeout >= self.interval:
            raise ValueError("timeout: must be shorter than interval")
        return self

    @property
    def effective_storage_interval(self) -> float:
        return self.storage_interval if self.storage_interval is not None else self.interval


def _check_quorum(value: object) -> object:
    if value == "majority" or (type(value) is int and value >= 1):
        return value
    raise ValueError("quorum must be 'majority' or a number of vantages (1 or more)")


class Policy(_Model):
    fall: int = Field(3, ge=1, description="failed rounds before a site-local failure drains")
    rise: int = Field(5, ge=1, description="healthy rounds before a restore")
    quorum: Annotated[int | Literal["majority"], BeforeValidator(_check_quorum)] = Field(
        "majority", description="vantages that must agree: majority, or a number"
    )
    min_active_sites: int = Field(1, ge=0, description="automation never goes below this")
    hold_down: Duration = Field(60.0, ge=0, description="minimum time between transitions")
    max_drains: int = Field(1, ge=0, description="automatic drains allowed per drain_window")
    drain_window: Duration = Field(600.0, gt=0, description="window of max_drains")
    shutdown_grace: Duration = Field(
        60.0,
        ge=0,
        description="between the traffic actuators confirming a site's traffic off "
        "(read back from every backend) and its instance shutdown",
    )
    shutdown_deadline: Duration = Field(
        300.0,
        gt=0,
        description="a drain whose traffic is not confirmed off within this time keeps its "
        "instances up and is reported (trafficd_site_shutdown_blocked)",
    )
    restore_timeout: Duration = Field(
        600.0, gt=0, description="longest time in restoring before going back to drained"
    )
    damping_window: Duration = Field(
        3600.0, gt=0, description="each drain within this window doubles the site's hold-down"
    )
    max_hold_down: Duration = Field(3600.0, ge=0, description="cap of the damped hold-down")
    return_steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        [100],
        min_length=1,
        description="percents of its weight a site passes through when it comes back, "
        "strictly increasing, the last 100, e.g. [10, 50, 100]; [100]: its whole weight at "
        "once",
    )
    return_step: Duration = Field(
        120.0,
        gt=0,
        description="time at each return step: the site moves up one step only once its "
        "probes stayed healthy for a whole step",
    )
    return_max_error_ratio: float = Field(
        0.05,
        ge=0,
        le=1,
        description="the canary: a return is abandoned when the share of 5xx responses "
        "its load balancer counts in one step is above this",
    )
    return_min_requests: int = Field(
        100, ge=1, description="responses a step needs before the canary judges its 5xx share"
    )

    @field_validator("return_steps")
    @classmethod
    def _steps_rise_to_100(cls, steps: list[int]) -> list[int]:
        for before, after in itertools.pairwise(steps):
            if after <= before:
                raise ValueError(f"must be strictly increasing ({after} after {before})")
        if steps[-1] != 100:
            raise ValueError(
                f"the last step must be 100 (the site's whole weight), not {steps[-1]}"
            )
        return steps


# --- actuators --------------------------------------------------------------------


class _Actuator(_Model):
    id: Name | None = Field(None, description="name in metrics and events (default: its type)")

    @property
    def ident(self) -> str:
        """The actuator's name in metrics and events."""
        return self.id or str(getattr(self, "type"))  # noqa: B009 - each subclass has a type


class TSIG(_Model):
    name: str = Field(description="TSIG key name")
    algorithm: Literal[
        "hmac-md5", "hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"
    ] = Field("hmac-sha256", description="TSIG algorithm")
    secret: SecretStr = Field(description="base64 key")


class RFC2136Actuator(_Actuator):
    type: Literal["rfc2136"]
    server: HostPort | None = Field(None, description="primary DNS server, HOST:PORT")
    servers: list[HostPort] | None = Field(
        None,
        min_length=1,
        description="several DNS servers (no single primary, or a hidden primary and a "
        "fallback): each is read back on its own; an update goes to the server being "
        "reconciled, then to the others in order, until one accepts it",
    )
    zone: FQDN = Field(description="zone to update")
    name: FQDN = Field(description="the global name whose A/AAAA records follow the sites")
    ttl: int = Field(30, ge=0, description="TTL of the records")
    tsig: TSIG | None = Field(None, description="TSIG key that signs updates")
    timeout: Duration = Field(5.0, gt=0, description="timeout of one DNS exchange")
    fence_record: FQDN | None = Field(
        None,
        description="with coordination: the TXT record holding the leader's fencing token "
        "that every update requires (default: _trafficd-fence.<name>)",
    )

    @model_validator(mode="after")
    def _name_in_zone(self) -> RFC2136Actuator:
        if (self.server is None) == (self.servers is None):
            raise ValueError("set exactly one of server and servers")
        if not (self.name == self.zone or self.name.endswith("." + self.zone)):
            raise ValueError(f"name: {self.name} is not inside zone {self.zone}")
        return self

    @property
    def all_servers(self) -> list[str]:
        return self.servers if self.servers is not None else [self.server or ""]


class HAProxyActuator(_Actuator):
    type: Literal["haproxy"]
    socket: str | None = Field(None, description="one runtime API socket: a path or HOST:PORT")
    sockets: list[str] | None = Field(
        None, min_length=1, description="several HAProxy instances' runtime API sockets"
    )
    timeout: Duration = Field(5.0, gt=0, description="timeout of one runtime API command")

    @model_validator(mode="after")
    def _one_of(self) -> HAProxyActuator:
        if (self.socket is None) == (self.sockets is None):
            raise ValueError("set exactly one of socket and sockets")
        return self

    @property
    def all_sockets(self) -> list[str]:
        return self.sockets if self.sockets is not None else [self.socket or ""]


class PowerDNSActuator(_Actuator):
    type: Literal["powerdns"]
    api_url: HttpURL = Field(description="PowerDNS API base URL")
    api_key: SecretStr = Field(description="X-API-Key")
    server_id: str = Field("localhost", description="PowerDNS server id")
    zone: FQDN = Field(description="zone holding the name")
    name: FQDN = Field(description="the global name")
    ttl: int = Field(30, ge=0, description="TTL of the records")
    tls_ca_file: str | None = Field(None, description="CA bundle for the API's TLS")
    timeout: Duration = Field(5.0, gt=0, description="timeout of one API call")
    weighted: bool = Field(
        False,
        description="answer with a LUA record (pickwrandom) weighted by each site's weight, "
        "so a returning site gets its step's share, instead of plain A/AAAA RRsets; the "
        "server needs enable-lua-records (or the zone's ENABLE-LUA-RECORDS metadata)",
    )


class Route53Actuator(_Actuator):
    type: Literal["route53"]
    hosted_zone_id: str = Field(description="hosted zone of the name")
    name: FQDN = Field(description="the global name")
    record_type: Literal["A", "AAAA", "CNAME"] = Field("A", description="type of the records")
    ttl: int = Field(30, ge=0, description="TTL of the records")
    region: str = Field("us-east-1", description="AWS region of the API")
    endpoint_url: HttpURL | None = Field(None, description="API endpoint for test servers")
    access_key_id: SecretStr | None = Field(None, description="default: AWS credential chain")
    secret_access_key: SecretStr | None = Field(None, description="with access_key_id")

    @model_validator(mode="after")
    def _keys_together(self) -> Route53Actuator:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        return self


class KubernetesActuator(_Actuator):
    type: Literal["kubernetes"]
    kubeconfig: str | None = Field(None, description="kubeconfig file (default: in-cluster)")
    timeout: Duration = Field(300.0, gt=0, description="longest wait for availableReplicas")


class CommandActuator(_Actuator):
    type: Literal["command"]


class WebhookActuator(_Actuator):
    type: Literal["webhook"]
    url: HttpURL = Field(description="where events are POSTed")
    token: SecretStr | None = Field(None, description="bearer token")
    hmac_secret: SecretStr | None = Field(
        None, description="signs the body: X-Trafficd-Signature: sha256=..."
    )
    format: Literal["json", "alertmanager"] = Field("json", description="body format")
    tls_ca_file: str | None = Field(None, description="CA bundle for the webhook's TLS")
    timeout: Duration = Field(5.0, gt=0, description="timeout of one POST")


# The one registry of actuator types; the runtime maps the same names to
# implementations, and `Actuator` below must list exactly these classes.
ACTUATOR_TYPES: dict[str, type[_Actuator]] = {
    "rfc2136": RFC2136Actuator,
    "haproxy": HAProxyActuator,
    "powerdns": PowerDNSActuator,
    "route53": Route53Actuator,
    "kubernetes": KubernetesActuator,
    "command": CommandActuator,
    "webhook": WebhookActuator,
}

TRAFFIC_ACTUATORS = frozenset({"rfc2136", "haproxy", "powerdns", "route53"})
INSTANCE_ACTUATORS = frozenset({"kubernetes", "command"})

Actuator = Annotated[
    RFC2136Actuator
    | HAProxyActuator
    | PowerDNSActuator
    | Route53Actuator
    | KubernetesActuator
    | CommandActuator
    | WebhookActuator,
    Field(discriminator="type"),
]


# --- optional sections --------------------------------------------------------


class APIToken(_Model):
    name: Name = Field(description="who, in the audit log")
    role: Literal["read", "admin"] = Field(description="read or admin")
    token: SecretStr | None = Field(None, description="the bearer token")
    subject: str | None = Field(
        None,
        description="with tls_client_ca_file: a client certificate subject, as "
        "`openssl x509 -noout -subject -nameopt RFC2253` prints it (CN=ops,O=Example), "
        "that authenticates as this name when the request carries no token",
    )

    @model_validator(mode="after")
    def _token_or_subject(self) -> APIToken:
        if self.token is None and self.subject is None:
            raise ValueError("token: required (or a client certificate subject)")
        return self


class APILimits(_Model):
    max_connections: int = Field(
        512, ge=1, description="open connections per listener; more are closed at once"
    )
    max_connections_per_peer: int = Field(
        64, ge=1, description="open connections from one peer address, per listener"
    )
    header_timeout: Duration = Field(
        10.0,
        gt=0,
        description="longest time for a TLS handshake, a request's head or its body; "
        "idle keep-alive connections close after it too",
    )
    auth_failure_burst: int = Field(
        10, ge=1, description="failed authentications a peer may make before answers slow"
    )
    auth_failure_rate: float = Field(
        1.0, gt=0, description="failed authentications per second a peer regains"
    )
    auth_failure_max_delay: Duration = Field(
        5.0, ge=0, description="longest delay of one failed authentication's answer"
    )


class Replication(_Model):
    dsn: SecretStr = Field(description="PostgreSQL DSN of Quay's database")
    password: SecretStr | None = Field(None, description="the database password")
    default_locations: list[str] | None = Field(
        None,
        description="where every blob belongs (default: Quay's "
        "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS, else all)",
    )
    interval: Duration = Field(60.0, gt=0, description="time between reads")
    statement_timeout: Duration = Field(5.0, gt=0, description="timeout of one query")
    confirm_interval: Duration = Field(
        300.0,
        gt=0,
        description="time between counts that confirm the figures while rows change "
        "(one pass over three of Quay's tables: about half a full re-scan; rows deleted "
        "or updated in PostgreSQL's counters start one sooner)",
    )
    rescan_interval: Duration = Field(
        3600.0,
        gt=0,
        description="longest time between full re-scans (a count that finds rows "
        "deleted or changed starts one sooner)",
    )
    rescan_timeout: Duration = Field(
        60.0, gt=0, description="timeout of one page of the background re-scan"
    )
    rescan_page: int = Field(200_000, ge=1, description="blob ids read by one page of the re-scan")
    restore_sample: int = Field(
        20,
        ge=0,
        le=1000,
        description="blobs placed at a storage-drained site's location that must be "
        "found there (HEAD) before the site is restored; 0 turns the check off",
    )

    @model_validator(mode="after")
    def _postgres(self) -> Replication:
        if not self.dsn.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("dsn: must start with postgresql://")
        return self


class Coordination(_Model):
    backend: Literal["none", "redis", "etcd"] = Field("none", description="shared store")
    urls: list[str] = Field(default_factory=list, description="the store's endpoints")
    lease: Duration = Field(10.0, gt=0, description="leader lease")
    key_prefix: str = Field("trafficd/", description="prefix of every key")

    @model_validator(mode="after")
    def _urls(self) -> Coordination:
        schemes = {"redis": ("redis://", "rediss://"), "etcd": ("http://", "https://")}
        if self.backend == "none":
            return self
        if not self.urls:
            raise ValueError(f"urls: backend {self.backend} needs at least one URL")
        for url in self.urls:
            if not url.startswith(schemes[self.backend]):
                want = " or ".join(schemes[self.backend])
                raise ValueError(f"urls: {url!r} is not an {self.backend} URL ({want})")
        return self


class RegistryProbe(_Model):
    repository: str = Field(description="repository pulled through each site")
    reference: str = Field("latest", description="tag or digest")
    username: SecretStr | None = Field(None, description="robot account name")
    password: SecretStr | None = Field(None, description="robot token")
    blob_bytes: int = Field(65536, gt=0, description="bytes of the smallest layer to read")
    timeout: Duration | None = Field(
        None, gt=0, description="bound on one whole pull (default: probes.timeout)"
    )
    push: bool = Field(
        False,
        description="also push a canary blob and manifest to push_repository, then "
        "delete the tag (the robot needs write and delete there)",
    )
    push_repository: str = Field(
        "trafficd/canary-push", description="where push: true writes its canary"
    )


# --- the whole file ------------------------------------------------------------


class Config(_Model):
    vantage: Name = Field(description="this observer's name, a label on every observation")
    vantages: list[Name] | None = Field(
        None, description="every observer expected (default: [vantage])"
    )
    listen: HostPort = Field("127.0.0.1:9780", description="full API")
    metrics_listen: HostPort | None = Field(
        None, description="/metrics, /healthz, /readyz and verdicts only"
    )
    state_dir: str = Field("/var/lib/trafficd", description="overrides, states, audit log")
    api_token_file: str | None = Field(None, description="file holding the admin token")
    api_tokens: list[APIToken] = Field(default_factory=list, description="named tokens")
    tls_cert_file: str | None = Field(
        None, description="PEM certificate (chain) served on listen: the API over HTTPS"
    )
    tls_key_file: str | None = Field(
        None, description="PEM private key of tls_cert_file; not readable by others"
    )
    tls_client_ca_file: str | None = Field(
        None,
        description="CA bundle that client certificates on listen must chain to "
        "(mutual TLS: a client without one is refused at the handshake)",
    )
    metrics_tls_cert_file: str | None = Field(
        None, description="PEM certificate (chain) served on metrics_listen"
    )
    metrics_tls_key_file: str | None = Field(
        None, description="PEM private key of metrics_tls_cert_file; not readable by others"
    )
    api_limits: APILimits = Field(
        default_factory=APILimits, description="bounds that keep the API up under abuse"
    )
    quay_config: str | None = Field(
        None, description="Quay's config.yaml to import storage and hostname from"
    )
    storage: dict[str, StorageLocation] = Field(
        default_factory=dict, description="LOCATION: [Driver, {params}], as in Quay"
    )
    sites: dict[Name, Site] = Field(min_length=1, description="the sites, by name")
    probes: Probes = Field(default_factory=Probes, description="probe timing and TLS")
    policy: Policy = Field(default_factory=Policy, description="decision rules")
    actuators: list[Actuator] = Field(default_factory=list, description="what follows decisions")
    replication: Replication | None = Field(None, description="Quay database view")
    coordination: Coordination = Field(
        default_factory=Coordination, description="several instances, one decision"
    )
    registry_probe: RegistryProbe | None = Field(None, description="synthetic pulls")

    @property
    def all_vantages(self) -> list[str]:
        return list(self.vantages) if self.vantages else [self.vantage]

    @property
    def quorum_size(self) -> int:
        if isinstance(self.policy.quorum, int):
            return self.policy.quorum
        return len(self.all_vantages) // 2 + 1

    def storage_locations_of(self, site: str) -> list[str]:
        return list(self.sites[site].storage or [])
