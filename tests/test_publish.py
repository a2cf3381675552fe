"""``meshplan publish`` end to end, over a real git server (``git daemon`` on 127.0.0.1).

The source repository is a clone holding the bundled example; publish pushes the output branch
to the server; a separate clone, standing in for a cluster's GitOps agent, checks the branch
out and builds every cluster folder with ``kubectl kustomize``.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from meshplan import gitrepo
from meshplan import publish as publish_module
from meshplan.gitrepo import trailers
from meshplan.pipeline import publish_repository, render_repository
from meshplan.publish import PROVENANCE_FILE, PublishOptions

from tests.support.cli import run_cli
from tests.support.gitserver import (
    GitServer,
    commit_all,
    free_port,
    git,
    git_daemon,
    isolate_git,
)
from tests.support.k8s import kustomize_build, validate_object
from tests.support.repos import REBEL_REQUIREMENT, copy_example

BRANCH = "rendered"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    with git_daemon(tmp_path_factory.mktemp("gitserver") / "repos") as running:
        yield running


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_git(monkeypatch, tmp_path / "home")


@dataclass
class Setup:
    server: GitServer
    bare: Path  # the remote repository, on the server
    url: str
    source: Path  # the user's clone
    tmp: Path

    def clone(self, name: str, ref: str = "main") -> Path:
        path = self.tmp / name
        git(self.tmp, "clone", "-q", self.url, str(path))
        git(path, "checkout", "-q", ref)
        return path

    def remote_head(self, branch: str = BRANCH) -> str | None:
        out = git(self.bare, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}",
                  check=False)
        return out or None

    def remote_file(self, path: str, branch: str = BRANCH) -> str:
        return git(self.bare, "show", f"{branch}:{path}")


@pytest.fixture
def setup(server: GitServer, tmp_path: Path) -> Setup:
    name = f"{tmp_path.name}.git"
    bare = server.create(name)
    source = tmp_path / "source"
    source.mkdir()
    git(source, "init", "-q", "-b", "main")
    copy_example(source)
    commit_all(source, "Bundled example")
    url = server.url(name)
    git(source, "remote", "add", "origin", url)
    git(source, "push", "-q", "origin", "main")
    return Setup(server, bare, url, source, tmp_path)


def publish_cli(repo: Path, *args: str) -> tuple[int, str, str]:
    return run_cli(["publish", "--repo", str(repo), *args])


def state_of(repo: Path) -> dict[str, str]:
    """What the user sees of a working copy: HEAD, branch, status, index, refs."""
    return {
        "head": git(repo, "rev-parse", "HEAD"),
        "branch": git(repo, "symbolic-ref", "-q", "HEAD", check=False),
        "status": git(repo, "status", "--porcelain=v1", "--untracked-files=all"),
        "index": git(repo, "ls-files", "-s"),
        "refs": git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        "worktrees": git(repo, "worktree", "list", "--porcelain"),
    }


def add_rebel_requirement(repo: Path) -> str:
    (repo / "requirements" / "domain2" / "rebel-base.yaml").write_text(REBEL_REQUIREMENT,
                                                                       encoding="utf-8")
    return commit_all(repo, "domain2: rebel-base may call service3")


def assert_no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr


# --------------------------------------------------------------------------- end to end


def test_publish_pushes_output_that_an_agent_clone_builds(setup: Setup) -> None:
    before = state_of(setup.source)
    source_sha = before["head"]

    code, out, err = publish_cli(setup.source, "--push")

    assert code == 0, err
    assert "published" in out and "pushed to origin" in out
    head = setup.remote_head()
    assert head is not None
    assert state_of(setup.source) | {"refs": ""} == before | {"refs": ""}  # only refs moved
    assert git(setup.source, "rev-parse", f"refs/heads/{BRANCH}") == head

    # Provenance: file and trailers name the source commit.
    metadata = json.loads(setup.remote_file(PROVENANCE_FILE))
    assert metadata["drySha"] == source_sha
    assert metadata["subject"] == "Bundled example"
    assert metadata["author"] == "Test Author <author@example.com>"
    assert metadata["repoURL"] == setup.url
    assert metadata["inputsDigest"].startswith("sha256:")
    assert metadata["meshplanVersion"]
    message = git(setup.bare, "log", "-1", "--format=%B", BRANCH)
    found = trailers(message)
    assert found["Meshplan-Source-Sha"] == source_sha
    assert found["Meshplan-Source-Repo"] == setup.url
    assert found["Meshplan-Version"] == metadata["meshplanVersion"]
    assert message.startswith(f"Render {source_sha[:12]}: Bundled example")
    assert git(setup.bare, "log", "-1", "--format=%an <%ae>|%cn", BRANCH) == \
        "Test Author <author@example.com>|meshplan"  # no identity configured: the fallback
    assert git(setup.bare, "rev-list", "--count", BRANCH) == "1"  # an orphan branch

    # The agent: a separate clone of the output branch, whose root is exactly rendered/.
    agent = setup.tmp / "agent"
    git(setup.tmp, "clone", "-q", "--branch", BRANCH, "--single-branch", setup.url, str(agent))
    rendered, _ = render_repository(setup.source)
    expected = {f.path: f.content for f in rendered.files}
    on_branch = {p: (agent / p).read_bytes() for p in git(agent, "ls-files").splitlines()}
    assert on_branch.pop(PROVENANCE_FILE)
    assert on_branch == expected
    cluster_dirs = sorted(agent.glob("clusters/*/*"))
    assert [d.relative_to(agent).as_posix() for d in cluster_dirs] == [
        "clusters/domain1/cl1", "clusters/domain1/cl2", "clusters/domain2/cl3",
        "clusters/domain2/cl4"]
    for directory in cluster_dirs:
        objects = kustomize_build(directory)
        assert objects, directory
    for path in sorted(agent.glob("bootstrap/**/*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert validate_object(document) == [], path


def test_republishing_unchanged_inputs_makes_no_commit(setup: Setup) -> None:
    assert publish_cli(setup.source, "--push")[0] == 0
    head = setup.remote_head()

    code, out, err = publish_cli(setup.source, "--push")
    assert code == 0, err
    assert out.startswith("up to date")
    assert setup.remote_head() == head

    # A new source commit that does not change the output makes no commit either.
    (setup.source / "NOTES.md").write_text("not an input\n", encoding="utf-8")
    commit_all(setup.source, "Notes")
    code, out, err = publish_cli(setup.source, "--push")
    assert code == 0, err
    assert out.startswith("up to date")
    assert setup.remote_head() == head


def test_changing_one_requirement_changes_only_the_affected_cluster(setup: Setup) -> None:
    assert publish_cli(setup.source, "--push")[0] == 0
    first = setup.remote_head()
    new_source = add_rebel_requirement(setup.source)
    git(setup.source, "push", "-q", "origin", "main")

    code, _, err = publish_cli(setup.source, "--push")

    assert code == 0, err
    second = setup.remote_head()
    assert second != first
    assert git(setup.bare, "rev-parse", f"{second}^") == first  # on top, fast-forward
    changed = set(git(setup.bare, "diff", "--name-only", str(first), str(second)).splitlines())
    assert changed == {"clusters/domain2/cl3/policies.yaml", "clusters/domain2/cl3/services.yaml",
                       PROVENANCE_FILE}
    assert json.loads(setup.remote_file(PROVENANCE_FILE))["drySha"] == new_source
    assert "Clusters changed: domain2/cl3\n" in git(setup.bare, "log", "-1", "--format=%B",
                                                  BRANCH)


# --------------------------------------------------------------------------- refusals


def test_dirty_inputs_are_refused_unless_allowed(setup: Setup) -> None:
    path = setup.source / "requirements" / "domain2" / "rebel-base.yaml"
    path.write_text(REBEL_REQUIREMENT, encoding="utf-8")

    code, _, err = publish_cli(setup.source, "--push")
    assert code == 1
    assert "requirements/domain2/rebel-base.yaml" in err and "--allow-dirty" in err
    assert setup.remote_head() is None
    assert_no_traceback(err)

    code, _, err = publish_cli(setup.source, "--push", "--allow-dirty")
    assert code == 0, err
    metadata = json.loads(setup.remote_file(PROVENANCE_FILE))
    assert metadata["dirty"] is True
    assert "+dirty" in git(setup.bare, "log", "-1", "--format=%s", BRANCH)
    assert path.is_file() and git(setup.source, "status", "--porcelain")  # still uncommitted


def test_an_older_source_commit_is_refused(setup: Setup) -> None:
    old = git(setup.source, "rev-parse", "HEAD")
    add_rebel_requirement(setup.source)
    git(setup.source, "push", "-q", "origin", "main")
    assert publish_cli(setup.source, "--push")[0] == 0
    head = setup.remote_head()

    late = setup.clone("late-job", old)  # a late CI job, still at the older commit
    code, _, err = publish_cli(late, "--push")

    assert code == 1
    assert "refusing to publish" in err and "newer" in err and "roll the clusters back" in err
    assert setup.remote_head() == head
    assert_no_traceback(err)


def test_a_late_shallow_job_fetches_the_newer_commit_and_refuses(setup: Setup) -> None:
    # Cloned (shallow, like CI) before the newer commit existed: it does not have it.
    late = setup.tmp / "late-shallow"
    git(setup.tmp, "clone", "-q", "--depth", "1", setup.url, str(late))
    newer = add_rebel_requirement(setup.source)
    git(setup.source, "push", "-q", "origin", "main")
    assert publish_cli(setup.source, "--push")[0] == 0
    head = setup.remote_head()
    assert subprocess.run(["git", "cat-file", "-e", newer], cwd=late,
                          capture_output=True, check=False).returncode != 0

    code, _, err = publish_cli(late, "--push")

    assert code == 1
    assert "newer commit that contains it" in err
    assert setup.remote_head() == head


def test_no_push_builds_on_the_remote_tracking_branch(setup: Setup) -> None:
    assert publish_cli(setup.source, "--push")[0] == 0
    published = setup.remote_head()
    git(setup.source, "branch", "-q", "-D", BRANCH)  # only origin/rendered is left
    add_rebel_requirement(setup.source)

    code, _, err = publish_cli(setup.source, "--no-push")

    assert code == 0, err
    local = git(setup.source, "rev-parse", f"refs/heads/{BRANCH}")
    assert git(setup.source, "rev-parse", f"{local}^") == published
    assert setup.remote_head() == published


def test_publish_never_overwrites_a_branch_it_did_not_write(setup: Setup) -> None:
    code, _, err = publish_cli(setup.source, "--push", "--branch", "main")
    assert code == 1
    assert "not written by meshplan" in err
    assert_no_traceback(err)


def test_no_push_updates_only_the_local_branch(setup: Setup) -> None:
    before = state_of(setup.source)
    code, out, err = publish_cli(setup.source, "--no-push")
    assert code == 0, err
    assert "local only" in out
    assert setup.remote_head() is None
    local = git(setup.source, "rev-parse", f"refs/heads/{BRANCH}")
    assert trailers(git(setup.source, "log", "-1", "--format=%B", local))[
        "Meshplan-Source-Sha"] == before["head"]
    assert state_of(setup.source) | {"refs": ""} == before | {"refs": ""}

    # The branch checked out by the user: refused, nothing moves.
    git(setup.source, "checkout", "-q", BRANCH)
    (setup.source / "NOTES.md").write_text("x\n", encoding="utf-8")
    code, _, err = publish_cli(setup.source, "--no-push", "--allow-dirty")
    assert code == 1 and "checked out" in err
    assert git(setup.source, "rev-parse", f"refs/heads/{BRANCH}") == local


# --------------------------------------------------------------------------- races


def two_jobs(setup: Setup) -> tuple[str, str, Path, Path]:
    """(old sha, new sha, a clone at the new commit, a clone at the old one): two CI jobs."""
    old = git(setup.source, "rev-parse", "HEAD")
    new = add_rebel_requirement(setup.source)
    git(setup.source, "push", "-q", "origin", "main")
    return old, new, setup.clone("job-new", new), setup.clone("job-old", old)


def other_job_wins_first(monkeypatch: pytest.MonkeyPatch, loser_sha: str, winner: Path
                         ) -> list[str]:
    """Just before the job publishing ``loser_sha`` pushes, ``winner`` publishes and pushes.

    Returns the list that receives the winner's commit."""
    raced: list[str] = []
    original_push = publish_module._push

    def push_after_the_other_job(ctx: publish_module._Context, commit: str) -> bool:
        if not raced and ctx.source.sha == loser_sha:
            raced.append(publish_repository(PublishOptions(winner, push=True)).commit)
        return original_push(ctx, commit)

    monkeypatch.setattr(publish_module, "_push", push_after_the_other_job)
    return raced


@pytest.mark.slow
def test_race_newer_source_waits_and_lands_on_top(setup: Setup,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _old, new, newer, older = two_jobs(setup)
    raced = other_job_wins_first(monkeypatch, new, older)  # the older job reaches it first
    code, _, err = publish_cli(newer, "--push")

    assert code == 0, err
    assert "moved while publishing" in err
    head = setup.remote_head()
    assert head is not None
    assert git(setup.bare, "rev-parse", f"{head}^") == raced[0]  # nothing lost, no force
    assert json.loads(setup.remote_file(PROVENANCE_FILE))["drySha"] == new

    # The older job re-run afterwards refuses to overwrite the newer output.
    code, _, err = publish_cli(older, "--push")
    assert code == 1 and "newer" in err
    assert setup.remote_head() == head


@pytest.mark.slow
def test_race_older_source_loses_and_refuses(setup: Setup,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    old, new, newer, older = two_jobs(setup)
    raced = other_job_wins_first(monkeypatch, old, newer)  # the newer job reaches it first
    code, _, err = publish_cli(older, "--push")

    assert code == 1
    assert "newer" in err and "refusing to publish" in err
    assert setup.remote_head() == raced[0]
    assert json.loads(setup.remote_file(PROVENANCE_FILE))["drySha"] == new
    assert_no_traceback(err)


@pytest.mark.slow
def test_two_real_publishers_race_without_force(setup: Setup) -> None:
    old = git(setup.source, "rev-parse", "HEAD")
    new = add_rebel_requirement(setup.source)
    git(setup.source, "push", "-q", "origin", "main")
    jobs = {"new": setup.clone("job-new", new), "old": setup.clone("job-old", old)}
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    start = threading.Barrier(2)

    def run(name: str) -> None:
        start.wait()
        results[name] = subprocess.run(
            [sys.executable, "-m", "meshplan", "publish",
             "--repo", str(jobs[name]), "--push"],
            capture_output=True, text=True, timeout=60, check=False, env=dict(os.environ))

    threads = [threading.Thread(target=run, args=(name,)) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results["new"].returncode == 0, results["new"].stderr
    # The older job either published first (and the newer one landed on top) or refused.
    assert results["old"].returncode in (0, 1), results["old"].stderr
    if results["old"].returncode == 1:
        assert "newer" in results["old"].stderr
    assert json.loads(setup.remote_file(PROVENANCE_FILE))["drySha"] == new
    history = git(setup.bare, "rev-list", "--parents", BRANCH).splitlines()
    assert all(len(line.split()) <= 2 for line in history)  # linear: nothing was forced
    assert len(history) == (2 if results["old"].returncode == 0 else 1)


# --------------------------------------------------------------------------- interrupted


def test_failure_inside_the_commit_step_changes_nothing(setup: Setup,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    original = gitrepo.commit_tree  # what publish calls, from its home module

    def commit_then_die(*args: object, **kwargs: object) -> str:
        original(*args, **kwargs)  # type: ignore[arg-type]  # the object is written ...
        raise KeyboardInterrupt  # ... and the process is interrupted before any ref moves

    before = state_of(setup.source)
    monkeypatch.setattr(publish_module, "commit_tree", commit_then_die)
    with pytest.raises(KeyboardInterrupt):
        publish_repository(PublishOptions(setup.source, push=True))
    assert state_of(setup.source) == before
    assert setup.remote_head() is None


@pytest.mark.slow
def test_killed_during_commit_leaves_branch_and_tree_as_they_were(setup: Setup) -> None:
    assert publish_cli(setup.source, "--push")[0] == 0
    add_rebel_requirement(setup.source)
    before = state_of(setup.source)
    head = setup.remote_head()
    # A `git` in front of the real one that SIGKILLs meshplan when it runs commit-tree.
    shim = setup.tmp / "shim"
    shim.mkdir()
    real_git = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True,
                              check=True).stdout.strip()
    (shim / "git").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = commit-tree ]; then kill -9 "$PPID"; sleep 5; exit 1; fi\n'
        f'exec "{real_git}" "$@"\n', encoding="utf-8")
    (shim / "git").chmod(stat.S_IRWXU)
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
           "TMPDIR": str(setup.tmp)}

    proc = subprocess.run(
        [sys.executable, "-m", "meshplan", "publish", "--repo",
         str(setup.source), "--push"], capture_output=True, text=True, timeout=60, env=env,
        check=False)

    assert proc.returncode == -9, proc.stderr
    assert state_of(setup.source) == before
    assert setup.remote_head() == head


# --------------------------------------------------------------------------- git failures


def test_no_remote_is_a_clear_error(setup: Setup) -> None:
    git(setup.source, "remote", "remove", "origin")
    code, _, err = publish_cli(setup.source, "--push")
    assert code == 1
    assert "no remote 'origin'" in err and "--no-push" in err
    assert_no_traceback(err)


def test_protected_branch_is_a_clear_error(setup: Setup) -> None:
    hook = setup.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\n"
                    'while read old new ref; do\n'
                    f'  [ "$ref" = refs/heads/{BRANCH} ] && '
                    '{ echo "GH006: Protected branch update failed" >&2; exit 1; }\n'
                    "done\nexit 0\n", encoding="utf-8")
    hook.chmod(stat.S_IRWXU)
    code, _, err = publish_cli(setup.source, "--push")
    assert code == 1
    assert "refused the update" in err and "protected" in err
    assert setup.remote_head() is None
    assert_no_traceback(err)


def test_push_access_denied_is_a_clear_error(setup: Setup) -> None:
    git(setup.bare, "config", "daemon.receivepack", "false")  # read-only for this identity
    code, _, err = publish_cli(setup.source, "--push")
    assert code == 1
    assert "denied access" in err and "contents: write" in err
    assert setup.remote_head() is None
    assert_no_traceback(err)


def test_unreachable_remote_is_a_clear_error(setup: Setup) -> None:
    git(setup.source, "remote", "set-url", "origin", f"git://127.0.0.1:{free_port()}/x.git")
    code, _, err = publish_cli(setup.source, "--push")
    assert code == 1
    assert "not reachable" in err
    assert_no_traceback(err)


def test_remote_without_the_repository_is_a_clear_error(setup: Setup) -> None:
    git(setup.source, "remote", "set-url", "origin", setup.server.url("missing.git"))
    code, _, err = publish_cli(setup.source, "--push")
    assert code == 1
    assert "no such repository" in err
    assert_no_traceback(err)


# --------------------------------------------------------------------------- small parts


def test_project_in_a_subfolder_and_provenance_without_credentials(tmp_path: Path) -> None:
    root = tmp_path / "monorepo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    copy_example(root / "mesh")
    (root / "other.txt").write_text("not an input\n", encoding="utf-8")
    sha = commit_all(root, "mesh in a subfolder")
    git(root, "remote", "add", "origin", "https://user:s3cret@git.example.com/org/mono.git")
    (root / "untracked-elsewhere.txt").write_text("ignored by the dirty check\n", encoding="utf-8")

    code, _, err = publish_cli(root / "mesh", "--no-push")

    assert code == 0, err
    metadata = json.loads(git(root, "show", f"{BRANCH}:{PROVENANCE_FILE}"))
    assert metadata["drySha"] == sha
    assert metadata["repoURL"] == "https://git.example.com/org/mono.git"
    assert "s3cret" not in git(root, "log", "-1", "--format=%B", BRANCH)
    assert "clusters/domain1/cl1/kustomization.yaml" in git(root, "ls-tree", "-r", "--name-only",
                                                            BRANCH).splitlines()


def test_publish_analyses_the_inputs_once(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    from meshplan import pipeline

    runs: list[Path] = []
    real = pipeline._analyse

    def counted(repo: Path, **options: Any) -> pipeline.Analysis:
        runs.append(repo)
        return real(repo, **options)

    monkeypatch.setattr(pipeline, "_analyse", counted)
    code, _out, err = publish_cli(setup.source, "--no-push")

    assert code == 0, err
    assert len(runs) == 1  # the configured branch and the output come from one analysis
