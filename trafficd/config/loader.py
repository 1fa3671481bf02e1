"""Loading a configuration file: parse, resolve secrets, import Quay, validate, cross-check.

The entry point of the configuration layer, used by `trafficd check-config`
and (later) by the daemon's start and reload. `load(path)` either returns a
`Config` or raises `ConfigError` holding every problem found, each as
`FILE:LINE: key.path: message`. Nothing here has side effects beyond reading
the files, so a failed reload can keep the old configuration.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from trafficd.config.model import ACTUATOR_TYPES, Config
from trafficd.config.secrets import Redactor, resolve
from trafficd.config.source import ConfigError, Path_, Problem, Source, read
from trafficd.config.storage import DRIVERS, StorageLocation


@dataclass
class _QuayImport:
    storage: dict[str, tuple[Source, Path_]] = field(default_factory=dict)
    preference: list[str] | None = None
    default_locations: list[str] | None = None
    hostname: str | None = None
    scheme: str = "https"


def _message(error: Mapping[str, Any]) -> str:
    kind, msg = error["type"], str(error["msg"])
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "union_tag_invalid":
        known = ", ".join(ACTUATOR_TYPES)
        return f"unknown actuator type {error['ctx']['tag']!r} (known: {known})"
    if kind == "too_short":
        return f"needs at least {error['ctx']['min_length']} item(s)"
    if kind == "union_tag_not_found":
        return f"required, one of {', '.join(ACTUATOR_TYPES)}"
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return msg[:1].lower() + msg[1:]


_KEYED = re.compile(r"([a-z][a-z0-9_]*): (.+)", re.DOTALL)


def _data_path(data: Any, loc: tuple[int | str, ...]) -> Path_:
    """Map pydantic's `loc` onto the written data, dropping union tags and `[key]`."""
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and isinstance(part, str) and node.get("type") == part:
            continue  # the union's tag, not a key
        in_dict = isinstance(node, dict) and part in node
        if in_dict or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            node = node[part]
            path.append(part)
        elif last and isinstance(node, dict) and isinstance(part, str) and part != "[key]":
            path.append(part)  # a missing key
    return tuple(path)


def _validation_problems(
    exc: ValidationError, source: Source, base: Path_, data: Any
) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[tuple[Path_, str]] = set()
    for error in exc.errors(include_input=False, include_url=False):
        path = (*base, *_data_path(data, tuple(error["loc"])))
        message = _message(error)
        # A model-level rule about one key says so as "key: message".
        keyed = _KEYED.match(message) if error["type"] == "value_error" else None
        if keyed:
            path, message = (*path, keyed.group(1)), keyed.group(2)
        elif error["type"].startswith("union_tag_") and path[-1:] != ("type",):
            path = (*path, "type")
        if (path, message) not in seen:
            seen.add((path, message))
            problems.append(source.problem(path, message))
    return problems


def _import_quay(
    main: Source, path_value: Any, base_dir: Path
) -> tuple[_QuayImport, list[Problem]]:
    imported = _QuayImport()
    if not isinstance(path_value, str):
        return imported, [main.problem(("quay_config",), "must be a file path")]
    path = Path(path_value)
    if not path.is_absolute():
        path = base_dir / path
    quay, problems = read(path, display=str(path))
    if quay.data is None:
        if not path.is_file():  # unreadable: say so where quay_config is written
            why = problems[0].message.removeprefix("cannot read file: ")
            return imported, [main.problem(("quay_config",), f"cannot read {path_value}: {why}")]
        return imported, problems
    if not isinstance(quay.data, dict):
        return imported, [*problems, quay.problem((), "Quay's config.yaml must be a mapping")]
    storage = quay.data.get("DISTRIBUTED_STORAGE_CONFIG")
    if storage is None:
        problems.append(quay.problem((), "DISTRIBUTED_STORAGE_CONFIG: not found"))
    elif not isinstance(storage, dict):
        problems.append(quay.problem(("DISTRIBUTED_STORAGE_CONFIG",), "must be a mapping"))
    else:
        for name in storage:
            imported.storage[str(name)] = (quay, ("DISTRIBUTED_STORAGE_CONFIG", name))
    for key, attr in (
        ("DISTRIBUTED_STORAGE_PREFERENCE", "preference"),
        ("DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS", "default_locations"),
    ):
        value = quay.data.get(key)
        if value is None:
            continue
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            setattr(imported, attr, value)
        else:
            problems.append(quay.problem((key,), "must be a list of location names"))
    hostname = quay.data.get("SERVER_HOSTNAME")
    if isinstance(hostname, str) and hostname:
        imported.hostname = hostname
    scheme = quay.data.get("PREFERRED_URL_SCHEME")
    if scheme in ("http", "https"):
        imported.scheme = scheme
    return imported, problems


def _get(data: Any, path: Path_) -> Any:
    for part in path:
        data = data[part]
    return data


def _validate_location(
    name: str, source: Source, path: Path_, redactor: Redactor
) -> tuple[StorageLocation | None, list[Problem]]:
    entry = _get(source.data, path)
    if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], dict)):
        return None, [source.problem(path, "must be [DriverName, {parameters}]")]
    driver = entry[0]
    if not isinstance(driver, str) or driver not in DRIVERS:
        known = ", ".join(sorted(DRIVERS))
        message = f"unknown storage driver {driver!r} (known: {known})"
        return None, [source.problem((*path, 0), message)]
    try:
        params = DRIVERS[driver].model_validate(entry[1])
    except ValidationError as exc:
        return None, _validation_problems(exc, source, (*path, 1), entry[1])
    _remember_secrets(params, redactor)
    return StorageLocation(name=name, driver=driver, params=params, source=source.file), []


def _remember_secrets(model: BaseModel, redactor: Redactor) -> None:
    """Quay's config.yaml holds its keys inline; keep them out of messages too."""
    for value in model.__dict__.values():
        if isinstance(value, SecretStr):
            redactor.add(value.get_secret_value())
        elif isinstance(value, BaseModel):
            _remember_secrets(value, redactor)


def _cross_check(config: Config, source: Source, has_quay: _QuayImport | None) -> list[Problem]:
    problems: list[Problem] = []

    def problem(path: Path_, message: str) -> None:
        problems.append(source.problem(path, message))

    vantages = config.all_vantages
    if config.vantages is not None:
        if config.vantage not in config.vantages:
            problem(("vantages",), f"must include this instance's vantage {config.vantage!r}")
        if len(set(config.vantages)) != len(config.vantages):
            problem(("vantages",), "a vantage is listed twice")
    if isinstance(config.policy.quorum, int) and config.policy.quorum > len(vantages):
        problem(
            ("policy", "quorum"),
            f"quorum {config.policy.quorum} is more than the {len(vantages)} configured vantage(s)",
        )
    # (Only once the vantages and quorum are otherwise right: one message per mistake.)
    sound = config.vantage in vantages and config.quorum_size <= len(vantages)
    if not sound or config.coordination.backend != "none":
        pass
    elif len(vantages) > 1 and config.quorum_size > 1 and config.policy.quorum == "majority":
        problem(
            ("vantages",),
            f"{len(vantages)} vantages need coordination: without it this instance hears "
            f"only its own vantage {config.vantage!r}, so quorum {config.quorum_size} "
            "(majority) can never be reached",
        )
    elif config.quorum_size > 1:
        problem(
            ("policy", "quorum"),
            f"quorum {config.quorum_size} needs coordination: without it this instance "
            f"hears only its own vantage {config.vantage!r}, so the quorum can never be "
            "reached",
        )
    if config.policy.min_active_sites > len(config.sites):
        problem(
            ("policy", "min_active_sites"),
            f"{config.policy.min_active_sites} is more than the {len(config.sites)} site(s)",
        )
    if config.metrics_listen is not None and config.metrics_listen == config.listen:
        problem(("metrics_listen",), "must differ from listen")

    for name, site in config.sites.items():
        if site.url is None:
            problem(("sites", name, "url"), "required (no SERVER_HOSTNAME from quay_config)")
        if site.storage is None:
            problem(
                ("sites", name, "storage"),
                "required (no DISTRIBUTED_STORAGE_PREFERENCE from quay_config)",
            )
        elif not site.storage:
            problem(("sites", name, "storage"), "list at least one storage location")
        else:
            for i, loc in enumerate(site.storage):
                if loc not in config.storage and not _declared(source, has_quay, loc):
                    problem(("sites", name, "storage", i), f"unknown storage location {loc!r}")
            if len(set(site.storage)) != len(site.storage):
                problem(("sites", name, "storage"), "a location is listed twice")
        if site.kubernetes is not None and site.command is not None:
            problem(("sites", name), "set kubernetes or command, not both")

    servers: dict[tuple[str, str], str] = {}
    for name, site in config.sites.items():
        if site.haproxy is not None:
            key = (site.haproxy.backend, site.haproxy.server)
            if key in servers:
                problem(
                    ("sites", name, "haproxy"),
                    f"{key[0]}/{key[1]} is already the server of site {servers[key]!r}",
                )
            servers.setdefault(key, name)

    idents: dict[str, int] = {}
    for i, actuator in enumerate(config.actuators):
        if actuator.ident in idents:
            first = idents[actuator.ident]
            problem(
                ("actuators", i, "id"),
                f"duplicate actuator id {actuator.ident!r} (also actuators[{first}])",
            )
        idents.setdefault(actuator.ident, i)
        for name, site in config.sites.items():
            need = _site_requirement(actuator, site)
            if need:
                problem(("sites", name), f"actuator {actuator.ident!r} needs {need}")
    types = {a.type for a in config.actuators}
    for kind in ("kubernetes", "command"):
        users = [n for n, s in config.sites.items() if getattr(s, kind) is not None]
        for name in users:
            if kind not in types:
                problem(("sites", name, kind), f"no actuator of type {kind} uses this")
        if kind in types and not users:
            i = next(i for i, a in enumerate(config.actuators) if a.type == kind)
            problem(("actuators", i), f"no site has a {kind} section for this actuator")

    for loc in config.probes.storage_endpoints:
        if loc not in config.storage and not _declared(source, has_quay, loc):
            problem(("probes", "storage_endpoints", loc), f"unknown storage location {loc!r}")

    if config.replication is not None and config.replication.default_locations is not None:
        for i, loc in enumerate(config.replication.default_locations):
            if loc not in config.storage and not _declared(source, has_quay, loc):
                problem(
                    ("replication", "default_locations", i), f"unknown storage location {loc!r}"
                )

    names: dict[str, int] = {}
    tokens: dict[str, int] = {}
    subjects: dict[str, int] = {}
    for i, token in enumerate(config.api_tokens):
        if token.name == "admin":
            problem(("api_tokens", i, "name"), "'admin' is the name of api_token_file's token")
        elif token.name in names:
            problem(("api_tokens", i, "name"), f"duplicate token name {token.name!r}")
        names.setdefault(token.name, i)
        if token.token is not None:
            value = token.token.get_secret_value()
            if not value.strip():  # the client strips what it sends: "Bearer " alone
                problem(
                    ("api_tokens", i, "token"),
                    f'empty (a client sending "Bearer " alone would be {token.name})',
                )
            if value in tokens:
                problem(("api_tokens", i, "token"), f"same token as api_tokens[{tokens[value]}]")
            tokens.setdefault(value, i)
        if token.subject is not None:
            if config.tls_client_ca_file is None:
                problem(("api_tokens", i, "subject"), "needs tls_client_ca_file (mutual TLS)")
            if token.subject in subjects:
                problem(
                    ("api_tokens", i, "subject"),
                    f"same subject as api_tokens[{subjects[token.subject]}]",
                )
            subjects.setdefault(token.subject, i)
    probe = config.registry_probe
    if probe is not None and (probe.username is None) != (probe.password is None):
        problem(("registry_probe",), "username and password go together")
    return problems


# The TLS settings of each listener: (certificate key, private key key).
TLS_PAIRS = (("tls_cert_file", "tls_key_file"), ("metrics_tls_cert_file", "metrics_tls_key_file"))


def config_file(config_dir: Path, value: str) -> Path:
    """A file named in the configuration: a relative path is relative to the file."""
    path = Path(value)
    return path if path.is_absolute() else config_dir / path


class EncryptedKeyError(ssl.SSLError):
    """A private key that wants a passphrase."""

    def __str__(self) -> str:
        return str(self.args[0])


def _no_passphrase() -> bytes:
    raise EncryptedKeyError("encrypted: give it without a passphrase")


def load_key_pair(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    """`context.load_cert_chain` without OpenSSL's passphrase prompt: on a terminal it
    would wait for one (check-config, or the daemon's event loop on SIGHUP)."""
    context.load_cert_chain(cert, key, password=_no_passphrase)


def _tls_problems(config: Config, source: Source, base_dir: Path) -> list[Problem]:
    """The listeners' certificates, keys and client CA load as the daemon will load them,
    and no private key is readable by others (a key that leaked is a server anyone can be)."""
    problems: list[Problem] = []
    for cert_key, key_key in TLS_PAIRS:
        cert, key = getattr(config, cert_key), getattr(config, key_key)
        if (cert is None) != (key is None):
            missing = key_key if key is None else cert_key
            given = cert_key if key is None else key_key
            problems.append(source.problem((given,), f"needs {missing} too"))
            continue
        if cert is None:
            continue
        key_path = config_file(base_dir, key)
        try:
            mode = key_path.stat().st_mode
        except OSError as exc:
            problems.append(source.problem((key_key,), f"cannot read {key}: {exc.strerror}"))
            continue
        if mode & 0o007:
            problems.append(
                source.problem(
                    (key_key,),
                    f"{key} is readable by others (mode {mode & 0o777:04o}): chmod o-rwx it",
                )
            )
            continue
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            load_key_pair(context, config_file(base_dir, cert), key_path)
        except EncryptedKeyError as exc:
            problems.append(source.problem((key_key,), f"{key} is {exc}"))
        except (OSError, ssl.SSLError) as exc:
            why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
            problems.append(source.problem((cert_key,), f"cannot load {cert} with {key}: {why}"))
    if config.tls_client_ca_file is not None:
        if config.tls_cert_file is None:
            problems.append(source.problem(("tls_client_ca_file",), "needs tls_cert_file too"))
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            try:
                context.load_verify_locations(config_file(base_dir, config.tls_client_ca_file))
            except (OSError, ssl.SSLError) as exc:
                why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
                problems.append(
                    source.problem(
                        ("tls_client_ca_file",),
                        f"cannot load {config.tls_client_ca_file}: {why}",
                    )
                )
    return problems


def _declared(source: Source, quay: _QuayImport | None, location: str) -> bool:
    """A location declared but invalid is reported where it is declared, not again."""
    inline = source.data.get("storage") if isinstance(source.data, dict) else None
    return (isinstance(inline, dict) and location in inline) or (
        quay is not None and location in quay.storage
    )


def _site_requirement(actuator: Any, site: Any) -> str | None:
    if actuator.type in ("rfc2136", "powerdns") and not site.addresses:
        return "addresses"
    if actuator.type == "haproxy" and site.haproxy is None:
        return "haproxy: {backend, server}"
    if actuator.type == "route53":
        alias = site.route53 is not None and site.route53.alias is not None
        if actuator.record_type == "CNAME" and not alias:
            return "route53.alias (record_type CNAME)"
        family = 4 if actuator.record_type == "A" else 6
        if (
            actuator.record_type != "CNAME"
            and not alias
            and not any((":" in a) == (family == 6) for a in site.addresses)
        ):
            return f"an IPv{family} address in addresses, or route53.alias"
    return None


def load(
    path: str | Path,
    *,
    environ: Mapping[str, str] | None = None,
    redactor: Redactor | None = None,
) -> Config:
    """Load and validate `path`; raise `ConfigError` with every problem found."""
    redact = redactor if redactor is not None else Redactor()
    try:
        return _load(Path(path), os.environ if environ is None else environ, redact)
    except ConfigError as exc:
        raise ConfigError(_redacted(exc.problems, redact)) from None


def _redacted(problems: list[Problem], redact: Callable[[str], str]) -> list[Problem]:
    return [Problem(p.file, p.line, redact(p.path), redact(p.message)) for p in problems]


def _load(path: Path, environ: Mapping[str, str], redactor: Redactor) -> Config:
    source, problems = read(path)
    if source.data is None:
        raise ConfigError(problems)
    if not isinstance(source.data, dict):
        raise ConfigError([*problems, source.problem((), "the configuration must be a mapping")])
    base_dir = path.parent
    problems += resolve(source, redactor, base=base_dir, environ=environ)
    data: dict[str, Any] = dict(source.data)

    quay: _QuayImport | None = None
    if data.get("quay_config") is not None:
        quay, quay_problems = _import_quay(source, data["quay_config"], base_dir)
        problems += quay_problems

    # Storage: imported locations first, inline entries override them by name.
    declared: dict[str, tuple[Source, Path_]] = dict(quay.storage) if quay else {}
    inline = data.get("storage")
    if inline is not None and not isinstance(inline, dict):
        problems.append(source.problem(("storage",), "must be a mapping of locations"))
    elif inline:
        for name in inline:
            declared[str(name)] = (source, ("storage", name))
    storage: dict[str, StorageLocation] = {}
    for name, (where, where_path) in declared.items():
        location, loc_problems = _validate_location(name, where, where_path, redactor)
        problems += loc_problems
        if location is not None:
            storage[name] = location
    data["storage"] = storage

    if quay is not None:
        data["sites"] = _with_quay_defaults(data.get("sites"), quay)
        replication = data.get("replication")
        if (
            isinstance(replication, dict)
            and "default_locations" not in replication
            and quay.default_locations is not None
        ):
            data["replication"] = {**replication, "default_locations": quay.default_locations}

    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems + _validation_problems(exc, source, (), source.data)) from None
    problems += _cross_check(config, source, quay)
    problems += _tls_problems(config, source, base_dir)
    if problems:
        raise ConfigError(problems)
    return config


def _with_quay_defaults(sites: Any, quay: _QuayImport) -> Any:
    if not isinstance(sites, dict):
        return sites
    out: dict[Any, Any] = {}
    for name, site in sites.items():
        if isinstance(site, dict):
            site = dict(site)
            if "url" not in site and quay.hostname:
                site["url"] = f"{quay.scheme}://{quay.hostname}"
            if "storage" not in site and quay.preference is not None:
                site["storage"] = list(quay.preference)
        out[name] = site
    return out


def summary(config: Config) -> str:
    """The one line `check-config` prints for a valid file."""
    kinds = ", ".join(a.ident for a in config.actuators) or "none"
    return (
        f"{len(config.sites)} site(s) ({', '.join(config.sites)}), "
        f"{len(config.storage)} storage location(s) ({', '.join(config.storage) or 'none'}), "
        f"{len(config.actuators)} actuator(s) ({kinds})"
    )
