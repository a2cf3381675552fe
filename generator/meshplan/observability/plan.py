"""What to watch in each cluster: a pure function of the mesh plan (``spec.observability``).

A cluster is watched when there is something meshplan intends there that metrics can prove or
disprove:

* it is an Istio member: mutual TLS into the namespaces the identity layer makes STRICT
  (:func:`~meshplan.mesh.identity.strict_namespace_causes`, the very function that places its
  PeerAuthentications; with ``strictMTLS: mesh`` every namespace) and on every flow between
  members, and the workload and CA certificates that mutual TLS depends on;
* it runs workloads a requirement protects (a CiliumNetworkPolicy is rendered for it):
  Cilium's policy-denied drops;
* it is a ClusterMesh member with peers: the readiness of each peer the mesh plan connects.

The central cluster (``centralCluster``) also federates every other watched cluster.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from ..mesh.identity import mesh_wide_strict, participating_namespaces, strict_namespace_causes
from ..mesh.model import ObservabilitySettings
from ..mesh.plan import MeshPlan, ref_of
from ..mesh.values import istio_cluster_name
from ..model import Cluster, Inventory, Requirement, find_cluster
from ..refine import ClusterRef
from ..vocabulary import ISTIO_ROOT_NAMESPACE

Direction = Literal["ingress", "egress"]


@dataclass(frozen=True)
class StrictNamespace:
    """A namespace the identity layer makes STRICT, with the requirements that put it there.

    ``mesh_wide``: the root namespace under ``strictMTLS: mesh``, whose PeerAuthentication is
    the default of every namespace of the cluster (its requirements may then be empty)."""

    namespace: str
    requirements: tuple[Requirement, ...]  # sorted by key
    mesh_wide: bool = False


@dataclass(frozen=True)
class IncomingFlow:
    """An intended flow from another Istio member into this one, with its first cause."""

    source: Cluster
    requirement: Requirement


@dataclass(frozen=True)
class PeerLink:
    """A ClusterMesh peer the mesh plan connects, with the first requirement that intends a
    flow between the two clusters (None with ``peers: all`` and no such flow)."""

    cluster: Cluster
    requirement: Requirement | None


@dataclass(frozen=True)
class Protection:
    """Pods a requirement restricts in one direction, in one namespace (None: cluster-wide).

    Hubble's drop metric says which namespace a drop happened in, so the drops in that
    namespace and direction are the ones the requirement's policy may cause."""

    namespace: str | None
    direction: Direction
    requirements: tuple[Requirement, ...]  # sorted by key; one file per recording rule


@dataclass(frozen=True)
class Watch:
    """One watched cluster and what to watch there."""

    cluster: Cluster
    istio: bool  # an Istio member: mutual TLS and certificates
    strict: tuple[StrictNamespace, ...]  # sorted by namespace
    incoming: tuple[IncomingFlow, ...]  # from other Istio members, in inventory order
    sources: tuple[Cluster, ...]  # every other Istio member (plaintext from any of them)
    protections: tuple[Protection, ...]  # sorted by namespace, direction
    peers: tuple[PeerLink, ...]  # ClusterMesh peers, in inventory order
    namespaces: tuple[str, ...]  # every namespace taking part here, sorted

    @property
    def ref(self) -> ClusterRef:
        return ref_of(self.cluster)

    @property
    def name(self) -> str:
        """The cluster's name in metrics (Istio's clusterName = Cilium's cluster.name)."""
        return istio_cluster_name(self.cluster)

    @property
    def requirements(self) -> tuple[Requirement, ...]:
        """Every requirement restricting pods here, sorted by key."""
        by_key = {r.key: r for p in self.protections for r in p.requirements}
        return tuple(by_key[k] for k in sorted(by_key))


@dataclass(frozen=True)
class ObservabilityPlan:
    mesh: MeshPlan
    settings: ObservabilitySettings
    central: Cluster
    watches: tuple[Watch, ...]  # inventory order; only clusters with something to watch

    @property
    def members(self) -> tuple[Watch, ...]:
        """The watched clusters the central Prometheus federates (every one but itself)."""
        return tuple(w for w in self.watches if w.cluster is not self.central)

    def watch_of(self, cluster: Cluster) -> Watch | None:
        return next((w for w in self.watches if w.cluster is cluster), None)


def plan_observability(mesh: MeshPlan) -> ObservabilityPlan | None:
    """The observability plan (None without ``spec.observability``). The inputs are valid:
    :mod:`meshplan.observability.check` refused an unknown central cluster."""
    settings = mesh.mesh.observability
    if settings is None:
        return None
    inventory = mesh.inventory
    central = find_cluster(inventory, settings.central_cluster)
    assert central is not None, "checked by check_observability_inputs"
    taking_part = participating_namespaces(inventory)
    protections = _protections(inventory)
    by_key = {r.key: r for r in inventory.requirements}
    strict = _strict_namespaces(inventory, by_key)
    incoming = _incoming_flows(mesh, by_key)
    watches = []
    for cluster in (c for d in inventory.domains for c in d.clusters):
        ref = ref_of(cluster)
        istio = ref in mesh.istio_refs
        watch = Watch(
            cluster=cluster,
            istio=istio,
            strict=strict.get(ref, ()),
            incoming=incoming.get(ref, ()),
            sources=tuple(m.cluster for m in mesh.istio_members
                          if istio and m.cluster is not cluster),
            protections=protections.get(ref, ()),
            peers=_peer_links(mesh, cluster, by_key),
            namespaces=tuple(sorted(taking_part.get(ref, ()))),
        )
        if watch.istio or watch.protections or watch.peers:
            watches.append(watch)
    return ObservabilityPlan(mesh, settings, central, tuple(watches))


def _strict_namespaces(inventory: Inventory, by_key: Mapping[str, Requirement]
                       ) -> Mapping[ClusterRef, tuple[StrictNamespace, ...]]:
    """Per Istio member, the namespaces of the identity layer's STRICT PeerAuthentications
    (sorted), each with its requirements (its other cause is ``strictMTLS: mesh``)."""
    mesh_wide = mesh_wide_strict(inventory)
    return {ref: tuple(StrictNamespace(ns, tuple(by_key[k] for k in sorted(causes) if k in by_key),
                                       mesh_wide and ns == ISTIO_ROOT_NAMESPACE)
                       for ns, causes in sorted(namespaces.items()))
            for ref, namespaces in strict_namespace_causes(inventory).items()}


def _peer_links(mesh: MeshPlan, cluster: Cluster, by_key: Mapping[str, Requirement]
                ) -> tuple[PeerLink, ...]:
    links = []
    for peer in mesh.peers_of(cluster):
        cause = next((c for _, c in mesh.flows.between(ref_of(cluster), ref_of(peer))), None)
        links.append(PeerLink(peer, None if cause is None else by_key[cause.requirement]))
    return tuple(links)


def _protections(inventory: Inventory) -> Mapping[ClusterRef, tuple[Protection, ...]]:
    """For each cluster, the requirements restricting pods there, by namespace and direction."""
    found: dict[ClusterRef, dict[tuple[str, Direction], dict[str, Requirement]]] = {}
    for requirement in inventory.requirements:
        namespace = inventory.policy_namespace(requirement)
        for direction in _directions(requirement):
            for cluster in inventory.requirement_scope(requirement):
                slot = found.setdefault(ref_of(cluster), {})
                slot.setdefault((namespace or "", direction), {})[requirement.key] = requirement
    return {ref: tuple(Protection(ns or None, direction, tuple(by_key[k] for k in sorted(by_key)))
                       for (ns, direction), by_key in sorted(slots.items()))
            for ref, slots in found.items()}


def _directions(requirement: Requirement) -> Iterator[Direction]:
    if requirement.ingress is not None:
        yield "ingress"
    if requirement.egress is not None:
        yield "egress"


def _incoming_flows(mesh: MeshPlan, by_key: Mapping[str, Requirement]
                   ) -> Mapping[ClusterRef, tuple[IncomingFlow, ...]]:
    """For each Istio member, the intended flows into it from the other members."""
    order = {ref: i for i, ref in enumerate(mesh.istio_refs)}
    found: dict[ClusterRef, list[tuple[int, IncomingFlow]]] = {}
    for (source, destination), cause in mesh.flows.causes.items():
        if source in order and destination in order:
            flow = IncomingFlow(mesh.istio_refs[source].cluster, by_key[cause.requirement])
            found.setdefault(destination, []).append((order[source], flow))
    return {ref: tuple(flow for _, flow in sorted(flows, key=lambda f: f[0]))
            for ref, flows in found.items()}
