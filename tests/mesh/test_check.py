"""Refusing a mesh that cannot work (meshplan.mesh.check): one case per refusal and variants.

Every case edits the valid base repository of ``tests.support.mesh_fixture`` in one way, runs the
real pipeline (``meshplan validate``'s function) and expects one located diagnostic: its file,
its key path, its severity and the words a person needs. The base itself is valid, so each
case's diagnostic comes from its one edit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from meshplan.diagnostics import Diagnostic, Severity
from meshplan.pipeline import validate

from tests.support.mesh_fixture import MeshRepo, mesh_repo

Edit = Callable[[MeshRepo], Any]
RETAIL = "inventory/retail.yaml"
PAYMENTS = "inventory/payments.yaml"
MESH = "inventory/mesh.yaml"
WEB = "requirements/retail/web.yaml"


@dataclass(frozen=True)
class Case:
    edit: Edit
    file: str
    path: str
    words: tuple[str, ...]
    severity: Severity = Severity.ERROR


def case(id_: str, edit: Edit, file: str, path: str, *words: str,
         severity: Severity = Severity.ERROR) -> Any:
    return pytest.param(Case(edit, file, path, words, severity), id=id_)


def run(repo: MeshRepo, tmp_path: Path) -> tuple[bool, tuple[Diagnostic, ...]]:
    inventory, diagnostics = validate(repo.write(tmp_path / "repo"))
    return inventory is not None, diagnostics


def setting(**values: Any) -> Edit:
    return lambda r: r.mesh_spec["cilium"].update(values)


def istio_setting(**values: Any) -> Edit:
    return lambda r: r.mesh_spec["istio"].update(values)


def on(cluster: str, **values: Any) -> Edit:
    return lambda r: r.cluster(cluster).update(values)


def drop(cluster: str, *keys: str) -> Edit:
    def edit(r: MeshRepo) -> None:
        entry = r.cluster(cluster)
        for key in keys[:-1]:
            entry = entry[key]
        del entry[keys[-1]]
    return edit


def both(*edits: Edit) -> Edit:
    return lambda r: [e(r) for e in edits]


def _fleet(count: int, peers: str) -> Edit:
    """``count`` more ClusterMesh members in a domain of their own (ids 1..255, reused)."""
    def edit(r: MeshRepo) -> None:
        r.mesh_spec["cilium"]["peers"] = peers
        r.clusters["fleet"] = [
            {"name": f"f{i}", "meshId": 30 + i % 200, "podCIDRs": [f"10.{100 + i // 256}."
                                                                f"{i % 256}.0/24"],
             "clustermesh": {"address": f"198.18.{i // 256}.{i % 256}"}}
            for i in range(count)]
    return edit


def _hub_and_spokes(spokes: int) -> Edit:
    """A hub service called from ``spokes`` clusters (peers: needed connects them all)."""
    def edit(r: MeshRepo) -> None:
        _fleet(spokes, "needed")(r)
        r.services["fleet"] = [{"name": "hub", "namespace": "hub", "selector": {"app": "hub"},
                                "ports": [{"port": 80}], "clusters": ["f0"]}]
        r.requirements["requirements/fleet/client.yaml"] = {
            "apiVersion": "meshplan.dev/v1alpha1", "kind": "Requirement",
            "metadata": {"name": "client", "namespace": "hub"},
            "spec": {"endpointSelector": {"matchLabels": {"app": "client"}},
                     "egress": [{"toEndpoints": [{"matchLabels": {"service": "hub"}}]}]}}
    return edit


GATEWAY_US1 = {"address": "198.51.100.12"}
# Istio alone (no ClusterMesh): every cross-cluster flow goes through the gateways.
ISTIO_ONLY: tuple[Edit, ...] = (
    lambda r: r.mesh_spec.pop("cilium"),
    *(drop(c, "clustermesh") for c in ("eu1", "us1", "ap1", "p1")))


CASES = [
    # ---- Cilium cluster names and IDs (the chart's templates/validate.yaml)
    case("name-too-long", on("eu1", meshName="r" * 33), RETAIL, "spec.clusters[0].meshName",
         "at most 32"),
    case("name-not-the-regex", on("eu1", meshName="Retail_EU1"), RETAIL,
         "spec.clusters[0].meshName", "Cilium cluster name"),
    case("name-default-too-long", both(drop("eu1", "meshName"),
                                       lambda r: r.clusters.update(
                                           {"a-very-long-domain-name-for-retail":
                                            r.clusters.pop("retail")})),
         "inventory/a-very-long-domain-name-for-retail.yaml", "spec.clusters[0].meshName",
         "at most 32 characters", "set meshName"),
    case("name-default", on("eu1", meshName="default"), RETAIL, "spec.clusters[0].meshName",
         "other than 'default'"),
    case("id-missing", drop("eu1", "meshId"), RETAIL, "spec.clusters[0].meshId",
         "expected a Cilium cluster id", "propose-ids"),
    case("id-above-255", on("eu1", meshId=256), RETAIL, "spec.clusters[0].meshId",
         "from 1 to 255", "maxConnectedClusters is 255", "256"),
    case("id-above-511", on("eu1", meshId=512), RETAIL, "spec.clusters[0].meshId", "511",
         "512"),
    case("id-above-255-without-cilium", both(on("eu1", meshId=300),
                                             lambda r: r.mesh_spec.pop("cilium"),
                                             *(drop(c, "clustermesh")
                                               for c in ("eu1", "us1", "ap1", "p1"))),
         RETAIL, "spec.clusters[0].meshId", "needs spec.cilium.maxConnectedClusters: 511"),
    case("id-duplicate-among-peers", on("ap1", meshId=11), RETAIL, "spec.clusters[2].meshId",
         "unique among", "found 11 for both retail/eu1", "and retail/ap1"),
    case("id-duplicate-two-hops", on("us1", meshId=11), RETAIL, "spec.clusters[1].meshId",
         "and the clusters it connects to", "found 11 for both retail/eu1",
         "and retail/us1"),
    case("id-duplicate-peers-all", both(setting(peers="all"), on("p1", meshId=13)), RETAIL,
         "spec.clusters[2].meshId", "across the ClusterMesh (peers: all)",
         "found 13 for both payments/p1"),
    # ---- connected sets
    case("connected-set-all", _fleet(252, "all"), MESH, "spec.cilium",
         "at most 255 ClusterMesh members with peers: all", "found 256"),
    case("connected-set-needed", _hub_and_spokes(256), "inventory/fleet.yaml",
         "spec.clusters[0].clustermesh", "at most 255 clusters in a connected set",
         "fleet/f0 connected to 255 peers"),
    # ---- addressing
    case("pod-cidrs-overlap", on("ap1", podCIDRs=["10.11.128.0/17"]), RETAIL,
         "spec.clusters[2].podCIDRs[0]", "do not overlap", "retail/eu1"),
    case("pod-cidr-outside-native", both(setting(routingMode="native",
                                                 nativeRoutingCIDR="10.0.0.0/12"),
                                         on("p1", podCIDRs=["10.21.0.0/16"])),
         PAYMENTS, "spec.clusters[0].podCIDRs[0]", "inside nativeRoutingCIDR 10.0.0.0/12",
         "found 10.21.0.0/16"),
    case("native-without-cidr", setting(routingMode="native"), MESH,
         "spec.cilium.nativeRoutingCIDR", "with routingMode native"),
    case("native-cidr-ipv6", setting(routingMode="native", nativeRoutingCIDR="fd00::/8"),
         MESH, "spec.cilium.nativeRoutingCIDR", "an IPv4 CIDR"),
    case("native-member-without-pod-cidrs", both(setting(routingMode="native",
                                                         nativeRoutingCIDR="10.0.0.0/8"),
                                                 drop("ap1", "podCIDRs")),
         RETAIL, "spec.clusters[2].podCIDRs", "cannot be checked", severity=Severity.WARNING),
    case("tunnel-with-native-cidr", setting(nativeRoutingCIDR="10.0.0.0/8"), MESH,
         "spec.cilium.nativeRoutingCIDR", "ignored with routingMode tunnel",
         severity=Severity.WARNING),
    case("address-missing", on("ap1", clustermesh={"port": 2379}), RETAIL,
         "spec.clusters[2].clustermesh.address", "expected the address",
         "found none for retail/ap1"),
    case("address-not-ip-or-name", on("ap1", clustermesh={"address": "http://x"}), RETAIL,
         "spec.clusters[2].clustermesh.address", "an IP address or a DNS name", "http://x"),
    case("address-shared", on("ap1", clustermesh={"address": "203.0.113.11"}), RETAIL,
         "spec.clusters[2].clustermesh.address", "address of its own", "again"),
    case("nodeport-out-of-range", both(setting(apiserverService="NodePort"),
                                       on("ap1", clustermesh={"address": "203.0.113.13",
                                                              "port": 2379})),
         RETAIL, "spec.clusters[2].clustermesh.port", "30000-32767",
         severity=Severity.WARNING),
    case("loadbalancer-other-port", on("ap1", clustermesh={"address": "203.0.113.13",
                                                           "port": 443}),
         RETAIL, "spec.clusters[2].clustermesh.port", "listens on 2379",
         severity=Severity.WARNING),
    # ---- the shared CA and the Mesh document's sections
    case("cilium-ca-missing", lambda r: r.mesh_spec["cilium"].pop("ca"), MESH,
         "spec.cilium.ca", "the shared ClusterMesh CA", "method helm"),
    case("cilium-ca-other-secret", setting(ca={"existingSecret": "my-ca"}), MESH,
         "spec.cilium.ca.existingSecret", "'cilium-ca'", "found 'my-ca'"),
    case("cilium-section-missing", lambda r: r.mesh_spec.pop("cilium"), RETAIL,
         "spec.clusters[0].clustermesh", "expected spec.cilium"),
    case("istio-section-missing", lambda r: r.mesh_spec.pop("istio"), RETAIL,
         "spec.clusters[0].istio", "expected spec.istio"),
    case("istio-root-ca-missing", lambda r: r.mesh_spec["istio"].pop("rootCA"), MESH,
         "spec.istio.rootCA", "the Istio root CA", "found none"),
    case("istio-root-ca-other-secret", istio_setting(rootCA={"existingSecret": "my-ca"}),
         MESH, "spec.istio.rootCA.existingSecret", "'cacerts'"),
    case("two-mesh-documents", lambda r: r.extra.update(
        {"inventory/mesh2.yaml": "apiVersion: meshplan.dev/v1alpha1\nkind: Mesh\n"
                                 "metadata: {name: other}\nspec: {}\n"}),
         "inventory/mesh2.yaml", "kind", "at most one Mesh document"),
    case("entries-without-mesh", lambda r: setattr(r, "mesh", None), PAYMENTS,
         "spec.clusters[0].clustermesh", "ignored without a Mesh document",
         severity=Severity.WARNING),
    # ---- Istio members
    case("istio-network-missing", on("eu1", istio={"trustDomain": "retail-eu1.example"}),
         RETAIL, "spec.clusters[0].istio.network", "expected the Istio network"),
    case("istio-trust-domain-missing", on("eu1", istio={"network": "net-eu"}), RETAIL,
         "spec.clusters[0].istio.trustDomain", "expected the trust domain"),
    case("istio-trust-domain-shared", on("us1", istio={"network": "net-us",
                                                        "trustDomain": "retail-eu1.example",
                                                        "eastWestGateway": GATEWAY_US1}),
         RETAIL, "spec.clusters[1].istio.trustDomain", "share the trust domain",
         "cannot tell the clusters apart", severity=Severity.WARNING),
    case("istio-cluster-domains-differ", on("us1", clusterDomain="us.local"), RETAIL,
         "spec.clusters[1].clusterDomain", "the cluster domain of the other Istio members"),
    # ---- an intended flow with no path
    case("flow-to-non-member", drop("ap1", "clustermesh"), WEB,
         "spec.egress[0].toEndpoints[0]", "expected a path from retail/eu1 to retail/ap1",
         "retail/ap1 not ClusterMesh member"),
    case("flow-peers-all-one-side-outside", both(setting(peers="all"),
                                                 drop("ap1", "clustermesh")),
         WEB, "spec.egress[0].toEndpoints[0]", "expected a path", "not ClusterMesh member"),
    case("flow-istio-same-network", both(drop("ap1", "clustermesh"),
                                         on("ap1", istio={"network": "net-eu",
                                                          "trustDomain": "retail-ap1.example"})),
         WEB, "spec.egress[0].toEndpoints[0]", "expected a path from retail/eu1 to retail/ap1",
         "both Istio members are on network 'net-eu'"),
    # ---- flows between Istio networks: the gateways' addresses come from the inventory
    case("gateway-address-unknown", both(*ISTIO_ONLY, on("ap1", istio={
        "network": "net-ap", "trustDomain": "ap1.example", "egressCIDRs": ["192.0.2.0/28"]})),
         WEB, "spec.egress[0].toEndpoints[0]", "expected the address of the east-west "
         "gateway of retail/ap1", "spec.clusters[2].istio.eastWestGateway.address"),
    case("gateway-sources-unknown", both(*ISTIO_ONLY, on("ap1", istio={
        "network": "net-ap", "trustDomain": "ap1.example",
        "eastWestGateway": {"address": "198.51.100.13"}}), drop("us1", "istio",
                                                                "eastWestGateway"),
        on("p1", istio={"network": "net-pay", "trustDomain": "payments-p1.example",
                        "eastWestGateway": {"address": "198.51.100.21"}})),
         "requirements/payments/pay.yaml", "spec.ingress[0].fromEndpoints[0]",
         "expected the addresses retail/us1's connections to other networks come from",
         "egressCIDRs"),
    case("gateway-address-a-name", on("p1", istio={
        "network": "net-eu", "trustDomain": "payments-p1.example",
        "eastWestGateway": {"address": "ew.p1.example.com"}}), PAYMENTS,
         "spec.clusters[0].istio.eastWestGateway.address", "reserved IP address",
         "toFQDNs"),
    case("gateway-address-shared", on("p1", istio={
        "network": "net-eu", "trustDomain": "payments-p1.example",
        "eastWestGateway": {"address": "198.51.100.11"}}), RETAIL,  # payments is read first
         "spec.clusters[0].istio.eastWestGateway.address", "address of its own", "again"),
    case("egress-cidr-invalid", on("p1", istio={
        "network": "net-eu", "trustDomain": "payments-p1.example",
        "eastWestGateway": {"address": "198.51.100.21"}, "egressCIDRs": ["10.0.0.300/8"]}),
         PAYMENTS, "spec.clusters[0].istio.egressCIDRs[0]", "10.0.0.300/8"),
]


@pytest.mark.parametrize("case", CASES)
def test_each_refusal_is_located_and_explained(case: Case, tmp_path: Path) -> None:
    repo = mesh_repo()
    case.edit(repo)
    ok, diagnostics = run(repo, tmp_path)
    found = [d for d in diagnostics if d.location.file == case.file and d.path == case.path
             and d.severity is case.severity]
    assert found, "\n".join(d.format_text() for d in diagnostics)
    assert any(all(word in d.message for word in case.words) for d in found), \
        "\n".join(d.format_text() for d in found)
    assert all(d.location.line > 0 for d in found)
    assert ok is (case.severity is not Severity.ERROR)


def test_the_base_repository_is_valid(tmp_path: Path) -> None:
    ok, diagnostics = run(mesh_repo(), tmp_path)
    assert ok, [d.format_text() for d in diagnostics]
    assert [d.format_text() for d in diagnostics] == []  # us1 <-> p1: the gateways are known


def test_all_errors_of_a_run_are_reported_together(tmp_path: Path) -> None:
    repo = mesh_repo()
    for edit in (drop("eu1", "meshId"), on("ap1", clustermesh={"port": 2379}),
                 lambda r: r.mesh_spec["istio"].pop("rootCA"),
                 on("p1", istio={"network": "net-eu"})):
        edit(repo)
    ok, diagnostics = run(repo, tmp_path)
    errors = {d.path for d in diagnostics if d.severity is Severity.ERROR}
    assert not ok
    assert {"spec.clusters[0].meshId", "spec.clusters[2].clustermesh.address",
            "spec.istio.rootCA", "spec.clusters[0].istio.trustDomain"} <= errors


def test_ids_may_repeat_between_clusters_nothing_connects(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.clusters["retail"].append({"name": "lone", "meshId": 11,
                                    "podCIDRs": ["10.99.0.0/16"],
                                    "clustermesh": {"address": "203.0.113.99"}})
    ok, diagnostics = run(repo, tmp_path)
    assert ok, [d.format_text() for d in diagnostics]
    setting(peers="all")(repo)
    ok, diagnostics = run(repo, tmp_path / "all")
    assert not ok and any("unique across the ClusterMesh" in d.message for d in diagnostics)


def test_ids_up_to_511_with_maxconnectedclusters_511(tmp_path: Path) -> None:
    repo = mesh_repo()
    on("eu1", meshId=511)(repo)
    setting(maxConnectedClusters=511)(repo)
    ok, diagnostics = run(repo, tmp_path)
    assert ok, [d.format_text() for d in diagnostics]


def test_without_a_mesh_document_ids_stay_unique_across_the_inventory(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.mesh = None
    on("ap1", meshId=11)(repo)
    ok, diagnostics = run(repo, tmp_path)
    assert not ok
    assert any("unique across the mesh" in d.message for d in diagnostics)
