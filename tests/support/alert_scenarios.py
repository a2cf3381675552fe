"""``promtool test rules`` unit tests generated from a rendered PrometheusRule.

For every alerting rule meshplan rendered, two situations with synthetic series: the one the
alert describes (it must fire, with exactly the expected labels and annotations: the
requirement file included) and the healthy one (it must stay silent). The situations are
built from the rule as rendered (its namespace, source cluster, peer, threshold, ``for:``),
never from meshplan's code, so they test what a cluster's Prometheus would load. An alert
without a situation here is an error (:class:`UnknownAlert`): a new alert needs its test.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .promtool import expand

INTERVAL_MINUTES = 1
SAMPLES = 30  # half an hour of samples: past every default for: (at most 15m) plus 10m
PER_SECOND = f"0+60x{SAMPLES}"  # a counter growing 1 per second: rate() = 1
FIVE_HOURS = 5  # "a certificate 5 hours from expiry" (issue 13)
OTHER_CLUSTER = "cluster-not-in-the-plan"
OTHER_NAMESPACE = "namespace-not-in-the-plan"
Series = dict[str, str]


class UnknownAlert(Exception):
    """A rendered alert this module has no situation for."""


@dataclass
class Situation:
    """Input series, and the alerts (output labels of the expression) expected at eval."""

    name: str
    series: list[Series]
    fired: list[dict[str, str]] = field(default_factory=list)  # the expression's labels
    value: float = 1.0


@dataclass(frozen=True)
class AlertRule:
    rule: Mapping[str, Any]
    records: Mapping[str, list[Mapping[str, Any]]]  # recording rule name -> rules
    siblings: tuple[Mapping[str, Any], ...] = ()  # every alerting rule of the same name

    @property
    def name(self) -> str:
        return str(self.rule["alert"])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.rule.get("labels") or {})

    @property
    def expr(self) -> str:
        return str(self.rule["expr"])

    def record_labels(self, name: str, **match: str) -> dict[str, str]:
        """The labels of the recording rule ``name`` whose labels include ``match``."""
        for rule in self.records.get(name, []):
            labels = dict(rule.get("labels") or {})
            if all(labels.get(k) == v for k, v in match.items()):
                return labels
        raise AssertionError(f"no recording rule {name} with {match}")

    def threshold(self, operator: str) -> float:
        match = re.search(rf"{re.escape(operator)}\s*([0-9.]+)\s*$", self.expr)
        assert match, self.expr
        return float(match.group(1))


def series(metric: str, values: str, **labels: str) -> Series:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


def constant(value: float) -> str:
    return f"{value:g}x{SAMPLES}"


def minutes(duration: str) -> int:
    """A Prometheus duration of whole minutes or hours (what meshplan's ``for:`` uses)."""
    total = 0
    for amount, unit in re.findall(r"(\d+)([hms])", duration):
        total += int(amount) * {"h": 3600, "m": 60, "s": 1}[unit]
    return max(1, -(-total // 60))


# --------------------------------------------------------------------------- situations


def _plaintext_into_strict(rule: AlertRule) -> Iterator[Situation]:
    """Into its namespace; the mesh-wide rule (``strictMTLS: mesh``: no namespace label) into
    a namespace no other rule names. Plaintext into a namespace with a rule of its own is the
    siblings' situation, where the mesh-wide rule must stay silent (promtool expects exactly
    the alerts listed, of every rule of the name)."""
    namespace = rule.labels.get("destination_workload_namespace", OTHER_NAMESPACE)
    me = rule.labels["cluster"]
    for metric in ("istio_requests_total", "istio_tcp_connections_opened_total"):
        base = {"reporter": "destination", "destination_workload_namespace": namespace,
                "source_cluster": "unknown", "destination_cluster": me, "pod": "server-0"}
        yield Situation(f"plaintext {metric} into STRICT namespace {namespace}",
                        [series(metric, PER_SECOND, **base, connection_security_policy="none")],
                        [{"source_cluster": "unknown",
                          "destination_workload_namespace": namespace}])
        yield Situation(f"only mutual TLS {metric} into {namespace}",
                        [series(metric, PER_SECOND, **base,
                                connection_security_policy="mutual_tls")])


def _plaintext_between(rule: AlertRule) -> Iterator[Situation]:
    me = rule.labels["cluster"]
    source = rule.labels.get("source_cluster", OTHER_CLUSTER)
    for metric in ("istio_requests_total", "istio_tcp_connections_opened_total"):
        base = {"reporter": "destination", "destination_workload_namespace": "any-namespace",
                "source_cluster": source, "destination_cluster": me, "pod": "server-0"}
        yield Situation(f"plaintext {metric} from {source}",
                        [series(metric, PER_SECOND, **base, connection_security_policy="none")],
                        [{"source_cluster": source, "destination_cluster": me}])
        yield Situation(f"only mutual TLS {metric} from {source}",
                        [series(metric, PER_SECOND, **base,
                                connection_security_policy="mutual_tls")])


def _workload_certificate(rule: AlertRule) -> Iterator[Situation]:
    hours = min(FIVE_HOURS, rule.threshold("<") - 1)
    labels = rule.record_labels("meshplan:istio_agent_cert_expiry:hours")
    base = {"resource_name": "default", "namespace": "ns-under-test", "pod": "workload-0"}
    metric = "istio_agent_cert_expiry_seconds"
    yield Situation(f"a workload certificate {hours:g} hours from expiry",
                    [series(metric, constant(hours * 3600), **base)],
                    [{**labels, "namespace": "ns-under-test"}], hours)
    yield Situation("a workload certificate renewed (twice the threshold left)",
                    [series(metric, constant(rule.threshold("<") * 2 * 3600), **base)])


def _ca_certificate(rule: AlertRule, eval_minutes: int) -> Iterator[Situation]:
    hours = min(FIVE_HOURS, rule.threshold("<") - 1)
    labels = rule.record_labels("meshplan:istiod_cert_expiry:hours", certificate="root")
    now = eval_minutes * 60  # promtool's clock starts at the Unix epoch
    metric = "citadel_server_root_cert_expiry_timestamp"
    yield Situation(f"istiod's root certificate {hours:g} hours from expiry",
                    [series(metric, constant(now + hours * 3600), app="istiod")],
                    [labels], hours)
    yield Situation("istiod's root certificate far from expiry",
                    [series(metric, constant(now + rule.threshold("<") * 2 * 3600),
                            app="istiod")])


def _istiod_metrics_absent(rule: AlertRule) -> Iterator[Situation]:
    yield Situation("istiod not scraped", [series("up", constant(1), job="something-else")],
                    [{}])
    yield Situation("istiod scraped",
                    [series("citadel_server_root_cert_expiry_timestamp", constant(1e9),
                            app="istiod")])


def _policy_drops(rule: AlertRule) -> Iterator[Situation]:
    labels = rule.record_labels("meshplan:cilium_policy_drops:rate5m")
    metric = "cilium_drop_count_total"
    yield Situation("policy-denied drops at ingress",
                    [series(metric, PER_SECOND, reason="Policy denied", direction="INGRESS")],
                    [{**labels, "direction": "INGRESS"}])
    yield Situation("drops for another reason",
                    [series(metric, PER_SECOND, reason="Stale or unroutable IP",
                            direction="INGRESS")])


def _hubble_drops(rule: AlertRule) -> Iterator[Situation]:
    records = [dict(r.get("labels") or {})
               for r in rule.records.get("meshplan:hubble_policy_drops:rate5m", [])]
    for labels in records:
        direction, namespace = labels["direction"], labels.get("namespace")
        side = "destination_namespace" if direction == "ingress" else "source_namespace"
        where = {side: namespace or "any-namespace"}
        # every recording rule this drop counts for: its namespace, and the cluster-wide ones
        fired = [r for r in records if r["direction"] == direction
                 and r.get("namespace") in (None, namespace or "any-namespace")]
        yield Situation(f"policy-denied drops at {direction} of {namespace}",
                        [series("hubble_drop_total", PER_SECOND, reason="POLICY_DENIED",
                                traffic_direction=direction, protocol="TCP", **where)], fired)
        yield Situation(f"other drops at {direction} of {namespace}",
                        [series("hubble_drop_total", PER_SECOND, reason="CT_MAP_INSERTION_FAILED",
                                traffic_direction=direction, protocol="TCP", **where)])


def _peers(rule: AlertRule) -> list[dict[str, str]]:
    """The labels of the peers' info series (``meshplan:clustermesh_peer:info``)."""
    return [dict(r.get("labels") or {})
            for r in rule.records.get("meshplan:clustermesh_peer:info", [])]


def _readiness(peers: list[dict[str, str]], broken: str = "") -> list[Series]:
    """Two agents' readiness of every peer; one agent lost ``broken``."""
    metric = "cilium_clustermesh_remote_cluster_readiness_status"
    return [series(metric, constant(0 if p["target_cluster"] == broken and pod == "cilium-b"
                                    else 1), target_cluster=p["target_cluster"], pod=pod)
            for p in peers for pod in ("cilium-a", "cilium-b")]


def _peer_not_ready(rule: AlertRule) -> Iterator[Situation]:
    peers = _peers(rule)
    readiness = rule.record_labels("meshplan:clustermesh_peer_readiness:min")
    for peer in peers:
        name = peer["target_cluster"]
        joined = {k: v for k, v in peer.items()
                  if k in ("target_cluster", "meshplan_peer", "meshplan_requirement")}
        yield Situation(f"one agent disconnected from {name}", _readiness(peers, name),
                        [{**readiness, **joined}], 0)
    yield Situation("every agent connected to every peer", _readiness(peers))


def _peer_missing(rule: AlertRule) -> Iterator[Situation]:
    peers = _peers(rule)
    for peer in peers:
        others = [p for p in peers if p is not peer]
        yield Situation(f"no readiness series for {peer['target_cluster']}", _readiness(others),
                        [peer])
    yield Situation("a readiness series for every peer", _readiness(peers))


def _federation_job(rule: AlertRule) -> str:
    match = re.search(r'job="([^"]+)"', rule.expr)
    assert match, rule.expr
    return match.group(1)


def _federation_down(rule: AlertRule) -> Iterator[Situation]:
    job = _federation_job(rule)
    target = {"job": job, "instance": "prometheus.example:443",
              **{k: rule.labels[k] for k in ("cluster", "meshplan_domain", "meshplan_cluster")}}
    yield Situation(f"{job} cannot be scraped", [series("up", constant(0), **target)], [target],
                    0)
    yield Situation(f"{job} scraped", [series("up", constant(1), **target)])


def _federation_missing(rule: AlertRule) -> Iterator[Situation]:
    """Every other member's job of the file has targets (their own absent() stay silent)."""
    job = _federation_job(rule)
    jobs = sorted({_federation_job(AlertRule(s, rule.records)) for s in rule.siblings})
    present = [series("up", constant(1), job=j) for j in jobs if j != job]
    yield Situation(f"no job {job}", present, [{"job": job}])
    yield Situation(f"job {job} present", [*present, series("up", constant(0), job=job)])


SITUATIONS: dict[str, Callable[[AlertRule], Iterator[Situation]]] = {
    "MeshplanPlaintextIntoStrictNamespace": _plaintext_into_strict,
    "MeshplanPlaintextBetweenClusters": _plaintext_between,
    "MeshplanWorkloadCertificateExpiresSoon": _workload_certificate,
    "MeshplanIstiodCertificateMetricsAbsent": _istiod_metrics_absent,
    "MeshplanPolicyDrops": _policy_drops,
    "MeshplanPolicyDropsForRequirement": _hubble_drops,
    "MeshplanClusterMeshPeerNotReady": _peer_not_ready,
    "MeshplanClusterMeshPeerMissing": _peer_missing,
    "MeshplanFederationDown": _federation_down,
    "MeshplanFederationMissing": _federation_missing,
}


# --------------------------------------------------------------------------- test files


def unit_tests(spec: Mapping[str, Any], rule_file: str) -> tuple[dict[str, Any], list[str]]:
    """A ``promtool test rules`` document for one PrometheusRule spec, and the names of its
    tests (``<alert>: <situation>``); raises :class:`UnknownAlert` for an alert it cannot
    test."""
    records: dict[str, list[Mapping[str, Any]]] = {}
    alerts = []
    for group in spec["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                records.setdefault(rule["record"], []).append(rule)
            else:
                alerts.append(rule)
    tests, names = [], []
    for raw in alerts:
        siblings = tuple(a for a in alerts if a["alert"] == raw["alert"])
        rule = AlertRule(raw, records, siblings)
        eval_minutes = minutes(str(raw.get("for", "0s"))) + 10
        assert eval_minutes < SAMPLES, f"{rule.name}: for: longer than the test series"
        if rule.name == "MeshplanIstioCACertificateExpiresSoon":
            situations = list(_ca_certificate(rule, eval_minutes))
        elif rule.name in SITUATIONS:
            situations = list(SITUATIONS[rule.name](rule))
        else:
            raise UnknownAlert(rule.name)
        for situation in situations:
            names.append(f"{rule.name}: {situation.name}")
            tests.append(_test(rule, situation, eval_minutes))
    return {"rule_files": [rule_file], "evaluation_interval": f"{INTERVAL_MINUTES}m",
            "tests": tests}, names


def _test(rule: AlertRule, situation: Situation, eval_minutes: int) -> dict[str, Any]:
    expected = []
    for output in situation.fired:
        labels = {**output, **rule.labels}  # the rule's labels win over the expression's
        annotations = {key: expand(text, output, situation.value)
                       for key, text in (rule.rule.get("annotations") or {}).items()}
        expected.append({"exp_labels": labels, "exp_annotations": annotations})
    return {"name": f"{rule.name}: {situation.name}", "interval": f"{INTERVAL_MINUTES}m",
            "input_series": situation.series,
            "alert_rule_test": [{"eval_time": f"{eval_minutes}m", "alertname": rule.name,
                                 "exp_alerts": expected}]}
