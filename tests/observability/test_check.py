"""meshplan.observability.check and the schemas' new fields: every problem located, all of
them in one run, the exit code 1, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshplan.pipeline import render_repository

from tests.support.cli import run_validate
from tests.support.observability_fixture import observed_repo


def problems(root: Path) -> tuple[int, list[str]]:
    code, out, err = run_validate(root)
    return code, [line for line in (out + err).splitlines() if ": " in line]


def test_the_observed_repository_is_valid(tmp_path: Path) -> None:
    code, lines = problems(observed_repo().write(tmp_path))
    assert code == 0, lines
    assert not [line for line in lines if "observability" in line]


def test_an_unknown_central_cluster(tmp_path: Path) -> None:
    repo = observed_repo()
    repo.mesh_spec["observability"]["centralCluster"] = "retail/eu2"
    code, lines = problems(repo.write(tmp_path))
    assert code == 1
    assert [line for line in lines if "centralCluster" in line] == [
        "inventory/mesh.yaml:19:21: spec.observability.centralCluster: expected a cluster of "
        "the inventory as <domain>/<cluster> (it runs the federating Prometheus), found "
        "'retail/eu2' (did you mean 'retail/eu1'?)"]


def test_the_schema_refuses_malformed_fields(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"thresholds": {"workloadCertificateHours": 0.5},
                                "for": {"plaintext": "1 minute"}}
    repo = observed_repo(**settings)
    repo.cluster("ap1")["observability"]["token"] = "abc"
    repo.cluster("p1")["observability"]["prometheus"] = "ftp://prometheus.example"
    repo.mesh_spec["observability"]["centralCluster"] = "eu1"
    code, lines = problems(repo.write(tmp_path))
    assert code == 1
    located = sorted(line.split(": ", 2)[1] for line in lines if line.startswith("inventory/")
                     and "warning" not in line)
    assert located == [
        "spec.clusters[0].observability.prometheus",  # payments/p1: not http(s)
        "spec.clusters[2].observability.token",  # an unknown key
        "spec.observability.centralCluster",
        "spec.observability.for.plaintext",
        "spec.observability.thresholds.workloadCertificateHours",
    ]


def test_a_federation_interval_below_the_scrape_timeout(tmp_path: Path) -> None:
    code, lines = problems(observed_repo(federationInterval="5s").write(tmp_path))
    assert code == 1
    assert [line for line in lines if "federationInterval" in line] == [
        "inventory/mesh.yaml:23:25: spec.observability.federationInterval: expected at least "
        "10s (the scrape timeout Prometheus uses by default may not exceed the interval, and "
        "meshplan's rules change once a minute), found '5s'"]
    code, _ = problems(observed_repo(federationInterval="1m30s").write(tmp_path / "ok"))
    assert code == 0


def test_credentials_in_the_url_are_refused_without_repeating_them(tmp_path: Path) -> None:
    repo = observed_repo()
    repo.cluster("us1")["observability"]["prometheus"] = "https://admin:s3cr3t@prom.example.com"
    code, lines = problems(repo.write(tmp_path))
    assert code == 1
    assert [line for line in lines if "credentials" in line] == [
        "inventory/retail.yaml:37:19: spec.clusters[1].observability.prometheus: expected a URL "
        "without credentials (name a Secret in basicAuthSecret or bearerTokenSecret: "
        "credentials never belong in git), found a user part in https://...@prom.example.com "
        "(not repeated here; remove it from the file and its git history, and change the "
        "password)"]
    assert "s3cr3t" not in "\n".join(lines) and "admin" not in "\n".join(lines)


def test_two_ways_to_authenticate_and_plain_http(tmp_path: Path) -> None:
    repo = observed_repo()
    repo.cluster("us1")["observability"]["basicAuthSecret"] = "federation-basic"
    repo.cluster("p1")["observability"]["prometheus"] = "http://10.21.0.9:9090"
    code, lines = problems(repo.write(tmp_path))
    assert code == 1
    assert [line for line in lines if "authenticate" in line] == [
        "inventory/retail.yaml:36:5: spec.clusters[1].observability: expected one way to "
        "authenticate to the cluster's Prometheus (bearerTokenSecret or basicAuthSecret), "
        "found both"]
    assert [line for line in lines if "plain HTTP" in line] == [
        "inventory/payments.yaml:22:19: spec.clusters[0].observability.prometheus: warning: "
        "federation over plain HTTP (http://10.21.0.9:9090) sends the cluster's metrics, and "
        "any credentials, unencrypted between clusters: use https://"]


def test_a_watched_cluster_without_an_endpoint_is_a_warning(tmp_path: Path) -> None:
    repo = observed_repo()
    del repo.cluster("ap1")["observability"]
    code, lines = problems(repo.write(tmp_path))
    assert code == 0
    assert [line for line in lines if "federate" in line] == [
        "inventory/retail.yaml:40:11: spec.clusters[2].observability: warning: expected the "
        "address of the Prometheus of retail/ap1 (observability: {prometheus: https://...}) "
        "for the central Prometheus in retail/eu1 to federate, found none: its alerts fire in "
        "its own Prometheus, but the mesh-wide dashboard does not show it"]


def test_endpoints_without_the_section_are_ignored_with_a_warning(tmp_path: Path) -> None:
    repo = observed_repo()
    del repo.mesh_spec["observability"]
    code, lines = problems(repo.write(tmp_path))
    assert code == 0
    assert [line for line in lines if "ignored" in line] == [
        "inventory/payments.yaml:21:5: spec.clusters[0].observability: warning: observability "
        "entries (3 cluster(s)) are ignored without spec.observability in a Mesh document: "
        "no monitoring is rendered"]


def test_a_mesh_document_with_only_observability(tmp_path: Path) -> None:
    """Monitoring alone (no ClusterMesh, no Istio): the policy drops are still watched."""
    repo = observed_repo()
    repo.mesh_spec.pop("cilium")
    repo.mesh_spec.pop("istio")
    for clusters in repo.clusters.values():
        for cluster in clusters:
            cluster.pop("clustermesh", None)
            cluster.pop("istio", None)
    repo.requirements.pop("requirements/retail/web.yaml")  # flows across clusters would
    repo.requirements.pop("requirements/payments/pay.yaml")  # have no path: one inside ap1
    repo.requirements["requirements/retail/cart.yaml"] = {
        "apiVersion": "meshplan.dev/v1alpha1", "kind": "Requirement",
        "metadata": {"name": "cart"},
        "spec": {"endpointSelector": {"matchLabels": {"service": "cart"}},
                 "ingress": [{"fromEndpoints": [{"matchLabels": {"service": "cart"}}]}]}}
    code, lines = problems(repo.write(tmp_path))
    assert code == 0, lines
    assert not [line for line in lines if "renders nothing" in line]
    rendered, _ = render_repository(tmp_path)
    rules = [f.path for f in rendered.files if f.path.endswith("prometheus-rules.yaml")]
    assert rules == ["clusters/retail/ap1/prometheus-rules.yaml",  # cart's drops
                     "clusters/retail/eu1/prometheus-rules.yaml"]  # federating ap1
