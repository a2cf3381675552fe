"""meshplan.load.document: key paths as people read them."""

from __future__ import annotations

import pytest
from meshplan.load.document import KEY, format_path


@pytest.mark.parametrize(("path", "text"), [
    ((), ""),
    (("spec",), "spec"),
    (("spec", "clusters", 0, "name"), "spec.clusters[0].name"),
    ((0,), "[0]"),
    ((0, "a"), "[0].a"),
    (("a", 1, 2), "a[1][2]"),
    (("metadata", "annotations", "meshplan.dev/clusters"),
     "metadata.annotations.meshplan.dev/clusters"),
    (("spec", "egress", KEY), "spec.egress"),
])
def test_format_path(path: tuple[str | int, ...], text: str) -> None:
    assert format_path(path) == text
