"""The `trafficd` command line: the daemon, offline tools and the API's client commands.

The outermost layer: it parses arguments and calls into the configuration
layer, the daemon, the engine's simulator and the API client (client.py).
The `replication` commands read Quay's database directly (replication.py).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from trafficd import __version__
from trafficd.config import ConfigError, load, summary
from trafficd.config.model import Config, Replication
from trafficd.config.secrets import Redactor

# The engine, the simulator, the store and the API client are imported by the commands
# that use them: a one-shot command (`replication status`) starts on 40-80 ms less CPU
# without them (a fifth of its start-up).

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
    from trafficd.policy import engine_policy
    from trafficd.simulate import TimelineError, audit_records, read_timeline, render_text, simulate

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
    policy = engine_policy(config)
    replay = list(
        simulate(
            observations,
            policy,
            end=observations.end if observations.audit else None,
            carry_forward=observations.audit,
            events=observations.events,
        )
    )
    for obj in replay:
        print(json.dumps(obj) if args.json else render_text(obj))
    if args.report:
        from trafficd.report import Layout, build_report
        from trafficd.report.page import render_html

        report = build_report(
            Layout.from_config(config),
            [audit_records(observations, replay)],
            names=[f"{args.timeline} replayed with {args.config}"],
            end=max(observations.end, observations[-1].t) if observations else None,
        )
        try:
            _write(args.report, render_html(report, "trafficd simulate: replayed timeline"))
        except OSError as exc:
            print(f"{args.report}: cannot write: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_ERROR
    return EXIT_OK


def _write(path: str, text: str) -> None:
    """`-` is standard output; a file is written whole or not at all."""
    if path == "-":
        sys.stdout.write(text)
        return
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)


def _report(args: argparse.Namespace) -> int:
    """`trafficd report`: the audit log read directly (no daemon needed), drawn per site."""
    from trafficd.config.types import parse_duration
    from trafficd.report import build_report, read_layout
    from trafficd.report.layout import ConfigError as LayoutError
    from trafficd.report.markdown import render_markdown
    from trafficd.report.page import render_html
    from trafficd.store import EVENTS_FILE, read_events

    try:
        layout = read_layout(args.config)
    except LayoutError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_INVALID
    since = None
    if args.since:
        try:
            since = time.time() - parse_duration(args.since)
        except ValueError as exc:
            print(f"trafficd report: --since: {exc}", file=sys.stderr)
            return EXIT_INVALID
    unknown = [s for s in args.site or [] if s not in layout.sites]
    if unknown:
        print(
            f"trafficd report: unknown site {unknown[0]!r} (sites: {', '.join(layout.sites)})",
            file=sys.stderr,
        )
        return EXIT_INVALID
    sources: list[list[dict[str, Any]]] = []
    names: list[str] = []
    try:
        if args.events:
            for name in args.events:
                with open(name, encoding="utf-8") as f:
                    sources.append(list(_records(f)))
                names.append(name)
        else:
            assert layout.state_dir is not None
            state_dir = Path(layout.state_dir)
            if not (state_dir / EVENTS_FILE).exists():
                print(
                    f"trafficd report: {state_dir / EVENTS_FILE}: no audit log (state_dir of "
                    f"{args.config}); --events FILE reads a copy",
                    file=sys.stderr,
                )
                return EXIT_INVALID
            sources.append(list(read_events(state_dir)))
            names.append(str(state_dir / EVENTS_FILE))
    except (OSError, UnicodeDecodeError) as exc:
        print(f"trafficd report: cannot read: {exc}", file=sys.stderr)
        return EXIT_INVALID
    report = build_report(layout, sources, since=since, sites=args.site, names=names)
    render = render_markdown if args.format == "markdown" else render_html
    try:
        _write(args.output, render(report))
    except OSError as exc:
        print(f"{args.output}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _records(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Audit records of a copied log or of `trafficd events --json`; other lines skipped."""
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "kind" in record:
            yield record


def _run(args: argparse.Namespace) -> int:
    from trafficd import client
    from trafficd.daemon import Daemon
    from trafficd.store import StateFileError

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
    except StateFileError as exc:
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
        from trafficd import client

        try:
            base, token = client.locate(args.api, args.config, args.token_file)
            tls = client.tls_context(base, args.ca_file, args.cert_file, args.key_file)

            def call(method: str, path: str, body: object = None) -> Any:
                return client.call(base, token, method, path, body, context=tls)

            if action == "status":
                answer = call("GET", "/api/v1/sites")
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
                events = call("GET", "/api/v1/events" + query)["events"]
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
            result = call("POST", path, body)
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
    work: Callable[[Config, Replication], Awaitable[T]],
) -> T | int:
    """Loads the config, runs `work(config, its replication settings)` against Quay's
    database; an exit status instead of a result when that cannot be done."""
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
        return await work(config, settings)

    try:
        return asyncio.run(run())
    except replication.ReplicationError as exc:
        print(f"trafficd replication {command}: {exc}", file=sys.stderr)
        if command == "check-removal":
            print(
                "trafficd replication check-removal: REFUSED: no answer without reading every "
                "blob (each page within replication.statement_timeout); nothing was judged safe",
                file=sys.stderr,
            )
        return EXIT_ERROR


def _process_age() -> float:
    """Seconds since this process started (Linux; 0 where it cannot be told)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError):
        return 0.0


def _state_dir(args: argparse.Namespace, config: Config) -> Path:
    """The daemon's state_dir, relative paths taken from the config file's directory."""
    path = Path(config.state_dir)
    return path if path.is_absolute() else Path(args.config).parent / path


def _replication_status(args: argparse.Namespace) -> int:
    from trafficd import replication

    # The interpreter's exit searches every object the imports made for cycles
    # (pydantic's schemas above all): 50-70 ms of a 0.6-0.9 s command, measured with
    # bench/replication.py's data. Frozen at exit, they are only freed. At exit, not
    # now: called in-process (tests), main() leaves the collector as it found it.
    atexit.register(gc.freeze)

    async def read(config: Config, settings: Replication) -> replication.Figures:
        from trafficd.replication.incremental import STATE_FILE, Tracker
        from trafficd.replication.scan import read_status, read_status_from_state

        defaults = replication.default_locations(config)
        configured = replication.configured_locations(config)
        # The daemon's figures, when it runs here: what changed since its last round
        # is read, not every blob. Else (or --full) every blob, in pages, in time.
        tracker = None if args.full else Tracker.load(_state_dir(args, config) / STATE_FILE)
        if tracker is not None:
            figures = await read_status_from_state(
                settings, tracker, defaults, configured, time.time()
            )
            if figures is not None:
                return figures
        # Within statement_timeout from the command's start (the interpreter's start-up
        # included), with half a second to stop the pages and print.
        budget = max(0.5, settings.statement_timeout - _process_age() - 0.5)
        return await read_status(settings, defaults, configured, time.time(), budget=budget)

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

    async def check(config: Config, settings: Replication) -> replication.Removal | None:
        from trafficd.replication.scan import check_removal_paged

        # Only a configured location's copy counts: one in a location of Quay's table
        # that the config does not name is no copy anyone can pull.
        configured = replication.configured_locations(config)
        return await check_removal_paged(settings, args.location, configured=configured)

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
    if removal.refused:
        print(
            f"{args.location}: REFUSED: Quay's database holds placements at {args.location} "
            "but none of a blob referenced by a manifest: trafficd cannot tell what removing "
            "it would lose, so it does not call it safe. Check Quay's manifestblob table "
            "and the read-only role's SELECT rights on it."
        )
        return EXIT_ERROR
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
    if removal.uncounted:
        print(
            "Placements at locations trafficd's config does not name were not counted as "
            f"copies ({', '.join(removal.uncounted)}): add one to storage if Quay serves it."
        )
    return EXIT_ERROR


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", metavar="URL", help="the daemon's API (default: from -c)")
    parser.add_argument("-c", "--config", metavar="FILE", help="find the API from this config")
    parser.add_argument("--token-file", metavar="FILE", help="bearer token (or TRAFFICD_TOKEN)")
    parser.add_argument(
        "--ca-file", metavar="FILE", help="CA bundle that verifies an https API (default: system)"
    )
    parser.add_argument("--cert-file", metavar="FILE", help="client certificate (mutual TLS)")
    parser.add_argument("--key-file", metavar="FILE", help="its private key")
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
    p.add_argument(
        "--report", metavar="FILE.html", help="also draw the replay as `trafficd report` does"
    )
    p.set_defaults(func=_simulate)

    p = sub.add_parser(
        "report", help="an incident as one picture: timeline and summary from the audit log"
    )
    p.add_argument(
        "-c", "--config", required=True, metavar="FILE", help="sites, actuators, state_dir"
    )
    p.add_argument("--since", metavar="DURATION", help="only the events of this last period")
    p.add_argument("--site", action="append", metavar="SITE", help="only this site (repeatable)")
    p.add_argument(
        "--events",
        action="append",
        metavar="FILE.jsonl",
        help="read this audit log (a copy, `trafficd events --json`, or one per instance; "
        "repeatable) instead of state_dir's",
    )
    p.add_argument("-o", "--output", default="-", metavar="FILE", help="default: stdout")
    p.add_argument("--format", choices=("html", "markdown"), default="html")
    p.set_defaults(func=_report)

    p = sub.add_parser("replication", help="replication backlog and blobs at risk")
    rsub = p.add_subparsers(dest="replication_command", required=True, metavar="SUBCOMMAND")
    rp = rsub.add_parser("status", help="backlog and blobs at risk per location")
    rp.add_argument("-c", "--config", required=True, metavar="FILE")
    rp.add_argument("--json", action="store_true")
    rp.add_argument(
        "--full",
        action="store_true",
        help="read every blob, not the daemon's saved figures (state_dir) plus what changed",
    )
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
