"""Shared fixtures (helpers live in :mod:`tests.support`) and the hypothesis profile.

The session-scoped fixtures return plain callables, so hypothesis tests can use them without
the function-scoped-fixture health check.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.ci import load_profile
from tests.support.cli import RunCli, run_cli
from tests.support.repos import copy_example

load_profile()


@pytest.fixture(scope="session")
def cli() -> RunCli:
    return run_cli


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    return copy_example(tmp_path / "repo")


@pytest.fixture(autouse=True, scope="session")
def _render_cache_outside_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Commands the tests run keep their render cache in a temporary folder, not ~/.cache."""
    import os

    os.environ["MESHPLAN_CACHE_DIR"] = str(tmp_path_factory.mktemp("render-cache"))
