"""Every label, annotation and kind name meshplan reads or writes, each under one name.

Stage modules import these instead of spelling keys; new keys (monitoring, say) belong here
too. A name says whose key it is: ``CILIUM_CLUSTER_LABEL`` is
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
AFFINITY_ANNOTATION = "service.cilium.io/affinity"  # local/remote/none: a preference only
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
