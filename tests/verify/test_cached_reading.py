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

import pytest
from meshplan.cache import RenderCache
from meshplan.load.canonical import RenderedReader
from meshplan.model import Inventory
from meshplan.verify.report import verify
from meshplan.yamltext import dump_documents

from tests.load.test_canonical import MemoryStore
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
    assert fooled.parsed >= 1


def test_corrupt_and_truncated_entries_are_ignored(tmp_path: Path,
                                                  example: tuple[Inventory, Files]) -> None:
    inventory, files = example
    cache = RenderCache.at(tmp_path / "cache")
    plain = report_text(inventory, files, None)
    assert report_text(inventory, files, RenderedReader(cache)) == plain
    entries = sorted((tmp_path / "cache" / "parsed").rglob("*.json"))
    assert entries
    for i, entry in enumerate(entries):
        raw = entry.read_bytes()
        entry.write_bytes([raw[: len(raw) // 2], b"\xff\xfe", b"{}", json.dumps([{}]).encode()
                           ][i % 4])
    reader = RenderedReader(cache)
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
    assert list((cache / "parsed").rglob("*.json"))
    no_cache = run_cli(["verify", "--repo", str(repo), "--no-cache"])
    assert no_cache == runs[0]
