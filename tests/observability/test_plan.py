"""meshplan.observability.plan: what is watched where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshplan.mesh.plan import plan_mesh
from meshplan.observability.plan import ObservabilityPlan, plan_observability
from meshplan.pipeline import validated
from meshplan.vocabulary import ISTIO_ROOT_NAMESPACE, REQUIRED_BY_ANNOTATION

from tests.support.mesh_fixture import MeshRepo
from tests.support.observability_fixture import observed_repo
from tests.support.rendered import documents, render_files


def plan_of(root: Path, **settings: Any) -> ObservabilityPlan:
    return plan_of_repo(root, observed_repo(**settings))


def plan_of_repo(root: Path, repo: MeshRepo) -> ObservabilityPlan:
    inventory, _ = validated(repo.write(root))
    mesh = plan_mesh(inventory)
    assert mesh is not None
    plan = plan_observability(mesh)
    assert plan is not None
    return plan


def test_every_cluster_with_something_to_watch(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    watches = {f"{w.cluster.domain}/{w.cluster.name}": w for w in plan.watches}
    assert list(watches) == ["payments/p1", "retail/eu1", "retail/us1", "retail/ap1"]
    assert plan.central.name == "eu1"
    assert [w.cluster.name for w in plan.members] == ["p1", "us1", "ap1"]
    eu1, ap1, p1 = watches["retail/eu1"], watches["retail/ap1"], watches["payments/p1"]
    assert eu1.istio and not ap1.istio and p1.istio
    assert [s.namespace for s in eu1.strict] == ["shop"]
    assert eu1.incoming == ()  # nothing is intended into eu1
    assert [(f.source.name, f.requirement.key) for f in p1.incoming] == [
        ("eu1", "payments/pay/pay"), ("us1", "payments/pay/pay")]
    assert [s.name for s in eu1.sources] == ["p1", "us1"]
    assert [(p.namespace, p.direction) for p in eu1.protections] == [("shop", "egress")]
    assert [(p.namespace, p.direction) for p in p1.protections] == [("pay", "ingress")]
    assert ap1.protections == ()  # cart is called, but no requirement restricts it
    # peers: needed: ap1 connects to eu1 and us1, each for web's calls to cart
    assert [(link.cluster.name, link.requirement.key if link.requirement else None)
            for link in ap1.peers] == [("eu1", "retail/shop/web"), ("us1", "retail/shop/web")]


def test_thresholds_and_durations_have_defaults(tmp_path: Path) -> None:
    plan = plan_of(tmp_path / "defaults")
    assert plan.settings.thresholds == {"workloadCertificateHours": 6.0,
                                        "caCertificateHours": 720.0,
                                        "policyDropsPerSecond": 0.05}
    assert plan.settings.durations == {"plaintext": "1m", "certificates": "15m",
                                       "policyDrops": "10m", "clusterMesh": "5m",
                                       "federation": "10m"}
    assert plan.settings.namespace == "monitoring"
    changed = plan_of(tmp_path / "set", thresholds={"caCertificateHours": 168},
                      **{"for": {"plaintext": "0s"}})
    assert changed.settings.thresholds["caCertificateHours"] == 168
    assert changed.settings.durations["plaintext"] == "0s"
    assert changed.settings.durations["certificates"] == "15m"


def test_strict_namespaces_are_the_rendered_peer_authentications(tmp_path: Path) -> None:
    """What monitoring watches as STRICT is what the identity layer renders, cluster by
    cluster, with the same causes: here a service of retail that payments admits but retail
    did not export (no PeerAuthentication in its namespace, so no alert either), and
    ``strictMTLS: mesh`` (the root namespace's policy, watched mesh-wide)."""
    repo = observed_repo(mesh_wide_strict=True)
    repo.services["retail"].append({
        "name": "batch", "namespace": "jobs", "serviceAccount": "batch",
        "selector": {"app": "batch"}, "ports": [{"port": 80, "protocol": "TCP"}],
        "clusters": ["eu1"]})
    repo.requirements["requirements/payments/pay.yaml"]["spec"]["ingress"][0][
        "fromEndpoints"].append({"matchLabels": {"service": "batch", "domain": "retail"}})
    root = repo.write(tmp_path / "repo")
    rendered: dict[str, set[tuple[str, tuple[str, ...]]]] = {}
    for path, content in render_files(root).items():
        if path.endswith("/istio-security.yaml"):
            rendered[path.split("/")[1] + "/" + path.split("/")[2]] = {
                (d["metadata"]["namespace"],
                 tuple(c for c in d["metadata"]["annotations"][REQUIRED_BY_ANNOTATION]
                       .split(",") if not c.startswith("mesh/")))
                for d in documents(content) if d["kind"] == "PeerAuthentication"}
    plan = plan_of_repo(tmp_path / "plan", repo)
    watched = {f"{w.cluster.domain}/{w.cluster.name}": {
        (s.namespace, tuple(r.key for r in s.requirements)) for s in w.strict}
        for w in plan.watches if w.strict}
    assert watched == rendered
    assert ("jobs", ("payments/pay/pay",)) not in watched["retail/eu1"]
    assert all((s.namespace == ISTIO_ROOT_NAMESPACE) is s.mesh_wide
               for w in plan.watches for s in w.strict)
