"""Test support: validate rendered Kubernetes objects against real schemas, run real kustomize.

Schemas are vendored under ``tests/schemas`` (see ``tests/schemas/SOURCES.md``):

* CRDs (Cilium, Argo CD, Flux, Istio, prometheus-operator) are upstream files, unmodified.  Their
  ``openAPIV3Schema`` is translated at load time into JSON Schema (draft 4, the
  closest dialect to OpenAPI 3.0) with the semantics the API server applies:

  - ``x-kubernetes-int-or-string: true`` -> integer or string;
  - ``nullable: true`` -> ``null`` also allowed;
  - ``format`` is only checked for ``cidr`` and ``date-time`` (like the API
    server, ``int32``/``int64``/``idn-hostname`` are not enforced);
  - unknown fields are rejected: a structural schema cannot say
    ``additionalProperties: false``, but the API server prunes fields it does not
    know, and ``kubectl apply`` (field validation ``Strict``, the default since
    Kubernetes 1.27) turns every pruned field into an error.  So every object node
    with ``properties`` (and every ``type: object`` node with neither
    ``properties`` nor ``additionalProperties``) is closed, unless it carries
    ``x-kubernetes-preserve-unknown-fields: true``.  Nodes inside
    ``anyOf``/``oneOf``/``allOf``/``not`` are value validations only and are never
    closed;
  - ``x-kubernetes-list-type: set`` -> ``uniqueItems``;
  - Go RE2 ``pattern``s are run with Python ``re``; the RE2 class ``\\PC`` (used by
    Cilium) is rewritten to an explicit character class;
  - ``x-kubernetes-embedded-resource`` -> ``apiVersion``/``kind``/``metadata`` allowed;
  - CEL rules (``x-kubernetes-validations``) are NOT evaluated.

  ``metadata`` of a custom resource is validated against the Kubernetes
  ``ObjectMeta`` schema (strict), and ``apiVersion``/``kind`` must match.

* Core kinds (v1 Service, v1 Namespace, v1 ConfigMap) use the ``v1.32.0-local-strict`` JSON
  schemas from the ``kubernetes-validate`` wheel (draft 2020-12,
  ``additionalProperties: false`` everywhere, so typos are caught).

For every kind, ``metadata.name`` must be a string in the format the API server
requires for that kind, ``metadata.namespace`` must be set for namespaced kinds
(unless ``require_namespace=False``), and label keys/values and annotation keys
must be syntactically valid.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

from .ci import missing_tool

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
CRD_DIR = SCHEMA_DIR / "crds"
K8S_SCHEMA_DIR = SCHEMA_DIR / "kubernetes" / "v1.32.0-local-strict"

OBJECT_META_REF = "/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

# (apiVersion, kind) -> CRD file (relative to CRD_DIR)
CRD_FILES: dict[tuple[str, str], str] = {
    ("cilium.io/v2", "CiliumNetworkPolicy"): "cilium/ciliumnetworkpolicies.yaml",
    ("cilium.io/v2", "CiliumClusterwideNetworkPolicy"): (
        "cilium/ciliumclusterwidenetworkpolicies.yaml"
    ),
    ("argoproj.io/v1alpha1", "ApplicationSet"): "argo-cd/applicationset-crd.yaml",
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"): (
        "flux/kustomize.toolkit.fluxcd.io_kustomizations.yaml"
    ),
    ("source.toolkit.fluxcd.io/v1", "GitRepository"): (
        "flux/source.toolkit.fluxcd.io_gitrepositories.yaml"
    ),
    ("argoproj.io/v1alpha1", "Application"): "argo-cd/application-crd.yaml",
    ("networking.istio.io/v1", "Gateway"): "istio/gateways.networking.istio.io.yaml",
    ("security.istio.io/v1", "PeerAuthentication"):
        "istio/peerauthentications.security.istio.io.yaml",
    ("security.istio.io/v1", "AuthorizationPolicy"):
        "istio/authorizationpolicies.security.istio.io.yaml",
    ("helm.toolkit.fluxcd.io/v2", "HelmRelease"): "flux/helm.toolkit.fluxcd.io_helmreleases.yaml",
    ("source.toolkit.fluxcd.io/v1", "HelmRepository"): (
        "flux/source.toolkit.fluxcd.io_helmrepositories.yaml"
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): (
        "prometheus-operator/monitoring.coreos.com_prometheusrules.yaml"
    ),
    ("monitoring.coreos.com/v1alpha1", "ScrapeConfig"): (
        "prometheus-operator/monitoring.coreos.com_scrapeconfigs.yaml"
    ),
}

# (apiVersion, kind) -> (schema file in K8S_SCHEMA_DIR, namespaced)
CORE_FILES: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "Service"): ("service-v1.json", True),
    ("v1", "Namespace"): ("namespace-v1.json", False),
    ("v1", "ConfigMap"): ("configmap-v1.json", True),
}

SUPPORTED_KINDS: frozenset[tuple[str, str]] = frozenset(CRD_FILES) | frozenset(CORE_FILES)

# --- API-server name syntax (k8s.io/apimachinery/pkg/util/validation) -------------------------
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")

_MAX_MESSAGE = 400


@dataclass(frozen=True)
class _KindSchema:
    validator: jsonschema.protocols.Validator
    namespaced: bool
    name_rule: str  # "dns1123-subdomain" | "dns1123-label" | "dns1035-label"
    is_crd: bool


# --- format checking ---------------------------------------------------------------------------
def _is_cidr(value: object) -> bool:
    # Go's net.ParseCIDR: "<ip>/<prefix-length>", host bits may be set.
    if not isinstance(value, str):
        return True
    addr, sep, prefix = value.partition("/")
    if not sep or not prefix.isdigit():
        return False
    try:
        ipaddress.ip_network(value, strict=False)
        ipaddress.ip_address(addr)
    except ValueError:
        return False
    return True


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


@functools.cache
def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("cidr")(_is_cidr)
    checker.checks("date-time")(_is_date_time)
    return checker


# --- Go (RE2) patterns -> Python re ------------------------------------------------------------
@functools.cache
def _unicode_other_class() -> str:
    """Body of a character class matching Unicode category C (Cc, Cf, Cs, Co, Cn)."""
    ranges: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp)).startswith("C"):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))

    def esc(cp: int) -> str:
        return f"\\U{cp:08x}"

    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)


_LEADING_FLAGS = re.compile(r"\A\^(\(\?[a-zA-Z]+\))")


def go_pattern_to_python(pattern: str) -> str:
    """Rewrite the RE2 Unicode classes Python's ``re`` lacks (``\\pC``/``\\PC``, seen in Cilium),
    and inline flags right after ``^`` (``^(?i)...``, seen in prometheus-operator), which RE2
    applies from there on and Python only at the very start: moved before the ``^``."""
    pattern = _LEADING_FLAGS.sub(r"\1^", pattern, count=1)
    if "\\p" not in pattern and "\\P" not in pattern:
        re.compile(pattern)  # anything else unsupported fails loudly here
        return pattern
    rewritten = pattern.replace("\\PC", f"[^{_unicode_other_class()}]")
    rewritten = rewritten.replace("\\pC", f"[{_unicode_other_class()}]")
    re.compile(rewritten)  # anything else unsupported fails loudly here
    return rewritten


# --- CRD openAPIV3Schema -> JSON Schema ---------------------------------------------------------
_JUNCTORS = ("anyOf", "oneOf", "allOf")


def _as_type_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def structural_to_jsonschema(node: Any, *, in_junctor: bool = False) -> Any:
    """Translate one CRD (structural, OpenAPI v3.0) schema node into draft-4 JSON Schema."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {
        k: v for k, v in node.items() if k not in ("description", "default", "example")
    }
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True

    if isinstance(node.get("pattern"), str):
        out["pattern"] = go_pattern_to_python(node["pattern"])
        if out["pattern"] != node["pattern"]:
            out["x-upstream-pattern"] = node["pattern"]  # for readable error messages
    if node.get("x-kubernetes-int-or-string") is True and "type" not in out:
        out["type"] = ["integer", "string"]

    if isinstance(node.get("properties"), dict):
        out["properties"] = {
            key: structural_to_jsonschema(sub, in_junctor=in_junctor)
            for key, sub in node["properties"].items()
        }
    if node.get("x-kubernetes-embedded-resource") is True:
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            out[key] = structural_to_jsonschema(node[key], in_junctor=in_junctor or key == "not")
    for key in _JUNCTORS:
        if isinstance(node.get(key), list):
            out[key] = [structural_to_jsonschema(sub, in_junctor=True) for sub in node[key]]

    structural_object = "properties" in out or (
        node.get("type") == "object" and node.get("x-kubernetes-embedded-resource") is not True
    )
    if structural_object and not in_junctor and not preserve and "additionalProperties" not in node:
        out["additionalProperties"] = False

    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True

    if node.get("nullable") is True:
        if "type" in out:
            out["type"] = [*_as_type_list(out["type"]), "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [{"type": "null"}, out]}
    return out


def _served_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            if not entry.get("served", False):
                raise ValueError(f"{crd['metadata']['name']}: version {version} is not served")
            return entry["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]
    raise ValueError(f"{crd['metadata']['name']}: no version {version}")


@functools.cache
def load_crd(api_version: str, kind: str) -> dict[str, Any]:
    """The CRD document for (apiVersion, kind), checked to really define that kind."""
    path = CRD_DIR / CRD_FILES[(api_version, kind)]
    with path.open("rb") as fh:
        docs = [d for d in yaml.load_all(fh, Loader=yaml.CSafeLoader) if d]
    group, _, _version = api_version.rpartition("/")
    for doc in docs:
        spec = doc.get("spec", {})
        if spec.get("group") == group and spec.get("names", {}).get("kind") == kind:
            return doc  # type: ignore[no-any-return]
    raise ValueError(f"{path}: does not define {kind} in group {group}")


def crd_openapi_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The raw (untranslated) openAPIV3Schema of the served version, as upstream wrote it."""
    return _served_schema(load_crd(api_version, kind), api_version.rpartition("/")[2])


def crd_jsonschema(api_version: str, kind: str) -> dict[str, Any]:
    """The translated draft-4 JSON Schema used to validate (apiVersion, kind)."""
    schema = structural_to_jsonschema(copy.deepcopy(crd_openapi_schema(api_version, kind)))
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string", "enum": [api_version]}
    props["kind"] = {"type": "string", "enum": [kind]}
    # metadata is validated separately against ObjectMeta (see _metadata_errors).
    props["metadata"] = {"type": "object"}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return schema  # type: ignore[no-any-return]


# --- Kubernetes core schemas -------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)  # type: ignore[no-any-return]


@functools.cache
def _k8s_registry() -> Registry:
    defs = _read_json(K8S_SCHEMA_DIR / "_definitions.json")
    resources = [Resource.from_contents(defs)]
    for name, _namespaced in CORE_FILES.values():
        resources.append(Resource.from_contents(_read_json(K8S_SCHEMA_DIR / name)))
    return Registry().with_resources((r.id(), r) for r in resources)  # type: ignore[misc]


def _k8s_validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(
        schema, registry=_k8s_registry(), format_checker=_format_checker()
    )


@functools.cache
def _object_meta_validator() -> jsonschema.protocols.Validator:
    # Resolved relative to a kubernetes.io $id, like the refs inside the core schemas.
    return _k8s_validator(
        {"$id": "https://kubernetes.io/api/objectmeta-wrapper", "$ref": OBJECT_META_REF}
    )


# --- per-kind schema ---------------------------------------------------------------------------
@functools.cache
def _kind_schema(api_version: str, kind: str) -> _KindSchema:
    if (api_version, kind) in CRD_FILES:
        crd = load_crd(api_version, kind)
        schema = crd_jsonschema(api_version, kind)
        jsonschema.Draft4Validator.check_schema(schema)
        validator = jsonschema.Draft4Validator(schema, format_checker=_format_checker())
        namespaced = crd["spec"]["scope"] == "Namespaced"
        return _KindSchema(validator, namespaced, "dns1123-subdomain", is_crd=True)
    name, namespaced = CORE_FILES[(api_version, kind)]
    schema = _read_json(K8S_SCHEMA_DIR / name)
    rule = {"Service": "dns1035-label", "Namespace": "dns1123-label",
            "ConfigMap": "dns1123-subdomain"}[kind]
    return _KindSchema(_k8s_validator(schema), namespaced, rule, is_crd=False)


# --- error formatting --------------------------------------------------------------------------
def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<root>"


def _shorten(message: str) -> str:
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


def _summarize_alternative(schema: Any) -> str:
    if isinstance(schema, dict):
        if "required" in schema:
            return "{" + ", ".join(map(str, schema["required"])) + "}"
        if "type" in schema:
            return f"type {schema['type']}"
    return "<schema>"


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "pattern" and isinstance(error.schema, dict):
        pattern = error.schema.get("x-upstream-pattern", error.validator_value)
        return f"{_shorten(repr(error.instance))} does not match {pattern!r}"
    if error.validator in ("anyOf", "oneOf") and isinstance(error.validator_value, list):
        choices = " | ".join(_summarize_alternative(s) for s in error.validator_value)
        if error.validator == "oneOf" and not error.context:
            return f"matches more than one of the mutually exclusive alternatives {choices}"
        which = "exactly one" if error.validator == "oneOf" else "at least one"
        return f"must match {which} of the alternatives {choices}"
    return _shorten(error.message)


def _format_error(error: jsonschema.ValidationError, prefix: Iterable[Any] = ()) -> str:
    message = _message(error)
    if error.context:
        best = jsonschema.exceptions.best_match(error.context)
        if best is not None:
            message += f" (closest match: {_path(best.absolute_path)}: {_shorten(best.message)})"
    return f"{_path([*prefix, *error.absolute_path])}: {message}"


def _schema_errors(
    validator: jsonschema.protocols.Validator, instance: Any, prefix: Iterable[Any] = ()
) -> list[str]:
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.path])
    return [_format_error(e, prefix) for e in errors]


# --- metadata ----------------------------------------------------------------------------------
def _name_problem(value: str, rule: str) -> str | None:
    if rule == "dns1123-subdomain":
        if len(value) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(value):
            return "must be a lowercase RFC 1123 subdomain (max 253 chars)"
    elif rule == "dns1123-label":
        if len(value) > 63 or not _DNS1123_LABEL.fullmatch(value):
            return "must be a lowercase RFC 1123 label (max 63 chars)"
    elif rule == "dns1035-label" and (len(value) > 63 or not _DNS1035_LABEL.fullmatch(value)):
        return "must be a lowercase RFC 1035 label, starting with a letter (max 63 chars)"
    return None


def _qualified_name_problem(key: str) -> str | None:
    prefix, sep, name = key.rpartition("/")
    if sep and (not prefix or _name_problem(prefix, "dns1123-subdomain")):
        return f"key {key!r}: prefix must be a DNS subdomain"
    if len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return f"key {key!r}: name part must be 1-63 alphanumerics, '-', '_' or '.'"
    return None


def _metadata_errors(obj: dict[str, Any], info: _KindSchema, require_namespace: bool) -> list[str]:
    meta = obj.get("metadata")
    if meta is None and not info.is_crd:
        return ["metadata: required (with a name)"]
    if not isinstance(meta, dict):
        return []  # the schema already reports a missing or non-object metadata
    errors: list[str] = []
    if info.is_crd:
        errors += _schema_errors(_object_meta_validator(), meta, prefix=["metadata"])
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        errors.append("metadata.name: required non-empty string")
    elif problem := _name_problem(name, info.name_rule):
        errors.append(f"metadata.name: {name!r} {problem}")
    namespace = meta.get("namespace")
    if info.namespaced:
        if namespace is None:
            if require_namespace:
                errors.append(f"metadata.namespace: required for namespaced kind {obj['kind']}")
        elif not isinstance(namespace, str) or _name_problem(namespace, "dns1123-label"):
            errors.append(f"metadata.namespace: {namespace!r} must be an RFC 1123 label")
    for field in ("labels", "annotations"):
        mapping = meta.get(field)
        if not isinstance(mapping, dict):
            continue
        for key, value in mapping.items():
            if not isinstance(key, str):
                errors.append(f"metadata.{field}: key {key!r} must be a string")
                continue
            if problem := _qualified_name_problem(key):
                errors.append(f"metadata.{field}: {problem}")
            if not isinstance(value, str):
                errors.append(f"metadata.{field}.{key}: value {value!r} must be a string")
            elif field == "labels" and (len(value) > 63 or not _LABEL_VALUE.fullmatch(value)):
                errors.append(f"metadata.labels.{key}: invalid label value {value!r}")
    return errors


# --- public API --------------------------------------------------------------------------------
def validate_object(obj: dict[str, Any], *, require_namespace: bool = True) -> list[str]:
    """Validate one Kubernetes object; return human-readable errors (empty list = valid).

    Errors are prefixed with ``<kind>/<name>: <path>:``.  Objects whose
    (apiVersion, kind) has no vendored schema are reported as an error.
    """
    if not isinstance(obj, dict):
        return [f"object is a {type(obj).__name__}, not a mapping"]
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    label = f"{kind}/{name}"
    if (api_version, kind) not in SUPPORTED_KINDS:
        supported = ", ".join(f"{a} {k}" for a, k in sorted(SUPPORTED_KINDS))
        return [
            f"{label}: no schema for apiVersion={api_version!r} kind={kind!r} "
            f"(supported: {supported})"
        ]
    info = _kind_schema(str(api_version), str(kind))
    errors = _schema_errors(info.validator, obj)
    errors += _metadata_errors(obj, info, require_namespace)
    return [f"{label}: {e}" for e in errors]


def require_kubectl() -> str:
    """Path of ``kubectl``; skip the test if it is missing (fail instead when ``CI`` is set)."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        return kubectl
    missing_tool("kubectl not installed: kustomize build tests need `kubectl kustomize` "
                 "(>= 1.27, with built-in kustomize)")


def kustomize_build(
    directory: str | os.PathLike[str], *, timeout: float = 120
) -> list[dict[str, Any]]:
    """Run the real ``kubectl kustomize <directory>``; return the rendered documents."""
    kubectl = require_kubectl()
    cmd = [kubectl, "kustomize", os.fspath(directory)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"`{' '.join(cmd)}` timed out after {timeout}s") from exc
    if proc.returncode != 0:
        raise AssertionError(
            f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n{proc.stderr.strip()}"
        )
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d is not None]
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise AssertionError(
                f"`{' '.join(cmd)}` document {index} is a {type(doc).__name__}, not a mapping"
            )
    return docs
