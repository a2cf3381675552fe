"""The mesh repository of :mod:`tests.support.mesh_fixture` with monitoring switched on.

``retail/eu1`` runs the central Prometheus; us1 (bearer token and CA), ap1 (basic auth, a path
prefix and a port) and p1 (plain host) are federated. eu1 and us1 are Istio members on two
networks, ap1 a ClusterMesh member only, p1 both: every alert family has a cluster to fire in.
"""

from __future__ import annotations

from typing import Any

from .mesh_fixture import MeshRepo, mesh_repo

SELECTOR = {"release": "kube-prometheus-stack"}
ENDPOINTS: dict[str, dict[str, Any]] = {
    "us1": {"prometheus": "https://prometheus.us1.retail.example.com",
            "bearerTokenSecret": "federation-us1", "caSecret": "federation-ca"},
    "ap1": {"prometheus": "https://monitoring.ap1.retail.example.com:8443/prometheus/",
            "basicAuthSecret": "federation-ap1"},
    "p1": {"prometheus": "https://prometheus.p1.payments.example.com"},
}


def observed_repo(*, hubble: bool = True, mesh_wide_strict: bool = False,
                  **settings: Any) -> MeshRepo:
    """The mesh repository with ``spec.observability`` (``settings`` added to it) and every
    federated cluster's endpoint; ``mesh_wide_strict``: ``spec.istio.strictMTLS: mesh``."""
    repo = mesh_repo()
    if mesh_wide_strict:
        repo.mesh_spec["istio"]["strictMTLS"] = "mesh"
    repo.mesh_spec["observability"] = {"centralCluster": "retail/eu1",
                                       "selectorLabels": dict(SELECTOR), "hubble": hubble,
                                       **settings}
    for name, endpoint in ENDPOINTS.items():
        repo.cluster(name)["observability"] = dict(endpoint)
    return repo
