"""A simulated Quay site (demo, end-to-end test): health endpoints whose storage is real.

Run: python -m trafficd.demo.site --name eu --port P --s3 URL[,URL...] --bucket B[,B...]
     [--locations L[,L...]] [--preferred N] [--quay-version 3.17|3.18] [--aws-max-attempts N]
     [--debug-secret-file FILE] --shared DIR

Answers `/health/instance` and `/health/endtoend` as real Quay does
(`trafficd.demo.quay`: compact sorted JSON, Quay's headers, `503 SERVICE
UNAVAILABLE`, debug mode through the `_csrf_token` session cookie when
`--debug-secret-file` names the secret). `storage` is computed as Quay does it,
by writing `_verify` under the storage path of each preferred location's real S3
bucket (a moto server per site) and checking that it exists. The locations are
listed in preference order, the first `--preferred` of them preferred (default:
all). v3.17 checks the first preferred location only; v3.18 checks every
preferred location, then the others, and has no timeout of its own, so a hung
bucket hangs endtoend. The text names the first location that failed: a
preferred one turns `storage` false (`Preferred storage 'LOC' check failed: ...`),
another only adds a message (`Non-preferred storage 'LOC' unavailable: ...`);
LOC comes from `--locations`, else the bucket. boto's attempts are `--aws-max-attempts` (Quay's
`AWS_MAX_ATTEMPTS`; default 1: a failing bucket answers in tens of ms); 0 keeps
boto's default retries, under which a dead bucket takes 7-10 s, as on real Quay.
`database` and `redis` are shared by every site: they fail when the file
`DIR/database-down` or `DIR/redis-down` exists (`auth` stays true, as on real
Quay). Any other path answers 200 `site NAME` so HAProxy's frontend can be
tested with real requests; while the file `DIR/NAME-errors` holds a share (e.g.
`0.3`), that share of them answers 500 instead, evenly spread, as a site whose
bucket has just come back and still fails some pulls (the canary of a return).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import boto3
from aiohttp import web
from botocore.config import Config

from trafficd.demo.quay import (
    Sessions,
    database_refused,
    health_response,
    non_preferred_unavailable,
    preferred_failed,
    redis_refused,
)

# Where the simulated shared services would be: the failure texts name them.
DATABASE_PORT, REDIS_PORT = 5432, 6379


def boto_config(max_attempts: int) -> Config:
    """Quay's S3 driver: boto3 with long timeouts and no timeout of its own."""
    if max_attempts <= 0:  # boto's defaults: legacy retry mode, 5 attempts with back-off
        return Config(connect_timeout=60, read_timeout=60)
    return Config(
        connect_timeout=60,
        read_timeout=60,
        retries={"total_max_attempts": max_attempts, "mode": "legacy"},
    )


def build_app(args: argparse.Namespace) -> web.Application:
    urls = args.s3.split(",")
    buckets = args.bucket.split(",")
    locations = (args.locations or args.bucket).split(",")
    config = boto_config(args.aws_max_attempts)
    clients = [
        boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto accepts any key
            region_name="us-east-1",
            config=config,
        )
        for url in urls
    ]
    shared = Path(args.shared)
    secret = Path(args.debug_secret_file).read_text().strip() if args.debug_secret_file else None
    sessions = Sessions(secret)

    every = list(zip(clients, buckets, locations, strict=False))
    count = args.preferred or len(every)
    preferred, others = every[:count], every[count:]
    if args.quay_version == "3.17":  # the first preferred location only
        preferred, others = preferred[:1], []

    def verify(client: Any, bucket: str) -> str | None:
        try:
            client.put_object(
                Bucket=bucket, Key="datastorage/registry/_verify", Body=b"testing 123"
            )
            client.head_object(Bucket=bucket, Key="datastorage/registry/_verify")
        except Exception as exc:  # botocore's text, as Quay quotes it
            return str(exc)
        return None

    def storage_check() -> tuple[bool, str | None]:
        """`storage` and its text: the first preferred location that failed, else the first
        non-preferred one that did (a message: `storage` stays true)."""
        for client, bucket, location in preferred:
            error = verify(client, bucket)
            if error is not None:
                return False, preferred_failed(location, error)
        for client, bucket, location in others:
            error = verify(client, bucket)
            if error is not None:
                return True, non_preferred_unavailable(location, error)
        return True, None

    def shared_services(texts: dict[str, str]) -> tuple[bool, bool]:
        database = not (shared / "database-down").exists()
        redis = not (shared / "redis-down").exists()
        if not database:
            texts["database"] = database_refused(DATABASE_PORT)
        if not redis:
            texts["redis"] = redis_refused(REDIS_PORT)
        return database, redis

    async def instance(request: web.Request) -> web.Response:
        texts: dict[str, str] = {}
        database, _ = shared_services(texts)  # instance never checks redis
        texts.pop("redis", None)
        services = {
            "auth": True,
            "database": database,
            "disk_space": True,
            "registry_gunicorn": True,
            "service_key": True,
            "web_gunicorn": True,
        }
        return health_response(services, texts, debug=sessions.debug(request), hostname=args.name)

    async def endtoend(request: web.Request) -> web.Response:
        texts: dict[str, str] = {}
        database, redis = shared_services(texts)
        storage, text = await asyncio.to_thread(storage_check)
        if text is not None:
            texts["storage"] = text
        services = {"auth": True, "database": database, "redis": redis, "storage": storage}
        return health_response(services, texts, debug=sessions.debug(request), hostname=args.name)

    served = [0]  # requests answered on other paths, for an even spread of errors

    def error_share() -> float:
        try:
            return float((shared / f"{args.name}-errors").read_text().strip() or 0)
        except (OSError, ValueError):
            return 0.0

    async def other(request: web.Request) -> web.Response:
        n, share = served[0], error_share()
        served[0] += 1
        if int((n + 1) * share) > int(n * share):  # `share` of every run of requests
            return web.Response(status=500, text="Internal Server Error")
        return web.Response(text=f"site {args.name}")

    app = web.Application()
    app.router.add_get("/health/instance", instance)
    app.router.add_get("/health/endtoend", endtoend)
    app.router.add_get("/health/enabledebug/{secret}", sessions.enable)
    app.router.add_get("/{tail:.*}", other)
    return app


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--s3", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--locations", help="location names, as the buckets (default: buckets)")
    parser.add_argument(
        "--preferred", type=int, help="how many of the locations are preferred (default: all)"
    )
    parser.add_argument("--shared", required=True)
    parser.add_argument("--quay-version", choices=("3.17", "3.18"), default="3.18")
    parser.add_argument(
        "--aws-max-attempts", type=int, default=1, help="boto attempts; 0: boto's own retries"
    )
    parser.add_argument("--debug-secret-file", help="ENABLE_HEALTH_DEBUG_SECRET, in a file")
    args = parser.parse_args(argv)
    web.run_app(build_app(args), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
