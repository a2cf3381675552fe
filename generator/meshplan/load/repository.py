"""Stage 1 — load: the input files of a repository as :class:`Document` records.

``inventory/`` (YAML, and the thesis' JSON) and ``requirements/<domain>/`` (YAML), found and
read by :mod:`.files`, parsed by :mod:`.parse`; every problem is a diagnostic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..diagnostics import Diagnostic, Location, error
from .document import Document
from .files import INVENTORY_SUFFIXES, YAML_SUFFIXES, decode_utf8, input_files, read_text
from .parse import parse_json_like, parse_yaml


@dataclass(frozen=True)
class Inputs:
    """Everything read from a repository, ready for validation."""

    inventory: tuple[Document, ...]
    requirements: tuple[tuple[str, Document], ...]  # (owning domain folder, document)


def load_repository(repo: Path, contents: Mapping[str, bytes] | None = None
                    ) -> tuple[Inputs, list[Diagnostic]]:
    """Read ``inventory/`` and ``requirements/<domain>/`` of ``repo``.

    ``contents``: the bytes of input files the caller has just read (relative path -> bytes;
    the render cache digests them: the run then analyses exactly what it recorded), taken
    instead of reading them again. (Callers running the whole pipeline pause the cyclic
    garbage collector around it: ``pipeline.without_cyclic_gc``.)
    """
    given = contents if contents is not None else {}
    diagnostics: list[Diagnostic] = []
    inventory: list[Document] = []
    requirements: list[tuple[str, Document]] = []
    root = repo.resolve()

    inventory_dir = root / "inventory"
    if not inventory_dir.is_dir():
        diagnostics.append(
            error(Location("inventory/"), "", "expected a folder 'inventory/' with the domains, "
                  "found none")
        )
    for relpath in input_files(root, "inventory", INVENTORY_SUFFIXES, diagnostics):
        docs, problems = read_documents(root, relpath, given.get(relpath))
        inventory.extend(docs)
        diagnostics.extend(problems)

    for relpath in input_files(root, "requirements", YAML_SUFFIXES, diagnostics):
        parts = relpath.split("/")
        if len(parts) < 3:
            diagnostics.append(error(Location(relpath, 1, 1), "", "expected requirement files "
                                     "inside a folder named after their domain "
                                     "(requirements/<domain>/...), found it directly in "
                                     "requirements/"))
            continue
        docs, problems = read_documents(root, relpath, given.get(relpath))
        requirements.extend((parts[1], doc) for doc in docs)
        diagnostics.extend(problems)
    return Inputs(tuple(inventory), tuple(requirements)), diagnostics


def read_documents(root: Path, relpath: str, raw: bytes | None = None
                   ) -> tuple[list[Document], list[Diagnostic]]:
    """Read and parse one input file (already vetted by :func:`.files.input_files`);
    ``raw``: its bytes, when already read."""
    text = read_text(root, relpath) if raw is None else decode_utf8(relpath, raw)
    if isinstance(text, Diagnostic):
        return [], [text]
    if relpath.endswith(".json"):
        return parse_json_like(relpath, text)
    return parse_yaml(relpath, text)
