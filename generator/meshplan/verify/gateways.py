"""The gateway hop: what Cilium sees of a flow between Istio networks.

Istio members on different networks reach each other through east-west gateways. The client's
sidecar opens a TCP connection to the *remote* gateway's address on 15443 and the remote
gateway re-originates it to the server pod, passing the mutual TLS session through by SNI
(AUTO_PASSTHROUGH). So the Cilium agents never see the client and the server together:

1. client pod -> the remote gateway's address, TCP/15443 (the client's egress);
2. the client cluster's source address -> the remote gateway's pods, TCP/15443 (the gateway's
   ingress; the source is the cluster's ``egressCIDRs`` or its gateway's address, the same
   rule the rendered gateway policy follows: :func:`meshplan.mesh.plan.gateway_sources`);
3. the remote gateway's pods -> the server pod, on the server's port (the gateway's egress and
   the server's ingress).

Cilium allows the flow on the server's port when all three hops are allowed, and only for TCP
(Istio carries TCP; UDP and SCTP do not cross). Each hop is an ordinary flow of the
connectivity model, compared with its intent like any other; the direct pod-to-pod pair is no
flow at all (no route joins the two networks), so it is neither compared nor drawn.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..mesh.plan import gateway_sources
from ..model import Inventory
from ..refine import host_cidr
from ..vocabulary import CROSS_NETWORK_PORT
from .connectivity import Connectivity
from .endpoints import Endpoint
from .ports import NO_PORTS, PortSet, ports_of

Where = tuple[str, str]  # (domain, cluster)
TCP = ports_of("TCP", None)


@dataclass(frozen=True)
class GatewayHops:
    """Which endpoints are which hop, per Istio member cluster on a multi-network mesh."""

    network: Mapping[Where, str]  # the Istio network of every member
    gateway: Mapping[Where, int]  # the east-west gateway's pods (endpoint index)
    address: Mapping[Where, int]  # its address (a CIDR endpoint), when known
    sources: Mapping[Where, tuple[int, ...]]  # where the member's connections come from
    port: int  # 15443

    @property
    def active(self) -> bool:
        return bool(self.gateway)

    def routed(self, source: Endpoint, destination: Endpoint) -> bool:
        """Whether Istio routes ``source`` -> ``destination`` through the gateways: two
        workloads of members on different networks."""
        if not self.gateway or not (source.is_workload and destination.is_workload):
            return False
        a = self.network.get((source.domain, source.cluster))
        b = self.network.get((destination.domain, destination.cluster))
        return a is not None and b is not None and a != b

    def hop_ports(self) -> PortSet:
        return ports_of("TCP", self.port)

    def flow(self, model: Connectivity, source: int, destination: int) -> PortSet:
        """What ``model`` allows of a routed flow: the server's TCP ports the last hop allows,
        when the first two hops allow 15443 (nothing when an address is not known)."""
        endpoints = model.endpoints
        src, dst = endpoints[source], endpoints[destination]
        there: Where = (dst.domain, dst.cluster)
        here: Where = (src.domain, src.cluster)
        address, gateway = self.address.get(there), self.gateway.get(there)
        sources = self.sources.get(here, ())
        if address is None or gateway is None or not sources:
            return NO_PORTS
        hop = self.hop_ports()
        if not model.flow(source, address).covers(hop):
            return NO_PORTS
        if not all(model.flow(s, gateway).covers(hop) for s in sources):
            return NO_PORTS
        return model.flow(gateway, destination) & TCP


NO_HOPS = GatewayHops({}, {}, {}, {}, 0)


def gateway_hops(inventory: Inventory, endpoints: Sequence[Endpoint]) -> GatewayHops:
    """The hops of the inventory's endpoints (:func:`.endpoints.inventory_endpoints` adds them
    when the Istio members span several networks); ``NO_HOPS`` otherwise."""
    gateways = {(e.domain, e.cluster): i for i, e in enumerate(endpoints) if e.kind == "gateway"}
    if not gateways:
        return NO_HOPS
    cidrs = {e.name: i for i, e in enumerate(endpoints) if e.kind == "cidr"}
    network: dict[Where, str] = {}
    address: dict[Where, int] = {}
    sources: dict[Where, tuple[int, ...]] = {}
    for domain in inventory.domains:
        for cluster in domain.clusters:
            istio = cluster.istio
            if not inventory.is_istio_member(cluster) or istio is None or not istio.network:
                continue
            where = (domain.name, cluster.name)
            network[where] = istio.network
            if istio.gateway_address:
                found = cidrs.get(_network(host_cidr(istio.gateway_address)))
                if found is not None:
                    address[where] = found
            sources[where] = tuple(cidrs[n] for n in (_network(t)
                                                       for t in gateway_sources(cluster))
                                   if n in cidrs)
    return GatewayHops(network, gateways, address, sources, CROSS_NETWORK_PORT)


def _network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return text
