"""Golden tests of the Istio thesis' application (``examples/istio-multicloud``).

The thesis secures Online Boutique split between an AKS cluster (network1) and a GKE cluster
(network2) with Istio mutual TLS and hand-written AuthorizationPolicies. Here the same
application's requirements (the calls of its figure 4.3) render both layers: every flow of
the figure is allowed by Cilium (pod to pod in a cluster, through the east-west gateways
between the clouds) and by an AuthorizationPolicy admitting exactly the caller's principal,
over STRICT mutual TLS; nothing else is.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from meshplan.mesh.identity import strict_namespaces
from meshplan.model import Inventory
from meshplan.refine import ClusterRef
from meshplan.verify.report import VerifyReport, verify

from tests.support.flows import Files, rendered_files
from tests.support.repos import ISTIO_EXAMPLE

EXAMPLE = ISTIO_EXAMPLE
AKS, GCP = "aks.boutique.example", "gcp.boutique.example"


def sa(trust_domain: str, name: str) -> str:
    return f"{trust_domain}/ns/online-boutique/sa/{name}"


# cluster -> policy -> (selected app, admitted principals, ports); None: allow-nothing
AUTHORIZATIONS: dict[str, dict[str, tuple[str, list[str], list[str]] | None]] = {
    "aks": {
        "currencyservice": ("currencyservice", [sa(AKS, "frontend"),
                                                sa(GCP, "checkoutservice")], ["7000"]),
        "emailservice": ("emailservice", [sa(GCP, "checkoutservice")], ["8080"]),
        "frontend": ("frontend", [f"{AKS}/ns/istio-system/sa/*",
                                  f"{AKS}/ns/online-boutique/sa/*"], ["8080"]),
        "loadgenerator": None,
        "paymentservice": ("paymentservice", [sa(GCP, "checkoutservice")], ["50051"]),
        "productcatalogservice": ("productcatalogservice", [
            sa(AKS, "frontend"), sa(GCP, "checkoutservice"), sa(GCP, "recommendationservice")],
            ["3550"]),
        "shippingservice": ("shippingservice", [sa(AKS, "frontend"),
                                                sa(GCP, "checkoutservice")], ["50051"]),
    },
    "gcp": {
        "adservice": ("adservice", [sa(AKS, "frontend")], ["9555"]),
        "cartservice": ("cartservice", [sa(AKS, "frontend"), sa(GCP, "checkoutservice")],
                        ["7070"]),
        "checkoutservice": ("checkoutservice", [sa(AKS, "frontend")], ["5050"]),
        "recommendationservice": ("recommendationservice", [sa(AKS, "frontend")], ["8080"]),
        "redis-cart": ("redis-cart", [sa(GCP, "cartservice")], ["6379"]),
    },
}

# The calls of the thesis' figure 4.3, as the requirements write them, and who enforces them:
# both layers everywhere; across the clouds Cilium sees the east-west gateways.
FLOWS = {
    "boutique/frontend@aks -> boutique/currencyservice@aks TCP/7000": "pod to pod",
    "boutique/frontend@aks -> boutique/productcatalogservice@aks TCP/3550": "pod to pod",
    "boutique/frontend@aks -> boutique/shippingservice@aks TCP/50051": "pod to pod",
    "boutique/frontend@aks -> boutique/adservice@gcp TCP/9555": "gateways",
    "boutique/frontend@aks -> boutique/cartservice@gcp TCP/7070": "gateways",
    "boutique/frontend@aks -> boutique/checkoutservice@gcp TCP/5050": "gateways",
    "boutique/frontend@aks -> boutique/recommendationservice@gcp TCP/8080": "gateways",
    "boutique/aks:istio-system/istio=ingressgateway -> boutique/frontend@aks TCP/8080":
        "pod to pod",
    "boutique/aks:online-boutique/app=loadgenerator -> boutique/frontend@aks TCP/8080":
        "pod to pod",
    "boutique/cartservice@gcp -> boutique/redis-cart@gcp TCP/6379": "pod to pod",
    "boutique/checkoutservice@gcp -> boutique/cartservice@gcp TCP/7070": "pod to pod",
    "boutique/checkoutservice@gcp -> boutique/currencyservice@aks TCP/7000": "gateways",
    "boutique/checkoutservice@gcp -> boutique/emailservice@aks TCP/8080": "gateways",
    "boutique/checkoutservice@gcp -> boutique/paymentservice@aks TCP/50051": "gateways",
    "boutique/checkoutservice@gcp -> boutique/productcatalogservice@aks TCP/3550": "gateways",
    "boutique/checkoutservice@gcp -> boutique/shippingservice@aks TCP/50051": "gateways",
    "boutique/recommendationservice@gcp -> boutique/productcatalogservice@aks TCP/3550":
        "gateways",
}


@pytest.fixture(scope="module")
def example() -> tuple[Inventory, Files]:
    return rendered_files(EXAMPLE)


@pytest.fixture(scope="module")
def report(example: tuple[Inventory, Files]) -> VerifyReport:
    return verify(*example)


def documents(files: Files, path: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(files[path]) if d]


@pytest.mark.parametrize("cluster", ["aks", "gcp"])
def test_the_authorization_policies(example: tuple[Inventory, Files], cluster: str) -> None:
    docs = documents(example[1], f"clusters/boutique/{cluster}/istio-security.yaml")
    found: dict[str, tuple[str, list[str], list[str]] | None] = {}
    for doc in docs:
        if doc["kind"] != "AuthorizationPolicy":
            continue
        spec = doc["spec"]
        assert doc["metadata"]["namespace"] == "online-boutique"
        assert spec["action"] == "ALLOW"
        if "rules" not in spec:
            found[doc["metadata"]["name"]] = None
            continue
        [rule] = spec["rules"]
        [source] = rule["from"]
        found[doc["metadata"]["name"]] = (spec["selector"]["matchLabels"]["app"],
                                          source["source"]["principals"],
                                          rule["to"][0]["operation"]["ports"])
    assert found == AUTHORIZATIONS[cluster]


@pytest.mark.parametrize("cluster", ["aks", "gcp"])
def test_one_strict_peer_authentication_per_namespace(example: tuple[Inventory, Files],
                                                      cluster: str) -> None:
    docs = documents(example[1], f"clusters/boutique/{cluster}/istio-security.yaml")
    [pa] = [d for d in docs if d["kind"] == "PeerAuthentication"]
    assert (pa["metadata"]["name"], pa["metadata"]["namespace"]) == ("default",
                                                                    "online-boutique")
    assert pa["spec"] == {"mtls": {"mode": "STRICT"}}
    assert strict_namespaces(example[0]) == {ClusterRef("boutique", "aks"): ("online-boutique",),
                                             ClusterRef("boutique", "gcp"): ("online-boutique",)}


def test_the_gateway_hops_in_the_cilium_layer(example: tuple[Inventory, Files]) -> None:
    aks = {d["metadata"]["name"]: d for d in documents(example[1],
                                                      "clusters/boutique/aks/policies.yaml")}
    gateway = aks["istio-eastwestgateway"]
    assert gateway["metadata"]["namespace"] == "istio-system"
    assert gateway["spec"]["ingress"] == [{"fromCIDRSet": [{"cidr": "203.0.113.7/32"}],
                                           "toPorts": [{"ports": [{"port": "15443",
                                                                   "protocol": "TCP"}]}]}]
    assert {"fromEndpoints": [{"matchLabels": {
        "istio": "eastwestgateway", "k8s:io.kubernetes.pod.namespace": "istio-system",
        "io.cilium.k8s.policy.cluster": "cluster1"}}],
        "toPorts": [{"ports": [{"port": "7000", "protocol": "TCP"}]}]} in \
        aks["currencyservice"]["spec"]["ingress"]
    assert {"toCIDRSet": [{"cidr": "203.0.113.7/32"}],
            "toPorts": [{"ports": [{"port": "15443", "protocol": "TCP"}]}]} in \
        aks["frontend"]["spec"]["egress"]
    # no rule names a pod of the other cloud: Cilium never sees one
    assert "cluster2" not in example[1]["clusters/boutique/aks/policies.yaml"].decode()


def test_the_flows_of_the_application(report: VerifyReport) -> None:
    assert report.ok
    titles = [e.title for e in report.endpoints]
    decided = {}
    for (i, j), ports in report.restricted_flows().items():
        decided[f"{titles[i]} -> {titles[j]} {ports}"] = (i, j)
    # the figure's calls, each over mutual TLS the server requires
    assert set(FLOWS) <= set(decided)
    for line, (i, j) in decided.items():
        if line in FLOWS:
            assert report.protected[(i, j)] == report.flows[(i, j)], line
    assert report.layers is not None
    for line, how in FLOWS.items():
        i, j = decided[line]
        routed = report.layers.hops.routed(report.endpoints[i], report.endpoints[j])
        assert routed is (how == "gateways"), line
    # beyond them only what Cilium cannot see across the clouds (a warning says so): the
    # ingress gateway's open ingress behind the east-west gateway
    extra = sorted(set(decided) - set(FLOWS))
    assert extra == [
        "boutique/checkoutservice@gcp -> boutique/aks:istio-system/istio=ingressgateway TCP/any",
        "boutique/recommendationservice@gcp -> boutique/aks:istio-system/istio=ingressgateway "
        "TCP/any"]


def test_what_each_layer_refuses(report: VerifyReport) -> None:
    """Across the clouds Cilium admits any client the gateway brings; Istio tells them apart.
    In a cluster both layers refuse."""
    assert report.layers is not None
    layers = report.layers
    titles = [e.title for e in report.endpoints]
    recommendation = titles.index("boutique/recommendationservice@gcp")
    currency = titles.index("boutique/currencyservice@aks")
    email = titles.index("boutique/emailservice@aks")
    assert str(layers.cilium_flow(recommendation, currency)) == "TCP/7000"
    assert str(layers.identity.flow(recommendation, currency)) == "UDP/any SCTP/any"
    assert (recommendation, currency) not in report.flows
    assert not layers.cilium_flow(email, currency)
    assert not layers.identity.flow(email, currency) & layers.cilium_flow(email, currency)
