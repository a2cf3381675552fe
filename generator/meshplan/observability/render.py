"""The monitoring objects the clusters' Kustomize roots gain, as refinement's Manifests.

Each watched cluster gets, in ``spec.observability.namespace``:

* ``prometheus-rules.yaml``: the PrometheusRule ``meshplan-<mesh>`` (recording rules and
  alerts, :mod:`.rules`), labelled with ``selectorLabels`` so the Prometheus operator loads it;
* ``dashboards.yaml``: a ConfigMap labelled ``grafana_dashboard: "1"`` holding its dashboard.

The central cluster also gets a ScrapeConfig per federated member (``scrape-configs.yaml``),
the PrometheusRule ``meshplan-<mesh>-federation`` and the mesh-wide dashboard. The custom
resources carry Argo CD's ``SkipDryRunOnMissingResource``: their CRDs arrive with the
monitoring stack, which may be installed after meshplan's first sync.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from ..mesh.plan import ref_of
from ..outputs import DASHBOARDS, PROMETHEUS_RULES, SCRAPE_CONFIGS
from ..refine import ClusterRef, Manifest, ObjectKey, Plan, output_order
from ..vocabulary import (
    ARGOCD_SYNC_OPTIONS_ANNOTATION,
    CONFIG_MAP_KIND,
    GRAFANA_DASHBOARD_LABEL,
    GRAFANA_DASHBOARD_VALUE,
    MANAGED_BY,
    PROMETHEUS_RULE_KIND,
    REQUIRED_BY_ANNOTATION,
    SCRAPE_CONFIG_KIND,
    SOURCE_ANNOTATION,
)
from ..yamltext import LiteralText
from .dashboards import dashboard_json, dashboard_key
from .federation import OVERRIDE_HONOR_LABELS_NOTE, federated, scrape_config_spec
from .plan import ObservabilityPlan, Watch
from .rules import cluster_rule_groups, federation_rule_groups

MONITORING_API = "monitoring.coreos.com/v1"
SCRAPE_CONFIG_API = "monitoring.coreos.com/v1alpha1"  # the only version v0.93 serves
FILE_FOR_KIND = {PROMETHEUS_RULE_KIND: PROMETHEUS_RULES, SCRAPE_CONFIG_KIND: SCRAPE_CONFIGS,
                 CONFIG_MAP_KIND: DASHBOARDS}
FILE_NOTES = {SCRAPE_CONFIGS: OVERRIDE_HONOR_LABELS_NOTE}  # comments atop a file


def with_observability_objects(plan: Plan, observability: ObservabilityPlan) -> Plan:
    """``plan`` with every cluster's monitoring objects added."""
    extra: dict[ClusterRef, list[Manifest]] = {}
    for watch in observability.watches:
        extra.setdefault(watch.ref, []).extend(_cluster_objects(observability, watch))
    central = ref_of(observability.central)
    extra.setdefault(central, []).extend(_central_objects(observability))
    clusters = []
    for cluster_plan in plan.clusters:
        added = extra.get(cluster_plan.cluster)
        if added:
            objects = sorted((*cluster_plan.objects, *added), key=output_order)
            cluster_plan = replace(cluster_plan, objects=tuple(objects))
        clusters.append(cluster_plan)
    return replace(plan, clusters=tuple(clusters))


def _cluster_objects(plan: ObservabilityPlan, watch: Watch) -> Iterator[Manifest]:
    name = f"meshplan-{plan.mesh.mesh.name}"
    yield _manifest(plan, watch.ref, PROMETHEUS_RULE_KIND, MONITORING_API, name,
                    {"groups": cluster_rule_groups(plan, watch)}, plan.settings.selector_labels)
    yield _dashboard(plan, watch.ref, watch)


def _central_objects(plan: ObservabilityPlan) -> Iterator[Manifest]:
    central = ref_of(plan.central)
    for member in federated(plan):
        watch = plan.watch_of(member)
        assert watch is not None
        yield _manifest(plan, central, SCRAPE_CONFIG_KIND, SCRAPE_CONFIG_API,
                        f"meshplan-federate-{member.domain}-{member.name}",
                        scrape_config_spec(plan, watch), plan.settings.selector_labels)
    groups = federation_rule_groups(plan)
    if groups:
        yield _manifest(plan, central, PROMETHEUS_RULE_KIND, MONITORING_API,
                        f"meshplan-{plan.mesh.mesh.name}-federation", {"groups": groups},
                        plan.settings.selector_labels)
    yield _dashboard(plan, central, None)


def _dashboard(plan: ObservabilityPlan, where: ClusterRef, watch: Watch | None) -> Manifest:
    name = dashboard_key(plan, watch).removesuffix(".json").replace(
        "meshplan-", "meshplan-dashboard-", 1)
    body = _object(plan, CONFIG_MAP_KIND, "v1", name,
                   {GRAFANA_DASHBOARD_LABEL: GRAFANA_DASHBOARD_VALUE}, custom_resource=False)
    # a literal block: a change to the dashboard shows as the lines that changed in a diff
    body["data"] = {dashboard_key(plan, watch): LiteralText(dashboard_json(plan, watch))}
    return _wrap(plan, where, CONFIG_MAP_KIND, name, body)


def _manifest(plan: ObservabilityPlan, where: ClusterRef, kind: str, api: str, name: str,
              spec: Mapping[str, Any], labels: tuple[tuple[str, str], ...]) -> Manifest:
    body = _object(plan, kind, api, name, dict(labels), custom_resource=True)
    body["spec"] = dict(spec)
    return _wrap(plan, where, kind, name, body)


def _object(plan: ObservabilityPlan, kind: str, api: str, name: str, labels: Mapping[str, str],
            *, custom_resource: bool) -> dict[str, Any]:
    annotations = {REQUIRED_BY_ANNOTATION: _cause(plan), SOURCE_ANNOTATION: plan.mesh.mesh.file}
    if custom_resource:  # the CRD comes with the monitoring stack, maybe after this sync
        annotations[ARGOCD_SYNC_OPTIONS_ANNOTATION] = "SkipDryRunOnMissingResource=true"
    return {"apiVersion": api, "kind": kind,
            "metadata": {"name": name, "namespace": plan.settings.namespace,
                         "labels": {**MANAGED_BY, **labels},
                         "annotations": dict(sorted(annotations.items()))}}


def _wrap(plan: ObservabilityPlan, where: ClusterRef, kind: str, name: str,
          body: dict[str, Any]) -> Manifest:
    return Manifest(ObjectKey(where, kind, plan.settings.namespace, name), body, (_cause(plan),))


def _cause(plan: ObservabilityPlan) -> str:
    return f"mesh/{plan.mesh.mesh.name}"
