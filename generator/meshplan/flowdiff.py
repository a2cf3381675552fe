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

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from .diagnostics import Diagnostic
from .graph import EXTERNAL, mermaid_text
from .load.document import Document
from .load.files import decode_utf8
from .load.parse import parse_yaml
from .model import Inventory
from .outputs import OutputFile, split_cluster_path
from .verify.cilium import ParseCache
from .verify.connectivity import DIRECTIONS, Connectivity, Direction
from .verify.endpoints import (
    Endpoint,
    EndpointCollector,
    EndpointIndex,
    inventory_endpoints,
    is_dns_flow,
)
from .verify.gateways import gateway_hops
from .verify.istio import IdentityLayer
from .verify.layers import Layers, read_layers

Render = tuple[Inventory, Iterable[OutputFile] | Mapping[str, bytes]]
Pair = tuple[int, int]
Where = tuple[str, str]  # (domain, cluster)


@dataclass(frozen=True, order=True)
class FlowChange:
    """One pair of endpoints whose allowed ports changed."""

    source_group: str
    source: str  # endpoint title
    target_group: str
    target: str
    opened: str  # ports allowed now and not before ("" = none)
    closed: str  # ports allowed before and not now ("" = none)
    source_service: str = ""  # the endpoint without its cluster (Endpoint.service_level)
    target_service: str = ""


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


def _endpoints(endpoints: Iterable[Endpoint], clusters: set[tuple[str, str]],
               union: Mapping[str, Endpoint]) -> list[Endpoint]:
    """The union's endpoints that exist on this side (its own, ``endpoints``, where it has
    them)."""
    own = {e.title: e for e in endpoints}
    return [own.get(title, endpoint) for title, endpoint in union.items()
            if not endpoint.is_pod or (endpoint.domain, endpoint.cluster) in clusters]


def _files(files: Iterable[OutputFile] | Mapping[str, bytes]) -> dict[str, bytes]:
    return dict(files) if isinstance(files, Mapping) else {f.path: f.content for f in files}


def _clusters(inventory: Inventory) -> set[tuple[str, str]]:
    return {(d.name, c.name) for d in inventory.domains for c in d.clusters}


def connectivity_changes(before: Render, after: Render) -> ConnectivityChanges:
    """Every flow and every endpoint stance the change alters (see the module docstring).

    By classes, as verify compares (:func:`.verify.connectivity.sparse_pairs`): a subject's
    verdicts come from its own cluster's folder only, so a cluster whose files are the same on
    both sides changes no verdict of its endpoints. The clusters the change touches are read
    first, on both sides; the flows that can have changed are those their endpoints' rules name
    (every flow of a class whose default changed) on which one end's verdict changed; then only
    the other clusters of those flows are read, once (they are the same on both sides), to
    evaluate them. When the inventories differ as verify reads them, both trees are read whole.
    """
    sides = _sides(before, after)
    if not _same_reading(sides[0][:2], sides[1][:2]):
        return _every_change(sides)
    # The same endpoints (equal in every field): both sides read over the head's objects, so
    # what each derives (its identity labels, its address block) is computed once.
    sides[0] = (sides[0][0], sides[1][1], sides[0][2])
    return _changes_of_changed_clusters(sides)


def whole_connectivity_changes(before: Render, after: Render) -> ConnectivityChanges:
    """:func:`connectivity_changes` the slow way, as the reference the tests compare it with:
    both trees read whole, every flow and every stance compared, each side's endpoints listed
    on their own (not through :func:`_own_endpoints`' shared requirements)."""
    return _every_change(_sides(before, after, whole=True))


Side = tuple[Inventory, list[Endpoint], dict[str, bytes]]


def _sides(before: Render, after: Render, *, whole: bool = False) -> list[Side]:
    """Each side's inventory, endpoints (the same list on both sides, in the clusters both
    have) and rendered files; ``whole``: each side's endpoints listed on their own."""
    own = ([inventory_endpoints(before[0]), inventory_endpoints(after[0])] if whole
           else _own_endpoints(before[0], after[0]))
    union: dict[str, Endpoint] = {}
    for endpoints in reversed(own):  # the head's first
        for endpoint in endpoints:
            union.setdefault(endpoint.title, endpoint)
    common = _clusters(before[0]) & _clusters(after[0])
    shared = {t: e for t, e in union.items() if not e.is_pod or (e.domain, e.cluster) in common}
    return [(inventory, _endpoints(endpoints, common, shared), _files(files))
            for (inventory, files), endpoints in zip((before, after), own, strict=True)]


def _own_endpoints(old: Inventory, new: Inventory) -> list[tuple[Endpoint, ...]]:
    """:func:`.verify.endpoints.inventory_endpoints` of both inventories; the requirements
    both hold (the same objects, as when one side's model is derived from the other's) read
    once when they have the same domains and mesh (the same objects too)."""
    if old.domains is not new.domains or old.mesh is not new.mesh:
        return [inventory_endpoints(old), inventory_endpoints(new)]
    in_new = {id(r) for r in new.requirements}
    shared = {id(r) for r in old.requirements if id(r) in in_new}
    common = EndpointCollector(new)
    common.add_requirements(new, (r for r in new.requirements if id(r) in shared))
    own = []
    for inventory in (old, new):
        collector = common.copy()
        collector.add_requirements(inventory, (r for r in inventory.requirements
                                               if id(r) not in shared))
        own.append(collector.endpoints(inventory))
    return own


def _every_change(sides: list[Side]) -> ConnectivityChanges:
    parsed: ParseCache = {}  # a file both sides share is parsed once
    old, new = (read_layers(i, e, f, "", parsed=parsed).layers for i, e, f in sides)
    return ConnectivityChanges(
        tuple(sorted(_flow_changes(old, new, new.pairs()))),
        tuple(sorted(_stance_changes(old.cilium, new.cilium, range(len(sides[1][1]))))))


def _changes_of_changed_clusters(sides: list[Side]) -> ConnectivityChanges:
    """Both sides read the same way: only the clusters whose folders differ, and the ones the
    flows that may have changed reach (see :func:`connectivity_changes`)."""
    old_files, new_files, new_endpoints = sides[0][2], sides[1][2], sides[1][1]
    common = _clusters(sides[0][0]) & _clusters(sides[1][0])
    changed = _changed_clusters(old_files, new_files, common)
    parsed = _parsed_by_document((old_files, new_files), changed)
    # Every reading is over the same endpoint list: its index is built once.
    index = EndpointIndex(new_endpoints)
    touched = [read_layers(i, e, f, "", only=changed, parsed=parsed, index=index).layers
               for i, e, f in sides]
    candidates = _candidates(touched[0], touched[1], changed)
    if candidates is None:
        needed = _clusters(sides[0][0])
        candidates = list(touched[1].pairs())
    else:
        needed = set(changed)
        for i, j in candidates:
            for k in (i, j):
                e = new_endpoints[k]
                if e.is_pod:
                    needed.add((e.domain, e.cluster))
    # The other clusters the candidates reach are the same on both sides: read them once.
    parsed.update(_parsed_by_document((old_files,), needed - changed))
    rest = read_layers(*sides[0], "", only=needed - changed, parsed=parsed, index=index).layers
    in_changed = [k for k, e in enumerate(new_endpoints) if (e.domain, e.cluster) in changed]
    old = _merged(touched[0], rest, changed, in_changed, sides[0][0])
    new = _merged(touched[1], rest, changed, in_changed, sides[1][0])
    return ConnectivityChanges(
        tuple(sorted(_flow_changes(old, new, candidates))),
        tuple(sorted(_stance_changes(touched[0].cilium, touched[1].cilium, in_changed))))


def _merged(changed_side: Layers, unchanged_side: Layers, changed: set[Where],
            in_changed: Iterable[int], inventory: Inventory) -> Layers:
    """One side's layers: its own reading of the ``changed`` clusters (whose endpoints are
    ``in_changed``), and the other side's of the rest (their folders are the same, so is their
    reading: read once)."""
    mine, theirs = changed_side.cilium, unchanged_side.cilium
    egress, ingress = list(theirs.egress), list(theirs.ingress)
    for k in in_changed:
        egress[k], ingress[k] = mine.egress[k], mine.ingress[k]
    model = Connectivity(mine.endpoints, mine.index, (egress, ingress))
    policies = {**unchanged_side.identity.policies,
                **{w: p for w, p in changed_side.identity.policies.items() if w in changed}}
    for where in changed:
        if where not in changed_side.identity.policies:
            policies.pop(where, None)
    identity = IdentityLayer(inventory, model.endpoints, policies)
    return Layers(model, changed_side.hops, identity)


def _same_reading(old: tuple[Inventory, list[Endpoint]],
                  new: tuple[Inventory, list[Endpoint]]) -> bool:
    """Whether verify reads a cluster's folder the same way under both inventories: the same
    endpoints, Istio members and trust domains, and gateway hops."""
    return old[1] == new[1] and _members(old[0]) == _members(new[0]) and \
        gateway_hops(old[0], old[1]) == gateway_hops(new[0], new[1])


def _members(inventory: Inventory) -> dict[Where, str | None]:
    return {(d.name, c.name): (c.istio.trust_domain if c.istio is not None else None)
            for d in inventory.domains for c in d.clusters if inventory.is_istio_member(c)}


def _changed_clusters(old: Mapping[str, bytes], new: Mapping[str, bytes],
                      clusters: set[Where]) -> set[Where]:
    """The clusters (of both sides) whose rendered folder differs."""
    by: dict[Where, list[dict[str, bytes]]] = {}
    for side, files in enumerate((old, new)):
        for path, content in files.items():
            split = split_cluster_path(path)
            if split is not None and (split[0], split[1]) in clusters:
                by.setdefault((split[0], split[1]), [{}, {}])[side][path] = content
    return {where for where, (a, b) in by.items() if a != b}


_SEPARATOR = re.compile(r"(?m)^(?=---\r?\n)")  # a document marker begins a document
# A document the picture does not read, by the head meshplan writes: a Service copy (verify's
# load-balancing check reads those) or a Namespace. No later top-level key may change its kind.
_UNREAD_HEAD = re.compile(r"(?:(?:#[^\n]*|---[ \t]*|[ \t]*)\n)*apiVersion: [^\n]+\n"
                          r"kind: (?:Service|Namespace)\n")
_TOP_KIND = re.compile(r"(?m)^[\"']?(?:kind|<<)[\"']?[ \t]*:")


def _parsed_by_document(sides: Iterable[Mapping[str, bytes]], clusters: set[Where]
                        ) -> ParseCache:
    """The files of ``clusters`` on every side, parsed a document at a time, each distinct
    document once (the two versions of a changed file share most documents), without the
    documents the picture does not read (Service copies, Namespaces: verify's Cilium reader
    takes nothing else from them into the layers).

    A file is cut before each ``---`` line, the only place a document can start in the
    output meshplan renders (its scalars never hold such a line); a file whose documents
    report any problem is left to the reader, which parses it whole. The documents' marks
    are relative to their own text: the picture reports no position.
    """
    memo: dict[tuple[str, str], list[Document] | None] = {}
    out: ParseCache = {}
    for files in sides:
        for path, content in files.items():
            split = split_cluster_path(path)
            if split is None or (split[0], split[1]) not in clusters or (path, content) in out:
                continue
            text = decode_utf8(path, content)
            if isinstance(text, Diagnostic):
                continue
            documents = _documents(path, text, memo)
            if documents is not None:
                out[(path, content)] = (documents, [])
    return out


def _documents(path: str, text: str, memo: dict[tuple[str, str], list[Document] | None]
               ) -> list[Document] | None:
    documents: list[Document] = []
    for part in _SEPARATOR.split(text):
        head = _UNREAD_HEAD.match(part)
        if head is not None and not _TOP_KIND.search(part, head.end()):
            continue
        if (path, part) not in memo:
            found, problems = parse_yaml(path, part)
            memo[(path, part)] = None if problems else found
        parsed = memo[(path, part)]
        if parsed is None:
            return None
        documents.extend(replace(d, index=len(documents) + k) for k, d in enumerate(parsed))
    return documents


def _candidates(old: Layers, new: Layers, changed: set[Where]) -> list[Pair] | None:
    """The flows that can differ between two renders whose only differences are the folders
    of ``changed`` (both read from those folders alone), or None when they may be any flow."""
    endpoints = new.cilium.endpoints
    named = _named_pairs(old.cilium, new.cilium, [k for k, e in enumerate(endpoints)
                                                  if (e.domain, e.cluster) in changed])
    if named is None:
        return None
    found = {pair for pair in named if _verdicts_differ(old.cilium, new.cilium, *pair)}
    routed = _routed_changes(old, new, changed)
    identity = _identity_changes(old, new, changed)
    if routed is None or identity is None:
        return None
    found |= routed | identity
    return sorted((i, j) for i, j in found if i != j
                  and (endpoints[i].is_pod or endpoints[j].is_pod)
                  and not (endpoints[i].infrastructure or endpoints[j].infrastructure))


def _named_pairs(old: Connectivity, new: Connectivity, subjects: Iterable[int]
                 ) -> set[Pair] | None:
    """The flows on which ``subjects`` may say anything but their defaults on either side
    (:func:`.verify.connectivity.sparse_pairs` over these subjects: the others were not read,
    so they have no policy on either side), or None when a subject's default changed (every
    flow of its class of unnamed peers may have)."""
    endpoints = old.endpoints
    found: set[Pair] = set()
    for subject in subjects:
        for direction in DIRECTIONS:
            if old.default(direction, subject) != new.default(direction, subject):
                return None
            peers = old.named(direction, subject) | new.named(direction, subject)
            found.update((subject, peer) if direction == "egress" else (peer, subject)
                         for peer in peers)
    return {(i, j) for i, j in found if i != j and (endpoints[i].is_pod or endpoints[j].is_pod)}


def _verdicts_differ(old: Connectivity, new: Connectivity, source: int,
                     destination: int) -> bool:
    """Whether the source's egress to the destination or the destination's ingress from the
    source differs: when neither does, so does not their flow (the only pod-to-pod one).

    Only these pairs need the other end's cluster read: a subject's verdicts come from its own
    cluster's folder, so a peer in an unchanged cluster keeps its half of the flow.
    """
    halves: tuple[tuple[Direction, int, int], ...] = (("egress", source, destination),
                                                     ("ingress", destination, source))
    return any(old.verdict(direction, subject, peer, grants=False).ports
               != new.verdict(direction, subject, peer, grants=False).ports
               for direction, subject, peer in halves)


def _routed_changes(old: Layers, new: Layers, changed: set[Where]) -> set[Pair] | None:
    """Routed flows (between Istio networks) that can differ: from a client of a changed
    cluster whose egress to a remote gateway's address changed, every workload there; into a
    changed cluster whose gateway chain changed, any client (None)."""
    hops = new.hops
    if not hops.active:
        return set()
    endpoints = new.cilium.endpoints
    workloads: dict[Where, list[int]] = {}
    for j, e in enumerate(endpoints):
        if e.is_workload and not e.infrastructure:
            workloads.setdefault((e.domain, e.cluster), []).append(j)
    hop = hops.hop_ports()
    for there in changed & set(hops.gateway):
        gateway = hops.gateway[there]
        sources = {s for found in hops.sources.values() for s in found}
        if any(old.cilium.flow(s, gateway).covers(hop) != new.cilium.flow(s, gateway).covers(hop)
               for s in sources):
            return None
        if any(old.cilium.flow(gateway, j) != new.cilium.flow(gateway, j)
               for j in workloads.get(there, ())):
            return None
    found: set[Pair] = set()
    for here in changed & set(hops.network):
        for i in workloads.get(here, ()):
            for there, address in hops.address.items():
                if hops.network.get(there) in (None, hops.network[here]):
                    continue
                if old.cilium.flow(i, address).covers(hop) != \
                        new.cilium.flow(i, address).covers(hop):
                    found.update((i, j) for j in workloads.get(there, ()))
    return found


def _identity_changes(old: Layers, new: Layers, changed: set[Where]) -> set[Pair] | None:
    """Flows into workloads of changed clusters the identity layers may decide differently:
    the clients either side's policies name; any client (None) when the unnamed ones' verdicts
    differ."""
    a, b = old.identity, new.identity
    if not (a.active or b.active):
        return set()
    found: set[Pair] = set()
    for j, e in enumerate(new.cilium.endpoints):
        if (e.domain, e.cluster) not in changed or not (a.applies(j) or b.applies(j)):
            continue
        if any(a.unnamed(j, m) != b.unnamed(j, m) for m in (True, False)):
            return None
        named = [layer.named_clients(j) for layer in (a, b)]
        if named[0] is None or named[1] is None:
            return None
        found.update((i, j) for i in named[0] | named[1])
    return found


def _flow_changes(old: Layers, new: Layers, pairs: Iterable[Pair]) -> Iterable[FlowChange]:
    endpoints = new.cilium.endpoints
    for i, j in pairs:
        src, dst = endpoints[i], endpoints[j]
        if is_dns_flow(src, dst):
            continue
        was, now = old.flow(i, j), new.flow(i, j)
        if was == now:
            continue
        opened, closed = now - was, was - now
        yield FlowChange(src.group, src.title, dst.group, dst.title,
                         str(opened) if opened else "", str(closed) if closed else "",
                         src.service_level, dst.service_level)


def _stance_changes(old: Connectivity, new: Connectivity,
                    subjects: Iterable[int]) -> Iterable[StanceChange]:
    for i in subjects:
        endpoint = new.endpoints[i]
        if endpoint.kind not in ("service", "client"):
            continue
        for direction in DIRECTIONS:
            now = new.stance(direction, i).restricted
            if old.stance(direction, i).restricted != now:
                yield StanceChange(endpoint.title, direction, now)


# --------------------------------------------------------------------------- picture

MAX_DIFF_EDGES = 200  # a picture with more edges is unreadable: it is aggregated instead


@dataclass(frozen=True)
class Picture:
    mermaid: str  # "" when no flow changed
    note: str | None = None  # how the picture is aggregated, when it is (markdown)


# kind (opened, closed), source group, source, target group, target, label
Edge = tuple[str, str, str, str, str, str]


def picture(changes: ConnectivityChanges, limit: int = MAX_DIFF_EDGES) -> Picture:
    """The flows opened (green, thick) and closed (red, dotted), at any size.

    One edge per changed flow when they fit in ``limit`` edges; else one edge per pair of
    services (a service's clusters together; its label counts the flows and names their
    ports), else one per pair of domains (addresses stay one group), else the ``limit``
    domain pairs with the most flows and a note naming how many more. Whenever it aggregates,
    the note says so: nothing is dropped silently.
    """
    flows = changes.flows
    if not flows:
        return Picture("")
    levels: tuple[tuple[str, Callable[[FlowChange], tuple[str, str, str, str]]], ...] = (
        ("flow", lambda f: (f.source_group, f.source, f.target_group, f.target)),
        ("service", lambda f: (_domain(f.source_group), f.source_service or f.source,
                               _domain(f.target_group), f.target_service or f.target)),
        ("domain", lambda f: (_domain(f.source_group), _domain(f.source_group),
                              _domain(f.target_group), _domain(f.target_group))),
    )
    for level, key in levels:
        edges = _edges(flows, key, single=level == "flow")
        if len(edges) <= limit:
            break
    total = len(edges)
    if level == "flow":
        return Picture(mermaid_text_of(edges))
    edges = sorted(edges, key=lambda e: -_count(e[5]))[:limit]
    what = {"service": "service (a service's clusters together)",
            "domain": "domain (each domain's services and clients together)"}[level]
    note = (f"{len(flows):,} flows changed, more than a readable picture holds "
            f"({limit} edges): it shows them per {what}; each edge counts its flows.")
    if total > limit:
        note += (f" Only the {limit} domain pairs with the most changed flows are drawn; "
                 f"{total - limit:,} more domain pairs changed too (`meshplan graph --domain` "
                 "shows one domain).")
    return Picture(mermaid_text_of(edges, grouped=level == "domain"), note)


def _domain(group: str) -> str:
    return group.split("/", 1)[0]


def _count(label: str) -> int:
    return int(label.split(" ", 2)[1].replace(",", ""))


def _edges(flows: Sequence[FlowChange], key: Callable[[FlowChange], tuple[str, str, str, str]],
           *, single: bool) -> list[Edge]:
    """One edge per key and kind (opened, closed): the ports of one flow, or, aggregated,
    how many flows and the union of their ports' text."""
    found: dict[tuple[str, str, str, str, str], list[str]] = {}
    for kind in ("opened", "closed"):
        for f in flows:
            changed = f.opened if kind == "opened" else f.closed
            if changed:
                found.setdefault((kind, *key(f)), []).append(changed)
    out: list[Edge] = []
    for (kind, sg, source, tg, target), ports in found.items():
        sign = "+" if kind == "opened" else "-"
        if single:
            label = f"{sign} {ports[0]}"
        else:
            named = sorted(set(ports))
            shown = "; ".join(named[:2]) + (f"; and {len(named) - 2} more" if len(named) > 2
                                            else "")
            label = f"{sign} {len(ports):,} flow{'s' if len(ports) > 1 else ''}: {shown}"
        out.append((kind, sg, source, tg, target, label))
    return out


def mermaid_changes(changes: ConnectivityChanges) -> str:
    """The Mermaid text of :func:`picture` ("" when no flow changed)."""
    return picture(changes).mermaid


def mermaid_text_of(edges: Sequence[Edge], *, grouped: bool = False) -> str:
    """A Mermaid flowchart of ``edges``: nodes in one subgraph per group (none per domain)."""
    ids: dict[tuple[str, str], str] = {}
    groups: dict[str, list[str]] = {}
    for _, sg, source, tg, target, _ in edges:
        for group, title in ((sg, source), (tg, target)):
            if (group, title) not in ids:
                ids[(group, title)] = f"n{len(ids)}"
                groups.setdefault(group, []).append(title)
    lines = ["flowchart LR"]
    for k, group in enumerate(sorted(groups)):
        if grouped:
            lines.extend(f'  {ids[(group, t)]}["{mermaid_text(t)}"]' for t in groups[group])
            continue
        lines.append(f'  subgraph g{k}["{mermaid_text(group)}"]')
        for title in groups[group]:
            short = title.split("/", 1)[1] if "/" in title and group != EXTERNAL else title
            lines.append(f'    {ids[(group, title)]}["{mermaid_text(short)}"]')
        lines.append("  end")
    styles = []
    for k, (kind, sg, source, tg, target, label) in enumerate(edges):
        a, b = ids[(sg, source)], ids[(tg, target)]
        if kind == "opened":
            lines.append(f'  {a} ==>|"{mermaid_text(label)}"| {b}')
            styles.append(f"  linkStyle {k} stroke:#1a7f37,stroke-width:3px,color:#1a7f37")
        else:
            lines.append(f'  {a} -.->|"{mermaid_text(label)}"| {b}')
            styles.append(f"  linkStyle {k} stroke:#cf222e,stroke-width:2px,color:#cf222e")
    return "\n".join(lines + styles) + "\n"


__all__: Sequence[str] = ("ConnectivityChanges", "FlowChange", "Picture", "StanceChange",
                          "connectivity_changes", "mermaid_changes", "picture",
                          "whole_connectivity_changes")
