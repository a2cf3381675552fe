"""Stage 5 — refine: requirements -> the Kubernetes objects each cluster needs.

For every requirement and every cluster in its scope this produces a Cilium policy whose
abstract peers are expanded into concrete selectors (explicit namespace and cluster labels,
inventory ports), and the Services and Namespaces that let a client reach a remote service by
its short name (thesis 5.5): mirror Services, global Services where the backends run,
ExternalName Services across namespaces, and global, prune-protected Namespaces.

Objects are keyed by (cluster, kind, namespace, name) and merged across requirements; an
object's ``meshplan.dev/required-by`` annotation lists every requirement that caused it, so
removing a requirement removes exactly what only it caused. Two different bodies for the same
key are a clash, reported with both sources.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .diagnostics import Diagnostic, Location, error
from .model import (
    CLUSTER_LABEL,
    NAMESPACE_LABEL,
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

MANAGED_BY = {"app.kubernetes.io/managed-by": "meshplan"}
REQUIRED_BY = "meshplan.dev/required-by"
SOURCE_ANNOTATION = "meshplan.dev/source"
GLOBAL = "service.cilium.io/global"
SHARED = "service.cilium.io/shared"
NAMESPACE_GLOBAL = "clustermesh.cilium.io/global"
ARGO_SYNC_OPTIONS = "argocd.argoproj.io/sync-options"
ARGO_SYNC_WAVE = "argocd.argoproj.io/sync-wave"
FLUX_PRUNE = "kustomize.toolkit.fluxcd.io/prune"
KIND_ORDER = ("Namespace", "Service", "CiliumClusterwideNetworkPolicy", "CiliumNetworkPolicy")
SYNC_WAVE = {"Namespace": "-2", "Service": "-1"}

# The namespace label as a peer may spell it (Cilium's docs often omit the source prefix).
NAMESPACE_KEYS = frozenset({NAMESPACE_LABEL, "io.kubernetes.pod.namespace",
                            "any:io.kubernetes.pod.namespace"})
DNS_PEER_LABELS = {NAMESPACE_LABEL: "kube-system", "k8s:k8s-app": "kube-dns"}
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


@dataclass(frozen=True)
class ClusterPlan:
    cluster: ClusterRef
    mesh_name: str
    objects: tuple[Manifest, ...]  # in output order


@dataclass(frozen=True)
class Plan:
    clusters: tuple[ClusterPlan, ...]
    diagnostics: tuple[Diagnostic, ...]


def refine(inventory: Inventory) -> Plan:
    """The whole refinement: every requirement, every cluster in its scope."""
    builder = _PlanBuilder(inventory)
    for requirement in inventory.requirements:
        if requirement.egress is None and requirement.ingress is None:
            continue  # restricts nothing (the checker warns); such a policy is not even valid
        for cluster in requirement_clusters(inventory, requirement):
            builder.add_requirement(requirement, cluster)
    return builder.finish()


def requirement_clusters(inventory: Inventory, requirement: Requirement) -> tuple[Cluster, ...]:
    """The clusters a requirement's policy goes to (its scope), in inventory order."""
    domain = inventory.domain_by_name[requirement.domain]
    names = set(requirement.clusters or domain.cluster_by_name)
    selected = requirement.selected_service
    if selected is not None:
        names &= set(domain.service_by_name[selected].clusters)
    return tuple(c for c in domain.clusters if c.name in names)


def policy_namespace(inventory: Inventory, requirement: Requirement) -> str | None:
    """The namespace of the generated policy (None for a cluster-wide policy)."""
    selected = requirement.selected_service
    if selected is not None:
        service = inventory.domain_by_name[requirement.domain].service_by_name[selected]
        return None if requirement.cluster_wide else service.namespace
    if requirement.cluster_wide:
        return None
    return requirement.namespace or "default"


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
    labels = {**dict(service.selector), NAMESPACE_LABEL: service.namespace}
    if len(meshes) == 1:
        return {"matchLabels": {**labels, CLUSTER_LABEL: meshes[0]}}
    return {
        "matchLabels": labels,
        "matchExpressions": [{"key": CLUSTER_LABEL, "operator": "In", "values": meshes}],
    }


def raw_peer_selector(peer: Peer, namespace: str | None, local_mesh: str) -> dict[str, Any]:
    """A raw pod-label peer with the namespace and the (local) cluster made explicit."""
    body = selector_body(peer.selector)
    labels = body.setdefault("matchLabels", {})
    written = {*labels, *(e.key for e in peer.selector.match_expressions)}
    if namespace is not None and not written & NAMESPACE_KEYS:
        labels[NAMESPACE_LABEL] = namespace
    labels[CLUSTER_LABEL] = local_mesh
    return body


def ports_body(ports: Iterable[tuple[str, str | None]]) -> list[dict[str, Any]]:
    entries = [{"port": port, **({"protocol": proto} if proto else {})} for port, proto in ports]
    return [{"ports": entries}]


def service_ports(service: Service) -> list[tuple[str, str | None]]:
    return [(str(p.port), p.protocol) for p in service.ports]


def rule_ports(ports: tuple[PortRule, ...]) -> list[tuple[str, str | None]]:
    return [(p.port, p.protocol) for p in ports]


# --------------------------------------------------------------------------- builder


@dataclass
class _Pending:
    body: dict[str, Any]
    causes: set[str] = field(default_factory=set)
    source: Location | None = None  # where the first cause was written (for clash messages)
    origin: str = ""  # what produced the body (for clash messages)


class _PlanBuilder:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.objects: dict[ObjectKey, _Pending] = {}
        self.diagnostics: list[Diagnostic] = []
        self.global_services: dict[tuple[str, str], tuple[str, Location]] = {}

    # -- requirements -------------------------------------------------------------------

    def add_requirement(self, requirement: Requirement, cluster: Cluster) -> None:
        here = ClusterRef(cluster.domain, cluster.name)
        namespace = policy_namespace(self.inventory, requirement)
        spec: dict[str, Any] = {}
        if requirement.description:
            spec["description"] = requirement.description
        spec["endpointSelector"] = self._endpoint_selector(requirement, namespace)
        # Default deny is written out for each direction the requirement restricts: Cilium's
        # own default depends on whether the rule list is empty, and a direction whose peers
        # all matched nothing must still deny (fail closed) rather than fall open.
        spec["enableDefaultDeny"] = {"egress": requirement.egress is not None,
                                     "ingress": requirement.ingress is not None}
        if requirement.egress is not None:
            spec["egress"] = self._egress(requirement, cluster, namespace)
        if requirement.ingress is not None:
            # When no peer matched, one empty rule: it allows nothing, yet it is a rule. Cilium
            # applies default deny per rule (an empty list or no section would leave ingress
            # open) and the CRD requires a section.
            spec["ingress"] = self._ingress(requirement, cluster, namespace) or [{}]
        kind = "CiliumClusterwideNetworkPolicy" if namespace is None else "CiliumNetworkPolicy"
        metadata: dict[str, Any] = {"name": requirement.name}
        if namespace is not None:
            metadata["namespace"] = namespace
        metadata["labels"] = {**dict(requirement.labels), **MANAGED_BY}
        metadata["annotations"] = {**dict(requirement.annotations),
                                   SOURCE_ANNOTATION: requirement.file}
        body = {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": metadata, "spec": spec}
        key = ObjectKey(here, kind, namespace or "", requirement.name)
        self._put(key, body, requirement.key, requirement.location,
                  f"requirement {requirement.key}")

    def _endpoint_selector(self, requirement: Requirement, namespace: str | None) -> dict[str, Any]:
        selected = requirement.selected_service
        if selected is None:
            return selector_body(requirement.endpoint_selector)
        service = self.inventory.domain_by_name[requirement.domain].service_by_name[selected]
        labels = dict(service.selector)
        if namespace is None:  # cluster-wide: the namespace must be part of the selector
            labels[NAMESPACE_LABEL] = service.namespace
        return {"matchLabels": labels}

    def _egress(self, req: Requirement, cluster: Cluster, namespace: str | None) -> list[Any]:
        rules: list[dict[str, Any]] = []
        for rule in req.egress or ():
            rules.extend(self._rule_bodies(req, rule, cluster, namespace, "toEndpoints",
                                           "toCIDRSet", None))
        dns_peer = {"matchLabels": {**DNS_PEER_LABELS, CLUSTER_LABEL: cluster.mesh_name}}
        rules.append({"toEndpoints": [dns_peer], "toPorts": [{"ports": list(DNS_PORTS)}]})
        return _unique(rules)

    def _ingress(self, req: Requirement, cluster: Cluster, namespace: str | None) -> list[Any]:
        protected = None
        if req.selected_service is not None:
            protected = self.inventory.domain_by_name[req.domain].service_by_name[
                req.selected_service]
        rules: list[dict[str, Any]] = []
        for rule in req.ingress or ():
            rules.extend(self._rule_bodies(req, rule, cluster, namespace, "fromEndpoints",
                                           "fromCIDRSet", protected))
        return _unique(rules)

    def _rule_bodies(
        self,
        req: Requirement,
        rule: Rule,
        cluster: Cluster,
        namespace: str | None,
        peers_key: str,
        cidrs_key: str,
        protected: Service | None,
    ) -> Iterator[dict[str, Any]]:
        explicit_ports = rule_ports(rule.ports) if rule.ports is not None else None
        if rule.has_cidrs:
            cidrs = [{"cidr": c.cidr, **({"except": list(c.excepts)} if c.excepts else {})}
                     for c in rule.cidrs]
            body: dict[str, Any] = {cidrs_key: cidrs}
            if explicit_ports or (protected and rule.direction == "ingress"):
                chosen = explicit_ports or service_ports(protected)  # type: ignore[arg-type]
                body["toPorts"] = ports_body(chosen)
            yield body
            return
        for peer in rule.endpoints:
            if not peer.is_abstract:
                body = {peers_key: [raw_peer_selector(peer, namespace, cluster.mesh_name)]}
                if explicit_ports or (protected and rule.direction == "ingress"):
                    chosen = explicit_ports or service_ports(protected)  # type: ignore[arg-type]
                    body["toPorts"] = ports_body(chosen)
                yield body
                continue
            for target in self.inventory.resolve_peer(peer.selector, req.domain):
                ports = explicit_ports
                if ports is None:
                    if rule.direction == "egress":
                        ports = service_ports(target.service)
                    elif protected is not None:
                        ports = service_ports(protected)
                body = {peers_key: [service_peer_selector(self.inventory, target)]}
                if ports:
                    body["toPorts"] = ports_body(ports)
                yield body
                self._connect(req, peer, cluster, namespace, target, rule.direction)

    # -- service-to-service -------------------------------------------------------------

    def _connect(
        self,
        req: Requirement,
        peer: Peer,
        cluster: Cluster,
        namespace: str | None,
        target: PeerTarget,
        direction: str,
    ) -> None:
        """Objects that make the flow between ``cluster`` and ``target`` work."""
        service = target.service
        here = ClusterRef(cluster.domain, cluster.name)
        remote = [ClusterRef(service.domain, c) for c in target.clusters
                  if ClusterRef(service.domain, c) != here]
        if remote:
            for ref in remote:
                self._namespace(ref, service.namespace, req, peer)
            if namespace is not None:
                self._namespace(here, namespace, req, peer)
        if direction != "egress":
            return
        if remote:
            runs_here = service.domain == cluster.domain and cluster.name in service.clusters
            for ref in remote:
                self._service(ref, service, req, peer, mirror=False)
            self._service(here, service, req, peer, mirror=not runs_here)
            self._namespace(here, service.namespace, req, peer)
        if namespace is not None and namespace != service.namespace:
            self._external_name(here, cluster, namespace, service, req, peer)

    def _service(
        self, ref: ClusterRef, service: Service, req: Requirement, peer: Peer, *, mirror: bool
    ) -> None:
        annotations = {GLOBAL: "true", SHARED: "false" if mirror else "true",
                       ARGO_SYNC_WAVE: SYNC_WAVE["Service"]}
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service.name, "namespace": service.namespace,
                         "labels": dict(MANAGED_BY), "annotations": annotations},
            "spec": {
                "type": "ClusterIP",
                "selector": dict(service.selector),
                "ports": [_service_port(p.port, p.protocol, p.name) for p in service.ports],
            },
        }
        origin = f"{'mirror of' if mirror else 'global'} service {service.key}"
        if mirror and self._clashes_with_inventory(ref, service.namespace, service, peer,
                                                   f"the mirror of {service.key}"):
            return
        self._put(ObjectKey(ref, "Service", service.namespace, service.name), body, req.key,
                  peer.location, origin)
        self._claim_global_name(service, peer.location)

    def _claim_global_name(self, service: Service, where: Location) -> None:
        """Cilium merges global Services by namespace/name across the whole mesh."""
        key = (service.namespace, service.name)
        owner = self.global_services.setdefault(key, (service.key, service.location))
        if owner[0] != service.key:
            self.diagnostics.append(error(
                where, "", f"expected one inventory service per global namespace/name, found "
                f"{service.key} ({_at(service.location)}) and {owner[0]} ({_at(owner[1])}) both "
                f"becoming the global Service {key[0]}/{key[1]}: Cilium would merge their "
                "backends; rename one of them"))

    def _external_name(
        self, ref: ClusterRef, cluster: Cluster, namespace: str, service: Service,
        req: Requirement, peer: Peer,
    ) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service.name, "namespace": namespace,
                         "labels": dict(MANAGED_BY),
                         "annotations": {ARGO_SYNC_WAVE: SYNC_WAVE["Service"]}},
            "spec": {
                "type": "ExternalName",
                "externalName": f"{service.name}.{service.namespace}.svc.{cluster.cluster_domain}",
                "ports": [_service_port(p.port, p.protocol, p.name) for p in service.ports],
            },
        }
        if self._clashes_with_inventory(ref, namespace, service, peer,
                                        f"the ExternalName Service for {service.key}"):
            return
        self._put(ObjectKey(ref, "Service", namespace, service.name), body, req.key,
                  peer.location, f"ExternalName for {service.key}")

    def _clashes_with_inventory(
        self, ref: ClusterRef, namespace: str, service: Service, peer: Peer, what: str
    ) -> bool:
        """Report (and say so) when a generated Service would take an inventory Service's name."""
        clash = self._inventory_service_at(ref, namespace, service.name)
        if clash is None:
            return False
        self.diagnostics.append(error(
            peer.location, "", f"expected no Service '{service.name}' in namespace "
            f"'{namespace}' of {ref.path}, found inventory service {clash.key} "
            f"({_at(clash.location)}) where {what} ({_at(service.location)}) would go"))
        return True

    def _inventory_service_at(self, ref: ClusterRef, namespace: str, name: str) -> Service | None:
        domain = self.inventory.domain_by_name[ref.domain]
        found = domain.service_by_name.get(name)
        if found and found.namespace == namespace and ref.name in found.clusters:
            return found
        return None

    def _namespace(self, ref: ClusterRef, name: str, req: Requirement, peer: Peer) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": dict(MANAGED_BY),
                "annotations": {
                    NAMESPACE_GLOBAL: "true",
                    ARGO_SYNC_OPTIONS: "Prune=false",
                    ARGO_SYNC_WAVE: SYNC_WAVE["Namespace"],
                    FLUX_PRUNE: "disabled",
                },
            },
        }
        self._put(ObjectKey(ref, "Namespace", "", name), body, req.key, peer.location,
                  "namespace")

    # -- collection ---------------------------------------------------------------------

    def _put(self, key: ObjectKey, body: dict[str, Any], cause: str, where: Location,
             origin: str) -> None:
        pending = self.objects.get(key)
        if pending is None:
            self.objects[key] = _Pending(body, {cause}, where, origin)
            return
        if pending.body != body:
            self.diagnostics.append(error(
                where, "", f"expected one definition of {key.kind} {key.namespace}/{key.name} "
                f"in {key.cluster.path}, found two that differ: {origin} and {pending.origin} "
                f"({_at(pending.source)})"))
            return
        pending.causes.add(cause)

    def finish(self) -> Plan:
        by_cluster: dict[ClusterRef, list[Manifest]] = {}
        for key, pending in self.objects.items():
            body = _with_required_by(pending.body, sorted(pending.causes))
            by_cluster.setdefault(key.cluster, []).append(
                Manifest(key, body, tuple(sorted(pending.causes))))
        plans = []
        for domain in self.inventory.domains:
            for cluster in domain.clusters:
                ref = ClusterRef(domain.name, cluster.name)
                objects = sorted(by_cluster.get(ref, ()), key=_output_order)
                plans.append(ClusterPlan(ref, cluster.mesh_name, tuple(objects)))
        plans.sort(key=lambda p: p.cluster)
        return Plan(tuple(plans), tuple(self.diagnostics))


def _service_port(port: int, protocol: str, name: str | None) -> dict[str, Any]:
    # No targetPort: the inventory does not know container ports, and Kubernetes defaults
    # targetPort to port.
    return {**({"name": name} if name else {}), "port": port, "protocol": protocol}


def _with_required_by(body: Mapping[str, Any], causes: list[str]) -> dict[str, Any]:
    metadata = dict(body["metadata"])
    metadata["annotations"] = {**metadata.get("annotations", {}), REQUIRED_BY: ",".join(causes)}
    return {**body, "metadata": metadata}


def _output_order(manifest: Manifest) -> tuple[int, str, str]:
    key = manifest.key
    return (KIND_ORDER.index(key.kind), key.namespace, key.name)


def _unique(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _at(location: Location | None) -> str:
    return f"{location.file}:{location.line}" if location else "?"
