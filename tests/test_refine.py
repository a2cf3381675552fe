"""Refinement behaviours from the issue, on small hand-made repositories.

Each test writes an inventory and requirements, renders through the public pipeline and reads the
rendered files back with ``semantics.py`` (nothing is taken from meshplan's internal records).

The base inventory:

* domain ``alpha``: clusters a1 (mesh alpha-1), a2 (mesh alpha-2, clusterDomain a2.example);
  services api (api-ns, 8080+9090, a1+a2, exported to beta), db (db-ns, 5432, a2, private),
  web (web-ns, TCP/80, a1, private).
* domain ``beta``: clusters b1 (mesh beta-1, clusterDomain beta.local), b2 (mesh beta-2), b3
  (mesh beta-3, nothing runs or is required there); services shop (shop, 443, b1, exported to
  alpha), cache (shop, 6379, b1+b2, private).
* domain ``gamma``: cluster g1; service hidden (exported to nobody).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from meshplan.diagnostics import Diagnostic, InputError, Severity
from meshplan.pipeline import render_repository, validate

from tests.support.cli import run_cli
from tests.support.k8s import validate_object
from tests.support.semantics import (
    REQUIRED_BY,
    ClusterView,
    EndpointPeer,
    admission_anomalies,
    all_anomalies,
    cidr,
    cluster_views,
    dns,
    domain,
    ep,
    from_,
    objects_by_key,
    ports,
    read_output,
    render_files,
    render_views,
    required_by,
    requirement,
    to,
    write_repo,
)

CLUSTER = "io.cilium.k8s.policy.cluster"
NS = "k8s:io.kubernetes.pod.namespace"
API_PORTS = ports("8080/TCP", "9090/TCP")
API_OF_ALPHA = {"service": "api", "domain": "alpha"}


def base_domains() -> list[dict[str, Any]]:
    alpha = domain("alpha", [
        {"name": "a1", "meshName": "alpha-1", "meshId": 1, "podCIDRs": ["10.1.0.0/16"]},
        {"name": "a2", "meshName": "alpha-2", "meshId": 2, "podCIDRs": ["10.2.0.0/16"],
         "clusterDomain": "a2.example"},
    ], [
        {"name": "api", "namespace": "api-ns", "selector": {"app": "api"},
         "ports": [{"port": 8080, "protocol": "TCP", "name": "http"},
                   {"port": 9090, "protocol": "TCP", "name": "metrics"}],
         "clusters": ["a1", "a2"], "exportTo": ["beta"]},
        {"name": "db", "namespace": "db-ns", "selector": {"app": "db"},
         "ports": [{"port": 5432}], "clusters": ["a2"]},
        {"name": "web", "namespace": "web-ns", "selector": {"app": "web"},
         "ports": [{"port": 80}], "clusters": ["a1"]},
    ])
    beta = domain("beta", [
        {"name": "b1", "meshName": "beta-1", "meshId": 3, "clusterDomain": "beta.local"},
        {"name": "b2", "meshName": "beta-2", "meshId": 4},
        {"name": "b3", "meshName": "beta-3", "meshId": 5},
    ], [
        {"name": "shop", "namespace": "shop", "selector": {"app": "shop"},
         "ports": [{"port": 443}], "clusters": ["b1"], "exportTo": ["alpha"]},
        {"name": "cache", "namespace": "shop", "selector": {"app": "cache"},
         "ports": [{"port": 6379}], "clusters": ["b1", "b2"]},
    ])
    gamma = domain("gamma", [{"name": "g1", "meshName": "gamma-1", "meshId": 9}], [
        {"name": "hidden", "namespace": "hidden", "selector": {"app": "hidden"},
         "ports": [{"port": 1}], "clusters": ["g1"]},
    ])
    return [alpha, beta, gamma]


def repo_with(tmp_path: Path, requirements: Mapping[str, Sequence[Mapping[str, Any]]],
              domains: Sequence[Mapping[str, Any]] | None = None, name: str = "repo") -> Path:
    return write_repo(tmp_path / name, base_domains() if domains is None else domains,
                      requirements)


def render(tmp_path: Path, requirements: Mapping[str, Sequence[Mapping[str, Any]]],
           domains: Sequence[Mapping[str, Any]] | None = None) -> dict[str, ClusterView]:
    views = render_views(repo_with(tmp_path, requirements, domains))
    assert all_anomalies(views) == []
    return views


def rules(view: ClusterView, namespace: str | None, name: str, direction: str) -> list[Any]:
    body = view.policy(namespace, name).body
    return list(body["spec"].get(direction) or [])


# --------------------------------------------------------------------------- ports


def test_egress_service_peer_gets_only_that_services_ports(tmp_path: Path) -> None:
    views = render(tmp_path, {"alpha": [
        requirement("web", {"service": "web"}, egress=[to({"service": "api"})]),
    ]})
    policy = views["alpha/a1"].policy("web-ns", "web")
    assert policy.direction("egress") == {
        ep("egress", {"app": "api"}, "api-ns", {"alpha-1", "alpha-2"}, API_PORTS),
        dns("alpha-1"),
    }


def test_egress_rule_toports_replace_the_service_ports(tmp_path: Path) -> None:
    views = render(tmp_path, {"alpha": [
        requirement("web", {"service": "web"},
                    egress=[to({"service": "api"}, ports_=["9090/TCP"])]),
    ]})
    assert views["alpha/a1"].policy("web-ns", "web").direction("egress") == {
        ep("egress", {"app": "api"}, "api-ns", {"alpha-1", "alpha-2"}, ports("9090/TCP")),
        dns("alpha-1"),
    }


def test_ingress_of_a_service_requirement_gets_the_protected_services_ports(
    tmp_path: Path,
) -> None:
    views = render(tmp_path, {"alpha": [
        # api protects itself: web (TCP/80) may call it. The ports are api's, never web's.
        requirement("api", {"service": "api"}, ingress=[
            from_({"service": "web"}),
            from_({"role": "probe"}),  # raw peer: same rule, api's ports
            from_({"service": "shop", "domain": "beta"}, ports_=["8080/TCP"]),  # explicit wins
        ]),
    ]})
    for path, mesh in (("alpha/a1", "alpha-1"), ("alpha/a2", "alpha-2")):
        policy = views[path].policy("api-ns", "api")
        assert policy.direction("ingress") == {
            ep("ingress", {"app": "web"}, "web-ns", "alpha-1", API_PORTS),
            ep("ingress", {"role": "probe"}, "api-ns", mesh, API_PORTS),
            ep("ingress", {"app": "shop"}, "shop", "beta-1", ports("8080/TCP")),
        }
        assert policy.default_deny == {"egress": False, "ingress": True}
        assert "egress" not in policy.sections  # ingress-only: no DNS rule, egress untouched


def test_ingress_of_a_raw_selector_requirement_allows_any_port(tmp_path: Path) -> None:
    views = render(tmp_path, {"alpha": [
        requirement("probe", {"role": "probe"}, namespace="api-ns", clusters=["a1"],
                    ingress=[from_({"service": "web"})]),
    ]})
    assert views["alpha/a1"].policy("api-ns", "probe").direction("ingress") == {
        ep("ingress", {"app": "web"}, "web-ns", "alpha-1", None),
    }


def test_ingress_cidr_rule_of_a_service_requirement_gets_the_protected_services_ports(
    tmp_path: Path,
) -> None:
    views = render(tmp_path, {"alpha": [
        requirement("api", {"service": "api"}, ingress=[
            {"fromCIDRSet": [{"cidr": "10.0.0.0/8"}]},
            {"fromCIDRSet": [{"cidr": "192.0.2.0/24"}],
             "toPorts": [{"ports": [{"port": "9090", "protocol": "TCP"}]}]},
        ]),
    ]})
    assert views["alpha/a1"].policy("api-ns", "api").direction("ingress") == {
        cidr("ingress", "10.0.0.0/8", port_set=API_PORTS),
        cidr("ingress", "192.0.2.0/24", port_set=ports("9090/TCP")),
    }


# --------------------------------------------------------------------------- DNS and CIDR


def test_one_dns_rule_per_egress_policy_udp_and_tcp_to_the_local_cluster(tmp_path: Path) -> None:
    views = render(tmp_path, {"alpha": [
        requirement("api", {"service": "api"}, egress=[
            to({"service": "db"}),
            to({"role": "x"}, {"role": "y"}),
            to({"k8s:k8s-app": "kube-dns", NS: "kube-system"}, ports_=["53/UDP", "53/TCP"]),
            {"toCIDRSet": [{"cidr": "192.0.2.0/24"}]},
        ]),
    ]})
    for path, mesh in (("alpha/a1", "alpha-1"), ("alpha/a2", "alpha-2")):
        egress = rules(views[path], "api-ns", "api", "egress")
        dns_rules = [r for r in egress if any(
            s["matchLabels"].get("k8s:k8s-app") == "kube-dns" for s in r.get("toEndpoints", []))]
        assert dns_rules == [{
            "toEndpoints": [{"matchLabels": {NS: "kube-system", "k8s:k8s-app": "kube-dns",
                                             CLUSTER: mesh}}],
            "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"},
                                   {"port": "53", "protocol": "TCP"}]}],
        }], path
        assert dns(mesh) in views[path].policy("api-ns", "api").peers


def test_cidr_rules_pass_through(tmp_path: Path) -> None:
    views = render(tmp_path, {"alpha": [
        requirement("web", {"service": "web"},
                    egress=[{"toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]},
                                           {"cidr": "2001:db8::/32"}],
                             "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}],
                    ingress=[{"fromCIDRSet": [{"cidr": "198.51.100.0/24"}]}]),
    ]})
    view = views["alpha/a1"]
    assert rules(view, "web-ns", "web", "egress")[0] == {
        "toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]},
                      {"cidr": "2001:db8::/32"}],
        "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
    }
    policy = view.policy("web-ns", "web")
    # Ingress of a requirement selecting {service: web}: web's ports.
    assert policy.direction("ingress") == {cidr("ingress", "198.51.100.0/24",
                                                port_set=ports("80/TCP"))}
    # A CIDR peer creates no Service and no Namespace.
    assert view.services == frozenset() and view.namespaces == frozenset()


# --------------------------------------------------------------------------- raw peers


def test_raw_peers_get_explicit_namespace_and_local_cluster(tmp_path: Path) -> None:
    views = render(tmp_path, {"alpha": [
        requirement("api", {"service": "api"}, egress=[
            to({"role": "worker"}),
            to({"role": "other", NS: "elsewhere"}),
            to({"role": "third", "io.kubernetes.pod.namespace": "third-ns"}),  # Cilium docs' form
            {"toEndpoints": [{"matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]}]}]},
        ]),
    ]})
    for path, mesh in (("alpha/a1", "alpha-1"), ("alpha/a2", "alpha-2")):
        peers = views[path].policy("api-ns", "api").direction("egress")
        assert peers == {
            ep("egress", {"role": "worker"}, "api-ns", mesh, None),
            ep("egress", {"role": "other"}, "elsewhere", mesh, None),
            ep("egress", {"role": "third"}, "third-ns", mesh, None),
            EndpointPeer("egress", frozenset(), "api-ns", frozenset({mesh}), None,
                         frozenset({("tier", "In", ("a", "b"))})),
            dns(mesh),
        }
    # Raw peers connect nothing.
    assert all(not v.services and not v.namespaces for v in views.values())


def test_cluster_wide_requirement_selects_the_service_namespace(tmp_path: Path) -> None:
    views = render(tmp_path, {"alpha": [
        requirement("api-wide", {"service": "api"}, namespace="*",
                    egress=[to({"service": "db"})]),
    ]})
    policy = views["alpha/a1"].policy(None, "api-wide")
    assert policy.kind == "CiliumClusterwideNetworkPolicy"
    assert policy.body["spec"]["endpointSelector"] == {"matchLabels": {"app": "api", NS: "api-ns"}}
    assert policy.direction("egress") == {
        ep("egress", {"app": "db"}, "db-ns", "alpha-2", ports("5432/TCP")), dns("alpha-1")}


# --------------------------------------------------------------------------- wildcards


def test_wildcard_peer_matching_nothing_allows_nothing_and_warns(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"beta": [
        requirement("shop", {"service": "shop"},
                    egress=[to({"service": "*", "domain": "gamma"})],
                    ingress=[from_({"service": "*", "cluster": "b3"})]),
        requirement("only-in", {"service": "shop"},
                    ingress=[from_({"service": "*", "domain": "beta", "cluster": "b3"})]),
    ]})
    files, diagnostics = render_files(repo)
    warnings = [d for d in diagnostics if d.severity is Severity.WARNING]
    assert len(warnings) == 3
    assert {d.location.file for d in warnings} == {"requirements/beta/shop.yaml",
                                                   "requirements/beta/only-in.yaml"}
    assert all("allows nothing" in d.message for d in warnings)
    views = cluster_views(files)
    b1 = views["beta/b1"]
    policy = b1.policy("shop", "shop")
    assert policy.peers == {dns("beta-1")}  # only DNS: nothing from gamma
    # Fail closed: both directions stay default-deny. Ingress keeps one empty rule, Cilium's
    # "deny, allow nothing" idiom: default deny is applied per rule, and the CRD needs a section.
    assert policy.default_deny == {"egress": True, "ingress": True}
    assert policy.body["spec"]["ingress"] == [{}]
    only_in = b1.policy("shop", "only-in")
    assert only_in.peers == frozenset()
    assert only_in.default_deny == {"egress": False, "ingress": True}
    assert only_in.body["spec"]["ingress"] == [{}] and "egress" not in only_in.body["spec"]
    # Never an empty selector list, and every policy is accepted by the real CRD schema.
    text = files["clusters/beta/b1/policies.yaml"].decode()
    assert "Endpoints: []" not in text and "CIDRSet: []" not in text
    assert [e for o in b1.objects for e in validate_object(dict(o))] == []
    # gamma's clusters are untouched.
    assert views["gamma/g1"].objects == ()


def test_requirement_without_rules_renders_no_policy(tmp_path: Path) -> None:
    """It restricts nothing (a warning); a policy without sections is not even a valid CNP."""
    repo = repo_with(tmp_path, {"beta": [requirement("idle", {"service": "shop"})]})
    files, diagnostics = render_files(repo)
    assert [d.message for d in diagnostics if d.severity is Severity.WARNING] == [
        "requirement has neither egress nor ingress rules, so it restricts nothing"]
    assert all(view.objects == () for view in cluster_views(files).values())


def test_wildcard_reaches_only_services_exported_to_the_domain(tmp_path: Path) -> None:
    views = render(tmp_path, {"beta": [
        requirement("shop", {"service": "shop"}, egress=[to({"service": "*", "domain": "alpha"})]),
    ]})
    egress = views["beta/b1"].policy("shop", "shop").direction("egress")
    # api is exported to beta; db and web are private to alpha.
    assert egress == {ep("egress", {"app": "api"}, "api-ns", {"alpha-1", "alpha-2"}, API_PORTS),
                      dns("beta-1")}


# --------------------------------------------------------------------------- cluster label


def test_cluster_label_is_match_labels_for_one_and_in_for_several(tmp_path: Path) -> None:
    views = render(tmp_path, {"beta": [
        requirement("shop", {"service": "shop"}, egress=[
            to({"service": "api", "domain": "alpha"}),
            to({"service": "api", "domain": "alpha", "cluster": "a2"}, ports_=["9090/TCP"]),
        ]),
    ]})
    selectors = [r["toEndpoints"][0] for r in rules(views["beta/b1"], "shop", "shop", "egress")]
    assert selectors[0] == {
        "matchLabels": {"app": "api", NS: "api-ns"},
        "matchExpressions": [{"key": CLUSTER, "operator": "In", "values": ["alpha-1", "alpha-2"]}],
    }
    assert selectors[1] == {"matchLabels": {"app": "api", NS: "api-ns", CLUSTER: "alpha-2"}}
    # Mesh names, never the domain-local cluster names.
    text = str(views["beta/b1"].objects)
    assert "'a1'" not in text and "'a2'" not in text


# --------------------------------------------------------------------------- services


def service(view: ClusterView, namespace: str, name: str) -> Mapping[str, Any]:
    return objects_by_key(view)[("Service", namespace, name)]


def test_mirror_where_the_service_does_not_run_global_where_it_does(tmp_path: Path) -> None:
    views = render(tmp_path, {"beta": [
        requirement("shop", {"service": "shop"}, egress=[to(API_OF_ALPHA)]),
    ]})
    b1, a1, a2 = views["beta/b1"], views["alpha/a1"], views["alpha/a2"]
    mirror = service(b1, "api-ns", "api")
    assert mirror["metadata"]["annotations"]["service.cilium.io/global"] == "true"
    assert mirror["metadata"]["annotations"]["service.cilium.io/shared"] == "false"
    assert mirror["spec"]["selector"] == {"app": "api"}
    assert mirror["spec"]["type"] == "ClusterIP"
    assert [(p["port"], p["protocol"], p["name"]) for p in mirror["spec"]["ports"]] == [
        (8080, "TCP", "http"), (9090, "TCP", "metrics")]
    assert "api-ns" in b1.namespaces
    for origin in (a1, a2):  # the Service itself, annotated global where it runs
        body = service(origin, "api-ns", "api")
        assert body["metadata"]["annotations"]["service.cilium.io/global"] == "true"
        assert body["metadata"]["annotations"]["service.cilium.io/shared"] == "true"
        assert origin.namespaces == {"api-ns"}
    # ExternalName in the client's namespace, with the *client* cluster's clusterDomain.
    external = service(b1, "shop", "api")
    assert external["spec"] == {
        "type": "ExternalName", "externalName": "api.api-ns.svc.beta.local",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                  {"name": "metrics", "port": 9090, "protocol": "TCP"}]}
    assert b1.namespaces == {"api-ns", "shop"}
    # b2 and b3 run no shop: nothing for them.
    assert views["beta/b2"].objects == () and views["beta/b3"].objects == ()


def test_same_cluster_same_namespace_needs_no_service(tmp_path: Path) -> None:
    views = render(tmp_path, {"beta": [
        requirement("shop", {"service": "shop"},
                    egress=[to({"service": "cache", "cluster": "b1"})]),
    ]})
    assert views["beta/b1"].services == frozenset()
    assert views["beta/b1"].namespaces == frozenset()


def test_external_name_uses_the_local_cluster_domain(tmp_path: Path) -> None:
    views = render(tmp_path, {"alpha": [
        requirement("api", {"service": "api"}, egress=[to({"service": "db"})]),
    ]})
    assert service(views["alpha/a1"], "api-ns", "db")["spec"]["externalName"] == (
        "db.db-ns.svc.cluster.local")
    assert service(views["alpha/a2"], "api-ns", "db")["spec"]["externalName"] == (
        "db.db-ns.svc.a2.example")


def clash_errors(tmp_path: Path, namespace: str) -> list[Diagnostic]:
    """beta gets its own service "api" on b1 in ``namespace``; its shop calls alpha's api.

    Returns the errors of rendering, after checking that ``validate`` reports them too.
    """
    domains = base_domains()
    domains[1]["spec"]["services"].append(
        {"name": "api", "namespace": namespace, "selector": {"app": "beta-api"},
         "ports": [{"port": 80}], "clusters": ["b1"]})
    repo = repo_with(tmp_path, {"beta": [
        requirement("shop", {"service": "shop"}, egress=[to(API_OF_ALPHA)]),
    ]}, domains)
    with pytest.raises(InputError) as caught:
        render_repository(repo)
    errors = [d for d in caught.value.diagnostics if d.severity is Severity.ERROR]
    inventory, diagnostics = validate(repo)  # `meshplan validate` reports them too
    assert inventory is None and all(e in diagnostics for e in errors)
    assert_verify_reports_what_validate_reports(repo)
    return errors


def assert_verify_reports_what_validate_reports(repo: Path) -> None:
    """``meshplan verify``'s validation (refinement's errors found without building the
    objects when it can) refuses the inputs with exactly validate's diagnostics."""
    from meshplan.pipeline import checked_inventory

    inventory, diagnostics = validate(repo)
    assert inventory is None
    with pytest.raises(InputError) as raised:
        checked_inventory(repo)
    assert raised.value.diagnostics == diagnostics


def test_external_name_clashing_with_an_inventory_service_is_an_error(tmp_path: Path) -> None:
    # shop's own namespace: the ExternalName Service for alpha's api would take beta's api name.
    errors = clash_errors(tmp_path, "shop")
    assert len(errors) == 1
    message = errors[0].message
    assert "beta/api" in message and "alpha/api" in message and "shop" in message
    assert "ExternalName" in message
    assert errors[0].location.file == "requirements/beta/shop.yaml"


def test_mirror_clashing_with_an_inventory_service_is_an_error(tmp_path: Path) -> None:
    # alpha's api namespace: a mirror of alpha's api would replace beta's api.
    errors = clash_errors(tmp_path, "api-ns")
    assert len(errors) == 1
    message = errors[0].message
    assert "beta/api" in message and "alpha/api" in message and "api-ns" in message
    assert "mirror" in message
    assert errors[0].location.file == "requirements/beta/shop.yaml"


# --------------------------------------------------------------------------- metadata


def test_every_object_is_labelled_and_traced(tmp_path: Path) -> None:
    views = render(tmp_path, {
        "alpha": [requirement("web", {"service": "web"}, egress=[to({"service": "api"})])],
        "beta": [requirement("shop", {"service": "shop"},
                             egress=[to({"service": "*", "domain": "alpha"})])],
    })
    objects = [o for v in views.values() for o in v.objects]
    assert {o["kind"] for o in objects} == {"Namespace", "Service", "CiliumNetworkPolicy"}
    # all_anomalies (called by render) checks every Namespace annotation and every label; here
    # the required-by values are checked against the requirements that caused each object.
    known = {"alpha/web-ns/web", "beta/shop/shop"}
    assert all(required_by(o) <= known for o in objects)
    a1 = objects_by_key(views["alpha/a1"])
    assert required_by(a1[("Namespace", "", "api-ns")]) == known  # shared by both
    assert required_by(a1[("Service", "web-ns", "api")]) == {"alpha/web-ns/web"}  # ExternalName
    assert required_by(a1[("CiliumNetworkPolicy", "web-ns", "web")]) == {"alpha/web-ns/web"}
    for obj in objects:
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-2"


# --------------------------------------------------------------------------- removal


def without_required_by(obj: Mapping[str, Any]) -> dict[str, Any]:
    annotations = {k: v for k, v in obj["metadata"]["annotations"].items() if k != REQUIRED_BY}
    return {**obj, "metadata": {**obj["metadata"], "annotations": annotations}}


def test_removing_a_requirement_removes_exactly_what_only_it_caused(tmp_path: Path) -> None:
    web = requirement("web", {"service": "web"}, egress=[to({"service": "api"})])
    shop = requirement("shop", {"service": "shop"}, egress=[to(API_OF_ALPHA)])
    before = render(tmp_path / "1", {"alpha": [web], "beta": [shop]})
    after = render(tmp_path / "2", {"alpha": [web]})
    removed = "beta/shop/shop"
    shared = 0
    for path, view in before.items():
        old = objects_by_key(view)
        new = objects_by_key(after[path])
        assert set(new) <= set(old), path
        for key, obj in old.items():
            causes = required_by(obj)
            if causes == {removed}:
                assert key not in new, (path, key)
            elif removed in causes:
                shared += 1
                assert required_by(new[key]) == causes - {removed}, (path, key)
                assert without_required_by(new[key]) == without_required_by(obj), (path, key)
            else:
                assert new[key] == obj, (path, key)
    assert shared >= 3  # api's global Services in a1/a2 and Namespace api-ns are shared


# --------------------------------------------------------------------------- consent


def test_other_domains_output_changes_only_for_services_exported_to_the_requirement(
    tmp_path: Path,
) -> None:
    base = render(tmp_path / "1", {})
    views = render(tmp_path / "2", {"beta": [
        requirement("shop", {"service": "shop"},
                    egress=[to({"service": "*", "domain": "alpha"})],
                    ingress=[from_({"service": "*", "domain": "alpha"}),
                             from_({"service": "*", "domain": "gamma"})]),
    ]})
    exported = {("api-ns", "api")}  # alpha's services exported to beta
    for path in ("alpha/a1", "alpha/a2", "gamma/g1"):
        old, new = objects_by_key(base[path]), objects_by_key(views[path])
        changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
        for kind, namespace, name in changed:
            if kind == "Namespace":
                assert name in {ns for ns, _ in exported}, (path, name)
            else:
                assert kind == "Service" and (namespace, name) in exported, (path, kind, name)
    assert views["gamma/g1"].objects == ()
    assert objects_by_key(views["alpha/a1"])  # something did change for api
    # exportTo is about calling: the ingress peers admit gamma's private service all the same
    ingress = views["beta/b1"].policy("shop", "shop").direction("ingress")
    assert ep("ingress", {"app": "hidden"}, "hidden", {"gamma-1"}, ports("443/TCP")) in ingress


def test_naming_a_service_that_is_not_exported_is_an_error(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"beta": [
        requirement("shop", {"service": "shop"}, egress=[to({"service": "db", "domain": "alpha"})]),
    ]})
    inventory, diagnostics = validate(repo)
    assert inventory is None
    errors = [d for d in diagnostics if d.severity is Severity.ERROR]
    assert len(errors) == 1 and "exportTo" in errors[0].message


def test_deleting_a_named_service_lists_every_requirement_that_names_it(tmp_path: Path) -> None:
    domains = base_domains()
    domains[0]["spec"]["services"] = [s for s in domains[0]["spec"]["services"]
                                      if s["name"] != "api"]
    repo = repo_with(tmp_path, {
        "alpha": [requirement("web", {"service": "web"}, egress=[to({"service": "api"})]),
                  requirement("any", {"service": "web"}, egress=[to({"service": "*"})])],
        "beta": [requirement("shop", {"service": "shop"},
                             egress=[to({"service": "api", "domain": "alpha"})])],
    }, domains)
    inventory, diagnostics = validate(repo)
    assert inventory is None
    errors = [d for d in diagnostics if d.severity is Severity.ERROR]
    assert {d.location.file for d in errors} == {"requirements/alpha/web.yaml",
                                                 "requirements/beta/shop.yaml"}


# --------------------------------------------------------------------------- clusters


def test_a_cluster_nothing_targets_gets_an_empty_kustomization(tmp_path: Path) -> None:
    files, _ = render_files(repo_with(tmp_path, {"alpha": [
        requirement("web", {"service": "web"}, egress=[to({"service": "api"})])]}))
    assert sorted(p for p in files if p.startswith("clusters/beta/b3/")) == [
        "clusters/beta/b3/kustomization.yaml"]
    text = files["clusters/beta/b3/kustomization.yaml"].decode()
    assert text.endswith("kind: Kustomization\nresources: []\n")


def test_clusters_removed_from_the_inventory_disappear(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"alpha": [
        requirement("web", {"service": "web"}, egress=[to({"service": "api"})])]})
    out = tmp_path / "out"
    assert run_cli(["render", "--repo", str(repo), "--out", str(out)])[0] == 0
    assert (out / "clusters" / "beta" / "b3").is_dir()
    domains = base_domains()
    domains[1]["spec"]["clusters"] = [c for c in domains[1]["spec"]["clusters"]
                                      if c["name"] != "b3"]
    domains.pop(2)  # all of gamma
    (repo / "inventory" / "gamma.yaml").unlink()
    write_repo(repo, domains, {})
    code, _, err = run_cli(["render", "--repo", str(repo), "--out", str(out)])
    assert code == 0, err
    assert not (out / "clusters" / "beta" / "b3").exists()
    assert not (out / "clusters" / "gamma").exists()
    assert set(read_output(out)) == {"alpha/a1", "alpha/a2", "beta/b1", "beta/b2"}


# --------------------------------------------------------------------------- Cilium's meaning


@pytest.mark.parametrize(("peer", "pinned"), [
    ({"app": "x"}, True),
    ({"io.cilium.k8s.namespace.labels.team": "pay"}, False),
    ({"k8s:io.cilium.k8s.namespace.labels.team": "pay"}, False),
    ({"any:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name": "web-ns"}, False),
    ({"app": "x", "io.kubernetes.pod.namespace": "web-ns"}, False),
])
def test_a_raw_peer_is_pinned_to_the_policy_namespace_as_cilium_pins_it(
        tmp_path: Path, peer: dict[str, str], pinned: bool) -> None:
    """Cilium pins a CNP's peer to the policy's namespace unless it names a namespace or
    selects by namespace labels (pods of every namespace so labelled): meshplan writes what
    Cilium would do, never a namespace that narrows a namespace-label peer to nothing."""
    views = render(tmp_path, {"alpha": [
        requirement("web", {"service": "web"}, egress=[to(peer)])]})
    [rule] = [r for r in rules(views["alpha/a1"], "web-ns", "web", "egress")
              if "k8s:k8s-app" not in r["toEndpoints"][0]["matchLabels"]]
    labels = rule["toEndpoints"][0]["matchLabels"]
    assert (labels.get(NS) == "web-ns") is pinned
    assert labels[CLUSTER] == "alpha-1"


def test_more_than_40_ports_are_split_into_port_rules(tmp_path: Path) -> None:
    """Cilium rejects a whole policy with more than 40 ports in one toPorts entry."""
    domains = base_domains()
    domains[0]["spec"]["services"][0]["ports"] = [
        {"port": 8000 + i, "protocol": "TCP", "name": f"p{i}"} for i in range(95)]
    views = render(tmp_path, {"alpha": [
        requirement("web", {"service": "web"}, egress=[to({"service": "api"})]),
        requirement("in", {"service": "api"}, ingress=[from_({"service": "web"})]),
    ]}, domains)
    for namespace, name, direction in (("web-ns", "web", "egress"), ("api-ns", "in", "ingress")):
        [rule] = [r for r in rules(views["alpha/a1"], namespace, name, direction)
                  if r.get("toPorts") and len(r["toPorts"]) > 1]
        assert [len(entry["ports"]) for entry in rule["toPorts"]] == [40, 40, 15]
        assert {int(p["port"]) for e in rule["toPorts"] for p in e["ports"]} == set(
            range(8000, 8095))
        assert [e for o in views["alpha/a1"].objects for e in validate_object(dict(o))] == []


def load_balancing(diagnostics: Sequence[Diagnostic]) -> list[str]:
    return [d.message for d in diagnostics if d.severity is Severity.WARNING
            and "load-balanced to" in d.message]


# The research note's cases: who calls api (a1, a2) limited to which clusters, and what the
# global Service in the caller's cluster load-balances to.
@pytest.mark.parametrize(("callers", "lost", "fix"), [
    # a client in a1 admits only a2, but a1's own copy is global: local backends are used too
    ([("alpha", "web", {"service": "api", "cluster": "a2"})], ["a1"],
     "service.cilium.io/affinity: remote on api in a1"),
    # a client in a1 admits only a1, while another requirement makes a1's copy global (a
    # client elsewhere calls api everywhere): a1's clients are load-balanced to a2 as well
    ([("alpha", "web", {"service": "api", "cluster": "a1"}),
      ("beta", "shop", {"service": "api", "domain": "alpha"})], ["a2"],
     "service.cilium.io/affinity: local on api in a1"),
    # a client in b1 (a mirror) admits only a2, while a1 shares its backends (another caller)
    ([("beta", "shop", {"service": "api", "domain": "alpha", "cluster": "a2"}),
      ("beta", "cache", {"service": "api", "domain": "alpha", "cluster": "a1"})], ["a1"],
     'stop a1 sharing its backends (service.cilium.io/shared: "false"'),
])
def test_a_cluster_limited_peer_behind_a_wider_global_service_is_a_warning(
        tmp_path: Path, callers: list[tuple[str, str, dict[str, str]]], lost: list[str],
        fix: str) -> None:
    requirements: dict[str, list[dict[str, Any]]] = {}
    for domain_name, service, peer in callers:
        requirements.setdefault(domain_name, []).append(
            requirement(f"{service}-calls", {"service": service}, egress=[to(peer)]))
    _, diagnostics = render_files(repo_with(tmp_path, requirements))
    warned = [w for w in load_balancing(diagnostics) if f"found {', '.join(lost)} not "
              "admitted" in w]
    assert warned, diagnostics
    assert any(fix in w for w in warned), warned
    assert all(w.startswith("expected the clusters the peers of these pods admit") for w in warned)


@pytest.mark.parametrize("peer", [
    {"service": "api"},  # every cluster admitted
    {"service": "api", "cluster": "a1"},  # only local, and a1's copy is not global
    {"service": "api", "domain": "alpha", "cluster": "a2"},  # a mirror fed by a2 only
])
def test_a_peer_admitting_every_backend_is_not_warned(tmp_path: Path,
                                                     peer: dict[str, str]) -> None:
    owner = "beta" if peer.get("domain") else "alpha"
    service = "shop" if owner == "beta" else "web"
    _, diagnostics = render_files(repo_with(tmp_path, {owner: [
        requirement("calls", {"service": service}, egress=[to(peer)])]}))
    assert load_balancing(diagnostics) == []


def test_clients_in_several_clusters_share_one_warning_naming_them_all(tmp_path: Path) -> None:
    """cache runs in b1 and b2 and admits only a1 of api, which a2 shares too (shop calls it
    there): one warning, naming both client clusters, not one per client cluster."""
    _, diagnostics = render_files(repo_with(tmp_path, {"beta": [
        requirement("shop-calls", {"service": "shop"},
                    egress=[to({"service": "api", "domain": "alpha", "cluster": "a2"})]),
        requirement("cache-calls", {"service": "cache"},
                    egress=[to({"service": "api", "domain": "alpha", "cluster": "a1"})]),
    ]}))
    warned = [w for w in load_balancing(diagnostics) if "found a2 not admitted" in w]
    assert warned == [
        "expected the clusters the peers of these pods admit (a1) to cover every backend of the "
        "global Service api-ns/api that clients in b1 and b2 are load-balanced to (a1, a2), found "
        "a2 not admitted: those connections will be dropped, at random. Fix: admit a2 too (or "
        'drop cluster: from the peer); or stop a2 sharing its backends (service.cilium.io/shared: '
        '"false", which affects every caller) (affinity is a preference with fail-over, not a '
        "guarantee)"]


def test_clients_with_different_advice_keep_their_own_warnings(tmp_path: Path) -> None:
    """web in a1..a4 admits only a1 of api (in a1 and a2): a1 may set local affinity, a2
    remote affinity, and a3 and a4 (no backends of their own) only stop a2 sharing -- three
    warnings, each with the advice of its clients, the same advice once."""
    domains = base_domains()
    domains[0]["spec"]["clusters"].extend([{"name": "a3", "meshName": "alpha-3", "meshId": 6},
                                           {"name": "a4", "meshName": "alpha-4", "meshId": 7}])
    domains[0]["spec"]["services"][2]["clusters"] = ["a1", "a2", "a3", "a4"]
    _, diagnostics = render_files(repo_with(tmp_path, {"alpha": [
        requirement("web", {"service": "web"},
                    egress=[to({"service": "api", "cluster": "a1"})])]}, domains))
    warned = load_balancing(diagnostics)
    head = ("expected the clusters the peers of these pods admit (a1) to cover every backend of "
            "the global Service api-ns/api that clients in ")
    found = (" are load-balanced to (a1, a2), found a2 not admitted: those connections will be "
             "dropped, at random. Fix: admit a2 too (or drop cluster: from the peer); or ")
    stop = 'stop a2 sharing its backends (service.cilium.io/shared: "false", which affects every ' \
        "caller)"
    tail = " (affinity is a preference with fail-over, not a guarantee)"
    assert sorted(warned) == sorted([
        f"{head}a1{found}set service.cilium.io/affinity: local on api in a1; or {stop}{tail}",
        f"{head}a2{found}set service.cilium.io/affinity: remote on api in a2{tail}",
        f"{head}a3 and a4{found}{stop}{tail}"])


def test_requirements_selecting_the_same_pods_are_unioned(tmp_path: Path) -> None:
    """Cilium unions the allows of every policy selecting a pod: a second requirement on the
    same pods admitting the other cluster settles it (the thesis' use case 2b)."""
    _, diagnostics = render_files(repo_with(tmp_path, {"alpha": [
        requirement("local", {"service": "web"}, egress=[to({"service": "api", "cluster": "a1"})]),
        requirement("all", {"service": "web"}, egress=[to({"service": "api"})]),
    ]}))
    assert load_balancing(diagnostics) == []


def test_an_external_name_longer_than_253_characters_is_an_error(tmp_path: Path) -> None:
    domains = base_domains()
    domains[1]["spec"]["clusters"][0]["clusterDomain"] = ".".join(["c" * 60] * 4)
    repo = repo_with(tmp_path, {"beta": [
        requirement("shop", {"service": "shop"}, egress=[to(API_OF_ALPHA)])]}, domains)
    inventory, diagnostics = validate(repo)
    assert inventory is None
    [problem] = [d for d in diagnostics if d.severity is Severity.ERROR]
    assert problem.message.startswith("expected the ExternalName Service shop/api of beta/b1 to "
                                      "point at a DNS name of at most 253 characters, found "
                                      "'api.api-ns.svc.cccc")
    assert_verify_reports_what_validate_reports(repo)


def test_every_emitted_object_is_admitted_and_the_check_can_fail(tmp_path: Path) -> None:
    """all_anomalies (run by the render tests and the random-repository properties) checks
    every emitted selector and name with meshplan.admission; it does flag a planted one."""
    views = render(tmp_path, {"alpha": [
        requirement("web", {"service": "web"}, egress=[to({"service": "api"})])]})
    policy = dict(views["alpha/a1"].policy("web-ns", "web").body)
    bad = {**policy, "spec": {**policy["spec"], "endpointSelector": {"matchExpressions": [
        {"key": "tier", "operator": "In"}]}}}
    assert admission_anomalies(policy) == []
    assert [p.split(": ", 1)[1] for p in admission_anomalies(bad)] == [
        "expected at least one value for operator In, found none (Cilium rejects the whole "
        "policy)"]
    service = {"kind": "Service", "metadata": {"name": "2web", "namespace": "n"}, "spec": {}}
    assert admission_anomalies(service) == ["Service n/2web: invalid name for its kind"]


def test_the_fast_manifest_maker_sets_every_field_as_the_dataclass_does() -> None:
    """refine._manifest bypasses Manifest's frozen __init__: a field added to Manifest must be
    added there too (else finish would make objects without it)."""
    import dataclasses

    from meshplan.refine import ClusterRef, Manifest, ObjectKey, _manifest, _object_key

    key = _object_key((ClusterRef("d", "c"), "Service", "ns", "n"))
    assert type(key) is ObjectKey and key == ObjectKey(ClusterRef("d", "c"), "Service", "ns", "n")
    body = {"kind": "Service"}
    made = _manifest(key, body, ("a/r",), body)
    assert vars(made) == vars(Manifest(key, body, ("a/r",), body))
    assert set(vars(made)) == {f.name for f in dataclasses.fields(Manifest)}
    assert made == Manifest(key, body, ("a/r",), None)  # shared is not compared


@pytest.mark.parametrize("annotations", [
    {}, {"service.cilium.io/global": "true"}, {"service.cilium.io/global": "True"},
    {"service.cilium.io/global": "true", "service.cilium.io/shared": "false"},
    {"service.cilium.io/global": "true", "service.cilium.io/shared": "no"},
    {"service.cilium.io/global": "TRUE", "service.cilium.io/shared": "FALSE"},
    {"io.cilium/global-service": "true"}, {"io.cilium/global-service": "true",
                                          "io.cilium/shared-service": "false"},
    {"service.cilium.io/global": "false", "io.cilium/global-service": "true"},
    {"service.cilium.io/shared": "true"}, {"service.cilium.io/global": True},
])
def test_refinement_reads_a_copys_flags_as_verify_and_cilium_do(
        annotations: dict[str, object]) -> None:
    """Which copies give and take remote backends, for the load-balancing warnings before
    render, is the agent's reading verify uses (one function): any letter case of "true",
    the legacy keys, shared only when global and true when absent."""
    from meshplan.admission import cilium_service_flags
    from meshplan.refine import _is_global, _shares

    assert (_is_global(annotations), _shares(annotations)) == \
        cilium_service_flags(annotations)
