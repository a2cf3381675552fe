"""pre-commit: the hooks meshplan offers to requirement repositories (.pre-commit-hooks.yaml),
run for real with ``pre-commit try-repo``, and this repository's own configuration.

try-repo installs meshplan from a commit of the hook repository into a fresh environment of
pre-commit's (``pip install .``: the build backend and meshplan's dependencies come from the
package index), so the test commits the working tree's package into a temporary repository
first: it tests the code as it is, committed or not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.ci import missing_tool
from tests.support.gitserver import commit_all, git, isolate_git
from tests.support.repos import REPO_ROOT, copy_example

# What `pip install .` of the hook repository needs.
PACKAGE_FILES = ("pyproject.toml", "README.md", "LICENSE", ".pre-commit-hooks.yaml")


def pre_commit() -> str:
    found = Path(sys.executable).with_name("pre-commit")
    if not found.exists():
        missing_tool("pre-commit is not installed beside python (it is in locks/dev.txt)")
    return str(found)


def hook_repository(dest: Path) -> Path:
    """The working tree's package and hook manifest, committed in a new git repository."""
    dest.mkdir(parents=True)
    for name in PACKAGE_FILES:
        shutil.copy2(REPO_ROOT / name, dest / name)
    shutil.copytree(REPO_ROOT / "generator", dest / "generator",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    git(dest, "init", "-q", "-b", "main")
    commit_all(dest, "meshplan")
    return dest


def try_repo(hooks: Path, hook: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([pre_commit(), "try-repo", str(hooks), hook, "--all-files",
                           "--color", "never"], cwd=cwd, capture_output=True, text=True,
                          timeout=900, check=False)


@pytest.mark.slow
def test_a_requirement_repository_runs_meshplan_as_a_pre_commit_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    isolate_git(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("PRE_COMMIT_HOME", str(tmp_path / "pre-commit-home"))
    hooks = hook_repository(tmp_path / "meshplan")
    user = copy_example(tmp_path / "platform-requirements")
    git(user, "init", "-q", "-b", "main")
    commit_all(user, "requirements")

    ok = try_repo(hooks, "meshplan-validate", user)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "meshplan validate" in ok.stdout and "Passed" in ok.stdout

    requirement = user / "requirements/domain2/allow-domain1.yaml"
    requirement.write_text(requirement.read_text().replace("[cl3]", "[cl33]"), encoding="utf-8")
    git(user, "add", "-A")
    broken = try_repo(hooks, "meshplan-validate", user)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "Failed" in broken.stdout
    assert ("requirements/domain2/allow-domain1.yaml:10:14: spec.clusters[0]: expected a cluster "
            "of domain 'domain2', found 'cl33' (did you mean 'cl3'?)") in broken.stdout


def test_the_offered_hooks_run_meshplan_commands() -> None:
    hooks = yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    assert {h["id"]: h["entry"] for h in hooks} == {
        "meshplan-validate": "meshplan validate",
        "meshplan-render-check": "meshplan render --check",
    }
    assert {h["language"] for h in hooks} == {"python"}
    assert all(h["pass_filenames"] is False for h in hooks)  # meshplan reads the whole repo
    proc = subprocess.run([pre_commit(), "validate-manifest", ".pre-commit-hooks.yaml"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_this_repository_runs_only_local_hooks_with_locked_tools() -> None:
    """No remote hook repository (it would fetch unpinned code): every hook is local and runs
    a tool of the locked toolchain."""
    config = yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    hooks = config["repos"][0]["hooks"]
    assert {hook["id"] for hook in hooks} >= {"ruff", "mypy", "actionlint", "json-schemas",
                                              "example-validates", "istio-example-validates",
                                              "istio-example-output-up-to-date"}
    for hook in hooks:
        assert hook["language"] == "unsupported", hook["id"]
        assert hook["entry"].startswith((".venv/bin/", ".ci/npm/node_modules/.bin/")), hook["id"]
    proc = subprocess.run([pre_commit(), "validate-config", ".pre-commit-config.yaml"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
