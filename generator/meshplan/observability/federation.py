"""The central Prometheus federates every other watched cluster: one ScrapeConfig each.

Prometheus' federation (``docs/federation.md``): the central Prometheus scrapes each member's
``/federate`` endpoint with at least one ``match[]`` selector and ``honor_labels: true``, so
the series keep the labels they have in the member (the ``cluster`` label of meshplan's
recording rules among them) instead of being relabelled as the central Prometheus' own
targets. Istio's multicluster monitoring guide does the same and adds a ``cluster`` target
label; here the static target labels carry it, for the series that lack one.

What is federated: meshplan's recording rules (``meshplan:*``, already aggregated per cluster
pair, namespace and peer: Prometheus' federation guide recommends federating aggregates, not
raw series) and meshplan's own alerts (``ALERTS{alertname=~"Meshplan.+"}``), which the
mesh-wide dashboard lists.

**overrideHonorLabels.** A Prometheus resource with ``spec.overrideHonorLabels: true`` makes
the operator write ``honor_labels: false`` into every scrape job, ScrapeConfigs included
(prometheus-operator ``pkg/prometheus/promcfg.go``, ``AddHonorLabels``): the federated series
then lose their ``cluster`` and ``job`` labels to the central Prometheus' ``exported_*``
relabelling, and the mesh-wide dashboard and alerts mix the clusters up. The rendered file
says so in a comment (:data:`OVERRIDE_HONOR_LABELS_NOTE`), and docs/observability.md explains.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..model import Cluster, PrometheusEndpoint
from .plan import ObservabilityPlan, Watch
from .rules import RECORD_PREFIX, cluster_labels, federation_job

FEDERATE_PATH = "/federate"
MATCHES = (
    f'{{__name__=~"{RECORD_PREFIX}.+"}}',  # every recording rule of meshplan
    '{__name__="ALERTS", alertname=~"Meshplan.+"}',  # and its alerts, pending and firing
)
TOKEN_KEY, USERNAME_KEY, PASSWORD_KEY, CA_KEY = "token", "username", "password", "ca.crt"
OVERRIDE_HONOR_LABELS_NOTE = (
    "# Federation needs honorLabels: true (the series keep their cluster and job labels).\n"
    "# WARNING: a Prometheus with spec.overrideHonorLabels: true turns it off for every\n"
    "# ScrapeConfig too: the federated series would then mix the clusters up. Leave it unset.\n"
)


def scrape_config_spec(plan: ObservabilityPlan, watch: Watch) -> dict[str, Any]:
    """The ``spec`` of the ScrapeConfig federating one member (which has an endpoint)."""
    cluster = watch.cluster
    endpoint = cluster.prometheus
    assert endpoint is not None
    url = urlsplit(endpoint.url)
    spec: dict[str, Any] = {
        "jobName": federation_job(cluster),
        "honorLabels": True,
        "metricsPath": url.path.rstrip("/") + FEDERATE_PATH,
        "params": {"match[]": list(MATCHES)},
        "scheme": url.scheme.upper(),
        "scrapeInterval": plan.settings.federation_interval,
        "staticConfigs": [{"targets": [target_of(endpoint)],
                           "labels": cluster_labels(cluster)}],
    }
    spec.update(_credentials(endpoint))
    return spec


def target_of(endpoint: PrometheusEndpoint) -> str:
    """``host:port`` of the endpoint (the scheme's port when the URL names none)."""
    url = urlsplit(endpoint.url)
    host = url.hostname or ""
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{host}:{port}"


def _credentials(endpoint: PrometheusEndpoint) -> dict[str, Any]:
    """References to Secrets in the central cluster's monitoring namespace, never values."""
    found: dict[str, Any] = {}
    if endpoint.bearer_token_secret is not None:
        found["authorization"] = {"type": "Bearer", "credentials": {
            "name": endpoint.bearer_token_secret, "key": TOKEN_KEY}}
    if endpoint.basic_auth_secret is not None:
        found["basicAuth"] = {
            "username": {"name": endpoint.basic_auth_secret, "key": USERNAME_KEY},
            "password": {"name": endpoint.basic_auth_secret, "key": PASSWORD_KEY}}
    if endpoint.ca_secret is not None:
        found["tlsConfig"] = {"ca": {"secret": {"name": endpoint.ca_secret, "key": CA_KEY}}}
    return found


def federated(plan: ObservabilityPlan) -> tuple[Cluster, ...]:
    """The members the central Prometheus federates: watched, with an endpoint."""
    return tuple(w.cluster for w in plan.members if w.cluster.prometheus is not None)
