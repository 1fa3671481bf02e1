"""A FAKE Kubernetes API server, for the kubernetes actuator's tests only.

No Kubernetes API server can run on these machines, so this aiohttp app
answers exactly the calls the actuator makes, in the API's wire format
(https://kubernetes.io/docs/reference/using-api/api-concepts/):

- GET/PATCH `/apis/apps/v1/namespaces/NS/deployments/NAME` and its `scale`
  subresource (`autoscaling/v1` Scale); GET/PATCH
  `/apis/quay.redhat.com/v1/namespaces/NS/quayregistries/NAME`;
  POST `/apis/authorization.k8s.io/v1/selfsubjectaccessreviews`.
- PATCH bodies by Content-Type: `application/json-patch+json` (RFC 6902, with
  the jsonpatch library), `application/merge-patch+json` (RFC 7386), and
  `application/strategic-merge-patch+json` for Deployments only (for the
  fields the actuator sends, annotations and replicas, it merges as RFC 7386
  does); custom resources refuse strategic merge with 415, as the real
  server does.
- Optimistic concurrency: a patched object whose `metadata.resourceVersion`
  differs from the stored one is refused with 409 Conflict, as the API server
  does for any write that carries a resourceVersion precondition.
- RBAC: each request needs its (group, resource, subresource, verb) in
  `allowed`, else 403 Forbidden; SelfSubjectAccessReview answers from the
  same set. The bearer token must match, else 401. Errors are `Status` objects.
- Every QuayRegistry the fake accepts is validated against the CRD's OpenAPI
  schema: the Operator's `quayregistries.crd.yaml`, found through
  `TRAFFICD_SHARED_DIR` (see `shared_data`).

Operator behaviour it reproduces (quay/quay-operator):
- the app Deployment is named `<registry>-quay-app` and is owned by the
  QuayRegistry (ownerReferences, controller: true), which the Operator
  checks before trusting its status (`pkg/cmpstatus/quay.go`, `mirror.go`:
  "deployment not owned by QuayRegistry");
- `overrides.replicas` of the quay component sets the Deployment's replicas
  (`apis/quay/v1/quayregistry_types.go` GetReplicasOverrideForComponent,
  applied in `pkg/middleware/middleware.go`; without an override, 2);
- while the `horizontalpodautoscaler` component is managed, the HPA of
  quay-app (minReplicas 2, `kustomize/components/hpa/`) keeps the pods up
  even with `replicas: 0` (the reason the backup procedure unmanages it).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jsonpatch
import jsonschema
import yaml
from aiohttp import web

from tests.peers import free_port


def shared_data(name: str) -> Path:
    """A file of the shared test data, read in place (never copied into the project).

    Its directory comes from `TRAFFICD_SHARED_DIR` (its `data/` holds the file), which
    .ci/run sets. Missing is an error that says so, not a skip.
    """
    base = os.environ.get("TRAFFICD_SHARED_DIR")
    if not base:
        raise RuntimeError(
            f"TRAFFICD_SHARED_DIR is not set: point it at the directory whose data/ holds {name}"
            " (.ci/run sets it)"
        )
    path = Path(base) / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (TRAFFICD_SHARED_DIR={base})")
    return path


TOKEN = "fake-cluster-token"
HPA_MIN_REPLICAS = 2
Key = tuple[str, str, str, str]  # (group, resource, subresource, verb)


def _openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI v3 `nullable: true` is JSON Schema's type [T, "null"]."""
    if isinstance(node, dict):
        out = {k: _openapi_to_jsonschema(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") and "type" in node:
            out["type"] = [node["type"], "null"]
        return out
    if isinstance(node, list):
        return [_openapi_to_jsonschema(v) for v in node]
    return node


def crd_validator() -> jsonschema.protocols.Validator:
    crd = yaml.safe_load(shared_data("quayregistries.crd.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = _openapi_to_jsonschema(version["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


def deployment(
    name: str, namespace: str, replicas: int, *, owner: str | None = None, env: dict[str, str]
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": f"uid-{name}"}
    if owner:
        meta["ownerReferences"] = [
            {
                "apiVersion": "quay.redhat.com/v1",
                "kind": "QuayRegistry",
                "name": owner,
                "uid": f"uid-{owner}",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "quay-app",
                            "image": "quay.io/projectquay/quay:v3.18.0",
                            "env": [{"name": k, "value": v} for k, v in env.items()],
                        }
                    ]
                },
            },
        },
        "status": {"replicas": replicas, "availableReplicas": replicas},
    }


class FakeCluster:
    """One site's cluster. `objects` is keyed by (resource, namespace, name)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.version = 100
        self.allowed: set[Key] = {
            ("apps", "deployments", "", "get"),
            ("apps", "deployments", "", "patch"),
            ("apps", "deployments", "scale", "get"),
            ("apps", "deployments", "scale", "patch"),
            ("quay.redhat.com", "quayregistries", "", "get"),
            ("quay.redhat.com", "quayregistries", "", "patch"),
        }
        self.calls: list[Key] = []
        self.conflicts = 0  # the next N patches find the object changed by someone else
        self.unavailable_reads = 0  # GETs of a scaled-up Deployment before pods are available
        self.validator = crd_validator()
        self.url = ""

    # --- objects -------------------------------------------------------------------------

    def _bump(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    def add_deployment(self, namespace: str, obj: dict[str, Any]) -> None:
        self._bump(obj)
        self.objects[("deployments", namespace, obj["metadata"]["name"])] = obj

    def add_quayregistry(self, namespace: str, name: str, components: list[Any] | None) -> None:
        cr: dict[str, Any] = {
            "apiVersion": "quay.redhat.com/v1",
            "kind": "QuayRegistry",
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
            "spec": {"configBundleSecret": f"{name}-config-bundle"},
        }
        if components is not None:
            cr["spec"]["components"] = components
        self.validator.validate(cr)
        self._bump(cr)
        self.objects[("quayregistries", namespace, name)] = cr
        self.add_deployment(
            namespace,
            deployment(f"{name}-quay-app", namespace, HPA_MIN_REPLICAS, owner=name, env={}),
        )
        self.operator_reconcile(namespace, name)

    def operator_reconcile(self, namespace: str, name: str) -> None:
        """What the Quay Operator makes of the QuayRegistry (see the module docstring)."""
        cr = self.objects[("quayregistries", namespace, name)]
        comps = {c["kind"]: c for c in cr["spec"].get("components") or []}
        quay = comps.get("quay", {})
        override = (quay.get("overrides") or {}).get("replicas")
        hpa_managed = comps.get("horizontalpodautoscaler", {}).get("managed", True)
        replicas = HPA_MIN_REPLICAS if override is None else override
        if hpa_managed:
            replicas = max(replicas, HPA_MIN_REPLICAS)
        dep = self.objects[("deployments", namespace, f"{name}-quay-app")]
        env = {e["name"]: e.get("value", "") for e in (quay.get("overrides") or {}).get("env", [])}
        container = dep["spec"]["template"]["spec"]["containers"][0]
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
        if dep["spec"]["replicas"] != replicas:
            dep["spec"]["replicas"] = replicas
            self._scaled(dep)
            self._bump(dep)

    def _scaled(self, dep: dict[str, Any]) -> None:
        replicas = dep["spec"]["replicas"]
        dep["status"]["replicas"] = replicas
        if replicas == 0 or not self.unavailable_reads:
            dep["status"]["availableReplicas"] = replicas
        else:
            dep["status"]["availableReplicas"] = 0
            dep["status"]["pendingAvailable"] = self.unavailable_reads

    def edit(self, resource: str, namespace: str, name: str, fn: Any) -> None:
        """Someone else's edit (kubectl, the Operator): a new resourceVersion."""
        obj = self.objects[(resource, namespace, name)]
        fn(obj)
        self._bump(obj)
        if resource == "quayregistries":
            self.validator.validate(obj)
            self.operator_reconcile(namespace, name)

    # --- HTTP ----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        deps = "/apis/apps/v1/namespaces/{ns}/deployments/{name}"
        crs = "/apis/quay.redhat.com/v1/namespaces/{ns}/quayregistries/{name}"
        app.router.add_get(deps, self.get_deployment)
        app.router.add_patch(deps, self.patch_deployment)
        app.router.add_get(deps + "/scale", self.get_scale)
        app.router.add_patch(deps + "/scale", self.patch_scale)
        app.router.add_get(crs, self.get_cr)
        app.router.add_patch(crs, self.patch_cr)
        app.router.add_post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", self.access_review
        )
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return status(401, "Unauthorized", "Unauthorized")
        response: web.StreamResponse = await handler(request)
        return response

    def _check(self, key: Key, request: web.Request) -> web.Response | None:
        self.calls.append(key)
        if key not in self.allowed:
            group, resource, sub, verb = key
            what = resource + (f"/{sub}" if sub else "")
            return status(
                403,
                "Forbidden",
                f'{what}.{group} "{request.match_info["name"]}" is forbidden: User '
                f'"system:serviceaccount:trafficd:trafficd" cannot {verb} resource "{what}" '
                f'in API group "{group}" in the namespace "{request.match_info["ns"]}"',
            )
        return None

    def _find(self, resource: str, request: web.Request) -> dict[str, Any] | None:
        return self.objects.get((resource, request.match_info["ns"], request.match_info["name"]))

    async def _patched(
        self, request: web.Request, obj: dict[str, Any], *, strategic: bool
    ) -> dict[str, Any] | web.Response:
        ctype = request.content_type
        body = await request.json()
        if ctype == "application/json-patch+json":
            try:
                return dict(jsonpatch.apply_patch(obj, body))
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                return status(422, "Invalid", f"the server rejected our request: {exc}")
        if ctype == "application/merge-patch+json" or (
            strategic and ctype == "application/strategic-merge-patch+json"
        ):
            return dict(merge_patch(obj, body))
        return status(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an "
            "unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json",
        )

    def _conflict(self, obj: dict[str, Any], new: dict[str, Any]) -> web.Response | None:
        if self.conflicts:
            self.conflicts -= 1
            self._bump(obj)  # someone else wrote in between
        want = new.get("metadata", {}).get("resourceVersion")
        if want is not None and want != obj["metadata"]["resourceVersion"]:
            return status(
                409,
                "Conflict",
                f"Operation cannot be fulfilled on {obj['kind'].lower()}s "
                f'"{obj["metadata"]["name"]}": the object has been modified; please apply '
                "your changes to the latest version and try again",
            )
        return None

    async def get_deployment(self, request: web.Request) -> web.Response:
        if denied := self._check(("apps", "deployments", "", "get"), request):
            return denied
        dep = self._find("deployments", request)
        if dep is None:
            return status(404, "NotFound", "deployment not found")
        pending = dep["status"].get("pendingAvailable")
        if pending is not None:
            if pending <= 0:
                dep["status"]["availableReplicas"] = dep["spec"]["replicas"]
                del dep["status"]["pendingAvailable"]
            else:
                dep["status"]["pendingAvailable"] = pending - 1
        shown = copy.deepcopy(dep)
        shown["status"].pop("pendingAvailable", None)
        return web.json_response(shown)

    async def patch_deployment(self, request: web.Request) -> web.Response:
        if denied := self._check(("apps", "deployments", "", "patch"), request):
            return denied
        dep = self._find("deployments", request)
        if dep is None:
            return status(404, "NotFound", "deployment not found")
        new = await self._patched(request, dep, strategic=True)
        if isinstance(new, web.Response):
            return new
        if conflict := self._conflict(dep, new):
            return conflict
        new["metadata"]["resourceVersion"] = dep["metadata"]["resourceVersion"]
        dep.clear()
        dep.update(new)
        self._bump(dep)
        return web.json_response(dep)

    def _scale_of(self, dep: dict[str, Any]) -> dict[str, Any]:
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": dep["metadata"]["name"],
                "namespace": dep["metadata"]["namespace"],
                "resourceVersion": dep["metadata"]["resourceVersion"],
            },
            "spec": {"replicas": dep["spec"]["replicas"]},
            "status": {"replicas": dep["status"]["replicas"], "selector": "app=quay"},
        }

    async def get_scale(self, request: web.Request) -> web.Response:
        if denied := self._check(("apps", "deployments", "scale", "get"), request):
            return denied
        dep = self._find("deployments", request)
        if dep is None:
            return status(404, "NotFound", "deployment not found")
        return web.json_response(self._scale_of(dep))

    async def patch_scale(self, request: web.Request) -> web.Response:
        if denied := self._check(("apps", "deployments", "scale", "patch"), request):
            return denied
        dep = self._find("deployments", request)
        if dep is None:
            return status(404, "NotFound", "deployment not found")
        new = await self._patched(request, self._scale_of(dep), strategic=True)
        if isinstance(new, web.Response):
            return new
        if conflict := self._conflict(dep, new):
            return conflict
        dep["spec"]["replicas"] = int(new["spec"]["replicas"])
        self._scaled(dep)
        self._bump(dep)
        return web.json_response(self._scale_of(dep))

    async def get_cr(self, request: web.Request) -> web.Response:
        if denied := self._check(("quay.redhat.com", "quayregistries", "", "get"), request):
            return denied
        cr = self._find("quayregistries", request)
        if cr is None:
            return status(404, "NotFound", "quayregistry not found")
        return web.json_response(cr)

    async def patch_cr(self, request: web.Request) -> web.Response:
        if denied := self._check(("quay.redhat.com", "quayregistries", "", "patch"), request):
            return denied
        cr = self._find("quayregistries", request)
        if cr is None:
            return status(404, "NotFound", "quayregistry not found")
        new = await self._patched(request, cr, strategic=False)
        if isinstance(new, web.Response):
            return new
        if conflict := self._conflict(cr, new):
            return conflict
        errors = sorted(self.validator.iter_errors(new), key=str)
        if errors:
            path = ".".join(str(p) for p in errors[0].absolute_path)
            return status(422, "Invalid", f"QuayRegistry is invalid: {path}: {errors[0].message}")
        cr.clear()
        cr.update(new)
        self._bump(cr)
        self.operator_reconcile(request.match_info["ns"], request.match_info["name"])
        return web.json_response(cr)

    async def access_review(self, request: web.Request) -> web.Response:
        review = await request.json()
        attrs = review["spec"]["resourceAttributes"]
        key = (
            attrs.get("group", ""),
            attrs["resource"],
            attrs.get("subresource") or "",
            attrs["verb"],
        )
        review["status"] = {"allowed": key in self.allowed}
        return web.json_response(review, status=201)


@asynccontextmanager
async def serve(*clusters: FakeCluster) -> AsyncIterator[None]:
    runners = []
    try:
        for cluster in clusters:
            runner = web.AppRunner(cluster.app())
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            cluster.url = f"http://127.0.0.1:{port}"
            runners.append(runner)
        yield
    finally:
        for runner in runners:
            await runner.cleanup()


def kubeconfig(path: Path, clusters: dict[str, FakeCluster]) -> Path:
    """A kubeconfig with one context per site, each pointing at its fake cluster."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": name, "cluster": {"server": c.url}} for name, c in clusters.items()
                ],
                "users": [{"name": "trafficd", "user": {"token": TOKEN}}],
                "contexts": [
                    {"name": f"{name}-cluster", "context": {"cluster": name, "user": "trafficd"}}
                    for name in clusters
                ],
                "current-context": f"{next(iter(clusters))}-cluster",
            }
        )
    )
    return path
