"""``meshplan diff``: what a change does to the rendered output, per cluster and per object.

The base ref is rendered from a temporary worktree (:func:`render_ref`), the working tree as it
is; both are split into objects, grouped by cluster (or by file outside ``clusters/``) and
compared by (apiVersion, kind, namespace, name), with a unified diff of each changed object.
The markdown form (``templates/diff.md.j2``) is for pull-request comments: a summary table,
each diff folded, all diffs cut at :data:`MARKDOWN_DIFF_BUDGET` characters.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml

from .diagnostics import Diagnostic, InputError, OperationError, Severity
from .flowdiff import connectivity_changes, picture
from .gitrepo import base_checkout, resolve_commit, toplevel
from .graph import mermaid_block
from .model import Inventory
from .outputs import KUSTOMIZATION, OutputFile, split_cluster_path
from .render import Rendered

MARKDOWN_DIFF_BUDGET = 50_000  # characters of diff text in a markdown report
COMMENT_MARKER = "<!-- meshplan-diff -->"
WORKING_TREE = "working tree"

ChangeKind = Literal["added", "removed", "changed"]
# A whole pipeline run (meshplan.pipeline.render_with_inventory), for the checkout of the base.
RenderRepository = Callable[[Path], tuple[Inventory, Rendered, tuple[Diagnostic, ...]]]


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
    flow_diff: str = ""  # Mermaid picture of the flows opened/closed ("" = none or not drawn)
    flow_note: str | None = None  # why no picture was drawn, or how it is aggregated
    flow_summary: tuple[str, ...] = ()  # what changes for connectivity, in words (markdown)

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
    split = split_cluster_path(path)
    if split is not None and "/" not in split[2]:
        if split[2] == KUSTOMIZATION:  # only lists the files; objects tell the change
            return None
        return f"{split[0]}/{split[1]}", True
    return path, False


def _group_name(path: str) -> str | None:
    where = group_of(path)
    return None if where is None else where[0]


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


# How meshplan writes the head of an object: its key can be read from the text. Only plain
# scalars in this order; :func:`head_key` checks the rest of the document cannot change them.
_HEAD = re.compile(r"apiVersion: ([A-Za-z0-9][-A-Za-z0-9./]*)\nkind: ([A-Za-z][A-Za-z0-9]*)\n"
                   r"metadata:\n  name: ([a-z0-9][-a-z0-9.]*)\n"
                   r"(?:  namespace: ([a-z0-9][-a-z0-9.]*)\n)?")
_TOP_KEY = re.compile(r"(?m)^[\"']?(?:apiVersion|kind|metadata|<<)[\"']?[ \t]*:")
_METADATA_KEY = re.compile(r"(?m)^  [\"']?(?:name|namespace|<<)[\"']?[ \t]*:")
_END_OF_BLOCK = re.compile(r"(?m)^(?=[^ #\n])")  # a comment does not end a block


@cache
def _plain_string(value: str) -> bool:
    """Whether YAML reads this plain scalar as a string (not a number, bool, null...)."""
    tag: str = yaml.resolver.Resolver().resolve(  # type: ignore[no-untyped-call]
        yaml.ScalarNode, value, (True, False))
    return tag == "tag:yaml.org,2002:str"


def head_key(document: str) -> tuple[str, str] | None:
    """:func:`object_key` of a document as meshplan renders it, read from its first lines
    without parsing it; None when the document is written any other way (then it is parsed).

    Exact for a well-formed YAML document, which is all :func:`compare` reads (both sides are
    rendered by this meshplan's dumper): the head's values are plain strings, and no later key
    of the document or of its metadata (a repeated key wins in YAML, a merge key adds one)
    can change apiVersion, kind, name or namespace.
    """
    head = _HEAD.match(document)
    if head is None or not all(_plain_string(v) for v in head.groups() if v is not None):
        return None
    rest = document[head.end():]
    block = _END_OF_BLOCK.search(rest)
    metadata, after = (rest, "") if block is None else (rest[:block.start()], rest[block.start():])
    if _METADATA_KEY.search(metadata) or _TOP_KEY.search(after):
        return None
    api_version, kind, name, namespace = head.groups()
    label = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
    return f"{api_version}|{kind}|{namespace or ''}|{name}", label


class ObjectKeys:
    """:func:`object_key` of documents, each distinct text read once (both sides of a diff
    share most documents of a changed cluster)."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[str, str] | None] = {}  # None: not a mapping

    def of(self, document: str, fallback: str) -> tuple[str, str]:
        if document not in self._known:
            found = head_key(document)
            if found is None:
                try:
                    data = yaml.load(document,
                                     Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
                except yaml.YAMLError:
                    data = None
                found = object_key(data, "") if isinstance(data, dict) else None
            self._known[document] = found
        return self._known[document] or (fallback, fallback)


def objects_by_group(files: Iterable[OutputFile], keys: ObjectKeys | None = None
                     ) -> dict[str, dict[str, RenderedObject]]:
    keys = keys or ObjectKeys()
    groups: dict[str, dict[str, RenderedObject]] = {}
    for output in files:
        where = group_of(output.path)
        if where is None:
            continue
        objects = groups.setdefault(where[0], {})
        text = output.content.decode("utf-8", errors="replace")
        for index, document in enumerate(split_documents(text)):
            key, label = keys.of(document, f"{output.path}#{index}")
            objects[key] = RenderedObject(label, document)
    return groups


def cluster_groups(files: Iterable[OutputFile]) -> set[str]:
    return {f"{split[0]}/{split[1]}" for f in files
            if (split := split_cluster_path(f.path)) is not None and "/" not in split[2]}


def unchanged_groups(old_files: Iterable[OutputFile], new_files: Iterable[OutputFile]
                     ) -> set[str]:
    """The groups whose files are byte for byte the same on both sides (their objects are
    too, so they are not parsed: a one-requirement change touches a few clusters of a fleet)."""
    contents: dict[str, list[dict[str, bytes]]] = {}
    for side, files in enumerate((old_files, new_files)):
        for output in files:
            where = group_of(output.path)
            if where is not None:
                contents.setdefault(where[0], [{}, {}])[side][output.path] = output.content
    return {name for name, (old, new) in contents.items() if old == new}


def compare(old_files: Iterable[OutputFile], new_files: Iterable[OutputFile]) -> list[GroupChanges]:
    old_files, new_files = tuple(old_files), tuple(new_files)
    same = unchanged_groups(old_files, new_files)
    keys = ObjectKeys()
    old = objects_by_group((f for f in old_files if _group_name(f.path) not in same), keys)
    new = objects_by_group((f for f in new_files if _group_name(f.path) not in same), keys)
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
    inventory: Inventory | None = None  # kept for the flow picture


def git_root(project: Path) -> Path:
    root = toplevel(project)
    if root is None:
        raise OperationError(f"{project} is not inside a git repository: `meshplan diff` "
                             "compares with a git ref")
    return root


def base_commit(root: Path, ref: str) -> str:
    sha = resolve_commit(root, ref)
    if sha is None:
        raise OperationError(f"base ref '{ref}' is not a commit in this repository (for a "
                             f"branch of the remote, fetch it first: `git fetch origin {ref}`)")
    return sha


def render_ref(project: Path, ref: str, render: RenderRepository, *,
               with_flows: bool = False) -> BaseRender:
    """Render ``ref`` from a temporary checkout; a base that cannot be rendered is empty."""
    root = git_root(project)
    sha = base_commit(root, ref)
    relative = project.resolve().relative_to(root)
    with base_checkout(root, sha, relative.as_posix()) as base_project:
        if not (base_project / "inventory").is_dir():
            return BaseRender(sha, (), f"base {ref} ({sha[:12]}) has no "
                              f"{(relative / 'inventory').as_posix()}/ folder: every "
                              "object is shown as added")
        try:
            inventory, rendered, _ = render(base_project)
        except InputError as exc:
            errors = sum(d.severity is Severity.ERROR for d in exc.diagnostics)
            return BaseRender(sha, (), f"base {ref} ({sha[:12]}) has invalid inputs "
                              f"({errors} error(s)), so it cannot be rendered: every object "
                              "is shown as added", exc.diagnostics)
        return BaseRender(sha, rendered.files, inventory=inventory if with_flows else None)


def diff_report(base_ref: str, before: BaseRender, inventory: Inventory,
                files: tuple[OutputFile, ...], *, with_flows: bool = False) -> DiffReport:
    """Compare the render of the base (``before``) with ``files``, rendered from ``inventory``.

    ``with_flows`` also draws the flows added and removed (for the markdown report).
    """
    groups = compare(before.files, files)
    compared = len(cluster_groups(before.files) | cluster_groups(files))
    flow_diff, flow_note, summary = "", None, tuple[str, ...]()
    if with_flows:
        if before.inventory is None:
            flow_note = "flow picture skipped: the base has no rendered output to compare with"
        else:  # at any size: aggregated (and said so) when too many flows changed to draw
            changes = connectivity_changes((before.inventory, before.files), (inventory, files))
            drawn = picture(changes)
            flow_diff, flow_note, summary = drawn.mermaid, drawn.note, tuple(changes.summary())
    return DiffReport(base_ref, before.sha, tuple(groups), compared, before.note,
                      before.diagnostics, flow_diff, flow_note, summary)


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
        "flow_summary": report.flow_summary,
    }
    return _environment().get_template("diff.md.j2").render(**context)
