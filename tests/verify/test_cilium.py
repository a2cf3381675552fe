"""meshplan.verify.cilium: Cilium's semantics pinned on hand-written policies (not generator
output): default deny per direction, ``enableDefaultDeny``, namespace and cluster defaults,
denies, CIDR ``except``, L4-only rules, label source prefixes, named ports."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from meshplan.model import Inventory
from meshplan.pipeline import validated
from meshplan.verify.report import VerifyReport, verify

from tests.support.flows import Files, allowed, errors, warnings, write

SEMANTICS_INVENTORY = """
    apiVersion: meshplan.dev/v1alpha1
    kind: Domain
    metadata: {name: d}
    spec:
      clusters:
        - {name: a, meshName: ma}
        - {name: b, meshName: mb}
      services:
        - {name: x, namespace: n1, selector: {app: x}, clusters: [a, b],
           ports: [{port: 80, protocol: TCP, name: http}]}
        - {name: y, namespace: n2, selector: {app: y}, clusters: [a],
           ports: [{port: 80, protocol: TCP, name: http}]}
        - {name: z, namespace: n1, selector: {app: z}, clusters: [a],
           ports: [{port: 80, protocol: TCP, name: http}]}
"""
CIDR_REQUIREMENT = """
    apiVersion: meshplan.dev/v1alpha1
    kind: Requirement
    metadata: {name: r}
    spec:
      endpointSelector: {matchLabels: {service: z}}
      egress:
        - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
"""


@pytest.fixture(scope="module")
def semantics_inventory(tmp_path_factory: pytest.TempPathFactory) -> Inventory:
    root = write(tmp_path_factory.mktemp("semantics"), {
        "inventory/d.yaml": SEMANTICS_INVENTORY, "requirements/d/r.yaml": CIDR_REQUIREMENT})
    return validated(root)[0]


def model(inventory: Inventory, cluster: str, *policies: str) -> VerifyReport:
    """verify() over hand-written policies in cluster ``d/<cluster>`` (others empty)."""
    files: Files = {}
    for name in ("a", "b"):
        docs = [textwrap.dedent(p) for p in policies] if name == cluster else []
        files[f"clusters/d/{name}/policies.yaml"] = "---\n".join(docs).encode()
        files[f"clusters/d/{name}/kustomization.yaml"] = b"resources: [policies.yaml]\n"
    return verify(inventory, files)


def cnp(namespace: str, spec: str) -> str:
    return (f"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p, "
            f"namespace: {namespace}}}\nspec:\n" + textwrap.indent(textwrap.dedent(spec), "  "))


def ccnp(spec: str) -> str:
    return ("apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: "
            "{name: p}\nspec:\n" + textwrap.indent(textwrap.dedent(spec), "  "))


def flow(report: VerifyReport, src: str, dst: str) -> str | None:
    return allowed(report, src, dst)


def test_selected_direction_is_default_deny_and_allows_union(
        semantics_inventory: Inventory) -> None:
    report = model(semantics_inventory, "a", cnp("n1", """
        endpointSelector: {matchLabels: {app: x}}
        ingress:
          - fromEndpoints: [{matchLabels: {app: z, io.cilium.k8s.policy.cluster: ma}}]
            toPorts: [{ports: [{port: "80", protocol: TCP}]}]
    """), cnp("n1", """
        endpointSelector: {matchLabels: {app: x}}
        ingress:
          - fromEndpoints: [{matchLabels: {app: z, io.cilium.k8s.policy.cluster: ma}}]
            toPorts: [{ports: [{port: "81"}]}]
    """))
    assert flow(report, "d/z@a", "d/x@a") == "TCP/80-81 UDP/81 SCTP/81"
    assert flow(report, "d/y@a", "d/x@a") is None  # y has no namespace match: n1 is implied
    assert flow(report, "d/y@a", "d/x@b") == "any"  # the policy only selects cluster a's x
    assert flow(report, "d/x@a", "d/y@a") == "any"  # egress not selected


def test_enable_default_deny_semantics(semantics_inventory: Inventory) -> None:
    # true without rules: Cilium does not enforce the direction at all
    report = model(semantics_inventory, "a", cnp("n1", """
        endpointSelector: {matchLabels: {app: x}}
        enableDefaultDeny: {ingress: true, egress: false}
        egress:
          - toEndpoints: [{matchLabels: {app: y, k8s:io.kubernetes.pod.namespace: n2,
                                         io.cilium.k8s.policy.cluster: ma}}]
    """))
    assert flow(report, "d/z@a", "d/x@a") == "any"
    assert flow(report, "d/x@a", "d/z@a") == "any"  # egress rules, but default deny off
    assert any("enableDefaultDeny.ingress is true" in w for w in warnings(report))
    # false here, true (by default) in another policy: the union still restricts
    report = model(semantics_inventory, "a", cnp("n1", """
        endpointSelector: {matchLabels: {app: x}}
        enableDefaultDeny: {egress: false}
        egress:
          - toEndpoints: [{matchLabels: {app: y, k8s:io.kubernetes.pod.namespace: n2,
                                         io.cilium.k8s.policy.cluster: ma}}]
    """), cnp("n1", """
        endpointSelector: {matchLabels: {app: x}}
        egress:
          - toEndpoints: [{matchLabels: {app: z, io.cilium.k8s.policy.cluster: ma}}]
    """))
    assert flow(report, "d/x@a", "d/y@a") == "any"
    assert flow(report, "d/x@a", "d/z@a") == "any"
    assert flow(report, "d/x@a", "d/x@b") is None


def test_namespace_and_cluster_defaults(semantics_inventory: Inventory) -> None:
    report = model(semantics_inventory, "a", ccnp("""
        endpointSelector: {matchLabels: {app: z}}
        egress:
          - toEndpoints: [{matchLabels: {app: x, any:io.cilium.k8s.policy.cluster: mb}}]
          - toEndpoints: [{matchLabels: {app: y}}]
    """))
    assert flow(report, "d/z@a", "d/x@b") == "any"  # CCNP: every namespace; `any:` prefix
    assert flow(report, "d/z@a", "d/x@a") is None
    # no cluster label: Cilium 1.19's local-cluster default, with a warning (it changed)
    assert flow(report, "d/z@a", "d/y@a") == "any"
    [problem] = [w for w in warnings(report) if "name its cluster" in w]
    assert problem.startswith("rendered/clusters/d/a/policies.yaml:")
    assert "reads it as the local cluster (ma;" in problem
    # CNP: a peer without namespace is the policy's namespace
    report = model(semantics_inventory, "a", cnp("n1", """
        endpointSelector: {matchLabels: {app: z}}
        egress:
          - toEndpoints:
              - matchLabels: {app: y, io.cilium.k8s.policy.cluster: ma}
              - matchExpressions:
                  - {key: io.cilium.k8s.policy.cluster, operator: In, values: [ma, mb]}
                  - {key: k8s:app, operator: In, values: [x]}
    """))
    assert flow(report, "d/z@a", "d/y@a") is None
    assert flow(report, "d/z@a", "d/x@a") == "any"
    assert flow(report, "d/z@a", "d/x@b") == "any"


def test_deny_rules_and_l4_only_rules(semantics_inventory: Inventory) -> None:
    report = model(semantics_inventory, "a", cnp("n1", """
        endpointSelector: {matchLabels: {app: z}}
        egress:
          - toPorts: [{ports: [{port: "80", protocol: TCP}, {port: "90", endPort: 99,
                                                              protocol: TCP}]}]
        egressDeny:
          - toEndpoints: [{matchLabels: {app: x, io.cilium.k8s.policy.cluster: mb}}]
            toPorts: [{ports: [{port: "95", protocol: TCP}]}]
    """))
    assert flow(report, "d/z@a", "d/x@a") == "TCP/80,90-99"
    assert flow(report, "d/z@a", "d/x@b") == "TCP/80,90-94,96-99"
    assert flow(report, "d/z@a", "10.0.0.0/8") == "TCP/80,90-99"  # L4-only: addresses too
    # an empty rule is Cilium's documented default-deny rule: it allows nothing
    report = model(semantics_inventory, "a", cnp("n1", """
        endpointSelector: {matchLabels: {app: z}}
        ingress: [{}]
    """))
    assert flow(report, "d/x@a", "d/z@a") is None
    assert flow(report, "10.0.0.0/8", "d/z@a") is None
    assert flow(report, "d/z@a", "d/x@a") == "any"


def test_cidr_except_and_partial_blocks(semantics_inventory: Inventory) -> None:
    report = model(semantics_inventory, "a", cnp("n1", """
        endpointSelector: {matchLabels: {app: z}}
        egress:
          - toCIDRSet: [{cidr: 10.0.0.0/9, except: [10.1.0.0/16]}]
            toPorts: [{ports: [{port: "443", protocol: TCP}]}]
          - toCIDR: [10.128.0.0/9]
            toPorts: [{ports: [{port: "443", protocol: TCP}, {port: "80", protocol: TCP}]}]
    """), cnp("n1", """
        endpointSelector: {matchLabels: {app: z}}
        egress:
          - toCIDRSet: [{cidr: 10.1.0.0/16}]
            toPorts: [{ports: [{port: "443", protocol: TCP}, {port: "22", protocol: TCP}]}]
    """))
    # the /8 is covered piecewise by three rules: it gets only what every piece gets
    assert flow(report, "d/z@a", "10.0.0.0/8") == "TCP/443"
    # the except block of the first rule is allowed by the other policy
    assert flow(report, "d/z@a", "10.1.0.0/16") == "TCP/22,443"
    report = model(semantics_inventory, "a", cnp("n1", """
        endpointSelector: {matchLabels: {app: z}}
        egress:
          - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
    """))
    assert flow(report, "d/z@a", "10.0.0.0/8") is None
    assert flow(report, "d/z@a", "10.1.0.0/16") is None
    # exactly what the CIDR requirement intends (these hand-written policies allow no DNS)
    assert [e for e in errors(report) if "kube-dns" not in e] == []


def test_named_ports_allow_nothing_and_are_reported(semantics_inventory: Inventory) -> None:
    report = model(semantics_inventory, "a", cnp("n1", """
        endpointSelector: {matchLabels: {app: z}}
        egress:
          - toEndpoints: [{matchLabels: {app: x, io.cilium.k8s.policy.cluster: ma}}]
            toPorts: [{ports: [{port: http, protocol: TCP}]}]
    """))
    assert flow(report, "d/z@a", "d/x@a") is None
    assert any("named port 'http'" in e for e in errors(report))


def test_missing_rendered_cluster_is_an_error(semantics_inventory: Inventory) -> None:
    report = verify(semantics_inventory, {})
    assert any("expected the rendered directory of cluster d/a" in e for e in errors(report))


def test_a_model_takes_only_its_own_endpoints_index_and_one_stance_each() -> None:
    """A shared endpoint index is that of the very endpoints (else the reading would select
    other pods); given stances are one per endpoint and direction, and are used as given."""
    from meshplan.pipeline import render_with_inventory
    from meshplan.verify.connectivity import Connectivity, Stance
    from meshplan.verify.endpoints import EndpointIndex, inventory_endpoints

    from tests.support.repos import REPO_ROOT

    endpoints = inventory_endpoints(render_with_inventory(REPO_ROOT)[0])
    index = EndpointIndex(endpoints)
    assert Connectivity(endpoints, index).index is index
    with pytest.raises(ValueError, match="other endpoints"):
        Connectivity(endpoints[1:], index)
    stances = ([Stance() for _ in endpoints], [Stance() for _ in endpoints])
    model = Connectivity(endpoints, None, stances)
    assert model.egress is stances[0] and model.ingress is stances[1]
    with pytest.raises(ValueError, match="one egress and one ingress"):
        Connectivity(endpoints, None, (stances[0], stances[1][1:]))


def test_a_rule_read_once_is_still_read_in_each_policys_namespace(
        semantics_inventory: Inventory) -> None:
    """A rule is read once per text, but a peer that names no namespace means each policy's
    own: the same rule text in policies of two namespaces (and a cluster-wide one) selects
    other pods in each."""
    rule = """
        endpointSelector: {matchLabels: {app: %s}}
        egress:
          - toEndpoints: [{matchLabels: {app: x, io.cilium.k8s.policy.cluster: ma}}]
            toPorts: [{ports: [{port: "80", protocol: TCP}]}]
    """
    report = model(semantics_inventory, "a", cnp("n2", rule % "y"), cnp("n1", rule % "z"))
    assert flow(report, "d/y@a", "d/x@a") is None  # app=x in n2: there is none
    assert flow(report, "d/z@a", "d/x@a") == "TCP/80"
    report = model(semantics_inventory, "a", cnp("n1", rule % "z"), ccnp(rule % "y"),
                   cnp("n2", rule % "y").replace("name: p", "name: q"))
    assert flow(report, "d/z@a", "d/x@a") == "TCP/80"
    assert flow(report, "d/y@a", "d/x@a") == "TCP/80"  # the cluster-wide one: any namespace


def test_a_shared_rule_object_is_read_in_each_mesh_and_namespace(
        semantics_inventory: Inventory) -> None:
    """Through the cache's reader, equal rule texts are one object (load.canonical), and a
    rule's reading is kept with its object: a peer without a cluster label still means each
    cluster's own mesh, and one without a namespace each policy's own namespace (in policies
    that alternate between them); the answers are exactly the parser's."""
    from meshplan.load.canonical import RenderedReader
    from meshplan.yamltext import dump_documents

    from tests.load.test_canonical import HEADER, MemoryStore

    rule = {"toEndpoints": [{"matchLabels": {"app": "x"}}],
            "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}
    other = {"toEndpoints": [{"matchLabels": {"app": "y", "io.cilium.k8s.policy.cluster": "ma",
                                              "k8s:io.kubernetes.pod.namespace": "n2"}}]}

    def policy(name: str, namespace: str | None, app: str) -> dict[str, object]:
        meta: dict[str, object] = {"name": name}
        if namespace is not None:
            meta["namespace"] = namespace
        kind = "CiliumNetworkPolicy" if namespace else "CiliumClusterwideNetworkPolicy"
        return {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": meta,
                "spec": {"endpointSelector": {"matchLabels": {"app": app}},
                         "egress": [dict(rule), dict(other)],
                         "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "x"}}]}]}}

    # in this order, a reading kept for the last policy's (namespace, mesh) would do for
    # the next one in the other cluster, and the first one's for the second's namespace
    documents = [policy("r", "n1", "x"), policy("q", "n2", "y"), policy("s", None, "z"),
                 policy("p", "n1", "z"), policy("u", "n1", "x")]
    text = (HEADER + dump_documents(documents)).encode()
    files: Files = {}
    for name in ("a", "b"):
        files[f"clusters/d/{name}/policies.yaml"] = text
        files[f"clusters/d/{name}/kustomization.yaml"] = b"resources: [policies.yaml]\n"
    store = MemoryStore()
    probe = RenderedReader(store)
    first, _ = probe.documents("a.yaml", text)
    again, _ = probe.documents("b.yaml", text)
    assert first[0].data["spec"]["egress"][0] is again[4].data["spec"]["egress"][0]
    assert first[1].data["spec"]["egress"][0] is first[0].data["spec"]["egress"][0]

    def answers(report: VerifyReport) -> tuple[object, ...]:
        """Every pair's verdict in each direction, with the rules that matched, and the
        problems reported."""
        actual, count = report.actual, len(report.endpoints)
        verdicts = [(str(v.ports), v.restricted, [str(g.origin) for g in v.grants])
                    for direction in ("egress", "ingress")
                    for i in range(count) for j in range(count)
                    for v in (actual.verdict(direction, i, j),)]
        return verdicts, [d.format_text() for d in report.diagnostics]

    expected = answers(verify(semantics_inventory, files))
    assert expected == answers(verify(semantics_inventory, files, reader=RenderedReader(store)))
    report = verify(semantics_inventory, files, reader=RenderedReader(store))
    titles = [e.title for e in report.endpoints]

    def egress(source: str, destination: str) -> str:
        return str(report.actual.verdict("egress", titles.index(source),
                                         titles.index(destination)).ports)

    assert egress("d/x@b", "d/x@b") == "TCP/80"  # the peer is in b's mesh, from b
    assert egress("d/x@b", "d/x@a") == "none"
    assert egress("d/x@a", "d/x@a") == "TCP/80"
    assert egress("d/y@a", "d/x@a") == "none"  # q's peer is app=x in n2: there is none
    assert egress("d/z@a", "d/x@a") == "TCP/80"  # p's, and s's in any namespace
    assert egress("d/z@a", "d/y@a") == "any"  # the rule naming n2/y, cluster ma


def test_reading_ahead_reads_what_a_kustomization_lists_and_stops_when_told() -> None:
    """``meshplan verify`` reads the tree while its inputs are checked elsewhere: only the
    files its reading would ask for (a kustomization's resources; every YAML file of a
    folder without one), and no further once told to stop."""
    from meshplan.load.canonical import RenderedReader
    from meshplan.verify.cilium import read_ahead

    files = {
        "clusters/d/c1/kustomization.yaml": b"resources:\n- a.yaml\n- ../x.yaml\n- gone.yaml\n",
        "clusters/d/c1/a.yaml": b"kind: Namespace\n",
        "clusters/d/c1/unlisted.yaml": b"kind: Namespace\n",
        "clusters/d/c2/b.yaml": b"kind: Namespace\n",
        "clusters/d/c2/notes.txt": b"not YAML\n",
        "README.md": b"# rendered\n",
    }
    reader = RenderedReader(None)
    read_ahead(files, reader, "out")
    assert sorted(reader.ahead) == ["out/clusters/d/c1/a.yaml",
                                    "out/clusters/d/c1/kustomization.yaml",
                                    "out/clusters/d/c2/b.yaml"]
    asked = iter(range(100))
    reader = RenderedReader(None)
    read_ahead(files, reader, "out", until=lambda: next(asked) >= 2)
    assert len(reader.ahead) == 2


def test_a_file_listed_twice_in_a_kustomization_is_an_error_and_read_once(
        semantics_inventory: Inventory, tmp_path: Path) -> None:
    """``kubectl kustomize`` refuses a cluster whose kustomization lists a file twice (it
    would register each object twice); verify reads it once and reports the second listing,
    also when it is spelt alike further down."""
    from tests.support.k8s import require_kubectl

    policy = cnp("n1", """
        endpointSelector: {matchLabels: {app: x}}
        ingress: [{fromEndpoints: [{matchLabels: {app: z}}]}]
    """)
    once = model(semantics_inventory, "a", policy)
    files: Files = {"clusters/d/a/policies.yaml": textwrap.dedent(policy).encode(),
                    "clusters/d/b/policies.yaml": b"",
                    "clusters/d/b/kustomization.yaml": b"resources: [policies.yaml]\n",
                    "clusters/d/a/kustomization.yaml":
                        b"resources:\n- policies.yaml\n- policies.yaml\n"}
    twice = verify(semantics_inventory, files)
    assert twice.policies == once.policies == 1
    assert twice.flow_lines() == once.flow_lines()
    [problem] = [d for d in twice.diagnostics if d.path == "resources[1]"]
    assert str(problem.location) == "rendered/clusters/d/a/kustomization.yaml:3:3"
    assert problem.message.startswith("expected each file listed once, found 'policies.yaml' "
                                      "again (first at resources[0]): kustomize refuses")
    assert errors(twice) == [problem.format_text(), *errors(once)]
    # the reason, from the real tool
    kubectl = require_kubectl()
    for relpath in ("clusters/d/a/policies.yaml", "clusters/d/a/kustomization.yaml"):
        (tmp_path / relpath.rsplit("/", 1)[1]).write_bytes(files[relpath])
    built = subprocess.run([kubectl, "kustomize", str(tmp_path)], capture_output=True,
                           text=True, check=False)
    assert built.returncode != 0 and "already registered id" in built.stderr, built.stderr
