"""Stage 8 — publish: commit the rendered tree to the GitOps output branch, and push it.

The root of the output branch holds exactly the render of the checked-out commit plus
:data:`PROVENANCE_FILE`, in a commit that names its source (trailers :data:`TRAILER_SHA`,
:data:`TRAILER_REPO`, :data:`TRAILER_VERSION`). The user's working tree, index and branch are
never touched; a commit is made only when the output changed; pushes are never forced (when
another publish won the race, it retries on top); a source commit older than the published one,
or a branch meshplan did not write, is refused. README's "Delivering to clusters" has the
details; :func:`meshplan.pipeline.publish_repository` runs it all.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from . import __version__
from .diagnostics import Diagnostic, OperationError
from .gitrepo import (
    build_tree,
    changed_paths,
    checked_out_in,
    commit_message,
    commit_tree,
    compare_and_swap,
    config_value,
    delete_ref,
    explain_remote_failure,
    fetch,
    has_commit,
    is_ancestor,
    is_branch_name,
    last_lines,
    open_repository,
    push,
    remote_url,
    resolve_commit,
    store_blobs,
    trailers,
    tree_blobs,
    update_ref,
)
from .model import DEFAULT_OUTPUT_BRANCH
from .outputs import CLUSTERS_DIR, OutputFile, clusters_of

PROVENANCE_FILE = "hydrator.metadata"
TRAILER_SHA = "Meshplan-Source-Sha"
TRAILER_REPO = "Meshplan-Source-Repo"
TRAILER_VERSION = "Meshplan-Version"
DEFAULT_ATTEMPTS = 5
INPUT_FOLDERS = ("inventory", "requirements")
FALLBACK_COMMITTER = ("meshplan", "meshplan@localhost")

_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class Source:
    """The checked-out source commit that is rendered."""

    root: Path  # git top level
    project: Path  # folder with inventory/ and requirements/ (inside root)
    sha: str
    author: str  # "Name <email>"
    author_name: str
    author_email: str
    date: str  # author date, ISO 8601
    subject: str
    repo_url: str  # without credentials
    dirty: tuple[str, ...]  # changed or untracked input paths (only with allow_dirty)

    @property
    def short(self) -> str:
        return self.sha[:12]


def read_source(project: Path, remote: str, *, allow_dirty: bool) -> Source:
    repo = open_repository(project)
    root = Path(str(repo.working_tree_dir)).resolve()
    try:
        commit = repo.head.commit
    except ValueError as exc:
        raise OperationError(f"{root} has no commit yet: commit inventory/ and requirements/ "
                             "first (the output must name a source commit)") from exc
    dirty = changed_paths(project, INPUT_FOLDERS)
    if dirty and not allow_dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise OperationError(
            f"the inputs differ from the checked-out commit {commit.hexsha[:12]} ({shown}): "
            "commit them first, because the published output would claim to come from "
            f"{commit.hexsha[:12]}; or pass --allow-dirty to publish them marked as dirty")
    url = remote_url(root, remote) or root.as_uri()
    return Source(
        root=root,
        project=project.resolve(),
        sha=commit.hexsha,
        author=f"{commit.author.name} <{commit.author.email}>",
        author_name=str(commit.author.name),
        author_email=str(commit.author.email),
        date=commit.authored_datetime.isoformat(),
        subject=str(commit.summary),
        repo_url=url,
        dirty=dirty,
    )


def inputs_digest(project: Path) -> str:
    """``sha256:`` of the input files, reproducible with coreutils::

        find inventory requirements -type f ! -path '*/.*' | LC_ALL=C sort \\
            | xargs sha256sum | sha256sum
    """
    lines = []
    for top in INPUT_FOLDERS:
        base = project / top
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                path = Path(dirpath) / name
                if name.startswith(".") or not path.is_file():
                    continue
                relpath = path.relative_to(project).as_posix()
                lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {relpath}\n")
    lines.sort(key=lambda line: line[66:].encode())
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def provenance(source: Source, digest: str) -> bytes:
    data: dict[str, object] = {
        "drySha": source.sha,
        "author": source.author,
        "date": source.date,
        "subject": source.subject,
        "repoURL": source.repo_url,
        "meshplanVersion": __version__,
        "inputsDigest": digest,
    }
    if source.dirty:
        data["dirty"] = True
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


# --------------------------------------------------------------------------- publishing


@dataclass(frozen=True)
class PublishOptions:
    project: Path
    branch: str | None = None  # None: the GitOps document's branch, else "rendered"
    remote: str = "origin"
    push: bool = False
    allow_dirty: bool = False
    attempts: int = DEFAULT_ATTEMPTS


@dataclass(frozen=True)
class PublishResult:
    status: Literal["published", "unchanged"]
    branch: str
    commit: str  # the output branch head afterwards
    source: Source
    published_source: str | None  # source SHA the branch head names
    changed: tuple[str, ...]  # output paths changed by this publish
    pushed: bool
    attempts: int
    notes: tuple[str, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = field(default=())


@dataclass
class _Context:
    options: PublishOptions
    source: Source
    branch: str
    tree: str
    blobs: dict[str, str]  # without the provenance file
    notes: list[str]

    @property
    def root(self) -> Path:
        return self.source.root

    @property
    def remote(self) -> str:
        return self.options.remote


@dataclass(frozen=True)
class Target:
    """Where the output goes: the output branch, and whether a working tree has it checked out."""

    branch: str
    checked_out: str | None
    notes: tuple[str, ...]


def choose_target(options: PublishOptions, source: Source, configured: str | None) -> Target:
    """The output branch (``--branch``, else the GitOps document's, else the default), checked.

    ``configured`` is the GitOps document's branch, if any.
    """
    branch = options.branch or configured or DEFAULT_OUTPUT_BRANCH
    notes: list[str] = []
    if configured and configured != branch:
        notes.append(f"warning: inventory/ (kind GitOps) says the agents follow branch "
                     f"'{configured}', but this publishes to '{branch}'")
    if not is_branch_name(source.root, branch):
        raise OperationError(f"'{branch}' is not a valid branch name")
    checked_out = checked_out_in(source.root, branch)
    if checked_out and not options.push:
        raise OperationError(f"branch '{branch}' is checked out in {checked_out}; publishing "
                             "would change that working tree under its feet: switch it to "
                             "another branch first")
    if checked_out:
        notes.append(f"local branch '{branch}' is checked out in {checked_out}: left as is")
    if options.push and remote_url(source.root, options.remote) is None:
        raise OperationError(f"cannot push: there is no remote '{options.remote}' in "
                             f"{source.root} (add it with `git remote add {options.remote} "
                             "URL`, or publish locally with --no-push)")
    return Target(branch, checked_out, tuple(notes))


def publish_output(options: PublishOptions, source: Source, target: Target,
                   files: Sequence[OutputFile],
                   diagnostics: tuple[Diagnostic, ...] = ()) -> PublishResult:
    """Commit ``files`` (the render of ``source``) to ``target`` and push them if asked."""
    meta = OutputFile(PROVENANCE_FILE, provenance(source, inputs_digest(options.project)))
    all_blobs = store_blobs(source.root, [*files, meta])
    blobs = {path: sha for path, sha in all_blobs.items() if path != PROVENANCE_FILE}
    tree = build_tree(source.root, all_blobs)
    ctx = _Context(options, source, target.branch, tree, blobs, list(target.notes))
    result = _publish_loop(ctx, update_local=not target.checked_out)
    return replace(result, diagnostics=diagnostics)


def _publish_loop(ctx: _Context, *, update_local: bool) -> PublishResult:
    attempts = max(1, ctx.options.attempts)
    for attempt in range(1, attempts + 1):
        local_ref = f"refs/heads/{ctx.branch}"
        local_before = None if ctx.options.push else resolve_commit(ctx.root, local_ref)
        base = _output_head(ctx)
        published = _check_order(ctx, base)
        changed = _changed_paths(ctx, base)
        if base is not None and not changed:
            if update_local and ctx.options.push:
                _fast_forward_local(ctx, base)
            return PublishResult("unchanged", ctx.branch, base, ctx.source, published, (),
                                 False, attempt, tuple(ctx.notes))
        message = build_message(ctx.source, changed)
        commit = commit_tree(ctx.root, ctx.tree, base, message, _commit_env(ctx))
        if not ctx.options.push:
            if compare_and_swap(ctx.root, local_ref, commit, local_before):
                return PublishResult("published", ctx.branch, commit, ctx.source, published,
                                     changed, False, attempt, tuple(ctx.notes))
        elif _push(ctx, commit):
            update_ref(ctx.root, f"refs/remotes/{ctx.remote}/{ctx.branch}", commit)
            if update_local:
                _fast_forward_local(ctx, commit)
            return PublishResult("published", ctx.branch, commit, ctx.source, published,
                                 changed, True, attempt, tuple(ctx.notes))
        ctx.notes.append(f"'{ctx.branch}' moved while publishing (attempt {attempt}); "
                         "fetching and retrying on top")
        time.sleep(min(2.0, 0.1 * 2 ** attempt) * (0.5 + random.random()))
    raise OperationError(f"gave up after {attempts} attempts: '{ctx.branch}' on "
                         f"'{ctx.remote}' kept moving while publishing (nothing was forced; "
                         "run publish again)")


def _output_head(ctx: _Context) -> str | None:
    """The current head of the output branch (fetched fresh when pushing), None if absent."""
    if not ctx.options.push:
        return resolve_commit(ctx.root, f"refs/heads/{ctx.branch}") or resolve_commit(
            ctx.root, f"refs/remotes/{ctx.remote}/{ctx.branch}")
    tracking = f"refs/remotes/{ctx.remote}/{ctx.branch}"
    proc = fetch(ctx.root, ctx.remote, f"+refs/heads/{ctx.branch}:{tracking}")
    if proc.returncode != 0:
        if "couldn't find remote ref" in proc.stderr.lower():
            if resolve_commit(ctx.root, tracking):  # deleted on the remote: forget the stale copy
                delete_ref(ctx.root, tracking)
            return None
        raise explain_remote_failure(f"fetch '{ctx.branch}'", ctx.remote, proc.stderr)
    return resolve_commit(ctx.root, tracking)


def _check_order(ctx: _Context, base: str | None) -> str | None:
    """Refuse to publish over foreign commits or over the output of a newer source commit."""
    if base is None:
        return None
    published = trailers(commit_message(ctx.root, base)).get(TRAILER_SHA)
    if published is None or not _SHA.fullmatch(published):
        raise OperationError(
            f"the head {base[:12]} of branch '{ctx.branch}' was not written by meshplan "
            f"publish (no {TRAILER_SHA} trailer); refusing to publish over it. Is "
            f"'{ctx.branch}' really the output branch? (Publish to a new branch, or remove "
            "the foreign commit.)")
    if published == ctx.source.sha:
        return published
    if not has_commit(ctx.root, published):
        _fetch_source_commit(ctx, published)
    if not has_commit(ctx.root, published):
        raise OperationError(
            f"branch '{ctx.branch}' holds the output of source commit {published[:12]}, which "
            f"is not in this repository's history, so it cannot be ordered against "
            f"{ctx.source.short}; refusing to publish (fetch the full history, e.g. "
            "actions/checkout with fetch-depth: 0)")
    if is_ancestor(ctx.root, ctx.source.sha, published):
        raise OperationError(
            f"refusing to publish {ctx.source.short} (\"{ctx.source.subject}\"): branch "
            f"'{ctx.branch}' already holds the output of {published[:12]}, a newer commit that "
            "contains it. Publishing would roll the clusters back; nothing was changed.")
    return published


def _fetch_source_commit(ctx: _Context, sha: str) -> None:
    """Fetch a source commit (by SHA, else the remote's branches) to order it; best effort."""
    if remote_url(ctx.root, ctx.remote) is None:
        return
    if fetch(ctx.root, ctx.remote, sha).returncode != 0:
        fetch(ctx.root, ctx.remote)


def _changed_paths(ctx: _Context, base: str | None) -> tuple[str, ...]:
    new = dict(ctx.blobs)
    old = tree_blobs(ctx.root, base) if base else {}
    old.pop(PROVENANCE_FILE, None)
    new.pop(PROVENANCE_FILE, None)
    return tuple(sorted(p for p in new.keys() | old.keys() if new.get(p) != old.get(p)))


def _commit_env(ctx: _Context) -> dict[str, str]:
    env = {
        "GIT_AUTHOR_NAME": ctx.source.author_name,
        "GIT_AUTHOR_EMAIL": ctx.source.author_email,
        "GIT_AUTHOR_DATE": ctx.source.date,
    }
    for key, name, fallback in (("GIT_COMMITTER_NAME", "user.name", FALLBACK_COMMITTER[0]),
                                ("GIT_COMMITTER_EMAIL", "user.email", FALLBACK_COMMITTER[1])):
        if key in os.environ:
            continue
        if not config_value(ctx.root, name):
            env[key] = fallback
    return env


def _fast_forward_local(ctx: _Context, commit: str) -> None:
    """Move the local output branch to ``commit`` when that is a fast-forward."""
    ref = f"refs/heads/{ctx.branch}"
    local = resolve_commit(ctx.root, ref)
    if local == commit:
        return
    if local is None or is_ancestor(ctx.root, local, commit):
        if not compare_and_swap(ctx.root, ref, commit, local):
            ctx.notes.append(f"local branch '{ctx.branch}' changed meanwhile: left as is")
    else:
        ctx.notes.append(f"local branch '{ctx.branch}' has commits the remote does not: "
                         "left as is")


def _push(ctx: _Context, commit: str) -> bool:
    """Push without force; False when the remote moved (rejected as non-fast-forward)."""
    proc = push(ctx.root, ctx.remote, f"{commit}:refs/heads/{ctx.branch}")
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[1].endswith(f":refs/heads/{ctx.branch}"):
            continue
        flag, summary = parts[0], parts[2]
        if flag in (" ", "*", "=") and proc.returncode == 0:
            return True
        if flag == "!" and summary.startswith("[rejected]"):
            return False  # fetch first / non-fast-forward / stale info: the remote moved
        if flag == "!" and summary.startswith("[remote rejected]"):
            reason = summary[len("[remote rejected]"):].strip() or "no reason given"
            if _lost_ref_race(reason, proc.stderr):
                return False  # another push updated the ref at the same moment

            raise OperationError(
                f"cannot push: remote '{ctx.remote}' refused the update of '{ctx.branch}' "
                f"{reason}. Is the branch protected against this identity? Let the "
                "publishing identity push to it (without force) or publish to another "
                f"branch. {last_lines(proc.stderr, 2)}")
    if proc.returncode == 0:
        return True
    raise explain_remote_failure(f"push to '{ctx.branch}'", ctx.remote, proc.stderr)


_REF_RACE = ("failed to update ref", "failed to lock", "cannot lock ref",
             "reference already exists", "incorrect old value", "is at ", "stale info")


def _lost_ref_race(reason: str, stderr: str) -> bool:
    """A remote rejection that means "someone else updated the ref just now"."""
    text = f"{reason}\n{stderr}".lower()
    return "protected" not in text and "hook declined" not in text and any(
        marker in text for marker in _REF_RACE)


def build_message(source: Source, changed: Sequence[str]) -> str:
    """The output commit's message: source commit and subject, summary, trailers."""
    dirty = "+dirty" if source.dirty else ""
    subject = f"Render {source.short}{dirty}: {source.subject}"
    if len(subject) > 100:
        subject = subject[:97] + "..."
    clusters = clusters_of(changed)
    other = sorted(p for p in changed if not p.startswith(f"{CLUSTERS_DIR}/"))
    body = [f"Rendered by meshplan {__version__} from {source.sha}",
            f"of {source.repo_url} (\"{source.subject}\", {source.author}, {source.date})."]
    if source.dirty:
        body.append("Includes uncommitted changes to: " + ", ".join(source.dirty) + ".")
    body.append("")
    body.append(f"Clusters changed: {', '.join(clusters) if clusters else 'none'}")
    if other:
        body.append(f"Other files changed: {', '.join(other)}")
    trailer_lines = [f"{TRAILER_SHA}: {source.sha}", f"{TRAILER_REPO}: {source.repo_url}",
                     f"{TRAILER_VERSION}: {__version__}"]
    return "\n".join([subject, "", *body, "", *trailer_lines]) + "\n"
