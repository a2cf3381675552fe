"""Grafana dashboards: one per watched cluster and one for the whole mesh (at the central
cluster), as JSON in the shape of Grafana's dashboard model (``schemaVersion`` 39).

They read only meshplan's recording rules (``meshplan:*``), which carry a ``cluster`` label in
every Prometheus, federated or not, and meshplan's alerts: the same queries work on a member's
own Prometheus and on the central one. Every dashboard has a data source variable, ``cluster``
and ``namespace`` variables, units on every panel (``reqps``, ``cps``, ``percentunit``, ``h``,
``pps``) and a stable ``uid`` derived from the mesh and the cluster (at most 40 characters, as
Grafana requires). The JSON is written with sorted keys: the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..vocabulary import (
    DESTINATION_CLUSTER_LABEL,
    DESTINATION_NAMESPACE_LABEL,
    PROM_CLUSTER_LABEL,
    PROM_REQUIREMENT_LABEL,
    SECURITY_POLICY_LABEL,
    SOURCE_CLUSTER_LABEL,
    TARGET_CLUSTER_LABEL,
)
from .plan import ObservabilityPlan, Watch
from .rules import (
    CILIUM_POLICY_DROPS,
    CLUSTER_INFO,
    DIRECTION,
    HUBBLE_POLICY_DROPS,
    ISTIOD_CERT_HOURS,
    MUTUAL_TLS,
    NAMESPACE,
    NAMESPACE_INFO,
    PEER_READINESS,
    PLAINTEXT,
    REQUESTS,
    TCP_OPENED,
    WORKLOAD_CERT_HOURS,
    alternatives,
    selector,
)

SCHEMA_VERSION = 39  # Grafana 10.4 / 11
GRID_WIDTH = 24  # Grafana's grid has 24 columns
UID_LENGTH = 40  # Grafana's limit on a dashboard uid
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ALL = ".*"
CLUSTER_VAR, NAMESPACE_VAR = "$cluster", "$namespace"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    table: bool = False  # an instant query shown as a table


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # Grafana panel plugin: timeseries, bargauge, stat, table
    unit: str
    queries: tuple[Query, ...]
    description: str
    width: int = 12
    height: int = 8
    limits: tuple[float, float] | None = None  # min, max of the axis
    mappings: tuple[tuple[str, str, str], ...] = ()  # (value, text, colour)


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------- identity


def dashboard_uid(plan: ObservabilityPlan, watch: Watch | None) -> str:
    """``meshplan-`` and a digest of the mesh and the cluster: stable across renders and
    renames of nothing else, unique per mesh and cluster, at most 40 characters."""
    subject = "mesh" if watch is None else f"cluster:{watch.cluster.domain}/{watch.cluster.name}"
    digest = hashlib.sha256(f"{plan.mesh.mesh.name}:{subject}".encode()).hexdigest()
    return f"meshplan-{digest}"[:UID_LENGTH - 8]


def dashboard_key(plan: ObservabilityPlan, watch: Watch | None) -> str:
    """The ConfigMap data key (the file the Grafana sidecar writes)."""
    if watch is None:
        return f"meshplan-mesh-{plan.mesh.mesh.name}.json"
    return f"meshplan-{watch.cluster.domain}-{watch.cluster.name}.json"


# --------------------------------------------------------------------------- panels


def _in_scope(**matchers: str) -> dict[str, str]:
    return {PROM_CLUSTER_LABEL: f"=~{CLUSTER_VAR}", **matchers}


def _pair_rate(metric: str, policy: str) -> str:
    namespace = {DESTINATION_NAMESPACE_LABEL: f"=~{NAMESPACE_VAR}", SECURITY_POLICY_LABEL: policy}
    return (f"sum by ({SOURCE_CLUSTER_LABEL}, {DESTINATION_CLUSTER_LABEL}) "
            f"({selector(metric, **_in_scope(**namespace))})")


def _pair_queries(metric: str) -> tuple[Query, ...]:
    pair = f"{{{{{SOURCE_CLUSTER_LABEL}}}}} -> {{{{{DESTINATION_CLUSTER_LABEL}}}}}"
    return (Query(_pair_rate(metric, MUTUAL_TLS), f"{pair} mTLS"),
            Query(_pair_rate(metric, PLAINTEXT), f"{pair} plaintext"))


def _alerts_row() -> Row:
    firing = selector("ALERTS", alertname="=~Meshplan.+", alertstate="firing",
                      **_in_scope())
    expr = (f"sum by (alertname, severity, {PROM_CLUSTER_LABEL}, {PROM_REQUIREMENT_LABEL}) "
            f"({firing})")
    return Row("What meshplan's alerts say now", (Panel(
        "Firing meshplan alerts", "table", "none", (Query(expr, table=True),),
        "meshplan's alerts firing now (federated from every cluster on the mesh-wide "
        "dashboard), with the requirement file each one protects.", width=24, height=6),))


def _mtls_row() -> Row:
    share = (f"{_pair_rate(REQUESTS, MUTUAL_TLS)} / "
             f"{_pair_rate(REQUESTS, '=~' + alternatives([MUTUAL_TLS, PLAINTEXT]))}")
    return Row("Mutual TLS between clusters (thesis figures 5.7-5.8)", (
        Panel("Requests per second by cluster pair: mTLS vs plaintext", "timeseries", "reqps",
              _pair_queries(REQUESTS),
              "HTTP and gRPC requests per source/destination cluster pair, as the destination's "
              "sidecar reports them (connection_security_policy mutual_tls or none). Any "
              "plaintext between clusters or into a STRICT namespace also fires an alert."),
        Panel("TCP connections opened per second by cluster pair", "timeseries", "cps",
              _pair_queries(TCP_OPENED),
              "TCP connections per source/destination cluster pair, mTLS vs plaintext."),
        Panel("mTLS share of requests per cluster pair", "bargauge", "percentunit",
              (Query(share, f"{{{{{SOURCE_CLUSTER_LABEL}}}}} -> "
                            f"{{{{{DESTINATION_CLUSTER_LABEL}}}}}"),),
              "The share of requests per cluster pair that arrived over mutual TLS: 100% "
              "where meshplan requires it.", width=24, height=6, limits=(0, 1)),
    ))


def _certificates_row(plan: ObservabilityPlan) -> Row:
    hours = plan.settings.thresholds
    workload = selector(WORKLOAD_CERT_HOURS, **_in_scope(**{NAMESPACE: f"=~{NAMESPACE_VAR}"}))
    return Row("Certificates (thesis figure 5.9)", (
        Panel("Hours until workload certificates expire", "timeseries", "h",
              (Query(workload, f"{{{{{PROM_CLUSTER_LABEL}}}}} {{{{{NAMESPACE}}}}}"),),
              "The shortest time left on a sidecar's workload certificate per namespace. Istio "
              "renews it at half its lifetime (12 of 24 hours); the alert fires below "
              f"{hours['workloadCertificateHours']:g} hours."),
        Panel("Hours until istiod's root and CA certificates expire", "timeseries", "h",
              (Query(selector(ISTIOD_CERT_HOURS, **_in_scope()),
                     f"{{{{{PROM_CLUSTER_LABEL}}}}} {{{{certificate}}}}"),),
              "istiod's root and CA chain (Secret cacerts), renewed by hand; the alert fires "
              f"below {hours['caCertificateHours']:g} hours."),
    ))


def _drops_row(plan: ObservabilityPlan) -> Row:
    by_cluster = Panel(
        "Policy-denied drops by cluster and direction", "timeseries", "pps",
        (Query(f"sum by ({PROM_CLUSTER_LABEL}, {DIRECTION}) "
               f"({selector(CILIUM_POLICY_DROPS, **_in_scope())})",
               f"{{{{{PROM_CLUSTER_LABEL}}}}} {{{{{DIRECTION}}}}}"),),
        "Packets the Cilium agents dropped because no policy allowed them (reason "
        "\"Policy denied\"), in clusters where meshplan's requirements restrict pods.")
    if not plan.settings.hubble:
        return Row("Cilium policy drops", (by_cluster,))
    by_requirement = Panel(
        "Policy-denied drops by requirement", "timeseries", "pps",
        (Query(f"sum by ({PROM_REQUIREMENT_LABEL}, {DIRECTION}) "
               f"({selector(HUBBLE_POLICY_DROPS, **_in_scope(namespace=f'=~{NAMESPACE_VAR}'))})",
               f"{{{{{PROM_REQUIREMENT_LABEL}}}}} ({{{{{DIRECTION}}}}})"),),
        "Hubble's policy-denied drops in the namespace and direction each requirement "
        "restricts (requirements restricting the same pods share them).")
    return Row("Cilium policy drops", (by_requirement, by_cluster))


def _readiness(title: str, expr: str, legend: str, description: str) -> Panel:
    return Panel(title, "stat", "none", (Query(expr, legend),), description, width=24, height=5,
                 mappings=(("0", "not ready", "red"), ("1", "ready", "green")))


def _clustermesh_row() -> Row:
    return Row("ClusterMesh", (_readiness(
        "ClusterMesh peer readiness", selector(PEER_READINESS, **_in_scope()),
        f"{{{{{PROM_CLUSTER_LABEL}}}}} -> {{{{{TARGET_CLUSTER_LABEL}}}}}",
        "Whether each cluster's Cilium agents (all of them: the minimum) are connected to "
        "each peer the mesh plan connects it to."),))


def _federation_row() -> Row:
    return Row("Federation", (_readiness(
        "Members federated by the central Prometheus", selector("up", job="=~meshplan-federate-.+"),
        "{{job}}", "Whether the central Prometheus can scrape each member's /federate."),))


def rows_for(plan: ObservabilityPlan, watches: Iterable[Watch], *, mesh_wide: bool
             ) -> Iterator[Row]:
    """The rows that apply to these clusters (an Istio row only with Istio members, ...)."""
    watched = list(watches)
    yield _alerts_row()
    if any(w.istio for w in watched):
        yield _mtls_row()
        yield _certificates_row(plan)
    if any(w.protections for w in watched):
        yield _drops_row(plan)
    if any(w.peers for w in watched):
        yield _clustermesh_row()
    if mesh_wide and plan.members:
        yield _federation_row()


# --------------------------------------------------------------------------- the JSON model


def dashboard(plan: ObservabilityPlan, watch: Watch | None) -> dict[str, Any]:
    """The dashboard of one watched cluster, or (``watch`` None) of the whole mesh."""
    mesh = plan.mesh.mesh.name
    if watch is None:
        title = f"meshplan: mesh {mesh}"
        rows = list(rows_for(plan, plan.watches, mesh_wide=True))
        about = (f"Mesh {mesh}, every cluster, from the central Prometheus (federated). "
                 "Rendered by meshplan from the inventory and requirements: do not edit.")
    else:
        where = f"{watch.cluster.domain}/{watch.cluster.name}"
        title = f"meshplan: {where}"
        rows = list(rows_for(plan, (watch,), mesh_wide=False))
        about = (f"Cluster {where} (cluster {watch.name}) of mesh {mesh}. Rendered by "
                 "meshplan from the inventory and requirements: do not edit.")
    return {
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "description": about,
        "editable": False,
        "graphTooltip": 1,
        "links": [],
        "panels": list(_layout(rows)),
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["meshplan", f"mesh-{mesh}"],
        "templating": {"list": _variables(None if watch is None else watch.name)},
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "title": title,
        "uid": dashboard_uid(plan, watch),
        "version": 1,
    }


def dashboard_json(plan: ObservabilityPlan, watch: Watch | None) -> str:
    """The dashboard as deterministic JSON text (sorted keys, ASCII, newline-terminated)."""
    return json.dumps(dashboard(plan, watch), indent=2, sort_keys=True) + "\n"


def _variables(cluster: str | None) -> list[dict[str, Any]]:
    if cluster is None:
        current = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        current = {"selected": True, "text": [cluster], "value": [cluster]}
    return [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "hide": 0, "refresh": 1, "includeAll": False, "multi": False},
        {"name": "cluster", "label": "Cluster", "type": "query", "datasource": DATASOURCE,
         "query": f"label_values({CLUSTER_INFO}, {PROM_CLUSTER_LABEL})", "refresh": 2,
         "sort": 1, "multi": True, "includeAll": True, "allValue": ALL, "current": current},
        {"name": "namespace", "label": "Namespace", "type": "query", "datasource": DATASOURCE,
         "query": f"label_values({selector(NAMESPACE_INFO, **_in_scope())}, {NAMESPACE})",
         "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ALL,
         "current": {"selected": True, "text": ["All"], "value": ["$__all"]}},
    ]


def _layout(rows: list[Row]) -> Iterator[dict[str, Any]]:
    """Rows and panels with ids and grid positions: panels fill 24 columns left to right."""
    next_id, y = 1, 0
    for row in rows:
        yield {"type": "row", "id": next_id, "title": row.title, "collapsed": False,
               "panels": [], "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y}}
        next_id, y = next_id + 1, y + 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            yield _panel(panel, next_id, x, y)
            next_id, x = next_id + 1, x + panel.width
            line_height = max(line_height, panel.height)
        y += line_height


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.limits is not None:
        defaults["min"], defaults["max"] = panel.limits
    if panel.mappings:
        defaults["mappings"] = [{"type": "value", "options": {
            value: {"text": text, "color": colour, "index": i}
            for i, (value, text, colour) in enumerate(panel.mappings)}}]
    return {
        "type": panel.kind,
        "id": panel_id,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": _options(panel.kind),
        "targets": [_target(query, chr(ord("A") + i)) for i, query in enumerate(panel.queries)],
    }


def _options(kind: str) -> dict[str, Any]:
    if kind == "timeseries":
        return {"legend": {"displayMode": "table", "placement": "right", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"}}
    if kind in ("stat", "bargauge"):
        return {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    return {"showHeader": True}


def _target(query: Query, ref_id: str) -> dict[str, Any]:
    target: dict[str, Any] = {"datasource": DATASOURCE, "expr": query.expr, "refId": ref_id,
                              "editorMode": "code"}
    if query.table:
        target.update(format="table", instant=True, range=False)
    else:
        target.update(legendFormat=query.legend or "__auto", range=True)
    return target
