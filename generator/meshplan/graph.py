"""``meshplan graph``: the service-level connectivity the rendered output allows, as a picture.

Clusters are groups, endpoints nodes, allowed flows edges with their ports, all from verify's
model of the rendered YAML. Only flows a policy decides are drawn (at least one side restricts
and allows it); endpoints no policy restricts are marked instead; DNS is left out. Formats:
Mermaid, Graphviz DOT, one offline HTML page, a table (:mod:`.flowdiff` draws what a change
does to the flows, with :func:`mermaid_text`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import jinja2

from . import __version__
from .verify.endpoints import Endpoint
from .verify.ports import PortSet, ports_of
from .verify.report import VerifyReport

TCP_PORTS = ports_of("TCP", None)

GraphFormat = Literal["mermaid", "dot", "html", "table"]
FORMATS: tuple[GraphFormat, ...] = ("mermaid", "dot", "html", "table")
EXTERNAL = "external"


@dataclass(frozen=True)
class Group:
    id: str
    name: str  # "domain/cluster", or "external"
    domain: str  # "" for external
    title: str  # "domain1/cl1 (cluster1)"


@dataclass(frozen=True)
class Node:
    id: str
    title: str  # endpoint title, unique: "domain1/backend@cl1"
    label: str  # first line: service name, client labels or CIDR
    detail: str  # second line: namespace (or kind)
    group: str  # Group.name
    kind: str
    open_egress: bool
    open_ingress: bool


@dataclass(frozen=True)
class Edge:
    source: str  # Node.id
    target: str
    ports: str
    mtls: bool = False  # every TCP port of the flow is carried over mutual TLS the server
    # requires (STRICT, from a sidecar client): the identity layer protects it

    @property
    def label(self) -> str:
        return f"{self.ports} (mTLS)" if self.mtls else self.ports


@dataclass(frozen=True)
class Graph:
    groups: tuple[Group, ...]
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    domains: tuple[str, ...]

    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.id == node_id)


def _node(index: int, endpoint: Endpoint, report: VerifyReport) -> Node:
    if endpoint.kind == "cidr":
        label, detail = endpoint.name, "CIDR"
    elif endpoint.kind == "service":
        label, detail = endpoint.name, endpoint.namespace
    else:
        label, detail = endpoint.name, f"{endpoint.namespace} (pods by label)"
    open_egress = endpoint.is_pod and not report.actual.egress[index].restricted
    open_ingress = endpoint.is_pod and not report.actual.ingress[index].restricted
    return Node(f"n{index}", endpoint.title, label, detail, endpoint.group, endpoint.kind,
                open_egress, open_ingress)


def _protected(report: VerifyReport, i: int, j: int, ports: PortSet) -> bool:
    """Whether every TCP port of the flow is mTLS-protected (and it has one)."""
    tcp = ports & TCP_PORTS
    protected = report.protected.get((i, j))
    return bool(tcp) and protected is not None and protected.covers(tcp)


def _in_scope(endpoint: Endpoint, domain: str | None, cluster: str | None) -> bool:
    if domain is not None and endpoint.domain != domain:
        return False
    if cluster is not None:
        return cluster in (endpoint.cluster, f"{endpoint.domain}/{endpoint.cluster}")
    return True


def connectivity_graph(report: VerifyReport, *, domain: str | None = None,
                       cluster: str | None = None) -> Graph:
    """The graph of the policy-decided flows, optionally around one domain and/or cluster.

    With a filter, the graph keeps the flows that start or end in scope, every endpoint in scope
    and the peers of those flows.
    """
    endpoints = report.endpoints
    filtered = domain is not None or cluster is not None
    scoped = {i for i, e in enumerate(endpoints)
              if e.kind in ("service", "client") and _in_scope(e, domain, cluster)}
    flows = {(i, j): ports for (i, j), ports in sorted(report.restricted_flows().items())
             if not filtered or i in scoped or j in scoped}
    shown = set(scoped) if filtered else {i for i, e in enumerate(endpoints)
                                          if e.kind in ("service", "client")}
    for i, j in flows:
        shown.update((i, j))
    nodes = tuple(_node(i, endpoints[i], report) for i in sorted(shown))
    groups: list[Group] = []
    cluster_mesh = {(e.domain, e.cluster): e.mesh for e in endpoints if e.is_pod}
    names = sorted({n.group for n in nodes if n.group != EXTERNAL})
    for k, name in enumerate(names):
        dom, _, clu = name.partition("/")
        groups.append(Group(f"g{k}", name, dom, f"{name} ({cluster_mesh[(dom, clu)]})"))
    if any(n.group == EXTERNAL for n in nodes):
        groups.append(Group(f"g{len(names)}", EXTERNAL, "", "external (CIDR)"))
    edges = tuple(Edge(f"n{i}", f"n{j}", str(ports), _protected(report, i, j, ports))
                  for (i, j), ports in flows.items())
    domains = tuple(sorted({g.domain for g in groups if g.domain}))
    return Graph(tuple(groups), nodes, edges, domains)


# --------------------------------------------------------------------------- mermaid


def mermaid_text(text: str) -> str:
    """Text for a quoted Mermaid label: quotes and angle brackets as entity codes."""
    return (text.replace("#", "#35;").replace('"', "#quot;").replace("<", "#lt;")
            .replace(">", "#gt;"))


def _mermaid_groups(graph: Graph, lines: list[str], node_line: dict[str, str]) -> None:
    for d, dom in enumerate(graph.domains):
        lines.append(f'  subgraph d{d}["{mermaid_text(dom)}"]')
        for group in graph.groups:
            if group.domain != dom:
                continue
            lines.append(f'    subgraph {group.id}["{mermaid_text(group.title)}"]')
            lines += [f"      {node_line[n.id]}" for n in graph.nodes if n.group == group.name]
            lines.append("    end")
        lines.append("  end")
    for group in graph.groups:
        if group.name == EXTERNAL:
            lines.append(f'  subgraph {group.id}["{mermaid_text(group.title)}"]')
            lines += [f"    {node_line[n.id]}" for n in graph.nodes if n.group == group.name]
            lines.append("  end")


def to_mermaid(graph: Graph) -> str:
    lines = ["flowchart LR"]
    node_line = {n.id: f'{n.id}["{mermaid_text(n.label)}<br/><small>'
                       f'{mermaid_text(n.detail)}</small>"]' for n in graph.nodes}
    _mermaid_groups(graph, lines, node_line)
    for edge in graph.edges:  # a thick arrow: mTLS-protected
        arrow = "==>" if edge.mtls else "-->"
        lines.append(f'  {edge.source} {arrow}|"{mermaid_text(edge.label)}"| {edge.target}')
    open_nodes = [n.id for n in graph.nodes if n.kind != "cidr"
                  and (n.open_egress or n.open_ingress)]
    lines.append("  classDef open stroke-dasharray: 5 4")
    if open_nodes:
        lines.append(f"  class {','.join(open_nodes)} open")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- dot


def dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(graph: Graph) -> str:
    lines = [
        "digraph meshplan {",
        "  rankdir=LR;",
        "  compound=true;",
        '  node [shape=box, style="rounded", fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]

    def node_lines(group: Group, indent: str) -> list[str]:
        out = []
        for n in graph.nodes:
            if n.group != group.name:
                continue
            style = ', style="rounded,dashed"' if n.kind != "cidr" and (
                n.open_egress or n.open_ingress) else ""
            out.append(f"{indent}{n.id} [label={dot_text(n.label + chr(10) + n.detail)}, "
                       f"tooltip={dot_text(n.title)}{style}];")
        return out

    for d, dom in enumerate(graph.domains):
        lines += [f"  subgraph cluster_d{d} {{", f"    label={dot_text(dom)};",
                  "    style=rounded;"]
        for group in graph.groups:
            if group.domain == dom:
                lines += [f"    subgraph cluster_{group.id} {{",
                          f"      label={dot_text(group.title)};", "      style=filled;",
                          '      fillcolor="#f6f8fa";']
                lines += node_lines(group, "      ")
                lines.append("    }")
        lines.append("  }")
    for group in graph.groups:
        if group.name == EXTERNAL:
            lines += [f"  subgraph cluster_{group.id} {{", f"    label={dot_text(group.title)};",
                      "    style=dashed;"]
            lines += node_lines(group, "    ")
            lines.append("  }")
    for edge in graph.edges:
        style = ', style=bold, color="#1a7f37"' if edge.mtls else ""
        lines.append(f"  {edge.source} -> {edge.target} [label={dot_text(edge.label)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- table


def to_table(graph: Graph) -> str:
    with_mtls = any(e.mtls for e in graph.edges)  # the column only with the identity layer
    rows = [(graph.node(e.source).title, graph.node(e.target).title, e.ports,
             *(("yes" if e.mtls else "no",) if with_mtls else ())) for e in graph.edges]
    header = ("FROM", "TO", "PORTS", *(("MTLS",) if with_mtls else ()))
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    open_egress = [n.title for n in graph.nodes if n.open_egress]
    open_ingress = [n.title for n in graph.nodes if n.open_ingress]
    lines.append("")
    lines.append(f"{len(rows)} flow(s) decided by policies. Flows between endpoints that no "
                 "policy restricts are open and not listed.")
    if with_mtls:
        lines.append("MTLS yes: every TCP port is carried over mutual TLS the server requires "
                     "(STRICT).")
    if open_egress:
        lines.append(f"egress unrestricted: {', '.join(open_egress)}")
    if open_ingress:
        lines.append(f"ingress unrestricted: {', '.join(open_ingress)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- html

NODE_W, NODE_H, NODE_GAP = 200, 44, 14
COL_GAP, HEADER_H, MARGIN = 150, 46, 20


@dataclass(frozen=True)
class _Box:
    node: Node
    x: int
    y: int


@dataclass(frozen=True)
class _Column:
    group: Group
    x: int
    height: int


@dataclass(frozen=True)
class _Path:
    edge: Edge
    d: str
    label_x: int
    label_y: int
    title: str


def _layout(graph: Graph) -> tuple[list[_Column], dict[str, _Box], list[_Path], int, int]:
    columns: list[_Column] = []
    boxes: dict[str, _Box] = {}
    for c, group in enumerate(graph.groups):
        x = MARGIN + c * (NODE_W + COL_GAP)
        members = [n for n in graph.nodes if n.group == group.name]
        for r, node in enumerate(members):
            boxes[node.id] = _Box(node, x, MARGIN + HEADER_H + r * (NODE_H + NODE_GAP))
        columns.append(_Column(group, x, HEADER_H + len(members) * (NODE_H + NODE_GAP)))
    paths: list[_Path] = []
    column_of = {node_id: box.x for node_id, box in boxes.items()}
    bottom = MARGIN + max([c.height for c in columns] or [HEADER_H]) + 10
    lanes = 0
    step = NODE_W + COL_GAP
    for edge in graph.edges:
        a, b = boxes[edge.source], boxes[edge.target]
        y1, y2 = a.y + NODE_H // 2, b.y + NODE_H // 2
        span = (column_of[edge.target] - column_of[edge.source]) // step
        if span == 0:  # same cluster: an arc in the gap on the right
            x1 = x2 = a.x + NODE_W
            bulge = x1 + 30 + abs(y2 - y1) // 5
            d = f"M{x1},{y1} C{bulge},{y1} {bulge},{y2} {x2 + 6},{y2}"
            lx, ly = bulge, (y1 + y2) // 2
        elif abs(span) == 1:  # neighbours: an S-curve through the gap between them
            x1 = a.x + NODE_W if span > 0 else a.x
            x2 = b.x - 6 if span > 0 else b.x + NODE_W + 6
            mid = (x1 + x2) // 2
            d = f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"
            lx, ly = mid, (y1 + y2) // 2
        else:  # farther: down into a lane below the clusters, across, and up again
            lane = bottom + 10 + lanes * 9
            lanes += 1
            sign = 1 if span > 0 else -1
            x1 = a.x + NODE_W if span > 0 else a.x
            x2 = b.x - 6 if span > 0 else b.x + NODE_W + 6
            g1, g2 = x1 + sign * 40, x2 - sign * 40
            d = (f"M{x1},{y1} C{g1},{y1} {g1},{y1} {g1},{y1 + 20} L{g1},{lane - 20} "
                 f"Q{g1},{lane} {g1 + sign * 20},{lane} L{g2 - sign * 20},{lane} "
                 f"Q{g2},{lane} {g2},{lane - 20} L{g2},{y2 + 20} "
                 f"C{g2},{y2} {g2},{y2} {x2},{y2}")
            lx, ly = (g1 + g2) // 2, lane
        title = f"{a.node.title} -> {b.node.title}: {edge.label}"
        paths.append(_Path(edge, d, lx, ly, title))
    width = MARGIN * 2 + max(1, len(columns)) * (NODE_W + COL_GAP)
    height = bottom + 20 + lanes * 9 + MARGIN
    return columns, boxes, paths, width, height


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("meshplan", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2"),
                                            default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    return env


def to_html(graph: Graph, title: str = "meshplan connectivity") -> str:
    columns, boxes, paths, width, height = _layout(graph)
    rows = [{"source": graph.node(e.source), "target": graph.node(e.target), "edge": e}
            for e in graph.edges]
    template = _environment().get_template("graph.html.j2")
    return template.render(
        title=title, version=__version__, graph=graph, columns=columns, boxes=boxes,
        paths=paths, width=width, height=height, rows=rows, node_w=NODE_W, node_h=NODE_H,
        header_h=HEADER_H, margin=MARGIN,
    )


def render_graph(graph: Graph, output_format: GraphFormat) -> str:
    if output_format == "mermaid":
        return to_mermaid(graph)
    if output_format == "dot":
        return to_dot(graph)
    if output_format == "html":
        return to_html(graph)
    return to_table(graph)


# --------------------------------------------------------------------------- markdown


def mermaid_block(text: str) -> str:
    """``text`` fenced for markdown (GitHub renders ```mermaid blocks)."""
    return f"```mermaid\n{text}```\n" if text else ""


__all__: Sequence[str] = (
    "FORMATS", "Edge", "Graph", "Group", "Node", "connectivity_graph", "mermaid_block",
    "mermaid_text", "render_graph", "to_dot", "to_html", "to_mermaid", "to_table",
)
