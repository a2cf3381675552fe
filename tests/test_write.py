"""Writing the output folder: atomic, minimal, and careful with folders it does not own.

Covers ``meshplan render`` (``--out``, ``--check``) and :func:`meshplan.write.write_tree` on
copies of the bundled example.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from meshplan import write
from meshplan.diagnostics import OperationError
from meshplan.outputs import OUTPUT_MARKER, OutputFile, read_tree
from meshplan.write import write_tree

from tests.support.cli import run_cli
from tests.support.repos import REPO_ROOT
from tests.support.semantics import render_files


def example(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for top in ("inventory", "requirements"):
        shutil.copytree(REPO_ROOT / top, repo / top)
    return repo


def render(repo: Path, out: Path) -> tuple[int, str, str]:
    return run_cli(["render", "--repo", str(repo), "--out", str(out)])


def stats(root: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (inode, mtime_ns) of every file, plus the folder itself as ''."""
    out = {p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
           for p in root.rglob("*") if p.is_file()}
    out[""] = (root.stat().st_ino, root.stat().st_mtime_ns)
    return out


def edit_requirement(repo: Path) -> None:
    """Describe backend.yaml's policy: changes exactly domain1's two policies files."""
    path = repo / "requirements" / "domain1" / "backend.yaml"
    text = path.read_text("utf-8")
    path.write_text(text.replace("spec:\n", "spec:\n  description: edited\n", 1),
                    encoding="utf-8")


def undo_edit(repo: Path) -> None:
    path = repo / "requirements" / "domain1" / "backend.yaml"
    text = path.read_text("utf-8")
    path.write_text(text.replace("spec:\n  description: edited\n", "spec:\n", 1),
                    encoding="utf-8")


def files_of(repo: Path) -> tuple[OutputFile, ...]:
    files, _ = render_files(repo)
    return tuple(OutputFile(p, c) for p, c in sorted(files.items()))


# --------------------------------------------------------------------------- minimal writes


def test_no_op_render_rewrites_nothing(tmp_path: Path) -> None:
    repo, out = example(tmp_path), tmp_path / "out"
    assert render(repo, out)[0] == 0
    before = stats(out)
    code, stdout, _ = render(repo, out)
    assert code == 0 and "unchanged" in stdout
    assert stats(out) == before


def test_a_change_rewrites_only_the_files_it_changes(tmp_path: Path) -> None:
    repo, out = example(tmp_path), tmp_path / "out"
    assert render(repo, out)[0] == 0
    old_bytes, before = read_tree(out), stats(out)
    edit_requirement(repo)
    code, stdout, _ = render(repo, out)
    assert code == 0
    new_bytes, after = read_tree(out), stats(out)
    changed = {p for p in new_bytes if old_bytes.get(p) != new_bytes[p]}
    assert changed == {"clusters/domain1/cl1/policies.yaml", "clusters/domain1/cl2/policies.yaml"}
    assert "2 file(s) written, 0 removed" in stdout
    assert new_bytes == render_files(repo)[0]
    for path in new_bytes:
        if path in changed:
            assert after[path][0] != before[path][0], path
        else:
            assert after[path] == before[path], path  # same inode, same mtime


def test_files_no_longer_generated_are_removed(tmp_path: Path) -> None:
    repo, out = example(tmp_path), tmp_path / "out"
    assert render(repo, out)[0] == 0
    for name in ("allow-domain1.yaml", "frontend.yaml"):
        (repo / "requirements" / "domain2" / name).unlink()
    old = read_tree(out)
    result = write_tree(out, files_of(repo))
    gone = set(old) - set(render_files(repo)[0])
    assert {"clusters/domain2/cl3/policies.yaml", "clusters/domain2/cl4/policies.yaml"} <= gone
    assert set(result.removed) == gone
    assert read_tree(out) == render_files(repo)[0]
    assert not any((out / p).exists() for p in gone)


def test_new_output_folder_gets_ordinary_permissions(tmp_path: Path) -> None:
    repo, out = example(tmp_path), tmp_path / "out"
    reference = tmp_path / "reference"
    reference.mkdir()  # what any new folder gets under the current umask
    assert render(repo, out)[0] == 0
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)
    out.chmod(0o750)
    edit_requirement(repo)
    assert render(repo, out)[0] == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o750  # a rewrite keeps the folder's mode


def test_new_files_get_ordinary_permissions(tmp_path: Path) -> None:
    repo, out = example(tmp_path), tmp_path / "out"
    reference = tmp_path / "reference.txt"
    umask = os.umask(0o027)  # not the default: the files must follow it
    try:
        reference.write_bytes(b"")  # what any new file gets under this umask
        assert render(repo, out)[0] == 0
    finally:
        os.umask(umask)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert modes == {stat.S_IMODE(reference.stat().st_mode)} == {0o640}


# --------------------------------------------------------------------------- atomicity


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}.meshplan-"))


def test_failure_mid_write_leaves_the_old_output(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    repo, out = example(tmp_path), tmp_path / "out"
    assert render(repo, out)[0] == 0
    before_bytes, before = read_tree(out), stats(out)
    edit_requirement(repo)
    files = files_of(repo)
    real_write_file = write._write_file
    calls = 0

    def failing_write_file(path: str, content: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        real_write_file(path, content)

    monkeypatch.setattr(write, "_write_file", failing_write_file)
    with pytest.raises(OperationError, match=r"No space left.*previous output is unchanged"):
        write_tree(out, files)
    monkeypatch.undo()
    assert calls == 2
    assert read_tree(out) == before_bytes
    assert stats(out) == before
    assert leftovers(tmp_path, "out") == []
    # ... and the next run completes normally.
    write_tree(out, files)
    assert read_tree(out) == {f.path: f.content for f in files}


def top_marked(path: Path) -> bool:
    """Whether the folder carries chattr's +T, as e2fsprogs' ``lsattr`` reads it (not
    through meshplan's ioctl numbers, which this checks)."""
    listed = subprocess.run(["lsattr", "-d", str(path)], capture_output=True, text=True,
                            check=True).stdout
    return "T" in listed.split(" ", 1)[0]


def test_a_new_tree_is_built_in_a_folder_marked_as_the_top_of_unrelated_trees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()
    if shutil.which("chattr") is None or shutil.which("lsattr") is None or subprocess.run(
            ["chattr", "+T", str(probe)], capture_output=True).returncode != 0:
        pytest.skip("no chattr +T here (e2fsprogs, or a file system with the flag)")
    real_fill = write._fill
    seen: list[tuple[Path, bool, bool]] = []

    def spy(staging: Path, old_root: Path, files: tuple[OutputFile, ...],
            changed: set[str]) -> None:
        seen.append((staging.parent.parent, top_marked(staging.parent), top_marked(staging)))
        real_fill(staging, old_root, files, changed)

    monkeypatch.setattr(write, "_fill", spy)
    repo, out = example(tmp_path), tmp_path / "out"
    write_tree(out, files_of(repo))  # a new output
    edit_requirement(repo)
    files = files_of(repo)
    write_tree(out, files)  # replacing one
    # built two levels below the output's parent, under the mark; the tree itself unmarked
    assert seen == [(tmp_path, True, False), (tmp_path, True, False)]
    assert not top_marked(out) and not top_marked(tmp_path)
    assert read_tree(out) == {f.path: f.content for f in files}
    assert leftovers(tmp_path, "out") == []


def changed_repo_without_renameat2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> tuple[Path, Path, dict[str, bytes]]:
    """A rendered output, a changed requirement, and the two-rename swap (no renameat2).

    Returns (repo, out, the output's bytes before the next write).
    """
    repo, out = example(tmp_path), tmp_path / "out"
    assert render(repo, out)[0] == 0
    before_bytes = read_tree(out)
    edit_requirement(repo)
    monkeypatch.setattr(write, "_rename_exchange", lambda a, b: False)
    return repo, out, before_bytes


def test_failure_while_swapping_without_renameat2_restores_the_old_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo, out, before_bytes = changed_repo_without_renameat2(tmp_path, monkeypatch)
    real_rename = Path.rename

    def failing_rename(self: Path, target: str | os.PathLike[str]) -> Path:
        staging = self.name.startswith(".out.meshplan-") and not self.name.endswith(".old")
        if Path(target) == out and staging:
            raise OSError(5, "I/O error")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OperationError, match="I/O error"):
        write_tree(out, files_of(repo))
    monkeypatch.undo()
    assert read_tree(out) == before_bytes
    assert leftovers(tmp_path, "out") == []


def test_two_rename_fallback_gives_the_same_tree(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    repo, out = example(tmp_path), tmp_path / "out"
    assert render(repo, out)[0] == 0
    edit_requirement(repo)
    monkeypatch.setattr(write, "_rename_exchange", lambda a, b: False)
    result = write_tree(out, files_of(repo))
    assert len(result.changed) == 2
    assert read_tree(out) == render_files(repo)[0]
    assert leftovers(tmp_path, "out") == []


# --------------------------------------------------------------------------- --out and --check


def test_out_refuses_a_non_empty_folder_without_the_marker(tmp_path: Path) -> None:
    repo, out = example(tmp_path), tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    code, _, err = render(repo, out)
    assert code == 1
    assert OUTPUT_MARKER in err and "refusing" in err
    assert read_tree(out) == {"notes.txt": b"mine"}
    # A file where the folder should be is refused too (a usage error on the command line).
    target = tmp_path / "a-file"
    target.write_text("x", encoding="utf-8")
    code, _, err = render(repo, target)
    assert code == 2 and "is a file" in err
    with pytest.raises(OperationError, match="not a folder"):
        write_tree(target, files_of(repo))
    assert target.read_text("utf-8") == "x"


def test_out_accepts_an_empty_folder_and_its_own_output(tmp_path: Path) -> None:
    repo, out = example(tmp_path), tmp_path / "empty"
    out.mkdir()
    assert render(repo, out)[0] == 0
    assert (out / OUTPUT_MARKER).is_file()
    (out / "stray.txt").write_text("left by hand", encoding="utf-8")
    assert render(repo, out)[0] == 0  # marked as ours: replaced as a whole
    assert not (out / "stray.txt").exists()


def test_check_is_0_when_fresh_and_1_naming_the_differing_files_when_stale(
    tmp_path: Path,
) -> None:
    repo = example(tmp_path)
    out = repo / "rendered"
    assert run_cli(["render", "--repo", str(repo)])[0] == 0  # default --out: <repo>/rendered
    code, stdout, _ = run_cli(["render", "--repo", str(repo), "--check"])
    assert code == 0 and "up to date" in stdout
    before = stats(out)
    edit_requirement(repo)
    (out / "clusters" / "domain2" / "cl3" / "extra.yaml").write_text("x: 1\n", encoding="utf-8")
    code, stdout, err = run_cli(["render", "--repo", str(repo), "--check"])
    assert code == 1
    named = sorted(line.split(": ", 1)[1] for line in stdout.splitlines()
                   if line.startswith("differs: "))
    assert named == [str(out / "clusters/domain1/cl1/policies.yaml"),
                     str(out / "clusters/domain1/cl2/policies.yaml")]
    assert f"not generated any more: {out / 'clusters/domain2/cl3/extra.yaml'}" in stdout
    assert "out of date" in err
    after = stats(out)
    after.pop("clusters/domain2/cl3/extra.yaml")
    assert after == before  # --check writes nothing


def test_a_symlinked_output_folder_is_followed(tmp_path: Path) -> None:
    repo, real = example(tmp_path), tmp_path / "real-out"
    link = tmp_path / "out"
    assert render(repo, real)[0] == 0
    link.symlink_to(real, target_is_directory=True)
    edit_requirement(repo)

    write_tree(link, files_of(repo))

    assert link.is_symlink()  # the link stays a link ...
    assert read_tree(real) == {f.path: f.content for f in files_of(repo)}  # ... to new output


def test_staging_folders_left_by_a_killed_run_are_removed(tmp_path: Path) -> None:
    repo, out = example(tmp_path), tmp_path / "out"
    stale = tmp_path / ".out.meshplan-killed"
    (stale / "clusters").mkdir(parents=True)
    unrelated = tmp_path / ".other.meshplan-x"
    unrelated.mkdir()

    assert render(repo, out)[0] == 0

    assert leftovers(tmp_path, "out") == []
    assert unrelated.is_dir()  # only this output's staging folders are touched


def test_an_output_on_another_file_system_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo, out, before_bytes = changed_repo_without_renameat2(tmp_path, monkeypatch)

    def cross_device(self: Path, target: str | os.PathLike[str]) -> Path:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(Path, "rename", cross_device)
    code, _out, err = render(repo, out)
    monkeypatch.undo()

    assert code == 1, err
    assert "cross-device" in err and "mount point" in err and "Traceback" not in err
    assert read_tree(out) == before_bytes


def test_a_tampered_output_file_is_detected_and_rewritten(tmp_path: Path) -> None:
    """A file edited by hand since the last render (same size, other bytes) differs from
    what is rendered: it is rewritten, and nothing else is touched."""
    repo, out = example(tmp_path), tmp_path / "out"
    assert render(repo, out)[0] == 0
    expected = read_tree(out)
    victim = out / "clusters/domain1/cl1/policies.yaml"
    victim.write_bytes(victim.read_bytes().replace(b"domain1", b"domainX", 1))
    tampered = stats(out)
    result = write_tree(out, files_of(repo))
    assert result.changed == ("clusters/domain1/cl1/policies.yaml",) and not result.removed
    assert read_tree(out) == expected
    after = stats(out)
    assert {p for p in after if after[p] != tampered[p]} <= {
        "", "clusters/domain1/cl1", "clusters/domain1/cl1/policies.yaml"}


@pytest.mark.parametrize("edit", [lambda b: b + b"# more\n", lambda b: b[:-1],
                                  lambda b: b[:-1] + b"X"], ids=["longer", "shorter", "last"])
def test_an_output_file_differing_only_at_its_end_is_rewritten(
        tmp_path: Path, edit: Callable[[bytes], bytes]) -> None:
    """The comparison reads one byte more than the rendered content: a file that starts
    with the rendered bytes and goes on, one that stops short, and one whose last byte
    differs are each rewritten."""
    repo, out = example(tmp_path), tmp_path / "out"
    assert render(repo, out)[0] == 0
    expected = read_tree(out)
    victim = out / "clusters/domain1/cl1/policies.yaml"
    victim.write_bytes(edit(victim.read_bytes()))
    result = write_tree(out, files_of(repo))
    assert result.changed == ("clusters/domain1/cl1/policies.yaml",) and not result.removed
    assert read_tree(out) == expected


def test_a_fifo_where_an_output_file_goes_is_replaced_without_waiting(tmp_path: Path) -> None:
    """A named pipe at an output file's path is not opened to wait for a writer: it is
    replaced by the file."""
    repo, out = example(tmp_path), tmp_path / "out"
    assert render(repo, out)[0] == 0
    expected = read_tree(out)
    victim = out / "clusters/domain1/cl1/policies.yaml"
    victim.unlink()
    os.mkfifo(victim)
    files = files_of(repo)
    results: list[write.WriteResult] = []
    writer = threading.Thread(target=lambda: results.append(write_tree(out, files)))
    writer.start()
    writer.join(30)
    if writer.is_alive():  # waiting in open() for a writer: be one, so that the test ends
        with victim.open("wb"):
            pass
        writer.join()
        pytest.fail("write_tree waited on the named pipe")
    assert results[0].changed == ("clusters/domain1/cl1/policies.yaml",)
    assert read_tree(out) == expected


def test_a_folder_where_a_file_goes_is_replaced_whole(tmp_path: Path) -> None:
    repo, out = example(tmp_path), tmp_path / "out"
    assert render(repo, out)[0] == 0
    expected = read_tree(out)
    victim = out / "clusters/domain1/cl1/policies.yaml"
    victim.unlink()
    (victim / "inside").mkdir(parents=True)
    write_tree(out, files_of(repo))
    assert read_tree(out) == expected
    assert leftovers(tmp_path, "out") == []


# --------------------------------------------------------------------------- the spare tree


def the_spare(spares: Path) -> Path:
    (folder,) = list(spares.iterdir())
    return folder


def with_a_spare(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, bytes]]:
    """An output written twice through ``spares``: the output holds v2 (one requirement
    edited), the spare holds v1. Returns (repo, out, spares, v1's bytes)."""
    repo, out, spares = example(tmp_path), tmp_path / "out", tmp_path / "spares"
    write_tree(out, files_of(repo), spares=spares)
    v1 = read_tree(out)
    edit_requirement(repo)
    write_tree(out, files_of(repo), spares=spares)
    assert read_tree(the_spare(spares) / "tree") == v1
    return repo, out, spares, v1


def third_version(repo: Path) -> tuple[OutputFile, ...]:
    """v3: v2 without domain2's frontend (the spare's v1 needs writes and removals)."""
    (repo / "requirements" / "domain2" / "frontend.yaml").unlink()
    return files_of(repo)


def exchanges(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, Path]]:
    """Record the folders exchanged (and still exchange them)."""
    seen: list[tuple[Path, Path]] = []
    real = write._rename_exchange

    def spy(a: Path, b: Path) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(write, "_rename_exchange", spy)
    return seen


def test_the_spare_is_brought_to_the_new_tree_and_exchanged_with_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo, out, spares, v1 = with_a_spare(tmp_path)
    v2, before = read_tree(out), stats(out)
    files = third_version(repo)
    seen = exchanges(monkeypatch)
    result = write_tree(out, files, spares=spares)
    spare = the_spare(spares)
    assert seen == [(spare / "tree", out)]  # one exchange, of the spare
    assert read_tree(out) == {f.path: f.content for f in files}  # exactly the new tree
    assert not any(p.is_dir() and not any(p.iterdir()) for p in out.rglob("*"))  # no empty dir
    assert read_tree(spare / "tree") == v2  # the spare holds the old output, recorded
    assert recorded(spare) == {p: hashlib.sha256(v2[p]).hexdigest() for p in v2
                               if p not in {f.path: f for f in files}
                               or v2[p] != {f.path: f.content for f in files}[p]}
    assert set(result.removed) == set(v2) - {f.path for f in files}
    after = stats(out)
    kept = [p for p in after if p and v1.get(p) == v2[p] == (out / p).read_bytes()]
    assert kept
    for path in kept:  # what no version changed keeps its file (hard-linked once, then kept)
        assert after[path] == before[path], path
    # ... and unchanged again: nothing written, nothing exchanged
    seen.clear()
    assert write_tree(out, files, spares=spares).unchanged and seen == []


def recorded(spare: Path) -> dict[str, str]:
    """The spare's record: path -> digest. Only the files that differ from the output are
    recorded (the others are the output's own files, known by their inode)."""
    lines = (spare / "record").read_text("utf-8").splitlines()[1:]
    return {line.split(" ", 6)[6]: line.split(" ", 6)[5] for line in lines}


def test_the_exchange_needs_no_subprocess(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """On Linux ``renameat2`` is found among the symbols the process has loaded, without
    ``find_library`` (which runs ``ldconfig`` in a subprocess on every write)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux's")
    import ctypes.util

    def no_lookup(name: str) -> None:
        raise AssertionError(f"find_library({name!r}) ran")

    monkeypatch.setattr(ctypes.util, "find_library", no_lookup)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    assert write._rename_exchange(a, b)
    assert (b / "x").read_text() == "a" and not (a / "x").exists()


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_without_renameat2_the_exchange_says_no(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 platform: str) -> None:
    """A C library without ``renameat2`` (an old glibc, macOS): the process's symbols, then
    ``find_library``'s library are asked (Linux), or the latter alone (elsewhere); with none,
    no exchange is made and both folders are left as they were."""
    import ctypes.util

    asked: list[str | None] = []

    def nothing(library: str | None) -> None:
        asked.append(library)

    monkeypatch.setattr(sys, "platform", platform)  # the module write reads it from
    monkeypatch.setattr(write, "_c_function", nothing)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libc-without.so")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    assert not write._rename_exchange(a, b)
    assert asked == ([None, "libc-without.so"] if platform == "linux" else ["libc-without.so"])
    assert (a / "x").read_text() == "a" and not (b / "x").exists()


def tamper(path: Path) -> None:
    """Other bytes of the same size, the mtime put back: only the ctime tells."""
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


@pytest.mark.parametrize("when", ["long after its record", "just after its record"])
def test_a_tampered_spare_file_is_detected_and_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str,
) -> None:
    if when == "just after its record":  # whole-second timestamps: the edit keeps the ctime
        coarse_timestamps(monkeypatch)
    repo, out, spares, v1 = with_a_spare(tmp_path)
    undo_edit(repo)  # v3 is v1: the spare holds it already, by its record
    files = files_of(repo)
    victim = "clusters/domain1/cl1/policies.yaml"  # changed in v2, recorded with v1's digest
    assert {f.path: f.content for f in files} == v1 != read_tree(out)
    if when == "long after its record":
        monkeypatch.setattr(write, "RACY_NS", -10**18)  # the stat alone decides: never read
        time.sleep(0.05)  # past the file system's timestamp granularity
    tamper(the_spare(spares) / "tree" / victim)
    seen = exchanges(monkeypatch)
    write_tree(out, files, spares=spares)
    assert seen == [(the_spare(spares) / "tree", out)]  # written through the spare
    assert read_tree(out) == v1


def coarse_timestamps(monkeypatch: pytest.MonkeyPatch) -> None:
    real = write._lstat

    def lstat(path: str) -> Any:
        st = real(path)
        whole = {name: getattr(st, name) // 10**9 * 10**9 for name in ("st_mtime_ns",
                                                                      "st_ctime_ns")}
        return SimpleNamespace(st_mode=st.st_mode, st_dev=st.st_dev, st_ino=st.st_ino,
                               st_size=st.st_size, **whole)

    monkeypatch.setattr(write, "_lstat", lstat)


def fake_devices(monkeypatch: pytest.MonkeyPatch, spares: Path) -> None:
    real = write._device

    def device(path: Path) -> int:
        inside = Path(path) == spares or spares in Path(path).parents
        return real(path) + (1 if inside else 0)

    monkeypatch.setattr(write, "_device", device)


@pytest.mark.parametrize("damage", ["another device", "missing record", "corrupt record",
                                    "bad record line"])
def test_an_unusable_spare_falls_back_to_the_whole_swap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str,
) -> None:
    repo, out, spares, _v1 = with_a_spare(tmp_path)
    spare = the_spare(spares)
    tamper(spare / "tree" / "clusters/domain1/cl1/kustomization.yaml")  # (a hard link of out's)
    v2 = read_tree(out)
    record = spare / "record"
    if damage == "another device":
        monkeypatch.setattr(write, "RACY_NS", 0)
        fake_devices(monkeypatch, spares)
    elif damage == "missing record":
        record.unlink()
    elif damage == "corrupt record":
        record.write_bytes(b"\xff\x00 not a record")
    else:
        lines = record.read_text("utf-8").splitlines(keepends=True)
        record.write_text(lines[0] + "1 2 three 4 5 " + "0" * 64 + " x\n" + "".join(lines[1:]),
                          encoding="utf-8")
    files = third_version(repo)
    seen = exchanges(monkeypatch)
    write_tree(out, files, spares=spares)
    assert read_tree(out) == {f.path: f.content for f in files}
    assert len(seen) == 1 and not str(seen[0][0]).startswith(str(spares))  # built beside
    assert leftovers(tmp_path, "out") == []
    if damage == "another device":
        assert read_tree(spare / "tree") != v2  # left alone, not used
    else:
        assert read_tree(the_spare(spares) / "tree") == v2  # the old output is the new spare


class Killed(BaseException):
    pass


def test_a_crash_before_the_exchange_leaves_the_output_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo, out, spares, _v1 = with_a_spare(tmp_path)
    v2, before = read_tree(out), stats(out)
    files = third_version(repo)
    real_replace = os.replace
    calls = 0

    def dying_replace(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Killed
        real_replace(a, b)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(Killed):
        write_tree(out, files, spares=spares)
    monkeypatch.undo()
    assert calls == 2
    assert read_tree(out) == v2 and stats(out) == before
    # ... the half-updated spare is not trusted again: the next run gives the new tree
    write_tree(out, files, spares=spares)
    assert read_tree(out) == {f.path: f.content for f in files}


def test_spares_are_kept_one_per_output_and_bounded(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(write, "SPARES_KEPT", 2)
    repo, spares = example(tmp_path), tmp_path / "spares"
    first = files_of(repo)
    edit_requirement(repo)
    second = files_of(repo)
    for name in ("a", "b", "c"):
        for files in (first, second, first):
            write_tree(tmp_path / name, files, spares=spares)
    assert len(list(spares.iterdir())) == 2
