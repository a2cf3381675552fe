"""The cache's packs (meshplan.cache.PackStore): one layout for the blob packs and the parsed
entries' packs, pinned to the bytes, so that a cache folder one build of meshplan wrote is read
by another (each still keyed by the code fingerprint, and checked when read)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from meshplan import cache as cache_module
from meshplan.cache import PACK_MAGIC, PARSED_MAGIC, RenderCache

A, B, C = b"alpha", b"be", b"c"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layout(magic: bytes, contents: list[bytes]) -> bytes:
    """A pack as written: its magic line, one line of JSON (name: [offset, length]), the
    contents one after another."""
    entries, offset = [], 0
    for content in contents:
        entries.append(f'"{sha(content)}":[{offset},{len(content)}]')
        offset += len(content)
    return magic + ("{" + ",".join(entries) + "}\n").encode() + b"".join(contents)


def test_blob_and_parsed_packs_are_laid_out_alike(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path, "f" * 64)
    cache.write_blobs([(sha(A), A), (sha(B), B), (sha(A), A)])
    cache.write_parsed([(sha(B), B), (sha(C), C)])
    [blobs] = (tmp_path / "packs").glob("*.pack")
    [parsed] = (tmp_path / "parsed" / ("f" * 32)).glob("*.entries")
    assert blobs.read_bytes() == layout(PACK_MAGIC, [A, B])
    assert parsed.read_bytes() == layout(PARSED_MAGIC, [B, C])
    again = RenderCache(tmp_path, "f" * 64)  # another run
    assert again.read_blobs([sha(A), sha(B), sha(C)]) == [A, B, None]
    assert [again.read_parsed(sha(x), 10) for x in (A, B, C)] == [None, B, C]
    assert again.read_parsed(sha(B), 1) is None  # larger than the limit
    assert RenderCache(tmp_path, "e" * 64).read_parsed(sha(B), 10) is None  # another build


def test_parsed_packs_are_merged_newest_first(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "PARSED_PACKS_KEPT", 1)
    monkeypatch.setattr(cache_module, "PARSED_KEPT", 2)
    folder = tmp_path / "parsed" / ("f" * 32)
    RenderCache(tmp_path, "f" * 64).write_parsed([(sha(A), A)])
    [first] = folder.glob("*.entries")
    first = first.rename(folder / "0.entries")  # first by name, the oldest by time
    os.utime(first, (1000, 1000))
    RenderCache(tmp_path, "f" * 64).write_parsed([(sha(B), B), (sha(C), C)])
    [merged] = folder.glob("*.entries")  # the newest two entries, the newest pack's first
    assert merged.read_bytes() == layout(PARSED_MAGIC, [B, C])


def test_a_merge_that_cannot_read_an_entry_removes_nothing(tmp_path: Path) -> None:
    """A pack gone meanwhile (another run merged it): the packs stay, merged another time."""
    cache = RenderCache(tmp_path, "f" * 64)
    cache.write_blobs([(sha(A), A)])
    cache.write_blobs([(sha(B), B)])
    packs = sorted(cache.blobs.packs())
    where = dict(cache.blobs.where())
    del where[""]
    gone = Path(where[sha(A)][0])
    gone.rename(tmp_path / "elsewhere")
    cache.blobs.merge(where, packs)
    assert sorted(cache.blobs.packs()) == [p for p in packs if p != gone]
    (tmp_path / "elsewhere").rename(gone)
    cache.blobs.merge(where, packs)
    [merged] = cache.blobs.packs()
    assert merged.read_bytes() in (layout(PACK_MAGIC, [A, B]), layout(PACK_MAGIC, [B, A]))
    assert RenderCache(tmp_path, "f" * 64).read_blobs([sha(A), sha(B)]) == [A, B]
