"""Goal 4 (issue 14): the whole ``meshplan diff --format markdown`` (base render, head render,
comparison and the markdown with its picture) on a git repository with one changed requirement,
against one full render in the same process.

Two subjects: with a cold render cache (the base renders in full and fills it, the head
renders incrementally from the base), and with a warm one (a second pull request against the
same base: the base comes from the cache). On a meshplan without the render cache (the
"before" numbers) both are the diff as it was.
"""

from __future__ import annotations

import inspect
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .goal_incremental import FULL, full_render
from .goals import GoalResult, input_bytes, median, progress
from .workload import mutate_one_requirement

LIMIT = 1.3


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid",
                    *args], cwd=repo, check=True, capture_output=True)


def whole_diff(repo: Path, cache_dir: Path | None) -> float:
    from meshplan.gitdiff import format_markdown
    from meshplan.pipeline import diff_repository

    start = time.perf_counter()
    if cache_dir is not None and "cache" in inspect.signature(diff_repository).parameters:
        from meshplan.cache import RenderCache

        report, _ = diff_repository(repo, "HEAD", with_flows=True,
                                    cache=RenderCache.at(cache_dir))
    else:
        report, _ = diff_repository(repo, "HEAD", with_flows=True)
    format_markdown(report)
    return time.perf_counter() - start


def measure(size: str, repo: Path, workdir: Path) -> list[GoalResult]:
    scratch = Path(tempfile.mkdtemp(prefix=f"diff-{size}-", dir=workdir))
    try:
        project = scratch / "repo"
        shutil.copytree(repo, project)
        git(project, "init", "-q", "-b", "main")
        git(project, "add", "-A")
        git(project, "commit", "-q", "-m", "workload")
        work = float(input_bytes(project))
        repeats = 1 if size.startswith("L") else 3
        progress(f"{size}: full renders (baseline)")
        baseline = median([full_render(project, scratch / "baseline")
                           for _ in range(repeats)])
        mutation = mutate_one_requirement(project)
        cold, warm = [], []
        for i in range(repeats):
            cache = scratch / f"cache-{i}"
            cold.append(whole_diff(project, cache))
            progress(f"{size}: diff, cold cache: {cold[-1]:.3f} s")
            warm.append(whole_diff(project, cache))
            progress(f"{size}: diff, warm cache: {warm[-1]:.3f} s")
        mutation.undo(project)
        return [GoalResult("4 diff (cold cache)", size, median(cold), FULL, baseline, LIMIT,
                           work),
                GoalResult("4 diff (warm cache)", size, median(warm), FULL, baseline, LIMIT,
                           work)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
