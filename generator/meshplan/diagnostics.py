"""Diagnostics and the one error hierarchy every stage uses.

A :class:`Diagnostic` is what a person reads: where (file:line:col and the key path inside
the document), what was expected and what was found. Stages collect diagnostics instead of
stopping at the first problem, so one run reports everything.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTICE = "notice"


@dataclass(frozen=True, order=True)
class Location:
    """A position in an input file; ``line`` and ``column`` are 1-based (0 = unknown)."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


@dataclass(frozen=True)
class Diagnostic:
    severity: Severity
    location: Location
    path: str  # key path inside the document, e.g. "spec.clusters[0].name" ("" = whole doc)
    message: str

    def sort_key(self) -> tuple[str, int, int, str, str]:
        loc = self.location
        return (loc.file, loc.line, loc.column, self.path, self.message)

    def format_text(self) -> str:
        where = f"{self.location}: " + (f"{self.path}: " if self.path else "")
        prefix = "" if self.severity is Severity.ERROR else f"{self.severity.value}: "
        return f"{where}{prefix}{self.message}"

    def to_json(self) -> dict[str, object]:
        return {
            "severity": self.severity.value,
            "file": self.location.file,
            "line": self.location.line,
            "column": self.location.column,
            "path": self.path,
            "message": self.message,
        }


def error(location: Location, path: str, message: str) -> Diagnostic:
    return Diagnostic(Severity.ERROR, location, path, message)


def warning(location: Location, path: str, message: str) -> Diagnostic:
    return Diagnostic(Severity.WARNING, location, path, message)


def notice(location: Location, path: str, message: str) -> Diagnostic:
    return Diagnostic(Severity.NOTICE, location, path, message)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity is Severity.ERROR for d in diagnostics)


def sorted_diagnostics(diagnostics: Iterable[Diagnostic]) -> tuple[Diagnostic, ...]:
    return tuple(sorted(set(diagnostics), key=Diagnostic.sort_key))


class MeshplanError(Exception):
    """Root of every error meshplan raises on purpose. Anything else is a bug (exit 3)."""

    exit_code = 3


class InputError(MeshplanError):
    """The inputs are wrong; carries every diagnostic found (exit 1)."""

    exit_code = 1

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = sorted_diagnostics(diagnostics)
        count = sum(d.severity is Severity.ERROR for d in self.diagnostics)
        super().__init__(f"{count} input problem(s)")


class OperationError(MeshplanError):
    """An environment or git problem the user can fix (exit 1), e.g. a dirty work tree."""

    exit_code = 1


class UsageError(MeshplanError):
    """The command line is wrong (exit 2)."""

    exit_code = 2
