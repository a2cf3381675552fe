"""Golden tests: the thesis' worked examples (chapters 5.3-6), compared semantically.

Inputs are the repositories under ``tests/fixtures/thesis/`` (see its README for how each was
derived). Output is rendered through the public pipeline and read back *from the files* by
``semantics.py``: per policy the set of allowed peers (pod labels, namespace, Cilium mesh
cluster names, ports), per cluster the set of Services (mirror / global / ExternalName) and
Namespaces. Every expectation below was written by hand from the thesis and cites its source.

Where meshplan deliberately differs from the thesis, the expectation says so ("OURS:"):

* L4 ports: the thesis never writes ``toPorts`` for service peers (any port, README A10). We
  restrict an egress service peer to that service's inventory ports, and the ingress of a
  requirement that selects ``{service: x}`` to x's ports.
* DNS: thesis Code Box 5.9 allows UDP/53 to kube-dns without a cluster label; we also allow TCP/53
  and name the local cluster explicitly (platform facts; README A8, A9).
* Namespaces: every peer names its namespace (Code Box 5.7 leaves it out for rebel-base, A6).
* Exporting side: the thesis assumes the origin Service is already global (A12); we annotate it
  global ourselves where it runs and serves a remote client (platform facts: "the exporting side
  needs the annotation too").
* Namespaces taking part in cross-cluster traffic are emitted with the global annotation and
  ``Prune=false``, even when they already exist (thesis: only created when missing, A13); they
  leave the *output* when no longer needed, but GitOps never deletes them (A14).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from meshplan.diagnostics import InputError, Severity
from meshplan.outputs import read_tree
from meshplan.pipeline import render_repository, validate
from ruamel.yaml import YAML

from tests.support.cli import run_cli
from tests.support.repos import THESIS_DIR
from tests.support.semantics import (
    ClusterView,
    by_mesh,
    cidr,
    cluster_views,
    dns,
    ep,
    per_cluster,
    ports,
    read_output,
    render_files,
    render_views,
    without_ports,
)

HTTP = ports("80/TCP")  # every thesis service listens on TCP/80 (Code Boxes 5.11, 5.12, 6.1)
NS = "k8s:io.kubernetes.pod.namespace"


def copy_fixture(name: str, dest: Path) -> Path:
    shutil.copytree(THESIS_DIR / name, dest)
    return dest


def nothing(view: ClusterView) -> bool:
    return view.resources == () and view.objects == ()


# --------------------------------------------------------------------------- chapter 5.3


def expected_5_3_egress() -> frozenset[object]:
    return frozenset({
        # Code Box 5.9: backend in backend-namespace, in both cluster1 and cluster2.
        ep("egress", {"app": "backend"}, "backend-namespace", "cluster1", HTTP),  # OURS: ports
        ep("egress", {"app": "backend"}, "backend-namespace", "cluster2", HTTP),  # OURS: ports
        # Code Box 5.9: database in database-namespace, cluster2 only.
        ep("egress", {"name": "database"}, "database-namespace", "cluster2", HTTP),  # OURS: ports
        # Code Box 5.9: DNS. OURS: TCP/53 too and the local cluster (cluster4) written (A8, A9).
        dns("cluster4"),
        # Code Boxes 5.8/5.9 and 5.3 "For external IPs, it's not required any modification".
        cidr("egress", "108.177.16.0/24"),
    })


def expected_5_3_ingress(port_set: frozenset[tuple[str, str]] | None) -> frozenset[object]:
    return frozenset({
        # Code Box 5.7: every service of domain1, with namespace and mesh cluster name.
        ep("ingress", {"app": "backend"}, "backend-namespace", "cluster1", port_set),
        ep("ingress", {"app": "backend"}, "backend-namespace", "cluster2", port_set),
        ep("ingress", {"name": "database"}, "database-namespace", "cluster2", port_set),
        # Code Box 5.7: rebel-base of cl3 (cluster3). OURS: namespace default is written (A6).
        ep("ingress", {"name": "rebel-base"}, "default", "cluster3", port_set),
    })


@pytest.fixture(scope="module")
def views_5_3() -> dict[str, ClusterView]:
    return render_views(THESIS_DIR / "refinement-5.3")


def test_5_3_policy_is_code_boxes_5_7_and_5_9(views_5_3: dict[str, ClusterView]) -> None:
    cl4 = views_5_3["domain2/cl4"]
    assert cl4.mesh_name == "cluster4"
    # 5.3: "has to be applied in cl4", namespace of frontend (Figure 5.1, 4b); selector app:
    # frontend (Code Box 5.5).
    assert set(cl4.policies) == {("frontend-namespace", "allow-cluster1")}
    policy = cl4.policy("frontend-namespace", "allow-cluster1")
    assert policy.kind == "CiliumNetworkPolicy"
    assert policy.endpoint_selector == {("app", "frontend")}
    assert per_cluster(policy.direction("egress")) == expected_5_3_egress()
    # OURS: the requirement selects {service: frontend}, so ingress is limited to frontend's
    # ports (TCP/80), never to the peer's ports.
    assert per_cluster(policy.direction("ingress")) == expected_5_3_ingress(HTTP)
    # 5.3: "all other connection requests ... will be dropped": both directions default-deny.
    assert policy.default_deny == {"egress": True, "ingress": True}


def test_5_3_policy_only_in_cl4(views_5_3: dict[str, ClusterView]) -> None:
    # 5.3: the requirement is applied in cl4 only.
    for path, view in views_5_3.items():
        assert bool(view.policies) == (path == "domain2/cl4"), path


def test_5_3_services_and_namespaces(views_5_3: dict[str, ClusterView]) -> None:
    views = views_5_3
    # cl4: section 5.5.2 rules applied to the egress peers (README, section 1):
    assert views["domain2/cl4"].service_set() == {
        ("mirror", "backend-namespace", "backend"),  # Code Box 5.12 (mirror in the client cluster)
        ("mirror", "database-namespace", "database"),
        # Code Box 5.13: ExternalName in the client's namespace.
        ("external", "frontend-namespace", "backend",
         "backend.backend-namespace.svc.cluster.local"),
        ("external", "frontend-namespace", "database",
         "database.database-namespace.svc.cluster.local"),
    }
    # 5.5.2 "create a namespace ... if they don't exist yet"; OURS: frontend-namespace (the
    # policy's own) is annotated global too, as it takes part in cross-cluster traffic.
    assert views["domain2/cl4"].namespaces == {"backend-namespace", "database-namespace",
                                               "frontend-namespace"}
    # OURS (A12): the origin Services become global where they run.
    assert views["domain1/cl1"].service_set() == {("global", "backend-namespace", "backend")}
    assert views["domain1/cl2"].service_set() == {("global", "backend-namespace", "backend"),
                                                  ("global", "database-namespace", "database")}
    assert views["domain1/cl1"].namespaces == {"backend-namespace"}
    assert views["domain1/cl2"].namespaces == {"backend-namespace", "database-namespace"}
    # OURS: rebel-base's namespace in cl3 is annotated global so cl4 learns its identities
    # (ingress peer); ingress peers create no Services (README conventions).
    assert views["domain2/cl3"].service_set() == set()
    assert views["domain2/cl3"].namespaces == {"default"}


def test_5_3_mirror_services_copy_selector_and_ports(views_5_3: dict[str, ClusterView]) -> None:
    # Code Box 5.12: ClusterIP with the origin's selector and ports and the global annotation.
    services = {(s.namespace, s.name, s.kind): s for s in views_5_3["domain2/cl4"].services}
    backend = services[("backend-namespace", "backend", "mirror")]
    assert backend.selector == {("app", "backend")} and backend.ports == {(80, "TCP")}
    database = services[("database-namespace", "database", "mirror")]
    assert database.selector == {("name", "database")} and database.ports == {(80, "TCP")}
    # Code Box 5.13: the ExternalName keeps the port.
    external = services[("frontend-namespace", "backend", "external")]
    assert external.ports == {(80, "TCP")}


def test_5_3_thesis_form_gives_the_same_meaning(views_5_3: dict[str, ClusterView]) -> None:
    """README: "Both forms must give the same output" - up to ingress ports (see below)."""
    thesis = render_views(THESIS_DIR / "refinement-5.3-thesis-form")
    assert set(thesis) == set(views_5_3)
    for path, view in thesis.items():
        native = views_5_3[path]
        assert view.service_set() == native.service_set(), path
        assert view.namespaces == native.namespaces, path
        assert set(view.policies) == set(native.policies), path
    policy = thesis["domain2/cl4"].policy("frontend-namespace", "allow-cluster1")
    assert per_cluster(policy.direction("egress")) == expected_5_3_egress()
    # The thesis form selects raw pod labels (app: frontend), not {service: frontend}, so
    # meshplan does not know which service it protects and leaves ingress ports open: exactly
    # the thesis' Code Box 5.7 (no toPorts).
    assert per_cluster(policy.direction("ingress")) == expected_5_3_ingress(None)
    native_policy = views_5_3["domain2/cl4"].policy("frontend-namespace", "allow-cluster1")
    assert without_ports(policy.peers) == without_ports(native_policy.peers)


# --------------------------------------------------------------------------- use case 1


def expected_uc1_cl3(view: ClusterView) -> None:
    assert view.mesh_name == "cluster3"
    # Code Box 6.3 / C.3: policy allow-domain1 in default, selecting name: client.
    assert set(view.policies) == {("default", "allow-domain1")}
    policy = view.policy("default", "allow-domain1")
    assert policy.endpoint_selector == {("name", "client")}
    # 6.1: the CNP "contains the labels of pods running the service1 and service2".
    assert per_cluster(policy.direction("egress")) == {
        ep("egress", {"name": "service1"}, "ns1", "cluster1", HTTP),  # OURS: ports
        ep("egress", {"name": "service2"}, "ns2", "cluster2", HTTP),  # OURS: ports
        dns("cluster3"),  # Code Box 5.9 rule; OURS: TCP/53 and explicit cluster
    }
    # C.3 "ingress": null: ingress stays unrestricted.
    assert policy.direction("ingress") == frozenset()
    assert "ingress" not in policy.sections
    assert policy.default_deny == {"egress": True, "ingress": False}
    assert view.service_set() == {
        ("mirror", "ns2", "service2"),  # Figure 6.3: service2 (ClusterIP, 80/TCP) in ns2
        ("mirror", "ns1", "service1"),  # needed by Figure 6.4's service1.ns1 target (A15)
        ("external", "default", "service1", "service1.ns1.svc.cluster.local"),  # Figure 6.4
        ("external", "default", "service2", "service2.ns2.svc.cluster.local"),  # Figure 6.4
    }
    # Figure 6.5: ns2 is new. OURS: ns1 (already there for service3, A13) and default are
    # emitted too, annotated global and never pruned.
    assert view.namespaces == {"ns1", "ns2", "default"}


@pytest.fixture(scope="module")
def views_uc1() -> dict[str, ClusterView]:
    return render_views(THESIS_DIR / "use-case-1")


def test_use_case_1_cl3_figures_6_3_to_6_5(views_uc1: dict[str, ClusterView]) -> None:
    expected_uc1_cl3(views_uc1["domain2/cl3"])


def test_use_case_1_other_clusters(views_uc1: dict[str, ClusterView]) -> None:
    # No policy outside cl3 (the requirement is scoped to cl3).
    assert all(not v.policies for p, v in views_uc1.items() if p != "domain2/cl3")
    # OURS (A12): service1/service2 are made global where they run.
    assert views_uc1["domain1/cl1"].service_set() == {("global", "ns1", "service1")}
    assert views_uc1["domain1/cl2"].service_set() == {("global", "ns2", "service2")}
    assert views_uc1["domain1/cl1"].namespaces == {"ns1"}
    assert views_uc1["domain1/cl2"].namespaces == {"ns2"}
    # cl4 takes no part in use case 1 (Figure 6.1): an empty but valid Kustomize root.
    assert nothing(views_uc1["domain2/cl4"])


def test_use_case_1_c2_verbatim_names_give_identical_output(
    views_uc1: dict[str, ClusterView],
) -> None:
    """C.2 as printed names domain2's clusters cluster1/cluster2 (mesh cluster3/cluster4);
    the output, keyed by mesh name, must be the same (README section 2)."""
    verbatim = by_mesh(render_views(THESIS_DIR / "use-case-1-c2-verbatim"))
    ours = by_mesh(views_uc1)
    assert set(verbatim) == set(ours) == {"cluster1", "cluster2", "cluster3", "cluster4"}
    for mesh, view in verbatim.items():
        assert view.objects == ours[mesh].objects, mesh
    expected_uc1_cl3(verbatim["cluster3"])


def test_use_case_1_removing_the_policy_figures_6_7_to_6_9(tmp_path: Path) -> None:
    repo = copy_fixture("use-case-1", tmp_path / "repo")
    out = tmp_path / "out"
    code, _, err = run_cli(["render", "--repo", str(repo), "--out", str(out)])
    assert code == 0, err
    before = read_output(out)
    namespaces = [o for o in before["domain2/cl3"].objects if o["kind"] == "Namespace"]
    assert {o["metadata"]["name"] for o in namespaces} >= {"ns2"}
    (repo / "requirements" / "domain2" / "allow-domain1.yaml").unlink()
    code, _, err = run_cli(["render", "--repo", str(repo), "--out", str(out)])
    assert code == 0, err
    after = read_output(out)
    # Figures 6.7-6.9: no CNP, no ExternalNames in default (6.7), nothing in ns2 (6.8), ns2
    # gone (6.9); "the services and namespaces created will be deleted" - from the output.
    for path, view in after.items():
        assert nothing(view), path
    assert sorted(p for p in read_tree(out) if p.startswith("clusters/domain2/cl3/")) == [
        "clusters/domain2/cl3/kustomization.yaml"]
    # A14: the live cluster keeps ns2 because the Namespace was marked never to be pruned.
    for obj in namespaces:
        annotations = obj["metadata"]["annotations"]
        assert annotations["argocd.argoproj.io/sync-options"] == "Prune=false"
        assert annotations["kustomize.toolkit.fluxcd.io/prune"] == "disabled"


# --------------------------------------------------------------------------- use case 2


def test_use_case_2a_code_box_6_4() -> None:
    views = render_views(THESIS_DIR / "use-case-2a")
    c1, c2 = views["domain1/cluster1"], views["domain1/cluster2"]
    assert set(c1.policies) == {("default", "allow-domain1")}
    policy = c1.policy("default", "allow-domain1")
    # 6.2: service: "backend" covers every cluster where backend runs; Figure 6.11 shows
    # answers from Cluster-1 and Cluster-2.
    assert per_cluster(policy.direction("egress")) == {
        ep("egress", {"name": "backend"}, "backend-ns", "cluster1", HTTP),  # OURS: ports
        ep("egress", {"name": "backend"}, "backend-ns", "cluster2", HTTP),
        dns("cluster1"),
    }
    # Code Box 6.4 ingress: services of cluster1 only (backend, database, client-service, A25).
    # The endpointSelector is raw pod labels, so ports stay open as in the thesis.
    assert per_cluster(policy.direction("ingress")) == {
        ep("ingress", {"name": "backend"}, "backend-ns", "cluster1", None),
        ep("ingress", {"name": "database"}, "database-ns", "cluster1", None),
        ep("ingress", {"name": "client"}, "default", "cluster1", None),
    }
    # Figure 6.12: client pods of cluster2 are refused.
    assert ep("ingress", {"name": "client"}, "default", "cluster2", None) not in per_cluster(
        policy.peers)
    # Figure 6.11: `curl backend` from default resolves through an ExternalName. OURS: backend
    # is global in both clusters so Cilium merges cluster2's backends (thesis: user did it).
    assert c1.service_set() == {
        ("external", "default", "backend", "backend.backend-ns.svc.cluster.local"),
        ("global", "backend-ns", "backend"),
    }
    assert c2.service_set() == {("global", "backend-ns", "backend")}
    assert not c2.policies  # 6.4 is "applied in the cluster1"
    # No mirror: backend runs in cluster1 already.
    assert all(s.kind != "mirror" for v in views.values() for s in v.services)


def test_use_case_2b_code_boxes_6_5_and_6_6() -> None:
    views = render_views(THESIS_DIR / "use-case-2b")
    c1, c2 = views["domain1/cluster1"], views["domain1/cluster2"]
    assert set(c1.policies) == {("default", "allow-cluster1"), ("default", "allow-service-backend")}
    # Code Box 6.5: every service of cluster1 (backend, database, client-service itself, A25).
    assert per_cluster(c1.policy("default", "allow-cluster1").direction("egress")) == {
        ep("egress", {"name": "backend"}, "backend-ns", "cluster1", HTTP),
        ep("egress", {"name": "database"}, "database-ns", "cluster1", HTTP),
        ep("egress", {"name": "client"}, "default", "cluster1", HTTP),
        dns("cluster1"),
    }
    assert "ingress" not in c1.policy("default", "allow-cluster1").sections
    # Code Box 6.6: backend wherever it runs; no annotation = every cluster of domain1 (A23).
    for view, mesh in ((c1, "cluster1"), (c2, "cluster2")):
        policy = view.policy("default", "allow-service-backend")
        assert per_cluster(policy.direction("egress")) == {
            ep("egress", {"name": "backend"}, "backend-ns", "cluster1", HTTP),
            ep("egress", {"name": "backend"}, "backend-ns", "cluster2", HTTP),
            dns(mesh),
        }
    assert set(c2.policies) == {("default", "allow-service-backend")}
    # README 2b: ExternalName default/backend once (needed by both), default/database; none
    # for client-service (same namespace, 5.5.1 trivial case); no mirrors (backend runs here).
    assert c1.service_set() == {
        ("external", "default", "backend", "backend.backend-ns.svc.cluster.local"),
        ("external", "default", "database", "database.database-ns.svc.cluster.local"),
        ("global", "backend-ns", "backend"),  # OURS (A12)
    }
    assert c2.service_set() == {
        ("external", "default", "backend", "backend.backend-ns.svc.cluster.local"),
        ("global", "backend-ns", "backend"),  # OURS (A12)
    }
    shared = next(o for o in c1.objects
                  if o["kind"] == "Service" and o["metadata"]["namespace"] == "default"
                  and o["metadata"]["name"] == "backend")
    assert shared["metadata"]["annotations"]["meshplan.dev/required-by"] == (
        "domain1/default/allow-cluster1,domain1/default/allow-service-backend")


def test_use_case_2b_only_code_box_6_5_figure_6_13(tmp_path: Path) -> None:
    """Figure 6.13 is the state with only 6.5 applied: backend of cluster2 is not reachable."""
    repo = copy_fixture("use-case-2b", tmp_path / "repo")
    (repo / "requirements" / "domain1" / "allow-service-backend.yaml").unlink()
    views = render_views(repo)
    c1 = views["domain1/cluster1"]
    egress = per_cluster(c1.policy("default", "allow-cluster1").direction("egress"))
    assert ep("egress", {"name": "backend"}, "backend-ns", "cluster1", HTTP) in egress
    assert ep("egress", {"name": "backend"}, "backend-ns", "cluster2", HTTP) not in egress
    # Everything reached is local to cluster1: only the ExternalNames remain.
    assert c1.service_set() == {
        ("external", "default", "backend", "backend.backend-ns.svc.cluster.local"),
        ("external", "default", "database", "database.database-ns.svc.cluster.local"),
    }
    assert nothing(views["domain1/cluster2"])


def without_backend(repo: Path) -> None:
    """Delete service backend from use case 2b's DomainRequest (C.2's DELETE of backend)."""
    path = repo / "inventory" / "domain1.json"
    data = YAML(typ="safe", pure=True).load(path.read_text("utf-8"))  # YAML 1.2 reads C.4 quirks
    data["services"] = [s for s in data["services"] if s["name"] != "backend"]
    del data["servicesMap"]["backend"]
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def test_removing_service_backend_is_an_error_not_a_silent_policy_drop(tmp_path: Path) -> None:
    """Figures 6.14/6.15: the thesis deletes allow-service-backend, which would lift the client's
    egress restriction in cluster2 (A27). We fail closed: a validation error names every
    requirement that still names backend, and the old output stays in place."""
    repo = copy_fixture("use-case-2b", tmp_path / "repo")
    out = tmp_path / "out"
    assert run_cli(["render", "--repo", str(repo), "--out", str(out)])[0] == 0
    before = read_tree(out)
    without_backend(repo)
    inventory, diagnostics = validate(repo)
    assert inventory is None
    errors = [d for d in diagnostics if d.severity is Severity.ERROR]
    assert {d.location.file for d in errors} == {
        "requirements/domain1/allow-service-backend.yaml"}
    assert all("backend" in d.message for d in errors)
    # allow-cluster1 uses a wildcard and stays valid: it simply no longer reaches backend.
    code, _, err = run_cli(["render", "--repo", str(repo), "--out", str(out)])
    assert code == 1
    assert "allow-service-backend.yaml" in err and "allow-cluster1.yaml" not in err
    assert read_tree(out) == before
    views = cluster_views(before)
    assert ("default", "allow-service-backend") in views["domain1/cluster2"].policies


def test_removing_service_backend_in_2a_names_the_requirement(tmp_path: Path) -> None:
    repo = copy_fixture("use-case-2a", tmp_path / "repo")
    inventory = repo / "inventory" / "domain1.yaml"
    text = inventory.read_text("utf-8")
    start = text.index("    - name: backend")
    end = text.index("    - name: database")
    inventory.write_text(text[:start] + text[end:], encoding="utf-8")
    with pytest.raises(InputError) as caught:
        render_repository(repo)
    errors = [d for d in caught.value.diagnostics if d.severity is Severity.ERROR]
    assert {d.location.file for d in errors} == {"requirements/domain1/allow-domain1.yaml"}


# --------------------------------------------------------------------------- the harness


def test_semantic_view_sees_a_missing_peer() -> None:
    """The golden comparisons above can fail: drop one peer from the rendered file."""
    files, _ = render_files(THESIS_DIR / "use-case-1")
    path = "clusters/domain2/cl3/policies.yaml"
    text = files[path].decode()
    cut = text.index("  - toEndpoints:\n    - matchLabels:\n        name: service2")
    end = text.index("  - toEndpoints:", cut + 10)
    files[path] = (text[:cut] + text[end:]).encode()
    with pytest.raises(AssertionError):
        expected_uc1_cl3(cluster_views(files)["domain2/cl3"])
    # ... and a wrong namespace, too.
    files2, _ = render_files(THESIS_DIR / "use-case-1")
    files2[path] = files2[path].replace(f"{NS}: ns2".encode(), f"{NS}: ns3".encode())
    with pytest.raises(AssertionError):
        expected_uc1_cl3(cluster_views(files2)["domain2/cl3"])
