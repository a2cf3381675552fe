"""meshplan.observability.dashboards: Grafana's dashboard model, real PromQL, a picture.

* every dashboard validates against Grafana's dashboard schema (``tests/schemas/grafana``,
  from grafana/grafana-foundation-sdk, see SOURCES.md) and every query against the Prometheus
  data source's query schema; the check provably fails on a misspelt key;
* what the schemas cannot say: unique panel ids, panels inside the 24 columns without
  overlaps, units on every panel, the data source, cluster and namespace variables, a uid of
  at most 40 characters that is stable and unique;
* every panel's expression (and every variable's selector) parses with the real promtool,
  wrapped in a recording rule, and reads only series meshplan's rules record (or ``ALERTS``
  and ``up``);
* the mesh-wide dashboard's layout drawn by headless Chromium, and the committed picture in
  docs/ has the layout's current size.
"""

from __future__ import annotations

import copy
import html
import json
import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.dashboard_picture import PICTURE, dashboards_in, draw, layout_html
from tests.support.k8s import SCHEMA_DIR
from tests.support.observability_fixture import observed_repo
from tests.support.promtool import check_rules, prometheus_rules, write_rule_file
from tests.support.rendered import render_files
from tests.support.repos import ISTIO_EXAMPLE

EXAMPLE = ISTIO_EXAMPLE
GRAFANA_DIR = SCHEMA_DIR / "grafana"
GRID_WIDTH = 24
VARIABLES = {"$cluster": ".+", "$namespace": ".+", "${datasource}": "prometheus"}



def validator(name: str) -> jsonschema.Draft7Validator:
    schema = json.loads((GRAFANA_DIR / name).read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


DASHBOARD = validator("dashboard.schema.json")
QUERY = validator("prometheus-dataquery.schema.json")


@pytest.fixture(scope="module", params=["hubble", "agent", "example"])
def files(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    if request.param == "example":
        return render_files(EXAMPLE)
    return render_files(observed_repo(hubble=request.param == "hubble").write(
        tmp_path_factory.mktemp(request.param)))


def boards(files: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """Every dashboard, by ``<root>/<data key>``."""
    return {f"{path.rsplit('/', 1)[0]}/{key}": board
            for path, content in sorted(files.items()) if path.endswith("/dashboards.yaml")
            for key, board in dashboards_in(content).items()}


def targets(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield from panel.get("targets", [])


def errors(board: dict[str, Any]) -> list[str]:
    found = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
             for e in DASHBOARD.iter_errors(board)]
    found += [f"target: {e.message}" for t in targets(board) for e in QUERY.iter_errors(t)]
    return found


# --------------------------------------------------------------------------- the model


def test_every_dashboard_matches_grafanas_model(files: dict[str, bytes]) -> None:
    found = boards(files)
    assert found
    for where, board in found.items():
        assert errors(board) == [], where


def test_the_model_check_catches_mistakes(files: dict[str, bytes]) -> None:
    board = next(iter(boards(files).values()))
    mistakes: dict[str, Callable[[dict[str, Any]], object]] = {
        "misspelt panel key": lambda b: b["panels"][1].update(titel="x"),
        "too wide": lambda b: b["panels"][1]["gridPos"].update(w=25),
        "no templating": lambda b: b.pop("templating"),
        "bad variable type": lambda b: b["templating"]["list"][0].update(type="dropdown"),
        "misspelt query key": lambda b: b["panels"][1]["targets"][0].update(exprr="up"),
        "bad value mapping": lambda b: b["panels"][1]["fieldConfig"]["defaults"].update(
            mappings=[{"type": "value", "options": {"1": {"txt": "ok"}}}]),
    }
    for name, change in mistakes.items():
        broken = copy.deepcopy(board)
        change(broken)
        assert errors(broken), name


def test_layout_ids_units_and_variables(files: dict[str, bytes]) -> None:
    for where, board in boards(files).items():
        panels = board["panels"]
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), where
        cells: set[tuple[int, int]] = set()
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_WIDTH, (where, panel["title"])
            area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                    for y in range(grid["y"], grid["y"] + grid["h"])}
            assert not cells & area, f"{where}: {panel['title']} overlaps"
            cells |= area
            if panel["type"] != "row":
                assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
                assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        names = {v["name"]: v for v in board["templating"]["list"]}
        assert set(names) == {"datasource", "cluster", "namespace"}
        assert names["datasource"]["type"] == "datasource"
        assert names["cluster"]["includeAll"] and names["namespace"]["includeAll"]


def test_units_and_rows(files: dict[str, bytes]) -> None:
    mesh = next(b for w, b in boards(files).items() if "/meshplan-mesh-" in w)
    units = {p["title"]: p["fieldConfig"]["defaults"]["unit"]
             for p in mesh["panels"] if p["type"] != "row"}
    if "Requests per second by cluster pair: mTLS vs plaintext" in units:
        assert units["Requests per second by cluster pair: mTLS vs plaintext"] == "reqps"
        assert units["mTLS share of requests per cluster pair"] == "percentunit"
        assert units["Hours until workload certificates expire"] == "h"
        assert units["TCP connections opened per second by cluster pair"] == "cps"
    assert units["Policy-denied drops by cluster and direction"] == "pps"


def test_uids_are_short_stable_and_unique(files: dict[str, bytes]) -> None:
    found = boards(files)
    uids = [b["uid"] for b in found.values()]
    assert len(uids) == len(set(uids))
    assert all(8 <= len(u) <= 40 and re.fullmatch(r"[a-z0-9-]+", u) for u in uids)
    for where, board in found.items():  # a per-cluster dashboard shows its cluster first
        cluster = next(v for v in board["templating"]["list"] if v["name"] == "cluster")
        if "/meshplan-mesh-" not in where:
            assert cluster["current"]["value"] != ["$__all"]


def test_uids_stay_when_the_inputs_change(tmp_path: Path) -> None:
    def uids(repo_dir: Path) -> dict[str, str]:
        return {w: b["uid"] for w, b in boards(render_files(repo_dir)).items()}

    before = uids(observed_repo().write(tmp_path / "a"))
    changed = observed_repo(thresholds={"workloadCertificateHours": 3})
    changed.requirements.pop("requirements/payments/pay.yaml")
    assert uids(changed.write(tmp_path / "b")).items() <= before.items()


# --------------------------------------------------------------------------- PromQL


def panel_expressions(board: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for t in targets(board)]
    for variable in board["templating"]["list"]:
        match = re.fullmatch(r"label_values\((.+), \w+\)", str(variable.get("query", "")))
        if match:  # Grafana's function around a PromQL selector
            exprs.append(match.group(1))
    for name, value in VARIABLES.items():
        exprs = [e.replace(name, value) for e in exprs]
    return exprs


def test_every_panel_expression_parses_with_promtool(files: dict[str, bytes],
                                                     tmp_path: Path) -> None:
    exprs = sorted({e for b in boards(files).values() for e in panel_expressions(b)})
    rules = [{"record": f"dashboard:panel_{i}:test", "expr": e} for i, e in enumerate(exprs)]
    proc = check_rules([write_rule_file({"groups": [{"name": "panels", "rules": rules}]},
                                        tmp_path / "panels.yaml")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    broken = [{"record": "dashboard:broken:test", "expr": f"sum by (cluster ({exprs[0]})"}]
    proc = check_rules([write_rule_file({"groups": [{"name": "b", "rules": broken}]},
                                        tmp_path / "broken.yaml")])
    assert proc.returncode != 0


def test_panels_read_what_the_rules_record(files: dict[str, bytes]) -> None:
    recorded = {r["record"] for docs in prometheus_rules(files).values() for d in docs
                for g in d["spec"]["groups"] for r in g["rules"] if "record" in r}
    for where, board in boards(files).items():
        names = {n for e in panel_expressions(board)
                 for n in re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", e)}
        assert names <= recorded | {"ALERTS", "up"}, where


# --------------------------------------------------------------------------- the picture


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def example_mesh_board() -> dict[str, Any]:
    content = (EXAMPLE / "rendered/clusters/boutique/aks/dashboards.yaml").read_bytes()
    return next(b for k, b in dashboards_in(content).items() if k.startswith("meshplan-mesh-"))


def test_the_committed_picture_has_the_layouts_size() -> None:
    """docs/observability-dashboard.png is the example's mesh-wide dashboard as laid out now
    (regenerate: python -m tests.support.dashboard_picture)."""
    _, width, height = layout_html(example_mesh_board())
    assert png_size(PICTURE.read_bytes()) == (width, height)


@pytest.mark.slow
def test_chromium_draws_the_layout(tmp_path: Path) -> None:
    board = example_mesh_board()
    picture = tmp_path / "dashboard.png"
    width, height = draw(board, picture, tmp_path)
    data = picture.read_bytes()
    assert png_size(data) == (width, height) and len(data) > 50_000
    page, _, _ = layout_html(board)
    assert all(html.escape(p["title"]) in page for p in board["panels"])


def test_dashboards_yaml_is_what_the_configmaps_hold(files: dict[str, bytes]) -> None:
    for path, content in files.items():
        if path.endswith("/dashboards.yaml"):
            for doc in yaml.safe_load_all(content):
                for key, text in doc["data"].items():
                    assert key.endswith(".json") and text.endswith("\n")
                    assert json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n" == text
