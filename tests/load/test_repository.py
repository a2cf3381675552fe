"""meshplan.load.repository: the input files of a repository, found and ordered."""

from __future__ import annotations

from pathlib import Path

from meshplan.load.repository import load_repository

from tests.support.repos import write_text

ANY_YAML = "a: 1\n"


def test_load_repository_finds_and_orders_files(tmp_path: Path) -> None:
    for rel in ("inventory/b.yaml", "inventory/a.json", "inventory/sub/c.yml",
                "inventory/.hidden.yaml", "inventory/notes.txt", "inventory/.git/x.yaml",
                "requirements/d2/r.yaml", "requirements/d1/deep/r.yaml",
                "requirements/d1/r.json"):
        write_text(tmp_path, rel, ANY_YAML)
    inputs, problems = load_repository(tmp_path)
    assert [(p.severity.value, p.location.file) for p in problems] == [
        ("warning", "inventory/notes.txt"), ("warning", "requirements/d1/r.json")]
    assert [d.file for d in inputs.inventory] == [
        "inventory/a.json", "inventory/b.yaml", "inventory/sub/c.yml"]
    assert [(folder, d.file) for folder, d in inputs.requirements] == [
        ("d1", "requirements/d1/deep/r.yaml"), ("d2", "requirements/d2/r.yaml")]


def test_missing_inventory_folder(tmp_path: Path) -> None:
    inputs, problems = load_repository(tmp_path)
    assert inputs.inventory == ()
    assert [(str(p.location), p.message) for p in problems] == [
        ("inventory/", "expected a folder 'inventory/' with the domains, found none")]
