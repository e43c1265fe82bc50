"""deploy/k8s: the kustomization renders to resources that validate against the Kubernetes JSON schemas
(kubernetes-validate's bundled schemas, strict: unknown fields fail), and the pieces agree with each other and
with the worker's settings."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sigstream.settings import load_settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"  # the oldest minor still supported upstream when this was written
CLUSTER_SCOPED = {"Namespace"}
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "namespace", "labels", "resources", "images"}


def render(folder: Path) -> list[dict[str, Any]]:
    """What ``kustomize build folder`` gives for the fields this kustomization uses: its resources with the
    namespace, the labels and the image overrides applied. Anything else in it fails the test."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    unapplied = set(kustomization) - KUSTOMIZATION_FIELDS
    assert not unapplied, f"render() does not apply {unapplied}"
    images = {image["name"]: image for image in kustomization.get("images", [])}
    out = []
    for name in kustomization["resources"]:
        path = folder / name
        assert path.is_file(), f"kustomization lists {name}, which does not exist"
        for doc in yaml.safe_load_all(path.read_text()):
            resource = copy.deepcopy(doc)
            meta = resource.setdefault("metadata", {})
            if "namespace" in kustomization and resource["kind"] not in CLUSTER_SCOPED:
                meta["namespace"] = kustomization["namespace"]
            for group in kustomization.get("labels", []):
                meta.setdefault("labels", {}).update(group["pairs"])
                template = resource.get("spec", {}).get("template")
                if template is not None and group.get("includeTemplates", group.get("includeSelectors")):
                    template.setdefault("metadata", {}).setdefault("labels", {}).update(group["pairs"])
            for container in _containers(resource):
                image = images.get(container["image"].split(":")[0])
                if image is not None:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
            out.append(resource)
    return out


def _containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    spec = resource.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def by_kind(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds: dict[str, dict[str, Any]] = {}
    for resource in resources:
        assert resource["kind"] not in kinds, f"two {resource['kind']}s: this test expects one of each"
        kinds[resource["kind"]] = resource
    return kinds


@pytest.fixture(scope="module")
def base() -> dict[str, dict[str, Any]]:
    return by_kind(render(K8S))


def test_every_resource_validates_against_the_kubernetes_schema() -> None:
    resources = render(K8S)
    assert {r["kind"] for r in resources} >= {"Deployment", "ConfigMap", "Secret"}
    for resource in resources:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_validator_rejects_a_broken_deployment(base) -> None:
    # A check that cannot fail proves nothing: a misspelled field and a wrong type are both caught.
    broken = copy.deepcopy(base["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = copy.deepcopy(base["Deployment"])
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_probes_and_scrape_annotations_use_the_metrics_port_the_config_sets(base) -> None:
    config = base["ConfigMap"]["data"]
    port = int(config["SIGSTREAM_METRICS__PORT"])
    assert config["SIGSTREAM_METRICS__HOST"] == "0.0.0.0"  # reachable from the kubelet and Prometheus
    template = base["Deployment"]["spec"]["template"]
    (container,) = template["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and int(annotations["prometheus.io/port"]) == port
    refs = {next(iter(ref)): next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert refs == {"configMapRef": base["ConfigMap"]["metadata"]["name"],
                    "secretRef": base["Secret"]["metadata"]["name"]}


def test_replicas_never_exceed_the_partition_count(base) -> None:
    partitions = int(base["ConfigMap"]["data"]["SIGSTREAM_KAFKA__PARTITIONS"])
    deployment, hpa = base["Deployment"], base["HorizontalPodAutoscaler"]
    assert 1 <= deployment["spec"]["replicas"] <= partitions
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] == partitions
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_selectors_match_the_pods(base) -> None:
    pod_labels = base["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for kind in ("Deployment", "PodDisruptionBudget"):
        assert base[kind]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (monitor,) = render(K8S / "podmonitor")
    assert monitor["kind"] == "PodMonitor" and monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"] for p in base["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports
    assert monitor["metadata"]["namespace"] == base["Deployment"]["metadata"]["namespace"]


def test_the_config_map_and_secret_are_settings_the_worker_accepts(base, monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("SIGSTREAM_") and name != "SIGSTREAM_DATA":
            monkeypatch.delenv(name)
    monkeypatch.chdir(K8S)  # no stray .env or config file
    env = dict(base["ConfigMap"]["data"]) | dict(base["Secret"]["stringData"])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.metrics.port == int(env["SIGSTREAM_METRICS__PORT"])
    assert settings.kafka.partitions == int(env["SIGSTREAM_KAFKA__PARTITIONS"])
    assert settings.redis.url is not None
