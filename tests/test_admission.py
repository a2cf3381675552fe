"""meshplan.admission: what the Kubernetes API server and the Cilium agent (1.19) accept.

The selector cases are the table of research note §1.7 (what Cilium rejects, what it accepts
but reads differently) and their variants; the name cases Kubernetes' rules per kind. The JSON
Schemas repeat the patterns for editors: they must say exactly the same.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meshplan.admission import (
    DNS1035_LABEL,
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    LABEL_VALUE,
    PORT_NAME,
    bare_key,
    label_key_problem,
    selector_problems,
    split_source,
    valid_external_name,
    valid_name,
)
from meshplan.schema import schema_text

from tests.support.ci import examples

NS_LABELS = "io.cilium.k8s.namespace.labels."


def labels(**pairs: str) -> dict[str, Any]:
    return {"matchLabels": pairs}


def key(name: str, value: str = "x") -> dict[str, Any]:
    return {"matchLabels": {name: value}}


def expression(key_: str, operator: str, values: list[Any] | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"key": key_, "operator": operator}
    if values is not None:
        item["values"] = values
    return {"matchExpressions": [item]}


# (selector, None = accepted | (words of the message, Cilium rejects the whole policy))
SELECTORS: list[Any] = [
    pytest.param(expression("tier", "In"), ("at least one value for operator In", True),
                 id="In-without-values"),
    pytest.param(expression("tier", "In", []), ("at least one value for operator In", True),
                 id="In-with-empty-values"),
    pytest.param(expression("tier", "NotIn", []), ("at least one value for operator NotIn", True),
                 id="NotIn-with-empty-values"),
    pytest.param(expression("tier", "Exists", ["a"]), ("no values for operator Exists", True),
                 id="Exists-with-values"),
    pytest.param(expression("tier", "DoesNotExist", ["a", "b"]),
                 ("no values for operator DoesNotExist, found 2", True),
                 id="DoesNotExist-with-values"),
    pytest.param(expression("tier", "DoesNotExist", []), None, id="DoesNotExist-empty-list-ok"),
    pytest.param(expression("tier", "Exists"), None, id="Exists-ok"),
    pytest.param(expression("tier", "Matches", ["a"]),
                 ("one of In, NotIn, Exists, DoesNotExist, found 'Matches'", True),
                 id="unknown-operator"),
    pytest.param({"matchExpressions": [{"operator": "Exists"}]}, ("expected a key", True),
                 id="expression-without-key"),
    pytest.param(key("-tier"), ("found '-tier'", True), id="key-starts-with-dash"),
    pytest.param(key("a/b/c"), ("more than one '/'", True), id="key-two-slashes"),
    pytest.param(key("Example.com/x"), ("prefix 'Example.com'", True), id="key-uppercase-prefix"),
    pytest.param(key("/x"), ("prefix before '/' is empty", True), id="key-empty-prefix"),
    pytest.param(key(""), ("the name is empty", True), id="key-empty"),
    pytest.param(labels(tier="a b"), ("found 'a b'", True), id="value-with-space"),
    pytest.param(labels(tier="v" * 64), ("found 'vvvv", True), id="value-64-characters"),
    pytest.param({"matchLabels": {"tier": 5}}, ("expected a text label value", True),
                 id="value-not-text"),
    pytest.param(expression("tier", "In", ["a b"]), ("found 'a b'", True),
                 id="expression-value-with-space"),
    pytest.param(expression("tier", "In", ["ok", "-bad"]), ("found '-bad'", True),
                 id="expression-second-value"),
    pytest.param(key("x" * 60), ("'any." + "x" * 60 + "', with its source), the name has 64",
                                 True), id="key-60-characters-cilium-1.19"),
    pytest.param(key("x" * 59), None, id="key-59-characters-ok"),
    pytest.param(key("k8s:" + "x" * 60), ("'k8s." + "x" * 60 + "'", True),
                 id="key-60-characters-with-source"),
    pytest.param(key("app.kubernetes.io/" + "n" * 63), None, id="key-prefix-and-63-name-ok"),
    pytest.param(key(NS_LABELS + "t" * 29), ("the name has 64 characters", True),
                 id="namespace-label-key-29"),
    pytest.param(key(NS_LABELS + "t" * 28), None, id="namespace-label-key-28-ok"),
    pytest.param(expression(NS_LABELS + "t" * 29, "Exists"), ("the name has 64 characters",
                                                              True),
                 id="namespace-label-key-29-in-expression"),
    pytest.param(key(NS_LABELS + "kubernetes.io/metadata.name"), None,
                 id="namespace-label-key-with-prefix-ok"),
    pytest.param(key("k8:app"), ("'k8:' is an unknown source", False), id="source-typo"),
    pytest.param(key("K8S:app"), ("'K8S:' is an unknown source", False), id="source-upper-case"),
    pytest.param(key("reserved:host", ""), ("a Cilium source of non-pod identities", False),
                 id="source-reserved"),
    pytest.param(expression("cidr:10.0.0.0/8", "Exists"),
                 ("a Cilium source of non-pod identities", False), id="source-cidr-expression"),
    pytest.param(key("k8s:a:b"), ("found 'k8s:a:b'", True), id="two-sources"),
    pytest.param(key(":app"), ("found ':app'", True), id="empty-source"),
    pytest.param(key("any:app"), None, id="any-source-ok"),
    pytest.param(key("k8s:io.kubernetes.pod.namespace", "ns1"), None, id="namespace-key-ok"),
    pytest.param({"matchLabel": {"app": "x"}}, ("expected matchLabels or matchExpressions", True),
                 id="typo-in-selector-field"),
    pytest.param({"matchExpressions": {"key": "a"}}, ("expected a list of expressions", True),
                 id="expressions-not-a-list"),
]


@pytest.mark.parametrize(("selector", "expected"), SELECTORS)
def test_selector_rules(selector: dict[str, Any], expected: tuple[str, bool] | None) -> None:
    found = selector_problems(selector)
    if expected is None:
        assert found == []
        return
    words, rejected = expected
    assert len(found) == 1, found
    assert words in found[0].message, found[0].message
    assert found[0].message.startswith("expected ")
    assert found[0].rejected is rejected


def test_every_problem_of_a_selector_is_reported_with_its_path() -> None:
    found = selector_problems({
        "matchLabels": {"-a": "ok", "b": "not ok"},
        "matchExpressions": [{"key": "c", "operator": "In"},
                             {"key": "d", "operator": "Exists", "values": ["x", "y z"]}]})
    assert [(p.path, p.at_key) for p in found] == [
        (("matchLabels", "-a"), True), (("matchLabels", "b"), False),
        (("matchExpressions", 0, "values"), False), (("matchExpressions", 1, "values"), False),
        (("matchExpressions", 1, "values", 1), False)]


def test_plain_keys_take_no_source() -> None:
    """Keys that are also a Service's selector (inventory pod labels) take no Cilium source."""
    [problem] = selector_problems(key("k8s:app"), plain_keys=True)
    assert problem.message.startswith("expected a Kubernetes label key")
    [problem] = selector_problems(key("x" * 60), plain_keys=True)
    assert "as Cilium 1.19 reads it" in problem.message
    assert selector_problems(key("app.kubernetes.io/name"), plain_keys=True) == []


@pytest.mark.parametrize(("written", "bare"), [
    ("app", "app"), ("k8s:app", "app"), ("any:app", "app"), ("reserved:host", None),
    ("k8:app", None), ("io.cilium.k8s.policy.cluster", "io.cilium.k8s.policy.cluster"),
    ("any:io.cilium.k8s.policy.cluster", "io.cilium.k8s.policy.cluster"),
])
def test_bare_key(written: str, bare: str | None) -> None:
    assert bare_key(written) == bare
    assert split_source(written).written == (":" in written)


NAMES = [
    (DNS1035_LABEL, "web", True), (DNS1035_LABEL, "2web", False), (DNS1035_LABEL, "Web", False),
    (DNS1035_LABEL, "web_api", False), (DNS1035_LABEL, "web-", False),
    (DNS1035_LABEL, "w" * 63, True), (DNS1035_LABEL, "w" * 64, False),
    (DNS1123_LABEL, "1ns", True), (DNS1123_LABEL, "-ns", False), (DNS1123_LABEL, "Team.A", False),
    (DNS1123_LABEL, "ns.a", False), (DNS1123_LABEL, "n" * 64, False),
    (DNS1123_SUBDOMAIN, "allow.web", True), (DNS1123_SUBDOMAIN, "allow_web", False),
    (DNS1123_SUBDOMAIN, "a..b", False), (DNS1123_SUBDOMAIN, ".".join(["a" * 63] * 4), False),
    (PORT_NAME, "http", True), (PORT_NAME, "http-2", True), (PORT_NAME, "80", False),
    (PORT_NAME, "a--b", False), (PORT_NAME, "p" * 15, True), (PORT_NAME, "p" * 16, False),
    (PORT_NAME, "-http", False), (LABEL_VALUE, "", True), (LABEL_VALUE, "A_b.c-1", True),
    (LABEL_VALUE, "a b", False),
]


@pytest.mark.parametrize(("rule", "name", "valid"), NAMES)
def test_name_rules(rule: Any, name: str, valid: bool) -> None:
    assert valid_name(rule, name) is valid


@pytest.mark.parametrize(("name", "valid"), [
    ("svc.ns.svc.cluster.local", True), ("svc.ns.svc.cluster.local.", True),
    ("svc.ns.svc.Cluster.Local", False), ("svc.ns.svc.cluster..local", False),
    ("svc.ns.svc.cluster.local..", False),
])
def test_external_names(name: str, valid: bool) -> None:
    assert valid_external_name(name) is valid


@pytest.mark.parametrize(("key_", "why"), [
    ("app", None), ("app.kubernetes.io/name", None), ("a/b/c", "more than one '/'"),
    ("k8s:app", "has a character other than"), ("n" * 64, "64 characters"),
])
def test_label_keys(key_: str, why: str | None) -> None:
    found = label_key_problem(key_)
    assert (found is None) if why is None else (found is not None and why in found)


# --------------------------------------------------------------------------- the schemas

def _defs(name: str) -> dict[str, Any]:
    defs: dict[str, Any] = json.loads(schema_text(name))["$defs"]
    return defs


@pytest.mark.parametrize(("schema", "definition", "rule"), [
    ("common", "dns1123Label", DNS1123_LABEL), ("common", "dns1035Label", DNS1035_LABEL),
    ("common", "dns1123Subdomain", DNS1123_SUBDOMAIN), ("common", "labelValue", LABEL_VALUE),
])
def test_the_schemas_say_the_same(schema: str, definition: str, rule: Any) -> None:
    found = _defs(schema)[definition]
    assert (found["pattern"], found["maxLength"]) == (f"^{rule.pattern}$", rule.max_length)
    assert found["x-expected"] == rule.expected


def test_the_port_name_schema_says_the_same() -> None:
    found = _defs("domain")["servicePort"]["properties"]["name"]
    assert (found["pattern"], found["maxLength"]) == (f"^{PORT_NAME.pattern}$",
                                                      PORT_NAME.max_length)
    assert found["x-expected"] == PORT_NAME.expected


KEY_TEXT = st.text(alphabet="aZ09-_./:k8sny", max_size=12)


@settings(max_examples=examples(300))
@given(KEY_TEXT)
def test_the_label_key_schema_agrees(text: str) -> None:
    """The schema's labelKey accepts exactly the Kubernetes label keys (short ones here)."""
    pattern = re.compile(_defs("common")["labelKey"]["pattern"])
    assert (pattern.search(text) is not None) == (label_key_problem(text) is None), text


@settings(max_examples=examples(300))
@given(st.sampled_from(["", "k8s:", "any:", "k8:", "reserved:"]), KEY_TEXT)
def test_the_selector_key_schema_is_no_stricter(source: str, text: str) -> None:
    """Every key admission accepts (with k8s:, any: or no source) passes the schema's shape;
    the schema leaves the length rule of Cilium 1.19 to admission."""
    written = source + text
    pattern = re.compile(_defs("common")["selectorKey"]["pattern"])
    accepted = not selector_problems(key(written))
    if accepted:
        assert pattern.search(written) is not None, written
    if pattern.search(written) is not None:
        assert split_source(written).source in ("k8s", "any")
