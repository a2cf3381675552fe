"""``meshplan diff``: what a change does to the rendered output, per cluster and per object.

The base ref is checked out into a temporary ``git worktree`` (removed afterwards; the user's
working tree, index and branch are not touched) and rendered with this meshplan; the working
tree is rendered as it is. Both renders are split into Kubernetes objects, grouped by cluster
(``clusters/<domain>/<cluster>/``) or, for other files such as ``bootstrap/``, by file, and
compared by (apiVersion, kind, namespace, name). A changed object gets a unified diff of its
YAML exactly as rendered.

The markdown form (a jinja2 template, ``templates/diff.md.j2``) is made for a pull-request
comment and ``$GITHUB_STEP_SUMMARY``: a summary table first, each changed object's diff folded
in ``<details>``, and the diffs cut off past :data:`MARKDOWN_DIFF_BUDGET` characters so the
comment stays under GitHub's size limit.
"""

from __future__ import annotations

import difflib
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml

from .diagnostics import Diagnostic, InputError, OperationError, Severity
from .graph import FlowEdge, flow_edges_of, mermaid_block, mermaid_flow_diff
from .model import Inventory
from .pipeline import render_with_inventory
from .publish import run_git
from .render import OutputFile

MARKDOWN_DIFF_BUDGET = 50_000  # characters of diff text in a markdown report
COMMENT_MARKER = "<!-- meshplan-diff -->"
WORKING_TREE = "working tree"

ChangeKind = Literal["added", "removed", "changed"]


@dataclass(frozen=True)
class RenderedObject:
    label: str  # "CiliumNetworkPolicy backend-namespace/backend"
    text: str  # the object's YAML as rendered


@dataclass(frozen=True)
class ObjectChange:
    change: ChangeKind
    label: str
    diff: str = ""  # unified diff, for "changed"


@dataclass(frozen=True)
class GroupChanges:
    name: str  # "domain1/cl1" for a cluster, else the file path
    is_cluster: bool
    added: tuple[ObjectChange, ...]
    removed: tuple[ObjectChange, ...]
    changed: tuple[ObjectChange, ...]


@dataclass(frozen=True)
class DiffReport:
    base_ref: str
    base_sha: str
    groups: tuple[GroupChanges, ...]  # only groups with changes, sorted
    clusters_compared: int
    base_note: str | None = None  # why the base could not be rendered
    base_diagnostics: tuple[Diagnostic, ...] = field(default=())
    flow_diff: str = ""  # Mermaid picture of the flows added/removed ("" = none or not drawn)
    flow_note: str | None = None  # why no picture was drawn

    @property
    def has_changes(self) -> bool:
        return bool(self.groups)

    def totals(self) -> tuple[int, int, int]:
        return (sum(len(g.added) for g in self.groups),
                sum(len(g.removed) for g in self.groups),
                sum(len(g.changed) for g in self.groups))


# --------------------------------------------------------------------------- objects


def group_of(path: str) -> tuple[str, bool] | None:
    """The group a rendered file's objects belong to (None: not compared)."""
    if not path.endswith((".yaml", ".yml")):
        return None
    parts = path.split("/")
    if parts[0] == "clusters" and len(parts) == 4:
        if parts[3] == "kustomization.yaml":  # only lists the files; objects tell the change
            return None
        return f"{parts[1]}/{parts[2]}", True
    return path, False


def split_documents(text: str) -> list[str]:
    """The documents of a rendered file, without the leading comment header."""
    documents: list[list[str]] = [[]]
    for line in text.splitlines(keepends=True):
        if line.rstrip("\r\n") == "---":
            documents.append([])
        else:
            documents[-1].append(line)
    result = []
    for lines in documents:
        while lines and (lines[0].startswith("#") or not lines[0].strip()):
            lines.pop(0)
        if lines:
            result.append("".join(lines))
    return result


def object_key(data: Any, fallback: str) -> tuple[str, str]:
    """(identity, label) of one parsed object."""
    if not isinstance(data, dict):
        return fallback, fallback
    if "kind" not in data and "apiVersion" not in data:  # a mesh plan's Helm values file
        return "values", "Helm values"
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    kind = str(data.get("kind", "?"))
    name = str(meta.get("name", "?"))
    namespace = meta.get("namespace")
    label = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
    return f"{data.get('apiVersion')}|{kind}|{namespace or ''}|{name}", label


def objects_by_group(files: Iterable[OutputFile]) -> dict[str, dict[str, RenderedObject]]:
    groups: dict[str, dict[str, RenderedObject]] = {}
    for output in files:
        where = group_of(output.path)
        if where is None:
            continue
        objects = groups.setdefault(where[0], {})
        text = output.content.decode("utf-8", errors="replace")
        for index, document in enumerate(split_documents(text)):
            fallback = f"{output.path}#{index}"
            try:
                data = yaml.load(document, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            except yaml.YAMLError:
                data = None
            key, label = object_key(data, fallback)
            objects[key] = RenderedObject(label, document)
    return groups


def cluster_groups(files: Iterable[OutputFile]) -> set[str]:
    return {"/".join(f.path.split("/")[1:3]) for f in files
            if f.path.startswith("clusters/") and f.path.count("/") == 3}


def compare(old_files: Iterable[OutputFile], new_files: Iterable[OutputFile]) -> list[GroupChanges]:
    old_files, new_files = tuple(old_files), tuple(new_files)
    old, new = objects_by_group(old_files), objects_by_group(new_files)
    clusters = cluster_groups(old_files) | cluster_groups(new_files)
    changes = []
    for name in sorted(old.keys() | new.keys(), key=lambda n: (n not in clusters, n)):
        before, after = old.get(name, {}), new.get(name, {})
        added = tuple(ObjectChange("added", after[k].label)
                      for k in sorted(after.keys() - before.keys(), key=lambda k: after[k].label))
        removed = tuple(ObjectChange("removed", before[k].label)
                        for k in sorted(before.keys() - after.keys(),
                                        key=lambda k: before[k].label))
        changed = tuple(
            ObjectChange("changed", after[k].label,
                         unified(name, after[k].label, before[k].text, after[k].text))
            for k in sorted(before.keys() & after.keys(), key=lambda k: after[k].label)
            if before[k].text != after[k].text)
        if added or removed or changed:
            changes.append(GroupChanges(name, name in clusters, added, removed, changed))
    return changes


def unified(group: str, label: str, old: str, new: str) -> str:
    where = f"{group}/{label.replace(' ', '/')}"
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                 fromfile=f"a/{where}", tofile=f"b/{where}", n=3)
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# --------------------------------------------------------------------------- renders


@dataclass(frozen=True)
class BaseRender:
    sha: str
    files: tuple[OutputFile, ...]
    note: str | None = None
    diagnostics: tuple[Diagnostic, ...] = ()
    flows: frozenset[FlowEdge] = frozenset()


# The flow picture runs the connectivity model, which compares every pair of endpoints:
# beyond this many (service, cluster) endpoints it is skipped rather than slowing every PR.
MAX_FLOW_ENDPOINTS = 400


def flow_endpoints(inventory: Inventory) -> int:
    return sum(len(s.clusters) for d in inventory.domains for s in d.services)


def flows_of(inventory: Inventory, files: tuple[OutputFile, ...]) -> frozenset[FlowEdge] | None:
    """The policy-decided flows of ``files``; None when the fleet is too large to draw."""
    if flow_endpoints(inventory) > MAX_FLOW_ENDPOINTS:
        return None
    return flow_edges_of(inventory, files)


def toplevel(project: Path) -> Path:
    proc = run_git(["rev-parse", "--show-toplevel"], project, check=False)
    if proc.returncode != 0:
        raise OperationError(f"{project} is not inside a git repository: `meshplan diff` "
                             "compares with a git ref")
    return Path(proc.stdout.strip()).resolve()


def resolve_ref(root: Path, ref: str) -> str:
    proc = run_git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
                   root, check=False)
    if proc.returncode != 0:
        raise OperationError(f"base ref '{ref}' is not a commit in this repository (for a "
                             f"branch of the remote, fetch it first: `git fetch origin {ref}`)")
    return proc.stdout.strip()


def render_ref(project: Path, ref: str, *, with_flows: bool = False) -> BaseRender:
    """Render ``ref`` from a temporary worktree; a base that cannot be rendered is empty."""
    root = toplevel(project)
    sha = resolve_ref(root, ref)
    relative = project.resolve().relative_to(root)
    with tempfile.TemporaryDirectory(prefix="meshplan-diff-") as tmp:
        checkout = Path(tmp) / "base"
        run_git(["-c", "core.hooksPath=/dev/null", "worktree", "add", "--detach", "--quiet",
                 str(checkout), sha], root)
        try:
            base_project = checkout / relative
            if not (base_project / "inventory").is_dir():
                return BaseRender(sha, (), f"base {ref} ({sha[:12]}) has no "
                                  f"{(relative / 'inventory').as_posix()}/ folder: every "
                                  "object is shown as added")
            try:
                inventory, rendered, _ = render_with_inventory(base_project)
            except InputError as exc:
                errors = sum(d.severity is Severity.ERROR for d in exc.diagnostics)
                return BaseRender(sha, (), f"base {ref} ({sha[:12]}) has invalid inputs "
                                  f"({errors} error(s)), so it cannot be rendered: every object "
                                  "is shown as added", exc.diagnostics)
            flows = flows_of(inventory, rendered.files) if with_flows else None
            return BaseRender(sha, rendered.files, flows=flows or frozenset())
        finally:
            run_git(["worktree", "remove", "--force", str(checkout)], root, check=False)
            run_git(["worktree", "prune"], root, check=False)


def diff_repository(
    project: Path, base: str, *, with_flows: bool = False
) -> tuple[DiffReport, tuple[Diagnostic, ...]]:
    """Compare the render of ``base`` with the render of the working tree.

    ``with_flows`` also draws the flows added and removed (for the markdown report).
    Raises :class:`InputError` when the working tree's inputs are invalid.
    """
    inventory, rendered, diagnostics = render_with_inventory(project)
    before = render_ref(project, base, with_flows=with_flows)
    groups = compare(before.files, rendered.files)
    compared = len(cluster_groups(before.files) | cluster_groups(rendered.files))
    flow_diff, flow_note = "", None
    if with_flows:
        after = flows_of(inventory, rendered.files)
        if after is None:
            flow_note = (f"flow picture skipped: more than {MAX_FLOW_ENDPOINTS} service "
                         "endpoints (run `meshplan graph` for one cluster or domain)")
        else:
            flow_diff = mermaid_flow_diff(before.flows, after)
    report = DiffReport(base, before.sha, tuple(groups), compared, before.note,
                        before.diagnostics, flow_diff, flow_note)
    return report, diagnostics


# --------------------------------------------------------------------------- formatting


def format_text(report: DiffReport) -> str:
    out = [f"meshplan diff: {report.base_ref} ({report.base_sha[:12]}) -> {WORKING_TREE}"]
    if report.base_note:
        out.append(f"note: {report.base_note}")
    if not report.has_changes:
        out.append(f"No changes to the rendered output ({report.clusters_compared} "
                   "cluster(s) compared).")
        return "\n".join(out) + "\n"
    for group in report.groups:
        out.append("")
        out.append(f"{group.name}: {len(group.added)} added, {len(group.removed)} removed, "
                   f"{len(group.changed)} changed")
        out.extend(f"  + {c.label}" for c in group.added)
        out.extend(f"  - {c.label}" for c in group.removed)
        for change in group.changed:
            out.append(f"  ~ {change.label}")
            out.extend(f"      {line}" for line in change.diff.rstrip("\n").splitlines())
    out.append("")
    out.extend(summary_table(report))
    return "\n".join(out) + "\n"


def summary_table(report: DiffReport) -> list[str]:
    rows = [(g.name, len(g.added), len(g.removed), len(g.changed)) for g in report.groups]
    rows.append(("total", *report.totals()))
    width = max(len("cluster"), *(len(r[0]) for r in rows))
    lines = ["Summary:", f"  {'cluster':<{width}}  added  removed  changed"]
    lines.extend(f"  {name:<{width}}  {a:>5}  {r:>7}  {c:>7}" for name, a, r, c in rows)
    unchanged = report.clusters_compared - sum(g.is_cluster for g in report.groups)
    lines.append(f"  ({unchanged} other cluster(s) unchanged)")
    return lines


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("meshplan", "templates"),
        autoescape=False,  # markdown, not HTML: values are escaped by the filters below
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["code"] = inline_code
    return env


def inline_code(text: object) -> str:
    """``text`` as markdown inline code, whatever backticks it holds; table-safe."""
    value = str(text).replace("|", "\\|").replace("\n", " ")
    longest = max((len(run) for run in re.findall(r"`+", value)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{ticks}{pad}{value}{pad}{ticks}"


def fence_for(texts: Iterable[str]) -> str:
    longest = max((len(run) for text in texts for run in re.findall(r"`{3,}", text)), default=0)
    return "`" * max(3, longest + 1)


def format_markdown(report: DiffReport, budget: int = MARKDOWN_DIFF_BUDGET) -> str:
    remaining = budget
    groups: list[dict[str, Any]] = []
    for group in report.groups:
        changed: list[dict[str, Any]] = []
        for change in group.changed:
            fits = len(change.diff) <= remaining
            remaining -= len(change.diff) if fits else 0
            changed.append({"label": change.label, "diff": change.diff if fits else None})
        groups.append({"name": group.name, "changed": changed,
                       "added": [c.label for c in group.added],
                       "removed": [c.label for c in group.removed]})
    context: Mapping[str, Any] = {
        "marker": COMMENT_MARKER,
        "base_ref": report.base_ref,
        "base_sha": report.base_sha[:12],
        "base_note": report.base_note,
        "compared": report.clusters_compared,
        "groups": groups,
        "totals": report.totals(),
        "unchanged": report.clusters_compared - sum(g.is_cluster for g in report.groups),
        "omitted": sum(c["diff"] is None for g in groups for c in g["changed"]),
        "fence": fence_for(c.diff for g in report.groups for c in g.changed),
        "flows": mermaid_block(report.flow_diff),
        "flow_note": report.flow_note,
    }
    return _environment().get_template("diff.md.j2").render(**context)
