"""The model stage: records built from documents, and the one place peers are resolved."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

from meshplan.model import Inventory, Requirement, Selector, labels_of, parse_thesis_selector
from meshplan.pipeline import validated
from meshplan.refine import refine
from meshplan.verify.endpoints import inventory_endpoints
from meshplan.verify.intent import intended_connectivity

from tests.support.cli import run_validate
from tests.support.repos import REPO_ROOT, copy_example


def example() -> Inventory:
    return validated(REPO_ROOT)[0]


def peer(**labels: str) -> Selector:
    return Selector(labels_of(labels))


Resolved = set[tuple[str, tuple[str, ...]]]


def resolved(inventory: Inventory, selector: Selector, domain: str,
             direction: Literal["egress", "ingress"] = "egress") -> Resolved:
    return {(t.service.key, t.clusters)
            for t in inventory.resolve_peer(selector, domain, direction=direction)}


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
    # domain2 exports nothing; domain1 exports everything to domain2.
    assert resolved(inventory, peer(domain="domain2"), "domain1") == set()
    assert len(resolved(inventory, peer(domain="domain1"), "domain2")) == 4
    assert resolved(inventory, peer(service="rebel-base", domain="domain2"), "domain1") == set()


def test_an_ingress_peer_may_name_any_domains_services() -> None:
    """exportTo is about who may call a service: admitting one at ingress needs no consent."""
    inventory = example()
    assert resolved(inventory, peer(domain="domain2"), "domain1", "ingress") == {
        ("domain2/frontend", ("cl4",)), ("domain2/service3", ("cl3",)),
        ("domain2/service4", ("cl4",)), ("domain2/rebel-base", ("cl3",))}
    assert resolved(inventory, peer(service="rebel-base", domain="domain2"), "domain1",
                    "ingress") == {("domain2/rebel-base", ("cl3",))}
    assert resolved(inventory, peer(service="rebel-base", domain="domain2", cluster="cl4"),
                    "domain1", "ingress") == set()


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


# --------------------------------------------------------------------------- scope, namespace


def with_requirement(inventory: Inventory, name: str, **changes: object) -> tuple[Inventory,
                                                                                 Requirement]:
    """``inventory`` with requirement ``name`` changed; the changed requirement."""
    old = next(r for r in inventory.requirements if r.name == name)
    new = replace(old, **changes)  # type: ignore[arg-type]
    requirements = tuple(new if r is old else r for r in inventory.requirements)
    return replace(inventory, requirements=requirements), new


def scope(inventory: Inventory, requirement: Requirement) -> list[str]:
    return [c.name for c in inventory.requirement_scope(requirement)]


def test_scope_is_the_written_clusters_else_every_cluster_of_the_domain() -> None:
    inventory, written = with_requirement(example(), "allow-domain1", clusters=("cl4", "cl3"))
    assert scope(inventory, written) == ["cl3", "cl4"]  # inventory order
    inventory, unwritten = with_requirement(example(), "allow-domain1", clusters=None)
    assert scope(inventory, unwritten) == ["cl3", "cl4"]
    inventory, one = with_requirement(example(), "allow-domain1", clusters=("cl4",))
    assert scope(inventory, one) == ["cl4"]


def test_scope_of_a_selected_service_is_where_it_runs() -> None:
    inventory = example()
    backend = next(r for r in inventory.requirements if r.name == "backend")
    assert backend.clusters is None
    assert scope(inventory, backend) == ["cl1", "cl2"]
    narrowed, only_cl2 = with_requirement(inventory, "backend", clusters=("cl2",))
    assert scope(narrowed, only_cl2) == ["cl2"]
    unknown, gone = with_requirement(inventory, "backend",
                                     endpoint_selector=Selector(labels_of({"service": "nope"})))
    assert scope(unknown, gone) == []  # a service that does not exist runs nowhere


def test_an_empty_cluster_list_means_no_cluster_for_refine_and_verify() -> None:
    """Only an unwritten list means "every cluster": ``clusters: []`` is none (fail closed,
    and what it says). Both readers of the scope agree, because both ask the inventory."""
    inventory, emptied = with_requirement(example(), "allow-domain1", clusters=())
    assert scope(inventory, emptied) == []
    plan = refine(inventory)
    assert not [m for c in plan.clusters for m in c.objects if emptied.key in m.required_by]
    intended = intended_connectivity(inventory, inventory_endpoints(inventory))
    origins = {o.what for stances in (intended.egress, intended.ingress) for stance in stances
               for o in stance.default_deny}
    assert f"requirement {emptied.key}" not in origins
    assert "requirement domain2/frontend-namespace/frontend" in origins  # the others still count


def test_an_empty_scope_is_refused_in_both_forms(tmp_path: Path) -> None:
    repo = copy_example(tmp_path / "repo")
    path = repo / "requirements" / "domain2" / "allow-domain1.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("clusters: [cl3]", "clusters: []"), encoding="utf-8")
    code, _, err = run_validate(repo)
    assert code == 1
    assert ("requirements/domain2/allow-domain1.yaml:10:13: spec.clusters: expected a list of "
            "at least one cluster name of the domain, found an empty list") in err
    thesis = text.replace("apiVersion: meshplan.dev/v1alpha1", "apiVersion: cilium.io/v2")
    thesis = thesis.replace("kind: Requirement", "kind: CiliumNetworkPolicy")
    thesis = thesis.replace("  namespace: default\n", "  namespace: default\n  annotations:\n"
                            "    meshplan.dev/clusters: \" , \"\n")
    path.write_text(thesis.replace("  clusters: [cl3]\n", ""), encoding="utf-8")
    code, _, err = run_validate(repo)
    assert code == 1
    assert ("allow-domain1.yaml:10:28: metadata.annotations.meshplan.dev/clusters: expected at "
            "least one cluster name, found none") in err


def test_policy_namespace() -> None:
    inventory = example()
    by_name = {r.name: r for r in inventory.requirements}
    assert inventory.policy_namespace(by_name["backend"]) == "backend-namespace"
    assert inventory.policy_namespace(by_name["allow-domain1"]) == "default"
    unwritten, raw = with_requirement(inventory, "allow-domain1", namespace=None)
    assert unwritten.policy_namespace(raw) == "default"
    wide, everywhere = with_requirement(inventory, "backend", cluster_wide=True)
    assert wide.policy_namespace(everywhere) is None
