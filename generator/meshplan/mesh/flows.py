"""Intended cross-cluster flows: which cluster pairs the requirements need to talk.

The one place that answers it, for the mesh plan (``peers: needed``), for the refusal of a flow
with no path, and for proposing cluster IDs. A requirement intends a flow from each cluster of
its scope (the clusters its policy goes to, exactly as refinement computes them) to each cluster
where an egress service peer runs, and from each cluster where an ingress service peer runs to
each cluster of its scope. Raw pod-label peers mean pods of the requirement's own cluster, and
CIDR peers are outside the mesh, so neither adds a cluster pair. A requirement that restricts
nothing intends nothing (refinement renders no policy for it either).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, NamedTuple

from ..diagnostics import Location
from ..model import Inventory, Labels, Requirement, Rule, Selector
from ..refine import ClusterRef


class FlowCause(NamedTuple):
    """Where a flow is first intended: the requirement and the peer that names the far side."""

    requirement: str  # Requirement.key
    location: Location
    path: str  # key path of the peer, e.g. "spec.egress[0].toEndpoints[1]"


Pair = tuple[ClusterRef, ClusterRef]  # (source cluster, destination cluster), never equal


@dataclass(frozen=True)
class IntendedFlows:
    """Directed cluster pairs with an intended flow, each with its first cause."""

    causes: Mapping[Pair, FlowCause]

    @cached_property
    def neighbours(self) -> Mapping[ClusterRef, frozenset[ClusterRef]]:
        """For each cluster, the clusters it has an intended flow with, in either direction."""
        found: dict[ClusterRef, set[ClusterRef]] = {}
        for source, destination in self.causes:
            found.setdefault(source, set()).add(destination)
            found.setdefault(destination, set()).add(source)
        return {ref: frozenset(others) for ref, others in found.items()}

    @cached_property
    def into(self) -> Mapping[ClusterRef, frozenset[ClusterRef]]:
        """For each cluster, the clusters with an intended flow into it."""
        found: dict[ClusterRef, set[ClusterRef]] = {}
        for source, destination in self.causes:
            found.setdefault(destination, set()).add(source)
        return {ref: frozenset(sources) for ref, sources in found.items()}

    def between(self, a: ClusterRef, b: ClusterRef) -> Iterator[tuple[Pair, FlowCause]]:
        """The intended flows between two clusters, either direction (a -> b first)."""
        for pair in ((a, b), (b, a)):
            cause = self.causes.get(pair)
            if cause is not None:
                yield pair, cause


def intended_cluster_flows(inventory: Inventory) -> IntendedFlows:
    """Every intended cross-cluster flow of the inventory's requirements."""
    resolver = _TargetClusters(inventory)
    causes: dict[Pair, FlowCause] = {}
    for requirement in inventory.requirements:
        if requirement.egress is None and requirement.ingress is None:
            continue
        scope = [ClusterRef(c.domain, c.name) for c in inventory.requirement_scope(requirement)]
        if not scope:
            continue
        key = requirement.key
        for rule in (*(requirement.egress or ()), *(requirement.ingress or ())):
            for targets, location, path in resolver.rule_targets(requirement, rule):
                if rule.direction == "egress":
                    _add(causes, scope, targets, FlowCause(key, location, path))
                else:
                    _add(causes, targets, scope, FlowCause(key, location, path))
    return IntendedFlows(causes)


def _add(causes: dict[Pair, FlowCause], sources: Iterable[ClusterRef],
         destinations: Iterable[ClusterRef], cause: FlowCause) -> None:
    for source in sources:
        for destination in destinations:
            if source != destination:
                causes.setdefault((source, destination), cause)


class _TargetClusters:
    """The clusters a service peer's services run in, resolved once per (peer labels, domain)."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self._memo: dict[tuple[Labels, str, str], tuple[ClusterRef, ...]] = {}

    def rule_targets(self, requirement: Requirement, rule: Rule
                     ) -> Iterator[tuple[tuple[ClusterRef, ...], Location, str]]:
        for peer in rule.endpoints:
            if not peer.is_abstract or peer.selector.match_expressions:
                continue  # raw pod labels: the requirement's own cluster
            targets = self._resolve(peer.selector, requirement.domain, rule.direction)
            if targets:
                yield targets, peer.location, peer.path

    def _resolve(self, selector: Selector, from_domain: str,
                 direction: Literal["egress", "ingress"]) -> tuple[ClusterRef, ...]:
        # Abstract peers have labels only; consent depends on the direction (exportTo is
        # about calling), so the direction is part of the key.
        key = (selector.match_labels, from_domain, direction)
        found = self._memo.get(key)
        if found is None:
            refs = {ClusterRef(t.service.domain, c)
                    for t in self.inventory.resolve_peer(selector, from_domain,
                                                         direction=direction)
                    for c in t.clusters}
            found = self._memo[key] = tuple(sorted(refs))
        return found
