"""verify cannot be fooled on the identity layer: every defect of issue 12, planted in the
rendered YAML of the Istio example, is reported.

A principal widened (to a namespace, a prefix, presence, a whole trust domain, namespaces
instead of principals, every port, a rule admitting everyone, the policy gone), narrowed (the
wrong workload, the wrong trust domain, allow-nothing, another port), the ``cluster.local``
shorthand, mutual TLS weakened (the PeerAuthentication dropped, PERMISSIVE, DISABLE, UNSET,
two at one scope, a workload's port made PERMISSIVE), a DENY by identity, and the gateway hop
broken in the Cilium layer. The unchanged example verifies clean, so every report comes from
the planted defect.
"""

from __future__ import annotations

import pytest
from meshplan.diagnostics import Severity
from meshplan.model import Inventory

from tests.support.flows import Files, rendered_files
from tests.support.identity_mutations import CASES, NCA_CASES
from tests.support.mutations import Mutation
from tests.support.repos import ISTIO_EXAMPLE
from tests.verify.test_mutations import reported, verify_mutated


@pytest.fixture(scope="module")
def example() -> tuple[Inventory, Files]:
    return rendered_files(ISTIO_EXAMPLE)


def test_the_unchanged_example_verifies(example: tuple[Inventory, Files]) -> None:
    report = verify_mutated(*example, lambda docs: None)
    assert reported(report, Severity.ERROR) == []
    assert all("through the east-west gateway of boutique/aks" in w
               for w in reported(report, Severity.WARNING))


def test_there_are_enough_mutations() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) >= 25
    assert set(ids) >= NCA_CASES


@pytest.mark.parametrize(("mutation", "severity", "words"), CASES)
def test_a_planted_identity_defect_is_reported(example: tuple[Inventory, Files],
                                               mutation: Mutation, severity: Severity,
                                               words: tuple[str, ...]) -> None:
    report = verify_mutated(*example, mutation)
    lines = reported(report, severity)
    assert any(all(w in line for w in words) for line in lines), "\n".join(
        reported(report, Severity.ERROR) + reported(report, Severity.WARNING))
    if severity is Severity.ERROR:
        assert not report.ok

