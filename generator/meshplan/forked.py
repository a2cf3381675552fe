"""One call run in a forked child process while the caller goes on: the machine's second core.

``meshplan verify`` checks its inputs in a child (:func:`meshplan.pipeline.verify_repository`)
while the parent reads the rendered tree, which does not depend on them. The child is a
``fork`` of the caller: it starts with the caller's modules and memory (no re-import, nothing
to send but the call) and sends back only its value, pickled, through a pipe.

Failing closed: a call that raises in the child, a value that does not pickle, a child that
dies (a signal, the out-of-memory killer) or sends a truncated value are :class:`WorkerError`
(an internal error, exit 3, with the child's traceback text), never a value. The child never
outlives its parent's wait: leaving the ``with`` block any other way (an exception, Ctrl-C)
kills and reaps it, and on Linux it is killed if the parent dies first.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import select

T = TypeVar("T")
SERIAL_ENV = "MESHPLAN_SERIAL"  # set (to anything but "" or "0"): never fork
_CHUNK = 1 << 20
_VALUE, _RAISED = b"v", b"r"  # the first byte of what the child sends
CGROUP_ROOT = "/sys/fs/cgroup"  # where cgroup v2 is mounted
SELF_CGROUP = "/proc/self/cgroup"  # this process's cgroups


class WorkerError(RuntimeError):
    """The child process failed: it raised (its traceback is the message) or died."""


def can_fork() -> bool:
    """Whether forking a worker can help and is safe: two CPUs usable by this process, a
    ``fork`` (POSIX), no other thread (a lock another thread holds would stay held in the
    child forever), and not turned off by :data:`SERIAL_ENV`."""
    if os.environ.get(SERIAL_ENV, "") not in ("", "0") or not hasattr(os, "fork"):
        return False
    if usable_cpus() < 2:
        return False
    threading = sys.modules.get("threading")  # imported only if someone started a thread
    return threading is None or threading.active_count() == 1


def usable_cpus(cgroup_root: str = CGROUP_ROOT, self_cgroup: str = SELF_CGROUP) -> int:
    """CPUs this process may run on: its affinity mask where the platform has one, capped by
    the cgroup v2 CPU quotas over it (a container or CI runner given one CPU of a larger
    machine sees every CPU in its mask, and a worker there would only add its own CPU time).
    ``cgroup_root``, ``self_cgroup``: where cgroup v2 is mounted, and the file naming this
    process's cgroups (other ones in tests)."""
    if hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    else:
        count = os.cpu_count() or 1
    quota = cgroup_quota(cgroup_root, self_cgroup)
    return count if quota is None else max(1, min(count, quota))


def cgroup_quota(root: str = CGROUP_ROOT, self_cgroup: str = SELF_CGROUP) -> int | None:
    """Whole CPUs the cgroup v2 quotas allow this process, None without one.

    A quota (``cpu.max``) throttles its cgroup's whole subtree, so the process gets the
    smallest of its own cgroup's and every ancestor's up to the mount. In a container with its
    own cgroup namespace the mount is the container's cgroup and ``/proc/self/cgroup`` says
    ``0::/``: the mount's file alone. On a host, or in a container sharing the host's cgroup
    namespace, the process's cgroup is a folder below the mount, and the mount's own (the root
    cgroup) has no ``cpu.max``. Failing safe: a file that cannot be read or parsed caps
    nothing, and a path that does not lead below the mount (``/..`` from outside a cgroup
    namespace, no cgroup v2 line) leaves the mount's file alone. Cheap: a few small files,
    read on every verify."""
    found = None
    for folder in _cgroup_folders(Path(root), self_cgroup):
        try:
            quota = cpu_max_quota((folder / "cpu.max").read_text(encoding="ascii"))
        except (OSError, UnicodeDecodeError):
            continue
        if quota is not None:
            found = quota if found is None else min(found, quota)
    return found


def _cgroup_folders(root: Path, self_cgroup: str) -> list[Path]:
    """The folders of this process's cgroup v2 and of its ancestors under ``root``, the mount
    last; just the mount when the process's cgroup cannot be placed under it."""
    try:
        lines = Path(self_cgroup).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return [root]
    # cgroup v2's line is "0::<path>" (cgroups(7)); a v1 hierarchy's names its controllers
    path = next((line[3:] for line in lines if line.startswith("0::")), "")
    parts = [part for part in path.split("/") if part]
    if not path.startswith("/") or any(part in (".", "..") for part in parts):
        return [root]
    return [root.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def cpu_max_quota(text: str) -> int | None:
    """The whole CPUs a ``cpu.max`` text allows (rounded down), None for no quota or a text
    that is not one."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota // period if quota > 0 and period > 0 else None


class Forked(Generic[T]):
    """``call()`` running in a forked child from construction on; :meth:`result` waits for
    its value. Use as a context manager: leaving it reaps the child, killing it first when its
    result was not taken."""

    def __init__(self, call: Callable[[], T]) -> None:
        parent = os.getpid()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller's code
            os.close(read_end)
            _child(call, write_end, parent)
        os.close(write_end)
        self._pid: int | None = pid
        self._read_end: int | None = read_end
        self._poller: select.poll | None = None  # watches read_end (ready())

    @property
    def pid(self) -> int | None:
        """The child's process id, until it is reaped."""
        return self._pid

    def __enter__(self) -> Forked[T]:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def ready(self) -> bool:
        """Whether the child has begun to send (or has ended): :meth:`result` will not wait
        for its computation, only for the rest of what it sends."""
        if self._read_end is None:
            return True
        if self._poller is None:  # made once: ready() is asked between every two files
            import select

            # poll, not select: select cannot watch a descriptor numbered 1024 or more (a
            # process started with many descriptors open)
            self._poller = select.poll()
            self._poller.register(self._read_end, select.POLLIN)
        return bool(self._poller.poll(0))  # readable, or hung up (the child ended)

    def result(self) -> T:
        """The call's value; raises :class:`WorkerError` when it raised or the child died."""
        # No timeout, by decision: the call is meshplan's own code, which the serial path
        # runs with none either, so a hang here is a hang there (a bug to fix, not to time
        # out), and any bound would turn a slow machine or a big fleet into a false internal
        # error. Every other way out already ends the wait: the child's exit or death closes
        # the pipe (its end is not inherited by a program the child runs: os.pipe descriptors
        # are non-inheritable), Ctrl-C interrupts the read here and __exit__ kills the child,
        # the parent's death kills it (_die_with), and no other thread can leave a lock held
        # in it (can_fork).
        if self._read_end is None or self._pid is None:
            raise WorkerError("the worker's result was already taken")
        sent = _read_all(self._read_end)
        read_end, self._read_end = self._read_end, None  # cleared first: a Ctrl-C between
        os.close(read_end)  # the two would have stop() close it again (an OSError instead)
        status = _reap(self._pid)
        self._pid = None
        if sent[:1] == _RAISED:  # its traceback, also when the child then failed to exit
            ended = "" if status == 0 else f" (and then {_ended(status)})"
            raise WorkerError(f"the worker process raised{ended}:\n"
                              + sent[1:].decode("utf-8", "replace"))
        if not sent or status != 0:
            raise WorkerError(f"the worker process {_ended(status)}, sending "
                              f"{len(sent)} byte(s): no result")
        try:
            value: T = pickle.loads(sent[1:])
        except Exception as exc:  # truncated or corrupt: never a value
            raise WorkerError(f"the worker process sent an unreadable result "
                              f"({type(exc).__name__}: {exc})") from exc
        return value

    def stop(self) -> None:
        """Kill the child unless its result was taken, and reap it (no zombie)."""
        try:
            if self._read_end is not None:
                read_end, self._read_end = self._read_end, None
                os.close(read_end)
        finally:  # whatever interrupts the close (Ctrl-C), the child is killed and reaped
            if self._pid is not None:
                _kill_unreaped(self._pid)
                self._pid = None  # only once reaped: a stop() interrupted before is redone


def _child(call: Callable[[], T], write_end: int, parent: int) -> None:
    """Run ``call``, send its value (or its traceback) and leave with ``os._exit``: the
    parent's ``finally`` blocks, atexit handlers and unflushed buffers are not the child's."""
    code = 1
    try:
        _die_with(parent)
        try:
            sent = _VALUE + pickle.dumps(call(), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:  # sys.exit or KeyboardInterrupt in the call too: say which
            import traceback

            sent = _RAISED + traceback.format_exc().encode("utf-8", "replace")
        _write_all(write_end, sent)
        code = 0
    except BaseException:  # Ctrl-C, the parent gone (a broken pipe): nothing to send
        code = 1
    finally:
        os._exit(code)


def _die_with(parent: int) -> None:
    """On Linux, have the kernel kill this child when its parent dies (a ``kill -9`` of
    ``meshplan`` leaves no worker computing for nobody); elsewhere the child ends at its
    write, which fails once the parent is gone."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:_CHUNK]):]
    os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, _CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def _kill_unreaped(pid: int) -> None:
    """Kill and reap the child ``pid`` unless it is reaped already.

    A pid is signalled only while it is this process's unreaped child: a reaped one may
    already be another process's (the kernel reuses it), and result() may have reaped it
    just before an interrupt (Ctrl-C) kept it from saying so. Until we reap it, the child
    (even a zombie) keeps its pid, and only this process reaps it."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # reaped already (by result())
        return
    if done:  # it had ended: reaped just now
        return
    with contextlib.suppress(ProcessLookupError):  # a zombie, where a system refuses it
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> int:
    """Wait for the child; its exit status as ``waitstatus_to_exitcode`` gives it (a signal:
    negative)."""
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _ended(status: int) -> str:
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = "unknown"
        return f"was killed by signal {-status} ({name})"
    return f"exited with status {status}"
