"""The record every goal measurement returns (issue 14; benchmarks/goal_*.py)."""

from typing import NamedTuple


class GoalResult(NamedTuple):
    goal: str          # e.g. "1 verify", "3 incremental (one requirement)", "5 --version"
    size: str          # "S", "M", "L"
    subject_s: float   # wall seconds of the thing measured (median of repeats where cheap)
    baseline: str      # what it is compared with, e.g. "full render", "python -c 'import click'"
    baseline_s: float  # wall seconds of the baseline, measured in the same run
    limit: float       # the ratio limit, e.g. 1.5
    work: float        # the size of the input for the growth exponent (e.g. input bytes or endpoints)  # noqa: E501

    @property
    def ratio(self) -> float: return self.subject_s / self.baseline_s
