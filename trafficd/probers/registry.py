"""The registry prober: a synthetic pull through one site, as docker and podman clients do it.

First stage of the pipeline, beside `quay.py` (whose `SiteEndpoint` it shares: the
site's `connect` address, the global hostname as Host header and TLS SNI).
`/health/endtoend` says what Quay thinks of itself; this says whether a pull
works, crossing what the health check does not: the token endpoint, the
manifest read, and the blob download that Quay answers with a redirect to a
presigned storage URL, fetched from the storage itself. It follows the Docker
Registry HTTP API v2 and its token authentication spec:

    ping           GET /v2/ (401 carries the WWW-Authenticate challenge)
    auth           Bearer: GET realm?service=&scope= with the robot's Basic
                   credentials, token cached until it expires; or Basic
    manifest       HEAD, then GET the manifest (OCI and Docker media types);
                   an index or list resolves to linux/amd64, else its first entry
    blob_redirect  GET the smallest layer: a redirect to storage, or the bytes
    blob_read      GET the redirect target WITHOUT the registry's Authorization
                   header, `blob_bytes` of it (a Range request when larger)
    digest         a blob read whole must hash to its digest

With `push: true` it also pushes a tiny canary blob and manifest to a canary
repository (`push_blob`, `push_manifest`) and deletes the tag (`push_cleanup`).
The observation names the step that failed, its HTTP status, and the time of
every step. Nothing raises into the caller.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from trafficd.config.model import Probes, RegistryProbe
from trafficd.model import Observation, Probe
from trafficd.probers.quay import SiteEndpoint, ssl_context

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
INDEXES = frozenset({OCI_INDEX, DOCKER_LIST})
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"

MAX_MANIFEST = 4 * 1024 * 1024
MAX_TOKEN = 64 * 1024
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# The token spec's default when `expires_in` is absent, as in Quay's answers (whose JWT
# lasts 3600 s: the token is opaque to a client, so its `exp` is not read).
TOKEN_LIFETIME = 60.0
TOKEN_MARGIN = 5.0  # renew this long before expiry
# key="quoted value" or key=token, as in RFC 7235 auth-params.
_PARAM = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class PullStepError(Exception):
    def __init__(self, step: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{step}: {detail}")
        self.step, self.detail, self.status = step, detail, status


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="..",service="..",scope=".."` -> ("bearer", {realm, service, scope}).

    Written here rather than taken from a library: aiohttp has no parser for
    WWW-Authenticate, and the registries' challenges are one scheme with a few
    auth-params; the maintained packages for this are either unmaintained or a
    full HTTP-auth client."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
        for m in _PARAM.finditer(rest)
    }
    return scheme.lower(), {k: v.replace('\\"', '"') for k, v in params.items()}


@dataclass
class _Run:
    """One probe's bookkeeping: the step under way and the time of each."""

    steps: dict[str, float]
    step: str = "ping"

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        self.step = name
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.steps[name] = self.steps.get(name, 0.0) + time.perf_counter() - begin


class RegistryProber:
    """Pulls `registry_probe.repository:reference` through one site, directly."""

    def __init__(
        self,
        endpoint: SiteEndpoint,
        probes: Probes,
        settings: RegistryProbe,
        session: aiohttp.ClientSession,
        *,
        vantage: str,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.monotonic = monotonic  # token expiry
        self.session = session
        self.vantage = vantage
        self.clock = clock
        self.timeout = settings.timeout or probes.timeout
        self.ssl: ssl.SSLContext | bool = (
            ssl_context(probes) if endpoint.scheme == "https" else False
        )
        # Storage endpoints are other hosts: verified the same way, never on the site's SNI.
        self.storage_ssl: ssl.SSLContext | bool = ssl_context(probes)
        self.base = URL(endpoint.base)
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (Authorization, expiry)
        self._basic: str | None = None
        if settings.username is not None and settings.password is not None:
            pair = f"{settings.username.get_secret_value()}:{settings.password.get_secret_value()}"
            self._basic = "Basic " + base64.b64encode(pair.encode()).decode()
        self._scheme: str | None = None  # the site's auth scheme, learned from /v2/

    # --- HTTP to the site (connect address, global Host and SNI) ----------------------

    def _on_site(self, url: URL) -> bool:
        default = 443 if self.endpoint.scheme == "https" else 80
        return url.host == self.endpoint.hostname and (url.port or default) == (
            URL(f"{self.endpoint.scheme}://{self.endpoint.host_header}").port or default
        )

    def _request(
        self, method: str, url: URL, headers: Mapping[str, str], **kw: Any
    ) -> Any:  # aiohttp's request context manager
        """To the site itself (its connect address) when `url` names the global host."""
        if url.is_absolute() and not self._on_site(url):
            return self.session.request(
                method, url, headers=headers, ssl=self.storage_ssl, allow_redirects=False, **kw
            )
        direct = URL.build(
            scheme=self.base.scheme,
            host=self.base.raw_host or "",
            port=self.base.port,
            path=url.raw_path,
            query_string=url.raw_query_string,
            encoded=True,
        )
        return self.session.request(
            method,
            direct,
            headers={"Host": self.endpoint.host_header, **headers},
            ssl=self.ssl,
            server_hostname=self.endpoint.hostname if self.ssl else None,
            allow_redirects=False,
            **kw,
        )

    def _site_url(self, path: str) -> URL:
        return URL(f"{self.endpoint.scheme}://{self.endpoint.host_header}{path}")

    # --- auth -----------------------------------------------------------------------

    def _authorization(self, scope: str) -> dict[str, str]:
        if self._scheme == "basic" and self._basic is not None:
            return {"Authorization": self._basic}
        token = self._tokens.get(scope)
        if token is not None and self.monotonic() < token[1]:
            return {"Authorization": token[0]}
        return {}

    async def _authenticate(self, challenge: str, scope: str, run: _Run) -> None:
        """Meet the challenge; a Bearer token is asked for `scope` and for the scope the
        challenge names, if another (a DELETE asks for `delete`, as docker clients do)."""
        scheme, params = parse_challenge(challenge)
        with run.timed("auth"):
            if scheme == "basic":
                if self._basic is None:
                    raise PullStepError("auth", "the site asks for Basic auth and no credentials")
                self._scheme = "basic"
                return
            if scheme != "bearer" or not params.get("realm"):
                raise PullStepError("auth", f"unsupported challenge {scheme or 'none'}")
            self._scheme = "bearer"
            query = [("scope", scope)]
            asked = params.get("scope")
            if asked and asked != scope:
                query.append(("scope", asked))
            if params.get("service"):
                query.append(("service", params["service"]))
            realm = URL(params["realm"]).update_query(query)
            headers = {"Authorization": self._basic} if self._basic else {}
            async with self._request("GET", realm, headers) as resp:
                body = await resp.content.read(MAX_TOKEN + 1)
                if resp.status != 200:
                    raise PullStepError("auth", "the token endpoint refused", resp.status)
            if len(body) > MAX_TOKEN:
                raise PullStepError("auth", "oversized token answer", 200)
            try:
                doc = json.loads(body)
                token = doc.get("token") or doc.get("access_token")
                lifetime = float(doc.get("expires_in") or TOKEN_LIFETIME)
            except (ValueError, TypeError, AttributeError):
                raise PullStepError("auth", "unparsable token answer", 200) from None
            if not isinstance(token, str) or not token:
                raise PullStepError("auth", "no token in the answer", 200)
            expiry = self.monotonic() + max(0.0, lifetime - TOKEN_MARGIN)
            self._tokens[scope] = (f"Bearer {token}", expiry)

    async def _site_call(
        self,
        method: str,
        path: str,
        scope: str,
        run: _Run,
        step: str,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        read: int = 0,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One authenticated call; a 401 fetches a (new) token once, then fails at `auth`."""
        for attempt in (1, 2):
            with run.timed(step):
                async with self._request(
                    method,
                    self._site_url(path),
                    {**(headers or {}), **self._authorization(scope)},
                    data=data,
                ) as resp:
                    body = await resp.content.read(read + 1) if read else b""
                    if read and len(body) > read:
                        raise PullStepError(
                            step, f"oversized answer (over {read} bytes)", resp.status
                        )
                    status, answer = resp.status, dict(resp.headers)
            if status != 401:
                return status, answer, body
            self._tokens.pop(scope, None)
            if attempt == 2 or "WWW-Authenticate" not in answer:
                raise PullStepError("auth", "the site refused the credentials", 401)
            await self._authenticate(answer["WWW-Authenticate"], scope, run)
        raise AssertionError("unreachable")

    # --- the pull ----------------------------------------------------------------------

    async def _manifest(self, scope: str, run: _Run) -> dict[str, Any]:
        repo, ref = self.settings.repository, self.settings.reference
        accept = {"Accept": ACCEPT}
        status, _, _ = await self._site_call(
            "HEAD", f"/v2/{repo}/manifests/{ref}", scope, run, "manifest", accept
        )
        if status != 200:
            raise PullStepError("manifest", f"HEAD {repo}:{ref}", status)
        status, headers, body = await self._site_call(
            "GET", f"/v2/{repo}/manifests/{ref}", scope, run, "manifest", accept, read=MAX_MANIFEST
        )
        if status != 200:
            raise PullStepError("manifest", f"GET {repo}:{ref}", status)
        if ref.startswith("sha256:") and _sha256(body) != ref:
            raise PullStepError("manifest", "the manifest does not match its digest", status)
        doc = _json(body, "manifest")
        media = doc.get("mediaType") or headers.get("Content-Type", "").split(";")[0]
        if media in INDEXES or "manifests" in doc:
            digest = _pick(doc)
            status, _, body = await self._site_call(
                "GET",
                f"/v2/{repo}/manifests/{digest}",
                scope,
                run,
                "manifest",
                accept,
                read=MAX_MANIFEST,
            )
            if status != 200:
                raise PullStepError("manifest", f"GET {repo}@{digest} (from the index)", status)
            if _sha256(body) != digest:
                raise PullStepError("manifest", "the manifest does not match its digest", status)
            doc = _json(body, "manifest")
        return doc

    async def _blob(self, manifest: dict[str, Any], scope: str, run: _Run) -> None:
        layers = [x for x in manifest.get("layers") or [] if isinstance(x, dict)]
        candidates = layers or [manifest.get("config") or {}]
        try:
            blob = min(candidates, key=lambda x: int(x.get("size", 0)))
            digest, size = str(blob["digest"]), int(blob.get("size", 0))
        except (KeyError, TypeError, ValueError):
            raise PullStepError("manifest", "the manifest names no blob", 200) from None
        want = self.settings.blob_bytes
        whole = size <= want
        repo = self.settings.repository
        with run.timed("blob_redirect"):
            async with self._request(
                "GET",
                self._site_url(f"/v2/{repo}/blobs/{digest}"),
                {**self._authorization(scope), **({} if whole else {"Range": _range(want)})},
            ) as resp:
                if resp.status in REDIRECTS and "Location" in resp.headers:
                    location = self._site_url(f"/v2/{repo}/blobs/{digest}").join(
                        URL(resp.headers["Location"], encoded=True)
                    )
                elif resp.status in (200, 206):  # served by the registry itself
                    data = await resp.content.read(want)
                    self._check(data, digest, whole, run)
                    return
                else:
                    raise PullStepError("blob_redirect", f"GET blob {digest[:19]}", resp.status)
        with run.timed("blob_read"):
            # A new request: the registry's Authorization never goes to the storage host.
            headers = {} if whole else {"Range": _range(want)}
            for _ in range(4):  # a CDN in front of the bucket may redirect once more
                async with self._request("GET", location, headers) as resp:
                    if resp.status in REDIRECTS and "Location" in resp.headers:
                        location = location.join(URL(resp.headers["Location"], encoded=True))
                        continue
                    if resp.status not in (200, 206):
                        raise PullStepError(
                            "blob_read", f"storage answered {resp.status}", resp.status
                        )
                    data = await resp.content.read(want)
                    break
            else:
                raise PullStepError("blob_read", "too many redirects")
        self._check(data, digest, whole, run)

    def _check(self, data: bytes, digest: str, whole: bool, run: _Run) -> None:
        with run.timed("digest"):
            if whole and _sha256(data) != digest:
                raise PullStepError("digest", f"the blob read does not hash to {digest[:19]}...")
            if not data:
                raise PullStepError("blob_read", "the storage answered no bytes")

    # --- the write path (push: true) -------------------------------------------------

    async def _push(self, run: _Run) -> str | None:
        """Push a canary blob and manifest, then delete the tag; a cleanup problem is noted."""
        repo = self.settings.push_repository
        scope = f"repository:{repo}:pull,push"
        layer = b"trafficd canary " + secrets.token_hex(8).encode()
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        for blob in (config, layer):
            digest = _sha256(blob)
            status, headers, _ = await self._site_call(
                "POST", f"/v2/{repo}/blobs/uploads/", scope, run, "push_blob"
            )
            if status != 202 or "Location" not in headers:
                raise PullStepError("push_blob", "the upload did not start", status)
            upload = self._site_url(f"/v2/{repo}/blobs/uploads/").join(
                URL(headers["Location"], encoded=True)
            )
            path = upload.update_query({"digest": digest}).raw_path_qs
            status, _, _ = await self._site_call(
                "PUT",
                path,
                scope,
                run,
                "push_blob",
                {"Content-Type": "application/octet-stream"},
                data=blob,
            )
            if status != 201:
                raise PullStepError("push_blob", "the monolithic upload was refused", status)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": _sha256(config), "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": _sha256(layer), "size": len(layer)}],
            }
        ).encode()
        tag = f"trafficd-{self.vantage}"
        status, _, _ = await self._site_call(
            "PUT",
            f"/v2/{repo}/manifests/{tag}",
            scope,
            run,
            "push_manifest",
            {"Content-Type": OCI_MANIFEST},
            data=manifest,
        )
        if status != 201:
            raise PullStepError("push_manifest", "the manifest was refused", status)
        # Quay deletes a tag; registries that delete only by digest get the manifest's.
        for ref in (tag, _sha256(manifest)):
            status, _, _ = await self._site_call(
                "DELETE", f"/v2/{repo}/manifests/{ref}", scope, run, "push_cleanup"
            )
            if status in (200, 202):
                return None
        return f"push_cleanup: the canary tag was not deleted (HTTP {status})"

    # --- one probe ---------------------------------------------------------------------

    async def probe(self) -> Observation:
        """One synthetic pull (and push). Never raises."""
        started = time.perf_counter()
        run = _Run(steps={})

        def obs(
            ok: bool | None, reason: str | None = None, status: int | None = None, **kw: Any
        ) -> Observation:
            return Observation(
                t=self.clock(),
                vantage=self.vantage,
                probe=Probe.REGISTRY,
                subject=self.endpoint.site,
                ok=ok,
                status=status,
                reason=reason,
                latency=time.perf_counter() - started,
                steps=dict(run.steps),
                **kw,
            )

        try:
            async with asyncio.timeout(self.timeout):
                scope = f"repository:{self.settings.repository}:pull"
                with run.timed("ping"):
                    async with self._request(
                        "GET", self._site_url("/v2/"), self._authorization(scope)
                    ) as resp:
                        status, challenge = resp.status, resp.headers.get("WWW-Authenticate")
                if status == 401:
                    if challenge is None:
                        raise PullStepError("ping", "401 without a challenge", 401)
                    await self._authenticate(challenge, scope, run)
                elif status != 200:
                    raise PullStepError("ping", "GET /v2/", status)
                manifest = await self._manifest(scope, run)
                await self._blob(manifest, scope, run)
                note = await self._push(run) if self.settings.push else None
            return obs(True, status=200, detail=note)
        except PullStepError as failed:
            return obs(False, failed.step, failed.status, detail=failed.detail)
        except TimeoutError:
            return obs(False, run.step, detail=f"timeout: no answer within {self.timeout:g}s")
        except aiohttp.ClientConnectorCertificateError as exc:
            return obs(False, run.step, detail=f"tls: {_short(exc.certificate_error)}")
        except aiohttp.ClientSSLError as exc:
            return obs(False, run.step, detail=f"tls: {_short(exc)}")
        except aiohttp.ClientConnectorError as exc:
            return obs(False, run.step, detail=f"connect: {_short(exc.os_error)}")
        except aiohttp.ClientError as exc:
            return obs(False, run.step, detail=f"error: {type(exc).__name__}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never into the loop: the prober could not tell
            return obs(None, "error", detail=type(exc).__name__)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _range(n: int) -> str:
    return f"bytes=0-{n - 1}"


def _json(body: bytes, step: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PullStepError(step, "unparsable JSON", 200) from None
    if not isinstance(doc, dict):
        raise PullStepError(step, "not a JSON object", 200)
    return doc


def _pick(index: Mapping[str, Any]) -> str:
    """linux/amd64, as a client on such a host pulls; else the first entry."""
    entries = [m for m in index.get("manifests") or [] if isinstance(m, dict) and "digest" in m]
    if not entries:
        raise PullStepError("manifest", "an empty index", 200)
    for entry in entries:
        platform = entry.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return str(entry["digest"])
    return str(entries[0]["digest"])


def _short(value: object) -> str:
    return str(value).splitlines()[0][:200] if str(value) else type(value).__name__
