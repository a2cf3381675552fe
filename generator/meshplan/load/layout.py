"""Candidate documents of a rendered file, read line by line in the writer's layout.

:mod:`meshplan.load.canonical` accepts a list of documents for a file only when writing them
out again with :mod:`meshplan.yamltext` gives exactly the file's text: where the candidate
comes from does not matter to what is read, only to how often the check succeeds. This reader
is the candidate for a file the parsed-document cache has no entry for (a cold cache, or
``--no-cache``): it reads only the writer's layout (block mappings and sequences indented as
the writer indents them; plain, double-quoted, integer, boolean and null scalars; ``{}`` and
``[]``), several times faster than the positioned parser, and makes no attempt to be right
about anything else: any other text gives a candidate that does not write back (so the file
is parsed), or None. It never raises on any text.
"""

from __future__ import annotations

import json
from typing import Any

_WORDS: dict[str, Any] = {"true": True, "false": False, "null": None}
_NOT_PLAIN = frozenset('"-0123456789{[')  # where a scalar's first character needs a look
_decode = json.JSONDecoder().raw_decode


class _NotLaidOut(Exception):
    """The text is not in the writer's layout (here): no candidate."""


class QuotedScalars:
    """The values of the double-quoted scalars a reader met, by their text: one run reads
    the same names and annotations in thousands of files (a memo its reader keeps, bounded;
    a pure function of the text, so what is read does not depend on it)."""

    __slots__ = ("values",)
    LIMIT = 65536

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def decoded(self, text: str) -> str:
        """The value of a quoted scalar the memo does not hold yet."""
        value = json.loads(text)  # the writer quotes with JSON's escapes
        if type(value) is not str:
            raise _NotLaidOut
        if len(self.values) >= self.LIMIT:
            self.values.clear()
        self.values[text] = value
        return value


class _Reader:
    __slots__ = ("count", "lines", "next", "quoted")

    def __init__(self, lines: list[str], quoted: QuotedScalars) -> None:
        self.lines = lines
        self.next = 0  # the line to read
        self.count = len(lines)
        self.quoted = quoted

    def scalar(self, text: str) -> Any:
        """A scalar as the writer writes it (the check decides whether it was one)."""
        first = text[0]
        if first == '"':
            value = self.quoted.values.get(text)
            return self.quoted.decoded(text) if value is None else value
        if first in "-0123456789":
            return int(text)  # ValueError: not laid out
        if text == "{}":
            return {}
        if text == "[]":
            return []
        if first in "{[":
            raise _NotLaidOut
        return _WORDS.get(text, text)

    def nested(self, column: int) -> Any:
        """The value of a ``key:`` line whose key is at ``column``: a sequence at the same
        column, or a mapping two columns in."""
        if self.next >= self.count:
            raise _NotLaidOut
        line = self.lines[self.next]
        if line.startswith("- ", column) or (len(line) == column + 1 and line[column] == "-"):
            return self.sequence(column)
        return self.mapping(column + 2, None)

    def mapping(self, column: int, head: str | None) -> dict[str, Any]:
        """``key: value`` lines at ``column``; ``head``: the first one's text when it follows
        a sequence item's ``- ``."""
        out: dict[str, Any] = {}
        lines = self.lines
        indent = " " * column
        quoted = self.quoted.values
        while True:
            if head is not None:
                content, head = head, None
            else:
                at = self.next
                if at >= self.count:
                    return out
                line = lines[at]
                if not line.startswith(indent):
                    return out
                content = line[column:]
                if not content or content[0] == " " or content[0] == "-":
                    return out  # a deeper line, this mapping's sequence, or "---"
                self.next = at + 1
            if content[0] == '"':  # a quoted key
                key, end = _decode(content)
                rest = content[end:]
                if type(key) is not str:
                    raise _NotLaidOut
                if rest == ":":
                    out[key] = self.nested(column)
                elif rest.startswith(": "):
                    out[key] = self.scalar(rest[2:])
                else:
                    raise _NotLaidOut
                continue
            split = content.find(": ")
            if split < 0:
                if content[-1] != ":":
                    raise _NotLaidOut
                out[content[:-1]] = self.nested(column)
                continue
            value = content[split + 2:]
            first = value[0]
            if first == '"':
                found = quoted.get(value)
                out[content[:split]] = self.quoted.decoded(value) if found is None else found
            elif first in _NOT_PLAIN:
                out[content[:split]] = self.scalar(value)
            else:
                out[content[:split]] = _WORDS.get(value, value)

    def sequence(self, column: int) -> list[Any]:
        """``- item`` lines at ``column`` (a mapping item's first key on the dash's line)."""
        out: list[Any] = []
        lines = self.lines
        dash = " " * column + "- "
        bare = " " * column + "-"  # a list item: its items follow, two columns in
        while True:
            at = self.next
            if at >= self.count:
                return out
            line = lines[at]
            if line.startswith(dash):
                self.next = at + 1
                content = line[column + 2:]
                if content[0] == '"':
                    text, end = _decode(content)
                    if end == len(content):
                        if type(text) is not str:
                            raise _NotLaidOut
                        out.append(text)
                    else:
                        out.append(self.mapping(column + 2, content))
                elif ": " in content or content[-1] == ":":
                    out.append(self.mapping(column + 2, content))
                else:
                    out.append(self.scalar(content))
            elif line == bare:
                self.next = at + 1
                out.append(self.sequence(column + 2))
            else:
                return out


def laid_out_documents(body: str, quoted: QuotedScalars | None = None
                       ) -> list[dict[str, Any]] | None:
    """The documents ``body`` (a file's text after its leading comment lines) holds if it is
    in the writer's layout, else possibly other documents, or None. Only a check that they
    write back to ``body`` makes them the file's (:func:`meshplan.load.canonical`).
    ``quoted``: the memo of quoted scalars to use (a reader's, across its files)."""
    if not body:
        return []
    lines = body.split("\n")
    if lines[-1]:
        return None  # the writer ends every line
    lines.pop()
    reader = _Reader(lines, QuotedScalars() if quoted is None else quoted)
    documents: list[dict[str, Any]] = []
    try:
        while True:
            if lines[reader.next] == "{}":
                documents.append({})
                reader.next += 1
            else:
                documents.append(reader.mapping(0, None))
            if reader.next >= reader.count:
                return documents
            if lines[reader.next] != "---":
                return None
            reader.next += 1
            if reader.next >= reader.count:
                return None
    except (_NotLaidOut, ValueError, IndexError, RecursionError):
        return None
