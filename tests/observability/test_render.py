"""The monitoring objects in the clusters' Kustomize roots (meshplan.observability.render).

* the files each cluster gains, and nothing at all without ``spec.observability`` (both
  bundled examples' committed output stays what it was; the Istio example gains monitoring
  on purpose);
* every object validates against the real prometheus-operator CRDs (PrometheusRule v1,
  ScrapeConfig v1alpha1) or the Kubernetes ConfigMap schema, and the real ``kubectl
  kustomize`` builds every root that gained objects;
* byte-identical re-renders; labels the operator and Grafana select by; Argo CD's dry-run
  skip on the custom resources; the dashboards as literal blocks; no credentials.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from meshplan.pipeline import render_repository
from meshplan.write import write_tree

from tests.support.k8s import kustomize_build, validate_object
from tests.support.mesh_fixture import mesh_repo
from tests.support.observability_fixture import SELECTOR, observed_repo
from tests.support.rendered import documents, render_files
from tests.support.repos import ISTIO_EXAMPLE, committed_rendered, copy_example

EXAMPLE = ISTIO_EXAMPLE
MONITORING_FILES = ("prometheus-rules.yaml", "scrape-configs.yaml", "dashboards.yaml")




@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return observed_repo().write(tmp_path_factory.mktemp("observed"))


@pytest.fixture(scope="module")
def files(repo: Path) -> dict[str, bytes]:
    return render_files(repo)


def monitoring(files: dict[str, bytes]) -> list[str]:
    return sorted(p for p in files if p.endswith(MONITORING_FILES))


def test_the_files_each_cluster_gains(files: dict[str, bytes]) -> None:
    assert monitoring(files) == [
        "clusters/payments/p1/dashboards.yaml",
        "clusters/payments/p1/prometheus-rules.yaml",
        "clusters/retail/ap1/dashboards.yaml",
        "clusters/retail/ap1/prometheus-rules.yaml",
        "clusters/retail/eu1/dashboards.yaml",  # its own and the mesh-wide one
        "clusters/retail/eu1/prometheus-rules.yaml",  # its own and the federation's
        "clusters/retail/eu1/scrape-configs.yaml",  # the central cluster federates
        "clusters/retail/us1/dashboards.yaml",
        "clusters/retail/us1/prometheus-rules.yaml",
    ]
    kustomization = yaml.safe_load(files["clusters/retail/eu1/kustomization.yaml"])
    assert kustomization["resources"][-3:] == list(MONITORING_FILES)
    eu1 = {d["metadata"]["name"]: d for f in MONITORING_FILES
           for d in documents(files[f"clusters/retail/eu1/{f}"])}
    assert sorted(eu1) == ["meshplan-dashboard-mesh-mesh1", "meshplan-dashboard-retail-eu1",
                           "meshplan-federate-payments-p1", "meshplan-federate-retail-ap1",
                           "meshplan-federate-retail-us1", "meshplan-mesh1",
                           "meshplan-mesh1-federation"]


def test_nothing_is_rendered_without_the_section(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.cluster("us1")["observability"] = {"prometheus": "https://prometheus.example"}
    assert monitoring(render_files(repo.write(tmp_path / "mesh"))) == []
    assert monitoring(render_files(copy_example(tmp_path / "bundled"))) == []


def test_only_the_monitoring_files_change(files: dict[str, bytes], tmp_path: Path) -> None:
    """The section adds files and lists them in the roots; nothing else changes."""
    plain = render_files(mesh_repo().write(tmp_path / "plain"))
    changed = {p for p in set(files) | set(plain) if files.get(p) != plain.get(p)}
    assert {p for p in changed if not p.endswith("kustomization.yaml")} == set(monitoring(files))


def test_the_istio_example_renders_its_monitoring() -> None:
    committed = committed_rendered(EXAMPLE)
    assert monitoring(committed) == [
        "clusters/boutique/aks/dashboards.yaml", "clusters/boutique/aks/prometheus-rules.yaml",
        "clusters/boutique/aks/scrape-configs.yaml", "clusters/boutique/gcp/dashboards.yaml",
        "clusters/boutique/gcp/prometheus-rules.yaml"]
    fresh = render_files(EXAMPLE)
    assert {p: fresh[p] for p in committed} == committed


def test_rendering_is_byte_identical(repo: Path, files: dict[str, bytes]) -> None:
    assert render_files(repo) == files


# --------------------------------------------------------------------------- objects


def test_labels_annotations_and_namespace(files: dict[str, bytes]) -> None:
    for path in monitoring(files):
        for doc in documents(files[path]):
            meta = doc["metadata"]
            assert meta["namespace"] == "monitoring"
            assert meta["labels"]["app.kubernetes.io/managed-by"] == "meshplan"
            assert meta["annotations"]["meshplan.dev/required-by"] == "mesh/mesh1"
            assert meta["annotations"]["meshplan.dev/source"] == "inventory/mesh.yaml"
            custom = doc["kind"] != "ConfigMap"
            if custom:  # what the Prometheus operator selects by
                assert SELECTOR.items() <= meta["labels"].items(), path
                assert meta["annotations"]["argocd.argoproj.io/sync-options"] == (
                    "SkipDryRunOnMissingResource=true")
            else:  # what the Grafana sidecar selects by
                assert meta["labels"]["grafana_dashboard"] == "1"
                assert "argocd.argoproj.io/sync-options" not in meta["annotations"]


def test_a_namespace_and_no_selector_labels(tmp_path: Path) -> None:
    repo = observed_repo(namespace="observability", selectorLabels={})
    files = render_files(repo.write(tmp_path))
    rules = documents(files["clusters/retail/us1/prometheus-rules.yaml"])[0]
    assert rules["metadata"]["namespace"] == "observability"
    assert rules["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "meshplan"}


def test_dashboards_are_literal_blocks(files: dict[str, bytes]) -> None:
    text = files["clusters/retail/us1/dashboards.yaml"].decode()
    assert "  meshplan-retail-us1.json: |\n    {\n" in text
    assert '\n      "schemaVersion": 39,\n' in text  # one JSON line per YAML line


def test_the_scrape_configs_file_warns_about_override_honor_labels(
        files: dict[str, bytes]) -> None:
    text = files["clusters/retail/eu1/scrape-configs.yaml"].decode()
    head = text.split("apiVersion:", 1)[0]
    assert "honorLabels: true" in head and "overrideHonorLabels: true" in head
    assert all(d["spec"]["honorLabels"] is True for d in documents(text.encode()))


@pytest.fixture(scope="module")
def written(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("written") / "rendered"
    rendered, _ = render_repository(repo)
    write_tree(out, rendered.files)
    return out


@pytest.mark.parametrize("root", ["clusters/retail/eu1", "clusters/retail/us1",
                                  "clusters/retail/ap1", "clusters/payments/p1"])
def test_kustomize_builds_and_every_object_validates(written: Path, root: str) -> None:
    objects = kustomize_build(written / root)
    monitoring_kinds = {"PrometheusRule", "ScrapeConfig", "ConfigMap"}
    found = [o for o in objects if o["kind"] in monitoring_kinds]
    assert {o["kind"] for o in found} >= {"PrometheusRule", "ConfigMap"}
    for obj in objects:
        assert validate_object(obj, require_namespace=obj["kind"] != "Namespace") == [], obj
    expected = [d for f in MONITORING_FILES if (written / root / f).is_file()
                for d in documents((written / root / f).read_bytes())]
    assert sorted(found, key=str) == sorted(expected, key=str)


@pytest.mark.parametrize("root", ["clusters/boutique/aks", "clusters/boutique/gcp"])
def test_the_istio_examples_monitoring_validates(root: str) -> None:
    objects = kustomize_build(EXAMPLE / "rendered" / root)
    kinds = {o["kind"] for o in objects}
    assert {"PrometheusRule", "ConfigMap"} <= kinds
    assert ("ScrapeConfig" in kinds) == root.endswith("aks")
    for obj in objects:
        assert validate_object(obj, require_namespace=obj["kind"] != "Namespace") == [], obj


def test_the_crd_check_catches_a_misspelt_rule_field(files: dict[str, bytes]) -> None:
    rule = documents(files["clusters/retail/us1/prometheus-rules.yaml"])[0]
    broken = copy.deepcopy(rule)
    broken["spec"]["groups"][0]["rules"][0]["recrod"] = "x"
    assert validate_object(broken)
    scrape = documents(files["clusters/retail/eu1/scrape-configs.yaml"])[0]
    broken = copy.deepcopy(scrape)
    broken["spec"]["scheme"] = "FTP"
    assert validate_object(broken)
    config_map = documents(files["clusters/retail/us1/dashboards.yaml"])[0]
    broken = copy.deepcopy(config_map)
    broken["data"] = {"a": 1}
    assert validate_object(broken)


def test_credentials_are_only_ever_secret_references(files: dict[str, bytes]) -> None:
    """The inventory names Secrets; the output refers to them by name and key, nothing else."""
    specs = {d["metadata"]["name"]: d["spec"]
             for d in documents(files["clusters/retail/eu1/scrape-configs.yaml"])}
    assert specs["meshplan-federate-retail-us1"]["authorization"] == {
        "type": "Bearer", "credentials": {"name": "federation-us1", "key": "token"}}
    assert specs["meshplan-federate-retail-us1"]["tlsConfig"] == {
        "ca": {"secret": {"name": "federation-ca", "key": "ca.crt"}}}
    assert specs["meshplan-federate-retail-ap1"]["basicAuth"] == {
        "username": {"name": "federation-ap1", "key": "username"},
        "password": {"name": "federation-ap1", "key": "password"}}
    assert not {"authorization", "basicAuth", "tlsConfig"} & set(
        specs["meshplan-federate-payments-p1"])
