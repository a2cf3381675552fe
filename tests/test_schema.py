"""Stage schema: structure against the shipped JSON Schemas, worded "expected X, found Y"."""

from __future__ import annotations

import datetime
import json

import jsonschema
import pytest
from meshplan.diagnostics import Diagnostic
from meshplan.load.document import Document
from meshplan.load.parse import parse_json_like, parse_yaml
from meshplan.schema import (
    DOMAIN,
    DOMAIN_REQUEST,
    REQUIREMENT,
    SCHEMA_FILES,
    check_inventory_document,
    check_requirement_document,
    describe,
    schema_text,
)

DOMAIN_DOC = """\
apiVersion: meshplan.dev/v1alpha1
kind: Domain
metadata:
  name: d1
spec:
  clusters:
    - name: cl1
      meshId: 1
  services:
    - name: web
      namespace: shop
      selector: {app: web}
      ports: [{port: 80}]
      clusters: [cl1]
"""

REQUIREMENT_DOC = """\
apiVersion: meshplan.dev/v1alpha1
kind: Requirement
metadata:
  name: web
  annotations: {example.com/owner: team}
spec:
  endpointSelector:
    matchLabels: {service: web}
  egress:
    - toEndpoints:
        - matchLabels: {service: "*"}
"""

DOMAIN_REQUEST_DOC = """\
{
  "domain": {"name": "d1", "links": ["x"]},
  "clusters": [
    {"domain": null, "name": "cl1", "cilium_cluster": "c1", "context": "kind-c1"}
  ],
  "services": [
    {"name": "web", "domain": "d1", "namespace": "shop", "selector": "app: web, tier:front",
     "port": "TCP:80"}
  ],
  "servicesMap": {"web": ["cl1"]}
}
"""


def parse(text: str, relpath: str) -> Document:
    parser = parse_json_like if relpath.endswith(".json") else parse_yaml
    docs, problems = parser(relpath, text)
    assert problems == []
    (doc,) = docs
    return doc


def shown(problems: list[Diagnostic]) -> list[str]:
    return [f"{p.location}: {p.path}: {p.severity.value}: {p.message}" for p in problems]


def inventory(text: str, relpath: str = "inventory/d.yaml") -> list[str]:
    return shown(check_inventory_document(parse(text, relpath))[1])


def requirement(text: str) -> list[str]:
    return shown(check_requirement_document(parse(text, "requirements/d1/r.yaml"))[1])


# --------------------------------------------------------------------------- describe


@pytest.mark.parametrize(("value", "words"), [
    (None, "nothing (null)"),
    (True, "the boolean true"),
    (False, "the boolean false"),
    (0, "the number 0"),
    (1.5, "the number 1.5"),
    (10**70, "the number " + "1" + "0" * 56 + "..."),
    ("", "an empty text"),
    ("cl1", "'cl1'"),
    ("x" * 60, "'" + "x" * 60 + "'"),
    ("x" * 61, "'" + "x" * 57 + "...'"),
    ({}, "an empty mapping"),
    ({"a": 1}, "a mapping"),
    ([], "an empty list"),
    ([1], "a list"),
    (datetime.date(2024, 1, 2), "a date (2024-01-02)"),
    (b"x" * 100, "a bytes (b'" + "x" * 55 + "...)"),
])
def test_describe(value: object, words: str) -> None:
    assert describe(value) == words


# --------------------------------------------------------------------------- the schemas


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_shipped_schemas_are_valid_json_schemas(name: str) -> None:
    schema = json.loads(schema_text(name))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == f"https://meshplan.dev/schemas/{name}.schema.json"


def test_valid_documents_have_no_problems() -> None:
    assert check_inventory_document(parse(DOMAIN_DOC, "inventory/d.yaml")) == (DOMAIN, [])
    assert check_requirement_document(parse(REQUIREMENT_DOC, "requirements/d1/r.yaml")) == (
        REQUIREMENT, [])


# --------------------------------------------------------------------------- wording, positions


def test_unknown_key_lists_the_known_keys_and_suggests_a_near_miss() -> None:
    text = DOMAIN_DOC.replace("      meshId: 1\n", "      meshId: 1\n      podCIRDs: []\n"
                                                   "      colour: red\n")
    assert inventory(text) == [
        "inventory/d.yaml:9:7: spec.clusters[0].podCIRDs: error: expected one of the keys "
        "clusterDomain, clustermesh, gitops, istio, meshId, meshName, name, observability, "
        "podCIDRs; found the unknown key 'podCIRDs' (did you mean 'podCIDRs'?)",
        "inventory/d.yaml:10:7: spec.clusters[0].colour: error: expected one of the keys "
        "clusterDomain, clustermesh, gitops, istio, meshId, meshName, name, observability, "
        "podCIDRs; found the unknown key 'colour'",
    ]


def test_missing_key_is_reported_at_its_mapping() -> None:
    assert inventory(DOMAIN_DOC.replace("      namespace: shop\n", "")) == [
        "inventory/d.yaml:10:7: spec.services[0]: error: expected the key 'namespace', found "
        "it missing"]


def test_x_expected_words_the_expectation() -> None:
    assert inventory(DOMAIN_DOC.replace("meshId: 1", "meshId: one")) == [
        "inventory/d.yaml:8:15: spec.clusters[0].meshId: error: expected a Cilium cluster id "
        "from 1 to 255 (up to 511 with a Mesh document setting maxConnectedClusters: 511), "
        "found 'one'"]


def test_type_words_without_x_expected() -> None:
    assert inventory(DOMAIN_DOC.replace("metadata:\n  name: d1\n", "metadata: [d1]\n")) == [
        "inventory/d.yaml:3:11: metadata: error: expected a mapping, found a list"]


def test_bad_label_key_is_reported_at_the_key() -> None:
    text = DOMAIN_DOC.replace("selector: {app: web}", "selector: {app: web, bad key: x}")
    assert inventory(text) == [
        "inventory/d.yaml:12:28: spec.services[0].selector.bad key: error: expected a Kubernetes "
        "label key ([prefix/]name, name at most 63 characters of letters, digits, '-', '_', '.'), "
        "found key 'bad key'"]


# --------------------------------------------------------------------------- kinds


@pytest.mark.parametrize(("text", "expected"), [
    ("- a\n", "inventory/d.yaml:1:1: : error: expected a mapping (a Domain document), found a "
              "list"),
    ("kind: Domian\n", "inventory/d.yaml:1:7: kind: error: expected kind Domain, found 'Domian'"),
    ("name: x\n", "inventory/d.yaml:1:1: kind: error: expected kind Domain, found nothing (null)"),
    ("kind: CiliumNetworkPolicy\n", "inventory/d.yaml:1:7: kind: error: expected kind Domain "
                                    "in inventory/, found a requirement: move it to "
                                    "requirements/<domain>/"),
])
def test_inventory_kinds(text: str, expected: str) -> None:
    kind, problems = check_inventory_document(parse(text, "inventory/d.yaml"))
    assert kind is None
    assert shown(problems) == [expected]


def test_json_in_inventory_is_a_domain_request_whatever_it_says() -> None:
    kind, problems = check_inventory_document(parse('{"kind": "Domain"}', "inventory/d.json"))
    assert kind is DOMAIN_REQUEST
    assert shown(problems) == [
        "inventory/d.json:1:1: : error: expected the key 'domain', found it missing",
        "inventory/d.json:1:2: kind: error: expected one of the keys clusters, domain, services, "
        "servicesMap; found the unknown key 'kind'"]


def test_domain_in_requirements_is_sent_to_inventory() -> None:
    kind, problems = check_requirement_document(parse(DOMAIN_DOC, "requirements/d1/r.yaml"))
    assert kind is None
    assert shown(problems) == [
        "requirements/d1/r.yaml:2:7: kind: error: expected a Requirement in requirements/, found "
        "kind Domain: move it to inventory/"]


def test_unknown_meshplan_annotation() -> None:
    text = REQUIREMENT_DOC.replace("example.com/owner", "meshplan.dev/cluster")
    assert requirement(text) == [
        "requirements/d1/r.yaml:5:17: metadata.annotations.meshplan.dev/cluster: error: expected "
        "one of the annotations meshplan.dev/clusters; found the unknown annotation "
        "'meshplan.dev/cluster' (did you mean 'meshplan.dev/clusters'?)"]


# --------------------------------------------------------------------------- DomainRequest


def test_domain_request_notices_for_ignored_fields() -> None:
    kind, problems = check_inventory_document(parse(DOMAIN_REQUEST_DOC, "inventory/d.json"))
    assert kind is DOMAIN_REQUEST
    assert shown(problems) == [
        "inventory/d.json:2:28: domain.links: notice: 'links' has no meaning in meshplan and is "
        "ignored (clusters are reached by GitOps, not by kube contexts)",
        "inventory/d.json:4:61: clusters[0].context: notice: 'context' has no meaning in "
        "meshplan and is ignored (clusters are reached by GitOps, not by kube contexts)"]


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('"port": "TCP:80"', '"port": "TCP:65536"',
     "inventory/d.json:8:14: services[0].port: error: expected a port number from 1 to 65535, "
     "found 'TCP:65536'"),
    ('tier:front"', 'tier:Front$"',
     "inventory/d.json:7:70: services[0].selector: error: expected a Kubernetes label value (at "
     "most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit), found "
     "'Front$'"),
    ('"app: web', '"-app: web',
     "inventory/d.json:7:70: services[0].selector: error: expected a Kubernetes label key "
     "([prefix/]name: a lowercase DNS subdomain prefix of at most 253 characters, a name of at "
     "most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit), found "
     "'-app': the name '-app' has a character other than letters, digits, '-', '_', '.' or does "
     "not start and end with a letter or digit"),
    ('"app: web', '"' + "a" * 60 + ': web',
     "inventory/d.json:7:70: services[0].selector: error: expected a Cilium selector key: "
     "[k8s: or any:]label key, where the label key is [prefix/]name, the prefix a lowercase DNS "
     "subdomain and the name at most 63 letters, digits, '-', '_', '.' counting Cilium's source "
     "(so at most 59 without a prefix), found '" + "a" * 60 + "': as Cilium 1.19 reads it "
     "('any." + "a" * 60 + "', with its source), the name has 64 characters (at most 63)"),
    ('"domain": "d1"', '"domain": "d2"',
     "inventory/d.json:7:31: services[0].domain: error: expected the domain's name 'd1' or "
     "null, found 'd2'"),
    ('{"web": ["cl1"]}', '{"web": ["cl1"], "wbe": []}',
     "inventory/d.json:10:35: servicesMap.wbe: error: expected the name of a service listed in "
     "services, found 'wbe' (did you mean 'web'?)"),
])
def test_domain_request_rules_beyond_the_schema(old: str, new: str, expected: str) -> None:
    assert DOMAIN_REQUEST_DOC.count(old) == 1
    problems = inventory(DOMAIN_REQUEST_DOC.replace(old, new), "inventory/d.json")
    assert [p for p in problems if ": error: " in p] == [expected]


def test_domain_request_rules_wait_for_a_schema_valid_document() -> None:
    text = DOMAIN_REQUEST_DOC.replace('"TCP:80"', '"TCP:x"').replace('{"web": ["cl1"]}',
                                                                      '{"wbe": ["cl1"]}')
    errors = [p for p in inventory(text, "inventory/d.json") if ": error: " in p]
    assert errors == ['inventory/d.json:8:14: services[0].port: error: expected a port written '
                      '"PROTOCOL:NUMBER", e.g. "TCP:80", found \'TCP:x\'']
