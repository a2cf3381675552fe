"""What a change does to connectivity: the flows it opens and closes, the endpoints it leaves
unrestricted or restricts, for the pull-request picture (``meshplan diff --format markdown``).

Both renders are evaluated by verify's model over the *same* endpoints (those of either
side's inventory, in the clusters both sides have): Cilium, hop by hop between Istio networks,
and with Istio members the identity layer on top (a flow is allowed when both allow it).
Every flow is compared, open ones included: an endpoint no policy restricts allows everything
in that direction. So deleting a client's last egress requirement shows as an opening (its
egress becomes unrestricted), and a first restriction does not show flows that were already
allowed as new. The hops of the mesh (east-west gateways and their addresses) are not drawn.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .graph import EXTERNAL, mermaid_text
from .model import Inventory
from .outputs import OutputFile
from .verify.connectivity import DIRECTIONS, Connectivity, Direction
from .verify.endpoints import Endpoint, inventory_endpoints, is_dns_flow
from .verify.layers import Layers, read_layers

Render = tuple[Inventory, Iterable[OutputFile] | Mapping[str, bytes]]


@dataclass(frozen=True, order=True)
class FlowChange:
    """One pair of endpoints whose allowed ports changed."""

    source_group: str
    source: str  # endpoint title
    target_group: str
    target: str
    opened: str  # ports allowed now and not before ("" = none)
    closed: str  # ports allowed before and not now ("" = none)


@dataclass(frozen=True, order=True)
class StanceChange:
    endpoint: str  # endpoint title
    direction: Direction
    restricted: bool  # after the change (it was the opposite before)


@dataclass(frozen=True)
class ConnectivityChanges:
    flows: tuple[FlowChange, ...]  # sorted
    stances: tuple[StanceChange, ...]  # sorted

    @property
    def opened(self) -> int:
        return sum(bool(f.opened) for f in self.flows)

    @property
    def closed(self) -> int:
        return sum(bool(f.closed) for f in self.flows)

    def summary(self) -> list[str]:
        """What a reviewer must know first, in words (markdown, one item per line)."""
        lines = []
        for change in self.stances:
            if not change.restricted:
                lines.append(f"**Opens:** `{change.endpoint}` becomes {change.direction}-"
                             f"unrestricted (no policy restricts its {change.direction} any "
                             f"more): it {_reach(change.direction)}.")
        for change in self.stances:
            if change.restricted:
                lines.append(f"Newly restricted: `{change.endpoint}` {change.direction} (only "
                             "what its policies allow, from now on).")
        if self.flows:
            lines.append(f"The change allows {self.opened} flow(s) that were blocked and blocks "
                         f"{self.closed} flow(s) that were allowed (DNS not counted).")
        return lines


def _reach(direction: Direction) -> str:
    return ("may now reach anything whose ingress admits it" if direction == "egress"
            else "may now be reached by anything whose egress allows it")


def _endpoints(inventory: Inventory, clusters: set[tuple[str, str]],
               union: Mapping[str, Endpoint]) -> list[Endpoint]:
    """The union's endpoints that exist on this side (its own where it has them)."""
    own = {e.title: e for e in inventory_endpoints(inventory)}
    return [own.get(title, endpoint) for title, endpoint in union.items()
            if not endpoint.is_pod or (endpoint.domain, endpoint.cluster) in clusters]


def _files(files: Iterable[OutputFile] | Mapping[str, bytes]) -> dict[str, bytes]:
    return dict(files) if isinstance(files, Mapping) else {f.path: f.content for f in files}


def _clusters(inventory: Inventory) -> set[tuple[str, str]]:
    return {(d.name, c.name) for d in inventory.domains for c in d.clusters}


def connectivity_changes(before: Render, after: Render) -> ConnectivityChanges:
    """Every flow and every endpoint stance the change alters (see the module docstring)."""
    union: dict[str, Endpoint] = {}
    for inventory, _ in (after, before):
        for endpoint in inventory_endpoints(inventory):
            union.setdefault(endpoint.title, endpoint)
    common = _clusters(before[0]) & _clusters(after[0])
    shared = {t: e for t, e in union.items() if not e.is_pod or (e.domain, e.cluster) in common}
    models = []
    for inventory, files in (before, after):
        endpoints = _endpoints(inventory, common, shared)
        models.append(read_layers(inventory, endpoints, _files(files), "").layers)
    old, new = models
    return ConnectivityChanges(tuple(sorted(_flow_changes(old, new))),
                               tuple(sorted(_stance_changes(old.cilium, new.cilium))))


def _flow_changes(old: Layers, new: Layers) -> Iterable[FlowChange]:
    endpoints = new.cilium.endpoints
    for i, j in new.pairs():
        src, dst = endpoints[i], endpoints[j]
        if is_dns_flow(src, dst):
            continue
        was, now = old.flow(i, j), new.flow(i, j)
        if was == now:
            continue
        opened, closed = now - was, was - now
        yield FlowChange(src.group, src.title, dst.group, dst.title,
                         str(opened) if opened else "", str(closed) if closed else "")


def _stance_changes(old: Connectivity, new: Connectivity) -> Iterable[StanceChange]:
    for i, endpoint in enumerate(new.endpoints):
        if endpoint.kind not in ("service", "client"):
            continue
        for direction in DIRECTIONS:
            now = new.stance(direction, i).restricted
            if old.stance(direction, i).restricted != now:
                yield StanceChange(endpoint.title, direction, now)


# --------------------------------------------------------------------------- picture

MAX_DIFF_EDGES = 200


def mermaid_changes(changes: ConnectivityChanges) -> str:
    """A Mermaid flowchart of the flows opened (green, thick) and closed (red, dotted).

    A pair whose ports changed both ways gets one edge of each. Returns "" when no flow
    changed; beyond :data:`MAX_DIFF_EDGES` edges only the first are drawn (a comment line says
    how many were left out).
    """
    edges = [("opened", f, f.opened) for f in changes.flows if f.opened]
    edges += [("closed", f, f.closed) for f in changes.flows if f.closed]
    if not edges:
        return ""
    left_out = max(0, len(edges) - MAX_DIFF_EDGES)
    edges = edges[:MAX_DIFF_EDGES]
    ids: dict[tuple[str, str], str] = {}
    groups: dict[str, list[str]] = {}
    for _, f, _ in edges:
        for group, title in ((f.source_group, f.source), (f.target_group, f.target)):
            if (group, title) not in ids:
                ids[(group, title)] = f"n{len(ids)}"
                groups.setdefault(group, []).append(title)
    lines = ["flowchart LR"]
    for k, group in enumerate(sorted(groups)):
        lines.append(f'  subgraph g{k}["{mermaid_text(group)}"]')
        for title in groups[group]:
            short = title.split("/", 1)[1] if "/" in title and group != EXTERNAL else title
            lines.append(f'    {ids[(group, title)]}["{mermaid_text(short)}"]')
        lines.append("  end")
    styles = []
    for k, (kind, f, ports) in enumerate(edges):
        a, b = ids[(f.source_group, f.source)], ids[(f.target_group, f.target)]
        if kind == "opened":
            lines.append(f'  {a} ==>|"+ {mermaid_text(ports)}"| {b}')
            styles.append(f"  linkStyle {k} stroke:#1a7f37,stroke-width:3px,color:#1a7f37")
        else:
            lines.append(f'  {a} -.->|"- {mermaid_text(ports)}"| {b}')
            styles.append(f"  linkStyle {k} stroke:#cf222e,stroke-width:2px,color:#cf222e")
    lines += styles
    if left_out:
        lines.append(f"  %% {left_out} more changed flow(s) not drawn")
    return "\n".join(lines) + "\n"


__all__: Sequence[str] = ("ConnectivityChanges", "FlowChange", "StanceChange",
                          "connectivity_changes", "mermaid_changes")
