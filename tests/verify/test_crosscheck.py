"""Cross-check: verify's connectivity model agrees with a tool we did not write.

IBM's network-config-analyzer (``nca``) evaluates Kubernetes NetworkPolicies. The rendered
Cilium policies are translated into equivalent NetworkPolicies over one merged virtual cluster
(``tests/netpol.py``), nca computes the allowed connections, and every flow (pod to pod, pod to
CIDR, CIDR to pod, DNS and open flows included) must be the same as verify's: same pairs, same
ports and protocols. nca is a test-only dependency; without it these tests skip, except under
CI (env ``CI`` set), where they fail.
"""

from __future__ import annotations

import tempfile
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from meshplan.model import Inventory
from meshplan.pipeline import render_repository, validated
from meshplan.verify.report import VerifyReport, verify

from tests.support import netpol
from tests.support.ci import examples, missing_tool
from tests.support.mutations import CASES, NCA_CASES, Mutation, mutated
from tests.support.netpol import Spans, nca_flows, run_nca, translate, virtual_cluster
from tests.support.repos import ISTIO_EXAMPLE, REPO_ROOT, THESIS_DIR
from tests.support.strategies import RepoSpec, repos

pytestmark = pytest.mark.slow  # differential against nca, end to end: the full tier only

Files = dict[str, bytes]


@pytest.fixture(autouse=True)
def _need_nca() -> None:
    if netpol.nca_command() is None:
        message = ("network-config-analyzer is not installed: pip install "
                   "network-config-analyzer (test-only), or set MESHPLAN_NCA to its executable")
        missing_tool(message)


def rendered(root: Path) -> tuple[Inventory, Files]:
    inventory, _ = validated(root)
    output, _ = render_repository(root)
    return inventory, {f.path: f.content for f in output.files}


def disagreements(report: VerifyReport, theirs: Mapping[tuple[int, int], Spans]) -> list[str]:
    # The Cilium layer pod to pod, as nca sees one flat cluster: every pair, the hops of the
    # gateways between Istio networks too (report.flows has the identity layer on top).
    ours = {pair: ports.spans for pair, ports in report.cilium_flows.items()}
    out = []
    for pair in sorted(set(ours) | set(theirs)):
        if ours.get(pair) != theirs.get(pair):
            src, dst = report.endpoints[pair[0]], report.endpoints[pair[1]]
            out.append(f"{src.title} -> {dst.title}: verify {ours.get(pair)}, "
                       f"nca {theirs.get(pair)}")
    return out


def cross_check(inventory: Inventory, files: Files, workdir: Path,
                translator: Callable[..., list[dict[str, Any]]] = translate,
                rejected: Sequence[str] = ()) -> list[str]:
    """How verify's flows and nca's differ (``[]``: not at all); ``rejected``: the Cilium
    objects nca must refuse for their label selectors (verify says Cilium rejects them)."""
    report = verify(inventory, files)
    resources = virtual_cluster(report.endpoints) + translator(inventory, files,
                                                               report.endpoints)
    run = run_nca(resources, workdir)
    theirs = nca_flows(run.output, report.endpoints)
    problems = disagreements(report, theirs)
    if list(run.rejected) != list(rejected):
        problems.append(f"nca refused {list(run.rejected)}, expected {list(rejected)}")
    return problems


def test_example_agrees_with_nca(tmp_path: Path) -> None:
    inventory, files = rendered(REPO_ROOT)
    assert cross_check(inventory, files, tmp_path) == []
    report = verify(inventory, files)
    assert len(report.flows) > 100  # open flows count too: the comparison is not trivial


@pytest.mark.parametrize("fixture", ["refinement-5.3", "refinement-5.3-thesis-form",
                                     "use-case-1", "use-case-2a", "use-case-2b"])
def test_thesis_fixtures_agree_with_nca(fixture: str, tmp_path: Path) -> None:
    inventory, files = rendered(THESIS_DIR / fixture)
    assert cross_check(inventory, files, tmp_path) == []


def test_the_istio_example_cilium_layer_agrees_with_nca(tmp_path: Path) -> None:
    """With the gateway hops: clients to the remote gateway's address, gateways from the other
    network's address, gateways to the servers."""
    inventory, files = rendered(ISTIO_EXAMPLE)
    assert cross_check(inventory, files, tmp_path) == []
    titles = [e.title for e in verify(inventory, files).endpoints]
    assert "boutique/istio-eastwestgateway@aks" in titles and "198.51.100.7/32" in titles


@settings(max_examples=examples(8), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(repos(allow_unfilled_ingress=True, istio=True))
def test_generated_meshes_cilium_layer_agrees_with_nca(spec: RepoSpec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inventory, files = rendered(spec.write(Path(tmp) / "repo"))
        assert cross_check(inventory, files, Path(tmp) / "nca") == [], spec.files()


@settings(max_examples=examples(8), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(repos(allow_unfilled_ingress=True))
def test_generated_scenarios_agree_with_nca(spec: RepoSpec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inventory, files = rendered(spec.write(Path(tmp) / "repo"))
        assert cross_check(inventory, files, Path(tmp) / "nca") == [], spec.files()


SEMANTICS = {
    "inventory/d.yaml": """
        apiVersion: meshplan.dev/v1alpha1
        kind: Domain
        metadata: {name: d}
        spec:
          clusters: [{name: a, meshName: ma}, {name: b, meshName: mb}]
          services:
            - {name: x, namespace: n1, selector: {app: x}, clusters: [a, b],
               ports: [{port: 80, protocol: TCP, name: http}]}
            - {name: y, namespace: n2, selector: {app: y}, clusters: [a],
               ports: [{port: 80, protocol: TCP, name: http}]}
            - {name: z, namespace: n1, selector: {app: z}, clusters: [a, b],
               ports: [{port: 80, protocol: TCP, name: http}]}
    """,
    "requirements/d/r.yaml": """
        apiVersion: meshplan.dev/v1alpha1
        kind: Requirement
        metadata: {name: r}
        spec:
          endpointSelector: {matchLabels: {service: z}}
          egress:
            - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
    """,
}
HAND_WRITTEN = """
    apiVersion: cilium.io/v2
    kind: CiliumClusterwideNetworkPolicy
    metadata: {name: cw}
    spec:
      endpointSelector: {matchLabels: {k8s:app: z}}
      egress:
        - toEndpoints:
            - matchLabels: {app: x}
              matchExpressions:
                - {key: io.cilium.k8s.policy.cluster, operator: In, values: [ma, mb]}
        - toPorts: [{ports: [{port: "8000", endPort: 8100, protocol: TCP}, {port: "53"}]}]
        - toCIDRSet: [{cidr: 10.0.0.0/9, except: [10.1.0.0/16]}]
          toPorts: [{ports: [{port: "443", protocol: TCP}]}]
        - toCIDR: [10.128.0.0/9]
      ingress:
        - fromEndpoints:
            - matchLabels: {any:app: y, k8s:io.kubernetes.pod.namespace: n2,
                            io.cilium.k8s.policy.cluster: ma}
    ---
    apiVersion: cilium.io/v2
    kind: CiliumNetworkPolicy
    metadata: {name: ns, namespace: n1}
    specs:
      - endpointSelector: {matchLabels: {app: x}}
        ingress:
          - fromEndpoints: [{matchLabels: {app: z, io.cilium.k8s.policy.cluster: ma}}]
            toPorts: [{ports: [{port: "80", protocol: TCP}]}]
      - endpointSelector: {matchExpressions: [{key: app, operator: In, values: [x, y]}]}
        enableDefaultDeny: {egress: true, ingress: true}
        egress: [{}]
"""


def test_hand_written_cilium_semantics_agree_with_nca(tmp_path: Path) -> None:
    """Beyond generator output: CCNP, L4-only rules, port ranges, ANY, piecewise CIDRs, specs."""
    root = tmp_path / "repo"
    for relpath, text in SEMANTICS.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(textwrap.dedent(text), encoding="utf-8")
    inventory, _ = validated(root)
    files: Files = {"clusters/d/b/kustomization.yaml": b"resources: []\n",
                    "clusters/d/a/kustomization.yaml": b"resources: [policies.yaml]\n",
                    "clusters/d/a/policies.yaml": textwrap.dedent(HAND_WRITTEN).encode()}
    report = verify(inventory, files)
    titles = {e.title: i for i, e in enumerate(report.endpoints)}
    z, x_b = titles["d/z@a"], titles["d/x@b"]
    assert str(report.flows[(z, x_b)]) == "any"  # the rule is not vacuous
    # 10.1.0.0/16 is excepted from the 443 rule: the /8 as a whole gets only the L4-only rule
    assert str(report.flows[(z, titles["10.0.0.0/8"])]) == "TCP/53,8000-8100 UDP/53 SCTP/53"
    assert str(report.flows[(z, titles["10.1.0.0/16"])]) == "TCP/53,8000-8100 UDP/53 SCTP/53"
    assert (titles["d/z@b"], titles["d/x@a"]) not in report.flows  # empty egress rule: deny
    assert cross_check(inventory, files, tmp_path / "nca") == []


@pytest.mark.parametrize(("case_id", "mutation"), [
    pytest.param(c.id, c.values[0], id=c.id) for c in CASES if c.id in NCA_CASES])
def test_planted_defects_agree_with_nca(case_id: str, mutation: Mutation,
                                        tmp_path: Path) -> None:
    """The defects of issue 9 that nca can express: the flows agree, and nca refuses exactly
    the objects verify says Cilium rejects (nca checks Kubernetes' selector rules itself)."""
    inventory, files = rendered(REPO_ROOT)
    changed = mutated(files, mutation)
    assert cross_check(inventory, changed, tmp_path, rejected=NCA_CASES[case_id]) == []
    if NCA_CASES[case_id]:
        assert any("Cilium rejects this whole policy" in d.message
                   for d in verify(inventory, changed).diagnostics)


NS_LABEL_PEERS = {
    **SEMANTICS,
    "requirements/d/ns.yaml": """
        apiVersion: meshplan.dev/v1alpha1
        kind: Requirement
        metadata: {name: ns, namespace: n2}
        spec:
          endpointSelector: {matchLabels: {app: y}}
          egress:
            - toEndpoints:
                - matchLabels: {k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name: n1}
            - toEndpoints:
                - matchLabels: {app: x}
                  matchExpressions:
                    - {key: io.kubernetes.pod.namespace, operator: NotIn, values: [n2]}
          ingress:
            - fromEndpoints: [{matchLabels: {io.cilium.k8s.namespace.labels.team: none}}]
    """,
}


def test_namespace_label_and_namespace_expression_peers_agree_with_nca(tmp_path: Path) -> None:
    """Peers Cilium does not pin to the policy's namespace: by namespace labels (rendered
    without a namespace) and by a namespace expression."""
    root = tmp_path / "repo"
    for relpath, text in NS_LABEL_PEERS.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_text(textwrap.dedent(text), encoding="utf-8")
    inventory, files = rendered(root)
    report = verify(inventory, files)
    titles = {e.title: i for i, e in enumerate(report.endpoints)}
    assert (titles["d/y@a"], titles["d/x@a"]) in report.flows  # n1, by its name label
    assert (titles["d/y@a"], titles["d/z@b"]) not in report.flows  # the local cluster only
    assert cross_check(inventory, files, tmp_path / "nca") == []


def test_cross_check_notices_a_wrong_model(tmp_path: Path) -> None:
    """The comparison can fail: a translation that forgets the cluster scope disagrees."""
    inventory, files = rendered(REPO_ROOT)

    def unscoped(inv: Inventory, fs: Files, endpoints: Sequence[Any]) -> list[dict[str, Any]]:
        policies = translate(inv, fs, endpoints)
        for policy in policies:
            policy["spec"]["podSelector"].pop("matchExpressions", None)
        return policies

    problems = cross_check(inventory, files, tmp_path, unscoped)
    assert problems, "dropping the cluster scope of the policies must change nca's answer"
    assert any("domain1/backend@cl" in p for p in problems)


def test_translation_shape() -> None:
    inventory, files = rendered(REPO_ROOT)
    report = verify(inventory, files)
    policies = translate(inventory, files, report.endpoints)
    frontend = next(p for p in policies if p["metadata"]["name"].startswith("frontend-"))
    assert frontend["metadata"]["namespace"] == "frontend-namespace"
    assert frontend["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert {"key": netpol.CLUSTER_KEY, "operator": "In", "values": ["cluster4"]} in \
        frontend["spec"]["podSelector"]["matchExpressions"]
    peers = [peer for rule in frontend["spec"]["egress"] for peer in rule.get("to", [])]
    assert {"ipBlock": {"cidr": "108.177.16.0/24"}} in peers
    assert any(p.get("namespaceSelector") == {"matchExpressions": [
        {"key": netpol.NAME_LABEL, "operator": "In", "values": ["kube-system"]}]}
        for p in peers)
    pods = [r for r in virtual_cluster(report.endpoints) if r["kind"] == "Pod"]
    assert len({p["metadata"]["name"] for p in pods}) == len(pods)
    assert all(netpol.CLUSTER_KEY in p["metadata"]["labels"] for p in pods)
