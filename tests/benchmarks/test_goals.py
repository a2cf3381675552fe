"""The goals runner (``python -m benchmarks goals-one``)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.goals import run_one
from benchmarks.workload import generate


def test_goals_one_makes_its_workdir(tmp_path: Path) -> None:
    """A fresh --workdir is made, as `goals` and `profile` make theirs (it was a traceback)."""
    repo = tmp_path / "S" / "repo"
    generate("S", 1, repo)
    workdir = tmp_path / "not" / "made" / "yet"
    out = tmp_path / "goal.json"
    assert run_one("goal_diff", "S", repo, workdir, out) == 0
    assert workdir.is_dir()
    assert {row["goal"] for row in json.loads(out.read_text("utf-8"))} >= {"4 diff (cold cache)"}
