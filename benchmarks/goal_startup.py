"""Goal 5 of issue 14: start-up time of ``meshplan --version`` and ``meshplan validate``.

Both are timed as whole processes (what a pre-commit hook or an editor waits for) against the
floor of any click command line, ``python -c "import click"``, measured in the same run with
the same interpreter. The runs are interleaved (baseline, --version, validate, baseline, ...)
so that a burst of load on the shared machine hits all three alike; each figure is the median.

``validate`` checks the bundled example (the repository root's ``inventory/`` and
``requirements/``), whatever size is asked for: start-up does not depend on the workload.

Run alone: ``python -m benchmarks.goal_startup [--repeat N]``.
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .goals import GoalResult
from .workload import REPO_ROOT

REPEAT = 9
VERSION_LIMIT = 1.5
VALIDATE_LIMIT = 3.0
BASELINE = "python -c 'import click'"


def meshplan_command() -> list[str]:
    """The ``meshplan`` console script of this interpreter's environment (as users run it)."""
    script = Path(sys.executable).parent / "meshplan"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "meshplan"]


def wall_seconds(cmd: list[str], *, expect: int = 0) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != expect:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: "
                           f"{done.stderr.decode(errors='replace')[-2000:]}")
    return seconds


def example_bytes() -> int:
    """The size of the bundled example's input files (the 'work' of validate)."""
    return sum(p.stat().st_size for top in ("inventory", "requirements")
               for p in (REPO_ROOT / top).rglob("*") if p.is_file())


def compile_bytecode() -> None:
    """Write meshplan's ``.pyc`` files, as installing a package does (click's come from its
    install): an editable checkout run with PYTHONDONTWRITEBYTECODE would otherwise compile
    every module from source on every start, and time the compiler instead of the imports."""
    import meshplan

    compileall.compile_dir(Path(meshplan.__file__).parent, quiet=1)


def timings(repeat: int = REPEAT) -> dict[str, float]:
    """Median wall seconds of the baseline, ``--version`` and ``validate`` (interleaved)."""
    compile_bytecode()
    meshplan = meshplan_command()
    commands = {
        "baseline": [sys.executable, "-c", "import click"],
        "version": [*meshplan, "--version"],
        "validate": [*meshplan, "validate", "--repo", str(REPO_ROOT)],
    }
    for cmd in commands.values():  # warm the file cache and .pyc files; not counted
        wall_seconds(cmd)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, cmd in commands.items():
            samples[name].append(wall_seconds(cmd))
    return {name: statistics.median(values) for name, values in samples.items()}


def measure(size: str, repo: Path, workdir: Path) -> list[GoalResult]:
    """Goal 5 rows; ``repo`` and ``workdir`` are unused (the bundled example is validated)."""
    del repo, workdir
    t = timings()
    work = float(example_bytes())
    return [
        GoalResult("5 --version", size, t["version"], BASELINE, t["baseline"], VERSION_LIMIT,
                   work),
        GoalResult("5 validate (bundled example)", size, t["validate"], BASELINE,
                   t["baseline"], VALIDATE_LIMIT, work),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.goal_startup",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=REPEAT)
    args = parser.parse_args(argv)
    t = timings(args.repeat)
    for name, limit in (("version", VERSION_LIMIT), ("validate", VALIDATE_LIMIT)):
        ratio = t[name] / t["baseline"]
        print(f"{name:9} {t[name]:.3f} s  vs {BASELINE} {t['baseline']:.3f} s: "
              f"{ratio:.2f}x (limit {limit}x) {'met' if ratio <= limit else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
