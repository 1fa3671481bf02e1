"""The API's client commands (`status`, `drain`, ..., `events`) and `run`'s logging setup.

The outermost layer beside cli.py: one blocking HTTP request per command,
with the standard library's urllib (a command line sends one request; an
event loop and a session would add nothing). The daemon is found with
`--api URL` or from `-c FILE`'s `listen` (https when the config gives
`listen` a certificate); the token comes from `--token-file`,
`TRAFFICD_TOKEN`, or with `-c` the config's `api_token_file`. An https API's
certificate is always verified, against the system's trust store or
`--ca-file`; `--cert-file`/`--key-file` present a client certificate (mutual
TLS). There is no way to skip the verification.

Exit codes scripts can use: 0 done; 1 the daemon answered with an error
(bad input, unknown site); 2 invalid configuration or arguments; 4 the
daemon is unreachable; 5 the token is missing, unknown or may not do this;
6 refused by a safety rule (409).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from trafficd.config.model import Config
from trafficd.config.secrets import Redactor
from trafficd.config.source import read

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_UNREACHABLE, EXIT_AUTH, EXIT_REFUSED = 0, 1, 2, 4, 5, 6


class ClientError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _client_settings(config_path: str) -> tuple[str, str | None, bool]:
    """`listen`, `api_token_file` and whether `listen` has TLS, from the daemon's
    configuration, read without resolving its secrets: a client needs neither the S3
    keys nor the TSIG secret to find the API."""
    source, problems = read(Path(config_path))
    data = source.data if isinstance(source.data, dict) else {}
    listen = data.get("listen", Config.model_fields["listen"].default)
    token_file = data.get("api_token_file")
    tls = data.get("tls_cert_file") is not None
    if not isinstance(listen, str) or ":" not in listen:
        problems.append(source.problem(("listen",), "HOST:PORT expected"))
    if token_file is not None and not isinstance(token_file, str):
        problems.append(source.problem(("api_token_file",), "a path expected"))
    if problems:
        raise ClientError(EXIT_INVALID, "\n".join(str(p) for p in problems))
    return str(listen), token_file, tls


def _header_safe(token: str, where: str) -> str:
    """A token as an Authorization header can carry it (visible ASCII): else
    http.client would refuse the header with an error that quotes it, token and all."""
    if any(not "!" <= c <= "~" for c in token):
        raise ClientError(
            EXIT_INVALID,
            f"{where}: the token has spaces, line breaks or non-ASCII characters "
            "(one line of visible ASCII expected)",
        )
    return token


def locate(api: str | None, config_path: str | None, token_file: str | None) -> tuple[str, str]:
    """The API's base URL and the bearer token."""
    token = None
    if token_file:
        try:
            token = _header_safe(Path(token_file).read_text().strip(), token_file)
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ClientError(EXIT_INVALID, f"{token_file}: {why}") from None
    elif os.environ.get("TRAFFICD_TOKEN"):
        token = _header_safe(os.environ["TRAFFICD_TOKEN"].strip(), "TRAFFICD_TOKEN")
    if api is None or token is None:
        if config_path is None:
            if api is None:
                raise ClientError(EXIT_INVALID, "say where the daemon is: --api URL or -c FILE")
        else:
            listen, token_file_, tls = _client_settings(config_path)
            if api is None:
                host, _, port = listen.rpartition(":")
                if host in ("0.0.0.0", "::", "[::]"):  # noqa: S104 - reading, not binding
                    host = "127.0.0.1"
                api = f"{'https' if tls else 'http'}://{host}:{port}"
            if token is None and token_file_:
                path = Path(token_file_)
                if not path.is_absolute():
                    path = Path(config_path).parent / path
                try:
                    token = _header_safe(path.read_text().strip(), str(path))
                except (OSError, UnicodeDecodeError) as exc:
                    why = getattr(exc, "strerror", None) or "not UTF-8 text"
                    raise ClientError(EXIT_INVALID, f"{path}: {why}") from None
    assert api is not None
    if not api.startswith(("http://", "https://")):
        raise ClientError(EXIT_INVALID, f"--api {api}: an http:// or https:// URL expected")
    return api.rstrip("/"), token or ""


def tls_context(
    base: str, ca_file: str | None, cert_file: str | None, key_file: str | None
) -> ssl.SSLContext | None:
    """The verifying TLS context of an https API (None for http). TLS options given for
    an http API are an error: the operator asked for a protection the URL would not give."""
    if not base.startswith("https://"):
        given = [f for f, v in (("--ca-file", ca_file), ("--cert-file", cert_file)) if v]
        if given or key_file:
            flags = ", ".join(given or ["--key-file"])
            raise ClientError(EXIT_INVALID, f"{flags}: the API {base} is not https://")
        return None
    if (cert_file is None) != (key_file is None):
        raise ClientError(EXIT_INVALID, "--cert-file and --key-file go together")
    try:
        # Verifies the chain and the host name; TLS 1.2 or newer, as the daemon serves.
        context = ssl.create_default_context(cafile=ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert_file is not None:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        what = f"{ca_file or ''} {cert_file or ''}".strip()
        why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise ClientError(EXIT_INVALID, f"{what}: cannot load: {why}") from None
    return context


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The API never redirects: a redirect followed would take the token elsewhere,
    to an http:// URL too (TLS dropped without a word). It is answered as an error."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def call(
    base: str,
    token: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    context: ssl.SSLContext | None = None,
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the operator's own API URL
        base + path, data=data, method=method
    )
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        opener = urllib.request.build_opener(
            _NoRedirect, urllib.request.HTTPSHandler(context=context)
        )
        with opener.open(request, timeout=10) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            exc.close()  # its connection: the redirect's body is not read
            raise ClientError(
                EXIT_ERROR,
                f"HTTP {exc.code}: {base} answers with a redirect, not followed "
                "(the daemon's API never redirects: is --api the daemon?)",
            ) from None
        try:
            payload = json.loads(exc.read())
            message = payload.get("error", exc.reason)
        except (ValueError, AttributeError):
            message = str(exc.reason)
        code = {401: EXIT_AUTH, 403: EXIT_AUTH, 409: EXIT_REFUSED}.get(exc.code, EXIT_ERROR)
        raise ClientError(code, f"HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        # urllib wraps what fails while connecting; a TLS alert read later comes bare.
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise ClientError(
                EXIT_UNREACHABLE,
                f"the daemon at {base} has a certificate this client does not trust: "
                f"{reason.verify_message}; give its CA with --ca-file",
            ) from None
        # With TLS 1.3 a refused client certificate shows after the handshake: an alert,
        # or the connection closed before the answer.
        hint = ""
        if base.startswith("https://") and isinstance(reason, ssl.SSLError | ConnectionError):
            hint = " (does it want a client certificate: --cert-file and --key-file?)"
        if isinstance(reason, ssl.SSLError):
            raise ClientError(
                EXIT_UNREACHABLE,
                f"TLS with the daemon at {base} failed: {reason.reason or reason}{hint}",
            ) from None
        raise ClientError(
            EXIT_UNREACHABLE, f"cannot reach the daemon at {base}: {reason}{hint}"
        ) from None


def _age(since: float | None) -> str:
    if since is None:
        return "-"
    seconds = max(0, int(time.time() - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def render_coordination(view: dict[str, Any]) -> str:
    """With several instances: who leads, and whether each vantage's view is fresh."""
    if not view or view.get("backend") in (None, "none"):
        return ""
    state = "up" if view.get("up") else f"DOWN ({view.get('error') or 'no answer'})"
    lines = [
        f"coordination: {view['backend']} {state}; leader: {view.get('leader') or 'none'}"
        f" (token {view.get('token')}); this instance: {view.get('self')}"
    ]
    for name, v in sorted((view.get("vantages") or {}).items()):
        age = "never" if v.get("age") is None else f"{v['age']:.1f}s ago"
        lines.append(f"  vantage {name}: {'fresh' if v.get('fresh') else 'STALE'} ({age})")
    return "\n".join(lines)


def render_status(sites: list[dict[str, Any]]) -> str:
    rows = [("SITE", "STATE", "CAUSE", "WEIGHT", "STEP", "SINCE", "OVERRIDE", "HEALTH", "REASONS")]
    for s in sites:
        health = []
        for vantage, probes in sorted(s.get("health", {}).items()):
            parts = []
            for probe, h in sorted(probes.items()):
                mark = {True: "ok", False: "FAIL", None: "?"}[h.get("ok")]
                parts.append(f"{probe}={mark}" + (f"({h['reason']})" if h.get("reason") else ""))
            health.append(f"{vantage}: {' '.join(parts)}")
        o = s.get("override")
        rows.append(
            (
                s["name"],
                s["state"],
                s.get("cause") or "-",
                str(s.get("weight", 0)),
                # While the site returns in steps: which step, and its share of the weight.
                f"{s['return_step']} ({s.get('return_percent')}%)" if s.get("return_step") else "-",
                _age(s.get("since")),
                f"{o['kind']} by {o['who']}: {o['reason']}" if o else "-",
                "; ".join(health) or "-",
                "; ".join(s.get("reasons", [])) or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    table = [
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1]
        for r in rows
    ]
    # Below the table: what the actuators could not make true, once per target.
    lagging = dict.fromkeys(t for s in sites for t in s.get("out_of_sync") or [])
    if lagging:
        table.append("out of sync:")
        table += [f"  {t}" for t in lagging]
    for s in sites:
        if s.get("shutdown_blocked"):
            table.append(
                f"{s['name']}: instances kept up, traffic not confirmed off: "
                + "; ".join(s["shutdown_blocked"])
            )
    return "\n".join(table)


def render_event(e: dict[str, Any]) -> str:
    kind = e.get("kind", "?")
    head = f"{e.get('time', '?')}  {kind:<11}"
    reasons = "; ".join(e.get("reasons", []))
    if kind == "transition":
        return f"{head} {e.get('site')}: {e.get('from')} -> {e.get('to')}  {reasons}"
    if kind == "refused":
        return (
            f"{head} {e.get('site')}: refused by {e.get('rule')}  {'; '.join(e.get('reasons', []))}"
        )
    if kind == "manual":
        site = f" {e['site']}" if e.get("site") else ""
        return f"{head} {e.get('action')}{site} by {e.get('who')}: {e.get('reason') or '-'}"
    if kind == "actuation":
        what = "; ".join(e.get("applied", [])) or "-"
        error = f"  ERROR {e['error']}" if e.get("error") else ""
        where = f" {e['target']}" if e.get("target") else ""
        return f"{head} {e.get('actuator')}{where}: {what}{error}"
    if kind == "shutdown_blocked":
        if e.get("blocked"):
            return f"{head} {e.get('site')}: instances kept up: {'; '.join(e.get('holders', []))}"
        return f"{head} {e.get('site')}: traffic confirmed off; unblocked"
    if kind == "observation":
        target = e.get("site") or e.get("location")
        ok = {True: "ok", False: "FAIL", None: "unknown"}[e.get("ok")]
        reason = f" ({e['reason']})" if e.get("reason") else ""
        return f"{head} {e.get('vantage')} {e.get('probe')} {target}: {ok}{reason}"
    return f"{head} " + json.dumps({k: v for k, v in e.items() if k not in ("time", "t", "kind")})


# --- logging for `trafficd run` ----------------------------------------------------------


class JSONFormatter(logging.Formatter):
    """One JSON object per line; a dozen lines do not justify another dependency."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


class RedactingFilter(logging.Filter):
    """Removes every configured secret value from each record before it is written."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redactor(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def setup_logging(fmt: str, level: str, redactor: Redactor) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JSONFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "botocore", "aiobotocore", "urllib3", "azure"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
