"""Stage 2 — schema: check each document's structure against the shipped JSON Schemas.

The schemas in ``meshplan/schemas/`` are the single source of truth: editors use them through
``# yaml-language-server: $schema=...`` and this module validates with them. Each schema error
becomes a diagnostic located at the offending key or value, worded as "expected X, found Y"
(``x-expected`` in a schema gives the human wording of X).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .admission import LABEL_VALUE, SelectorProblem, selector_problems
from .diagnostics import Diagnostic, error, notice
from .load.document import Document, PathKey, format_path
from .rust_regex import rust_dialect
from .vocabulary import (
    ABSTRACT_KEYS,
    CLUSTERS_ANNOTATION,
    POLICY_KINDS,
    REQUIREMENT_ANNOTATIONS,
    WILDCARD,
)

if TYPE_CHECKING:  # jsonschema is imported only when a document is invalid (start-up time)
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

SCHEMA_FILES = ("common", "domain", "requirement", "domain-request", "gitops", "mesh")
SCHEMA_URL = "https://meshplan.dev/schemas/{name}.schema.json"


@dataclass(frozen=True)
class DocumentKind:
    """What a document claims to be, decided from its file and its apiVersion/kind."""

    name: str  # "Domain", "DomainRequest", "Requirement" or "" (unknown)
    schema: str  # schema file stem


DOMAIN = DocumentKind("Domain", "domain")
DOMAIN_REQUEST = DocumentKind("DomainRequest", "domain-request")
REQUIREMENT = DocumentKind("Requirement", "requirement")
GITOPS = DocumentKind("GitOps", "gitops")
MESH = DocumentKind("Mesh", "mesh")
REQUIREMENT_KINDS = ("Requirement", *POLICY_KINDS)


SCHEMA_DIR = Path(__file__).parent / "schemas"  # package data (pyproject.toml), beside us


@cache
def schema_text(name: str) -> str:
    """The text of a shipped schema (``name`` without ``.schema.json``).

    Read beside this module rather than through importlib.resources, whose import (tempfile,
    shutil, zipfile) costs more than the read; meshplan is never imported from a zip.
    """
    return (SCHEMA_DIR / f"{name}.schema.json").read_text("utf-8")


def close_matches(word: str, candidates: Iterable[str]) -> list[str]:
    """The one candidate closest to a misspelt ``word`` (difflib, imported when needed)."""
    import difflib

    return difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)


@cache
def _validator(name: str) -> Validator:
    """The jsonschema validator of schema ``name``, which words the located diagnostics.

    Imported here, not at module level: jsonschema and referencing take about as long to
    import as click, and the fast path below decides alone for valid documents.
    """
    import jsonschema
    from referencing import Registry, Resource

    resources_ = [
        (SCHEMA_URL.format(name=n), Resource.from_contents(json.loads(schema_text(n))))
        for n in SCHEMA_FILES
    ]
    registry: Registry[Any] = Registry().with_resources(resources_)
    schema = json.loads(schema_text(name))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, registry=registry)


# --------------------------------------------------------------------------- fast path
#
# Most documents are valid, and jsonschema (pure Python, ``$ref``s resolved through
# ``referencing`` at every use) is slow. A compiled validator (jsonschema-rs) first decides
# whether a document is valid; only an invalid one goes through jsonschema, which words the
# located diagnostics. The compiled validator sees a copy of the schemas whose ``pattern``s are
# rewritten to mean in Rust what they mean in Python (meshplan.rust_regex).


def _import_fast_validator() -> Any:
    try:
        return importlib.import_module("jsonschema_rs")
    except ImportError:
        return None


#: The jsonschema_rs module, or None: then every document goes through jsonschema alone.
FAST_VALIDATOR_MODULE: Any = _import_fast_validator()


@cache
def _rust_schemas() -> dict[str, Any]:
    """Every shipped schema in Rust's regex dialect, rewritten once for all validators."""
    return {n: rust_dialect(json.loads(schema_text(n))) for n in SCHEMA_FILES}


@cache
def _rust_registry() -> Any:
    rs = FAST_VALIDATOR_MODULE
    return rs.Registry([(SCHEMA_URL.format(name=n), s) for n, s in _rust_schemas().items()])


@cache
def fast_validator(name: str) -> Any:
    """The compiled jsonschema-rs validator of schema ``name`` (needs FAST_VALIDATOR_MODULE)."""
    rs = FAST_VALIDATOR_MODULE
    return rs.validator_for(_rust_schemas()[name], registry=_rust_registry(),
                            pattern_options=rs.FancyRegexOptions())


def fast_is_valid(name: str, data: Any) -> bool:
    """True only if ``data`` is certainly valid under schema ``name``; False means "ask jsonschema".

    Values jsonschema-rs cannot take (non-text keys, dates, lone surrogates, ...) raise there,
    and tuples (YAML ``!!pairs``) it would take for lists, which jsonschema does not: both are
    left to jsonschema.
    """
    if FAST_VALIDATOR_MODULE is None or _has_tuple(data):
        return False
    try:
        return bool(fast_validator(name).is_valid(data))
    except Exception:
        return False


def _has_tuple(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(v for v in item.values() if isinstance(v, dict | list | tuple))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list | tuple))
        elif isinstance(item, tuple):
            return True
    return False


def check_inventory_document(doc: Document) -> tuple[DocumentKind | None, list[Diagnostic]]:
    """Validate an inventory document; return its kind (None if unusable) and problems."""
    if not isinstance(doc.data, dict):
        return None, [error(doc.location(), "", "expected a mapping (a Domain document), found "
                            f"{describe(doc.data)}")]
    kind = inventory_kind(doc)
    if kind is None:
        if doc.data.get("kind") in REQUIREMENT_KINDS:
            return None, [error(doc.location(("kind",)), "kind", "expected kind Domain in "
                                "inventory/, found a requirement: move it to "
                                "requirements/<domain>/")]
        return None, [error(doc.location(("kind",)), "kind", "expected kind Domain, found "
                            f"{describe(doc.data.get('kind'))}")]
    problems = list(schema_diagnostics(doc, kind))
    if kind is DOMAIN_REQUEST and not problems:
        problems.extend(domain_request_diagnostics(doc))
    if kind is DOMAIN:
        problems.extend(admission_diagnostics(doc, _service_selectors(doc.data), problems))
    problems.extend(ignored_field_notices(doc, kind))
    return kind, problems


_INVENTORY_KINDS = {"Domain": DOMAIN, "GitOps": GITOPS, "Mesh": MESH}


def inventory_kind(doc: Document) -> DocumentKind | None:
    """The kind of an inventory document (None: not one; :func:`check_inventory_document`
    says why). Alone, without the checks, for a document the render cache knows to be valid
    (the same bytes passed them with no diagnostic)."""
    if not isinstance(doc.data, dict):
        return None
    if doc.file.endswith(".json"):
        return DOMAIN_REQUEST
    kind = doc.data.get("kind")
    return _INVENTORY_KINDS.get(kind) if isinstance(kind, str) else None


def check_requirement_document(doc: Document) -> tuple[DocumentKind | None, list[Diagnostic]]:
    if not isinstance(doc.data, dict):
        return None, [error(doc.location(), "", "expected a mapping (a Requirement document), "
                            f"found {describe(doc.data)}")]
    if doc.data.get("kind") == "Domain":
        return None, [error(doc.location(("kind",)), "kind", "expected a Requirement in "
                            "requirements/, found kind Domain: move it to inventory/")]
    problems = list(schema_diagnostics(doc, REQUIREMENT))
    problems.extend(_meshplan_annotation_problems(doc))
    problems.extend(admission_diagnostics(doc, _requirement_selectors(doc.data), problems))
    return REQUIREMENT, problems


def schema_diagnostics(doc: Document, kind: DocumentKind) -> Iterator[Diagnostic]:
    if fast_is_valid(kind.schema, doc.data):
        return
    validator = _validator(kind.schema)
    for err in validator.iter_errors(doc.data):
        yield from _explain(doc, err)


def _meshplan_annotation_problems(doc: Document) -> Iterator[Diagnostic]:
    """A misspelt ``meshplan.dev/...`` annotation would silently widen a requirement's scope."""
    metadata = doc.data.get("metadata") if isinstance(doc.data, dict) else None
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if not isinstance(annotations, dict):
        return
    for key in annotations:
        if str(key).startswith("meshplan.dev/") and key not in REQUIREMENT_ANNOTATIONS:
            hint = close_matches(str(key), REQUIREMENT_ANNOTATIONS)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            path: PathKey = ("metadata", "annotations", key)
            yield error(doc.key_location(path), format_path(path), "expected one of the "
                        f"annotations {', '.join(REQUIREMENT_ANNOTATIONS)}; found the unknown "
                        f"annotation '{key}'{suggestion}")
    if CLUSTERS_ANNOTATION in annotations:
        yield from _clusters_annotation_problems(doc, annotations[CLUSTERS_ANNOTATION])


def _clusters_annotation_problems(doc: Document, value: Any) -> Iterator[Diagnostic]:
    """The thesis form's scope: one written scope, a list of names with none left empty."""
    path: PathKey = ("metadata", "annotations", CLUSTERS_ANNOTATION)
    spec = doc.data.get("spec")
    if isinstance(spec, dict) and "clusters" in spec:
        yield error(doc.key_location(path), format_path(path), "expected the clusters either "
                    f"in spec.clusters or in the annotation {CLUSTERS_ANNOTATION}, found both "
                    "(one would be ignored): keep one")
    if not isinstance(value, str):
        return  # the schema words it
    names = [name.strip() for name in value.split(",")]
    if not any(names):
        yield error(doc.location(path), format_path(path), "expected at least one cluster "
                    "name, found none")
    elif not all(names):
        yield error(doc.location(path), format_path(path), "expected cluster names separated "
                    f"by single commas, found an empty name in '{value}'")


def domain_request_diagnostics(doc: Document) -> Iterator[Diagnostic]:
    """What the DomainRequest schema cannot say (run on schema-valid documents only).

    Port numbers in range, selector labels that Kubernetes accepts, ``domain`` fields that agree
    with the document's domain, and ``servicesMap`` keys that name a service of the document.
    """
    data = doc.data
    name = data["domain"]["name"]
    for section in ("clusters", "services"):
        for i, item in enumerate(data.get(section) or []):
            if item.get("domain") not in (None, name):
                path: PathKey = (section, i, "domain")
                yield error(doc.location(path), format_path(path), f"expected the domain's "
                            f"name '{name}' or null, found {describe(item['domain'])}")
    services = data.get("services") or []
    for i, service in enumerate(services):
        port = int(service["port"].partition(":")[2])
        if not 1 <= port <= 65535:
            path = ("services", i, "port")
            yield error(doc.location(path), format_path(path), "expected a port number from 1 "
                        f"to 65535, found {describe(service['port'])}")
        path = ("services", i, "selector")
        pairs = (pair.split(":", 1) for pair in service["selector"].split(","))
        labels = {key.strip(): value.strip() for key, value in pairs}
        for problem in selector_problems({"matchLabels": labels}, plain_keys=True):
            yield error(doc.location(path), format_path(path), problem.message)
    services_map = data.get("servicesMap")
    known = [s["name"] for s in services]
    for key in services_map if isinstance(services_map, dict) else ():
        if key not in known:
            hint = close_matches(str(key), known)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            path = ("servicesMap", key)
            yield error(doc.key_location(path), format_path(path), "expected the name of a "
                        f"service listed in services, found '{key}'{suggestion}")


# --------------------------------------------------------------------------- admission
#
# What the JSON Schemas cannot say about selectors, checked with the rules the Kubernetes API
# server and the Cilium agent apply (meshplan.admission): operators and their values, and keys
# as Cilium 1.19 reads them (with their source). The schemas already refuse keys and values of
# the wrong shape; a problem at a path the schema reported is not repeated.

# (where, the selector, whether it is a bare label mapping written without ``matchLabels``)
Selectors = Iterator[tuple[PathKey, Any, bool]]


def admission_diagnostics(doc: Document, selectors: Selectors,
                          reported: Iterable[Diagnostic]) -> Iterator[Diagnostic]:
    seen = {d.path for d in reported}
    for path, data, bare in selectors:
        for problem in selector_problems({"matchLabels": data} if bare else data,
                                         plain_keys=bare):
            inner = problem.path[1:] if bare else problem.path
            yield from _admission_diagnostic(doc, (*path, *inner), problem, seen)


def _admission_diagnostic(doc: Document, path: PathKey, problem: SelectorProblem,
                          seen: set[str]) -> Iterator[Diagnostic]:
    where = format_path(path)
    if where in seen:
        return
    message = problem.message
    if message.endswith(f"found '{WILDCARD}'") and LABEL_VALUE.expected in message:
        message += " (only the abstract labels service and cluster take wildcards)"
    location = doc.key_location(path) if problem.at_key else doc.location(path)
    yield error(location, where, message)


def _requirement_selectors(data: Any) -> Selectors:
    """Every raw pod-label selector of a requirement (abstract peers are the checker's)."""
    spec = data.get("spec") if isinstance(data, dict) else None
    if not isinstance(spec, dict):
        return
    if _is_raw(spec.get("endpointSelector")):
        yield ("spec", "endpointSelector"), spec["endpointSelector"], False
    for direction, key in (("egress", "toEndpoints"), ("ingress", "fromEndpoints")):
        rules = spec.get(direction)
        for i, rule in enumerate(rules if isinstance(rules, list) else ()):
            peers = rule.get(key) if isinstance(rule, dict) else None
            for j, peer in enumerate(peers if isinstance(peers, list) else ()):
                if _is_raw(peer):
                    yield ("spec", direction, i, key, j), peer, False


def _is_raw(selector: Any) -> bool:
    if not isinstance(selector, dict):
        return False
    labels = selector.get("matchLabels")
    return not (isinstance(labels, dict) and any(k in ABSTRACT_KEYS for k in labels))


def _service_selectors(data: Any) -> Selectors:
    """Every inventory service's pod labels, as the peer selector they become."""
    spec = data.get("spec") if isinstance(data, dict) else None
    services = spec.get("services") if isinstance(spec, dict) else None
    for i, service in enumerate(services if isinstance(services, list) else ()):
        selector = service.get("selector") if isinstance(service, dict) else None
        if isinstance(selector, dict):
            yield ("spec", "services", i, "selector"), selector, True


def ignored_field_notices(doc: Document, kind: DocumentKind) -> Iterator[Diagnostic]:
    """Fields the import form accepts but that mean nothing here are reported, not dropped."""
    if kind is not DOMAIN_REQUEST or not isinstance(doc.data, dict):
        return
    for path, key in _ignored_paths(doc.data):
        yield notice(doc.key_location(path), format_path(path),
                     f"'{key}' has no meaning in meshplan and is ignored "
                     "(clusters are reached by GitOps, not by kube contexts)")


def _ignored_paths(data: Mapping[str, Any]) -> Iterator[tuple[PathKey, str]]:
    domain = data.get("domain")
    if isinstance(domain, dict) and domain.get("links"):
        yield ("domain", "links"), "links"
    for section in ("clusters", "services"):
        items = data.get(section)
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            for key in ("context", "links"):
                if item.get(key):
                    yield (section, i, key), key


# --------------------------------------------------------------------------- wording


def describe(value: Any) -> str:
    """How a found value is named in messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {_shorten(str(value))}"
    if isinstance(value, str):
        return f"'{_shorten(value)}'" if value else "an empty text"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return f"a {type(value).__name__} ({_shorten(str(value))})"


def _shorten(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(err: ValidationError) -> str | None:
    schema = err.schema
    if isinstance(schema, dict):
        text = schema.get("x-expected")
        if isinstance(text, str):
            return text
    return None


def _explain(doc: Document, err: ValidationError) -> Iterator[Diagnostic]:
    path: PathKey = tuple(err.absolute_path)
    where = format_path(path)
    validator = err.validator
    if validator == "additionalProperties":
        yield from _unknown_keys(doc, err, path)
        return
    if validator == "propertyNames":
        bad = _bad_property_names(err)
        for key in bad:
            yield error(doc.key_location((*path, key)), format_path((*path, key)),
                        f"expected {_expected_of(err.context) or 'a valid key'}, found key "
                        f"'{key}'")
        return
    if "propertyNames" in err.schema_path and isinstance(err.instance, str):
        # jsonschema reports a bad key as an error about the key itself, at the mapping's path
        key_path: PathKey = (*path, err.instance)
        yield error(doc.key_location(key_path), format_path(key_path), "expected "
                    f"{_expected(err) or _default_expected(err)}, found key '{err.instance}'")
        return
    if validator == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        yield error(doc.location(path), where, f"expected the key '{missing}', found it missing")
        return
    expected = _expected(err) or _default_expected(err)
    yield error(doc.location(path), where, f"expected {expected}, found {_found(err)}")


def _found(err: ValidationError) -> str:
    """``describe`` the value, but never echo credentials (``x-redact-credentials``)."""
    redact = isinstance(err.schema, dict) and err.schema.get("x-redact-credentials") is True
    if redact and isinstance(err.instance, str):
        return describe(_CREDENTIALS.sub("://***@", err.instance))
    return describe(err.instance)


_CREDENTIALS = re.compile(r"://[^/@?#\s]*@")


def _expected_of(errors: Iterable[ValidationError]) -> str | None:
    for err in errors:
        text = _expected(err)
        if text:
            return text
    return None


def _bad_property_names(err: ValidationError) -> list[str]:
    return sorted({str(sub.instance) for sub in err.context})


def _unknown_keys(doc: Document, err: ValidationError, path: PathKey) -> Iterator[Diagnostic]:
    known = sorted(err.schema.get("properties", {})) if isinstance(err.schema, dict) else []
    instance = err.instance if isinstance(err.instance, dict) else {}
    for key in instance:
        if key in known:
            continue
        hint = close_matches(str(key), known)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        expected = ", ".join(known) if known else "no keys"
        yield error(doc.key_location((*path, key)), format_path((*path, key)),
                    f"expected one of the keys {expected}; found the unknown key "
                    f"'{key}'{suggestion}")


def _default_expected(err: ValidationError) -> str:
    value: Any = err.validator_value
    match err.validator:
        case "type":
            names = value if isinstance(value, list) else [value]
            return " or ".join(_TYPE_WORDS.get(str(n), str(n)) for n in names)
        case "const":
            return repr(value)
        case "enum":
            return "one of " + ", ".join(str(v) for v in value)
        case "minimum":
            return f"a number of at least {value}"
        case "maximum":
            return f"a number of at most {value}"
        case "minItems":
            return f"at least {value} item(s)"
        case "maxItems":
            return f"at most {value} item(s)"
        case "minLength":
            return f"at least {value} character(s)"
        case "maxLength":
            return f"at most {value} characters"
        case "minProperties":
            return f"at least {value} entry(ies)"
        case "pattern":
            return f"text matching {value}"
        case _:
            return err.message


_TYPE_WORDS = {
    "string": "a text",
    "integer": "a whole number",
    "number": "a number",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
    "null": "null",
}
