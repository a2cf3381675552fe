"""The model stage: records built from documents, and the one place peers are resolved."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO_ROOT
from meshplan.model import Inventory, Selector, labels_of, parse_thesis_selector
from meshplan.pipeline import validated


def example() -> Inventory:
    return validated(REPO_ROOT)[0]


def peer(**labels: str) -> Selector:
    return Selector(labels_of(labels))


def resolved(inventory: Inventory, selector: Selector, domain: str) -> set[tuple[str, tuple]]:
    return {(t.service.key, t.clusters) for t in inventory.resolve_peer(selector, domain)}


def test_a_named_service_in_every_cluster_where_it_runs() -> None:
    assert resolved(example(), peer(service="backend"), "domain1") == {
        ("domain1/backend", ("cl1", "cl2"))}


def test_a_cluster_restricts_a_named_service_to_its_pods_there() -> None:
    assert resolved(example(), peer(service="backend", cluster="cl2"), "domain1") == {
        ("domain1/backend", ("cl2",))}


def test_a_cluster_wildcard_means_every_service_running_there() -> None:
    assert resolved(example(), peer(cluster="cl2"), "domain1") == {
        ("domain1/service2", ("cl2",)), ("domain1/backend", ("cl2",)),
        ("domain1/database", ("cl2",))}


def test_another_domain_shows_only_what_it_exported() -> None:
    inventory = example()
    # domain2 exports only frontend (to domain1); domain1 exports everything to domain2.
    assert resolved(inventory, peer(domain="domain2"), "domain1") == {
        ("domain2/frontend", ("cl4",))}
    assert len(resolved(inventory, peer(domain="domain1"), "domain2")) == 4
    assert resolved(inventory, peer(service="rebel-base", domain="domain2"), "domain1") == set()


def test_unknown_names_resolve_to_nothing() -> None:
    inventory = example()
    assert resolved(inventory, peer(service="nope"), "domain1") == set()
    assert resolved(inventory, peer(domain="nope"), "domain1") == set()
    assert resolved(inventory, peer(service="backend", cluster="cl3"), "domain1") == set()


def test_requirements_get_their_implied_namespace() -> None:
    namespaces = {r.name: r.namespace for r in example().requirements}
    # {service: x} selects x's namespace; raw labels default to "default"; written ones stay.
    assert namespaces == {"backend": "backend-namespace", "frontend": "frontend-namespace",
                          "allow-domain1": "default"}


def test_thesis_selectors_and_defaults(tmp_path: Path) -> None:
    assert parse_thesis_selector("name: service3") == (("name", "service3"),)
    assert parse_thesis_selector("b:2, a : 1") == (("a", "1"), ("b", "2"))
    domain = example().domain_by_name["domain1"]
    assert domain.cluster_by_name["cl1"].cluster_domain == "cluster.local"
    assert domain.cluster_by_name["cl1"].mesh_name == "cluster1"
