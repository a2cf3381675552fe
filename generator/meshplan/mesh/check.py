"""Refuse a mesh that cannot work: every problem a located diagnostic, all in one run.

Two passes, like the rest of validation:

* :func:`check_mesh_inputs` - what the documents alone decide (runs with every other check):
  Cilium cluster names and IDs per the chart's rules (``templates/validate.yaml``: at most 32
  characters, the name regex, not ``default``, IDs 1-255 or 1-511 by ``maxConnectedClusters``),
  members without an address or an ID, the shared CA, native routing against pod CIDRs,
  Istio members without a network or trust domain, a missing Istio root CA, settings that
  need a section of the Mesh document that is missing.
* :func:`check_mesh_plan` - what needs the plan (runs once everything else is valid): more
  members in one connected set than ``maxConnectedClusters`` allows, IDs not unique among a
  member and the members it connects to, and every intended cross-cluster flow without a path
  (neither ClusterMesh peers nor Istio members on different networks joined by east-west
  gateways).

Without a Mesh document only two things are checked, so that nothing else changes: IDs above
255 (the domain schema admits 511 for meshes that set ``maxConnectedClusters: 511``) and
``clustermesh`` / ``istio`` entries, which are ignored (a warning says so).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from ..check import _first_seen, _repeated, parse_network
from ..diagnostics import Diagnostic, Location, error, warning
from ..model import Cluster, Inventory
from ..refine import ClusterRef

if TYPE_CHECKING:  # the Mesh document's and the plan's modules only with a Mesh document
    from .model import CiliumSettings, IstioSettings, Mesh
    from .plan import MeshPlan

RESERVED_CLUSTER_NAME = "default"  # the chart refuses it for any cluster.id other than 0
DEFAULT_MAX_CLUSTERS = 255
NODE_PORT_RANGE = range(30000, 32768)  # Kubernetes' default service-node-port-range
LOAD_BALANCER_PORT = 2379  # the clustermesh-apiserver Service port (not configurable)
PROPOSE_HINT = "run `meshplan mesh propose-ids` for a proposal"


def _clusters(inventory: Inventory) -> list[Cluster]:
    return [c for d in inventory.domains for c in d.clusters]


def _name(cluster: Cluster) -> str:
    return f"{cluster.domain}/{cluster.name}"


# --------------------------------------------------------------------------- inputs


def check_mesh_inputs(inventory: Inventory, *, ids_optional: bool = False) -> list[Diagnostic]:
    """Every problem the Mesh document and the clusters' mesh entries show on their own."""
    mesh = inventory.mesh
    clusters = _clusters(inventory)
    if mesh is None:
        return [*_ids_in_range(clusters, DEFAULT_MAX_CLUSTERS, None),
                *_entries_without_mesh(clusters)]
    problems: list[Diagnostic] = []
    limit = mesh.cilium.max_connected_clusters if mesh.cilium else DEFAULT_MAX_CLUSTERS
    problems += _ids_in_range(clusters, limit, mesh)
    cilium_members = [c for c in clusters if c.clustermesh is not None]
    istio_members = [c for c in clusters if c.istio is not None]
    problems += _sections(mesh, cilium_members, istio_members)
    if mesh.cilium is not None:
        problems += _cilium_settings(mesh.cilium)
        problems += _all_members_connected(mesh.cilium, cilium_members)
        for cluster in cilium_members:
            problems += _cilium_member(mesh.cilium, cluster, ids_optional=ids_optional)
        problems += _unique_addresses(cilium_members)
    if mesh.istio is not None:
        problems += _istio_settings(mesh)
        for cluster in istio_members:
            problems += _istio_member(cluster)
        problems += _istio_shared_settings(istio_members)
        problems += _unique_gateway_addresses(istio_members)
    return problems


def _ids_in_range(clusters: Iterable[Cluster], limit: int, mesh: Mesh | None
                  ) -> Iterator[Diagnostic]:
    for cluster in clusters:
        if cluster.mesh_id is not None and cluster.mesh_id > limit:
            if mesh is None:
                why = "a Mesh document setting maxConnectedClusters: 511 allows up to 511"
            elif mesh.cilium is None:
                why = "up to 511 needs spec.cilium.maxConnectedClusters: 511"
            else:
                why = f"maxConnectedClusters is {limit} in {mesh.file}"
            yield error(cluster.mesh_id_location, f"{cluster.path}.meshId", "expected a Cilium "
                        f"cluster id from 1 to {limit} ({why}), found the number "
                        f"{cluster.mesh_id}")


def _entries_without_mesh(clusters: Iterable[Cluster]) -> Iterator[Diagnostic]:
    entries = [(c, c.clustermesh or c.istio) for c in clusters if c.clustermesh or c.istio]
    if entries:
        first, entry = entries[0]
        assert entry is not None
        key = "clustermesh" if first.clustermesh is not None else "istio"
        yield warning(entry.location, f"{first.path}.{key}", "clustermesh and istio entries "
                      f"({len(entries)} cluster(s)) are ignored without a Mesh document "
                      "(inventory/mesh.yaml): no mesh plan is rendered")


def _sections(mesh: Mesh, cilium_members: list[Cluster], istio_members: list[Cluster]
              ) -> Iterator[Diagnostic]:
    yield from _section(mesh, "cilium", mesh.cilium, cilium_members, "a ClusterMesh member",
                        "clustermesh", "no ClusterMesh is rendered")
    yield from _section(mesh, "istio", mesh.istio, istio_members, "an Istio member", "istio",
                        "no Istio control plane is rendered")
    if mesh.cilium is None and mesh.istio is None and mesh.observability is None:
        yield warning(mesh.location, "spec", "a Mesh document with neither cilium nor istio "
                      "(nor observability) renders nothing")


def _section(mesh: Mesh, name: str, settings: CiliumSettings | IstioSettings | None,
             members: list[Cluster], member: str, entry: str, unused: str
             ) -> Iterator[Diagnostic]:
    """A member needs its section of the Mesh document; a section without members is unused."""
    if settings is None:
        for cluster in members:
            where = cluster.clustermesh if entry == "clustermesh" else cluster.istio
            assert where is not None
            yield error(where.location, f"{cluster.path}.{entry}", f"expected spec.{name} in "
                        f"the Mesh document ({mesh.file}) for {member}, found no {name} section")
    elif not members:
        article = "an" if entry[0] in "aeiou" else "a"
        yield warning(settings.location, f"spec.{name}", f"no cluster has {article} {entry} "
                      f"entry: {unused}")


def _cilium_settings(cilium: CiliumSettings) -> Iterator[Diagnostic]:
    from .model import CILIUM_CA_SECRET

    if cilium.ca_secret is None and cilium.ca_issuer is None:
        yield error(cilium.location, "spec.cilium.ca", "expected the shared ClusterMesh CA "
                    f"(ca: {{existingSecret: {CILIUM_CA_SECRET}}} or ca: {{certManagerIssuer: "
                    "{kind, name}}), found none: every member must trust every other member's "
                    "clustermesh-apiserver certificates, and the chart's default (method helm) "
                    "makes a new CA on every Argo CD render")
    elif cilium.ca_secret is not None and cilium.ca_secret != CILIUM_CA_SECRET:
        yield error(cilium.ca_location, "spec.cilium.ca.existingSecret", "expected "
                    f"'{CILIUM_CA_SECRET}' (the chart's certgen reads the shared CA only from "
                    f"Secret {CILIUM_CA_SECRET}), found '{cilium.ca_secret}'")
    cidr = cilium.native_routing_cidr
    if cilium.routing_mode == "native" and cidr is None:
        yield error(cilium.location, "spec.cilium.nativeRoutingCIDR", "expected "
                    "nativeRoutingCIDR with routingMode native (a CIDR covering every member's "
                    "pod CIDRs), found none")
    elif cilium.routing_mode == "tunnel" and cidr is not None:
        yield warning(cilium.native_routing_cidr_location, "spec.cilium.nativeRoutingCIDR",
                      "nativeRoutingCIDR is ignored with routingMode tunnel")
    elif cidr is not None:
        network, problems = parse_network(cidr, cilium.native_routing_cidr_location,
                                          "spec.cilium.nativeRoutingCIDR")
        yield from problems
        if network is not None and network.version != 4:
            yield error(cilium.native_routing_cidr_location, "spec.cilium.nativeRoutingCIDR",
                        f"expected an IPv4 CIDR (ipv4NativeRoutingCIDR), found {cidr}")


def _cilium_member(cilium: CiliumSettings, cluster: Cluster, *, ids_optional: bool
                   ) -> Iterator[Diagnostic]:
    endpoint = cluster.clustermesh
    assert endpoint is not None
    if cluster.mesh_name == RESERVED_CLUSTER_NAME:
        yield error(cluster.mesh_name_location, f"{cluster.path}.{cluster.mesh_name_key}",
                    "expected a Cilium cluster name other than 'default' for a ClusterMesh "
                    "member (the chart refuses 'default' with a cluster id), found 'default'")
    if cluster.mesh_id is None and not ids_optional:
        yield error(endpoint.location, f"{cluster.path}.meshId", "expected a Cilium cluster id "
                    f"(meshId, 1 to {cilium.max_connected_clusters}) for ClusterMesh member "
                    f"{_name(cluster)}, found none; {PROPOSE_HINT}")
    yield from _address(cluster)
    yield from _port(cilium, cluster)
    if cilium.routing_mode == "native" and cilium.native_routing_cidr is not None:
        yield from _pod_cidrs_routed(cilium, cluster)


def _address(cluster: Cluster) -> Iterator[Diagnostic]:
    endpoint = cluster.clustermesh
    assert endpoint is not None
    path = f"{cluster.path}.clustermesh.address"
    if endpoint.address is None:
        yield error(endpoint.location, path, "expected the address of the cluster's "
                    "clustermesh-apiserver (an IP or a DNS name reserved in advance: every "
                    f"peer's values carry it), found none for {_name(cluster)}")
    elif not is_ip(endpoint.address) and not is_dns_name(endpoint.address):
        yield error(endpoint.address_location, path, "expected an IP address or a DNS name, "
                    f"found '{endpoint.address}'")


def _port(cilium: CiliumSettings, cluster: Cluster) -> Iterator[Diagnostic]:
    endpoint = cluster.clustermesh
    assert endpoint is not None
    port, path = endpoint.port, f"{cluster.path}.clustermesh.port"
    if port is None:
        return
    if cilium.apiserver_service == "NodePort" and port not in NODE_PORT_RANGE:
        yield warning(endpoint.port_location, path, f"expected a node port (30000-32767 by "
                      f"default) with apiserverService NodePort, found {port}: the Service "
                      "is refused unless the cluster's node port range includes it")
    if cilium.apiserver_service == "LoadBalancer" and port != LOAD_BALANCER_PORT:
        yield warning(endpoint.port_location, path, f"the clustermesh-apiserver LoadBalancer "
                      f"listens on {LOAD_BALANCER_PORT}; port {port} only works behind a "
                      "front that translates it")


def _pod_cidrs_routed(cilium: CiliumSettings, cluster: Cluster) -> Iterator[Diagnostic]:
    routed, _ = parse_network(str(cilium.native_routing_cidr), cilium.location, "")
    if routed is None:
        return
    if not cluster.pod_cidrs:
        yield warning(cluster.location, f"{cluster.path}.podCIDRs", "with routingMode native "
                      f"every member's pod CIDRs must lie in {routed}; {_name(cluster)} lists "
                      "none, so this cannot be checked")
    for i, (text, where) in enumerate(cluster.pod_cidrs):
        network, _ = parse_network(text, where, "")
        if network is None:
            continue  # reported by the inventory check
        if network.version != routed.version or not network.subnet_of(routed):  # type: ignore[arg-type]
            yield error(where, f"{cluster.path}.podCIDRs[{i}]", f"expected a pod CIDR inside "
                        f"nativeRoutingCIDR {routed} (routingMode native routes only that range "
                        f"between clusters), found {network}")


def _unique_addresses(members: list[Cluster]) -> Iterator[Diagnostic]:
    entries = [(c, c.clustermesh.address, c.clustermesh.address_location)
               for c in members if c.clustermesh and c.clustermesh.address]
    yield from _distinct_addresses(entries, "clustermesh.address",
                                   "a clustermesh-apiserver address of its own for each member")


def _distinct_addresses(entries: list[tuple[Cluster, str, Location]], key_path: str,
                        expected: str) -> Iterator[Diagnostic]:
    """An error at each address a member repeats (compared case-insensitively: DNS names
    are), pointing at the first member that has it."""
    for (cluster, address, where), first in _repeated(
            entries, key=lambda e: e[1].lower(), where=lambda e: e[2]):
        yield error(where, f"{cluster.path}.{key_path}", f"expected {expected}, found "
                    f"'{address}' again (first at {_first_seen(first)})")


def _istio_settings(mesh: Mesh) -> Iterator[Diagnostic]:
    from .model import ISTIO_CA_SECRET

    istio = mesh.istio
    assert istio is not None
    if istio.root_ca_secret is None:
        yield error(istio.location, "spec.istio.rootCA", "expected the Istio root CA "
                    f"(rootCA: {{existingSecret: {ISTIO_CA_SECRET}}}: a shared root with an "
                    "intermediate per cluster, created out of band), found none: without a "
                    "common root the members reject each other's certificates")
    elif istio.root_ca_secret != ISTIO_CA_SECRET:
        yield error(istio.root_ca_location, "spec.istio.rootCA.existingSecret", "expected "
                    f"'{ISTIO_CA_SECRET}' (istiod plugs in a CA only from Secret "
                    f"{ISTIO_CA_SECRET} in istio-system), found '{istio.root_ca_secret}'")


def _istio_member(cluster: Cluster) -> Iterator[Diagnostic]:
    entry = cluster.istio
    assert entry is not None
    address = entry.gateway_address
    if address is not None and not is_ip(address):
        yield error(entry.gateway_location or entry.location,
                    f"{cluster.path}.istio.eastWestGateway.address", "expected the reserved "
                    "IP address of the east-west gateway's load balancer, found "
                    f"'{address}': CiliumNetworkPolicies match addresses, and a DNS name "
                    "would need toFQDNs with Cilium's DNS proxy, which meshplan does not "
                    "render; reserve a static IP")
    for i, (text, where) in enumerate(entry.egress_cidrs):
        _, problems = parse_network(text, where, f"{cluster.path}.istio.egressCIDRs[{i}]")
        yield from problems
    if not entry.network:
        yield error(entry.location, f"{cluster.path}.istio.network", "expected the Istio "
                    f"network of {_name(cluster)} (clusters whose pods reach each other "
                    "directly share one), found none")
    if not entry.trust_domain:
        yield error(entry.location, f"{cluster.path}.istio.trustDomain", "expected the trust "
                    f"domain of {_name(cluster)} (its own, so that authorization can tell "
                    "clusters apart), found none")


def _unique_gateway_addresses(members: list[Cluster]) -> Iterator[Diagnostic]:
    entries = [(c, c.istio.gateway_address, c.istio.gateway_location or c.istio.location)
               for c in members if c.istio and c.istio.gateway_address]
    yield from _distinct_addresses(
        entries, "istio.eastWestGateway.address",
        "an east-west gateway address of its own for each Istio member")


def _istio_shared_settings(members: list[Cluster]) -> Iterator[Diagnostic]:
    entries = [(c, c.istio.trust_domain, c.istio.location)
               for c in members if c.istio and c.istio.trust_domain]
    for (cluster, domain, where), first in _repeated(entries, key=lambda e: e[1],
                                                     where=lambda e: e[2]):
        yield warning(where, f"{cluster.path}.istio.trustDomain", "two Istio members share the "
                      f"trust domain '{domain}' (first at {_first_seen(first)}): their "
                      "workloads get the same identities, so authorization cannot tell the "
                      "clusters apart")
    if len({c.cluster_domain for c in members}) > 1:
        for cluster in (c for c in members if c.cluster_domain != members[0].cluster_domain):
            yield error(cluster.istio.location, f"{cluster.path}.clusterDomain",  # type: ignore[union-attr]
                        f"expected the cluster domain of the other Istio members "
                        f"('{members[0].cluster_domain}', {_name(members[0])}): Istio joins a "
                        "service across clusters by its host name <name>.<namespace>.svc."
                        f"<cluster domain>; found '{cluster.cluster_domain}'")


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_dns_name(text: str) -> bool:
    labels = text.rstrip(".").split(".")
    return len(text) <= 253 and all(
        0 < len(label) <= 63 and label[0].isalnum() and label[-1].isalnum()
        and all(ch.isascii() and (ch.isalnum() or ch == "-") for ch in label)
        for label in labels) and not labels[-1].isdigit()


# --------------------------------------------------------------------------- plan


def check_mesh_plan(plan: MeshPlan, *, ids_optional: bool = False) -> list[Diagnostic]:
    """What the plan shows: connected-set sizes, IDs among peers, flows without a path."""
    problems: list[Diagnostic] = []
    cilium = plan.mesh.cilium
    if cilium is not None and plan.cilium_members:
        problems += _connected_set_sizes(plan, cilium)
        problems += _ids_unique_among_peers(plan)
    problems += _flows_without_path(plan)
    problems += _gateway_addresses(plan)
    return problems


def _all_members_connected(cilium: CiliumSettings, members: list[Cluster]
                           ) -> Iterator[Diagnostic]:
    """With ``peers: all`` the connected set is every member (no flows needed to tell)."""
    limit = cilium.max_connected_clusters
    if cilium.peers == "all" and len(members) > limit:
        yield error(cilium.location, "spec.cilium", f"expected at most {limit} ClusterMesh "
                    f"members with peers: all (maxConnectedClusters {limit}), found "
                    f"{len(members)}: connect fewer, or use peers: needed")


def _connected_set_sizes(plan: MeshPlan, cilium: CiliumSettings) -> Iterator[Diagnostic]:
    """With ``peers: needed``: a member and its peers must fit in the ID space."""
    limit = cilium.max_connected_clusters
    if not plan.peers_needed:
        return
    for cluster in plan.cilium_members:
        count = plan.peer_count(cluster) + 1
        if count > limit:
            assert cluster.clustermesh is not None
            yield error(cluster.clustermesh.location, f"{cluster.path}.clustermesh", "expected "
                        f"at most {limit} clusters in a connected set (maxConnectedClusters), "
                        f"found {_name(cluster)} connected to {count - 1} peers")


def _ids_unique_among_peers(plan: MeshPlan) -> Iterator[Diagnostic]:
    """IDs must differ within every member's closed neighbourhood (itself and its peers): an
    agent holds the identities of all the clusters it connects to, keyed by cluster ID."""
    from .plan import ref_of

    reported: set[tuple[ClusterRef, ClusterRef]] = set()
    if not plan.peers_needed:
        groups: Iterable[tuple[Cluster | None, tuple[Cluster, ...]]] = [(None,
                                                                         plan.cilium_members)]
    else:
        groups = ((c, (c, *plan.peers_of(c))) for c in plan.cilium_members)
    for hub, group in groups:
        seen: dict[int, Cluster] = {}
        for cluster in group:
            if cluster.mesh_id is None:
                continue
            first = seen.setdefault(cluster.mesh_id, cluster)
            if first is cluster:
                continue
            a, b = sorted((first, cluster), key=_order(plan))
            if (ref_of(a), ref_of(b)) in reported:
                continue
            reported.add((ref_of(a), ref_of(b)))
            yield _duplicate_id(hub, a, b)


def _order(plan: MeshPlan) -> Callable[[Cluster], int]:
    index = {id(c): i for i, c in enumerate(plan.cilium_members)}
    return lambda c: index[id(c)]


def _duplicate_id(hub: Cluster | None, first: Cluster, later: Cluster) -> Diagnostic:
    scope = ("across the ClusterMesh (peers: all)" if hub is None else
             f"among {_name(hub)} and the clusters it connects to")
    return error(later.mesh_id_location, f"{later.path}.meshId", f"expected Cilium cluster ids "
                 f"unique {scope}, found {later.mesh_id} for both {_name(first)} "
                 f"({_first_seen(first.mesh_id_location)}) and {_name(later)}")


def _flows_without_path(plan: MeshPlan) -> Iterator[Diagnostic]:
    done: set[frozenset[ClusterRef]] = set()
    for (source, destination), cause in sorted(plan.flows.causes.items()):
        pair = frozenset((source, destination))
        if pair in done:
            continue
        done.add(pair)
        if plan.are_peers(source, destination) or plan.gateway_route(source, destination):
            continue
        yield error(cause.location, cause.path, f"expected a path from {source.path} to "
                    f"{destination.path} (ClusterMesh peers, or Istio members on different "
                    f"networks joined by east-west gateways), found none: "
                    f"{_why_no_path(plan, source, destination)}")


def _why_no_path(plan: MeshPlan, a: ClusterRef, b: ClusterRef) -> str:
    reasons = []
    outside = [r.path for r in (a, b) if r not in plan.cilium_refs]
    if outside:
        reasons.append(f"{' and '.join(outside)} not ClusterMesh member(s)")
    elif not plan.are_peers(a, b):
        reasons.append("they are not ClusterMesh peers")
    not_istio = [r.path for r in (a, b) if r not in plan.istio_refs]
    if not_istio:
        reasons.append(f"{' and '.join(not_istio)} not Istio member(s)")
    else:
        network = plan.istio_refs[a].network
        reasons.append(f"both Istio members are on network '{network}' (pod-to-pod, which "
                       "needs them to be ClusterMesh peers)")
    return "; ".join(reasons)


def _gateway_addresses(plan: MeshPlan) -> Iterator[Diagnostic]:
    """Istio sends cross-network traffic through the east-west gateways, where Cilium sees the
    gateway hop instead of the peer: the client's policy must allow the remote gateway's
    address on 15443 and the remote gateway's policy must admit the client cluster's source
    addresses. Both come from the inventory; a flow that needs one that is missing is an
    error at the first requirement intending a flow between the two clusters."""
    from .plan import gateway_sources

    missing: set[tuple[ClusterRef, str]] = set()
    for (source, destination), cause in sorted(plan.flows.causes.items()):
        if not plan.gateway_route(source, destination):
            continue
        server = plan.istio_refs[destination].cluster
        client = plan.istio_refs[source].cluster
        assert server.istio is not None and client.istio is not None
        if server.istio.gateway_address is None and (destination, "address") not in missing:
            missing.add((destination, "address"))
            yield error(cause.location, cause.path, f"expected the address of the east-west "
                        f"gateway of {destination.path} ({server.path}.istio.eastWestGateway."
                        f"address in {server.location.file}), found none: flows from "
                        f"{source.path} (intended by {cause.requirement} and maybe others) "
                        "cross Istio networks through it, and the client's "
                        "CiliumNetworkPolicy must allow that address on 15443")
        if not gateway_sources(client) and (source, "sources") not in missing:
            missing.add((source, "sources"))
            yield error(cause.location, cause.path, f"expected the addresses {source.path}'s "
                        "connections to other networks come from (its "
                        f"{client.path}.istio.eastWestGateway.address or egressCIDRs in "
                        f"{client.location.file}), found none: flows to {destination.path} "
                        f"(intended by {cause.requirement} and maybe others) cross the "
                        "east-west gateway there, whose CiliumNetworkPolicy admits only "
                        "known addresses")
