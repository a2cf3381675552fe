"""The repository under test and copies of its example: where things are, how to copy them."""

from __future__ import annotations

import shutil
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = TESTS_DIR.parent
THESIS_DIR = TESTS_DIR / "fixtures" / "thesis"

# A requirement to add to the bundled example whose own objects all land in domain2/cl3
# (rebel-base and service3 run there only): the small change of the git-history tests.
REBEL_REQUIREMENT = """\
apiVersion: meshplan.dev/v1alpha1
kind: Requirement
metadata:
  name: rebel-base
spec:
  endpointSelector:
    matchLabels: {service: rebel-base}
  egress:
    - toEndpoints:
        - matchLabels: {service: service3}
"""


def copy_tree(source: Path, dest: Path) -> Path:
    """Copy ``source/inventory`` and ``source/requirements`` into ``dest``; return ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for top in ("inventory", "requirements"):
        if (source / top).is_dir():
            shutil.copytree(source / top, dest / top)
    return dest


def copy_example(dest: Path) -> Path:
    """The bundled example (repository root) copied into ``dest``."""
    return copy_tree(REPO_ROOT, dest)


def write_text(root: Path, relpath: str, text: str) -> Path:
    """Write ``text`` to ``root/relpath`` (folders created); the path."""
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
