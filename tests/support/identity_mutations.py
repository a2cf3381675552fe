"""Defects of the identity layer (issue 12) planted in the rendered YAML of the Istio example,
for the tests that show verify reports each (``tests/verify/test_identity_mutations.py``) and
that network-config-analyzer agrees on the flows where it can express the case
(``tests/verify/test_istio_crosscheck.py``).

The example (``examples/istio-multicloud``): aks (trust domain aks.boutique.example, network1)
and gcp (gcp.boutique.example, network2), Online Boutique split between them; every service
runs as a service account of its own name. Each mutation edits the parsed documents of the
rendered files (``clusters/boutique/<cluster>/<file>``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from meshplan.diagnostics import Severity

from tests.support.mutations import Docs, Mutation

AKS_ISTIO = "clusters/boutique/aks/istio-security.yaml"
GCP_ISTIO = "clusters/boutique/gcp/istio-security.yaml"
AKS_POLICIES = "clusters/boutique/aks/policies.yaml"
GCP_POLICIES = "clusters/boutique/gcp/policies.yaml"
AKS_TD, GCP_TD = "aks.boutique.example", "gcp.boutique.example"
E, W = Severity.ERROR, Severity.WARNING


def named(docs: Docs, path: str, kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(d for d in docs[path] if d["kind"] == kind
                                 and d["metadata"]["name"] == name)
    return found


def policy(name: str, path: str = AKS_ISTIO) -> Callable[[Docs], dict[str, Any]]:
    return lambda docs: named(docs, path, "AuthorizationPolicy", name)


def principals(docs: Docs, name: str, path: str = AKS_ISTIO) -> list[str]:
    found: list[str] = policy(name, path)(docs)["spec"]["rules"][0]["from"][0]["source"][
        "principals"]
    return found


def set_principal(name: str, index: int, value: str, path: str = AKS_ISTIO) -> Mutation:
    def mutate(docs: Docs) -> None:
        principals(docs, name, path)[index] = value
    return mutate


def edit_source(name: str, change: Callable[[dict[str, Any]], None],
                path: str = AKS_ISTIO) -> Mutation:
    def mutate(docs: Docs) -> None:
        change(policy(name, path)(docs)["spec"]["rules"][0]["from"][0]["source"])
    return mutate


def edit_spec(name: str, change: Callable[[dict[str, Any]], None],
              path: str = AKS_ISTIO) -> Mutation:
    def mutate(docs: Docs) -> None:
        change(policy(name, path)(docs)["spec"])
    return mutate


def drop(kind: str, name: str, path: str = AKS_ISTIO) -> Mutation:
    def mutate(docs: Docs) -> None:
        docs[path] = [d for d in docs[path]
                      if not (d["kind"] == kind and d["metadata"]["name"] == name)]
    return mutate


def peer_authentication(mode: str, **extra: Any) -> Mutation:
    """The namespace-wide PeerAuthentication of online-boutique in aks, changed."""
    def mutate(docs: Docs) -> None:
        found = named(docs, AKS_ISTIO, "PeerAuthentication", "default")
        found["spec"]["mtls"]["mode"] = mode
        found["spec"].update(extra)
    return mutate


def add(document: dict[str, Any], path: str = AKS_ISTIO) -> Mutation:
    def mutate(docs: Docs) -> None:
        docs[path].append(document)
    return mutate


def _meta(kind: str, name: str, namespace: str = "online-boutique") -> dict[str, Any]:
    api = "security.istio.io/v1"
    return {"apiVersion": api, "kind": kind,
            "metadata": {"name": name, "namespace": namespace}}


def deny(source: dict[str, Any], app: str = "shippingservice") -> dict[str, Any]:
    return {**_meta("AuthorizationPolicy", "deny-by-identity"),
            "spec": {"selector": {"matchLabels": {"app": app}}, "action": "DENY",
                     "rules": [{"from": [{"source": source}]}]}}


def cilium_rule(name: str, path: str, change: Callable[[dict[str, Any]], None]) -> Mutation:
    def mutate(docs: Docs) -> None:
        change(named(docs, path, "CiliumNetworkPolicy", name)["spec"])
    return mutate


def _drop_gateway_ingress(spec: dict[str, Any]) -> None:
    spec["ingress"] = [r for r in spec["ingress"]
                       if "istio" not in r["fromEndpoints"][0]["matchLabels"]]


def _drop_gateway_egress(spec: dict[str, Any]) -> None:
    spec["egress"] = [r for r in spec["egress"] if "toCIDRSet" not in r]


def _gateway_from_world(spec: dict[str, Any]) -> None:
    spec["ingress"][0]["fromCIDRSet"] = [{"cidr": "0.0.0.0/0"}]


def _gateway_other_port(spec: dict[str, Any]) -> None:
    spec["ingress"][0]["toPorts"][0]["ports"][0]["port"] = "15021"


def _allow_all(spec: dict[str, Any]) -> None:
    spec["rules"] = [{}]


def _no_rules(spec: dict[str, Any]) -> None:
    spec.pop("rules")


def _no_ports(spec: dict[str, Any]) -> None:
    spec["rules"][0].pop("to")


def _other_port(spec: dict[str, Any]) -> None:
    spec["rules"][0]["to"][0]["operation"]["ports"] = ["7001"]


def _namespaces_instead(source: dict[str, Any]) -> None:
    source.pop("principals")
    source["namespaces"] = ["online-boutique"]


def _custom(spec: dict[str, Any]) -> None:
    spec["action"] = "CUSTOM"
    spec["provider"] = {"name": "ext-authz"}


WIDER = "expected the identity layer to refuse"
NARROWER = "expected the identity layer to admit"
CHECKOUT = f"boutique/checkoutservice@gcp ({GCP_TD}/ns/online-boutique/sa/checkoutservice)"
NOT_STRICT = "expected STRICT mutual TLS for namespace online-boutique of boutique/aks"
CLUSTER_LOCAL = "expected a principal with an explicit trust domain"
DENY_BY_IDENTITY = "expected no DENY by identity"
MISMATCH = "a layer mismatch"

# (mutation, what verify must say: severity and words of one of its lines)
CASES = [
    # ---- a principal widened
    pytest.param(set_principal("currencyservice", 0, f"{AKS_TD}/ns/online-boutique/sa/*"),
                 E, (WIDER, "boutique/emailservice@aks", "-> boutique/currencyservice@aks",
                     "TCP/7000", MISMATCH), id="principal-whole-namespace"),
    pytest.param(set_principal("currencyservice", 0, f"{AKS_TD}/ns/online-boutique/sa/pay*"),
                 E, (WIDER, "boutique/paymentservice@aks", MISMATCH), id="principal-prefix"),
    pytest.param(set_principal("currencyservice", 0, "*"),
                 E, (WIDER, "boutique/paymentservice@aks", MISMATCH), id="principal-presence"),
    pytest.param(set_principal("currencyservice", 1, f"{GCP_TD}/*"),
                 E, (WIDER, "boutique/cartservice@gcp", "-> boutique/currencyservice@aks"),
                 id="principal-whole-trust-domain"),
    pytest.param(edit_source("currencyservice", _namespaces_instead),
                 E, (WIDER, "boutique/shippingservice@aks"), id="namespaces-instead"),
    pytest.param(edit_spec("currencyservice", _no_ports),
                 E, (WIDER, "boutique/frontend@aks", "-> boutique/currencyservice@aks",
                     "TCP/1-6999,7001-65535"), id="ports-dropped"),
    pytest.param(edit_spec("currencyservice", _allow_all),
                 E, (WIDER, "boutique/emailservice@aks"), id="allow-all-rule"),
    pytest.param(drop("AuthorizationPolicy", "currencyservice"),
                 E, (WIDER, "no AuthorizationPolicy"), id="policy-dropped"),
    # ---- a principal narrowed or lost
    pytest.param(set_principal("currencyservice", 1, f"{GCP_TD}/ns/online-boutique/sa/cart"),
                 E, (NARROWER, CHECKOUT, "-> boutique/currencyservice@aks", MISMATCH,
                     "Cilium allows it"), id="principal-of-another-workload"),
    pytest.param(edit_spec("currencyservice", _no_rules),
                 E, (NARROWER, "boutique/frontend@aks"), id="allow-nothing"),
    pytest.param(edit_spec("currencyservice", _other_port),
                 E, (NARROWER, "on TCP/7000"), id="other-port"),
    # ---- trust domains: the cluster.local shorthand
    pytest.param(set_principal("currencyservice", 0, "cluster.local/ns/online-boutique/sa/"
                                                     "frontend"),
                 E, (CLUSTER_LOCAL, "cluster.local/ns/online-boutique/sa/frontend"),
                 id="cluster-local-for-the-local-peer"),
    pytest.param(set_principal("currencyservice", 1, "cluster.local/ns/online-boutique/sa/"
                                                     "checkoutservice"),
                 E, (NARROWER, CHECKOUT), id="cluster-local-for-a-remote-peer"),
    pytest.param(set_principal("currencyservice", 1, f"{AKS_TD}/ns/online-boutique/sa/"
                                                     "checkoutservice"),
                 E, (NARROWER, CHECKOUT), id="wrong-trust-domain"),
    # ---- mutual TLS
    pytest.param(drop("PeerAuthentication", "default"),
                 E, (NOT_STRICT, "mode PERMISSIVE"), id="peer-authentication-dropped"),
    pytest.param(peer_authentication("PERMISSIVE"),
                 E, (NOT_STRICT, "mode PERMISSIVE"), id="permissive"),
    pytest.param(peer_authentication("DISABLE"),
                 E, (NOT_STRICT, "mode DISABLE"), id="disable"),
    pytest.param(peer_authentication("UNSET"),
                 E, (NOT_STRICT, "mode PERMISSIVE"), id="unset-inherits-permissive"),
    pytest.param(add({**_meta("PeerAuthentication", "older"),
                      "spec": {"mtls": {"mode": "PERMISSIVE"}}}),
                 E, ("expected one PeerAuthentication at the namespace online-boutique scope",
                     "oldest"), id="two-at-one-scope"),
    pytest.param(add({**_meta("PeerAuthentication", "payment-plaintext"),
                      "spec": {"selector": {"matchLabels": {"app": "paymentservice"}},
                               "portLevelMtls": {"50051": {"mode": "PERMISSIVE"}}}}),
                 E, (NOT_STRICT, "boutique/paymentservice@aks", "TCP/50051"),
                 id="workload-port-permissive"),
    # ---- DENY by identity: a plaintext request passes it
    pytest.param(add(deny({"notPrincipals": [f"{AKS_TD}/ns/online-boutique/sa/frontend"]})),
                 E, (DENY_BY_IDENTITY,), id="deny-not-principals"),
    pytest.param(add(deny({"principals": [f"{GCP_TD}/ns/online-boutique/sa/checkoutservice"]})),
                 E, (DENY_BY_IDENTITY,), id="deny-principals"),
    pytest.param(add(deny({"principals": [f"{GCP_TD}/ns/online-boutique/sa/checkoutservice"]})),
                 E, (NARROWER, CHECKOUT, "-> boutique/shippingservice@aks"),
                 id="deny-principals-refuses"),
    pytest.param(add(deny({"notNamespaces": ["online-boutique"]})),
                 E, (DENY_BY_IDENTITY,), id="deny-not-namespaces"),
    # ---- not evaluated
    pytest.param(edit_spec("currencyservice", _custom),
                 W, ("a CUSTOM policy delegates to an external authorizer",), id="custom"),
    # ---- the gateway hop, as Cilium sees it
    pytest.param(cilium_rule("currencyservice", AKS_POLICIES, _drop_gateway_ingress),
                 E, ("expected boutique/istio-eastwestgateway@aks -> "
                     "boutique/currencyservice@aks to be allowed on TCP/7000",),
                 id="server-without-the-gateway"),
    pytest.param(cilium_rule("checkoutservice", GCP_POLICIES, _drop_gateway_egress),
                 E, ("expected boutique/checkoutservice@gcp -> 198.51.100.7/32 to be allowed on "
                     "TCP/15443",), id="client-without-the-gateway"),
    pytest.param(cilium_rule("istio-eastwestgateway", AKS_POLICIES, _gateway_from_world),
                 E, ("-> boutique/istio-eastwestgateway@aks to be blocked",),
                 id="gateway-open-to-the-world"),
    pytest.param(cilium_rule("istio-eastwestgateway", AKS_POLICIES, _gateway_other_port),
                 E, ("203.0.113.7/32 -> boutique/istio-eastwestgateway@aks to be allowed on "
                     "TCP/15443",), id="gateway-other-port"),
    pytest.param(drop("CiliumNetworkPolicy", "istio-eastwestgateway", AKS_POLICIES),
                 E, ("-> boutique/istio-eastwestgateway@aks to be blocked",),
                 id="gateway-policy-dropped"),
]

# The cases network-config-analyzer can judge too: changes of AuthorizationPolicies, which it
# reads natively (no PeerAuthentication, no CUSTOM, no Cilium).
NCA_CASES = {
    "principal-whole-namespace", "principal-prefix", "principal-presence",
    "principal-whole-trust-domain", "namespaces-instead", "ports-dropped", "allow-all-rule",
    "policy-dropped", "principal-of-another-workload", "allow-nothing", "other-port",
    "cluster-local-for-the-local-peer", "cluster-local-for-a-remote-peer",
    "wrong-trust-domain", "deny-not-principals", "deny-principals", "deny-not-namespaces",
}
