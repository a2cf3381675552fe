"""meshplan.mesh.identity: the Istio identity layer rendered from the requirements.

Over the mesh fixture (``tests/support/mesh_fixture.py``): web (retail, eu1 and us1, service
account web) calls cart (ap1, no Istio) and pay (payments, p1, service account pay), which
admits web. Each test edits one thing and reads the rendered objects or what validate says.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from meshplan.diagnostics import Diagnostic, Severity
from meshplan.mesh.identity import participating_namespaces, strict_namespaces
from meshplan.model import Inventory
from meshplan.pipeline import render_repository, validate
from meshplan.refine import ClusterRef
from meshplan.write import write_tree

from tests.support.ci import examples
from tests.support.flows import errors, verify_repo
from tests.support.k8s import kustomize_build, require_kubectl, validate_object
from tests.support.mesh_fixture import MeshRepo, mesh_repo, requirement
from tests.support.semantics import admission_anomalies
from tests.support.strategies import RepoSpec, repos

PAY = "requirements/payments/pay.yaml"
P1 = "clusters/payments/p1/istio-security.yaml"


def rendered(repo: MeshRepo, tmp_path: Path) -> tuple[dict[str, bytes], tuple[Diagnostic, ...]]:
    root = repo.write(tmp_path / "repo")
    output, diagnostics = render_repository(root)
    return {f.path: f.content for f in output.files}, diagnostics


def objects(files: dict[str, bytes], path: str, kind: str) -> dict[str, dict[str, Any]]:
    return {f"{d['metadata']['namespace']}/{d['metadata']['name']}": d
            for d in yaml.safe_load_all(files.get(path, b"")) if d and d["kind"] == kind}


def pay_admits(repo: MeshRepo, *peers: dict[str, Any], cidrs: bool = False) -> None:
    rule: dict[str, Any] = ({"fromCIDRSet": [{"cidr": "192.0.2.0/24"}]} if cidrs
                            else {"fromEndpoints": [{"matchLabels": p} for p in peers]})
    repo.requirements[PAY]["spec"]["ingress"] = [rule]


def messages(diagnostics: tuple[Diagnostic, ...], severity: Severity) -> list[str]:
    return [d.format_text() for d in diagnostics if d.severity is severity]


def test_the_fixture_admits_web_from_both_its_clusters(tmp_path: Path) -> None:
    files, diagnostics = rendered(mesh_repo(), tmp_path)
    assert messages(diagnostics, Severity.WARNING) == []
    pay = objects(files, P1, "AuthorizationPolicy")["pay/pay"]
    assert pay["spec"] == {"selector": {"matchLabels": {"app": "pay"}}, "action": "ALLOW",
                           "rules": [{"from": [{"source": {"principals": [
                               "retail-eu1.example/ns/shop/sa/web",
                               "retail-us1.example/ns/shop/sa/web"]}}],
                               "to": [{"operation": {"ports": ["50051"]}}]}]}
    annotations = pay["metadata"]["annotations"]
    assert annotations["meshplan.dev/required-by"] == "payments/pay/pay"
    assert annotations["meshplan.dev/source"] == PAY
    assert "argocd.argoproj.io/sync-wave" not in annotations  # as the Cilium policies
    assert pay["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "meshplan"}
    # web restricts only its egress: Istio authorizes at the server, so nothing for web
    assert objects(files, "clusters/retail/eu1/istio-security.yaml", "AuthorizationPolicy") \
        == {}
    assert "clusters/retail/ap1/istio-security.yaml" not in files  # no Istio there


def test_strict_namespaces(tmp_path: Path) -> None:
    repo = mesh_repo()
    inventory, _ = validate(repo.write(tmp_path / "a"))
    assert inventory is not None
    assert strict_namespaces(inventory) == {
        ClusterRef("payments", "p1"): ("pay",), ClusterRef("retail", "eu1"): ("shop",),
        ClusterRef("retail", "us1"): ("shop",)}
    # a namespace that only calls across clusters: batch (jobs) is an ingress peer of pay
    repo.services["retail"].append({
        "name": "batch", "namespace": "jobs", "serviceAccount": "batch",
        "selector": {"app": "batch"}, "ports": [{"port": 80, "protocol": "TCP"}],
        "clusters": ["eu1"], "exportTo": ["payments"]})
    pay_admits(repo, {"service": "web", "domain": "retail"},
               {"service": "batch", "domain": "retail"})
    repo.mesh_spec["istio"]["strictMTLS"] = "mesh"
    inventory, _ = validate(repo.write(tmp_path / "b"))
    assert inventory is not None
    assert strict_namespaces(inventory) == {
        ClusterRef("payments", "p1"): ("istio-system", "pay"),
        ClusterRef("retail", "eu1"): ("istio-system", "jobs", "shop"),
        ClusterRef("retail", "us1"): ("istio-system", "shop")}


def test_no_consent_no_strict_namespace_in_another_domain(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.services["retail"].append({
        "name": "batch", "namespace": "jobs", "serviceAccount": "batch",
        "selector": {"app": "batch"}, "ports": [{"port": 80, "protocol": "TCP"}],
        "clusters": ["eu1"]})  # not exported: payments may admit it, but not touch eu1
    pay_admits(repo, {"service": "batch", "domain": "retail"})
    inventory, _ = validate(repo.write(tmp_path))
    assert inventory is not None
    assert strict_namespaces(inventory)[ClusterRef("retail", "eu1")] == ("shop",)


def service(name: str, namespace: str, cluster: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "selector": {"app": name},
            "ports": [{"port": 80, "protocol": "TCP"}], "clusters": [cluster]}


def inventory_of(repo: MeshRepo, root: Path) -> Inventory:
    inventory, _ = validate(repo.write(root))
    assert inventory is not None
    return inventory


def test_a_caller_in_the_same_cluster_only_is_not_strict(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.services["retail"] += [service("stock", "stock", "eu1"), service("shelf", "shelf", "eu1")]
    repo.requirements["requirements/retail/stock.yaml"] = requirement(
        "stock", {"service": "stock"},
        ingress=[{"fromEndpoints": [{"matchLabels": {"service": "shelf"}}]}])
    # shelf calls stock inside eu1 only: stock is protected, shelf is not STRICT
    assert strict_namespaces(inventory_of(repo, tmp_path))[ClusterRef("retail", "eu1")] == (
        "shop", "stock")


def test_raw_cluster_wide_and_unrestricting_requirements_add_nothing(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.requirements["requirements/retail/all.yaml"] = requirement(
        "all", {"tier": "x"}, "*", clusters=["eu1"],
        egress=[{"toEndpoints": [{"matchLabels": {"service": "cart"}}]}])
    repo.requirements["requirements/retail/nothing.yaml"] = requirement(
        "nothing", {"tier": "y"}, "quiet", clusters=["eu1"])
    assert strict_namespaces(inventory_of(repo, tmp_path))[ClusterRef("retail", "eu1")] == (
        "shop",)


def test_participating_namespaces_are_the_strict_ones_in_every_cluster(tmp_path: Path) -> None:
    """The same rule outside Istio (monitoring watches them there): cart, protected in ap1
    (no Istio member), takes part there but is not STRICT; each with its requirements."""
    repo = mesh_repo()
    repo.requirements["requirements/retail/cart.yaml"] = requirement(
        "cart", {"service": "cart"},
        ingress=[{"fromEndpoints": [{"matchLabels": {"service": "web"}}]}])
    inventory = inventory_of(repo, tmp_path)
    taking_part = participating_namespaces(inventory)
    # web calls into ap1 and p1: it takes part where it runs (eu1, us1) by its own requirement
    # and both that admit it
    web = {"shop": {"retail/shop/web", "retail/shop/cart", "payments/pay/pay"}}
    assert taking_part == {
        ClusterRef("retail", "eu1"): web, ClusterRef("retail", "us1"): web,
        ClusterRef("retail", "ap1"): {"shop": {"retail/shop/cart"}},
        ClusterRef("payments", "p1"): {"pay": {"payments/pay/pay"}}}
    assert strict_namespaces(inventory) == {
        ref: tuple(sorted(namespaces)) for ref, namespaces in taking_part.items()
        if ref != ClusterRef("retail", "ap1")}


def test_mesh_wide_strict_is_one_more_default_in_the_root_namespace(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.mesh_spec["istio"]["strictMTLS"] = "mesh"
    files, _ = rendered(repo, tmp_path)
    for cluster in ("retail/eu1", "retail/us1", "payments/p1"):
        found = objects(files, f"clusters/{cluster}/istio-security.yaml", "PeerAuthentication")
        root = found["istio-system/default"]
        assert root["spec"] == {"mtls": {"mode": "STRICT"}}
        assert root["metadata"]["annotations"]["meshplan.dev/required-by"] == "mesh/mesh1"
        assert len(found) == 2


def test_a_service_without_a_service_account_is_its_namespace(tmp_path: Path) -> None:
    repo = mesh_repo()
    del repo.services["retail"][0]["serviceAccount"]
    files, diagnostics = rendered(repo, tmp_path)
    notices = messages(diagnostics, Severity.NOTICE)
    assert len(notices) == 1  # once per service, not per cluster
    assert "service retail/web has no serviceAccount" in notices[0]
    assert "eu1, us1" in notices[0] and notices[0].startswith("inventory/retail.yaml:")
    principals = objects(files, P1, "AuthorizationPolicy")["pay/pay"]["spec"]["rules"][0][
        "from"][0]["source"]["principals"]
    assert principals == ["retail-eu1.example/ns/shop/sa/*", "retail-us1.example/ns/shop/sa/*"]


def test_an_invalid_service_account_is_a_located_error(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.services["retail"][0]["serviceAccount"] = "Web_1"
    inventory, diagnostics = validate(repo.write(tmp_path))
    assert inventory is None
    [problem] = [d for d in diagnostics if d.severity is Severity.ERROR]
    assert problem.path == "spec.services[0].serviceAccount"
    assert problem.location.file == "inventory/retail.yaml" and problem.location.line > 0
    assert "DNS-1123 subdomain" in problem.message and "Web_1" in problem.message


def test_a_raw_label_peer_is_admitted_by_namespace(tmp_path: Path) -> None:
    repo = mesh_repo()
    pay_admits(repo, {"app": "batch"})
    files, diagnostics = rendered(repo, tmp_path)
    [warned] = messages(diagnostics, Severity.WARNING)
    assert warned.startswith(f"{PAY}:")
    assert "a raw pod-label peer has no known service account" in warned
    assert "payments-p1.example/ns/pay/sa/*" in warned
    pay = objects(files, P1, "AuthorizationPolicy")["pay/pay"]
    assert pay["spec"]["rules"][0]["from"][0]["source"]["principals"] == [
        "payments-p1.example/ns/pay/sa/*"]


def test_a_cidr_peer_is_never_admitted_by_identity(tmp_path: Path) -> None:
    repo = mesh_repo()
    pay_admits(repo, cidrs=True)
    files, diagnostics = rendered(repo, tmp_path)
    assert any("a CIDR cannot be admitted by workload identity" in w and "192.0.2.0/24" in w
               for w in messages(diagnostics, Severity.WARNING))
    pay = objects(files, P1, "AuthorizationPolicy")["pay/pay"]
    assert pay["spec"] == {"selector": {"matchLabels": {"app": "pay"}}, "action": "ALLOW"}


def test_nothing_admitted_is_allow_nothing_never_allow_all(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.requirements[PAY]["spec"]["ingress"] = []
    files, _ = rendered(repo, tmp_path)
    pay = objects(files, P1, "AuthorizationPolicy")["pay/pay"]
    assert "rules" not in pay["spec"] and pay["spec"]["action"] == "ALLOW"


def test_a_peer_outside_istio_is_plaintext(tmp_path: Path) -> None:
    repo = mesh_repo()
    pay_admits(repo, {"service": "cart", "domain": "retail"})
    files, diagnostics = rendered(repo, tmp_path)
    assert any("retail/cart@ap1 run in clusters that are not Istio members" in w
               for w in messages(diagnostics, Severity.WARNING))
    assert "rules" not in objects(files, P1, "AuthorizationPolicy")["pay/pay"]["spec"]


def test_clusters_sharing_a_trust_domain_are_named(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.cluster("us1")["istio"]["trustDomain"] = "retail-eu1.example"
    files, diagnostics = rendered(repo, tmp_path)
    warned = [w for w in messages(diagnostics, Severity.WARNING) if w.startswith(PAY)]
    assert len(warned) == 1
    assert "clusters retail/eu1, retail/us1 share the trust domain 'retail-eu1.example'" in \
        warned[0] and "payments/pay/pay" in warned[0]
    principals = objects(files, P1, "AuthorizationPolicy")["pay/pay"]["spec"]["rules"][0][
        "from"][0]["source"]["principals"]
    assert principals == ["retail-eu1.example/ns/shop/sa/web"]


def test_a_subject_istio_cannot_select(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.requirements["requirements/payments/jobs.yaml"] = {
        "apiVersion": "meshplan.dev/v1alpha1", "kind": "Requirement",
        "metadata": {"name": "jobs", "namespace": "pay"},
        "spec": {"endpointSelector": {"matchExpressions": [
            {"key": "app", "operator": "In", "values": ["a", "b"]}]},
            "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "c"}}]}]}}
    files, diagnostics = rendered(repo, tmp_path)
    assert any("selects pods by labels only" in w and "Cilium alone enforces its ingress" in w
               for w in messages(diagnostics, Severity.WARNING))
    assert "pay/jobs" not in objects(files, P1, "AuthorizationPolicy")


def test_never_deny_never_the_local_shorthand(tmp_path: Path) -> None:
    repo = mesh_repo()
    pay_admits(repo, {"service": "web", "domain": "retail"}, {"app": "batch"})
    files, _ = rendered(repo, tmp_path)
    for path, content in files.items():
        for doc in yaml.safe_load_all(content) if path.endswith(".yaml") else ():
            if isinstance(doc, dict) and doc.get("kind") == "AuthorizationPolicy":
                assert doc["spec"]["action"] == "ALLOW"
                text = yaml.safe_dump(doc)
                assert "cluster.local/" not in text


# --------------------------------------------------------------------------- property


@pytest.mark.slow
@settings(max_examples=examples(12), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(repos(istio=True, allow_unfilled_ingress=True))
def test_random_meshes_render_build_validate_and_verify(spec: RepoSpec) -> None:
    """Every generated mesh: each Istio object is valid for the Istio 1.30 CRDs and the API
    server, an ALLOW whose principals name members' trust domains, and the whole output
    builds with kustomize and verifies clean (both layers)."""
    require_kubectl()
    with tempfile.TemporaryDirectory() as tmp:
        root = spec.write(Path(tmp) / "repo")
        output, _ = render_repository(root)
        out = Path(tmp) / "out"
        write_tree(out, output.files)
        domains = {d["metadata"]["name"]: d for d in spec.domains}
        trust_domains = {c["istio"]["trustDomain"] for d in domains.values()
                         for c in d["spec"]["clusters"] if "istio" in c}
        for folder in sorted((out / "clusters").glob("*/*")):
            for obj in kustomize_build(folder):
                assert validate_object(obj, require_namespace=obj["kind"] != "Namespace") \
                    == [], obj
                assert admission_anomalies(obj) == [], obj
                if obj["kind"] == "AuthorizationPolicy":
                    assert obj["spec"]["action"] == "ALLOW"
                    for rule in obj["spec"].get("rules", []):
                        for source in rule["from"]:
                            for principal in source["source"]["principals"]:
                                assert principal.split("/")[0] in trust_domains, principal
        assert errors(verify_repo(root)) == [], spec.files()
