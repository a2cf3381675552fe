"""Safe discovery and reading of input files: which files, and their text.

Inputs arrive by pull request: only regular files inside the repository are read (a symbolic
link out of it is an error, linked folders are not entered), a file larger than
:data:`MAX_FILE_BYTES` is refused before it is read, and text must be UTF-8 (an error names
the first bad byte's line and column).

Nothing committed disappears without a word: a folder that cannot be read is an error (it would
otherwise validate as empty, and the next publish would delete every policy it held), so is a
file or folder name that is not UTF-8 (it would become an annotation no cluster can parse), and
a file meshplan does not read (``x.json`` or ``x.YAML`` under ``requirements/``) is a warning
naming it. Hidden entries (``.name``) and Markdown notes (``*.md``) are skipped quietly.
"""

from __future__ import annotations

import codecs
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ..diagnostics import Diagnostic, Location, error, warning

MAX_FILE_BYTES = 16 * 1024 * 1024
YAML_SUFFIXES = (".yaml", ".yml")
INVENTORY_SUFFIXES = (*YAML_SUFFIXES, ".json")


def input_files(
    root: Path, top: str, suffixes: tuple[str, ...], diagnostics: list[Diagnostic]
) -> Iterator[str]:
    """Relative paths of input files under ``root/top``, sorted, hidden entries skipped."""
    base = root / top
    if not base.is_dir():
        if base.exists() or base.is_symlink():
            diagnostics.append(error(Location(f"{top}/"), "", f"expected a folder '{top}/', "
                                     "found something else (a file or a broken link)"))
        return
    found: list[str] = []
    # ``root`` is resolved and linked folders are never entered, so a file that is not itself a
    # symbolic link lies inside the repository -- unless ``top`` is a link: then check each file.
    careful = base.is_symlink()
    _scan(root, str(base), top, suffixes, careful, diagnostics, found)
    yield from sorted(found)


def _scan(
    root: Path, folder: str, rel: str, suffixes: tuple[str, ...], careful: bool,
    diagnostics: list[Diagnostic], found: list[str],
) -> None:
    """One folder, as ``os.walk(followlinks=False)`` visits it (top-down, same order)."""
    try:
        with os.scandir(folder) as listing:
            entries = list(listing)
    except OSError as exc:  # never skipped: its files would silently count as deleted
        diagnostics.append(error(Location(f"{rel}/"), "", "expected a readable folder, found "
                                 f"{exc.strerror or type(exc).__name__}: its files cannot be "
                                 "read, so nothing is validated or rendered"))
        return
    folders: list[os.DirEntry[str]] = []
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if not _utf8_name(entry.name):
            shown = display_path(f"{rel}/{entry.name}")  # a folder has no line, a file line 1
            where = Location(shown + "/") if is_dir else Location(shown, 1, 1)
            diagnostics.append(error(where, "", "expected a file or folder name in UTF-8, "
                                     "found bytes that are not (the name would go into the "
                                     "output, which Kubernetes could not parse): rename it"))
            continue
        if is_dir:
            folders.append(entry)
            continue
        name = entry.name
        if name.startswith(".") or name.endswith(".md"):
            continue
        relpath = f"{rel}/{name}"
        if not name.endswith(suffixes):
            diagnostics.append(warning(Location(relpath, 1, 1), "", "expected "
                                       f"{' or '.join('*' + x for x in suffixes)} files here, "
                                       "found a file meshplan does not read: it is ignored"
                                       f"{_suffix_hint(name, suffixes)}"))
            continue
        problem = _entry_problem(root, entry, careful)
        if problem:
            diagnostics.append(error(Location(relpath, 1, 1), "", problem))
            continue
        found.append(relpath)
    folders = sorted((d for d in folders if not d.name.startswith(".")), key=lambda d: d.name)
    real: list[os.DirEntry[str]] = []
    for entry in folders:
        if entry.is_symlink():
            diagnostics.append(error(Location(f"{rel}/{entry.name}"), "",
                                     "expected a real folder, found a symbolic link "
                                     "(folders behind links are not read)"))
        else:
            real.append(entry)
    for entry in real:
        _scan(root, entry.path, f"{rel}/{entry.name}", suffixes, careful, diagnostics, found)


def _utf8_name(name: str) -> bool:
    """``os.scandir`` gives undecodable bytes of a name as lone surrogates."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display_path(path: str) -> str:
    """A path safe to print: bytes that are not UTF-8 shown as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _suffix_hint(name: str, suffixes: tuple[str, ...]) -> str:
    for suffix in suffixes:
        if name.lower().endswith(suffix) or name.lower().endswith(suffix + "~"):
            return f" (rename it to end in '{suffix}' to have it read)"
    return ""


def _entry_problem(root: Path, entry: os.DirEntry[str], careful: bool) -> str | None:
    """:func:`_unsafe_path_problem` with one ``lstat`` for the common case, a plain file."""
    try:
        if careful or entry.is_symlink():
            return _unsafe_path_problem(root, Path(entry.path))
        info = entry.stat(follow_symlinks=False)
    except OSError:  # vanished meanwhile: let the resolving check word it
        return _unsafe_path_problem(root, Path(entry.path))
    if not stat.S_ISREG(info.st_mode):
        return "expected a regular file, found something else (device, socket or folder)"
    return _size_problem(info.st_size)


def _unsafe_path_problem(root: Path, path: Path) -> str | None:
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "expected a readable file, found a broken or looping symbolic link"
    if not real.is_relative_to(root):
        return f"expected a file inside the repository, found a symbolic link to {real}"
    if not real.is_file():
        return "expected a regular file, found something else (device, socket or folder)"
    return _size_problem(real.stat().st_size)


def _size_problem(size: int) -> str | None:
    if size > MAX_FILE_BYTES:
        return (f"expected a file of at most {MAX_FILE_BYTES // (1024 * 1024)} MiB "
                f"({MAX_FILE_BYTES:,} bytes), found {size:,} bytes")
    return None


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


def read_text(root: Path, relpath: str) -> str | Diagnostic:
    """The text of one input file (already vetted by :func:`input_files`), or why not."""
    try:
        raw = (root / relpath).read_bytes()
    except OSError as exc:
        return error(Location(relpath, 1, 1), "", "expected a readable file, found "
                     f"{exc.strerror or type(exc).__name__}")
    return decode_utf8(relpath, raw)
