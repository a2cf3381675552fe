"""The record every ``benchmarks/goal_<name>.py`` returns (issue 14's benchmark contract)."""

from __future__ import annotations

from typing import NamedTuple


class GoalResult(NamedTuple):
    goal: str          # e.g. "1 verify", "3 incremental (one requirement)", "5 --version"
    size: str          # "S", "M", "L"
    subject_s: float   # wall seconds of the thing measured (median of repeats where cheap)
    baseline: str      # what it is compared with, e.g. "full render", "python -c 'import click'"
    baseline_s: float  # wall seconds of the baseline, measured in the same run
    limit: float       # the ratio limit, e.g. 1.5
    work: float        # input size for the growth exponent (e.g. input bytes or endpoints)

    @property
    def ratio(self) -> float: return self.subject_s / self.baseline_s
