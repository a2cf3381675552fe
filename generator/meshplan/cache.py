"""The render cache: what an incremental render keeps between runs, outside the repository.

Layout of the cache folder (``--cache-dir``, else ``$MESHPLAN_CACHE_DIR``, else
``$XDG_CACHE_HOME/meshplan``, else ``~/.cache/meshplan``)::

    states/<slot>.state          # the last snapshot (meshplan.incremental) of one repository
    packs/<pid>-<random>.pack    # blobs (output and input file contents, named by SHA-256)
    parsed/<code>/<pid>-<random>.entries  # rendered files' documents (meshplan.load.canonical)
    spares/<key>/tree, record    # the output tree a render swapped out (meshplan.write)

A pack holds the blobs one run stored, after a header naming each blob's offset and length:
one file per run, as creating thousands of small files would cost a cold render more than a
tenth of its time. A pack goes when no kept state names any of its blobs.

Nothing in it is trusted: a state file carries a header with the cache format, meshplan's
version and a fingerprint of meshplan's own code, and the SHA-256 and length of its payload;
a blob must hash to its name. Anything that does not check out (truncated, corrupt, written
by another version, or not a cache file at all) is ignored and the work is done again. Writes
go to a temporary file renamed into place, so a killed run leaves no half-written entry.

A parsed entry (``parsed/``, named by the SHA-256 of a rendered file's bytes, in a folder of
the code fingerprint) is only a candidate: the reader accepts it when writing it out again
gives exactly the file's bytes (:mod:`meshplan.load.canonical`), so a stale or forged entry can
cost time but never change what is read. The entries one run stores go in one file (an
``.entries`` pack, laid out as a blob pack under its own magic line, which names its format:
a file of another format or a header that does not check out is ignored), not one file each.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from . import __version__

CACHE_FORMAT = 2  # 2: blobs in packs
MAGIC = b"meshplan-render-cache\n"
PACK_MAGIC = b"meshplan-render-pack\n"
CACHE_DIR_ENV = "MESHPLAN_CACHE_DIR"
STATES_KEPT = 8  # state files kept (most recently used first); packs only they name survive
PACKS_KEPT = 32  # more packs than this: those no kept state names go, the rest are compacted
PACK_GRACE_SECONDS = 600.0  # a younger pack is left alone: a run may be writing its state
PARSED_KEPT = 60_000  # parsed entries kept (the newest); a 1,000-cluster render writes ~4,000
PARSED_MAGIC = b"meshplan-parsed-entries 1\n"  # the format of an .entries pack
PARSED_PACKS_KEPT = 16  # more .entries packs than this are merged into one


def default_cache_dir() -> Path:
    """``$MESHPLAN_CACHE_DIR``, else ``$XDG_CACHE_HOME/meshplan``, else ``~/.cache/meshplan``."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "meshplan"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_fingerprint() -> str:
    """meshplan's version and a digest of its own code and data files: a cache written by any
    other build of meshplan (even an unreleased edit) is never read."""
    package = Path(__file__).resolve().parent
    h = hashlib.sha256(__version__.encode())
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".json", ".j2", ".jinja", ".yaml") and path.is_file():
            h.update(path.relative_to(package).as_posix().encode() + b"\0")
            h.update(path.read_bytes())
    return h.hexdigest()


def slot_for(repo: Path, purpose: str = "render") -> str:
    """The state slot of a repository (by its resolved path) and purpose."""
    return digest(f"{purpose}\0{repo.resolve()}".encode())[:32]


# where each stored entry of a pack folder is: name -> (pack path, offset, length)
PackIndex = dict[str, tuple[str, int, int]]


@dataclass(frozen=True)
class PackStore:
    """A folder of packs: files named ``<pid>-<random><suffix>``, each its ``magic`` line, a
    header (one line of JSON: name -> [offset after the header, length]) and the contents.
    Where two packs name one entry, the first in name order is read, or the newest
    (``newest_first``). Used for the blobs and for the parsed entries alike."""

    folder: Path
    suffix: str
    magic: bytes
    newest_first: bool = False
    # where each entry is (see where): filled on first use, extended by write
    index: PackIndex = field(default_factory=dict, compare=False, repr=False)

    def packs(self) -> list[Path]:
        return list(self.folder.glob(f"*{self.suffix}"))

    def where(self) -> PackIndex:
        """Where each stored entry is, read once per run from the packs' headers (a pack
        that does not check out, or of another format, is left out)."""
        index = self.index
        if index:
            return index
        packs = self.packs()
        ordered = sorted(packs, key=_mtime, reverse=True) if self.newest_first else sorted(packs)
        for pack in ordered:
            found = _pack_index(pack, self.magic)
            if found is not None:
                for name, (offset, length) in found.items():
                    index.setdefault(name, (str(pack), offset, length))
        index.setdefault("", ("", 0, 0))  # read: an empty folder is not listed again
        return index

    def write(self, entries: Sequence[tuple[str, int]], contents: Iterable[bytes]) -> None:
        """A new pack of ``contents`` (streamed: not all in memory at once), whose names and
        lengths are ``entries``."""
        known = self.where()
        known.update(self._put(entries, contents))

    def _put(self, entries: Sequence[tuple[str, int]], contents: Iterable[bytes]) -> PackIndex:
        index: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, length in entries:
            index[name] = (offset, length)
            offset += length
        if all(map(_SHA256.fullmatch, index)):  # nothing to escape: json.dumps' text, directly
            header = "{" + ",".join([f'"{name}":[{start},{length}]'
                                     for name, (start, length) in index.items()]) + "}"
        else:
            header = json.dumps(index, separators=(",", ":"))
        head = self.magic + header.encode() + b"\n"
        path = self.folder / f"{os.getpid()}-{os.urandom(8).hex()}{self.suffix}"
        _write_atomically(path, head, contents)
        return {name: (str(path), len(head) + start, length)
                for name, (start, length) in index.items()}

    def merge(self, where: Mapping[str, tuple[str, int, int]], packs: Iterable[Path]) -> None:
        """Copy the entries ``where`` says into one new pack and remove ``packs``; when one
        cannot be read whole (its pack went away meanwhile), nothing is removed (merged
        another time). Each content is still checked when read (a blob against its name, a
        parsed entry by writing it back)."""

        def contents() -> Iterator[bytes]:
            with _pack_reader() as read:
                for pack, offset, length in where.values():
                    content = read(pack, offset, length)
                    if content is None:
                        raise OSError(f"{pack} is shorter than its header says")
                    yield content

        try:
            self._put([(name, length) for name, (_, _, length) in where.items()], contents())
        except OSError:
            return
        finally:
            self.index.clear()  # listed again when next needed
        for pack in packs:
            pack.unlink(missing_ok=True)


@dataclass(frozen=True)
class RenderCache:
    """A cache folder; ``fingerprint`` is :func:`code_fingerprint` (computed once per run)."""

    root: Path
    fingerprint: str
    # blobs this process made or checked, each under its SHA-256 (:meth:`hold`)
    held: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def at(cls, root: Path) -> RenderCache:
        return cls(root, code_fingerprint())

    @cached_property
    def blobs(self) -> PackStore:
        """The blob packs (``packs/*.pack``)."""
        return PackStore(self.root / "packs", ".pack", PACK_MAGIC)

    @cached_property
    def parsed(self) -> PackStore:
        """The parsed entries of this build of meshplan (``parsed/<code>/*.entries``), the
        newest pack's first."""
        return PackStore(self.root / "parsed" / self.fingerprint[:32], ".entries", PARSED_MAGIC,
                         newest_first=True)

    # -- states ---------------------------------------------------------------------------

    def _state_path(self, slot: str) -> Path:
        return self.root / "states" / f"{slot}.state"

    def read_state(self, slot: str) -> bytes | None:
        """The payload of a slot's state, or None when absent or not to be trusted."""
        try:
            raw = self._state_path(slot).read_bytes()
        except OSError:
            return None
        return self.unframe(raw)

    def write_state(self, slot: str, payload: bytes) -> None:
        path = self._state_path(slot)
        _write_atomically(path, self._frame_head(payload), (payload,))  # not copied whole
        self._prune(force=len(self.blobs.packs()) > PACKS_KEPT)

    def touch_state(self, slot: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self._state_path(slot))

    def frame(self, payload: bytes) -> bytes:
        return self._frame_head(payload) + payload

    def _frame_head(self, payload: bytes) -> bytes:
        header = {"format": CACHE_FORMAT, "meshplan": __version__, "code": self.fingerprint,
                  "length": len(payload), "sha256": digest(payload)}
        return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n"

    def unframe(self, raw: bytes) -> bytes | None:
        """The payload of a framed state, or None if anything about it does not check out."""
        if not raw.startswith(MAGIC):
            return None
        end = raw.find(b"\n", len(MAGIC))
        if end < 0:
            return None
        try:
            header = json.loads(raw[len(MAGIC):end])
        except ValueError:
            return None
        payload = raw[end + 1:]
        expected = {"format": CACHE_FORMAT, "meshplan": __version__, "code": self.fingerprint,
                    "length": len(payload)}
        if not isinstance(header, dict) or any(header.get(k) != v for k, v in expected.items()):
            return None
        if header.get("sha256") != digest(payload):
            return None
        return payload

    # -- blobs ----------------------------------------------------------------------------

    def read_blob(self, name: str) -> bytes | None:
        """The content whose SHA-256 is ``name``, or None when absent or corrupt (or when
        ``name``, read from a state, is not a SHA-256)."""
        return self.read_blobs([name])[0]

    def hold(self, contents: Iterable[tuple[str, bytes]]) -> None:
        """Keep these (sha256, content) in memory for this process's later reads: contents it
        made itself or read and checked, named by their SHA-256 (``meshplan diff`` renders the
        head from the base it rendered the moment before, not from the pack it wrote)."""
        self.held.update(contents)

    def read_blobs(self, names: Sequence[str]) -> list[bytes | None]:
        """:meth:`read_blob` of each name, opening each pack once (a held blob from memory)."""
        index = self.blobs.where()
        held = self.held
        out: list[bytes | None] = []
        with _pack_reader() as read:
            for name in names:
                kept = held.get(name)
                if kept is not None:
                    out.append(kept)
                    continue
                where = index.get(name) if _SHA256.fullmatch(name) else None
                content = read(*where) if where is not None else None
                out.append(content if content is not None and digest(content) == name
                           else None)
        return out

    def write_blobs(self, contents: Iterable[tuple[str, bytes]]) -> None:
        """Store each (sha256, content) not stored yet, all in one new pack: one file per
        run, not one per blob (creating files is what costs, at thousands of them)."""
        new = _not_stored(self.blobs.where(), contents)
        if new:
            self.blobs.write([(name, len(content)) for name, content in new.items()],
                             new.values())

    # -- parsed documents (meshplan.load.canonical) ---------------------------------------

    def read_parsed(self, name: str, limit: int) -> bytes | None:
        """The entry of the file whose SHA-256 is ``name``, or None (absent, unreadable, or
        larger than ``limit`` bytes)."""
        where = self.parsed.where().get(name) if _SHA256.fullmatch(name) else None
        if where is None or where[2] > limit:
            return None
        with _pack_reader() as read:
            return read(*where)

    def write_parsed(self, entries: Iterable[tuple[str, bytes]]) -> None:
        """Store each (sha256 of a file, entry) not stored yet, all in one new pack; entries
        of other builds of meshplan go, and the packs are merged when there are many. Never
        raises on a full or read-only cache folder: the cache only saves time."""
        new = _not_stored(self.parsed.where(), entries)
        if not new:
            return
        with contextlib.suppress(OSError):
            self.parsed.write([(name, len(entry)) for name, entry in new.items()],
                              new.values())
            self._prune_parsed()

    def _prune_parsed(self) -> None:
        """Remove the entries of other builds; merge the packs into one (the newest
        :data:`PARSED_KEPT` entries) when there are more than :data:`PARSED_PACKS_KEPT`."""
        current = self.parsed.folder
        for other in current.parent.iterdir():
            if other != current and other.is_dir():
                shutil.rmtree(other, ignore_errors=True)
        packs = self.parsed.packs()
        if len(packs) <= PARSED_PACKS_KEPT:
            return
        self.parsed.index.clear()  # listed again: the newest pack first
        kept = dict(itertools.islice(
            ((name, where) for name, where in self.parsed.where().items() if name),
            PARSED_KEPT))
        self.parsed.merge(kept, packs)

    # -- housekeeping ---------------------------------------------------------------------

    def _prune(self, *, force: bool = False) -> None:
        """Keep the most recently written states; a pack goes when no kept state names any
        of its blobs (states are JSON naming blobs by digest, so a text search finds the live
        ones). Packs are pruned when there are too many states, or too many packs; past half
        :data:`PACKS_KEPT`, the live blobs are copied into one pack (what no state names any
        more is dropped): the cache stays within about the size of its states' outputs,
        however many incremental runs wrote a pack each."""
        states = sorted(self.root.glob("states/*.state"), key=_mtime, reverse=True)
        if len(states) <= STATES_KEPT and not force:
            return
        for stale in states[STATES_KEPT:]:
            stale.unlink(missing_ok=True)
        shutil.rmtree(self.root / "blobs", ignore_errors=True)  # format 1's loose blobs
        live: set[str] = set()
        for kept in states[:STATES_KEPT]:
            with contextlib.suppress(OSError):
                live.update(_hex_names(kept.read_bytes()))
        young = time.time() - PACK_GRACE_SECONDS
        live_packs: list[Path] = []
        where: PackIndex = {}
        for pack in self.blobs.packs():
            if _mtime(pack) >= young:
                continue  # young: kept, its header not read
            found = _pack_index(pack)
            if found is None or live.isdisjoint(found):
                pack.unlink(missing_ok=True)
                continue
            live_packs.append(pack)
            for name, (offset, length) in found.items():
                if name in live:
                    where.setdefault(name, (str(pack), offset, length))
        if len(live_packs) > PACKS_KEPT // 2:
            self.blobs.merge(where, live_packs)
        self.blobs.index.clear()


def _not_stored(known: PackIndex, contents: Iterable[tuple[str, bytes]]) -> dict[str, bytes]:
    """Those of (sha256, content) not in ``known`` and named by a SHA-256, the first of each."""
    new: dict[str, bytes] = {}
    for name, content in contents:
        if name not in known and _SHA256.fullmatch(name):
            new.setdefault(name, content)
    return new


@contextlib.contextmanager
def _pack_reader() -> Iterator[Callable[[str, int, int], bytes | None]]:
    """``read(pack, offset, length)``: those bytes of a pack, or None when it cannot be read
    or is shorter; each pack is opened once (closed on leaving)."""
    handles: dict[str, int | None] = {}

    def read(pack: str, offset: int, length: int) -> bytes | None:
        if pack in handles:
            fd = handles[pack]
        else:
            try:
                fd = handles[pack] = os.open(pack, os.O_RDONLY)
            except OSError:
                fd = handles[pack] = None
        if fd is None:
            return None
        try:
            content = os.pread(fd, length, offset)
        except OSError:
            return None
        return content if len(content) == length else None

    try:
        yield read
    finally:
        for fd in handles.values():
            if fd is not None:
                os.close(fd)


def _pack_index(pack: Path, magic: bytes = PACK_MAGIC) -> dict[str, tuple[int, int]] | None:
    """A pack's blobs: name -> (offset in the file, length); None when it does not start with
    ``magic`` or its header does not check out (each blob's content is still checked against
    its name when read; a parsed entry, by writing it back)."""
    try:
        with pack.open("rb") as handle:
            if handle.readline() != magic:
                return None
            header = handle.readline()
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return None
    try:
        index = json.loads(header)
    except ValueError:
        return None
    if not isinstance(index, dict):
        return None
    start = len(magic) + len(header)
    out = {}
    for name, entry in index.items():  # thousands: no generator per entry
        if type(entry) is not list or len(entry) != 2:
            return None
        offset, length = entry
        if type(offset) is not int or type(length) is not int or offset < 0 or length < 0 \
                or start + offset + length > size:
            return None
        out[name] = (start + offset, length)
    return out


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _hex_names(raw: bytes) -> set[str]:
    return {m.decode() for m in re.findall(rb"[0-9a-f]{64}", raw)}


def _write_atomically(path: Path, head: bytes, rest: Iterable[bytes] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        try:
            _write_all(fd, itertools.chain((head,), rest))
        finally:
            os.close(fd)
        Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise


# What one system call writes: at most this many buffers (IOV_MAX is 1,024 on Linux), and
# about this many bytes (calls of tens of MB cost the kernel several times as much, at times:
# 0.15-0.35 s instead of 0.05 s for a cold render's pack, measured)
_BATCH = 512
_BATCH_BYTES = 1 << 20


def _write_all(fd: int, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``fd`` from the buffers as they are: about a megabyte per system
    call (``os.writev``), neither joined nor copied into a file object's buffer first (a cold
    render's pack is thousands of contents, about 180 MB at a thousand clusters)."""
    writev = getattr(os, "writev", None)  # not on Windows
    batch: list[bytes | memoryview] = []
    size = 0
    for whole in chunks:
        if writev is None:
            _writev_all(fd, [whole], None)
            continue
        # a large chunk (a state, a big file) a megabyte at a time too
        parts = (whole,) if len(whole) <= _BATCH_BYTES else (
            memoryview(whole)[at:at + _BATCH_BYTES] for at in range(0, len(whole), _BATCH_BYTES))
        for chunk in parts:
            batch.append(chunk)
            size += len(chunk)
            if len(batch) == _BATCH or size >= _BATCH_BYTES:
                _writev_all(fd, batch, writev)
                batch, size = [], 0
    if batch:
        _writev_all(fd, batch, writev)


def _writev_all(fd: int, buffers: list[bytes | memoryview],
                writev: Callable[[int, Sequence[bytes | memoryview]], int] | None) -> None:
    """Write every byte of ``buffers``, going on after a short write."""
    start = 0
    while start < len(buffers):
        if writev is None:
            written = os.write(fd, buffers[start])
        else:
            written = writev(fd, buffers[start:] if start else buffers)
        while start < len(buffers) and written >= len(buffers[start]):
            written -= len(buffers[start])
            start += 1
        if written:  # part of buffers[start] was written
            buffers[start] = memoryview(buffers[start])[written:]
