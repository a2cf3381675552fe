"""Goal 6 of issue 14: keep the full render fast and lean.

* full render (load ... write, in one process, as ``run-one`` measures it) at most 0.3 x the
  time PyYAML's CSafeDumper needs to serialize the same documents;
* the same in CPU time (``time.process_time`` around both, in the same process): on this
  shared machine the wall-time ratio moves with the load (the Python stages and the write
  stage's kernel time slow more than libyaml does), the CPU-time one much less;
* the same for ``meshplan render`` as a whole process (interpreter start-up and imports
  included, through an empty render cache: a cold render also fills the cache), against the
  same CSafeDumper figure;
* peak RSS of ``meshplan render`` at L at most 768 MiB (the row's "seconds" are MiB here, its
  baseline the 768 MiB limit: ratio <= 1);
* render time per output byte at L within 1.2 x that at M (the row appears at L when M was
  measured into the same workdir before; its figures are seconds per output MiB);
* a no-op re-render (``meshplan render`` again into the same folder) rewrites nothing: the
  row's figure is 1 + the number of files whose inode or mtime changed, against 1 (its time is
  in the row's name; goal 3's incremental render is what makes it fast).

Run alone on a generated repository: ``python -m benchmarks.goal_render --size M``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .goal_startup import meshplan_command
from .goals import GoalResult
from .workload import REPO_ROOT, generate, snapshot

CSAFE = "CSafeDumper on the same documents"
RENDER_LIMIT = 0.3
RSS_LIMIT_MIB = 768.0
GROWTH_LIMIT = 1.2


def whole_process(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one command, its children included."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: "
                           f"{err.decode(errors='replace')[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def in_process(size: str, repo: Path, workdir: Path) -> dict[str, Any]:
    """``python -m benchmarks run-one --skip-rerender``: render by stage and the baselines."""
    json_path = workdir / f"goal_render-run-one-{size}.json"
    json_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks", "run-one", "--size", size, "--repo", str(repo),
           "--workdir", str(workdir), "--json", str(json_path), "--skip-rerender"]
    subprocess.run(cmd, cwd=REPO_ROOT, check=True)
    result: dict[str, Any] = json.loads(json_path.read_text("utf-8"))
    return result


def record(workdir: Path, size: str, figures: dict[str, float]) -> dict[str, dict[str, float]]:
    """Keep this size's figures beside the others measured into ``workdir``; all of them."""
    path = workdir / "goal_render.json"
    known: dict[str, dict[str, float]] = {}
    if path.is_file():
        known = json.loads(path.read_text("utf-8"))
    known[size] = figures
    path.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n", "utf-8")
    return known


def measure(size: str, repo: Path, workdir: Path) -> list[GoalResult]:
    workdir.mkdir(parents=True, exist_ok=True)
    inside = in_process(size, repo, workdir)
    render_s = inside["render_seconds"]
    csafe_s = inside["baselines"]["csafedumper_seconds"]
    render_cpu = inside["render_cpu_seconds"]
    csafe_cpu = inside["baselines"]["csafedumper_cpu_seconds"]
    out_bytes = float(inside["output"]["bytes"])

    out = workdir / f"goal_render-{size}" / "rendered"
    shutil.rmtree(out.parent, ignore_errors=True)
    out.parent.mkdir(parents=True)
    # an empty render cache of its own: the first render is cold (as on a fresh CI machine),
    # whatever the user's cache holds; the no-op re-render then reads it
    cache = out.parent / "cache"
    render_cmd = [*meshplan_command(), "render", "--repo", str(repo), "--out", str(out),
                  "--cache-dir", str(cache)]
    process_s, process_rss = whole_process(render_cmd)
    before = snapshot(out)
    noop_s, _ = whole_process(render_cmd)
    after = snapshot(out)
    rewritten = sum(1 for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    shutil.rmtree(out.parent, ignore_errors=True)

    s_per_mib = render_s / (out_bytes / 2**20)
    known = record(workdir, size, {"render_s": render_s, "bytes": out_bytes,
                                   "s_per_mib": s_per_mib, "peak_rss_mib": process_rss})
    rows = [
        GoalResult("6 render (in process)", size, render_s, CSAFE, csafe_s, RENDER_LIMIT,
                   out_bytes),
        GoalResult("6 render (in process, CPU s)", size, render_cpu, CSAFE + " (CPU s)",
                   csafe_cpu, RENDER_LIMIT, out_bytes),
        GoalResult("6 render (whole process)", size, process_s, CSAFE, csafe_s, RENDER_LIMIT,
                   out_bytes),
        GoalResult("6 peak RSS of meshplan render (MiB, not s)", size, process_rss,
                   f"{RSS_LIMIT_MIB:.0f} MiB", RSS_LIMIT_MIB, 1.0, out_bytes),
        GoalResult(f"6 no-op re-render rewrites nothing ({noop_s:.1f} s; 1 + files "
                   "rewritten, not s)", size, 1.0 + rewritten, "nothing rewritten", 1.0, 1.0,
                   out_bytes),
    ]
    if size == "L" and "M" in known:
        rows.append(GoalResult("6 per-byte render time L vs M (s per output MiB)", size,
                               s_per_mib, "render s per output MiB at M",
                               known["M"]["s_per_mib"], GROWTH_LIMIT, out_bytes))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.goal_render",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="M", help="comma-separated, e.g. S,M (default M)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", default=str(REPO_ROOT / "benchmarks" / ".work" / "goals"))
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    for size in args.sizes.split(","):
        repo = workdir / f"{size}-seed{args.seed}" / "repo"
        generate(size, args.seed, repo)
        print(f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
        for row in measure(size, repo, workdir):
            print(f"{row.goal:52} {size:2} {row.subject_s:9.3f} vs {row.baseline_s:9.3f} "
                  f"({row.baseline}): {row.ratio:.3f} (limit {row.limit}) "
                  f"{'met' if row.ratio <= row.limit else 'NOT met'}")
        print(f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
