"""What traffic flows between: services per cluster, raw-label clients, kube-dns, CIDRs."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from ..admission import bare_key as normalize_key
from ..mesh.plan import gateway_sources
from ..model import Inventory, Labels, Requirement, Selector
from ..refine import host_cidr
from ..vocabulary import (
    CILIUM_CLUSTER_LABEL,
    DEFAULT_NAMESPACE,
    DNS_APP,
    DNS_APP_LABEL,
    DNS_NAMESPACE,
    EASTWEST_GATEWAY_LABELS,
    EASTWEST_GATEWAY_NAME,
    EASTWEST_GATEWAY_SERVICE_ACCOUNT,
    ISTIO_NAMESPACE,
    NAMESPACE_LABELS_PREFIX,
    NAMESPACE_NAME_LABEL,
    POD_NAMESPACE_LABEL,
)
from .addresses import Block, block_of
from .selectors import LabelSelector, Term

DNS_LABELS: Labels = ((DNS_APP_LABEL, DNS_APP),)


EndpointKind = Literal["service", "client", "dns", "gateway", "cidr"]


@dataclass(frozen=True)
class Endpoint:
    """Something traffic can come from or go to.

    ``service``: the pods of an inventory service in one cluster; ``client``: pods a
    requirement selects by raw labels; ``dns``: kube-dns of one cluster; ``gateway``: the Istio
    east-west gateway of one cluster (when the Istio members span several networks); ``cidr``:
    an address block a requirement names (``name`` is the CIDR), or an east-west gateway's
    address or a cluster's egress addresses (then ``infrastructure``).
    """

    kind: EndpointKind
    domain: str
    cluster: str
    mesh: str
    namespace: str
    name: str
    labels: Labels
    service_account: str | None = None  # a service's (its Istio identity); None: not known
    infrastructure: bool = False  # a hop of the mesh (gateway pods and addresses), no workload

    @property
    def is_pod(self) -> bool:
        return self.kind != "cidr"

    @cached_property
    def label_map(self) -> dict[str, str]:
        """Its own labels (:attr:`labels`) by key."""
        return dict(self.labels)

    @cached_property
    def identity(self) -> dict[str, str]:
        """The labels Cilium derives the endpoint's security identity from."""
        return {**dict(self.labels), POD_NAMESPACE_LABEL: self.namespace,
                CILIUM_CLUSTER_LABEL: self.mesh,
                NAMESPACE_LABELS_PREFIX + NAMESPACE_NAME_LABEL: self.namespace}

    @cached_property
    def block(self) -> Block:
        return block_of(self.name)

    @cached_property
    def title(self) -> str:
        if self.kind == "cidr":
            return self.name
        if self.kind in ("service", "gateway"):
            return f"{self.domain}/{self.name}@{self.cluster}"
        return f"{self.domain}/{self.cluster}:{self.namespace}/{self.name}"

    @property
    def is_workload(self) -> bool:
        """Pods of the applications (services and raw-label clients): what Istio protects."""
        return self.kind in ("service", "client")

    @cached_property
    def service_level(self) -> str:
        """The endpoint without its cluster: ``domain/service`` or ``domain/namespace/labels``."""
        if self.kind == "cidr":
            return self.name
        if self.kind in ("service", "gateway"):
            return f"{self.domain}/{self.name}"
        return f"{self.domain}/{self.namespace}/{self.name}"

    @property
    def group(self) -> str:
        """The cluster it runs in (``domain/cluster``), or ``external`` for a CIDR."""
        return "external" if self.kind == "cidr" else f"{self.domain}/{self.cluster}"


def is_dns(endpoint: Endpoint) -> bool:
    """kube-dns: its flows are not compared (:func:`is_dns_flow`)."""
    return endpoint.kind == "dns"


def is_dns_flow(a: Endpoint, b: Endpoint) -> bool:
    """A flow with kube-dns at either end (verify's comparison skips every one of them, and
    relies on that when it ignores differences on kube-dns peers)."""
    return is_dns(a) or is_dns(b)


def labels_text(labels: Labels) -> str:
    return ",".join(f"{k}={v}" for k, v in labels) or "all pods"


def synthesize_labels(selector: Selector) -> Labels:
    """Pod labels that satisfy a raw selector (namespace and cluster keys left out)."""
    labels: dict[str, str] = {}
    for key, value in selector.match_labels:
        norm = normalize_key(key)
        if norm is not None and not _identity_key(norm):
            labels[norm] = value
    for e in selector.match_expressions:
        norm = normalize_key(e.key)
        if norm is None or _identity_key(norm) or norm in labels:
            continue
        if e.operator == "In" and e.values:
            labels[norm] = e.values[0]
        elif e.operator == "Exists":
            labels[norm] = "present"
    return tuple(sorted(labels.items()))


def _identity_key(key: str) -> bool:
    """A label Cilium derives for every pod (not one of the pod's own labels)."""
    return key in (POD_NAMESPACE_LABEL, CILIUM_CLUSTER_LABEL) or key.startswith(
        NAMESPACE_LABELS_PREFIX)


def selector_namespace(selector: Selector) -> str | None:
    """The one namespace a raw selector names: by the namespace label, or by the namespace's
    own name label (``io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name``)."""
    for key, value in selector.match_labels:
        if normalize_key(key) in (POD_NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX +
                                  NAMESPACE_NAME_LABEL):
            return value
    return None


def inventory_endpoints(inventory: Inventory) -> tuple[Endpoint, ...]:
    """Every endpoint verify reasons about, in a stable order."""
    collector = EndpointCollector(inventory)
    collector.add_requirements(inventory, inventory.requirements)
    return collector.endpoints(inventory)


class EndpointCollector:
    """:func:`inventory_endpoints` in parts: the inventory's own endpoints, then those of any
    requirements (each requirement's depend only on it and on the inventory's domains and
    mesh, and an endpoint only on its key: the order requirements come in changes nothing),
    so that two inventories with the same domains and mesh share the work of the requirements
    they share (:func:`copy`)."""

    def __init__(self, inventory: Inventory) -> None:
        self.found: dict[tuple[str, str, str, str, Labels], Endpoint] = {}
        self.cidrs: dict[str, Endpoint] = {}
        for domain in inventory.domains:
            for cluster in domain.clusters:
                self.add(Endpoint("dns", domain.name, cluster.name, cluster.mesh_name,
                                  DNS_NAMESPACE, "kube-dns", DNS_LABELS))
            for service in domain.services:
                for name in service.clusters:
                    runs_in = domain.cluster_by_name.get(name)
                    if runs_in is not None:
                        self.add(Endpoint("service", domain.name, name, runs_in.mesh_name,
                                          service.namespace, service.name, service.selector,
                                          service.service_account))

    def add(self, endpoint: Endpoint) -> None:
        key = (endpoint.domain, endpoint.cluster, endpoint.namespace, endpoint.kind,
               endpoint.labels)
        if endpoint.kind == "client":
            twin = (endpoint.domain, endpoint.cluster, endpoint.namespace, "service",
                    endpoint.labels)
            if twin in self.found:
                return
        self.found.setdefault(key, endpoint)

    def copy(self) -> EndpointCollector:
        other = EndpointCollector(Inventory(()))
        other.found, other.cidrs = dict(self.found), dict(self.cidrs)
        return other

    def add_requirements(self, inventory: Inventory, requirements: Iterable[Requirement]
                         ) -> None:
        """The endpoints ``requirements`` (of ``inventory``) select or name."""
        cidrs = self.cidrs
        for requirement in requirements:
            owner = inventory.domain_by_name.get(requirement.domain)
            if owner is None:
                continue
            scope = [c.name for c in inventory.requirement_scope(requirement)]
            own = inventory.policy_namespace(requirement) or DEFAULT_NAMESPACE
            raw = [] if requirement.endpoint_selector.is_abstract else \
                [requirement.endpoint_selector]
            for rule in (*(requirement.egress or ()), *(requirement.ingress or ())):
                raw += [p.selector for p in rule.endpoints if not p.is_abstract]
                for cidr in rule.cidrs:
                    for text in (cidr.cidr, *cidr.excepts):
                        network = str(ipaddress.ip_network(text, strict=False))
                        cidrs.setdefault(network, Endpoint("cidr", "", "", "", "", network, ()))
            for selector in raw:
                labels = synthesize_labels(selector)
                namespace = selector_namespace(selector) or own
                for name in scope:
                    self.add(Endpoint("client", owner.name, name,
                                      owner.cluster_by_name[name].mesh_name, namespace,
                                      labels_text(labels), labels))

    def endpoints(self, inventory: Inventory) -> tuple[Endpoint, ...]:
        """The endpoints collected, with ``inventory``'s gateway hops (added last: an address
        a requirement names is the requirement's), in the stable order. Adds no more after
        (:func:`copy` first to go on)."""
        _gateway_hops(inventory, self.add, self.cidrs)
        order = {"service": 0, "client": 1, "dns": 2, "gateway": 3}
        pods = sorted(self.found.values(), key=lambda e: (e.domain, e.cluster, order[e.kind],
                                                          e.namespace, e.name))
        return (*pods, *sorted(self.cidrs.values(), key=lambda e: e.block))


def _gateway_hops(inventory: Inventory, add: Callable[[Endpoint], None],
                  cidrs: dict[str, Endpoint]) -> None:
    """With Istio members on several networks: each member's east-west gateway pods, its
    gateway's address and the addresses its traffic leaves from (the hops Cilium sees)."""
    members = [c for d in inventory.domains for c in d.clusters
               if inventory.is_istio_member(c) and c.istio is not None and c.istio.network]
    if len({c.istio.network for c in members if c.istio is not None}) < 2:
        return
    for cluster in members:
        add(Endpoint("gateway", cluster.domain, cluster.name, cluster.mesh_name,
                     ISTIO_NAMESPACE, EASTWEST_GATEWAY_NAME,
                     tuple(sorted(EASTWEST_GATEWAY_LABELS.items())),
                     EASTWEST_GATEWAY_SERVICE_ACCOUNT, infrastructure=True))
        istio = cluster.istio
        assert istio is not None
        texts = [*gateway_sources(cluster)]
        if istio.gateway_address:
            texts.append(host_cidr(istio.gateway_address))
        for text in texts:
            try:
                network = str(ipaddress.ip_network(text, strict=False))
            except ValueError:
                continue  # reported by validate
            cidrs.setdefault(network, Endpoint("cidr", "", "", "", "", network, (),
                                               infrastructure=True))


# The identity labels Cilium derives for every pod, whatever its own labels say
# (:attr:`Endpoint.identity`).
_DERIVED_KEYS = frozenset((POD_NAMESPACE_LABEL, CILIUM_CLUSTER_LABEL,
                           NAMESPACE_LABELS_PREFIX + NAMESPACE_NAME_LABEL))


class Place(tuple[int, ...]):
    """The pods of one cluster, or of one of its namespaces (:meth:`EndpointIndex.in_place`),
    in index order: a tuple that keeps its own label index (so that selecting in it costs
    the pods an ``In`` term names there)."""

    labels: dict[tuple[str, str], tuple[int, ...]] | None  # EndpointIndex.place_labels


class EndpointIndex:
    """The pods of an endpoint tuple by place and by identity label, so that selecting the pods
    a selector matches costs the candidates one of its ``In`` terms names, not every endpoint.

    Exact: candidates are always filtered by the selector itself (an ``In`` term must hold for
    a match, so the pods it names are a superset of the matches); a selector without an
    ``In`` term is evaluated on every pod of the place.
    """

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = tuple(endpoints)
        self.pods = tuple(i for i, e in enumerate(self.endpoints) if e.is_pod)
        places: dict[tuple[str, str], list[int]] = {}
        namespaces: dict[tuple[str, str, str], list[int]] = {}
        labels: dict[tuple[str, str], list[int]] = {}
        for i in self.pods:
            e = self.endpoints[i]
            places.setdefault((e.domain, e.cluster), []).append(i)
            namespaces.setdefault((e.domain, e.cluster, e.namespace), []).append(i)
            for item in e.identity.items():
                labels.setdefault(item, []).append(i)
        self.places = {k: _place(v) for k, v in places.items()}
        self.namespaces = {k: _place(v) for k, v in namespaces.items()}
        self.labels = {k: tuple(v) for k, v in labels.items()}
        self.cidrs = tuple(i for i, e in enumerate(self.endpoints) if not e.is_pod)

    def of(self, endpoints: Sequence[Endpoint]) -> EndpointIndex:
        """This index, when it is of ``endpoints`` (one built by its caller, to share): a
        ValueError otherwise (it would select other pods)."""
        if self.endpoints != tuple(endpoints):
            raise ValueError("the endpoint index is of other endpoints")
        return self

    def in_place(self, domain: str, cluster: str, namespace: str | None = None
                 ) -> tuple[int, ...]:
        """The pods of one cluster (of one of its namespaces), in index order (a
        :class:`Place`, when there is any)."""
        if namespace is None:
            return self.places.get((domain, cluster), ())
        return self.namespaces.get((domain, cluster, namespace), ())

    def place_labels(self, place: Place) -> dict[tuple[str, str], tuple[int, ...]]:
        """The pods of ``place`` by identity label, each in index order (made when a selection
        in the place first asks)."""
        found = place.labels
        if found is None:
            lists: dict[tuple[str, str], list[int]] = {}
            endpoints = self.endpoints
            for i in place:
                for item in endpoints[i].identity.items():
                    lists.setdefault(item, []).append(i)
            found = place.labels = {k: tuple(v) for k, v in lists.items()}
        return found

    def with_labels(self, within: Sequence[int], wanted: Sequence[tuple[str, str]]
                    ) -> list[int]:
        """The pods of ``within`` whose own labels (:attr:`Endpoint.label_map`) include every
        ``wanted`` one (a service's selector), in the order of ``within``."""
        endpoints = self.endpoints
        if type(within) is Place:
            for key, value in wanted:
                if key not in _DERIVED_KEYS:  # the pod's own label is its identity's
                    within = self.place_labels(within).get((key, value), ())
                    break
        return [i for i in within
                if all(endpoints[i].label_map.get(k) == v for k, v in wanted)]

    def select(self, selector: LabelSelector, within: Sequence[int] | None = None
               ) -> list[int]:
        """The pods ``selector`` matches (of ``within`` when given), in index order."""
        endpoints = self.endpoints
        if type(within) is Place:
            # The pods of the place that its In term naming the fewest of them names.
            table = self.place_labels(within)
            fewest: Sequence[int] = within
            for term in selector.terms:
                if term.operator == "In" and term.key is not None:
                    values = term.values
                    named: Sequence[int] = table.get((term.key, values[0]), ()) \
                        if len(values) == 1 else sorted(
                            {i for value in values for i in table.get((term.key, value), ())})
                    if len(named) < len(fewest):
                        if not named:
                            return []  # the term holds for none of them
                        fewest = named
            return [i for i in fewest if selector.matches(endpoints[i].identity)]
        # The In term naming the fewest pods (counted, not gathered: kube-dns's label names a
        # pod in every cluster of the fleet), unless the place has fewer still.
        labels = self.labels
        best: tuple[int, Term, tuple[int, ...] | None] | None = None
        for term in selector.terms:
            if term.operator == "In" and term.key is not None:
                values = term.values
                pods: tuple[int, ...] | None
                if len(values) == 1:  # its pods, already in index order
                    found = labels.get((term.key, values[0]), ())
                    pods, size = found, len(found)
                else:
                    pods = None
                    size = sum(len(labels.get((term.key, v), ())) for v in set(values))
                if best is None or size < best[0]:
                    best = (size, term, pods)
        candidates: Sequence[int]
        if best is not None and (within is None or best[0] < len(within)):
            size, term, pods = best
            named = pods if pods is not None else sorted(
                {i for value in term.values for i in labels.get((str(term.key), value), ())})
            candidates = named if within is None else sorted(set(named) & set(within))
        else:
            candidates = self.pods if within is None else within
        return [i for i in candidates if selector.matches(endpoints[i].identity)]


def _place(pods: list[int]) -> Place:
    place = Place(pods)
    place.labels = None
    return place
