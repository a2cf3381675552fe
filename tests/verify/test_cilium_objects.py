"""meshplan.verify.cilium: an object defined twice in one cluster folder (two files, or one
file with ``---``) is an error at the second definition naming the first, as the real
``kubectl kustomize`` refuses the folder ("may not add resource with an already registered
id") instead of letting verify read both."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from meshplan.model import Inventory
from meshplan.pipeline import validated
from meshplan.verify.report import verify

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


def duplicates(inventory: Inventory, tmp_path: Path, resources: dict[str, str]
               ) -> tuple[list[str], bool]:
    """verify's errors about objects defined twice, and kustomize's refusal, for cluster d/a
    holding ``resources`` (file name -> text, listed in that order)."""
    folder = tmp_path / "clusters/d/a"
    folder.mkdir(parents=True)
    (folder / "kustomization.yaml").write_text(
        "resources:\n" + "".join(f"- {name}\n" for name in resources), encoding="utf-8")
    files: Files = {"clusters/d/a/kustomization.yaml":
                    (folder / "kustomization.yaml").read_bytes()}
    for name, text in resources.items():
        (folder / name).write_text(text, encoding="utf-8")
        files[f"clusters/d/a/{name}"] = text.encode()
    found = [e for e in errors(verify(inventory, files)) if FIRST in e]
    return found, kustomize_refuses(folder)


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
