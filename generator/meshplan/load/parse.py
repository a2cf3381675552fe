"""YAML (and JSON as YAML 1.2) -> :class:`Document` records with every node's position.

Safe by construction: nesting and node count are bounded while composing (libyaml only
parses; its C composer recurses without limit), aliases are sized under a budget (an alias
bomb is an error, not a hang), duplicate keys, merge keys and tags are errors, no arbitrary
tag is constructed. Files without anchors, aliases and tags take a one-pass path over
libyaml's events under the same limits, with the same results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import yaml
import yaml.nodes
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

try:  # libyaml's event parser (fast); the composer above it stays Python (see _GuardedComposer)
    from yaml._yaml import CParser as _LibyamlParser
except ImportError:  # PyYAML built without libyaml
    _LibyamlParser = None  # type: ignore[assignment,misc]

from ..diagnostics import Diagnostic, Location, error
from .document import KEY, Document, PathKey, format_path

HAS_LIBYAML = _LibyamlParser is not None
YAML_ERRORS: tuple[type[Exception], ...] = (yaml.YAMLError,)
MAX_NODES_PER_FILE = 2_000_000  # nodes visited, aliases counted each time they are expanded
MAX_JSON_NODES = 100_000  # the pure-Python YAML 1.2 parser needs ~50 us per node
MAX_DEPTH = 200


class _LimitExceeded(Exception):
    """Raised while composing when a file nests too deeply or has too many nodes."""

    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


class _Budget:
    """Nodes a file may still compose, and the current nesting depth."""

    def __init__(self, nodes: int) -> None:
        self.limit = nodes
        self.nodes_left = nodes
        self.depth = 0

    def enter(self, mark: Any) -> None:
        self.nodes_left -= 1
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _LimitExceeded(mark, f"expected at most {MAX_DEPTH} levels of nesting, "
                                 "found more")
        if self.nodes_left < 0:
            raise _LimitExceeded(mark, f"expected at most {self.limit:,} YAML nodes in one file, "
                                 "found more (split the file)")

    def leave(self) -> None:
        self.depth -= 1


class _GuardedComposer(Composer):
    """PyYAML's Python composer with a node budget and a depth limit.

    libyaml's own composer is C code that recurses without limit (a deeply nested file crashes
    the interpreter) and composes any number of nodes; its event parser is safe and fast.
    """

    budget: _Budget

    def compose_node(self, parent: yaml.nodes.Node | None, index: int) -> yaml.nodes.Node | None:
        events: Any = self
        self.budget.enter(events.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.budget.leave()


class _PureYamlLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser,
                      _GuardedComposer, SafeConstructor, Resolver):
    def __init__(self, text: str) -> None:
        yaml.reader.Reader.__init__(self, text)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        _GuardedComposer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.budget = _Budget(MAX_NODES_PER_FILE)


_YAML_LOADER: type[Any] = _PureYamlLoader
if _LibyamlParser is not None:

    class _LibyamlLoader(_GuardedComposer, _LibyamlParser, SafeConstructor, Resolver):
        def __init__(self, text: str) -> None:
            _LibyamlParser.__init__(self, text)
            _GuardedComposer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            self.budget = _Budget(MAX_NODES_PER_FILE)

    _YAML_LOADER = _LibyamlLoader


def parse_yaml(relpath: str, text: str) -> tuple[list[Document], list[Diagnostic]]:
    """Parse a (multi-document) YAML text safely (libyaml's parser when present).

    Files without anchors, aliases and tags (nearly all) are built in one pass straight from
    libyaml's events (:class:`_EventBuilder`); the others go through the composer, which
    handles those. Both give the same documents, marks and diagnostics.
    """
    if _LibyamlParser is not None and _YAML_LOADER is not _PureYamlLoader:
        try:
            return _EventBuilder(relpath, text).parse()
        except _NeedsComposer:
            pass
    return _parse_composed(relpath, text)


def _parse_composed(relpath: str, text: str) -> tuple[list[Document], list[Diagnostic]]:
    """Compose nodes, size them with aliases expanded, then build data (any YAML file)."""
    loader = _YAML_LOADER(text)
    try:
        return _compose_all(relpath, _pyyaml_nodes(loader), _pyyaml_scalar(loader), text,
                            YAML_ERRORS, "YAML")
    finally:
        loader.dispose()


def parse_json_like(relpath: str, text: str) -> tuple[list[Document], list[Diagnostic]]:
    """Parse JSON with a YAML 1.2 parser (ruamel.yaml).

    JSON is a subset of YAML 1.2, not of the YAML 1.1 that PyYAML implements (tabs, for one,
    cannot separate tokens in YAML 1.1); the thesis' DomainRequest files are tab-indented and
    carry unquoted values, which YAML 1.2 reads as plain strings. ruamel.yaml is imported here,
    when a JSON file is read, not at start-up (:mod:`.yaml12`).
    """
    from .yaml12 import RUAMEL_ERRORS, json_parser

    parser = json_parser(lambda: _Budget(MAX_JSON_NODES))
    constructor = parser.constructor

    def scalar(node: Any) -> Any:
        return constructor.construct_object(node, deep=True)

    return _compose_all(relpath, parser.compose_all(text), scalar, text, RUAMEL_ERRORS,
                        "JSON/YAML 1.2")


def _pyyaml_nodes(loader: Any) -> Iterator[Any]:
    while loader.check_node():
        yield loader.get_node()


def _pyyaml_scalar(loader: Any) -> Callable[[Any], Any]:
    def scalar(node: Any) -> Any:
        if node.tag == "tag:yaml.org,2002:str":  # the common case, no constructor round trip
            return node.value
        return loader.construct_object(node, deep=True)

    return scalar


def _compose_all(
    relpath: str, nodes: Iterator[Any], scalar: Callable[[Any], Any], text: str,
    syntax_errors: tuple[type[Exception], ...], language: str,
) -> tuple[list[Document], list[Diagnostic]]:
    """``syntax_errors``: the parser's exceptions for bad input; ``language``: its name."""
    documents: list[Document] = []
    diagnostics: list[Diagnostic] = []
    index = 0
    budget = MAX_NODES_PER_FILE  # for the whole file, aliases counted each time they expand
    try:
        for node in nodes:
            expanded = _expanded_size(node, budget)
            if expanded > budget:
                diagnostics.append(error(
                    Location(relpath, node.start_mark.line + 1, node.start_mark.column + 1), "",
                    f"expected at most {MAX_NODES_PER_FILE:,} YAML nodes once aliases are "
                    "expanded, found more (aliases expand to too much data: a YAML alias bomb?)"))
                break
            builder = _TreeBuilder(relpath, scalar, syntax_errors)
            builder.budget = budget
            data = builder.build(node, (), 0)
            budget -= expanded
            diagnostics.extend(builder.diagnostics)
            if data is not None and not builder.fatal:
                documents.append(Document(relpath, index, data, builder.marks))
            index += 1
    except syntax_errors as exc:
        diagnostics.append(_syntax_error(relpath, exc, text, language))
    except _LimitExceeded as exc:
        line, column = (exc.mark.line + 1, exc.mark.column + 1) if exc.mark else (1, 1)
        diagnostics.append(error(Location(relpath, line, column), "", exc.message))
    except RecursionError:
        diagnostics.append(error(Location(relpath, 1, 1), "", f"expected at most {MAX_DEPTH} "
                                 "levels of nesting, found a document nested too deeply to read"))
    return documents, diagnostics


def _expanded_size(root: Any, limit: int) -> int:
    """Nodes ``root`` has once aliases are expanded, counted up to just past ``limit``.

    Each distinct node is sized once, so an alias bomb is measured in microseconds instead of
    being expanded. A node inside its own anchor counts 0 here; the builder stops it by depth.
    """
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 0
        total = 1
        if node.id == "sequence":
            total += sum(size(child) for child in node.value)
        elif node.id == "mapping":
            total += sum(size(value) for _key, value in node.value)
        total = min(total, limit + 1)
        sizes[id(node)] = total
        return total

    return size(root)


def _syntax_error(relpath: str, exc: Exception, text: str = "", language: str = "YAML"
                  ) -> Diagnostic:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    detail = f"{context}: {problem}" if context else str(problem)
    lines = text.split("\n")
    if mark is not None and 0 <= mark.line < len(lines) and \
            lines[mark.line][mark.column:mark.column + 1] == "\t":
        detail += "; a tab cannot indent YAML, use spaces"
    return error(Location(relpath, line, column), "", f"expected valid {language}, found a syntax "
                 f"error ({detail})")


_PLAIN_TAGS = {"sequence": "tag:yaml.org,2002:seq", "mapping": "tag:yaml.org,2002:map"}
_KIND_WORDS = {"sequence": "list", "mapping": "mapping"}


_NESTED_KEY = "expected a text key, found a list or mapping as key"
_MERGE_KEY = ("expected ordinary keys, found a YAML merge key '<<' "
              "(not supported: write the keys out)")


class _DataBuilder:
    """What both ways of building data share: the marks, the problems, and the key rules.

    ``item`` below is a node or an event: anything with a ``start_mark``. A problem that
    makes the rest of the document meaningless is reported once and sets ``fatal``.
    """

    def __init__(self, relpath: str) -> None:
        self.relpath = relpath
        self.marks: dict[PathKey, tuple[int, int]] = {}
        self.diagnostics: list[Diagnostic] = []
        self.fatal = False

    def _here(self, mark: Any) -> Location:
        return Location(self.relpath, *_position(mark))

    def _stop(self, item: Any, path: PathKey, message: str) -> None:
        if not self.fatal:
            self.diagnostics.append(error(self._here(item.start_mark), format_path(path),
                                          message))
        self.fatal = True

    def _admit_key(self, item: Any, key: Any, path: PathKey, result: dict[Any, Any]
                   ) -> PathKey | None:
        """The child path of a mapping key, or None: a key of the wrong type (fatal) or one
        already in ``result`` (reported; its value is skipped)."""
        if not isinstance(key, (str, int, bool, float)) and key is not None:
            self._stop(item, path, f"expected a text key, found {key!r}")
            return None
        child: PathKey = (*path, key if isinstance(key, (str, int)) else str(key))
        if key in result:
            first = self.marks.get((*child, KEY), (0, 0))
            self.diagnostics.append(error(
                self._here(item.start_mark), format_path(child),
                f"expected each key once, found '{key}' again (first at line {first[0]})"))
            return None
        self.marks[(*child, KEY)] = _position(item.start_mark)
        return child


class _TreeBuilder(_DataBuilder):
    """Converts a composed node graph into plain data, recording positions on the way."""

    def __init__(self, relpath: str, scalar: Callable[[Any], Any],
                 syntax_errors: tuple[type[Exception], ...] = ()) -> None:
        super().__init__(relpath)
        self.scalar = scalar
        # A value its constructor refuses: ValueError e.g. for an integer of more than 4,300
        # digits (Python's conversion limit); LookupError from PyYAML's constructors on e.g.
        # "!!int ''" or "!!bool maybe"; the parser's own errors.
        self.scalar_errors: tuple[type[Exception], ...] = (
            yaml.YAMLError, *syntax_errors, ValueError, OverflowError, LookupError)
        self.budget = MAX_NODES_PER_FILE
        self._open: set[int] = set()  # collections being built (an alias to one is recursive)

    def build(self, node: Any, path: PathKey, depth: int) -> Any:
        if self.fatal:
            return None
        self.budget -= 1
        if self.budget < 0:
            self._stop(node, path, f"expected at most {MAX_NODES_PER_FILE:,} YAML nodes, found "
                       "more (aliases expand to too much data: a YAML alias bomb?)")
            return None
        if depth > MAX_DEPTH:
            self._stop(node, (), f"expected at most {MAX_DEPTH} levels of nesting, found more")
            return None
        self.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        kind = node.id
        if kind == "scalar":
            return self._scalar(node, path)
        if node.tag != _PLAIN_TAGS[kind]:
            self._stop(node, path, f"expected a plain YAML {_KIND_WORDS[kind]}, found the tag "
                       f"{node.tag!r} (tags are not supported)")
            return None
        if id(node) in self._open:
            self._stop(node, path, "expected data that ends, found an alias inside its own "
                       "anchor (a recursive structure)")
            return None
        self._open.add(id(node))
        try:
            if kind == "sequence":
                return [self.build(child, (*path, i), depth + 1)
                        for i, child in enumerate(node.value)]
            return self._mapping(node, path, depth)
        finally:
            self._open.discard(id(node))

    def _scalar(self, node: Any, path: PathKey) -> Any:
        try:
            return self.scalar(node)
        except self.scalar_errors as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            self._stop(node, path, f"expected a plain YAML value, found {node.tag!r} ({problem})")
            return None

    def _mapping(self, node: Any, path: PathKey, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.id != "scalar":
                self._stop(key_node, path, _NESTED_KEY)
                return result
            if key_node.tag == _MERGE_TAG:
                self._stop(key_node, path, _MERGE_KEY)
                return result
            key = self._scalar(key_node, path)
            if self.fatal:
                return result
            child = self._admit_key(key_node, key, path, result)
            if self.fatal:
                return result
            if child is not None:  # None: a repeated key, already reported
                result[key] = self.build(value_node, child, depth + 1)
        return result


# --------------------------------------------------------------------------- one-pass parsing


class _NeedsComposer(Exception):
    """The file has an anchor, an alias or a tag: :func:`_parse_composed` handles those."""


_MISSING = object()
_PLAIN_CACHE: dict[str, Any] = {}  # plain scalar text -> its value (values are immutable)
_PLAIN_CACHE_SIZE = 100_000
_PLAIN_CACHE_TEXT = 100  # characters
_RESOLVER: Any = Resolver()  # PyYAML's implicit types, as SafeLoader resolves them
_MERGE_TAG = "tag:yaml.org,2002:merge"
_AliasEvent = yaml.AliasEvent
_ScalarEvent = yaml.ScalarEvent
_SequenceStartEvent = yaml.SequenceStartEvent
_SequenceEndEvent = yaml.SequenceEndEvent
_MappingStartEvent = yaml.MappingStartEvent
_MappingEndEvent = yaml.MappingEndEvent


class _EventBuilder(_DataBuilder):
    """Builds data and marks in one pass over libyaml's events, under the composer's limits.

    Equivalent to :func:`_parse_composed` for files without anchors, aliases and tags (it
    raises :class:`_NeedsComposer` at the first one): every node counts against the file's
    budget and nesting depth when its first event arrives, exactly when ``_GuardedComposer``
    would count it; without aliases the expanded size never exceeds that count, so it is not
    measured. A problem that ends a document in :class:`_TreeBuilder` ("fatal") makes the
    rest of that document be read without building, because a syntax error or a limit later
    in the document still wins over it, as when the whole document is composed first.
    """

    def __init__(self, relpath: str, text: str) -> None:
        super().__init__(relpath)
        self.text = text
        self.events: Any = _LibyamlParser(text)
        self.constructor = SafeConstructor()
        self.nodes_left = MAX_NODES_PER_FILE
        self.depth = 0  # marks, diagnostics and fatal are per document: reset in parse()

    def parse(self) -> tuple[list[Document], list[Diagnostic]]:
        documents: list[Document] = []
        diagnostics: list[Diagnostic] = []
        events = self.events
        index = 0
        try:
            events.get_event()  # stream start
            while type(events.get_event()) is not yaml.StreamEndEvent:  # a document starts
                self.marks, self.diagnostics, self.fatal = {}, [], False
                data = self._node(events.get_event(), (), True)
                events.get_event()  # document end: only now is the document complete
                diagnostics.extend(self.diagnostics)
                if data is not None and not self.fatal:
                    documents.append(Document(self.relpath, index, data, self.marks))
                index += 1
        except yaml.YAMLError as exc:
            diagnostics.append(_syntax_error(self.relpath, exc, self.text))
        except _LimitExceeded as exc:
            diagnostics.append(error(self._here(exc.mark), "", exc.message))
        except RecursionError:  # only if called with little stack left: depth is bounded
            diagnostics.append(error(Location(self.relpath, 1, 1), "", f"expected at most "
                                     f"{MAX_DEPTH} levels of nesting, found a document nested "
                                     "too deeply to read"))
        finally:
            events.dispose()
        return documents, diagnostics

    def _over_limit(self, event: Any) -> None:
        """Raise for a node past a limit (nesting first, as ``_Budget.enter``). A node is
        counted by its first event as ``_Budget.enter`` counts it, inlined in :meth:`_node`
        and :meth:`_mapping` (the hot paths: keep them in step)."""
        if self.depth > MAX_DEPTH:
            raise _LimitExceeded(event.start_mark, f"expected at most {MAX_DEPTH} levels of "
                                 "nesting, found more")
        raise _LimitExceeded(event.start_mark, f"expected at most {MAX_NODES_PER_FILE:,} "
                             "YAML nodes in one file, found more (split the file)")

    def _node(self, event: Any, path: PathKey, live: bool) -> Any:
        """Read the node that ``event`` starts; build it (data and marks) only if ``live``: not
        after a fatal problem in its document, not as the value of a repeated key."""
        # counted as _Budget.enter counts a node (see _over_limit)
        self.nodes_left -= 1
        self.depth += 1
        if self.depth > MAX_DEPTH or self.nodes_left < 0:
            self._over_limit(event)
        kind = type(event)
        if kind is _AliasEvent or event.anchor is not None or event.tag is not None:
            raise _NeedsComposer
        live = live and not self.fatal
        if live:
            mark = event.start_mark
            self.marks.setdefault(path, (mark.line + 1, mark.column + 1))
        if kind is _ScalarEvent:
            value: Any = None
            if live:
                # _scalar's common cases inlined: quoted text, a plain scalar met before
                value = event.value
                if event.implicit[0]:
                    value = _PLAIN_CACHE.get(value, _MISSING)
                    if value is _MISSING:
                        value = self._scalar(event, path)
        elif kind is _SequenceStartEvent:
            value = self._sequence(path, live)
        else:
            value = self._mapping(path, live)
        self.depth -= 1
        return value

    def _sequence(self, path: PathKey, live: bool) -> list[Any] | None:
        # each loop fetches the next event once (no peeking): an item's start, or the end
        get_event = self.events.get_event
        node = self._node
        items: list[Any] = []
        while type(event := get_event()) is not _SequenceEndEvent:
            items.append(node(event, (*path, len(items)), live))
        return items if live else None

    def _mapping(self, path: PathKey, live: bool) -> dict[Any, Any] | None:
        get_event = self.events.get_event
        marks = self.marks
        result: dict[Any, Any] = {}
        while (kind := type(key_event := get_event())) is not _MappingEndEvent:
            # the key counts as a node (see _over_limit)
            self.nodes_left -= 1
            self.depth += 1
            if self.depth > MAX_DEPTH or self.nodes_left < 0:
                self._over_limit(key_event)
            if kind is _AliasEvent or key_event.anchor is not None or \
                    key_event.tag is not None:
                raise _NeedsComposer
            found: tuple[Any, PathKey] | None = None
            if live and not self.fatal:
                key: Any = _MISSING
                if kind is _ScalarEvent:  # the common case of _key, inlined: a new text key
                    key = key_event.value
                    if key_event.implicit[0]:
                        key = _PLAIN_CACHE.get(key, _MISSING) if key != "<<" else _MISSING
                if type(key) is str and key not in result:
                    child = (*path, key)
                    mark = key_event.start_mark
                    marks[(*child, KEY)] = (mark.line + 1, mark.column + 1)
                    found = (key, child)
                else:
                    found = self._key(key_event, path, result)
            if kind is _SequenceStartEvent:  # a list as key: read it
                self._sequence(path, False)
            elif kind is _MappingStartEvent:
                self._mapping(path, False)
            self.depth -= 1  # the key is complete
            if found is None:  # no key to build (a problem, or a repeated key): read the value
                self._node(get_event(), path, False)
                continue
            result[found[0]] = self._node(get_event(), found[1], True)
        return result if live else None

    def _key(
        self, event: Any, path: PathKey, result: dict[Any, Any]
    ) -> tuple[Any, PathKey] | None:
        """A mapping key's value and its child path, or None (a problem, a repeated key)."""
        if type(event) is not yaml.ScalarEvent:
            self._stop(event, path, _NESTED_KEY)
            return None
        if event.implicit[0] and event.value == "<<" and \
                _RESOLVER.resolve(yaml.ScalarNode, "<<", (True, False)) == _MERGE_TAG:
            self._stop(event, path, _MERGE_KEY)
            return None
        key = self._scalar(event, path)
        if self.fatal:
            return None
        child = self._admit_key(event, key, path, result)
        return None if child is None else (key, child)

    def _scalar(self, event: Any, path: PathKey) -> Any:
        value = event.value
        if not event.implicit[0]:  # quoted or block scalar without a tag: always text
            return value
        # a plain scalar's type comes from regular expressions (PyYAML's SafeLoader rules);
        # the same names and numbers recur in every file, so their values are remembered
        known = _PLAIN_CACHE.get(value, _MISSING)
        if known is not _MISSING:
            return known
        tag = _RESOLVER.resolve(yaml.ScalarNode, value, (True, False))
        if tag == "tag:yaml.org,2002:str":
            data: Any = value
        else:
            node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark)
            try:
                data = self.constructor.construct_object(node, deep=True)
            except (yaml.YAMLError, ValueError, OverflowError, LookupError) as exc:
                # as in _TreeBuilder._scalar: huge integers, PyYAML's constructor bugs
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                self._stop(event, path, f"expected a plain YAML value, found {tag!r} "
                           f"({problem})")
                return None
            self.constructor.constructed_objects.clear()
        if len(value) <= _PLAIN_CACHE_TEXT:  # names, numbers, booleans repeat; long text not
            if len(_PLAIN_CACHE) >= _PLAIN_CACHE_SIZE:
                _PLAIN_CACHE.clear()
            _PLAIN_CACHE[value] = data
        return data


def _position(mark: Any) -> tuple[int, int]:
    """1-based (line, column) of a libyaml mark."""
    return mark.line + 1, mark.column + 1
