"""What a render through the cache keeps for later runs, taken cheaply: the cluster records as
each cluster is rendered (incremental.ClusterRecords), the lines a snapshot was saved as, and
``meshplan diff``'s head rendered from the base's files in memory (RenderCache.hold)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from meshplan import pipeline
from meshplan.cache import RenderCache, digest, slot_for
from meshplan.gitdiff import format_markdown
from meshplan.incremental import (
    CachedCopies,
    ClusterRecord,
    ClusterRecords,
    SharedFlags,
    cluster_record,
    files_by_cluster,
    list_inputs,
    snapshot_bytes,
    snapshot_from_bytes,
)
from meshplan.outputs import OutputFile
from meshplan.refine import ClusterPlan, Manifest
from meshplan.render import FILE_FOR_KIND, render
from meshplan.vocabulary import GLOBAL_SERVICE_ANNOTATION, SHARED_SERVICE_ANNOTATION

from benchmarks.workload import generate, mutate_one_requirement
from tests.support.spies import render_cached_modes


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    generate("4x3x8x60", 2, repo)
    return repo


def test_records_taken_while_rendering_are_those_of_a_pass_afterwards(fleet: Path) -> None:
    analysis = pipeline.analyse(fleet)
    assert analysis.plan is not None and analysis.inventory is not None
    records = ClusterRecords()
    rendered = render(analysis.plan, analysis.inventory, each_cluster=records)
    files_of = files_by_cluster(rendered.files)
    assert records == {c.cluster.path: cluster_record(c, files_of[c.cluster.path])
                       for c in analysis.plan.clusters}
    assert any(record.copies for record in records.values())
    counts = {"policies": 0, "services": 0, "namespaces": 0}
    for cluster in analysis.plan.clusters:  # the summary, counted object by object
        for manifest in cluster.objects:
            name = FILE_FOR_KIND[manifest.key.kind].removesuffix(".yaml")
            counts[name] = counts.get(name, 0) + 1
    summary = rendered.summary
    assert (summary.clusters, summary.policies, summary.services, summary.namespaces) == (
        len(analysis.plan.clusters), counts["policies"], counts["services"],
        counts["namespaces"])
    assert rendered == render(analysis.plan, analysis.inventory)


def test_a_record_from_the_render_groups_is_that_of_a_pass_over_every_object(fleet: Path
                                                                           ) -> None:
    """The render hands each cluster's objects by file to ``each_cluster``: the record counts
    them by those groups and reads the copies of the Services only, each shared body's
    annotations once for the fleet; the same record as one taken object by object."""
    analysis = pipeline.analyse(fleet)
    assert analysis.plan is not None and analysis.inventory is not None
    taken: list[tuple[ClusterRecord, ClusterRecord]] = []

    def each(cluster: ClusterPlan, files: list[OutputFile],
             groups: dict[str, list[Manifest]]) -> None:
        taken.append((cluster_record(cluster, files), cluster_record(cluster, files, flags,
                                                                     groups)))

    flags: SharedFlags = {}
    render(analysis.plan, analysis.inventory, each_cluster=each)
    assert len(taken) == len(analysis.plan.clusters)
    assert all(alone == grouped for alone, grouped in taken)
    assert flags and any(grouped.copies for _, grouped in taken)
    # a body refinement shares between clusters is read once, under its own name
    for shared, text in flags.values():
        metadata = shared["metadata"]
        found = service_copy_flags(shared)
        assert (text is None) == (found is None)
        if text is not None:
            assert json.loads(f"{{{text}}}") == {
                f"{metadata['namespace']}/{metadata['name']}": list(found or ())}
    # the copies as the snapshot saves them: the text json writes of them as a dict
    for alone, grouped in taken:
        assert isinstance(grouped.copies, CachedCopies)
        assert grouped.copies.text == json.dumps(dict(alone.copies), separators=(",", ":"))


def test_a_saved_snapshot_carries_the_lines_it_was_saved_as(fleet: Path, tmp_path: Path
                                                             ) -> None:
    """So a snapshot computed from it (``meshplan diff``'s head from its base) saves only the
    records that changed, as one read back from the cache does."""
    cache = RenderCache.at(tmp_path / "cache")
    result = pipeline.render_cached(fleet, cache)
    assert result.mode.startswith("full") and result.snapshot is not None
    payload = cache.read_state(slot_for(fleet))
    assert payload is not None
    read = snapshot_from_bytes(payload)
    assert read is not None and read == result.snapshot
    assert result.snapshot.lines.keys() == read.lines.keys()
    assert all(line == read.lines[key][1] for key, (_, line) in result.snapshot.lines.items())
    again: dict[str, tuple[object, bytes]] = {}
    assert snapshot_bytes(result.snapshot, result.snapshot, again) == payload
    assert all(line is result.snapshot.lines[key][1] for key, (_, line) in again.items())


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
                   cwd=repo, check=True, capture_output=True)


def test_the_diff_renders_the_head_from_the_base_in_memory(
        fleet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no output file stored in the packs (only the inputs), the head still renders
    incrementally from the base's files (held in memory), and the report is the one of a diff
    without the cache."""
    git(fleet, "init", "-q", "-b", "main")
    git(fleet, "add", "-A")
    git(fleet, "commit", "-q", "-m", "fleet")
    base_inputs = {digest(path.read_bytes()) for folder in ("inventory", "requirements")
                   for path in (fleet / folder).rglob("*") if path.is_file()}
    mutate_one_requirement(fleet)
    report, _ = pipeline.diff_repository(fleet, "HEAD", with_flows=True)
    expected = format_markdown(report)
    store = RenderCache.write_blobs

    def inputs_only(self: RenderCache, contents: Iterable[tuple[str, bytes]]) -> None:
        store(self, [(name, content) for name, content in contents if name in base_inputs])

    monkeypatch.setattr(RenderCache, "write_blobs", inputs_only)
    modes = render_cached_modes(monkeypatch)
    report, _ = pipeline.diff_repository(fleet, "HEAD", with_flows=True,
                                         cache=RenderCache.at(tmp_path / "cache"))
    assert format_markdown(report) == expected
    assert len(modes) == 2 and modes[0].startswith("full") and modes[1] == "incremental", modes


def test_a_held_blob_is_read_from_memory_and_others_from_the_packs(tmp_path: Path) -> None:
    cache = RenderCache.at(tmp_path / "cache")
    stored, held = b"stored\n", b"held\n"
    cache.write_blobs([(digest(stored), stored)])
    cache.hold([(digest(held), held)])
    assert cache.read_blobs([digest(stored), digest(held), digest(b"absent")]) == [
        stored, held, None]
    assert RenderCache.at(tmp_path / "cache").read_blob(digest(held)) is None  # this run's only


def test_an_incremental_run_analyses_the_bytes_it_listed_and_digested(
        fleet: Path, tmp_path: Path) -> None:
    """A file changed again after the run listed (and digested) it: the run analyses the bytes
    it recorded under that digest, not whatever is on disk by the time it parses."""
    cache = RenderCache.at(tmp_path / "cache")
    pipeline.render_cached(fleet, cache)
    before = {p: p.read_bytes() for p in (fleet / "requirements").rglob("*.yaml")}
    mutate_one_requirement(fleet)
    changed = [p for p, raw in before.items() if p.read_bytes() != raw]
    assert len(changed) == 1
    listed = list_inputs(fleet)
    expected, _ = pipeline.render_repository(fleet)
    changed[0].write_bytes(before[changed[0]])  # on disk again as the snapshot has it
    result = pipeline.render_cached(fleet, cache, inputs=listed)
    assert result.mode == "incremental"
    assert result.rendered.files == expected.files


def test_a_pack_is_written_whole_through_short_writes(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The pack goes out about a megabyte per system call (os.writev: many small contents in
    one call, a large one sliced); a call that writes less than it was given (allowed, if
    rare, for files) is taken up where it stopped."""
    import os

    writev = os.writev
    calls = []

    def short(fd: int, buffers: list[bytes]) -> int:  # at most 1,000 bytes a call
        calls.append(len(buffers))
        assert len(calls) < 100_000, "not going on where the last call stopped"
        assert sum(len(b) for b in buffers) <= 2 << 20  # about a megabyte a call
        return writev(fd, [memoryview(b"".join(buffers))[:1000]])

    contents = [bytes([n % 251]) * (n * 37 % 5000) for n in range(1200)]  # some empty
    contents.append(bytes(range(256)) * 12_000)  # 3 MB: written a megabyte at a time
    monkeypatch.setattr(os, "writev", short)
    RenderCache.at(tmp_path / "cache").write_blobs((digest(c), c) for c in contents)
    monkeypatch.undo()
    assert len(calls) > 1200 and max(calls) <= 512
    read = RenderCache.at(tmp_path / "cache").read_blobs([digest(c) for c in contents])
    assert read == contents
    pack, = (tmp_path / "cache" / "packs").glob("*.pack")
    index = json.loads(pack.read_bytes().split(b"\n", 2)[1])
    assert index[digest(b"")] == [0, 0] and len(index) == len(set(contents))


def service_copy_flags(body: Mapping[str, Any]) -> tuple[str | None, str | None] | None:
    annotations = body["metadata"].get("annotations") or {}
    found = (annotations.get(GLOBAL_SERVICE_ANNOTATION),
             annotations.get(SHARED_SERVICE_ANNOTATION))
    return None if found == (None, None) else found


@pytest.mark.parametrize("name", ["team-a/api", 'odd"name\\x/é\u2028', ""])
@pytest.mark.parametrize("found", [("true", "false"), ("true", None), (None, "é")])
def test_a_copy_entry_is_written_as_json_writes_it(name: str,
                                                   found: tuple[str | None, str | None]
                                                   ) -> None:
    from meshplan.incremental import _copy_text

    for _ in range(2):  # the second time from the memo of annotation texts
        assert "{" + _copy_text(name, found) + "}" == json.dumps(
            {name: list(found)}, separators=(",", ":"))
