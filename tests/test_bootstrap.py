"""GitOps bootstrap manifests (``bootstrap/``) and the ``kind: GitOps`` inventory document."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from meshplan.bootstrap import flux_url
from meshplan.pipeline import render_repository

from tests.support.cli import run_validate
from tests.support.k8s import validate_object
from tests.support.repos import REPO_ROOT

GO_FIELD = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


def rendered(repo: Path) -> dict[str, str]:
    result, _ = render_repository(repo)
    return {f.path: f.content.decode() for f in result.files}


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def edit_yaml(path: Path, change: Any) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def set_gitops(repo: Path, domain: str, cluster: str, gitops: dict[str, str] | None) -> None:
    def change(data: dict[str, Any]) -> None:
        for entry in data["spec"]["clusters"]:
            if entry["name"] == cluster:
                entry.pop("gitops", None)
                if gitops is not None:
                    entry["gitops"] = gitops

    edit_yaml(repo / "inventory" / f"{domain}.yaml", change)


def write_gitops(repo: Path, spec: str) -> None:
    (repo / "inventory" / "gitops.yaml").write_text(
        "apiVersion: meshplan.dev/v1alpha1\nkind: GitOps\nspec:\n" + spec, encoding="utf-8")


def expand(template: Any, element: dict[str, str]) -> Any:
    """Argo CD's goTemplate with missingkey=error, for the ``{{.field}}`` form used here."""
    if isinstance(template, dict):
        return {expand(k, element): expand(v, element) for k, v in template.items()}
    if isinstance(template, list):
        return [expand(v, element) for v in template]
    if isinstance(template, str):
        def field(match: re.Match[str]) -> str:
            if match[1] not in element:
                raise AssertionError(f"map has no entry for key {match[1]!r}")
            return element[match[1]]
        return GO_FIELD.sub(field, template)
    return template


def applications(files: dict[str, str]) -> list[dict[str, Any]]:
    apps = []
    for appset in documents(files["bootstrap/argocd/applicationset.yaml"]):
        spec = appset["spec"]
        assert spec["goTemplate"] is True and "missingkey=error" in spec["goTemplateOptions"]
        for generator in spec["generators"]:
            for element in generator["list"]["elements"]:
                apps.append(expand(spec["template"], element))
    return apps


# --------------------------------------------------------------------------- the example


def test_example_bootstrap_validates_against_the_real_crds(example_repo: Path) -> None:
    files = rendered(example_repo)
    bootstrap = sorted(p for p in files if p.startswith("bootstrap/"))
    assert bootstrap == ["bootstrap/argocd/applicationset.yaml",
                         "bootstrap/flux/domain2/cl3.yaml", "bootstrap/flux/domain2/cl4.yaml"]
    kinds = []
    for path in bootstrap:
        for document in documents(files[path]):
            assert validate_object(document) == [], path
            kinds.append(document["kind"])
    assert sorted(kinds) == ["ApplicationSet", "ApplicationSet", "GitRepository",
                             "GitRepository", "Kustomization", "Kustomization"]
    assert not any(re.search(r"\d{4}-\d\d-\d\dT\d\d:", files[p]) for p in bootstrap)


def test_argocd_sends_each_folder_to_its_inventory_destination_only(example_repo: Path) -> None:
    files = rendered(example_repo)
    apps = applications(files)
    routes = {app["spec"]["source"]["path"]: app["spec"]["destination"] for app in apps}
    assert routes == {"clusters/domain1/cl1": {"name": "cluster1"},
                      "clusters/domain1/cl2": {"server": "https://cl2.domain1.example.com:6443"}}
    for app in apps:
        assert app["spec"]["source"]["repoURL"] == \
            "https://git.example.com/platform/mesh-config.git"
        assert app["spec"]["source"]["targetRevision"] == "rendered"
        assert app["spec"]["project"] == "default"
        assert f"{app['spec']['source']['path']}/kustomization.yaml" in files
    assert len({app["metadata"]["name"] for app in apps}) == len(apps)
    text = files["bootstrap/argocd/applicationset.yaml"]
    assert "#   clusters/domain2/cl3 (Flux, see bootstrap/flux/)\n" in text
    assert "#   clusters/domain2/cl4 (Flux, see bootstrap/flux/)\n" in text


def test_flux_applies_only_its_own_cluster_folder(example_repo: Path) -> None:
    files = rendered(example_repo)
    for cluster in ("cl3", "cl4"):
        source, kustomization = documents(files[f"bootstrap/flux/domain2/{cluster}.yaml"])
        assert source["kind"] == "GitRepository"
        assert source["spec"] == {"interval": "5m", "ref": {"branch": "rendered"},
                                  "url": "https://git.example.com/platform/mesh-config.git"}
        assert kustomization["kind"] == "Kustomization"
        spec = kustomization["spec"]
        assert spec["path"] == f"./clusters/domain2/{cluster}"
        assert f"{spec['path'][2:]}/kustomization.yaml" in files
        assert spec["prune"] is True and spec["interval"] == "5m"
        assert spec["sourceRef"] == {"kind": "GitRepository", "name": source["metadata"]["name"]}
        assert source["metadata"]["namespace"] == kustomization["metadata"]["namespace"] == \
            "flux-system"
    assert not any(p.startswith("bootstrap/flux/domain1/") for p in files)


def test_committed_reference_output_has_the_bootstrap_files() -> None:
    files = {p: t for p, t in rendered(REPO_ROOT).items() if p.startswith("bootstrap/")}
    assert files  # the bundled example has a GitOps document
    for path, text in files.items():
        assert (REPO_ROOT / "rendered" / path).read_text(encoding="utf-8") == text, path
    on_disk = {p.relative_to(REPO_ROOT / "rendered").as_posix()
               for p in (REPO_ROOT / "rendered" / "bootstrap").rglob("*") if p.is_file()}
    assert on_disk == set(files)


# --------------------------------------------------------------------------- variations


def test_without_a_gitops_document_nothing_is_bootstrapped(example_repo: Path) -> None:
    (example_repo / "inventory" / "gitops.yaml").unlink()
    assert not any(p.startswith("bootstrap/") for p in rendered(example_repo))
    code, _, err = run_validate(example_repo)
    assert code == 0
    assert "GitOps destinations are ignored without a GitOps document" in err


def test_defaults_secret_and_scp_urls(example_repo: Path) -> None:
    write_gitops(example_repo, "  repoURL: git@github.com:example/mesh.git\n"
                               "  flux: {secretName: mesh-deploy-key, interval: 1m30s}\n")
    files = rendered(example_repo)
    source, kustomization = documents(files["bootstrap/flux/domain2/cl3.yaml"])
    assert source["spec"]["url"] == "ssh://git@github.com/example/mesh.git"
    assert source["spec"]["secretRef"] == {"name": "mesh-deploy-key"}
    assert kustomization["spec"]["interval"] == "1m30s"
    for app in applications(files):  # Argo CD takes the scp form as it is
        assert app["spec"]["source"]["repoURL"] == "git@github.com:example/mesh.git"
        assert app["spec"]["source"]["targetRevision"] == "rendered"
    for appset in documents(files["bootstrap/argocd/applicationset.yaml"]):
        assert appset["metadata"]["namespace"] == "argocd"
        assert validate_object(appset) == []
    for document in documents(files["bootstrap/flux/domain2/cl3.yaml"]):
        assert validate_object(document) == []


def test_only_server_destinations_give_one_applicationset(example_repo: Path) -> None:
    set_gitops(example_repo, "domain1", "cl1", {"argocdDestinationServer": "https://a:6443"})
    write_gitops(example_repo, "  repoURL: https://h/m.git\n  branch: out/mesh\n"
                               "  argocd: {namespace: gitops, project: mesh}\n")
    files = rendered(example_repo)
    appsets = documents(files["bootstrap/argocd/applicationset.yaml"])
    assert [a["metadata"]["name"] for a in appsets] == ["meshplan-clusters-by-server"]
    assert appsets[0]["metadata"]["namespace"] == "gitops"
    apps = applications(files)
    assert {a["spec"]["destination"]["server"] for a in apps} == {"https://a:6443",
                                                                  "https://cl2.domain1.example.com:6443"}
    assert {a["spec"]["project"] for a in apps} == {"mesh"}
    assert {a["spec"]["source"]["targetRevision"] for a in apps} == {"out/mesh"}


def test_no_argocd_cluster_no_applicationset(example_repo: Path) -> None:
    set_gitops(example_repo, "domain1", "cl1", None)
    set_gitops(example_repo, "domain1", "cl2", {"fluxNamespace": "gitops-agent"})
    files = rendered(example_repo)
    assert "bootstrap/argocd/applicationset.yaml" not in files
    source, _ = documents(files["bootstrap/flux/domain1/cl2.yaml"])
    assert source["metadata"]["namespace"] == "gitops-agent"


# --------------------------------------------------------------------------- invalid input


@pytest.mark.parametrize("url", [
    "https://user:s3cret@github.com/org/mesh.git",
    "https://ghp_s3cret@github.com/org/mesh.git",
    "ssh://git:s3cret@github.com/org/mesh.git",
])
def test_repo_url_with_credentials_is_refused_without_echoing_them(example_repo: Path,
                                                                   url: str) -> None:
    write_gitops(example_repo, "  branch: rendered\n"
                               f"  repoURL: {url}\n")
    code, out, err = run_validate(example_repo)
    assert code == 1
    assert ("inventory/gitops.yaml:5:12: spec.repoURL: expected a repository URL without "
            "credentials") in err
    assert "s3cret" not in err + out


@pytest.mark.parametrize("url", ["http://github.com/org/mesh.git", "mesh", "file:///srv/mesh"])
def test_repo_url_must_be_https_or_ssh(example_repo: Path, url: str) -> None:
    write_gitops(example_repo, f"  repoURL: {url}\n")
    code, _, err = run_validate(example_repo)
    assert code == 1
    assert "inventory/gitops.yaml:4:12: spec.repoURL: expected a repository URL: https://" in err


def test_flux_url_conversion() -> None:
    assert flux_url("git@github.com:org/mesh.git") == "ssh://git@github.com/org/mesh.git"
    assert flux_url("ssh://git@github.com/org/mesh.git") == "ssh://git@github.com/org/mesh.git"
    assert flux_url("https://github.com/org/mesh.git") == "https://github.com/org/mesh.git"


def test_gitops_document_structure_errors(example_repo: Path) -> None:
    write_gitops(example_repo, "  repoURL: https://h/m.git\n  brnach: x\n"
                               "  flux: {interval: soon}\n")
    (example_repo / "inventory" / "gitops2.yaml").write_text(
        "apiVersion: meshplan.dev/v1alpha1\nkind: GitOps\nspec:\n  repoURL: https://h/n.git\n",
        encoding="utf-8")
    code, _, err = run_validate(example_repo)
    assert code == 1
    assert "inventory/gitops.yaml:5:3: spec.brnach: expected one of the keys argocd, branch, " \
        "flux, repoURL; found the unknown key 'brnach' (did you mean 'branch'?)" in err
    assert "spec.flux.interval: expected a Flux interval such as 5m" in err
    assert ("inventory/gitops2.yaml:2:7: kind: expected at most one GitOps document, found "
            "another (first at inventory/gitops.yaml:2:7)") in err


@pytest.mark.parametrize("branch", ["a..b", "-x", "x.lock", "x/", "with space"])
def test_branch_names_are_checked(example_repo: Path, branch: str) -> None:
    write_gitops(example_repo, f"  repoURL: https://h/m.git\n  branch: '{branch}'\n")
    code, _, err = run_validate(example_repo)
    assert code == 1 and "spec.branch: expected a git branch name" in err


def test_conflicting_cluster_destinations(example_repo: Path) -> None:
    set_gitops(example_repo, "domain1", "cl1", {"argocdDestinationName": "a",
                                                "argocdDestinationServer": "https://a"})
    set_gitops(example_repo, "domain2", "cl3", {"argocdDestinationName": "c",
                                                "fluxNamespace": "flux-system"})
    code, _, err = run_validate(example_repo)
    assert code == 1
    assert "expected one Argo CD destination, found both argocdDestinationName and " \
        "argocdDestinationServer" in err
    assert "expected one GitOps agent per cluster" in err


def test_gitops_document_without_destinations_warns(example_repo: Path) -> None:
    for domain, cluster in (("domain1", "cl1"), ("domain1", "cl2"), ("domain2", "cl3"),
                            ("domain2", "cl4")):
        set_gitops(example_repo, domain, cluster, None)
    code, _, err = run_validate(example_repo)
    assert code == 0
    assert "warning: no cluster names a GitOps destination" in err
    assert not any(p.startswith("bootstrap/") for p in rendered(example_repo))
