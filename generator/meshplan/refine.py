"""Stage 5 — refine: requirements -> the Kubernetes objects each cluster needs.

For every requirement and every cluster in its scope: a Cilium policy with its abstract peers
expanded (explicit namespace and cluster labels, inventory ports), and the Services and
Namespaces that let a client reach a remote service by its short name (thesis 5.5). Objects are
merged across requirements by (cluster, kind, namespace, name); ``meshplan.dev/required-by``
lists every cause, and two different bodies for one key are a clash naming both sources.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple

from .admission import (
    MAX_PORTS_PER_PORT_RULE,
    bare_key,
    cilium_service_flags,
    valid_external_name,
)
from .diagnostics import Diagnostic, Location, error, has_errors, warning
from .model import (
    Cluster,
    Inventory,
    Peer,
    PeerTarget,
    PortRule,
    Requirement,
    Rule,
    Selector,
    Service,
)
from .vocabulary import (
    AFFINITY_ANNOTATION,
    ARGOCD_SYNC_OPTIONS_ANNOTATION,
    ARGOCD_SYNC_WAVE_ANNOTATION,
    AUTHORIZATION_POLICY_KIND,
    CILIUM_CLUSTER_LABEL,
    CLUSTERWIDE_POLICY_KIND,
    CONFIG_MAP_KIND,
    CROSS_NETWORK_PORT,
    DNS_APP,
    DNS_APP_LABEL,
    DNS_NAMESPACE,
    EASTWEST_GATEWAY_LABELS,
    FLUX_PRUNE_ANNOTATION,
    GATEWAY_KIND,
    GLOBAL_NAMESPACE_ANNOTATION,
    GLOBAL_SERVICE_ANNOTATION,
    ISTIO_NAMESPACE,
    K8S_POD_NAMESPACE_LABEL,
    MANAGED_BY,
    NAMESPACE_KIND,
    NAMESPACE_LABELS_PREFIX,
    NETWORK_POLICY_KIND,
    PEER_AUTHENTICATION_KIND,
    POD_NAMESPACE_LABEL,
    PROMETHEUS_RULE_KIND,
    REQUIRED_BY_ANNOTATION,
    SCRAPE_CONFIG_KIND,
    SERVICE_KIND,
    SHARED_SERVICE_ANNOTATION,
    SOURCE_ANNOTATION,
)

# A cluster's objects in this order (the Istio objects come from the mesh plan:
# meshplan.mesh.identity and meshplan.mesh.render; the monitoring kinds from
# meshplan.observability.render).
KIND_ORDER = (NAMESPACE_KIND, SERVICE_KIND, CLUSTERWIDE_POLICY_KIND, NETWORK_POLICY_KIND,
              PEER_AUTHENTICATION_KIND, AUTHORIZATION_POLICY_KIND, GATEWAY_KIND,
              PROMETHEUS_RULE_KIND, SCRAPE_CONFIG_KIND, CONFIG_MAP_KIND)
SYNC_WAVE = {NAMESPACE_KIND: "-2", SERVICE_KIND: "-1"}

DNS_PEER_LABELS = {K8S_POD_NAMESPACE_LABEL: DNS_NAMESPACE, f"k8s:{DNS_APP_LABEL}": DNS_APP}
DNS_PORTS = ({"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"})


class ClusterRef(NamedTuple):
    domain: str
    name: str

    @property
    def path(self) -> str:
        return f"{self.domain}/{self.name}"


class ObjectKey(NamedTuple):
    cluster: ClusterRef
    kind: str
    namespace: str  # "" for cluster-scoped objects
    name: str


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object for one cluster. ``body`` is never mutated after refinement."""

    key: ObjectKey
    body: Mapping[str, Any]
    required_by: tuple[str, ...]  # requirement keys, sorted
    # The body refinement built once for several objects (a Service's copy, a Namespace), of
    # which ``body`` is ``with_required_by(shared, required_by)``: the writer writes it once,
    # then only each object's required-by value (meshplan.render). None for any other object.
    shared: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ClusterPlan:
    cluster: ClusterRef
    mesh_name: str
    objects: tuple[Manifest, ...]  # in output order


@dataclass(frozen=True)
class Plan:
    clusters: tuple[ClusterPlan, ...]
    diagnostics: tuple[Diagnostic, ...]


# The annotations of the Service meshplan emits as (cluster, namespace, name), for the clusters
# an incremental render does not refine again ({} if none; None: refined in this run).
SettledCopies = Callable[[ClusterRef, str, str], Mapping[str, Any] | None]


def refine(inventory: Inventory, settled: SettledCopies | None = None, *,
           empty_clusters: bool = True) -> Plan:
    """The whole refinement: every requirement, every cluster in its scope.

    ``settled`` (incremental render, :mod:`meshplan.incremental`): the inventory holds only the
    requirements whose objects or warnings may change; the Service copies of the clusters it
    does not refine again come from the previous render instead of from this run's (partial)
    objects. Only the load-balancing check reads other clusters' objects.

    ``empty_clusters=False``: only the clusters that get an object have a plan (the objects of
    a few requirements among a thousand clusters: an incremental render refines each changed
    requirement file alone, before and after, and a plan of every cluster was most of that).
    """
    return _collected(inventory, settled).finish(empty_clusters)


def refines_cleanly(inventory: Inventory) -> bool:
    """Whether :func:`refine` reports no error for ``inventory``, without putting its objects
    together into cluster plans (for a command that needs the inventory, not the plan:
    ``meshplan verify``). Every error of a refinement is found while its objects are collected;
    :meth:`_PlanBuilder.finish` adds only the load-balancing warnings.

    First without building any object (:func:`_proven_clean`); only when that cannot rule an
    error out are the objects collected."""
    return _proven_clean(inventory) or not has_errors(_collected(inventory, None).diagnostics)


def _proven_clean(inventory: Inventory) -> bool:
    """True only when collecting refinement's objects would report no error (False: it may).

    Refinement reports an error in four places, all of them while it puts a generated object:
    two different bodies for one object key (:meth:`_PlanBuilder._put`), a mirror or an
    ExternalName Service taking an inventory Service's place
    (:meth:`_PlanBuilder._clashes_with_inventory`), an ExternalName target longer than DNS
    allows, and two services claiming one global namespace/name
    (:meth:`_PlanBuilder._claim_global_name`). This walks the same requirements, clusters and
    egress peers as :func:`_collected` and stands for each body by what it is built (and
    memoized) from, so equal tokens mean the very same body; any two tokens for one key, any
    policy key seen twice (its bodies are compared: the full collection decides) and any of
    the other three cases answer False. Namespaces have one body per name, policies' rule
    bodies and ingress peers put no other object: neither can clash.
    """
    tokens: dict[tuple[ClusterRef, str, str], tuple[Any, ...]] = {}
    policies: set[tuple[ClusterRef, str, str, str]] = set()
    owners: dict[tuple[str, str], Service] = {}  # global namespace/name -> its service
    targets: set[tuple[int, tuple[str, ...]]] = set()  # peer targets whose copies are put
    names_ok: set[tuple[int, str, str]] = set()  # ExternalName targets found valid

    def put(key: tuple[ClusterRef, str, str], token: tuple[Any, ...]) -> bool:
        known = tokens.setdefault(key, token)
        return known is token or known == token

    def claim(service: Service) -> bool:
        owner = owners.setdefault((service.namespace, service.name), service)
        return owner is service or owner.key == service.key

    for req in inventory.requirements:
        if req.egress is None and req.ingress is None:
            continue
        clusters = inventory.requirement_scope(req)
        if not clusters:
            continue
        namespace = inventory.policy_namespace(req)
        kind = CLUSTERWIDE_POLICY_KIND if namespace is None else NETWORK_POLICY_KIND
        calls = [target for rule in req.egress or () if not rule.has_cidrs
                 for peer in rule.endpoints if peer.is_abstract
                 for target in inventory.resolve_peer(peer.selector, req.domain,
                                                      direction="egress")]
        for cluster in clusters:
            here = ClusterRef(cluster.domain, cluster.name)
            policy = (here, kind, namespace or "", req.name)
            if policy in policies:
                return False
            policies.add(policy)
            for target in calls:
                service = target.service
                ns, name = service.namespace, service.name
                refs = target.clusters
                inside = service.domain == cluster.domain and cluster.name in refs
                if not inside or len(refs) > 1:  # a remote cluster: Service copies
                    memo = (id(service), refs)
                    if memo not in targets:
                        for c in refs:
                            if not put((ClusterRef(service.domain, c), ns, name),
                                       (id(service), False)):
                                return False
                        if not claim(service):
                            return False
                        targets.add(memo)
                    if not inside:
                        mirror = not (service.domain == cluster.domain and
                                      cluster.name in service.clusters)
                        if mirror and _inventory_service_at(inventory, here, ns, name):
                            return False
                        if not put((here, ns, name), (id(service), mirror)):
                            return False
                if namespace is not None and namespace != ns:
                    if _inventory_service_at(inventory, here, namespace, name):
                        return False
                    valid = (id(service), namespace, cluster.cluster_domain)
                    if valid not in names_ok:
                        if not valid_external_name(f"{name}.{ns}.svc.{cluster.cluster_domain}"):
                            return False
                        names_ok.add(valid)
                    if not put((here, namespace, name),
                               (id(service), namespace, cluster.cluster_domain)):
                        return False
    return True


def _collected(inventory: Inventory, settled: SettledCopies | None) -> _PlanBuilder:
    """A builder holding every requirement's objects (in each cluster of its scope)."""
    builder = _PlanBuilder(inventory, settled)
    for requirement in inventory.requirements:
        if requirement.egress is None and requirement.ingress is None:
            continue  # restricts nothing (the checker warns); such a policy is not even valid
        clusters = inventory.requirement_scope(requirement)
        if clusters:
            builder.add_requirement(requirement, clusters)
    return builder


# --------------------------------------------------------------------------- selectors


def selector_body(selector: Selector) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if selector.match_labels or not selector.match_expressions:
        body["matchLabels"] = dict(selector.match_labels)
    if selector.match_expressions:
        body["matchExpressions"] = [
            {"key": e.key, "operator": e.operator, **({"values": list(e.values)} if e.values
                                                       else {})}
            for e in selector.match_expressions
        ]
    return body


def service_peer_selector(inventory: Inventory, target: PeerTarget) -> dict[str, Any]:
    """Pod labels of the service + explicit namespace + explicit cluster(s) (mesh names)."""
    service = target.service
    meshes = sorted(inventory.cluster(service.domain, c).mesh_name for c in target.clusters)
    labels = {**dict(service.selector), K8S_POD_NAMESPACE_LABEL: service.namespace}
    if len(meshes) == 1:
        return {"matchLabels": {**labels, CILIUM_CLUSTER_LABEL: meshes[0]}}
    return {
        "matchLabels": labels,
        "matchExpressions": [{"key": CILIUM_CLUSTER_LABEL, "operator": "In", "values": meshes}],
    }


def raw_peer_selector(peer: Peer, namespace: str | None, local_mesh: str) -> dict[str, Any]:
    """A raw pod-label peer with the namespace and the (local) cluster made explicit.

    The namespace is what Cilium itself would pin (``getEndpointSelector``): the policy's,
    unless the peer names a namespace (any spelling, labels or expressions) or selects by
    namespace labels (``io.cilium.k8s.namespace.labels.*``: pods of every namespace so
    labelled); a cluster-wide policy pins none.
    """
    body = selector_body(peer.selector)
    labels = body.setdefault("matchLabels", {})
    if namespace is not None and peer_pins_namespace(peer.selector):
        labels[K8S_POD_NAMESPACE_LABEL] = namespace
    labels[CILIUM_CLUSTER_LABEL] = local_mesh
    return body


def peer_pins_namespace(selector: Selector) -> bool:
    """Whether Cilium confines a namespaced policy's peer to the policy's namespace."""
    keys = [bare_key(k) for k, _ in selector.match_labels]
    keys += [bare_key(e.key) for e in selector.match_expressions]
    return not any(k is not None and (k == POD_NAMESPACE_LABEL or
                                      k.startswith(NAMESPACE_LABELS_PREFIX)) for k in keys)


def ports_body(ports: Iterable[tuple[str, str | None]]) -> list[dict[str, Any]]:
    """``toPorts``: Cilium rejects a whole policy with more than 40 ports in one entry, so
    longer lists are split (entries of one rule are alternatives: same meaning)."""
    entries = [{"port": port, **({"protocol": proto} if proto else {})} for port, proto in ports]
    step = MAX_PORTS_PER_PORT_RULE
    return [{"ports": entries[i:i + step]} for i in range(0, len(entries), step)] or \
        [{"ports": entries}]


def service_ports(service: Service) -> list[tuple[str, str | None]]:
    return [(str(p.port), p.protocol) for p in service.ports]


def rule_ports(ports: tuple[PortRule, ...]) -> list[tuple[str, str | None]]:
    return [(p.port, p.protocol) for p in ports]


# --------------------------------------------------------------------------- builder
#
# Sharing invariant: no dict or list built here is mutated once built. Refinement shares them
# between objects and clusters: one Namespace body per name, one Service body per service (and
# mirror flag), one ExternalName body per service, namespace and cluster domain, one selector
# and ports list per service, and a requirement's cluster-independent rule bodies across all
# its clusters. So a repeated object costs little more than its key and its required-by
# annotation, repeated puts compare bodies by identity, and the YAML writer may cache the text
# of a shared part by identity. Nothing downstream may mutate a Manifest body.

_LABELS: dict[str, str] = dict(MANAGED_BY)  # the labels of every generated object (shared)
KIND_RANK = {kind: rank for rank, kind in enumerate(KIND_ORDER)}  # output_order's first key
_DNS_TO_PORTS = [{"ports": list(DNS_PORTS)}]


@dataclass(slots=True)
class _Pending:
    body: dict[str, Any]
    causes: set[str]
    source: Location | None  # where the first cause was written (for clash messages)
    origin: str  # what produced the body (for clash messages)


class _Connection(NamedTuple):
    """An abstract peer expanded to one service: a cluster-independent rule body, and the
    clusters the flow reaches (for the Services and Namespaces that make it work)."""

    body: dict[str, Any]
    peer: Peer
    target: PeerTarget
    refs: tuple[ClusterRef, ...]  # the clusters the target runs in
    direction: str


class _RawPeer(NamedTuple):
    """A pod-label peer: its selector names the local cluster, so it is built per cluster."""

    peer: Peer
    to_ports: list[dict[str, Any]] | None


# An object's key while refinement collects objects (ObjectKey's fields, as a plain tuple).
_Key = tuple[ClusterRef, str, str, str]

# A rule body as it goes into every cluster's policy, or the recipe for one.
_RuleItem = dict[str, Any] | _Connection | _RawPeer


@dataclass(frozen=True, slots=True)
class _Prepared:
    """Everything about a requirement's policy that does not depend on the cluster."""

    requirement: Requirement
    key: str  # requirement.key (a property that formats a string each time)
    namespace: str | None
    kind: str
    metadata: dict[str, Any]
    spec_head: dict[str, Any]  # description, endpointSelector, enableDefaultDeny
    egress: tuple[_RuleItem, ...] | None
    ingress: tuple[_RuleItem, ...] | None
    origin: str
    subject: Hashable  # whose pods the policy selects (the same for the same pods)


class _PlanBuilder:
    def __init__(self, inventory: Inventory, settled: SettledCopies | None = None) -> None:
        self.inventory = inventory
        self.settled = settled
        # Keyed by plain (cluster, kind, namespace, name) tuples, equal to the ObjectKey they
        # become in finish (a NamedTuple is slower to make, and most puts repeat a key)
        self.objects: dict[_Key, _Pending] = {}
        self.diagnostics: list[Diagnostic] = []
        # (namespace, name) -> (owner's key, owner's location, owner)
        self.global_services: dict[tuple[str, str], tuple[str, Location, Service]] = {}
        # Memoized bodies and parts, keyed by what they are built from (see the sharing
        # invariant). Services are keyed by id(): the inventory keeps them alive meanwhile.
        self._namespace_bodies: dict[str, dict[str, Any]] = {}
        self._service_bodies: dict[tuple[int, bool], tuple[dict[str, Any], str]] = {}
        self._external_bodies: dict[tuple[int, str, str], tuple[dict[str, Any], str]] = {}
        self._port_lists: dict[int, list[dict[str, Any]]] = {}
        self._to_ports: dict[int, list[dict[str, Any]] | None] = {}
        self._peer_selectors: dict[tuple[int, tuple[str, ...]], dict[str, Any]] = {}
        self._dns_rules: dict[str, dict[str, Any]] = {}
        # (connection, client cluster, whose pods call) of every egress flow to a service,
        # for the load-balancing check once every Service is known.
        self._calls: list[tuple[_Connection, ClusterRef, Hashable]] = []
        self._keys = _Keys()
        self._backends: dict[tuple[int, ClusterRef], tuple[str, ...]] = {}
        # Istio members on several networks reach each other through east-west gateways.
        networks = {c.istio.network for d in inventory.domains for c in d.clusters
                    if inventory.is_istio_member(c) and c.istio and c.istio.network}
        self._multi_network = len(networks) > 1
        self._routed: dict[tuple[int, str], tuple[_Connection, list[dict[str, Any]]]] = {}
        self._gateway_egress: dict[str, dict[str, Any]] = {}

    # -- requirements -------------------------------------------------------------------

    def add_requirement(self, requirement: Requirement, clusters: Iterable[Cluster]) -> None:
        """The requirement's policy (and what its peers need) in each of ``clusters``."""
        prepared = self._prepare(requirement)
        for cluster in clusters:
            self._add_policy(prepared, cluster)

    def _prepare(self, req: Requirement) -> _Prepared:
        namespace = self.inventory.policy_namespace(req)
        spec_head: dict[str, Any] = {}
        if req.description:
            spec_head["description"] = req.description
        spec_head["endpointSelector"] = self._endpoint_selector(req, namespace)
        # Default deny is written out for each direction the requirement restricts: Cilium's
        # own default depends on whether the rule list is empty, and a direction whose peers
        # all matched nothing must still deny (fail closed) rather than fall open.
        spec_head["enableDefaultDeny"] = {"egress": req.egress is not None,
                                          "ingress": req.ingress is not None}
        protected = self.inventory.service_selected_by(req)
        egress = ingress = None
        if req.egress is not None:
            egress = tuple(item for rule in req.egress for item in self._rule_items(
                req, rule, namespace, "toEndpoints", "toCIDRSet", None))
        if req.ingress is not None:
            ingress = tuple(item for rule in req.ingress for item in self._rule_items(
                req, rule, namespace, "fromEndpoints", "fromCIDRSet", protected))
        kind = CLUSTERWIDE_POLICY_KIND if namespace is None else NETWORK_POLICY_KIND
        metadata: dict[str, Any] = {"name": req.name}
        if namespace is not None:
            metadata["namespace"] = namespace
        metadata["labels"] = {**dict(req.labels), **MANAGED_BY}
        metadata["annotations"] = {**dict(req.annotations), SOURCE_ANNOTATION: req.file}
        key = req.key
        subject = (namespace, self._keys.of(spec_head["endpointSelector"]))
        return _Prepared(req, key, namespace, kind, metadata, spec_head, egress, ingress,
                         f"requirement {key}", subject)

    def _add_policy(self, prep: _Prepared, cluster: Cluster) -> None:
        here = ClusterRef(cluster.domain, cluster.name)
        spec = dict(prep.spec_head)
        if prep.egress is not None:
            rules = self._rules(prep, prep.egress, "toEndpoints", cluster, here)
            rules.append(self._dns_rule(cluster.mesh_name))
            spec["egress"] = self._keys.unique(rules)
        if prep.ingress is not None:
            # When no peer matched, one empty rule: it allows nothing, yet it is a rule. Cilium
            # applies default deny per rule (an empty list or no section would leave ingress
            # open) and the CRD requires a section.
            rules = self._rules(prep, prep.ingress, "fromEndpoints", cluster, here)
            spec["ingress"] = self._keys.unique(rules) or [{}]
        req = prep.requirement
        body = {"apiVersion": "cilium.io/v2", "kind": prep.kind, "metadata": prep.metadata,
                "spec": spec}
        self._put((here, prep.kind, prep.namespace or "", req.name), body, prep.key,
                  req.location, prep.origin)

    def _endpoint_selector(self, requirement: Requirement, namespace: str | None) -> dict[str, Any]:
        service = self.inventory.service_selected_by(requirement)
        if service is None:
            return selector_body(requirement.endpoint_selector)
        labels = dict(service.selector)
        if namespace is None:  # cluster-wide: the namespace must be part of the selector
            labels[K8S_POD_NAMESPACE_LABEL] = service.namespace
        return {"matchLabels": labels}

    def _rule_items(
        self,
        req: Requirement,
        rule: Rule,
        namespace: str | None,
        peers_key: str,
        cidrs_key: str,
        protected: Service | None,
    ) -> list[_RuleItem]:
        """One rule's bodies, expanded once per requirement (peer resolution included)."""
        explicit_ports = rule_ports(rule.ports) if rule.ports is not None else None
        # toPorts of CIDR and raw peers: the explicit ports, else on ingress the ports of the
        # service the policy protects.
        explicit_body = ports_body(explicit_ports) if explicit_ports else None
        fixed_ports = explicit_body
        if fixed_ports is None and protected is not None and rule.direction == "ingress":
            fixed_ports = ports_body(service_ports(protected))
        if rule.has_cidrs:
            cidrs = [{"cidr": c.cidr, **({"except": list(c.excepts)} if c.excepts else {})}
                     for c in rule.cidrs]
            body: dict[str, Any] = {cidrs_key: cidrs}
            if fixed_ports is not None:
                body["toPorts"] = fixed_ports
            return [body]
        items: list[_RuleItem] = []
        for peer in rule.endpoints:
            if not peer.is_abstract:
                items.append(_RawPeer(peer, fixed_ports))
                continue
            for target in self.inventory.resolve_peer(peer.selector, req.domain,
                                                      direction=rule.direction):
                # Explicit ports win (even none); else egress goes to the target's ports and
                # ingress comes to the protected service's ports.
                to_ports: list[dict[str, Any]] | None = None
                if explicit_ports is not None:
                    to_ports = explicit_body
                elif rule.direction == "egress":
                    to_ports = self._service_to_ports(target.service)
                elif protected is not None:
                    to_ports = self._service_to_ports(protected)
                body = {peers_key: [self._peer_selector(target)]}
                if to_ports is not None:
                    body["toPorts"] = to_ports
                refs = tuple(ClusterRef(target.service.domain, c) for c in target.clusters)
                items.append(_Connection(body, peer, target, refs, rule.direction))
        return items

    def _rules(self, prep: _Prepared, items: tuple[_RuleItem, ...], peers_key: str,
               cluster: Cluster, here: ClusterRef) -> list[dict[str, Any]]:
        """One direction's rule bodies in ``cluster``, connecting each service peer."""
        rules: list[dict[str, Any]] = []
        for item in items:
            if type(item) is _Connection:
                if self._multi_network and cluster.istio is not None:
                    rules.extend(self._routed_rules(item, cluster))
                else:
                    rules.append(item.body)
                self._connect(prep, item, cluster, here)
            elif type(item) is _RawPeer:
                selector = raw_peer_selector(item.peer, prep.namespace, cluster.mesh_name)
                body = {peers_key: [selector]}
                if item.to_ports is not None:
                    body["toPorts"] = item.to_ports
                rules.append(body)
            else:
                assert isinstance(item, dict)
                rules.append(item)
        return rules

    def _routed_rules(self, item: _Connection, cluster: Cluster) -> list[dict[str, Any]]:
        """A service peer's rules in ``cluster`` when Istio routes some of the peer's clusters
        through east-west gateways (they are on another network), where Cilium sees the
        gateway hop instead of the peer: a client's egress goes to the remote gateway's
        address on 15443 (only TCP crosses it), a server's ingress comes from the local
        gateway's pods on the same ports. The peer's clusters on the local network keep the
        pod selector. Memoized per peer and cluster (the local gateway is the cluster's own).
        """
        memo = (id(item), cluster.mesh_name)
        known = self._routed.get(memo)
        if known is not None and known[0] is item:
            return known[1]
        target = item.target
        domain = self.inventory.domain_by_name[target.service.domain]
        routed = [c for c in target.clusters
                  if self.inventory.istio_gateway_route(cluster, domain.cluster_by_name[c])]
        found: list[dict[str, Any]]
        if not routed:
            found = [item.body]
        else:
            direct = tuple(c for c in target.clusters if c not in routed)
            to_ports = item.body.get("toPorts")
            found = []
            if direct:
                body = {k: v for k, v in item.body.items() if k == "toPorts"}
                peers_key = "toEndpoints" if item.direction == "egress" else "fromEndpoints"
                found.append({peers_key: [self._peer_selector(PeerTarget(target.service,
                                                                          direct))], **body})
            if item.direction == "egress":
                if carries_tcp(to_ports):
                    for name in routed:
                        address = domain.cluster_by_name[name].istio
                        if address is not None and address.gateway_address is not None:
                            found.append(self._gateway_egress_rule(address.gateway_address))
            else:
                gateway = {"matchLabels": {**EASTWEST_GATEWAY_LABELS,
                                           K8S_POD_NAMESPACE_LABEL: ISTIO_NAMESPACE,
                                           CILIUM_CLUSTER_LABEL: cluster.mesh_name}}
                body = {"fromEndpoints": [gateway]}
                if to_ports is not None:
                    body["toPorts"] = to_ports
                found.append(body)
        self._routed[memo] = (item, found)  # the item is kept: its id stays its own
        return found

    def _gateway_egress_rule(self, address: str) -> dict[str, Any]:
        rule = self._gateway_egress.get(address)
        if rule is None:
            rule = self._gateway_egress[address] = {
                "toCIDRSet": [{"cidr": host_cidr(address)}],
                "toPorts": [{"ports": [{"port": str(CROSS_NETWORK_PORT), "protocol": "TCP"}]}]}
        return rule

    def _dns_rule(self, mesh_name: str) -> dict[str, Any]:
        rule = self._dns_rules.get(mesh_name)
        if rule is None:
            dns_peer = {"matchLabels": {**DNS_PEER_LABELS, CILIUM_CLUSTER_LABEL: mesh_name}}
            rule = self._dns_rules[mesh_name] = {"toEndpoints": [dns_peer],
                                                 "toPorts": _DNS_TO_PORTS}
        return rule

    def _peer_selector(self, target: PeerTarget) -> dict[str, Any]:
        key = (id(target.service), target.clusters)
        selector = self._peer_selectors.get(key)
        if selector is None:
            selector = self._peer_selectors[key] = service_peer_selector(self.inventory, target)
        return selector

    def _service_to_ports(self, service: Service) -> list[dict[str, Any]] | None:
        """``toPorts`` for a service's ports; None when it has none (no section written)."""
        key = id(service)
        if key not in self._to_ports:
            ports = service_ports(service)
            self._to_ports[key] = ports_body(ports) if ports else None
        return self._to_ports[key]

    # -- service-to-service -------------------------------------------------------------

    def _connect(self, prep: _Prepared, item: _Connection, cluster: Cluster,
                 here: ClusterRef) -> None:
        """Objects that make the flow between ``cluster`` and the peer's service work."""
        service = item.target.service
        cause, peer, namespace = prep.key, item.peer, prep.namespace
        remote = [ref for ref in item.refs if ref != here]
        if remote:
            # Nothing goes into another domain's clusters without its consent: an ingress peer
            # may name any domain's services (it only opens our own pods to them), but their
            # namespaces are made global only where that domain exported the service to us.
            if service.exported_to(prep.requirement.domain):
                for ref in remote:
                    self._namespace(ref, service.namespace, cause, peer)
            if namespace is not None:
                self._namespace(here, namespace, cause, peer)
        if item.direction != "egress":
            return
        self._calls.append((item, here, prep.subject))
        if remote:
            runs_here = service.domain == cluster.domain and cluster.name in service.clusters
            for ref in remote:
                self._service(ref, service, cause, peer, mirror=False)
            self._service(here, service, cause, peer, mirror=not runs_here)
            self._namespace(here, service.namespace, cause, peer)
        if namespace is not None and namespace != service.namespace:
            self._external_name(here, cluster, namespace, service, cause, peer)

    def _service(
        self, ref: ClusterRef, service: Service, cause: str, peer: Peer, *, mirror: bool
    ) -> None:
        if mirror and self._clashes_with_inventory(ref, service.namespace, service, peer,
                                                   "the mirror of"):
            return
        memo_key = (id(service), mirror)
        memo = self._service_bodies.get(memo_key)
        if memo is None:
            memo = self._service_bodies[memo_key] = (self._service_body(service, mirror),
                                                     f"{'mirror of' if mirror else 'global'} "
                                                     f"service {service.key}")
        body, origin = memo
        self._put((ref, SERVICE_KIND, service.namespace, service.name), body, cause,
                  peer.location, origin)
        self._claim_global_name(service, peer.location)

    def _service_body(self, service: Service, mirror: bool) -> dict[str, Any]:
        annotations = {GLOBAL_SERVICE_ANNOTATION: "true",
                       SHARED_SERVICE_ANNOTATION: "false" if mirror else "true",
                       ARGOCD_SYNC_WAVE_ANNOTATION: SYNC_WAVE[SERVICE_KIND]}
        return {
            "apiVersion": "v1",
            "kind": SERVICE_KIND,
            "metadata": {"name": service.name, "namespace": service.namespace,
                         "labels": _LABELS, "annotations": annotations},
            "spec": {
                "type": "ClusterIP",
                "selector": dict(service.selector),
                "ports": self._port_list(service),
            },
        }

    def _port_list(self, service: Service) -> list[dict[str, Any]]:
        """A Service's ``spec.ports`` (shared by its global, mirror and ExternalName bodies)."""
        ports = self._port_lists.get(id(service))
        if ports is None:
            ports = self._port_lists[id(service)] = [
                _service_port(p.port, p.protocol, p.name) for p in service.ports]
        return ports

    def _claim_global_name(self, service: Service, where: Location) -> None:
        """Cilium merges global Services by namespace/name across the whole mesh."""
        key = (service.namespace, service.name)
        owner = self.global_services.get(key)
        if owner is None:
            self.global_services[key] = (service.key, service.location, service)
            return
        if owner[2] is service or owner[0] == service.key:
            return
        self.diagnostics.append(error(
            where, "", f"expected one inventory service per global namespace/name, found "
            f"{service.key} ({_at(service.location)}) and {owner[0]} ({_at(owner[1])}) both "
            f"becoming the global Service {key[0]}/{key[1]}: Cilium would merge their "
            "backends; rename one of them"))

    def _external_name(
        self, ref: ClusterRef, cluster: Cluster, namespace: str, service: Service,
        cause: str, peer: Peer,
    ) -> None:
        if self._clashes_with_inventory(ref, namespace, service, peer,
                                        "the ExternalName Service for"):
            return
        memo_key = (id(service), namespace, cluster.cluster_domain)
        memo = self._external_bodies.get(memo_key)
        if memo is None:
            target = f"{service.name}.{service.namespace}.svc.{cluster.cluster_domain}"
            if not valid_external_name(target):
                self.diagnostics.append(error(
                    peer.location, "", f"expected the ExternalName Service {namespace}/"
                    f"{service.name} of {ref.path} to point at a DNS name of at most 253 "
                    f"characters, found '{target}' ({len(target)}): shorten the service, its "
                    f"namespace or the cluster's clusterDomain ({_at(cluster.location)})"))
                return
            body = {
                "apiVersion": "v1",
                "kind": SERVICE_KIND,
                "metadata": {"name": service.name, "namespace": namespace,
                             "labels": _LABELS,
                             "annotations": {ARGOCD_SYNC_WAVE_ANNOTATION: SYNC_WAVE[SERVICE_KIND]}},
                "spec": {
                    "type": "ExternalName",
                    "externalName": target,
                    "ports": self._port_list(service),
                },
            }
            memo = self._external_bodies[memo_key] = (body, f"ExternalName for {service.key}")
        body, origin = memo
        self._put((ref, SERVICE_KIND, namespace, service.name), body, cause,
                  peer.location, origin)

    def _clashes_with_inventory(
        self, ref: ClusterRef, namespace: str, service: Service, peer: Peer, what: str
    ) -> bool:
        """Report (and say so) when a generated Service would take an inventory Service's name.

        ``what`` names the generated Service; the service's key is appended to it.
        """
        clash = self._inventory_service_at(ref, namespace, service.name)
        if clash is None:
            return False
        self.diagnostics.append(error(
            peer.location, "", f"expected no Service '{service.name}' in namespace "
            f"'{namespace}' of {ref.path}, found inventory service {clash.key} "
            f"({_at(clash.location)}) where {what} {service.key} ({_at(service.location)}) "
            "would go"))
        return True

    def _inventory_service_at(self, ref: ClusterRef, namespace: str, name: str) -> Service | None:
        return _inventory_service_at(self.inventory, ref, namespace, name)

    def _namespace(self, ref: ClusterRef, name: str, cause: str, peer: Peer) -> None:
        body = self._namespace_bodies.get(name)
        if body is None:
            body = self._namespace_bodies[name] = {
                "apiVersion": "v1",
                "kind": NAMESPACE_KIND,
                "metadata": {
                    "name": name,
                    "labels": _LABELS,
                    "annotations": {
                        GLOBAL_NAMESPACE_ANNOTATION: "true",
                        ARGOCD_SYNC_OPTIONS_ANNOTATION: "Prune=false",
                        ARGOCD_SYNC_WAVE_ANNOTATION: SYNC_WAVE[NAMESPACE_KIND],
                        FLUX_PRUNE_ANNOTATION: "disabled",
                    },
                },
            }
        self._put((ref, NAMESPACE_KIND, "", name), body, cause, peer.location,
                  "namespace")

    # -- collection ---------------------------------------------------------------------

    def _put(self, at: _Key, body: dict[str, Any], cause: str, where: Location,
             origin: str) -> None:
        pending = self.objects.get(at)
        if pending is None:
            self.objects[at] = _Pending(body, {cause}, where, origin)
            return
        # Memoized bodies make the common repeat an identity check, not a deep comparison.
        if pending.body is not body and pending.body != body:
            key = _object_key(at)
            self.diagnostics.append(error(
                where, "", f"expected one definition of {key.kind} {key.namespace}/{key.name} "
                f"in {key.cluster.path}, found two that differ: {origin} and {pending.origin} "
                f"({_at(pending.source)})"))
            return
        pending.causes.add(cause)

    # -- load balancing -----------------------------------------------------------------

    def _backend_clusters(self, service: Service, client: ClusterRef) -> tuple[str, ...]:
        """The clusters whose pods of ``service`` a client in ``client`` is load-balanced to.

        Cilium merges a global Service's backends from every cluster whose copy is global and
        shared (the default), and a cluster's clients use them only if their own copy is
        global; local backends are always used. Affinity annotations are preferences with
        fail-over, never restrictions (clustermesh/services.rst, affinity.rst).
        """
        memo = (id(service), client)
        found = self._backends.get(memo)
        if found is not None:
            return found
        local = client.domain == service.domain and client.name in service.clusters
        if not _is_global(self._service_copy(client, service)):
            found = (client.name,) if local else ()
        else:
            found = tuple(c for c in service.clusters if (local and c == client.name) or _shares(
                self._service_copy(ClusterRef(service.domain, c), service)))
        self._backends[memo] = found
        return found

    def _service_copy(self, ref: ClusterRef, service: Service) -> Mapping[str, Any]:
        """The annotations of the Service meshplan emits for ``service`` in ``ref`` ({} if none)."""
        if self.settled is not None:
            known = self.settled(ref, service.namespace, service.name)
            if known is not None:
                return known
        pending = self.objects.get((ref, SERVICE_KIND, service.namespace, service.name))
        return pending.body["metadata"]["annotations"] if pending is not None else {}

    def _load_balancing_warnings(self) -> None:
        """Warn where a client's peers admit only some of the clusters its copy of a global
        Service load-balances to. Every requirement selecting the same pods (same namespace
        and selector) counts: Cilium unions their allows."""
        calls, self._calls = self._calls, []  # consumed here (a fleet has many)
        admitted: dict[tuple[ClusterRef, Hashable, int], set[str]] = {}
        for item, client, subject in calls:
            group = (client, subject, id(item.target.service))
            found = admitted.get(group)
            if found is None:
                admitted[group] = set(item.target.clusters)
            else:
                found.update(item.target.clusters)
        seen: set[tuple[Location, int, ClusterRef]] = set()
        # One warning per message that differs only in the client cluster, naming them all.
        grouped: dict[tuple[Location, str, str], list[str]] = {}
        for item, client, subject in calls:
            service = item.target.service
            if len(item.target.clusters) == len(service.clusters):
                continue  # every cluster of the service admitted: nothing can be lost
            backends = self._backend_clusters(service, client)
            allowed = admitted[(client, subject, id(service))]
            if all(c in allowed for c in backends):
                continue
            once = (item.peer.location, id(service), client)
            if once in seen:
                continue
            seen.add(once)
            lost = [c for c in backends if c not in allowed]
            template = _load_balancing_message(
                service, client.name, backends, sorted(allowed), lost,
                local=client.domain == service.domain and client.name in service.clusters)
            grouped.setdefault((item.peer.location, item.peer.path, template), []).append(
                client.name)
        for (location, path, template), clients in grouped.items():
            self.diagnostics.append(warning(location, path, template.replace(
                _CLIENTS, _names(sorted(set(clients))))))

    def finish(self, empty_clusters: bool = True) -> Plan:
        self._keys = _Keys()  # every policy is complete: free the keys (and what they hold)
        self._load_balancing_warnings()
        # cluster -> kind -> its manifests (sorted below by kind, then by key)
        by_cluster: dict[ClusterRef, dict[str, list[Manifest]]] = {}
        objects, self.objects = self.objects, {}
        uses = Counter(id(pending.body) for pending in objects.values())
        # (id(shared body), causes) -> the final body: objects of one shared body with the same
        # causes (a Namespace or a Service copy required by the same requirements in several
        # clusters) share it too (never mutated; each Manifest holds its shared body, so the
        # body keeps its id meanwhile)
        finished: dict[tuple[int, tuple[str, ...]], dict[str, Any]] = {}
        while objects:  # popping frees each pending record as soon as its Manifest exists
            at, pending = objects.popitem()
            key = _object_key(at)
            causes = (tuple(pending.causes) if len(pending.causes) == 1
                      else tuple(sorted(pending.causes)))
            shared: dict[str, Any] | None = pending.body
            if uses[id(shared)] > 1:
                memo = (id(shared), causes)
                body = finished.get(memo)
                if body is None:
                    body = finished[memo] = with_required_by(pending.body, causes)
            else:
                shared = None
                body = with_required_by(pending.body, causes)
            kinds = by_cluster.get(key.cluster)
            if kinds is None:
                kinds = by_cluster[key.cluster] = {}
            same = kinds.get(key.kind)
            if same is None:
                same = kinds[key.kind] = []
            same.append(_manifest(key, body, causes, shared))
        plans = []
        for ref, cluster in (_every_cluster(self.inventory) if empty_clusters
                             else _clusters_of(self.inventory, by_cluster)):
            # output_order: by kind, then namespace and name (the rest of a key within one
            # cluster and kind). Keys are unique within a cluster, so this order does not
            # depend on the order objects were collected in.
            manifests: list[Manifest] = []
            kinds = by_cluster.get(ref)
            if kinds is not None:
                for kind in sorted(kinds, key=KIND_RANK.__getitem__):
                    manifests.extend(sorted(kinds[kind], key=_BY_KEY))
            plans.append(ClusterPlan(ref, cluster.mesh_name, tuple(manifests)))
        plans.sort(key=lambda p: p.cluster)
        return Plan(tuple(plans), tuple(self.diagnostics))


def _every_cluster(inventory: Inventory) -> Iterator[tuple[ClusterRef, Cluster]]:
    for domain in inventory.domains:
        for cluster in domain.clusters:
            yield ClusterRef(domain.name, cluster.name), cluster


def _clusters_of(inventory: Inventory, refs: Iterable[ClusterRef]
                 ) -> Iterator[tuple[ClusterRef, Cluster]]:
    """The clusters of ``refs`` the inventory has (as :func:`_every_cluster` gives them)."""
    for ref in refs:
        domain = inventory.domain_by_name.get(ref.domain)
        cluster = domain.cluster_by_name.get(ref.name) if domain is not None else None
        if cluster is not None:
            yield ref, cluster


def _inventory_service_at(inventory: Inventory, ref: ClusterRef, namespace: str, name: str
                          ) -> Service | None:
    """The inventory Service named ``namespace/name`` in cluster ``ref``, if any. Only the
    cluster's own domain is looked in: an incremental render reads of a domain only the
    services its requirements can look up, this one among them
    (:func:`meshplan.incremental.services_read`); looking wider needs that widened too."""
    domain = inventory.domain_by_name[ref.domain]
    found = domain.service_by_name.get(name)
    if found and found.namespace == namespace and ref.name in found.clusters:
        return found
    return None


def carries_tcp(to_ports: Sequence[Mapping[str, Any]] | None) -> bool:
    """Whether a rule's ``toPorts`` (None: every port) admit TCP: only TCP crosses Istio's
    east-west gateways (Istio's sidecars carry TCP; UDP and SCTP bypass them)."""
    if to_ports is None:
        return True
    return any(entry.get("protocol") in (None, "ANY", "TCP")
               for rule in to_ports for entry in rule.get("ports") or [{}])


def host_cidr(address: str) -> str:
    """The one-address CIDR of an IP (``198.51.100.7/32``, ``2001:db8::7/128``)."""
    return f"{address}/{128 if ':' in address else 32}"


def _is_global(annotations: Mapping[str, Any]) -> bool:
    """A copy of a Service takes the other clusters' backends (as Cilium reads it, as verify
    does: :func:`~meshplan.admission.cilium_service_flags`)."""
    return cilium_service_flags(annotations)[0]


def _shares(annotations: Mapping[str, Any]) -> bool:
    """A copy of a Service contributes its backends to other clusters (global and shared)."""
    return cilium_service_flags(annotations)[1]


_CLIENTS = "\0"  # where a load-balancing message names its client cluster(s)


def _names(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``: every name, in the order given."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _load_balancing_message(service: Service, client: str, backends: Sequence[str],
                            admitted: Sequence[str], lost: Sequence[str], *,
                            local: bool) -> str:
    """The warning for clients in ``client``, with ``_CLIENTS`` where it names them: the
    messages of clients that differ in nothing else become one, naming them all."""
    fixes = [f"admit {', '.join(lost)} too (or drop cluster: from the peer)"]
    if local and client not in admitted:
        fixes.append(f"set {AFFINITY_ANNOTATION}: remote on {service.name} in {_CLIENTS}")
    elif local and list(admitted) == [client]:
        fixes.append(f"set {AFFINITY_ANNOTATION}: local on {service.name} in {_CLIENTS}")
    remote_lost = [c for c in lost if c != client]
    if remote_lost:
        fixes.append(f"stop {', '.join(remote_lost)} sharing its backends "
                     f'({SHARED_SERVICE_ANNOTATION}: "false", which affects every caller)')
    return (f"expected the clusters the peers of these pods admit ({', '.join(admitted)}) to "
            "cover every "
            f"backend of the global Service {service.namespace}/{service.name} that clients in "
            f"{_CLIENTS} are load-balanced to ({', '.join(backends)}), found "
            f"{', '.join(lost)} not admitted: those connections will be dropped, at random. "
            f"Fix: {'; or '.join(fixes)} (affinity is a preference with fail-over, not a "
            "guarantee)")


def _service_port(port: int, protocol: str, name: str | None) -> dict[str, Any]:
    # No targetPort: the inventory does not know container ports, and Kubernetes defaults
    # targetPort to port.
    return {**({"name": name} if name else {}), "port": port, "protocol": protocol}


def with_required_by(body: Mapping[str, Any], causes: tuple[str, ...]) -> dict[str, Any]:
    """The final body: new top-level, metadata and annotations mappings, everything else shared
    with the (memoized) body refinement built."""
    metadata = body["metadata"]
    annotations = {**metadata.get("annotations", {}), REQUIRED_BY_ANNOTATION: ",".join(causes)}
    return {**body, "metadata": {**metadata, "annotations": annotations}}


_BY_KEY = attrgetter("key")
_new_object = object.__new__


def _object_key(at: _Key) -> ObjectKey:
    """``ObjectKey(*at)``, made as NamedTuple's own ``_make`` makes it (one C call)."""
    return tuple.__new__(ObjectKey, at)


def _manifest(key: ObjectKey, body: Mapping[str, Any], required_by: tuple[str, ...],
              shared: Mapping[str, Any] | None) -> Manifest:
    """``Manifest(key, body, required_by, shared)`` without the frozen dataclass's
    ``__init__`` (one ``object.__setattr__`` call per field: a third of a second at a thousand
    clusters). Every field is set (tests/test_refine.py checks the list against the class)."""
    manifest = _new_object(Manifest)
    fields = manifest.__dict__
    fields["key"] = key
    fields["body"] = body
    fields["required_by"] = required_by
    fields["shared"] = shared
    return manifest


def output_order(manifest: Manifest) -> tuple[int, str, str]:
    """The sort key of a cluster's objects: by kind (KIND_ORDER), namespace, name."""
    key = manifest.key
    return (KIND_RANK[key.kind], key.namespace, key.name)


class _Keys:
    """Hashable keys of YAML-shaped bodies, equal for equal data (mappings compare without
    order), so repeated rules are dropped in linear time -- comparing every rule body with
    every earlier one made one requirement with 40,000 rules take minutes.

    Bodies are shared and never mutated (the sharing invariant), so a body's key is computed
    once, at any depth, and remembered by identity; the body itself is kept with its key, so
    its identity cannot be reused by another object meanwhile.
    """

    def __init__(self) -> None:
        self._known: dict[int, tuple[Any, Hashable]] = {}

    def of(self, value: Any) -> Hashable:
        if not isinstance(value, dict | list):
            return (type(value).__name__, value)
        known = self._known.get(id(value))
        if known is not None:
            return known[1]
        key: Hashable
        if isinstance(value, dict):
            key = frozenset((k, self.of(v)) for k, v in value.items())
        else:
            key = tuple(self.of(v) for v in value)
        self._known[id(value)] = (value, key)
        return key

    def unique(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``items`` without repeats (equal bodies), first occurrences in order."""
        if len(items) <= _PAIRWISE_MAX:
            return _unique_pairwise(items)
        seen: set[Hashable] = set()
        out: list[dict[str, Any]] = []
        for item in items:
            key = self.of(item)
            if key not in seen:
                seen.add(key)
                out.append(item)
        return out


# Up to this many rules (nearly every policy) repeats are found by comparing every rule with
# the ones kept: dicts compare in C, faster than building keys for rules not seen before, and
# no key is kept. Rule bodies hold only text (names, labels, ports and CIDRs as strings), for
# which == and _Keys agree.
_PAIRWISE_MAX = 16


def _unique_pairwise(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in items:
        if item not in out:  # identity first, then ==
            out.append(item)
    return out


def _at(location: Location | None) -> str:
    return f"{location.file}:{location.line}" if location else "?"
