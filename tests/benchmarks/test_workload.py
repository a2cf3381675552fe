"""The benchmark workload generator (benchmarks/workload.py): deterministic, valid, realistic.

Sizes here are small custom ones so the whole file runs in a few seconds; the M and L presets
use the same code with bigger numbers.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from meshplan.outputs import read_tree
from meshplan.pipeline import render_repository, verify_repository
from meshplan.write import write_tree

from benchmarks.workload import (
    REGION_DOMAINS,
    SIZES,
    describe,
    generate,
    mutate_one_requirement,
    parse_size,
    read_inventory,
    to_yaml,
    workload_files,
)
from tests.support.cli import RunCli
from tests.support.repos import REPO_ROOT

SMALL = "4x3x12x60"  # 4 domains x 3 clusters, 12 services per domain, 60 requirements


def tree_bytes(root: Path) -> dict[str, bytes]:
    return read_tree(root)


def stamps(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("workload") / "repo"
    generate(SMALL, 7, repo)
    return repo


def test_same_seed_gives_byte_identical_repositories(tmp_path: Path, small_repo: Path) -> None:
    again = generate(SMALL, 7, tmp_path / "again")
    assert tree_bytes(tmp_path / "again") == tree_bytes(small_repo)
    assert again == describe(small_repo, SMALL, 7)


def test_a_different_seed_gives_a_different_repository(tmp_path: Path, small_repo: Path) -> None:
    generate(SMALL, 8, tmp_path / "other")
    assert tree_bytes(tmp_path / "other") != tree_bytes(small_repo)


def test_generate_replaces_what_was_there(tmp_path: Path) -> None:
    generate("2x2x4x10", 1, tmp_path)
    (tmp_path / "requirements" / "team-00" / "stale.yaml").write_text("kind: Requirement\n")
    generate("2x2x4x10", 1, tmp_path)
    assert not (tmp_path / "requirements" / "team-00" / "stale.yaml").exists()


def test_preset_m_is_deterministic_without_touching_disk() -> None:
    first = list(workload_files(SIZES["M"], 1))
    assert first == list(workload_files(SIZES["M"], 1))
    inventory = [p for p, _ in first if p.startswith("inventory/")]
    requirements = [p for p, _ in first if p.startswith("requirements/")]
    assert len(inventory) == 10
    assert len(requirements) == 1_000
    assert len(set(requirements)) == len(requirements)


def test_sizes_parse() -> None:
    assert parse_size("S") is None
    assert parse_size("L") == SIZES["L"]
    assert SIZES["L"].clusters == 1_000 and SIZES["L"].services == 10_000
    assert SIZES["L"].requirements == 10_000
    custom = parse_size("3x4x5x6+ids")
    assert custom is not None and custom.mesh_ids and custom.clusters == 12
    for bad in ("XL", "3x4", "0x1x1x1", "20x20x1x1+ids"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_the_generated_repository_validates_cleanly(small_repo: Path, cli: RunCli) -> None:
    code, stdout, stderr = cli(["validate", "--repo", str(small_repo), "--format", "json"])
    report = json.loads(stdout)
    assert code == 0, stderr
    assert report["ok"] is True
    # Not even a warning, but for peers limited to some clusters of a service whose global
    # Service load-balances to others too (some generated peers name a cluster on purpose).
    assert [d for d in report["diagnostics"] if not is_load_balancing(d["message"])] == []


def is_load_balancing(message: str) -> bool:
    return message.startswith("expected the clusters the peers of these pods admit") and \
        "load-balanced to" in message


def test_the_generated_repository_renders_without_errors_or_warnings(small_repo: Path,
                                                                      tmp_path: Path) -> None:
    rendered, diagnostics = render_repository(small_repo)
    assert [d for d in diagnostics if not is_load_balancing(d.message)] == []
    assert rendered.summary.clusters == 12
    assert rendered.summary.policies > 0
    assert rendered.summary.services > 0  # cross-cluster flows made global/mirror Services
    assert rendered.summary.namespaces > 0
    write_tree(tmp_path / "out", rendered.files)
    assert (tmp_path / "out" / "clusters").is_dir()


def test_mesh_ids_when_asked_for_still_validate(tmp_path: Path, cli: RunCli) -> None:
    generate("3x3x6x20+ids", 3, tmp_path)
    text = (tmp_path / "inventory" / "team-02.yaml").read_text()
    assert "meshId: 9" in text
    code, _stdout, stderr = cli(["validate", "--repo", str(tmp_path)])
    assert code == 0, stderr


def test_a_mesh_plan_when_asked_for_renders_cleanly(tmp_path: Path) -> None:
    """``+mesh``: every cluster a ClusterMesh member with peers: needed; calls between domains
    stay within regions of REGION_DOMAINS domains, whose clusters get ids 1..n."""
    size = parse_size("12x3x8x80+mesh")
    assert size is not None and size.mesh and size.clusters == 36
    assert parse_size("L+mesh") == replace(SIZES["L"], name="L+mesh", mesh=True)
    for bad in ("S+mesh", "3x3x3x3+ids+mesh", "2x60x1x1+mesh"):
        with pytest.raises(ValueError):
            parse_size(bad)
    generate("12x3x8x80+mesh", 5, tmp_path)
    assert (tmp_path / "inventory" / "mesh.yaml").is_file()
    rendered, diagnostics = render_repository(tmp_path)
    assert [d for d in diagnostics if not is_load_balancing(d.message)] == []
    values = [f for f in rendered.files if f.path.endswith("cilium-values.yaml")]
    assert len(values) == 36
    peers = {f.path.split("/")[1] for f in values
             for peer in yaml.safe_load(f.content)["clustermesh"]["config"]["clusters"]
             if peer.split("-k8s-")[0] != f.path.split("/")[1]}
    assert peers  # calls between domains (of one region) made peers
    regions = {int(f.path.split("/")[1].removeprefix("team-")) // REGION_DOMAINS
               for f in values}
    assert regions == {0, 1, 2}


@pytest.mark.parametrize("text", ["12x3x8x80+istio", "12x3x8x80+mesh+istio"])
def test_istio_when_asked_for_renders_both_layers_and_verifies(text: str,
                                                              tmp_path: Path) -> None:
    """``+istio``: every cluster an Istio member (its own network, or with ``+mesh`` one per
    domain), every service a service account; the identity layer renders and verifies."""
    size = parse_size(text)
    assert size is not None and size.istio and size.mesh is text.endswith("+mesh+istio")
    assert parse_size("L+istio") == replace(SIZES["L"], name="L+istio", istio=True)
    for bad in ("S+istio", "3x3x3x3+ids+istio"):
        with pytest.raises(ValueError):
            parse_size(bad)
    generate(text, 5, tmp_path)
    rendered, diagnostics = render_repository(tmp_path)
    # what identity cannot say (raw-label and CIDR peers) is warned about, and CIDRs the
    # generator draws over pod networks, nothing else
    identity = ("a raw pod-label peer has no known service account",
                "a CIDR cannot be admitted by workload identity",
                "expected an address block outside the pod networks")
    assert [d.message for d in diagnostics if not is_load_balancing(d.message)
            and not d.message.startswith(identity)] == []
    security = [f for f in rendered.files if f.path.endswith("istio-security.yaml")]
    kinds = [d["kind"] for f in security for d in yaml.safe_load_all(f.content)]
    assert "AuthorizationPolicy" in kinds and "PeerAuthentication" in kinds
    write_tree(tmp_path / "rendered", rendered.files)
    report = verify_repository(tmp_path)
    assert [d.format_text() for d in report.diagnostics
            if d.severity.value == "error"] == []


@pytest.mark.parametrize("text", ["12x3x8x80+mesh+obs", "12x3x8x80+istio+obs"])
def test_monitoring_when_asked_for_renders_cleanly(text: str, tmp_path: Path) -> None:
    """``+obs``: the Mesh document's observability section, every cluster but the first
    federated by it, every cluster watched; with ``+istio`` one plaintext alert per STRICT
    PeerAuthentication the identity layer renders."""
    size = parse_size(text)
    assert size is not None and size.observability
    assert size.mesh is text.endswith("+mesh+obs") and size.istio is text.endswith("+istio+obs")
    for bad in ("M+obs", "S+obs", "12x3x8x80+obs+mesh", "12x3x8x80+mesh+obs+istio"):
        with pytest.raises(ValueError):
            parse_size(bad)
    generate(text, 5, tmp_path)
    rendered, diagnostics = render_repository(tmp_path)  # no error
    assert [d for d in diagnostics if "observability" in d.path] == []
    rules = [f for f in rendered.files if f.path.endswith("prometheus-rules.yaml")]
    scrapes = [f for f in rendered.files if f.path.endswith("scrape-configs.yaml")]
    assert len(rules) == 36 and len(scrapes) == 1
    assert scrapes[0].content.count(b"kind: ScrapeConfig") == 35
    strict = sum(f.content.count(b"kind: PeerAuthentication") for f in rendered.files
                 if f.path.endswith("istio-security.yaml"))
    alerts = sum(f.content.count(b"alert: MeshplanPlaintextIntoStrictNamespace") for f in rules)
    assert alerts == strict and (strict > 0) is size.istio


def test_the_mix_is_realistic(small_repo: Path) -> None:
    inventory = read_inventory(small_repo)
    services = [s for d in inventory.values() for s in d["services"].values()]
    assert all(1 <= len(s["clusters"]) <= 3 for s in services)
    assert 0.15 <= sum(1 for s in services if s.get("exportTo")) / len(services) <= 0.55
    namespaces = {d: {s["namespace"] for s in v["services"].values()} for d, v in inventory.items()}
    assert all(2 <= len(ns) <= 8 for ns in namespaces.values())
    assert all(n.startswith(f"{d}-") for d, ns in namespaces.items() for n in ns)
    kinds: Counter[str] = Counter()
    for path in sorted((small_repo / "requirements").rglob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        spec = doc["spec"]
        selector = spec["endpointSelector"]["matchLabels"]
        kinds["by-service" if "service" in selector else "by-labels"] += 1
        for rule in spec.get("egress", []):
            for peer in rule.get("toEndpoints", []):
                labels = peer["matchLabels"]
                if labels.get("domain"):
                    kinds["cross-domain"] += 1
                if labels.get("service") == "*":
                    kinds["wildcard"] += 1
                if "cluster" in labels:
                    kinds["cluster-peer"] += 1
            if "toCIDRSet" in rule:
                kinds["cidr"] += 1
        if spec.get("ingress"):
            kinds["ingress"] += 1
    assert kinds["by-service"] > kinds["by-labels"] > 0
    assert kinds["cross-domain"] >= 30
    assert kinds["ingress"] >= 15
    assert kinds["cidr"] >= 1
    assert kinds["cluster-peer"] >= 1


def test_the_bundled_example_is_size_s(tmp_path: Path) -> None:
    info = generate("S", 1, tmp_path)
    root = REPO_ROOT
    assert tree_bytes(tmp_path / "inventory") == tree_bytes(root / "inventory")
    assert tree_bytes(tmp_path / "requirements") == tree_bytes(root / "requirements")
    assert info.requirements == len(list((root / "requirements").rglob("*.yaml")))


def test_to_yaml_round_trips() -> None:
    doc = {"metadata": {"name": "x", "namespace": "*"},
           "spec": {"description": "Plain words, with a comma.", "port": "443", "on": "yes",
                    "cidrs": ["10.0.0.0/8"], "items": [{"a": 1, "b": [True, None]}],
                    "empty": [], "nested": {"k8s:io.kubernetes.pod.namespace": "a: b"}}}
    assert yaml.safe_load(to_yaml(doc)) == doc


def test_no_op_and_one_requirement_change(tmp_path: Path, small_repo: Path) -> None:
    """What the benchmark times at L, checked for correctness on a small workload."""
    repo = tmp_path / "repo"
    generate(SMALL, 7, repo)
    out = tmp_path / "rendered"
    write_tree(out, render_repository(repo)[0].files)
    before = stamps(out)
    assert write_tree(out, render_repository(repo)[0].files).unchanged
    assert stamps(out) == before

    mutation = mutate_one_requirement(repo)
    assert (repo / mutation.file).read_bytes() != mutation.original
    result = write_tree(out, render_repository(repo)[0].files)
    after = stamps(out)
    changed = sorted(p for p in after if after[p] != before.get(p))
    assert changed and sorted(result.changed) == changed
    clusters = {"/".join(p.split("/")[1:3]) for p in changed}
    assert clusters <= set(mutation.expected_clusters)
    mutation.undo(repo)
    assert tree_bytes(repo) == tree_bytes(small_repo)


@pytest.mark.slow
def test_the_runner_measures_a_tiny_size_end_to_end(tmp_path: Path) -> None:
    """`python -m benchmarks --sizes ...` (subprocess per size) writes the Markdown table."""
    import subprocess

    results = tmp_path / "RESULTS.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--sizes", "2x2x4x12", "--workdir",
         str(tmp_path / "work"), "--results", str(results)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    text = results.read_text()
    assert "| 2x2x4x12 | 2 x 2 | 8 | 12 |" in text
    assert "CSafeDumper" in text and "orjson" in text
    raw = json.loads((tmp_path / "work" / "results.json").read_text())
    [result] = raw["results"]
    assert result["noop"]["files_rewritten"] == 0
    assert result["one_change"]["unexpected"] == []
    assert result["output"]["bytes"] > 0 and result["baselines"]["documents"] > 0
    assert set(result["stages"]) >= {"load", "schema", "model", "check", "refine", "render",
                                     "write"}
