"""The mesh plan's output (meshplan.mesh.render, .delivery): layout, determinism, real tools.

* the files a mesh plan renders, and nothing without a Mesh document (the bundled example's
  ``rendered/`` stays byte for byte what it was);
* byte-identical re-renders, also across Python hash seeds;
* no key material anywhere in the output (and the scanner provably finds planted material);
* the real ``kubectl kustomize`` over every cluster root that gained objects and every Flux
  folder, and every object validated against the real CRDs / Kubernetes schemas (Namespace,
  Gateway, Argo CD Application, Flux HelmRelease, HelmRepository, ConfigMap, Kustomization);
* both bundled examples: committed output up to date, verify passes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from meshplan.pipeline import render_repository, verify_repository
from meshplan.write import diff_against, write_tree

from tests.support.k8s import kustomize_build, validate_object
from tests.support.mesh_fixture import mesh_repo
from tests.support.rendered import documents, render_files
from tests.support.repos import ISTIO_EXAMPLE, REPO_ROOT, copy_example

EXAMPLE = ISTIO_EXAMPLE



@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mesh_repo().write(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def base_files(base: Path) -> dict[str, bytes]:
    return render_files(base)



# --------------------------------------------------------------------------- layout


def test_the_mesh_plan_files(base_files: dict[str, bytes]) -> None:
    mesh = sorted(p for p in base_files if p.startswith(("mesh/", "bootstrap/argocd/mesh",
                                                          "bootstrap/flux-mesh/")))
    assert mesh == [
        "bootstrap/argocd/mesh-applications.yaml",
        "bootstrap/flux-mesh/payments/p1.yaml",
        "bootstrap/flux-mesh/retail/ap1.yaml",
        "mesh/payments/p1/cilium-values.yaml",
        "mesh/payments/p1/eastwest-gateway-values.yaml",
        "mesh/payments/p1/flux/helmreleases.yaml",
        "mesh/payments/p1/flux/kustomization.yaml",
        "mesh/payments/p1/istiod-values.yaml",
        "mesh/retail/ap1/cilium-values.yaml",
        "mesh/retail/ap1/flux/helmreleases.yaml",
        "mesh/retail/ap1/flux/kustomization.yaml",
        "mesh/retail/eu1/cilium-values.yaml",
        "mesh/retail/eu1/eastwest-gateway-values.yaml",
        "mesh/retail/eu1/istiod-values.yaml",
        "mesh/retail/us1/cilium-values.yaml",
        "mesh/retail/us1/eastwest-gateway-values.yaml",
        "mesh/retail/us1/istiod-values.yaml",
    ]
    # values files live outside the clusters' Kustomize roots
    assert not [p for p in base_files if p.startswith("clusters/") and "values" in p]


def test_istio_members_roots_gain_the_network_label_and_gateway(
        base_files: dict[str, bytes]) -> None:
    namespaces = documents(base_files["clusters/retail/eu1/namespaces.yaml"])
    istio = next(d for d in namespaces if d["metadata"]["name"] == "istio-system")
    assert istio["metadata"]["labels"]["topology.istio.io/network"] == "net-eu"
    assert istio["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false"
    gateway = documents(base_files["clusters/retail/eu1/gateways.yaml"])[0]
    assert gateway["spec"] == {"selector": {"istio": "eastwestgateway"}, "servers": [{
        "port": {"number": 15443, "name": "tls", "protocol": "TLS"},
        "tls": {"mode": "AUTO_PASSTHROUGH"}, "hosts": ["*.cluster.local"]}]}
    kustomization = yaml.safe_load(base_files["clusters/retail/eu1/kustomization.yaml"])
    assert "gateways.yaml" in kustomization["resources"]
    assert "clusters/retail/ap1/gateways.yaml" not in base_files  # not an Istio member


def test_one_network_no_gateways(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.cluster("us1")["istio"]["network"] = "net-eu"
    files = render_files(repo.write(tmp_path))
    assert not [p for p in files if p.endswith(("gateways.yaml", "eastwest-gateway-values.yaml"))]
    assert "mesh/retail/us1/istiod-values.yaml" in files


def test_without_a_mesh_document_the_example_renders_byte_for_byte(tmp_path: Path) -> None:
    files = render_files(copy_example(tmp_path / "repo"))
    assert not [p for p in files if p.startswith(("mesh/", "bootstrap/flux-mesh/"))]
    assert diff_against(REPO_ROOT / "rendered", [_file(p, c) for p, c in files.items()]
                        ).unchanged


def _file(path: str, content: bytes) -> Any:
    from meshplan.outputs import OutputFile

    return OutputFile(path, content)


def test_adding_a_mesh_to_the_example_leaves_its_cluster_folders_alone(tmp_path: Path) -> None:
    """The documentation's walk-through (docs/mesh.md): the bundled example plus a Mesh
    document and clustermesh entries - a ClusterMesh only, so no cluster file changes."""
    repo = copy_example(tmp_path / "repo")
    text = (REPO_ROOT / "docs" / "mesh.md").read_text(encoding="utf-8")
    mesh_doc = re.search(r"```yaml\n(# inventory/mesh.yaml\n.*?)```", text, re.S)
    assert mesh_doc, "docs/mesh.md shows inventory/mesh.yaml"
    (repo / "inventory" / "mesh.yaml").write_text(mesh_doc.group(1), encoding="utf-8")
    for domain, cluster, address in (("domain1", "cl1", "203.0.113.1"),
                                     ("domain1", "cl2", "203.0.113.2"),
                                     ("domain2", "cl3", "203.0.113.3"),
                                     ("domain2", "cl4", "203.0.113.4")):
        path = repo / "inventory" / f"{domain}.yaml"
        path.write_text(path.read_text(encoding="utf-8").replace(
            f"    - name: {cluster}\n",
            f"    - name: {cluster}\n      clustermesh: {{address: {address}}}\n"),
            encoding="utf-8")
    before = render_files(copy_example(tmp_path / "plain"))
    after = render_files(repo)
    assert {p: c for p, c in after.items() if p.startswith("clusters/")} == {
        p: c for p, c in before.items() if p.startswith("clusters/")}
    assert sorted(p for p in after if p.endswith("cilium-values.yaml")) == [
        f"mesh/{d}/{c}/cilium-values.yaml"
        for d, c in (("domain1", "cl1"), ("domain1", "cl2"), ("domain2", "cl3"),
                     ("domain2", "cl4"))]


# --------------------------------------------------------------------------- determinism


def test_rendering_is_byte_identical(base: Path, base_files: dict[str, bytes]) -> None:
    assert render_files(base) == base_files


@pytest.mark.slow  # two processes end to end: the full tier
def test_rendering_does_not_depend_on_the_hash_seed(base: Path, tmp_path: Path) -> None:
    outputs = []
    for seed in ("0", "4242"):
        out = tmp_path / f"out-{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-m", "meshplan", "render", "--repo", str(base),
                        "--out", str(out)], check=True, env=env, capture_output=True)
        outputs.append({p.relative_to(out).as_posix(): p.read_bytes()
                        for p in sorted(out.rglob("*")) if p.is_file()})
    assert outputs[0] == outputs[1]


# --------------------------------------------------------------------------- no key material

KEY_MATERIAL = (
    re.compile(rb"-----BEGIN [A-Z0-9 ]+-----"),  # any PEM block: certificate, key, CSR
    re.compile(rb"PRIVATE KEY"),
    re.compile(rb"(?i)\b(token|password|client-key-data|client-certificate-data|"
               rb"certificate-authority-data|ca\.key|tls\.key)\s*:\s*\S"),
    re.compile(rb"[A-Za-z0-9+/]{64,}={0,2}"),  # base64 of a certificate or key
    re.compile(rb"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),  # a JWT (service-account token)
)


def key_material(files: dict[str, bytes]) -> list[str]:
    return [f"{path}: {pattern.pattern!r}" for path, content in files.items()
            for pattern in KEY_MATERIAL if pattern.search(content)]


def test_the_scanner_finds_planted_key_material() -> None:
    planted = {
        "pem": b"x: |\n  -----BEGIN CERTIFICATE-----\n  MIIB\n",
        "key": b"tls.key: abc\n",
        "b64": b"ca: " + b"QUJD" * 20 + b"\n",
        "jwt": b"t: eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.sig\n",
        "kubeconfig": b"  token: 72wneox6lm5\n",
    }
    assert {hit.split(":")[0] for hit in key_material(planted)} == set(planted)


def test_no_key_material_is_ever_rendered(base_files: dict[str, bytes], tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.mesh_spec["cilium"]["ca"] = {"certManagerIssuer": {"kind": "Issuer",
                                                               "name": "mesh-ca"}}
    outputs = {**base_files, **{f"cm/{p}": c for p, c in
                                render_files(repo.write(tmp_path / "cm")).items()},
               **{f"example/{p}": c for p, c in render_files(EXAMPLE).items()},
               **{f"committed/{p.relative_to(EXAMPLE).as_posix()}": p.read_bytes()
                  for p in (EXAMPLE / "rendered").rglob("*") if p.is_file()}}
    assert key_material(outputs) == []


# --------------------------------------------------------------------------- real tools


@pytest.fixture(scope="module")
def written(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("written") / "rendered"
    rendered, _ = render_repository(base)
    write_tree(out, rendered.files)
    return out


@pytest.mark.parametrize("folder", [
    "clusters/retail/eu1", "clusters/retail/us1", "clusters/payments/p1",
    "mesh/retail/ap1/flux", "mesh/payments/p1/flux"])
def test_kustomize_builds_and_every_object_validates(written: Path, folder: str) -> None:
    objects = kustomize_build(written / folder)
    assert objects
    for obj in objects:
        assert validate_object(obj, require_namespace=obj["kind"] != "Namespace") == [], obj
    kinds = {o["kind"] for o in objects}
    if folder.startswith("clusters/"):
        assert {"Namespace", "Gateway"} <= kinds
    else:
        assert {"HelmRepository", "HelmRelease"} <= kinds


def test_delivery_objects_validate_against_the_real_crds(base_files: dict[str, bytes]) -> None:
    kinds: dict[str, int] = {}
    for path in ("bootstrap/argocd/mesh-applications.yaml", "bootstrap/flux-mesh/retail/ap1.yaml",
                 "mesh/payments/p1/flux/helmreleases.yaml"):
        for obj in documents(base_files[path]):
            assert validate_object(obj) == [], (path, obj["metadata"]["name"])
            kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
    assert kinds == {"Application": 8, "Kustomization": 1, "HelmRepository": 2,
                     "HelmRelease": 4, "ConfigMap": 1}


def test_argocd_applications_read_values_from_the_output_branch(
        base_files: dict[str, bytes]) -> None:
    apps = {a["metadata"]["name"]: a for a in
            documents(base_files["bootstrap/argocd/mesh-applications.yaml"])}
    cilium = apps["meshplan.retail.eu1.cilium"]["spec"]
    assert cilium["sources"] == [
        {"repoURL": "https://helm.cilium.io/", "chart": "cilium", "targetRevision": "1.19.4",
         "helm": {"releaseName": "cilium",
                  "valueFiles": ["$values/mesh/retail/eu1/cilium-values.yaml"]}},
        {"repoURL": "https://git.example.com/platform/mesh.git", "targetRevision": "rendered",
         "ref": "values"}]
    assert cilium["destination"] == {"name": "eu1", "namespace": "kube-system"}
    assert apps["meshplan.retail.us1.istiod"]["spec"]["destination"] == {
        "server": "https://us1.retail.example.com:6443", "namespace": "istio-system"}
    # eu1 and us1 (Argo CD) only; ap1 and p1 are Flux clusters
    assert sorted(apps) == sorted(f"meshplan.retail.{c}.{chart}" for c in ("eu1", "us1")
                                  for chart in ("cilium", "istio-base", "istiod",
                                                "istio-eastwestgateway"))
    assert apps["meshplan.retail.eu1.istiod"]["spec"]["ignoreDifferences"] == [{
        "group": "admissionregistration.k8s.io", "kind": "ValidatingWebhookConfiguration",
        "jqPathExpressions": [".webhooks[]?.failurePolicy"]}]


def test_flux_istiod_takes_the_root_certificate_from_cacerts(
        base_files: dict[str, bytes]) -> None:
    objects = documents(base_files["mesh/payments/p1/flux/helmreleases.yaml"])
    istiod = next(o for o in objects if o["kind"] == "HelmRelease"
                  and o["metadata"]["name"] == "istiod")
    assert istiod["metadata"]["namespace"] == "istio-system"
    assert istiod["spec"]["dependsOn"] == [{"name": "istio-base"}]
    assert istiod["spec"]["valuesFrom"] == [
        {"kind": "ConfigMap", "name": "meshplan-istiod-trust", "valuesKey": "values.yaml"},
        {"kind": "Secret", "name": "cacerts", "valuesKey": "root-cert.pem",
         "targetPath": "meshConfig.caCertificates[0].pem"}]
    assert "caCertificates" not in istiod["spec"]["values"]["meshConfig"]
    trust = next(o for o in objects if o["kind"] == "ConfigMap")
    assert yaml.safe_load(trust["data"]["values.yaml"]) == {"meshConfig": {"caCertificates": [
        {"trustDomains": ["retail-eu1.example", "retail-us1.example"]}]}}
    cilium = next(o for o in objects if o["kind"] == "HelmRelease"
                  and o["metadata"]["name"] == "cilium")
    assert cilium["metadata"]["annotations"] == {"kustomize.toolkit.fluxcd.io/prune": "disabled"}
    assert cilium["spec"]["values"] == yaml.safe_load(
        base_files["mesh/payments/p1/cilium-values.yaml"])


# --------------------------------------------------------------------------- bundled examples


def test_the_istio_example_output_is_up_to_date_and_verifies() -> None:
    files = render_files(EXAMPLE)
    assert diff_against(EXAMPLE / "rendered", [_file(p, c) for p, c in files.items()]).unchanged
    report = verify_repository(EXAMPLE)
    assert report.ok, [d.format_text() for d in report.diagnostics]
    assert sorted(p for p in files if p.startswith(("mesh/", "bootstrap/argocd/mesh",
                                                    "bootstrap/flux-mesh/"))) == [
        "bootstrap/argocd/mesh-applications.yaml",
        "bootstrap/flux-mesh/boutique/gcp.yaml",
        "mesh/boutique/aks/eastwest-gateway-values.yaml",
        "mesh/boutique/aks/istiod-values.yaml",
        "mesh/boutique/gcp/eastwest-gateway-values.yaml",
        "mesh/boutique/gcp/flux/helmreleases.yaml",
        "mesh/boutique/gcp/flux/kustomization.yaml",
        "mesh/boutique/gcp/istiod-values.yaml",
    ]


@pytest.mark.parametrize("folder", ["clusters/boutique/aks", "clusters/boutique/gcp",
                                    "mesh/boutique/gcp/flux"])
def test_the_istio_example_builds_with_kustomize(folder: str) -> None:
    for obj in kustomize_build(EXAMPLE / "rendered" / folder):
        assert validate_object(obj, require_namespace=obj["kind"] != "Namespace") == [], obj


def test_a_mesh_change_shows_in_the_pull_request_diff(tmp_path: Path) -> None:
    from meshplan.gitdiff import compare

    before = render_repository(mesh_repo().write(tmp_path / "before"))[0].files
    repo = mesh_repo()
    repo.mesh_spec["cilium"]["peers"] = "all"
    after = render_repository(repo.write(tmp_path / "after"))[0].files
    changes = {c.name: c for c in compare(before, after)}
    values = changes["mesh/retail/eu1/cilium-values.yaml"]
    assert [c.label for c in values.changed] == ["Helm values"]
    assert "+      retail-us1:" in values.changed[0].diff  # eu1 now connects to us1 too


def test_an_istio_system_namespace_refinement_also_emits_is_one_object(tmp_path: Path) -> None:
    repo = mesh_repo()
    repo.services["payments"][0]["namespace"] = "istio-system"  # pay, called from eu1 and us1
    files = render_files(repo.write(tmp_path))
    namespaces = [d for d in documents(files["clusters/retail/eu1/namespaces.yaml"])
                  if d["metadata"]["name"] == "istio-system"]
    assert len(namespaces) == 1
    meta = namespaces[0]["metadata"]
    assert meta["labels"]["topology.istio.io/network"] == "net-eu"
    assert meta["annotations"]["clustermesh.cilium.io/global"] == "true"
    assert meta["annotations"]["meshplan.dev/required-by"] == "mesh/mesh1,retail/shop/web"
    for obj in kustomize_build_from(files, "clusters/retail/eu1", tmp_path / "out"):
        assert validate_object(obj, require_namespace=obj["kind"] != "Namespace") == []


def kustomize_build_from(files: dict[str, bytes], folder: str, out: Path) -> list[Any]:
    for path, content in files.items():
        if path.startswith(folder + "/"):
            target = out / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    return kustomize_build(out / folder)
