"""The registry prober against a real registry: Debian's docker-registry (CNCF
distribution 2.8) on a moto S3 server, redirects on, as Quay serves blobs.

The registry reaches S3 through a FaultProxy (recording, and refusing on demand),
so presigned blob URLs point at the proxy: what the prober sends to the storage
host is asserted there. Auth: none, htpasswd (Basic) and token (a JWT issuer in
the test). The canary image is an OCI layout built by the test, pushed by skopeo.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.peers import FaultProxy, free_port
from tests.probers.registry_peer import PASSWORD, USER, Layout, Registry, TokenIssuer, sha256
from tests.probers.test_s3 import create_bucket, s3_client
from trafficd.config import load
from trafficd.config.model import Probes, RegistryProbe, Site
from trafficd.model import Observation, Probe
from trafficd.probers.quay import SiteEndpoint, make_session
from trafficd.probers.registry import RegistryProber, parse_challenge
from trafficd.probers.schedule import probe_tasks
from trafficd.runtime.wiring import Runtime

REPO = "trafficd/canary"


@dataclass
class World:
    registry: Registry
    proxy: FaultProxy
    layout: Layout
    moto: str
    issuer: TokenIssuer | None
    bucket: str

    async def probe(self, **settings: Any) -> Observation:
        site = Site.model_validate(
            {
                "url": "http://registry.example.test",  # the global name: never resolved
                "connect": f"127.0.0.1:{self.registry.port}",
            }
        )
        base: dict[str, Any] = {
            "repository": REPO,
            "username": USER,
            "password": PASSWORD,
            "timeout": "10s",
        }
        probe_settings = RegistryProbe.model_validate(base | settings)
        probes = Probes.model_validate({"interval": "2s", "timeout": "1s"})
        async with make_session() as session:
            prober = RegistryProber(
                SiteEndpoint.from_site("eu", site), probes, probe_settings, session, vantage="v"
            )
            return await prober.probe()

    def presigned(self) -> list[dict[str, str]]:
        """Headers of every presigned (client) request the storage host received."""
        return [h for _, path, h in self.proxy.requests if "X-Amz-Signature=" in path]


_buckets = itertools.count(1)


async def make_world(tmp: Path, moto: str, auth: str, redirect_base: str | None = None) -> World:
    bucket = f"registry-{next(_buckets)}"
    await create_bucket(moto, bucket)
    proxy = await FaultProxy(moto).start()
    issuer = await TokenIssuer(tmp).start() if auth == "token" else None
    reg = await Registry(
        tmp / "registry", proxy.url, auth=auth, issuer=issuer, bucket=bucket
    ).start()
    layout = Layout(tmp / "layout")
    amd64 = layout.image("amd64", "hello from amd64")
    layout.tag("latest", amd64)
    arm64 = layout.image("arm64", "hello from arm64")
    layout.tag("multi", layout.index([("arm64", arm64), ("amd64", amd64)]))
    await reg.push(layout.root, "latest")
    await reg.push(layout.root, "multi")
    if redirect_base is not None:  # the same images, served with redirects elsewhere
        await reg.close()
        reg = await Registry(
            tmp / "registry-redirect",
            proxy.url,
            auth=auth,
            issuer=issuer,
            bucket=bucket,
            redirect_base=redirect_base,
        ).start()
    return World(reg, proxy, layout, moto, issuer, bucket)


async def close(world: World) -> None:
    await world.registry.close()
    await world.proxy.close()
    if world.issuer is not None:
        await world.issuer.close()


@pytest.fixture(params=["htpasswd", "token"])
async def world(request: pytest.FixtureRequest, tmp_path: Path, moto: str) -> AsyncIterator[World]:
    w = await make_world(tmp_path, moto, request.param)
    yield w
    await close(w)


@pytest.mark.peers
async def test_a_healthy_pull_passes_every_step(world: World) -> None:
    obs = await world.probe()
    assert obs.ok is True, obs
    assert set(obs.steps) == {"ping", "auth", "manifest", "blob_redirect", "blob_read", "digest"}
    assert all(v >= 0 for v in obs.steps.values())
    # The blob came from the storage host through a presigned URL, with no Authorization.
    presigned = world.presigned()
    assert presigned, world.proxy.requests
    assert all("Authorization" not in h for h in presigned)


@pytest.mark.peers
async def test_the_storage_host_never_sees_the_registry_credentials(world: World) -> None:
    await world.probe()
    await world.probe(blob_bytes=16)  # a Range read too
    secrets = {PASSWORD, USER}
    for _, path, headers in world.proxy.requests:
        if "X-Amz-Signature=" in path:
            assert "Authorization" not in headers
            assert not any(s in v for v in headers.values() for s in secrets)
    ranged = [h for h in world.presigned() if "Range" in h]
    assert ranged and ranged[0]["Range"] == "bytes=0-15"


@pytest.mark.peers
async def test_a_manifest_list_resolves_to_linux_amd64(world: World) -> None:
    obs = await world.probe(reference="multi")
    assert obs.ok is True, obs
    # The amd64 image's small layer was read (not arm64's, the index's first entry).
    want = sha256(world.layout.layers["amd64"]).split(":")[1]
    blobs = [p for _, p, _ in world.proxy.requests if "X-Amz-Signature=" in p]
    assert any(want in p for p in blobs), blobs


@pytest.mark.peers
async def test_wrong_credentials_fail_at_auth(world: World) -> None:
    obs = await world.probe(password="wrong-password")
    assert (obs.ok, obs.reason, obs.status) == (False, "auth", 401)
    assert "wrong-password" not in str(obs)


@pytest.mark.peers
async def test_a_missing_tag_fails_at_manifest(world: World) -> None:
    obs = await world.probe(reference="no-such-tag")
    assert (obs.ok, obs.reason, obs.status) == (False, "manifest", 404)


@pytest.mark.peers
async def test_storage_refusing_downloads_fails_at_blob_read_while_v2_answers(
    world: World,
) -> None:
    # The storage endpoint clients are sent to fails; the registry's own path works.
    world.proxy.mode, world.proxy.only = "status500", "X-Amz-Signature="
    obs = await world.probe()
    assert (obs.ok, obs.reason, obs.status) == (False, "blob_read", 500), obs
    assert {"ping", "manifest", "blob_redirect"} <= set(obs.steps)


@pytest.mark.peers
async def test_storage_stopped_fails_where_the_registry_first_needs_it(world: World) -> None:
    world.proxy.mode = "status500"  # every S3 request fails, the registry's too
    obs = await world.probe()
    # distribution keeps manifests in the bucket, so it fails there (Quay keeps them in
    # its database and fails at the blob); /v2/ and the token still answer.
    assert (obs.ok, obs.reason) == (False, "manifest"), obs
    assert obs.status is not None and obs.status >= 500
    assert {"ping", "auth"} <= set(obs.steps)


@pytest.mark.peers
async def test_a_corrupted_blob_fails_the_digest(world: World) -> None:
    layer = world.layout.layers["amd64"]
    hex_ = sha256(layer).split(":")[1]
    key = f"docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data"
    async with s3_client(world.moto) as s3:
        await s3.put_object(Bucket=world.bucket, Key=key, Body=bytes([layer[0] ^ 0xFF]) + layer[1:])
    obs = await world.probe()
    assert (obs.ok, obs.reason) == (False, "digest"), obs


async def test_a_site_that_cannot_be_reached_fails_at_ping() -> None:
    site = Site.model_validate(
        {"url": "http://r.example.test", "connect": f"127.0.0.1:{free_port()}"}
    )
    settings = RegistryProbe.model_validate({"repository": REPO})
    probes = Probes.model_validate({"interval": "2s", "timeout": "1s"})
    async with make_session() as session:
        obs = await RegistryProber(
            SiteEndpoint.from_site("eu", site), probes, settings, session, vantage="v"
        ).probe()
    assert (obs.ok, obs.reason) == (False, "ping")
    assert obs.detail is not None and obs.detail.startswith("connect")


@pytest.mark.peers
async def test_a_redirect_to_an_unreachable_host_fails_at_blob_read(
    tmp_path: Path, moto: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    w = await make_world(tmp_path, moto, "htpasswd", redirect_base=dead)
    try:
        obs = await w.probe()
        assert (obs.ok, obs.reason) == (False, "blob_read"), obs
        assert obs.detail is not None and obs.detail.startswith("connect")
    finally:
        await close(w)


@pytest.mark.peers
async def test_an_anonymous_registry_needs_no_credentials(tmp_path: Path, moto: str) -> None:
    w = await make_world(tmp_path, moto, "none")
    try:
        obs = await w.probe(username=None, password=None)
        assert obs.ok is True, obs
        assert "auth" not in obs.steps
    finally:
        await close(w)


@pytest.mark.peers
async def test_the_token_is_cached_until_it_expires(tmp_path: Path, moto: str) -> None:
    w = await make_world(tmp_path, moto, "token")
    try:
        assert w.issuer is not None
        site = Site.model_validate(
            {"url": "http://registry.example.test", "connect": f"127.0.0.1:{w.registry.port}"}
        )
        settings = RegistryProbe.model_validate(
            {"repository": REPO, "username": USER, "password": PASSWORD, "timeout": "10s"}
        )
        probes = Probes.model_validate({"interval": "2s", "timeout": "1s"})
        before = len(w.issuer.requests)
        async with make_session() as session:
            prober = RegistryProber(
                SiteEndpoint.from_site("eu", site), probes, settings, session, vantage="v"
            )
            first, second = await prober.probe(), await prober.probe()
        assert first.ok and second.ok, (first, second)
        assert len(w.issuer.requests) - before == 1  # one token for both pulls
        assert "auth" not in second.steps
        assert w.issuer.requests[-1]["scope"] == f"repository:{REPO}:pull"
        assert w.issuer.requests[-1]["service"] == "trafficd-test-registry"
    finally:
        await close(w)


@pytest.mark.peers
async def test_a_token_without_expires_in_lasts_the_specs_60_seconds(
    tmp_path: Path, moto: str
) -> None:
    """Quay's token endpoint answers `{"token": ...}` alone (its JWT lasts an hour)."""
    w = await make_world(tmp_path, moto, "token")
    try:
        assert w.issuer is not None
        w.issuer.expires_in = None
        site = Site.model_validate(
            {"url": "http://registry.example.test", "connect": f"127.0.0.1:{w.registry.port}"}
        )
        settings = RegistryProbe.model_validate(
            {"repository": REPO, "username": USER, "password": PASSWORD, "timeout": "10s"}
        )
        probes = Probes.model_validate({"interval": "2s", "timeout": "1s"})
        now = [0.0]
        before = len(w.issuer.requests)
        fetched = []
        async with make_session() as session:
            prober = RegistryProber(
                SiteEndpoint.from_site("eu", site),
                probes,
                settings,
                session,
                vantage="v",
                monotonic=lambda: now[0],
            )
            for at in (0.0, 30.0, 54.0, 56.0, 100.0, 112.0):
                now[0] = at
                obs = await prober.probe()
                assert obs.ok, obs
                fetched.append(len(w.issuer.requests) - before)
        # Renewed 5 s before the 60 s run out: at 56 s, then at 112 s (56 + 55 < 112).
        assert fetched == [1, 1, 1, 2, 2, 3]
    finally:
        await close(w)


def test_challenges_are_parsed_as_registries_send_them() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://quay.example.com/v2/auth",service="quay.example.com",'
        'scope="repository:org/repo:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://quay.example.com/v2/auth",
        "service": "quay.example.com",
        "scope": "repository:org/repo:pull",
    }
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})


@pytest.mark.peers
async def test_push_writes_a_canary_and_deletes_it(world: World) -> None:
    obs = await world.probe(push=True, push_repository="trafficd/canary-push")
    assert obs.ok is True, obs
    assert {"push_blob", "push_manifest", "push_cleanup"} <= set(obs.steps)
    assert obs.detail is None  # the tag was deleted
    puts = [p for m, p, _ in world.proxy.requests if m == "PUT" and "canary-push" in p]
    assert puts  # the registry wrote the canary to its storage
    # The canary tag is gone: a pull of it fails at the manifest.
    gone = await world.probe(repository="trafficd/canary-push", reference="trafficd-v")
    assert (gone.ok, gone.reason, gone.status) == (False, "manifest", 404)


@pytest.mark.peers
async def test_the_daemon_runs_one_registry_probe_per_site_and_exports_its_steps(
    world: World, tmp_path: Path
) -> None:
    (tmp_path / "robot").write_text(PASSWORD + "\n")
    path = tmp_path / "trafficd.yaml"
    path.write_text(f"""
vantage: v
state_dir: state
storage:
  eustorage: [LocalStorage, {{storage_path: {tmp_path}/eu}}]
sites:
  eu: {{url: "http://registry.example.test", connect: "127.0.0.1:{world.registry.port}",
        storage: [eustorage]}}
probes: {{interval: 2s, timeout: 1500ms}}
registry_probe: {{repository: {REPO}, reference: latest, username: "{USER}",
                  password: "${{file:robot}}", blob_bytes: 4096}}
""")
    config = load(path)
    runtime = Runtime.open(config, path)
    try:
        async with make_session() as session:
            tasks, backends = probe_tasks(config, session)
            registry = [t for t in tasks if t.probe is Probe.REGISTRY]
            assert [t.name for t in registry] == ["registry/eu"]
            obs = await registry[0].run()
            for backend in backends.values():
                await backend.close()
        assert obs.ok is True, obs
        runtime.observe(obs)
        get = runtime.metrics.registry.get_sample_value
        labels = {"site": "eu", "probe": "registry", "vantage": "v"}
        assert get("trafficd_probe_success", labels) == 1
        assert get("trafficd_probe_duration_seconds_count", labels) == 1
        for step in ("ping", "auth", "manifest", "blob_redirect", "blob_read", "digest"):
            count = get(
                "trafficd_registry_probe_step_seconds_count",
                {"site": "eu", "step": step, "vantage": "v"},
            )
            assert count == 1, step
    finally:
        runtime.store.close()
