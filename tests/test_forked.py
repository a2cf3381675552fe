"""A call in a forked child: its value comes back; anything else is a WorkerError, and the
child never outlives the wait for it (real forks, real signals)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from meshplan.cli import guarded
from meshplan.diagnostics import Location, error
from meshplan.forked import (
    SERIAL_ENV,
    Forked,
    WorkerError,
    can_fork,
    cgroup_quota,
    cpu_max_quota,
    usable_cpus,
)

from tests.support.repos import REPO_ROOT


def child_pid() -> int:
    return os.getpid()


def test_the_value_comes_back_from_another_process() -> None:
    problem = error(Location("inventory/d.yaml", 3, 5), "spec", "expected x, found y")
    with Forked(lambda: (child_pid(), problem, {"big": list(range(100_000))})) as worker:
        pid, sent, data = worker.result()
    assert pid != os.getpid()
    assert sent == problem and data["big"] == list(range(100_000))


def raises() -> None:
    raise ValueError("the check went wrong")


def test_a_call_that_raises_is_a_worker_error_with_its_traceback() -> None:
    with Forked(raises) as worker, pytest.raises(WorkerError) as caught:
        worker.result()
    message = str(caught.value)
    assert "Traceback" in message and "in raises" in message
    assert "ValueError: the check went wrong" in message


def test_a_value_that_does_not_pickle_is_a_worker_error() -> None:
    with Forked(lambda: lambda: None) as worker, \
            pytest.raises(WorkerError, match=r"Can't pickle local object"):
        worker.result()


def test_a_child_killed_by_a_signal_is_a_worker_error() -> None:
    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    with Forked(die) as worker, pytest.raises(WorkerError, match=r"signal 9 \(SIGKILL\)"):
        worker.result()


def test_a_child_that_exits_without_a_value_is_a_worker_error() -> None:
    with Forked(lambda: os._exit(0)) as worker, \
            pytest.raises(WorkerError, match="exited with status 0, sending 0 byte"):
        worker.result()


def test_the_command_line_reports_a_worker_error_as_an_internal_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    @guarded
    def command() -> int:
        with Forked(raises) as worker:
            worker.result()
        return 0

    assert command() == 3
    err = capsys.readouterr().err
    assert "internal error: WorkerError: the worker process raised:" in err
    assert "ValueError: the check went wrong" in err


def test_leaving_the_block_early_kills_and_reaps_the_child() -> None:
    pids: list[int] = []
    with pytest.raises(KeyError), Forked(lambda: time.sleep(60)) as worker:
        pids.append(worker.pid or 0)
        raise KeyError("the parent's own work failed")
    pid = pids[0]
    assert pid > 0 and not _alive(pid)
    with pytest.raises(ChildProcessError):  # reaped: no zombie left
        os.waitpid(pid, os.WNOHANG)


# A parent that forks a sleeping worker, says its pid and waits for its result. Ctrl-C
# raises KeyboardInterrupt in it as in a terminal's foreground job, even when the test runs
# in a background job, whose processes inherit SIGINT ignored (POSIX shells without job
# control do that to `cmd &`).
PARENT = """
import os, signal, sys, time
from meshplan.forked import Forked
signal.signal(signal.SIGINT, signal.default_int_handler)
with Forked(lambda: time.sleep(60)) as worker:
    print(worker.pid, flush=True)
    worker.result()
"""


@pytest.mark.parametrize("how", ["ctrl-c", "kill-9"])
def test_the_child_does_not_outlive_its_parent(how: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                              start_new_session=True, cwd=REPO_ROOT)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        if how == "ctrl-c":  # the terminal signals the whole foreground group
            os.killpg(parent.pid, signal.SIGINT)
        else:
            parent.kill()
        parent.wait(timeout=20)
        deadline = time.monotonic() + 20
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()


def _alive(pid: int) -> bool:
    """Running (not a zombie): a zombie has exited, it only waits to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.parametrize("when", ["stop", "result"])
def test_ctrl_c_as_the_pipe_closes_still_kills_and_reaps_the_child(
        when: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C right after the pipe is closed (a signal between two statements) is the
    error that leaves: the pipe is not closed twice (an OSError in its place) and the child
    is killed and reaped, also by a ``stop`` called outside a ``with`` block."""
    worker: Forked[object] = Forked(lambda: time.sleep(60) if when == "stop" else 1)
    pid, read_end = worker.pid or 0, worker._read_end
    real_close = os.close

    def close_then_interrupt(fd: int) -> None:
        real_close(fd)
        if fd == read_end:
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "close", close_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        if when == "stop":
            worker.stop()
        else:
            with worker:
                worker.result()
    monkeypatch.undo()
    assert pid > 0 and not _alive(pid)
    with pytest.raises(ChildProcessError):  # reaped
        os.waitpid(pid, os.WNOHANG)


@pytest.mark.parametrize("when", ["reaped", "stopped"])
def test_a_reaped_child_is_never_signalled(when: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupt right after the child is reaped (by result(), before it clears the pid,
    or by a stop() then asked again) leaves a pid the kernel may already have given another
    process: leaving the block signals nothing, and the worker is done."""
    from meshplan import forked

    real_reap = forked._reap
    signalled: list[int] = []
    real_kill = os.kill

    def reap_then_interrupt(pid: int) -> int:
        real_reap(pid)
        monkeypatch.setattr(forked, "_reap", real_reap)  # once
        raise KeyboardInterrupt

    def kill(pid: int, signum: int) -> None:
        signalled.append(pid)
        real_kill(pid, signum)

    worker: Forked[object] = Forked(lambda: 1 if when == "reaped" else time.sleep(60))
    pid = worker.pid or 0
    monkeypatch.setattr(forked, "_reap", reap_then_interrupt)
    monkeypatch.setattr(os, "kill", kill)
    with pytest.raises(KeyboardInterrupt), worker:
        if when == "reaped":
            worker.result()
        else:
            worker.stop()  # kills and reaps, interrupted before it clears the pid
    assert worker.pid is None
    assert signalled == ([] if when == "reaped" else [pid])  # the live child only, once
    with pytest.raises(ChildProcessError):  # reaped, once
        os.waitpid(pid, os.WNOHANG)


def exits() -> None:
    sys.exit("the check gave up")


def interrupted() -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(("stops", "cause"), [
    (exits, "SystemExit: the check gave up"), (interrupted, "KeyboardInterrupt"),
])
def test_a_call_that_exits_or_is_interrupted_is_a_worker_error_naming_it(
        stops: Callable[[], None], cause: str) -> None:
    """sys.exit or KeyboardInterrupt in the worker's call is its traceback sent back (it
    was an exit with status 1 and no word why)."""
    with Forked(stops) as worker, pytest.raises(WorkerError, match="raised:") as caught:
        worker.result()
    assert f"in {stops.__name__}" in str(caught.value)
    assert str(caught.value).rstrip().endswith(cause)


def test_a_raise_then_a_failing_exit_keeps_the_traceback(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """A child that sent its traceback and then exits with a failing status (its exit went
    wrong) is still a WorkerError with that traceback, and says how the child ended; a
    value followed by a failing exit is no result."""
    from meshplan import forked

    real_write_all = forked._write_all

    def write_then_fail(fd: int, data: bytes) -> None:
        real_write_all(fd, data)
        os._exit(3)

    monkeypatch.setattr(forked, "_write_all", write_then_fail)
    with Forked(raises) as worker, pytest.raises(WorkerError) as caught:
        worker.result()
    message = str(caught.value)
    assert message.startswith("the worker process raised (and then exited with status 3):")
    assert "ValueError: the check went wrong" in message
    with Forked(lambda: 1) as valued, pytest.raises(WorkerError, match="status 3, sending"):
        valued.result()


def test_a_value_cut_short_is_no_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child that sends half its pickled value and exits cleanly has sent no value: a
    WorkerError, never a partial one; the result cannot be asked for twice."""
    from meshplan import forked

    real_write_all = forked._write_all

    def half(fd: int, data: bytes) -> None:
        real_write_all(fd, data[:len(data) // 2])

    monkeypatch.setattr(forked, "_write_all", half)
    with Forked(lambda: list(range(1000))) as worker:
        with pytest.raises(WorkerError, match="unreadable result"):
            worker.result()
        with pytest.raises(WorkerError, match="already taken"):
            worker.result()


def test_serial_is_forced_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SERIAL_ENV, "1")
    assert not can_fork()
    monkeypatch.setenv(SERIAL_ENV, "0")
    assert can_fork() == (usable_cpus() >= 2)


def test_one_usable_cpu_means_serial() -> None:
    probe = ("import os; from meshplan.forked import can_fork, usable_cpus; "
             "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
             "print(usable_cpus(), can_fork())")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, cwd=REPO_ROOT)
    assert done.stdout.split() == ["1", "False"]


def test_ready_tells_whether_the_child_has_answered() -> None:
    read_end, write_end = os.pipe()  # the child waits for the test's word
    with Forked(lambda: os.read(read_end, 1)) as worker:
        time.sleep(0.2)
        assert not worker.ready()
        os.write(write_end, b"x")
        deadline = time.monotonic() + 10
        while not worker.ready():
            assert time.monotonic() < deadline, "the child never answered"
            time.sleep(0.01)
        assert worker.result() == b"x"
    os.close(read_end)
    os.close(write_end)


@pytest.mark.parametrize(("text", "cpus"), [
    ("max 100000\n", None), ("100000 100000\n", 1), ("150000 100000\n", 1),
    ("200000 100000\n", 2), ("50000 100000\n", 0), ("", None), ("max\n", None),
    ("x 100000\n", None), ("100000 0\n", None),
])
def test_a_cgroup_cpu_quota_is_read_in_whole_cpus(text: str, cpus: int | None) -> None:
    """A container given one CPU (or less) of a larger machine verifies in one process."""
    assert cpu_max_quota(text) == cpus


def fake_cgroups(tmp_path: Path, self_line: str, limits: dict[str, str]) -> tuple[str, str]:
    """A cgroup v2 mount (``tmp_path/cg``) whose folders (relative paths, "" the mount) hold
    these ``cpu.max`` texts, and a ``/proc/self/cgroup`` naming ``self_line``: the two
    arguments of :func:`cgroup_quota`."""
    root = tmp_path / "cg"
    root.mkdir()
    for folder, text in limits.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(text, encoding="ascii")
    self_cgroup = tmp_path / "cgroup"
    self_cgroup.write_text(self_line, encoding="ascii")
    return str(root), str(self_cgroup)


@pytest.mark.parametrize(("self_line", "limits", "cpus"), [
    # a container with its own cgroup namespace: the mount is its cgroup
    ("0::/\n", {"": "100000 100000\n"}, 1),
    ("0::/\n", {"": "max 100000\n", "a": "100000 100000\n"}, None),  # not ours
    # a host or a shared namespace: the process's cgroup and every ancestor cap it; the
    # smallest wins, wherever it is on the way up
    ("0::/a/b/c\n", {"a": "100000 100000\n", "a/b": "max 100000\n",
                      "a/b/c": "300000 100000\n"}, 1),
    ("0::/a/b/c\n", {"a": "400000 100000\n", "a/b/c": "200000 100000\n"}, 2),
    ("0::/a/b/c\n", {"a/b": "300000 100000\n", "a/b/c/d": "100000 100000\n"}, 3),
    ("0::/a/b\n", {"a": "max 100000\n", "a/b": "max 100000\n"}, None),
    # hybrid hierarchies: v1 lines beside the v2 one
    ("12:cpu,cpuacct:/x\n0::/a\n", {"a": "100000 100000\n"}, 1),
    ("12:cpu,cpuacct:/a\n", {"": "200000 100000\n", "a": "100000 100000\n"}, 2),
    # failing safe: what cannot be read or placed caps nothing more than the mount's file
    ("0::/a/b\n", {"a": "garbage\n", "a/b": "200000 100000\n"}, 2),
    ("0::/a/b (deleted)\n", {"a": "200000 100000\n"}, 2),
    ("0::/../../x\n", {"": "300000 100000\n", "x": "100000 100000\n"}, 3),
    ("0::/a/../b\n", {"b": "100000 100000\n"}, None),
    ("", {"": "200000 100000\n", "a": "100000 100000\n"}, 2),
])
def test_the_cpu_quota_is_the_smallest_of_the_process_cgroup_and_its_ancestors(
        tmp_path: Path, self_line: str, limits: dict[str, str], cpus: int | None) -> None:
    """On a host or with nested cgroups the quota that binds may be any ancestor's."""
    assert cgroup_quota(*fake_cgroups(tmp_path, self_line, limits)) == cpus


def test_an_unreadable_cgroup_file_caps_nothing(tmp_path: Path) -> None:
    root, self_cgroup = fake_cgroups(tmp_path, "0::/a/b\n", {"a/b": "200000 100000\n"})
    (Path(root) / "a" / "cpu.max").mkdir()  # exists, does not read
    assert cgroup_quota(root, self_cgroup) == 2
    (Path(root) / "a" / "b" / "cpu.max").unlink()
    (Path(root) / "a" / "b" / "cpu.max").write_bytes(b"\xff\xfe 100000\n")  # not ASCII
    assert cgroup_quota(root, self_cgroup) is None
    # this process's cgroup file unreadable: the mount's own file only
    (Path(root) / "cpu.max").write_text("100000 100000\n", encoding="ascii")
    Path(self_cgroup).unlink()
    Path(self_cgroup).mkdir()
    assert cgroup_quota(root, self_cgroup) == 1
    assert cgroup_quota(root, str(tmp_path / "missing")) == 1


@pytest.mark.parametrize(("quota", "usable"), [
    (None, 4), ("max 100000\n", 4), ("50000 100000\n", 1), ("200000 100000\n", 2),
    ("800000 100000\n", 4),
])
def test_the_quota_caps_the_cpus_of_the_affinity_mask(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quota: str | None, usable: int
        ) -> None:
    """Four CPUs in the mask: a quota of fewer whole CPUs caps them (at least one: half a
    CPU is one), none or "max" or a larger one leaves them."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    root, self_cgroup = fake_cgroups(tmp_path, "0::/a\n", {} if quota is None else {"a": quota})
    assert usable_cpus(root, self_cgroup) == usable


def test_an_ancestor_quota_of_one_cpu_means_one_usable_cpu(tmp_path: Path) -> None:
    root, self_cgroup = fake_cgroups(tmp_path, "0::/user.slice/session.scope\n", {
        "user.slice": "100000 100000\n", "user.slice/session.scope": "max 100000\n"})
    assert usable_cpus(root, self_cgroup) == 1
    root_only = str(tmp_path / "cg" / "user.slice" / "session.scope")  # the old reading
    assert usable_cpus(root_only, str(tmp_path / "missing")) == len(os.sched_getaffinity(0))


HIGH_DESCRIPTOR = """
import os, resource, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
from meshplan.forked import Forked
with Forked(lambda: 7) as worker:
    assert worker._read_end is not None and worker._read_end >= 1024, worker._read_end
    deadline = time.monotonic() + 10
    while not worker.ready():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    print(worker.result())
"""


def test_ready_watches_a_descriptor_numbered_above_1024() -> None:
    """A process started with many descriptors open gets a high-numbered pipe (select()
    cannot watch one: verify would fail where it passes in one process)."""
    import resource

    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1200:
        pytest.skip("the hard limit on open files is below 1,200 here")
    done = subprocess.run([sys.executable, "-c", HIGH_DESCRIPTOR], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "7"), done.stderr
