"""Reading meshplan's own rendered files fast, without trusting anything that is not checked.

Parsing rendered YAML with positions costs several times what rendering it did. Most rendered
files are exactly what :mod:`meshplan.yamltext` writes, though, and for those a cheaper proof
exists: a *candidate* list of documents (from the parsed-document cache, keyed by the SHA-256
of the file's bytes) is accepted only when writing it out again with
:func:`~meshplan.yamltext.dump_documents`, after the file's leading ``#`` comment lines, gives
exactly the file's text. By the writer's round-trip property (``tests/test_yamltext.py``, and
``tests/load/test_canonical.py`` for this parser) every YAML reader reads those documents from
that text, so a stale, corrupt or forged entry can cost time but never change what is read:
anything else takes :func:`~meshplan.load.parse.parse_yaml`, the positioned parser.

A file the store has no entry for (a cold cache, ``--no-cache``) gets its candidate from
:mod:`.layout`, which reads the writer's layout line by line without positions: accepted by the
same check, so its mistakes too can cost time but never change what is read.

Positions (:attr:`Document.marks`) of an accepted document are computed only when a report
first asks for one, from its data and the writer's layout (:func:`canonical_marks`: the line
and column of every node and key, the same as the parser's, property-tested against it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from ..diagnostics import Diagnostic
from ..yamltext import (
    MAX_IMPLICIT_KEY,
    dump_document,
    mapping_text,
    nested_head,
    scalar_text,
    sequence_item_text,
)
from .document import KEY, Document, PathKey
from .files import decode_utf8
from .layout import QuotedScalars, laid_out_documents
from .parse import MAX_NODES_PER_FILE, parse_yaml

# Leading comment lines, as the renderer writes them: no character any YAML reader takes for
# a line break (\r, NEL, LS, PS) inside, or the rest of the "comment" would be content.
_HEADER = re.compile(r"(?:#[^\r\n\x85\u2028\u2029]*\n)*")
# Deep indentation: nesting that could approach the parser's depth limit (MAX_DEPTH = 200; the
# writer indents every second level at least by two), read by the parser to report it the same.
_DEEP = "\n" + " " * 120
# The writer escapes a lone surrogate (text JSON loads, that no file can hold as UTF-8) as
# "\udXXX"; YAML readers refuse that escape (libyaml: "invalid Unicode character escape
# code"), so text holding one (or what looks like one) is left to the parser to refuse.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
ENTRY_GROWTH = 8  # an entry larger than this many times its file (plus 4 KiB) is not read


class EntryStore(Protocol):
    """Where candidate documents are kept (:class:`meshplan.cache.RenderCache`)."""

    def read_parsed(self, name: str, limit: int) -> bytes | None: ...

    def write_parsed(self, entries: Iterable[tuple[str, bytes]]) -> None: ...


def canonical_body(text: str) -> str | None:
    """The text after the leading comment lines, or None when it is too large or too deeply
    indented to be read without the parser's limits."""
    match = _HEADER.match(text)
    body = text[match.end():] if match else text
    if len(body) >= MAX_NODES_PER_FILE or _DEEP in body:
        return None
    return body


def verified_documents(relpath: str, text: str, entry: bytes,
                       parts: Parts | None = None) -> list[Document] | None:
    """The documents of the JSON ``entry`` as those of ``text`` when they write back to
    exactly that text, else None. Their marks are computed on first use (:class:`LazyMarks`,
    which keeps the entry, not the data). ``parts``: the text's body cut into documents
    (:meth:`KnownDocuments.parts`): a part already known is taken as it is, and only the
    entry's other lines are read."""
    body = canonical_body(text)
    if body is None:
        return None
    if parts is not None:
        lines = entry.split(b"\n") if entry else []
        if len(lines) == len(parts.texts):
            candidate = [None if part in parts.found else _load(line)
                         for part, line in zip(parts.texts, lines, strict=True)]
            if any(c is _NOT_JSON for c in candidate):
                return None
            return checked_documents(relpath, text, body, candidate, _EntrySource(entry),
                                     parts)
    candidate = _loads(entry)
    if not isinstance(candidate, list):
        return None
    return checked_documents(relpath, text, body, candidate, _EntrySource(entry))


def laid_out(relpath: str, text: str, raw: bytes, *, with_entry: bool = False,
             quoted: QuotedScalars | None = None, parts: Parts | None = None
             ) -> tuple[list[Document], bytes | None] | None:
    """The documents of ``text`` (the file's bytes ``raw``, decoded) read in the writer's
    layout (:mod:`.layout`) and checked as :func:`verified_documents` checks an entry's, else
    None. ``with_entry``: and their entry (:func:`entry_of`; None when JSON cannot hold their
    text), which their marks then come from, as for an entry read from the store; else from
    ``raw`` (which the caller holds anyway: no copy of the text is kept). ``quoted``: the
    caller's memo of quoted scalars (:class:`~.layout.QuotedScalars`). ``parts``: as for
    :func:`verified_documents`; only the other parts are read."""
    body = canonical_body(text)
    if body is None:
        return None
    candidate: list[Any] | None
    if parts is not None:
        candidate = []
        for part in parts.texts:
            one = None if part in parts.found else laid_out_documents(part, quoted)
            if one is not None and len(one) != 1:
                return None
            candidate.append(one[0] if one is not None else None)
        if any(c is None and part not in parts.found
               for c, part in zip(candidate, parts.texts, strict=True)):
            return None
    else:
        candidate = laid_out_documents(body, quoted)
    if candidate is None:
        return None
    entry = None
    if with_entry:  # the entry is made of every document
        with contextlib.suppress(ValueError):  # text JSON cannot hold (a lone surrogate)
            entry = (entry_of(candidate) if parts is None else b"\n".join(
                parts.known.entry_line(part) if part in parts.found else _entry_line(c)
                for c, part in zip(candidate, parts.texts, strict=True)))
    source = _EntrySource(entry) if entry is not None else _TextSource(raw, body)
    found = checked_documents(relpath, text, body, candidate, source, parts)
    return (found, entry) if found is not None else None


def checked_documents(relpath: str, text: str, body: str, candidate: list[Any],
                      source: _Source | None, parts: Parts | None = None
                      ) -> list[Document] | None:
    """The ``candidate`` documents as those of ``text`` (whose ``body`` follows the leading
    comment lines) when they write back to exactly ``body``, else None; their marks from
    ``source`` (where the candidate came from; None: every part is known) when first asked
    for.

    ``parts``: ``body`` cut into one text per candidate (:meth:`KnownDocuments.parts`); a
    part already known is its known document (the candidate's is not read), any other must
    write back to exactly its part, and is known from then on."""
    if _SURROGATE_ESCAPE.search(body):
        return None
    sources: list[_Source]
    if parts is not None and len(parts.texts) == len(candidate):
        texts = parts.texts
        data = []
        sources = []
        learnt = []
        for part, item in zip(texts, candidate, strict=True):
            hit = parts.found.get(part)
            if hit is not None:
                data.append(hit)
                sources.append(_KnownSource(hit))
                continue
            if source is None or type(item) is not dict:
                return None
            checked = parts.known.checked(part, item)
            if checked is None:
                return None
            data.append(checked)
            # marks from the data checked: a policy may read with known rules in place of
            # the candidate's (which an entry's JSON would give the positions of)
            sources.append(source if checked is item else _KnownSource(checked))
            learnt.append((part, checked))
        for part, item in learnt:
            parts.learn(part, item)
    else:
        if source is None or any(type(d) is not dict for d in candidate):
            return None
        try:
            texts = [dump_document(d) for d in candidate]
        except (TypeError, ValueError, RecursionError):  # a float, a huge or too deep value
            return None
        if "---\n".join(texts) != body:
            return None
        data = candidate
        sources = [source] * len(candidate)
    line = text.count("\n", 0, len(text) - len(body)) + 1  # after the comment lines
    documents = []
    for i, (item, written, where) in enumerate(zip(data, texts, sources, strict=True)):
        documents.append(Document(relpath, i, item, LazyMarks(where, i, line)))
        line += written.count("\n") + 1  # and the "---" line
    if isinstance(source, _TextSource):
        source.place(texts)
    return documents


def _written(data: dict[str, Any]) -> str | None:
    """:func:`~meshplan.yamltext.dump_document`, or None when it cannot write ``data``."""
    try:
        return dump_document(data)
    except (TypeError, ValueError, RecursionError):  # a float, a huge or too deep value
        return None


# A policy's rules (spec.egress, spec.ingress items) as the writer lays them out: each item's
# text starts with "  - " and its other lines with four spaces at least.
_RULE_KEYS = ("egress", "ingress")
_ITEM_END = re.compile(r"\n(?!    )")


class Parts:
    """A file's body cut at its "---" lines, one text per document if it is in the writer's
    layout, with the documents already known for some of them (:class:`KnownDocuments`)."""

    __slots__ = ("found", "known", "texts")

    def __init__(self, known: KnownDocuments, texts: list[str]) -> None:
        self.known = known
        self.texts = texts
        self.found = {t: d for t in texts if (d := known.by_text.get(t)) is not None}

    @property
    def complete(self) -> bool:
        """Every part is a known document (and there is one)."""
        return bool(self.found) and len(self.found) == len(set(self.texts))

    def learn(self, text: str, data: dict[str, Any]) -> None:
        """``data`` writes back to exactly ``text``: known from now on, if small."""
        if len(text) <= MAX_KNOWN_TEXT:
            self.known.by_text[text] = data


# Only documents this small are kept as known (:class:`KnownDocuments`): those are what recurs
# across a fleet's files (Services, Namespaces); a policy is mostly its own cluster's.
MAX_KNOWN_TEXT = 1024


class KnownDocuments:
    """The documents a reader has checked, by the text they write back to exactly.

    In a fleet the same object recurs in many clusters' files (the same Service copy, the
    same Namespace): where its text recurs, it reads as the document already checked, without
    being read and written again. Sound because writing is a function: the document that
    wrote back to exactly a text is a reading of that text wherever it recurs (what a cache
    entry or the layout reader offers for it is not even looked at). The documents of equal
    texts share their data, so nothing may change a document's data (no reader of rendered
    files does). Only small documents are kept (:data:`MAX_KNOWN_TEXT`), and only while the
    files are read (:meth:`RenderedReader.forget_known`).
    """

    __slots__ = ("by_text", "lines", "rules")

    def __init__(self) -> None:
        self.by_text: dict[str, dict[str, Any]] = {}
        self.lines: dict[str, bytes] = {}  # the entry line of a known text, once made
        self.rules: dict[str, dict[str, Any]] = {}  # a policy rule's text -> its data

    def checked(self, text: str, data: dict[str, Any]) -> dict[str, Any] | None:
        """The document ``data`` when it writes back to exactly ``text``, else None; with the
        rules of its spec whose text is known replaced by their known data (what ``data``
        holds for them is not read; each rule's text is written once, not once per policy
        that has it: the same requirement renders the same rules into many clusters).

        A policy is checked in parts (:func:`~meshplan.yamltext.mapping_text`): a mapping's
        text is its items' texts in order, a nonempty list value's is its key's head then its
        items' texts. Sound whatever the rules' texts are guessed to be (each up to the next
        line indented less than its own lines): the document returned writes back to the
        parts, one after the other, each of which is checked (a known rule's text wrote back
        from that rule). When that fails, ``data`` itself is written back and compared."""
        spec = data.get("spec")
        if type(spec) is dict and ("egress" in spec or "ingress" in spec):
            with contextlib.suppress(TypeError, ValueError, RecursionError):
                found = self._policy(text, data, spec)
                if found is not None:
                    return found
        return data if _written(data) == text else None

    def _policy(self, text: str, data: dict[str, Any], spec: dict[str, Any]
                ) -> dict[str, Any] | None:
        """``data`` with its spec's rules replaced by the known ones, when it writes back to
        exactly ``text`` (written in parts: the items before the spec, the spec's, its rules
        one by one, the items after it), else None."""
        before: dict[str, Any] = {}
        after = before
        for key, value in data.items():
            if key == "spec":
                after = {}  # from now on, the items after the spec
            else:
                after[key] = value
        written = mapping_text(before, "") + nested_head("spec", "")
        if not text.startswith(written):
            return None
        pos = len(written)
        rules_known = self.rules
        learnt = []
        new_spec: dict[str, Any] = {}
        run: dict[str, Any] = {}  # the spec's items before the next rules
        for key, value in spec.items():
            if key not in _RULE_KEYS or type(value) is not list or not value:
                run[key] = value
                continue
            written = (mapping_text(run, "  ") if run else "") + nested_head(key, "  ")
            if not text.startswith(written, pos):
                return None
            pos += len(written)
            new_spec.update(run)
            run = {}
            rules = []
            for rule in value:
                found = _ITEM_END.search(text, pos)
                end = found.start() + 1 if found is not None else len(text)
                rule_text = text[pos:end]
                known = rules_known.get(rule_text)
                if known is None:
                    if type(rule) is not dict or sequence_item_text(rule, "  ") != rule_text:
                        return None
                    known = rule
                    learnt.append((rule_text, rule))
                rules.append(known)
                pos = end
            new_spec[key] = rules
        written = (mapping_text(run, "  ") if run else "") + mapping_text(after, "")
        if pos + len(written) != len(text) or not text.startswith(written, pos):
            return None
        new_spec.update(run)
        for rule_text, rule in learnt:
            rules_known[rule_text] = rule
        document = dict(data)
        document["spec"] = new_spec
        return document

    def entry_line(self, text: str) -> bytes:
        """The line of an entry (:func:`entry_of`) that holds the known document of ``text``
        (made once: the same Service copy recurs in many clusters' files)."""
        line = self.lines.get(text)
        if line is None:
            line = self.lines[text] = _entry_line(self.by_text[text])
        return line

    def parts(self, body: str) -> Parts:
        """``body`` (a file's text after its leading comment lines) cut at its "---" lines:
        the writer's texts of its documents when it is in the writer's layout (else the
        parts are checked and fail)."""
        if not body:
            return Parts(self, [])
        pieces = body.split("\n---\n")
        return Parts(self, [p + "\n" for p in pieces[:-1]] + pieces[-1:])


class _Source(Protocol):
    """Where a checked document's data can be had again (to compute its marks)."""

    def data(self, index: int) -> Any: ...


class _KnownSource:
    """A known document (:class:`KnownDocuments`): its data, shared."""

    __slots__ = ("known",)

    def __init__(self, known: dict[str, Any]) -> None:
        self.known = known

    def data(self, index: int) -> Any:
        return self.known


class _EntrySource:
    """A cache entry: one JSON text per document (checked: it loads to the same data)."""

    __slots__ = ("entry", "starts")

    def __init__(self, entry: bytes) -> None:
        self.entry = entry
        self.starts: list[int] | None = None  # where each line starts, once one is read

    def data(self, index: int) -> Any:
        # Not entry.split(): a report may ask for the places of many documents of one file
        # (a warning per Service), and splitting copied the whole entry each time.
        entry, starts = self.entry, self.starts
        if starts is None:
            starts = self.starts = [0]
            at = entry.find(b"\n")
            while at >= 0:
                starts.append(at + 1)
                at = entry.find(b"\n", at + 1)
        end = starts[index + 1] - 1 if index + 1 < len(starts) else len(entry)
        return json.loads(entry[starts[index]:end])


class _TextSource:
    """A file's bytes, each document's read again on its own in the writer's layout
    (checked: the file's text reads to the same documents)."""

    __slots__ = ("head", "raw", "spans")

    def __init__(self, raw: bytes, body: str) -> None:
        self.raw = raw
        # whatever precedes the body's bytes: the comment lines, and a byte-order mark the
        # decoded text no longer holds (the body is the tail of both)
        self.head = len(raw) - (len(body) if raw.isascii() else len(body.encode()))
        self.spans: list[tuple[int, int]] = []  # each document's bytes, once checked

    def place(self, texts: list[str]) -> None:
        """Where each document's text is in the file's bytes (a "---" line between two)."""
        ascii_only = self.raw.isascii()
        start = self.head
        for written in texts:
            end = start + (len(written) if ascii_only else len(written.encode()))
            self.spans.append((start, end))
            start = end + 4

    def data(self, index: int) -> Any:
        start, end = self.spans[index]
        documents = laid_out_documents(self.raw[start:end].decode())
        assert documents is not None and len(documents) == 1  # it was read so before
        return documents[0]


class LazyMarks(Mapping[PathKey, tuple[int, int]]):
    """The marks of one document of a checked file, computed when first asked for from where
    its data came from (read again: keeping every document's data for the few a report names
    would hold the whole rendered tree in memory)."""

    __slots__ = ("_index", "_line", "_marks", "_source")

    def __init__(self, source: _Source, index: int, line: int) -> None:
        self._source = source
        self._index = index
        self._line = line  # where the document starts
        self._marks: dict[PathKey, tuple[int, int]] | None = None

    def _computed(self) -> dict[PathKey, tuple[int, int]]:
        if self._marks is None:
            self._marks = canonical_marks(self._source.data(self._index), self._line)
        return self._marks

    def __getitem__(self, path: PathKey) -> tuple[int, int]:
        return self._computed()[path]

    def __iter__(self) -> Iterator[PathKey]:
        return iter(self._computed())

    def __len__(self) -> int:
        return len(self._computed())


def canonical_marks(data: dict[str, Any], line: int) -> dict[PathKey, tuple[int, int]]:
    """The marks the parser records for the document ``dump_document(data)`` written from
    ``line`` on: the layout rules of :mod:`meshplan.yamltext`, for the data JSON can hold
    (mappings with text keys, lists, text, integers, booleans, null)."""
    layout = _Layout(line)
    layout.marks[()] = (line, 1)
    if data:
        layout.mapping(data, 0, ())
    return layout.marks


class _Layout:
    """Walks data as :func:`meshplan.yamltext.dump_documents` writes it, line by line."""

    def __init__(self, line: int) -> None:
        self.line = line  # the line being written (1-based)
        self.marks: dict[PathKey, tuple[int, int]] = {}

    def mapping(self, data: dict[str, Any], indent: int, path: PathKey) -> None:
        marks = self.marks
        for key, value in data.items():
            text = scalar_text(key)
            child = (*path, key)
            if len(text) <= MAX_IMPLICIT_KEY:
                marks[(*child, KEY)] = (self.line, indent + 1)
                column = indent + len(text) + 3  # after "key: "
            else:  # "? key" then ":" on the next line
                marks[(*child, KEY)] = (self.line, indent + 3)
                self.line += 1
                column = indent + 3
            self.value(value, indent, child, column)

    def value(self, value: Any, indent: int, path: PathKey, column: int) -> None:
        """A mapping's value; ``column``: where it starts if on the key's line."""
        kind = type(value)
        if kind is dict and value:
            self.line += 1
            self.marks[path] = (self.line, indent + 3)
            self.mapping(value, indent + 2, path)
        elif kind is list and value:
            self.line += 1
            self.marks[path] = (self.line, indent + 1)  # the sequence's first "-"
            self.sequence(value, indent, path)
        else:  # a scalar, {} or []
            self.marks[path] = (self.line, column)
            self.line += 1

    def sequence(self, items: list[Any], indent: int, path: PathKey) -> None:
        """Items at ``indent``: "- item" lines, a list item as "-" then its own items."""
        for i, item in enumerate(items):
            child = (*path, i)
            kind = type(item)
            if kind is dict and item:
                self.marks[child] = (self.line, indent + 3)
                self.mapping(item, indent + 2, child)
            elif kind is list and item:
                self.line += 1
                self.marks[child] = (self.line, indent + 3)
                self.sequence(item, indent + 2, child)
            else:
                self.marks[child] = (self.line, indent + 3)
                self.line += 1


class RenderedReader:
    """Reads rendered files: through the store's candidates when one checks out, else in the
    writer's layout when that checks out, else with the positioned parser; remembers the
    entries of the files it read otherwise than from the store, to store them (:meth:`save`)."""

    def __init__(self, store: EntryStore | None) -> None:
        self.store = store
        self.pending: list[tuple[str, bytes]] = []
        self.accepted = 0  # files read from a candidate of the store
        self.laid_out = 0  # files read in the writer's layout (checked the same way)
        self.parsed = 0  # files read by the parser
        self.quoted = QuotedScalars()  # quoted scalars met, for the layout reader
        self.known = KnownDocuments()  # the small documents read so far, by their text
        self.known_files = 0  # files whose every document was known

    def documents(self, relpath: str, raw: bytes) -> tuple[list[Document], list[Diagnostic]]:
        """Documents and problems of the file ``relpath`` (as messages name it), exactly as
        :func:`parse_yaml` reads them, positions included."""
        text = decode_utf8(relpath, raw)
        if isinstance(text, Diagnostic):
            return [], [text]
        body = canonical_body(text)
        parts = self.known.parts(body) if body is not None else None
        if parts is not None and parts.complete:
            assert body is not None
            known = checked_documents(relpath, text, body, [None] * len(parts.texts), None,
                                      parts)
            if known is not None:
                self.known_files += 1
                return known, []
        name = hashlib.sha256(raw).hexdigest() if self.store is not None else ""
        if self.store is not None:
            entry = self.store.read_parsed(name, ENTRY_GROWTH * len(raw) + 4096)
            if entry is not None:
                found = verified_documents(relpath, text, entry, parts)
                if found is not None:
                    self.accepted += 1
                    return found, []
        read = laid_out(relpath, text, raw, with_entry=self.store is not None,
                        quoted=self.quoted, parts=parts)
        if read is not None:
            self.laid_out += 1
            found, made = read
            if made is not None:
                self.pending.append((name, made))
            return found, []
        documents, problems = parse_yaml(relpath, text)
        self.parsed += 1
        if self.store is not None and not problems:
            self._remember(name, relpath, text, documents)
        return documents, problems

    def forget_known(self) -> None:
        """Drop the documents kept to read recurring texts (:class:`KnownDocuments`), once
        every file is read: those still in use stay with their documents."""
        self.known = KnownDocuments()

    def _remember(self, name: str, relpath: str, text: str, documents: list[Document]) -> None:
        """Keep an entry for a parsed file, when it will check out (a ConfigMap's literal
        block, a date or a float will not)."""
        try:
            entry = entry_of(d.data for d in documents)
        except (TypeError, ValueError, RecursionError):
            return
        if verified_documents(relpath, text, entry) is not None:
            self.pending.append((name, entry))

    def save(self) -> None:
        """Store the entries of the files parsed so far."""
        if self.store is not None and self.pending:
            self.store.write_parsed(self.pending)
        self.pending = []


def entry_of(documents: Iterable[Any]) -> bytes:
    """The entry of a file's documents: one JSON text per line (JSON escapes line breaks), so
    that one document can be read again on its own (:class:`LazyMarks`)."""
    return b"\n".join(_entry_line(data) for data in documents)


def _entry_line(data: Any) -> bytes:
    """One document's line of an entry (JSON escapes line breaks)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


_NOT_JSON = object()


def _load(line: bytes) -> Any:
    """One line of an entry (json.loads builds only plain data), or :data:`_NOT_JSON`."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError):  # not JSON (or not UTF-8), nested too deeply
        return _NOT_JSON


def _loads(entry: bytes) -> Any:
    """An entry's documents (json.loads builds only plain data: safe on any input), or None."""
    if not entry:
        return []
    try:
        return [json.loads(line) for line in entry.split(b"\n")]
    except (ValueError, RecursionError):  # not JSON (or not UTF-8), nested too deeply
        return None
