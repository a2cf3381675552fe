"""Goal 3 (issue 14): re-rendering after a one-requirement change, a one-service inventory
change and no change, each against one full render in the same process.

The subject is what ``meshplan render`` does with its render cache (``render_cached`` and
writing into the output folder of the previous render); the baseline what it does without
(``render_repository`` and writing into an empty folder: the "render" of RESULTS.md). Each
change is made and undone: both directions are one change, and the median of them is taken.
On a meshplan without the render cache (the "before" numbers) the subject is a whole render
into the existing output folder, which is what a re-render was.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .goals import GoalResult, input_bytes, median, progress
from .workload import mutate_one_requirement

FULL = "full render"
LIMIT = 0.1


def full_render(repo: Path, out: Path) -> float:
    from meshplan.pipeline import render_repository
    from meshplan.write import write_tree

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    rendered, _ = render_repository(repo)
    write_tree(out, rendered.files)
    return time.perf_counter() - start


def re_renderer(cache_dir: Path) -> Callable[[Path, Path], tuple[float, str]]:
    """The re-render as ``meshplan render`` does it: (seconds, mode)."""
    import meshplan.pipeline as pipeline
    from meshplan.write import write_tree

    if not hasattr(pipeline, "render_cached"):  # before the render cache
        def whole(repo: Path, out: Path) -> tuple[float, str]:
            start = time.perf_counter()
            rendered, _ = pipeline.render_repository(repo)
            write_tree(out, rendered.files)
            return time.perf_counter() - start, "full"
        return whole

    from meshplan.cache import RenderCache

    cache = RenderCache.at(cache_dir)

    import inspect

    # as meshplan render does: the tree swapped out is kept in the cache (where supported)
    spares = ({"spares": cache_dir / "spares"}
              if "spares" in inspect.signature(write_tree).parameters else {})

    def cached(repo: Path, out: Path) -> tuple[float, str]:
        start = time.perf_counter()
        result = pipeline.render_cached(repo, cache)
        write_tree(out, result.rendered.files, **spares)
        return time.perf_counter() - start, result.mode
    return cached


class ServiceChange:
    """One service of the inventory gets another port number (and back): its callers'
    policies and its Services change, in the clusters where it runs and is called from."""

    def __init__(self, repo: Path) -> None:
        files = sorted((repo / "inventory").glob("*.yaml"))
        for path in files:
            text = path.read_text("utf-8")
            match = re.search(r"ports: \[\{port: (\d+), protocol: TCP", text)
            if match and "kind: Domain" in text:
                self.path, self.original = path, text
                port = int(match[1])
                new = port + 1 if port < 65535 else port - 1
                self.changed = text[:match.start(1)] + str(new) + text[match.end(1):]
                return
        raise RuntimeError(f"no service with a TCP port in {repo}/inventory")

    def apply(self) -> None:
        self.path.write_text(self.changed, "utf-8")

    def undo(self) -> None:
        self.path.write_text(self.original, "utf-8")


def measure(size: str, repo: Path, workdir: Path) -> list[GoalResult]:
    scratch = Path(tempfile.mkdtemp(prefix=f"incremental-{size}-", dir=workdir))
    try:
        return _measure(size, repo, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _measure(size: str, source: Path, scratch: Path) -> list[GoalResult]:
    repo = scratch / "repo"
    shutil.copytree(source, repo)
    out = scratch / "rendered"
    work = float(input_bytes(repo))
    repeats = 1 if size.startswith("L") else 3
    render_again = re_renderer(scratch / "cache")
    progress(f"{size}: full renders (baseline)")
    baseline = median([full_render(repo, scratch / "baseline") for _ in range(repeats)])
    render_again(repo, out)  # fills the cache and the output folder (not measured)

    def timed(label: str) -> float:
        seconds, mode = render_again(repo, out)
        progress(f"{size}: {label}: {seconds:.3f} s ({mode})")
        return seconds

    noop = median([timed("no-op") for _ in range(repeats)])
    one_requirement: list[float] = []
    for _ in range(max(1, repeats - 1)):
        mutation = mutate_one_requirement(repo)
        try:
            one_requirement.append(timed(f"one requirement ({mutation.file})"))
        finally:
            mutation.undo(repo)
        one_requirement.append(timed("one requirement (undone)"))
    one_service: list[float] = []
    change = ServiceChange(repo)
    for _ in range(max(1, repeats - 1)):
        change.apply()
        try:
            one_service.append(timed(f"one service ({change.path.name})"))
        finally:
            change.undo()
        one_service.append(timed("one service (undone)"))
    rows: list[tuple[str, Any]] = [("3 incremental (one requirement)", median(one_requirement)),
                                   ("3 incremental (one service)", median(one_service)),
                                   ("3 incremental (no-op)", noop)]
    return [GoalResult(goal, size, seconds, FULL, baseline, LIMIT, work)
            for goal, seconds in rows]
