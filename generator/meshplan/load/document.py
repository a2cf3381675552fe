"""The record the load stage produces: one YAML document, its data and its positions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any, Final

from ..diagnostics import Location

# Appended to a path to address the key itself rather than its value. A part no data key can
# equal (a YAML key is text, a number or a boolean; a path from a schema error holds data keys
# and list indices), and one the garbage collector does not track: a tuple of untracked parts
# is untracked, as marks were when KEY was text (an object of a class of ours is tracked, and
# its tuples with it: the parser's marks then cost the collector about a third more time).
KEY: Final[EllipsisType] = Ellipsis
PathKey = tuple[str | int | EllipsisType, ...]


@dataclass(frozen=True)
class Document:
    """One YAML document: its data and where each part of it was written."""

    file: str  # path relative to the repository, '/'-separated
    index: int  # position of the document in its file (0-based)
    data: Any
    marks: Mapping[PathKey, tuple[int, int]] = field(repr=False, compare=False)

    def location(self, path: PathKey = ()) -> Location:
        """The closest known position for ``path`` (falls back to the nearest parent)."""
        return _closest(self.file, self.marks, path)

    def key_location(self, path: PathKey) -> Location:
        """Position of the key that holds ``path`` (or of the value if unknown)."""
        mark = self.marks.get((*path, KEY))
        if mark is not None:
            return Location(self.file, mark[0], mark[1])
        return self.location(path)


def _closest(file: str, marks: Mapping[PathKey, tuple[int, int]], path: PathKey) -> Location:
    probe = tuple(path)
    while True:
        mark = marks.get(probe)
        if mark is not None:
            return Location(file, mark[0], mark[1])
        if not probe:
            return Location(file, 1, 1)
        probe = probe[:-1]


@dataclass(frozen=True, eq=False)
class Spot:
    """A place in a document, turned into a :class:`Location` only when asked: the marks of a
    document read from the cache are computed on demand (:mod:`.canonical`), and most places
    a reader keeps are never shown. It keeps the document's marks, not its data. Equal when
    they name the same document and path."""

    file: str
    index: int
    marks: Mapping[PathKey, tuple[int, int]]
    path: PathKey

    def location(self) -> Location:
        return _closest(self.file, self.marks, self.path)

    def _key(self) -> tuple[str, int, PathKey]:
        return self.file, self.index, self.path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spot) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def place(document: Document, path: PathKey) -> Location | Spot:
    """Where ``path`` is: its location now when the document's marks are at hand (the parser's
    dict), else a :class:`Spot` that finds it when asked."""
    if isinstance(document.marks, dict):
        return document.location(path)
    return Spot(document.file, document.index, document.marks, path)


def format_path(path: PathKey) -> str:
    """``("spec", "clusters", 0, "name")`` -> ``spec.clusters[0].name``; a path to a key
    (ending in :data:`KEY`) reads as the path of its value."""
    out = ""
    for part in path:
        if part is KEY:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
