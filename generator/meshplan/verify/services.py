"""Services as Cilium ClusterMesh load-balances them: which backends a client's connection to a
Service name can reach, and the clients for whom only some of those are allowed.

Cilium translates a Service's address to one backend pod before any policy sees the packet, so
a flow "to a Service" is a flow to whichever backend the load-balancer picks. A cluster's copy
of a Service has its own (local) backends; when the copy is global
(``service.cilium.io/global: "true"``) it also gets the backends of every other cluster whose
copy is global and shared (``service.cilium.io/shared``, true unless "false"). Affinity
(``service.cilium.io/affinity``) is a preference with fail-over, never a restriction, so it is
not modelled as one (clustermesh/services.rst, affinity.rst; pkg/clustermesh testdata).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..diagnostics import Diagnostic, Location, error, warning
from ..load.document import Spot
from .connectivity import Connectivity, Direction
from .endpoints import Endpoint
from .ports import PortSet


@dataclass(frozen=True)
class ServiceCopy:
    """One rendered ``Service`` object of one cluster."""

    domain: str
    cluster: str
    namespace: str
    name: str
    selector: tuple[tuple[str, str], ...] | None  # None: no selector (no local backends)
    is_global: bool
    shared: bool
    ports: PortSet  # the pods' ports it forwards to (each entry's targetPort, else its port)
    # the ports a client calling the Service's name reaches a pod on the same port (an entry
    # whose targetPort is its port, as meshplan writes them): what a call by name needs
    exposed: PortSet
    where: Location | Spot  # a Spot is looked up when shown (compared as its document)

    @property
    def location(self) -> Location:
        return self.where if isinstance(self.where, Location) else self.where.location()


def backends(copies: Sequence[ServiceCopy], endpoints: Sequence[Endpoint]) -> dict[
        ServiceCopy, tuple[int, ...]]:
    """Every copy's backends (endpoint indices): its local pods, plus, for a global copy, the
    local pods of every other global and shared copy of the same namespace/name."""
    pods: dict[tuple[str, str, str], list[tuple[int, dict[str, str]]]] = {}
    # the pods of a namespace by one label: candidates for a selector with that label
    by_label: dict[tuple[str, str, str, str, str], list[tuple[int, dict[str, str]]]] = {}
    for i, e in enumerate(endpoints):
        if e.is_pod:
            pod = (i, dict(e.labels))
            pods.setdefault((e.domain, e.cluster, e.namespace), []).append(pod)
            for k, v in pod[1].items():
                by_label.setdefault((e.domain, e.cluster, e.namespace, k, v), []).append(pod)
    local: list[tuple[int, ...]] = []
    shared: dict[tuple[str, str], set[int]] = {}  # the pods global, shared copies give
    for copy in copies:
        selector = copy.selector
        if not selector:
            candidates = pods.get((copy.domain, copy.cluster, copy.namespace), [])
        else:
            candidates = by_label.get((copy.domain, copy.cluster, copy.namespace,
                                       *selector[0]), [])
        mine = () if selector is None else tuple(
            i for i, labels in candidates if all(labels.get(k) == v for k, v in selector))
        local.append(mine)
        if copy.is_global and copy.shared:
            shared.setdefault((copy.namespace, copy.name), set()).update(mine)
    out: dict[ServiceCopy, tuple[int, ...]] = {}
    for copy, mine in zip(copies, local, strict=True):
        # local pods are in index order already; a global copy also gets every global and
        # shared copy's (its own among them when it is shared)
        out[copy] = tuple(sorted(shared.get((copy.namespace, copy.name), set()).union(mine))) \
            if copy.is_global else mine
    return out


def load_balancing_problems(actual: Connectivity, copies: Sequence[ServiceCopy],
                            serving: Mapping[ServiceCopy, tuple[int, ...]] | None = None
                            ) -> list[Diagnostic]:
    """Clients of a cluster allowed to some, but not all, backends its copy of a Service picks
    from: part of their connections will be dropped, at random. ``serving``: the copies'
    :func:`backends`, when already found."""
    endpoints = actual.endpoints
    clients: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(endpoints):
        if e.kind in ("service", "client"):
            clients.setdefault((e.domain, e.cluster), []).append(i)
    groups: dict[tuple[ServiceCopy, str], tuple[set[str], set[str]]] = {}
    named: dict[tuple[Direction, int], frozenset[int]] = {}

    def named_by(direction: Direction, subject: int) -> frozenset[int]:
        found = named.get((direction, subject))
        if found is None:
            found = named[(direction, subject)] = actual.named(direction, subject)
        return found

    def flow(client: int, backend: int) -> PortSet:
        # By classes: a pod neither side's rules name gets both defaults (Connectivity.named)
        if backend not in named_by("egress", client) and \
                client not in named_by("ingress", backend):
            return actual.default("egress", client) & actual.default("ingress", backend)
        return actual.flow(client, backend)

    titles: dict[int, str] = {}

    def title(b: int) -> str:
        found = titles.get(b)
        if found is None:
            found = titles[b] = endpoints[b].title
        return found

    def add(copy: ServiceCopy, client: int, picked: Sequence[int],
            allowed: Collection[int]) -> None:
        reached, dropped = groups.setdefault((copy, endpoints[client].service_level),
                                             (set(), set()))
        reached.update(title(b) for b in allowed)
        dropped.update(title(b) for b in picked if b not in allowed)

    def add_class(copy: ServiceCopy, clients: Iterable[int], picked: Sequence[int],
                  allowed: Collection[int]) -> None:
        """:func:`add` for clients that all reach ``allowed`` of ``picked``."""
        reached = [title(b) for b in allowed]
        dropped = [title(b) for b in picked if b not in allowed]
        for client in clients:
            found = groups.setdefault((copy, endpoints[client].service_level), (set(), set()))
            found[0].update(reached)
            found[1].update(dropped)

    # The clients of each cluster by their egress default, and who names a pod at egress.
    # A client that no backend's ingress rules name, and whose egress rules name no backend,
    # gets both defaults from every backend (Connectivity.named): the backends it is allowed
    # then depend only on its egress default, and are found once per copy and default.
    by_default: dict[tuple[str, str], dict[PortSet, list[int]]] = {}
    egress_namers: dict[int, list[int]] = {}
    for key, members in clients.items():
        classes = by_default[key] = {}
        for i in members:
            classes.setdefault(actual.default("egress", i), []).append(i)
            for b in named_by("egress", i):
                egress_namers.setdefault(b, []).append(i)

    if serving is None:
        serving = backends(copies, endpoints)
    # The copies of one global Service pick from the same backends in every cluster: what
    # depends only on the backends (and the ports) is found once for all of them.
    specials: dict[tuple[int, ...], tuple[frozenset[int], frozenset[int]]] = {}
    allowed_by_class: dict[tuple[tuple[int, ...], PortSet, PortSet], list[int]] = {}
    for copy, picked in serving.items():
        if len(picked) < 2 or not copy.ports:
            continue
        key = (copy.domain, copy.cluster)
        if key not in clients:
            continue
        ports = copy.ports
        known = specials.get(picked)
        if known is None:
            found: set[int] = set()  # named by a backend's ingress or naming one at egress
            for b in picked:
                found.update(named_by("ingress", b))
                found.update(egress_namers.get(b, ()))
            known = specials[picked] = (frozenset(picked), frozenset(found))
        picked_set, special = known
        for egress_default, members in by_default[key].items():
            if not egress_default & ports:
                continue  # no backend allowed to a client that names none
            class_key = (picked, egress_default, ports)
            allowed_here = allowed_by_class.get(class_key)
            if allowed_here is None:
                allowed_here = allowed_by_class[class_key] = [
                    b for b in picked if egress_default & actual.default("ingress", b) & ports]
            allowed: Collection[int] = allowed_here
            if not allowed or len(allowed) == len(picked):
                continue
            add_class(copy, (i for i in members if i not in special and i not in picked_set),
                      picked, allowed)
        for i in special.intersection(clients[key]) - picked_set:
            # By classes: a backend its egress rules do not name gets the egress default,
            # so when that allows none of the ports only the named backends can be allowed.
            if actual.default("egress", i) & ports:
                reachable: Iterable[int] = picked
            else:
                reachable = [b for b in picked if b in named_by("egress", i)]
            allowed = {b for b in reachable if flow(i, b) & ports}
            if allowed and len(allowed) != len(picked):
                add(copy, i, picked, allowed)
    out = []
    for (copy, caller), (reached, dropped) in sorted(groups.items(), key=lambda g: (
            g[0][0].location, g[0][1])):
        out.append(warning(copy.location, "", f"expected every backend of the global Service "
                           f"{copy.namespace}/{copy.name} of {copy.domain}/{copy.cluster} to be "
                           f"allowed for {caller}, which may call it there, found "
                           f"{', '.join(sorted(dropped))} blocked and "
                           f"{', '.join(sorted(reached))} allowed: Cilium load-balances every "
                           "connection to any of them (affinity is only a preference), so "
                           "part of the connections will be dropped, at random"))
    return out


class NamedCall(NamedTuple):
    """Clients of one cluster that call a service by its name: an egress peer naming it
    (``service: x``) in a requirement whose pods there it selects."""

    where: Location  # the requirement's peer
    requirement: str
    domain: str  # the clients'
    cluster: str
    service: str  # the service's key
    namespace: str
    name: str
    pods: frozenset[int]  # the service's intended pods (endpoint indices)
    ports: PortSet  # the service's ports the requirement lets them call


def name_problems(calls: Iterable[NamedCall], endpoints: Sequence[Endpoint],
                  serving: Mapping[ServiceCopy, tuple[int, ...]]) -> list[Diagnostic]:
    """Clients that call a service by name where their cluster has no copy of its Service
    whose backends (``serving``: :func:`backends`) include any of the service's intended
    pods on every port they may call (:attr:`ServiceCopy.exposed`): the name does not
    resolve there, resolves to none of them, or not on those ports. Clients with a local pod
    of the service are not checked (their cluster's own Service is not meshplan's output).
    Reported once per requirement peer, client cluster and Service."""
    by_name: dict[tuple[str, str, str, str], list[tuple[ServiceCopy, tuple[int, ...]]]] = {}
    for copy, picked in serving.items():
        by_name.setdefault((copy.domain, copy.cluster, copy.namespace, copy.name),
                           []).append((copy, picked))
    reached: set[tuple[Location, str, str, str, str]] = set()
    failed: dict[tuple[Location, str, str, str, str], NamedCall] = {}
    for call in calls:
        pods = call.pods
        if not pods:
            continue  # nothing to reach
        domain, cluster = call.domain, call.cluster
        if any(endpoints[i].cluster == cluster and endpoints[i].domain == domain
               for i in pods):
            continue  # local backends
        key = (call.where, domain, cluster, call.namespace, call.name)
        if any(not pods.isdisjoint(picked) and copy.exposed.covers(call.ports)
               for copy, picked in by_name.get(key[1:], ())):
            reached.add(key)
        else:
            failed.setdefault(key, call)
    out = []
    for key, call in failed.items():
        if key in reached:
            continue  # grouped: the copy reaches some of the pods another call named
        namespace, name = call.namespace, call.name
        expected = (f"expected {call.domain}/{call.cluster} to have a Service {namespace}/{name} "
                    f"whose backends include a pod of service {call.service}, which requirement "
                    f"{call.requirement} lets clients there call by that name")
        found = by_name.get(key[1:], [])
        if not found:
            reason = "found no such Service in the rendered output: the name will not resolve"
        else:
            shown = []
            for copy, picked in found:
                titles = sorted(endpoints[i].title for i in picked)
                more = f" and {len(titles) - 3} more" if len(titles) > 3 else ""
                shown.append(f"{copy.location} (global: {'true' if copy.is_global else 'not true'}"
                             f", backends: {', '.join(titles[:3]) + more or 'none'})")
            exposing = [str(copy.exposed or "no port") for copy, picked in found
                        if not call.pods.isdisjoint(picked)]
            if exposing:  # the pods are behind it, not on the ports called
                reason = (f"found {'; '.join(shown)} exposing {' and '.join(exposing)} by "
                          f"name: a client calling it on {call.ports} reaches no pod there")
            else:
                reason = (f"found {'; '.join(shown)}: ClusterMesh gives a copy the remote "
                          "backends only when it is global, so the call reaches none of the "
                          "service's pods")
        out.append(error(call.where, "", f"{expected}, {reason}"))
    return out
