"""A picture of a Grafana dashboard's layout, without a Grafana: its rows and panels drawn at
their ``gridPos`` (24 columns; a grid unit is 30 pixels high, as in Grafana), each with its
title, visualization, unit and queries, rendered to PNG by headless Chromium.

``python -m tests.support.dashboard_picture [OUT.png]`` draws the mesh-wide dashboard of the
Istio example (``examples/istio-multicloud``) into ``docs/observability-dashboard.png``.
"""

from __future__ import annotations

import html
import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .browser import screenshot
from .repos import ISTIO_EXAMPLE, REPO_ROOT

COLUMN = 56  # pixels per grid column
UNIT = 30  # pixels per grid unit of height (Grafana's)
MARGIN = 16
HEADER = 86
EXAMPLE_DASHBOARDS = (ISTIO_EXAMPLE / "rendered" / "clusters"
                      / "boutique" / "aks" / "dashboards.yaml")
PICTURE = REPO_ROOT / "docs" / "observability-dashboard.png"
STYLE = """
body { margin: 0; background: #111217; color: #ccccdc; font: 13px/1.35 sans-serif; }
header { position: absolute; left: 16px; top: 10px; right: 16px; }
h1 { font-size: 19px; margin: 0 0 8px; color: #fff; font-weight: 600; }
.var { display: inline-block; margin-right: 10px; padding: 3px 9px; border: 1px solid #2c3235;
       border-radius: 3px; background: #181b1f; }
.var b { color: #6e9fff; font-weight: 600; margin-right: 6px; }
.row { position: absolute; color: #fff; font-size: 15px; font-weight: 600;
       border-bottom: 1px solid #2c3235; box-sizing: border-box; padding: 4px 2px; }
.panel { position: absolute; box-sizing: border-box; background: #181b1f;
         border: 1px solid #2c3235; border-radius: 3px; padding: 8px 10px; overflow: hidden; }
.panel h2 { margin: 0 0 4px; font-size: 14px; color: #fff; font-weight: 600; }
.kind { color: #8e8e9f; margin-bottom: 6px; }
.kind span { background: #22252b; border-radius: 2px; padding: 1px 6px; margin-right: 4px; }
.query { font: 11px/1.35 monospace; color: #b3b3c6; margin: 3px 0; word-break: break-all; }
.legend { color: #73bf69; }
.about { color: #9fa0ad; font-size: 12px; margin: 2px 0 6px; }
"""


def layout_html(dashboard: Mapping[str, Any]) -> tuple[str, int, int]:
    """The page, and its width and height in pixels."""
    panels = list(dashboard["panels"])
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    width, height = 24 * COLUMN + 2 * MARGIN, HEADER + bottom * UNIT + MARGIN
    variables = "".join(
        f'<span class="var"><b>{html.escape(v.get("label", v["name"]))}</b>'
        f'{html.escape(_current(v))}</span>' for v in dashboard["templating"]["list"])
    parts = [f"<header><h1>{html.escape(dashboard['title'])}</h1>{variables}</header>"]
    parts += [_box(panel) for panel in panels]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{STYLE}</style></head>"
            f"<body>{''.join(parts)}</body></html>")
    return page, width, height


def _current(variable: Mapping[str, Any]) -> str:
    current = variable.get("current") or {}
    text = current.get("text", variable.get("query", ""))
    return ", ".join(text) if isinstance(text, list) else str(text)


def _box(panel: Mapping[str, Any]) -> str:
    grid = panel["gridPos"]
    left, top = MARGIN + grid["x"] * COLUMN, HEADER + grid["y"] * UNIT
    size = f"left:{left}px;top:{top}px;width:{grid['w'] * COLUMN - 6}px;"
    if panel["type"] == "row":
        return (f'<div class="row" style="{size}height:{grid["h"] * UNIT}px">'
                f"{html.escape(panel['title'])}</div>")
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    queries = "".join(
        f'<div class="query"><span class="legend">{html.escape(t.get("legendFormat", ""))}'
        f"</span> {html.escape(t['expr'])}</div>" for t in panel.get("targets", []))
    return (f'<div class="panel" style="{size}height:{grid["h"] * UNIT - 6}px">'
            f"<h2>{html.escape(panel['title'])}</h2>"
            f'<div class="kind"><span>{html.escape(panel["type"])}</span>'
            f"<span>unit: {html.escape(unit)}</span></div>"
            f'<div class="about">{html.escape(panel.get("description", ""))}</div>{queries}</div>')


def dashboards_in(config_maps: bytes) -> dict[str, dict[str, Any]]:
    """The dashboards of a rendered dashboards.yaml, by data key."""
    found = {}
    for doc in yaml.safe_load_all(config_maps):
        for key, text in (doc or {}).get("data", {}).items():
            found[key] = json.loads(text)
    return found


def draw(dashboard: Mapping[str, Any], picture: Path, workdir: Path) -> tuple[int, int]:
    """Render the layout to ``picture``; its size in pixels."""
    page, width, height = layout_html(dashboard)
    path = workdir / "dashboard.html"
    path.write_text(page, encoding="utf-8")
    screenshot(path, picture, width, height, workdir)
    return width, height


def main(argv: list[str]) -> int:
    picture = Path(argv[0]) if argv else PICTURE
    boards = dashboards_in(EXAMPLE_DASHBOARDS.read_bytes())
    mesh = next(board for key, board in sorted(boards.items()) if key.startswith("meshplan-mesh-"))
    with tempfile.TemporaryDirectory() as workdir:
        width, height = draw(mesh, picture, Path(workdir))
    print(f"{picture}: {width}x{height}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
