"""The intended connectivity, computed from the requirements alone (not from the output).

A requirement restricts each direction it writes for the pods it selects and allows exactly
its peers (abstract peers through :meth:`Inventory.resolve_peer`, raw pod labels in its own
cluster, CIDRs). Without ``toPorts``: a service peer at egress means that service's ports;
any peer at the ingress of a selected service means that service's ports; anything else any
port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

from ..diagnostics import Location
from ..mesh.flows import intended_cluster_flows
from ..mesh.identity import all_authorizations, strict_namespace_causes
from ..model import Inventory, PeerTarget, Requirement, Rule, Selector, Service
from ..refine import ClusterRef
from ..vocabulary import NAMESPACE_LABELS_PREFIX, POD_NAMESPACE_LABEL
from .addresses import cidr_blocks
from .connectivity import Connectivity, Grant, Origin
from .endpoints import Endpoint, EndpointIndex
from .gateways import NO_HOPS, TCP, GatewayHops
from .istio import (
    AuthzPolicy,
    AuthzRule,
    ClusterPolicies,
    IdentityLayer,
    PeerAuthn,
    Source,
)
from .ports import ALL_PORTS, PortSet, requirement_ports, service_ports
from .selectors import LabelSelector, Term
from .services import NamedCall


def intended_connectivity(inventory: Inventory, endpoints: Sequence[Endpoint],
                          hops: GatewayHops = NO_HOPS,
                          calls: list[NamedCall] | None = None,
                          index: EndpointIndex | None = None) -> Connectivity:
    """The connectivity the requirements ask for, independent of the rendered output.

    Between Istio networks (:mod:`.gateways`) a flow is intended twice: pod to pod (what the
    requirement means, for the identity layer and the picture) and hop by hop, as Cilium must
    see it: the client's egress to the remote gateway's address on 15443, the server's ingress
    from its local gateway's pods on the same ports as the peer. Every east-west gateway
    admits 15443 from the source addresses of the other networks' members with a flow into
    its cluster, and nothing else.

    ``calls``: when given, filled with the intended calls of a service by name (egress peers
    that name a service), for :func:`.services.name_problems`. ``index``: the endpoints'
    :class:`.endpoints.EndpointIndex`, when already built.
    """
    model = Connectivity(endpoints, index)
    shared = _Shared()
    for requirement in inventory.requirements:
        if requirement.domain not in inventory.domain_by_name:
            continue
        _IntentBuilder(inventory, model, requirement, hops, calls, shared).build()
    if hops.active:
        _gateway_intent(inventory, model, hops)
    return model


def _gateway_intent(inventory: Inventory, model: Connectivity, hops: GatewayHops) -> None:
    """Each east-west gateway admits 15443 from the members of other networks with an intended
    flow into its cluster (:mod:`meshplan.mesh.flows`), and from nothing else."""
    mesh = inventory.mesh
    where = Location(mesh.file if mesh is not None else "inventory/mesh.yaml")
    origin = Origin(where, "the mesh's east-west gateway policy")
    flows = intended_cluster_flows(inventory).causes
    for member, gateway in hops.gateway.items():
        sources = [i for other, found in hops.sources.items()
                   if hops.network[other] != hops.network[member]
                   and (ClusterRef(*other), ClusterRef(*member)) in flows for i in found]
        stance = model.ingress[gateway]
        stance.default_deny.append(origin)
        blocks = tuple(block for i in sources for block in (model.endpoints[i].block,))
        if blocks:
            stance.allows.append(Grant(frozenset(), blocks, hops.hop_ports(), origin))


class _ServicePeer(NamedTuple):
    """An abstract peer: the grant of each service it resolves to, with the target, and (at
    egress, when the calls are asked for) its calls but for the clients' cluster."""

    grants: list[tuple[Grant, PeerTarget]]
    calls: list[tuple[Location, str, str, str, str, str, frozenset[int], PortSet]]


class _RawPeer(NamedTuple):
    """A raw pod-label peer: its pods are found in each cluster."""

    selector: Selector
    ports: PortSet
    origin: Origin


# What a CIDR or a service peer grants is the same in every cluster of the scope (only its
# gateway hops differ): made once per requirement and direction.
_Part = Grant | _ServicePeer | _RawPeer


class _Shared:
    """What every requirement's builder may ask again, found once per model: the pods of a
    service in some of its clusters, keyed by the service's identity (the inventory keeps its
    services alive while the model is built) and those clusters."""

    def __init__(self) -> None:
        self.service_pods: dict[tuple[int, tuple[str, ...]], frozenset[int]] = {}
        self.service_ports: dict[int, PortSet] = {}


class _IntentBuilder:
    def __init__(self, inventory: Inventory, model: Connectivity, req: Requirement,
                 hops: GatewayHops = NO_HOPS, calls: list[NamedCall] | None = None,
                 shared: _Shared | None = None) -> None:
        self.inventory = inventory
        self.shared = shared if shared is not None else _Shared()
        self.calls = calls
        self.model = model
        self.req = req
        self.hops = hops
        self.protected = inventory.service_selected_by(req)
        self.scope = [c.name for c in inventory.requirement_scope(req)]
        self.origin = Origin(req.location, f"requirement {req.key}")

    def build(self) -> None:
        directions: list[tuple[str, list[_Part]]] | None = None  # once some pods are selected
        subjects_of = self._subjects_finder()
        for cluster in self.scope:
            subjects = subjects_of(cluster)
            if not subjects:
                continue
            if directions is None:
                directions = [(direction, self._parts(rules, direction))
                              for direction, rules in (("egress", self.req.egress),
                                                       ("ingress", self.req.ingress))
                              if rules is not None]
            for direction, parts in directions:
                grants = self._grants(parts, direction, cluster)
                for index in subjects:
                    stance = self.model.stance(direction, index)  # type: ignore[arg-type]
                    stance.default_deny.append(self.origin)
                    stance.allows.extend(grants)

    def _subjects_finder(self) -> Callable[[str], list[int]]:
        """The pods the requirement selects in a cluster of its scope."""
        index = self.model.index
        domain = self.req.domain
        protected = self.protected
        if protected is not None:
            return lambda cluster: index.with_labels(index.in_place(
                domain, cluster, protected.namespace), protected.selector)
        selector = LabelSelector.from_model(self.req.endpoint_selector)
        namespace = self.inventory.policy_namespace(self.req)
        return lambda cluster: index.select(selector, index.in_place(domain, cluster, namespace))

    def _parts(self, rules: Sequence[Rule], direction: str) -> list[_Part]:
        """A direction's rules as they are the same in every cluster of the scope, in order:
        CIDR grants, service peers' grants (with their targets, for the calls and the gateway
        hops), and raw peers (whose pods are the cluster's)."""
        parts: list[_Part] = []
        into_service = service_ports(self.protected) if (
            self.protected is not None and direction == "ingress") else None
        for rule in rules:
            explicit = requirement_ports(rule.ports) if rule.ports is not None else None
            for cidr in rule.cidrs:
                parts.append(Grant(
                    frozenset(), cidr_blocks(cidr.cidr, cidr.excepts),
                    explicit or into_service or ALL_PORTS,
                    Origin(cidr.location, f"requirement {self.req.key}, {direction} CIDR")))
            for peer in rule.endpoints:
                origin = Origin(peer.location, f"requirement {self.req.key}, {direction} peer")
                if peer.is_abstract:
                    grants = list(self._service_grants(rule, peer.selector, direction,
                                                       explicit, origin))
                    calls = [] if direction != "egress" or self.calls is None else [
                        (peer.location, self.req.key, self.req.domain, target.service.key,
                         target.service.namespace, target.service.name, grant.pods,
                         grant.ports & self._service_ports(target.service))
                        for grant, target in grants]
                    parts.append(_ServicePeer(grants, calls))
                    continue
                ports = explicit
                if ports is None:
                    protected = self.protected if direction == "ingress" else None
                    ports = service_ports(protected) if protected else ALL_PORTS
                parts.append(_RawPeer(peer.selector, ports, origin))
        return parts

    def _grants(self, parts: Sequence[_Part], direction: str, cluster: str) -> list[Grant]:
        """One direction's grants in ``cluster`` (recording the calls of services by name)."""
        grants: list[Grant] = []
        calls = self.calls if direction == "egress" else None
        hops = self.hops.active
        for part in parts:
            if type(part) is Grant:
                grants.append(part)
            elif type(part) is _ServicePeer:
                if calls is not None:
                    for where, key, domain, service, namespace, name, pods, ports in part.calls:
                        calls.append(NamedCall(where, key, domain, cluster, service, namespace,
                                               name, pods, ports))
                for grant, target in part.grants:
                    grants.append(grant)
                    if hops:
                        grants.extend(self._hops(cluster, target.service.domain,
                                                 target.clusters, direction, grant.ports,
                                                 grant.origin))
            else:
                assert type(part) is _RawPeer
                grants.append(Grant(self._raw_pods(part.selector, cluster), (), part.ports,
                                    part.origin))
        return grants

    def _service_grants(self, rule: Rule, selector: Selector, direction: str,
                        explicit: PortSet | None, origin: Origin
                        ) -> Iterator[tuple[Grant, PeerTarget]]:
        """Each service a peer resolves to: its pods on the ports, and the resolved target."""
        for target in self.inventory.resolve_peer(selector, self.req.domain,
                                                  direction=rule.direction):
            ports = explicit
            if ports is None:
                if direction == "egress":
                    ports = self._service_ports(target.service)
                else:
                    ports = service_ports(self.protected) if self.protected else ALL_PORTS
            yield Grant(self._service_pods(target.service, target.clusters), (), ports,
                        origin), target

    def _hops(self, cluster: str, domain: str, clusters: Sequence[str], direction: str,
              ports: PortSet, origin: Origin) -> Iterator[Grant]:
        """The gateway hops of a service peer in ``clusters`` (of ``domain``) on another Istio
        network than ``cluster``: egress to each remote gateway's address (15443, if the flow
        carries TCP), ingress from the local gateway's pods."""
        if not self.hops.active:
            return
        here = (self.req.domain, cluster)
        network = self.hops.network.get(here)
        if network is None:
            return
        routed = [(domain, c) for c in clusters
                  if self.hops.network.get((domain, c)) not in (None, network)]
        if not routed:
            return
        if direction == "egress":
            if not ports & TCP:
                return
            blocks = tuple(self.model.endpoints[self.hops.address[w]].block for w in routed
                           if w in self.hops.address)
            if blocks:
                yield Grant(frozenset(), blocks, self.hops.hop_ports(), origin)
        elif here in self.hops.gateway:
            yield Grant(frozenset((self.hops.gateway[here],)), (), ports, origin)

    def _service_ports(self, service: Service) -> PortSet:
        known = self.shared.service_ports
        found = known.get(id(service))
        if found is None:
            found = known[id(service)] = service_ports(service)
        return found

    def _service_pods(self, service: Service, clusters: tuple[str, ...]) -> frozenset[int]:
        known = self.shared.service_pods
        key = (id(service), clusters)
        found = known.get(key)
        if found is None:
            index = self.model.index
            found = known[key] = frozenset(
                i for cluster in set(clusters) for i in index.with_labels(
                    index.in_place(service.domain, cluster, service.namespace), service.selector))
        return found

    def _raw_pods(self, selector: Selector, cluster: str) -> frozenset[int]:
        """Raw pod labels: the requirement's own cluster, its namespace unless the peer names
        namespaces itself (a namespace, or namespace labels: every namespace so labelled)."""
        labels = LabelSelector.from_model(selector)
        namespace = self.inventory.policy_namespace(self.req)
        if namespace is not None and not labels.has_key(POD_NAMESPACE_LABEL) and \
                not labels.has_key_prefix(NAMESPACE_LABELS_PREFIX):
            labels = labels.also(Term(POD_NAMESPACE_LABEL, "In", (namespace,)))
        index = self.model.index
        return frozenset(index.select(labels, index.in_place(self.req.domain, cluster)))


# --------------------------------------------------------------------------- identity layer


def intended_identity_layer(inventory: Inventory,
                            endpoints: Sequence[Endpoint]) -> IdentityLayer:
    """The identity layer the requirements ask for (with a Mesh document that has
    ``spec.istio``): STRICT in :func:`~meshplan.mesh.identity.strict_namespaces`, and per
    requirement with ingress an ALLOW of its peers' principals on its ports
    (:func:`~meshplan.mesh.identity.all_authorizations`, the one place that derives them, as
    ``Inventory.resolve_peer`` is for peers). Evaluated by the same model as the rendered
    policies, so what differs is the output."""
    where = {r.key: r.location for r in inventory.requirements}
    policies: dict[tuple[str, str], ClusterPolicies] = {}
    for cluster, authorization in all_authorizations(inventory):
        requirement = authorization.requirement
        rules = tuple(
            AuthzRule((Source({"principals": rule.principals}),),
                      TCP if rule.ports is None else PortSet.of(
                          ("TCP", p, p) for p in rule.ports))
            for rule in authorization.rules)
        origin = Origin(requirement.location, f"requirement {requirement.key}")
        policies.setdefault((cluster.domain, cluster.name), ClusterPolicies()).authorizations \
            .append(AuthzPolicy(authorization.namespace, authorization.selector, "ALLOW",
                                rules, origin))
    mesh_file = inventory.mesh.file if inventory.mesh is not None else ""
    for ref, namespaces in strict_namespace_causes(inventory).items():
        found = policies.setdefault((ref.domain, ref.name), ClusterPolicies())
        for namespace, causes in sorted(namespaces.items()):
            ordered = sorted(causes)
            more = f" and {len(ordered) - 1} more" if len(ordered) > 1 else ""
            origin = Origin(where.get(ordered[0], Location(mesh_file)), "STRICT mutual TLS of "
                            f"namespace {namespace}, required by {ordered[0]}{more}")
            found.authentications.append(PeerAuthn(namespace, None, "STRICT", {}, origin))
    return IdentityLayer(inventory, endpoints, policies)
