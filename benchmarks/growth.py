"""Growth on input size: one requirement with N rules (issue #9, class 7).

A pull request can carry one requirement file of up to 16 MiB. ``validate`` and ``render`` must
stay near-linear in its size: one requirement with 40,000 rules (a 2 MB file) once took 215 s
because refinement compared every rule body with every earlier one. This measures ``validate``
and ``render`` (load, schema, model, check, refine, render, write) on one requirement with N
rules for several N and reports the growth exponent: the slope of ln(seconds) over ln(N) by
least squares (1 = linear; near-linear means at most 1.2).

The rules mix what a real file holds: CIDR rules (every third one, some over a pod network, so
the pod-CIDR check runs), raw pod-label peers, and service peers with their own ports, at
egress and ingress.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

DEFAULT_RULES = (5_000, 10_000, 20_000, 40_000)
TARGET_EXPONENT = 1.2

INVENTORY = """\
apiVersion: meshplan.dev/v1alpha1
kind: Domain
metadata: {name: d}
spec:
  clusters:
    - {name: a, meshName: ma, podCIDRs: [10.200.0.0/16]}
    - {name: b, meshName: mb, podCIDRs: [10.201.0.0/16]}
  services:
    - {name: x, namespace: n1, selector: {app: x}, clusters: [a, b],
       ports: [{port: 80, protocol: TCP, name: http}]}
    - {name: y, namespace: n2, selector: {app: y}, clusters: [a, b],
       ports: [{port: 80, protocol: TCP, name: http}]}
"""


def rule(i: int) -> str:
    """Rule ``i`` of the wide requirement (YAML lines, indented for ``egress:``/``ingress:``)."""
    kind = i % 3
    if kind == 0:
        # one in a hundred over a pod network (a warning each), the rest outside
        net = f"10.200.{i // 256 % 256}.{i % 256}/32" if i % 300 == 0 else \
            f"11.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}/32"
        key = "toCIDRSet" if i % 2 else "fromCIDRSet"
        return f"    - {key}: [{{cidr: {net}}}]\n"
    if kind == 1:
        key = "toEndpoints" if i % 2 else "fromEndpoints"
        return f"    - {key}: [{{matchLabels: {{app: c{i}}}}}]\n"
    key = "toEndpoints" if i % 2 else "fromEndpoints"
    return (f"    - {key}: [{{matchLabels: {{service: y}}}}]\n"
            f"      toPorts: [{{ports: [{{port: \"{1 + i % 60000}\"}}]}}]\n")


def write_wide_repository(rules: int, dest: Path) -> Path:
    """A repository whose one requirement has ``rules`` rules (half egress, half ingress)."""
    for top in ("inventory", "requirements"):
        shutil.rmtree(dest / top, ignore_errors=True)
    (dest / "inventory").mkdir(parents=True)
    (dest / "requirements" / "d").mkdir(parents=True)
    (dest / "inventory" / "d.yaml").write_text(INVENTORY, encoding="utf-8")
    written = [rule(i) for i in range(rules)]
    egress = [r for r in written if r.startswith("    - to")]
    ingress = [r for r in written if r.startswith("    - from")]
    text = ("apiVersion: meshplan.dev/v1alpha1\nkind: Requirement\nmetadata: {name: wide}\n"
            "spec:\n  endpointSelector: {matchLabels: {service: x}}\n"
            "  egress:\n" + "".join(egress) + "  ingress:\n" + "".join(ingress))
    (dest / "requirements" / "d" / "wide.yaml").write_text(text, encoding="utf-8")
    return dest


class Point(NamedTuple):
    rules: int
    file_bytes: int
    validate_s: float
    render_s: float


def measure(rules: int, workdir: Path) -> Point:
    """Time ``meshplan validate`` and ``meshplan render`` (into an empty folder) in-process."""
    from meshplan.pipeline import render_repository, validate
    from meshplan.write import write_tree

    repo = write_wide_repository(rules, workdir / f"wide-{rules}")
    size = (repo / "requirements" / "d" / "wide.yaml").stat().st_size
    start = time.perf_counter()
    inventory, _ = validate(repo)
    validated = time.perf_counter() - start
    if inventory is None:
        raise RuntimeError(f"the wide requirement with {rules} rules does not validate")
    out = Path(tempfile.mkdtemp(prefix="wide-out-", dir=workdir))
    try:
        start = time.perf_counter()
        rendered, _ = render_repository(repo)
        write_tree(out / "rendered", rendered.files)
        rendered_s = time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return Point(rules, size, validated, rendered_s)


def exponent(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The least-squares slope of ln(y) over ln(x): y ~ x ** slope."""
    if len(xs) < 2:
        raise ValueError("at least two points are needed")
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    var = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / var


def table(points: Sequence[Point]) -> str:
    lines = ["| rules N | file MiB | validate s | render s |", "|---:|---:|---:|---:|"]
    lines += [f"| {p.rules:,} | {p.file_bytes / 2**20:.2f} | {p.validate_s:.2f} | "
              f"{p.render_s:.2f} |" for p in points]
    ns = [float(p.rules) for p in points]
    v = exponent(ns, [p.validate_s for p in points])
    r = exponent(ns, [p.render_s for p in points])
    verdict = "met" if max(v, r) <= TARGET_EXPONENT else "NOT met"
    lines.append("")
    lines.append(f"Growth exponent (least-squares slope of ln s over ln N): validate {v:.2f}, "
                 f"render {r:.2f}; target at most {TARGET_EXPONENT} (near-linear): {verdict}.")
    return "\n".join(lines) + "\n"
