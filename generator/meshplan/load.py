"""Stage 1 — load: find the input files, read them safely, parse them keeping positions.

Output: :class:`Document` records (plain data + a table of ``file:line:col`` for every key and
value), plus diagnostics. Nothing here knows what a Domain or a Requirement is.

Safety rules, because inputs come from pull requests:
- only regular files inside the repository are read (a symlink out of it is an error);
- a file larger than :data:`MAX_FILE_BYTES` is refused before it is read;
- text must be UTF-8 (an error names the first bad byte's line and column);
- YAML is composed by a Python composer that bounds nesting and node count (libyaml only
  parses: its C composer recurses without limit), then converted here, node by node, under a
  budget, so an alias bomb is an error instead of a hang; duplicate keys, merge keys and tags
  are errors; no arbitrary tags are constructed.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
import yaml.nodes
from ruamel.yaml import YAML as RuamelYAML
from ruamel.yaml.composer import Composer as RuamelComposer
from ruamel.yaml.error import MarkedYAMLError as RuamelMarkedError
from ruamel.yaml.error import YAMLError as RuamelError
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

try:  # libyaml's event parser (fast); the composer above it stays Python (see _GuardedComposer)
    from yaml._yaml import CParser as _LibyamlParser
except ImportError:  # PyYAML built without libyaml
    _LibyamlParser = None  # type: ignore[assignment,misc]

from .diagnostics import Diagnostic, Location, error

MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_NODES_PER_FILE = 2_000_000  # nodes visited, aliases counted each time they are expanded
MAX_JSON_NODES = 100_000  # the pure-Python YAML 1.2 parser needs ~50 us per node
MAX_DEPTH = 200

YAML_SUFFIXES = (".yaml", ".yml")
INVENTORY_SUFFIXES = (*YAML_SUFFIXES, ".json")

PathKey = tuple[str | int, ...]
KEY = "<key>"  # appended to a path to address the key itself rather than its value


@dataclass(frozen=True)
class Document:
    """One YAML document: its data and where each part of it was written."""

    file: str  # path relative to the repository, '/'-separated
    index: int  # position of the document in its file (0-based)
    data: Any
    marks: Mapping[PathKey, tuple[int, int]] = field(repr=False, compare=False)

    def location(self, path: PathKey = ()) -> Location:
        """The closest known position for ``path`` (falls back to the nearest parent)."""
        probe = tuple(path)
        while True:
            mark = self.marks.get(probe)
            if mark is not None:
                return Location(self.file, mark[0], mark[1])
            if not probe:
                return Location(self.file, 1, 1)
            probe = probe[:-1]

    def key_location(self, path: PathKey) -> Location:
        """Position of the key that holds ``path`` (or of the value if unknown)."""
        mark = self.marks.get((*path, KEY))
        if mark is not None:
            return Location(self.file, mark[0], mark[1])
        return self.location(path)


@dataclass(frozen=True)
class Inputs:
    """Everything read from a repository, ready for validation."""

    inventory: tuple[Document, ...]
    requirements: tuple[tuple[str, Document], ...]  # (owning domain folder, document)


def format_path(path: PathKey) -> str:
    """``("spec", "clusters", 0, "name")`` -> ``spec.clusters[0].name``."""
    out = ""
    for part in path:
        if part == KEY:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --------------------------------------------------------------------------- files


def load_repository(repo: Path) -> tuple[Inputs, list[Diagnostic]]:
    """Read ``inventory/`` and ``requirements/<domain>/`` of ``repo``."""
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
    for relpath in _input_files(root, "inventory", INVENTORY_SUFFIXES, diagnostics):
        docs, problems = read_documents(root, relpath)
        inventory.extend(docs)
        diagnostics.extend(problems)

    for relpath in _input_files(root, "requirements", YAML_SUFFIXES, diagnostics):
        parts = relpath.split("/")
        if len(parts) < 3:
            diagnostics.append(error(Location(relpath, 1, 1), "", "expected requirement files "
                                     "inside a folder named after their domain "
                                     "(requirements/<domain>/...), found it directly in "
                                     "requirements/"))
            continue
        docs, problems = read_documents(root, relpath)
        requirements.extend((parts[1], doc) for doc in docs)
        diagnostics.extend(problems)
    return Inputs(tuple(inventory), tuple(requirements)), diagnostics


def _input_files(
    root: Path, top: str, suffixes: tuple[str, ...], diagnostics: list[Diagnostic]
) -> Iterator[str]:
    """Relative paths of input files under ``root/top``, sorted, hidden entries skipped."""
    base = root / top
    if not base.is_dir():
        return
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        for name in filenames:
            if name.startswith(".") or not name.endswith(suffixes):
                continue
            path = here / name
            relpath = path.relative_to(root).as_posix()
            problem = _unsafe_path_problem(root, path)
            if problem:
                diagnostics.append(error(Location(relpath, 1, 1), "", problem))
                continue
            found.append(relpath)
        for name in dirnames:
            if (here / name).is_symlink():
                diagnostics.append(error(Location((here / name).relative_to(root).as_posix()), "",
                                         "expected a real folder, found a symbolic link "
                                         "(folders behind links are not read)"))
    yield from sorted(found)


def _unsafe_path_problem(root: Path, path: Path) -> str | None:
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "expected a readable file, found a broken or looping symbolic link"
    if not real.is_relative_to(root):
        return f"expected a file inside the repository, found a symbolic link to {real}"
    if not real.is_file():
        return "expected a regular file, found something else (device, socket or folder)"
    size = real.stat().st_size
    if size > MAX_FILE_BYTES:
        return (f"expected a file of at most {MAX_FILE_BYTES // (1024 * 1024)} MiB "
                f"({MAX_FILE_BYTES:,} bytes), found {size:,} bytes")
    return None


def read_documents(root: Path, relpath: str) -> tuple[list[Document], list[Diagnostic]]:
    """Read and parse one input file (already checked by :func:`_unsafe_path_problem`)."""
    try:
        raw = (root / relpath).read_bytes()
    except OSError as exc:
        return [], [error(Location(relpath, 1, 1), "", "expected a readable file, found "
                          f"{exc.strerror or type(exc).__name__}")]
    text_or_problem = decode_utf8(relpath, raw)
    if isinstance(text_or_problem, Diagnostic):
        return [], [text_or_problem]
    if relpath.endswith(".json"):
        return parse_json_like(relpath, text_or_problem)
    return parse_yaml(relpath, text_or_problem)


def decode_utf8(relpath: str, raw: bytes) -> str | Diagnostic:
    body = raw.removeprefix(codecs.BOM_UTF8)  # a byte-order mark is allowed, and no column
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = body[: exc.start]
        line = before.count(b"\n") + 1
        # characters, not bytes, like every other column (what precedes the bad byte is valid)
        column = len(before[before.rfind(b"\n") + 1:].decode("utf-8")) + 1
        return error(Location(relpath, line, column), "",
                     f"expected UTF-8 text, found the byte 0x{body[exc.start]:02x} "
                     "that is not valid UTF-8")


# --------------------------------------------------------------------------- parsing


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


class _GuardedRuamelComposer(RuamelComposer):
    """ruamel.yaml's composer with a node budget and a depth limit (its own raises late)."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.budget = _Budget(MAX_JSON_NODES)
        self.warn_double_anchors = False  # a redefined anchor is valid YAML, not a warning

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.budget.enter(self.parser.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.budget.leave()


def parse_yaml(relpath: str, text: str) -> tuple[list[Document], list[Diagnostic]]:
    """Parse a (multi-document) YAML text safely (libyaml's parser when present)."""
    loader = _YAML_LOADER(text)
    try:
        return _compose_all(relpath, _pyyaml_nodes(loader), _pyyaml_scalar(loader), text)
    finally:
        loader.dispose()


def parse_json_like(relpath: str, text: str) -> tuple[list[Document], list[Diagnostic]]:
    """Parse JSON with a YAML 1.2 parser (ruamel.yaml).

    JSON is a subset of YAML 1.2, not of the YAML 1.1 that PyYAML implements (tabs, for one,
    cannot separate tokens in YAML 1.1); the thesis' DomainRequest files are tab-indented and
    carry unquoted values, which YAML 1.2 reads as plain strings.
    """
    parser = RuamelYAML(typ="safe", pure=True)
    parser.Composer = _GuardedRuamelComposer
    constructor = parser.constructor

    def scalar(node: Any) -> Any:
        return constructor.construct_object(node, deep=True)

    return _compose_all(relpath, parser.compose_all(text), scalar, text)


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
    relpath: str, nodes: Iterator[Any], scalar: Callable[[Any], Any], text: str = ""
) -> tuple[list[Document], list[Diagnostic]]:
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
            builder = _TreeBuilder(relpath, scalar)
            builder.budget = budget
            data = builder.build(node, (), 0)
            budget -= expanded
            diagnostics.extend(builder.diagnostics)
            if data is not None and not builder.fatal:
                documents.append(Document(relpath, index, data, builder.marks))
            index += 1
    except (yaml.YAMLError, RuamelError) as exc:
        diagnostics.append(_syntax_error(relpath, exc, text))
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


def _syntax_error(relpath: str, exc: Exception, text: str = "") -> Diagnostic:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    detail = f"{context}: {problem}" if context else str(problem)
    lines = text.split("\n")
    if mark is not None and 0 <= mark.line < len(lines) and \
            lines[mark.line][mark.column:mark.column + 1] == "\t":
        detail += "; a tab cannot indent YAML, use spaces"
    kind = "JSON/YAML 1.2" if isinstance(exc, (RuamelError, RuamelMarkedError)) else "YAML"
    return error(Location(relpath, line, column), "", f"expected valid {kind}, found a syntax "
                 f"error ({detail})")


_PLAIN_TAGS = {"sequence": "tag:yaml.org,2002:seq", "mapping": "tag:yaml.org,2002:map"}
_KIND_WORDS = {"sequence": "list", "mapping": "mapping"}


class _TreeBuilder:
    """Converts a composed node graph into plain data, recording positions on the way."""

    def __init__(self, relpath: str, scalar: Callable[[Any], Any]) -> None:
        self.relpath = relpath
        self.scalar = scalar
        self.marks: dict[PathKey, tuple[int, int]] = {}
        self.diagnostics: list[Diagnostic] = []
        self.budget = MAX_NODES_PER_FILE
        self.fatal = False
        self._open: set[int] = set()  # collections being built (an alias to one is recursive)

    def _here(self, node: Any) -> Location:
        return Location(self.relpath, node.start_mark.line + 1, node.start_mark.column + 1)

    def _stop(self, node: Any, path: PathKey, message: str) -> None:
        if not self.fatal:
            self.diagnostics.append(error(self._here(node), format_path(path), message))
        self.fatal = True

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
        except (yaml.YAMLError, RuamelError, ValueError, OverflowError) as exc:
            # ValueError: e.g. an integer of more than 4,300 digits (Python's conversion limit)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            self._stop(node, path, f"expected a plain YAML value, found {node.tag!r} ({problem})")
            return None

    def _mapping(self, node: Any, path: PathKey, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.id != "scalar":
                self._stop(key_node, path, "expected a text key, found a list or mapping as key")
                return result
            if key_node.tag == "tag:yaml.org,2002:merge":
                self._stop(key_node, path, "expected ordinary keys, found a YAML merge key '<<' "
                           "(not supported: write the keys out)")
                return result
            key = self._scalar(key_node, path)
            if self.fatal:
                return result
            if not isinstance(key, (str, int, bool, float)) and key is not None:
                self._stop(key_node, path, f"expected a text key, found {key!r}")
                return result
            child: PathKey = (*path, key if isinstance(key, (str, int)) else str(key))
            if key in result:
                first = self.marks.get((*child, KEY), (0, 0))
                self.diagnostics.append(error(
                    self._here(key_node), format_path(child),
                    f"expected each key once, found '{key}' again (first at line {first[0]})"))
                continue
            self.marks[(*child, KEY)] = (key_node.start_mark.line + 1,
                                         key_node.start_mark.column + 1)
            result[key] = self.build(value_node, child, depth + 1)
        return result
