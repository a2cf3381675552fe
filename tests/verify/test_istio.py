"""meshplan.verify.istio: the rendered Istio objects read with Istio's semantics.

A small mesh: cluster ``a`` is an Istio member (trust domain a.example) and a ClusterMesh
peer of ``b``, which runs no Istio. Services x, y (namespace n1, service accounts x, y) and z
(n2, no service account) run in a, w (n1) in b. The rendered output is kept for the Cilium
layer (x admits y, z and w; nothing restricts the rest) and its ``istio-security.yaml`` is
replaced by the policies each test writes, so each test reads one Istio rule at work.
"""

from __future__ import annotations

import textwrap

import pytest
import yaml
from meshplan.model import Inventory
from meshplan.verify.istio import Client, principal_matches, string_matches
from meshplan.verify.report import VerifyReport, verify

from tests.support.flows import Files, errors, rendered_files, warnings, write
from tests.support.repos import ISTIO_MESH

REPO = {
    "inventory/d.yaml": """
        apiVersion: meshplan.dev/v1alpha1
        kind: Domain
        metadata: {name: d}
        spec:
          clusters:
            - {name: a, meshName: ma, meshId: 1, clustermesh: {address: 203.0.113.1},
               istio: {network: n, trustDomain: a.example}}
            - {name: b, meshName: mb, meshId: 2, clustermesh: {address: 203.0.113.2}}
          services:
            - {name: x, namespace: n1, serviceAccount: x, selector: {app: x}, clusters: [a],
               ports: [{port: 80, protocol: TCP, name: http}, {port: 53, protocol: UDP,
                                                               name: dns}]}
            - {name: y, namespace: n1, serviceAccount: y, selector: {app: y}, clusters: [a],
               ports: [{port: 80, protocol: TCP, name: http}]}
            - {name: z, namespace: n2, selector: {app: z}, clusters: [a],
               ports: [{port: 80, protocol: TCP, name: http}]}
            - {name: w, namespace: n1, serviceAccount: w, selector: {app: w}, clusters: [b],
               ports: [{port: 80, protocol: TCP, name: http}]}
    """,
    "inventory/mesh.yaml": ISTIO_MESH,
    "requirements/d/x.yaml": """
        apiVersion: meshplan.dev/v1alpha1
        kind: Requirement
        metadata: {name: x}
        spec:
          endpointSelector: {matchLabels: {service: x}}
          ingress:
            - fromEndpoints:
                - matchLabels: {service: y}
                - matchLabels: {service: z}
                - matchLabels: {service: w}
    """,
}
ISTIO = "clusters/d/a/istio-security.yaml"
HEAD = ("apiVersion: security.istio.io/v1\nkind: {kind}\n"
        "metadata: {{name: {name}, namespace: {ns}}}\n")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Inventory, Files]:
    root = write(tmp_path_factory.mktemp("istio") / "repo", REPO)
    return rendered_files(root)


def policies(*documents: str) -> bytes:
    return "---\n".join(textwrap.dedent(d).lstrip() for d in documents).encode()


def pa(name: str, ns: str, body: str) -> str:
    return HEAD.format(kind="PeerAuthentication", name=name, ns=ns) + textwrap.dedent(body)


def ap(name: str, ns: str, body: str) -> str:
    return HEAD.format(kind="AuthorizationPolicy", name=name, ns=ns) + textwrap.dedent(body)


def with_istio(small: tuple[Inventory, Files], *documents: str) -> VerifyReport:
    inventory, files = small
    return verify(inventory, {**files, ISTIO: policies(*documents) if documents else b""})


def layer(report: VerifyReport, source: str, destination: str) -> str:
    """What the identity layer allows from ``source`` to ``destination`` (endpoint titles)."""
    titles = [e.title for e in report.endpoints]
    assert report.layers is not None
    return str(report.layers.identity.flow(titles.index(source), titles.index(destination)))


X, Y, Z, W = "d/x@a", "d/y@a", "d/z@a", "d/w@b"
STRICT = "spec: {mtls: {mode: STRICT}}\n"
ONLY_Y = """
    spec:
      selector: {matchLabels: {app: x}}
      rules: [{from: [{source: {principals: [a.example/ns/n1/sa/y]}}]}]
"""


def test_the_rendered_example_passes(small: tuple[Inventory, Files]) -> None:
    report = verify(*small)
    assert errors(report) == []
    assert layer(report, Y, X) == "TCP/80 UDP/any SCTP/any"  # UDP passes the layer
    assert layer(report, W, X) == "UDP/any SCTP/any"  # plaintext: STRICT refuses it


def test_no_policy_allows_everything_and_plaintext_by_default(
        small: tuple[Inventory, Files]) -> None:
    report = with_istio(small)
    assert layer(report, W, X) == "any"  # no PeerAuthentication: PERMISSIVE
    assert any("expected STRICT mutual TLS for namespace n1 of d/a" in e
               for e in errors(report))


def test_strict_refuses_plaintext_even_without_authorization(
        small: tuple[Inventory, Files]) -> None:
    report = with_istio(small, pa("default", "n1", STRICT))
    assert layer(report, W, X) == "UDP/any SCTP/any"
    assert layer(report, Y, X) == "any"


def test_workload_beats_namespace_beats_mesh(small: tuple[Inventory, Files]) -> None:
    report = with_istio(
        small, pa("default", "istio-system", STRICT),
        pa("default", "n1", "spec: {mtls: {mode: UNSET}}\n"),
        pa("x-permissive", "n1", """
            spec:
              selector: {matchLabels: {app: x}}
              mtls: {mode: PERMISSIVE}
              portLevelMtls: {"80": {mode: STRICT}}
        """))
    titles = [e.title for e in report.endpoints]
    assert report.layers is not None
    identity = report.layers.identity
    assert identity.modes(titles.index(X)) == ("PERMISSIVE", {80: "STRICT"})
    assert identity.modes(titles.index(Y)) == ("STRICT", {})  # UNSET inherits the mesh
    assert identity.modes(titles.index(Z)) == ("STRICT", {})  # n2: the mesh's
    assert layer(report, W, X) == "TCP/1-79,81-65535 UDP/any SCTP/any"


def test_a_selector_in_the_root_namespace_is_ignored(small: tuple[Inventory, Files]) -> None:
    report = with_istio(small, pa("x", "istio-system", """
        spec:
          selector: {matchLabels: {app: x}}
          mtls: {mode: STRICT}
    """))
    assert layer(report, W, X) == "any"
    assert any("is ignored by Istio" in w for w in warnings(report))


def test_two_at_one_scope_are_ambiguous_and_the_weakest_counts(
        small: tuple[Inventory, Files]) -> None:
    report = with_istio(small, pa("default", "n1", STRICT),
                        pa("legacy", "n1", "spec: {mtls: {mode: PERMISSIVE}}\n"))
    assert any("expected one PeerAuthentication at the namespace n1 scope of d/a, found 2 "
               "(default, legacy)" in e for e in errors(report))
    assert layer(report, W, X) == "any"


def test_allow_by_principal_refuses_plaintext_under_permissive(
        small: tuple[Inventory, Files]) -> None:
    report = with_istio(small, pa("default", "n1", "spec: {mtls: {mode: PERMISSIVE}}\n"),
                        ap("x", "n1", ONLY_Y))
    assert layer(report, Y, X) == "any"
    assert layer(report, W, X) == "UDP/any SCTP/any"  # plaintext: no principal to admit
    assert layer(report, Z, X) == "UDP/any SCTP/any"


def test_deny_by_principal_passes_plaintext_under_permissive(
        small: tuple[Inventory, Files]) -> None:
    report = with_istio(small, pa("default", "n1", "spec: {mtls: {mode: PERMISSIVE}}\n"),
                        ap("no-w", "n1", """
                            spec:
                              selector: {matchLabels: {app: x}}
                              action: DENY
                              rules: [{from: [{source: {principals: [a.example/ns/n1/sa/y]}}]}]
                        """))
    assert layer(report, Y, X) == "UDP/any SCTP/any"  # denied over mTLS
    assert layer(report, W, X) == "any"  # plaintext passes the DENY
    assert any("expected no DENY by identity" in e for e in errors(report))


def test_deny_wins_over_allow_and_allow_nothing_allows_nothing(
        small: tuple[Inventory, Files]) -> None:
    report = with_istio(small, pa("default", "n1", STRICT), ap("x", "n1", ONLY_Y),
                        ap("port", "n1", """
                            spec:
                              selector: {matchLabels: {app: x}}
                              action: DENY
                              rules: [{to: [{operation: {ports: ["80"]}}]}]
                        """), ap("nothing", "n2", "spec: {}\n"))
    assert layer(report, Y, X) == "TCP/1-79,81-65535 UDP/any SCTP/any"
    assert layer(report, X, Z) == "UDP/any SCTP/any"  # allow-nothing in n2


def test_the_root_namespace_applies_everywhere(small: tuple[Inventory, Files]) -> None:
    report = with_istio(small, ap("mesh", "istio-system", ONLY_Y))
    assert layer(report, Z, X) == "UDP/any SCTP/any"
    assert layer(report, Y, X) == "any"
    assert layer(report, Y, Z) == "any"  # selects app: x only


def test_custom_is_not_evaluated(small: tuple[Inventory, Files]) -> None:
    report = with_istio(small, ap("ext", "n1", """
        spec:
          selector: {matchLabels: {app: x}}
          action: CUSTOM
          provider: {name: opa}
          rules: [{}]
    """))
    assert layer(report, Z, X) == "any"
    assert any("CUSTOM policy delegates" in w for w in warnings(report))


def test_http_operations_never_match_an_allow_and_always_a_deny(
        small: tuple[Inventory, Files]) -> None:
    report = with_istio(small, ap("get", "n1", """
        spec:
          selector: {matchLabels: {app: x}}
          rules: [{to: [{operation: {methods: [GET]}}]}]
    """), ap("paths", "n2", """
        spec:
          action: DENY
          rules: [{to: [{operation: {paths: [/admin], ports: ["80"]}}]}]
    """))
    assert layer(report, Y, X) == "UDP/any SCTP/any"
    assert layer(report, X, Z) == "TCP/1-79,81-65535 UDP/any SCTP/any"


def test_unknown_service_accounts_match_only_what_matches_any(
        small: tuple[Inventory, Files]) -> None:
    report = with_istio(small, ap("x", "n1", """
        spec:
          selector: {matchLabels: {app: x}}
          rules:
            - from: [{source: {principals: [a.example/ns/n2/sa/z]}}]
              to: [{operation: {ports: ["80"]}}]
            - from: [{source: {principals: ["a.example/ns/n2/sa/*"]}}]
              to: [{operation: {ports: ["81"]}}]
    """))
    assert layer(report, Z, X) == "TCP/81 UDP/any SCTP/any"


def test_cluster_local_means_the_local_trust_domain(small: tuple[Inventory, Files]) -> None:
    report = with_istio(small, ap("x", "n1", """
        spec:
          selector: {matchLabels: {app: x}}
          rules: [{from: [{source: {principals: [cluster.local/ns/n1/sa/y]}}]}]
    """))
    assert layer(report, Y, X) == "any"
    assert any("expected a principal with an explicit trust domain" in e
               for e in errors(report))


def test_empty_lists_constrain_nothing(small: tuple[Inventory, Files]) -> None:
    """Protocol buffers: an empty repeated field is no field."""
    report = with_istio(small, ap("x", "n1", """
        spec:
          selector: {matchLabels: {app: x}}
          rules: [{from: [], to: [{operation: {ports: []}}]}]
    """))
    assert layer(report, Z, X) == "any"


def test_objects_in_a_cluster_without_istio_are_not_counted(
        small: tuple[Inventory, Files]) -> None:
    inventory, files = small
    root = yaml.safe_load(files["clusters/d/b/kustomization.yaml"])
    root["resources"].append("istio-security.yaml")
    report = verify(inventory, {**files, "clusters/d/b/istio-security.yaml": policies(
        ap("w", "n1", "spec: {}\n")), "clusters/d/b/kustomization.yaml": yaml.safe_dump(
            root).encode()})
    assert any("this cluster runs no Istio" in w for w in warnings(report))


@pytest.mark.parametrize(("pattern", "value", "expected"), [
    ("*", "anything", True), ("a*", "abc", True), ("*c", "abc", True), ("abc", "abc", True),
    ("b*", "abc", False), ("*b", "abc", False), ("ab", "abc", False),
])
def test_string_matching(pattern: str, value: str, expected: bool) -> None:
    assert string_matches(pattern, value) is expected


def test_principal_matching() -> None:
    known = Client(True, "a.example", "n1", "y")
    unknown = Client(True, "a.example", "n1", None)
    plain = Client(False)
    assert principal_matches("a.example/ns/n1/sa/y", known, "b.example")
    assert principal_matches("cluster.local/ns/n1/sa/y", known, "a.example")
    assert not principal_matches("cluster.local/ns/n1/sa/y", known, "b.example")
    assert principal_matches("a.example/ns/n1/sa/*", unknown, "a.example")
    assert principal_matches("a.example/*", unknown, "a.example")
    assert not principal_matches("a.example/ns/n1/sa/y*", unknown, "a.example")
    assert not principal_matches("*/sa/y", unknown, "a.example")
    assert not principal_matches("*", plain, "a.example")

