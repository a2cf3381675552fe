"""meshplan.observability.plan: what is watched where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshplan.mesh.plan import plan_mesh
from meshplan.observability.plan import ObservabilityPlan, plan_observability
from meshplan.pipeline import validated

from tests.support.observability_fixture import observed_repo


def plan_of(root: Path, **settings: Any) -> ObservabilityPlan:
    inventory, _ = validated(observed_repo(**settings).write(root))
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
