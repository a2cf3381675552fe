"""meshplan.gitrepo: the one module that runs git (real repositories, no mocks)."""

from __future__ import annotations

from pathlib import Path

import pytest
from meshplan.diagnostics import OperationError
from meshplan.gitrepo import (
    detached_worktree,
    open_repository,
    redact_url,
    resolve_commit,
    run_git,
    toplevel,
    trailers,
)

from tests.support.gitserver import commit_all, git, isolate_git
from tests.support.repos import write_text


def test_redact_url_and_trailers() -> None:
    assert redact_url("https://x-access-token:abc@github.com/o/r") == "https://github.com/o/r"
    assert redact_url("https://abc@github.com/o/r") == "https://github.com/o/r"
    assert redact_url("ssh://git:pw@host/o/r") == "ssh://git@host/o/r"
    assert redact_url("git@github.com:o/r.git") == "git@github.com:o/r.git"
    message = "Render x: y\n\nBody\n\nMeshplan-Source-Sha: abc\nMeshplan-Version: 1\n"
    assert trailers(message) == {"Meshplan-Source-Sha": "abc", "Meshplan-Version": "1"}
    assert trailers("Meshplan-Source-Sha: abc\n") == {}  # a subject is no trailer block


def test_refs_worktrees_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch, tmp_path / "home")
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write_text(repo, "a.txt", "one\n")
    first = commit_all(repo, "first")
    write_text(repo, "a.txt", "two\n")
    commit_all(repo, "second")

    assert toplevel(repo) == repo.resolve() and toplevel(tmp_path) is None
    assert resolve_commit(repo, "HEAD~1") == first
    assert resolve_commit(repo, "no-such-ref") is None
    with detached_worktree(repo, first) as checkout:
        assert (checkout / "a.txt").read_text() == "one\n"
    assert not checkout.exists()
    assert str(checkout) not in run_git(["worktree", "list", "--porcelain"], repo).stdout
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(OperationError, match="not inside a git repository"):
        open_repository(outside)
    with pytest.raises(OperationError, match=r"`git rev-parse --verify` failed"):
        run_git(["rev-parse", "--verify", "no-such-ref"], repo)
