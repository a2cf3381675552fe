"""The goals of issue 14, measured as ratios in one run: ``python -m benchmarks goals``.

``python -m benchmarks goals --sizes S,M,L [--results benchmarks/RESULTS-goals.md]`` generates
each size once, then runs every goal module it finds (``benchmarks/goal_*.py``, below; a missing
one is skipped with a note) on each size in a fresh process (``goals-one``: memory and imports
are that measurement's alone), and writes a table: goal, size, subject seconds, baseline
seconds, ratio, limit, met?, and the growth exponent of each goal's subject time from size to
size (``log(t2/t1) / log(work2/work1)``, 1 = linear in the work, e.g. input bytes).

Each goal module exposes ``measure(size, repo, workdir) -> list[GoalResult]`` and measures its
baseline in the same process as its subject, so the ratio holds on a noisy shared machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import itertools
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from .workload import REPO_ROOT, generate

GOAL_MODULES = ("goal_verify", "goal_diff", "goal_incremental", "goal_startup", "goal_render")
BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_WORKDIR = BENCH_DIR / ".work"


class GoalResult(NamedTuple):
    goal: str          # e.g. "1 verify", "3 incremental (one requirement)", "5 --version"
    size: str          # "S", "M", "L"
    subject_s: float   # wall seconds of the thing measured (median of repeats where cheap)
    baseline: str      # what it is compared with, e.g. "full render", "python -c 'import click'"
    baseline_s: float  # wall seconds of the baseline, measured in the same run
    limit: float       # the ratio limit, e.g. 1.5
    work: float        # the size of the input for the growth exponent (e.g. input bytes or endpoints)

    @property
    def ratio(self) -> float: return self.subject_s / self.baseline_s


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def input_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for top in ("inventory", "requirements")
               for p in (repo / top).rglob("*") if p.is_file())


# --------------------------------------------------------------------------- one measurement


def run_one(module: str, size: str, repo: Path, workdir: Path, out: Path) -> int:
    """Run one goal module on one size in this process; write its results as JSON."""
    goal = importlib.import_module(f"benchmarks.{module}")
    workdir.mkdir(parents=True, exist_ok=True)  # the goal modules make their scratch in it
    results = goal.measure(size, repo, workdir)
    out.write_text(json.dumps([r._asdict() for r in results], indent=2) + "\n", "utf-8")
    return 0


def measure_in_subprocess(module: str, size: str, repo: Path, workdir: Path
                          ) -> list[GoalResult] | str:
    """The results of ``module`` on ``size`` (a fresh process), or why there are none."""
    if importlib.util.find_spec(f"benchmarks.{module}") is None:
        return "module missing (skipped)"
    out = workdir / f"goal-{module}-{size}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchmarks", "goals-one", "--module", module, "--size", size,
           "--repo", str(repo), "--workdir", str(workdir), "--json", str(out)]
    status = subprocess.run(cmd, cwd=REPO_ROOT, check=False).returncode
    if status != 0 or not out.is_file():
        return f"failed (exit {status})"
    return [GoalResult(**item) for item in json.loads(out.read_text("utf-8"))]


# --------------------------------------------------------------------------- the table


def growth(results: list[GoalResult], sizes: list[str]) -> dict[tuple[str, str], float]:
    """(goal, size) -> growth exponent of the subject time from the previous size."""
    by_goal: dict[str, dict[str, GoalResult]] = {}
    for r in results:
        by_goal.setdefault(r.goal, {})[r.size] = r
    out = {}
    for goal, found in by_goal.items():
        present = [s for s in sizes if s in found]
        for before, after in itertools.pairwise(present):
            a, b = found[before], found[after]
            if a.work > 0 and b.work > a.work and a.subject_s > 0 and b.subject_s > 0:
                out[(goal, after)] = math.log(b.subject_s / a.subject_s) / math.log(b.work / a.work)
    return out


def _s(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def table(results: list[GoalResult], sizes: list[str], notes: list[str], command: str,
          seconds: float) -> str:
    exponents = growth(results, sizes)
    order = {s: i for i, s in enumerate(sizes)}
    lines = [
        "# Issue 14 goals",
        "",
        f"Generated by `{command}` on {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} "
        f"(total {seconds:.0f} s). Ratio = subject / baseline, both measured in the same "
        "process; growth = log(t2/t1) / log(work2/work1) of the subject from the previous size "
        "(1 = linear).",
        "",
        "| goal | size | subject s | baseline | baseline s | ratio | limit | met? | growth |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: (r.goal, order.get(r.size, 99))):
        g = exponents.get((r.goal, r.size))
        lines.append(f"| {r.goal} | {r.size} | {_s(r.subject_s)} | {r.baseline} | "
                     f"{_s(r.baseline_s)} | {r.ratio:.2f} | {r.limit:g} | "
                     f"{'yes' if r.ratio <= r.limit else 'NO'} | "
                     f"{'' if g is None else f'{g:.2f}'} |")
    if notes:
        lines += ["", "Notes:", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI


def run(args: argparse.Namespace) -> int:
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    modules = [m.strip() for m in args.modules.split(",")] if args.modules else GOAL_MODULES
    started = time.perf_counter()
    results: list[GoalResult] = []
    notes: list[str] = []
    for size in sizes:
        repo = workdir / f"{size}-seed{args.seed}" / "repo"
        progress(f"{size}: generating the workload (seed {args.seed}) in {repo}")
        generate(size, args.seed, repo)
        for module in modules:
            progress(f"{size}: {module}")
            found = measure_in_subprocess(module, size, repo, workdir)
            if isinstance(found, str):
                notes.append(f"{module} at {size}: {found}")
                progress(f"{size}: {module}: {found}")
                continue
            results.extend(found)
    command = " ".join(["python -m benchmarks goals", *args.argv])
    markdown = table(results, sizes, notes, command, time.perf_counter() - started)
    print(markdown)
    if args.results:
        Path(args.results).write_text(markdown, "utf-8")
        progress(f"wrote {args.results}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m benchmarks goals", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--sizes", default="S,M,L", help="comma-separated sizes (default S,M,L)")
    top.add_argument("--results", default=None, help="also write the table to this file")
    top.add_argument("--modules", default=None,
                     help=f"comma-separated goal modules (default: {','.join(GOAL_MODULES)})")
    top.add_argument("--seed", type=int, default=1)
    top.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    return top


def one_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks goals-one")
    p.add_argument("--module", required=True)
    p.add_argument("--size", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--json", required=True)
    return p


def main(argv: list[str]) -> int:
    """``goals ...`` or ``goals-one ...`` (argv starts with the command)."""
    if argv[0] == "goals-one":
        one = one_parser().parse_args(argv[1:])
        return run_one(one.module, one.size, Path(one.repo), Path(one.workdir), Path(one.json))
    args = parser().parse_args(argv[1:])
    args.argv = argv[1:]
    return run(args)
