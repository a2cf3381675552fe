"""``verify()``: both models over the inventory's endpoints, compared, as one report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..diagnostics import Diagnostic, sorted_diagnostics
from ..model import Inventory
from ..outputs import DEFAULT_OUTPUT_DIR
from .cilium import actual_connectivity
from .compare import Mismatch, compare, dns_problems, half_open
from .connectivity import Connectivity
from .endpoints import Endpoint, inventory_endpoints, is_dns_flow
from .intent import intended_connectivity
from .ports import PortSet
from .services import load_balancing_problems


@dataclass(frozen=True)
class VerifyReport:
    endpoints: tuple[Endpoint, ...]
    actual: Connectivity
    intended: Connectivity
    flows: Mapping[tuple[int, int], PortSet]  # allowed by the output
    mismatches: tuple[Mismatch, ...]
    diagnostics: tuple[Diagnostic, ...]  # sorted: mismatches, DNS, half-open, reading problems
    policies: int

    @property
    def ok(self) -> bool:
        return not any(d.severity.value == "error" for d in self.diagnostics)

    def flow_lines(self, *, include_dns: bool = False) -> list[str]:
        """``source -> destination ports`` for every allowed flow (for tests and tables)."""
        out = []
        for (i, j), ports in sorted(self.flows.items()):
            src, dst = self.endpoints[i], self.endpoints[j]
            if include_dns or not is_dns_flow(src, dst):
                out.append(f"{src.title} -> {dst.title} {ports}")
        return out

    def restricted_flows(self) -> dict[tuple[int, int], PortSet]:
        """Allowed flows where at least one side is restricted (explicitly allowed), no DNS."""
        out = {}
        for (i, j), ports in self.flows.items():
            src, dst = self.endpoints[i], self.endpoints[j]
            if is_dns_flow(src, dst):
                continue
            if self.actual.egress[i].restricted or self.actual.ingress[j].restricted:
                out[(i, j)] = ports
        return out


def verify(inventory: Inventory, files: Mapping[str, bytes],
           display_root: str = DEFAULT_OUTPUT_DIR) -> VerifyReport:
    """Compare the rendered files (relative to the output root) with the requirements."""
    endpoints = inventory_endpoints(inventory)
    actual, problems, policies, services = actual_connectivity(inventory, endpoints, files,
                                                               display_root)
    intended = intended_connectivity(inventory, endpoints)
    mismatches = compare(actual, intended)
    diagnostics = [*problems, *(m.diagnostic for m in mismatches), *dns_problems(actual),
                   *half_open(intended), *load_balancing_problems(actual, services)]
    return VerifyReport(endpoints, actual, intended, actual.flows(), tuple(mismatches),
                        sorted_diagnostics(diagnostics), policies)


def display_root_for(repo: Path, rendered: Path) -> str:
    """How to name the rendered folder in messages: relative to the repo when inside it."""
    try:
        return rendered.resolve().relative_to(repo.resolve()).as_posix()
    except ValueError:
        return str(rendered)
