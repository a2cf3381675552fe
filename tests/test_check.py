"""Stage check: meaning across documents (uniqueness, references, consent, CIDR arithmetic)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meshplan.check import (
    _overlapping_pairs,
    _PodNetwork,
    check_inventory,
    did_you_mean,
    parse_network,
)
from meshplan.diagnostics import Location, Severity
from meshplan.load.parse import parse_yaml
from meshplan.model import Inventory, build_domain, build_requirement
from meshplan.schema import check_inventory_document, check_requirement_document

from tests.support.ci import examples

HERE = Location("f.yaml", 3, 5)


def domain(name: str, clusters: str, services: str = "") -> str:
    text = (f"apiVersion: meshplan.dev/v1alpha1\nkind: Domain\nmetadata:\n  name: {name}\n"
            f"spec:\n  clusters:\n{clusters}")
    return text + (f"  services:\n{services}" if services else "")


def requirement(name: str, spec: str) -> str:
    return (f"apiVersion: meshplan.dev/v1alpha1\nkind: Requirement\nmetadata:\n  name: {name}\n"
            f"spec:\n{spec}")


def build(domains: list[str], requirements: dict[str, list[str]] | None = None) -> Inventory:
    built_domains = []
    for i, text in enumerate(domains):
        docs, problems = parse_yaml(f"inventory/d{i}.yaml", text)
        assert problems == []
        assert check_inventory_document(docs[0])[1] == []
        built_domains.append(build_domain(docs[0]))
    built_requirements = []
    for folder, texts in (requirements or {}).items():
        for i, text in enumerate(texts):
            docs, problems = parse_yaml(f"requirements/{folder}/r{i}.yaml", text)
            assert problems == []
            assert check_requirement_document(docs[0])[1] == []
            built_requirements.append(build_requirement(folder, docs[0]))
    return Inventory(tuple(built_domains), tuple(built_requirements))


def problems(inventory: Inventory) -> list[str]:
    return sorted(f"{p.location}: {p.severity.value}: {p.message}"
                  for p in check_inventory(inventory))


CLUSTERS_A = """\
    - name: cl1
      meshId: 1
      podCIDRs: [10.1.0.0/16]
    - name: cl2
      meshId: 2
      podCIDRs: [10.2.0.0/16]
"""
SERVICES_A = """\
    - name: web
      namespace: shop
      selector: {app: web}
      ports: [{port: 80}]
      clusters: [cl1]
      exportTo: [b]
    - name: db
      namespace: data
      selector: {app: db}
      ports: [{port: 5432}]
      clusters: [cl2]
"""
CLUSTERS_B = "    - name: cl3\n      meshId: 3\n      podCIDRs: [10.3.0.0/16]\n"
SERVICES_B = ("    - name: client\n      namespace: shop\n      selector: {app: client}\n"
              "      ports: [{port: 8080}]\n      clusters: [cl3]\n")


def mesh(**requirements: list[str]) -> Inventory:
    return build([domain("a", CLUSTERS_A, SERVICES_A), domain("b", CLUSTERS_B, SERVICES_B)],
                 requirements)


def egress_to(labels: str) -> str:
    return ("  endpointSelector:\n    matchLabels: {service: client}\n  egress:\n"
            f"    - toEndpoints:\n        - matchLabels: {labels}\n")


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(("name", "known", "hint"), [
    ("cl-1", ["cl1", "cl2"], " (did you mean 'cl1'?)"),
    ("databse", ["backend", "database"], " (did you mean 'database'?)"),
    ("frontend", ["backend", "database"], ""),
    ("x", [], ""),
])
def test_did_you_mean(name: str, known: list[str], hint: str) -> None:
    assert did_you_mean(name, known) == hint


@pytest.mark.parametrize(("text", "network"), [
    ("10.0.0.0/8", ipaddress.ip_network("10.0.0.0/8")),
    ("10.1.2.3/32", ipaddress.ip_network("10.1.2.3/32")),
    ("0.0.0.0/0", ipaddress.ip_network("0.0.0.0/0")),
    ("2001:db8::/32", ipaddress.ip_network("2001:db8::/32")),
])
def test_parse_network_accepts_networks(text: str, network: object) -> None:
    assert parse_network(text, HERE, "p") == (network, [])


@pytest.mark.parametrize(("text", "message"), [
    ("10.0.0.0", "expected a CIDR with a prefix length such as 10.0.0.0/8, found '10.0.0.0'"),
    ("", "expected a CIDR with a prefix length such as 10.0.0.0/8, found ''"),
    ("10.0.0.0/33", "expected a CIDR such as 10.0.0.0/8, found '10.0.0.0/33'"),
    ("300.0.0.0/8", "expected a CIDR such as 10.0.0.0/8, found '300.0.0.0/8'"),
    ("10.0.0.0/x", "expected a CIDR such as 10.0.0.0/8, found '10.0.0.0/x'"),
    ("10.1.2.3/16", "expected a network address, found '10.1.2.3/16' with host bits set "
                    "(did you mean 10.1.0.0/16?)"),
    ("2001:db8::1/32", "expected a network address, found '2001:db8::1/32' with host bits "
                       "set (did you mean 2001:db8::/32?)"),
])
def test_parse_network_explains_what_is_wrong(text: str, message: str) -> None:
    network, found = parse_network(text, HERE, "spec.x")
    assert network is None
    assert [(p.location, p.path, p.severity, p.message) for p in found] == [
        (HERE, "spec.x", Severity.ERROR, message)]


# --------------------------------------------------------------------------- inventory


def test_valid_mesh_has_no_problems() -> None:
    assert problems(mesh()) == []


def test_pod_cidrs_overlap_only_across_clusters() -> None:
    same_cluster = CLUSTERS_A.replace("[10.1.0.0/16]", "[10.1.0.0/16, 10.1.128.0/17]")
    assert problems(build([domain("a", same_cluster)])) == []
    mixed = CLUSTERS_A.replace("[10.2.0.0/16]", "['fd00::/8']").replace(
        "[10.1.0.0/16]", "[10.1.0.0/16, 'fd00:1::/32']")
    assert problems(build([domain("a", mixed)])) == [
        "inventory/d0.yaml:12:18: error: expected pod CIDRs that do not overlap across clusters, "
        "found fd00::/8 of a/cl2 overlapping fd00:1::/32 of a/cl1 (inventory/d0.yaml:9)"]


def test_default_mesh_names_can_collide() -> None:
    """Domain a-b cluster c and domain a cluster b-c both default to the mesh name a-b-c."""
    first = domain("a-b", "    - name: c\n")
    second = domain("a", "    - name: b-c\n")
    assert problems(build([first, second])) == [
        "inventory/d1.yaml:7:7: error: expected Cilium cluster names unique across the mesh, "
        "found 'a-b-c' again (first at inventory/d0.yaml:7)"]


def test_default_mesh_name_longer_than_32_characters() -> None:
    assert problems(build([domain("a", f"    - name: {'c' * 30}\n")])) == []  # 32 characters
    longer = "c" * 31
    assert problems(build([domain("a", f"    - name: {longer}\n")])) == [
        f"inventory/d0.yaml:7:13: error: expected a Cilium cluster name of at most 32 "
        f"characters, found the default 'a-{longer}' (33); set meshName explicitly"]


@pytest.mark.parametrize(("ports", "words"), [
    ("[{port: 80, name: a}, {port: 80, name: b}]", "expected each port/protocol once"),
    ("[{port: 80, name: a}, {port: 81, name: a}]", "expected unique port names"),
    ("[{port: 80}, {port: 81, name: b}]", "to have a name (Kubernetes requires it)"),
])
def test_service_ports(ports: str, words: str) -> None:
    services = SERVICES_A.replace("ports: [{port: 80}]", f"ports: {ports}")
    (found,) = problems(build([domain("a", CLUSTERS_A, services), domain("b", CLUSTERS_B)]))
    assert found.startswith("inventory/d0.yaml:14:13: error: ")
    assert words in found


def test_udp_and_tcp_on_the_same_port_are_distinct() -> None:
    services = SERVICES_A.replace("ports: [{port: 80}]", "ports: [{port: 53, name: dns}, "
                                  "{port: 53, protocol: UDP, name: dns-udp}]")
    assert problems(build([domain("a", CLUSTERS_A, services), domain("b", CLUSTERS_B)])) == []


# --------------------------------------------------------------------------- requirements


def test_requirement_of_an_unknown_domain_folder() -> None:
    inventory = mesh(c=[requirement("r", egress_to("{service: web, domain: a}"))])
    assert problems(inventory) == [
        "requirements/c/r0.yaml:1:1: error: expected the folder requirements/c/ to name a "
        "domain of the inventory, found no domain 'c'"]


def test_consent_named_service_must_be_exported() -> None:
    assert problems(mesh(b=[requirement("r", egress_to("{service: web, domain: a}"))])) == []
    assert problems(mesh(b=[requirement("r", egress_to("{service: db, domain: a}"))])) == [
        "requirements/b/r0.yaml:10:11: error: expected a service exported to domain 'b', found "
        "'db' of domain 'a' (inventory/d0.yaml:20), which does not list 'b' in exportTo "
        "(exportTo is needed to call a service, not to admit it at ingress)"]


@pytest.mark.parametrize("peer", ["{service: db, domain: a}", "{service: db, domain: a, "
                                  "cluster: cl2}", "{domain: a}", "{cluster: cl2, domain: a}"])
def test_consent_is_not_needed_to_admit_at_ingress(peer: str) -> None:
    spec = egress_to(peer).replace("  egress:\n    - toEndpoints:",
                                   "  ingress:\n    - fromEndpoints:")
    assert "fromEndpoints" in spec
    assert problems(mesh(b=[requirement("r", spec)])) == []


def test_consent_wildcards_only_see_exported_services() -> None:
    inventory = mesh(b=[requirement("r", egress_to("{cluster: cl2, domain: a}"))])
    assert problems(inventory) == [
        "requirements/b/r0.yaml:10:11: warning: peer matches no service visible to domain 'b' "
        "in cluster 'cl2' of domain 'a', so it allows nothing"]
    egress = inventory.requirements[0].egress
    assert egress is not None
    assert inventory.resolve_peer(egress[0].endpoints[0].selector, "b", direction="egress") == ()


def test_export_to_everyone() -> None:
    exported = SERVICES_A.replace("      clusters: [cl2]\n", "      clusters: [cl2]\n"
                                  "      exportTo: ['*']\n")
    inventory = build([domain("a", CLUSTERS_A, exported), domain("b", CLUSTERS_B, SERVICES_B)],
                      {"b": [requirement("r", egress_to("{service: db, domain: a}"))]})
    assert problems(inventory) == []


def test_requirement_without_rules_is_a_warning() -> None:
    spec = "  endpointSelector:\n    matchLabels: {service: client}\n"
    assert problems(mesh(b=[requirement("r", spec)])) == [
        "requirements/b/r0.yaml:4:9: warning: requirement has neither egress nor ingress rules, "
        "so it restricts nothing"]


@pytest.mark.parametrize(("excepts", "expected"), [
    ("[172.0.0.0/16, 172.0.0.0/8]", []),
    ("['fd00::/8']", ["requirements/b/r0.yaml:10:40: error: expected a CIDR inside "
                      "172.0.0.0/8, found 'fd00::/8'"]),
    ("[172.0.0.1/16]", ["requirements/b/r0.yaml:10:40: error: expected a network address, "
                        "found '172.0.0.1/16' with host bits set (did you mean 172.0.0.0/16?)"]),
])
def test_cidr_except(excepts: str, expected: list[str]) -> None:
    spec = ("  endpointSelector:\n    matchLabels: {service: client}\n  egress:\n"
            f"    - toCIDRSet:\n        - {{cidr: 172.0.0.0/8, except: {excepts}}}\n")
    assert problems(mesh(b=[requirement("r", spec)])) == expected


POD_CIDR_WARNING = ("requirements/b/r0.yaml:10:18: warning: expected an address block outside "
                    "the pod networks, found {found} overlapping {what}: {shown}. Cilium never "
                    "matches pods (of any cluster of the mesh) by CIDR, so this rule reaches "
                    "none of them; to reach pods, name their service ({{service: ..., "
                    "cluster: ...}})")
CL1 = "10.1.0.0/16 of a/cl1 (inventory/d0.yaml:9)"
CL2 = "10.2.0.0/16 of a/cl2 (inventory/d0.yaml:12)"
CL3 = "10.3.0.0/16 of b/cl3 (inventory/d1.yaml:9)"


@pytest.mark.parametrize(("rule", "overlaps"), [
    ("{cidr: 10.2.0.0/16}", [CL2]),  # exactly a pod network: the user meant a service
    ("{cidr: 10.2.3.0/24}", [CL2]),  # inside one
    ("{cidr: 10.0.0.0/8}", [CL1, CL2, CL3]),  # every cluster's pods, its own included
    ("{cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.3.0.0/16]}", [CL2]),  # holes over pods
    ("{cidr: 10.0.0.0/8, except: [10.1.0.0/17]}", [CL1, CL2, CL3]),  # half a hole: overlaps
    ("{cidr: 10.4.0.0/16}", []),
    ("{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}", []),
    ("{cidr: '::/0'}", []),  # another IP version
])
def test_a_cidr_over_pod_networks_is_a_warning_naming_both_files(
        rule: str, overlaps: list[str]) -> None:
    spec = ("  endpointSelector:\n    matchLabels: {service: client}\n  egress:\n"
            f"    - toCIDRSet:\n        - {rule}\n")
    found = rule.split("cidr: ")[1].split(",")[0].strip("}'")
    what = "the pod CIDR" if len(overlaps) == 1 else f"the pod CIDRs of {len(overlaps)} clusters"
    expected = [POD_CIDR_WARNING.format(found=found, what=what, shown="; ".join(overlaps))]
    assert problems(mesh(b=[requirement("r", spec)])) == (expected if overlaps else [])


def test_a_cidr_over_pod_networks_is_found_among_many() -> None:
    """Bisection over the sorted pod networks finds exactly the overlapping ones; one warning
    a rule, however many clusters it covers."""
    networks = ipaddress.ip_network("10.0.0.0/12").subnets(new_prefix=20)
    clusters = "".join(f"    - {{name: c{i}, podCIDRs: [{net}]}}\n"
                       for i, net in enumerate(networks))
    spec = ("  endpointSelector:\n    matchLabels: {app: x}\n  egress:\n"
            "    - toCIDRSet:\n        - {cidr: 10.3.32.0/19}\n"
            "    - toCIDRSet:\n        - {cidr: 10.15.255.0/24}\n"
            "    - toCIDRSet:\n        - {cidr: 10.0.0.0/8}\n")
    inventory = build([domain("d", clusters)], {"d": [requirement("r", spec)]})
    found = [p.message.split(" overlapping ")[1].split(". Cilium")[0]
             for p in check_inventory(inventory) if "pod CIDR" in p.message]
    assert found == [
        "the pod CIDRs of 2 clusters: 10.3.32.0/20 of d/c50 (inventory/d0.yaml:57); "
        "10.3.48.0/20 of d/c51 (inventory/d0.yaml:58)",
        "the pod CIDR: 10.15.240.0/20 of d/c255 (inventory/d0.yaml:262)",
        "the pod CIDRs of 256 clusters: 10.0.0.0/20 of d/c0 (inventory/d0.yaml:7); 10.0.16.0/20 "
        "of d/c1 (inventory/d0.yaml:8); 10.0.32.0/20 of d/c2 (inventory/d0.yaml:9); and 253 "
        "more"]


def test_same_name_in_different_namespaces_is_allowed() -> None:
    first = requirement("r", egress_to("{service: web, domain: a}"))
    second = first.replace("  name: r\n", "  name: r\n  namespace: other\n").replace(
        "{service: client}", "{app: other}")
    assert problems(mesh(b=[first, second])) == []
    assert problems(mesh(b=[first, first])) == [
        "requirements/b/r1.yaml:4:9: error: expected requirement names unique per namespace in "
        "domain 'b', found 'r' again (first at requirements/b/r0.yaml:4)"]


def test_peer_wildcard_value_on_a_raw_label() -> None:
    """Reported by the structure stage, with the other rules of label values."""
    docs, _ = parse_yaml("requirements/b/r0.yaml", requirement("r", egress_to('{app: "*"}')))
    assert [str(p.location) + ": " + p.message
            for p in check_requirement_document(docs[0])[1]] == [
        "requirements/b/r0.yaml:10:30: expected a Kubernetes label value (at most 63 letters, "
        "digits, '-', '_', '.', starting and ending with a letter or digit), found '*' (only the "
        "abstract labels service and cluster take wildcards)"]


def test_peer_named_service_in_a_cluster_where_it_does_not_run() -> None:
    assert problems(mesh(b=[requirement("r", egress_to("{service: web, cluster: cl2, "
                                                       "domain: a}"))])) == [
        "requirements/b/r0.yaml:10:11: error: expected a cluster where service 'web' runs (cl1), "
        "found 'cl2'"]


def test_selector_with_the_cilium_cluster_label() -> None:
    spec = egress_to("{service: web, domain: a}").replace(
        "{service: client}", "{app: client, io.cilium.k8s.policy.cluster: cluster3}")
    assert problems(mesh(b=[requirement("r", spec)])) == [
        "requirements/b/r0.yaml:7:5: error: expected pod labels, found the Cilium cluster "
        "label 'io.cilium.k8s.policy.cluster': choose clusters with spec.clusters"]


def test_every_check_reports_instead_of_stopping() -> None:
    """Two independent problems in two requirements: both are reported."""
    inventory = mesh(b=[requirement("r", egress_to("{service: wbe, domain: a}")),
                        requirement("s", egress_to("{service: db, domain: a}"))])
    found = problems(inventory)
    assert len(found) == 2
    assert "found 'wbe' (did you mean 'web'?)" in found[0]
    assert "which does not list 'b' in exportTo" in found[1]


# --------------------------------------------------------------------------- pod CIDR sweep


_networks = st.lists(
    st.tuples(st.integers(0, 3),  # owner
              st.integers(0, 255), st.integers(0, 255),  # address bytes
              st.integers(8, 24)),  # prefix length
    max_size=25,
)


@settings(max_examples=examples(300), deadline=None)
@given(_networks)
def test_the_sweep_finds_exactly_the_overlapping_pairs_of_different_clusters(
    raw: list[tuple[int, int, int, int]],
) -> None:
    networks = [
        _PodNetwork(i, f"d/c{owner}",
                    ipaddress.ip_network(f"10.{a}.{b}.0/{prefix}", strict=False),
                    Location("f", i + 1, 1), f"p{i}")
        for i, (owner, a, b, prefix) in enumerate(raw)
    ]
    found = {frozenset((a.order, b.order)) for a, b in _overlapping_pairs(networks)}
    expected = {
        frozenset((m.order, n.order)) for m in networks for n in networks
        if m.order < n.order and m.owner != n.owner and m.network.overlaps(n.network)
    }
    assert found == expected  # exactly the pairs comparing every pair would find
