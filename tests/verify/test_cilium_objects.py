"""meshplan.verify.cilium: an object defined twice in one cluster folder (two files, or one
file with ``---``) is an error at the second definition naming the first, as the real
``kubectl kustomize`` refuses the folder ("may not add resource with an already registered
id") instead of letting verify read both; and a document verify would otherwise read as an
object the API server does not apply as such (a List kustomize expands, a modelled kind under
another apiVersion, a name or namespace that is not a string) is an error, not counted."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from meshplan.diagnostics import Severity
from meshplan.model import Inventory
from meshplan.pipeline import validated
from meshplan.verify.report import VerifyReport, verify

from tests.support.flows import Files, errors, write
from tests.support.k8s import require_kubectl

INVENTORY = """
    apiVersion: meshplan.dev/v1alpha1
    kind: Domain
    metadata: {name: d}
    spec:
      clusters:
        - {name: a, meshName: ma}
      services:
        - {name: x, namespace: n1, selector: {app: x}, clusters: [a],
           ports: [{port: 80, protocol: TCP, name: http}]}
"""
POLICY = """apiVersion: {api}
kind: CiliumNetworkPolicy
metadata: {{name: p, namespace: {namespace}}}
spec:
  endpointSelector: {{matchLabels: {{app: x}}}}
  ingress:
  - fromEndpoints: [{{matchLabels: {{app: x}}}}]
"""
SERVICE = """apiVersion: v1
kind: Service
metadata: {{name: x{namespace}}}
spec:
  selector: {{app: x}}
  ports: [{{port: 80, protocol: TCP, name: http}}]
"""
FIRST = "expected each object once in cluster d/a"


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Inventory:
    return validated(write(tmp_path_factory.mktemp("objects"), {"inventory/d.yaml": INVENTORY}))[0]


def policy(api: str = "cilium.io/v2", namespace: str = "n1") -> str:
    return POLICY.format(api=api, namespace=namespace)


def service(namespace: str | None = "n1") -> str:
    return SERVICE.format(namespace="" if namespace is None else f", namespace: {namespace}")


def kustomize_refuses(folder: Path) -> bool:
    """Whether the real ``kubectl kustomize`` refuses ``folder`` for an id given twice."""
    proc = subprocess.run([require_kubectl(), "kustomize", str(folder)], capture_output=True,
                          text=True, timeout=120, check=False)
    if proc.returncode == 0:
        return False
    assert "already registered id" in proc.stderr, proc.stderr
    return True


def checked(tmp_path: Path, inventory: Inventory, resources: dict[str, str]) -> VerifyReport:
    """verify's report on cluster d/a holding ``resources`` (file name -> text, listed in
    that order), written under ``tmp_path/clusters/d/a``."""
    folder = tmp_path / "clusters/d/a"
    folder.mkdir(parents=True)
    (folder / "kustomization.yaml").write_text(
        "resources:\n" + "".join(f"- {name}\n" for name in resources), encoding="utf-8")
    files: Files = {"clusters/d/a/kustomization.yaml":
                    (folder / "kustomization.yaml").read_bytes()}
    for name, text in resources.items():
        (folder / name).write_text(text, encoding="utf-8")
        files[f"clusters/d/a/{name}"] = text.encode()
    return verify(inventory, files)


def duplicates(inventory: Inventory, tmp_path: Path, resources: dict[str, str]
               ) -> tuple[list[str], bool]:
    """verify's errors about objects defined twice, and kustomize's refusal, for cluster d/a
    holding ``resources``."""
    found = [e for e in errors(checked(tmp_path, inventory, resources)) if FIRST in e]
    return found, kustomize_refuses(tmp_path / "clusters/d/a")


def test_a_policy_in_two_files_is_an_error_naming_the_first(
        inventory: Inventory, tmp_path: Path) -> None:
    found, refused = duplicates(inventory, tmp_path, {
        "policies.yaml": policy(), "extra.yaml": policy()})
    assert refused
    assert len(found) == 1, found
    assert found[0].startswith("rendered/clusters/d/a/extra.yaml:3:")
    assert "CiliumNetworkPolicy n1/p again (first at rendered/clusters/d/a/policies.yaml:3:" \
        in found[0]


def test_a_service_twice_in_one_file_is_an_error(inventory: Inventory, tmp_path: Path) -> None:
    found, refused = duplicates(inventory, tmp_path, {
        "services.yaml": service() + "---\n" + service()})
    assert refused
    assert len(found) == 1, found
    assert found[0].startswith("rendered/clusters/d/a/services.yaml:10:")
    assert "(first at rendered/clusters/d/a/services.yaml:3:" in found[0]


def test_an_unset_namespace_is_the_default_one(inventory: Inventory, tmp_path: Path) -> None:
    found, refused = duplicates(inventory, tmp_path, {
        "a.yaml": service(None), "b.yaml": service("default")})
    assert refused
    assert len(found) == 1, found


def test_other_namespaces_or_kinds_are_other_objects(
        inventory: Inventory, tmp_path: Path) -> None:
    found, refused = duplicates(inventory, tmp_path, {
        "a.yaml": policy(namespace="n1"), "b.yaml": policy(namespace="n2"),
        "c.yaml": service()})
    assert not refused
    assert found == []


def test_two_versions_of_one_object_fail_closed(inventory: Inventory, tmp_path: Path) -> None:
    """kustomize keys by version too and accepts these, but the API server holds one object
    under both versions: one silently replaces the other, so verify refuses them."""
    found, refused = duplicates(inventory, tmp_path, {
        "a.yaml": policy(), "b.yaml": policy(api="cilium.io/v2alpha1")})
    assert not refused
    assert len(found) == 1, found


def as_list(kind: str, *texts: str) -> str:
    """A document of ``kind`` holding ``texts`` as its items."""
    items = "".join("- " + textwrap.indent(text, "  ")[2:] for text in texts)
    return f"apiVersion: v1\nkind: {kind}\nitems:\n{items}"


@pytest.mark.parametrize("kind", ["List", "CiliumNetworkPolicyList"])
def test_a_list_is_an_error_though_kustomize_applies_its_items(
        inventory: Inventory, tmp_path: Path, kind: str) -> None:
    """kustomize replaces a document whose kind ends in ``List`` with its items, each applied
    (here a policy); verify does not read them, so it refuses the document."""
    report = checked(tmp_path, inventory, {"policies.yaml": as_list(kind, policy())})
    [found] = [d for d in report.diagnostics if d.path == "kind"]
    assert str(found.location).startswith("rendered/clusters/d/a/policies.yaml:2:")
    assert "verify does not read List documents" in found.message
    assert found.severity is Severity.ERROR
    assert report.policies == 0
    built = subprocess.run([require_kubectl(), "kustomize", str(tmp_path / "clusters/d/a")],
                           capture_output=True, text=True, timeout=120, check=True)
    assert "kind: CiliumNetworkPolicy\n" in built.stdout, built.stdout


@pytest.mark.parametrize(("text", "key", "found"), [
    (SERVICE.format(namespace="").replace("name: x", "name: 1"), "name", "1 (a number)"),
    (service().replace("namespace: n1", "namespace: 2"), "namespace", "2 (a number)"),
    (service().replace("name: x", "name: null"), "name", "null"),
    (policy().replace("name: p", "name: true"), "name", "true (a boolean)"),
    ("apiVersion: v1\nkind: Namespace\nmetadata: {name: 2020-01-01}\n", "name",
     "2020-01-01 (a date)"),
    ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
     "metadata: {name: 7, namespace: n1}\nspec: {}\n", "name", "7 (a number)"),
])
def test_a_name_or_namespace_that_is_not_a_string_is_an_error(
        inventory: Inventory, tmp_path: Path, text: str, key: str, found: str) -> None:
    """The API server rejects such an object (its name and namespace are strings), and the
    duplicate check, which keys by them, would not see it: an error at the key, not counted."""
    report = checked(tmp_path, inventory, {"objects.yaml": text})
    [error] = [d for d in report.diagnostics if d.path == f"metadata.{key}"]
    assert f"to be a string, found {found}, which the API server rejects" in error.message
    assert error.format_text() in errors(report)
    assert report.policies == 0


def test_a_null_namespace_is_none(inventory: Inventory, tmp_path: Path) -> None:
    report = checked(tmp_path, inventory, {"s.yaml": service().replace("n1", "null")})
    assert [d for d in report.diagnostics if d.path.startswith("metadata.")] == []


@pytest.mark.parametrize(("kind", "api"), [
    ("Service", "foo.io/v1"), ("Namespace", "v2"), ("CiliumNetworkPolicy", "cilium.io/v1"),
    ("CiliumClusterwideNetworkPolicy", "cilium.io/v2alpha1"),
    ("CiliumNetworkPolicy", "v1"), ("PeerAuthentication", "security.istio.io/v1alpha1"),
    ("AuthorizationPolicy", "networking.istio.io/v1"),
])
def test_a_modelled_kind_under_another_api_version_is_an_error(
        inventory: Inventory, tmp_path: Path, kind: str, api: str) -> None:
    """The API server does not apply such a document as the object verify models (a policy
    counted but not applied would hide the pods it leaves unrestricted)."""
    text = policy(api=api).replace("kind: CiliumNetworkPolicy", f"kind: {kind}")
    report = checked(tmp_path, inventory, {"objects.yaml": text})
    [error] = [d for d in report.diagnostics if d.path == "apiVersion"]
    assert str(error.location).startswith("rendered/clusters/d/a/objects.yaml:1:")
    assert f"for a {kind}, found {api}: the API server does not apply it" in error.message
    assert error.format_text() in errors(report)
    assert report.policies == 0


@pytest.mark.parametrize(("kind", "api"), [
    ("Service", "v1"), ("Namespace", "v1"), ("CiliumNetworkPolicy", "cilium.io/v2"),
    ("CiliumClusterwideNetworkPolicy", "cilium.io/v2"),
    ("PeerAuthentication", "security.istio.io/v1"),
    ("AuthorizationPolicy", "security.istio.io/v1beta1"),
])
def test_the_served_api_versions_are_read(
        inventory: Inventory, tmp_path: Path, kind: str, api: str) -> None:
    text = policy(api=api).replace("kind: CiliumNetworkPolicy", f"kind: {kind}")
    report = checked(tmp_path, inventory, {"objects.yaml": text})
    assert [d for d in report.diagnostics if d.path == "apiVersion"] == []


@pytest.mark.parametrize(("kind", "api"), [
    ("Namespace", "v1"), ("Node", "v1"), ("RuntimeClass", "node.k8s.io/v1"),
    ("CSIDriver", "storage.k8s.io/v1"), ("CSINode", "storage.k8s.io/v1"),
    ("PersistentVolume", "v1"), ("ClusterRole", "rbac.authorization.k8s.io/v1"),
])
def test_a_cluster_scoped_kind_is_one_object_whatever_namespace_it_names(
        inventory: Inventory, tmp_path: Path, kind: str, api: str) -> None:
    """kustomize ignores the namespace of the kinds its built-in schema marks
    cluster-scoped (and refuses the folder), as verify must."""
    def text(namespace: str) -> str:
        return f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: c, namespace: {namespace}}}\n"
    found, refused = duplicates(inventory, tmp_path, {"a.yaml": text("n1"), "b.yaml": text("n2")})
    assert refused
    assert len(found) == 1, found
