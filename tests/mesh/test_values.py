"""The mesh's Helm values (meshplan.mesh.values) against the charts' own values schemas.

Cilium 1.19.4 and istio/gateway 1.30.3 ship values schemas (``tests/schemas/helm/``, upstream
files); the istiod chart ships none, so its values are checked against a schema derived from
the chart's values.yaml and ``values_types.proto`` (see SOURCES.md). Cilium's schema only types
fields, so every key path meshplan writes must also exist in it: a typo fails here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from meshplan.pipeline import render_repository

from tests.support.mesh_fixture import MeshRepo, mesh_repo
from tests.support.repos import ISTIO_EXAMPLE, TESTS_DIR

SCHEMAS = TESTS_DIR / "schemas" / "helm"
EXAMPLE = ISTIO_EXAMPLE
# The fields of one clustermesh.config.clusters entry the 1.19 chart reads
# (templates/_helpers.tpl "clustermesh-clusters"; tls.* is deprecated and never written).
PEER_ENTRY_KEYS = {"enabled", "address", "port", "ips"}


def schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def validator(name: str) -> jsonschema.protocols.Validator:
    document = schema(name)
    if document.get("$schema", "").startswith("http://json-schema.org/draft-07"):
        return jsonschema.Draft7Validator(document)
    return jsonschema.Draft202012Validator(document)


def rendered_values(repo: Path) -> dict[str, dict[str, Any]]:
    """``mesh/.../<chart>-values.yaml`` -> parsed values, from a real render."""
    rendered, _ = render_repository(repo)
    return {f.path: yaml.safe_load(f.content) for f in rendered.files
            if f.path.startswith("mesh/") and f.path.endswith("-values.yaml")}


def variants() -> Iterator[tuple[str, MeshRepo]]:
    yield "base", mesh_repo()
    repo = mesh_repo()
    repo.mesh_spec["cilium"].update(
        routingMode="native", nativeRoutingCIDR="10.0.0.0/8", encryption="none",
        maxConnectedClusters=511, peers="all", apiserverService="NodePort",
        ca={"certManagerIssuer": {"kind": "ClusterIssuer", "name": "mesh-ca"}})
    for name, port in (("eu1", 32379), ("us1", 32380), ("ap1", 32381), ("p1", 32382)):
        repo.cluster(name)["clustermesh"]["port"] = port
    repo.cluster("eu1")["meshId"] = 400
    yield "native-certmanager-nodeport-all", repo


@pytest.fixture(scope="module")
def all_values(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, repo in variants():
        for path, values in rendered_values(repo.write(tmp_path_factory.mktemp(name))).items():
            out[f"{name}:{path}"] = values
    for path, values in rendered_values(EXAMPLE).items():
        out[f"istio-multicloud:{path}"] = values
    return out


def by_chart(values: dict[str, dict[str, Any]], suffix: str) -> dict[str, dict[str, Any]]:
    found = {k: v for k, v in values.items() if k.endswith(suffix)}
    assert found, suffix
    return found


def key_paths(data: Any, schema_node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Every key path of ``data`` that the schema does not define (descending its properties)."""
    if not isinstance(data, dict):
        return
    properties = schema_node.get("properties")
    if properties is None:
        return  # a free-form mapping in the schema (checked separately where it matters)
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in properties:
            yield path
        else:
            yield from key_paths(value, properties[key], path)


def test_cilium_values_validate_against_the_chart_schema(
        all_values: dict[str, dict[str, Any]]) -> None:
    check = validator("cilium-values.schema.json")
    for path, values in by_chart(all_values, "cilium-values.yaml").items():
        assert not list(check.iter_errors(values)), path


def test_every_cilium_key_path_exists_in_the_chart_schema(
        all_values: dict[str, dict[str, Any]]) -> None:
    document = schema("cilium-values.schema.json")
    for path, values in by_chart(all_values, "cilium-values.yaml").items():
        assert list(key_paths(values, document)) == [], path
        for peer, entry in values["clustermesh"]["config"]["clusters"].items():
            assert set(entry) <= PEER_ENTRY_KEYS, (path, peer)


def test_the_key_path_check_catches_a_typo() -> None:
    document = schema("cilium-values.schema.json")
    assert list(key_paths({"clustermesh": {"useAPIserver": True}}, document)) == [
        "clustermesh.useAPIserver"]


def test_istiod_values_validate_against_the_derived_schema(
        all_values: dict[str, dict[str, Any]]) -> None:
    check = validator("istiod-values.schema.json")
    for path, values in by_chart(all_values, "istiod-values.yaml").items():
        assert not list(check.iter_errors(values)), path
    assert list(check.iter_errors({"global": {"meshID": "m", "network": "n", "multiCluster": {
        "clusterName": "c"}}, "meshConfig": {"trustDomain": "t", "trustDomianAliases": []}}))


def test_gateway_values_validate_against_the_chart_schema(
        all_values: dict[str, dict[str, Any]]) -> None:
    check = validator("istio-gateway-values.schema.json")
    for path, values in by_chart(all_values, "eastwest-gateway-values.yaml").items():
        assert not list(check.iter_errors(values)), path
    assert list(check.iter_errors({"name": "x", "networkGatway": "n"}))  # strict: typos fail


def test_cilium_values_say_what_the_mesh_needs(all_values: dict[str, dict[str, Any]]) -> None:
    eu1 = all_values["base:mesh/retail/eu1/cilium-values.yaml"]
    assert eu1["cluster"] == {"name": "retail-eu1", "id": 11}
    assert eu1["routingMode"] == "tunnel"
    assert eu1["encryption"] == {"enabled": True, "type": "wireguard"}
    mesh = eu1["clustermesh"]
    assert mesh["useAPIServer"] is True and mesh["maxConnectedClusters"] == 255
    # peers: needed -> exactly the members eu1 has an intended flow with (not us1)
    assert mesh["config"] == {"enabled": True, "clusters": {
        "payments-p1": {"ips": ["203.0.113.21"], "port": 2379},
        "retail-ap1": {"ips": ["203.0.113.13"], "port": 2379}}}
    assert mesh["apiserver"]["service"] == {"type": "LoadBalancer",
                                            "loadBalancerIP": "203.0.113.11"}
    tls = mesh["apiserver"]["tls"]
    assert tls["authMode"] == "cluster"
    assert tls["auto"] == {"enabled": True, "method": "cronJob"}
    assert eu1["certgen"] == {"generateCA": False}
    assert eu1["hubble"]["tls"]["auto"]["method"] == "cronJob"
    # a member reached by DNS name: the peers dial the name, its certificate carries it
    us1 = all_values["base:mesh/retail/us1/cilium-values.yaml"]
    assert us1["clustermesh"]["apiserver"]["tls"]["server"] == {
        "extraDnsNames": ["cm.us1.retail.example.com"]}
    ap1 = all_values["base:mesh/retail/ap1/cilium-values.yaml"]
    assert ap1["clustermesh"]["config"]["clusters"]["retail-us1"] == {
        "address": "cm.us1.retail.example.com", "port": 2379}


def test_no_values_use_the_helm_certificate_method(all_values: dict[str, dict[str, Any]]
                                                   ) -> None:
    for path, values in by_chart(all_values, "cilium-values.yaml").items():
        assert values["clustermesh"]["apiserver"]["tls"]["auto"]["method"] != "helm", path
        assert values["hubble"]["tls"]["auto"]["method"] != "helm", path
        assert "tls" not in values or "ca" not in values["tls"], path  # no CA in values


def test_other_variant_settings(all_values: dict[str, dict[str, Any]]) -> None:
    eu1 = all_values["native-certmanager-nodeport-all:mesh/retail/eu1/cilium-values.yaml"]
    assert eu1["cluster"]["id"] == 400
    assert eu1["routingMode"] == "native" and eu1["ipv4NativeRoutingCIDR"] == "10.0.0.0/8"
    assert eu1["encryption"] == {"enabled": False}
    assert eu1["clustermesh"]["maxConnectedClusters"] == 511
    assert sorted(eu1["clustermesh"]["config"]["clusters"]) == [
        "payments-p1", "retail-ap1", "retail-us1"]  # peers: all
    assert eu1["clustermesh"]["apiserver"]["service"] == {"type": "NodePort",
                                                          "nodePort": 32379}
    issuer = {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "mesh-ca"}
    assert eu1["clustermesh"]["apiserver"]["tls"]["auto"] == {
        "enabled": True, "method": "certmanager", "certManagerIssuerRef": issuer}
    assert "certgen" not in eu1
    assert eu1["clustermesh"]["config"]["clusters"]["retail-ap1"]["port"] == 32381


def test_istiod_values_name_other_trust_domains_without_aliases_or_pem(
        all_values: dict[str, dict[str, Any]]) -> None:
    eu1 = all_values["base:mesh/retail/eu1/istiod-values.yaml"]
    assert eu1 == {
        "global": {"meshID": "mesh1", "multiCluster": {"clusterName": "retail-eu1"},
                   "network": "net-eu"},
        "meshConfig": {"trustDomain": "retail-eu1.example", "caCertificates": [
            {"trustDomains": ["payments-p1.example", "retail-us1.example"]}]}}
    for path, values in by_chart(all_values, "istiod-values.yaml").items():
        assert "trustDomainAliases" not in values["meshConfig"], path
        for entry in values["meshConfig"].get("caCertificates", []):
            assert "pem" not in entry, path
            assert values["meshConfig"]["trustDomain"] not in entry["trustDomains"], path


def test_the_example_is_the_thesis_installation(all_values: dict[str, dict[str, Any]]) -> None:
    aks = all_values["istio-multicloud:mesh/boutique/aks/istiod-values.yaml"]
    assert aks["global"] == {"meshID": "mesh1", "multiCluster": {"clusterName": "cluster1"},
                             "network": "network1"}
    gateway = all_values["istio-multicloud:mesh/boutique/gcp/eastwest-gateway-values.yaml"]
    assert gateway == {"name": "istio-eastwestgateway", "networkGateway": "network2",
                       # the reserved address, and clients' addresses kept for its policy
                       "service": {"loadBalancerIP": "203.0.113.7",
                                   "externalTrafficPolicy": "Local"}}
    assert not [k for k in all_values if k.startswith("istio-multicloud:")
                and k.endswith("cilium-values.yaml")]  # no ClusterMesh across the clouds
