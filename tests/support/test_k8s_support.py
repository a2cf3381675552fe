"""The schema/kustomize helpers must be able to FAIL, not only pass."""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from . import k8s
from .k8s import kustomize_build, require_kubectl, validate_object

# --- fixtures ----------------------------------------------------------------------------------


def cnp() -> dict[str, Any]:
    return {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "web-egress", "namespace": "shop", "labels": {"app": "web"}},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "web"}},
            "egress": [
                {
                    "toEndpoints": [
                        {
                            "matchLabels": {
                                "k8s:io.kubernetes.pod.namespace": "shop",
                                "app": "api",
                            },
                            "matchExpressions": [
                                {
                                    "key": "io.cilium.k8s.policy.cluster",
                                    "operator": "In",
                                    "values": ["eu-1", "us-1"],
                                }
                            ],
                        }
                    ],
                    "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}],
                },
                {
                    "toCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]}],
                    "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
                },
            ],
        },
    }


def service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "api",
            "namespace": "shop",
            "annotations": {"service.cilium.io/global": "true"},
        },
        "spec": {
            "selector": {"app": "api"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def namespace() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "shop", "annotations": {"clustermesh.cilium.io/global": "true"}},
    }


def applicationset() -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ApplicationSet",
        "metadata": {"name": "meshplan", "namespace": "argocd"},
        "spec": {
            "goTemplate": True,
            "goTemplateOptions": ["missingkey=error"],
            "generators": [
                {
                    "list": {
                        # items are x-kubernetes-preserve-unknown-fields: any keys allowed
                        "elements": [
                            {"cluster": "eu-1", "url": "https://eu-1.example:6443"},
                            {"cluster": "us-1", "url": "https://us-1.example:6443", "x": 1},
                        ]
                    }
                }
            ],
            "template": {
                "metadata": {"name": "meshplan-{{.cluster}}"},
                "spec": {
                    "project": "default",
                    "source": {
                        "repoURL": "https://git.example/meshplan.git",
                        "targetRevision": "main",
                        "path": "clusters/{{.cluster}}",
                    },
                    "destination": {"server": "{{.url}}", "namespace": "default"},
                    "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
                },
            },
        },
    }


def flux_kustomization() -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "meshplan", "namespace": "flux-system"},
        "spec": {
            "interval": "10m",
            "path": "./clusters/eu-1",
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": "meshplan"},
        },
    }


def gitrepository() -> dict[str, Any]:
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "meshplan", "namespace": "flux-system"},
        "spec": {
            "interval": "5m",
            "url": "https://git.example/meshplan.git",
            "ref": {"branch": "main"},
        },
    }


def errors_at(errors: list[str], path: str) -> list[str]:
    return [e for e in errors if f": {path}: " in e]


# --- vendored files ----------------------------------------------------------------------------


def _git_blob(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_vendored_crds_match_recorded_upstream_blobs() -> None:
    sources = (k8s.SCHEMA_DIR / "SOURCES.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(crds/[^`]+)` \|.*\| `([0-9a-f]{40})` \| [^|]+ \|$", sources, re.M)
    recorded = dict(rows)
    assert set(recorded) == {f"crds/{p}" for p in k8s.CRD_FILES.values()}
    for rel, blob in recorded.items():
        assert _git_blob(k8s.SCHEMA_DIR / rel) == blob, rel


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(k8s.SUPPORTED_KINDS))
def test_every_supported_kind_loads(key: tuple[str, str]) -> None:
    # Loads (and for CRDs meta-validates the translated draft-4 schema) without error.
    assert k8s._kind_schema(*key).validator is not None


# --- CiliumNetworkPolicy -----------------------------------------------------------------------


def test_valid_cnp_passes() -> None:
    assert validate_object(cnp()) == []


def test_valid_ccnp_without_namespace_passes() -> None:
    obj = cnp()
    obj["kind"] = "CiliumClusterwideNetworkPolicy"
    del obj["metadata"]["namespace"]
    assert validate_object(obj) == []


def test_cnp_bad_protocol_fails() -> None:
    obj = cnp()
    obj["spec"]["egress"][0]["toPorts"][0]["ports"][0]["protocol"] = "HTTP"
    errors = validate_object(obj)
    assert errors_at(errors, "spec.egress[0].toPorts[0].ports[0].protocol"), errors
    assert "'HTTP' is not one of" in errors[0]


def test_cnp_numeric_port_fails() -> None:
    # port is `type: string` in the CRD; an unquoted YAML 80 is an int and is rejected.
    obj = cnp()
    obj["spec"]["egress"][0]["toPorts"][0]["ports"][0]["port"] = 80
    assert errors_at(validate_object(obj), "spec.egress[0].toPorts[0].ports[0].port")


def test_cnp_bad_cidr_fails() -> None:
    obj = cnp()
    obj["spec"]["egress"][1]["toCIDRSet"][0]["cidr"] = "10.0.0.0/33"
    assert errors_at(validate_object(obj), "spec.egress[1].toCIDRSet[0].cidr")
    obj["spec"]["egress"][1]["toCIDRSet"][0]["cidr"] = "10.0.0.0"  # no prefix length
    assert errors_at(validate_object(obj), "spec.egress[1].toCIDRSet[0].cidr")


def test_cnp_bad_match_expression_operator_fails() -> None:
    obj = cnp()
    obj["spec"]["egress"][0]["toEndpoints"][0]["matchExpressions"][0]["operator"] = "in"
    assert errors_at(
        validate_object(obj), "spec.egress[0].toEndpoints[0].matchExpressions[0].operator"
    )


def test_cnp_unknown_spec_key() -> None:
    obj = cnp()
    obj["spec"]["egres"] = obj["spec"]["egress"]
    # The real CRD schema does NOT forbid unknown keys: Kubernetes structural schemas may not
    # combine `properties` with `additionalProperties: false`, so plain JSON-Schema validation
    # of the upstream openAPIV3Schema accepts the typo ...
    raw = k8s.crd_openapi_schema("cilium.io/v2", "CiliumNetworkPolicy")
    assert "additionalProperties" not in raw["properties"]["spec"]
    assert "x-kubernetes-preserve-unknown-fields" not in raw["properties"]["spec"]
    assert list(jsonschema.Draft4Validator(raw).iter_errors(obj)) == []
    # ... but the API server prunes unknown fields and `kubectl apply` (field validation
    # Strict, default since 1.27) reports them as errors. validate_object emulates that.
    errors = validate_object(obj)
    assert len(errors) == 1, errors
    assert errors_at(errors, "spec") and "'egres' was unexpected" in errors[0]


def test_cnp_unknown_nested_key_fails() -> None:
    obj = cnp()
    obj["spec"]["egress"][0]["toPorts"][0]["ports"][0]["proto"] = "TCP"
    assert errors_at(validate_object(obj), "spec.egress[0].toPorts[0].ports[0]")


def test_cnp_without_selector_fails() -> None:
    # Upstream oneOf: exactly one of endpointSelector / nodeSelector.
    obj = cnp()
    del obj["spec"]["endpointSelector"]
    assert errors_at(validate_object(obj), "spec")


def test_cnp_both_selectors_fails() -> None:
    obj = cnp()
    obj["spec"]["nodeSelector"] = {"matchLabels": {"role": "edge"}}
    errors = validate_object(obj)
    assert errors_at(errors, "spec") and "more than one" in errors[0], errors


def test_cnp_go_unicode_class_pattern() -> None:
    # spec.log.value has the RE2 pattern ^\PC*$, which Python's re cannot compile as is.
    obj = cnp()
    obj["spec"]["log"] = {"value": "egress to api"}
    assert validate_object(obj) == []
    obj["spec"]["log"] = {"value": "bell\x07"}
    errors = validate_object(obj)
    assert errors_at(errors, "spec.log.value") and repr("^\\PC*$") in errors[0], errors


def test_go_inline_flags_after_the_anchor() -> None:
    """prometheus-operator writes ``^(?i)(abort|warn)?$``: RE2 applies the flag from there on,
    Python only at the start; the rewrite means the same and the rule group field checks."""
    assert k8s.go_pattern_to_python("^(?i)(abort|warn)?$") == "(?i)^(abort|warn)?$"
    rule: dict[str, Any] = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "r", "namespace": "monitoring"},
            "spec": {"groups": [{"name": "g", "partial_response_strategy": "WARN",
                                 "rules": [{"record": "a:b", "expr": "vector(1)"}]}]}}
    assert validate_object(rule) == []
    rule["spec"]["groups"][0]["partial_response_strategy"] = "ignore"
    assert validate_object(rule)


def test_cnp_metadata_checks() -> None:
    obj = cnp()
    del obj["metadata"]["namespace"]
    assert validate_object(obj) == [
        "CiliumNetworkPolicy/web-egress: metadata.namespace: required for namespaced kind "
        "CiliumNetworkPolicy"
    ]
    assert validate_object(obj, require_namespace=False) == []

    obj = cnp()
    obj["metadata"]["name"] = "Web_Egress"
    assert any("metadata.name" in e for e in validate_object(obj))

    obj = cnp()
    obj["metadata"]["lables"] = {"a": "b"}  # ObjectMeta is strict
    assert errors_at(validate_object(obj), "metadata")

    obj = cnp()
    obj["metadata"]["labels"] = {"app": 1}
    assert errors_at(validate_object(obj), "metadata.labels.app")

    obj = cnp()
    obj["metadata"]["labels"] = {"app": "not a valid value"}
    assert any("invalid label value" in e for e in validate_object(obj))

    obj = cnp()
    del obj["metadata"]
    assert any("'metadata' is a required property" in e for e in validate_object(obj))


def test_cnp_wrong_api_version_or_kind_is_an_error() -> None:
    for api_version, kind in [
        ("cilium.io/v1", "CiliumNetworkPolicy"),
        ("cilium.io/v2", "CiliumNetworkPolicies"),
        (None, None),
    ]:
        obj = cnp()
        obj["apiVersion"], obj["kind"] = api_version, kind
        errors = validate_object(obj)
        assert len(errors) == 1 and "no schema for" in errors[0], errors


def test_unknown_kind_and_non_mapping_are_errors() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x", "namespace": "y"}}
    assert "no schema for apiVersion='v1' kind='Secret'" in validate_object(secret)[0]
    assert validate_object([])  # type: ignore[arg-type]


# --- Service / Namespace -----------------------------------------------------------------------


def test_valid_service_passes() -> None:
    assert validate_object(service()) == []


def test_service_string_port_fails() -> None:
    obj = service()
    obj["spec"]["ports"][0]["port"] = "eighty"
    errors = validate_object(obj)
    assert errors_at(errors, "spec.ports[0].port"), errors


def test_service_int_or_string_target_port() -> None:
    obj = service()
    obj["spec"]["ports"][0]["targetPort"] = 8080
    assert validate_object(obj) == []
    obj["spec"]["ports"][0]["targetPort"] = [8080]
    assert errors_at(validate_object(obj), "spec.ports[0].targetPort")


def test_service_unknown_spec_field_fails() -> None:
    obj = service()
    obj["spec"]["selectors"] = {"app": "api"}
    assert errors_at(validate_object(obj), "spec")


def test_service_name_must_be_dns1035_label() -> None:
    obj = service()
    obj["metadata"]["name"] = "1api"
    assert any("metadata.name" in e for e in validate_object(obj))


def test_externalname_service_passes() -> None:
    obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "api", "namespace": "frontend"},
        "spec": {"type": "ExternalName", "externalName": "a.b.svc.cluster.local"},
    }
    assert validate_object(obj) == []


def test_valid_namespace_passes() -> None:
    assert validate_object(namespace()) == []


def test_namespace_unknown_top_level_field_fails() -> None:
    obj = namespace()
    obj["sepc"] = {}
    errors = validate_object(obj)
    assert errors_at(errors, "<root>") and "'sepc' was unexpected" in errors[0], errors


def test_namespace_bad_annotation_key_fails() -> None:
    obj = namespace()
    obj["metadata"]["annotations"] = {"clustermesh.cilium.io/": "true"}
    assert any("metadata.annotations" in e for e in validate_object(obj))


# --- Argo CD / Flux ----------------------------------------------------------------------------


def test_valid_applicationset_passes() -> None:
    assert validate_object(applicationset()) == []


def test_broken_applicationset_fails() -> None:
    obj = applicationset()
    del obj["spec"]["template"]["spec"]["project"]
    assert errors_at(validate_object(obj), "spec.template.spec")
    obj = applicationset()
    obj["spec"]["generators"][0]["lists"] = obj["spec"]["generators"][0].pop("list")
    assert errors_at(validate_object(obj), "spec.generators[0]")


def test_valid_flux_kustomization_passes() -> None:
    assert validate_object(flux_kustomization()) == []


def test_broken_flux_kustomization_fails() -> None:
    obj = flux_kustomization()
    obj["spec"]["prune"] = "true"
    assert errors_at(validate_object(obj), "spec.prune")
    obj = flux_kustomization()
    obj["spec"]["sourceRef"]["kind"] = "GitRepo"
    assert errors_at(validate_object(obj), "spec.sourceRef.kind")


def test_valid_gitrepository_passes() -> None:
    assert validate_object(gitrepository()) == []


def test_broken_gitrepository_fails() -> None:
    obj = gitrepository()
    del obj["spec"]["url"]
    assert errors_at(validate_object(obj), "spec")
    obj = gitrepository()
    obj["spec"]["interval"] = "5 minutes"
    assert errors_at(validate_object(obj), "spec.interval")


# --- translation of Kubernetes schema extensions ------------------------------------------------


def _check(schema: dict[str, Any], value: Any) -> bool:
    translated = k8s.structural_to_jsonschema(schema)
    validator = jsonschema.Draft4Validator(translated, format_checker=k8s._format_checker())
    return validator.is_valid(value)


def test_int_or_string_nullable_and_formats() -> None:
    ios = {
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
    }
    assert _check(ios, 80) and _check(ios, "http")
    assert not _check(ios, 1.5) and not _check(ios, None) and not _check(ios, [])
    assert _check({"x-kubernetes-int-or-string": True}, "x")
    assert not _check({"x-kubernetes-int-or-string": True}, {})

    assert _check({"type": "string", "nullable": True}, None)
    assert not _check({"type": "string"}, None)
    assert _check({"type": "string", "enum": ["a"], "nullable": True}, None)
    assert not _check({"type": "string", "enum": ["a"], "nullable": True}, "b")

    assert _check({"type": "integer", "format": "int32"}, 2**40)  # not enforced, like k8s
    assert _check({"type": "integer", "format": "int64"}, 5)
    assert _check({"type": "string", "format": "idn-hostname"}, "anything")


def test_preserve_unknown_fields_and_closed_objects() -> None:
    closed = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert _check(closed, {"a": "x"}) and not _check(closed, {"a": "x", "b": 1})
    open_ = {**closed, "x-kubernetes-preserve-unknown-fields": True}
    assert _check(open_, {"a": "x", "b": 1}) and not _check(open_, {"a": 1})
    mapping = {"type": "object", "additionalProperties": {"type": "string"}}
    assert _check(mapping, {"k": "v"}) and not _check(mapping, {"k": 1})
    # junctor branches are value validations only: never closed
    assert _check({**closed, "anyOf": [{"properties": {"a": {}}, "required": ["a"]}]}, {"a": "x"})
    assert _check(
        {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}, ["a", "b"]
    )
    assert not _check(
        {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}, ["a", "a"]
    )


def test_validate_object_does_not_mutate_input() -> None:
    obj = cnp()
    before = copy.deepcopy(obj)
    validate_object(obj)
    assert obj == before


# --- kubectl / kustomize -----------------------------------------------------------------------

KUSTOMIZATION_HEADER = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"


def test_kustomize_build_one_service(tmp_path: Path) -> None:
    (tmp_path / "service.yaml").write_text(yaml.safe_dump(service()), encoding="utf-8")
    (tmp_path / "kustomization.yaml").write_text(
        KUSTOMIZATION_HEADER + "resources:\n- service.yaml\n", encoding="utf-8"
    )
    docs = kustomize_build(tmp_path)
    assert docs == [service()]
    assert validate_object(docs[0]) == []


def test_kustomize_build_empty_resources(tmp_path: Path) -> None:
    # Observed with kubectl v1.32.4 (kustomize v5.5.0): exit 0 and empty stdout.
    (tmp_path / "kustomization.yaml").write_text(
        KUSTOMIZATION_HEADER + "resources: []\n", encoding="utf-8"
    )
    assert kustomize_build(tmp_path) == []


def test_kustomize_build_failure_reports_stderr(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        KUSTOMIZATION_HEADER + "resources:\n- missing.yaml\n", encoding="utf-8"
    )
    with pytest.raises(AssertionError, match=r"(?s)failed with exit code.*missing\.yaml"):
        kustomize_build(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AssertionError, match=r"unable to find one of 'kustomization\.yaml'"):
        kustomize_build(empty)


def test_require_kubectl_skips_or_fails_without_kubectl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="kubectl not installed"):
        require_kubectl()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="kubectl not installed"):
        require_kubectl()
