"""``meshplan diff`` with the render cache models one side of the flow picture from the other
when only requirement files differ (pipeline._FlowInputs): the markdown is exactly the one of a
diff without the cache, cold or warm, for changed, added and removed requirement files (one
with raw labels: a client endpoint of its own), and an inventory change loads both sides."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from meshplan import pipeline
from meshplan.cache import RenderCache
from meshplan.gitdiff import format_markdown

from benchmarks.workload import generate, mutate_one_requirement

CLIENT = """\
apiVersion: meshplan.dev/v1alpha1
kind: Requirement
metadata:
  name: extra-client
  namespace: extra
spec:
  endpointSelector:
    matchLabels: {app: extra-client}
  egress:
    - toEndpoints:
        - matchLabels: {service: "*"}
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
                   cwd=repo, check=True, capture_output=True)


def one_requirement(repo: Path) -> None:
    mutate_one_requirement(repo)


def files_added_and_removed(repo: Path) -> None:
    mutate_one_requirement(repo)
    folder = sorted((repo / "requirements").iterdir())[0]
    (folder / "extra-client.yaml").write_text(CLIENT, encoding="utf-8")
    sorted(folder.glob("*.yaml"))[0].unlink()


def an_inventory_change(repo: Path) -> None:
    mutate_one_requirement(repo)
    path = sorted((repo / "inventory").glob("*.yaml"))[0]
    path.write_text(path.read_text(encoding="utf-8") + "# a comment\n", encoding="utf-8")


def markdown(repo: Path, cache: Path | None) -> str:
    report, _ = pipeline.diff_repository(repo, "HEAD", with_flows=True,
                                         cache=RenderCache.at(cache) if cache else None)
    return format_markdown(report)


@pytest.mark.parametrize(("change", "derived"), [(one_requirement, True),
                                                 (files_added_and_removed, True),
                                                 (an_inventory_change, False)])
def test_a_cached_diff_draws_what_an_uncached_one_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Callable[[Path], None],
        derived: bool) -> None:
    repo = tmp_path / "repo"
    generate("4x4x8x60", 1, repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "fleet")
    change(repo)
    expected = markdown(repo, None)
    assert "```mermaid" in expected
    calls: list[int] = []
    real = pipeline._with_requirements

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(pipeline, "_with_requirements", counted)
    assert markdown(repo, tmp_path / "cache") == expected  # cold: the base renders in full
    assert markdown(repo, tmp_path / "cache") == expected  # warm: the base is unchanged
    assert bool(calls) == derived  # one side modelled from the other (a full render has both)
