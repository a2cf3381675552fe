"""meshplan.flowdiff: what a change does to connectivity, compared as Cilium enforces both
renders (an endpoint no policy restricts allows everything in that direction)."""

from __future__ import annotations

from pathlib import Path

import pytest
from meshplan.flowdiff import (
    MAX_DIFF_EDGES,
    ConnectivityChanges,
    FlowChange,
    Render,
    connectivity_changes,
    mermaid_changes,
)
from meshplan.pipeline import render_with_inventory

from tests.support.repos import REPO_ROOT, copy_example, copy_tree


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


def test_the_picture_draws_both_kinds_and_caps_its_size() -> None:
    both = ConnectivityChanges((FlowChange("a/b", "a/x@b", "external", "1.2.3.0/24", "TCP/1",
                                           "UDP/1"),), ())
    text = mermaid_changes(both)
    assert '==>|"+ TCP/1"|' in text and '-.->|"- UDP/1"|' in text
    assert text.count("linkStyle") == 2
    many = ConnectivityChanges(tuple(FlowChange("a/b", f"a/x{i}@b", "a/b", "a/y@b", "any", "")
                                     for i in range(MAX_DIFF_EDGES + 5)), ())
    text = mermaid_changes(many)
    assert text.count("==>") == MAX_DIFF_EDGES
    assert text.endswith("  %% 5 more changed flow(s) not drawn\n")


def test_with_istio_a_flow_is_what_both_layers_allow(tmp_path: Path) -> None:
    """In the Istio example, currencyservice stops admitting checkout: the picture shows the
    cross-cloud flow closed (pod to pod, as both layers decide it; the gateway hops are not
    drawn), and a widened principal alone opens nothing Cilium still blocks."""
    source = REPO_ROOT / "examples" / "istio-multicloud"
    before = render(source)
    root = copy_tree(source, tmp_path / "after")
    path = root / "requirements/boutique/currencyservice.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(
        "        - matchLabels: {service: checkoutservice}\n", ""), encoding="utf-8")
    changes = connectivity_changes(before, render(root))
    assert [(f.source, f.target, f.opened, f.closed) for f in changes.flows] == [
        ("boutique/checkoutservice@gcp", "boutique/currencyservice@aks", "", "TCP/7000")]
    assert "eastwestgateway" not in mermaid_changes(changes)
