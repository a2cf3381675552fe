"""``meshplan.load.layout``: a rendered file's documents read in the writer's layout are only
a candidate; whatever the text, the reader (``meshplan.load.canonical.RenderedReader``) reads
exactly what the positioned parser reads, marks and problems included."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meshplan.load.canonical import RenderedReader
from meshplan.load.layout import laid_out_documents
from meshplan.load.parse import parse_yaml
from meshplan.yamltext import dump_documents

from tests.load.test_canonical import HEADER, MemoryStore, json_documents
from tests.support.ci import examples


def read(text: str, store: MemoryStore | None = None) -> tuple[RenderedReader, Any]:
    reader = RenderedReader(store)
    documents, problems = reader.documents("f.yaml", text.encode())
    return reader, ([(d.index, d.data, dict(d.marks)) for d in documents],
                    [p.format_text() for p in problems])


def parsed(text: str) -> Any:
    documents, problems = parse_yaml("f.yaml", text)
    return ([(d.index, d.data, dict(d.marks)) for d in documents],
            [p.format_text() for p in problems])


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_documents, st.sampled_from(["", HEADER, "# \u00e9t\u00e9 \u2603\n"]))
def test_the_writers_layout_is_read_without_the_parser(docs: list[dict[str, Any]],
                                                       header: str) -> None:
    text = header + dump_documents(docs)
    assert laid_out_documents(dump_documents(docs)) == docs
    reader, found = read(text)
    assert (reader.laid_out, reader.parsed) == (1, 0)
    assert found == parsed(text)


# Texts the layout reader reads as something else than YAML does (its candidate does not
# write back to them, so the parser reads them): YAML 1.1 octal and booleans, single quotes,
# comments, duplicate keys, escapes JSON lacks, flow collections, anchors, tags, blocks.
MISREAD = [
    "a: 010\n", "a: 0x1F\n", "a: 1_0\n", "a: 'x'\n", "a: yes\n", "a: x # comment\n",
    "a: 1\na: 2\n", "a:  b\n", "a: ~\n", 'a: "\\x41"\n', "a: [1, 2]\n", "a: {b: c}\n",
    "a: &x b\nc: *x\n", "a: !!str 1\n", "a: |\n  x\n", "- a\n", "a:\n- b\n  c: d\n",
    "a: b\n---\n", "---\na: b\n", "a: b\n\n", "a:\n  b: 1\n c: 2\n", "a:\n    b: 1\n",
    "a: 1.5\n", "a: 2001-12-14\n", "a: -\n", "a:\n", '"a": 1\n', "a: b\n...\n",
    "a: b\r\nc: d\n", "a: b\tc\n", "a:\n- - x\n  - y\n", "a:\n-\n  - x\n",
    'a: "\\ud800"\n', '"\\udc00": 1\n', 'a:\n- "\\uDBFF"\n',  # lone surrogates: YAML refuses
]


@pytest.mark.parametrize("body", MISREAD)
def test_text_outside_the_layout_reads_as_the_parser_reads_it(body: str) -> None:
    for text in (body, HEADER + body):
        store = MemoryStore()
        reader, found = read(text, store)
        assert found == parsed(text)
        reader.save()
        _, found_again = read(text, store)  # and the entry it stored, if any
        assert found_again == found


# Characters that change what YAML reads, for random edits of a laid-out text.
EDITS = st.sampled_from([" ", "  ", ":", ": ", "-", "- ", "#", "'", '"', "0", "07", "\n",
                         "\n- ", "&a ", "*a", "!!str ", "{", "}", "[", "]", "y", "~", "\t",
                         "|", ">", "\\", "?", "---\n", "1e3", "null", "true", ",", "%"])


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_documents, st.sampled_from(["", HEADER]), st.data())
def test_an_edited_file_reads_as_the_parser_reads_it(docs: list[dict[str, Any]], header: str,
                                                     data: st.DataObject) -> None:
    text = header + dump_documents(docs)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        at = data.draw(st.integers(min_value=0, max_value=len(text)))
        cut = data.draw(st.integers(min_value=0, max_value=2))
        text = text[:at] + data.draw(EDITS) + text[at + cut:]
    _, found = read(text)
    assert found == parsed(text)


@pytest.mark.parametrize("header", ["", HEADER, "# \u00e9t\u00e9 \u2603\n"])
def test_a_file_with_a_byte_order_mark_is_laid_out_at_its_own_places(header: str) -> None:
    """The decoded text drops the BOM (3 bytes): each document is still found at its bytes,
    so its marks are the parser's (they were read 3 bytes early: a crash or wrong data)."""
    text = header + dump_documents([{"kind": "Service", "metadata": {"name": "\u00e9"}},
                                    {"kind": "Namespace", "metadata": {"name": "b"}}])
    reader = RenderedReader(None)
    documents, problems = reader.documents("f.yaml", b"\xef\xbb\xbf" + text.encode())
    assert ([(d.index, d.data, dict(d.marks)) for d in documents],
            [p.format_text() for p in problems]) == parsed(text)
    assert (reader.laid_out, reader.parsed) == (1, 0)
