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

Much of a fleet's output repeats (the same requirement renders the same rules, subject and
metadata into many clusters), so what was proven once is known by its text for the rest of
the run (:class:`KnownDocuments`): a small document whose whole text is known, and a policy
whose every piece is (the items before its spec, the runs of its spec's other items, each
rule, what follows its last rule), is read by looking those texts up, with no candidate read
at all. That is the same proof: each piece wrote back to exactly its text, and by the
writer's composition property (a mapping's text is its items' texts in order) the pieces
together write back to the document's.

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
    entry's lines of the other parts are read, when they are not known by then (a policy
    whose every piece is known: :meth:`KnownDocuments.policy`)."""
    body = canonical_body(text)
    if body is None:
        return None
    if parts is not None:
        lines = entry.split(b"\n") if entry else []
        if len(lines) == len(parts.texts):
            candidate = [None if part in parts.found else _Offer(line, part, None)
                         for part, line in zip(parts.texts, lines, strict=True)]
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
    if parts is not None:  # each part read when it is not known by then
        offers: list[Any] = [
            None if part in parts.found else _Offer(None, part, quoted) for part in parts.texts]
        stored = _EntrySource(b"")  # their entry, made once the documents are read
        found = checked_documents(relpath, text, body, offers,
                                  stored if with_entry else _TextSource(raw, body), parts)
        if found is None:
            return None
        if not with_entry:
            return found, None
        try:  # the entry of the documents read, for their marks too
            stored.entry = b"\n".join(parts.known.entry_line(part, doc.data)
                                      for part, doc in zip(parts.texts, found, strict=True))
        except ValueError:  # text JSON cannot hold (a lone surrogate: not read so above)
            return None
        return found, stored.entry
    candidate = laid_out_documents(body, quoted)
    if candidate is None:
        return None
    made = None
    if with_entry:  # the entry is made of every document
        with contextlib.suppress(ValueError):  # text JSON cannot hold (a lone surrogate)
            made = entry_of(candidate)
    source = _EntrySource(made) if made is not None else _TextSource(raw, body)
    found = checked_documents(relpath, text, body, candidate, source)
    return (found, made) if found is not None else None


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
            if source is None or (type(item) is not dict and type(item) is not _Offer):
                return None
            checked = parts.known.checked(part, item)
            if checked is None:
                return None
            data.append(checked)
            # marks from the data checked: a policy may read with known pieces in place of
            # the candidate's (which an entry's JSON would give the positions of)
            offered = item.data if type(item) is _Offer else item
            sources.append(source if checked is offered else _KnownSource(checked))
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
# A rule section's head in a policy's spec, as the writer lays it out (at a line's start: the
# search starts just after a line break), and what a policy's text holds at least one of.
_SECTION = re.compile(f"^  ({'|'.join(_RULE_KEYS)}):\n", re.MULTILINE)
_SECTION_HEADS = tuple(f"\n  {key}:\n" for key in _RULE_KEYS)


def _spec_start(text: str) -> int:
    """Where the items of a document's spec start in its text (after its "spec:" line, at the
    writer's first level), or -1 when there is no such line."""
    if text.startswith("spec:\n"):
        return 6
    at = text.find("\nspec:\n")
    return at + 7 if at >= 0 else -1


_Pieces = tuple[dict[str, Any], list[dict[str, Any]], list[tuple[str, list[Any]]],
                dict[str, Any]]


def _offered_pieces(offer: _Offer | None) -> _Pieces | None:
    """The pieces of the policy ``offer`` offers (:func:`_policy_pieces`), read now."""
    data = offer.read() if offer is not None else None
    return _policy_pieces(data) if type(data) is dict else None


def _policy_pieces(data: dict[str, Any]) -> _Pieces | None:
    """A policy's data cut as :meth:`KnownDocuments.policy` cuts its text: the items before
    its spec; the runs of the spec's other items (before each rule section, and after the
    last: one more than the sections); its rule sections (key, nonempty list); the items
    after its spec. None when its spec is not a mapping."""
    before: dict[str, Any] = {}
    after = before
    spec = None
    for key, value in data.items():
        if key == "spec":
            spec = value
            after = {}  # from now on, the items after the spec
        else:
            after[key] = value
    if type(spec) is not dict:
        return None
    runs: list[dict[str, Any]] = [{}]
    sections: list[tuple[str, list[Any]]] = []
    for key, value in spec.items():
        if key in _RULE_KEYS and type(value) is list and value:
            sections.append((key, value))
            runs.append({})
        else:
            runs[-1][key] = value
    return before, runs, sections, after


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
    files are read (:meth:`RenderedReader.forget_known`). The same holds for the pieces of
    policies (:meth:`policy`), kept whatever their size: those are what recurs in policies
    (a policy as a whole is mostly its own cluster's).
    """

    __slots__ = ("by_text", "heads", "lines", "rules", "runs", "tails")

    def __init__(self) -> None:
        self.by_text: dict[str, dict[str, Any]] = {}
        self.lines: dict[str, bytes] = {}  # a known text's or part's entry line, once made
        # the pieces of policies (:meth:`policy`), by their text: a rule -> its data; the
        # items before a spec and its "spec:" line -> those items; a run of a spec's other
        # items -> them; what follows a spec's last rule -> (the spec's, the document's items)
        self.rules: dict[str, dict[str, Any]] = {}
        self.heads: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.tails: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    def checked(self, text: str, data: dict[str, Any] | _Offer) -> dict[str, Any] | None:
        """The document ``data`` (or the one offered, read only when needed) when it writes
        back to exactly ``text``, else None; a policy checked in parts (:meth:`policy`, with
        ``data`` offering the pieces not known yet). When that fails, ``data`` itself is
        written back and compared."""
        if _SECTION_HEADS[0] in text or _SECTION_HEADS[1] in text:
            with contextlib.suppress(TypeError, ValueError, RecursionError):
                found = self.policy(text, data)
                if found is not None:
                    return found
        if type(data) is _Offer:
            data = data.read()
        if type(data) is not dict:
            return None
        return data if _written(data) == text else None

    def policy(self, text: str, candidate: dict[str, Any] | _Offer | None = None
               ) -> dict[str, Any] | None:
        """The policy that writes back to exactly ``text``, put together from the pieces of
        its text: the items before its spec (and the spec's head), the runs of the spec's
        other items between its rule sections (``egress:``, ``ingress:``), each rule, what
        follows the last rule. A piece whose text is known (it wrote back from a piece of an
        earlier policy) is that piece's data; any other is ``candidate``'s piece in the same
        place, written and compared, and known from then on (when the whole checks out).
        None when a piece is neither known nor written by ``candidate``.

        In a fleet the pieces recur (the same requirement renders the same rules, subject and
        metadata into many clusters): a policy whose every piece is known is checked by
        looking its pieces' texts up, without a candidate (no cache entry is decoded, no text
        is written). Sound however the text is cut (a guess: each piece up to the next line
        of the writer's layout that ends it): the pieces are the text, one after the other,
        and the policy put together from them writes each of them in turn
        (:func:`~meshplan.yamltext.mapping_text`: a mapping's text is its items' texts in
        order; a nonempty list value's is its key's head then its items'), a key twice
        refused. ``candidate``: an :class:`_Offer` is read when a piece is not known."""
        pieces = _policy_pieces(candidate) if type(candidate) is dict else None
        offer = candidate if type(candidate) is _Offer else None
        pos = _spec_start(text)
        if pos < 0:
            return None
        learnt: list[tuple[dict[str, Any], str, Any]] = []
        piece = text[:pos]
        before = self.heads.get(piece)
        if before is None:
            if pieces is None and (pieces := _offered_pieces(offer)) is None:
                return None
            before = pieces[0]
            if mapping_text(before, "") + nested_head("spec", "") != piece:
                return None
            learnt.append((self.heads, piece, before))
        spec: dict[str, Any] = {}
        size = 0  # items put in the spec
        index = 0  # rule sections read
        rules_known, runs_known = self.rules, self.runs
        while (found := _SECTION.search(text, pos)) is not None:
            piece = text[pos:found.start()]
            run = runs_known.get(piece)
            if run is None:
                if pieces is None and (pieces := _offered_pieces(offer)) is None:
                    return None
                if index >= len(pieces[2]):
                    return None
                run = pieces[1][index]
                if mapping_text(run, "  ") != piece:
                    return None
                learnt.append((runs_known, piece, run))
            key = found.group(1)
            if found.group() != nested_head(key, "  "):
                return None
            pos = found.end()
            rules: list[Any] = []
            while text.startswith("  - ", pos):
                item_end = _ITEM_END.search(text, pos)
                end = item_end.start() + 1 if item_end is not None else len(text)
                piece = text[pos:end]
                rule = rules_known.get(piece)
                if rule is None:
                    if pieces is None and (pieces := _offered_pieces(offer)) is None:
                        return None
                    offered = pieces[2][index][1] if index < len(pieces[2]) else []
                    if len(rules) >= len(offered):
                        return None
                    rule = offered[len(rules)]
                    if type(rule) is not dict or sequence_item_text(rule, "  ") != piece:
                        return None
                    learnt.append((rules_known, piece, rule))
                rules.append(rule)
                pos = end
            if not rules:
                return None
            size += len(run) + 1
            spec.update(run)
            spec[key] = rules
            if len(spec) != size:  # a key twice
                return None
            index += 1
        piece = text[pos:]
        tail = self.tails.get(piece)
        if tail is None:
            if pieces is None and (pieces := _offered_pieces(offer)) is None:
                return None
            if index >= len(pieces[1]):
                return None
            tail = (pieces[1][index], pieces[3])
            if mapping_text(tail[0], "  ") + mapping_text(tail[1], "") != piece:
                return None
            learnt.append((self.tails, piece, tail))
        run, after = tail
        size += len(run)
        spec.update(run)
        if len(spec) != size or not spec:  # "spec:" then no items is not how {} is written
            return None
        document = dict(before)
        if "spec" in document:
            return None
        document["spec"] = spec
        size = len(document) + len(after)
        document.update(after)
        if len(document) != size:
            return None
        for memo, piece, value in learnt:
            memo[piece] = value
        return document

    def entry_line(self, text: str, data: dict[str, Any]) -> bytes:
        """The line of an entry (:func:`entry_of`) that holds ``data``, the known document of
        ``text`` (made once for a small one: the same Service copy recurs in many clusters'
        files)."""
        line = self.lines.get(text)
        if line is None:
            line = _entry_line(data)
            if len(text) <= MAX_KNOWN_TEXT:
                self.lines[text] = line
        return line

    def parts(self, body: str) -> Parts:
        """``body`` (a file's text after its leading comment lines) cut at its "---" lines:
        the writer's texts of its documents when it is in the writer's layout (else the
        parts are checked and fail)."""
        if not body:
            return Parts(self, [])
        pieces = body.split("\n---\n")
        return Parts(self, [p + "\n" for p in pieces[:-1]] + pieces[-1:])


class _Offer:
    """A candidate document not read yet, read when its text is not known by then: a line of
    an entry (``line``), else the document's text in the writer's layout."""

    __slots__ = ("data", "line", "quoted", "text")

    def __init__(self, line: bytes | None, text: str, quoted: QuotedScalars | None) -> None:
        self.line = line
        self.text = text
        self.quoted = quoted
        self.data: Any = _NOT_JSON  # once read: what was (None: nothing)

    def read(self) -> Any:
        """The document offered (read once), or None when there is none."""
        if self.data is _NOT_JSON:
            if self.line is not None:
                data = _load(self.line)
                self.data = None if data is _NOT_JSON else data
            else:
                one = laid_out_documents(self.text, self.quoted)
                self.data = one[0] if one is not None and len(one) == 1 else None
        return self.data


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
        self.known = KnownDocuments()  # small documents and policy pieces read so far, by text
        self.known_files = 0  # files whose every document was known
        # relpath -> (its bytes, what documents() gave): read before being asked for
        self.ahead: dict[str, tuple[bytes, tuple[list[Document], list[Diagnostic]]]] = {}

    def read_ahead(self, relpath: str, raw: bytes
                   ) -> tuple[list[Document], list[Diagnostic]]:
        """Read the file now, for :meth:`documents` to give when asked for it (with these
        bytes), once: ``meshplan verify`` reads the rendered tree while its inputs are being
        checked in another process (:func:`meshplan.pipeline.verify_repository`)."""
        found = self._read(relpath, raw)
        self.ahead[relpath] = (raw, found)
        return found

    def documents(self, relpath: str, raw: bytes) -> tuple[list[Document], list[Diagnostic]]:
        """Documents and problems of the file ``relpath`` (as messages name it), exactly as
        :func:`parse_yaml` reads them, positions included."""
        ahead = self.ahead.pop(relpath, None)
        if ahead is not None and ahead[0] == raw:
            return ahead[1]
        return self._read(relpath, raw)

    def _read(self, relpath: str, raw: bytes) -> tuple[list[Document], list[Diagnostic]]:
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
        every file is read: those still in use stay with their documents. Files read ahead
        and not asked for are dropped too."""
        self.known = KnownDocuments()
        self.ahead = {}

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
