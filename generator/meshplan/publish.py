"""Stage 8 — publish: commit the rendered tree to the GitOps output branch, and push it.

``meshplan publish`` renders the checked-out source commit and makes the *root* of the output
branch hold exactly that output plus :data:`PROVENANCE_FILE`. Guarantees:

* The user's working tree, index and current branch are never touched: blobs are written to
  the object store, the tree is built in a temporary index (``GIT_INDEX_FILE``), the commit
  with ``git commit-tree``; the only refs moved are the output branch (compare-and-swap, and
  only when it is not checked out anywhere) and its remote-tracking ref. Failing anywhere
  before the last step leaves every ref as it was (at most an unreferenced object remains).
* A commit is made only when the output changed (the provenance file is not compared), so
  publishing the same inputs twice makes no commit.
* The commit names the source commit and subject, with the trailers :data:`TRAILER_SHA`,
  :data:`TRAILER_REPO` and :data:`TRAILER_VERSION`; :data:`PROVENANCE_FILE` (like Argo CD's
  Source Hydrator ``hydrator.metadata``) records the source SHA, author, date, subject, repo
  URL, meshplan version and a digest of the input files.
* Pushes are plain fast-forward pushes, never forced. When the remote moved (another publish
  won the race), it fetches, checks the order again, re-creates its commit on top and retries,
  at most ``attempts`` times.
* A source commit that the published one already contains (an *older* commit) is refused, so
  a late job cannot roll the clusters back. A branch whose head was not written by meshplan
  (no :data:`TRAILER_SHA`) is refused too, so a mistyped ``--branch main`` cannot overwrite
  the source branch.
* Every git failure becomes an :class:`~meshplan.diagnostics.OperationError` with a plain
  explanation (exit 1), never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import git as gitpython

from . import __version__
from .diagnostics import Diagnostic, OperationError
from .model import DEFAULT_OUTPUT_BRANCH
from .outputs import CLUSTERS_DIR, OutputFile, clusters_of
from .pipeline import analyse, render_analysis

PROVENANCE_FILE = "hydrator.metadata"
TRAILER_SHA = "Meshplan-Source-Sha"
TRAILER_REPO = "Meshplan-Source-Repo"
TRAILER_VERSION = "Meshplan-Version"
DEFAULT_ATTEMPTS = 5
GIT_TIMEOUT = 300.0
INPUT_FOLDERS = ("inventory", "requirements")
FALLBACK_COMMITTER = ("meshplan", "meshplan@localhost")
ZERO_SHA = "0" * 40

_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


# --------------------------------------------------------------------------- running git


class GitFailure(OperationError):
    """A git command failed; ``stderr`` keeps git's words for classification."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


def run_git(
    args: Sequence[str],
    cwd: Path,
    *,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    check: bool = True,
    timeout: float = GIT_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``git args`` non-interactively (no prompts, C locale for parseable messages)."""
    full_env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GCM_INTERACTIVE": "never",
        "LC_ALL": "C",
        "LANGUAGE": "C",
        **(env or {}),
    }
    command = ["git", *args]
    try:
        proc = subprocess.run(
            command, cwd=cwd, env=full_env, input=input_text, capture_output=True,
            encoding="utf-8", errors="surrogateescape", timeout=timeout, check=False,
            stdin=subprocess.DEVNULL if input_text is None else None,
        )
    except FileNotFoundError as exc:
        raise OperationError("git is not installed (or not on PATH)") from exc
    except subprocess.TimeoutExpired as exc:
        raise OperationError(f"`git {args[0]}` did not finish within {timeout:.0f}s "
                             "(is the remote reachable?)") from exc
    if check and proc.returncode != 0:
        raise GitFailure(f"`git {' '.join(args[:2])}` failed: {last_lines(proc.stderr)}",
                         proc.stderr)
    return proc


def last_lines(text: str, count: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-count:]) if lines else "(no message)"


def explain_remote_failure(action: str, remote: str, stderr: str) -> OperationError:
    """Turn git's words about a remote into an error a person can act on."""
    text = stderr.lower()
    detail = last_lines(stderr)
    if "does not appear to be a git repository" in text and "'" + remote.lower() + "'" in text:
        return OperationError(f"cannot {action}: there is no remote '{remote}' "
                              f"(add it with `git remote add {remote} URL`)")
    auth_words = ("authentication failed", "could not read username", "could not read password",
                  "permission denied", "access denied", "terminal prompts disabled",
                  "invalid username or password", "http 401", "error: 401", "error: 403",
                  "http 403", "returned error: 403", "returned error: 401",
                  "write access to repository not granted", "publickey",
                  "service not enabled")
    if any(word in text for word in auth_words):
        return OperationError(f"cannot {action}: remote '{remote}' refused the credentials or "
                              f"denied access ({detail}). The publishing identity needs write "
                              "access to the output branch (in GitHub Actions: "
                              "`permissions: contents: write`).")
    unreachable = ("could not resolve host", "connection refused", "connection timed out",
                   "network is unreachable", "unable to connect", "no route to host",
                   "failed to connect", "unable to access", "connection reset")
    if any(word in text for word in unreachable):
        return OperationError(f"cannot {action}: remote '{remote}' is not reachable ({detail})")
    if "not found" in text or "not exported" in text or "no such file" in text:
        return OperationError(f"cannot {action}: remote '{remote}' has no such repository "
                              f"({detail})")
    return OperationError(f"cannot {action}: git failed ({detail})")


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


def open_repository(path: Path) -> gitpython.Repo:
    try:
        repo = gitpython.Repo(path, search_parent_directories=True)
    except gitpython.NoSuchPathError as exc:
        raise OperationError(f"{path} does not exist") from exc
    except gitpython.InvalidGitRepositoryError as exc:
        raise OperationError(f"{path} is not inside a git repository (run `git init` and "
                             "commit inventory/ and requirements/ first)") from exc
    if repo.bare or repo.working_tree_dir is None:
        raise OperationError(f"{path} is a bare repository; run meshplan in a clone")
    return repo


def redact_url(url: str) -> str:
    """A remote URL without credentials (``https://token@host`` -> ``https://host``)."""
    url = re.sub(r"^(https?://)[^/@]*@", r"\1", url)
    return re.sub(r"^(ssh://[^/@:]*):[^/@]*@", r"\1@", url)


def remote_url(root: Path, remote: str) -> str | None:
    proc = run_git(["remote", "get-url", remote], root, check=False)
    return redact_url(proc.stdout.strip()) if proc.returncode == 0 else None


def dirty_inputs(project: Path) -> tuple[str, ...]:
    """Input paths that differ from HEAD: modified, staged, deleted or untracked."""
    proc = run_git(["status", "--porcelain=v1", "-z", "--untracked-files=all", "--",
                    *INPUT_FOLDERS], project)
    entries = [e for e in proc.stdout.split("\0") if e]
    paths = []
    skip_next = False
    for entry in entries:
        if skip_next:  # the source path of a rename
            skip_next = False
            continue
        if entry[:1] in ("R", "C"):
            skip_next = True
        paths.append(entry[3:])
    return tuple(sorted(set(paths)))


def read_source(project: Path, remote: str, *, allow_dirty: bool) -> Source:
    repo = open_repository(project)
    root = Path(str(repo.working_tree_dir)).resolve()
    try:
        commit = repo.head.commit
    except ValueError as exc:
        raise OperationError(f"{root} has no commit yet: commit inventory/ and requirements/ "
                             "first (the output must name a source commit)") from exc
    dirty = dirty_inputs(project)
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


# --------------------------------------------------------------------------- trees and commits


def store_blobs(root: Path, files: Iterable[OutputFile]) -> dict[str, str]:
    """Write each file's exact bytes to the object store (no filters); path -> blob SHA."""
    files = list(files)
    with tempfile.TemporaryDirectory(prefix="meshplan-blobs-") as tmp:
        names = []
        for index, output in enumerate(files):
            name = Path(tmp) / str(index)
            name.write_bytes(output.content)
            names.append(str(name))
        out = run_git(["hash-object", "-w", "--no-filters", "--stdin-paths"], root,
                      input_text="".join(f"{n}\n" for n in names)).stdout.split()
    if len(out) != len(files):
        raise GitFailure(f"`git hash-object` stored {len(out)} of {len(files)} files")
    return {output.path: sha for output, sha in zip(files, out, strict=True)}


def write_tree(root: Path, blobs: Mapping[str, str]) -> str:
    """A tree holding ``blobs``, built in a temporary index (the real index is not touched)."""
    with tempfile.TemporaryDirectory(prefix="meshplan-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        listing = "".join(f"100644 {sha}\t{path}\0" for path, sha in sorted(blobs.items()))
        run_git(["update-index", "--add", "-z", "--index-info"], root, env=env,
                input_text=listing)
        return run_git(["write-tree"], root, env=env).stdout.strip()


def tree_blobs(root: Path, commit: str) -> dict[str, str]:
    """path -> blob SHA of every file in ``commit``."""
    out = run_git(["ls-tree", "-r", "-z", commit], root).stdout
    blobs = {}
    for entry in out.split("\0"):
        if not entry:
            continue
        meta, _, path = entry.partition("\t")
        blobs[path] = meta.split()[2]
    return blobs


def commit_tree(root: Path, tree: str, parent: str | None, message: str,
                env: Mapping[str, str]) -> str:
    """Create the output commit object (no ref is moved here)."""
    args = ["commit-tree", tree, "-F", "-"]
    if parent:
        args += ["-p", parent]
    return run_git(args, root, env=env, input_text=message).stdout.strip()


def trailers(message: str) -> dict[str, str]:
    """The ``Key: value`` lines of the last paragraph of a commit message."""
    paragraphs = [p for p in message.strip().split("\n\n") if p.strip()]
    if len(paragraphs) < 2:
        return {}
    found = {}
    for line in paragraphs[-1].splitlines():
        key, sep, value = line.partition(":")
        if sep and re.fullmatch(r"[A-Za-z0-9-]+", key):
            found[key] = value.strip()
    return found


def commit_message(root: Path, commit: str) -> str:
    return run_git(["cat-file", "commit", commit], root).stdout.partition("\n\n")[2]


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


def publish(options: PublishOptions) -> PublishResult:
    """Render ``options.project`` and publish it; see the module documentation."""
    project = options.project
    source = read_source(project, options.remote, allow_dirty=options.allow_dirty)
    # One analysis for both the configured branch and the output; input errors are raised
    # by render_analysis below, after the git checks (those are cheaper to fix first).
    analysis = analyse(project)
    inventory = analysis.inventory
    configured = inventory.gitops.branch if inventory is not None and inventory.gitops else None
    branch = options.branch or configured or DEFAULT_OUTPUT_BRANCH
    notes: list[str] = []
    if configured and configured != branch:
        notes.append(f"warning: inventory/ (kind GitOps) says the agents follow branch "
                     f"'{configured}', but this publishes to '{branch}'")
    check_branch_name(source.root, branch)
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
    rendered, diagnostics = render_analysis(analysis), analysis.diagnostics
    outputs = list(rendered.files)
    meta = OutputFile(PROVENANCE_FILE, provenance(source, inputs_digest(project)))
    all_blobs = store_blobs(source.root, [*outputs, meta])
    blobs = {path: sha for path, sha in all_blobs.items() if path != PROVENANCE_FILE}
    tree = write_tree(source.root, all_blobs)
    ctx = _Context(options, source, branch, tree, blobs, notes)
    result = _publish_loop(ctx, update_local=not checked_out)
    return replace(result, diagnostics=diagnostics)


def check_branch_name(root: Path, branch: str) -> None:
    proc = run_git(["check-ref-format", "--branch", branch], root, check=False)
    if proc.returncode != 0 or branch == "HEAD":
        raise OperationError(f"'{branch}' is not a valid branch name")


def checked_out_in(root: Path, branch: str) -> str | None:
    """The working tree that has ``branch`` checked out, if any."""
    out = run_git(["worktree", "list", "--porcelain"], root).stdout
    path = None
    for line in out.splitlines():
        if line.startswith("worktree "):
            path = line[len("worktree "):]
        elif line == f"branch refs/heads/{branch}":
            return path or str(root)
    return None


def _publish_loop(ctx: _Context, *, update_local: bool) -> PublishResult:
    attempts = max(1, ctx.options.attempts)
    for attempt in range(1, attempts + 1):
        local_before = None if ctx.options.push else _rev(ctx.root, f"refs/heads/{ctx.branch}")
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
            if _compare_and_swap(ctx, f"refs/heads/{ctx.branch}", commit, local_before):
                return PublishResult("published", ctx.branch, commit, ctx.source, published,
                                     changed, False, attempt, tuple(ctx.notes))
        elif _push(ctx, commit):
            run_git(["update-ref", f"refs/remotes/{ctx.remote}/{ctx.branch}", commit], ctx.root)
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


def _rev(root: Path, ref: str) -> str | None:
    proc = run_git(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], root, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _output_head(ctx: _Context) -> str | None:
    """The current head of the output branch (fetched fresh when pushing), None if absent."""
    if not ctx.options.push:
        return _rev(ctx.root, f"refs/heads/{ctx.branch}") or _rev(
            ctx.root, f"refs/remotes/{ctx.remote}/{ctx.branch}")
    tracking = f"refs/remotes/{ctx.remote}/{ctx.branch}"
    proc = run_git(["fetch", "--no-tags", "--quiet", ctx.remote,
                    f"+refs/heads/{ctx.branch}:{tracking}"], ctx.root, check=False)
    if proc.returncode != 0:
        if "couldn't find remote ref" in proc.stderr.lower():
            if _rev(ctx.root, tracking):  # deleted on the remote: forget the stale copy
                run_git(["update-ref", "-d", tracking], ctx.root)
            return None
        raise explain_remote_failure(f"fetch '{ctx.branch}'", ctx.remote, proc.stderr)
    return _rev(ctx.root, tracking)


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
    if not _has_commit(ctx.root, published):
        _fetch_source_commit(ctx, published)
    if not _has_commit(ctx.root, published):
        raise OperationError(
            f"branch '{ctx.branch}' holds the output of source commit {published[:12]}, which "
            f"is not in this repository's history, so it cannot be ordered against "
            f"{ctx.source.short}; refusing to publish (fetch the full history, e.g. "
            "actions/checkout with fetch-depth: 0)")
    if _is_ancestor(ctx.root, ctx.source.sha, published):
        raise OperationError(
            f"refusing to publish {ctx.source.short} (\"{ctx.source.subject}\"): branch "
            f"'{ctx.branch}' already holds the output of {published[:12]}, a newer commit that "
            "contains it. Publishing would roll the clusters back; nothing was changed.")
    return published


def _has_commit(root: Path, sha: str) -> bool:
    return run_git(["cat-file", "-e", f"{sha}^{{commit}}"], root, check=False).returncode == 0


def _is_ancestor(root: Path, older: str, newer: str) -> bool:
    proc = run_git(["merge-base", "--is-ancestor", older, newer], root, check=False)
    if proc.returncode not in (0, 1):
        raise GitFailure(f"cannot order {older[:12]} and {newer[:12]}: "
                         f"{last_lines(proc.stderr)}", proc.stderr)
    return proc.returncode == 0


def _fetch_source_commit(ctx: _Context, sha: str) -> None:
    """Fetch a source commit (by SHA, else the remote's branches) to order it; best effort."""
    if remote_url(ctx.root, ctx.remote) is None:
        return
    proc = run_git(["fetch", "--no-tags", "--quiet", ctx.remote, sha], ctx.root, check=False)
    if proc.returncode != 0:
        run_git(["fetch", "--no-tags", "--quiet", ctx.remote], ctx.root, check=False)


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
        configured = run_git(["config", "--get", name], ctx.root, check=False).stdout.strip()
        if not configured:
            env[key] = fallback
    return env


def _compare_and_swap(ctx: _Context, ref: str, new: str, old: str | None) -> bool:
    proc = run_git(["update-ref", ref, new, old or ZERO_SHA], ctx.root, check=False)
    return proc.returncode == 0


def _fast_forward_local(ctx: _Context, commit: str) -> None:
    """Move the local output branch to ``commit`` when that is a fast-forward."""
    ref = f"refs/heads/{ctx.branch}"
    local = _rev(ctx.root, ref)
    if local == commit:
        return
    if local is None or _is_ancestor(ctx.root, local, commit):
        if not _compare_and_swap(ctx, ref, commit, local):
            ctx.notes.append(f"local branch '{ctx.branch}' changed meanwhile: left as is")
    else:
        ctx.notes.append(f"local branch '{ctx.branch}' has commits the remote does not: "
                         "left as is")


def _push(ctx: _Context, commit: str) -> bool:
    """Push without force; False when the remote moved (rejected as non-fast-forward)."""
    proc = run_git(["push", "--porcelain", ctx.remote, f"{commit}:refs/heads/{ctx.branch}"],
                   ctx.root, check=False)
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
