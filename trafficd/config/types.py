"""Value types shared by the configuration model: durations, addresses, names.

Each is an `Annotated` type whose validator gives a message written for an
operator; `model` and `storage` build on them.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """`"1h30m"` -> 5400.0 seconds. Bare numbers are refused: `30` could be anything."""
    if not isinstance(value, str):
        raise ValueError("a duration is a string such as 500ms, 2s, 5m or 1h")
    text = value.strip()
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {value!r}: use a number and a unit: ms, s, m, h, d")
    return total


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]

_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")


def check_name(value: str) -> str:
    """Names become metric label values, URL path segments and DNS set identifiers."""
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"invalid name {value!r}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return value


Name = Annotated[str, AfterValidator(check_name)]


def split_host_port(value: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port)."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"invalid address {value!r}: expected [IPv6]:PORT")
    else:
        host, sep, port = value.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"invalid address {value!r}: expected HOST:PORT")
    if not host:
        raise ValueError(f"invalid address {value!r}: the host is empty")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid address {value!r}: the port must be 1-65535")
    return host, int(port)


def check_host_port(value: str) -> str:
    split_host_port(value)
    return value


HostPort = Annotated[str, AfterValidator(check_host_port)]


def check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"invalid IP address {value!r}") from None


IPAddress = Annotated[str, AfterValidator(check_ip)]

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def check_fqdn(value: str) -> str:
    """An absolute DNS name (`quay.example.com.`); the trailing dot is required."""
    if not value.endswith("."):
        raise ValueError(f"{value!r} must be an absolute name ending with '.'")
    labels = value[:-1].split(".")
    if value != "." and (len(value) > 254 or not all(_LABEL.fullmatch(x) for x in labels)):
        raise ValueError(f"invalid DNS name {value!r}")
    return value.lower()


FQDN = Annotated[str, AfterValidator(check_fqdn)]


def check_http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s]*)?", value):
        raise ValueError(f"invalid URL {value!r}: expected http(s)://HOST[:PORT][/PATH]")
    return value


HttpURL = Annotated[str, AfterValidator(check_http_url)]
