"""The render cache: what an incremental render keeps between runs, outside the repository.

Layout of the cache folder (``--cache-dir``, else ``$MESHPLAN_CACHE_DIR``, else
``$XDG_CACHE_HOME/meshplan``, else ``~/.cache/meshplan``)::

    states/<slot>.state          # the last snapshot (meshplan.incremental) of one repository
    blobs/<ab>/<sha256>          # output file contents, named by their SHA-256
    parsed/<code>/<ab>/<sha256>.json  # the documents of a rendered file (meshplan.load.canonical)

Nothing in it is trusted: a state file carries a header with the cache format, meshplan's
version and a fingerprint of meshplan's own code, and the SHA-256 and length of its payload;
a blob must hash to its name. Anything that does not check out (truncated, corrupt, written
by another version, or not a cache file at all) is ignored and the work is done again. Writes
go to a temporary file renamed into place, so a killed run leaves no half-written entry.

A parsed entry (``parsed/``, named by the SHA-256 of a rendered file's bytes, in a folder of
the code fingerprint) is only a candidate: the reader accepts it when writing it out again
gives exactly the file's bytes (:mod:`meshplan.load.canonical`), so a stale or forged entry can
cost time but never change what is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import __version__

CACHE_FORMAT = 1
MAGIC = b"meshplan-render-cache\n"
CACHE_DIR_ENV = "MESHPLAN_CACHE_DIR"
STATES_KEPT = 8  # state files kept (most recently used first); blobs only they name survive
PARSED_KEPT = 60_000  # parsed entries kept (the newest); a 1,000-cluster render writes ~4,000


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


@dataclass(frozen=True)
class RenderCache:
    """A cache folder; ``fingerprint`` is :func:`code_fingerprint` (computed once per run)."""

    root: Path
    fingerprint: str

    @classmethod
    def at(cls, root: Path) -> RenderCache:
        return cls(root, code_fingerprint())

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
        _write_atomically(path, self.frame(payload))
        self._prune()

    def touch_state(self, slot: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self._state_path(slot))

    def frame(self, payload: bytes) -> bytes:
        header = {"format": CACHE_FORMAT, "meshplan": __version__, "code": self.fingerprint,
                  "length": len(payload), "sha256": digest(payload)}
        return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload

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

    def _blob_path(self, name: str) -> Path:
        return self.root / "blobs" / name[:2] / name

    def read_blob(self, name: str) -> bytes | None:
        """The content whose SHA-256 is ``name``, or None when absent or corrupt (or when
        ``name``, read from a state, is not a SHA-256: it would name a path outside the cache)."""
        if not _SHA256.fullmatch(name):
            return None
        try:
            # os.path, not pathlib: thousands of files on the hot path
            with open(os.path.join(self.root, "blobs", name[:2], name), "rb") as handle:  # noqa: PTH118, PTH123
                content = handle.read()
        except OSError:
            return None
        return content if digest(content) == name else None

    def write_blobs(self, contents: Iterable[tuple[str, bytes]]) -> None:
        """Store each (sha256, content) not stored yet."""
        for name, content in contents:
            path = self._blob_path(name)
            if not path.is_file():
                _write_atomically(path, content)

    # -- parsed documents (meshplan.load.canonical) ---------------------------------------

    def _parsed_folder(self) -> str:
        return os.path.join(self.root, "parsed", self.fingerprint[:32])  # noqa: PTH118

    def read_parsed(self, name: str, limit: int) -> bytes | None:
        """The entry of the file whose SHA-256 is ``name``, or None (absent, unreadable, or
        larger than ``limit`` bytes)."""
        if not _SHA256.fullmatch(name):
            return None
        try:
            with open(os.path.join(self._parsed_folder(), name[:2], name + ".json"),  # noqa: PTH118, PTH123
                      "rb") as handle:
                entry = handle.read(limit + 1)
        except OSError:
            return None
        return entry if len(entry) <= limit else None

    def write_parsed(self, entries: Iterable[tuple[str, bytes]]) -> None:
        """Store each (sha256 of a file, entry) not stored yet; entries of other builds of
        meshplan go, and the oldest beyond :data:`PARSED_KEPT`. Never raises on a full or
        read-only cache folder: the cache only saves time."""
        folder = self._parsed_folder()
        wrote = False
        with contextlib.suppress(OSError):
            for name, entry in entries:
                if not _SHA256.fullmatch(name):
                    continue
                path = Path(folder, name[:2], name + ".json")
                if not path.is_file():
                    _write_atomically(path, entry)
                    wrote = True
            if wrote:
                self._prune_parsed(Path(folder))

    def _prune_parsed(self, current: Path) -> None:
        for other in current.parent.iterdir():
            if other != current and other.is_dir():
                shutil.rmtree(other, ignore_errors=True)
        entries = list(current.glob("*/*.json"))
        if len(entries) <= PARSED_KEPT:
            return
        entries.sort(key=_mtime, reverse=True)
        for stale in entries[PARSED_KEPT:]:
            stale.unlink(missing_ok=True)

    # -- housekeeping ---------------------------------------------------------------------

    def _prune(self) -> None:
        """Keep the most recently written states; blobs go when no kept state names them
        (states are JSON naming blobs by digest, so a text search finds the live ones)."""
        states = sorted(self.root.glob("states/*.state"), key=_mtime, reverse=True)
        if len(states) <= STATES_KEPT:
            return
        for stale in states[STATES_KEPT:]:
            stale.unlink(missing_ok=True)
        live: set[str] = set()
        for kept in states[:STATES_KEPT]:
            with contextlib.suppress(OSError):
                live.update(_hex_names(kept.read_bytes()))
        for blob in self.root.glob("blobs/*/*"):
            if blob.name not in live:
                blob.unlink(missing_ok=True)


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _hex_names(raw: bytes) -> set[str]:
    return {m.decode() for m in re.findall(rb"[0-9a-f]{64}", raw)}


def _write_atomically(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise
