"""Headless Chromium (Debian's ``chromium``) for the tests that open pages or take pictures."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .ci import missing_tool

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    missing_tool("headless Chromium not found: apt-get install -y chromium")
    raise AssertionError  # unreachable


def screenshot(page: Path, picture: Path, width: int, height: int, workdir: Path) -> None:
    """A PNG of ``page`` at ``width`` x ``height`` pixels."""
    proc = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={workdir / 'profile'}",
         "--hide-scrollbars", f"--window-size={width},{height}", f"--screenshot={picture}",
         page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and picture.is_file(), proc.stderr[-2000:]
