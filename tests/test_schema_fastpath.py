"""The schema stage's fast path: a compiled validator (jsonschema-rs) says "valid" first.

Only documents it does not call valid go through jsonschema, which words the diagnostics. These
tests prove the two agree: random mutations of the example documents get the same
valid/invalid verdict from both, for every schema (tests/test_rust_regex.py proves the
patterns mean the same in both regex dialects).
"""

from __future__ import annotations

import copy
import datetime
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from meshplan import schema
from meshplan.load.document import Document
from meshplan.load.parse import parse_json_like, parse_yaml

from tests.support.ci import examples
from tests.support.repos import REPO_ROOT
from tests.support.strategies import ALPHABET

rs = pytest.importorskip("jsonschema_rs")


def _load(relpath: str) -> list[Document]:
    text = (REPO_ROOT / relpath).read_text("utf-8")
    parser = parse_json_like if relpath.endswith(".json") else parse_yaml
    docs, problems = parser(relpath, text)
    assert not problems, problems
    return docs


def _examples() -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {"domain": [], "requirement": [], "domain-request": [],
                                   "gitops": [], "mesh": []}
    schema_of = {"GitOps": "gitops", "Mesh": "mesh"}
    roots = [REPO_ROOT, *sorted((REPO_ROOT / "examples").glob("*/"))]  # the bundled examples
    for root in roots:
        for path in sorted((root / "inventory").glob("*.yaml")):
            for doc in _load(str(path.relative_to(REPO_ROOT))):
                found[schema_of.get(doc.data.get("kind"), "domain")].append(doc.data)
        for path in sorted((root / "requirements").glob("*/*.yaml")):
            found["requirement"].extend(d.data for d in _load(str(path.relative_to(REPO_ROOT))))
    for path in sorted((REPO_ROOT / "tests/fixtures/thesis").glob("*/inventory/*.json")):
        found["domain-request"].extend(d.data for d in _load(str(path.relative_to(REPO_ROOT))))
    return found


EXAMPLES = _examples()
SCHEMAS = sorted(EXAMPLES)


def slow_verdict(name: str, data: Any) -> bool:
    return bool(schema._validator(name).is_valid(data))


# --------------------------------------------------------------------------- the examples


def test_every_schema_has_examples() -> None:
    assert all(EXAMPLES[name] for name in SCHEMAS), {k: len(v) for k, v in EXAMPLES.items()}
    assert set(SCHEMAS) == set(schema.SCHEMA_FILES) - {"common"}


@pytest.mark.parametrize("name", SCHEMAS)
def test_the_bundled_examples_are_valid_under_both(name: str) -> None:
    for data in EXAMPLES[name]:
        assert slow_verdict(name, data)
        assert schema.fast_validator(name).is_valid(data)
        assert schema.fast_is_valid(name, data)


@pytest.mark.parametrize("name", SCHEMAS)
def test_a_known_invalid_document_is_invalid_under_both(name: str) -> None:
    data = copy.deepcopy(EXAMPLES[name][0])
    data["unknownKey"] = 1
    assert not slow_verdict(name, data)
    assert not schema.fast_validator(name).is_valid(data)
    assert not schema.fast_is_valid(name, data)


@pytest.mark.parametrize(("name", "path", "value"), [
    ("domain", ("metadata", "name"), "domain1\n"),  # Python's $ matches before a final \n
    ("domain", ("metadata", "name"), "domain1\n\n"),
    ("domain", ("metadata", "name"), "Domain1"),
    ("domain-request", ("services", 0, "port"), "TCP:\x1c80"),  # \x1c is \s in Python only
    ("domain-request", ("services", 0, "port"), "TCP:\x8580"),  # \x85: not \s in ECMA
    ("domain-request", ("services", 0, "port"), "TCP:\u3000 80\n"),
    ("gitops", ("spec", "branch"), "main.lock\n"),
    ("gitops", ("spec", "branch"), "main\n"),
    ("gitops", ("spec", "repoURL"), "https://host/\u2028path"),
    ("gitops", ("spec", "repoURL"), "https://tok@host/path"),
])
def test_dialect_corner_cases_agree(name: str, path: tuple[Any, ...], value: Any) -> None:
    data = copy.deepcopy(EXAMPLES[name][0])
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert schema.fast_is_valid(name, data) == slow_verdict(name, data)


@pytest.mark.parametrize("name_value", ["\ud800", "a\udfff", "web"])
def test_lone_surrogates_do_not_break_the_fast_path(name_value: str) -> None:
    data = copy.deepcopy(EXAMPLES["domain"][0])
    data["metadata"]["annotations"] = {"x": "\ud800", "\udc00": "y"}
    data["metadata"]["name"] = name_value
    fast = schema.fast_is_valid("domain", data)  # no crash, and never a wrong "valid"
    assert not fast or slow_verdict("domain", data)


@pytest.mark.parametrize("value", [
    datetime.date(2024, 1, 1),  # YAML timestamps
    b"bytes",  # YAML !!binary
    {1: "a"},  # a key that is not a text
    [("a", "b")],  # YAML !!pairs: jsonschema-rs would take the tuple for a list
])
def test_what_jsonschema_rs_cannot_take_goes_to_jsonschema(value: Any) -> None:
    data = copy.deepcopy(EXAMPLES["domain"][0])
    data["metadata"]["annotations"] = {"x": value}
    assert not schema.fast_is_valid("domain", data)
    assert slow_verdict("domain", data) is False


def test_without_jsonschema_rs_the_diagnostics_are_the_same(
        monkeypatch: pytest.MonkeyPatch) -> None:
    documents = []
    for name in SCHEMAS:
        for data in EXAMPLES[name]:
            bad = copy.deepcopy(data)
            bad["extra"] = True
            bad.setdefault("metadata", {})["name"] = "Not A Label\n"
            documents += [(name, data), (name, bad)]
    kinds = {k.schema: k for k in (schema.DOMAIN, schema.REQUIREMENT, schema.DOMAIN_REQUEST,
                                   schema.GITOPS, schema.MESH)}

    def diagnostics() -> list[list[str]]:
        return [[str(d) for d in schema.schema_diagnostics(Document("x.yaml", 0, data, {}),
                                                           kinds[name])]
                for name, data in documents]

    fast = diagnostics()
    calls: list[str] = []
    monkeypatch.setattr(schema, "fast_validator", lambda name: calls.append(name))
    monkeypatch.setattr(schema, "FAST_VALIDATOR_MODULE", None)
    assert diagnostics() == fast
    assert not calls
    assert [bool(d) for d in fast] == [False, True] * (len(documents) // 2)


# --------------------------------------------------------------------------- documents


KEYS = sorted({"name", "domain", "port", "ports", "protocol", "selector", "clusters", "services",
               "links", "context", "namespace", "matchLabels", "matchExpressions", "key",
               "operator", "values", "toEndpoints", "toCIDRSet", "toPorts", "fromEndpoints",
               "cidr", "except", "egress", "ingress", "spec", "metadata", "labels",
               "annotations", "gitops", "meshId", "meshName", "exportTo", "repoURL", "branch",
               "flux", "argocd", "interval", "servicesMap", "cilium_cluster", "x-expected"})
SCALARS = st.one_of(
    st.text(ALPHABET, max_size=10), st.text(max_size=10), st.sampled_from(["*", "", "TCP"]),
    st.integers(min_value=-3, max_value=70_000), st.integers(), st.sampled_from(
        [0, 1, 255, 256, 65535, 65536, 2**63, 2**64, -2**63 - 1, 1.0, 80.0, 1.5, math.nan,
         math.inf]),
    st.booleans(), st.none())
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)),
    max_leaves=6)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*path, i))
    return found


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def _perturb(text: str, data: st.DataObject) -> str:
    at = data.draw(st.integers(0, len(text)))
    how = data.draw(st.sampled_from(["insert", "replace", "append-newline", "drop", "double"]))
    char = data.draw(ALPHABET)
    if how == "insert":
        return text[:at] + char + text[at:]
    if how == "replace":
        return text[:at] + char + text[at + 1:]
    if how == "append-newline":
        return text + data.draw(st.sampled_from(["\n", "\n\n", "\r", "\r\n", " \n"]))
    if how == "drop":
        return text[:at] + text[at + 1:]
    return text + text


def _mutate(doc: Any, data: st.DataObject) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = data.draw(st.sampled_from(paths))
        target = _get(doc, path)
        parent = _get(doc, path[:-1]) if path else None
        op = data.draw(st.sampled_from(["replace", "perturb", "drop", "add", "nest"]))
        if op == "perturb" and isinstance(target, str) and parent is not None:
            parent[path[-1]] = _perturb(target, data)
        elif op == "replace" and parent is not None:
            parent[path[-1]] = data.draw(VALUES)
        elif op == "drop" and isinstance(parent, dict | list):
            del parent[path[-1]]
        elif op == "add" and isinstance(target, dict):
            target[data.draw(st.one_of(st.sampled_from(KEYS), st.text(ALPHABET, max_size=6)))
                   ] = data.draw(VALUES)
        elif op == "add" and isinstance(target, list):
            target.append(copy.deepcopy(data.draw(st.sampled_from(target))) if target
                          else data.draw(VALUES))
        elif op == "nest" and parent is not None:
            parent[path[-1]] = data.draw(st.sampled_from([[target], {"name": target}, []]))
    return doc


DOCUMENT_EXAMPLES = 400


@pytest.mark.slow
@pytest.mark.parametrize("name", SCHEMAS)
@settings(max_examples=examples(DOCUMENT_EXAMPLES), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_mutated_documents_get_the_same_verdict(name: str, data: st.DataObject) -> None:
    document = _mutate(data.draw(st.sampled_from(EXAMPLES[name])), data)
    slow = slow_verdict(name, document)
    event(f"{name}: {'valid' if slow else 'invalid'}")
    try:
        raw = schema.fast_validator(name).is_valid(document)
    except (ValueError, UnicodeError):  # not representable in Rust: jsonschema decides
        event(f"{name}: not representable")
        raw = False
    assert schema.fast_is_valid(name, document) == raw == slow, document
