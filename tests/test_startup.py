"""Start-up (issue 14): a command imports only what it uses.

Checked structurally, not by timing: a fresh interpreter runs the command through
``meshplan.cli.main`` and reports which modules it loaded. Timings are the benchmark's
(``benchmarks/goal_startup.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.repos import REPO_ROOT

# A command's run in a fresh interpreter; prints its exit code and the modules it loaded.
PROBE = """
import json, sys
from meshplan.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

# Slow to import and needed only by some commands (or only by invalid input).
HEAVY = ("jsonschema", "referencing", "jinja2", "ruamel.yaml", "orjson", "git")


def loaded(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True,
                          text=True, check=True, cwd=REPO_ROOT)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] in (0, None), done.stderr
    return set(report["modules"])


def imported(modules: set[str], package: str) -> bool:
    return package in modules or any(m.startswith(f"{package}.") for m in modules)


def test_version_imports_click_and_nothing_of_the_pipeline() -> None:
    modules = loaded("--version")
    assert "click" in modules  # the probe works
    for heavy in (*HEAVY, "yaml", "jsonschema_rs"):
        assert not imported(modules, heavy), heavy
    assert {m for m in modules if m.startswith("meshplan")} == {"meshplan", "meshplan.cli"}


def test_help_imports_nothing_of_the_pipeline() -> None:
    modules = loaded("--help")
    assert {m for m in modules if m.startswith("meshplan")} == {"meshplan", "meshplan.cli"}


@pytest.mark.parametrize("extra", [[], ["--format", "json"]])
def test_validate_imports_the_stages_it_runs_only(extra: list[str]) -> None:
    modules = loaded("validate", "--repo", str(REPO_ROOT), *extra)
    assert {"meshplan.pipeline", "meshplan.refine", "yaml"} <= modules  # the probe works
    for heavy in HEAVY:
        assert not imported(modules, heavy), heavy
    # The bundled example has no Mesh document and no JSON file.
    for unused in ("meshplan.verify", "meshplan.gitdiff", "meshplan.publish", "meshplan.graph",
                   "meshplan.render", "meshplan.write", "meshplan.mesh.model",
                   "meshplan.mesh.plan", "meshplan.mesh.identity", "meshplan.mesh.render",
                   "meshplan.mesh.ids", "meshplan.load.yaml12"):
        assert not imported(modules, unused), unused


def test_invalid_documents_still_get_jsonschema_wording(tmp_path: Path) -> None:
    """The lazy import of jsonschema is taken when a document is invalid (and words it)."""
    for top in ("inventory", "requirements"):
        (tmp_path / top).mkdir()
    (tmp_path / "inventory" / "d.yaml").write_text(
        "apiVersion: meshplan.dev/v1alpha1\nkind: Domain\nmetadata: {name: d}\n"
        "spec: {clusters: 7}\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "meshplan", "validate", "--repo",
                           str(tmp_path)], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "inventory/d.yaml:4:" in done.stderr and "spec.clusters" in done.stderr
