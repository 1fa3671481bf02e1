"""The daemon's HTTP listeners: `listen` (the API) and `metrics_listen`, with their TLS.

Part of the face, beside api.py (which builds the apps and bounds each
listener): daemon.py starts them on the runtime and stops them. SIGHUP
re-reads every certificate and key here: all load or none is taken, and a
bad one keeps the listeners on the ones they have (the reload is rejected).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web

from trafficd.api import Controller, ServerTLS, Token, build_apps, serve, server_context
from trafficd.config.loader import config_file
from trafficd.config.model import Config

log = logging.getLogger(__name__)

TLSFiles = tuple[Path, Path, Path | None]


def listener_tls(config: Config, config_dir: Path) -> dict[str, TLSFiles | None]:
    """Each listener's certificate, key and client CA (only `listen` asks for client
    certificates: kubelet probes and Prometheus scrape `metrics_listen`)."""
    out: dict[str, TLSFiles | None] = {"listen": None, "metrics_listen": None}
    if config.tls_cert_file and config.tls_key_file:
        ca = config.tls_client_ca_file
        out["listen"] = (
            config_file(config_dir, config.tls_cert_file),
            config_file(config_dir, config.tls_key_file),
            config_file(config_dir, ca) if ca else None,
        )
    if config.metrics_tls_cert_file and config.metrics_tls_key_file:
        out["metrics_listen"] = (
            config_file(config_dir, config.metrics_tls_cert_file),
            config_file(config_dir, config.metrics_tls_key_file),
            None,
        )
    return out


class Listeners:
    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.runners: list[web.AppRunner] = []
        self._tls: dict[str, ServerTLS] = {}  # listener ("listen", "metrics_listen") -> TLS

    async def start(
        self, ctl: Controller, tokens: Callable[[], Sequence[Token]], config: Config
    ) -> list[str]:
        """Both listeners the configuration names, serving `ctl`; their URLs."""
        main, public = build_apps(
            ctl, tokens, public_separate=config.metrics_listen is not None, limits=config.api_limits
        )
        files = listener_tls(config, self.config_dir)
        bound = []
        for name, app, address in (
            ("listen", main, config.listen),
            ("metrics_listen", public, config.metrics_listen),
        ):
            if app is None or address is None:
                continue
            wanted = files[name]
            tls = ServerTLS(*wanted) if wanted is not None else None
            if tls is not None:
                self._tls[name] = tls
            runner = await serve(app, address, tls=tls, limits=config.api_limits)
            self.runners.append(runner)
            bound.append(f"{'https' if tls else 'http'}://{address}")
        return bound

    def load_tls(self, new: Config) -> list[tuple[ServerTLS, ssl.SSLContext]] | None:
        """Every certificate and key of `new` loaded, not yet in use (`use_tls`), or None:
        the reload fails (one that cannot load keeps every certificate in use)."""
        files = listener_tls(new, self.config_dir)
        loaded: list[tuple[ServerTLS, ssl.SSLContext]] = []
        for name, tls in self._tls.items():
            wanted = files[name]
            if wanted is None or (wanted[2] is not None) != tls.mutual:
                log.warning(
                    "reload: turning TLS or client certificates on or off on %s takes a restart",
                    name,
                )
                continue
            try:
                context = server_context(*wanted)
            except (OSError, ssl.SSLError) as exc:
                log.error(
                    "reload rejected: %s: cannot load %s with %s: %s; keeping the "
                    "certificate in use",
                    name,
                    wanted[0],
                    wanted[1],
                    getattr(exc, "strerror", None) or exc,
                )
                return None
            loaded.append((tls, context))
        for name in files:
            if files[name] is not None and name not in self._tls and self.runners:
                log.warning("reload: turning TLS on on %s takes a restart", name)
        return loaded

    @staticmethod
    def use_tls(loaded: list[tuple[ServerTLS, ssl.SSLContext]]) -> None:
        """The certificates `load_tls` loaded, in use once the reload is taken."""
        for tls, context in loaded:
            tls.current = context  # the next handshake on that listener takes it

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
        self.runners = []
