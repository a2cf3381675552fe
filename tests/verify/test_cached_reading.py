"""verify through the parsed-document cache reports exactly what it reports without one.

An entry is only a candidate (``meshplan.load.canonical``): these tests plant the entries an
attacker sharing a CI cache would (the defect-free documents under a defective file's digest),
corrupt and truncated ones, and check that every planted defect is still reported, at the same
``file:line:col``, and that the cache stays out of the repository.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from meshplan.cache import RenderCache
from meshplan.diagnostics import Diagnostic
from meshplan.load.canonical import RenderedReader
from meshplan.load.parse import parse_yaml
from meshplan.model import Inventory
from meshplan.verify.report import verify
from meshplan.yamltext import dump_documents

from tests.load.test_canonical import MemoryStore, forge_entries, stored_entries
from tests.support.cli import run_cli
from tests.support.flows import Files, rendered_files
from tests.support.mutations import CASES, Mutation, parsed
from tests.support.repos import REPO_ROOT, copy_example


@pytest.fixture(scope="module")
def example() -> tuple[Inventory, Files]:
    return rendered_files(REPO_ROOT)


def canonical_mutation(files: Files, mutation: Mutation) -> Files:
    """The planted defect, written back as meshplan writes (so the cache can serve it)."""
    docs = parsed(files)
    mutation(docs)
    return {**files, **{path: dump_documents(items).encode() for path, items in docs.items()}}


def report_text(inventory: Inventory, files: Files, reader: RenderedReader | None) -> list[str]:
    report = verify(inventory, files, reader=reader)
    if reader is not None:
        reader.save()
    return [d.format_text() for d in report.diagnostics]


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize(("mutation", "severity", "expected"), CASES)
def test_a_planted_defect_reads_the_same_cold_warm_and_forged(
        example: tuple[Inventory, Files], mutation: Mutation, severity: object,
        expected: tuple[str, ...]) -> None:
    inventory, clean = example
    files = canonical_mutation(clean, mutation)
    plain = report_text(inventory, files, None)
    assert plain != report_text(inventory, clean, None)  # the defect is reported

    store = MemoryStore()
    assert report_text(inventory, files, RenderedReader(store)) == plain  # cold: parses, stores
    warm = RenderedReader(store)
    assert report_text(inventory, files, warm) == plain
    assert warm.parsed == 0 and warm.accepted > 0

    # Forged: under each changed file's digest, the documents of the defect-free file.
    forged = MemoryStore()
    report_text(inventory, clean, RenderedReader(forged))
    planted = 0
    for path, content in files.items():
        defect_free = forged.entries.get(digest(clean[path]))
        if content != clean[path] and defect_free is not None:  # a file verify reads
            forged.entries[digest(content)] = defect_free
            planted += 1
    assert planted
    fooled = RenderedReader(forged)
    assert report_text(inventory, files, fooled) == plain
    assert fooled.laid_out + fooled.parsed >= 1


def test_corrupt_and_truncated_entries_are_ignored(tmp_path: Path,
                                                  example: tuple[Inventory, Files]) -> None:
    inventory, files = example
    cache = RenderCache.at(tmp_path / "cache")
    plain = report_text(inventory, files, None)
    assert report_text(inventory, files, RenderedReader(cache)) == plain
    entries = stored_entries(tmp_path / "cache")
    assert entries
    forge_entries(tmp_path / "cache", {
        name: [raw[: len(raw) // 2], b"\xff\xfe", b"{}", json.dumps([{}]).encode()][i % 4]
        for i, (name, raw) in enumerate(sorted(entries.items()))})
    reader = RenderedReader(RenderCache.at(tmp_path / "cache"))
    assert report_text(inventory, files, reader) == plain
    assert reader.accepted == 0


def test_the_cli_keeps_its_cache_outside_the_repository(tmp_path: Path) -> None:
    repo = copy_example(tmp_path / "repo")
    cache = tmp_path / "cache"
    assert run_cli(["render", "--repo", str(repo), "--no-cache"])[0] == 0
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    runs = [run_cli(["verify", "--repo", str(repo), "--cache-dir", str(cache)])
            for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0][0] == 0
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before
    assert stored_entries(cache)
    no_cache = run_cli(["verify", "--repo", str(repo), "--no-cache"])
    assert no_cache == runs[0]


class ParserOnly(RenderedReader):
    """Every file through the positioned parser (what verify read before any shortcut)."""

    def documents(self, relpath: str, raw: bytes) -> tuple[list[Any], list[Diagnostic]]:
        return parse_yaml(relpath, raw.decode())


@pytest.mark.parametrize("edit", ["duplicate-port", "yaml11-octal", "quoted-port"])
def test_a_hand_edit_outside_the_writers_layout_is_read_as_the_parser_reads_it(
        tmp_path: Path, example: tuple[Inventory, Files], edit: str) -> None:
    """A file edited by hand in a way the layout reader would misread (a second ``port:``
    key, which it would take as the port; ``0110``, YAML 1.1's octal 72, which it would take
    as 110): its candidate does not write back, so the parser reads it, with every cache."""
    inventory, clean = example
    path = next(p for p, content in sorted(clean.items())
                if p.endswith("policies.yaml") and b'- port: "' in content)
    text = clean[path].decode()
    at = text.index('- port: "')
    line_end = text.index("\n", at)
    port = text[at + len('- port: "'):line_end - 1]
    indent = text[text.rindex("\n", 0, at) + 1:at]  # before the item's "- "
    changed = {
        "duplicate-port":
            text[:line_end] + f'\n{indent}  port: "{int(port) + 1}"' + text[line_end:],
        "yaml11-octal": text[:at] + "- port: 0110" + text[line_end:],
        "quoted-port": text[:at] + f"- port: '{port}'" + text[line_end:],
    }[edit]
    files = {**clean, path: changed.encode()}
    expected = report_text(inventory, files, ParserOnly(None))
    assert (expected == report_text(inventory, clean, ParserOnly(None))) == (edit == "quoted-port")
    assert report_text(inventory, files, None) == expected
    cache = RenderCache.at(tmp_path / "cache")
    for _ in range(2):  # cold, then warm
        reader = RenderedReader(cache)
        assert report_text(inventory, files, reader) == expected
        assert reader.parsed == 1
