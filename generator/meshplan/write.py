"""Stage 7 — write: put a rendered tree on disk, never a partly written file.

A change to a few of the files (at most :data:`IN_PLACE_AT_MOST` of them) is written in
place: the new contents are first written whole to a temporary folder beside the output (a
failure there, e.g. a full disk, leaves the output as it was), then each is renamed over
its file (one atomic rename a file) and the files no longer generated are removed. Any
other change builds the new tree in a temporary folder beside the output and swaps it in
with one atomic ``renameat2(RENAME_EXCHANGE)`` (Linux) or, elsewhere, two renames; files
whose bytes did not change are hard-linked from the old tree. Either way the files that did
not change keep their inode and timestamps: an unchanged render touches nothing, and a
change rewrites only the files it changes (re-staging thousands of links for a change to a
handful of files would cost a re-render more than the change itself).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .diagnostics import OperationError
from .outputs import OUTPUT_MARKER, OutputFile

IN_PLACE_AT_MOST = 0.25  # share of the files a change may write or remove and be written in place
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@dataclass(frozen=True)
class WriteResult:
    changed: tuple[str, ...]  # files added or rewritten
    removed: tuple[str, ...]  # files that are gone

    @property
    def unchanged(self) -> bool:
        return not self.changed and not self.removed


def existing_files(root: Path) -> dict[str, Path]:
    """Relative path -> path of every file under ``root`` (empty if it does not exist)."""
    return {rel: Path(path) for rel, path in _existing(root).items()}


def _existing(root: Path) -> dict[str, str]:
    # strings, not Paths: thousands of files on every render
    if not root.is_dir():
        return {}
    found = {}
    base = str(root)
    for dirpath, _dirnames, filenames in os.walk(base):
        rel = os.path.relpath(dirpath, base).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        for name in filenames:
            found[prefix + name] = os.path.join(dirpath, name)  # noqa: PTH118
    return found


def diff_against(root: Path, files: Iterable[OutputFile]) -> WriteResult:
    """What writing ``files`` to ``root`` would change."""
    old = _existing(root)
    new = {f.path: f.content for f in files}
    changed = sorted(p for p, content in new.items()
                     if p not in old or not _same_content(old[p], content))
    removed = sorted(p for p in old if p not in new)
    return WriteResult(tuple(changed), tuple(removed))


def _same_content(path: str, content: bytes) -> bool:
    """Whether ``path`` holds ``content``; the size decides most cases without a read."""
    if os.stat(path).st_size != len(content):  # noqa: PTH116
        return False
    with open(path, "rb") as handle:  # noqa: PTH123
        return handle.read() == content


def ensure_replaceable(root: Path) -> None:
    """Refuse to replace a folder meshplan did not create (e.g. a mistyped --out)."""
    if root.exists() and not root.is_dir():
        raise OperationError(f"output {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / OUTPUT_MARKER).is_file():
        raise OperationError(
            f"output folder {root} is not empty and was not written by meshplan "
            f"(no {OUTPUT_MARKER}); refusing to replace it")


def write_tree(root: Path, files: Iterable[OutputFile]) -> WriteResult:
    """Make ``root`` hold exactly ``files``; atomically, and only if something changed."""
    files = tuple(files)
    root = root.resolve()  # a symlinked output folder: replace what it points at
    ensure_replaceable(root)
    result = diff_against(root, files)
    if result.unchanged:
        return result
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(root)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(root), dir=root.parent))
    try:
        if _in_place(root, files, result):
            _update_in_place(staging, root, files, result)
            return result
        staging.chmod(_folder_mode(root))  # mkdtemp's 0700 would become the output's mode
        _fill(staging, root, files, set(result.changed))
        _swap_in(staging, root)
    except OSError as exc:
        raise OperationError(f"could not replace {root}: {exc.strerror or exc} (the previous "
                             "output is unchanged; is the folder a mount point or read-only?)"
                             ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _in_place(root: Path, files: tuple[OutputFile, ...], result: WriteResult) -> bool:
    """Whether the change is small enough to write in place, and every changed file's place
    is free for a file (no folder where a file goes, no file where a folder goes)."""
    if not root.is_dir() or (len(result.changed) + len(result.removed)
                             > IN_PLACE_AT_MOST * max(len(files), 1)):
        return False
    base = str(root)
    for relpath in result.changed:
        target = os.path.join(base, relpath)  # noqa: PTH118
        if os.path.isdir(target) and not os.path.islink(target):  # noqa: PTH112, PTH114
            return False
        parts = relpath.split("/")[:-1]
        for n in range(1, len(parts) + 1):
            folder = os.path.join(base, *parts[:n])  # noqa: PTH118
            if os.path.lexists(folder) and not (
                    os.path.isdir(folder) and not os.path.islink(folder)):  # noqa: PTH112, PTH114
                return False
    return True


def _update_in_place(staging: Path, root: Path, files: tuple[OutputFile, ...],
                     result: WriteResult) -> None:
    """Write the changed files whole into ``staging``, then rename each over its file, then
    remove the files no longer generated (and the folders that leaves empty)."""
    changed = set(result.changed)
    staged: list[tuple[Path, str]] = []
    new, base = str(staging), str(root)
    for output in files:
        if output.path in changed:
            temporary = Path(new, str(len(staged)))
            temporary.write_bytes(output.content)
            staged.append((temporary, os.path.join(base, output.path)))  # noqa: PTH118
    for temporary, target in staged:
        os.makedirs(os.path.dirname(target), exist_ok=True)  # noqa: PTH103, PTH120
        temporary.replace(target)
    folders: set[str] = set()
    for relpath in result.removed:
        os.unlink(os.path.join(base, relpath))  # noqa: PTH108, PTH118
        folders.add(os.path.dirname(relpath))  # noqa: PTH120
    for folder in sorted(folders, key=len, reverse=True):
        while folder:
            try:
                os.rmdir(os.path.join(base, folder))  # noqa: PTH106, PTH118
            except OSError:
                break  # not empty (or gone already)
            folder = os.path.dirname(folder)  # noqa: PTH120


def _staging_prefix(root: Path) -> str:
    return f".{root.name}.meshplan-"


def _remove_stale_staging(root: Path) -> None:
    """Staging folders a killed run left beside the output (they never hold the output)."""
    for leftover in root.parent.glob(_staging_prefix(root) + "*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)


def _folder_mode(root: Path) -> int:
    """Permissions for the new output folder: the old folder's, else those of a new folder."""
    if root.is_dir():
        return stat.S_IMODE(root.stat().st_mode)
    umask = os.umask(0o077)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o777 & ~umask


def _fill(staging: Path, old_root: Path, files: tuple[OutputFile, ...], changed: set[str]) -> None:
    # os.path on strings, each folder made once: thousands of files on the re-render path
    made: set[str] = set()
    new, old = str(staging), str(old_root)
    for output in files:
        target = os.path.join(new, output.path)  # noqa: PTH118
        folder = os.path.dirname(target)  # noqa: PTH120
        if folder not in made:
            os.makedirs(folder, exist_ok=True)  # noqa: PTH103
            made.add(folder)
        if output.path not in changed:
            try:
                os.link(os.path.join(old, output.path), target)  # noqa: PTH118
                continue
            except OSError:
                pass  # another file system: fall back to writing the bytes
        Path(target).write_bytes(output.content)


def _swap_in(staging: Path, root: Path) -> None:
    """Exchange ``staging`` and ``root``; afterwards ``staging`` holds the old tree."""
    if not root.exists():
        staging.rename(root)
        staging.mkdir()  # the caller removes it
        return
    if _rename_exchange(staging, root):
        return
    backup = staging.with_name(staging.name + ".old")
    root.rename(backup)
    try:
        staging.rename(root)
    except OSError:
        backup.rename(root)
        raise
    staging.mkdir()
    shutil.rmtree(backup, ignore_errors=True)


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux renameat2; False when unavailable."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(libc_name, use_errno=True)
        renameat2 = libc.renameat2
        renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                              ctypes.c_uint]
        status = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                           _RENAME_EXCHANGE)
        return bool(status == 0)
    return False
