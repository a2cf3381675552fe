"""The real ``promtool`` (Debian's ``prometheus`` package) on meshplan's PrometheusRules.

* :func:`check_rules` runs ``promtool check rules`` (strict YAML, PromQL, templates, and the
  ``duplicate-rules`` lint as an error) on rule files; promtool reads plain rule files, so each
  PrometheusRule's ``spec`` is written as one;
* :func:`run_rule_tests` runs ``promtool test rules`` on a unit-test file;
* :func:`expand` renders the subset of Go templates meshplan's annotations use, for the
  expected annotations of a unit test (promtool compares them exactly, so a mistake here
  shows as a failing test, never as a passing one).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .ci import missing_tool

PROMETHEUS_RULE = ("monitoring.coreos.com/v1", "PrometheusRule")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        missing_tool("promtool not found: apt-get install -y --no-install-recommends prometheus "
                     "(Debian's package ships it; bash .ci/run installs it)")
    assert found is not None
    return found


def prometheus_rules(files: Mapping[str, bytes]) -> dict[str, list[dict[str, Any]]]:
    """Every rendered PrometheusRule, by the Kustomize root it is in (``clusters/<d>/<c>``)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for path, content in sorted(files.items()):
        if not path.startswith("clusters/") or not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(content):
            kind = (doc.get("apiVersion"), doc.get("kind")) if isinstance(doc, dict) else None
            if kind == PROMETHEUS_RULE:
                found.setdefault(path.rsplit("/", 1)[0], []).append(doc)
    return found


def write_rule_file(spec: Mapping[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(dict(spec), sort_keys=False), encoding="utf-8")
    return path


def check_rules(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), "check", "rules", "--lint=all", "--lint-fatal",
                           *map(str, paths)], capture_output=True, text=True, timeout=120,
                          check=False)


def run_rule_tests(test_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), "test", "rules", str(test_file)], capture_output=True,
                          text=True, timeout=300, check=False, cwd=test_file.parent)


# --------------------------------------------------------------------------- templates

_ACTION = re.compile(r"\{\{(.*?)\}\}", re.S)


def humanize(value: float) -> str:
    """Prometheus' ``humanize`` for the values the unit tests use (0, or 1 to 999.9)."""
    if value != 0 and not 1 <= abs(value) < 1000:
        raise ValueError(f"humanize({value}) needs an SI prefix: choose another test value")
    return f"{value:.4g}"


def expand(text: str, labels: Mapping[str, str], value: float) -> str:
    """``{{ $value | humanize }}``, ``{{ $labels.x }}`` and ``{{ with $labels.x }}A{{ . }}B
    {{ else }}C{{ end }}``: what meshplan's annotations use of Go's templates."""
    out: list[str] = []
    tokens = _ACTION.split(text)  # text, action, text, action, ...
    i = 0
    while i < len(tokens):
        if i % 2 == 0:
            out.append(tokens[i])
            i += 1
            continue
        action = tokens[i].strip()
        if action == "$value | humanize":
            out.append(humanize(value))
        elif action.startswith("$labels."):
            out.append(labels.get(action.removeprefix("$labels."), ""))
        elif action.startswith("with $labels."):
            i = _with(tokens, i, labels.get(action.removeprefix("with $labels."), ""), out)
            continue
        else:
            raise ValueError(f"template action not supported by the test expander: {action}")
        i += 1
    return "".join(out)


def _with(tokens: list[str], i: int, dot: str, out: list[str]) -> int:
    """``{{ with x }}then{{ else }}otherwise{{ end }}`` (one level, ``{{ . }}`` inside); the
    index of the token after ``{{ end }}``."""
    then: list[str] = []
    otherwise: list[str] = []
    target, j = then, i + 1
    while True:
        token = tokens[j]
        if j % 2:  # an action
            action = token.strip()
            if action == "end":
                break
            if action == "else":
                target = otherwise
            elif action == ".":
                target.append(dot)
            else:
                raise ValueError(f"template action not supported inside with: {action}")
        else:
            target.append(token)
        j += 1
    out.append("".join(then if dot else otherwise))
    return j + 1
