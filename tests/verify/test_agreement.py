"""verify by classes agrees with the pairwise verify it replaced (issue 14).

Every scenario of :mod:`tests.support.verify_scenarios` (the bundled examples, the thesis
fixtures, every planted defect of issues 9 and 12, workloads of the benchmark generator, random
repositories) gives the diagnostics, the allowed flows and the picture of a change that the
pairwise evaluator gave on the base commit, as recorded there. The random repositories of
:func:`tests.support.strategies.repos` are compared live too, with the pairwise evaluator kept
as an oracle (:mod:`tests.support.pairwise`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meshplan.model import Inventory

from tests.support.ci import examples
from tests.support.flows import Files, rendered_files
from tests.support.mutations import mutated
from tests.support.pairwise import pairwise
from tests.support.strategies import RepoSpec, repos
from tests.support.verify_scenarios import (
    WORKLOADS,
    fixture_repos,
    mutation_scenarios,
    picture_answer,
    recorded,
    verify_answer,
    workload,
    write_files,
)

RECORDED = recorded()


@cache
def fixture(name: str) -> tuple[Inventory, Files]:
    return rendered_files(dict(fixture_repos())[name])


def same(found: dict[str, Any], expected: dict[str, Any]) -> None:
    """Diagnostics first (they say what differs), then everything else."""
    assert found["diagnostics"] == expected["diagnostics"]
    assert found == expected


@pytest.mark.parametrize("name", [name for name, _ in fixture_repos()])
def test_fixtures_agree(name: str) -> None:
    same(verify_answer(*fixture(name)), RECORDED["verify"][name])


MUTATIONS = list(mutation_scenarios())


@pytest.mark.parametrize(("name", "example", "mutation"), MUTATIONS,
                         ids=[name for name, _, _ in MUTATIONS])
def test_planted_defects_agree(name: str, example: str, mutation: Any) -> None:
    before = fixture(example)
    after = (before[0], mutated(before[1], mutation))
    same(verify_answer(*after), RECORDED["verify"][name])
    assert picture_answer(before, after) == RECORDED["picture"][name]


def test_every_recorded_scenario_is_compared() -> None:
    names = {n for n, _ in fixture_repos()} | {n for n, _, _ in MUTATIONS}
    names |= {f"workload/{size}/{seed}" for size, seed in WORKLOADS}
    names |= {f"random/{k}" for k in range(len(RECORDED["random_inputs"]))}
    assert names == set(RECORDED["verify"])
    assert len(names) >= 100


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.parametrize(("size", "seed"), WORKLOADS)
def test_workloads_agree(size: str, seed: int, scratch: Path) -> None:
    from meshplan.pipeline import render_with_inventory

    from benchmarks.workload import mutate_one_requirement

    name = f"workload/{size}/{seed}"
    root = workload(size, seed, scratch / "repo")
    before = rendered_files(root)
    same(verify_answer(*before), RECORDED["verify"][name])
    mutate_one_requirement(root)
    inventory, result, _ = render_with_inventory(root)
    after = (inventory, {f.path: f.content for f in result.files})
    assert picture_answer(before, after) == RECORDED["picture"][name]


@pytest.mark.parametrize("k", range(len(RECORDED["random_inputs"])))
def test_recorded_random_repositories_agree(k: int, scratch: Path) -> None:
    root = write_files(scratch / "repo", RECORDED["random_inputs"][k])
    same(verify_answer(*rendered_files(root)), RECORDED["verify"][f"random/{k}"])


# --------------------------------------------------------------------------- live oracle

POLICY_KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "AuthorizationPolicy",
                "PeerAuthentication")


def without_documents(files: Files, drop: set[int],
                      kinds: tuple[str, ...] = POLICY_KINDS) -> Files:
    """The rendered files with the policy documents (of ``kinds``) numbered in ``drop`` removed
    (a regression or a hand edit leaving flows open, intents half-open, layers disagreeing)."""
    out = dict(files)
    seen = 0
    for path, content in sorted(files.items()):
        if not path.endswith(".yaml"):
            continue
        kept, dropped = [], False
        for document in yaml.safe_load_all(content):
            if isinstance(document, dict) and document.get("kind") in kinds:
                seen += 1
                if seen - 1 in drop:
                    dropped = True
                    continue
            kept.append(document)
        if dropped:  # the other files stay byte for byte as rendered
            out[path] = yaml.safe_dump_all(kept).encode()
    return out


@pytest.mark.slow
@settings(max_examples=examples(25), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.booleans().flatmap(lambda istio: repos(istio=istio, allow_unfilled_ingress=True)),
       st.sets(st.integers(0, 12), max_size=4),
       st.sampled_from([POLICY_KINDS, *((kind,) for kind in POLICY_KINDS)]))
def test_random_repositories_agree_with_the_pairwise_oracle(
        spec: RepoSpec, drop: set[int], kinds: tuple[str, ...]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inventory, files = rendered_files(spec.write(Path(tmp) / "repo"))
    edited = without_documents(files, drop, kinds)
    by_classes = verify_answer(inventory, edited)
    picture = picture_answer((inventory, files), (inventory, edited))
    with pairwise():
        by_pairs = verify_answer(inventory, edited)
        assert picture_answer((inventory, files), (inventory, edited)) == picture
    same(by_classes, by_pairs)
