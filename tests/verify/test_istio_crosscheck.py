"""Cross-check of the identity layer: verify's reading of the rendered AuthorizationPolicies
agrees with network-config-analyzer, which reads them natively.

nca matches principals only as ``cluster.local/ns/<ns>/sa/<sa>`` against each pod's
``serviceAccountName``, so the rendered policies and every Istio workload are translated into
one virtual cluster where the namespace carries the cluster (``c<k>-<namespace>``) and every
trust domain becomes the principals of its clusters' namespaces; ``cluster.local/`` stays
the policy's own cluster (``tests/support/nca_istio.py`` explains the translation). For every
ordered pair of Istio workloads, nca's allowed connections must equal what verify says the
AuthorizationPolicies admit over mutual TLS (TCP as decided, other protocols untouched):
on the Istio example, on the mesh fixture and the thesis fixtures made Istio meshes (one and
two networks), on generated meshes, and on the planted defects nca can express.
PeerAuthentication and CUSTOM policies are outside nca's model (tested in test_istio.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from meshplan.model import Inventory
from meshplan.verify.report import verify

from tests.support import nca_istio, netpol
from tests.support.ci import examples, missing_tool
from tests.support.flows import Files, rendered_files
from tests.support.identity_mutations import CASES, NCA_CASES
from tests.support.mesh_fixture import mesh_repo
from tests.support.mutations import Mutation, mutated
from tests.support.repos import ISTIO_EXAMPLE, REPO_ROOT, THESIS_DIR, as_istio_mesh, copy_tree
from tests.support.strategies import RepoSpec, repos

pytestmark = pytest.mark.slow  # differential against nca: the full tier only



@pytest.fixture(autouse=True)
def _need_nca() -> None:
    if netpol.nca_command() is None:
        missing_tool("network-config-analyzer is not installed: pip install "
                     "network-config-analyzer (test-only), or set MESHPLAN_NCA")


def cross_check(inventory: Inventory, files: Files, workdir: Path) -> tuple[list[str], int]:
    report = verify(inventory, files)
    return nca_istio.istio_disagreements(inventory, files, report, workdir)


@pytest.fixture(scope="module")
def example() -> tuple[Inventory, Files]:
    return rendered_files(ISTIO_EXAMPLE)


def test_the_istio_example_agrees_with_nca(example: tuple[Inventory, Files],
                                           tmp_path: Path) -> None:
    problems, compared = cross_check(*example, tmp_path)
    assert problems == []
    assert compared == 12 * 13  # every ordered pair of its 13 Istio workloads


@pytest.mark.parametrize(("case_id", "mutation"), [
    pytest.param(c.id, c.values[0], id=c.id) for c in CASES if c.id in NCA_CASES])
def test_planted_identity_defects_agree_with_nca(case_id: str, mutation: Mutation,
                                                 example: tuple[Inventory, Files],
                                                 tmp_path: Path) -> None:
    inventory, files = example
    changed = mutated(files, mutation)
    problems, _ = cross_check(inventory, changed, tmp_path)
    assert problems == []
    report = verify(inventory, changed)
    assert not report.ok  # and verify reports it (the mutation is not a no-op)


@pytest.mark.parametrize(("fixture", "networks"), [
    *((name, n) for name in ("bundled-example", "refinement-5.3", "use-case-2a")
      for n in (1, 2)),
    ("mesh-fixture", 0),  # its own networks, and a cluster that is no Istio member
])
def test_fixtures_as_istio_meshes_agree_with_nca(fixture: str, networks: int,
                                                 tmp_path: Path) -> None:
    root = tmp_path / "repo"
    if fixture == "mesh-fixture":
        mesh_repo().write(root)
    else:
        source = REPO_ROOT if fixture == "bundled-example" else THESIS_DIR / fixture
        as_istio_mesh(copy_tree(source, root), networks=networks)
    inventory, files = rendered_files(root)
    assert verify(inventory, files).ok
    problems, compared = cross_check(inventory, files, tmp_path / "nca")
    assert problems == []
    assert compared > 0


@settings(max_examples=examples(8), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(repos(istio=True, allow_unfilled_ingress=True))
def test_generated_meshes_agree_with_nca(spec: RepoSpec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inventory, files = rendered_files(spec.write(Path(tmp) / "repo"))
        problems, _ = cross_check(inventory, files, Path(tmp) / "nca")
        assert problems == [], spec.files()


def test_the_cross_check_notices_a_wrong_translation(example: tuple[Inventory, Files],
                                                     tmp_path: Path) -> None:
    """The comparison can fail: a translation that reads every trust domain as the first
    cluster's (as rewriting all of them to cluster.local would) disagrees."""
    inventory, files = example
    members = nca_istio.Members(inventory)
    first = members.trust_domain[0]
    members.trust_domain = dict.fromkeys(members.trust_domain, first)
    problems, _ = nca_istio.istio_disagreements(inventory, files, verify(inventory, files),
                                                tmp_path, members)
    assert problems, "one trust domain for every cluster must change nca's answer"
    assert any("boutique/checkoutservice@gcp ->" in p for p in problems)
