"""All git access: every git command and every GitPython call of meshplan is made here.

GitPython opens the repository and reads the checked-out commit (author, date, subject). The
plumbing that ``publish`` and ``diff`` need runs the git command through :func:`run_git`, on
purpose: one ``git hash-object --stdin-paths`` stores every output file in one process, where
GitPython's object-level writers (``IndexFile``, ``Blob``, ``Commit.create_from_tree``) store
them one by one in Python; a temporary index is one environment variable
(``GIT_INDEX_FILE``); and the race handling of ``publish`` reads git's own words
(``push --porcelain`` status lines, stderr in the C locale), which GitPython's remote API
reshapes. Every failure becomes an :class:`~meshplan.diagnostics.OperationError`.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .diagnostics import OperationError
from .outputs import OutputFile

if TYPE_CHECKING:
    import git as gitpython

GIT_TIMEOUT = 300.0
ZERO_SHA = "0" * 40


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


# --------------------------------------------------------------------------- repository


def open_repository(path: Path) -> gitpython.Repo:
    import git as gitpython  # only publish reads a repository this way: keep it off start-up

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


def toplevel(path: Path) -> Path | None:
    """The top folder of the working tree holding ``path``; None outside a repository."""
    proc = run_git(["rev-parse", "--show-toplevel"], path, check=False)
    return Path(proc.stdout.strip()).resolve() if proc.returncode == 0 else None


def redact_url(url: str) -> str:
    """A remote URL without credentials (``https://token@host`` -> ``https://host``)."""
    url = re.sub(r"^(https?://)[^/@]*@", r"\1", url)
    return re.sub(r"^(ssh://[^/@:]*):[^/@]*@", r"\1@", url)


def remote_url(root: Path, remote: str) -> str | None:
    proc = run_git(["remote", "get-url", remote], root, check=False)
    return redact_url(proc.stdout.strip()) if proc.returncode == 0 else None


def changed_paths(project: Path, folders: Sequence[str]) -> tuple[str, ...]:
    """Paths in ``folders`` that differ from HEAD: modified, staged, deleted or untracked."""
    proc = run_git(["status", "--porcelain=v1", "-z", "--untracked-files=all", "--",
                    *folders], project)
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


def config_value(root: Path, name: str) -> str:
    """A git configuration value, "" when unset."""
    return run_git(["config", "--get", name], root, check=False).stdout.strip()


# --------------------------------------------------------------------------- refs and commits


def resolve_commit(root: Path, ref: str) -> str | None:
    """The commit ``ref`` names, None when it names none."""
    proc = run_git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
                   root, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def has_commit(root: Path, sha: str) -> bool:
    return run_git(["cat-file", "-e", f"{sha}^{{commit}}"], root, check=False).returncode == 0


def is_ancestor(root: Path, older: str, newer: str) -> bool:
    proc = run_git(["merge-base", "--is-ancestor", older, newer], root, check=False)
    if proc.returncode not in (0, 1):
        raise GitFailure(f"cannot order {older[:12]} and {newer[:12]}: "
                         f"{last_lines(proc.stderr)}", proc.stderr)
    return proc.returncode == 0


def is_branch_name(root: Path, branch: str) -> bool:
    proc = run_git(["check-ref-format", "--branch", branch], root, check=False)
    return proc.returncode == 0 and branch != "HEAD"


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


def compare_and_swap(root: Path, ref: str, new: str, old: str | None) -> bool:
    """Move ``ref`` to ``new`` only if it still is at ``old`` (None: only if it is absent)."""
    proc = run_git(["update-ref", ref, new, old or ZERO_SHA], root, check=False)
    return proc.returncode == 0


def update_ref(root: Path, ref: str, new: str) -> None:
    run_git(["update-ref", ref, new], root)


def delete_ref(root: Path, ref: str) -> None:
    run_git(["update-ref", "-d", ref], root)


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


def build_tree(root: Path, blobs: Mapping[str, str]) -> str:
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
    """Create a commit object (no ref is moved here)."""
    args = ["commit-tree", tree, "-F", "-"]
    if parent:
        args += ["-p", parent]
    return run_git(args, root, env=env, input_text=message).stdout.strip()


def commit_message(root: Path, commit: str) -> str:
    return run_git(["cat-file", "commit", commit], root).stdout.partition("\n\n")[2]


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


# --------------------------------------------------------------------------- remotes


def fetch(root: Path, remote: str, *refspecs: str) -> subprocess.CompletedProcess[str]:
    """``git fetch`` without tags; the caller reads the result (failures are expected)."""
    return run_git(["fetch", "--no-tags", "--quiet", remote, *refspecs], root, check=False)


def push(root: Path, remote: str, refspec: str) -> subprocess.CompletedProcess[str]:
    """A plain (never forced) ``git push --porcelain``; the caller reads the status lines."""
    return run_git(["push", "--porcelain", remote, refspec], root, check=False)


# --------------------------------------------------------------------------- worktrees


@contextmanager
def detached_worktree(root: Path, sha: str) -> Iterator[Path]:
    """A temporary checkout of ``sha`` (``git worktree``, hooks off), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="meshplan-diff-") as tmp:
        checkout = Path(tmp) / "base"
        run_git(["-c", "core.hooksPath=/dev/null", "worktree", "add", "--detach", "--quiet",
                 str(checkout), sha], root)
        try:
            yield checkout
        finally:
            run_git(["worktree", "remove", "--force", str(checkout)], root, check=False)
            run_git(["worktree", "prune"], root, check=False)


@contextmanager
def base_checkout(root: Path, sha: str, relative: str) -> Iterator[Path]:
    """The files of ``sha`` under ``relative`` (a folder of the repository, "." for all) in
    a temporary folder, removed afterwards: what :func:`detached_worktree` would check out
    there, made mostly of hard links. A file of the working tree whose bytes are the base's
    blob is linked (a link costs the kernel far less than a new file: a cold ``meshplan
    diff`` checked out every input file of the fleet to read them once); only the others are
    written, from git's objects. Falls back to :func:`detached_worktree` (the checkout is then
    its ``relative`` folder) when git would transform the files it checks out (attributes,
    line-end or filter settings), the folder holds symbolic links or submodules, or a link
    cannot be made (another file system)."""
    with tempfile.TemporaryDirectory(prefix="meshplan-diff-") as tmp:
        checkout = Path(tmp) / "base"
        if _link_checkout(root, sha, relative, checkout):
            yield checkout
            return
    with detached_worktree(root, sha) as worktree:
        yield worktree / relative


_TRANSFORMING = re.compile(r"^(core\.(autocrlf|eol|attributesfile)|filter\.)", re.IGNORECASE)


def _link_checkout(root: Path, sha: str, relative: str, checkout: Path) -> bool:
    config = run_git(["config", "--list"], root, check=False).stdout
    if any(_TRANSFORMING.match(line) for line in config.splitlines()):
        return False
    common = run_git(["rev-parse", "--git-common-dir"], root).stdout.strip()
    if (root / common / "info" / "attributes").exists():
        return False
    listing = run_git(["ls-tree", "-r", "-z", "--full-tree", sha], root).stdout
    prefix = "" if relative in ("", ".") else relative.rstrip("/") + "/"
    entries: list[tuple[str, str]] = []  # (blob, path inside the checkout)
    for entry in listing.split("\0"):
        if not entry:
            continue
        meta, _, path = entry.partition("\t")
        mode, _, blob = meta.split(" ")
        if path.rsplit("/", 1)[-1] == ".gitattributes":
            return False
        if not path.startswith(prefix):
            continue
        if mode not in ("100644", "100755"):
            return False  # a symbolic link or submodule: as git checks it out
        entries.append((blob, path[len(prefix):]))
    new = hashlib.sha256 if len(sha) == 64 else hashlib.sha1
    # os.path on strings, each folder made once: ten thousand files at a thousand clusters
    source, target = str(root / prefix), str(checkout)
    to_write: list[tuple[str, str]] = []
    made: set[str] = set()
    for blob, path in entries:
        here, there = os.path.join(source, path), os.path.join(target, path)  # noqa: PTH118
        folder = os.path.dirname(there)  # noqa: PTH120
        if folder not in made:
            os.makedirs(folder, exist_ok=True)  # noqa: PTH103
            made.add(folder)
        try:
            if os.path.islink(here):  # noqa: PTH114
                raise OSError
            with open(here, "rb") as handle:  # noqa: PTH123
                data = handle.read()
        except OSError:
            to_write.append((blob, path))
            continue
        named = new(b"blob %d\0" % len(data))
        named.update(data)
        if named.hexdigest() != blob:
            to_write.append((blob, path))
            continue
        try:
            os.link(here, there)
        except OSError:
            return False
    if to_write:
        contents = _blobs(root, [blob for blob, _ in to_write])
        for (_, path), data in zip(to_write, contents, strict=True):
            (checkout / path).write_bytes(data)
    return True


def _blobs(root: Path, blobs: Sequence[str]) -> list[bytes]:
    """The contents of ``blobs`` (one ``git cat-file --batch``)."""
    proc = subprocess.run(
        ["git", "cat-file", "--batch"], cwd=root, input="".join(f"{b}\n" for b in blobs).encode(),
        capture_output=True, check=False, timeout=GIT_TIMEOUT,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "LANGUAGE": "C"})
    if proc.returncode != 0:
        raise GitFailure(f"git cat-file failed: {proc.stderr.decode(errors='replace').strip()}",
                         proc.stderr.decode(errors="replace"))
    out, at, contents = proc.stdout, 0, []
    for blob in blobs:
        end = out.index(b"\n", at)
        name, kind, size = out[at:end].split(b" ")
        if name.decode() != blob or kind != b"blob":
            raise GitFailure(f"git cat-file: no blob {blob}")
        start = end + 1
        contents.append(out[start:start + int(size)])
        at = start + int(size) + 1
    return contents
