"""``meshplan mesh propose-ids`` (meshplan.mesh.ids): proposals that keep the ID rule.

The proposal is applied with the real ``git apply`` and the result validated with the real
pipeline, so "keeps the rule" means exactly what the checker enforces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from meshplan.pipeline import validate

from tests.support.cli import RunCli
from tests.support.gitserver import git
from tests.support.mesh_fixture import MeshRepo, mesh_repo


def without_ids(repo: MeshRepo, *names: str) -> MeshRepo:
    for name in names:
        del repo.cluster(name)["meshId"]
    return repo


def ids(root: Path) -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    for path in sorted((root / "inventory").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if doc["kind"] == "Domain":
            for cluster in doc["spec"]["clusters"]:
                found[cluster["name"]] = cluster.get("meshId")
    return found


def apply(root: Path, patch: str) -> None:
    """``git apply`` the proposal, as its user would."""
    git(root, "init", "-q")
    patch_file = root / ".git" / "ids.patch"
    patch_file.write_text(patch, encoding="utf-8")
    git(root, "apply", str(patch_file))


def test_the_patch_applies_and_the_result_is_valid(cli: RunCli, tmp_path: Path) -> None:
    root = without_ids(mesh_repo(), "eu1", "us1", "p1").write(tmp_path)
    code, _out, err = cli(["validate", "--repo", str(root)])
    assert code == 1 and "propose-ids" in err
    code, patch, err = cli(["mesh", "propose-ids", "--repo", str(root)])
    assert code == 0, err
    assert patch.startswith("--- a/inventory/payments.yaml\n+++ b/inventory/payments.yaml\n")
    apply(root, patch)
    # ap1 keeps 13; eu1 and us1 both connect to ap1 and p1, so all four differ
    assert ids(root) == {"p1": 1, "eu1": 2, "us1": 3, "ap1": 13}
    inventory, diagnostics = validate(root)
    assert inventory is not None, [d.format_text() for d in diagnostics]


def test_assigned_ids_never_change_and_output_is_deterministic(cli: RunCli,
                                                               tmp_path: Path) -> None:
    root = without_ids(mesh_repo(), "ap1").write(tmp_path)
    runs = [cli(["mesh", "propose-ids", "--repo", str(root), "--format", "text"])
            for _ in range(2)]
    assert runs[0] == runs[1]
    code, out, _ = runs[0]
    assert code == 0
    # ap1 connects to eu1 (11) and us1 (12), which connect to p1 (21): 1 is the smallest free
    assert out == ("inventory/retail.yaml:36:11: spec.clusters[2]: meshId: 1 "
                   "(retail/ap1, Cilium name retail-ap1)\n")


def test_unconnected_clusters_may_share_a_proposed_id(cli: RunCli, tmp_path: Path) -> None:
    repo = without_ids(mesh_repo(), "ap1")
    repo.clusters["retail"].append({"name": "lone", "podCIDRs": ["10.99.0.0/16"],
                                    "clustermesh": {"address": "203.0.113.99"}})
    code, out, _ = cli(["mesh", "propose-ids", "--repo", str(repo.write(tmp_path)),
                        "--format", "text"])
    assert code == 0
    assert [line.split("meshId: ")[1].split()[0] for line in out.splitlines()] == ["1", "1"]


def test_nothing_to_propose(cli: RunCli, tmp_path: Path) -> None:
    code, out, err = cli(["mesh", "propose-ids", "--repo", str(mesh_repo().write(tmp_path))])
    assert (code, out) == (0, "") and "nothing to propose" in err


def test_flow_style_entries_are_listed_instead_of_patched(cli: RunCli, tmp_path: Path) -> None:
    root = without_ids(mesh_repo(), "ap1").write(tmp_path)
    path = root / "inventory" / "retail.yaml"
    doc: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    path.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=True),
                    encoding="utf-8")
    code, out, err = cli(["mesh", "propose-ids", "--repo", str(root)])
    assert code == 0 and out == ""
    assert "not in the patch (flow-style entry), add by hand" in err and "meshId: 1" in err


def test_an_exhausted_id_space_is_an_error(cli: RunCli, tmp_path: Path) -> None:
    """v connects to two hubs whose 200 spokes each use up, between them, all 255 IDs."""
    repo = mesh_repo()
    fleet: list[dict[str, Any]] = [
        {"name": "h1", "meshId": 201, "clustermesh": {"address": "198.18.0.1"}},
        {"name": "h2", "meshId": 1, "clustermesh": {"address": "198.18.0.2"}},
        {"name": "v", "clustermesh": {"address": "198.18.0.3"}}]
    for i in range(1, 201):
        fleet.append({"name": f"s{i}", "meshId": i, "clustermesh": {"address": f"198.18.1.{i}"}})
        fleet.append({"name": f"t{i}", "meshId": 55 + i,
                      "clustermesh": {"address": f"198.18.2.{i}"}})
    repo.clusters["fleet"] = fleet
    repo.services["fleet"] = [
        {"name": f"hub{n}", "namespace": "hub", "selector": {"app": f"hub{n}"},
         "ports": [{"port": 80}], "clusters": [f"h{n}"]} for n in (1, 2)]
    for n, spokes in ((1, "s"), (2, "t")):
        repo.requirements[f"requirements/fleet/to-hub{n}.yaml"] = {
            "apiVersion": "meshplan.dev/v1alpha1", "kind": "Requirement",
            "metadata": {"name": f"to-hub{n}", "namespace": "hub"},
            "spec": {"clusters": [f"{spokes}{i}" for i in range(1, 201)] + ["v"],
                     "endpointSelector": {"matchLabels": {"app": "client"}},
                     "egress": [{"toEndpoints": [{"matchLabels": {"service": f"hub{n}"}}]}]}}
    code, _out, err = cli(["mesh", "propose-ids", "--repo", str(repo.write(tmp_path))])
    assert code == 1, err
    assert "spec.clusters[2].meshId: expected a free Cilium cluster id for fleet/v (1 to 255, " \
           "not used by the clusters it connects to or by their peers), found none" in err
    assert "maxConnectedClusters: 511 doubles the ID space" in err


def test_help_explains(cli: RunCli) -> None:
    code, out, _ = cli(["mesh", "propose-ids", "--help"])
    assert code == 0
    for words in ("Never changes an assigned ID", "maxConnectedClusters", "peers: needed",
                  "--format"):
        assert words in out
    code, out, _ = cli(["mesh", "--help"])
    assert code == 0 and "propose-ids" in out
