"""meshplan.observability.strict: the STRICT namespaces (the identity layer's rule, stand-in)."""

from __future__ import annotations

from pathlib import Path

from meshplan.mesh.plan import MeshPlan, plan_mesh
from meshplan.observability.strict import namespace_causes, strict_namespaces
from meshplan.pipeline import validated
from meshplan.refine import ClusterRef

from tests.support.mesh_fixture import API, MeshRepo, mesh_repo


def mesh_of(repo: MeshRepo, root: Path) -> MeshPlan:
    inventory, _ = validated(repo.write(root))
    mesh = plan_mesh(inventory)
    assert mesh is not None
    return mesh


def strict(mesh: MeshPlan) -> dict[str, set[str]]:
    return {ref.path: set(names) for ref, names in strict_namespaces(mesh).items()}


def test_protected_and_calling_namespaces_of_istio_members(tmp_path: Path) -> None:
    """web (retail, eu1 and us1, namespace shop) is protected by its requirement and called
    across clusters by pay's ingress rule; pay (p1) is protected. ap1 is no Istio member."""
    mesh = mesh_of(mesh_repo(), tmp_path)
    assert strict(mesh) == {"retail/eu1": {"shop"}, "retail/us1": {"shop"},
                            "payments/p1": {"pay"}}
    causes = namespace_causes(mesh.inventory)
    assert [r.key for r in causes[(ClusterRef("retail", "eu1"), "shop")]] == [
        "payments/pay/pay", "retail/shop/web"]


def test_a_caller_in_the_same_cluster_only_is_not_strict(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.services["retail"].append({"name": "stock", "namespace": "stock",
                                    "selector": {"app": "stock"},
                                    "ports": [{"port": 80, "protocol": "TCP"}],
                                    "clusters": ["eu1"]})
    repo.services["retail"].append({"name": "shelf", "namespace": "shelf",
                                    "selector": {"app": "shelf"},
                                    "ports": [{"port": 80, "protocol": "TCP"}],
                                    "clusters": ["eu1"]})
    repo.requirements["requirements/retail/stock.yaml"] = {
        "apiVersion": API, "kind": "Requirement", "metadata": {"name": "stock"},
        "spec": {"endpointSelector": {"matchLabels": {"service": "stock"}},
                 "ingress": [{"fromEndpoints": [{"matchLabels": {"service": "shelf"}}]}]}}
    found = strict(mesh_of(repo, tmp_path))
    assert found["retail/eu1"] == {"shop", "stock"}  # shelf calls stock inside eu1 only


def test_cluster_wide_and_unrestricting_requirements_add_nothing(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.requirements["requirements/retail/all.yaml"] = {
        "apiVersion": API, "kind": "Requirement",
        "metadata": {"name": "all", "namespace": "*"},
        "spec": {"clusters": ["eu1"], "endpointSelector": {"matchLabels": {"tier": "x"}},
                 "egress": [{"toEndpoints": [{"matchLabels": {"service": "cart"}}]}]}}
    repo.requirements["requirements/retail/nothing.yaml"] = {
        "apiVersion": API, "kind": "Requirement",
        "metadata": {"name": "nothing", "namespace": "quiet"},
        "spec": {"clusters": ["eu1"], "endpointSelector": {"matchLabels": {"tier": "y"}}}}
    assert strict(mesh_of(repo, tmp_path))["retail/eu1"] == {"shop"}
