"""Services as Cilium ClusterMesh load-balances them: which backends a client's connection to a
Service name can reach, and the clients for whom only some of those are allowed.

Cilium translates a Service's address to one backend pod before any policy sees the packet, so
a flow "to a Service" is a flow to whichever backend the load-balancer picks. A cluster's copy
of a Service has its own (local) backends; when the copy is global
(``service.cilium.io/global: "true"``) it also gets the backends of every other cluster whose
copy is global and shared (``service.cilium.io/shared``, true when absent); the legacy
``io.cilium/`` spellings are read too (:func:`~meshplan.admission.cilium_service_flags`).
Affinity (``service.cilium.io/affinity``) is a preference with fail-over, never a
restriction, so it is not modelled as one (clustermesh/services.rst, affinity.rst;
pkg/clustermesh testdata); the values some releases read as a restriction are a warning
(:func:`unmodelled_affinity`).

Not modelled: Cilium's global-namespace filtering (``clustermesh.cilium.io/global`` on the
Namespace, when the agent filters by it) can keep a global copy's remote backends out; verify
then counts backends Cilium never uses. meshplan annotates the namespaces it renders as
global; a namespace it does not render (a service's home) is the owning team's to annotate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..admission import cilium_service_flags
from ..diagnostics import Diagnostic, Location, error, warning
from ..load.document import Spot
from ..vocabulary import AFFINITY_ANNOTATION, AFFINITY_ANNOTATION_ALIAS
from .connectivity import Connectivity, Direction
from .endpoints import Endpoint, EndpointIndex
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
    # ClusterMesh exports its pods (when global): service.cilium.io/shared not false, and no
    # label HEADLESS_LABEL (the releases that filter such Services out of their watch export
    # nothing of them; fail closed)
    shared: bool
    ports: PortSet  # the pods' ports it forwards to (each entry's targetPort, else its port)
    # the ports a client calling the Service's name reaches a pod on the same port (an entry
    # whose targetPort is its port, as meshplan writes them): what a call by name needs
    exposed: PortSet
    # why Cilium gives it no frontend, "" when it does (its agent's isHeadless: the label
    # service.kubernetes.io/headless, whatever its value, or spec.clusterIP "none" in any
    # case): HEADLESS_BY_CLUSTER_IP (clients connect to the pod addresses DNS answers its
    # name with) or another reason (its name resolves to no pod); see backends
    headless: str
    where: Location | Spot  # a Spot is looked up when shown (compared as its document)

    @property
    def location(self) -> Location:
        return self.where if isinstance(self.where, Location) else self.where.location()

    @property
    def resolves_to_pods(self) -> bool:
        """Its name resolves to its pods (``clusterIP: None``, the only spelling Kubernetes
        admits), not to an address Cilium serves."""
        return self.headless == HEADLESS_BY_CLUSTER_IP


HEADLESS_LABEL = "service.kubernetes.io/headless"
# Cilium handles a Service carrying this label only when it equals the agent's
# k8s-service-proxy-name (empty by default: it handles the Services without the label)
SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
HEADLESS_BY_CLUSTER_IP = "clusterIP: None"
# what headless_reason adds to a clusterIP spelt "none" otherwise when the label is there too
HEADLESS_LABEL_TOO = f" and label {HEADLESS_LABEL}"


def headless_reason(labels: Mapping[Any, Any], cluster_ip: object) -> str:
    """Why Cilium's agent and ClusterMesh API server (``isHeadless``) give a Service no
    frontend, "" when they do: its ``clusterIP`` spelt "none" in any case (Kubernetes admits
    "None" only; DNS then answers its name with its pods), else its label
    :data:`HEADLESS_LABEL` whatever its value ("A service that is annotated as headless has
    no frontends, even if the service spec contains ClusterIPs")."""
    if isinstance(cluster_ip, str) and cluster_ip.lower() == "none":
        # the label too, said where it matters: it keeps the Service headless once the
        # spelling the API server rejects is left out (the advice of _unheadless)
        labelled = HEADLESS_LABEL in labels and cluster_ip != "None"
        return f"clusterIP: {cluster_ip}" + (HEADLESS_LABEL_TOO if labelled else "")
    return f"label {HEADLESS_LABEL}" if HEADLESS_LABEL in labels else ""


MODELLED_AFFINITIES = ("", "local", "remote")  # what every Cilium release reads alike


def unmodelled_affinity(annotations: Mapping[Any, Any]) -> tuple[str, object] | None:
    """The (key, value) of a global Service's affinity annotation when its value is one whose
    meaning depends on the Cilium release, else None.

    The agent reads the value as it reads the flags (the new key, else the alias; ignored
    unless global) and lowercases it. ClusterMesh's backend selection
    (``pkg/clustermesh/selectbackends.go``) uses every backend for "", prefers local or
    remote ones for "local" and "remote"; any other value, "none" (the documented default)
    included, makes Cilium 1.18, and 1.19 before the backport of PR #46635, use the local
    backends only, remote ones dropped (cilium/cilium#46623); since that fix "none" reads as
    "", and any other value too, with a warning in the agent's log.
    verify models every backend (a preference restricts nothing), so such a value is a
    model it may not match. A value that is not a string is not one: Kubernetes admits only
    strings, and :mod:`.cilium` reports it as an error instead."""
    if not cilium_service_flags(annotations)[0]:
        return None
    for key in (AFFINITY_ANNOTATION, AFFINITY_ANNOTATION_ALIAS):
        if key in annotations:
            value = annotations[key]
            if not isinstance(value, str) or value.lower() in MODELLED_AFFINITIES:
                return None
            return key, value
    return None


def backends(copies: Sequence[ServiceCopy], endpoints: Sequence[Endpoint],
             index: EndpointIndex | None = None) -> dict[ServiceCopy, tuple[int, ...]]:
    """Every copy's backends (endpoint indices): its local pods, plus, for a global copy that
    is not headless, the local pods of every other global and shared copy of the same
    namespace/name. ``index``: the endpoints' :class:`.endpoints.EndpointIndex`, when already
    built.

    A copy Cilium gives no frontend though it has a cluster IP (its label
    :data:`HEADLESS_LABEL`) has none: its name resolves to an address nothing load-balances;
    so too one whose ``clusterIP`` is "none" spelt otherwise (Kubernetes rejects it).
    A headless copy with no cluster IP has the pods DNS answers its name with in its cluster: its
    local pods, and the remote ones only where the Cilium operator writes the remote
    clusters' EndpointSlices into it (``clustermesh.enableEndpointSliceSynchronization``,
    beta and off by default, then on for a global headless Service unless
    ``service.cilium.io/global-sync-endpoint-slices: "false"``; clustermesh/services.rst,
    ``pkg/clustermesh/endpointslicesync``), which the rendered tree does not say: verify
    counts the local ones only (a call by name that needs remote pods is then an error, not
    a silent pass), and :mod:`.cilium` warns at a global one. A global and shared
    headless copy still gives its pods to the other clusters' global copies: ClusterMesh
    exports it like any global Service (the EndpointSlice synchronisation reads it there)."""
    index = EndpointIndex(endpoints) if index is None else index.of(endpoints)
    local: list[tuple[int, ...]] = []
    shared: dict[tuple[str, str], set[int]] = {}  # the pods global, shared copies give
    for copy in copies:
        selector = copy.selector
        mine = () if selector is None else tuple(index.with_labels(
            index.in_place(copy.domain, copy.cluster, copy.namespace), selector))
        local.append(mine)
        if copy.is_global and copy.shared:
            shared.setdefault((copy.namespace, copy.name), set()).update(mine)
    out: dict[ServiceCopy, tuple[int, ...]] = {}
    ordered: dict[tuple[str, str], tuple[int, ...]] = {}  # each shared set, in index order
    for copy, mine in zip(copies, local, strict=True):
        # local pods are in index order already; a global copy also gets every global and
        # shared copy's (its own among them when it is shared)
        if copy.headless and not copy.resolves_to_pods:  # nothing serves its address
            out[copy] = ()
            continue
        if not copy.is_global or copy.headless:
            out[copy] = mine
            continue
        name = (copy.namespace, copy.name)
        if mine and not copy.shared:
            out[copy] = tuple(sorted(shared.get(name, set()).union(mine)))
            continue
        found = ordered.get(name)
        if found is None:
            found = ordered[name] = tuple(sorted(shared.get(name, ())))
        out[copy] = found
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
    named: dict[tuple[Direction, int], frozenset[int]] = {}

    def named_by(direction: Direction, subject: int) -> frozenset[int]:
        found = named.get((direction, subject))
        if found is None:
            found = named[(direction, subject)] = actual.named(direction, subject)
        return found

    ingress_defaults: dict[int, PortSet] = {}

    def ingress_default(backend: int) -> PortSet:
        found = ingress_defaults.get(backend)
        if found is None:
            found = ingress_defaults[backend] = actual.default("ingress", backend)
        return found

    # Per copy, per caller (a client's service level): the backends (endpoint indices) some
    # client of it reaches, and those some client of it finds blocked. Each copy's are all
    # found in one pass of the loop below, so the copies and their callers keep the order
    # they are first found in.
    groups: dict[ServiceCopy, dict[str, tuple[set[int], set[int]]]] = {}

    def add(mine: dict[str, tuple[set[int], set[int]]], callers: Iterable[str],
            reached: Iterable[int], dropped: Iterable[int]) -> None:
        for caller in callers:
            found = mine.get(caller)
            if found is None:
                found = mine[caller] = (set(), set())
            found[0].update(reached)
            found[1].update(dropped)

    # The clients of each cluster by their egress default, and who names a pod at egress.
    # A client that no backend's ingress rules name, and whose egress rules name no backend,
    # gets both defaults from every backend (Connectivity.named): the backends it is allowed
    # then depend only on its egress default, and are found once per copy and default.
    # Port sets are numbered by value (a number hashes faster than a PortSet).
    numbers: dict[PortSet, int] = {}
    by_default: dict[tuple[str, str], dict[PortSet, list[int]]] = {}
    egress_defaults: dict[int, PortSet] = {}
    egress_namers: dict[int, list[int]] = {}
    for key, members in clients.items():
        classes = by_default[key] = {}
        for i in members:
            default = egress_defaults[i] = actual.default("egress", i)
            classes.setdefault(default, []).append(i)
            for b in named_by("egress", i):
                egress_namers.setdefault(b, []).append(i)
    numbered = {key: [(numbers.setdefault(default, len(numbers)), default, members)
                      for default, members in classes.items()]
                for key, classes in by_default.items()}
    meets: dict[tuple[int, int], bool] = {}  # whether two numbered port sets intersect

    if serving is None:
        serving = backends(copies, endpoints)
    # The copies of one global Service pick from the same backends in every cluster: what
    # depends only on the backends (and the ports) is found once for all of them.
    specials: dict[tuple[int, ...], tuple[frozenset[int], frozenset[int]]] = {}
    allowed_by_class: dict[tuple[tuple[int, ...], int, int], tuple[list[int], list[int]]] = {}
    for copy, picked in serving.items():
        if len(picked) < 2 or not copy.ports:
            continue
        key = (copy.domain, copy.cluster)
        if key not in clients:
            continue
        ports = copy.ports
        port_number = numbers.setdefault(ports, len(numbers))
        known = specials.get(picked)
        if known is None:
            found: set[int] = set()  # named by a backend's ingress or naming one at egress
            for b in picked:
                found.update(named_by("ingress", b))
                found.update(egress_namers.get(b, ()))
            known = specials[picked] = (frozenset(picked), frozenset(found))
        picked_set, special = known
        mine: dict[str, tuple[set[int], set[int]]] = {}
        for default_number, egress_default, members in numbered[key]:
            both = (default_number, port_number)
            meet = meets.get(both)
            if meet is None:
                meet = meets[both] = bool(egress_default & ports)
            if not meet:
                continue  # no backend allowed to a client that names none
            class_key = (picked, default_number, port_number)
            split = allowed_by_class.get(class_key)
            if split is None:
                allowed_here = [b for b in picked
                                if egress_default & ingress_default(b) & ports]
                split = allowed_by_class[class_key] = (
                    allowed_here, [b for b in picked if b not in allowed_here])
            allowed_here, dropped_here = split
            if not allowed_here or len(allowed_here) == len(picked):
                continue
            # every such client reaches the same backends: once per caller
            add(mine, dict.fromkeys(endpoints[i].service_level for i in members
                                    if i not in special and i not in picked_set),
                allowed_here, dropped_here)
        for i in special.intersection(clients[key]) - picked_set:
            # By classes: a backend its egress rules do not name gets the egress default,
            # so when that allows none of the ports only the named backends can be allowed.
            egress_named = named_by("egress", i)
            egress_default = egress_defaults[i]
            reachable: Iterable[int] = picked if egress_default & ports else [
                b for b in picked if b in egress_named]
            allowed: set[int] = set()
            for b in reachable:
                # By sides: a pod a side's rules do not name gets that side's default
                # (Connectivity.named), so only a naming side is evaluated (most often the
                # client's egress alone: its rules name the backends, theirs not the client)
                out_ports = actual.verdict_ports("egress", i, b) if b in egress_named \
                    else egress_default
                if not out_ports & ports:
                    continue
                in_ports = actual.verdict_ports("ingress", b, i) \
                    if i in named_by("ingress", b) else ingress_default(b)
                if out_ports & in_ports & ports:
                    allowed.add(b)
            if allowed and len(allowed) != len(picked):
                add(mine, (endpoints[i].service_level,), allowed,
                    [b for b in picked if b not in allowed])
        if mine:
            groups[copy] = mine
    found_groups = []
    for copy, mine in groups.items():
        location = copy.location  # looked up once per copy (a Spot finds it each time)
        for caller, (reached, dropped) in mine.items():
            found_groups.append((location, caller, copy, reached, dropped))
    found_groups.sort(key=lambda g: (g[0], g[1]))
    out = []
    for location, caller, copy, reached, dropped in found_groups:
        blocked_titles = ", ".join(sorted({endpoints[b].title for b in dropped}))
        allowed_titles = ", ".join(sorted({endpoints[b].title for b in reached}))
        if copy.headless:  # no cluster IP: the client picks among the addresses DNS gives
            kind, how = "headless", ("DNS answers its name with the addresses of all of them "
                                     "and the client connects to the one it picks")
        else:
            kind, how = "global", ("Cilium load-balances every connection to any of them "
                                   "(affinity is only a preference)")
        out.append(warning(location, "", f"expected every backend of the {kind} Service "
                           f"{copy.namespace}/{copy.name} of {copy.domain}/{copy.cluster} to be "
                           f"allowed for {caller}, which may call it there, found "
                           f"{blocked_titles} blocked and {allowed_titles} allowed: {how}, so "
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
    # Two passes: the first finds each call's answer and keeps only the failures (rare), the
    # second, only when there are some, which of their keys another call reaches. A key is
    # reported (with its first failing call) exactly when no call of it reaches a copy.
    failed: dict[tuple[Location, str, str, str, str], NamedCall] = {}
    reaching: list[NamedCall] = []  # the checked calls that reach a copy
    # Many calls share their pods (a service's, in the clusters its peer names): the
    # clusters of a set of pods are found once.
    places: dict[frozenset[int], frozenset[tuple[str, str]]] = {}
    for call in calls:
        pods = call.pods
        if not pods:
            continue  # nothing to reach
        domain, cluster = call.domain, call.cluster
        local = places.get(pods)
        if local is None:
            local = places[pods] = frozenset((endpoints[i].domain, endpoints[i].cluster)
                                             for i in pods)
        if (domain, cluster) in local:
            continue  # local backends
        for copy, picked in by_name.get((domain, cluster, call.namespace, call.name), ()):
            if not pods.isdisjoint(picked) and copy.exposed.covers(call.ports):
                reaching.append(call)
                break
        else:
            failed.setdefault((call.where, domain, cluster, call.namespace, call.name), call)
    reached: set[tuple[Location, str, str, str, str]] = set()
    if failed:
        names = {key[1:] for key in failed}
        for call in reaching:
            service = (call.domain, call.cluster, call.namespace, call.name)
            if service in names:  # a key (and its location's hash) only for these
                reached.add((call.where, *service))
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
                             f"{f', headless by {copy.headless}' if copy.headless else ''}"
                             f", backends: {', '.join(titles[:3]) + more or 'none'})")
            exposing = [str(copy.exposed or "no port") for copy, picked in found
                        if not call.pods.isdisjoint(picked)]
            if exposing:  # the pods are behind it, not on the ports called
                reason = (f"found {'; '.join(shown)} exposing {' and '.join(exposing)} by "
                          f"name: a client calling it on {call.ports} reaches no pod there")
            elif any(copy.headless and not copy.resolves_to_pods for copy, _ in found):
                reason = (f"found {'; '.join(shown)}: Cilium gives a headless Service no "
                          "frontend, even with a cluster IP, and DNS answers its name with its "
                          "pods only when its spec.clusterIP is None, so the name resolves to "
                          "none of the service's pods; " + "; ".join(sorted(
                              {_unheadless(copy.headless) for copy, _ in found
                               if copy.headless and not copy.resolves_to_pods})))
            elif any(copy.headless for copy, _ in found):
                reason = (f"found {'; '.join(shown)}: a headless Service's name resolves to "
                          "the pods of its cluster's EndpointSlices, which hold the remote "
                          "clusters' only where the Cilium operator synchronises them "
                          "(clustermesh.enableEndpointSliceSynchronization, off by default), "
                          "which verify cannot see, so it counts the local pods only and the "
                          "call reaches none of the service's pods; for ClusterMesh to "
                          "load-balance it, give the Service a cluster IP: spec.clusterIP is "
                          "immutable, so delete the Service and create it again without "
                          "clusterIP: None")
            else:
                reason = (f"found {'; '.join(shown)}: ClusterMesh gives a copy the remote "
                          "backends only when it is global, so the call reaches none of the "
                          "service's pods")
        out.append(error(call.where, "", f"{expected}, {reason}"))
    return out


def _unheadless(headless: str) -> str:
    """The advice for a copy Cilium reads as headless for the reason ``headless`` (not
    :data:`HEADLESS_BY_CLUSTER_IP`): drop its label, or spell its clusterIP as Kubernetes
    does (the API server rejects any other spelling), or leave it out and drop the label it
    has too (which keeps it headless to Cilium)."""
    if headless.startswith("clusterIP: "):
        written = headless.removeprefix("clusterIP: ").removesuffix(HEADLESS_LABEL_TOO)
        return (f"spec.clusterIP {written} is rejected by the API server: write None for DNS "
                "to answer its name with its pods, or leave it out"
                + (f" and drop the label {HEADLESS_LABEL}" if headless.endswith(
                    HEADLESS_LABEL_TOO) else "") + " for Cilium to load-balance it")
    return f"drop the label {HEADLESS_LABEL} for Cilium to load-balance it"
