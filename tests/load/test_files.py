"""meshplan.load.files: which files are read (never outside the repository, never special
files, never too large ones) and their text (UTF-8, the first bad byte located)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from meshplan.diagnostics import Location, Severity
from meshplan.load import files
from meshplan.load.files import decode_utf8
from meshplan.load.repository import load_repository, read_documents

from tests.support.repos import write_text

ANY_YAML = "a: 1\n"


def test_utf8_bom_is_accepted() -> None:
    assert decode_utf8("f.yaml", b"\xef\xbb\xbfa: 1\n") == "a: 1\n"


@pytest.mark.parametrize(("raw", "line", "column"), [
    (b"\xff", 1, 1),
    (b"a: 1\nb: x\xfe\n", 2, 5),
    (b"a: 1\nname: d\xc3\xa9main\xff1\n", 2, 13),  # columns count characters, not bytes
    (b"\xef\xbb\xbfa\xff", 1, 2),  # the byte-order mark is not a column
    (b"\xef\xbb\xbf\xef", 1, 1),
    (b"\xef\xbb\xbfa\n\xc3\xa9\xc3", 2, 2),
])
def test_first_invalid_byte_is_located(raw: bytes, line: int, column: int) -> None:
    problem = decode_utf8("f.yaml", raw)
    assert not isinstance(problem, str)
    assert problem.location == Location("f.yaml", line, column)
    assert problem.message.startswith("expected UTF-8 text, found the byte 0x")


def test_file_level_problems_point_at_line_1_column_1(tmp_path: Path) -> None:
    write_text(tmp_path, "inventory/ok.yaml", ANY_YAML)
    write_text(tmp_path, "requirements/stray.yaml", ANY_YAML)
    (tmp_path / "inventory/out.yaml").symlink_to("/etc/hostname")
    (tmp_path / "inventory/broken.yaml").symlink_to("missing.yaml")
    with (tmp_path / "inventory/big.yaml").open("wb") as handle:
        handle.truncate(files.MAX_FILE_BYTES + 1)
    _, problems = load_repository(tmp_path)
    found = {p.location.file: (p.location.line, p.location.column, p.message) for p in problems}
    assert set(found) == {"inventory/out.yaml", "inventory/broken.yaml", "inventory/big.yaml",
                          "requirements/stray.yaml"}
    assert all(v[:2] == (1, 1) for v in found.values())
    assert "symbolic link to /etc/hostname" in found["inventory/out.yaml"][2]
    assert "broken or looping symbolic link" in found["inventory/broken.yaml"][2]
    assert found["inventory/big.yaml"][2] == (
        "expected a file of at most 16 MiB (16,777,216 bytes), found 16,777,217 bytes")
    assert "directly in requirements/" in found["requirements/stray.yaml"][2]


def test_a_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    write_text(tmp_path, "inventory/edge.yaml", "#" * (files.MAX_FILE_BYTES - 1) + "\n")
    _, problems = load_repository(tmp_path)
    assert problems == []


def test_symlinked_folder_is_not_followed(tmp_path: Path) -> None:
    write_text(tmp_path, "elsewhere/d.yaml", ANY_YAML)
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory/linked").symlink_to(tmp_path / "elsewhere")
    inputs, problems = load_repository(tmp_path)
    assert inputs.inventory == ()
    assert [(p.location.file, p.severity) for p in problems] == [
        ("inventory/linked", Severity.ERROR)]
    assert "found a symbolic link" in problems[0].message


def test_unreadable_file_is_an_error_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_text(tmp_path, "inventory/a.yaml", ANY_YAML)

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    docs, problems = read_documents(tmp_path, "inventory/a.yaml")
    assert docs == []
    assert [(str(p.location), p.message) for p in problems] == [
        ("inventory/a.yaml:1:1", "expected a readable file, found Permission denied")]


def test_a_linked_top_folder_is_checked_file_by_file(tmp_path: Path) -> None:
    """Files under a linked ``inventory/`` are not links themselves, but may lie outside."""
    outside = tmp_path / "outside"
    write_text(outside, "d.yaml", ANY_YAML)
    repo = tmp_path / "repo"
    write_text(repo, "shared/d.yaml", ANY_YAML)
    repo.joinpath("inventory").symlink_to(outside)
    _, problems = load_repository(repo)
    assert [(p.location.file, p.message) for p in problems] == [
        ("inventory/d.yaml", "expected a file inside the repository, found a symbolic link to "
         f"{outside.resolve() / 'd.yaml'}")]
    repo.joinpath("inventory").unlink()
    repo.joinpath("inventory").symlink_to(repo / "shared")  # inside the repository: read
    inputs, problems = load_repository(repo)
    assert problems == []
    assert [d.file for d in inputs.inventory] == ["inventory/d.yaml"]


def test_special_files_are_refused_without_following_links(tmp_path: Path) -> None:
    write_text(tmp_path, "inventory/ok.yaml", ANY_YAML)
    os.mkfifo(tmp_path / "inventory/pipe.yaml")
    _, problems = load_repository(tmp_path)
    assert [(p.location.file, p.message) for p in problems] == [
        ("inventory/pipe.yaml",
         "expected a regular file, found something else (device, socket or folder)")]
