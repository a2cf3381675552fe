"""meshplan.flowdiff: what a change does to connectivity, compared as Cilium enforces both
renders (an endpoint no policy restricts allows everything in that direction)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from meshplan.flowdiff import (
    MAX_DIFF_EDGES,
    ConnectivityChanges,
    FlowChange,
    Picture,
    Render,
    connectivity_changes,
    mermaid_changes,
    picture,
)
from meshplan.pipeline import render_with_inventory

from tests.support.repos import ISTIO_EXAMPLE, REPO_ROOT, copy_example, copy_tree


def render(root: Path) -> Render:
    inventory, rendered, _ = render_with_inventory(root)
    return inventory, rendered.files


@pytest.fixture(scope="module")
def example() -> Render:
    return render(REPO_ROOT)


def changed(tmp_path: Path, edit: dict[str, str | None]) -> Render:
    """The example with files replaced (text) or deleted (None)."""
    root = copy_example(tmp_path / "after")
    for relpath, text in edit.items():
        if text is None:
            (root / relpath).unlink()
        else:
            (root / relpath).write_text(text, encoding="utf-8")
    return render(root)


def flows(changes: ConnectivityChanges, source: str) -> dict[str, tuple[str, str]]:
    return {f.target: (f.opened, f.closed) for f in changes.flows if f.source == source}


def test_no_change_changes_nothing(example: Render) -> None:
    changes = connectivity_changes(example, example)
    assert changes == ConnectivityChanges((), ())
    assert changes.summary() == [] and mermaid_changes(changes) == ""


def test_deleting_a_requirement_opens_both_directions(example: Render, tmp_path: Path) -> None:
    """backend loses its only requirement: its egress and ingress become unrestricted."""
    after = changed(tmp_path, {"requirements/domain1/backend.yaml": None})
    changes = connectivity_changes(example, after)
    opened = [(s.endpoint, s.direction) for s in changes.stances if not s.restricted]
    assert opened == [("domain1/backend@cl1", "egress"), ("domain1/backend@cl1", "ingress"),
                      ("domain1/backend@cl2", "egress"), ("domain1/backend@cl2", "ingress")]
    assert all(not f.closed for f in changes.flows)  # an opening is never a removal
    # the client in cl3 may call backend now (its egress always allowed it)
    client = flows(changes, "domain2/cl3:default/name=client")
    assert client["domain1/backend@cl1"] == ("TCP/80", "")
    summary = changes.summary()
    assert summary[0].startswith("**Opens:** `domain1/backend@cl1` becomes egress-unrestricted")
    assert summary[-1].startswith(f"The change allows {changes.opened} flow(s) that were "
                                  "blocked and blocks 0 flow(s)")


def test_widening_ports_is_only_an_opening(example: Render, tmp_path: Path) -> None:
    text = (REPO_ROOT / "requirements/domain1/backend.yaml").read_text(encoding="utf-8")
    wider = text.replace("        - matchLabels: {service: database}\n",
                         "        - matchLabels: {service: database}\n"
                         "      toPorts: [{ports: [{port: \"5432\"}, {port: \"6432\"}]}]\n")
    changes = connectivity_changes(example, changed(
        tmp_path, {"requirements/domain1/backend.yaml": wider}))
    assert changes.stances == ()
    assert {f.source for f in changes.flows} == {"domain1/backend@cl1", "domain1/backend@cl2"}
    database = flows(changes, "domain1/backend@cl1")["domain1/database@cl2"]
    assert database == ("TCP/6432 UDP/5432,6432 SCTP/5432,6432", "")


def test_a_first_restriction_shows_only_what_it_stops(example: Render, tmp_path: Path) -> None:
    rebel = (REPO_ROOT / "requirements/domain1/backend.yaml").read_text(encoding="utf-8")
    rebel = rebel.replace("  name: backend\n", "  name: rebel\n").replace(
        "{service: backend}", "{service: rebel-base}").replace(
        "{service: database}", "{service: service3}").split("  ingress:")[0]
    after = changed(tmp_path, {"requirements/domain2/rebel.yaml": rebel})
    changes = connectivity_changes(example, after)
    assert [(s.endpoint, s.direction, s.restricted) for s in changes.stances] == [
        ("domain2/rebel-base@cl3", "egress", True)]
    assert all(f.source == "domain2/rebel-base@cl3" and not f.opened for f in changes.flows)
    assert "domain2/service3@cl3" in flows(changes, "domain2/rebel-base@cl3")  # other ports
    assert flows(changes, "domain2/rebel-base@cl3")["domain2/service3@cl3"][1].startswith(
        "TCP/1-79,81-")


def test_a_new_cluster_is_not_compared(example: Render, tmp_path: Path) -> None:
    """Endpoints of a cluster only one side has did not exist before: no flow to compare."""
    domain = (REPO_ROOT / "inventory/domain2.yaml").read_text(encoding="utf-8")
    domain = domain.replace("  services:\n", "    - name: cl5\n      meshName: cluster5\n"
                            "      meshId: 5\n  services:\n").replace(
        "      clusters: [cl4]\n", "      clusters: [cl4, cl5]\n", 1)
    changes = connectivity_changes(example, changed(tmp_path, {"inventory/domain2.yaml":
                                                               domain}))
    assert all("@cl5" not in f.source + f.target for f in changes.flows)


def test_the_picture_draws_each_flow_when_they_fit() -> None:
    both = ConnectivityChanges((FlowChange("a/b", "a/x@b", "external", "1.2.3.0/24", "TCP/1",
                                           "UDP/1"),), ())
    drawn = picture(both)
    assert '==>|"+ TCP/1"|' in drawn.mermaid and '-.->|"- UDP/1"|' in drawn.mermaid
    assert drawn.mermaid.count("linkStyle") == 2
    assert drawn.note is None  # one edge per flow: nothing to explain
    assert picture(ConnectivityChanges((), ())) == Picture("")


def fleet_changes(domains: int, services: int, clusters: int) -> ConnectivityChanges:
    """Every service of domain d0 newly calls every service of every domain, in each of
    ``clusters`` clusters (one port)."""
    return ConnectivityChanges(tuple(
        FlowChange(f"d0/c{k}", f"d0/s{a}@c{k}", f"d{d}/c{k}", f"d{d}/t{b}@c{k}", "TCP/80", "",
                   f"d0/s{a}", f"d{d}/t{b}")
        for k in range(clusters) for d in range(domains) for a in range(services)
        for b in range(services)), ())


def test_a_picture_too_big_to_read_is_aggregated_per_service_and_says_so() -> None:
    changes = fleet_changes(domains=2, services=6, clusters=5)  # 360 flows, 72 service pairs
    drawn = picture(changes)
    edges = re.findall(r'==>\|"([^"]*)"\|', drawn.mermaid)
    assert len(edges) == 72 <= MAX_DIFF_EDGES
    assert all(label == "+ 5 flows: TCP/80" for label in edges)
    assert drawn.note is not None and "360 flows changed" in drawn.note
    assert "per service" in drawn.note
    assert 'subgraph g0["d0"]\n    n0["s0"]' in drawn.mermaid  # per domain, its clusters together
    assert "@c" not in drawn.mermaid


def test_a_fleet_sized_picture_is_aggregated_per_domain_and_never_dropped() -> None:
    changes = fleet_changes(domains=20, services=5, clusters=2)  # 500 service pairs
    drawn = picture(changes)
    edges = re.findall(r'(n\d+) ==>\|"([^"]*)"\| (n\d+)', drawn.mermaid)
    assert len(edges) == 20  # d0 -> each domain
    assert {label for _, label, _ in edges} == {"+ 50 flows: TCP/80"}
    assert drawn.note is not None and "per domain" in drawn.note
    assert "1,000 flows changed" in drawn.note
    few = picture(changes, limit=5)  # beyond even the domain pairs: the biggest, and a count
    assert few.mermaid.count("==>") == 5
    assert few.note is not None and "15 more domain pairs" in few.note


def test_with_istio_a_flow_is_what_both_layers_allow(tmp_path: Path) -> None:
    """In the Istio example, currencyservice stops admitting checkout: the picture shows the
    cross-cloud flow closed (pod to pod, as both layers decide it; the gateway hops are not
    drawn), and a widened principal alone opens nothing Cilium still blocks."""
    source = ISTIO_EXAMPLE
    before = render(source)
    root = copy_tree(source, tmp_path / "after")
    path = root / "requirements/boutique/currencyservice.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(
        "        - matchLabels: {service: checkoutservice}\n", ""), encoding="utf-8")
    changes = connectivity_changes(before, render(root))
    assert [(f.source, f.target, f.opened, f.closed) for f in changes.flows] == [
        ("boutique/checkoutservice@gcp", "boutique/currencyservice@aks", "", "TCP/7000")]
    assert "eastwestgateway" not in mermaid_changes(changes)
