"""The ``kind: Mesh`` document as frozen records (built from a schema-valid document).

Defaults are filled in here, so later stages never guess: tunnel routing, no encryption,
``maxConnectedClusters: 255``, ``peers: all``, a LoadBalancer clustermesh-apiserver in
``kube-system``, the chart versions meshplan's values are validated against (Cilium 1.19.4,
Istio 1.30.3), the Istio mesh ID defaulting to the document's name, and the monitoring's
thresholds and ``for:`` durations (:class:`ObservabilitySettings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from ..diagnostics import Location
from ..load.document import Document, PathKey

CILIUM_CHART_VERSION = "1.19.4"
ISTIO_CHART_VERSION = "1.30.3"
CILIUM_REPO = "https://helm.cilium.io/"  # the charts' Helm repositories
ISTIO_REPO = "https://istio-release.storage.googleapis.com/charts"
DEFAULT_CILIUM_NAMESPACE = "kube-system"
CILIUM_CA_SECRET = "cilium-ca"  # the only name the chart's certgen reads the shared CA from
ISTIO_CA_SECRET = "cacerts"  # the only name istiod reads a plugged-in CA from
CERT_MANAGER_GROUP = "cert-manager.io"


class IssuerRef(NamedTuple):
    kind: str  # Issuer | ClusterIssuer
    name: str
    group: str


@dataclass(frozen=True)
class CiliumSettings:
    routing_mode: Literal["tunnel", "native"]
    native_routing_cidr: str | None
    encryption: Literal["none", "wireguard"]
    max_connected_clusters: int  # 255 | 511
    peers: Literal["all", "needed"]
    ca_secret: str | None  # existingSecret
    ca_issuer: IssuerRef | None  # certManagerIssuer
    apiserver_service: Literal["LoadBalancer", "NodePort"]
    namespace: str
    chart_version: str
    location: Location  # of the ``cilium`` key
    native_routing_cidr_location: Location
    ca_location: Location

    @property
    def default_port(self) -> int:
        """The clustermesh-apiserver port peers dial when a member names none (chart defaults)."""
        return 2379 if self.apiserver_service == "LoadBalancer" else 32379


@dataclass(frozen=True)
class IstioSettings:
    mesh_id: str
    root_ca_secret: str | None
    chart_version: str
    location: Location  # of the ``istio`` key
    root_ca_location: Location
    strict_mtls: Literal["namespaces", "mesh"] = "namespaces"  # mesh: also mesh-wide STRICT


DEFAULT_MONITORING_NAMESPACE = "monitoring"
# Thresholds of the alerts (spec.observability.thresholds), each with its default.
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    # Istio renews a workload certificate (24 h by default) when half its life is left, so
    # fewer than 6 hours left means renewal has been failing for about 6 hours.
    "workloadCertificateHours": 6,
    # istiod's root and CA chain (cacerts) are renewed by hand: a month to do it.
    "caCertificateHours": 720,
    # Policy-denied drops per second (5-minute rate) before an alert (a few per minute).
    "policyDropsPerSecond": 0.05,
}
# How long a condition must hold before its alert fires (spec.observability.for).
DEFAULT_FOR: Mapping[str, str] = {
    "plaintext": "1m",  # any plaintext where mTLS is required is a finding: fire quickly
    "certificates": "15m",
    "policyDrops": "10m",
    "clusterMesh": "5m",
    "federation": "10m",
}
DEFAULT_FEDERATION_INTERVAL = "30s"


@dataclass(frozen=True)
class ObservabilitySettings:
    """``spec.observability``: what the monitoring meshplan renders needs to know."""

    central_cluster: str  # "<domain>/<cluster>" as written: runs the federating Prometheus
    namespace: str  # where the PrometheusRules, ScrapeConfigs and dashboards go
    selector_labels: tuple[tuple[str, str], ...]  # the Prometheus operator's rule selector
    hubble: bool  # Hubble's drop metric is enabled with namespace and direction labels
    federation_interval: str
    thresholds: Mapping[str, float]  # DEFAULT_THRESHOLDS' keys, every one filled in
    durations: Mapping[str, str]  # DEFAULT_FOR's keys, every one filled in
    location: Location  # of the ``observability`` key
    central_location: Location
    interval_location: Location


@dataclass(frozen=True)
class Mesh:
    name: str
    cilium: CiliumSettings | None
    istio: IstioSettings | None
    location: Location  # of ``kind``
    file: str
    observability: ObservabilitySettings | None = None


def build_mesh(doc: Document) -> Mesh:
    """A Mesh from a schema-valid ``kind: Mesh`` document, defaults filled in."""
    data = doc.data
    name = str(data["metadata"]["name"])
    spec = data.get("spec") or {}
    cilium = spec.get("cilium")
    istio = spec.get("istio")
    observability = spec.get("observability")
    return Mesh(
        name=name,
        cilium=None if cilium is None else _cilium(doc, cilium),
        istio=None if istio is None else _istio(doc, name, istio),
        location=doc.location(("kind",)),
        file=doc.file,
        observability=None if observability is None else _observability(doc, observability),
    )


def _cilium(doc: Document, data: Mapping[str, Any]) -> CiliumSettings:
    here: PathKey = ("spec", "cilium")
    ca = data.get("ca") or {}
    issuer = ca.get("certManagerIssuer")
    return CiliumSettings(
        routing_mode=data.get("routingMode", "tunnel"),
        native_routing_cidr=data.get("nativeRoutingCIDR"),
        encryption=data.get("encryption", "none"),
        max_connected_clusters=int(data.get("maxConnectedClusters", 255)),
        peers=data.get("peers", "all"),
        ca_secret=ca.get("existingSecret"),
        ca_issuer=None if issuer is None else IssuerRef(
            issuer["kind"], issuer["name"], issuer.get("group") or CERT_MANAGER_GROUP),
        apiserver_service=data.get("apiserverService", "LoadBalancer"),
        namespace=data.get("namespace") or DEFAULT_CILIUM_NAMESPACE,
        chart_version=data.get("chartVersion") or CILIUM_CHART_VERSION,
        location=doc.key_location(here),
        native_routing_cidr_location=doc.location((*here, "nativeRoutingCIDR")),
        ca_location=doc.location((*here, "ca")),
    )


def _istio(doc: Document, mesh_name: str, data: Mapping[str, Any]) -> IstioSettings:
    here: PathKey = ("spec", "istio")
    root_ca = data.get("rootCA") or {}
    return IstioSettings(
        mesh_id=data.get("meshID") or mesh_name,
        root_ca_secret=root_ca.get("existingSecret"),
        chart_version=data.get("chartVersion") or ISTIO_CHART_VERSION,
        location=doc.key_location(here),
        root_ca_location=doc.location((*here, "rootCA")),
        strict_mtls=data.get("strictMTLS", "namespaces"),
    )


def _observability(doc: Document, data: Mapping[str, Any]) -> ObservabilitySettings:
    here: PathKey = ("spec", "observability")
    thresholds = {**DEFAULT_THRESHOLDS, **(data.get("thresholds") or {})}
    return ObservabilitySettings(
        central_cluster=str(data["centralCluster"]),
        namespace=data.get("namespace") or DEFAULT_MONITORING_NAMESPACE,
        selector_labels=tuple(sorted((str(k), str(v))
                                     for k, v in (data.get("selectorLabels") or {}).items())),
        hubble=bool(data.get("hubble", False)),
        federation_interval=data.get("federationInterval") or DEFAULT_FEDERATION_INTERVAL,
        thresholds={key: float(value) for key, value in thresholds.items()},
        durations={**DEFAULT_FOR, **(data.get("for") or {})},
        location=doc.key_location(here),
        central_location=doc.location((*here, "centralCluster")),
        interval_location=doc.location((*here, "federationInterval")),
    )
