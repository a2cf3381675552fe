"""Defects of issue 9 planted in the rendered YAML of the bundled example, for the tests
that show verify reports each (``tests/verify/test_mutations.py``) and that nca agrees on the
flows where it can express the case (``tests/verify/test_crosscheck.py``)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from meshplan.diagnostics import Severity

Files = dict[str, bytes]
Docs = dict[str, list[Any]]  # rendered file -> its parsed documents
Mutation = Callable[[Docs], None]
CL4 = "clusters/domain2/cl4/policies.yaml"


# --------------------------------------------------------------------------- mutations


def frontend(docs: Docs) -> dict[str, Any]:
    """The frontend policy of cl4 (egress to domain1's services and a CIDR; ingress)."""
    policy: dict[str, Any] = docs[CL4][0]
    assert policy["metadata"]["name"] == "frontend"
    return policy


def backend_peer(docs: Docs) -> dict[str, Any]:
    """frontend's egress peer for domain1's backend (in cluster1 and cluster2)."""
    peer: dict[str, Any] = frontend(docs)["spec"]["egress"][0]["toEndpoints"][0]
    assert peer["matchLabels"]["app"] == "backend"
    return peer


def add_expression(*expression: dict[str, Any]) -> Mutation:
    def mutate(docs: Docs) -> None:
        backend_peer(docs).setdefault("matchExpressions", []).extend(expression)
    return mutate


def add_label(key: str, value: str, *, subject: bool = False) -> Mutation:
    def mutate(docs: Docs) -> None:
        target = frontend(docs)["spec"]["endpointSelector"] if subject else backend_peer(docs)
        target["matchLabels"][key] = value
    return mutate


def edit_spec(change: Callable[[dict[str, Any]], None]) -> Mutation:
    def mutate(docs: Docs) -> None:
        change(frontend(docs)["spec"])
    return mutate


def edit_policy(change: Callable[[dict[str, Any]], None]) -> Mutation:
    def mutate(docs: Docs) -> None:
        change(frontend(docs))
    return mutate


def _mixed_rule(spec: dict[str, Any]) -> None:
    spec["ingress"][0]["fromCIDRSet"] = [{"cidr": "192.0.2.0/24"}]


def _many_ports(spec: dict[str, Any]) -> None:
    spec["ingress"][0]["toPorts"] = [{"ports": [{"port": str(8000 + i), "protocol": "TCP"}
                                                for i in range(41)]}]


def _only_empty_sections(spec: dict[str, Any]) -> None:
    spec["egress"] = []
    spec["ingress"] = []


def _invalid_second_spec(policy: dict[str, Any]) -> None:
    policy["specs"] = [{"endpointSelector": {"matchLabels": {"app": "frontend"}},
                        "ingress": [{"fromEndpoints": [{"matchExpressions": [
                            {"key": "tier", "operator": "In"}]}]}]}]


def _no_namespace(policy: dict[str, Any]) -> None:
    del policy["metadata"]["namespace"]


def _clusterwide_with_namespace(policy: dict[str, Any]) -> None:
    policy["kind"] = "CiliumClusterwideNetworkPolicy"
    policy["spec"]["endpointSelector"]["matchLabels"]["k8s:io.kubernetes.pod.namespace"] = \
        "frontend-namespace"


def _peer_without_cluster(docs: Docs) -> None:
    peer = backend_peer(docs)
    del peer["matchExpressions"]


def _cidr_instead_of_service(docs: Docs) -> None:
    frontend(docs)["spec"]["egress"][0] = {"toCIDRSet": [{"cidr": "10.1.0.0/16"}]}


def _narrower_peer_behind_global_service(docs: Docs) -> None:
    backend_peer(docs)["matchExpressions"][0]["values"] = ["cluster2"]


def _open_egress(spec: dict[str, Any]) -> None:
    spec["enableDefaultDeny"]["egress"] = False


def _ingress_list_emptied(spec: dict[str, Any]) -> None:
    spec["ingress"] = []


def _wildcard_ingress(spec: dict[str, Any]) -> None:
    spec["ingress"] = [{"toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}]


def _deny_all_ingress(spec: dict[str, Any]) -> None:
    spec["ingress"] = [{}]


REJECTED = "Cilium rejects this whole policy"
UNRESTRICTED = "domain2/frontend@cl4 stay unrestricted by it"
E, W = Severity.ERROR, Severity.WARNING

# (mutation, what verify must say: severity and words of one of its lines)
CASES = [
    # ---- selectors Cilium (or the API server) refuses: the whole object enforces nothing
    pytest.param(add_expression({"key": "tier", "operator": "In"}),
                 E, (REJECTED, "at least one value for operator In", UNRESTRICTED),
                 id="In-without-values"),
    pytest.param(add_expression({"key": "tier", "operator": "NotIn", "values": []}),
                 E, (REJECTED, "at least one value for operator NotIn"), id="NotIn-empty"),
    pytest.param(add_expression({"key": "tier", "operator": "Exists", "values": ["a"]}),
                 E, (REJECTED, "no values for operator Exists"), id="Exists-with-values"),
    pytest.param(add_expression({"key": "tier", "operator": "Matches", "values": ["a"]}),
                 E, (REJECTED, "found 'Matches'"), id="unknown-operator"),
    pytest.param(add_label("-tier", "a"), E, (REJECTED, "found '-tier'"), id="key-dash"),
    pytest.param(add_label("a/b/c", "a"), E, (REJECTED, "more than one '/'"),
                 id="key-two-slashes"),
    pytest.param(add_label("Example.com/x", "a"), E, (REJECTED, "prefix 'Example.com'"),
                 id="key-uppercase-prefix"),
    pytest.param(add_label("tier", "a b"), E, (REJECTED, "found 'a b'"), id="value-space"),
    pytest.param(add_expression({"key": "tier", "operator": "In", "values": ["a b"]}),
                 E, (REJECTED, "found 'a b'"), id="expression-value-space"),
    pytest.param(add_label("x" * 60, "a"), E, (REJECTED, "as Cilium 1.19 reads it"),
                 id="key-60-characters"),
    pytest.param(add_label("io.cilium.k8s.namespace.labels." + "t" * 29, "a"),
                 E, (REJECTED, "a namespace label's key has at most 28"),
                 id="namespace-label-key-29"),
    pytest.param(add_label("k8s:a:b", "a"), E, (REJECTED, "found 'k8s:a:b'"), id="two-sources"),
    pytest.param(add_expression({"key": "tier", "operator": "In"}),
                 E, ("-> domain2/frontend@cl4 to be blocked",), id="rejected-policy-opens-flows"),
    pytest.param(edit_spec(_mixed_rule), E, (REJECTED, "one rule may use only one of",
                                             "fromEndpoints and fromCIDRSet"),
                 id="endpoints-and-cidrs-in-one-rule"),
    pytest.param(edit_spec(_many_ports), E, (REJECTED, "at most 40 ports per toPorts entry"),
                 id="41-ports"),
    pytest.param(edit_spec(_only_empty_sections), E, (REJECTED, "at least one of ingress"),
                 id="only-empty-sections"),
    pytest.param(edit_policy(_invalid_second_spec), E, (REJECTED, "specs[0]"),
                 id="invalid-second-spec"),
    # ---- selectors Cilium accepts but reads otherwise
    pytest.param(add_label("k8:tier", "a", subject=True),
                 W, ("'k8:' is an unknown source",), id="unknown-source-warned"),
    pytest.param(add_label("k8:tier", "a", subject=True),
                 E, ("-> domain2/frontend@cl4 to be blocked",), id="unknown-source-opens"),
    pytest.param(add_label("reserved:host", ""), E, ("to be allowed",),
                 id="reserved-peer-allows-nothing"),
    # ---- subjects, namespaces and clusters as Cilium reads them
    pytest.param(add_label("k8s:io.kubernetes.pod.namespace", "ns1", subject=True),
                 E, ("Cilium confines a policy's subject to its namespace",),
                 id="subject-in-another-namespace"),
    pytest.param(add_label("io.cilium.k8s.policy.cluster", "cluster3", subject=True),
                 E, ("-> domain2/frontend@cl4 to be blocked",), id="subject-other-cluster"),
    pytest.param(edit_policy(_no_namespace), E, ("expected metadata.namespace, found none",),
                 id="no-namespace"),
    pytest.param(edit_policy(_clusterwide_with_namespace),
                 E, ("expected no namespace on a cluster-wide policy",),
                 id="clusterwide-with-a-namespace"),
    pytest.param(_peer_without_cluster, W, ("reads it as the local cluster (cluster4",),
                 id="peer-without-cluster-warned"),
    pytest.param(_peer_without_cluster, E, ("frontend@cl4 -> domain1/backend@cl1 to be allowed",),
                 id="peer-without-cluster-is-local"),
    pytest.param(_cidr_instead_of_service, W, ("overlap the pod networks of domain1/cl1",
                                               "never matches pods by CIDR"),
                 id="cidr-over-pods-warned"),
    pytest.param(_cidr_instead_of_service, E, ("frontend@cl4 -> domain1/backend@cl1 to be "
                                               "allowed",), id="cidr-never-matches-pods"),
    pytest.param(_narrower_peer_behind_global_service,
                 W, ("expected every backend of the global Service backend-namespace/backend "
                     "of domain2/cl4 to be allowed for domain2/frontend",
                     "domain1/backend@cl1 blocked"), id="global-service-reaches-every-backend"),
    # ---- default deny as Cilium applies it
    pytest.param(edit_spec(_open_egress), E, ("egress from domain2/frontend@cl4 is "
                                              "unrestricted",), id="enableDefaultDeny-false"),
    pytest.param(edit_spec(_ingress_list_emptied), E, ("ingress to domain2/frontend@cl4 is "
                                                       "unrestricted",),
                 id="empty-ingress-list-is-no-restriction"),
    pytest.param(edit_spec(_wildcard_ingress), E, ("-> domain2/frontend@cl4 to be blocked",),
                 id="toPorts-only-admits-everyone"),
    pytest.param(edit_spec(_deny_all_ingress), E, ("-> domain2/frontend@cl4 to be allowed",),
                 id="empty-rule-denies-all"),
]




def parsed(files: Files) -> Docs:
    return {path: list(yaml.safe_load_all(content)) for path, content in files.items()
            if path.endswith(".yaml") and "/kustomization" not in path}


def mutated(files: Files, mutation: Mutation) -> Files:
    """The rendered files with ``mutation`` applied to their parsed documents."""
    docs = copy.deepcopy(parsed(files))
    mutation(docs)
    return {**files, **{path: yaml.safe_dump_all(items).encode()
                        for path, items in docs.items()}}


# The cases nca can judge too (it reads NetworkPolicies: see tests/support/netpol.py for what
# it cannot express), with the objects it must refuse for their label selectors.
FRONTEND_OBJECT = "cluster4/CiliumNetworkPolicy.frontend-namespace.frontend"
NCA_CASES = {
    "In-without-values": [FRONTEND_OBJECT], "NotIn-empty": [FRONTEND_OBJECT],
    "Exists-with-values": [FRONTEND_OBJECT], "key-dash": [FRONTEND_OBJECT],
    "key-two-slashes": [FRONTEND_OBJECT], "key-uppercase-prefix": [FRONTEND_OBJECT],
    "value-space": [FRONTEND_OBJECT], "expression-value-space": [FRONTEND_OBJECT],
    "two-sources": [FRONTEND_OBJECT], "invalid-second-spec": [FRONTEND_OBJECT],
    "only-empty-sections": [], "unknown-source-opens": [], "reserved-peer-allows-nothing": [],
    "subject-in-another-namespace": [], "subject-other-cluster": [],
    "clusterwide-with-a-namespace": [], "peer-without-cluster-is-local": [],
    "cidr-never-matches-pods": [], "global-service-reaches-every-backend": [],
    "empty-ingress-list-is-no-restriction": [], "toPorts-only-admits-everyone": [],
    "empty-rule-denies-all": [],
}
