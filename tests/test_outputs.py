"""meshplan.outputs: the layout of the rendered tree, built and parsed in one place."""

from __future__ import annotations

from pathlib import Path

from meshplan.outputs import cluster_dir, clusters_of, read_tree, split_cluster_path

from tests.support.repos import write_text


def test_cluster_paths_round_trip() -> None:
    base = cluster_dir("domain1", "cl1")
    assert base == "clusters/domain1/cl1"
    assert split_cluster_path(f"{base}/policies.yaml") == ("domain1", "cl1", "policies.yaml")
    assert split_cluster_path(f"{base}/deeper/x.yaml") == ("domain1", "cl1", "deeper/x.yaml")
    for outside in (base, "clusters/domain1", "bootstrap/flux/domain1/cl1.yaml", ".meshplan-output",
                    "other/domain1/cl1/x.yaml"):
        assert split_cluster_path(outside) is None, outside


def test_clusters_of_changed_paths() -> None:
    assert clusters_of(["clusters/d2/c1/policies.yaml", "clusters/d1/c9/services.yaml",
                        "clusters/d2/c1/kustomization.yaml", "bootstrap/argocd/x.yaml"]) == [
        "d1/c9", "d2/c1"]


def test_read_tree_reads_regular_files_only(tmp_path: Path) -> None:
    write_text(tmp_path, "b/x.yaml", "x")
    write_text(tmp_path, "a.yaml", "a")
    (tmp_path / "link.yaml").symlink_to(tmp_path / "a.yaml")
    assert read_tree(tmp_path) == {"a.yaml": b"a", "b/x.yaml": b"x"}
    assert read_tree(tmp_path / "missing") == {}
