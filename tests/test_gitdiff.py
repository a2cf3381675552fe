"""``meshplan diff``: per-cluster object changes between a git ref and the working tree."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from meshplan.diagnostics import Diagnostic
from meshplan.gitdiff import (
    COMMENT_MARKER,
    BaseRender,
    DiffReport,
    GroupChanges,
    ObjectChange,
    diff_report,
    fence_for,
    format_markdown,
    inline_code,
)
from meshplan.pipeline import render_with_inventory

from benchmarks.workload import generate, mutate_one_requirement, read_inventory
from tests.support.cli import run_cli
from tests.support.gitserver import commit_all, git, isolate_git
from tests.support.repos import REBEL_REQUIREMENT, copy_example
from tests.support.spies import render_cached_modes

# What the second commit does, cluster by cluster (derived by hand from the generation rules):
# - rebel-base (domain2, runs in cl3 only) may call service3 (ns1, cl3): a policy in rebel-base's
#   namespace and an ExternalName Service default/service3 so it resolves the short name;
# - backend (domain1, cl1 and cl2) also admits service1 (ns1, cl1): the backend policy changes
#   in both clusters, and ns1 in cl1 is now also required by backend.
EXPECTED = {
    "domain1/cl1": {"added": [], "removed": [],
                    "changed": ["CiliumNetworkPolicy backend-namespace/backend", "Namespace ns1"]},
    "domain1/cl2": {"added": [], "removed": [],
                    "changed": ["CiliumNetworkPolicy backend-namespace/backend"]},
    "domain2/cl3": {"added": ["CiliumNetworkPolicy default/rebel-base", "Service default/service3"],
                    "removed": [], "changed": []},
}


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_git(monkeypatch, tmp_path / "home")


def make_history(repo: Path) -> tuple[str, str]:
    """Two commits: the bundled example, then EXPECTED's change."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    copy_example(repo)
    first = commit_all(repo, "Bundled example")
    (repo / "requirements" / "domain2" / "rebel-base.yaml").write_text(REBEL_REQUIREMENT,
                                                                       encoding="utf-8")
    backend = repo / "requirements" / "domain1" / "backend.yaml"
    text = backend.read_text(encoding="utf-8")
    marker = "        - matchLabels: {service: frontend, domain: domain2}\n"
    assert marker in text
    extra = "        - matchLabels: {service: service1}\n"
    backend.write_text(text.replace(marker, marker + extra), encoding="utf-8")
    second = commit_all(repo, "rebel-base calls service3; backend admits service1")
    return first, second


def diff_cli(repo: Path, *args: str) -> tuple[int, str, str]:
    return run_cli(["diff", "--repo", str(repo), *args])


def parse_text(out: str) -> dict[str, dict[str, list[str]]]:
    """The per-cluster sections of the text format."""
    found: dict[str, dict[str, list[str]]] = {}
    current = None
    for line in out.splitlines():
        head = re.fullmatch(r"(\S+): (\d+) added, (\d+) removed, (\d+) changed", line)
        if head:
            current = found.setdefault(head[1], {"added": [], "removed": [], "changed": []})
            continue
        sign = {"  + ": "added", "  - ": "removed", "  ~ ": "changed"}.get(line[:4])
        if current is not None and sign:
            current[sign].append(line[4:])
    return found


def worktrees(repo: Path) -> list[str]:
    return [line for line in git(repo, "worktree", "list", "--porcelain").splitlines()
            if line.startswith("worktree ")]


def test_two_commit_history_shows_exactly_the_expected_changes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_history(repo)
    status = git(repo, "status", "--porcelain")

    code, out, err = diff_cli(repo, "--base", "HEAD~1")

    assert code == 0, err
    assert parse_text(out) == EXPECTED
    assert out.startswith("meshplan diff: HEAD~1 (")
    # Each changed object comes with a unified diff of its YAML.
    assert "      --- a/domain1/cl2/CiliumNetworkPolicy/backend-namespace/backend\n" in out
    assert "      +        name: service1\n" in out
    assert "      +        io.cilium.k8s.policy.cluster: cluster1\n" in out
    # The summary table.
    assert re.search(r"^  domain2/cl3\s+2\s+0\s+0$", out, re.M)
    assert re.search(r"^  total\s+2\s+0\s+3$", out, re.M)
    assert "(1 other cluster(s) unchanged)" in out
    # Nothing left behind, nothing touched.
    assert len(worktrees(repo)) == 1
    assert git(repo, "status", "--porcelain") == status


def test_the_reverse_diff_shows_removals(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first, second = make_history(repo)
    git(repo, "checkout", "-q", first)

    code, out, err = diff_cli(repo, "--base", second)

    assert code == 0, err
    expected = {cluster: {"added": c["removed"], "removed": c["added"], "changed": c["changed"]}
                for cluster, c in EXPECTED.items()}
    assert parse_text(out) == expected


def test_markdown_report_for_pull_requests(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_history(repo)

    code, out, err = diff_cli(repo, "--base", "HEAD~1", "--format", "markdown")

    assert code == 0, err
    assert out.startswith(COMMENT_MARKER + "\n")
    assert "| `domain1/cl1` | 0 | 0 | 2 |" in out
    assert "| `domain1/cl2` | 0 | 0 | 1 |" in out
    assert "| `domain2/cl3` | 2 | 0 | 0 |" in out
    assert "| **Total** | **2** | **0** | **3** |" in out
    assert "- added `CiliumNetworkPolicy default/rebel-base`" in out
    assert "<summary>diff of CiliumNetworkPolicy backend-namespace/backend</summary>" in out
    assert out.count("```diff\n") == 3
    assert out.count("<details>") == out.count("</details>") == 3
    assert "`domain2/cl4`" not in out  # no table row or section (the flow picture may name it)


def test_exit_code_only_when_asked(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_history(repo)

    assert diff_cli(repo, "--base", "HEAD~1", "--exit-code")[0] == 1
    code, out, _ = diff_cli(repo, "--exit-code")  # HEAD against the working tree: no change
    assert code == 0
    assert "No changes to the rendered output (4 cluster(s) compared)." in out
    code, out, _ = diff_cli(repo, "--format", "markdown")
    assert code == 0 and "No changes to the rendered output" in out


def test_base_with_invalid_inputs_is_said_clearly(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    copy_example(repo)
    good = (repo / "inventory" / "domain1.yaml").read_text(encoding="utf-8")
    (repo / "inventory" / "domain1.yaml").write_text(good.replace("meshId: 1", "meshId: 0"),
                                                     encoding="utf-8")
    commit_all(repo, "broken")
    (repo / "inventory" / "domain1.yaml").write_text(good, encoding="utf-8")
    commit_all(repo, "fixed")

    code, out, err = diff_cli(repo, "--base", "HEAD~1")

    assert code == 0, err
    assert re.search(r"has invalid inputs \(\d+ error\(s\)\), so it cannot be rendered", out)
    assert "has invalid inputs" in err
    assert "base HEAD~1: inventory/domain1.yaml:" in err  # the base's own diagnostics
    sections = parse_text(out)
    assert set(sections) >= {"domain1/cl1", "domain1/cl2", "domain2/cl3", "domain2/cl4"}
    assert all(not s["removed"] and not s["changed"] for s in sections.values())
    assert len(worktrees(repo)) == 1


def test_base_without_inventory_is_said_clearly(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("empty\n", encoding="utf-8")
    commit_all(repo, "empty")
    copy_example(repo)
    commit_all(repo, "example")

    code, out, err = diff_cli(repo, "--base", "HEAD~1", "--format", "markdown")

    assert code == 0, err
    assert "has no inventory/ folder: every object is shown as added" in out
    assert "| `domain2/cl4` |" in out


def test_invalid_working_tree_and_unknown_base_are_errors(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_history(repo)
    code, _, err = diff_cli(repo, "--base", "no-such-ref")
    assert code == 1
    assert "base ref 'no-such-ref' is not a commit" in err
    assert "Traceback" not in err

    (repo / "inventory" / "domain2.yaml").write_text("kind: [\n", encoding="utf-8")
    code, _, err = diff_cli(repo, "--base", "HEAD~1")
    assert code == 1
    assert "inventory/domain2.yaml:" in err and "input problem" in err
    assert len(worktrees(repo)) == 1


def test_project_in_a_subfolder_of_the_repository(tmp_path: Path) -> None:
    root = tmp_path / "monorepo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("other things\n", encoding="utf-8")
    copy_example(root / "mesh")
    commit_all(root, "example in mesh/")
    (root / "mesh" / "requirements" / "domain2" / "rebel-base.yaml").write_text(
        REBEL_REQUIREMENT, encoding="utf-8")

    code, out, err = diff_cli(root / "mesh")  # base HEAD, the change is uncommitted

    assert code == 0, err
    assert parse_text(out) == {"domain2/cl3": EXPECTED["domain2/cl3"]}


def test_markdown_is_safe_and_bounded() -> None:
    assert inline_code("a`b") == "``a`b``"
    assert inline_code("x|y") == "`x\\|y`"
    assert fence_for(["no fences"]) == "```"
    assert fence_for(["has ``` inside", "and ````` too"]) == "``````"
    big = "".join(f"+line {i}\n" for i in range(100))
    report = DiffReport("main", "0" * 40, (GroupChanges(
        "d/c", True, (), (), (ObjectChange("changed", "Service a/b", big),
                              ObjectChange("changed", "Service a/c", "+x\n"))),), 1)
    out = format_markdown(report, budget=10)
    assert "+line 99" not in out and "+x" in out
    assert "1 diff(s) omitted for size" in out
    assert "+line 99" in format_markdown(report)


def test_markdown_report_draws_the_flows_the_change_opens_and_closes(tmp_path: Path) -> None:
    """rebel-base gets its first egress requirement (to service3) and backend admits service1.
    Compared as Cilium enforces both renders: rebel-base was egress-unrestricted, so its flow
    to service3 is not new; what the restriction stops is drawn as closed."""
    repo = tmp_path / "repo"
    make_history(repo)

    code, out, err = diff_cli(repo, "--base", "HEAD~1", "--format", "markdown")

    assert code == 0, err
    top = out.split("| Cluster or file |", 1)[0]
    assert "Newly restricted: `domain2/rebel-base@cl3` egress" in top
    assert "**Opens:**" not in top
    assert "The change allows 2 flow(s) that were blocked and blocks 8 flow(s)" in top
    picture = out.split("```mermaid\n", 1)[1].split("```", 1)[0]
    nodes = dict(re.findall(r'(n\d+)\["([^"]*)"\]', picture))
    edges = [(nodes[a], kind, ports, nodes[b]) for a, kind, ports, b in re.findall(
        r'(n\d+) (==>|-\.->)\|"[+-] ([^"]*)"\| (n\d+)', picture)]
    opened = sorted((a, b, ports) for a, kind, ports, b in edges if kind == "==>")
    # backend now admits service1 (service1's egress is unrestricted: both clusters)
    assert opened == [("service1@cl1", "backend@cl1", "TCP/80"),
                      ("service1@cl1", "backend@cl2", "TCP/80")], picture
    closed = {b: ports for a, kind, ports, b in edges if kind == "-.->"}
    assert all(a == "rebel-base@cl3" for a, kind, _, _ in edges if kind == "-.->")
    assert closed["frontend@cl4"] == "TCP/8080"  # frontend admits cl3's services on 8080
    assert closed["service3@cl3"] == "TCP/1-79,81-65535 UDP/any SCTP/any"  # TCP/80 stays
    assert closed["108.177.16.0/24"] == "any"


def test_deleting_an_egress_requirement_is_reported_as_an_opening(tmp_path: Path) -> None:
    """In Cilium the client becomes egress-unrestricted: the change opens, never "removes"."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    copy_example(repo)
    commit_all(repo, "Bundled example")
    (repo / "requirements" / "domain2" / "allow-domain1.yaml").unlink()

    code, out, err = diff_cli(repo, "--base", "HEAD", "--format", "markdown")

    assert code == 0, err
    top = out.split("| Cluster or file |", 1)[0]
    assert ("**Opens:** `domain2/cl3:default/name=client` becomes egress-unrestricted (no "
            "policy restricts its egress any more): it may now reach anything whose ingress "
            "admits it.") in top
    picture = out.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert "-.->" not in picture, picture  # nothing the client could reach is lost
    assert re.search(r'==>\|"\+ [^"]*"\|', picture)
    assert '["cl3:default/name=client"]' in picture
    assert '["rebel-base@cl3"]' in picture  # reachable now (it admits anyone)


def test_text_report_has_no_flow_picture(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_history(repo)

    code, out, _ = diff_cli(repo, "--base", "HEAD~1")

    assert code == 0 and "mermaid" not in out


def test_diff_analyses_each_side_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from meshplan import pipeline

    repo = tmp_path / "repo"
    make_history(repo)
    runs: list[Path] = []
    real = pipeline._analyse

    def counted(project: Path) -> pipeline.Analysis:
        runs.append(project)
        return real(project)

    monkeypatch.setattr(pipeline, "_analyse", counted)
    code, _out, err = diff_cli(repo, "--base", "HEAD~1", "--format", "markdown", "--no-cache")

    assert code == 0, err
    assert len(runs) == 2  # base and working tree; the flow picture reuses their inventories


# --------------------------------------------------------------------------- picture at any size


def fleet_diff(root: Path, change: Callable[[Path], object]) -> str:
    """The markdown of a diff of a generated fleet (above the 400 service endpoints beyond
    which the picture used to be dropped) before and after ``change``."""
    base = render_with_inventory(root)
    change(root)
    inventory, rendered, _ = render_with_inventory(root)
    before = BaseRender("0" * 40, base[1].files, inventory=base[0])
    report = diff_report("main", before, inventory, rendered.files, with_flows=True)
    return format_markdown(report)


def test_a_fleet_diff_draws_a_one_requirement_change_flow_by_flow(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    generate("10x3x30x120", 1, root)
    assert sum(len(s["clusters"]) for d in read_inventory(root).values()
               for s in d["services"].values()) > 400
    out = fleet_diff(root, mutate_one_requirement)
    picture = out.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert re.search(r'==>\|"\+ [^"]*"\|', picture)  # the flows the new peer opens
    assert "flows changed, more than a readable picture holds" not in out
    assert "skipped" not in out


@pytest.mark.slow
def test_a_fleet_diff_too_big_to_draw_is_aggregated_and_says_so(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    generate("10x3x30x120", 1, root)

    def drop_a_domain_of_requirements(repo: Path) -> None:
        shutil.rmtree(repo / "requirements" / "team-00")

    out = fleet_diff(root, drop_a_domain_of_requirements)
    assert "more than a readable picture holds (200 edges): it shows them per" in out
    picture = out.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert 0 < picture.count("-->") + picture.count("==>") <= 200
    assert re.search(r'\|"\+ [\d,]+ flows?: ', picture)


@pytest.mark.parametrize("output_format", ["text", "markdown"])
def test_diff_through_the_render_cache_reports_what_a_full_diff_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output_format: str) -> None:
    """The base renders from the cache (filled by the first diff), the working tree
    incrementally from the base; the report is the one of rendering both from scratch."""
    repo = tmp_path / "repo"
    make_history(repo)
    (repo / "requirements" / "domain1" / "backend.yaml").write_text(
        (repo / "requirements" / "domain1" / "backend.yaml").read_text(encoding="utf-8")
        .replace("{service: service1}", "{service: service1, cluster: cl1}"), encoding="utf-8")
    args = ("--base", "HEAD~1", "--format", output_format)
    expected = diff_cli(repo, *args, "--no-cache")
    cache = ("--cache-dir", str(tmp_path / "cache"))
    assert diff_cli(repo, *args, *cache) == expected  # fills the cache
    modes = render_cached_modes(monkeypatch)
    assert diff_cli(repo, *args, *cache) == expected
    # the base from the cache; the head from the base's snapshot (on this small example the
    # change reaches most requirements, so it renders in full by choice, not for want of one)
    assert modes[0] == "unchanged"
    assert modes[1] in ("incremental", "full (the change reaches most requirements)")


def checkout_files(checkout: Path) -> dict[str, bytes]:
    return {p.relative_to(checkout).as_posix(): p.read_bytes()
            for p in sorted(checkout.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("attributes", [False, True])
def test_the_base_checkout_links_what_the_working_tree_holds_unchanged(
        tmp_path: Path, attributes: bool) -> None:
    from meshplan.gitrepo import base_checkout, detached_worktree

    repo = tmp_path / "repo"
    first, _ = make_history(repo)
    if attributes:  # git may transform what it checks out: the plain worktree
        git(repo, "config", "core.autocrlf", "input")
    (repo / "requirements" / "domain1" / "uncommitted.yaml").write_text("x: 1\n", "utf-8")
    with detached_worktree(repo, first) as worktree:
        expected = checkout_files(worktree / "requirements")
    backend = "domain1/backend.yaml"
    with base_checkout(repo, first, "requirements") as checkout:
        assert checkout_files(checkout) == expected  # the base's bytes, not the working tree's
        unchanged = next(p for p in expected if p != backend)
        linked = (checkout / unchanged).stat().st_ino == (
            repo / "requirements" / unchanged).stat().st_ino
        assert linked is not attributes
        assert (checkout / backend).stat().st_ino != (
            repo / "requirements" / backend).stat().st_ino
    assert len(worktrees(repo)) == 1


def test_the_flow_picture_reads_the_working_tree_bytes_the_render_digested(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the cache, the head's inputs are listed (read and digested) once: the flow
    picture of an incremental head models those bytes, never reading a working-tree input
    file again (a file edited meanwhile would be pictured but not rendered)."""
    from meshplan.load import files, repository

    repo = tmp_path / "repo"
    generate("4x2x4x30", 7, repo)
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "fleet")
    mutate_one_requirement(repo)  # the working tree: one more egress peer
    cache = ["--cache-dir", str(tmp_path / "cache")]
    assert diff_cli(repo, "--base", "HEAD", "--format", "markdown", *cache)[0] == 0  # warm
    reread: list[str] = []
    real = files.read_text

    def spied(root: Path, relpath: str) -> str | Diagnostic:
        if root.resolve() == repo.resolve():
            reread.append(relpath)
        return real(root, relpath)

    monkeypatch.setattr(repository, "read_text", spied)
    modes = render_cached_modes(monkeypatch)
    code, out, err = diff_cli(repo, "--base", "HEAD", "--format", "markdown", *cache)
    assert code == 0, err
    assert "incremental" in modes  # the head: its model is the picture's to read
    assert "## meshplan: rendered output changes" in out
    assert reread == []


def test_a_diff_whose_cache_cannot_be_saved_warns_once_and_reports_in_full(
        tmp_path: Path) -> None:
    """The cache only saves time: when neither render can be stored (a cache folder under a
    plain file; a full disk alike) the diff says so once and reports what ``--no-cache``
    does."""
    repo = tmp_path / "repo"
    generate("3x2x4x20", 3, repo)
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "fleet")
    mutate_one_requirement(repo)
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    code, out, err = diff_cli(repo, "--base", "HEAD", "--cache-dir", str(blocker / "cache"))
    assert code == 0, err
    assert err.count("the render cache was not saved") == 1, err
    assert "internal error" not in err
    assert (code, out) == diff_cli(repo, "--base", "HEAD", "--no-cache")[:2]
