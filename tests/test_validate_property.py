"""Property: whatever is done to valid inputs, ``meshplan validate`` exits 0 or 1, never 3.

Starting from the bundled example (and from a thesis fixture, for the JSON import form), one to
three random mutations are applied to one input file: on the parsed data (drop a key, change a
value's type, rename a key, duplicate a list item, replace a value by text) or on the raw text and
bytes (insert random unicode, truncate at a random byte, alias/anchor/tag-like text, delete or
duplicate a line, break the indentation, non-UTF-8 bytes). Exit 2 would mean the command line is
wrong and exit 3 a bug in meshplan; neither may happen, and no traceback may be printed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.ci import examples
from tests.support.cli import run_validate
from tests.support.repos import THESIS_DIR, copy_example, copy_tree

pytestmark = pytest.mark.slow

Files = dict[str, bytes]
Mutation = Callable[[bytes, st.DataObject], bytes]

SCALARS: list[Any] = [None, True, False, 0, -1, 70000, 3.5, 10**30, "", "x", "*", "Cl_1",
                      "10.0.0.0/33", "TCP:0", [], {}, ["a"], {"k": "v"}, {"service": "*"}]
SNIPPETS = ["*a", "&a", "&a x", "<<: *a", "!!python/object:os.system", "!!binary", "!foo",
            "{", "}", "[", "]", ": ", "- ", "---", "...", "#", "\t", '"', "'", "|", ">",
            "? ", "%YAML 1.1", "\\u0000", "\u00e9", "\u202e", "\U0001f600", "\ufeff",
            "service: \"*\"", "domain: domain9", "cluster: cl9", "exportTo: [\"*\"]"]
KEY_SUFFIXES = ["", "x", "s", "_", "-", "2"]


# --------------------------------------------------------------------------- data mutations


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


def _parent(root: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        root = root[part]
    return root


def _mutate_data(raw: bytes, data: st.DataObject) -> bytes:
    try:
        documents = [d for d in yaml.safe_load_all(raw.decode("utf-8")) if d is not None]
    except (yaml.YAMLError, UnicodeDecodeError):
        return raw  # already broken by an earlier mutation
    if not documents:
        return raw
    doc_index = data.draw(st.integers(0, len(documents) - 1), label="document")
    root = documents[doc_index]
    paths = [p for p in _paths(root) if p]
    if not paths:
        return raw
    path = data.draw(st.sampled_from(paths), label="path")
    parent, last = _parent(root, path), path[-1]
    action = data.draw(st.sampled_from(["drop", "retype", "rename", "duplicate", "text"]),
                       label="action")
    if action == "drop":
        del parent[last]
    elif action == "retype":
        parent[last] = data.draw(st.sampled_from(SCALARS), label="value")
    elif action == "rename" and isinstance(parent, dict):
        suffix = data.draw(st.sampled_from(KEY_SUFFIXES), label="suffix")
        new_key = str(last)[:-1] + suffix if suffix else str(last).upper()
        parent[new_key] = parent.pop(last)
    elif action == "duplicate" and isinstance(parent, list):
        parent.insert(last, parent[last])
    else:
        parent[last] = data.draw(st.text(max_size=30), label="text")
    text = yaml.safe_dump_all(documents, sort_keys=False, allow_unicode=True)
    return text.encode("utf-8")


# --------------------------------------------------------------------------- text mutations


def _insert_text(raw: bytes, data: st.DataObject) -> bytes:
    at = data.draw(st.integers(0, len(raw)), label="at")
    piece = data.draw(st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=20)), label="text")
    return raw[:at] + piece.encode("utf-8") + raw[at:]


def _insert_bytes(raw: bytes, data: st.DataObject) -> bytes:
    at = data.draw(st.integers(0, len(raw)), label="at")
    return raw[:at] + data.draw(st.binary(min_size=1, max_size=4), label="bytes") + raw[at:]


def _truncate(raw: bytes, data: st.DataObject) -> bytes:
    return raw[: data.draw(st.integers(0, len(raw)), label="length")]


def _lines(raw: bytes) -> list[bytes]:
    return raw.splitlines(keepends=True) or [b""]


def _line_edit(raw: bytes, data: st.DataObject) -> bytes:
    lines = _lines(raw)
    i = data.draw(st.integers(0, len(lines) - 1), label="line")
    action = data.draw(st.sampled_from(["delete", "duplicate", "indent", "dedent", "alias",
                                        "anchor"]), label="line action")
    line = lines[i]
    if action == "delete":
        del lines[i]
    elif action == "duplicate":
        lines.insert(i, line)
    elif action == "indent":
        lines[i] = b"  " + line
    elif action == "dedent":
        lines[i] = line[2:] if line.startswith(b"  ") else b"\t" + line
    elif action == "alias" and b": " in line:
        lines[i] = line.split(b": ", 1)[0] + b": *anchor\n"
    elif b": " in line:
        key, value = line.split(b": ", 1)
        lines[i] = key + b": &anchor " + value
    return b"".join(lines)


MUTATIONS: dict[str, Mutation] = {
    "data": _mutate_data,
    "insert-text": _insert_text,
    "insert-bytes": _insert_bytes,
    "truncate": _truncate,
    "line": _line_edit,
}


# --------------------------------------------------------------------------- the property


def _read_tree(root: Path) -> Files:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for top in ("inventory", "requirements") for p in sorted((root / top).rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def example_files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return _read_tree(copy_example(tmp_path_factory.mktemp("example")))


@pytest.fixture(scope="module")
def thesis_files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return _read_tree(copy_tree(THESIS_DIR / "use-case-1", tmp_path_factory.mktemp("thesis")))


def check_mutated(files: Files, data: st.DataObject) -> None:
    target = data.draw(st.sampled_from(sorted(files)), label="file")
    content = files[target]
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        name = data.draw(st.sampled_from(sorted(MUTATIONS)), label="mutation")
        content = MUTATIONS[name](content, data)
    with tempfile.TemporaryDirectory(prefix="meshplan-prop-") as tmp:
        repo = Path(tmp)
        for rel, raw in files.items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_bytes(content if rel == target else raw)
        code, stdout, stderr = run_validate(repo)
    output = stdout + stderr
    assert code in (0, 1), output
    assert "Traceback" not in output
    assert "internal error" not in output
    if code == 1:
        assert "invalid: " in stderr


PROPERTY_SETTINGS = settings(max_examples=examples(250), deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(data=st.data())
def test_mutated_example_never_crashes(example_files: Files, data: st.DataObject) -> None:
    check_mutated(example_files, data)


@settings(PROPERTY_SETTINGS, max_examples=examples(100))
@given(data=st.data())
def test_mutated_thesis_json_never_crashes(thesis_files: Files, data: st.DataObject) -> None:
    check_mutated(thesis_files, data)


def test_mutations_change_the_input() -> None:
    """The mutations are real: each of them, applied once, can change a valid file."""
    raw = b"apiVersion: meshplan.dev/v1alpha1\nkind: Domain\nmetadata:\n  name: domain1\n"

    @settings(max_examples=30, deadline=None)  # not scaled by the profile: it must see them all
    @given(data=st.data(), name=st.sampled_from(sorted(MUTATIONS)))
    def changed(data: st.DataObject, name: str) -> None:
        seen.setdefault(name, False)
        if MUTATIONS[name](raw, data) != raw:
            seen[name] = True

    seen: dict[str, bool] = {}
    changed()
    assert seen == dict.fromkeys(MUTATIONS, True)
