"""A repository's rendered files in memory, and the YAML documents of one of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from meshplan.pipeline import render_repository


def render_files(repo: Path) -> dict[str, bytes]:
    """``meshplan render`` without writing: every output file's path and bytes."""
    rendered, _ = render_repository(repo)
    return {f.path: f.content for f in rendered.files}


def documents(content: bytes) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a rendered file."""
    return [d for d in yaml.safe_load_all(content) if d is not None]
