"""verify cannot be fooled: every fail-open defect of issue 9, planted in rendered YAML, is
reported.

Each case renders a repository, changes the rendered Cilium YAML the way a regression of
refine (or a hand edit) would, and asserts that ``verify`` reports it: as an error when the
output no longer allows exactly what is intended (a policy Cilium rejects enforces nothing, so
its pods are unrestricted), as a warning where Cilium's reading differs from what was meant but
the flows themselves still match (a peer behind a wider global Service, a CIDR over pods).
The unchanged output verifies clean, so every report comes from the planted defect.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from meshplan.diagnostics import Severity
from meshplan.model import Inventory
from meshplan.verify.report import VerifyReport, verify

from tests.support.flows import Files, rendered_files, write
from tests.support.mutations import CASES, NCA_CASES, Docs, E, Mutation, W, mutated
from tests.support.repos import REPO_ROOT


@pytest.fixture(scope="module")
def example() -> tuple[Inventory, Files]:
    return rendered_files(REPO_ROOT)


def verify_mutated(inventory: Inventory, files: Files, mutation: Mutation) -> VerifyReport:
    return verify(inventory, mutated(files, mutation))


def reported(report: VerifyReport, severity: Severity) -> list[str]:
    return [d.format_text() for d in report.diagnostics if d.severity is severity]


def test_the_unchanged_example_verifies(example: tuple[Inventory, Files]) -> None:
    report = verify_mutated(*example, lambda docs: None)
    assert reported(report, E) == []
    assert all("half-open intent" in w for w in reported(report, W))


def test_there_are_enough_mutations() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) >= 30
    assert set(NCA_CASES) <= set(ids)


@pytest.mark.parametrize(("mutation", "severity", "words"), CASES)
def test_a_planted_defect_is_reported(example: tuple[Inventory, Files], mutation: Mutation,
                                      severity: Severity, words: tuple[str, ...]) -> None:
    report = verify_mutated(*example, mutation)
    lines = reported(report, severity)
    assert any(all(w in line for w in words) for line in lines), "\n".join(
        reported(report, E) + reported(report, W))
    if severity is E:
        assert not report.ok


# --------------------------------------------------------------------------- namespace labels

NS_LABEL_REPO = {
    "inventory/d.yaml": """
        apiVersion: meshplan.dev/v1alpha1
        kind: Domain
        metadata: {name: d}
        spec:
          clusters: [{name: a, meshName: ma}]
          services:
            - {name: x, namespace: n1, selector: {app: x}, clusters: [a],
               ports: [{port: 80, protocol: TCP, name: http}]}
            - {name: y, namespace: n2, selector: {app: y}, clusters: [a],
               ports: [{port: 80, protocol: TCP, name: http}]}
    """,
    "requirements/d/x.yaml": """
        apiVersion: meshplan.dev/v1alpha1
        kind: Requirement
        metadata: {name: x}
        spec:
          endpointSelector: {matchLabels: {service: x}}
          egress:
            - toEndpoints:
                - matchLabels: {io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name: n2}
    """,
}


def test_a_namespace_label_peer_pinned_to_the_policy_namespace_is_reported(
        tmp_path: Path) -> None:
    """Cilium does not pin a peer that selects by namespace labels: the rendered peer reaches
    y in n2; pinned to the policy's namespace (n1), as a regression would write it, it reaches
    nothing, and verify says the intended flow is blocked."""
    inventory, files = rendered_files(write(tmp_path / "repo", NS_LABEL_REPO))
    report = verify(inventory, files)
    assert reported(report, E) == []
    titles = [e.title for e in report.endpoints]
    assert report.flows[(titles.index("d/x@a"), titles.index("d/y@a"))]

    def pin(docs: Docs) -> None:
        [policy] = docs["clusters/d/a/policies.yaml"]
        peer = policy["spec"]["egress"][0]["toEndpoints"][0]
        assert "k8s:io.kubernetes.pod.namespace" not in peer["matchLabels"]
        peer["matchLabels"]["k8s:io.kubernetes.pod.namespace"] = "n1"

    report = verify_mutated(inventory, files, pin)
    assert any("expected d/x@a -> d/y@a to be allowed" in e for e in reported(report, E))
