"""Every label, annotation and kind name meshplan reads or writes, each under one name.

Stage modules import these instead of spelling keys; the names monitoring reads (metrics and
their labels) are here too. A name says whose key it is: ``CILIUM_CLUSTER_LABEL`` is
Cilium's identity label, ``MESHPLAN_CLUSTER_LABEL`` the label meshplan puts on objects it
generates for a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# --------------------------------------------------------------------------- requirements
# meshplan's input format: the abstract peer labels and the requirement annotations.

SERVICE_KEY = "service"
CLUSTER_KEY = "cluster"
DOMAIN_KEY = "domain"
ABSTRACT_KEYS = (SERVICE_KEY, CLUSTER_KEY, DOMAIN_KEY)
WILDCARD = "*"
CLUSTERS_ANNOTATION = "meshplan.dev/clusters"  # a thesis-form requirement's scope
REQUIREMENT_ANNOTATIONS = (CLUSTERS_ANNOTATION,)  # every meshplan.dev/ annotation it may carry

# --------------------------------------------------------------------------- Kubernetes

DEFAULT_NAMESPACE = "default"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"  # also Istio's default trust domain, and as a
# principal's trust domain Istio's shorthand for "the local one" (never emitted by meshplan)
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY: Mapping[str, str] = MappingProxyType({MANAGED_BY_LABEL: "meshplan"})
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # every Namespace carries its name

NAMESPACE_KIND = "Namespace"
SERVICE_KIND = "Service"
CONFIG_MAP_KIND = "ConfigMap"
SECRET_KIND = "Secret"
VALIDATING_WEBHOOK_KIND = "ValidatingWebhookConfiguration"
KUSTOMIZATION_KIND = "Kustomization"  # Kustomize's kustomization.yaml and Flux's object alike

# --------------------------------------------------------------------------- Cilium
# Identity labels: what a policy selector can match besides the pod's own labels. A key may
# carry a source prefix; ``k8s:`` and ``any:`` address Kubernetes labels, others no pod label.

LABEL_SOURCES = ("k8s", "any")
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
K8S_POD_NAMESPACE_LABEL = f"k8s:{POD_NAMESPACE_LABEL}"  # the spelling meshplan writes
CILIUM_CLUSTER_LABEL = "io.cilium.k8s.policy.cluster"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."  # + a label of the pod's namespace
DNS_NAMESPACE = "kube-system"
DNS_APP_LABEL = "k8s-app"
DNS_APP = "kube-dns"

NETWORK_POLICY_KIND = "CiliumNetworkPolicy"
CLUSTERWIDE_POLICY_KIND = "CiliumClusterwideNetworkPolicy"
POLICY_KINDS = (NETWORK_POLICY_KIND, CLUSTERWIDE_POLICY_KIND)

GLOBAL_SERVICE_ANNOTATION = "service.cilium.io/global"
SHARED_SERVICE_ANNOTATION = "service.cilium.io/shared"
AFFINITY_ANNOTATION = "service.cilium.io/affinity"  # local/remote: a preference (verify.services)
# The legacy spellings Cilium still reads when the key above is absent (pkg/annotation/k8s.go:
# GlobalServiceAlias, SharedServiceAlias, ServiceAffinityAlias). meshplan never writes them;
# verify reads them as the agent does (admission.cilium_service_flags).
GLOBAL_SERVICE_ANNOTATION_ALIAS = "io.cilium/global-service"
SHARED_SERVICE_ANNOTATION_ALIAS = "io.cilium/shared-service"
AFFINITY_ANNOTATION_ALIAS = "io.cilium/service-affinity"
GLOBAL_NAMESPACE_ANNOTATION = "clustermesh.cilium.io/global"

# --------------------------------------------------------------------------- Istio
# The mesh plan (meshplan.mesh): what istiod, its gateways and the cluster folders share.

ISTIO_NAMESPACE = "istio-system"  # istiod, the gateways and the cacerts Secret live here
ISTIO_NETWORK_LABEL = "topology.istio.io/network"  # on istio-system: the cluster's network
ISTIO_GATEWAY_LABEL = "istio"  # the istio/gateway chart's pod label (its release name, short)
# The east-west gateway: the chart's release name, and the pod label the chart derives from it
# (``istio: <name minus "istio-">``). Its pods carry it, the cross-network Gateway selects it,
# and the CiliumNetworkPolicies admitting the gateway hop name it: one place for all three.
EASTWEST_GATEWAY_NAME = "istio-eastwestgateway"
EASTWEST_GATEWAY_LABELS: Mapping[str, str] = MappingProxyType(
    {ISTIO_GATEWAY_LABEL: "eastwestgateway"})
EASTWEST_GATEWAY_SERVICE_ACCOUNT = EASTWEST_GATEWAY_NAME  # the chart's default: its name
CROSS_NETWORK_PORT = 15443  # the gateway's TLS port: mTLS passed through by SNI
GATEWAY_KIND = "Gateway"

# The identity layer (meshplan.mesh.identity): Istio's security objects.
PEER_AUTHENTICATION_KIND = "PeerAuthentication"
AUTHORIZATION_POLICY_KIND = "AuthorizationPolicy"
ISTIO_SECURITY_KINDS = (PEER_AUTHENTICATION_KIND, AUTHORIZATION_POLICY_KIND)
ISTIO_SECURITY_API_VERSION = "security.istio.io/v1"
ISTIO_ROOT_NAMESPACE = ISTIO_NAMESPACE  # meshConfig.rootNamespace, which meshplan never changes
PEER_AUTHENTICATION_NAME = "default"  # the one namespace-wide policy of a namespace

# --------------------------------------------------------------------------- meshplan
# On the objects meshplan generates.

REQUIRED_BY_ANNOTATION = "meshplan.dev/required-by"  # the requirements that caused an object
SOURCE_ANNOTATION = "meshplan.dev/source"  # the requirement file a policy comes from
MESHPLAN_DOMAIN_LABEL = "meshplan.dev/domain"  # on GitOps bootstrap objects of a cluster
MESHPLAN_CLUSTER_LABEL = "meshplan.dev/cluster"

# --------------------------------------------------------------------------- GitOps agents

ARGOCD_SYNC_OPTIONS_ANNOTATION = "argocd.argoproj.io/sync-options"
ARGOCD_SYNC_WAVE_ANNOTATION = "argocd.argoproj.io/sync-wave"
FLUX_PRUNE_ANNOTATION = "kustomize.toolkit.fluxcd.io/prune"
APPLICATION_KIND = "Application"  # Argo CD
HELM_REPOSITORY_KIND = "HelmRepository"  # Flux
HELM_RELEASE_KIND = "HelmRelease"  # Flux

# --------------------------------------------------------------------------- observability
# The monitoring meshplan renders (meshplan.observability): the prometheus-operator and
# Grafana objects, and the names of the metrics and labels its rules read and write.

PROMETHEUS_RULE_KIND = "PrometheusRule"  # monitoring.coreos.com/v1
SCRAPE_CONFIG_KIND = "ScrapeConfig"  # monitoring.coreos.com/v1alpha1
GRAFANA_DASHBOARD_LABEL = "grafana_dashboard"  # the Grafana chart sidecar's ConfigMap label
GRAFANA_DASHBOARD_VALUE = "1"  # the value kube-prometheus-stack's sidecar looks for

# Istio standard metrics and labels (istio.io docs/reference/config/metrics).
ISTIO_REQUESTS = "istio_requests_total"
ISTIO_TCP_OPENED = "istio_tcp_connections_opened_total"
ISTIO_AGENT_CERT_EXPIRY = "istio_agent_cert_expiry_seconds"  # per sidecar, seconds left
ISTIOD_ROOT_CERT_EXPIRY = "citadel_server_root_cert_expiry_timestamp"
ISTIOD_CERT_CHAIN_EXPIRY = "citadel_server_cert_chain_expiry_timestamp"
REPORTER_LABEL = "reporter"
SECURITY_POLICY_LABEL = "connection_security_policy"  # mutual_tls | none | unknown
SOURCE_CLUSTER_LABEL = "source_cluster"  # Istio's global.multiCluster.clusterName
DESTINATION_CLUSTER_LABEL = "destination_cluster"
DESTINATION_NAMESPACE_LABEL = "destination_workload_namespace"
CERT_RESOURCE_LABEL = "resource_name"  # "default": the workload certificate
# Cilium agent and Hubble metrics and labels.
CILIUM_DROPS = "cilium_drop_count_total"
CILIUM_DROP_POLICY_DENIED = "Policy denied"  # reason text of drop code 133
CILIUM_PEER_READINESS = "cilium_clustermesh_remote_cluster_readiness_status"
TARGET_CLUSTER_LABEL = "target_cluster"  # the remote cluster's Cilium cluster.name
HUBBLE_DROPS = "hubble_drop_total"
HUBBLE_DROP_POLICY_DENIED = "POLICY_DENIED"  # the flow's drop reason enum name
HUBBLE_SOURCE_NAMESPACE_LABEL = "source_namespace"  # Hubble labelsContext options
HUBBLE_DESTINATION_NAMESPACE_LABEL = "destination_namespace"
HUBBLE_DIRECTION_LABEL = "traffic_direction"  # ingress | egress | unknown
# The labels meshplan's recording rules and alerts carry (Prometheus label names).
PROM_CLUSTER_LABEL = "cluster"  # the cluster a series comes from (its Cilium/Istio name)
PROM_DOMAIN_LABEL = "meshplan_domain"
PROM_MESHPLAN_CLUSTER_LABEL = "meshplan_cluster"  # meshplan's <domain>/<cluster>
PROM_REQUIREMENT_LABEL = "meshplan_requirement"  # the requirement file(s) an alert protects
PROM_PEER_LABEL = "meshplan_peer"  # a ClusterMesh peer's <domain>/<cluster>
PROM_SEVERITY_LABEL = "severity"
