"""The `trafficd` command line: the daemon, offline tools and the API's client commands.

The outermost layer: it parses arguments and calls into the configuration
layer, the daemon, the engine's simulator and the API client (client.py).
The `replication` commands read Quay's database directly (replication.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from trafficd import __version__, client
from trafficd.config import ConfigError, load, summary
from trafficd.config.model import Config
from trafficd.config.secrets import Redactor
from trafficd.engine import EnginePolicy
from trafficd.simulate import TimelineError, read_timeline, render_text, simulate

T = TypeVar("T")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID = 2


def _load(args: argparse.Namespace, redactor: Redactor | None = None) -> Config | None:
    """The config of `-c`, or None after printing every problem (FILE:LINE: key: message)."""
    try:
        return load(args.config) if redactor is None else load(args.config, redactor=redactor)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_INVALID
    print(f"{args.config}: ok: {summary(config)}")
    return EXIT_OK


def _simulate(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return EXIT_INVALID
    try:
        with open(args.timeline, encoding="utf-8") as f:
            observations = read_timeline(f, args.timeline)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{args.timeline}: cannot read: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except TimelineError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    policy = EnginePolicy.from_config(config)
    replay = simulate(
        observations,
        policy,
        end=observations.end if observations.audit else None,
        carry_forward=observations.audit,
    )
    for obj in replay:
        print(json.dumps(obj) if args.json else render_text(obj))
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from trafficd.daemon import Daemon
    from trafficd.store import StoreError

    redactor = Redactor()
    config = _load(args, redactor)
    if config is None:
        return EXIT_INVALID
    client.setup_logging(args.log_format, args.log_level, redactor)

    async def main() -> None:
        daemon = Daemon(args.config, config, dry_run=args.dry_run)
        await daemon.run()

    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(main())
    except StoreError as exc:
        print(f"trafficd run: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"trafficd run: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return EXIT_OK


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (Linux): it cuts the daemon's CPU by about a tenth."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _client(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            base, token = client.locate(args.api, args.config, args.token_file)
            if action == "status":
                answer = client.call(base, token, "GET", "/api/v1/sites")
                sites = answer["sites"]
                if args.json:
                    print(json.dumps(sites, indent=1))
                else:
                    coordination = client.render_coordination(answer.get("coordination") or {})
                    print(
                        (coordination + "\n" if coordination else "") + client.render_status(sites)
                    )
                return EXIT_OK
            if action == "events":
                query = f"?since={args.since}" if args.since else ""
                events = client.call(base, token, "GET", "/api/v1/events" + query)["events"]
                for event in events:
                    print(json.dumps(event) if args.json else client.render_event(event))
                return EXIT_OK
            body: dict[str, object] = {}
            if getattr(args, "reason", None) is not None:
                body["reason"] = args.reason
            if getattr(args, "duration", None):
                body["for"] = args.duration
            for flag in ("force", "stop_instances", "hands_off"):
                if getattr(args, flag, False):
                    body[flag] = True
            site = getattr(args, "site", None)
            path = f"/api/v1/sites/{site}/{action}" if site else f"/api/v1/{action}"
            result = client.call(base, token, "POST", path, body)
            if args.json:
                print(json.dumps(result))
            else:
                state = f": {result['state']}" if result.get("state") else ""
                print(f"{action}{' ' + site if site else ''}: done{state}")
            return EXIT_OK
        except client.ClientError as exc:
            print(f"trafficd {action}: {exc}", file=sys.stderr)
            return exc.code

    return run


def _replication(
    args: argparse.Namespace,
    command: str,
    work: Callable[[Config, Any], Awaitable[T]],
) -> T | int:
    """Loads the config, runs `work(config, connection)` against Quay's database and
    closes it; an exit status instead of a result when that cannot be done."""
    from trafficd import replication

    config = _load(args)
    if config is None:
        return EXIT_INVALID
    settings = config.replication
    if settings is None:
        print(f"{args.config}: no replication section: nothing to read", file=sys.stderr)
        return EXIT_INVALID

    async def run() -> T:
        assert settings is not None
        conn = await replication.connect(settings)
        try:
            return await work(config, conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(run())
    except replication.ReplicationError as exc:
        print(f"trafficd replication {command}: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _replication_status(args: argparse.Namespace) -> int:
    from trafficd import replication

    async def read(config: Config, conn: Any) -> replication.Figures:
        defaults = replication.default_locations(config)
        return await replication.read_figures(conn, defaults, time.time())

    figures = _replication(args, "status", read)
    if isinstance(figures, int):
        return figures
    if args.json:
        print(json.dumps(figures.to_json(), sort_keys=True))
    else:
        print(replication.render_status(figures))
    return EXIT_OK


def _check_removal(args: argparse.Namespace) -> int:
    """Exit 0 only if every blob placed at LOCATION has a placement at a location that stays."""
    from trafficd import replication

    async def check(_: Config, conn: Any) -> replication.Removal | None:
        return await replication.check_removal(conn, args.location)

    removal = _replication(args, "check-removal", check)
    if isinstance(removal, int):
        return removal
    if removal is None:
        print(
            f"trafficd replication check-removal: {args.location}: no such location in "
            "Quay's database (imagestoragelocation)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    if removal.safe:
        print(
            f"{args.location}: safe to remove: all {removal.placed} blob(s) placed there "
            "also have a copy at a location that stays"
        )
        return EXIT_OK
    print(
        f"{args.location}: NOT safe to remove: {removal.lost_blobs} of {removal.placed} "
        f"blob(s) placed there ({removal.lost_bytes} bytes) have no copy elsewhere; "
        "run util.backfillreplication and wait for the backlog to drain. Examples:"
    )
    for digest in removal.examples:
        print(f"  {digest}")
    return EXIT_ERROR


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", metavar="URL", help="the daemon's API (default: from -c)")
    parser.add_argument("-c", "--config", metavar="FILE", help="find the API from this config")
    parser.add_argument("--token-file", metavar="FILE", help="bearer token (or TRAFFICD_TOKEN)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trafficd",
        description="Traffic controller for geo-replicated Quay: drains sites whose storage "
        "or instances fail, restores them when they recover.",
    )
    parser.add_argument("--version", action="version", version=f"trafficd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon in the foreground")
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.add_argument("--dry-run", action="store_true", help="plan and log changes, apply none")
    p.set_defaults(func=_run)

    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.set_defaults(func=_check_config)

    p = sub.add_parser("status", help="sites, states, causes and reasons")
    _client_options(p)
    p.set_defaults(func=_client("status"))

    p = sub.add_parser("drain", help="drain a site by hand")
    p.add_argument("site")
    p.add_argument("--reason", required=True)
    p.add_argument("--for", dest="duration", metavar="DURATION")
    p.add_argument("--force", action="store_true", help="even below min_active_sites")
    p.add_argument("--stop-instances", action="store_true")
    _client_options(p)
    p.set_defaults(func=_client("drain"))

    for name, text in (
        ("undrain", "hand a site back to automatic control"),
        ("release", "clear any override of a site"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("site")
        _client_options(p)
        p.set_defaults(func=_client(name))

    p = sub.add_parser("hold", help="pin a site active")
    p.add_argument("site")
    p.add_argument("--reason", required=True)
    p.add_argument("--for", dest="duration", metavar="DURATION")
    _client_options(p)
    p.set_defaults(func=_client("hold"))

    p = sub.add_parser("pause", help="freeze automatic changes")
    p.add_argument("--reason", required=True)
    p.add_argument("--hands-off", action="store_true", help="stop reconciling too")
    _client_options(p)
    p.set_defaults(func=_client("pause"))

    p = sub.add_parser("resume", help="unfreeze automatic changes")
    _client_options(p)
    p.set_defaults(func=_client("resume"))

    p = sub.add_parser("events", help="the audit log")
    p.add_argument("--since", metavar="DURATION")
    _client_options(p)
    p.set_defaults(func=_client("events"))

    p = sub.add_parser("simulate", help="replay recorded observations through the engine")
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.add_argument("--timeline", required=True, metavar="FILE.jsonl")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("replication", help="replication backlog and blobs at risk")
    rsub = p.add_subparsers(dest="replication_command", required=True, metavar="SUBCOMMAND")
    rp = rsub.add_parser("status", help="backlog and blobs at risk per location")
    rp.add_argument("-c", "--config", required=True, metavar="FILE")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=_replication_status)
    rp = rsub.add_parser("check-removal", help="exit 0 only if removing LOCATION loses no blob")
    rp.add_argument("location")
    rp.add_argument("-c", "--config", required=True, metavar="FILE")
    rp.set_defaults(func=_check_removal)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
