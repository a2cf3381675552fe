"""The namespaces meshplan makes STRICT (mutual TLS required by a PeerAuthentication).

:func:`strict_namespaces` is a STAND-IN, to be replaced by the identity layer's function at
merge (issue 12). The identity layer renders exactly one namespace-wide STRICT
``PeerAuthentication`` in every namespace (of an Istio-member cluster) that holds a workload
meshplan protects or that calls across clusters; monitoring must alert on plaintext into
exactly those namespaces, so both must come from one function. Until the branches meet,
:func:`strict_namespaces` computes that set here by the same rule; the merger replaces its
body with a call to the identity layer's function (same result type), and nothing else in
:mod:`meshplan.observability` changes. :func:`namespace_causes` stays: it says which
requirements put a namespace there, for the alerts' annotations.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..mesh.plan import MeshPlan
from ..model import Inventory, Requirement
from ..refine import ClusterRef

NamespaceRef = tuple[ClusterRef, str]  # (cluster, namespace)


def strict_namespaces(mesh: MeshPlan) -> Mapping[ClusterRef, frozenset[str]]:
    """STAND-IN (see the module docstring): for each Istio member, the namespaces meshplan
    makes STRICT; members without any are left out."""
    found: dict[ClusterRef, set[str]] = {}
    for ref, namespace in namespace_causes(mesh.inventory):
        if ref in mesh.istio_refs:
            found.setdefault(ref, set()).add(namespace)
    return {ref: frozenset(names) for ref, names in found.items()}


def namespace_causes(inventory: Inventory) -> Mapping[NamespaceRef, tuple[Requirement, ...]]:
    """The namespaces whose workloads take part in an intended flow, each with the
    requirements that say so (sorted by key), in every cluster (Istio member or not).

    A namespace takes part in a cluster when a requirement protects workloads there (its
    policy's namespace, in each cluster of its scope; a cluster-wide requirement names no
    namespace), or when a service there is admitted at ingress by a requirement whose scope
    includes another cluster (it calls across clusters). Egress callers are the protected
    workloads of their own requirements, so the first rule covers them.
    """
    found: dict[NamespaceRef, dict[str, Requirement]] = {}
    for requirement in inventory.requirements:
        if requirement.egress is None and requirement.ingress is None:
            continue  # restricts nothing, protects nothing (no policy is rendered for it)
        scope = [ClusterRef(c.domain, c.name) for c in inventory.requirement_scope(requirement)]
        namespace = inventory.policy_namespace(requirement)
        if namespace is not None:
            for ref in scope:
                found.setdefault((ref, namespace), {})[requirement.key] = requirement
        for caller in _ingress_callers(inventory, requirement, scope):
            found.setdefault(caller, {})[requirement.key] = requirement
    return {where: tuple(by_key[k] for k in sorted(by_key)) for where, by_key in found.items()}


def _ingress_callers(inventory: Inventory, requirement: Requirement,
                     scope: list[ClusterRef]) -> set[NamespaceRef]:
    """Where the services a requirement admits at ingress run, when they call across
    clusters (some cluster of the scope is not their own)."""
    callers: set[NamespaceRef] = set()
    for rule in requirement.ingress or ():
        for peer in rule.endpoints:
            if not peer.is_abstract or peer.selector.match_expressions:
                continue  # raw pod labels: pods of the requirement's own cluster
            for target in inventory.resolve_peer(peer.selector, requirement.domain,
                                                 direction="ingress"):
                for name in target.clusters:
                    caller = ClusterRef(target.service.domain, name)
                    if any(ref != caller for ref in scope):
                        callers.add((caller, target.service.namespace))
    return callers
