"""The mesh plan: who is a member, whom each ClusterMesh member connects to, Istio networks.

A pure function of the inventory. It is built even from inputs the checker will refuse (a
member without an address or an ID, say), so that the checker can word every problem from one
structure; rendering only ever sees a plan whose checks passed.

ClusterMesh peers: with ``peers: all`` every member connects to every other member; with
``peers: needed`` a member connects to exactly the members it has an intended flow with, in
either direction (:mod:`meshplan.mesh.flows`). The relation is symmetric by construction: a
connection needs both sides' values (each side's agent dials the other's clustermesh-apiserver,
and with ``authMode: cluster`` each apiserver only admits the peers listed in its own values).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from ..model import Cluster, Inventory
from ..refine import ClusterRef, host_cidr
from .flows import IntendedFlows, intended_cluster_flows
from .model import Mesh


def ref_of(cluster: Cluster) -> ClusterRef:
    return ClusterRef(cluster.domain, cluster.name)


@dataclass(frozen=True)
class IstioMember:
    cluster: Cluster
    network: str | None
    trust_domain: str | None

    @property
    def ref(self) -> ClusterRef:
        return ref_of(self.cluster)


@dataclass(frozen=True)
class MeshPlan:
    mesh: Mesh
    inventory: Inventory
    cilium_members: tuple[Cluster, ...]  # clusters with ``clustermesh``, inventory order
    istio_members: tuple[IstioMember, ...]  # clusters with ``istio``, inventory order
    flows: IntendedFlows

    @cached_property
    def cilium_refs(self) -> Mapping[ClusterRef, Cluster]:
        return {ref_of(c): c for c in self.cilium_members}

    @cached_property
    def istio_refs(self) -> Mapping[ClusterRef, IstioMember]:
        return {m.ref: m for m in self.istio_members}

    @property
    def peers_needed(self) -> bool:
        return self.mesh.cilium is not None and self.mesh.cilium.peers == "needed"

    def peers_of(self, cluster: Cluster) -> tuple[Cluster, ...]:
        """The ClusterMesh members ``cluster`` connects to, in inventory order."""
        ref = ref_of(cluster)
        if ref not in self.cilium_refs:
            return ()
        if not self.peers_needed:
            return tuple(c for c in self.cilium_members if c is not cluster)
        return self._needed_peers.get(ref, ())

    @cached_property
    def _needed_peers(self) -> Mapping[ClusterRef, tuple[Cluster, ...]]:
        """``peers: needed``: each member's members with an intended flow, in inventory order."""
        order = {ref: i for i, ref in enumerate(self.cilium_refs)}
        found: dict[ClusterRef, tuple[Cluster, ...]] = {}
        for ref in self.cilium_refs:
            wanted = [r for r in self.flows.neighbours.get(ref, ()) if r in order]
            found[ref] = tuple(self.cilium_refs[r] for r in sorted(wanted, key=order.__getitem__))
        return found

    def peer_count(self, cluster: Cluster) -> int:
        """``len(peers_of(cluster))`` without building the tuple (``peers: all`` at scale)."""
        if ref_of(cluster) not in self.cilium_refs:
            return 0
        if not self.peers_needed:
            return len(self.cilium_members) - 1
        return len(self.peers_of(cluster))

    def are_peers(self, a: ClusterRef, b: ClusterRef) -> bool:
        if a not in self.cilium_refs or b not in self.cilium_refs or a == b:
            return False
        return not self.peers_needed or b in self.flows.neighbours.get(a, frozenset())

    @cached_property
    def networks(self) -> tuple[str, ...]:
        """The distinct Istio networks of the members, sorted."""
        return tuple(sorted({m.network for m in self.istio_members if m.network}))

    @property
    def multi_network(self) -> bool:
        return len(self.networks) > 1

    def peer_trust_domains(self, member: IstioMember) -> tuple[str, ...]:
        """The other Istio members' trust domains (sorted, without the member's own)."""
        return tuple(sorted({m.trust_domain for m in self.istio_members
                             if m.trust_domain and m.trust_domain != member.trust_domain}))

    def gateway_route(self, a: ClusterRef, b: ClusterRef) -> bool:
        """True when Istio routes a <-> b through east-west gateways (members on two networks)."""
        first, second = self.istio_refs.get(a), self.istio_refs.get(b)
        return (first is not None and second is not None and bool(first.network)
                and bool(second.network) and first.network != second.network)


def gateway_sources(cluster: Cluster) -> tuple[str, ...]:
    """The CIDRs an Istio member's connections to other networks' east-west gateways come
    from: its ``egressCIDRs``, else its own gateway's address (a cluster whose outbound traffic
    leaves through that reserved address); empty when neither is known. The gateway policies
    and verify both ask here."""
    istio = cluster.istio
    if istio is None:
        return ()
    if istio.egress_cidrs:
        return tuple(cidr for cidr, _ in istio.egress_cidrs)
    return (host_cidr(istio.gateway_address),) if istio.gateway_address else ()


def gateway_clients(plan: MeshPlan, member: IstioMember) -> list[IstioMember]:
    """The members whose flows into ``member`` cross its east-west gateway: on another
    network, with an intended flow to it (sorted by cluster)."""
    ref = member.ref
    members = plan.istio_refs
    return [members[source] for source in sorted(plan.flows.into.get(ref, ()))
            if source in members and plan.gateway_route(source, ref)]


def plan_mesh(inventory: Inventory) -> MeshPlan | None:
    """The mesh plan of ``inventory`` (None without a Mesh document)."""
    mesh = inventory.mesh
    if mesh is None:
        return None
    clusters = [c for d in inventory.domains for c in d.clusters]
    cilium = tuple(c for c in clusters if c.clustermesh is not None)
    istio = tuple(IstioMember(c, c.istio.network, c.istio.trust_domain)
                  for c in clusters if c.istio is not None)
    return MeshPlan(mesh, inventory, cilium, istio, intended_cluster_flows(inventory))
