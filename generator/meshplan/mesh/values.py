"""Helm values of the charts that build the mesh, one function per chart (pure, plain dicts).

* ``cilium`` 1.19.4 - ClusterMesh through Helm (what ``cilium clustermesh connect`` would
  otherwise write): ``clustermesh.config.clusters`` in the dict form new in 1.19, keyed by the
  peer's cluster name. The chart documents it as the form to use without the CLI
  (``Documentation/operations/upgrade.rst``), and a dict merges key by key across Helm values
  layers (a list is replaced whole), so an overlay can add or disable one peer. A peer given
  by IP uses ``ips``: the agent then dials ``<name>.mesh.cilium.io``, which the server
  certificate covers (``*.mesh.cilium.io``); a peer given by DNS name uses ``address``, and that
  member puts its own name into ``tls.server.extraDnsNames``. Certificates never come from the
  chart's default method ``helm``, which makes a new CA whenever Argo CD renders the chart:
  ``cronJob`` (certgen, with the shared CA read from Secret ``cilium-ca``, and
  ``certgen.generateCA: false`` so a missing CA fails instead of forking a private one) or
  ``certmanager`` with the shared issuer; Hubble's certificates use the same method.
  ``authMode: cluster`` gives every peer a user of its own, which the chart documents as
  meaningful only with a shared CA - exactly this setup.
* ``istiod`` 1.30.3 - multi-primary: ``global.meshID``, ``global.multiCluster.clusterName``
  (the cluster's Cilium name, so metrics and remote secrets name clusters the same way),
  ``global.network``, the cluster's own ``meshConfig.trustDomain``, and the other members'
  trust domains in ``meshConfig.caCertificates[].trustDomains`` - never
  ``trustDomainAliases``, which would make the clusters' identities interchangeable in
  authorization. The entry carries no PEM: see :func:`istiod_values`.
* ``istio/gateway`` 1.30.3 - the east-west gateway: ``name`` and ``networkGateway``, which
  make the chart add the network label, the requested-network-view variable and the
  15021/15443/15012/15017 ports; its reserved address and ``externalTrafficPolicy: Local``.
"""

from __future__ import annotations

from typing import Any

from ..model import Cluster
from ..vocabulary import EASTWEST_GATEWAY_NAME
from .check import is_ip
from .model import CiliumSettings
from .plan import IstioMember, MeshPlan

MESH_DOMAIN_WILDCARD = ".mesh.cilium.io"  # covered by the server certificate's *.mesh.cilium.io


def cilium_values(plan: MeshPlan, cluster: Cluster) -> dict[str, Any]:
    """Values of the cilium chart for ClusterMesh member ``cluster``."""
    cilium = plan.mesh.cilium
    assert cilium is not None and cluster.clustermesh is not None
    values: dict[str, Any] = {
        "cluster": {"name": cluster.mesh_name, "id": cluster.mesh_id},
        "routingMode": cilium.routing_mode,
    }
    if cilium.routing_mode == "native":
        values["ipv4NativeRoutingCIDR"] = cilium.native_routing_cidr
    values["encryption"] = ({"enabled": True, "type": "wireguard"}
                            if cilium.encryption == "wireguard" else {"enabled": False})
    values["clustermesh"] = {
        "useAPIServer": True,
        "maxConnectedClusters": cilium.max_connected_clusters,
        "config": {
            "enabled": True,
            "clusters": {peer.mesh_name: _peer_entry(cilium, peer)
                         for peer in plan.peers_of(cluster)},
        },
        "apiserver": {
            "service": _apiserver_service(cilium, cluster),
            "tls": _apiserver_tls(cilium, cluster),
        },
    }
    if cilium.ca_issuer is None:
        values["certgen"] = {"generateCA": False}
    values["hubble"] = {"tls": {"auto": _auto_tls(cilium)}}
    return values


def _peer_entry(cilium: CiliumSettings, peer: Cluster) -> dict[str, Any]:
    endpoint = peer.clustermesh
    assert endpoint is not None and endpoint.address is not None
    port = endpoint.port or cilium.default_port
    if is_ip(endpoint.address):
        return {"ips": [endpoint.address], "port": port}
    return {"address": endpoint.address, "port": port}


def _apiserver_service(cilium: CiliumSettings, cluster: Cluster) -> dict[str, Any]:
    endpoint = cluster.clustermesh
    assert endpoint is not None
    service: dict[str, Any] = {"type": cilium.apiserver_service}
    if cilium.apiserver_service == "NodePort":
        service["nodePort"] = endpoint.port or cilium.default_port
    elif endpoint.address and is_ip(endpoint.address):
        service["loadBalancerIP"] = endpoint.address  # the address reserved for it
    return service


def _apiserver_tls(cilium: CiliumSettings, cluster: Cluster) -> dict[str, Any]:
    endpoint = cluster.clustermesh
    assert endpoint is not None
    tls: dict[str, Any] = {"authMode": "cluster", "auto": {"enabled": True, **_auto_tls(cilium)}}
    address = endpoint.address
    if address and not is_ip(address) and not _covered_by_mesh_wildcard(address):
        tls["server"] = {"extraDnsNames": [address]}
    return tls


def _covered_by_mesh_wildcard(name: str) -> bool:
    head, _, rest = name.rstrip(".").partition(".")
    return bool(head) and f".{rest}" == MESH_DOMAIN_WILDCARD


def _auto_tls(cilium: CiliumSettings) -> dict[str, Any]:
    issuer = cilium.ca_issuer
    if issuer is None:
        return {"method": "cronJob"}
    return {"method": "certmanager",
            "certManagerIssuerRef": {"group": issuer.group, "kind": issuer.kind,
                                     "name": issuer.name}}


def istio_cluster_name(cluster: Cluster) -> str:
    """``global.multiCluster.clusterName``: the cluster's Cilium name, so that Istio's metrics
    (``source_cluster``, ``destination_cluster``), its remote secrets and Cilium's
    ``target_cluster`` name a cluster the same way. Monitoring reads it from here."""
    return cluster.mesh_name


def istiod_values(plan: MeshPlan, member: IstioMember, *, with_ca_certificates: bool = True
                  ) -> dict[str, Any]:
    """Values of the istiod chart for an Istio member.

    ``meshConfig.caCertificates`` holds one entry naming the other members' trust domains and
    no ``pem``: meshplan has no certificate, and none belongs in git. Every member's root is
    the shared root in its own ``cacerts`` Secret (``root-cert.pem``), so the other members'
    certificates already chain to a trusted anchor; the entry adds their trust domains to the
    ones sidecars accept. The Flux HelmRelease fills in ``pem`` from that Secret
    (``valuesFrom``), making the entry complete; ``with_ca_certificates=False`` leaves the
    entry out, for that HelmRelease's inline values (Helm replaces lists, it does not merge
    them).
    """
    istio = plan.mesh.istio
    assert istio is not None
    mesh_config: dict[str, Any] = {"trustDomain": member.trust_domain}
    peers = plan.peer_trust_domains(member)
    if peers and with_ca_certificates:
        mesh_config["caCertificates"] = [{"trustDomains": list(peers)}]
    return {
        "global": {
            "meshID": istio.mesh_id,
            "multiCluster": {"clusterName": istio_cluster_name(member.cluster)},
            "network": member.network,
        },
        "meshConfig": mesh_config,
    }


def ca_certificates_layer(plan: MeshPlan, member: IstioMember) -> dict[str, Any] | None:
    """``meshConfig.caCertificates`` alone (the layer Flux's valuesFrom completes with a PEM)."""
    peers = plan.peer_trust_domains(member)
    if not peers:
        return None
    return {"meshConfig": {"caCertificates": [{"trustDomains": list(peers)}]}}


def eastwest_gateway_values(member: IstioMember) -> dict[str, Any]:
    """Values of the istio/gateway chart for the member's east-west gateway.

    With a reserved address it becomes the Service's ``loadBalancerIP`` (the address the other
    networks' clients and CiliumNetworkPolicies name), and ``externalTrafficPolicy: Local``
    keeps the clients' source addresses, which the gateway's CiliumNetworkPolicy admits (with
    ``Cluster`` the load balancer's node would rewrite them)."""
    values: dict[str, Any] = {"name": EASTWEST_GATEWAY_NAME, "networkGateway": member.network}
    istio = member.cluster.istio
    if istio is not None and istio.gateway_address:
        values["service"] = {"loadBalancerIP": istio.gateway_address,
                             "externalTrafficPolicy": "Local"}
    return values

