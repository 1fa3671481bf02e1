"""A simulated Quay site (demo, end-to-end test): health endpoints whose storage is real.

Run: python -m trafficd.demo.site --name eu --port P --s3 URL[,URL...] --bucket B[,B...]
     --shared DIR [--quay-version 3.17|3.18]

Answers `/health/instance` and `/health/endtoend` in Quay's exact format
(`{"data": {"services": {...}}, "status_code": N}`, 200 or 503). `storage`
is computed as Quay does it, by writing `_verify` under the storage path of
the site's real S3 bucket (a moto server per site): v3.17 checks the first
preferred location only; v3.18 checks every preferred location and has no
timeout of its own, so a hung bucket hangs endtoend. `database` and `redis`
are shared by every site: they fail when the file `DIR/database-down`
exists. Any other path answers 200 `site NAME` so HAProxy's frontend can be
tested with real requests.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import boto3
from aiohttp import web
from botocore.config import Config


def build_app(args: argparse.Namespace) -> web.Application:
    urls = args.s3.split(",")
    buckets = args.bucket.split(",")
    # Quay's S3 driver: boto3 with a long default timeout and retries; none of its own.
    clients = [
        boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto accepts any key
            region_name="us-east-1",
            config=Config(connect_timeout=60, read_timeout=60, retries={"max_attempts": 1}),
        )
        for url in urls
    ]
    shared = Path(args.shared)

    def storage_ok() -> bool:
        checked = clients if args.quay_version == "3.18" else clients[:1]
        for client, bucket in zip(checked, buckets, strict=False):
            try:
                client.put_object(
                    Bucket=bucket, Key="datastorage/registry/_verify", Body=b"testing"
                )
                client.get_object(Bucket=bucket, Key="datastorage/registry/_verify")["Body"].read()
            except Exception:
                return False
        return True

    def body(services: dict[str, bool]) -> web.Response:
        code = 200 if all(services.values()) else 503
        return web.json_response({"data": {"services": services}, "status_code": code}, status=code)

    async def instance(request: web.Request) -> web.Response:
        db = not (shared / "database-down").exists()
        return body(
            {
                "auth": True,
                "database": db,
                "disk_space": True,
                "registry_gunicorn": True,
                "service_key": True,
                "web_gunicorn": True,
            }
        )

    async def endtoend(request: web.Request) -> web.Response:
        db = not (shared / "database-down").exists()
        storage = await asyncio.to_thread(storage_ok)
        return body({"auth": db, "database": db, "redis": db, "storage": storage})

    async def other(request: web.Request) -> web.Response:
        return web.Response(text=f"site {args.name}")

    app = web.Application()
    app.router.add_get("/health/instance", instance)
    app.router.add_get("/health/endtoend", endtoend)
    app.router.add_get("/{tail:.*}", other)
    return app


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--s3", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--shared", required=True)
    parser.add_argument("--quay-version", choices=("3.17", "3.18"), default="3.18")
    args = parser.parse_args(argv)
    web.run_app(build_app(args), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
