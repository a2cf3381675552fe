"""``verify()``: both models over the inventory's endpoints, compared, as one report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..diagnostics import Diagnostic, sorted_diagnostics
from ..load.canonical import RenderedReader
from ..model import Inventory
from ..outputs import DEFAULT_OUTPUT_DIR
from .compare import Mismatch, compare, dns_problems, half_open
from .connectivity import Connectivity
from .endpoints import Endpoint, inventory_endpoints, is_dns_flow
from .intent import intended_connectivity, intended_identity_layer
from .layers import (
    Layers,
    annotate_cilium,
    gateway_egress_warnings,
    identity_problems,
    read_layers,
)
from .ports import PortSet
from .services import NamedCall, backends, load_balancing_problems, name_problems


@dataclass(frozen=True)
class VerifyReport:
    """What verify found. The problems are computed by classes of endpoints; the allowed flows
    pair by pair, so only when asked for (``meshplan graph``, tests): every pair of a fleet is
    far more than verify's own work."""

    endpoints: tuple[Endpoint, ...]
    actual: Connectivity  # the Cilium layer, as the rendered CiliumNetworkPolicies make it
    intended: Connectivity
    layers: Layers  # both layers: Cilium (actual), the gateway hops, the identity layer
    mismatches: tuple[Mismatch, ...]
    diagnostics: tuple[Diagnostic, ...]  # sorted: mismatches, DNS, half-open, reading problems
    policies: int

    @property
    def ok(self) -> bool:
        return not any(d.severity.value == "error" for d in self.diagnostics)

    @cached_property
    def cilium_flows(self) -> Mapping[tuple[int, int], PortSet]:
        """Every flow the Cilium layer allows pod to pod (no gateway hop)."""
        return self.actual.flows()

    @cached_property
    def flows(self) -> Mapping[tuple[int, int], PortSet]:
        """Every flow the output allows (both layers; DNS and the mesh's hops included)."""
        layers = self.layers
        return layers.flows() if (layers.hops.active or layers.identity.active) \
            else self.cilium_flows

    @cached_property
    def protected(self) -> Mapping[tuple[int, int], PortSet]:
        """Of :attr:`flows`, the ports carried over mutual TLS the server requires."""
        return self.layers.protected(self.flows)

    def flow_lines(self, *, include_dns: bool = False) -> list[str]:
        """``source -> destination ports`` for every allowed flow (for tests and tables)."""
        out = []
        for (i, j), ports in sorted(self.flows.items()):
            src, dst = self.endpoints[i], self.endpoints[j]
            if include_dns or not is_dns_flow(src, dst):
                out.append(f"{src.title} -> {dst.title} {ports}")
        return out

    def restricted_flows(self) -> dict[tuple[int, int], PortSet]:
        """Allowed flows a policy decides (a restricted Cilium side, or an identity layer that
        requires mutual TLS or authorizes at the destination), no DNS."""
        out = {}
        for (i, j), ports in self.flows.items():
            src, dst = self.endpoints[i], self.endpoints[j]
            if is_dns_flow(src, dst):
                continue
            if self.layers.restricts(i, j) or \
                    self.actual.egress[i].restricted or self.actual.ingress[j].restricted:
                out[(i, j)] = ports
        return out


def verify(inventory: Inventory, files: Mapping[str, bytes],
           display_root: str = DEFAULT_OUTPUT_DIR,
           reader: RenderedReader | None = None,
           keep: list[object] | None = None) -> VerifyReport:
    """Compare the rendered files (relative to the output root) with the requirements: the
    Cilium layer and, with Istio members, the identity layer. ``reader``: how the files are
    read (:mod:`meshplan.load.canonical`; default: the positioned parser). ``keep``: a list
    what the run is done with is added to instead of being freed, object by object (the
    command line, which ends its process without freeing: :func:`meshplan.cli.run`)."""
    endpoints = inventory_endpoints(inventory)
    layers, cilium, identity_reading = read_layers(inventory, endpoints, files, display_root,
                                                   reader=reader)
    actual, hops = layers.cilium, layers.hops
    calls: list[NamedCall] = []
    intended = intended_connectivity(inventory, endpoints, hops, calls, actual.index)
    serving = backends(cilium.services, endpoints, actual.index)
    mismatches = compare(actual, intended, hops)
    diagnostics = [*cilium.problems, *identity_reading, *annotate_cilium(mismatches, layers),
                   *identity_problems(layers, intended_identity_layer(inventory, endpoints)),
                   *gateway_egress_warnings(layers, intended),
                   *dns_problems(actual), *half_open(intended),
                   *load_balancing_problems(actual, cilium.services, serving),
                   *name_problems(calls, endpoints, serving)]
    if keep is not None:
        keep.append((cilium, serving, calls))
    return VerifyReport(endpoints, actual, intended, layers, tuple(mismatches),
                        sorted_diagnostics(diagnostics), cilium.policies)


def display_root_for(repo: Path, rendered: Path) -> str:
    """How to name the rendered folder in messages: relative to the repo when inside it."""
    try:
        return rendered.resolve().relative_to(repo.resolve()).as_posix()
    except ValueError:
        return str(rendered)
