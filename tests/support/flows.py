"""Flows of verify reports, for the tests of :mod:`meshplan.verify`: render a repository,
verify it, and name its flows and problems as text."""

from __future__ import annotations

import textwrap
from pathlib import Path

from meshplan.diagnostics import Severity
from meshplan.model import Inventory
from meshplan.pipeline import render_repository, validated
from meshplan.verify.report import VerifyReport, verify

Files = dict[str, bytes]


def rendered_files(root: Path) -> tuple[Inventory, Files]:
    inventory, _ = validated(root)
    rendered, _ = render_repository(root)
    return inventory, {f.path: f.content for f in rendered.files}


def verify_repo(root: Path) -> VerifyReport:
    inventory, files = rendered_files(root)
    return verify(inventory, files)


def decided(report: VerifyReport) -> set[str]:
    """``source -> destination ports`` for every flow a policy decides (DNS left out)."""
    return {f"{report.endpoints[i].title} -> {report.endpoints[j].title} {ports}"
            for (i, j), ports in report.restricted_flows().items()}


def errors(report: VerifyReport) -> list[str]:
    return [d.format_text() for d in report.diagnostics if d.severity is Severity.ERROR]


def warnings(report: VerifyReport) -> list[str]:
    return [d.format_text() for d in report.diagnostics if d.severity is Severity.WARNING]


def allowed(report: VerifyReport, source: str, destination: str) -> str | None:
    titles = [e.title for e in report.endpoints]
    ports = report.flows.get((titles.index(source), titles.index(destination)))
    return str(ports) if ports else None


def write(root: Path, files: dict[str, str]) -> Path:
    for relpath, text in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return root
