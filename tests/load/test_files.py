"""meshplan.load.files: which files are read (never outside the repository, never special
files, never too large ones) and their text (UTF-8, the first bad byte located)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from meshplan.diagnostics import Location, Severity
from meshplan.load import files
from meshplan.load.files import decode_utf8
from meshplan.load.repository import load_repository, read_documents

from tests.support.ci import missing_tool
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


# --------------------------------------------------------------------------- nothing dropped


@pytest.mark.parametrize(("relpath", "hint"), [
    ("requirements/d/allow.json", ""),
    ("requirements/d/allow.YAML", " (rename it to end in '.yaml' to have it read)"),
    ("requirements/d/allow.Yml", " (rename it to end in '.yml' to have it read)"),
    ("requirements/d/allow.yaml~", " (rename it to end in '.yaml' to have it read)"),
    ("requirements/d/deep/allow.txt", ""),
    ("inventory/domain.YAML", " (rename it to end in '.yaml' to have it read)"),
    ("inventory/domain.JSON", " (rename it to end in '.json' to have it read)"),
    ("inventory/domain.toml", ""),
])
def test_a_file_meshplan_does_not_read_is_a_warning(tmp_path: Path, relpath: str,
                                                    hint: str) -> None:
    write_text(tmp_path, "inventory/ok.yaml", ANY_YAML)
    write_text(tmp_path, relpath, ANY_YAML)
    _, problems = load_repository(tmp_path)
    [problem] = problems
    assert problem.severity is Severity.WARNING
    assert str(problem.location) == f"{relpath}:1:1"
    assert problem.message.endswith("found a file meshplan does not read: it is ignored" + hint)


def test_hidden_entries_and_markdown_notes_are_skipped_quietly(tmp_path: Path) -> None:
    for relpath in ("inventory/ok.yaml", "inventory/README.md", "requirements/d/.draft.yaml",
                    "requirements/.github/x.json", "requirements/d/NOTES.md"):
        write_text(tmp_path, relpath, ANY_YAML)
    inputs, problems = load_repository(tmp_path)
    assert problems == []
    assert [d.file for d in inputs.inventory] == ["inventory/ok.yaml"]


def test_a_requirements_path_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    write_text(tmp_path, "inventory/ok.yaml", ANY_YAML)
    write_text(tmp_path, "requirements", ANY_YAML)
    _, problems = load_repository(tmp_path)
    assert [(str(p.location), p.severity.value) for p in problems] == [
        ("requirements/", "error")]
    assert "expected a folder 'requirements/'" in problems[0].message


@pytest.mark.parametrize("name", [b"caf\xe9.yaml", b"\xff\xfe.yaml", b"ok\x80"])
def test_a_name_that_is_not_utf8_is_an_error(tmp_path: Path, name: bytes) -> None:
    write_text(tmp_path, "inventory/ok.yaml", ANY_YAML)
    folder = tmp_path / "requirements" / "d"
    folder.mkdir(parents=True)
    target = folder / os.fsdecode(name)  # the bytes, as the file system keeps them
    if name.endswith(b".yaml"):
        target.write_text(ANY_YAML, encoding="utf-8")
    else:  # a folder: nothing below it is read either
        target.mkdir()
        (target / "r.yaml").write_text(ANY_YAML, encoding="utf-8")
    inputs, problems = load_repository(tmp_path)
    [problem] = problems
    assert problem.severity is Severity.ERROR
    shown = "requirements/d/" + name.decode("utf-8", "backslashreplace")
    assert str(problem.location) == (f"{shown}:1:1" if name.endswith(b".yaml") else shown + "/")
    shown.encode("utf-8")  # printable
    assert problem.message.startswith("expected a file or folder name in UTF-8")
    assert inputs.requirements == ()


def test_an_unreadable_folder_is_an_error_not_an_empty_one(tmp_path: Path) -> None:
    """A requirements folder that cannot be read used to validate as "0 requirements" (and the
    next publish deleted every policy). Run for real: as root, the command runs without the
    capabilities that let root read anything (util-linux ``setpriv``), so mode 000 holds."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            missing_tool("setpriv (util-linux) is needed to read as root without "
                         "CAP_DAC_OVERRIDE")
        prefix = [str(setpriv), "--bounding-set=-dac_override,-dac_read_search"]
    write_text(tmp_path, "inventory/d.yaml", DOMAIN)
    write_text(tmp_path, "requirements/d/r.yaml", ANY_YAML)
    locked = tmp_path / "requirements" / "d"
    locked.chmod(0)
    try:
        result = subprocess.run([*prefix, sys.executable, "-m", "meshplan", "validate",
                                 "--repo", str(tmp_path)], capture_output=True, text=True,
                                timeout=120, check=False)
    finally:
        locked.chmod(0o755)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines()[0] == (
        "requirements/d/: expected a readable folder, found Permission denied: its files "
        "cannot be read, so nothing is validated or rendered")


DOMAIN = """\
apiVersion: meshplan.dev/v1alpha1
kind: Domain
metadata: {name: d}
spec:
  clusters: [{name: a}]
"""
