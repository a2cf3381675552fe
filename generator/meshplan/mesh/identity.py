"""The identity layer: Istio's PeerAuthentication and AuthorizationPolicy, from the requirements.

The same reviewed requirements that refinement turns into CiliumNetworkPolicies (addresses,
at L3/L4) become, in every Istio member cluster, policies on workload identity (Istio 1.30,
``security.istio.io/v1``):

* one namespace-wide ``PeerAuthentication`` named ``default``, mode STRICT, in every namespace
  that holds a workload a requirement protects or that calls across clusters
  (:func:`strict_namespaces`): an ALLOW rule by principal only ever matches over mutual TLS, on
  plaintext the principal is empty. With ``spec.istio.strictMTLS: mesh`` also the mesh-wide
  one in the root namespace.
* per requirement with an ``ingress`` section and per Istio member cluster of its scope, an
  ``AuthorizationPolicy`` (action ALLOW) selecting the protected pods and admitting the
  principals of the peers, ``<trust domain of the peer's cluster>/ns/<namespace>/sa/<service
  account>``, one per cluster where the peer runs and the requirement admits it, on the
  protected service's ports (``to.operation.ports``: Istio sees the workload's port). A
  requirement whose peers match nothing gets a policy without rules: allow-nothing, never
  allow-all. Never a DENY by principal (a plaintext request has no principal, so it would pass
  a DENY), and never the ``cluster.local`` shorthand for the local trust domain (ambient's
  ztunnel does not read it).

Egress stays with Cilium: Istio authorizes at the server.

What identity cannot say, and what meshplan does about it (warnings name each place):

* a service without ``serviceAccount``: its principal is ``<td>/ns/<ns>/sa/*``, every
  workload of its namespace in that cluster (a notice, once per service);
* a raw pod-label peer: no known service account, so ``<td>/ns/<ns>/sa/*`` of the namespace
  Cilium pins it to (``<td>/ns/*`` when the namespace is not known, a cluster-wide policy or
  namespace-label peers); the CiliumNetworkPolicy keeps the labels;
* a CIDR peer: outside the mesh its connections are plaintext, which STRICT refuses, and
  ``ipBlocks`` would see the east-west gateway's address rather than the client's: it is not
  admitted by identity (never an allow-all);
* a peer in a cluster that is not an Istio member: plaintext, refused by STRICT;
* peers' clusters sharing one trust domain: Istio cannot tell them apart (the CiliumNetwork-
  Policy keeps enforcing the cluster scope);
* a subject Istio's ``selector`` cannot express (match expressions, namespace labels): no
  AuthorizationPolicy, Cilium alone enforces it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from ..admission import bare_key
from ..diagnostics import Diagnostic, Location, error, notice, warning
from ..model import (
    Cluster,
    Inventory,
    Peer,
    PeerTarget,
    Requirement,
    Rule,
    Selector,
    Service,
)
from ..refine import ClusterRef, Manifest, ObjectKey, Plan, output_order
from ..vocabulary import (
    ARGOCD_SYNC_OPTIONS_ANNOTATION,
    AUTHORIZATION_POLICY_KIND,
    CILIUM_CLUSTER_LABEL,
    ISTIO_ROOT_NAMESPACE,
    ISTIO_SECURITY_API_VERSION,
    MANAGED_BY,
    NAMESPACE_LABELS_PREFIX,
    NAMESPACE_NAME_LABEL,
    PEER_AUTHENTICATION_KIND,
    PEER_AUTHENTICATION_NAME,
    POD_NAMESPACE_LABEL,
    REQUIRED_BY_ANNOTATION,
    SOURCE_ANNOTATION,
)

MAX_RULES = 512  # AuthorizationPolicy.spec.rules (the CRD's maxItems)
ANY_SERVICE_ACCOUNT = "*"
# Istio's CRDs arrive with the istio-base chart: until then Argo CD must not fail the whole
# sync on these objects (as for the cross-network Gateway).
SKIP_DRY_RUN = "SkipDryRunOnMissingResource=true"


def principal(trust_domain: str, namespace: str, service_account: str | None) -> str:
    """``<td>/ns/<ns>/sa/<sa>``, with ``*`` for an unknown service account (the namespace)."""
    return f"{trust_domain}/ns/{namespace}/sa/{service_account or ANY_SERVICE_ACCOUNT}"


def any_namespace(trust_domain: str) -> str:
    """Every workload of a trust domain (a raw peer whose namespace is not known)."""
    return f"{trust_domain}/ns/*"


# --------------------------------------------------------------------------- the records


@dataclass(frozen=True)
class AuthorizationRule:
    """One ALLOW rule: any of ``principals``, on ``ports`` (TCP; None: every port)."""

    principals: tuple[str, ...]
    ports: tuple[int, ...] | None


@dataclass(frozen=True)
class Authorization:
    """The AuthorizationPolicy of one requirement in one cluster, before it is YAML."""

    requirement: Requirement
    namespace: str  # its own, or the root namespace (a cluster-wide requirement: mesh-wide)
    selector: Mapping[str, str] | None  # pod labels; None: every workload of the namespace
    rules: tuple[AuthorizationRule, ...]  # empty: allow-nothing


def trust_domain(inventory: Inventory, cluster: Cluster) -> str | None:
    """The trust domain of an Istio member (None for any other cluster)."""
    if not inventory.is_istio_member(cluster) or cluster.istio is None:
        return None
    return cluster.istio.trust_domain or None


def istio_enabled(inventory: Inventory) -> bool:
    return inventory.mesh is not None and inventory.mesh.istio is not None


def mesh_wide_strict(inventory: Inventory) -> bool:
    mesh = inventory.mesh
    return mesh is not None and mesh.istio is not None and mesh.istio.strict_mtls == "mesh"


# --------------------------------------------------------------------------- STRICT namespaces


def strict_namespaces(inventory: Inventory) -> dict[ClusterRef, tuple[str, ...]]:
    """The namespaces meshplan makes STRICT (mutual TLS required), per Istio member cluster.

    Per cluster the sorted namespaces that get a namespace-wide ``PeerAuthentication`` STRICT:
    the :func:`participating_namespaces` of each Istio member. With ``spec.istio.strictMTLS:
    mesh`` the root namespace (``istio-system``) is added to every member: its ``default``
    policy makes STRICT the mesh-wide default. Clusters with no such namespace are left out.
    One place for the identity layer, verify and monitoring.
    """
    return {ref: tuple(sorted(found)) for ref, found in strict_namespace_causes(inventory).items()}


NamespaceCauses = dict[ClusterRef, dict[str, set[str]]]  # cluster -> namespace -> causes


def participating_namespaces(inventory: Inventory, resolver: _Resolver | None = None
                             ) -> NamespaceCauses:
    """The namespaces whose workloads take part in an intended flow, in every cluster (Istio
    member or not), each with the keys of the requirements that say so.

    The namespace of every requirement's pods in each cluster of its scope (a workload
    meshplan protects; a cluster-wide requirement counts with its service's namespace, a raw
    cluster-wide one with none), and the namespace of every service an ingress peer names in
    each cluster where it runs other than the protected one (a workload that calls across
    clusters; in another domain's cluster only where that domain exported the service to the
    requirement's domain, like refinement's Namespaces). A requirement that restricts nothing
    adds nothing. Istio members make them STRICT (:func:`strict_namespace_causes`); monitoring
    watches them in every cluster.
    """
    return _namespace_causes(inventory, resolver or _Resolver(inventory), lambda _: True)


def strict_namespace_causes(inventory: Inventory, resolver: _Resolver | None = None
                            ) -> NamespaceCauses:
    """:func:`strict_namespaces` with, per namespace, what causes it: requirement keys, or
    ``mesh/<name>`` for the root namespace (for the objects' required-by, verify and the
    monitoring's alerts)."""
    if not istio_enabled(inventory):
        return {}
    found = _namespace_causes(inventory, resolver or _Resolver(inventory),
                              inventory.is_istio_member)
    if mesh_wide_strict(inventory) and inventory.mesh is not None:
        cause = f"mesh/{inventory.mesh.name}"
        for domain in inventory.domains:
            for cluster in domain.clusters:
                if inventory.is_istio_member(cluster):
                    ref = ClusterRef(cluster.domain, cluster.name)
                    found.setdefault(ref, {}).setdefault(ISTIO_ROOT_NAMESPACE, set()).add(cause)
    return found


def _namespace_causes(inventory: Inventory, resolver: _Resolver,
                      counts: Callable[[Cluster], bool]) -> NamespaceCauses:
    """:func:`participating_namespaces` in the clusters that ``counts``."""
    found: NamespaceCauses = {}

    def add(cluster: Cluster, namespace: str, cause: str) -> None:
        if counts(cluster):
            ref = ClusterRef(cluster.domain, cluster.name)
            found.setdefault(ref, {}).setdefault(namespace, set()).add(cause)

    for requirement in inventory.requirements:
        if requirement.egress is None and requirement.ingress is None:
            continue
        scope = inventory.requirement_scope(requirement)
        key = requirement.key
        namespace = _subject_namespace(inventory, requirement)
        for cluster in scope:
            if namespace is not None:
                add(cluster, namespace, key)
        here = {(c.domain, c.name) for c in scope}
        for rule in requirement.ingress or ():
            for peer in rule.endpoints:
                if not peer.is_abstract:
                    continue  # raw labels: pods of the requirement's own clusters
                for target in resolver.targets(peer.selector, requirement.domain, "ingress"):
                    service = target.service
                    if not service.exported_to(requirement.domain):
                        continue
                    domain = inventory.domain_by_name[service.domain]
                    for name in target.clusters:
                        if any(other != (service.domain, name) for other in here):
                            add(domain.cluster_by_name[name], service.namespace, key)
    return found


def _subject_namespace(inventory: Inventory, requirement: Requirement) -> str | None:
    namespace = inventory.policy_namespace(requirement)
    if namespace is None:
        service = inventory.service_selected_by(requirement)
        return service.namespace if service is not None else None
    return namespace


# --------------------------------------------------------------------------- authorization


class _Resolver:
    """``Inventory.resolve_peer``, remembered per (labels, domain, direction): the same peer is
    named by many requirements."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self._memo: dict[tuple[Any, str, str], tuple[PeerTarget, ...]] = {}

    def targets(self, selector: Selector, domain: str,
                direction: Literal["egress", "ingress"]) -> tuple[PeerTarget, ...]:
        key = (selector.match_labels, domain, direction)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self.inventory.resolve_peer(selector, domain,
                                                                  direction=direction)
        return found


def _pod_labels(selector: Selector) -> dict[str, str] | None:
    """The pod labels an Istio ``selector`` can say for a raw subject, or None when it cannot:
    match expressions, namespace labels, the cluster label or a source no pod label has. The
    namespace key is dropped (the policy's namespace says it)."""
    if selector.match_expressions:
        return None
    labels: dict[str, str] = {}
    for key, value in selector.match_labels:
        bare = bare_key(key)
        if bare is None or bare.startswith(NAMESPACE_LABELS_PREFIX) or bare == CILIUM_CLUSTER_LABEL:
            return None
        if bare != POD_NAMESPACE_LABEL:
            labels[bare] = value
    return labels


def _raw_peer_namespaces(selector: Selector, policy_namespace: str | None
                         ) -> tuple[str, ...] | None:
    """The namespaces of a raw peer, as Cilium pins it (None: not known, any namespace)."""
    named: tuple[str, ...] | None = None
    other_namespace_terms = False
    for key, value in selector.match_labels:
        bare = bare_key(key)
        if bare in (POD_NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX + NAMESPACE_NAME_LABEL):
            named = (value,)
        elif bare is not None and bare.startswith(NAMESPACE_LABELS_PREFIX):
            other_namespace_terms = True
    for expression in selector.match_expressions:
        bare = bare_key(expression.key)
        if bare == POD_NAMESPACE_LABEL and expression.operator == "In" and named is None:
            named = tuple(sorted(expression.values))
        elif bare is not None and (bare == POD_NAMESPACE_LABEL
                                   or bare.startswith(NAMESPACE_LABELS_PREFIX)):
            other_namespace_terms = True
    if named is not None:
        return named
    if other_namespace_terms:
        return None
    return (policy_namespace,) if policy_namespace is not None else None


def _tcp_ports(rule: Rule, protected: Service | None) -> tuple[int, ...] | Literal[False] | None:
    """The TCP ports an ALLOW rule names (None: every port; False: no TCP port at all, the
    rule admits nothing Istio sees). Istio's sidecars carry TCP only."""
    if rule.ports is not None:
        ports: set[int] = set()
        for entry in rule.ports:
            if entry.protocol not in (None, "ANY", "TCP"):
                continue
            number = int(entry.port)
            if number == 0:
                return None
            ports.add(number)
        return tuple(sorted(ports)) if ports else False
    if protected is not None:
        tcp = sorted({p.port for p in protected.ports if p.protocol == "TCP"})
        return tuple(tcp) if tcp else False
    return None


@dataclass(frozen=True)
class IdentityPlan:
    """The identity layer's objects per Istio member cluster, and what validate reports."""

    manifests: Mapping[ClusterRef, tuple[Manifest, ...]]
    diagnostics: tuple[Diagnostic, ...]


def plan_identity(inventory: Inventory) -> IdentityPlan:
    """Every PeerAuthentication and AuthorizationPolicy, and the warnings about what identity
    cannot say (see the module docstring). Empty without Istio members."""
    if not istio_enabled(inventory):
        return IdentityPlan({}, ())
    builder = _IdentityBuilder(inventory)
    builder.build()
    return IdentityPlan(builder.finish(), tuple(builder.diagnostics))


def all_authorizations(inventory: Inventory) -> Iterator[tuple[Cluster, Authorization]]:
    """The authorization of every requirement in each Istio member cluster of its scope (none
    for a requirement without ingress or whose subject Istio cannot select). Verify's intent
    asks here, as refinement and verify both ask ``Inventory.resolve_peer``."""
    if not istio_enabled(inventory):
        return
    builder = _IdentityBuilder(inventory)
    for requirement in inventory.requirements:
        yield from builder.authorizations(requirement)


class _IdentityBuilder:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.resolver = _Resolver(inventory)
        self.diagnostics: list[Diagnostic] = []
        self.objects: dict[ObjectKey, Manifest] = {}
        self._reported: set[tuple[Location, str]] = set()
        # Bodies are immutable once built: an equal policy in another cluster (most are: the
        # principals depend on the cluster only through raw peers) shares its body, so the YAML
        # writer reuses its text, and memory stays small at fleet size.
        self._bodies: dict[Any, dict[str, Any]] = {}
        self._rules_memo: dict[tuple[int, str | None], tuple[Requirement,
                                                              tuple[AuthorizationRule, ...]]] = {}
        groups: dict[str, list[Cluster]] = {}
        for domain in inventory.domains:
            for cluster in domain.clusters:
                td = trust_domain(inventory, cluster)
                if td is not None:
                    groups.setdefault(td, []).append(cluster)
        self.shared = {td: members for td, members in groups.items() if len(members) > 1}

    # -- diagnostics, each once -----------------------------------------------------------

    def _once(self, make: Any, where: Location, path: str, message: str) -> None:
        if (where, message) not in self._reported:
            self._reported.add((where, message))
            self.diagnostics.append(make(where, path, message))

    def build(self) -> None:
        self._service_accounts()
        for requirement in self.inventory.requirements:
            for cluster, authorization in self.authorizations(requirement):
                self._put_authorization(cluster, authorization)
        for ref, namespaces in strict_namespace_causes(self.inventory, self.resolver).items():
            for namespace, causes in namespaces.items():
                self._put_peer_authentication(ref, namespace, causes)

    def _service_accounts(self) -> None:
        for domain in self.inventory.domains:
            members = {c.name for c in domain.clusters if self.inventory.is_istio_member(c)}
            for service in domain.services:
                runs = [c for c in service.clusters if c in members]
                if service.service_account is None and runs:
                    self.diagnostics.append(notice(
                        service.location, service.path, f"service {service.key} has no "
                        f"serviceAccount: in Istio authorization it is every workload of "
                        f"namespace {service.namespace} in {', '.join(runs)} "
                        f"(<trust domain>/ns/{service.namespace}/sa/*); name the Kubernetes "
                        "service account its pods run as to admit exactly them"))

    # -- one requirement ------------------------------------------------------------------

    def authorizations(self, requirement: Requirement) -> Iterator[tuple[Cluster, Authorization]]:
        if requirement.ingress is None:
            return
        scope = [c for c in self.inventory.requirement_scope(requirement)
                 if trust_domain(self.inventory, c) is not None]
        if not scope:
            return
        protected = self.inventory.service_selected_by(requirement)
        namespace = self.inventory.policy_namespace(requirement)
        if protected is not None:
            selector: dict[str, str] | None = dict(protected.selector)
            namespace = protected.namespace
        else:
            selector = _pod_labels(requirement.endpoint_selector)
            if selector is None:
                self._once(warning, requirement.selector_location, "spec.endpointSelector",
                           f"Istio's AuthorizationPolicy selects pods by labels only, found "
                           "match expressions, namespace labels or another label source: no "
                           f"AuthorizationPolicy for requirement {requirement.key} in "
                           f"{', '.join(c.name for c in scope)}; Cilium alone enforces its "
                           "ingress")
                return
            if namespace is None:
                namespace = ISTIO_ROOT_NAMESPACE  # mesh-wide, like the cluster-wide policy
        raw = any(not peer.is_abstract for rule in requirement.ingress
                  for peer in rule.endpoints)
        for cluster in scope:
            # The principals depend on the cluster only through raw peers (its trust domain).
            memo = (id(requirement), trust_domain(self.inventory, cluster) if raw else None)
            known = self._rules_memo.get(memo)
            if known is None or known[0] is not requirement:
                known = self._rules_memo[memo] = (requirement,
                                                  self._rules(requirement, protected, cluster))
            yield cluster, Authorization(requirement, namespace, selector or None, known[1])

    def _rules(self, requirement: Requirement, protected: Service | None,
               cluster: Cluster) -> tuple[AuthorizationRule, ...]:
        by_ports: dict[tuple[int, ...] | None, set[str]] = {}
        for rule in requirement.ingress or ():
            ports = _tcp_ports(rule, protected)
            principals = self._rule_principals(requirement, rule, cluster)
            if ports is False or not principals:
                continue
            by_ports.setdefault(ports, set()).update(principals)
        rules = tuple(AuthorizationRule(tuple(sorted(principals)), ports)
                      for ports, principals in sorted(by_ports.items(), key=_ports_order))
        if len(rules) > MAX_RULES:  # a requirement with more than 512 distinct port lists
            merged: set[str] = set().union(*(r.principals for r in rules))
            rules = (AuthorizationRule(tuple(sorted(merged)), None),)
            self._once(warning, requirement.location, "spec.ingress", "Istio admits at most "
                       f"{MAX_RULES} rules per AuthorizationPolicy: requirement "
                       f"{requirement.key} has more distinct port lists, so its policy admits "
                       "its peers on every port (Cilium keeps the ports)")
        return rules

    def _rule_principals(self, requirement: Requirement, rule: Rule,
                         cluster: Cluster) -> set[str]:
        found: set[str] = set()
        for cidr in rule.cidrs:
            self._once(warning, cidr.location, cidr.path, f"a CIDR cannot be admitted by "
                       "workload identity: outside the mesh connections are plaintext, which "
                       f"STRICT mutual TLS refuses at the pods of {requirement.key} in Istio "
                       "members, and ipBlocks would see an east-west gateway's address rather "
                       "than the client's; the AuthorizationPolicy does not admit it, so "
                       f"traffic from {cidr.cidr} is refused unless it comes through an Istio "
                       "gateway: admit the gateway's pods as a peer instead")
        for peer in rule.endpoints:
            if peer.is_abstract:
                found.update(self._service_principals(requirement, peer, cluster))
            else:
                found.update(self._raw_principals(requirement, peer, cluster))
        return found

    def _service_principals(self, requirement: Requirement, peer: Peer,
                            cluster: Cluster) -> Iterator[str]:
        outside: list[str] = []
        for target in self.resolver.targets(peer.selector, requirement.domain, "ingress"):
            service = target.service
            domain = self.inventory.domain_by_name[service.domain]
            for name in target.clusters:
                runs_in = domain.cluster_by_name[name]
                td = trust_domain(self.inventory, runs_in)
                if td is None:
                    outside.append(f"{service.key}@{name}")
                    continue
                self._shared_trust_domain(requirement, peer, td)
                yield principal(td, service.namespace, service.service_account)
        if outside:
            self._once(warning, peer.location, peer.path, f"peer(s) {', '.join(outside)} run "
                       "in clusters that are not Istio members: their connections are "
                       f"plaintext, which STRICT mutual TLS refuses at the pods of "
                       f"{requirement.key} in Istio members; make those clusters Istio "
                       "members (or the flow stays blocked there)")

    def _shared_trust_domain(self, requirement: Requirement, peer: Peer, td: str) -> None:
        members = self.shared.get(td)
        if members:
            names = ", ".join(f"{c.domain}/{c.name}" for c in members)
            self._once(warning, peer.location, peer.path, f"clusters {names} share the trust "
                       f"domain '{td}': the AuthorizationPolicy of {requirement.key} cannot "
                       "tell them apart and admits this peer from all of them; the "
                       "CiliumNetworkPolicy keeps enforcing the clusters it names")

    def _raw_principals(self, requirement: Requirement, peer: Peer,
                        cluster: Cluster) -> list[str]:
        td = trust_domain(self.inventory, cluster)
        assert td is not None
        namespaces = _raw_peer_namespaces(peer.selector,
                                          self.inventory.policy_namespace(requirement))
        if namespaces is None:
            found = [any_namespace(td)]
            scope = "every namespace"
        else:
            found = [principal(td, ns, None) for ns in namespaces]
            scope = f"namespace {', '.join(namespaces)}"
        self._once(warning, peer.location, peer.path, f"a raw pod-label peer has no known "
                   f"service account: the AuthorizationPolicy of {requirement.key} admits "
                   f"every workload of {scope} in its cluster ({', '.join(found)} in "
                   f"{cluster.domain}/{cluster.name}); the CiliumNetworkPolicy keeps it to the "
                   "labelled pods (select an inventory service with a serviceAccount to admit "
                   "exactly it)")
        return found

    # -- objects --------------------------------------------------------------------------

    def _put_authorization(self, cluster: Cluster, authorization: Authorization) -> None:
        requirement = authorization.requirement
        ref = ClusterRef(cluster.domain, cluster.name)
        key = ObjectKey(ref, AUTHORIZATION_POLICY_KIND, authorization.namespace,
                        requirement.name)
        causes = (requirement.key,)
        shape = (id(requirement), authorization.namespace,
                 tuple(sorted((authorization.selector or {}).items())), authorization.rules)
        body = self._bodies.get(shape)
        if body is None:
            body = self._bodies[shape] = _with_required_by(authorization_body(authorization),
                                                           causes)
        existing = self.objects.get(key)
        if existing is not None and existing.body != body:
            self.diagnostics.append(_clash(key, requirement.location, existing))
            return
        self.objects[key] = Manifest(key, body, causes)

    def _put_peer_authentication(self, ref: ClusterRef, namespace: str,
                                 causes: Iterable[str]) -> None:
        ordered = tuple(sorted(causes))
        key = ObjectKey(ref, PEER_AUTHENTICATION_KIND, namespace, PEER_AUTHENTICATION_NAME)
        body = self._bodies.get((namespace, ordered))
        if body is None:
            body = self._bodies[(namespace, ordered)] = _with_required_by(
                peer_authentication_body(namespace), ordered)
        self.objects[key] = Manifest(key, body, ordered)

    def finish(self) -> dict[ClusterRef, tuple[Manifest, ...]]:
        by_cluster: dict[ClusterRef, list[Manifest]] = {}
        for key, manifest in self.objects.items():
            by_cluster.setdefault(key.cluster, []).append(manifest)
        return {ref: tuple(sorted(found, key=output_order))
                for ref, found in sorted(by_cluster.items())}


def _ports_order(item: tuple[tuple[int, ...] | None, set[str]]) -> tuple[int, tuple[int, ...]]:
    ports = item[0]
    return (0, ()) if ports is None else (1, ports)


def _clash(key: ObjectKey, where: Location, existing: Manifest) -> Diagnostic:
    return error(where, "", f"expected one {key.kind} {key.namespace}/{key.name} in "
                 f"{key.cluster.path}, found two that differ (also required by "
                 f"{', '.join(existing.required_by)}): rename one of the requirements")


def _with_required_by(body: Mapping[str, Any], causes: tuple[str, ...]) -> dict[str, Any]:
    metadata = body["metadata"]
    annotations = {**metadata.get("annotations", {}), REQUIRED_BY_ANNOTATION: ",".join(causes)}
    return {**body, "metadata": {**metadata, "annotations": annotations}}


def peer_authentication_body(namespace: str) -> dict[str, Any]:
    """``default`` STRICT in ``namespace`` (in the root namespace: the mesh-wide default)."""
    return {
        "apiVersion": ISTIO_SECURITY_API_VERSION,
        "kind": PEER_AUTHENTICATION_KIND,
        "metadata": {"name": PEER_AUTHENTICATION_NAME, "namespace": namespace,
                     "labels": dict(MANAGED_BY),
                     "annotations": {ARGOCD_SYNC_OPTIONS_ANNOTATION: SKIP_DRY_RUN}},
        "spec": {"mtls": {"mode": "STRICT"}},
    }


def authorization_body(authorization: Authorization) -> dict[str, Any]:
    """The AuthorizationPolicy of one requirement in one cluster (action ALLOW; no rules:
    allow-nothing)."""
    requirement = authorization.requirement
    spec: dict[str, Any] = {}
    if authorization.selector:
        spec["selector"] = {"matchLabels": dict(authorization.selector)}
    spec["action"] = "ALLOW"
    rules = []
    for rule in authorization.rules:
        body: dict[str, Any] = {"from": [{"source": {"principals": list(rule.principals)}}]}
        if rule.ports is not None:
            body["to"] = [{"operation": {"ports": [str(p) for p in rule.ports]}}]
        rules.append(body)
    if rules:
        spec["rules"] = rules
    return {
        "apiVersion": ISTIO_SECURITY_API_VERSION,
        "kind": AUTHORIZATION_POLICY_KIND,
        "metadata": {
            "name": requirement.name,
            "namespace": authorization.namespace,
            "labels": {**dict(requirement.labels), **MANAGED_BY},
            "annotations": {**dict(requirement.annotations),
                            SOURCE_ANNOTATION: requirement.file,
                            ARGOCD_SYNC_OPTIONS_ANNOTATION: SKIP_DRY_RUN},
        },
        "spec": spec,
    }


def with_identity_objects(plan: Plan, identity: IdentityPlan) -> Plan:
    """``plan`` with the identity layer's objects in their clusters."""
    if not identity.manifests:
        return plan
    clusters = []
    for cluster_plan in plan.clusters:
        extra = identity.manifests.get(cluster_plan.cluster)
        if extra:  # both sorted already: merged in one pass
            objects = heapq.merge(cluster_plan.objects, extra, key=output_order)
            cluster_plan = replace(cluster_plan, objects=tuple(objects))
        clusters.append(cluster_plan)
    return replace(plan, clusters=tuple(clusters))
