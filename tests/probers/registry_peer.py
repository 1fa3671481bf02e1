"""A real container registry for the registry prober's tests: CNCF distribution on S3.

Debian's `docker-registry` (distribution 2.8) runs on loopback with its S3
driver pointed at a moto server through a `FaultProxy` (which records every
request and can refuse them), and redirects on: a blob GET answers 307 with
a presigned S3 URL, as Quay does. Auth is none, htpasswd (Basic, bcrypt), or
token: `TokenIssuer` is a small token server in the test that signs JWTs
(ES256, the signing certificate in the `x5c` header) with a test CA that the
registry trusts through `rootcertbundle`. Canary images are OCI layouts built
here and pushed with `skopeo` (Debian package).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import secrets
import signal
import tarfile
import time
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import trustme
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import load_pem_x509_certificate

from tests.peers import free_port

USER, PASSWORD = "trafficd+probe", "robot-token-0123456789"
SERVICE, ISSUER = "trafficd-test-registry", "trafficd-test-issuer"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Layout:
    """An OCI image layout on disk: blobs by digest, index.json naming each tag."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs/sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.refs: list[dict[str, Any]] = []
        self.layers: dict[str, bytes] = {}  # tag -> the smallest layer's bytes

    def blob(self, data: bytes) -> dict[str, Any]:
        digest = sha256(data)
        (self.root / "blobs/sha256" / digest.split(":")[1]).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    def image(self, arch: str, text: str) -> dict[str, Any]:
        """One linux/`arch` image: a small layer (a tar of one file) and a big one."""
        layers = []
        for name, size in (("hello.txt", 0), ("padding.bin", 200_000)):
            tar = io.BytesIO()
            with tarfile.open(fileobj=tar, mode="w") as tf:
                payload = text.encode() if size == 0 else secrets.token_bytes(size)
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(payload), 0
                tf.addfile(info, io.BytesIO(payload))
            raw = tar.getvalue()
            layers.append((gzip.compress(raw, mtime=0), sha256(raw)))
        config = json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
                "config": {},
            }
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json"}
                | self.blob(config),
                "layers": [
                    {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"} | self.blob(g)
                    for g, _ in layers
                ],
            }
        ).encode()
        self.layers[arch] = layers[0][0]
        return {"mediaType": OCI_MANIFEST, **self.blob(manifest)}

    def tag(self, name: str, entry: dict[str, Any]) -> None:
        annotations = {"org.opencontainers.image.ref.name": name}
        self.refs.append({**entry, "annotations": annotations})
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs}
        (self.root / "index.json").write_text(json.dumps(index))

    def index(self, entries: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
        """An image index (a manifest list) over several platforms."""
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {**entry, "platform": {"os": "linux", "architecture": arch}}
                for arch, entry in entries
            ],
        }
        return {"mediaType": OCI_INDEX, **self.blob(json.dumps(doc).encode())}


class TokenIssuer:
    """The token endpoint of the Docker token spec, in process: Basic in, a JWT out."""

    def __init__(self, directory: Path, expires_in: int | None = 300) -> None:
        self.expires_in = expires_in  # None: left out, as Quay's token endpoint does
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("token-signer.test")
        self.bundle = directory / "token-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.bundle))
        self.requests: list[dict[str, str]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> TokenIssuer:
        app = web.Application()
        app.router.add_get("/token", self._token)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/token"
        return self

    async def _token(self, request: web.Request) -> web.Response:
        self.requests.append(
            dict(request.query) | {"auth": request.headers.get("Authorization", "")}
        )
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"details": "bad credentials"}, status=401)
        access = []
        for scope in request.query.getall("scope", []):
            for one in scope.split(" "):
                kind, name, actions = one.split(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": USER,
            "aud": request.query.get("service", ""),
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        key = serialization.load_pem_private_key(self.cert.private_key_pem.bytes(), None)
        chain = [
            base64.b64encode(
                load_pem_x509_certificate(blob.bytes()).public_bytes(serialization.Encoding.DER)
            ).decode()
            for blob in self.cert.cert_chain_pems
        ]
        token = jwt.encode(claims, key, algorithm="ES256", headers={"x5c": chain})  # type: ignore[arg-type]
        answer: dict[str, Any] = {"token": token}
        if self.expires_in is not None:
            answer["expires_in"] = self.expires_in
        return web.json_response(answer)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Registry:
    """docker-registry serving `bucket` of `s3` (a URL: moto, or a proxy of it)."""

    def __init__(
        self,
        directory: Path,
        s3: str,
        *,
        auth: str = "none",
        issuer: TokenIssuer | None = None,
        redirect_base: str | None = None,
        bucket: str = "registry",
    ) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: asyncio.subprocess.Process | None = None
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {
                "s3": {
                    "accesskey": "a",
                    "secretkey": "a",
                    "region": "us-east-1",
                    "regionendpoint": s3,
                    "bucket": bucket,
                    "secure": False,
                    "v4auth": True,
                    "forcepathstyle": True,
                },
                "redirect": {"disable": False},
                "delete": {"enabled": True},
            },
            "http": {"addr": f"127.0.0.1:{self.port}"},
        }
        if auth == "htpasswd":
            hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
            (self.dir / "htpasswd").write_text(f"{USER}:{hashed}\n")
            config["auth"] = {
                "htpasswd": {"realm": "trafficd-test", "path": str(self.dir / "htpasswd")}
            }
        elif auth == "token":
            assert issuer is not None
            config["auth"] = {
                "token": {
                    "realm": issuer.url,
                    "service": SERVICE,
                    "issuer": ISSUER,
                    "rootcertbundle": str(issuer.bundle),
                }
            }
        if redirect_base is not None:  # blob redirects point elsewhere (a CDN, say)
            config["middleware"] = {
                "storage": [{"name": "redirect", "options": {"baseurl": redirect_base}}]
            }
        self.config = self.dir / "registry.yml"
        self.config.write_text(json.dumps(config))  # JSON is YAML

    async def start(self) -> Registry:
        env = {
            k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"
        }  # the registry's S3 client takes it for its own CA and fails
        with (self.dir / "registry.log").open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                "/usr/bin/docker-registry",
                "serve",
                str(self.config),
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(
                    f"docker-registry exited: {(self.dir / 'registry.log').read_text()}"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return self
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError("docker-registry did not listen within 20s")

    async def push(self, layout: Path, tag: str, repo: str = "trafficd/canary") -> None:
        """skopeo copy, as an operator would publish the canary image."""
        argv = [
            "/usr/bin/skopeo",
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--dest-creds",
            f"{USER}:{PASSWORD}",
            f"oci:{layout}:{tag}",
            f"docker://127.0.0.1:{self.port}/{repo}:{tag}",
        ]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        if proc.returncode != 0:
            raise RuntimeError(f"skopeo copy failed: {out.decode()[-2000:]}")

    async def close(self) -> None:
        """By PID (its own process group): SIGTERM, then SIGKILL after 5 s."""
        if self.proc is None or self.proc.returncode is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
                return
            except TimeoutError:
                continue
