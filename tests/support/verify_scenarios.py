"""The scenarios verify and the pull-request picture must answer exactly as before issue 14,
and their answers as recorded from the pairwise evaluator (base b48cd97).

Issue 14 replaced verify's pairwise evaluation with one by classes of endpoints. The guard is
agreement: every scenario here (the bundled examples, the thesis fixtures, every planted defect
of issues 9 and 12, workloads of the benchmark generator with several seeds and mesh shapes,
and random repositories drawn by :func:`tests.support.strategies.repos` with their inputs
stored) gives the same diagnostics, the same allowed flows (by digest) and the same picture of
a change as the recorded answers in ``tests/verify/recorded/pairwise-b48cd97.json.gz``.

``python -m tests.support.verify_scenarios --record`` wrote that file on the base commit; it is
not rerun (the pairwise evaluator is gone), only read by ``tests/verify/test_agreement.py``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from meshplan.model import Inventory

from tests.support.flows import Files, rendered_files
from tests.support.repos import ISTIO_EXAMPLE, REPO_ROOT, THESIS_DIR

RECORDED = Path(__file__).resolve().parent.parent / "verify" / "recorded" / \
    "pairwise-b48cd97.json.gz"
# Workloads of the benchmark generator (deterministic for a size and a seed).
WORKLOADS = (
    *(("3x3x8x30", s) for s in (1, 2, 3, 4)),
    *(("4x2x10x40", s) for s in (1, 2)),
    *(("3x3x8x30+istio", s) for s in (1, 2, 3)),
    *(("3x3x6x24+mesh+istio", s) for s in (1, 2)),
    ("2x3x6x20+mesh", 1),
)
RANDOM_REPOS = 24  # drawn by hypothesis (derandomized), half of them Istio meshes


def digest(lines: list[str]) -> dict[str, Any]:
    text = "\n".join(lines)
    return {"count": len(lines), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def verify_answer(inventory: Inventory, files: Files) -> dict[str, Any]:
    """What verify says of one rendered tree: diagnostics in full, flows by digest."""
    from meshplan.verify.report import verify

    report = verify(inventory, files)
    titles = [e.title for e in report.endpoints]

    def pairs(flows: Any) -> list[str]:
        return sorted(f"{titles[i]} -> {titles[j]} {ports}" for (i, j), ports in flows.items())

    return {
        "diagnostics": [d.format_text() for d in report.diagnostics],
        "policies": report.policies,
        "endpoints": titles,
        "mismatches": len(report.mismatches),
        "flows": digest(pairs(report.flows)),
        "restricted": digest(pairs(report.restricted_flows())),
        "protected": digest(pairs(report.protected)),
    }


def picture_answer(before: tuple[Inventory, Files], after: tuple[Inventory, Files]
                   ) -> dict[str, Any]:
    """What the pull-request picture says of a change (every flow and stance change)."""
    from meshplan.flowdiff import connectivity_changes

    changes = connectivity_changes(before, after)
    flows = [f"{f.source} -> {f.target} +{f.opened} -{f.closed}" for f in changes.flows]
    return {"flows": digest(flows), "first": flows[:5],
            "stances": [f"{s.endpoint} {s.direction} {s.restricted}" for s in changes.stances],
            "summary": changes.summary()}


# --------------------------------------------------------------------------- scenarios

Scenario = tuple[str, Callable[[], tuple[Inventory, Files]]]


def mutation_scenarios() -> Iterator[tuple[str, str, Any]]:
    """(id, example, mutation) of every planted defect (issues 9 and 12)."""
    from tests.support import identity_mutations, mutations

    for case in mutations.CASES:
        yield f"defect/{case.id}", "example", case.values[0]
    for case in identity_mutations.CASES:
        yield f"identity-defect/{case.id}", "istio-example", case.values[0]


def fixture_repos() -> list[tuple[str, Path]]:
    out = [("example", REPO_ROOT), ("istio-example", ISTIO_EXAMPLE)]
    out += [(f"thesis/{p.name}", p) for p in sorted(THESIS_DIR.iterdir())
            if (p / "inventory").is_dir()]
    return out


def random_specs() -> list[dict[str, str]]:
    """Input files of derandomized draws of :func:`repos` (stored with the answers)."""
    from hypothesis import HealthCheck, Phase, given, settings

    from tests.support.strategies import repos

    found: list[dict[str, str]] = []
    for istio in (False, True):
        @settings(max_examples=RANDOM_REPOS // 2, derandomize=True, database=None,
                  phases=[Phase.generate], deadline=None, suppress_health_check=list(HealthCheck))
        @given(repos(istio=istio, allow_unfilled_ingress=True))
        def collect(spec: Any) -> None:
            found.append(spec.files())

        collect()
    return found


def write_files(root: Path, files: dict[str, str]) -> Path:
    for relpath, text in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def workload(size: str, seed: int, root: Path) -> Path:
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.workload import generate

    generate(size, seed, root)
    return root


def record(path: Path) -> None:
    from meshplan.pipeline import render_with_inventory

    from tests.support.mutations import mutated

    out: dict[str, Any] = {"verify": {}, "picture": {}, "random_inputs": []}
    rendered: dict[str, tuple[Inventory, Files]] = {}
    for name, root in fixture_repos():
        rendered[name] = rendered_files(root)
        out["verify"][name] = verify_answer(*rendered[name])
        print(name, file=sys.stderr)
    for name, example, mutation in mutation_scenarios():
        inventory, files = rendered[example]
        after = (inventory, mutated(files, mutation))
        out["verify"][name] = verify_answer(*after)
        out["picture"][name] = picture_answer(rendered[example], after)
        print(name, file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        for size, seed in WORKLOADS:
            name = f"workload/{size}/{seed}"
            root = workload(size, seed, Path(tmp) / name)
            before = rendered_files(root)
            out["verify"][name] = verify_answer(*before)
            from benchmarks.workload import mutate_one_requirement

            mutate_one_requirement(root)
            inventory, result, _ = render_with_inventory(root)
            out["picture"][name] = picture_answer(
                before, (inventory, {f.path: f.content for f in result.files}))
            print(name, file=sys.stderr)
            shutil.rmtree(root)
        for k, inputs in enumerate(random_specs()):
            name = f"random/{k}"
            root = write_files(Path(tmp) / name, inputs)
            out["random_inputs"].append(inputs)
            out["verify"][name] = verify_answer(*rendered_files(root))
            print(name, file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=1, sort_keys=True) + "\n"
    path.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))


def recorded() -> dict[str, Any]:
    """The recorded answers (see the module docstring)."""
    loaded: dict[str, Any] = json.loads(gzip.decompress(RECORDED.read_bytes()))
    return loaded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if args.record:
        record(RECORDED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
