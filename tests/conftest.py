"""Shared fixtures: copies of the bundled example, and the CLI run in-process.

* ``tests/`` is put on ``sys.path`` so ``tests/support`` imports as ``support``.
* :func:`copy_example` / ``example_repo``: the repository's own ``inventory/`` and
  ``requirements/`` copied to a temporary folder (tests edit the copy, never the originals).
* :func:`run_cli` / ``cli``: ``meshplan <args>`` through click's ``CliRunner``; returns
  ``(exit_code, stdout, stderr)``. An exception that escapes the command (instead of becoming
  an exit code) is re-raised, so a crash can never pass for "exit 1".

The session-scoped fixtures return plain callables, so hypothesis tests can use them without
the function-scoped-fixture health check.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
THESIS_DIR = TESTS_DIR / "fixtures" / "thesis"

if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from meshplan.cli import main  # noqa: E402 - needs nothing from sys.path

CliResult = tuple[int, str, str]

# A requirement to add to the bundled example whose own objects all land in domain2/cl3
# (rebel-base and service3 run there only): the small change of the git-history tests.
REBEL_REQUIREMENT = """\
apiVersion: meshplan.dev/v1alpha1
kind: Requirement
metadata:
  name: rebel-base
spec:
  endpointSelector:
    matchLabels: {service: rebel-base}
  egress:
    - toEndpoints:
        - matchLabels: {service: service3}
"""

RunCli = Callable[..., CliResult]


def copy_tree(source: Path, dest: Path) -> Path:
    """Copy ``source/inventory`` and ``source/requirements`` into ``dest``; return ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for top in ("inventory", "requirements"):
        if (source / top).is_dir():
            shutil.copytree(source / top, dest / top)
    return dest


def copy_example(dest: Path) -> Path:
    """The bundled example (repository root) copied into ``dest``."""
    return copy_tree(REPO_ROOT, dest)


def run_cli(args: Sequence[str], env: dict[str, str] | None = None) -> CliResult:
    """``meshplan <args>`` in-process through ``main(argv)``; stdout and stderr kept apart.

    click's runner isolation gives the command its own streams and environment; whatever
    ``main`` raises (a crash instead of an exit code) propagates to the test.
    """
    runner = CliRunner()
    with runner.isolation(env=env) as (out, err, _):
        try:
            code = main(list(args))
        finally:  # the isolated streams buffer what is not written through click.echo
            sys.stdout.flush()
            sys.stderr.flush()
    return code, _text(out.getvalue()), _text(err.getvalue())


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").replace("\r\n", "\n")


def run_validate(repo: Path, *extra: str) -> CliResult:
    return run_cli(["validate", "--repo", str(repo), *extra])


@pytest.fixture(scope="session")
def cli() -> RunCli:
    return run_cli


@pytest.fixture(scope="session")
def validate_repo() -> Callable[..., CliResult]:
    return run_validate


@pytest.fixture(scope="session")
def make_example() -> Callable[[Path], Path]:
    return copy_example


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "repo")
