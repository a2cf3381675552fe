"""The architecture: every module of meshplan imports only modules of lower layers.

The layers below are the module map of README.md's architecture section, bottom-up. A new
module must be placed in a layer here (and in the README), or this test fails.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import meshplan
import pytest

from tests.support.layering import modules_of, violations
from tests.support.repos import REPO_ROOT

PACKAGE = Path(meshplan.__file__).parent

LAYERS = (
    # the vocabulary and value types every stage may use
    ("meshplan", "diagnostics", "vocabulary", "outputs", "yamltext", "rust_regex",
     "forked"),
    ("admission",),  # what Kubernetes and Cilium accept: names, label keys, selectors
    ("load",),  # stage 1, a package
    ("mesh.model",),  # the Mesh document's records, which model's Inventory carries
    ("schema", "model"),  # stages 2 and 3
    ("check", "refine", "bootstrap"),  # stages 4 and 5, GitOps bootstrap from the model
    ("mesh",),  # the mesh plan: from the model and refinement, its files collected by render
    ("observability",),  # monitoring from the mesh plan, its objects collected by render
    ("render", "write", "verify", "gitrepo", "cache"),  # output, verification, git, the cache
    ("graph", "publish", "incremental"),  # incremental: the slicing of an incremental render
    ("flowdiff",),  # what a change does to connectivity (the pull-request picture)
    ("gitdiff",),
    ("pipeline",),  # stage sequencing, and only here
    ("cli",),
    ("__main__",),
)
PACKAGE_LAYERS = {
    "load": (("document", "files", "layout", "yaml12"), ("parse",), ("canonical", "repository"),
             ("__init__",)),
    "mesh": (  # mesh.model is declared above, on its own
        ("flows",),
        ("plan",),
        ("identity",),  # Istio's PeerAuthentications and AuthorizationPolicies
        ("check", "ids"),  # the refusals and the ID proposals, both over the plan
        ("values",),
        ("delivery",),
        ("render",),
        ("__init__",),
    ),
    "observability": (
        ("plan",),  # the STRICT namespaces come from mesh.identity, a lower layer
        ("check", "rules"),
        ("federation", "dashboards"),  # both read the rules' names
        ("render",),
        ("__init__",),
    ),
    "verify": (
        ("ports",),
        ("addresses", "selectors"),
        ("endpoints",),
        ("connectivity",),
        ("services", "gateways"),  # Cilium's load-balancing; the hops between Istio networks
        ("cilium", "compare"),  # the rendered Cilium layer, and its comparison with intent
        ("istio",),  # the identity layer: the rendered Istio objects and their semantics
        ("intent",),  # what the requirements ask of both layers
        ("layers",),  # both layers together, the identity layer against its intent
        ("report",),
        ("__init__",),
    ),
}


def check(root: Path) -> list[str]:
    return violations(root, "meshplan", LAYERS, PACKAGE_LAYERS)


def test_every_import_goes_to_a_lower_layer() -> None:
    assert check(PACKAGE) == []


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the package to plant mistakes in."""
    return Path(shutil.copytree(PACKAGE, tmp_path / "meshplan",
                                ignore=shutil.ignore_patterns("__pycache__")))


def plant(root: Path, module: str, line: str) -> None:
    path = root / module
    path.write_text(path.read_text(encoding="utf-8") + line + "\n", encoding="utf-8")


def test_the_check_fails_on_an_upward_import(copy: Path) -> None:
    plant(copy, "verify/cilium.py", "from ..pipeline import analyse")
    line = len((copy / "verify/cilium.py").read_text(encoding="utf-8").splitlines())
    assert check(copy) == [
        f"meshplan.verify.cilium (line {line}) imports meshplan.pipeline: not a lower layer"]


def test_the_check_fails_inside_a_layer_and_inside_a_package(copy: Path) -> None:
    plant(copy, "check.py", "def late() -> None:\n    from .refine import refine")
    plant(copy, "verify/ports.py", "from .report import verify")
    plant(copy, "verify/cilium.py", "from . import intent")  # siblings stay apart
    found = check(copy)
    assert len(found) == 3, found
    assert any(re.match(r"meshplan\.check \(line \d+\) imports meshplan\.refine: not a lower "
                        r"layer$", f) for f in found)
    assert any("meshplan.verify.ports (line" in f and "imports meshplan.verify.report: not a "
               "lower layer of meshplan.verify" in f for f in found)
    assert any("meshplan.verify.cilium" in f and "meshplan.verify.intent" in f for f in found)


def test_a_module_declared_on_its_own_keeps_its_layer(copy: Path) -> None:
    """mesh.model sits below model, the rest of mesh above refine: each way is checked."""
    planted = {
        "mesh/model.py": "from ..refine import ClusterRef",  # above mesh.model's own layer
        "mesh/flows.py": "from .render import mesh_files",  # upwards inside mesh
        "mesh/values.py": "from ..model import Cluster",  # downwards: fine
    }
    for module, line in planted.items():
        plant(copy, module, line)
    last = {m: len((copy / m).read_text(encoding="utf-8").splitlines()) for m in planted}
    assert sorted(check(copy)) == [
        f"meshplan.mesh.flows (line {last['mesh/flows.py']}) imports meshplan.mesh.render: "
        "not a lower layer of meshplan.mesh",
        f"meshplan.mesh.model (line {last['mesh/model.py']}) imports meshplan.refine: "
        "not a lower layer",
    ]


def test_every_module_must_be_placed(copy: Path) -> None:
    (copy / "monitoring.py").write_text('"""PrometheusRules."""\n', encoding="utf-8")
    (copy / "verify" / "linkerd.py").write_text('"""Linkerd."""\n', encoding="utf-8")
    declared = ['__init__', 'addresses', 'cilium', 'compare', 'connectivity', 'endpoints',
                'gateways', 'intent', 'istio', 'layers', 'ports', 'report', 'selectors',
                'services']
    found = sorted([*declared, "linkerd"])
    assert check(copy) == [
        "meshplan.monitoring: in no layer (declare it)",
        f"meshplan.verify: layers declare {declared}, the package has {found}",
    ]


def test_the_readme_maps_every_module() -> None:
    """README.md's architecture table names every module file, and nothing else."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^\| `([\w/]+\.py)`", section, re.M))
    files = {path.relative_to(PACKAGE).as_posix() for path in modules_of(PACKAGE, "m").values()}
    assert named == files


def test_contributing_maps_every_module() -> None:
    """CONTRIBUTING.md's module map (by layer) names every module but the package docstrings."""
    text = (REPO_ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    section = text.split("**Module map**", 1)[1].split("\n\n", 1)[1].split("\n\n", 1)[0]
    named = set(re.findall(r"`([\w/]+\.py)`", section))
    files = {path.relative_to(PACKAGE).as_posix() for path in modules_of(PACKAGE, "m").values()}
    assert named == {f for f in files if not f.endswith("/__init__.py")}
