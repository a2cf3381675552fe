"""The mesh plan (meshplan.mesh.plan, .flows): intended flows and ClusterMesh peers.

The property test generates fleets (``strategies.repos``), makes every cluster a ClusterMesh
member with ``peers: needed``, and checks the peer relation against an oracle that does not use
meshplan's flow derivation: the clusters the *rendered* CiliumNetworkPolicies name in their
peers (``io.cilium.k8s.policy.cluster``). Peers must be symmetric, cover every such pair and
contain nothing else.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from meshplan.mesh.plan import MeshPlan, ref_of
from meshplan.pipeline import analyse
from meshplan.refine import ClusterRef, Plan

from tests.support.ci import examples
from tests.support.mesh_fixture import mesh_repo
from tests.support.strategies import RepoSpec, repos

CLUSTER_KEY = "io.cilium.k8s.policy.cluster"
MESH = {"apiVersion": "meshplan.dev/v1alpha1", "kind": "Mesh", "metadata": {"name": "m"},
        "spec": {"cilium": {"peers": "needed", "ca": {"existingSecret": "cilium-ca"}}}}


def _clusters_named(selector: dict[str, Any]) -> Iterator[str]:
    labels = selector.get("matchLabels") or {}
    if CLUSTER_KEY in labels:
        yield labels[CLUSTER_KEY]
    for expression in selector.get("matchExpressions") or ():
        if expression["key"] == CLUSTER_KEY and expression["operator"] == "In":
            yield from expression["values"]


def rendered_pairs(plan: Plan) -> set[frozenset[ClusterRef]]:
    """Cluster pairs the rendered policies connect (the oracle)."""
    by_mesh_name = {c.mesh_name: c.cluster for c in plan.clusters}
    pairs = set()
    for cluster in plan.clusters:
        for manifest in cluster.objects:
            spec = manifest.body.get("spec") if manifest.key.kind.startswith("Cilium") else None
            for rule in [*(spec or {}).get("egress", []), *(spec or {}).get("ingress", [])]:
                for peer in [*rule.get("toEndpoints", []), *rule.get("fromEndpoints", [])]:
                    for name in _clusters_named(peer):
                        other = by_mesh_name[name]
                        if other != cluster.cluster:
                            pairs.add(frozenset((cluster.cluster, other)))
    return pairs


def peer_pairs(mesh: MeshPlan) -> set[frozenset[ClusterRef]]:
    return {frozenset((ref_of(c), ref_of(p))) for c in mesh.cilium_members
            for p in mesh.peers_of(c)}


def as_mesh(spec: RepoSpec) -> RepoSpec:
    address = 0
    for domain in spec.domains:
        for cluster in domain["spec"]["clusters"]:
            address += 1
            cluster["clustermesh"] = {"address": f"198.18.{address // 256}.{address % 256}"}
    return spec


@pytest.mark.slow  # a property over random repositories: the full tier
@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(repos(max_domains=3, max_clusters=3, max_services=3, max_requirements=3))
def test_peers_needed_are_exactly_the_clusters_with_intended_flows(spec: RepoSpec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = as_mesh(spec).write(Path(tmp))
        (root / "inventory" / "mesh.yaml").write_text(yaml.safe_dump(MESH), encoding="utf-8")
        analysis = analyse(root)
    assert analysis.mesh is not None and analysis.plan is not None, [
        d.format_text() for d in analysis.diagnostics]
    mesh = analysis.mesh
    for cluster in mesh.cilium_members:
        for peer in mesh.peers_of(cluster):
            assert cluster in mesh.peers_of(peer)  # symmetric
    assert peer_pairs(mesh) == rendered_pairs(analysis.plan)  # covers them, nothing else


def test_peers_all_connects_every_member(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.mesh_spec["cilium"]["peers"] = "all"
    analysis = analyse(repo.write(tmp_path))
    assert analysis.mesh is not None
    names = {c.name: [p.name for p in analysis.mesh.peers_of(c)]
             for c in analysis.mesh.cilium_members}
    assert names == {"p1": ["eu1", "us1", "ap1"], "eu1": ["p1", "us1", "ap1"],
                     "us1": ["p1", "eu1", "ap1"], "ap1": ["p1", "eu1", "us1"]}


def test_flows_of_the_base_repository(tmp_path: Path) -> None:
    analysis = analyse(mesh_repo().write(tmp_path))
    assert analysis.mesh is not None
    flows = {(s.path, d.path) for s, d in analysis.mesh.flows.causes}
    assert flows == {("retail/eu1", "retail/ap1"), ("retail/us1", "retail/ap1"),
                     ("retail/eu1", "payments/p1"), ("retail/us1", "payments/p1")}


def test_raw_labels_cidrs_and_requirements_restricting_nothing_add_no_pairs(
        tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.requirements["requirements/retail/web.yaml"]["spec"] = {
        "endpointSelector": {"matchLabels": {"service": "web"}},
        "egress": [{"toEndpoints": [{"matchLabels": {"app": "debug"}}]},
                   {"toCIDRSet": [{"cidr": "203.0.113.0/24"}]}]}
    repo.requirements["requirements/payments/pay.yaml"]["spec"] = {
        "endpointSelector": {"matchLabels": {"service": "pay"}}}
    analysis = analyse(repo.write(tmp_path))
    assert analysis.mesh is not None, [d.format_text() for d in analysis.diagnostics]
    assert dict(analysis.mesh.flows.causes) == {}
    assert all(analysis.mesh.peers_of(c) == () for c in analysis.mesh.cilium_members)


def test_ingress_peers_flow_towards_the_scope(tmp_path: Path) -> None:
    repo = mesh_repo()
    del repo.requirements["requirements/retail/web.yaml"]
    analysis = analyse(repo.write(tmp_path))
    assert analysis.mesh is not None
    causes = analysis.mesh.flows.causes
    assert {(s.path, d.path) for s, d in causes} == {("retail/eu1", "payments/p1"),
                                                    ("retail/us1", "payments/p1")}
    cause = next(iter(causes.values()))
    assert cause.requirement == "payments/pay/pay"
    assert cause.location.file == "requirements/payments/pay.yaml"
    assert cause.path == "spec.ingress[0].fromEndpoints[0]"
