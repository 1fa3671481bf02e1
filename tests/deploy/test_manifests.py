"""Deployment files: parsed, and the references between them checked.

Ports, paths, users and config keys must agree across the systemd unit, the
Containerfile, the Kubernetes manifests, the configuration they carry (which
must load with trafficd's own loader) and the Route 53 health check example.
"""

from __future__ import annotations

import configparser
import json
import re
from pathlib import Path
from typing import Any

import trustme
import yaml

from trafficd.config import load
from trafficd.config.types import split_host_port

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy/kubernetes"


def k8s(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def documents() -> list[dict[str, Any]]:
    kustomization = k8s("kustomization.yaml")[0]
    out = []
    for resource in kustomization["resources"]:
        for doc in k8s(resource):
            assert doc["metadata"].get("namespace") == kustomization["namespace"], doc["kind"]
            out.append(doc)
    return out


def by_kind() -> dict[str, dict[str, Any]]:
    """One document per kind (the Secrets by name: `secret`)."""
    return {doc["kind"]: doc for doc in documents() if doc["kind"] != "Secret"}


def secret(name: str) -> dict[str, Any]:
    return next(d for d in documents() if d["kind"] == "Secret" and d["metadata"]["name"] == name)


def volume_mount(secret_name: str) -> str:
    """Where the Deployment mounts a Secret."""
    spec = by_kind()["Deployment"]["spec"]["template"]["spec"]
    volume = next(
        v for v in spec["volumes"] if v.get("secret", {}).get("secretName") == secret_name
    )
    mount: str = next(m for m in container()["volumeMounts"] if m["name"] == volume["name"])[
        "mountPath"
    ]
    return mount


def container() -> dict[str, Any]:
    dep = by_kind()["Deployment"]
    containers: list[dict[str, Any]] = dep["spec"]["template"]["spec"]["containers"]
    return containers[0]


def config_text() -> str:
    return str(by_kind()["ConfigMap"]["data"]["config.yaml"])


def test_kustomization_lists_every_manifest() -> None:
    listed = set(k8s("kustomization.yaml")[0]["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    kinds = {doc["kind"] for doc in documents()}
    assert {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "ServiceMonitor",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    } <= kinds


def test_config_loads_with_the_secrets_mounted(tmp_path: Path) -> None:
    text = config_text()
    for name in ("trafficd-secrets", "trafficd-tls"):
        mount, data = volume_mount(name), secret(name)["stringData"]
        here = tmp_path / name
        here.mkdir()
        for key, value in data.items():
            (here / key).write_text(value)
        referenced = set(re.findall(re.escape(mount) + r"/([\w.-]+)", text))
        assert referenced and referenced <= set(data), (name, referenced)
        text = text.replace(mount, str(here))
    # The TLS Secret's placeholders made real (check-config loads them), with the mode
    # the Deployment gives the files (0440: the key readable by trafficd's group only).
    tls = tmp_path / "trafficd-tls"
    ca = trustme.CA()
    leaf = ca.issue_cert("trafficd.quay-enterprise.svc")
    leaf.cert_chain_pems[0].write_to_path(tls / "tls.crt")
    leaf.private_key_pem.write_to_path(tls / "tls.key")
    for key in ("ca.crt", "client-ca.crt"):
        ca.cert_pem.write_to_path(tls / key)
    spec = by_kind()["Deployment"]["spec"]["template"]["spec"]
    mode = next(v for v in spec["volumes"] if v["name"] == "tls")["secret"]["defaultMode"]
    (tls / "tls.key").chmod(mode)
    (tmp_path / "config.yaml").write_text(text)
    config = load(tmp_path / "config.yaml")
    assert (
        config.state_dir
        == next(m for m in container()["volumeMounts"] if m["name"] == "state")["mountPath"]
    )
    host, _ = split_host_port(config.listen)
    if host not in ("127.0.0.1", "::1"):  # the admin API leaves the pod only over mutual TLS
        assert config.tls_cert_file and config.tls_client_ca_file


def test_ports_probes_and_security() -> None:
    kinds = by_kind()
    c = container()
    spec = kinds["Deployment"]["spec"]["template"]["spec"]
    config = yaml.safe_load(config_text())
    _, metrics_port = split_host_port(config["metrics_listen"])
    _, api_port = split_host_port(config["listen"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": metrics_port, "api": api_port}
    scheme = "HTTPS" if config.get("metrics_tls_cert_file") else "HTTP"
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "metrics", "scheme": scheme}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert c["resources"]["limits"]["memory"] and c["resources"]["limits"]["cpu"]
    assert c["args"][:3] == ["run", "-c", "/etc/trafficd/config.yaml"]
    config_mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert config_mount["mountPath"] == c["args"][2]
    assert spec["serviceAccountName"] == kinds["ServiceAccount"]["metadata"]["name"]
    service_ports = {p["name"]: p for p in kinds["Service"]["spec"]["ports"]}
    assert {n: (p["port"], p["targetPort"]) for n, p in service_ports.items()} == {
        "metrics": (metrics_port, "metrics"),
        "api": (api_port, "api"),
    }
    endpoint = kinds["ServiceMonitor"]["spec"]["endpoints"][0]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    # The scrape is over TLS exactly when metrics_listen serves it, verified by the CA of
    # the TLS Secret, for the Service's name.
    if config.get("metrics_tls_cert_file"):
        assert endpoint["scheme"] == "https"
        ca = endpoint["tlsConfig"]["ca"]["secret"]
        assert ca["key"] in secret(ca["name"])["stringData"]
        service = kinds["Service"]["metadata"]
        assert (
            endpoint["tlsConfig"]["serverName"] == f"{service['name']}.{service['namespace']}.svc"
        )
        assert "insecureSkipVerify" not in endpoint["tlsConfig"]
    else:
        assert endpoint.get("scheme", "http") == "http"
    labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert kinds["Service"]["spec"]["selector"] == labels
    assert kinds["ServiceMonitor"]["spec"]["selector"]["matchLabels"] == labels
    # The alert rules expect job="trafficd".
    assert labels[kinds["ServiceMonitor"]["spec"]["jobLabel"]] == "trafficd"


def test_containerfile_matches_the_deployment() -> None:
    text = (REPO / "deploy/container/Containerfile").read_text()
    user = re.findall(r"^USER (\d+)$", text, re.M)
    spec = by_kind()["Deployment"]["spec"]["template"]["spec"]
    assert user == [str(spec["securityContext"]["runAsUser"])] and user != ["0"]
    assert re.findall(r"^EXPOSE (\d+)$", text, re.M) == [
        str(container()["ports"][0]["containerPort"])
    ]
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert cmd[:3] == container()["args"][:3]


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "deploy/systemd/trafficd.service")
    service = unit["Service"]
    assert service["ExecStart"].split()[1:4] == ["run", "-c", "/etc/trafficd/config.yaml"]
    assert service["ExecStartPre"].split()[1:] == [
        "check-config",
        "-c",
        "/etc/trafficd/config.yaml",
    ]
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["DynamicUser"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["NoNewPrivileges"] == "yes"
    # StateDirectory=trafficd is /var/lib/trafficd: the state_dir of the shipped configs.
    assert service["StateDirectory"] == "trafficd"
    assert yaml.safe_load(config_text())["state_dir"] == "/var/lib/trafficd"
    assert int(service["TimeoutStopSec"]) > 5  # trafficd stops within 5 s
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_route53_health_check_targets_a_verdict() -> None:
    check = json.loads((K8S / "route53-healthcheck.json").read_text())
    _, metrics_port = split_host_port(yaml.safe_load(config_text())["metrics_listen"])
    assert check["Port"] == metrics_port
    assert re.fullmatch(r"/sites/[a-z0-9-]+/verdict", check["ResourcePath"])
    site = check["ResourcePath"].split("/")[2]
    assert site in yaml.safe_load(config_text())["sites"]
