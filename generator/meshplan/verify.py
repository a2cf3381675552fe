"""``meshplan verify``: the connectivity the rendered output allows, against what is intended.

Two connectivity models over the same endpoints, built independently:

* **actual** — read from the rendered YAML files (what GitOps will apply), evaluated with
  Cilium's semantics: a policy rule that selects an endpoint and has rules for a direction
  (``ingress``/``ingressDeny``, ``egress``/``egressDeny``) enforces that direction; it is
  default-deny when any such rule has ``enableDefaultDeny`` on for it (explicitly, or by default
  because it has rules); allows of every selecting rule are unioned, denies win. A flow needs the
  source's egress allow and the destination's ingress allow (ports and protocols intersected).
  Namespace and cluster labels are taken as written: a CiliumNetworkPolicy peer without a
  namespace label means the policy's namespace (Cilium documents this for every version), but a
  peer without a cluster label is *reported*, never guessed, because its meaning changed with
  ``policy-default-local-cluster`` (Cilium 1.19).
* **intended** — computed from the requirements directly: a requirement restricts each
  direction it writes for the pods it selects, and allows exactly its peers (abstract peers
  resolved with :meth:`Inventory.resolve_peer`, raw pod labels in the requirement's own cluster,
  CIDRs). Without ``toPorts``, a service peer at egress means that service's inventory ports,
  any peer (service, raw labels or CIDR) at the ingress of a selected service means that
  service's ports, and everything else (peers of raw-label pods, raw or CIDR egress peers)
  means any port.

Endpoints are the inventory's: every service in every cluster where it runs, a pseudo-endpoint
for each raw pod-label selector a requirement writes (per cluster of its scope), every CIDR a
requirement names (and its ``except`` blocks), and kube-dns in each cluster. Every flow the two
models disagree on is an error naming the requirement line responsible; DNS to kube-dns is
allowed by design, so it is excluded from the comparison and checked on its own instead.
Half-open intents across domains (one side allows, the other side's own requirements do not
admit it) are warnings that name both requirement files.

Protocols modelled: TCP, UDP and SCTP ports. ICMP and L7 rules are outside the model.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from .diagnostics import Diagnostic, Location, error, notice, sorted_diagnostics, warning
from .load import Document, PathKey, decode_utf8, format_path, parse_yaml
from .model import Inventory, Labels, PortRule, Requirement, Rule, Selector, Service
from .outputs import DEFAULT_OUTPUT_DIR, KUSTOMIZATION, cluster_dir, split_cluster_path
from .vocabulary import (
    CILIUM_CLUSTER_LABEL,
    DEFAULT_NAMESPACE,
    DNS_APP,
    DNS_APP_LABEL,
    DNS_NAMESPACE,
    LABEL_SOURCES,
    NAMESPACE_LABELS_PREFIX,
    NAMESPACE_NAME_LABEL,
    NETWORK_POLICY_KIND,
    POD_NAMESPACE_LABEL,
    POLICY_KINDS,
    SOURCE_ANNOTATION,
)

Direction = Literal["egress", "ingress"]
DIRECTIONS: tuple[Direction, Direction] = ("egress", "ingress")

PROTOCOLS = ("TCP", "UDP", "SCTP")
MAX_PORT = 65535
DNS_LABELS: Labels = ((DNS_APP_LABEL, DNS_APP),)


# --------------------------------------------------------------------------- ports


Span = tuple[int, int]


def _merge(spans: Iterable[Span]) -> list[Span]:
    merged: list[Span] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _intersect(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    out: list[Span] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _subtract(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    out: list[Span] = []
    for lo, hi in a:
        start = lo
        for blo, bhi in b:
            if bhi < start or blo > hi:
                continue
            if blo > start:
                out.append((start, blo - 1))
            start = max(start, bhi + 1)
            if start > hi:
                break
        if start <= hi:
            out.append((start, hi))
    return out


_ALL_SPANS = tuple((p, 1, MAX_PORT) for p in PROTOCOLS)


@dataclass(frozen=True)
class PortSet:
    """A set of (protocol, port) pairs over TCP, UDP and SCTP, kept as merged ranges."""

    spans: tuple[tuple[str, int, int], ...] = ()

    @staticmethod
    def of(items: Iterable[tuple[str, int, int]]) -> PortSet:
        by: dict[str, list[Span]] = {}
        for proto, lo, hi in items:
            by.setdefault(proto, []).append((lo, hi))
        return PortSet(tuple((p, lo, hi) for p in PROTOCOLS for lo, hi in _merge(by.get(p, ()))))

    @staticmethod
    def single(protocol: str, port: int) -> PortSet:
        return PortSet.of([(protocol, port, port)])

    def _by(self) -> dict[str, list[Span]]:
        by: dict[str, list[Span]] = {p: [] for p in PROTOCOLS}
        for proto, lo, hi in self.spans:
            by[proto].append((lo, hi))
        return by

    def __or__(self, other: PortSet) -> PortSet:
        if not other.spans or self.spans == other.spans:
            return self
        if not self.spans:
            return other
        return PortSet.of((*self.spans, *other.spans))

    def __and__(self, other: PortSet) -> PortSet:
        if self.spans == other.spans or other.spans == _ALL_SPANS:
            return self
        if self.spans == _ALL_SPANS or not self.spans or not other.spans:
            return other if self.spans else self
        a, b = self._by(), other._by()
        return PortSet.of((p, lo, hi) for p in PROTOCOLS for lo, hi in _intersect(a[p], b[p]))

    def __sub__(self, other: PortSet) -> PortSet:
        if not other.spans or not self.spans:
            return self
        if self.spans == other.spans or other.spans == _ALL_SPANS:
            return PortSet()
        a, b = self._by(), other._by()
        return PortSet.of((p, lo, hi) for p in PROTOCOLS for lo, hi in _subtract(a[p], b[p]))

    def __bool__(self) -> bool:
        return bool(self.spans)

    def covers(self, other: PortSet) -> bool:
        return not (other - self)

    def __str__(self) -> str:
        if self == ALL_PORTS:
            return "any"
        if not self.spans:
            return "none"
        parts = []
        for proto, spans in self._by().items():
            if not spans:
                continue
            if spans == [(1, MAX_PORT)]:
                parts.append(f"{proto}/any")
                continue
            text = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in spans)
            parts.append(f"{proto}/{text}")
        return " ".join(parts)


ALL_PORTS = PortSet.of((p, 1, MAX_PORT) for p in PROTOCOLS)
NO_PORTS = PortSet()
DNS_PORTS = PortSet.of([("UDP", 53, 53), ("TCP", 53, 53)])


def ports_of(protocol: str | None, port: int | None, end_port: int | None = None) -> PortSet:
    """Cilium's reading of one ``ports`` entry: no protocol or ANY = TCP+UDP+SCTP; port 0 = all."""
    protocols = PROTOCOLS if protocol in (None, "ANY") else (protocol,)
    if not port:
        return PortSet.of((p, 1, MAX_PORT) for p in protocols)
    hi = max(port, end_port or port)
    return PortSet.of((p, port, hi) for p in protocols)


def requirement_ports(rules: Iterable[PortRule]) -> PortSet:
    out = NO_PORTS
    for rule in rules:
        out |= ports_of(rule.protocol, int(rule.port))
    return out


def service_ports(service: Service) -> PortSet:
    return PortSet.of((p.protocol, p.port, p.port) for p in service.ports)


# --------------------------------------------------------------------------- addresses


Block = tuple[int, int, int]  # (IP version, first address, last address)


def block_of(cidr: str) -> Block:
    network = ipaddress.ip_network(cidr, strict=False)
    return (network.version, int(network.network_address), int(network.broadcast_address))


def cidr_blocks(cidr: str, excepts: Iterable[str] = ()) -> tuple[Block, ...]:
    """The addresses of ``cidr`` minus its ``except`` blocks, as disjoint ranges."""
    version, lo, hi = block_of(cidr)
    holes = []
    for text in excepts:
        v, a, b = block_of(text)
        if v == version:
            holes.append((a, b))
    return tuple((version, a, b) for a, b in _subtract([(lo, hi)], _merge(holes)))


# --------------------------------------------------------------------------- selectors


def normalize_key(key: str) -> str | None:
    """``k8s:x``, ``any:x`` and ``x`` all address the label ``x``; other sources match no pod."""
    source, sep, rest = key.partition(":")
    if not sep:
        return key
    return rest if source in LABEL_SOURCES else None


@dataclass(frozen=True)
class Term:
    key: str | None  # normalized; None = a label source no pod carries (never matches)
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()

    def holds(self, labels: Mapping[str, str]) -> bool:
        if self.key is None:
            return self.operator in ("NotIn", "DoesNotExist")
        value = labels.get(self.key)
        if self.operator == "In":
            return value is not None and value in self.values
        if self.operator == "NotIn":
            return value is None or value not in self.values
        if self.operator == "Exists":
            return value is not None
        return value is None


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector over identity labels (keys normalized, all terms ANDed)."""

    terms: tuple[Term, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(t.holds(labels) for t in self.terms)

    def has_key(self, key: str) -> bool:
        return any(t.key == key for t in self.terms)

    def has_key_prefix(self, prefix: str) -> bool:
        return any(t.key is not None and t.key.startswith(prefix) for t in self.terms)

    def also(self, *terms: Term) -> LabelSelector:
        return LabelSelector((*self.terms, *terms))

    @staticmethod
    def from_model(selector: Selector) -> LabelSelector:
        terms = [Term(normalize_key(k), "In", (v,)) for k, v in selector.match_labels]
        terms += [Term(normalize_key(e.key), e.operator, e.values)
                  for e in selector.match_expressions]
        return LabelSelector(tuple(terms))


OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


def parse_selector(data: Any, drop: Iterable[str] = ()) -> tuple[LabelSelector | None, str | None]:
    """A selector from YAML (``matchLabels``/``matchExpressions``), or why it is not one.

    Keys listed in ``drop`` are left out of ``matchLabels`` (Cilium overwrites them).
    """
    if not isinstance(data, dict):
        return None, f"expected a label selector mapping, found {type(data).__name__}"
    unknown = sorted(set(data) - {"matchLabels", "matchExpressions"})
    if unknown:
        return None, f"expected matchLabels/matchExpressions, found {', '.join(unknown)}"
    terms: list[Term] = []
    labels = data.get("matchLabels") or {}
    if not isinstance(labels, dict):
        return None, "expected matchLabels to be a mapping"
    skip = set(drop)
    for key, value in labels.items():
        if str(key) in skip:
            continue
        terms.append(Term(normalize_key(str(key)), "In", (str(value),)))
    expressions = data.get("matchExpressions") or []
    if not isinstance(expressions, list):
        return None, "expected matchExpressions to be a list"
    for item in expressions:
        if not isinstance(item, dict) or item.get("operator") not in OPERATORS:
            return None, f"expected a match expression with an operator in {OPERATORS}"
        values = tuple(str(v) for v in item.get("values") or ())
        terms.append(Term(normalize_key(str(item.get("key", ""))), str(item["operator"]), values))
    return LabelSelector(tuple(terms)), None


# --------------------------------------------------------------------------- endpoints


EndpointKind = Literal["service", "client", "dns", "cidr"]


@dataclass(frozen=True)
class Endpoint:
    """Something traffic can come from or go to.

    ``service``: the pods of an inventory service in one cluster; ``client``: pods a
    requirement selects by raw labels; ``dns``: kube-dns of one cluster; ``cidr``: an address
    block a requirement names (``name`` is the CIDR).
    """

    kind: EndpointKind
    domain: str
    cluster: str
    mesh: str
    namespace: str
    name: str
    labels: Labels

    @property
    def is_pod(self) -> bool:
        return self.kind != "cidr"

    @cached_property
    def identity(self) -> dict[str, str]:
        """The labels Cilium derives the endpoint's security identity from."""
        return {**dict(self.labels), POD_NAMESPACE_LABEL: self.namespace,
                CILIUM_CLUSTER_LABEL: self.mesh,
                NAMESPACE_LABELS_PREFIX + NAMESPACE_NAME_LABEL: self.namespace}

    @cached_property
    def block(self) -> Block:
        return block_of(self.name)

    @property
    def title(self) -> str:
        if self.kind == "cidr":
            return self.name
        if self.kind == "service":
            return f"{self.domain}/{self.name}@{self.cluster}"
        return f"{self.domain}/{self.cluster}:{self.namespace}/{self.name}"

    @property
    def service_level(self) -> str:
        """The endpoint without its cluster: ``domain/service`` or ``domain/namespace/labels``."""
        if self.kind == "cidr":
            return self.name
        if self.kind == "service":
            return f"{self.domain}/{self.name}"
        return f"{self.domain}/{self.namespace}/{self.name}"

    @property
    def group(self) -> str:
        """The cluster it runs in (``domain/cluster``), or ``external`` for a CIDR."""
        return "external" if self.kind == "cidr" else f"{self.domain}/{self.cluster}"


def labels_text(labels: Labels) -> str:
    return ",".join(f"{k}={v}" for k, v in labels) or "all pods"


def synthesize_labels(selector: Selector) -> Labels:
    """Pod labels that satisfy a raw selector (namespace and cluster keys left out)."""
    labels: dict[str, str] = {}
    for key, value in selector.match_labels:
        norm = normalize_key(key)
        if norm is not None and norm not in (POD_NAMESPACE_LABEL, CILIUM_CLUSTER_LABEL):
            labels[norm] = value
    for e in selector.match_expressions:
        norm = normalize_key(e.key)
        if norm is None or norm in (POD_NAMESPACE_LABEL, CILIUM_CLUSTER_LABEL) or norm in labels:
            continue
        if e.operator == "In" and e.values:
            labels[norm] = e.values[0]
        elif e.operator == "Exists":
            labels[norm] = "present"
    return tuple(sorted(labels.items()))


def selector_namespace(selector: Selector) -> str | None:
    for key, value in selector.match_labels:
        if normalize_key(key) == POD_NAMESPACE_LABEL:
            return value
    return None


def inventory_endpoints(inventory: Inventory) -> tuple[Endpoint, ...]:
    """Every endpoint verify reasons about, in a stable order."""
    found: dict[tuple[str, str, str, str, Labels], Endpoint] = {}
    cidrs: dict[str, Endpoint] = {}

    def add(endpoint: Endpoint) -> None:
        key = (endpoint.domain, endpoint.cluster, endpoint.namespace, endpoint.kind,
               endpoint.labels)
        if endpoint.kind == "client":
            twin = (endpoint.domain, endpoint.cluster, endpoint.namespace, "service",
                    endpoint.labels)
            if twin in found:
                return
        found.setdefault(key, endpoint)

    for domain in inventory.domains:
        for cluster in domain.clusters:
            add(Endpoint("dns", domain.name, cluster.name, cluster.mesh_name, DNS_NAMESPACE,
                         "kube-dns", DNS_LABELS))
        for service in domain.services:
            for name in service.clusters:
                runs_in = domain.cluster_by_name.get(name)
                if runs_in is not None:
                    add(Endpoint("service", domain.name, name, runs_in.mesh_name,
                                 service.namespace, service.name, service.selector))
    for requirement in inventory.requirements:
        owner = inventory.domain_by_name.get(requirement.domain)
        if owner is None:
            continue
        scope = [c.name for c in inventory.requirement_scope(requirement)]
        own = inventory.policy_namespace(requirement) or DEFAULT_NAMESPACE
        raw = [] if requirement.endpoint_selector.is_abstract else [requirement.endpoint_selector]
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
                add(Endpoint("client", owner.name, name, owner.cluster_by_name[name].mesh_name,
                             namespace, labels_text(labels), labels))
    order = {"service": 0, "client": 1, "dns": 2}
    pods = sorted(found.values(), key=lambda e: (e.domain, e.cluster, order[e.kind],
                                                 e.namespace, e.name))
    return (*pods, *sorted(cidrs.values(), key=lambda e: e.block))


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Origin:
    """Where an allow or a restriction comes from: a rendered rule or a requirement line."""

    location: Location
    what: str

    def __str__(self) -> str:
        where = f"{self.location.file}:{self.location.line}" if self.location.line else \
            self.location.file
        return f"{self.what} ({where})"


@dataclass(frozen=True)
class Grant:
    """One rule's allow (or deny) for one direction: which peers, on which ports."""

    pods: frozenset[int]  # endpoint indices
    blocks: tuple[Block, ...]  # address ranges (CIDR endpoints)
    ports: PortSet
    origin: Origin
    wildcard: bool = False  # no L3 part: every peer, pods and addresses alike

    def selects(self, index: int) -> bool:
        return self.wildcard or index in self.pods

    def covers(self, version: int, lo: int, hi: int) -> bool:
        return self.wildcard or any(v == version and a <= lo and hi <= b
                                    for v, a, b in self.blocks)


@dataclass
class Stance:
    """One endpoint, one direction: whether it is default-deny, and its allows and denies."""

    default_deny: list[Origin] = field(default_factory=list)
    allows: list[Grant] = field(default_factory=list)
    denies: list[Grant] = field(default_factory=list)
    _compiled: tuple[dict[int, PortSet], PortSet, dict[int, PortSet], PortSet] | None = field(
        default=None, repr=False, compare=False)

    @property
    def restricted(self) -> bool:
        return bool(self.default_deny)

    def compiled(self) -> tuple[dict[int, PortSet], PortSet, dict[int, PortSet], PortSet]:
        """Per peer pod: the union of allowed ports, of wildcard ports, of denied ports, ...

        Computed once, after the model is built (a stance is not changed after that).
        """
        if self._compiled is None:
            maps: list[tuple[dict[int, PortSet], PortSet]] = []
            for grants in (self.allows, self.denies):
                per_pod: dict[int, PortSet] = {}
                everywhere = NO_PORTS
                for grant in grants:
                    if grant.wildcard:
                        everywhere |= grant.ports
                    for index in grant.pods:
                        per_pod[index] = per_pod.get(index, NO_PORTS) | grant.ports
                maps.append((per_pod, everywhere))
            self._compiled = (maps[0][0], maps[0][1], maps[1][0], maps[1][1])
        return self._compiled


@dataclass(frozen=True)
class Verdict:
    ports: PortSet
    restricted: bool
    grants: tuple[Grant, ...]  # the allows that matched the peer


class Connectivity:
    """Stances of every endpoint; evaluates flows between any two endpoints."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self.endpoints = tuple(endpoints)
        self.egress = [Stance() for _ in self.endpoints]
        self.ingress = [Stance() for _ in self.endpoints]

    def stance(self, direction: Direction, index: int) -> Stance:
        return (self.egress if direction == "egress" else self.ingress)[index]

    def verdict(self, direction: Direction, subject: int, peer: int, *,
                grants: bool = True) -> Verdict:
        """What ``subject`` allows to (egress) or from (ingress) ``peer``.

        ``grants=False`` leaves out which rules matched (faster; for the bulk of pairs).
        """
        stance = self.stance(direction, subject)
        endpoint = self.endpoints[peer]
        if endpoint.kind == "cidr":
            return self._block_verdict(stance, endpoint.block)
        allow, allow_any, deny, deny_any = stance.compiled()
        allowed = ALL_PORTS
        if stance.restricted:
            allowed = allow.get(peer, NO_PORTS) | allow_any
        denied = deny.get(peer, NO_PORTS) | deny_any
        if denied:
            allowed -= denied
        matched = tuple(g for g in stance.allows if g.selects(peer)) if grants else ()
        return Verdict(allowed, stance.restricted, matched)

    def _block_verdict(self, stance: Stance, block: Block) -> Verdict:
        version, lo, hi = block
        relevant = [g for g in (*stance.allows, *stance.denies)
                    if g.wildcard or any(v == version and a <= hi and b >= lo
                                         for v, a, b in g.blocks)]
        cuts = {lo, hi + 1}
        for grant in relevant:
            for v, a, b in grant.blocks:
                if v == version and a <= hi and b >= lo:
                    cuts.update((max(a, lo), min(b, hi) + 1))
        points = sorted(cuts)
        result: PortSet | None = None
        used: list[Grant] = []
        for start, end in itertools.pairwise(points):
            allowed = ALL_PORTS
            if stance.restricted:
                allowed = NO_PORTS
                for grant in stance.allows:
                    if grant in relevant and grant.covers(version, start, end - 1):
                        allowed |= grant.ports
                        if grant not in used:
                            used.append(grant)
            for deny in stance.denies:
                if deny in relevant and deny.covers(version, start, end - 1):
                    allowed -= deny.ports
            result = allowed if result is None else result & allowed
            if not result:
                break
        return Verdict(result or NO_PORTS, stance.restricted, tuple(used))

    def flow(self, source: int, destination: int) -> PortSet:
        return (self.verdict("egress", source, destination, grants=False).ports
                & self.verdict("ingress", destination, source, grants=False).ports)

    def pairs(self) -> Iterator[tuple[int, int]]:
        """Every (source, destination) that is a flow: pod to anything else, address to pod."""
        for i, src in enumerate(self.endpoints):
            for j, dst in enumerate(self.endpoints):
                if i != j and (src.is_pod or dst.is_pod):
                    yield i, j

    def flows(self) -> dict[tuple[int, int], PortSet]:
        """Every allowed flow (non-empty port set)."""
        out = {}
        for i, j in self.pairs():
            ports = self.flow(i, j)
            if ports:
                out[(i, j)] = ports
        return out


# --------------------------------------------------------------------------- intended


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
                for target in self.inventory.resolve_peer(peer.selector, self.req.domain):
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
        """Raw pod labels: the requirement's own cluster, its namespace unless one is written."""
        labels = LabelSelector.from_model(selector)
        namespace = self.inventory.policy_namespace(self.req)
        if namespace is not None and not labels.has_key(POD_NAMESPACE_LABEL):
            labels = labels.also(Term(POD_NAMESPACE_LABEL, "In", (namespace,)))
        return frozenset(
            i for i, e in enumerate(self.model.endpoints)
            if e.is_pod and e.domain == self.req.domain and e.cluster == cluster
            and labels.matches(e.identity))


# --------------------------------------------------------------------------- actual


HARMLESS_KUSTOMIZE_KEYS = {"apiVersion", "kind", "metadata", "resources", "commonAnnotations",
                           "buildMetadata"}
RULE_KEYS = {"endpointSelector", "ingress", "ingressDeny", "egress", "egressDeny",
             "enableDefaultDeny", "description", "labels", "log"}
L3_KEYS: dict[Direction, tuple[str, str, str]] = {
    "egress": ("toEndpoints", "toCIDR", "toCIDRSet"),
    "ingress": ("fromEndpoints", "fromCIDR", "fromCIDRSet"),
}
UNMODELLED_L3: dict[Direction, tuple[str, ...]] = {
    "egress": ("toEntities", "toServices", "toFQDNs", "toGroups", "toNodes", "toRequires"),
    "ingress": ("fromEntities", "fromGroups", "fromNodes", "fromRequires"),
}
NOTED_RULE_KEYS = {"icmps", "authentication"}
PORT_RULE_KEYS = {"ports"}
NOTED_PORT_RULE_KEYS = {"rules", "serverNames", "listener", "terminatingTLS", "originatingTLS"}


class _ActualBuilder:
    """Reads the rendered tree and fills a :class:`Connectivity` with Cilium's semantics."""

    def __init__(self, inventory: Inventory, endpoints: Sequence[Endpoint],
                 files: Mapping[str, bytes], display_root: str) -> None:
        self.inventory = inventory
        self.model = Connectivity(endpoints)
        self.files = files
        self.root = display_root.rstrip("/")
        self.problems: list[Diagnostic] = []
        self.policies = 0

    def display(self, relpath: str) -> str:
        return f"{self.root}/{relpath}" if self.root else relpath

    def build(self) -> Connectivity:
        dirs = sorted({cluster_dir(split[0], split[1]) for p in self.files
                       if (split := split_cluster_path(p)) is not None})
        known = set()
        for domain in self.inventory.domains:
            for cluster in domain.clusters:
                base = cluster_dir(domain.name, cluster.name)
                known.add(base)
                if base not in dirs:
                    self.problems.append(error(
                        Location(self.display(base) + "/"), "", "expected the rendered "
                        f"directory of cluster {domain.name}/{cluster.name}, found none: run "
                        "`meshplan render` (its policies cannot be verified)"))
                    continue
                for relpath in self._resources(base):
                    self._file(relpath, domain.name, cluster.name, cluster.mesh_name)
        for base in dirs:
            if base not in known:
                self.problems.append(warning(
                    Location(self.display(base) + "/"), "", "expected only clusters of the "
                    "inventory in the rendered output, found a directory no inventory cluster "
                    "owns (stale output? run `meshplan render`)"))
        return self.model

    def _resources(self, base: str) -> list[str]:
        path = f"{base}/{KUSTOMIZATION}"
        if path not in self.files:
            return sorted(p for p in self.files if p.startswith(base + "/")
                          and p.count("/") == 3 and p.endswith((".yaml", ".yml")))
        docs = self._documents(path)
        if not docs or not isinstance(docs[0].data, dict):
            return []
        data = docs[0].data
        extra = sorted(set(data) - HARMLESS_KUSTOMIZE_KEYS)
        if extra:
            self.problems.append(warning(
                docs[0].location(), "", f"expected a kustomization with resources only, found "
                f"{', '.join(extra)}: verify reads the listed files as they are and does not "
                "apply kustomize transformations"))
        resources = data.get("resources") or []
        out = []
        for i, item in enumerate(resources if isinstance(resources, list) else []):
            target = f"{base}/{item}"
            if not isinstance(item, str) or "/" in item or target not in self.files:
                self.problems.append(error(
                    docs[0].location(("resources", i)), f"resources[{i}]", "expected a file "
                    f"beside the kustomization, found {item!r}: verify cannot read it"))
                continue
            out.append(target)
        return out

    def _documents(self, relpath: str) -> list[Document]:
        text = decode_utf8(self.display(relpath), self.files[relpath])
        if isinstance(text, Diagnostic):
            self.problems.append(text)
            return []
        docs, problems = parse_yaml(self.display(relpath), text)
        self.problems.extend(problems)
        return docs

    def _file(self, relpath: str, domain: str, cluster: str, mesh: str) -> None:
        for doc in self._documents(relpath):
            data = doc.data
            if not isinstance(data, dict):
                continue
            kind = data.get("kind")
            if kind in POLICY_KINDS:
                self.policies += 1
                _PolicyReader(self, doc, domain, cluster, mesh).read()
            elif kind == "NetworkPolicy":
                self.problems.append(error(
                    doc.location(("kind",)), "kind", "expected Cilium policies only, found a "
                    "Kubernetes NetworkPolicy, which verify does not model"))


class _PolicyReader:
    def __init__(self, owner: _ActualBuilder, doc: Document, domain: str, cluster: str,
                 mesh: str) -> None:
        self.owner = owner
        self.doc = doc
        self.domain = domain
        self.cluster = cluster
        self.mesh = mesh
        data = doc.data
        meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        assert isinstance(meta, dict)
        self.kind = str(data["kind"])
        self.name = str(meta.get("name", "?"))
        namespace = meta.get("namespace")
        self.namespace = str(namespace) if namespace else None
        annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
        assert isinstance(annotations, dict)
        source = annotations.get(SOURCE_ANNOTATION)
        self.label = (f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"
                      f" in {domain}/{cluster}" + (f" (from {source})" if source else ""))

    def problem(self, path: PathKey, message: str, *, severity: str = "error") -> None:
        make = {"error": error, "warning": warning, "notice": notice}[severity]
        self.owner.problems.append(make(self.doc.location(path), format_path(path),
                                        f"{self.label}: {message}"))

    def read(self) -> None:
        data = self.doc.data
        if self.kind == NETWORK_POLICY_KIND and self.namespace is None:
            self.problem(("metadata",), "expected metadata.namespace, found none")
            return
        specs: list[tuple[PathKey, Any]] = []
        if "spec" in data:
            specs.append((("spec",), data["spec"]))
        for i, spec in enumerate(data.get("specs") or []):
            specs.append((("specs", i), spec))
        for path, spec in specs:
            if isinstance(spec, dict):
                self._rule(path, spec)
            else:
                self.problem(path, "expected a policy rule mapping")

    def _rule(self, path: PathKey, spec: Mapping[str, Any]) -> None:
        if "nodeSelector" in spec:
            self.problem((*path, "nodeSelector"), "host policies (nodeSelector) are not "
                         "modelled: this rule is ignored")
            return
        for key in sorted(set(spec) - RULE_KEYS):
            self.problem((*path, key), f"'{key}' is not modelled by verify: ignored")
        drop = ("k8s:" + POD_NAMESPACE_LABEL,) if self.namespace else ()
        selector, why = parse_selector(spec.get("endpointSelector"), drop)
        if selector is None:
            self.problem((*path, "endpointSelector"), f"cannot read endpointSelector: {why}")
            return
        subjects = [i for i, e in enumerate(self.owner.model.endpoints)
                    if e.is_pod and e.domain == self.domain and e.cluster == self.cluster
                    and (self.namespace is None or e.namespace == self.namespace)
                    and selector.matches(e.identity)]
        if not subjects:
            self.problem((*path, "endpointSelector"), "selects no pod of the inventory or of "
                         "the requirements, so verify cannot check it (stale output? `meshplan "
                         "render --check` tells)", severity="warning")
        defaults = spec.get("enableDefaultDeny") or {}
        if not isinstance(defaults, dict):
            self.problem((*path, "enableDefaultDeny"), "expected a mapping")
            defaults = {}
        for direction in DIRECTIONS:
            allows = spec.get(direction) or []
            denies = spec.get(direction + "Deny") or []
            if not isinstance(allows, list) or not isinstance(denies, list):
                self.problem((*path, direction), "expected a list of rules")
                continue
            explicit = defaults.get(direction)
            enforced = bool(allows or denies)
            if not enforced:
                if explicit is True:
                    self.problem(
                        (*path, "enableDefaultDeny", direction), f"enableDefaultDeny.{direction}"
                        f" is true but there are no {direction} rules: Cilium enforces a "
                        f"direction only for rules that have {direction} rules, so "
                        f"{direction} stays open", severity="warning")
                continue
            default_deny = enforced if explicit is None else bool(explicit)
            origin = Origin(self.doc.location((*path, direction)), self.label)
            grants = [g for i, r in enumerate(allows)
                      if (g := self._grant(r, direction, (*path, direction, i))) is not None]
            deny_grants = [g for i, r in enumerate(denies)
                           if (g := self._grant(r, direction, (*path, direction + "Deny", i)))
                           is not None]
            for index in subjects:
                stance = self.owner.model.stance(direction, index)
                if default_deny:
                    stance.default_deny.append(origin)
                stance.allows.extend(grants)
                stance.denies.extend(deny_grants)

    def _grant(self, rule: Any, direction: Direction, path: PathKey) -> Grant | None:
        if not isinstance(rule, dict):
            self.problem(path, "expected a rule mapping")
            return None
        peers_key, cidr_key, cidrset_key = L3_KEYS[direction]
        for key in UNMODELLED_L3[direction]:
            if key in rule:
                self.problem((*path, key), f"'{key}' is not modelled by verify: the rule is "
                             "ignored (what it allows is not counted)")
                return None
        for key in sorted(set(rule) - {peers_key, cidr_key, cidrset_key, "toPorts"}
                          - NOTED_RULE_KEYS - set(UNMODELLED_L3[direction])):
            self.problem((*path, key), f"'{key}' is not modelled by verify: ignored")
        for key in sorted(NOTED_RULE_KEYS & set(rule)):
            self.problem((*path, key), f"'{key}' is outside verify's model (ICMP and "
                         "authentication are not evaluated)", severity="notice")
        # No L3 part: with toPorts (or ICMP) the rule allows those ports to and from every
        # peer; with nothing at all it allows nothing (Cilium's documented default-deny rule
        # ``- {}``).
        wildcard = not any(k in rule for k in (peers_key, cidr_key, cidrset_key)) and (
            "toPorts" in rule or "icmps" in rule)
        pods = self._peers(rule.get(peers_key), (*path, peers_key)) if peers_key in rule \
            else frozenset()
        blocks: list[Block] = []
        for j, text in enumerate(rule.get(cidr_key) or []):
            try:
                blocks.extend(cidr_blocks(str(text) if "/" in str(text) else
                                          f"{text}/{32 if ':' not in str(text) else 128}"))
            except ValueError:
                self.problem((*path, cidr_key, j), f"cannot read CIDR {text!r}")
        for j, item in enumerate(rule.get(cidrset_key) or []):
            if not isinstance(item, dict) or "cidr" not in item:
                self.problem((*path, cidrset_key, j), "expected {cidr, except}: the entry "
                             "is ignored (cidrGroupRef is not modelled)")
                continue
            try:
                blocks.extend(cidr_blocks(str(item["cidr"]),
                                          [str(x) for x in item.get("except") or ()]))
            except ValueError:
                self.problem((*path, cidrset_key, j), f"cannot read CIDR {item['cidr']!r}")
        ports = self._ports(rule.get("toPorts"), (*path, "toPorts")) if "toPorts" in rule \
            else ALL_PORTS
        return Grant(pods, tuple(blocks), ports, Origin(self.doc.location(path), self.label),
                     wildcard)

    def _peers(self, peers: Any, path: PathKey) -> frozenset[int]:
        if not isinstance(peers, list):
            self.problem(path, "expected a list of selectors")
            return frozenset()
        selected: set[int] = set()
        for j, data in enumerate(peers):
            selector, why = parse_selector(data)
            if selector is None:
                self.problem((*path, j), f"cannot read the selector: {why}")
                continue
            if not selector.has_key(CILIUM_CLUSTER_LABEL):
                self.problem((*path, j), f"expected the peer to name its cluster "
                             f"({CILIUM_CLUSTER_LABEL}), found none: without it the selector "
                             "means the local cluster from Cilium 1.19 "
                             "(policy-default-local-cluster) and every cluster before, so "
                             "verify counts it as allowing nothing")
                continue
            if not selector.has_key(POD_NAMESPACE_LABEL):
                if self.namespace is not None and not selector.has_key_prefix(
                        NAMESPACE_LABELS_PREFIX):
                    selector = selector.also(Term(POD_NAMESPACE_LABEL, "In", (self.namespace,)))
                elif self.namespace is None:
                    selector = selector.also(Term(POD_NAMESPACE_LABEL, "Exists"))
            selected.update(i for i, e in enumerate(self.owner.model.endpoints)
                            if e.is_pod and selector.matches(e.identity))
        return frozenset(selected)

    def _ports(self, data: Any, path: PathKey) -> PortSet:
        if not isinstance(data, list):
            self.problem(path, "expected a list of port rules")
            return NO_PORTS
        out = NO_PORTS
        for i, rule in enumerate(data):
            if not isinstance(rule, dict):
                self.problem((*path, i), "expected a port rule mapping")
                continue
            for key in sorted(NOTED_PORT_RULE_KEYS & set(rule)):
                self.problem((*path, i, key), f"'{key}' (L7) is evaluated at L4 only: the "
                             "port counts as allowed", severity="notice")
            for key in sorted(set(rule) - PORT_RULE_KEYS - NOTED_PORT_RULE_KEYS):
                self.problem((*path, i, key), f"'{key}' is not modelled by verify: ignored")
            entries = rule.get("ports")
            if not entries:
                out = ALL_PORTS
                continue
            for j, entry in enumerate(entries):
                out |= self._port(entry, (*path, i, "ports", j))
        return out

    def _port(self, entry: Any, path: PathKey) -> PortSet:
        if not isinstance(entry, dict):
            self.problem(path, "expected {port, protocol}")
            return NO_PORTS
        protocol = entry.get("protocol")
        if protocol is not None and protocol not in (*PROTOCOLS, "ANY"):
            self.problem((*path, "protocol"), f"protocol {protocol} is outside verify's model "
                         "(TCP, UDP, SCTP)", severity="notice")
            return NO_PORTS
        text = str(entry.get("port", "0"))
        try:
            number = int(text, 0)
        except ValueError:
            self.problem((*path, "port"), f"expected a port number, found the named port "
                         f"{text!r}: named ports depend on the pods' container ports, which "
                         "verify does not know (counted as allowing nothing)")
            return NO_PORTS
        end = entry.get("endPort")
        return ports_of(protocol, number, int(end) if isinstance(end, int) else None)


def actual_connectivity(
    inventory: Inventory, endpoints: Sequence[Endpoint], files: Mapping[str, bytes],
    display_root: str = DEFAULT_OUTPUT_DIR,
) -> tuple[Connectivity, tuple[Diagnostic, ...], int]:
    """The connectivity the rendered files allow; problems reading them; how many policies."""
    builder = _ActualBuilder(inventory, endpoints, files, display_root)
    model = builder.build()
    return model, tuple(builder.problems), builder.policies


# --------------------------------------------------------------------------- comparison


def is_dns_flow(a: Endpoint, b: Endpoint) -> bool:
    return a.kind == "dns" or b.kind == "dns"


def _origins(grants: Iterable[Grant], ports: PortSet) -> list[Origin]:
    out: list[Origin] = []
    for grant in grants:
        if grant.ports & ports and grant.origin not in out:
            out.append(grant.origin)
    return out


def _list(origins: Sequence[Origin], limit: int = 3) -> str:
    shown = "; ".join(str(o) for o in origins[:limit])
    more = len(origins) - limit
    return shown + (f"; and {more} more" if more > 0 else "")


@dataclass(frozen=True)
class Mismatch:
    source: Endpoint
    destination: Endpoint
    ports: PortSet
    kind: Literal["unintended", "blocked"]
    diagnostic: Diagnostic


def compare(actual: Connectivity, intended: Connectivity) -> list[Mismatch]:
    """Every flow the output allows but nothing intends, and every intended flow it blocks."""
    out: list[Mismatch] = []
    endpoints = actual.endpoints
    for i, j in actual.pairs():
        src, dst = endpoints[i], endpoints[j]
        if is_dns_flow(src, dst):
            continue
        a_e = actual.verdict("egress", i, j, grants=False)
        a_i = actual.verdict("ingress", j, i, grants=False)
        n_e = intended.verdict("egress", i, j, grants=False)
        n_i = intended.verdict("ingress", j, i, grants=False)
        if a_e.ports == n_e.ports and a_i.ports == n_i.ports:
            continue  # both sides as intended: the flow is too
        a_e, a_i = actual.verdict("egress", i, j), actual.verdict("ingress", j, i)
        n_e, n_i = intended.verdict("egress", i, j), intended.verdict("ingress", j, i)
        allowed = a_e.ports & a_i.ports
        wanted = n_e.ports & n_i.ports
        extra = allowed - wanted
        if extra:
            out.append(_unintended(src, dst, extra, a_e, a_i, n_e, n_i, intended, i, j))
        missing = wanted - allowed
        if missing:
            out.append(_blocked(src, dst, missing, a_e, a_i, n_e, n_i, actual, i, j))
        if not extra and not missing:
            out += _latent(src, dst, (a_e, n_e, "egress", intended.egress[i].default_deny),
                           (a_i, n_i, "ingress", intended.ingress[j].default_deny))
    return out


def _latent(src: Endpoint, dst: Endpoint,
            *sides: tuple[Verdict, Verdict, str, list[Origin]]) -> list[Mismatch]:
    """One side differs from its intent while the other side blocks the flow anyway.

    The flow is right today, by accident: once the other side changes (say, the other domain
    admits it), the rendered output would be wrong. Reported so that every rendered rule is
    checked, not only the rules of flows that can happen.
    """
    out: list[Mismatch] = []
    masked = ("masked for now: the other side blocks this flow too, so it shows once that "
              "side changes")
    for actual, intended, direction, restrictors in sides:
        if actual.ports == intended.ports:
            continue
        subject, peer = (src, dst) if direction == "egress" else (dst, src)
        preposition = "to" if direction == "egress" else "from"
        missing = intended.ports - actual.ports
        if missing:
            intended_by = _origins(intended.grants, missing)
            where = intended_by[0].location if intended_by else Location("(requirements)")
            message = (f"expected the {direction} of {subject.title} to allow {preposition} "
                       f"{peer.title} on {missing} (intended by {_list(intended_by)}), found "
                       f"it not allowed by the rendered policies ({masked})")
            out.append(Mismatch(src, dst, missing, "blocked", error(where, "", message)))
        extra = actual.ports - intended.ports
        if extra:
            found = _allowed_side(actual, f"the {direction} of {subject.title}", extra)
            blame = (f"{restrictors[0].what} restricts it" if restrictors
                     else "no requirement restricts it")
            message = (f"expected the {direction} of {subject.title} not to allow "
                       f"{preposition} {peer.title} on {extra} (no requirement allows it; "
                       f"{blame}), found: {found} ({masked})")
            location = restrictors[0].location if restrictors else (
                _origins(actual.grants, extra) or [Origin(Location("(rendered)"), "")])[0].location
            out.append(Mismatch(src, dst, extra, "unintended", error(location, "", message)))
    return out


def _allowed_side(verdict: Verdict, what: str, ports: PortSet) -> str:
    if not verdict.restricted:
        return f"{what} is unrestricted (no rendered policy enforces it)"
    return f"{what} is allowed by {_list(_origins(verdict.grants, ports))}"


def _unintended(src: Endpoint, dst: Endpoint, extra: PortSet, a_e: Verdict, a_i: Verdict,
                n_e: Verdict, n_i: Verdict, intended: Connectivity, i: int,
                j: int) -> Mismatch:
    blame: list[Origin] = []
    sides = []
    if not n_e.ports.covers(extra):
        blame += intended.egress[i].default_deny
        sides.append(f"the egress of {src.title}")
    if not n_i.ports.covers(extra):
        blame += intended.ingress[j].default_deny
        sides.append(f"the ingress of {dst.title}")
    first = blame[0] if blame else Origin(Location("(requirements)"), "no requirement")
    others = f" (also {_list(blame[1:])})" if len(blame) > 1 else ""
    found = "; ".join((_allowed_side(a_e, f"egress from {src.title}", extra),
                       _allowed_side(a_i, f"ingress to {dst.title}", extra)))
    message = (f"expected {src.title} -> {dst.title} to be blocked on {extra}: no requirement "
               f"allows it, and {first.what}{others} restricts {' and '.join(sides)}; found it "
               f"allowed: {found}")
    return Mismatch(src, dst, extra, "unintended", error(first.location, "", message))


def _blocked(src: Endpoint, dst: Endpoint, missing: PortSet, a_e: Verdict, a_i: Verdict,
             n_e: Verdict, n_i: Verdict, actual: Connectivity, i: int, j: int) -> Mismatch:
    intended_by = _origins((*n_e.grants, *n_i.grants), missing)
    blockers = []
    if not a_e.ports.covers(missing):
        blockers.append(f"the egress of {src.title} "
                        f"({_list(actual.egress[i].default_deny) or 'no policy'})")
    if not a_i.ports.covers(missing):
        blockers.append(f"the ingress of {dst.title} "
                        f"({_list(actual.ingress[j].default_deny) or 'no policy'})")
    if intended_by:
        first = intended_by[0]
        why = f"intended by {_list(intended_by)}"
        location = first.location
    else:
        why = "no requirement restricts it"
        restrictors = [*actual.egress[i].default_deny, *actual.ingress[j].default_deny]
        location = restrictors[0].location if restrictors else Location("(no policy)")
    message = (f"expected {src.title} -> {dst.title} to be allowed on {missing} ({why}), "
               f"found it blocked at {' and '.join(blockers)}")
    return Mismatch(src, dst, missing, "blocked", error(location, "", message))


def dns_problems(actual: Connectivity) -> list[Diagnostic]:
    """Every egress-restricted pod must reach kube-dns of its own cluster on UDP and TCP 53."""
    dns = {(e.domain, e.cluster): i for i, e in enumerate(actual.endpoints) if e.kind == "dns"}
    out = []
    for i, e in enumerate(actual.endpoints):
        if e.kind not in ("service", "client") or not actual.egress[i].restricted:
            continue
        j = dns.get((e.domain, e.cluster))
        if j is None:
            continue
        missing = DNS_PORTS - actual.flow(i, j)
        if missing:
            origin = actual.egress[i].default_deny[0]
            out.append(error(origin.location, "", f"expected {e.title} to reach kube-dns of its "
                             f"cluster on UDP/53 and TCP/53 (it is egress-restricted by "
                             f"{_list(actual.egress[i].default_deny)}), found {missing} "
                             "blocked: names will not resolve"))
    return out


def half_open(intended: Connectivity) -> list[Diagnostic]:
    """Cross-domain intents that one side allows and the other side's requirements do not."""
    groups: dict[tuple[str, str, str, str, str], list[str]] = {}
    where: dict[tuple[str, str, str, str, str], Location] = {}
    endpoints = intended.endpoints
    for i, j in intended.pairs():
        src, dst = endpoints[i], endpoints[j]
        if not (src.is_pod and dst.is_pod) or is_dns_flow(src, dst) or src.domain == dst.domain:
            continue
        if not (intended.egress[i].restricted and intended.ingress[j].restricted):
            continue
        n_e, n_i = intended.verdict("egress", i, j), intended.verdict("ingress", j, i)
        for granted, other, asking, refusing in (
            (n_e, n_i, "egress", "ingress"), (n_i, n_e, "ingress", "egress"),
        ):
            lost = granted.ports - other.ports
            if not granted.ports or not lost:
                continue
            grants = _origins(granted.grants, lost)
            refusers = (intended.ingress[j] if refusing == "ingress"
                        else intended.egress[i]).default_deny
            if not grants or not refusers:
                continue
            a, r = grants[0], refusers[0]
            key = (src.service_level, dst.service_level,
                   f"{a.location.file}:{a.location.line}",
                   f"{r.location.file}:{r.location.line}", f"{asking}:{lost}")
            where[key] = a.location
            groups.setdefault(key, []).append(
                f"{src.cluster}->{dst.cluster}")
    out = []
    for key, pairs in sorted(groups.items()):
        source, destination, allow_at, refuse_at, what = key
        asking, ports = what.split(":", 1)
        if asking == "egress":
            text = (f"half-open intent: {allow_at} lets {source} call {destination} on {ports} "
                    f"at egress, but the ingress of {destination} is restricted by {refuse_at} "
                    "and does not admit it")
        else:
            text = (f"half-open intent: {allow_at} admits {source} at the ingress of "
                    f"{destination} on {ports}, but the egress of {source} is restricted by "
                    f"{refuse_at} and does not allow it")
        out.append(warning(where[key], "", f"{text}: the traffic will silently fail "
                           f"(clusters {', '.join(sorted(set(pairs)))})"))
    return out


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class VerifyReport:
    endpoints: tuple[Endpoint, ...]
    actual: Connectivity
    intended: Connectivity
    flows: Mapping[tuple[int, int], PortSet]  # allowed by the output
    mismatches: tuple[Mismatch, ...]
    diagnostics: tuple[Diagnostic, ...]  # sorted: mismatches, DNS, half-open, reading problems
    policies: int

    @property
    def ok(self) -> bool:
        return not any(d.severity.value == "error" for d in self.diagnostics)

    def flow_lines(self, *, include_dns: bool = False) -> list[str]:
        """``source -> destination ports`` for every allowed flow (for tests and tables)."""
        out = []
        for (i, j), ports in sorted(self.flows.items()):
            src, dst = self.endpoints[i], self.endpoints[j]
            if include_dns or not is_dns_flow(src, dst):
                out.append(f"{src.title} -> {dst.title} {ports}")
        return out

    def restricted_flows(self) -> dict[tuple[int, int], PortSet]:
        """Allowed flows where at least one side is restricted (explicitly allowed), no DNS."""
        out = {}
        for (i, j), ports in self.flows.items():
            src, dst = self.endpoints[i], self.endpoints[j]
            if is_dns_flow(src, dst):
                continue
            if self.actual.egress[i].restricted or self.actual.ingress[j].restricted:
                out[(i, j)] = ports
        return out


def verify(inventory: Inventory, files: Mapping[str, bytes],
           display_root: str = DEFAULT_OUTPUT_DIR) -> VerifyReport:
    """Compare the rendered files (relative to the output root) with the requirements."""
    endpoints = inventory_endpoints(inventory)
    actual, problems, policies = actual_connectivity(inventory, endpoints, files, display_root)
    intended = intended_connectivity(inventory, endpoints)
    mismatches = compare(actual, intended)
    diagnostics = [*problems, *(m.diagnostic for m in mismatches), *dns_problems(actual),
                   *half_open(intended)]
    return VerifyReport(endpoints, actual, intended, actual.flows(), tuple(mismatches),
                        sorted_diagnostics(diagnostics), policies)


def display_root_for(repo: Path, rendered: Path) -> str:
    """How to name the rendered folder in messages: relative to the repo when inside it."""
    try:
        return rendered.resolve().relative_to(repo.resolve()).as_posix()
    except ValueError:
        return str(rendered)


__all__ = [
    "ALL_PORTS", "DNS_PORTS", "NO_PORTS", "Connectivity", "Endpoint", "Grant",
    "LabelSelector", "Mismatch", "Origin", "PortSet", "Stance", "Term", "VerifyReport",
    "actual_connectivity", "compare", "dns_problems", "half_open", "intended_connectivity",
    "inventory_endpoints", "parse_selector", "verify",
]
