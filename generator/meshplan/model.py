"""Stage 3 — model: immutable records for domains, clusters, services and requirements.

Built from documents that passed :mod:`meshplan.schema`, so building never fails on structure;
meaning (references, uniqueness, consent) is checked afterwards by :mod:`meshplan.check`.
Every record keeps the :class:`Location` it came from, so later stages can point at it.

:meth:`Inventory.resolve_peer` is the one place where an abstract peer (``service``,
``cluster``, ``domain`` labels) is turned into concrete (service, clusters) targets; both the
checker and the refiner call it, so they can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from .diagnostics import Location
from .load.document import Document, PathKey, format_path
from .vocabulary import (
    ABSTRACT_KEYS,
    CLUSTER_KEY,
    CLUSTERS_ANNOTATION,
    CLUSTERWIDE_POLICY_KIND,
    DEFAULT_CLUSTER_DOMAIN,
    DEFAULT_NAMESPACE,
    DOMAIN_KEY,
    SERVICE_KEY,
    WILDCARD,
)

if TYPE_CHECKING:
    from .mesh.model import Mesh

API_VERSION = "meshplan.dev/v1alpha1"

Labels = tuple[tuple[str, str], ...]  # sorted (key, value) pairs


def labels_of(mapping: Mapping[str, Any] | None) -> Labels:
    return tuple(sorted((str(k), str(v)) for k, v in (mapping or {}).items()))


class ClusterMeshEndpoint(NamedTuple):
    """A cluster's ``clustermesh`` entry: it is a ClusterMesh member (see :mod:`meshplan.mesh`)."""

    address: str | None  # its clustermesh-apiserver: an IP or a DNS name, reserved in advance
    port: int | None  # None = the default of the Mesh's apiserverService
    location: Location  # of the ``clustermesh`` key
    address_location: Location
    port_location: Location


class IstioMembership(NamedTuple):
    """A cluster's ``istio`` entry: it is an Istio (multi-primary) member."""

    network: str | None
    trust_domain: str | None
    location: Location  # of the ``istio`` key
    gateway_address: str | None = None  # eastWestGateway.address: its reserved LB address
    gateway_location: Location | None = None  # of eastWestGateway.address (else None)
    egress_cidrs: tuple[tuple[str, Location], ...] = ()  # where its traffic leaves from


class PrometheusEndpoint(NamedTuple):
    """A cluster's ``observability`` entry: where the central Prometheus federates it from.

    Credentials never enter the inventory: only the names of Secrets in the central cluster's
    monitoring namespace that hold them.
    """

    url: str  # http(s)://host[:port][/path prefix] of the cluster's Prometheus
    bearer_token_secret: str | None  # Secret with key ``token``
    basic_auth_secret: str | None  # Secret with keys ``username`` and ``password``
    ca_secret: str | None  # Secret with key ``ca.crt``: the CA of the Prometheus' certificate
    location: Location  # of the ``observability`` key
    url_location: Location


class Port(NamedTuple):
    port: int
    protocol: str  # TCP, UDP or SCTP
    name: str | None = None


@dataclass(frozen=True)
class Cluster:
    domain: str
    name: str
    mesh_name: str
    mesh_id: int | None
    pod_cidrs: tuple[tuple[str, Location], ...]
    cluster_domain: str
    argocd_name: str | None
    argocd_server: str | None
    flux_namespace: str | None
    location: Location
    mesh_name_location: Location
    mesh_id_location: Location
    path: str = ""  # key path of the cluster entry, e.g. "spec.clusters[0]"
    mesh_name_key: str = "meshName"  # "cilium_cluster" in the thesis form
    clustermesh: ClusterMeshEndpoint | None = None  # a ClusterMesh member (with a Mesh document)
    istio: IstioMembership | None = None  # an Istio member (with a Mesh document)
    prometheus: PrometheusEndpoint | None = None  # federated by the central Prometheus


@dataclass(frozen=True)
class Service:
    domain: str
    name: str
    namespace: str
    selector: Labels
    ports: tuple[Port, ...]
    clusters: tuple[str, ...]
    export_to: tuple[str, ...]  # domain names, or ("*",)
    location: Location
    cluster_locations: tuple[Location, ...]
    export_locations: tuple[Location, ...]
    path: str = ""  # key path of the service entry, e.g. "spec.services[2]"
    clusters_path: str = ""  # key path of its cluster list ("servicesMap.<name>" in thesis form)
    service_account: str | None = None  # the Kubernetes service account its pods run as

    def exported_to(self, domain: str) -> bool:
        return domain == self.domain or WILDCARD in self.export_to or domain in self.export_to

    @cached_property  # refinement asks for each object it puts
    def key(self) -> str:
        return f"{self.domain}/{self.name}"


@dataclass(frozen=True)
class Domain:
    name: str
    clusters: tuple[Cluster, ...]
    services: tuple[Service, ...]
    location: Location
    form: Literal["native", "thesis"]

    @cached_property
    def cluster_by_name(self) -> Mapping[str, Cluster]:
        return {c.name: c for c in self.clusters}

    @cached_property
    def service_by_name(self) -> Mapping[str, Service]:
        return {s.name: s for s in self.services}


@dataclass(frozen=True)
class Expression:
    key: str
    operator: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Selector:
    match_labels: Labels
    match_expressions: tuple[Expression, ...] = ()

    def label(self, key: str) -> str | None:
        return self._label_values.get(key)

    @cached_property
    def _label_values(self) -> Mapping[str, str]:
        return dict(self.match_labels)

    @cached_property  # asked for each peer by the checks, refinement and the render cache
    def is_abstract(self) -> bool:
        return any(k in ABSTRACT_KEYS for k, _ in self.match_labels)


@dataclass(frozen=True)
class Peer:
    """One entry of toEndpoints/fromEndpoints, as written."""

    selector: Selector
    location: Location
    path: str = ""  # e.g. "spec.egress[0].toEndpoints[1]"

    @cached_property
    def is_abstract(self) -> bool:
        return self.selector.is_abstract


@dataclass(frozen=True)
class CidrPeer:
    cidr: str
    excepts: tuple[str, ...]
    location: Location
    except_locations: tuple[Location, ...]
    path: str = ""  # e.g. "spec.egress[1].toCIDRSet[0]"


class PortRule(NamedTuple):
    port: str
    protocol: str | None  # None = not restricted (Cilium's ANY)


@dataclass(frozen=True)
class Rule:
    direction: Literal["egress", "ingress"]
    endpoints: tuple[Peer, ...]
    cidrs: tuple[CidrPeer, ...]
    ports: tuple[PortRule, ...] | None  # None = no toPorts written
    location: Location
    has_endpoints: bool
    has_cidrs: bool
    path: str = ""  # e.g. "spec.egress[0]"


@dataclass(frozen=True)
class Requirement:
    domain: str  # the requirements/<domain>/ folder it lives in
    name: str
    namespace: str | None  # None = not written
    cluster_wide: bool
    clusters: tuple[str, ...] | None  # None = every cluster of the domain
    cluster_locations: tuple[Location, ...]
    cluster_paths: tuple[str, ...]  # key path of each written cluster name
    endpoint_selector: Selector
    egress: tuple[Rule, ...] | None
    ingress: tuple[Rule, ...] | None
    description: str | None
    labels: Labels
    annotations: Labels
    form: Literal["native", "thesis"]
    location: Location
    namespace_location: Location
    selector_location: Location

    @cached_property
    def key(self) -> str:
        """Stable identity used to trace generated objects back: ``domain/namespace/name``."""
        return f"{self.domain}/{self.namespace or '*'}/{self.name}"

    @property
    def file(self) -> str:
        return self.location.file

    @property
    def selected_service(self) -> str | None:
        """The inventory service the endpointSelector names (``{service: x}``), if any."""
        return self.endpoint_selector.label(SERVICE_KEY)


class PeerTarget(NamedTuple):
    """A concrete peer: one inventory service, restricted to some of its clusters."""

    service: Service
    clusters: tuple[str, ...]


@dataclass(frozen=True)
class GitOps:
    """The optional ``kind: GitOps`` document: where the output is published, how agents find it."""

    repo_url: str
    branch: str
    argocd_namespace: str
    argocd_project: str
    flux_namespace: str
    flux_interval: str
    flux_secret_name: str | None
    location: Location


@dataclass(frozen=True)
class Inventory:
    domains: tuple[Domain, ...]
    requirements: tuple[Requirement, ...] = field(default=())
    gitops: GitOps | None = None
    mesh: Mesh | None = None  # the optional ``kind: Mesh`` document (meshplan.mesh)

    @cached_property
    def domain_by_name(self) -> Mapping[str, Domain]:
        return {d.name: d for d in self.domains}

    def cluster(self, domain: str, name: str) -> Cluster:
        return self.domain_by_name[domain].cluster_by_name[name]

    def service_selected_by(self, requirement: Requirement) -> Service | None:
        """The inventory service a requirement protects (``endpointSelector: {service: x}``)."""
        name = requirement.selected_service
        domain = self.domain_by_name.get(requirement.domain)
        if name is None or domain is None:
            return None
        return domain.service_by_name.get(name)

    def requirement_scope(self, requirement: Requirement) -> tuple[Cluster, ...]:
        """The clusters a requirement applies to, in inventory order.

        Its written clusters (``spec.clusters`` or the thesis annotation; an empty list means
        none: only an unwritten list means every cluster of its domain), and for
        ``{service: x}`` only those where x runs. Refinement and verify both ask here.
        """
        domain = self.domain_by_name.get(requirement.domain)
        if domain is None:
            return ()
        clusters = domain.clusters
        if requirement.clusters is not None:
            clusters = tuple(c for c in clusters if c.name in requirement.clusters)
        if requirement.selected_service is not None:
            service = self.service_selected_by(requirement)
            runs_in = service.clusters if service is not None else ()
            clusters = tuple(c for c in clusters if c.name in runs_in)
        return clusters

    def istio_gateway_route(self, a: Cluster, b: Cluster) -> bool:
        """Whether Istio routes traffic between ``a`` and ``b`` through east-west gateways:
        both are Istio members (with a Mesh document that has ``spec.istio``) on different
        networks. Then Cilium sees neither the real client nor the real server (refinement
        and verify both ask here)."""
        mesh = self.mesh
        if mesh is None or mesh.istio is None or a.istio is None or b.istio is None:
            return False
        return bool(a.istio.network and b.istio.network and a.istio.network != b.istio.network)

    def is_istio_member(self, cluster: Cluster) -> bool:
        """Whether ``cluster`` runs Istio (an ``istio`` entry and a Mesh with ``spec.istio``)."""
        mesh = self.mesh
        return mesh is not None and mesh.istio is not None and cluster.istio is not None

    def policy_namespace(self, requirement: Requirement) -> str | None:
        """The namespace of a requirement's pods and policy; None for a cluster-wide one.

        ``{service: x}`` lives in x's namespace; anything else in its written namespace, else
        ``default``.
        """
        if requirement.cluster_wide:
            return None
        service = self.service_selected_by(requirement)
        if service is not None:
            return service.namespace
        return requirement.namespace or DEFAULT_NAMESPACE

    def resolve_peer(self, peer: Selector, from_domain: str, *,
                     direction: Literal["egress", "ingress"]) -> tuple[PeerTarget, ...]:
        """Expand an abstract peer into the services (and clusters) it means.

        ``exportTo`` is about who may *call* a service: an egress peer sees only services
        visible to ``from_domain`` (its own, or exported to it), so a ``service: "*"`` of another
        domain matches only what that domain exported. An ingress peer may name the services
        of any domain: it only opens ``from_domain``'s own pods to them. Unknown names give an
        empty result (the checker reports them).
        """
        asked = (peer, from_domain, direction)
        found = self._resolved.get(asked)
        if found is None:
            found = self._resolved[asked] = self._resolve_peer(peer, from_domain, direction)
        return found

    @cached_property
    def _resolved(self) -> dict[tuple[Selector, str, str], tuple[PeerTarget, ...]]:
        """:meth:`resolve_peer`'s answers: refinement, verify and the render cache's records
        ask for the same peers again and again (the inventory never changes)."""
        return {}

    def _resolve_peer(self, peer: Selector, from_domain: str,
                      direction: Literal["egress", "ingress"]) -> tuple[PeerTarget, ...]:
        domain = self.domain_by_name.get(peer.label(DOMAIN_KEY) or from_domain)
        if domain is None:
            return ()
        service_name = peer.label(SERVICE_KEY) or WILDCARD
        cluster_name = peer.label(CLUSTER_KEY) or WILDCARD
        if service_name == WILDCARD:
            candidates = domain.services
        else:
            found = domain.service_by_name.get(service_name)
            candidates = (found,) if found else ()
        targets: list[PeerTarget] = []
        for service in candidates:
            if direction == "egress" and not service.exported_to(from_domain):
                continue
            clusters = tuple(c for c in service.clusters
                             if cluster_name in (WILDCARD, c) and c in domain.cluster_by_name)
            if clusters:
                targets.append(PeerTarget(service, clusters))
        return tuple(sorted(targets, key=lambda t: (t.service.namespace, t.service.name)))


# --------------------------------------------------------------------------- building


def with_implied_namespaces(inventory: Inventory) -> Inventory:
    """A requirement lives in its selected service's namespace, else in ``default``, unless it
    says otherwise (like any namespaced Kubernetes object).

    Filling it in here gives every requirement one stable identity (``Requirement.key``); a
    written namespace that differs from the service's is left alone for the checker to report.
    """
    requirements = []
    for requirement in inventory.requirements:
        service = inventory.service_selected_by(requirement)
        if requirement.namespace is None and not requirement.cluster_wide:
            implied = service.namespace if service is not None else DEFAULT_NAMESPACE
            requirement = replace(requirement, namespace=implied)
        requirements.append(requirement)
    return replace(inventory, requirements=tuple(requirements))


def default_mesh_name(domain: str, cluster: str) -> str:
    return f"{domain}-{cluster}"


def build_domain(doc: Document) -> Domain:
    """A Domain from a schema-valid ``kind: Domain`` document."""
    data = doc.data
    name = data["metadata"]["name"]
    spec = data["spec"]
    clusters = tuple(_native_cluster(doc, name, i, c) for i, c in enumerate(spec["clusters"]))
    services = tuple(
        _native_service(doc, name, i, s) for i, s in enumerate(spec.get("services") or [])
    )
    return Domain(name, clusters, services, doc.location(("metadata", "name")), "native")


def _native_cluster(doc: Document, domain: str, i: int, c: Mapping[str, Any]) -> Cluster:
    here: PathKey = ("spec", "clusters", i)
    cidrs = tuple((str(cidr), doc.location((*here, "podCIDRs", j)))
                  for j, cidr in enumerate(c.get("podCIDRs") or []))
    gitops = c.get("gitops") or {}
    return Cluster(
        domain=domain,
        name=c["name"],
        mesh_name=c.get("meshName") or default_mesh_name(domain, c["name"]),
        mesh_id=c.get("meshId"),
        pod_cidrs=cidrs,
        cluster_domain=c.get("clusterDomain") or DEFAULT_CLUSTER_DOMAIN,
        argocd_name=gitops.get("argocdDestinationName"),
        argocd_server=gitops.get("argocdDestinationServer"),
        flux_namespace=gitops.get("fluxNamespace"),
        location=doc.location((*here, "name")),
        mesh_name_location=doc.location((*here, "meshName")),
        mesh_id_location=doc.location((*here, "meshId")),
        path=format_path(here),
        clustermesh=_clustermesh_endpoint(doc, here, c.get("clustermesh")),
        istio=_istio_membership(doc, here, c.get("istio")),
        prometheus=_prometheus_endpoint(doc, here, c.get("observability")),
    )


def _clustermesh_endpoint(
    doc: Document, here: PathKey, entry: Mapping[str, Any] | None
) -> ClusterMeshEndpoint | None:
    if entry is None:
        return None
    where: PathKey = (*here, "clustermesh")
    return ClusterMeshEndpoint(entry.get("address"), entry.get("port"), doc.key_location(where),
                               doc.location((*where, "address")), doc.location((*where, "port")))


def _istio_membership(
    doc: Document, here: PathKey, entry: Mapping[str, Any] | None
) -> IstioMembership | None:
    if entry is None:
        return None
    where: PathKey = (*here, "istio")
    gateway = entry.get("eastWestGateway") or {}
    address = gateway.get("address")
    cidrs = tuple((str(cidr), doc.location((*where, "egressCIDRs", j)))
                  for j, cidr in enumerate(entry.get("egressCIDRs") or []))
    return IstioMembership(entry.get("network"), entry.get("trustDomain"), doc.key_location(where),
                           address, doc.location((*where, "eastWestGateway", "address"))
                           if address is not None else None, cidrs)


def _prometheus_endpoint(
    doc: Document, here: PathKey, entry: Mapping[str, Any] | None
) -> PrometheusEndpoint | None:
    if entry is None:
        return None
    where: PathKey = (*here, "observability")
    return PrometheusEndpoint(str(entry["prometheus"]), entry.get("bearerTokenSecret"),
                              entry.get("basicAuthSecret"), entry.get("caSecret"),
                              doc.key_location(where), doc.location((*where, "prometheus")))


def _native_service(doc: Document, domain: str, i: int, s: Mapping[str, Any]) -> Service:
    here: PathKey = ("spec", "services", i)
    ports = tuple(Port(p["port"], p.get("protocol", "TCP"), p.get("name")) for p in s["ports"])
    exports = tuple(s.get("exportTo") or ())
    return Service(
        domain=domain,
        name=s["name"],
        namespace=s["namespace"],
        selector=labels_of(s["selector"]),
        ports=ports,
        clusters=tuple(s["clusters"]),
        export_to=exports,
        location=doc.location((*here, "name")),
        cluster_locations=tuple(doc.location((*here, "clusters", j))
                                for j in range(len(s["clusters"]))),
        export_locations=tuple(doc.location((*here, "exportTo", j)) for j in range(len(exports))),
        path=format_path(here),
        clusters_path=format_path((*here, "clusters")),
        service_account=s.get("serviceAccount"),
    )


def build_domain_request(doc: Document) -> Domain:
    """A Domain from the thesis' DomainRequest JSON (schema-valid). Services export to all."""
    data = doc.data
    name = data["domain"]["name"]
    clusters = tuple(
        Cluster(
            domain=name,
            name=c["name"],
            mesh_name=c.get("cilium_cluster") or default_mesh_name(name, c["name"]),
            mesh_id=None,
            pod_cidrs=(),
            cluster_domain=DEFAULT_CLUSTER_DOMAIN,
            argocd_name=None,
            argocd_server=None,
            flux_namespace=None,
            location=doc.location(("clusters", i, "name")),
            mesh_name_location=doc.location(("clusters", i, "cilium_cluster")),
            mesh_id_location=doc.location(("clusters", i)),
            path=f"clusters[{i}]",
            mesh_name_key="cilium_cluster",
        )
        for i, c in enumerate(data.get("clusters") or [])
    )
    services_map = data.get("servicesMap") or {}
    if not isinstance(services_map, dict):
        services_map = {}
    services = []
    for i, s in enumerate(data.get("services") or []):
        where = ("servicesMap", s["name"])
        runs_in = tuple(services_map.get(s["name"]) or ())
        protocol, _, number = s["port"].partition(":")
        services.append(Service(
            domain=name,
            name=s["name"],
            namespace=s["namespace"],
            selector=parse_thesis_selector(s["selector"]),
            ports=(Port(int(number.strip()), protocol.strip()),),
            clusters=runs_in,
            export_to=(WILDCARD,),
            location=doc.location(("services", i, "name")),
            cluster_locations=tuple(doc.location((*where, j)) for j in range(len(runs_in))),
            export_locations=(),
            path=f"services[{i}]",
            clusters_path=f"servicesMap.{s['name']}",
        ))
    return Domain(name, clusters, tuple(services), doc.location(("domain", "name")), "thesis")


DEFAULT_OUTPUT_BRANCH = "rendered"


def build_gitops(doc: Document) -> GitOps:
    """GitOps settings from a schema-valid ``kind: GitOps`` document, defaults filled in."""
    spec = doc.data["spec"]
    argocd = spec.get("argocd") or {}
    flux = spec.get("flux") or {}
    return GitOps(
        repo_url=spec["repoURL"],
        branch=spec.get("branch") or DEFAULT_OUTPUT_BRANCH,
        argocd_namespace=argocd.get("namespace") or "argocd",
        argocd_project=argocd.get("project") or "default",
        flux_namespace=flux.get("namespace") or "flux-system",
        flux_interval=flux.get("interval") or "5m",
        flux_secret_name=flux.get("secretName"),
        location=doc.location(("kind",)),
    )


def parse_thesis_selector(text: str) -> Labels:
    """``"name: service3"`` or ``"a:b, c:d"`` -> sorted label pairs."""
    pairs = (item.split(":", 1) for item in text.split(","))
    return tuple(sorted((k.strip(), v.strip()) for k, v in pairs))


def build_requirement(domain: str, doc: Document) -> Requirement:
    """A Requirement from a schema-valid document (native or thesis form)."""
    data = doc.data
    meta = data["metadata"]
    spec = data["spec"]
    thesis = data["apiVersion"] != API_VERSION
    namespace = meta.get("namespace")
    cluster_wide = data["kind"] == CLUSTERWIDE_POLICY_KIND or namespace == WILDCARD
    clusters, cluster_locations, cluster_paths = _requirement_scope(doc)
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k != CLUSTERS_ANNOTATION}
    return Requirement(
        domain=domain,
        name=meta["name"],
        namespace=None if namespace in (None, WILDCARD) else namespace,
        cluster_wide=cluster_wide,
        clusters=clusters,
        cluster_locations=cluster_locations,
        cluster_paths=cluster_paths,
        endpoint_selector=_selector(spec["endpointSelector"]),
        egress=_rules(doc, "egress", spec),
        ingress=_rules(doc, "ingress", spec),
        description=spec.get("description"),
        labels=labels_of(meta.get("labels")),
        annotations=labels_of(annotations),
        form="thesis" if thesis else "native",
        location=doc.location(("metadata", "name")),
        namespace_location=doc.location(("metadata", "namespace")),
        selector_location=doc.location(("spec", "endpointSelector")),
    )


def _requirement_scope(
    doc: Document,
) -> tuple[tuple[str, ...] | None, tuple[Location, ...], tuple[str, ...]]:
    """The written clusters (``spec.clusters``, else the annotation), where each was written."""
    spec = doc.data["spec"]
    annotation = (doc.data["metadata"].get("annotations") or {}).get(CLUSTERS_ANNOTATION)
    if spec.get("clusters") is not None:
        names = tuple(spec["clusters"])
        return (names, tuple(doc.location(("spec", "clusters", i)) for i in range(len(names))),
                tuple(f"spec.clusters[{i}]" for i in range(len(names))))
    if annotation is not None:
        names = tuple(n.strip() for n in str(annotation).split(",") if n.strip())
        path: PathKey = ("metadata", "annotations", CLUSTERS_ANNOTATION)
        where = doc.location(path)
        return names, tuple(where for _ in names), tuple(format_path(path) for _ in names)
    return None, (), ()


def _selector(data: Mapping[str, Any]) -> Selector:
    expressions = tuple(
        Expression(e["key"], e["operator"], tuple(str(v) for v in e.get("values") or ()))
        for e in data.get("matchExpressions") or ()
    )
    return Selector(labels_of(data.get("matchLabels")), expressions)


def _rules(
    doc: Document, direction: Literal["egress", "ingress"], spec: Mapping[str, Any]
) -> tuple[Rule, ...] | None:
    if direction not in spec:
        return None
    peers_key, cidrs_key = (
        ("toEndpoints", "toCIDRSet") if direction == "egress" else ("fromEndpoints", "fromCIDRSet")
    )
    rules = []
    for i, rule in enumerate(spec[direction] or []):
        here: PathKey = ("spec", direction, i)
        peers = tuple(Peer(_selector(p), doc.location((*here, peers_key, j)),
                           format_path((*here, peers_key, j)))
                      for j, p in enumerate(rule.get(peers_key) or []))
        cidrs = tuple(
            CidrPeer(
                str(c["cidr"]),
                tuple(str(e) for e in c.get("except") or ()),
                doc.location((*here, cidrs_key, j, "cidr")),
                tuple(doc.location((*here, cidrs_key, j, "except", k))
                      for k in range(len(c.get("except") or ()))),
                format_path((*here, cidrs_key, j)),
            )
            for j, c in enumerate(rule.get(cidrs_key) or [])
        )
        ports = None
        if "toPorts" in rule:
            ports = tuple(PortRule(str(p["port"]), p.get("protocol"))
                          for pr in rule["toPorts"] for p in pr["ports"])
        rules.append(Rule(direction, peers, cidrs, ports, doc.location(here),
                          peers_key in rule, cidrs_key in rule, format_path(here)))
    return tuple(rules)


def find_cluster(inventory: Inventory, path: str) -> Cluster | None:
    """The cluster written as ``<domain>/<cluster>``, if the inventory has it."""
    domain, _, name = path.partition("/")
    found = inventory.domain_by_name.get(domain)
    return None if found is None else found.cluster_by_name.get(name)
