"""The intended connectivity, computed from the requirements alone (not from the output).

A requirement restricts each direction it writes for the pods it selects and allows exactly
its peers (abstract peers through :meth:`Inventory.resolve_peer`, raw pod labels in its own
cluster, CIDRs). Without ``toPorts``: a service peer at egress means that service's ports;
any peer at the ingress of a selected service means that service's ports; anything else any
port.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ..model import Inventory, Requirement, Rule, Selector, Service
from ..vocabulary import NAMESPACE_LABELS_PREFIX, POD_NAMESPACE_LABEL
from .addresses import cidr_blocks
from .connectivity import Connectivity, Grant, Origin
from .endpoints import Endpoint
from .ports import ALL_PORTS, requirement_ports, service_ports
from .selectors import LabelSelector, Term


def intended_connectivity(inventory: Inventory, endpoints: Sequence[Endpoint]) -> Connectivity:
    """The connectivity the requirements ask for, independent of the rendered output."""
    model = Connectivity(endpoints)
    for requirement in inventory.requirements:
        if requirement.domain not in inventory.domain_by_name:
            continue
        _IntentBuilder(inventory, model, requirement).build()
    return model


class _IntentBuilder:
    def __init__(self, inventory: Inventory, model: Connectivity, req: Requirement) -> None:
        self.inventory = inventory
        self.model = model
        self.req = req
        self.protected = inventory.service_selected_by(req)
        self.scope = [c.name for c in inventory.requirement_scope(req)]
        self.origin = Origin(req.location, f"requirement {req.key}")

    def build(self) -> None:
        for cluster in self.scope:
            subjects = self._subjects(cluster)
            if not subjects:
                continue
            for direction, rules in (("egress", self.req.egress), ("ingress", self.req.ingress)):
                if rules is None:
                    continue
                grants = [g for rule in rules for g in self._grants(rule, direction, cluster)]
                for index in subjects:
                    stance = self.model.stance(direction, index)  # type: ignore[arg-type]
                    stance.default_deny.append(self.origin)
                    stance.allows.extend(grants)

    def _subjects(self, cluster: str) -> list[int]:
        out = []
        if self.protected is not None:
            wanted = dict(self.protected.selector)
            for i, e in enumerate(self.model.endpoints):
                if (e.is_pod and e.domain == self.req.domain and e.cluster == cluster
                        and e.namespace == self.protected.namespace
                        and all(dict(e.labels).get(k) == v for k, v in wanted.items())):
                    out.append(i)
            return out
        selector = LabelSelector.from_model(self.req.endpoint_selector)
        namespace = self.inventory.policy_namespace(self.req)
        for i, e in enumerate(self.model.endpoints):
            if not e.is_pod or e.domain != self.req.domain or e.cluster != cluster:
                continue
            if namespace is not None and e.namespace != namespace:
                continue
            if selector.matches(e.identity):
                out.append(i)
        return out

    def _grants(self, rule: Rule, direction: str, cluster: str) -> Iterator[Grant]:
        explicit = requirement_ports(rule.ports) if rule.ports is not None else None
        into_service = service_ports(self.protected) if (
            self.protected is not None and direction == "ingress") else None
        for cidr in rule.cidrs:
            yield Grant(frozenset(), cidr_blocks(cidr.cidr, cidr.excepts),
                        explicit or into_service or ALL_PORTS,
                        Origin(cidr.location, f"requirement {self.req.key}, {direction} CIDR"))
        for peer in rule.endpoints:
            origin = Origin(peer.location, f"requirement {self.req.key}, {direction} peer")
            if peer.is_abstract:
                for target in self.inventory.resolve_peer(peer.selector, self.req.domain,
                                                          direction=rule.direction):
                    ports = explicit
                    if ports is None:
                        if direction == "egress":
                            ports = service_ports(target.service)
                        else:
                            ports = (service_ports(self.protected) if self.protected
                                     else ALL_PORTS)
                    yield Grant(self._service_pods(target.service, target.clusters), (),
                                ports, origin)
                continue
            ports = explicit
            if ports is None:
                protected = self.protected if direction == "ingress" else None
                ports = service_ports(protected) if protected else ALL_PORTS
            yield Grant(self._raw_pods(peer.selector, cluster), (), ports, origin)

    def _service_pods(self, service: Service, clusters: Sequence[str]) -> frozenset[int]:
        wanted = dict(service.selector)
        return frozenset(
            i for i, e in enumerate(self.model.endpoints)
            if e.is_pod and e.domain == service.domain and e.cluster in clusters
            and e.namespace == service.namespace
            and all(dict(e.labels).get(k) == v for k, v in wanted.items()))

    def _raw_pods(self, selector: Selector, cluster: str) -> frozenset[int]:
        """Raw pod labels: the requirement's own cluster, its namespace unless the peer names
        namespaces itself (a namespace, or namespace labels: every namespace so labelled)."""
        labels = LabelSelector.from_model(selector)
        namespace = self.inventory.policy_namespace(self.req)
        if namespace is not None and not labels.has_key(POD_NAMESPACE_LABEL) and \
                not labels.has_key_prefix(NAMESPACE_LABELS_PREFIX):
            labels = labels.also(Term(POD_NAMESPACE_LABEL, "In", (namespace,)))
        return frozenset(
            i for i, e in enumerate(self.model.endpoints)
            if e.is_pod and e.domain == self.req.domain and e.cluster == cluster
            and labels.matches(e.identity))
