"""Delivering the mesh's charts with the GitOps agents the inventory names for each cluster.

* **Argo CD** (clusters with an Argo CD destination): ``bootstrap/argocd/mesh-applications.yaml``,
  applied once to the management cluster like ``applicationset.yaml``. One Application per
  member and chart, each with two sources: the chart from its Helm repository, and the output
  branch as a ``ref: values`` source whose values file the chart reads as
  ``$values/mesh/<domain>/<cluster>/<chart>-values.yaml`` (Argo CD's multi-source Applications,
  "Helm value files from external Git repository"). Argo CD renders charts with ``helm
  template``, so nothing in these values may depend on ``lookup``: the Cilium certificates come
  from certgen or cert-manager, never from the chart (see :mod:`meshplan.mesh.values`).
  istiod turns its validating webhook's ``failurePolicy`` to Fail once it is ready, so that
  field is ignored in the diff. Argo CD cannot read a cluster's Secret into Helm values: the
  istiod values name the other members' trust domains without a PEM (they chain to the shared
  root every member already holds in ``cacerts``).
* **Flux** (clusters with a Flux namespace): a folder ``mesh/<domain>/<cluster>/flux/`` holding
  HelmRepositories and HelmReleases, and ``bootstrap/flux-mesh/<domain>/<cluster>.yaml``, a
  Kustomization that follows that folder on the output branch (applied once to that cluster,
  after ``bootstrap/flux/<domain>/<cluster>.yaml``, whose GitRepository it uses). Objects live
  in the namespace of their chart (Cilium's, ``istio-system``), so no reference crosses a
  namespace, and istiod's HelmRelease can take the shared root's certificate from the
  cluster's own ``cacerts`` Secret with ``valuesFrom`` (``targetPath:
  meshConfig.caCertificates[0].pem``, completing the entry a ConfigMap layer provides: Helm
  replaces lists instead of merging them, so the list is not also in the inline values). The
  Cilium HelmRelease takes over the release installed by hand before Flux could run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..bootstrap import FLUX_SOURCE_NAME, HEADER, flux_kustomization, object_name
from ..model import Cluster, GitOps
from ..outputs import (
    ARGOCD_MESH_FILE,
    CILIUM_VALUES,
    EASTWEST_GATEWAY_VALUES,
    HELM_RELEASES,
    ISTIOD_VALUES,
    KUSTOMIZATION,
    OutputFile,
    flux_bootstrap_file,
    flux_mesh_bootstrap_file,
    mesh_dir,
    mesh_flux_dir,
)
from ..vocabulary import (
    APPLICATION_KIND,
    CONFIG_MAP_KIND,
    EASTWEST_GATEWAY_NAME,
    FLUX_PRUNE_ANNOTATION,
    HELM_RELEASE_KIND,
    HELM_REPOSITORY_KIND,
    ISTIO_NAMESPACE,
    KUSTOMIZATION_KIND,
    MANAGED_BY,
    MESHPLAN_CLUSTER_LABEL,
    MESHPLAN_DOMAIN_LABEL,
    SECRET_KIND,
    VALIDATING_WEBHOOK_KIND,
)
from ..yamltext import dump_document, dump_documents
from .model import CILIUM_REPO, ISTIO_CA_SECRET, ISTIO_REPO
from .plan import IstioMember, MeshPlan
from .values import (
    ca_certificates_layer,
    cilium_values,
    eastwest_gateway_values,
    istiod_values,
)

ISTIO_TRUST_CONFIGMAP = "meshplan-istiod-trust"
WEBHOOK_FAILURE_POLICY = {
    "group": "admissionregistration.k8s.io",
    "kind": VALIDATING_WEBHOOK_KIND,
    "jqPathExpressions": [".webhooks[]?.failurePolicy"],
}


def delivery_files(plan: MeshPlan, gitops: GitOps) -> list[OutputFile]:
    files: list[OutputFile] = []
    argocd = _argocd_file(plan, gitops)
    if argocd is not None:
        files.append(argocd)
    for cluster in _members(plan):
        if cluster.flux_namespace:
            files.extend(_flux_files(plan, gitops, cluster))
    return files


def _members(plan: MeshPlan) -> list[Cluster]:
    """Every member (ClusterMesh or Istio), once, in inventory order."""
    wanted = {id(c) for c in plan.cilium_members} | {id(m.cluster) for m in plan.istio_members}
    return [c for d in plan.inventory.domains for c in d.clusters if id(c) in wanted]


def _labels(cluster: Cluster) -> dict[str, str]:
    return {**MANAGED_BY, MESHPLAN_DOMAIN_LABEL: cluster.domain,
            MESHPLAN_CLUSTER_LABEL: cluster.name}


class _Chart:
    """One chart of one member: what both agents need to install it."""

    def __init__(self, name: str, chart: str, repo: str, version: str, namespace: str,
                 values_file: str | None) -> None:
        self.name = name  # the Helm release name
        self.chart = chart
        self.repo = repo
        self.version = version
        self.namespace = namespace
        self.values_file = values_file  # path on the output branch, or None (chart defaults)


def _charts(plan: MeshPlan, cluster: Cluster) -> Iterator[_Chart]:
    base = mesh_dir(cluster.domain, cluster.name)
    cilium, istio = plan.mesh.cilium, plan.mesh.istio
    if cilium is not None and cluster.clustermesh is not None:
        yield _Chart("cilium", "cilium", CILIUM_REPO, cilium.chart_version, cilium.namespace,
                     f"{base}/{CILIUM_VALUES}")
    if istio is not None and cluster.istio is not None:
        yield _Chart("istio-base", "base", ISTIO_REPO, istio.chart_version, ISTIO_NAMESPACE,
                     None)
        yield _Chart("istiod", "istiod", ISTIO_REPO, istio.chart_version, ISTIO_NAMESPACE,
                     f"{base}/{ISTIOD_VALUES}")
        if plan.multi_network:
            yield _Chart(EASTWEST_GATEWAY_NAME, "gateway", ISTIO_REPO, istio.chart_version,
                         ISTIO_NAMESPACE, f"{base}/{EASTWEST_GATEWAY_VALUES}")


# --------------------------------------------------------------------------- Argo CD


def _argocd_file(plan: MeshPlan, gitops: GitOps) -> OutputFile | None:
    documents = [_application(gitops, cluster, chart)
                 for cluster in _members(plan) if cluster.argocd_name or cluster.argocd_server
                 for chart in _charts(plan, cluster)]
    if not documents:
        return None
    text = HEADER + (
        f"# Argo CD: the mesh's charts, one Application per member and chart. Apply once to "
        f"the cluster\n# running Argo CD, in namespace {gitops.argocd_namespace}:\n"
        f"#   kubectl apply -n {gitops.argocd_namespace} -f {ARGOCD_MESH_FILE}\n"
        f"# Values come from branch {gitops.branch} of {gitops.repo_url} ($values/mesh/...).\n"
        "# Secrets (cilium-ca, cacerts, remote secrets) are created in each cluster out of "
        "band.\n"
    )
    return OutputFile(ARGOCD_MESH_FILE, (text + dump_documents(documents)).encode())


def _application(gitops: GitOps, cluster: Cluster, chart: _Chart) -> dict[str, Any]:
    helm: dict[str, Any] = {"releaseName": chart.name}
    chart_source: dict[str, Any] = {"repoURL": chart.repo, "chart": chart.chart,
                                    "targetRevision": chart.version, "helm": helm}
    sources = [chart_source]
    if chart.values_file is not None:
        helm["valueFiles"] = [f"$values/{chart.values_file}"]
        sources.append({"repoURL": gitops.repo_url, "targetRevision": gitops.branch,
                        "ref": "values"})
    destination = ({"name": cluster.argocd_name} if cluster.argocd_name and
                   not cluster.argocd_server else {"server": str(cluster.argocd_server)})
    spec: dict[str, Any] = {
        "project": gitops.argocd_project,
        "sources": sources,
        "destination": {**destination, "namespace": chart.namespace},
        "syncPolicy": {
            "automated": {"prune": True, "selfHeal": True},
            "syncOptions": _sync_options(chart),
            "retry": {"limit": 10, "backoff": {"duration": "30s", "factor": 2,
                                               "maxDuration": "10m"}},
        },
    }
    if chart.chart in ("base", "istiod"):
        spec["ignoreDifferences"] = [dict(WEBHOOK_FAILURE_POLICY)]
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": APPLICATION_KIND,
        "metadata": {"name": f"{object_name(cluster)}.{chart.name}",
                     "namespace": gitops.argocd_namespace, "labels": _labels(cluster)},
        "spec": spec,
    }


def _sync_options(chart: _Chart) -> list[str]:
    if chart.namespace != ISTIO_NAMESPACE:
        return ["ServerSideApply=true"]
    # istio-system is created (with its network label) by the cluster's own folder; creating
    # it here too only covers the first sync of a new cluster.
    return ["CreateNamespace=true", "ServerSideApply=true"]


# --------------------------------------------------------------------------- Flux


def _flux_files(plan: MeshPlan, gitops: GitOps, cluster: Cluster) -> list[OutputFile]:
    folder = mesh_flux_dir(cluster.domain, cluster.name)
    where = f"cluster {cluster.domain}/{cluster.name}"
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1",
                     "kind": KUSTOMIZATION_KIND, "resources": [HELM_RELEASES]}
    documents = list(_flux_documents(plan, gitops, cluster))
    releases = HEADER + (
        f"# Flux: the mesh's charts for {where}, reconciled by the Kustomization in\n"
        f"# {flux_mesh_bootstrap_file(cluster.domain, cluster.name)}. Each object lives in "
        "its chart's namespace.\n"
    )
    return [
        OutputFile(f"{folder}/{KUSTOMIZATION}",
                   (HEADER + f"# Kustomize root of the mesh's HelmReleases for {where}.\n"
                    + dump_document(kustomization)).encode()),
        OutputFile(f"{folder}/{HELM_RELEASES}", (releases + dump_documents(documents))
                   .encode()),
        _flux_bootstrap(gitops, cluster, folder),
    ]


def _flux_documents(plan: MeshPlan, gitops: GitOps, cluster: Cluster) -> Iterator[dict[str, Any]]:
    repositories: set[tuple[str, str]] = set()
    member = next((m for m in plan.istio_members if m.cluster is cluster), None)
    previous: str | None = None
    for chart in _charts(plan, cluster):
        repo_name = "cilium" if chart.repo == CILIUM_REPO else "istio"
        if (chart.namespace, repo_name) not in repositories:
            repositories.add((chart.namespace, repo_name))
            yield _helm_repository(gitops, cluster, repo_name, chart)
        if chart.chart == "istiod" and member is not None:
            layer = ca_certificates_layer(plan, member)
            if layer is not None:
                yield _trust_configmap(cluster, layer)
        yield _helm_release(plan, gitops, cluster, chart, member, previous)
        previous = chart.name if chart.namespace == ISTIO_NAMESPACE else None


def _helm_repository(gitops: GitOps, cluster: Cluster, name: str, chart: _Chart
                     ) -> dict[str, Any]:
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": HELM_REPOSITORY_KIND,
        "metadata": {"name": name, "namespace": chart.namespace, "labels": _labels(cluster)},
        "spec": {"interval": "1h", "url": chart.repo},
    }


def _trust_configmap(cluster: Cluster, layer: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": CONFIG_MAP_KIND,
        "metadata": {"name": ISTIO_TRUST_CONFIGMAP, "namespace": ISTIO_NAMESPACE,
                     "labels": _labels(cluster)},
        "data": {"values.yaml": dump_document(layer)},
    }


def _helm_release(plan: MeshPlan, gitops: GitOps, cluster: Cluster, chart: _Chart,
                  member: IstioMember | None, depends_on: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "interval": gitops.flux_interval,
        "releaseName": chart.name,
        "chart": {"spec": {"chart": chart.chart, "version": chart.version,
                           "sourceRef": {"kind": HELM_REPOSITORY_KIND,
                                         "name": "cilium" if chart.repo == CILIUM_REPO
                                         else "istio"}}},
        "install": {"remediation": {"retries": 3}},
        "upgrade": {"remediation": {"retries": 3}},
    }
    if depends_on is not None:
        spec["dependsOn"] = [{"name": depends_on}]
    values = _release_values(plan, cluster, chart, member)
    if chart.chart == "istiod" and member is not None and plan.peer_trust_domains(member):
        spec["valuesFrom"] = [
            {"kind": CONFIG_MAP_KIND, "name": ISTIO_TRUST_CONFIGMAP, "valuesKey": "values.yaml"},
            # The shared root's certificate (public) from this cluster's own cacerts Secret.
            {"kind": SECRET_KIND, "name": ISTIO_CA_SECRET, "valuesKey": "root-cert.pem",
             "targetPath": "meshConfig.caCertificates[0].pem"},
        ]
    if values is not None:
        spec["values"] = values
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": HELM_RELEASE_KIND,
        "metadata": {"name": chart.name, "namespace": chart.namespace,
                     "labels": _labels(cluster),
                     # Deleting a HelmRelease uninstalls its chart: a cluster leaving the mesh
                     # (or a Mesh document removed) must not take its CNI or istiod with it.
                     "annotations": {FLUX_PRUNE_ANNOTATION: "disabled"}},
        "spec": spec,
    }


def _release_values(plan: MeshPlan, cluster: Cluster, chart: _Chart,
                    member: IstioMember | None) -> dict[str, Any] | None:
    if chart.chart == "cilium":
        return cilium_values(plan, cluster)
    if member is None:
        return None
    if chart.chart == "istiod":
        return istiod_values(plan, member, with_ca_certificates=False)
    if chart.chart == "gateway":
        return eastwest_gateway_values(member)
    return None


def _flux_bootstrap(gitops: GitOps, cluster: Cluster, folder: str) -> OutputFile:
    namespace = str(cluster.flux_namespace)
    path = flux_mesh_bootstrap_file(cluster.domain, cluster.name)
    kustomization = flux_kustomization(gitops, f"{object_name(cluster)}.mesh", namespace,
                                       _labels(cluster), folder)
    text = HEADER + (
        f"# Flux for the mesh's charts of cluster {cluster.domain}/{cluster.name}: apply once "
        f"to THAT cluster,\n# after {flux_bootstrap_file(cluster.domain, cluster.name)} "
        f"(its GitRepository {FLUX_SOURCE_NAME}):\n#   kubectl apply -f {path}\n"
        f"# It applies ./{folder} (HelmReleases of Cilium and Istio).\n"
    )
    return OutputFile(path, (text + dump_document(kustomization)).encode())
