"""A small, valid mesh repository the mesh tests edit one thing at a time.

``retail`` runs ``web`` in eu1 and us1 (two Istio networks) and ``cart`` in ap1 (ClusterMesh
only); ``payments`` runs ``pay`` in p1 (network net-eu). ``web`` calls ``cart`` and ``pay``, and
``pay`` admits ``web``: the intended cross-cluster flows are eu1 -> ap1, us1 -> ap1,
eu1 -> p1 and us1 -> p1 (so with ``peers: needed`` eu1 and us1 are not peers). The Istio
members' east-west gateways have reserved addresses (us1 -> p1 crosses networks). eu1 and us1 are
delivered by Argo CD (by name and by server), ap1 and p1 by Flux.

:func:`mesh_repo` returns plain data (:class:`MeshRepo`): edit ``clusters``, ``mesh`` and the
rest, then :meth:`MeshRepo.write` it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

API = "meshplan.dev/v1alpha1"


@dataclass
class MeshRepo:
    clusters: dict[str, list[dict[str, Any]]]  # domain -> cluster entries
    services: dict[str, list[dict[str, Any]]]  # domain -> service entries
    requirements: dict[str, dict[str, Any]]  # relpath -> document
    mesh: dict[str, Any] | None
    gitops: dict[str, Any] | None
    extra: dict[str, str] = field(default_factory=dict)  # relpath -> raw text

    @property
    def mesh_spec(self) -> dict[str, Any]:
        """The Mesh document's spec (to edit; the base repository has a Mesh document)."""
        assert self.mesh is not None, "this repository has no Mesh document"
        spec: dict[str, Any] = self.mesh["spec"]
        return spec

    def cluster(self, name: str) -> dict[str, Any]:
        return next(c for cs in self.clusters.values() for c in cs if c["name"] == name)

    def write(self, root: Path) -> Path:
        files: dict[str, Any] = {}
        for domain, clusters in self.clusters.items():
            doc = {"apiVersion": API, "kind": "Domain", "metadata": {"name": domain},
                   "spec": {"clusters": clusters, "services": self.services.get(domain, [])}}
            files[f"inventory/{domain}.yaml"] = doc
        if self.mesh is not None:
            files["inventory/mesh.yaml"] = self.mesh
        if self.gitops is not None:
            files["inventory/gitops.yaml"] = self.gitops
        files.update(self.requirements)
        for relpath, doc in files.items():
            path = root / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        for relpath, text in self.extra.items():
            path = root / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return root


def requirement(name: str, selector: dict[str, str], namespace: str | None = None,
                **spec: Any) -> dict[str, Any]:
    """A Requirement document selecting ``selector`` (``spec``: its other keys)."""
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": API, "kind": "Requirement", "metadata": metadata,
            "spec": {"endpointSelector": {"matchLabels": selector}, **spec}}


BASE = MeshRepo(
    clusters={
        "retail": [
            {"name": "eu1", "meshName": "retail-eu1", "meshId": 11, "podCIDRs": ["10.11.0.0/16"],
             "clustermesh": {"address": "203.0.113.11"},
             "istio": {"network": "net-eu", "trustDomain": "retail-eu1.example",
                       "eastWestGateway": {"address": "198.51.100.11"}},
             "gitops": {"argocdDestinationName": "eu1"}},
            {"name": "us1", "meshName": "retail-us1", "meshId": 12, "podCIDRs": ["10.12.0.0/16"],
             "clustermesh": {"address": "cm.us1.retail.example.com", "port": 2379},
             "istio": {"network": "net-us", "trustDomain": "retail-us1.example",
                       "eastWestGateway": {"address": "198.51.100.12"}},
             "gitops": {"argocdDestinationServer": "https://us1.retail.example.com:6443"}},
            {"name": "ap1", "meshName": "retail-ap1", "meshId": 13, "podCIDRs": ["10.13.0.0/16"],
             "clustermesh": {"address": "203.0.113.13"},
             "gitops": {"fluxNamespace": "flux-system"}},
        ],
        "payments": [
            {"name": "p1", "meshName": "payments-p1", "meshId": 21,
             "podCIDRs": ["10.21.0.0/16"], "clustermesh": {"address": "203.0.113.21"},
             "istio": {"network": "net-eu", "trustDomain": "payments-p1.example",
                       "eastWestGateway": {"address": "198.51.100.21"}},
             "gitops": {"fluxNamespace": "flux-system"}},
        ],
    },
    services={
        "retail": [
            {"name": "web", "namespace": "shop", "serviceAccount": "web",
             "selector": {"app": "web"},
             "ports": [{"port": 8080, "protocol": "TCP", "name": "http"}],
             "clusters": ["eu1", "us1"], "exportTo": ["payments"]},
            {"name": "cart", "namespace": "shop", "selector": {"app": "cart"},
             "ports": [{"port": 7070, "protocol": "TCP", "name": "grpc"}], "clusters": ["ap1"]},
        ],
        "payments": [
            {"name": "pay", "namespace": "pay", "serviceAccount": "pay",
             "selector": {"app": "pay"},
             "ports": [{"port": 50051, "protocol": "TCP", "name": "grpc"}],
             "clusters": ["p1"], "exportTo": ["retail"]},
        ],
    },
    requirements={
        "requirements/retail/web.yaml": requirement(
            "web", {"service": "web"},
            egress=[{"toEndpoints": [{"matchLabels": {"service": "cart"}},
                                     {"matchLabels": {"service": "pay",
                                                      "domain": "payments"}}]}]),
        "requirements/payments/pay.yaml": requirement(
            "pay", {"service": "pay"},
            ingress=[{"fromEndpoints": [{"matchLabels": {"service": "web",
                                                         "domain": "retail"}}]}]),
    },
    mesh={"apiVersion": API, "kind": "Mesh", "metadata": {"name": "mesh1"},
          "spec": {"cilium": {"routingMode": "tunnel", "encryption": "wireguard",
                              "maxConnectedClusters": 255, "peers": "needed",
                              "ca": {"existingSecret": "cilium-ca"},
                              "apiserverService": "LoadBalancer"},
                   "istio": {"meshID": "mesh1", "rootCA": {"existingSecret": "cacerts"}}}},
    gitops={"apiVersion": API, "kind": "GitOps", "metadata": {"name": "delivery"},
            "spec": {"repoURL": "https://git.example.com/platform/mesh.git"}},
)


def mesh_repo() -> MeshRepo:
    """A fresh copy of the base repository (edit freely)."""
    return copy.deepcopy(BASE)
