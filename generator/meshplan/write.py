"""Stage 7 — write: put a rendered tree on disk, whole or not at all.

The new tree is swapped in with one atomic ``renameat2(RENAME_EXCHANGE)`` (Linux) or,
elsewhere, two renames: a run killed at any point leaves the output as it was or as it is
meant to be, never a mix. Nothing is written when nothing changed.

Where the new tree is built depends on what is at hand. With a spare folder (``spares``, in
the render cache) the tree the previous run swapped out is kept there, with a record of each
of its files that differ from the output (device, inode, size, mtime, ctime and SHA-256; the
others are the output's own files, hard links, known by their inode); the next run brings
that spare tree to the new contents, writing only the files it does not hold already (a
temporary file renamed into place; a file the output holds unchanged is linked from it) and
removing those no longer generated, then exchanges it with the output. The spare then holds
the old output, recorded again. A re-render so costs what its change costs, not the thousands
of files of the tree. The spare is never trusted unchecked: a file kept for its record must
match it exactly (stat, and its bytes' digest when it changed close to the record), a file
kept as the output's must be the output's very file (inode), anything else is rewritten, a
file no longer generated is removed, and anything odd (a missing or malformed record, a
symlink, a failed write, another file system than the output's) discards the spare. Without a
usable spare the new tree is built in a temporary folder beside the output, hard-linking the
files whose bytes did not change from the old tree.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .diagnostics import OperationError
from .outputs import OUTPUT_MARKER, OutputFile

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
    return _diff(_existing(root), files)


def _diff(old: dict[str, str], files: Iterable[OutputFile]) -> WriteResult:
    new = {f.path: f.content for f in files}
    changed = sorted(p for p, content in new.items()
                     if p not in old or not _same_content(old[p], content))
    removed = sorted(p for p in old if p not in new)
    return WriteResult(tuple(changed), tuple(removed))


def _same_content(path: str, content: bytes) -> bool:
    """Whether ``path`` holds ``content``: one read of one byte more than ``content`` (a
    longer file reads longer). A raw descriptor, not a buffered file object: a re-render
    compares thousands of files, and this halves what each costs."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO: no wait
    try:
        return os.read(fd, len(content) + 1) == content
    finally:
        os.close(fd)


def ensure_replaceable(root: Path) -> None:
    """Refuse to replace a folder meshplan did not create (e.g. a mistyped --out)."""
    if root.exists() and not root.is_dir():
        raise OperationError(f"output {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / OUTPUT_MARKER).is_file():
        raise OperationError(
            f"output folder {root} is not empty and was not written by meshplan "
            f"(no {OUTPUT_MARKER}); refusing to replace it")


def write_tree(root: Path, files: Iterable[OutputFile], *,
               spares: Path | None = None) -> WriteResult:
    """Make ``root`` hold exactly ``files``; atomically, and only if something changed.

    ``spares``: a folder (on the output's file system) where the tree swapped out is kept to
    build the next one in (see the module's doc); None builds each new tree beside the output.
    """
    files = tuple(files)
    root = root.resolve()  # a symlinked output folder: replace what it points at
    ensure_replaceable(root)
    listing = _existing(root)
    result = _diff(listing, files)
    if result.unchanged:
        return result
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(root)
    spare = _spare_folder(root, spares)
    try:
        if spare is not None and _write_through_spare(spare, root, files, result, listing):
            return result
        _swap_whole(root, files, result, spare, listing)
    except OSError as exc:
        raise OperationError(f"could not replace {root}: {exc.strerror or exc} (the previous "
                             "output is unchanged; is the folder a mount point or read-only?)"
                             ) from exc
    return result


def _swap_whole(root: Path, files: tuple[OutputFile, ...], result: WriteResult,
                spare: Path | None, listing: dict[str, str]) -> None:
    """Build the new tree beside the output, swap it in, keep the old tree as the spare.

    The tree is built in a folder of a random name inside a staging folder beside the output
    that is marked as the top of unrelated trees (see :func:`_spread_subfolders`)."""
    existed = root.is_dir()
    outer = Path(tempfile.mkdtemp(prefix=_staging_prefix(root), dir=root.parent))
    try:
        _spread_subfolders(outer)
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(root), dir=outer))
        staging.chmod(_folder_mode(root))  # mkdtemp's 0700 would become the output's mode
        _fill(staging, root, files, set(result.changed))
        _swap_in(staging, root)
        if spare is not None and existed:
            _discard(spare)
            spare.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                staging.rename(spare / _SPARE_TREE)
                _record_spare(spare, result, listing)
    finally:
        shutil.rmtree(outer, ignore_errors=True)


# FS_IOC_GETFLAGS and FS_IOC_SETFLAGS (linux/fs.h), on the machines whose ioctl numbers are
# the generic ones (others have their own: the hint is left out there)
_GET_FLAGS, _SET_FLAGS = 0x80086601, 0x40086602
_GENERIC_IOCTL_MACHINES = frozenset({"x86_64", "aarch64"})
_FS_TOPDIR_FL = 0x00020000  # chattr +T


def _spread_subfolders(folder: Path) -> None:
    """Mark ``folder`` as the top of unrelated folder trees (``chattr +T``): a hint only,
    nothing happens where it is not supported.

    ext4's Orlov allocator then puts each new subfolder of ``folder`` in an emptier block
    group picked from a hash of its (here random) name, rather than beside its parent, and
    the files of a folder go where the folder is. A new tree so does not go where the
    previous trees beside the output were just deleted (by a render's cleanup, a test, a
    benchmark): there, ext4 without a journal passes over each inode deleted within the last
    minutes one by one for every new inode, half a millisecond a file and more at L.
    """
    if sys.platform != "linux" or os.uname().machine not in _GENERIC_IOCTL_MACHINES:
        return
    import fcntl  # not on Windows

    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            buffer = bytearray(8)  # the kernel reads and writes an int at its start
            fcntl.ioctl(fd, _GET_FLAGS, buffer)
            flags = int.from_bytes(buffer[:4], sys.byteorder)
            if not flags & _FS_TOPDIR_FL:
                fcntl.ioctl(fd, _SET_FLAGS, (flags | _FS_TOPDIR_FL).to_bytes(4, sys.byteorder)
                            + bytes(4))
        finally:
            os.close(fd)


# -- the spare tree ----------------------------------------------------------------------

_SPARE_TREE = "tree"
_SPARE_RECORD = "record"
_RECORD_MAGIC = "meshplan-spare 1"
SPARES_KEPT = 4  # spare trees kept (one per output folder; the most recently used)
RACY_NS = 2_000_000_000  # a file changed this close to its record is read again, not trusted
_HEX = frozenset("0123456789abcdef")  # a recorded digest is hexdigest() output


class _Odd(Exception):
    """The spare is not what its record says in a way not worth repairing: discard it."""


def _spare_folder(root: Path, spares: Path | None) -> Path | None:
    """This output's spare folder, when ``spares`` is on the output's file system."""
    if spares is None:
        return None
    try:
        spares.mkdir(parents=True, exist_ok=True)
        if _device(spares) != _device(root.parent):
            return None
    except OSError:
        return None
    key = hashlib.sha256(os.fsencode(str(root))).hexdigest()[:32]
    return spares / key


def _lstat(path: str) -> os.stat_result:
    return os.lstat(path)


def _device(path: Path) -> int:
    return os.stat(path).st_dev  # noqa: PTH116


def _discard(spare: Path) -> None:
    shutil.rmtree(spare, ignore_errors=True)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_record(spare: Path) -> tuple[int, dict[str, tuple[int, int, int, int, int, str]]]:
    """(when it was taken, relative path -> (dev, inode, size, mtime_ns, ctime_ns, digest))."""
    try:
        text = (spare / _SPARE_RECORD).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Odd from exc
    lines = text.split("\n")
    head = lines[0].split(" ")
    if len(head) != 3 or " ".join(head[:2]) != _RECORD_MAGIC or lines[-1] != "":
        raise _Odd
    entries = {}
    try:
        taken = int(head[2])
        for line in lines[1:-1]:
            dev, ino, size, mtime, ctime, sha, relpath = line.split(" ", 6)
            if (sha != "-" and (len(sha) != 64 or not _HEX.issuperset(sha))) or not relpath:
                raise _Odd
            entries[relpath] = (int(dev), int(ino), int(size), int(mtime), int(ctime),
                                "" if sha == "-" else sha)
    except ValueError as exc:
        raise _Odd from exc
    return taken, entries


def _record_spare(spare: Path, result: WriteResult, listing: dict[str, str]) -> None:
    """Record the spare tree (the old output just swapped out): the stat and digest of each
    file that differs from the new output (read again). The others are the new output's own
    files (hard links): not recorded, as a record without a digest never vouches for a file
    (:func:`_holds`): next time such a file is kept only for being the output's very file
    (:func:`_update_spare` compares their inodes), else rewritten, as an unrecorded file is
    (the spare's files are listed and checked to be regular files then). ``listing``: the
    files of the old output (a file that appeared since goes unrecorded, likewise)."""
    tree = spare / _SPARE_TREE
    differing = set(result.changed) | set(result.removed)
    lines = []
    base = str(tree)
    for relpath in listing:
        if relpath not in differing:
            continue
        path = os.path.join(base, relpath)  # noqa: PTH118
        try:
            st = _lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode) or "\n" in relpath:
            _discard(spare)
            return
        with open(path, "rb") as handle:  # noqa: PTH123
            sha = _sha(handle.read())
        lines.append(f"{st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} "
                     f"{sha} {relpath}\n")
    record = spare / _SPARE_RECORD
    temporary = spare / (_SPARE_RECORD + ".tmp")
    temporary.write_text(f"{_RECORD_MAGIC} {time.time_ns()}\n" + "".join(lines),
                         encoding="utf-8")
    temporary.replace(record)
    _prune_spares(spare)


def _prune_spares(current: Path) -> None:
    """Keep the :data:`SPARES_KEPT` most recently recorded spares (this one among them)."""
    def recorded(folder: Path) -> float:
        try:
            return (folder / _SPARE_RECORD).stat().st_mtime
        except OSError:
            return 0.0
    others = sorted((f for f in current.parent.iterdir() if f != current),
                    key=recorded, reverse=True)
    for folder in others[SPARES_KEPT - 1:]:
        _discard(folder)


def _write_through_spare(spare: Path, root: Path, files: tuple[OutputFile, ...],
                         result: WriteResult, listing: dict[str, str]) -> bool:
    """Bring the spare tree to ``files`` and exchange it with ``root``; False (the spare
    discarded) when there is no usable spare."""
    if not root.is_dir() or not (spare / _SPARE_TREE).exists():
        return False
    try:
        taken, entries = _read_record(spare)
        (spare / _SPARE_RECORD).unlink()  # from here on the spare is not what it records
        _update_spare(spare / _SPARE_TREE, root, files, result, taken, entries)
    except (_Odd, OSError):  # e.g. too many links to a file: build the tree beside instead
        _discard(spare)
        return False
    tree = spare / _SPARE_TREE
    tree.chmod(_folder_mode(root))
    if not _rename_exchange(tree, root):
        _discard(spare)
        return False
    _record_spare(spare, result, listing)
    return True


def _update_spare(tree: Path, root: Path, files: tuple[OutputFile, ...], result: WriteResult,
                  taken: int, entries: dict[str, tuple[int, int, int, int, int, str]]) -> None:
    """Make ``tree`` hold exactly ``files``, writing only what it does not hold already.

    A file the output holds unchanged (``diff_against`` read its bytes) is, in the spare, that
    very file (a hard link of it; linked again if not). A file that changes is kept only when
    its stat matches its record exactly (and, changed close to the record, its bytes hash to
    the recorded digest) and that digest is the new content's; otherwise it is written.
    """
    st = os.lstat(tree)
    if not stat.S_ISDIR(st.st_mode) or st.st_dev != _device(root):
        raise _Odd
    base, out = str(tree), str(root)
    found: dict[str, os.stat_result] = {}
    folders: list[str] = []
    pending = [("", base)]
    while pending:
        prefix, folder = pending.pop()
        with os.scandir(folder) as listing:
            for entry in listing:
                relpath = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    folders.append(relpath)
                    pending.append((relpath + "/", entry.path))
                    continue
                fst = _lstat(entry.path)
                if not stat.S_ISREG(fst.st_mode):
                    raise _Odd  # a symlink, a device, ...
                found[relpath] = fst
    new = {f.path: f.content for f in files}
    for relpath in found:
        if relpath not in new:
            os.unlink(os.path.join(base, relpath))  # noqa: PTH108, PTH118
    needed: set[str] = set()  # the folders the new tree has
    for relpath in new:
        parts = relpath.split("/")[:-1]
        needed.update("/".join(parts[:n]) for n in range(1, len(parts) + 1))
    for folder in sorted(folders, key=lambda f: f.count("/"), reverse=True):
        if folder not in needed:  # emptied above (a file of the new tree may go there)
            try:
                os.rmdir(os.path.join(base, folder))  # noqa: PTH106, PTH118
            except OSError as exc:
                raise _Odd from exc
    changed = set(result.changed)
    made: set[str] = set()
    temporary = os.path.join(base, ".meshplan-writing")  # noqa: PTH118
    for relpath, content in new.items():
        target = os.path.join(base, relpath)  # noqa: PTH118
        have = found.get(relpath)
        link = None
        if relpath not in changed:  # the output holds exactly these bytes
            source = os.path.join(out, relpath)  # noqa: PTH118
            ost = _lstat(source)
            if have is not None and (have.st_dev, have.st_ino) == (ost.st_dev, ost.st_ino):
                continue  # the output's very file
            if stat.S_ISREG(ost.st_mode):
                link = source
        elif have is not None and _holds(target, have, entries.get(relpath), taken, content):
            continue
        folder = os.path.dirname(target)  # noqa: PTH120
        if folder not in made:
            os.makedirs(folder, exist_ok=True)  # noqa: PTH103
            made.add(folder)
        if link is not None:
            os.link(link, temporary)
        else:
            with open(temporary, "wb") as handle:  # noqa: PTH123
                handle.write(content)
        os.replace(temporary, target)  # noqa: PTH105


def _holds(path: str, st: os.stat_result, entry: tuple[int, int, int, int, int, str] | None,
           taken: int, content: bytes) -> bool:
    """Whether the spare file ``path`` (stat ``st``) holds ``content``, by its record."""
    if entry is None or not entry[5] or entry[:5] != (
            st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns):
        return False  # unknown
    if len(content) != st.st_size or _sha(content) != entry[5]:
        return False
    if st.st_ctime_ns >= taken - RACY_NS:  # changed too close to the record to tell by stat
        with open(path, "rb") as handle:  # noqa: PTH123
            return _sha(handle.read()) == entry[5]
    return True


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
        _write_file(target, output.content)


def _write_file(path: str, content: bytes) -> None:
    """Create (or truncate) ``path`` holding ``content``: open, write, close and nothing else
    (``Path.write_bytes`` also stats the file, asks whether it is a terminal and seeks)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


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
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    with contextlib.suppress(OSError):
        status = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                           _RENAME_EXCHANGE)
        return bool(status == 0)
    return False


def _renameat2() -> Any:
    """The C library's ``renameat2``, or None. Looked up first among the symbols the process
    has loaded already (on Linux, Python itself links the C library), by name only then:
    ``find_library`` runs ``ldconfig -p`` in a subprocess, milliseconds of every re-render
    that writes."""
    found = _c_function(None) if sys.platform == "linux" else None
    if found is None:
        libc_name = ctypes.util.find_library("c")
        found = _c_function(libc_name) if libc_name else None
    return found


def _c_function(library: str | None) -> Any:
    """``renameat2`` of ``library`` (None: of the process), or None when it has none."""
    with contextlib.suppress(OSError, AttributeError):
        function = ctypes.CDLL(library, use_errno=True).renameat2
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                             ctypes.c_uint]
        return function
    return None
