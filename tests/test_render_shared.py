"""Objects whose body refinement built once for several of them (a Service's copy, a Namespace:
``Manifest.shared``) are written once around their required-by value
(:class:`meshplan.render.ObjectTexts`): every object must still come out exactly as writing
its whole body does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from meshplan.pipeline import analyse
from meshplan.refine import ClusterRef, Manifest, ObjectKey, with_required_by
from meshplan.render import ObjectTexts, render_cluster
from meshplan.yamltext import SharedText, dump_document

from tests.support.repos import ISTIO_EXAMPLE, REPO_ROOT, THESIS_DIR
from tests.support.semantics import THESIS_FIXTURES

CASES = {"example": REPO_ROOT, "istio": ISTIO_EXAMPLE,
         **{name: THESIS_DIR / name for name in THESIS_FIXTURES}}


@pytest.mark.parametrize("case", sorted(CASES))
def test_shared_bodies_are_written_as_the_whole_object(case: str) -> None:
    analysis = analyse(CASES[case])
    assert analysis.plan is not None
    texts, plain = ObjectTexts(), SharedText()
    for cluster in analysis.plan.clusters:
        for manifest in cluster.objects:
            assert texts.document(manifest) == dump_document(manifest.body)
        memo_files = render_cluster(cluster, texts)
        assert memo_files == render_cluster(cluster, plain)


def test_the_example_has_shared_bodies() -> None:
    """The case above exercises the shared path: the example has Services and Namespaces in
    several clusters."""
    analysis = analyse(REPO_ROOT)
    assert analysis.plan is not None
    shared = [m for c in analysis.plan.clusters for m in c.objects if m.shared is not None]
    assert {m.key.kind for m in shared} >= {"Service", "Namespace"}
    texts = ObjectTexts()
    for manifest in shared:
        texts.document(manifest)
    assert all(before is not None for _, before, _ in texts.around.values())


def _namespace(name: str, *extra: tuple[str, str]) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "meshplan"},
                         "annotations": dict(extra)},
            "spec": {"finalizers": ["kubernetes"]}}


@pytest.mark.parametrize("causes", [
    ("d1/ns/plain",),
    ("d1/ns/a", "d2/ns/b"),  # joined with a comma: quoted
    ("yes",),  # a YAML 1.1 boolean word: quoted
    ("d1/ns/é\u2028x",),  # escaped in quotes
    ("meshplan-required-by-placeholder-7f3a9c",),  # the placeholder itself as the value
])
@pytest.mark.parametrize("body", [
    _namespace("team"),
    _namespace("team", ("meshplan.dev/required-by", "stale"), ("z", "last")),  # kept in place
    {"kind": "Namespace", "metadata": {"name": "bare"}},  # no annotations: appended
    # the placeholder text inside the body: written in full
    _namespace("meshplan-required-by-placeholder-7f3a9c"),
])
def test_values_and_shapes(causes: tuple[str, ...], body: dict[str, object]) -> None:
    key = ObjectKey(ClusterRef("d1", "c1"), "Namespace", "", "team")
    texts = ObjectTexts()
    for _ in range(2):  # the first writes the shared text, the second reuses it
        manifest = Manifest(key, with_required_by(body, causes), causes, body)
        assert texts.document(manifest) == dump_document(manifest.body)


def test_a_manifest_without_a_shared_body_is_written_whole(tmp_path: Path) -> None:
    body = _namespace("team")
    manifest = Manifest(ObjectKey(ClusterRef("d1", "c1"), "Namespace", "", "team"),
                        with_required_by(body, ("d1/ns/a",)), ("d1/ns/a",))
    texts = ObjectTexts()
    assert texts.document(manifest) == dump_document(manifest.body)
    assert not texts.around
