"""meshplan.observability.federation: the central Prometheus' ScrapeConfigs."""

from __future__ import annotations

from pathlib import Path

import pytest
from meshplan.diagnostics import Location
from meshplan.mesh.plan import plan_mesh
from meshplan.model import PrometheusEndpoint
from meshplan.observability.federation import MATCHES, scrape_config_spec, target_of
from meshplan.observability.plan import plan_observability
from meshplan.pipeline import validated

from tests.support.observability_fixture import observed_repo

HERE = Location("inventory/x.yaml", 1, 1)


def endpoint(url: str) -> PrometheusEndpoint:
    return PrometheusEndpoint(url, None, None, None, HERE, HERE)


@pytest.mark.parametrize(("url", "target"), [
    ("https://prometheus.example.com", "prometheus.example.com:443"),
    ("http://prometheus.example.com", "prometheus.example.com:80"),
    ("https://prometheus.example.com:9091/", "prometheus.example.com:9091"),
    ("https://10.0.0.7:9090/prometheus", "10.0.0.7:9090"),
    ("https://[2001:db8::7]:9090", "[2001:db8::7]:9090"),
])
def test_targets(url: str, target: str) -> None:
    assert target_of(endpoint(url)) == target


def test_the_scrape_config_of_each_member(tmp_path: Path) -> None:
    inventory, _ = validated(observed_repo(federationInterval="1m").write(tmp_path))
    mesh = plan_mesh(inventory)
    assert mesh is not None
    plan = plan_observability(mesh)
    assert plan is not None
    specs = {w.cluster.name: scrape_config_spec(plan, w) for w in plan.members}
    ap1 = specs["ap1"]
    assert ap1["metricsPath"] == "/prometheus/federate"  # the URL's path prefix
    assert ap1["scheme"] == "HTTPS" and ap1["scrapeInterval"] == "1m"
    assert ap1["honorLabels"] is True and ap1["jobName"] == "meshplan-federate-retail-ap1"
    assert ap1["params"] == {"match[]": list(MATCHES)}
    assert ap1["staticConfigs"] == [{
        "targets": ["monitoring.ap1.retail.example.com:8443"],
        "labels": {"cluster": "retail-ap1", "meshplan_domain": "retail",
                   "meshplan_cluster": "retail/ap1"}}]
    assert specs["p1"]["metricsPath"] == "/federate"
