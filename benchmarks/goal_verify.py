"""Issue 14, goals 1 and 4 (the comparison half): ``meshplan verify`` and the pull-request
comparison against one full render, on the same generated repository, in one process.

* ``1 verify``: ``verify_repository`` (validate the inputs, read the rendered tree, both
  models, the comparison: what ``meshplan verify`` does) over the tree a full render just
  wrote, against that full render (``render_repository`` + ``write_tree``, what ``meshplan
  render`` does). Limit 1.5; ``work`` = verify's endpoints. Three rows: ``1 verify`` with
  the parsed-document cache warm (a verify of the same tree ran before: each file's entry
  is checked by writing it back, :mod:`meshplan.load.canonical`), ``1 verify (cold cache)``
  (the first verify: every file parsed, entries stored) and ``1 verify (no cache)``
  (``--no-cache``: parsed, nothing stored).
* ``1 verify ... (whole process)``: the same three, as the user waits for them: ``meshplan
  verify`` as a whole process (imports included; its input check forked from a fresh
  process, not from this one's heap after a render) against ``meshplan render --no-cache``
  as a whole process.
* ``4 diff comparison+markdown``: given the renders of a base and of a head with one
  requirement changed (:func:`benchmarks.workload.mutate_one_requirement`), what ``meshplan
  diff --format markdown`` adds to the two renders: the object comparison, the connectivity
  changes and their picture, the markdown (``gitdiff.diff_report`` + ``format_markdown``).
  Limit 0.2: goal 4 allows 1.3 renders for the whole diff, of which the base render takes
  one and the incremental head render at most 0.1 (goal 3). ``work`` = endpoints.

``python -m benchmarks.goal_verify SIZE [--workdir DIR]`` measures one size on its own.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .goals import GoalResult
from .workload import generate, mutate_one_requirement

T = TypeVar("T")
VERIFY_LIMIT = 1.5
DIFF_COMPARISON_LIMIT = 0.2
CHEAP_SECONDS = 0.5  # below this, a measurement is repeated (median of REPEATS)
REPEATS = 5


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def median_time(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall seconds of ``fn`` (median of :data:`REPEATS` runs when one run is cheap)."""
    seconds, value = timed(fn)
    if seconds >= CHEAP_SECONDS:
        return seconds, value
    runs = [seconds]
    for _ in range(REPEATS - 1):
        seconds, value = timed(fn)
        runs.append(seconds)
    return statistics.median(runs), value


def full_render(repo: Path, out: Path) -> Any:
    """What ``meshplan render`` does: the pipeline, then the write (into a fresh folder)."""
    from meshplan.pipeline import render_repository
    from meshplan.write import write_tree

    shutil.rmtree(out, ignore_errors=True)
    rendered, _ = render_repository(repo)
    write_tree(out, rendered.files)
    return rendered


def cache_in(scratch: Path) -> Any:
    """The cache a verify reads and fills (a folder of this measurement; its code
    fingerprint computed each time, as each ``meshplan verify`` process does)."""
    from meshplan.cache import RenderCache

    return RenderCache.at(scratch / "cache")


def measure(size: str, repo: Path, workdir: Path) -> list[GoalResult]:
    """Goal 1 (verify) and the comparison half of goal 4 (diff), each against a full render."""
    from meshplan.pipeline import render_with_inventory, verify_repository

    scratch = Path(tempfile.mkdtemp(prefix=f"goal-verify-{size}-", dir=workdir))
    try:
        out = scratch / "rendered"
        render_s, _ = median_time(lambda: full_render(repo, out))
        plain_s, report = median_time(lambda: verify_repository(repo, out))
        endpoints = len(report.endpoints)
        del report
        cold_s, _ = timed(lambda: verify_repository(repo, out, cache_in(scratch)))
        warm_s, _ = median_time(lambda: verify_repository(repo, out, cache_in(scratch)))
        results = [GoalResult(f"1 verify{label}", size, seconds, "full render", render_s,
                              VERIFY_LIMIT, endpoints)
                   for label, seconds in (("", warm_s), (" (cold cache)", cold_s),
                                          (" (no cache)", plain_s))]
        results += whole_processes(size, repo, scratch, endpoints)
        base = render_with_inventory(repo)
        mutation = mutate_one_requirement(repo)
        try:
            head = render_with_inventory(repo)
        finally:
            mutation.undo(repo)
        diff_s, _ = median_time(lambda: diff_comparison(base, head))
        results.append(GoalResult("4 diff comparison+markdown", size, diff_s, "full render",
                                  render_s, DIFF_COMPARISON_LIMIT, endpoints))
        return results
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def whole_processes(size: str, repo: Path, scratch: Path, endpoints: int) -> list[GoalResult]:
    """Goal 1 as the user waits for it: ``meshplan verify`` as a whole process (its imports,
    and its worker forked from a fresh process, not from this one's heap after a render)
    against ``meshplan render --no-cache`` as a whole process, into a folder of its own."""
    from .goal_render import whole_process
    from .goal_startup import meshplan_command

    out = scratch / "rendered-by-process"
    render_s, _ = median_time(lambda: whole_process([*meshplan_command(), "render", "--repo",
                                                     str(repo), "--out", str(out),
                                                     "--no-cache"]))
    verify = [*meshplan_command(), "verify", "--repo", str(repo), "--rendered", str(out)]
    cache = ["--cache-dir", str(scratch / "cache-of-process")]
    plain_s, _ = median_time(lambda: whole_process([*verify, "--no-cache"]))
    cold_s, _ = timed(lambda: whole_process([*verify, *cache]))  # the first: fills the cache
    warm_s, _ = median_time(lambda: whole_process([*verify, *cache]))
    baseline = "meshplan render --no-cache (whole process)"
    return [GoalResult(f"1 verify{label} (whole process)", size, seconds, baseline, render_s,
                       VERIFY_LIMIT, endpoints)
            for label, seconds in ((" warm cache", warm_s), (" cold cache", cold_s),
                                   (" no cache", plain_s))]


def diff_comparison(base: Any, head: Any) -> str:
    """``meshplan diff --format markdown`` after its two renders: compare, picture, markdown."""
    from meshplan.gitdiff import BaseRender, diff_report, format_markdown
    from meshplan.pipeline import without_cyclic_gc

    inventory, rendered, _ = base
    before = BaseRender("0" * 40, rendered.files, inventory=inventory)
    with without_cyclic_gc():  # as pipeline.diff_repository runs it
        report = diff_report("base", before, head[0], head[1].files, with_flows=True)
    return format_markdown(report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.goal_verify",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("size", help="S, M, L or DxCxSxR[+mesh][+istio]")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary "
                        "one)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="goal-verify-"))
    repo = workdir / f"repo-{args.size}"
    generate(args.size, args.seed, repo)
    for r in measure(args.size, repo, workdir):
        print(f"{r.goal:<28} {r.size:<8} {r.subject_s:9.3f} s  {r.baseline} {r.baseline_s:8.3f} s"
              f"  ratio {r.ratio:6.2f} (limit {r.limit})  work {r.work:,.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
