"""Refusals and warnings about the monitoring's inputs, every one located.

* :func:`check_observability_inputs` (with the other input checks): the central cluster must
  exist; a cluster's ``observability`` entry names one way of authenticating and never carries
  credentials (a URL with a user part is refused, and the message does not repeat it: CI logs
  are read widely); plain HTTP is a warning; entries are ignored without
  ``spec.observability`` (a warning says so).
* :func:`check_observability_plan` (once the plan exists): every watched cluster other than
  the central one needs its ``observability.prometheus`` to be federated, else its alerts
  still fire in its own Prometheus but the mesh-wide dashboard cannot show it (a warning).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..check import did_you_mean
from ..diagnostics import Diagnostic, error, warning
from ..model import Cluster, Inventory, find_cluster

if TYPE_CHECKING:  # the plan (and the mesh modules) only where there is a Mesh document
    from .plan import ObservabilityPlan

CENTRAL_PATH = "spec.observability.centralCluster"
SCRAPE_TIMEOUT_SECONDS = 10  # Prometheus' default scrape_timeout: an interval must not be less
_DURATION_PARTS = re.compile(r"(\d+)(ms|[ywdhms])")
_SECONDS = {"y": 31_536_000, "w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1,
            "ms": 0.001}


def seconds(duration: str) -> float:
    """A Prometheus duration (schema-valid) in seconds."""
    return sum(int(n) * _SECONDS[unit] for n, unit in _DURATION_PARTS.findall(duration))


def check_observability_inputs(inventory: Inventory) -> list[Diagnostic]:
    """Every problem the Mesh document's ``observability`` and the clusters' entries show."""
    clusters = [c for d in inventory.domains for c in d.clusters]
    settings = inventory.mesh.observability if inventory.mesh is not None else None
    problems = [p for c in clusters for p in _endpoint(c)]
    if settings is None:
        problems += _entries_without_settings(clusters)
        return problems
    if seconds(settings.federation_interval) < SCRAPE_TIMEOUT_SECONDS:
        problems.append(error(settings.interval_location, "spec.observability.federationInterval",
                              f"expected at least {SCRAPE_TIMEOUT_SECONDS}s (the scrape timeout "
                              "Prometheus uses by default may not exceed the interval, and "
                              "meshplan's rules change once a minute), found "
                              f"'{settings.federation_interval}'"))
    if find_cluster(inventory, settings.central_cluster) is None:
        known = [f"{c.domain}/{c.name}" for c in clusters]
        problems.append(error(settings.central_location, CENTRAL_PATH, "expected a cluster of "
                              "the inventory as <domain>/<cluster> (it runs the federating "
                              f"Prometheus), found '{settings.central_cluster}'"
                              f"{did_you_mean(settings.central_cluster, known)}"))
    return problems


def _endpoint(cluster: Cluster) -> Iterator[Diagnostic]:
    endpoint = cluster.prometheus
    if endpoint is None:
        return
    path = f"{cluster.path}.observability"
    scheme, _, rest = endpoint.url.partition("://")
    if "@" in rest.split("/", 1)[0]:
        host = rest.split("/", 1)[0].rpartition("@")[2]
        yield error(endpoint.url_location, f"{path}.prometheus", "expected a URL without "
                    "credentials (name a Secret in basicAuthSecret or bearerTokenSecret: "
                    "credentials never belong in git), found a user part in "
                    f"{scheme}://...@{host} (not repeated here; remove it from the file and "
                    "its git history, and change the password)")
    if endpoint.bearer_token_secret is not None and endpoint.basic_auth_secret is not None:
        yield error(endpoint.location, path, "expected one way to authenticate to the "
                    "cluster's Prometheus (bearerTokenSecret or basicAuthSecret), found both")
    if endpoint.url.startswith("http://"):
        yield warning(endpoint.url_location, f"{path}.prometheus", "federation over plain "
                      f"HTTP ({endpoint.url}) sends the cluster's metrics, and any "
                      "credentials, unencrypted between clusters: use https://")


def _entries_without_settings(clusters: list[Cluster]) -> Iterator[Diagnostic]:
    entries = [c for c in clusters if c.prometheus is not None]
    if entries:
        first = entries[0].prometheus
        assert first is not None
        yield warning(first.location, f"{entries[0].path}.observability", "observability "
                      f"entries ({len(entries)} cluster(s)) are ignored without "
                      "spec.observability in a Mesh document: no monitoring is rendered")


def check_observability_plan(plan: ObservabilityPlan) -> list[Diagnostic]:
    """What only the plan shows: watched clusters the central Prometheus cannot federate."""
    settings = plan.settings
    if not plan.watches:
        return [warning(settings.location, "spec.observability", "no cluster has anything to "
                        "watch (no Istio member, ClusterMesh peer or protected workload): "
                        "only the central cluster's federation is rendered")]
    central = f"{plan.central.domain}/{plan.central.name}"
    return [warning(w.cluster.location, f"{w.cluster.path}.observability", "expected the "
                    f"address of the Prometheus of {w.cluster.domain}/{w.cluster.name} "
                    "(observability: {prometheus: https://...}) for the central Prometheus "
                    f"in {central} to federate, found none: its alerts fire in its own "
                    "Prometheus, but the mesh-wide dashboard does not show it")
            for w in plan.members if w.cluster.prometheus is None]
