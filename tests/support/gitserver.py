"""Test helper: a real git server (``git daemon`` on 127.0.0.1) and small git utilities.

``git daemon --export-all --enable=receive-pack`` serves every bare repository under a base
folder over ``git://127.0.0.1:<port>/<name>``, with pushes allowed: the same protocol
machinery (pack negotiation, non-fast-forward rejections, ``pre-receive`` hooks) as a hosted
remote, without credentials. The daemon is started on a free port and killed (by its own pid)
when the test is done.

:func:`isolate_git` makes git in tests independent of the machine: no global or system
config (so no identity either: tests commit with an explicit one, and publish must cope).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from .ci import missing_tool

IDENTITY = ("-c", "user.name=Test Author", "-c", "user.email=author@example.com")


def git(cwd: Path, *args: str, check: bool = True) -> str:
    """Run git in ``cwd`` and return stdout (stripped); fail the test with git's words."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}{proc.stderr}")
    return proc.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    """Stage everything and commit it with the test identity; return the commit SHA."""
    git(repo, "add", "-A")
    git(repo, *IDENTITY, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def isolate_git(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """No global/system git config (identity, hooks, URL rewrites) leaks into a test."""
    home.mkdir(parents=True, exist_ok=True)
    empty = home / "gitconfig"
    empty.write_text("", encoding="utf-8")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                 "GIT_COMMITTER_EMAIL", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)


def require_git_daemon() -> None:
    """Skip without ``git daemon`` (fail instead when ``CI`` is set)."""
    if shutil.which("git"):
        exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True,
                                   check=False).stdout.strip()
        if exec_path and (Path(exec_path) / "git-daemon").exists():
            return
    missing_tool("git daemon not installed (Debian package git): the end-to-end publish tests "
                 "need a git server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GitServer:
    base: Path  # folder of the bare repositories
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def create(self, name: str) -> Path:
        """A new empty bare repository ``name`` (e.g. ``mesh.git``) on the server."""
        path = self.base / name
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True,
                       capture_output=True)
        return path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_git_daemon(base: Path, *, timeout: float = 10.0) -> GitServer:
    """Start ``git daemon`` serving ``base`` on a free loopback port; wait until it listens."""
    require_git_daemon()
    base.mkdir(parents=True, exist_ok=True)
    log = base.parent / f"{base.name}-daemon.log"
    for _ in range(3):  # a free port can be taken between probing and binding: try again
        port = free_port()
        with log.open("ab") as sink:
            process = subprocess.Popen(
                ["git", "daemon", "--export-all", "--enable=receive-pack", "--reuseaddr",
                 "--informative-errors", "--verbose", f"--base-path={base}",
                 "--listen=127.0.0.1", f"--port={port}", "--timeout=30", "--init-timeout=10",
                 str(base)],
                stdin=subprocess.DEVNULL, stdout=sink, stderr=sink)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return GitServer(base, port, process, log)
            except OSError:
                time.sleep(0.05)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=5)
    raise AssertionError(f"git daemon did not start; its log:\n{log.read_text(errors='replace')}")


@contextmanager
def git_daemon(base: Path) -> Iterator[GitServer]:
    server = start_git_daemon(base)
    try:
        yield server
    finally:
        server.stop()
