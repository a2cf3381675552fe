"""Both layers together: the flows they allow, and where they disagree with their intent.

A flow is allowed only if both layers allow it: Cilium (pod to pod, or hop by hop across Istio
networks, :mod:`.gateways`) and the identity layer (:mod:`.istio`). Each layer is compared
with its own intent, computed from the requirements alone: the Cilium layer by
:mod:`.compare`, the identity layer here, flow by flow into every Istio workload:

* the identity layer admits a flow no requirement admits there: an error; when Cilium blocks
  it anyway it is a **layer mismatch** (one layer alone stops it, so the next change of the
  other layer opens it);
* it refuses a flow a requirement admits: an error, a layer mismatch when Cilium allows it;
* a namespace that must be STRICT (:func:`~meshplan.mesh.identity.strict_namespaces`) is not,
  for some workload and port: an error, once per namespace and cluster.

Some disagreements between the layers are by design, and then both intents disagree the same
way, so nothing is reported: egress is Cilium's alone; across Istio networks Cilium sees the
gateway, not the client; a peer without a service account is admitted by namespace; clusters
sharing a trust domain look alike to Istio. Cilium's own mismatches that the identity layer
masks say so too.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from ..diagnostics import Diagnostic, Location, error, warning
from ..load.canonical import RenderedReader
from ..model import Inventory
from ..outputs import DEFAULT_OUTPUT_DIR
from .cilium import ActualConnectivity, ParseCache, actual_connectivity
from .compare import Mismatch
from .connectivity import Connectivity, Origin, allowed
from .endpoints import Endpoint, EndpointIndex, is_dns_flow
from .gateways import GatewayHops, gateway_hops
from .istio import TCP, IdentityLayer, read_identity_layer
from .ports import PortSet

Pair = tuple[int, int]
Where = tuple[str, str]  # (domain, cluster)


@dataclass(frozen=True)
class Layers:
    """The two layers of one rendered output (the pull-request picture compares two of them)."""

    cilium: Connectivity
    hops: GatewayHops
    identity: IdentityLayer

    def cilium_flow(self, source: int, destination: int) -> PortSet:
        """What Cilium allows of a flow between workloads: through the gateways when Istio
        routes it there, else pod to pod."""
        endpoints = self.cilium.endpoints
        if self.hops.routed(endpoints[source], endpoints[destination]):
            return self.hops.flow(self.cilium, source, destination)
        return self.cilium.flow(source, destination)

    def flow(self, source: int, destination: int) -> PortSet:
        ports = self.cilium_flow(source, destination)
        if ports and self.identity.active:
            ports &= self.identity.flow(source, destination)
        return ports

    def pairs(self) -> Iterator[Pair]:
        """Every flow between endpoints that are not hops of the mesh."""
        for i, j in self.cilium.pairs():
            if not (self.cilium.endpoints[i].infrastructure
                    or self.cilium.endpoints[j].infrastructure):
                yield i, j

    def flows(self) -> dict[Pair, PortSet]:
        """Every flow both layers allow (non-empty port set)."""
        return allowed(self.pairs(), self.flow)

    def protected(self, flows: Mapping[Pair, PortSet]) -> dict[Pair, PortSet]:
        """Of the given flows, the ports carried over mutual TLS the server requires."""
        out = {}
        for (i, j), permitted in flows.items():
            ports = self.identity.protected(i, j) & permitted
            if ports:
                out[(i, j)] = ports
        return out

    def restricts(self, source: int, destination: int) -> bool:
        """Whether a policy decides the flow: a restricted Cilium side, or AuthorizationPolicies
        at the destination (STRICT alone decides nothing between sidecars)."""
        if self.cilium.egress[source].restricted or self.cilium.ingress[destination].restricted:
            return True
        identity = self.identity
        return identity.applies(destination) and bool(identity.origins(destination))


class ReadLayers(NamedTuple):
    layers: Layers
    cilium: ActualConnectivity  # what the Cilium reader found besides the model
    identity_problems: tuple[Diagnostic, ...]  # what the Istio reader found


def read_layers(inventory: Inventory, endpoints: Sequence[Endpoint],
                files: Mapping[str, bytes], display_root: str = DEFAULT_OUTPUT_DIR,
                only: Collection[Where] | None = None,
                parsed: ParseCache | None = None,
                reader: RenderedReader | None = None,
                index: EndpointIndex | None = None) -> ReadLayers:
    """Both layers of a rendered tree, over ``endpoints`` (verify, and the pull-request
    picture of a change); ``only`` these clusters' folders when given; files found in
    ``parsed`` are not parsed again; ``reader`` reads the others (default: the parser);
    ``index``: the endpoints' :class:`.endpoints.EndpointIndex`, when already built."""
    cilium = actual_connectivity(inventory, endpoints, files, display_root, only, parsed,
                                 reader, index)
    identity, problems = read_identity_layer(inventory, endpoints, cilium.istio_documents)
    layers = Layers(cilium.model, gateway_hops(inventory, endpoints), identity)
    return ReadLayers(layers, cilium, tuple(problems))


# --------------------------------------------------------------------------- comparison


def identity_problems(layers: Layers, intended: IdentityLayer) -> list[Diagnostic]:
    """Every flow the identity layer decides unlike its ``intended`` one, and every namespace
    that is not STRICT where it must be."""
    actual = layers.identity
    if not (actual.active or intended.active):
        return []
    out: list[Diagnostic] = []
    endpoints = actual.endpoints
    for i, j in _identity_candidates(layers, intended):
        src, dst = endpoints[i], endpoints[j]
        if is_dns_flow(src, dst) or not (actual.applies(j) or intended.applies(j)):
            continue
        found, wanted = actual.flow(i, j), intended.flow(i, j)
        if found == wanted:
            continue
        cilium = layers.cilium_flow(i, j)
        extra, missing = found - wanted, wanted - found
        if extra:
            out.append(_admitted(layers, intended, dst, i, j, extra, cilium))
        if missing:
            out.append(_refused(layers, intended, dst, i, j, missing, cilium))
    out += _strict_problems(layers, intended)
    return out


def _identity_candidates(layers: Layers, intended: IdentityLayer) -> list[Pair]:
    """The flows (of :meth:`Layers.pairs`, in its order) on which the two identity layers may
    disagree, by classes of clients: per destination, the clients either layer's policies name,
    and every client of a class (mTLS or plaintext) whose unnamed verdicts differ."""
    actual = layers.identity
    endpoints = actual.endpoints
    every = range(len(endpoints))
    mtls = [actual.client(i).mtls for i in every]
    found: set[Pair] = set()
    for j in every:
        if not (actual.applies(j) or intended.applies(j)):
            continue
        named = [layer.named_clients(j) for layer in (actual, intended)]
        differ = {m for m in (True, False) if actual.unnamed(j, m) != intended.unnamed(j, m)}
        if named[0] is None or named[1] is None:
            clients: Iterable[int] = every
        else:
            clients = named[0] | named[1] | {i for i in every if mtls[i] in differ} \
                if differ else named[0] | named[1]
        found.update((i, j) for i in clients)
    return sorted((i, j) for i, j in found if i != j and not (
        endpoints[i].infrastructure or endpoints[j].infrastructure))


def _who(layer: IdentityLayer, index: int) -> str:
    e = layer.endpoints[index]
    client = layer.client(index)
    if not client.mtls:
        return f"{e.title} (plaintext: no identity)"
    return (f"{e.title} ({client.trust_domain}/ns/{client.namespace}/sa/"
            f"{client.service_account or '<unknown>'})")


def _list(origins: Iterable[Origin], limit: int = 3) -> str:
    shown = list(dict.fromkeys(str(o) for o in origins))
    more = len(shown) - limit
    return "; ".join(shown[:limit]) + (f"; and {more} more" if more > 0 else "")


def _admitted(layers: Layers, intended: IdentityLayer, dst: Endpoint, i: int, j: int,
              extra: PortSet, cilium: PortSet) -> Diagnostic:
    actual = layers.identity
    restrictors = intended.origins(j)
    location = restrictors[0].location if restrictors else Location("(requirements)")
    by = _list(actual.origins(j)) or "no AuthorizationPolicy (every client is admitted)"
    if not actual.strict_ports(j).covers(extra & TCP) and not actual.client(i).mtls:
        by += "; plaintext is accepted (not STRICT)"
    tail = ("a layer mismatch: Cilium blocks it, so one layer alone stops it (masked for now)"
            if not (extra & cilium) else "Cilium allows it too: the flow is open")
    return error(location, "", f"expected the identity layer to refuse {_who(actual, i)} -> "
                 f"{dst.title} on {extra} (no requirement admits it there; "
                 f"{_list(restrictors) or 'no requirement'} restricts it), found it admitted "
                 f"by {by}: {tail}")


def _refused(layers: Layers, intended: IdentityLayer, dst: Endpoint, i: int, j: int,
             missing: PortSet, cilium: PortSet) -> Diagnostic:
    actual = layers.identity
    admitting = intended.origins(j)
    found = actual.origins(j)
    location = (admitting or found or [Origin(Location("(rendered)"), "")])[0].location
    why = []
    strict = actual.strict_ports(j) & missing
    if strict and not actual.client(i).mtls:
        why.append(f"STRICT mutual TLS refuses its plaintext on {strict}")
    why.append(f"decided by {_list(found)}" if found else "no AuthorizationPolicy")
    tail = ("a layer mismatch: Cilium allows it, so only the identity layer stops it"
            if missing & cilium else "Cilium blocks it too")
    intent = f"intended by {_list(admitting)}" if admitting else "no requirement restricts it"
    return error(location, "", f"expected the identity layer to admit {_who(actual, i)} -> "
                 f"{dst.title} on {missing} ({intent}), found it refused ({'; '.join(why)}): "
                 f"{tail}")


def _strict_problems(layers: Layers, intended: IdentityLayer) -> Iterator[Diagnostic]:
    actual = layers.identity
    seen: set[tuple[str, str, str]] = set()
    for j, e in enumerate(actual.endpoints):
        if not intended.applies(j):
            continue
        missing = intended.strict_ports(j) - actual.strict_ports(j)
        key = (e.domain, e.cluster, e.namespace)
        if not missing or key in seen:
            continue
        seen.add(key)
        mode, _ = actual.modes(j)
        origin = next((p.origin for p in intended.policies[(e.domain, e.cluster)]
                       .authentications if p.namespace in (e.namespace,)), None)
        location = origin.location if origin is not None else Location("(requirements)")
        cause = origin.what if origin is not None else "the mesh"
        yield error(location, "", f"expected STRICT mutual TLS for namespace {e.namespace} of "
                    f"{e.domain}/{e.cluster} ({cause}), found {e.title} accepting plaintext on "
                    f"{missing} (mode {mode}): principal rules only work over mutual TLS, and "
                    "a plaintext client passes where no ALLOW policy applies")


def gateway_egress_warnings(layers: Layers, intended: Connectivity) -> list[Diagnostic]:
    """Flows between Istio networks that a client's egress requirement (in ``intended``) does
    not allow, yet both layers do: Cilium restricts such egress only up to the remote
    east-west gateway, so the destination's own ingress must refuse them (one warning per
    client and cluster)."""
    hops, cilium = layers.hops, layers.cilium
    if not hops.active:
        return []
    groups: dict[tuple[int, str], list[str]] = {}
    for i, j in _routed_candidates(layers, intended):
        src, dst = cilium.endpoints[i], cilium.endpoints[j]
        if not hops.routed(src, dst) or not intended.egress[i].restricted:
            continue
        extra = layers.flow(i, j) - intended.verdict("egress", i, j, grants=False).ports
        if extra:
            groups.setdefault((i, f"{dst.domain}/{dst.cluster}"), []).append(
                f"{dst.title} on {extra}")
    out = []
    for (i, there), reached in sorted(groups.items()):
        origin = intended.egress[i].default_deny[0]
        more = f" and {len(reached) - 3} more" if len(reached) > 3 else ""
        out.append(warning(origin.location, "", f"{cilium.endpoints[i].title} reaches "
                           f"{'; '.join(reached[:3])}{more} through the east-west gateway of "
                           f"{there}, which {origin.what} does not allow at egress: across "
                           "Istio networks Cilium restricts egress only up to the remote "
                           "gateway, so the destinations' own ingress must refuse it (admit "
                           "only their peers with a requirement)"))
    return out


def _routed_candidates(layers: Layers, intended: Connectivity) -> Iterator[Pair]:
    """The routed flows (in :meth:`Layers.pairs` order) of egress-restricted clients that may
    pass both layers: a client reaches workloads of another network only through a remote
    gateway address its egress allows (a named one, unless its default allows the hop) whose
    gateway admits its cluster; every workload there is then a candidate."""
    hops, cilium = layers.hops, layers.cilium
    endpoints = cilium.endpoints
    hop = hops.hop_ports()
    by_address: dict[int, list[Where]] = {}
    for where, address in hops.address.items():
        by_address.setdefault(address, []).append(where)
    workloads: dict[Where, list[int]] = {}
    for j, e in enumerate(endpoints):
        if e.is_workload and not e.infrastructure and (e.domain, e.cluster) in hops.network:
            workloads.setdefault((e.domain, e.cluster), []).append(j)
    for i, src in enumerate(endpoints):
        here = (src.domain, src.cluster)
        if not src.is_workload or src.infrastructure or here not in hops.network or \
                not intended.egress[i].restricted:
            continue
        if cilium.default("egress", i).covers(hop):
            theres: Iterable[Where] = hops.address
        else:
            theres = {w for a in cilium.named("egress", i) for w in by_address.get(a, ())}
        for there in sorted(theres):
            if hops.network.get(there) not in (None, hops.network[here]):
                yield from ((i, j) for j in workloads.get(there, ()))


def annotate_cilium(mismatches: Iterable[Mismatch], layers: Layers) -> list[Diagnostic]:
    """Cilium's mismatches, each saying when the identity layer masks it (a layer mismatch)."""
    out = []
    titles = {e.title: k for k, e in enumerate(layers.cilium.endpoints)}
    for mismatch in mismatches:
        diagnostic = mismatch.diagnostic
        i, j = titles.get(mismatch.source.title), titles.get(mismatch.destination.title)
        if (mismatch.kind == "unintended" and layers.identity.active and i is not None
                and j is not None and layers.identity.applies(j)):
            refused = mismatch.ports - layers.identity.flow(i, j)
            if refused:
                diagnostic = replace(diagnostic, message=diagnostic.message + (
                    f" - a layer mismatch: the identity layer refuses it on {refused}, so one "
                    "layer alone stops it"))
        out.append(diagnostic)
    return out

