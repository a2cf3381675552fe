"""benchmarks.growth: the wide-requirement workload is valid, and the exponent is a slope."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from meshplan.diagnostics import Severity
from meshplan.pipeline import validate

from benchmarks.growth import Point, exponent, table, write_wide_repository


def test_the_wide_requirement_validates_with_its_planted_warnings(tmp_path: Path) -> None:
    repo = write_wide_repository(600, tmp_path / "repo")
    inventory, diagnostics = validate(repo)
    assert inventory is not None
    [requirement] = inventory.requirements
    assert len(requirement.egress or ()) + len(requirement.ingress or ()) == 600
    assert requirement.egress and requirement.ingress
    # every 300th rule is a CIDR over a pod network, so the pod-CIDR check runs
    warned = [d for d in diagnostics if d.severity is Severity.WARNING]
    assert len(warned) == 2 and all("overlapping the pod CIDR" in d.message for d in warned)
    assert [d for d in diagnostics if d.severity is Severity.ERROR] == []


def test_the_same_n_writes_the_same_file(tmp_path: Path) -> None:
    first = write_wide_repository(90, tmp_path / "a") / "requirements/d/wide.yaml"
    second = write_wide_repository(90, tmp_path / "b") / "requirements/d/wide.yaml"
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
def test_the_exponent_of_a_power_law(power: float) -> None:
    xs = [5_000.0, 10_000.0, 20_000.0, 40_000.0]
    assert math.isclose(exponent(xs, [3 * x ** power for x in xs]), power)


def test_the_table_judges_against_the_target() -> None:
    linear = [Point(n, n * 60, n / 5000, n / 4000) for n in (5000, 10_000, 20_000)]
    assert "validate 1.00, render 1.00; target at most 1.2 (near-linear): met." in table(linear)
    quadratic = [Point(n, n * 60, (n / 5000) ** 2, 1.0 * n) for n in (5000, 10_000)]
    assert "validate 2.00" in table(quadratic) and ": NOT met." in table(quadratic)
    with pytest.raises(ValueError):
        exponent([1.0], [1.0])
