"""Spies on the real pipeline: they record what a call did and change nothing it does."""

from __future__ import annotations

from typing import Any

import pytest
from meshplan import pipeline


def render_cached_modes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The list each later :func:`meshplan.pipeline.render_cached` call appends its result's
    mode to (``full ...``, ``incremental``, ``unchanged``), in call order."""
    modes: list[str] = []
    real = pipeline.render_cached

    def recorded(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        modes.append(result.mode)
        return result

    monkeypatch.setattr(pipeline, "render_cached", recorded)
    return modes
