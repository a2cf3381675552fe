"""The pairwise verify, kept as a test-only oracle for verify by classes (issue 14).

Verify evaluates every flow it looks at exactly as before; what changed is *which* flows it
looks at: per subject the peers its rules name, and a whole class of unnamed peers only when
its verdicts differ (:func:`meshplan.verify.connectivity.sparse_pairs`, and the identity
layer's and the gateway hop's candidates in :mod:`meshplan.verify.layers`). Inside
:func:`pairwise`, every one of them is every pair again, as the pairwise evaluator looked at
them, and the picture of a change reads both trees whole and compares every pair, so the two
answers can be compared on any input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import meshplan.flowdiff as flowdiff_module
import meshplan.verify.compare as compare_module
import meshplan.verify.layers as layers_module
from meshplan.verify.connectivity import Connectivity, Direction


def _every_pair(models: Sequence[Connectivity],
                everyone: Callable[[Direction, int], bool],
                subjects: Callable[[Direction, int], bool] | None = None
                ) -> list[tuple[int, int]]:
    return list(models[0].pairs())


def _every_model_pair(model: Connectivity,
                      everyone: Callable[[Direction, int], bool]) -> list[tuple[int, int]]:
    return list(model.pairs())


def _every_layer_pair(layers: Any, intended: Any) -> list[tuple[int, int]]:
    return list(layers.pairs())


@contextmanager
def pairwise() -> Iterator[None]:
    """Within: verify looks at every pair of endpoints, as before issue 14."""
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(compare_module, "sparse_pairs", _every_pair))
        stack.enter_context(mock.patch.object(compare_module, "_cross_domain_pairs",
                                              _every_model_pair))
        stack.enter_context(mock.patch.object(layers_module, "_identity_candidates",
                                              _every_layer_pair))
        stack.enter_context(mock.patch.object(layers_module, "_routed_candidates",
                                              _every_layer_pair))
        # the picture of a change: both trees read whole, every pair compared
        stack.enter_context(mock.patch.object(flowdiff_module, "_same_reading",
                                              lambda old, new: False))
        yield
