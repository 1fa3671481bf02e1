"""The kubernetes actuator with the real kubernetes_asyncio client against a FAKE API server.

No Kubernetes API server can run here: `kube_fake.FakeCluster` follows the
API's wire format for exactly the calls the actuator makes, validates every
QuayRegistry against the Operator's CRD schema, and reproduces the Operator
behaviours it cites. This mode is not yet verified against a live Operator.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.actuators.kube_fake import FakeCluster, deployment, kubeconfig, serve
from trafficd.actuators import build
from trafficd.actuators.base import BuildContext, DesiredSite, Reconciler
from trafficd.actuators.kubernetes import (
    DRAINED_FIELDS,
    PERMISSIONS,
    PREVIOUS_REPLICAS,
    Kubernetes,
)
from trafficd.config.model import KubernetesActuator, Site
from trafficd.metrics import Metrics
from trafficd.model import Cause, State

NS = "quay-enterprise"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class World:
    us: FakeCluster  # Operator-managed Quay (QuayRegistry "registry")
    eu: FakeCluster  # standalone Quay (Deployment "quay-app", 3 replicas, and its mirror)
    kubeconfig: Path
    sites: dict[str, Site]

    def actuator(self, metrics: Metrics | None = None) -> Kubernetes:
        cfg = KubernetesActuator.model_validate(
            {"type": "kubernetes", "kubeconfig": str(self.kubeconfig), "timeout": "5s"}
        )
        a = build(cfg, BuildContext(sites=self.sites, metrics=metrics))
        assert isinstance(a, Kubernetes)
        a.poll = 0.01
        return a


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    us, eu = FakeCluster(), FakeCluster()
    us.add_quayregistry(
        NS,
        "registry",
        [
            {"kind": "quay", "managed": True},
            {"kind": "horizontalpodautoscaler", "managed": True},
            {"kind": "clair", "managed": True},
        ],
    )
    env = {"QUAY_DISTRIBUTED_STORAGE_PREFERENCE": "eustorage usstorage"}
    eu.add_deployment(NS, deployment("quay-app", NS, 3, env=env))
    eu.add_deployment(NS, deployment("quay-mirror", NS, 2, env=env))
    async with serve(us, eu):
        sites = {
            "us": Site.model_validate(
                {
                    "connect": "127.0.0.1:8443",
                    "addresses": ["192.0.2.10"],
                    "storage": ["usstorage"],
                    "kubernetes": {
                        "context": "us-cluster",
                        "namespace": NS,
                        "quayregistry": "registry",
                    },
                }
            ),
            "eu": Site.model_validate(
                {
                    "connect": "127.0.0.1:8444",
                    "addresses": ["192.0.2.20"],
                    "storage": ["eustorage", "usstorage"],
                    "kubernetes": {
                        "context": "eu-cluster",
                        "namespace": NS,
                        "deployment": "quay-app",
                        "mirror": True,
                    },
                }
            ),
        }
        yield World(us, eu, kubeconfig(tmp_path / "kubeconfig", {"us": us, "eu": eu}), sites)


def desired(world: World, **stopped: bool) -> dict[str, DesiredSite]:
    out = {}
    for name, site in world.sites.items():
        down = stopped.get(name, False)
        out[name] = DesiredSite(
            name=name,
            state=State.DRAINED if down else State.ACTIVE,
            cause=Cause.STORAGE if down else None,
            weight=0 if down else 100,
            configured_weight=100,
            addresses=tuple(site.addresses),
            instances="stopped" if down else "running",
            kubernetes=site.kubernetes,
        )
    return out


def replicas(cluster: FakeCluster, name: str) -> int:
    return int(cluster.objects[("deployments", NS, name)]["spec"]["replicas"])


def annotations_of(cluster: FakeCluster, resource: str, name: str) -> dict[str, Any]:
    return dict(cluster.objects[(resource, NS, name)]["metadata"].get("annotations") or {})


def components(cluster: FakeCluster) -> list[dict[str, Any]]:
    return list(cluster.objects[("quayregistries", NS, "registry")]["spec"]["components"])


async def test_deployment_scaled_down_and_back_after_a_restart(world: World) -> None:
    a = world.actuator()
    outcome = await Reconciler(a).reconcile(desired(world, eu=True))
    assert outcome.applied == ["stop site eu"] and outcome.in_sync, outcome
    assert replicas(world.eu, "quay-app") == 0 and replicas(world.eu, "quay-mirror") == 0
    assert annotations_of(world.eu, "deployments", "quay-app") == {PREVIOUS_REPLICAS: "3"}
    assert annotations_of(world.eu, "deployments", "quay-mirror") == {PREVIOUS_REPLICAS: "2"}
    assert a.export_memory() == {
        "remembered": {"eu": {"replicas": {"quay-app": 3, "quay-mirror": 2}}}
    }
    # The scale went through the scale subresource, the annotation through the Deployment.
    assert ("apps", "deployments", "scale", "patch") in world.eu.calls
    # Idempotent.
    assert (await Reconciler(a).reconcile(desired(world, eu=True))).applied == []
    await a.close()

    # trafficd restarts and lost its state: the annotation alone restores exactly 3 and 2.
    fresh = world.actuator()
    world.eu.unavailable_reads = 2  # pods take a moment to become available
    outcome = await Reconciler(fresh).reconcile(desired(world))
    assert outcome.applied == ["start site eu"] and outcome.in_sync, outcome
    assert replicas(world.eu, "quay-app") == 3 and replicas(world.eu, "quay-mirror") == 2
    assert annotations_of(world.eu, "deployments", "quay-app") == {}
    assert world.eu.objects[("deployments", NS, "quay-app")]["status"]["availableReplicas"] == 3
    assert fresh.export_memory() == {"remembered": {}}
    await fresh.close()


async def test_deployment_restored_from_state_when_the_annotation_was_removed(
    world: World,
) -> None:
    a = world.actuator()
    await Reconciler(a).reconcile(desired(world, eu=True))
    saved = a.export_memory()
    await a.close()
    for name in ("quay-app", "quay-mirror"):
        world.eu.edit("deployments", NS, name, lambda d: d["metadata"].pop("annotations"))
    fresh = world.actuator()
    fresh.import_memory(json.loads(json.dumps(saved)))  # as the daemon's state file gives it
    assert (await Reconciler(fresh).reconcile(desired(world))).in_sync
    assert replicas(world.eu, "quay-app") == 3 and replicas(world.eu, "quay-mirror") == 2
    await fresh.close()


async def test_concurrent_edit_409_is_retried(world: World) -> None:
    world.eu.conflicts = 1
    a = world.actuator()
    outcome = await Reconciler(a, max_backoff=0.01).reconcile(desired(world, eu=True))
    assert outcome.in_sync and outcome.error is None, outcome
    assert replicas(world.eu, "quay-app") == 0
    # The count saved is the real one, not the conflicting write's.
    assert annotations_of(world.eu, "deployments", "quay-app") == {PREVIOUS_REPLICAS: "3"}
    await a.close()


async def test_rbac_denial_is_reported_clearly(world: World) -> None:
    world.eu.allowed.discard(("apps", "deployments", "scale", "patch"))
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    rec = Reconciler(world.actuator(metrics), metrics, max_backoff=0.01)
    error = await rec.preflight()
    assert error == "kubernetes: not allowed: site eu: patch deployments/scale in quay-enterprise"
    assert registry.get_sample_value("trafficd_actuator_ready", {"actuator": "kubernetes"}) == 0
    outcome = await rec.reconcile(desired(world, eu=True))
    assert outcome.error == (
        "kubernetes: site eu: scale deployment quay-enterprise/quay-app: forbidden (HTTP 403): "
        "check the Role in deploy/kubernetes/rbac.yaml and the kubeconfig's credentials"
    )
    # Not retried: the annotation was written once, the scale refused once.
    assert world.eu.calls.count(("apps", "deployments", "scale", "patch")) == 1
    await rec.actuator.close()


async def test_owned_deployment_is_refused(world: World) -> None:
    world.sites["us"] = Site.model_validate(
        {
            "connect": "127.0.0.1:8443",
            "addresses": ["192.0.2.10"],
            "kubernetes": {
                "context": "us-cluster",
                "namespace": NS,
                "deployment": "registry-quay-app",
            },
        }
    )
    a = world.actuator()
    outcome = await Reconciler(a).reconcile(desired(world, us=True))
    assert outcome.error == (
        "kubernetes: site us: deployment quay-enterprise/registry-quay-app is owned by "
        "QuayRegistry registry: the Operator would undo a scale; configure "
        "`kubernetes.quayregistry: registry` for this site"
    )
    assert replicas(world.us, "registry-quay-app") == 2
    assert ("apps", "deployments", "", "patch") not in world.us.calls
    await a.close()


async def test_quayregistry_scaled_down_and_restored_field_by_field(world: World) -> None:
    a = world.actuator()
    outcome = await Reconciler(a).reconcile(desired(world, us=True))
    assert outcome.applied == ["stop site us"] and outcome.in_sync, outcome
    assert components(world.us) == [
        {"kind": "quay", "managed": True, "overrides": {"replicas": 0}},
        {"kind": "horizontalpodautoscaler", "managed": False},
        {"kind": "clair", "managed": True},
    ]
    assert replicas(world.us, "registry-quay-app") == 0  # the Operator followed
    recorded = json.loads(annotations_of(world.us, "quayregistries", "registry")[DRAINED_FIELDS])
    assert recorded == {
        "horizontalpodautoscaler": {"managed": True},
        "quay": {"added_overrides": True},
    }

    # During the incident an operator edits the QuayRegistry: a new env override on
    # quay, a component moved to the front. Restore must keep both.
    def operator_edit(cr: dict[str, Any]) -> None:
        comps = cr["spec"]["components"]
        comps.insert(0, comps.pop(2))
        comps[1]["overrides"]["env"] = [
            {"name": "QUAY_DISTRIBUTED_STORAGE_PREFERENCE", "value": "usstorage eustorage"}
        ]

    world.us.edit("quayregistries", NS, "registry", operator_edit)
    await a.close()
    fresh = world.actuator()  # a restarted trafficd: the annotation tells what to undo
    outcome = await Reconciler(fresh).reconcile(desired(world))
    assert outcome.applied == ["start site us"] and outcome.in_sync, outcome
    assert components(world.us) == [
        {"kind": "clair", "managed": True},
        {
            "kind": "quay",
            "managed": True,
            "overrides": {
                "env": [
                    {"name": "QUAY_DISTRIBUTED_STORAGE_PREFERENCE", "value": "usstorage eustorage"}
                ]
            },
        },
        {"kind": "horizontalpodautoscaler", "managed": True},
    ]
    assert DRAINED_FIELDS not in annotations_of(world.us, "quayregistries", "registry")
    assert replicas(world.us, "registry-quay-app") == 2
    await fresh.close()


async def test_quayregistry_without_components_and_hpa_kept_pods(world: World) -> None:
    """A QuayRegistry with no component list: trafficd adds only what it needs, then removes it."""
    world.us.objects.clear()
    world.us.add_quayregistry(NS, "registry", None)
    a = world.actuator()
    assert (await Reconciler(a).reconcile(desired(world, us=True))).in_sync
    assert components(world.us) == [
        {"kind": "quay", "managed": True, "overrides": {"replicas": 0}},
        {"kind": "horizontalpodautoscaler", "managed": False},
    ]
    assert replicas(world.us, "registry-quay-app") == 0
    assert (await Reconciler(a).reconcile(desired(world))).in_sync
    assert components(world.us) == []
    assert replicas(world.us, "registry-quay-app") == 2
    await a.close()


async def test_preflight_and_storage_preference_drift(world: World) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    a = world.actuator(metrics)
    assert await Reconciler(a, metrics).preflight() is None
    drift = {
        site: registry.get_sample_value("trafficd_storage_preference_drift", {"site": site})
        for site in ("us", "eu")
    }
    assert drift == {"us": 0, "eu": 0}  # eu's env matches; us has no env override
    world.eu.edit(
        "deployments",
        NS,
        "quay-app",
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
            env=[{"name": "QUAY_DISTRIBUTED_STORAGE_PREFERENCE", "value": "usstorage"}]
        ),
    )
    assert await Reconciler(a, metrics).preflight() is None
    assert registry.get_sample_value("trafficd_storage_preference_drift", {"site": "eu"}) == 1
    assert registry.get_sample_value("trafficd_actuator_ready", {"actuator": "kubernetes"}) == 1
    await a.close()


async def test_rbac_manifest_grants_exactly_what_the_actuator_calls(world: World) -> None:
    docs = list(yaml.safe_load_all((REPO / "deploy/kubernetes/rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "Role")
    granted = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                res, _, sub = resource.partition("/")
                for verb in rule["verbs"]:
                    granted.add((group, res, sub, verb))
    declared = {p for perms in PERMISSIONS.values() for p in perms}
    assert granted == declared
    binding = next(d for d in docs if d["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    # Every call the actuator made in a full drain/restore of both modes is granted.
    a = world.actuator()
    await Reconciler(a).preflight()
    await Reconciler(a).reconcile(desired(world, us=True, eu=True))
    await Reconciler(a).reconcile(desired(world))
    await a.close()
    made = set(world.us.calls) | set(world.eu.calls)
    assert made == granted
