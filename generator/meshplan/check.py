"""Stage 4 — check: validate meaning across all documents, reporting every problem.

Structure was checked by :mod:`meshplan.schema`; here: uniqueness (domains, clusters, services,
mesh names and ids, requirement names), references (with "did you mean"), consent (another
domain's service must be exported to the requirement's domain), ownership (a requirement only
selects its own domain's pods), CIDR arithmetic, and fail-closed warnings for wildcards that
match nothing.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from typing import Literal, NamedTuple, TypeVar

from .admission import bare_key
from .diagnostics import Diagnostic, Location, error, warning
from .model import (
    CidrPeer,
    Domain,
    Inventory,
    Peer,
    Requirement,
    Rule,
    Selector,
    Service,
)
from .vocabulary import (
    ABSTRACT_KEYS,
    CILIUM_CLUSTER_LABEL,
    CLUSTER_KEY,
    CLUSTERWIDE_POLICY_KIND,
    DOMAIN_KEY,
    NAMESPACE_LABELS_PREFIX,
    POD_NAMESPACE_LABEL,
    SERVICE_KEY,
    WILDCARD,
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_inventory(
    inventory: Inventory, broken_domains: frozenset[str] = frozenset()
) -> list[Diagnostic]:
    """Every semantic problem of the inventory and the requirements, in one list.

    ``broken_domains`` names domains whose document already failed its structural check:
    references to them are not reported again as unknown (one typo, one error).
    """
    problems: list[Diagnostic] = []
    problems += _unique_domains(inventory.domains)
    for domain in inventory.domains:
        problems += _domain_problems(inventory, domain, broken_domains)
    problems += _mesh_identity_problems(inventory)
    problems += _pod_cidr_overlaps(inventory)
    problems += _unique_requirements(inventory.requirements)
    pod_networks = PodNetworks(inventory)
    for requirement in inventory.requirements:
        problems += RequirementChecker(inventory, requirement, broken_domains,
                                       pod_networks).problems()
    return problems


def did_you_mean(name: str, known: Iterable[str]) -> str:
    import difflib  # only when there is a mistake to word (start-up time)

    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _first_seen(location: Location) -> str:
    return f"{location.file}:{location.line}"


Record = TypeVar("Record")


def _repeated(
    records: Iterable[Record],
    key: Callable[[Record], object] = attrgetter("name"),
    where: Callable[[Record], Location] = attrgetter("location"),
) -> Iterator[tuple[Record, Location]]:
    """(record, where its key was first seen) for every record whose key was seen before."""
    seen: dict[object, Location] = {}
    for record in records:
        first = seen.setdefault(key(record), where(record))
        if first != where(record):
            yield record, first


# --------------------------------------------------------------------------- inventory


def _unique_domains(domains: Iterable[Domain]) -> Iterator[Diagnostic]:
    for domain, first in _repeated(domains):
        path = "metadata.name" if domain.form == "native" else "domain.name"
        yield error(domain.location, path, f"expected each domain once, found '{domain.name}' "
                    f"again (first defined at {_first_seen(first)})")


def _domain_problems(
    inventory: Inventory, domain: Domain, broken_domains: frozenset[str]
) -> Iterator[Diagnostic]:
    for cluster, first in _repeated(domain.clusters):
        yield error(cluster.location, f"{cluster.path}.name", "expected cluster names unique in "
                    f"domain '{domain.name}', found '{cluster.name}' again (first at "
                    f"{_first_seen(first)})")
    for cluster in domain.clusters:
        if len(cluster.mesh_name) > 32:
            yield error(cluster.location, f"{cluster.path}.{cluster.mesh_name_key}", "expected a "
                        "Cilium cluster name of at most 32 characters, found the default "
                        f"'{cluster.mesh_name}' ({len(cluster.mesh_name)}); set meshName "
                        "explicitly")
    for service, first in _repeated(domain.services):
        yield error(service.location, f"{service.path}.name", "expected service names unique in "
                    f"domain '{domain.name}', found '{service.name}' again (first at "
                    f"{_first_seen(first)})")
    for service in domain.services:
        yield from _service_problems(inventory, domain, service, broken_domains)


def _service_problems(
    inventory: Inventory, domain: Domain, service: Service, broken_domains: frozenset[str]
) -> Iterator[Diagnostic]:
    if not service.clusters:
        yield error(service.location, service.clusters_path, f"expected service '{service.name}' "
                    "to run in "
                    "at least one cluster, found none (thesis form: add it to servicesMap)")
    for i, (name, where) in enumerate(zip(service.clusters, service.cluster_locations,
                                          strict=True)):
        if name not in domain.cluster_by_name:
            yield error(where, f"{service.clusters_path}[{i}]", "expected a cluster of domain "
                        f"'{domain.name}', found '{name}'"
                        f"{did_you_mean(name, domain.cluster_by_name)}")
    if len(set(service.clusters)) != len(service.clusters):
        yield error(service.location, service.clusters_path, "expected each cluster once in "
                    f"service '{service.name}', found duplicates")
    for key, _ in service.selector:
        if key in (POD_NAMESPACE_LABEL, CILIUM_CLUSTER_LABEL) or key.startswith(
                NAMESPACE_LABELS_PREFIX):
            yield error(service.location, f"{service.path}.selector.{key}", "expected the "
                        f"service's own pod labels, found '{key}', a label Cilium derives for "
                        "every pod (write the namespace in namespace:, the clusters in "
                        "clusters:)")
    ports = [(p.port, p.protocol) for p in service.ports]
    if len(set(ports)) != len(ports):
        yield error(service.location, f"{service.path}.ports", "expected each port/protocol "
                    f"once in service '{service.name}', found duplicates")
    names = [p.name for p in service.ports if p.name]
    if len(set(names)) != len(names):
        yield error(service.location, f"{service.path}.ports", "expected unique port names in "
                    f"service '{service.name}', found duplicates")
    if len(service.ports) > 1 and len(names) != len(service.ports):
        yield error(service.location, f"{service.path}.ports", "expected every port of a "
                    "multi-port service to have a name (Kubernetes requires it), found unnamed "
                    "ports")
    for i, (name, where) in enumerate(zip(service.export_to, service.export_locations,
                                          strict=False)):
        known = name in inventory.domain_by_name or name in broken_domains
        if name != WILDCARD and not known:
            yield error(where, f"{service.path}.exportTo[{i}]", f"expected a domain name, found "
                        f"'{name}'{did_you_mean(name, inventory.domain_by_name)}")


def _mesh_identity_problems(inventory: Inventory) -> Iterator[Diagnostic]:
    clusters = [c for d in inventory.domains for c in d.clusters]
    for cluster, first in _repeated(clusters, attrgetter("mesh_name"),
                                    attrgetter("mesh_name_location")):
        yield error(cluster.mesh_name_location, f"{cluster.path}.{cluster.mesh_name_key}",
                    "expected Cilium cluster names unique across the mesh, found "
                    f"'{cluster.mesh_name}' again (first at {_first_seen(first)})")
    if inventory.mesh is not None:
        return  # ids need only be unique among connected clusters: meshplan.mesh.check
    with_ids = [c for c in clusters if c.mesh_id is not None]
    for cluster, first in _repeated(with_ids, attrgetter("mesh_id"),
                                    attrgetter("mesh_id_location")):
        yield error(cluster.mesh_id_location, f"{cluster.path}.meshId", "expected Cilium "
                    f"cluster ids unique across the mesh, found {cluster.mesh_id} again (first "
                    f"at {_first_seen(first)})")


def parse_network(text: str, where: Location, path: str) -> tuple[Network | None, list[Diagnostic]]:
    """A CIDR as written, or the diagnostic explaining why it is not one."""
    if "/" not in text:
        return None, [error(where, path, f"expected a CIDR with a prefix length such as "
                            f"10.0.0.0/8, found '{text}'")]
    try:
        return ipaddress.ip_network(text, strict=True), []
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None, [error(where, path, f"expected a CIDR such as 10.0.0.0/8, found '{text}'")]
    return None, [error(where, path, f"expected a network address, found '{text}' with host "
                        f"bits set (did you mean {loose}?)")]


class _PodNetwork(NamedTuple):
    order: int  # position in the inventory, to report at the later of two
    owner: str  # "domain/cluster"
    network: Network
    where: Location
    path: str


def _pod_cidr_overlaps(inventory: Inventory) -> Iterator[Diagnostic]:
    networks: list[_PodNetwork] = []
    for domain in inventory.domains:
        for cluster in domain.clusters:
            for i, (text, where) in enumerate(cluster.pod_cidrs):
                path = f"{cluster.path}.podCIDRs[{i}]"
                network, problems = parse_network(text, where, path)
                yield from problems
                if network is not None:
                    owner = f"{domain.name}/{cluster.name}"
                    networks.append(_PodNetwork(len(networks), owner, network, where, path))
    for a, b in _overlapping_pairs(networks):
        first, later = sorted((a, b))
        yield error(later.where, later.path, f"expected pod CIDRs that do not overlap across "
                    f"clusters, found {later.network} of {later.owner} overlapping "
                    f"{first.network} of {first.owner} ({_first_seen(first.where)})")


class _PodBlock(NamedTuple):
    version: int
    start: int
    end: int
    network: Network
    owner: str  # "domain/cluster"
    where: Location


class PodNetworks:
    """Every cluster's pod CIDRs, to find the ones an address block overlaps (by bisection:
    a requirement may name tens of thousands of blocks, a mesh a thousand clusters)."""

    def __init__(self, inventory: Inventory) -> None:
        self._index((f"{domain.name}/{cluster.name}", text, where)
                    for domain in inventory.domains for cluster in domain.clusters
                    for text, where in cluster.pod_cidrs)

    @classmethod
    def of(cls, cidrs: Iterable[tuple[str, str, Location]]) -> PodNetworks:
        """The pod networks ``cidrs``: (its cluster, ``"domain/cluster"``; the CIDR as written;
        where), as an inventory's clusters give them."""
        networks = cls.__new__(cls)
        networks._index(cidrs)
        return networks

    def _index(self, cidrs: Iterable[tuple[str, str, Location]]) -> None:
        blocks: list[_PodBlock] = []
        for owner, text, where in cidrs:
            try:
                net = ipaddress.ip_network(text, strict=True)
            except ValueError:
                continue  # reported by _pod_cidr_overlaps
            blocks.append(_PodBlock(net.version, int(net.network_address),
                                    int(net.broadcast_address), net, owner, where))
        blocks.sort()
        self.blocks = blocks
        self.starts = [(b.version, b.start) for b in blocks]
        # Requirements repeat a few blocks (10.0.0.0/8 over every pod network of the fleet):
        # each answer is computed once. (version, first, last, holes) -> the pod CIDRs.
        self._covered: dict[tuple[int, int, int, tuple[str, ...]], list[_PodBlock]] = {}

    def covered(self, network: Network, excepts: tuple[str, ...]) -> list[_PodBlock]:
        """The pod CIDRs ``network`` overlaps that none of its ``excepts`` (as written; the
        unreadable ones are reported elsewhere) contains, in address order."""
        memo = (network.version, int(network.network_address), int(network.broadcast_address),
                excepts)
        found = self._covered.get(memo)
        if found is None:
            found = self._covered[memo] = self._uncovered(self.overlapping(network), excepts)
        return found

    @staticmethod
    def _uncovered(blocks: list[_PodBlock], excepts: tuple[str, ...]) -> list[_PodBlock]:
        holes = []  # (version, first, last address) of each readable except
        for text in excepts if blocks else ():
            try:
                hole = ipaddress.ip_network(text, strict=False)
            except ValueError:
                continue
            holes.append((hole.version, int(hole.network_address),
                          int(hole.broadcast_address)))
        if not holes:
            return blocks
        return [b for b in blocks if not any(
            version == b.version and first <= b.start and b.end <= last
            for version, first, last in holes)]

    def overlapping(self, network: Network) -> list[_PodBlock]:
        """The pod CIDRs ``network`` overlaps, in address order."""
        lo, hi = int(network.network_address), int(network.broadcast_address)
        last = bisect.bisect_right(self.starts, (network.version, hi))
        out = []
        # Pod CIDRs do not overlap each other (else that is an error of its own): walking back
        # from the last one that starts inside the block, the first that ends before it ends
        # the search.
        for i in range(last - 1, -1, -1):
            block = self.blocks[i]
            if block.version != network.version or block.end < lo:
                break
            out.append(block)
        return out[::-1]


def _overlapping_pairs(networks: list[_PodNetwork]) -> Iterator[tuple[_PodNetwork, _PodNetwork]]:
    """Every pair of networks of different clusters that overlap.

    Sort by start address and sweep, keeping only the networks still open at the current
    start: O(n log n + overlaps) instead of comparing all pairs (half a million for a
    thousand clusters), and pod CIDRs that overlap are rare.
    """
    for version in (4, 6):
        ordered = sorted((n for n in networks if n.network.version == version),
                         key=lambda n: int(n.network.network_address))
        open_: list[_PodNetwork] = []
        for current in ordered:
            start = int(current.network.network_address)
            open_ = [n for n in open_ if int(n.network.broadcast_address) >= start]
            yield from ((earlier, current) for earlier in open_ if earlier.owner != current.owner)
            open_.append(current)


def written_keys(selector: Selector, path: str) -> list[tuple[str, str]]:
    """(key as written, its key path) of every label and expression key of a selector."""
    out = [(key, f"{path}.matchLabels.{key}") for key, _ in selector.match_labels]
    out += [(e.key, f"{path}.matchExpressions[{i}].key")
            for i, e in enumerate(selector.match_expressions)]
    return out


# --------------------------------------------------------------------------- requirements


def _unique_requirements(requirements: Iterable[Requirement]) -> Iterator[Diagnostic]:
    seen: dict[tuple[str, str, bool], Requirement] = {}
    for requirement in requirements:
        key = (requirement.domain, f"{requirement.namespace}/{requirement.name}",
               requirement.cluster_wide)
        first = seen.setdefault(key, requirement)
        if first is not requirement:
            yield error(requirement.location, "metadata.name", "expected requirement names "
                        f"unique per namespace in domain '{requirement.domain}', found "
                        f"'{requirement.name}' again (first at {_first_seen(first.location)})")


class RequirementChecker:
    """The checks of one requirement; small methods, each one rule."""

    def __init__(self, inventory: Inventory, requirement: Requirement,
                 broken_domains: frozenset[str] = frozenset(),
                 pod_networks: PodNetworks | None = None) -> None:
        self.inventory = inventory
        self.req = requirement
        self.domain = inventory.domain_by_name.get(requirement.domain)
        self.broken_domains = broken_domains
        self.pod_networks = pod_networks or PodNetworks(inventory)

    def problems(self) -> list[Diagnostic]:
        if self.domain is None and self.req.domain in self.broken_domains:
            return []  # its domain's document has errors of its own
        if self.domain is None:
            known = self.inventory.domain_by_name
            return [error(Location(self.req.file, 1, 1), "", "expected the folder "
                          f"requirements/{self.req.domain}/ to name a domain of the inventory, "
                          f"found no domain '{self.req.domain}'"
                          f"{did_you_mean(self.req.domain, known)}")]
        out = list(self._scope())
        out += self._endpoint_selector()
        out += self._empty_policy()
        for rule in (*(self.req.egress or ()), *(self.req.ingress or ())):
            out += self._rule(rule)
        return out

    def _scope(self) -> Iterator[Diagnostic]:
        assert self.domain is not None
        if self.req.clusters is None:
            return
        seen: set[str] = set()
        for name, where, path in zip(self.req.clusters, self.req.cluster_locations,
                                     self.req.cluster_paths, strict=True):
            if name in seen:
                yield error(where, path, f"expected each cluster once, found '{name}' again")
                continue
            seen.add(name)
            if name not in self.domain.cluster_by_name:
                yield error(where, path, f"expected a cluster of domain "
                            f"'{self.domain.name}', found '{name}'"
                            f"{did_you_mean(name, self.domain.cluster_by_name)}")

    def _endpoint_selector(self) -> Iterator[Diagnostic]:
        assert self.domain is not None
        selector = self.req.endpoint_selector
        where = self.req.selector_location
        labels = dict(selector.match_labels)
        if self.req.cluster_wide and self.req.namespace is not None:
            yield error(self.req.namespace_location, "metadata.namespace", "expected no "
                        "namespace (or \"*\") on a cluster-wide policy, found "
                        f"'{self.req.namespace}': the API server drops the namespace of a "
                        f"{CLUSTERWIDE_POLICY_KIND}, so it would apply to every namespace; use "
                        "kind Requirement for a policy in one namespace")
        for key, path in written_keys(selector, "spec.endpointSelector"):
            if bare_key(key) == CILIUM_CLUSTER_LABEL:
                yield error(where, path, "expected pod labels, found the Cilium cluster label "
                            f"'{key}': choose clusters with spec.clusters")
        if not selector.is_abstract:
            yield from self._subject_namespace()
            return
        extra = sorted(k for k in labels if k != SERVICE_KEY)
        if CLUSTER_KEY in labels or DOMAIN_KEY in labels or extra or selector.match_expressions:
            yield error(where, "spec.endpointSelector", "expected either {service: <name>} or "
                        "raw pod labels, found abstract labels mixed with others "
                        f"({', '.join(sorted(labels))}); choose clusters with spec.clusters")
            return
        yield from self._selected_service(labels[SERVICE_KEY])

    def _subject_namespace(self) -> Iterator[Diagnostic]:
        """A namespaced policy's subject is confined to the policy's namespace by Cilium,
        whatever its endpointSelector says: another namespace there would make the policy
        select nothing (its pods unrestricted), so it is an error, never silently nothing."""
        namespace = self.inventory.policy_namespace(self.req)
        if namespace is None:
            return  # cluster-wide: a namespace in the subject is a real restriction
        selector = self.req.endpoint_selector
        terms: list[tuple[str, str, tuple[str, ...], str]]
        terms = [(key, "In", (value,), path) for (key, value), (_, path) in zip(
            selector.match_labels, written_keys(Selector(selector.match_labels), "spec."
                                                "endpointSelector"), strict=True)]
        terms += [(e.key, e.operator, e.values, f"spec.endpointSelector.matchExpressions[{i}]")
                  for i, e in enumerate(selector.match_expressions)]
        for key, operator, values, path in terms:
            if bare_key(key) != POD_NAMESPACE_LABEL or (operator, values) == ("In", (namespace,)):
                continue
            found = f"'{values[0]}'" if operator == "In" and len(values) == 1 else \
                f"{operator} [{', '.join(values)}]" if values else operator
            yield error(self.req.selector_location, path, "expected no namespace in the "
                        f"endpointSelector, or the policy's own namespace '{namespace}' "
                        f"(metadata.namespace, default when unset), found {found}: Cilium "
                        "confines a policy's subject to its own namespace, so this one would "
                        "select no pod and leave them unrestricted; set metadata.namespace "
                        "instead (one requirement per namespace, or \"*\" for a cluster-wide "
                        "policy)")

    def _selected_service(self, name: str) -> Iterator[Diagnostic]:
        assert self.domain is not None
        where = self.req.selector_location
        service = self.domain.service_by_name.get(name)
        if service is None:
            owner = next((d for d in self.inventory.domains if name in d.service_by_name), None)
            if owner is not None:
                yield error(where, "spec.endpointSelector.matchLabels.service", "expected a "
                            f"service of domain '{self.domain.name}', found '{name}' of domain "
                            f"'{owner.name}': a requirement can only select its own domain's "
                            "pods")
            else:
                yield error(where, "spec.endpointSelector.matchLabels.service", "expected a "
                            f"service of domain '{self.domain.name}', found '{name}'"
                            f"{did_you_mean(name, self.domain.service_by_name)}")
            return
        if name == WILDCARD:
            return
        if self.req.namespace is not None and self.req.namespace != service.namespace:
            yield error(self.req.namespace_location, "metadata.namespace", "expected the "
                        f"namespace of service '{name}' ({service.namespace}) or none, found "
                        f"'{self.req.namespace}'")
        for cluster, where_c, path in zip(self.req.clusters or (), self.req.cluster_locations,
                                          self.req.cluster_paths, strict=False):
            if cluster in self.domain.cluster_by_name and cluster not in service.clusters:
                yield error(where_c, path, f"expected a cluster where service "
                            f"'{name}' runs ({', '.join(service.clusters)}), found '{cluster}'")

    def _empty_policy(self) -> Iterator[Diagnostic]:
        if self.req.egress is None and self.req.ingress is None:
            yield warning(self.req.location, "spec", "requirement has neither egress nor "
                          "ingress rules, so it restricts nothing")

    def _rule(self, rule: Rule) -> Iterator[Diagnostic]:
        peers_key = "toEndpoints" if rule.direction == "egress" else "fromEndpoints"
        cidrs_key = "toCIDRSet" if rule.direction == "egress" else "fromCIDRSet"
        if rule.has_endpoints and rule.has_cidrs:
            yield error(rule.location, rule.path, f"expected {peers_key} or "
                        f"{cidrs_key} in one rule, found both (Cilium cannot combine them: "
                        "write two rules)")
        elif not rule.has_endpoints and not rule.has_cidrs:
            yield error(rule.location, rule.path, f"expected {peers_key} or "
                        f"{cidrs_key}, found only toPorts (that would allow every destination)")
        for peer in rule.endpoints:
            yield from self._peer(peer, rule.direction, peers_key)
        for cidr in rule.cidrs:
            yield from self._cidr(cidr, rule.direction, cidrs_key)

    def _peer(self, peer: Peer, direction: Literal["egress", "ingress"],
              key: str) -> Iterator[Diagnostic]:
        labels = dict(peer.selector.match_labels)
        path = peer.path or f"spec.{direction}.{key}"
        selector = peer.selector
        names_cluster = any(bare_key(k) == CILIUM_CLUSTER_LABEL for k, _ in selector.match_labels)
        names_cluster |= any(bare_key(e.key) == CILIUM_CLUSTER_LABEL
                             for e in selector.match_expressions)
        cluster_keys = [(k, p) for k, p in written_keys(selector, path)
                        if bare_key(k) == CILIUM_CLUSTER_LABEL] if names_cluster else []
        for written, where in cluster_keys:
            yield error(peer.location, where, "expected the abstract label 'cluster', found the "
                        f"raw Cilium label '{written}' (raw cluster labels, in any spelling, "
                        "would bypass the consent of the cluster's domain)")
        if cluster_keys:
            return
        if not peer.is_abstract:
            yield from self._raw_peer_namespace(peer, path)
            return  # its labels were checked with the structure (meshplan.admission)
        raw = sorted(k for k in labels if k not in ABSTRACT_KEYS)
        if peer.selector.match_expressions:
            raw.append("matchExpressions")
        if raw:
            yield error(peer.location, path, "expected either abstract labels (service, "
                        f"cluster, domain) or raw pod labels, found both ({', '.join(raw)})")
            return
        yield from self._abstract_peer(peer, labels, path, direction)

    def _raw_peer_namespace(self, peer: Peer, path: str) -> Iterator[Diagnostic]:
        """A namespace expression other than In makes a peer reach across namespaces."""
        for i, e in enumerate(peer.selector.match_expressions):
            if bare_key(e.key) != POD_NAMESPACE_LABEL or e.operator == "In":
                continue
            meaning = ("no pod (every pod has a namespace)" if e.operator == "DoesNotExist"
                       else "pods of every namespace" if e.operator == "Exists"
                       else f"pods of every namespace but {', '.join(e.values)}")
            yield warning(peer.location, f"{path}.matchExpressions[{i}]", "peer selects "
                          f"{meaning} of its cluster: a peer that names a namespace is not pinned "
                          "to the policy's namespace, by Cilium nor by meshplan")

    def _abstract_peer(self, peer: Peer, labels: dict[str, str], path: str,
                       direction: Literal["egress", "ingress"]) -> Iterator[Diagnostic]:
        domain_name = labels.get(DOMAIN_KEY, self.req.domain)
        target = self.inventory.domain_by_name.get(domain_name)
        if target is None and domain_name in self.broken_domains:
            return
        if domain_name == WILDCARD or target is None:
            hint = did_you_mean(domain_name, self.inventory.domain_by_name)
            yield error(peer.location, f"{path}.matchLabels.domain", "expected a domain name, "
                        f"found '{domain_name}'{hint}")
            return
        cluster = labels.get(CLUSTER_KEY, WILDCARD)
        if cluster != WILDCARD and cluster not in target.cluster_by_name:
            yield error(peer.location, f"{path}.matchLabels.cluster", f"expected a cluster of "
                        f"domain '{target.name}', found '{cluster}'"
                        f"{did_you_mean(cluster, target.cluster_by_name)}")
            return
        service_name = labels.get(SERVICE_KEY, WILDCARD)
        if service_name != WILDCARD:
            yield from self._named_service_peer(peer, target, service_name, cluster, path,
                                                direction)
            return
        if not self.inventory.resolve_peer(peer.selector, self.req.domain, direction=direction):
            scope = (f"cluster '{cluster}' of " if cluster != WILDCARD else "") + \
                    f"domain '{target.name}'"
            visible = f" visible to domain '{self.req.domain}'" if direction == "egress" else ""
            yield warning(peer.location, path, f"peer matches no service{visible} in {scope}, "
                          "so it allows nothing")

    def _named_service_peer(
        self, peer: Peer, target: Domain, name: str, cluster: str, path: str,
        direction: Literal["egress", "ingress"],
    ) -> Iterator[Diagnostic]:
        service = target.service_by_name.get(name)
        if service is None:
            yield error(peer.location, f"{path}.matchLabels.service", f"expected a service of "
                        f"domain '{target.name}', found '{name}'"
                        f"{did_you_mean(name, target.service_by_name)}")
            return
        # exportTo governs who may call a service; admitting it at ingress needs no consent.
        if direction == "egress" and not service.exported_to(self.req.domain):
            yield error(peer.location, f"{path}.matchLabels.service", f"expected a service "
                        f"exported to domain '{self.req.domain}', found '{name}' of domain "
                        f"'{target.name}' ({_first_seen(service.location)}), which does not "
                        f"list '{self.req.domain}' in exportTo (exportTo is needed to call a "
                        "service, not to admit it at ingress)")
            return
        if cluster != WILDCARD and cluster not in service.clusters:
            yield error(peer.location, f"{path}.matchLabels.cluster", f"expected a cluster "
                        f"where service '{name}' runs ({', '.join(service.clusters)}), found "
                        f"'{cluster}'")

    def _cidr(self, cidr: CidrPeer, direction: str, key: str) -> Iterator[Diagnostic]:
        path = cidr.path or f"spec.{direction}.{key}"
        network, problems = parse_network(cidr.cidr, cidr.location, f"{path}.cidr")
        yield from problems
        if network is not None:
            yield from self._cidr_covers_pods(cidr, network, path)
        for text, where in zip(cidr.excepts, cidr.except_locations, strict=True):
            inner, inner_problems = parse_network(text, where, f"{path}.except")
            yield from inner_problems
            if network is None or inner is None:
                continue
            if inner.version != network.version or not inner.subnet_of(network):  # type: ignore[arg-type]
                yield error(where, f"{path}.except", f"expected a CIDR inside {network}, found "
                            f"'{text}'")

    def _cidr_covers_pods(self, cidr: CidrPeer, network: Network,
                          path: str) -> Iterator[Diagnostic]:
        """Cilium never matches an endpoint that has an identity (any pod of the mesh) by
        CIDR: a block over a pod network reaches none of its pods."""
        covered = self.pod_networks.covered(network, cidr.excepts)
        if not covered:
            return
        shown = "; ".join(f"{b.network} of {b.owner} ({_first_seen(b.where)})"
                          for b in covered[:3])
        more = f"; and {len(covered) - 3} more" if len(covered) > 3 else ""
        what = "the pod CIDR" if len(covered) == 1 else f"the pod CIDRs of {len(covered)} clusters"
        yield warning(cidr.location, f"{path}.cidr", f"expected an address block outside "
                      f"the pod networks, found {network} overlapping {what}: {shown}{more}. "
                      "Cilium never matches pods (of any cluster of the mesh) by CIDR, so this "
                      "rule reaches none of them; to reach pods, name their service "
                      "({service: ..., cluster: ...})")
