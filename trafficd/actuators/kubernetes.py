"""The kubernetes actuator: scale a site's Quay to zero while drained, and back exactly.

An instance actuator (engine -> desired `instances` per site -> here), one
cluster per site (`kubernetes.context` of the kubeconfig, or in-cluster
config). Two modes, per site:

- `deployment` (Quay deployed without the Operator): the app Deployment (and
  with `mirror: true` its mirror Deployment, named `<name>-mirror`, or with an
  `-app` suffix replaced by `-mirror`) is scaled through its `scale`
  subresource. The previous replica count is written first as the
  annotation `trafficd.io/previous-replicas` and kept in trafficd's state,
  and exactly that count is restored. A Deployment owned by a QuayRegistry
  is refused: the Operator would undo the scale.
- `quayregistry` (Operator-managed Quay): the QuayRegistry is JSON-patched so
  the `quay` (and `mirror`) component has `overrides.replicas: 0` and the
  `horizontalpodautoscaler` component `managed: false` (it governs the quay,
  clair and mirror HPAs together). What was changed is recorded in the
  annotation `trafficd.io/drained-fields` and in trafficd's state; recovery
  patches back only those fields (located by component kind, never by an
  old copy of the list), then waits for `<name>-quay-app` to have available
  replicas (an HPA never scales up from 0).

Deployments are patched with a strategic merge patch (a dict body), the
QuayRegistry with a JSON Patch (a list body: custom resources take no
strategic merge), as kubernetes_asyncio chooses from the body's type.
Every write carries the resourceVersion that was read, so a concurrent edit
fails with 409 and the reconciler reads again.

Each site (its cluster) is a target of its own (`split`): its stop, start and
wait for availability run independently of every other site's, so a site
whose pods never become available (a crash loop) holds up only itself. The
wait is bounded by `timeout`; a site still unavailable then is reported
(`trafficd_site_instances_unavailable{site}` and the actuation event) and
tried again at the next reconcile. Preflight asks the API server
(SelfSubjectAccessReview) for each verb this actuator uses and compares each
site's real `QUAY_DISTRIBUTED_STORAGE_PREFERENCE` with its `storage` list.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client.rest import ApiException

from trafficd.actuators.base import (
    Actuator,
    ActuatorAuthError,
    ActuatorError,
    ActuatorPermanentError,
    BuildContext,
    ConcurrentChangeError,
    Desired,
    DesiredSite,
    Plan,
    Remembering,
    Role,
    Serving,
    Splitting,
    views,
)
from trafficd.config.model import KubernetesActuator, SiteKubernetes
from trafficd.metrics import Metrics

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "quay.redhat.com", "v1", "quayregistries"
PREVIOUS_REPLICAS = "trafficd.io/previous-replicas"
DRAINED_FIELDS = "trafficd.io/drained-fields"
PREFERENCE_ENV = "QUAY_DISTRIBUTED_STORAGE_PREFERENCE"

# (API group, resource, subresource, verb): every call this actuator makes, per mode.
# deploy/kubernetes/rbac.yaml grants exactly these; a test holds them equal.
PERMISSIONS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "deployment": (
        ("apps", "deployments", "", "get"),
        ("apps", "deployments", "", "patch"),
        ("apps", "deployments", "scale", "get"),
        ("apps", "deployments", "scale", "patch"),
    ),
    "quayregistry": (
        (GROUP, PLURAL, "", "get"),
        (GROUP, PLURAL, "", "patch"),
        ("apps", "deployments", "", "get"),
    ),
}


def _pointer(key: str) -> str:
    """A JSON Pointer segment (RFC 6901): annotation keys hold '/'."""
    return key.replace("~", "~0").replace("/", "~1")


def mirror_name(deployment: str) -> str:
    return (
        deployment[: -len("-app")] + "-mirror"
        if deployment.endswith("-app")
        else (f"{deployment}-mirror")
    )


@dataclass(frozen=True)
class SiteInstances:
    state: str  # "running" | "stopped"
    available: int


Change = tuple[str, str]  # the site and what is done to it: stop, start or wait


class Kubernetes(Actuator[Mapping[str, SiteInstances], Change], Splitting, Serving, Remembering):
    role: Role = "instances"

    def __init__(
        self,
        config: KubernetesActuator,
        context: BuildContext | None = None,
        *,
        poll: float = 1.0,
    ) -> None:
        self.ident = config.ident
        self.kubeconfig = config.kubeconfig
        self.timeout = config.timeout
        self.poll = poll
        sites = context.sites if context else {}
        self.sites: dict[str, SiteKubernetes] = {
            name: site.kubernetes for name, site in sorted(sites.items()) if site.kubernetes
        }
        self.storage = {name: list(site.storage or []) for name, site in sites.items()}
        self.metrics: Metrics | None = context.metrics if context else None
        self._clients: dict[str | None, client.ApiClient] = {}
        self._connecting = asyncio.Lock()  # sites' views share the clients: build each once
        # site -> what the drain changed: {"replicas": {deployment: n}} or {"fields": {...}}
        self.memory: dict[str, dict[str, Any]] = {}
        self.drift: dict[str, bool] = {}

    # --- memory the daemon persists ------------------------------------------------------

    # The memory's key in state.json stays "remembered": files written before the
    # attribute was renamed `memory` load unchanged.
    def export_memory(self) -> dict[str, Any]:
        return {"remembered": json.loads(json.dumps(self.memory))}

    def import_memory(self, memory: Mapping[str, Any]) -> None:
        # In place: every site's view (split) shares this dict.
        self.memory.clear()
        self.memory.update(
            {k: v for k, v in dict(memory.get("remembered", {})).items() if k in self.sites}
        )

    def serves(self, site: DesiredSite) -> bool:
        return site.name in self.sites

    def split(self) -> dict[str, Kubernetes]:
        """One view per site, sharing the API clients and what the drains changed."""
        return views(self, "sites", {site: {site: cfg} for site, cfg in self.sites.items()})

    # --- API plumbing ----------------------------------------------------------------------

    async def api(self, site: str) -> client.ApiClient:
        context = self.sites[site].context
        async with self._connecting:
            return await self._api(context)

    async def _api(self, context: str | None) -> client.ApiClient:
        if context not in self._clients:
            if self.kubeconfig:
                self._clients[context] = await kube_config.new_client_from_config(
                    config_file=self.kubeconfig, context=context
                )
            else:
                configuration = client.Configuration()
                kube_config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration
                )
                self._clients[context] = client.ApiClient(configuration=configuration)
        return self._clients[context]

    def _error(self, site: str, what: str, exc: BaseException) -> ActuatorError:
        where = f"{self.ident}: site {site}: {what}"
        if isinstance(exc, ApiException):
            if exc.status == 409:
                return ConcurrentChangeError(f"{where}: changed by someone else (409); re-reading")
            if exc.status in (401, 403):
                return ActuatorAuthError(
                    f"{where}: forbidden (HTTP {exc.status}): check the Role in "
                    "deploy/kubernetes/rbac.yaml and the kubeconfig's credentials"
                )
            if exc.status == 404:
                return ActuatorPermanentError(f"{where}: not found (404)")
            return ActuatorError(f"{where}: HTTP {exc.status} {exc.reason or ''}".rstrip())
        return ActuatorError(f"{where}: {type(exc).__name__}: {exc}")

    async def _call(self, site: str, what: str, coro: Any) -> Any:
        try:
            async with asyncio.timeout(30):
                return await coro
        except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._error(site, what, exc) from None

    def _deployments(self, site: str) -> list[str]:
        cfg = self.sites[site]
        assert cfg.deployment is not None
        return [cfg.deployment] + ([mirror_name(cfg.deployment)] if cfg.mirror else [])

    def _app_deployment(self, site: str) -> str:
        cfg = self.sites[site]
        return cfg.deployment or f"{cfg.quayregistry}-quay-app"

    async def _get_cr(self, site: str) -> dict[str, Any]:
        cfg = self.sites[site]
        assert cfg.quayregistry is not None
        api = client.CustomObjectsApi(await self.api(site))
        cr: dict[str, Any] = await self._call(
            site,
            f"get quayregistry {cfg.namespace}/{cfg.quayregistry}",
            api.get_namespaced_custom_object(
                GROUP, VERSION, cfg.namespace, PLURAL, cfg.quayregistry
            ),
        )
        return cr

    async def _get_deployment(self, site: str, name: str) -> Any:
        cfg = self.sites[site]
        apps = client.AppsV1Api(await self.api(site))
        return await self._call(
            site,
            f"get deployment {cfg.namespace}/{name}",
            apps.read_namespaced_deployment(name, cfg.namespace),
        )

    # --- read / plan / apply -------------------------------------------------------------

    async def read(self) -> dict[str, SiteInstances]:
        current = {}
        for site, cfg in self.sites.items():
            if cfg.quayregistry:
                cr = await self._get_cr(site)
                quay = _component(cr, "quay")
                stopped = quay is not None and (quay.get("overrides") or {}).get("replicas") == 0
                dep = await self._get_deployment(site, self._app_deployment(site))
                available = (dep.status.available_replicas or 0) if dep.status else 0
            else:
                deps = [await self._get_deployment(site, n) for n in self._deployments(site)]
                stopped = all((d.spec.replicas or 0) == 0 for d in deps)
                available = (deps[0].status.available_replicas or 0) if deps[0].status else 0
            if stopped:
                self._unavailable(site, False)  # stopped on purpose
            current[site] = SiteInstances("stopped" if stopped else "running", available)
        return current

    def plan(self, current: Mapping[str, SiteInstances], desired: Desired) -> Plan[Change]:
        plan: Plan[Change] = Plan()
        for site in self.sites:
            target = desired.get(site)
            if target is None or not target.managed:
                continue
            have = current.get(site)
            if have is not None and have.state == target.instances:
                if target.instances == "stopped" or have.available > 0:
                    continue
                plan.changes.append(f"wait for site {site}'s instances to become available")
                plan.payload.append((site, "wait"))
                continue
            action = "stop" if target.instances == "stopped" else "start"
            plan.changes.append(f"{action} site {site}")
            plan.payload.append((site, action))
        return plan

    async def apply(self, plan: Plan[Change]) -> None:
        for site, action in plan.payload:
            cfg = self.sites[site]
            if action == "wait":
                await self._wait_available(site)
            elif cfg.quayregistry:
                await (self._stop_cr(site) if action == "stop" else self._start_cr(site))
            else:
                await (
                    self._stop_deployments(site)
                    if action == "stop"
                    else self._start_deployments(site)
                )

    # --- deployment mode -----------------------------------------------------------------

    async def _stop_deployments(self, site: str) -> None:
        cfg = self.sites[site]
        saved = self.memory.setdefault(site, {}).setdefault("replicas", {})
        for name in self._deployments(site):
            dep = await self._get_deployment(site, name)
            owners = [o for o in dep.metadata.owner_references or [] if o.kind == "QuayRegistry"]
            if owners:
                raise ActuatorPermanentError(
                    f"{self.ident}: site {site}: deployment {cfg.namespace}/{name} is owned by "
                    f"QuayRegistry {owners[0].name}: the Operator would undo a scale; "
                    f"configure `kubernetes.quayregistry: {owners[0].name}` for this site"
                )
            replicas = dep.spec.replicas if dep.spec.replicas is not None else 1
            if replicas == 0:
                continue
            saved[name] = replicas
            annotated = await self._annotate(
                site, name, str(replicas), dep.metadata.resource_version
            )
            await self._scale(site, name, 0, annotated.metadata.resource_version)
            log.info("%s: site %s: scaled %s from %d to 0", self.ident, site, name, replicas)

    async def _annotate(
        self, site: str, name: str, previous: str | None, resource_version: str
    ) -> Any:
        """Sets (or with None removes) the previous-replicas annotation of a Deployment."""
        cfg = self.sites[site]
        apps = client.AppsV1Api(await self.api(site))
        return await self._call(
            site,
            f"annotate deployment {cfg.namespace}/{name}",
            apps.patch_namespaced_deployment(
                name,
                cfg.namespace,
                {
                    "metadata": {
                        "resourceVersion": resource_version,
                        "annotations": {PREVIOUS_REPLICAS: previous},
                    }
                },
            ),
        )

    async def _scale(self, site: str, name: str, replicas: int, resource_version: str) -> None:
        cfg = self.sites[site]
        apps = client.AppsV1Api(await self.api(site))
        await self._call(
            site,
            f"scale deployment {cfg.namespace}/{name}",
            apps.patch_namespaced_deployment_scale(
                name,
                cfg.namespace,
                {"metadata": {"resourceVersion": resource_version}, "spec": {"replicas": replicas}},
            ),
        )

    async def _start_deployments(self, site: str) -> None:
        cfg = self.sites[site]
        apps = client.AppsV1Api(await self.api(site))
        saved = self.memory.get(site, {}).get("replicas", {})
        for name in self._deployments(site):
            scale = await self._call(
                site,
                f"get deployment {cfg.namespace}/{name}/scale",
                apps.read_namespaced_deployment_scale(name, cfg.namespace),
            )
            dep = await self._get_deployment(site, name)
            annotation = (dep.metadata.annotations or {}).get(PREVIOUS_REPLICAS)
            count = saved.get(name) or (
                int(annotation) if annotation and annotation.isdigit() else None
            )
            if (scale.spec.replicas or 0) == 0:
                if not count:
                    raise ActuatorPermanentError(
                        f"{self.ident}: site {site}: deployment {cfg.namespace}/{name}: the "
                        f"replica count before the drain is unknown (no {PREVIOUS_REPLICAS} "
                        "annotation, nothing in trafficd's state): scale it by hand"
                    )
                await self._scale(site, name, count, scale.metadata.resource_version)
                log.info("%s: site %s: scaled %s back to %d", self.ident, site, name, count)
                dep = await self._get_deployment(site, name)
            if annotation is not None:
                await self._annotate(site, name, None, dep.metadata.resource_version)
        self.memory.pop(site, None)
        await self._wait_available(site)

    # --- quayregistry mode ---------------------------------------------------------------

    async def _patch_cr(self, site: str, ops: list[dict[str, Any]], rv: str) -> None:
        cfg = self.sites[site]
        api = client.CustomObjectsApi(await self.api(site))
        # The resourceVersion in the patched object makes the API server refuse (409)
        # a patch of anything but the version that was read.
        ops = [{"op": "replace", "path": "/metadata/resourceVersion", "value": rv}, *ops]
        assert cfg.quayregistry is not None
        await self._call(
            site,
            f"patch quayregistry {cfg.namespace}/{cfg.quayregistry}",
            api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                cfg.namespace,
                PLURAL,
                cfg.quayregistry,
                ops,
            ),
        )

    async def _stop_cr(self, site: str) -> None:
        cr = await self._get_cr(site)
        rv = cr["metadata"]["resourceVersion"]
        components = list((cr.get("spec") or {}).get("components") or [])
        ops: list[dict[str, Any]] = []
        fields: dict[str, Any] = {}
        if "components" not in (cr.get("spec") or {}):
            ops.append({"op": "add", "path": "/spec/components", "value": []})
        kinds = ["quay"] + (["mirror"] if self.sites[site].mirror else [])
        for kind in kinds:
            index, comp = _find(components, kind)
            if comp is None:
                ops.append(
                    {
                        "op": "add",
                        "path": "/spec/components/-",
                        "value": {"kind": kind, "managed": True, "overrides": {"replicas": 0}},
                    }
                )
                fields[kind] = {"added_component": True}
                continue
            overrides = comp.get("overrides")
            if overrides is not None and overrides.get("replicas") == 0:
                continue
            ops.append({"op": "test", "path": f"/spec/components/{index}/kind", "value": kind})
            if overrides is None:
                ops.append(
                    {
                        "op": "add",
                        "path": f"/spec/components/{index}/overrides",
                        "value": {"replicas": 0},
                    }
                )
                fields[kind] = {"added_overrides": True}
            else:
                ops.append(
                    {
                        "op": "add",
                        "path": f"/spec/components/{index}/overrides/replicas",
                        "value": 0,
                    }
                )
                fields[kind] = {"replicas": overrides.get("replicas")}
        index, hpa = _find(components, "horizontalpodautoscaler")
        if hpa is None:
            ops.append(
                {
                    "op": "add",
                    "path": "/spec/components/-",
                    "value": {"kind": "horizontalpodautoscaler", "managed": False},
                }
            )
            fields["horizontalpodautoscaler"] = {"added_component": True}
        elif hpa.get("managed", True):
            ops += [
                {
                    "op": "test",
                    "path": f"/spec/components/{index}/kind",
                    "value": "horizontalpodautoscaler",
                },
                {"op": "replace", "path": f"/spec/components/{index}/managed", "value": False},
            ]
            fields["horizontalpodautoscaler"] = {"managed": True}
        if not fields:
            return
        merged = {**self.memory.get(site, {}).get("fields", {}), **fields}
        ops += _annotation_ops(cr, DRAINED_FIELDS, json.dumps(merged, sort_keys=True))
        self.memory[site] = {"fields": merged}
        await self._patch_cr(site, ops, rv)
        log.info("%s: site %s: quayregistry scaled to 0 (%s)", self.ident, site, ", ".join(fields))

    async def _start_cr(self, site: str) -> None:
        cr = await self._get_cr(site)
        rv = cr["metadata"]["resourceVersion"]
        fields = self.memory.get(site, {}).get("fields")
        annotation = ((cr.get("metadata") or {}).get("annotations") or {}).get(DRAINED_FIELDS)
        if fields is None and annotation:
            try:
                fields = json.loads(annotation)
            except ValueError:
                fields = None
        components = list((cr.get("spec") or {}).get("components") or [])
        ops: list[dict[str, Any]] = []
        removals: list[int] = []
        if fields is None:
            # Nothing recorded: remove only a zero replica override, which is what stops it.
            fields = {"quay": {"replicas": None}}
        for kind, change in fields.items():
            index, comp = _find(components, kind)
            if comp is None:
                continue
            base = f"/spec/components/{index}"
            test = {"op": "test", "path": f"{base}/kind", "value": kind}
            if kind == "horizontalpodautoscaler":
                if change.get("added_component") and comp == {"kind": kind, "managed": False}:
                    removals.append(index)
                elif comp.get("managed") is False:
                    ops += [test, {"op": "replace", "path": f"{base}/managed", "value": True}]
                continue
            overrides = comp.get("overrides") or {}
            if overrides.get("replicas") != 0:
                continue  # someone set another count during the incident: theirs stands
            if change.get("added_component") and comp == {
                "kind": kind,
                "managed": True,
                "overrides": {"replicas": 0},
            }:
                removals.append(index)
            elif change.get("added_overrides") and overrides == {"replicas": 0}:
                ops += [test, {"op": "remove", "path": f"{base}/overrides"}]
            elif change.get("replicas") is not None:
                ops += [
                    test,
                    {
                        "op": "replace",
                        "path": f"{base}/overrides/replicas",
                        "value": change["replicas"],
                    },
                ]
            else:
                ops += [test, {"op": "remove", "path": f"{base}/overrides/replicas"}]
        for index in sorted(removals, reverse=True):
            kind = components[index]["kind"]
            ops += [
                {"op": "test", "path": f"/spec/components/{index}/kind", "value": kind},
                {"op": "remove", "path": f"/spec/components/{index}"},
            ]
        if annotation is not None:
            ops.append(
                {"op": "remove", "path": f"/metadata/annotations/{_pointer(DRAINED_FIELDS)}"}
            )
        if ops:
            await self._patch_cr(site, ops, rv)
            log.info("%s: site %s: quayregistry restored (%s)", self.ident, site, ", ".join(fields))
        self.memory.pop(site, None)
        await self._wait_available(site)

    async def _wait_available(self, site: str) -> None:
        """Instances are up when the app Deployment has an available replica."""
        name = self._app_deployment(site)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            dep = await self._get_deployment(site, name)
            if dep.status and (dep.status.available_replicas or 0) > 0:
                self._unavailable(site, False)
                return
            if loop.time() >= deadline:
                self._unavailable(site, True)
                # Not retried at once: the wait is bounded, the next reconcile waits again.
                raise ActuatorPermanentError(
                    f"{self.ident}: site {site}: deployment {name} has no available replica "
                    f"after {self.timeout:g}s"
                )
            await asyncio.sleep(self.poll)

    def _unavailable(self, site: str, unavailable: bool) -> None:
        if self.metrics is not None:
            self.metrics.site_instances_unavailable.labels(site=site).set(1 if unavailable else 0)

    # --- preflight -------------------------------------------------------------------------

    async def preflight(self) -> None:
        """RBAC per verb (SelfSubjectAccessReview), then the storage preference drift check."""
        denied = []
        for site, cfg in self.sites.items():
            auth = client.AuthorizationV1Api(await self.api(site))
            mode = "quayregistry" if cfg.quayregistry else "deployment"
            for group, resource, sub, verb in PERMISSIONS[mode]:
                review = client.V1SelfSubjectAccessReview(
                    spec=client.V1SelfSubjectAccessReviewSpec(
                        resource_attributes=client.V1ResourceAttributes(
                            group=group,
                            resource=resource,
                            subresource=sub or None,
                            verb=verb,
                            namespace=cfg.namespace,
                        )
                    )
                )
                answer = await self._call(
                    site, "SelfSubjectAccessReview", auth.create_self_subject_access_review(review)
                )
                if not answer.status.allowed:
                    what = resource + (f"/{sub}" if sub else "")
                    denied.append(f"site {site}: {verb} {what} in {cfg.namespace}")
            await self._check_preference(site)
        if denied:
            raise ActuatorAuthError(f"{self.ident}: not allowed: {'; '.join(denied)}")

    async def _check_preference(self, site: str) -> None:
        cfg = self.sites[site]
        env: list[Any]
        if cfg.quayregistry:
            quay = _component(await self._get_cr(site), "quay") or {}
            env = list((quay.get("overrides") or {}).get("env") or [])
            value = next((e.get("value") for e in env if e.get("name") == PREFERENCE_ENV), None)
        else:
            dep = await self._get_deployment(site, self._app_deployment(site))
            containers = dep.spec.template.spec.containers or []
            value = next(
                (e.value for c in containers for e in c.env or [] if e.name == PREFERENCE_ENV),
                None,
            )
        real = (value or "").split()
        drift = bool(real) and real != self.storage.get(site, [])
        if drift:
            log.warning(
                "%s: site %s: %s is %s but trafficd's config says %s",
                self.ident,
                site,
                PREFERENCE_ENV,
                " ".join(real),
                " ".join(self.storage.get(site, [])) or "(nothing)",
            )
        self.drift[site] = drift
        if self.metrics is not None:
            self.metrics.storage_preference_drift.labels(site=site).set(1 if drift else 0)

    async def close(self) -> None:
        for api in self._clients.values():
            await api.close()
        self._clients.clear()


def _find(components: list[dict[str, Any]], kind: str) -> tuple[int, dict[str, Any] | None]:
    for i, comp in enumerate(components):
        if comp.get("kind") == kind:
            return i, comp
    return -1, None


def _component(cr: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    return _find(list((cr.get("spec") or {}).get("components") or []), kind)[1]


def _annotation_ops(cr: Mapping[str, Any], key: str, value: str) -> list[dict[str, Any]]:
    if (cr.get("metadata") or {}).get("annotations") is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": {key: value}}]
    return [{"op": "add", "path": f"/metadata/annotations/{_pointer(key)}", "value": value}]
