"""PrometheusRules: recording rules that measure what the requirements intend, alerts that
fire when production disagrees. Pure functions of the observability plan.

Each watched cluster's rules run in that cluster's own Prometheus (its alerts do not depend on
federation), on that cluster's metrics:

* recording rules, every series labelled with the cluster (``cluster``: its Istio
  clusterName, which is its Cilium name; ``meshplan_domain``, ``meshplan_cluster``), so that
  the central Prometheus can federate them as they are:
  ``meshplan:cluster:info`` and ``meshplan:namespace:info`` (what meshplan watches there),
  request and TCP-connection rates per source/destination cluster pair, destination namespace
  and ``connection_security_policy`` (the thesis' figures 5.7-5.8), hours until workload and
  istiod certificates expire (figure 5.9), Cilium's policy-denied drops (per requirement with
  Hubble), ClusterMesh peer readiness;
* alerts, each with a severity, a ``for:`` and annotations naming the domain, the cluster
  and, where one exists, the requirement file (``meshplan_requirement``, also a label, for
  routing).

One group per concern (``meshplan-info``, ``-mtls``, ``-certificates``, ``-policy-drops``,
``-clustermesh``), its recording rules before the alerts that read them.

Istio computes ``connection_security_policy`` (``mutual_tls`` or ``none``) only where it
reports as the destination (``reporter="destination"``); the client side says ``unknown``. So
each cluster watches the traffic *into* it, and every cluster pair is watched once, at its
destination. The central cluster also gets rules about the federation itself
(:func:`federation_rule_groups`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..mesh.values import istio_cluster_name
from ..model import Cluster, Requirement
from ..vocabulary import (
    CERT_RESOURCE_LABEL,
    CILIUM_DROP_POLICY_DENIED,
    CILIUM_DROPS,
    CILIUM_PEER_READINESS,
    DESTINATION_CLUSTER_LABEL,
    DESTINATION_NAMESPACE_LABEL,
    HUBBLE_DESTINATION_NAMESPACE_LABEL,
    HUBBLE_DIRECTION_LABEL,
    HUBBLE_DROP_POLICY_DENIED,
    HUBBLE_DROPS,
    HUBBLE_SOURCE_NAMESPACE_LABEL,
    ISTIO_AGENT_CERT_EXPIRY,
    ISTIO_REQUESTS,
    ISTIO_TCP_OPENED,
    ISTIOD_CERT_CHAIN_EXPIRY,
    ISTIOD_ROOT_CERT_EXPIRY,
    PROM_CLUSTER_LABEL,
    PROM_DOMAIN_LABEL,
    PROM_MESHPLAN_CLUSTER_LABEL,
    PROM_PEER_LABEL,
    PROM_REQUIREMENT_LABEL,
    PROM_SEVERITY_LABEL,
    REPORTER_LABEL,
    SECURITY_POLICY_LABEL,
    SOURCE_CLUSTER_LABEL,
    TARGET_CLUSTER_LABEL,
)
from .plan import IncomingFlow, ObservabilityPlan, Protection, StrictNamespace, Watch

RATE_WINDOW = "5m"  # at least four scrapes at the usual 30 s (kube-prometheus-stack's default)
RECORD_PREFIX = "meshplan:"  # every recording rule's name: what the central one federates
CLUSTER_INFO = "meshplan:cluster:info"
NAMESPACE_INFO = "meshplan:namespace:info"
REQUESTS = f"meshplan:istio_requests:rate{RATE_WINDOW}"
TCP_OPENED = f"meshplan:istio_tcp_connections_opened:rate{RATE_WINDOW}"
WORKLOAD_CERT_HOURS = "meshplan:istio_agent_cert_expiry:hours"
ISTIOD_CERT_HOURS = "meshplan:istiod_cert_expiry:hours"
CILIUM_POLICY_DROPS = f"meshplan:cilium_policy_drops:rate{RATE_WINDOW}"
HUBBLE_POLICY_DROPS = f"meshplan:hubble_policy_drops:rate{RATE_WINDOW}"
PEER_READINESS = "meshplan:clustermesh_peer_readiness:min"
PEER_INFO = "meshplan:clustermesh_peer:info"
WORKLOAD_CERTIFICATE = "default"  # the sidecar's SDS resource name of its workload certificate
NAMESPACE = "namespace"  # the label prometheus-operator's monitors put on every target
DIRECTION = "direction"  # cilium_drop_count_total's direction label (INGRESS, EGRESS)
CERTIFICATE = "certificate"  # which of istiod's certificates: root or ca-chain
MUTUAL_TLS, PLAINTEXT, UNKNOWN = "mutual_tls", "none", "unknown"
SHOWN_FILES = 5  # requirement files an annotation lists before "and N more"

Rule = dict[str, Any]


# --------------------------------------------------------------------------- PromQL text


def quoted(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def selector(metric: str, **matchers: str) -> str:
    """``metric{label="value", ...}``; a value starting with ``=~``, ``!~`` or ``!=`` keeps
    that operator (``{"source_cluster": "!~a|b"}``)."""
    parts = []
    for label, value in matchers.items():
        operator = "="
        for candidate in ("=~", "!~", "!="):
            if value.startswith(candidate):
                operator, value = candidate, value[len(candidate):]
        parts.append(f"{label}{operator}{quoted(value)}")
    return f"{metric}{{{', '.join(parts)}}}" if parts else metric


def alternatives(names: Iterable[str]) -> str:
    """A regular expression matching exactly these label values (RE2 metacharacters
    escaped; Prometheus anchors label regexes)."""
    special = set("\\.+*?()|[]{}^$")
    return "|".join("".join(f"\\{ch}" if ch in special else ch for ch in name)
                    for name in names)


def number(value: float) -> str:
    """A threshold as PromQL writes it (``6``, ``0.05``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def own(watch: Watch, name: str, **matchers: str) -> str:
    """A recording rule's series of this cluster only: the central Prometheus also holds the
    members' series it federates (honor_labels keeps their ``cluster``), which its own
    alerts must neither read as its own nor join on (many-to-many)."""
    return selector(name, **{PROM_CLUSTER_LABEL: watch.name}, **matchers)


def rate(metric: str, **matchers: str) -> str:
    return f"rate({selector(metric, **matchers)}[{RATE_WINDOW}])"


# --------------------------------------------------------------------------- rule records


def record(name: str, expr: str, labels: Mapping[str, str] | None = None) -> Rule:
    rule: Rule = {"record": name, "expr": expr}
    if labels:
        rule["labels"] = dict(labels)
    return rule


def alert(name: str, expr: str, duration: str, labels: Mapping[str, str],
          annotations: Mapping[str, str]) -> Rule:
    return {"alert": name, "expr": expr, "for": duration, "labels": dict(labels),
            "annotations": dict(annotations)}


def group(name: str, rules: list[Rule]) -> dict[str, Any]:
    return {"name": name, "rules": rules}


def cluster_labels(cluster: Cluster) -> dict[str, str]:
    """The labels every series and alert of a cluster carries."""
    return {PROM_CLUSTER_LABEL: istio_cluster_name(cluster),
            PROM_DOMAIN_LABEL: cluster.domain,
            PROM_MESHPLAN_CLUSTER_LABEL: where(cluster)}


def where(cluster: Cluster) -> str:
    return f"{cluster.domain}/{cluster.name}"


def files_of(requirements: Iterable[Requirement]) -> str:
    """The requirement files, sorted and joined (the ``meshplan_requirement`` value)."""
    return ",".join(sorted({r.file for r in requirements}))


def named(requirements: Iterable[Requirement]) -> str:
    """``key (file:line:col)`` of each requirement, the first few, for a description."""
    items = [f"{r.key} ({r.location})" for r in requirements]
    shown = ", ".join(items[:SHOWN_FILES])
    more = len(items) - SHOWN_FILES
    return shown + (f" and {more} more" if more > 0 else "")


def context(watch: Watch, severity: str, requirements: Iterable[Requirement] = (),
            **subject: str) -> tuple[dict[str, str], dict[str, str]]:
    """An alert's labels and the annotations that name its domain, cluster and requirement
    files (the annotation lists them all; the label is there when there is exactly one).

    ``subject``: labels telling apart the rules of one alert in one cluster (the namespace,
    the source cluster, the peer), the same labels and values its expression yields, so
    that promtool's duplicate-rules lint and Alertmanager's grouping see distinct alerts."""
    labels = {**cluster_labels(watch.cluster), **subject, PROM_SEVERITY_LABEL: severity}
    annotations = {PROM_DOMAIN_LABEL: watch.cluster.domain,
                   PROM_MESHPLAN_CLUSTER_LABEL: where(watch.cluster)}
    files = files_of(requirements)
    if files:
        annotations[PROM_REQUIREMENT_LABEL] = files
        if "," not in files:  # one file: a label too, to route and group alerts by
            labels[PROM_REQUIREMENT_LABEL] = files
    return labels, annotations


# --------------------------------------------------------------------------- per cluster


def cluster_rule_groups(plan: ObservabilityPlan, watch: Watch) -> list[dict[str, Any]]:
    """The rule groups of one watched cluster (the ``spec.groups`` of its PrometheusRule).

    One group per concern, its recording rules first: Prometheus evaluates the rules of a
    group in order, so an alert reads the value its recording rule wrote in the same
    evaluation (rules of different groups would see it one interval late)."""
    labels = cluster_labels(watch.cluster)
    groups = {
        "meshplan-info": list(_info_records(watch, labels)),
        "meshplan-mtls": [*_mtls_records(watch, labels), *_mtls_alerts(plan, watch)],
        "meshplan-certificates": [*_certificate_records(watch, labels),
                                  *_certificate_alerts(plan, watch)],
        "meshplan-policy-drops": [*_drop_records(plan, watch, labels),
                                  *_drop_alerts(plan, watch)],
        "meshplan-clustermesh": [*_clustermesh_records(watch, labels),
                                 *_clustermesh_alerts(plan, watch)],
    }
    return [group(name, rules) for name, rules in groups.items() if rules]


def _info_records(watch: Watch, labels: Mapping[str, str]) -> Iterator[Rule]:
    """What meshplan watches here: the cluster, and the namespaces taking part (STRICT or
    not), for the dashboards' variables and for finding a cluster whose rules are missing."""
    yield record(CLUSTER_INFO, "vector(1)", labels)
    strict = {s.namespace for s in watch.strict}
    for namespace in sorted({*watch.namespaces, *strict}):
        yield record(NAMESPACE_INFO, "vector(1)",
                     {**labels, NAMESPACE: namespace, "strict": str(namespace in strict).lower()})


def _mtls_records(watch: Watch, labels: Mapping[str, str]) -> Iterator[Rule]:
    if not watch.istio:
        return
    pair = (f"{SOURCE_CLUSTER_LABEL}, {DESTINATION_CLUSTER_LABEL}, "
            f"{DESTINATION_NAMESPACE_LABEL}, {SECURITY_POLICY_LABEL}")
    for name, metric in ((REQUESTS, ISTIO_REQUESTS), (TCP_OPENED, ISTIO_TCP_OPENED)):
        yield record(name, f"sum by ({pair}) ({rate(metric, **{REPORTER_LABEL: 'destination'})})",
                     labels)


def _certificate_records(watch: Watch, labels: Mapping[str, str]) -> Iterator[Rule]:
    if not watch.istio:
        return
    workload = selector(ISTIO_AGENT_CERT_EXPIRY, **{CERT_RESOURCE_LABEL: WORKLOAD_CERTIFICATE})
    yield record(WORKLOAD_CERT_HOURS, f"min by ({NAMESPACE}) ({workload}) / 3600", labels)
    for certificate, metric in (("root", ISTIOD_ROOT_CERT_EXPIRY),
                                ("ca-chain", ISTIOD_CERT_CHAIN_EXPIRY)):
        yield record(ISTIOD_CERT_HOURS, f"(min({metric}) - time()) / 3600",
                     {**labels, CERTIFICATE: certificate})


def _drop_records(plan: ObservabilityPlan, watch: Watch, labels: Mapping[str, str]
                  ) -> Iterator[Rule]:
    if not watch.protections:
        return
    yield record(CILIUM_POLICY_DROPS, f"sum by ({DIRECTION}) "
                 f"({rate(CILIUM_DROPS, reason=CILIUM_DROP_POLICY_DENIED)})", labels)
    if plan.settings.hubble:
        for protection in watch.protections:
            yield _hubble_record(protection, labels)


def _clustermesh_records(watch: Watch, labels: Mapping[str, str]) -> Iterator[Rule]:
    """The peers the mesh plan connects (one small info series each, with the peer's name in
    meshplan's terms and the requirement that needs it), and their readiness: the alerts
    join the two, so a cluster with hundreds of peers still has two alerting rules."""
    if not watch.peers:
        return
    for link in watch.peers:
        peer = {TARGET_CLUSTER_LABEL: link.cluster.mesh_name, PROM_PEER_LABEL: where(link.cluster)}
        if link.requirement is not None:
            peer[PROM_REQUIREMENT_LABEL] = link.requirement.file
        yield record(PEER_INFO, "vector(1)", {**labels, **peer})
    yield record(PEER_READINESS, f"min by ({TARGET_CLUSTER_LABEL}) "
                 f"({CILIUM_PEER_READINESS})", labels)


def _hubble_record(protection: Protection, labels: Mapping[str, str]) -> Rule:
    """Hubble's policy-denied drops in the namespace and direction a requirement restricts:
    ingress drops are counted at the destination namespace, egress drops at the source."""
    matchers = {"reason": HUBBLE_DROP_POLICY_DENIED, HUBBLE_DIRECTION_LABEL: protection.direction}
    extra = {DIRECTION: protection.direction,
             PROM_REQUIREMENT_LABEL: files_of(protection.requirements)}
    if protection.namespace is not None:
        side = (HUBBLE_DESTINATION_NAMESPACE_LABEL if protection.direction == "ingress"
                else HUBBLE_SOURCE_NAMESPACE_LABEL)
        matchers[side] = protection.namespace
        extra[NAMESPACE] = protection.namespace
    return record(HUBBLE_POLICY_DROPS, f"sum({rate(HUBBLE_DROPS, **matchers)})",
                  {**labels, **extra})


# --------------------------------------------------------------------------- mutual TLS


def _plaintext(watch: Watch, by: str, **matchers: str) -> str:
    """Plaintext requests or TCP connections (either, per second) into this cluster."""
    parts = [f"sum by ({by}) ({own(watch, name, **{SECURITY_POLICY_LABEL: PLAINTEXT}, **matchers)})"
             " > 0" for name in (REQUESTS, TCP_OPENED)]
    return " or ".join(parts)


def _mtls_alerts(plan: ObservabilityPlan, watch: Watch) -> Iterator[Rule]:
    if not watch.istio:
        return
    for strict in watch.strict:
        yield _plaintext_into_strict(plan, watch, strict)
    for flow in watch.incoming:
        yield _plaintext_from(plan, watch, flow)
    covered = {istio_cluster_name(f.source) for f in watch.incoming}
    if any(istio_cluster_name(s) not in covered for s in watch.sources):
        yield _plaintext_from_elsewhere(plan, watch, covered)


def _plaintext_into_strict(plan: ObservabilityPlan, watch: Watch,
                           strict: StrictNamespace) -> Rule:
    if strict.mesh_wide:
        return _plaintext_into_mesh_wide_strict(plan, watch, strict)
    labels, annotations = context(watch, "critical", strict.requirements,
                                  **{DESTINATION_NAMESPACE_LABEL: strict.namespace})
    why = (f"because of {named(strict.requirements)}" if strict.requirements
           else "(the identity layer's rule)")
    return alert(
        "MeshplanPlaintextIntoStrictNamespace",
        _plaintext(watch, f"{SOURCE_CLUSTER_LABEL}, {DESTINATION_NAMESPACE_LABEL}",
                   **{DESTINATION_NAMESPACE_LABEL: strict.namespace}),
        plan.settings.durations["plaintext"], labels,
        {"summary": f"Plaintext traffic into STRICT namespace {strict.namespace} of "
                    f"{where(watch.cluster)}",
         "description": (
             f"Istio in {where(watch.cluster)} (cluster {watch.name}) accepted "
             "{{ $value | humanize }} plaintext requests or connections per second from "
             "cluster {{ $labels.source_cluster }} into namespace "
             f"{strict.namespace}, where meshplan requires mutual TLS (PeerAuthentication "
             f"STRICT) {why}. STRICT is not in force there: look for a workload-level "
             "PeerAuthentication with PERMISSIVE or DISABLE, a port-level exception, or a "
             "missing namespace PeerAuthentication (kubectl get peerauthentication -A), and "
             "for workloads without a sidecar."),
         **annotations})


def _plaintext_into_mesh_wide_strict(plan: ObservabilityPlan, watch: Watch,
                                     strict: StrictNamespace) -> Rule:
    """``strictMTLS: mesh``: the root namespace's PeerAuthentication makes STRICT the default
    of every namespace, so plaintext into any namespace alerts; those with a STRICT alert of
    their own are left to it (one alert per plaintext flow)."""
    own = [s.namespace for s in watch.strict if not s.mesh_wide]
    matchers = {DESTINATION_NAMESPACE_LABEL: f"!~{alternatives(own)}"} if own else {}
    labels, annotations = context(watch, "critical", strict.requirements)
    istio = plan.mesh.mesh.istio
    assert istio is not None, "mesh-wide STRICT needs spec.istio"
    return alert(
        "MeshplanPlaintextIntoStrictNamespace",
        _plaintext(watch, f"{SOURCE_CLUSTER_LABEL}, {DESTINATION_NAMESPACE_LABEL}", **matchers),
        plan.settings.durations["plaintext"], labels,
        {"summary": ("Plaintext traffic into namespace {{ $labels.destination_workload_namespace "
                     f"}}}} of {where(watch.cluster)} (STRICT mesh-wide)"),
         "description": (
             f"Istio in {where(watch.cluster)} (cluster {watch.name}) accepted "
             "{{ $value | humanize }} plaintext requests or connections per second from "
             "cluster {{ $labels.source_cluster }} into namespace "
             "{{ $labels.destination_workload_namespace }}, where meshplan requires mutual TLS "
             f"mesh-wide (PeerAuthentication STRICT in {strict.namespace}, because of "
             f"spec.istio.strictMTLS: mesh at {istio.location}). STRICT is not in force "
             "there: look for a namespace or workload PeerAuthentication with PERMISSIVE or "
             f"DISABLE, a port-level exception, a missing {strict.namespace}/default "
             "PeerAuthentication (kubectl get peerauthentication -A), and for workloads "
             "without a sidecar."),
         **annotations})


def _plaintext_from(plan: ObservabilityPlan, watch: Watch, flow: IncomingFlow) -> Rule:
    source = flow.source
    labels, annotations = context(watch, "critical", (flow.requirement,),
                                  **{SOURCE_CLUSTER_LABEL: istio_cluster_name(source)})
    return alert(
        "MeshplanPlaintextBetweenClusters",
        _plaintext(watch, f"{SOURCE_CLUSTER_LABEL}, {DESTINATION_CLUSTER_LABEL}",
                   **{SOURCE_CLUSTER_LABEL: istio_cluster_name(source)}),
        plan.settings.durations["plaintext"], labels,
        {"summary": f"Plaintext traffic from {where(source)} into {where(watch.cluster)}",
         "description": (
             f"Istio in {where(watch.cluster)} accepted {{{{ $value | humanize }}}} plaintext "
             f"requests or connections per second from {where(source)} (cluster "
             f"{istio_cluster_name(source)}): traffic between member clusters must be mutual "
             f"TLS. The flow is intended by {named((flow.requirement,))}. A client sidecar "
             "sent it in plaintext: look for a DestinationRule with tls.mode DISABLE for the "
             "destination's host, or meshConfig.enableAutoMtls set to false."),
         **annotations})


def _plaintext_from_elsewhere(plan: ObservabilityPlan, watch: Watch,
                              covered: set[str]) -> Rule:
    """Plaintext from any other member no requirement intends a flow from (the sources with
    an intended flow have rules of their own); ``unknown`` is a client without a sidecar."""
    labels, annotations = context(watch, "critical")
    excluded = alternatives(["", UNKNOWN, watch.name, *sorted(covered)])
    return alert(
        "MeshplanPlaintextBetweenClusters",
        _plaintext(watch, f"{SOURCE_CLUSTER_LABEL}, {DESTINATION_CLUSTER_LABEL}",
                   **{SOURCE_CLUSTER_LABEL: f"!~{excluded}"}),
        plan.settings.durations["plaintext"], labels,
        {"summary": ("Plaintext traffic from cluster {{ $labels.source_cluster }} into "
                     f"{where(watch.cluster)}"),
         "description": (
             f"Istio in {where(watch.cluster)} accepted {{{{ $value | humanize }}}} plaintext "
             "requests or connections per second from cluster {{ $labels.source_cluster }}, "
             "for which no requirement intends a flow into it: traffic between member "
             "clusters must be mutual TLS. Find the client (istio_requests_total with "
             "connection_security_policy=\"none\") and why its sidecar sent plaintext."),
         **annotations})


# --------------------------------------------------------------------------- certificates


def _certificate_alerts(plan: ObservabilityPlan, watch: Watch) -> Iterator[Rule]:
    if not watch.istio:
        return
    settings, cluster = plan.settings, watch.cluster
    duration = settings.durations["certificates"]
    hours = number(settings.thresholds["workloadCertificateHours"])
    labels, annotations = context(watch, "critical")
    yield alert(
        "MeshplanWorkloadCertificateExpiresSoon", f"{own(watch, WORKLOAD_CERT_HOURS)} < {hours}",
        duration, labels,
        {"summary": ("Workload certificates in {{ $labels.namespace }} of "
                     f"{where(cluster)} expire in {{{{ $value | humanize }}}} hours"),
         "description": (
             "Sidecars in namespace {{ $labels.namespace }} of "
             f"{where(cluster)} hold a workload certificate with {{{{ $value | humanize }}}} "
             f"hours left (the alert is below {hours}). Istio renews it when half its "
             "lifetime is left (12 of the default 24 hours), so renewal has been failing: "
             "check istiod's logs and its CA (Secret cacerts in istio-system) and the "
             "sidecars' connection to istiod (istioctl proxy-status). Once it expires, mutual "
             "TLS to and from these workloads fails."),
         **annotations})
    ca_hours = number(settings.thresholds["caCertificateHours"])
    labels, annotations = context(watch, "warning")
    yield alert(
        "MeshplanIstioCACertificateExpiresSoon", f"{own(watch, ISTIOD_CERT_HOURS)} < {ca_hours}",
        duration, labels,
        {"summary": ("istiod's {{ $labels.certificate }} certificate in "
                     f"{where(cluster)} expires in {{{{ $value | humanize }}}} hours"),
         "description": (
             "The {{ $labels.certificate }} certificate istiod signs workload certificates "
             f"with in {where(cluster)} (Secret cacerts: an intermediate under the mesh's "
             f"shared root) has {{{{ $value | humanize }}}} hours left (the alert is below "
             f"{ca_hours}). Renew it and update cacerts in every member before it expires: "
             "workloads then get certificates no cluster trusts, and every mutual TLS "
             "connection fails."),
         **annotations})
    yield alert(
        "MeshplanIstiodCertificateMetricsAbsent", f"absent({ISTIOD_ROOT_CERT_EXPIRY})",
        duration, labels,
        {"summary": f"No istiod certificate metrics from {where(cluster)}",
         "description": (
             f"The Prometheus of {where(cluster)} has no {ISTIOD_ROOT_CERT_EXPIRY}: istiod is "
             "not scraped (or not running), so meshplan cannot warn before the mesh's "
             "certificates expire. Scrape istiod's metrics (port 15014, /metrics)."),
         **annotations})


# --------------------------------------------------------------------------- policy drops


def _drop_alerts(plan: ObservabilityPlan, watch: Watch) -> Iterator[Rule]:
    if not watch.protections:
        return
    settings = plan.settings
    threshold = number(settings.thresholds["policyDropsPerSecond"])
    duration = settings.durations["policyDrops"]
    cluster = watch.cluster
    advice = ("Either something calls what no requirement allows (an attack, or a flow "
              "missing from the requirements: add it), or an intended flow is blocked "
              "(meshplan verify; hubble observe --verdict DROPPED).")
    if settings.hubble:
        labels, annotations = context(watch, "warning")
        yield alert(
            "MeshplanPolicyDropsForRequirement", f"{own(watch, HUBBLE_POLICY_DROPS)} > {threshold}",
            duration, labels,
            {"summary": ("Policy drops at {{ $labels.direction }} of "
                         "{{ with $labels.namespace }}namespace {{ . }}{{ else }}every "
                         f"namespace{{{{ end }}}} in {where(cluster)}"),
             "description": (
                 f"Cilium in {where(cluster)} denied {{{{ $value | humanize }}}} packets per "
                 "second at {{ $labels.direction }} by policy (Hubble, over "
                 f"{RATE_WINDOW}), where the requirement in "
                 "{{ $labels.meshplan_requirement }} restricts pods. " + advice),
             **annotations,
             PROM_REQUIREMENT_LABEL: "{{ $labels.meshplan_requirement }}"})
        return
    labels, annotations = context(watch, "warning")
    yield alert(
        "MeshplanPolicyDrops", f"{own(watch, CILIUM_POLICY_DROPS)} > {threshold}", duration, labels,
        {"summary": ("Cilium drops {{ $value | humanize }} packets per second at "
                     f"{{{{ $labels.direction }}}} by policy in {where(cluster)}"),
         "description": (
             f"Cilium in {where(cluster)} denied {{{{ $value | humanize }}}} packets per "
             f"second at {{{{ $labels.direction }}}} by policy (over {RATE_WINDOW}). "
             f"Requirements restricting pods here: {named(watch.requirements)}. " + advice
             + " Set spec.observability.hubble to see which requirement."),
         **annotations})


# --------------------------------------------------------------------------- ClusterMesh


def _clustermesh_alerts(plan: ObservabilityPlan, watch: Watch) -> Iterator[Rule]:
    if not watch.peers:
        return
    duration = plan.settings.durations["clusterMesh"]
    cluster = watch.cluster
    peer = f"{{{{ $labels.{PROM_PEER_LABEL} }}}} (Cilium cluster {{{{ $labels.target_cluster }}}})"
    intended = (f"{{{{ with $labels.{PROM_REQUIREMENT_LABEL} }}}} (flows intended by "
                "{{ . }}){{ end }}")
    join = f"on ({TARGET_CLUSTER_LABEL}) group_left ({PROM_PEER_LABEL}, {PROM_REQUIREMENT_LABEL})"
    readiness, info = own(watch, PEER_READINESS), own(watch, PEER_INFO)
    labels, annotations = context(watch, "critical")
    yield alert(
        "MeshplanClusterMeshPeerNotReady", f"({readiness} < 1) * {join} {info}",
        duration, labels,
        {"summary": f"ClusterMesh peer {{{{ $labels.{PROM_PEER_LABEL} }}}} is not ready in "
                    f"{where(cluster)}",
         "description": (
             f"Cilium agents of {where(cluster)} report the ClusterMesh connection to {peer} "
             f"as not ready: flows between the two clusters{intended} fail, and global "
             "Services lose the peer's backends. Check cilium clustermesh status in both "
             "clusters, the peer's clustermesh-apiserver (its address is in the cilium "
             f"values of {where(cluster)}), the shared CA (Secret cilium-ca) and the network "
             "path between the clusters."),
         **annotations})
    labels, annotations = context(watch, "warning")
    yield alert(
        "MeshplanClusterMeshPeerMissing",
        f"{info} unless on ({TARGET_CLUSTER_LABEL}) {CILIUM_PEER_READINESS}",
        duration, labels,
        {"summary": (f"No ClusterMesh readiness for peer {{{{ $labels.{PROM_PEER_LABEL} }}}} in "
                     f"{where(cluster)}"),
         "description": (
             f"The Prometheus of {where(cluster)} has no {CILIUM_PEER_READINESS} for {peer}"
             f"{intended}: either the Cilium agents do not know the peer (the cilium values "
             f"of {where(cluster)}, mesh/{cluster.domain}/{cluster.name}/cilium-values.yaml, "
             "are not applied), or they are not scraped (cilium chart value "
             "prometheus.enabled and a ServiceMonitor)."),
         **annotations})


# --------------------------------------------------------------------------- federation


def federation_job(cluster: Cluster) -> str:
    """The ``job`` label of a member's federation targets (the ScrapeConfig's jobName)."""
    return f"meshplan-federate-{cluster.domain}-{cluster.name}"


def federation_rule_groups(plan: ObservabilityPlan) -> list[dict[str, Any]]:
    """The central cluster's rules about the federation: one pair of alerts per member."""
    rules: list[Rule] = []
    duration = plan.settings.durations["federation"]
    central = where(plan.central)
    for watch in plan.members:
        if watch.cluster.prometheus is None:
            continue
        job = selector("up", job=federation_job(watch.cluster))
        labels, annotations = context(watch, "warning")
        rules.append(alert(
            "MeshplanFederationDown", f"{job} == 0", duration, labels,
            {"summary": f"The central Prometheus cannot federate {where(watch.cluster)}",
             "description": (
                 f"The Prometheus in {central} fails to scrape "
                 f"{watch.cluster.prometheus.url}/federate: the mesh-wide dashboard misses "
                 f"{where(watch.cluster)} (its own alerts still fire there). Check the "
                 "address, the network path, the credentials Secret and the TLS CA."),
             **annotations}))
        rules.append(alert(
            "MeshplanFederationMissing", f"absent({job})", duration, labels,
            {"summary": f"No federation job for {where(watch.cluster)} in {central}",
             "description": (
                 f"The Prometheus in {central} has no target of job "
                 f"{federation_job(watch.cluster)}: the Prometheus operator did not select "
                 "or did not accept the ScrapeConfig (selectorLabels, "
                 "scrapeConfigNamespaceSelector, a missing credentials Secret: kubectl "
                 "describe scrapeconfig)."),
             **annotations}))
    return [group("meshplan-federation", rules)] if rules else []
