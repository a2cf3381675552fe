"""meshplan.load.document: key paths as people read them."""

from __future__ import annotations

import copy
import gc
import pickle

import pytest
from meshplan.load.document import KEY, PathKey, format_path


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
    (("spec", "<key>", "a"), "spec.<key>.a"),  # a data key spelled like KEY is shown
    (("spec", "<key>", KEY), "spec.<key>"),
    (("a", -1, 1), "a[-1][1]"),
])
def test_format_path(path: PathKey, text: str) -> None:
    assert format_path(path) == text


def test_key_is_no_data_key_and_costs_the_collector_nothing() -> None:
    data_keys: tuple[object, ...] = ("<key>", -1, 0, 1, True, False, None, "", "KEY")
    assert KEY not in data_keys
    assert copy.deepcopy(KEY) is KEY
    assert pickle.loads(pickle.dumps(("a", KEY)))[1] is KEY
    path: PathKey = ("a", 1)
    mark = (*path, KEY)  # built as the parser builds it
    gc.collect()
    assert not gc.is_tracked(mark)  # as a tuple of text and numbers: marks stay untracked
