"""The rendered tree: its files as values, its layout, and reading it back from disk.

Layout, relative to the output folder (and to the root of the output branch)::

    .meshplan-output                               # marks a folder meshplan may replace
    clusters/<domain>/<cluster>/kustomization.yaml # one Kustomize root per cluster
    clusters/<domain>/<cluster>/istio-security.yaml  # Istio members: the identity layer
    clusters/<domain>/<cluster>/prometheus-rules.yaml  # monitoring (meshplan.observability):
    clusters/<domain>/<cluster>/scrape-configs.yaml    # PrometheusRules, ScrapeConfigs and
    clusters/<domain>/<cluster>/dashboards.yaml        # Grafana dashboards, in the roots
    bootstrap/argocd/applicationset.yaml           # GitOps bootstrap (meshplan.bootstrap)
    bootstrap/flux/<domain>/<cluster>.yaml
    mesh/<domain>/<cluster>/cilium-values.yaml     # the mesh plan (meshplan.mesh): Helm
    mesh/<domain>/<cluster>/istiod-values.yaml     # values, outside the Kustomize roots
    mesh/<domain>/<cluster>/eastwest-gateway-values.yaml
    mesh/<domain>/<cluster>/flux/{kustomization,helmreleases}.yaml
    bootstrap/argocd/mesh-applications.yaml        # the mesh's charts through Argo CD
    bootstrap/flux-mesh/<domain>/<cluster>.yaml    # and through Flux
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

OUTPUT_MARKER = ".meshplan-output"
DEFAULT_OUTPUT_DIR = "rendered"  # <repo>/rendered
CLUSTERS_DIR = "clusters"
KUSTOMIZATION = "kustomization.yaml"
ISTIO_SECURITY_FILE = "istio-security.yaml"  # a cluster's PeerAuthentications and
# AuthorizationPolicies (meshplan.mesh.identity), beside policies.yaml
ARGOCD_BOOTSTRAP_FILE = "bootstrap/argocd/applicationset.yaml"
ARGOCD_MESH_FILE = "bootstrap/argocd/mesh-applications.yaml"
MESH_DIR = "mesh"
CILIUM_VALUES = "cilium-values.yaml"
ISTIOD_VALUES = "istiod-values.yaml"
EASTWEST_GATEWAY_VALUES = "eastwest-gateway-values.yaml"
HELM_RELEASES = "helmreleases.yaml"
PROMETHEUS_RULES = "prometheus-rules.yaml"  # in a cluster's root, with spec.observability
SCRAPE_CONFIGS = "scrape-configs.yaml"  # the central cluster's federation
DASHBOARDS = "dashboards.yaml"  # Grafana dashboards as ConfigMaps


@dataclass(frozen=True)
class OutputFile:
    path: str  # relative, '/'-separated
    content: bytes


def cluster_dir(domain: str, cluster: str) -> str:
    """``clusters/<domain>/<cluster>``: the Kustomize root of one cluster."""
    return f"{CLUSTERS_DIR}/{domain}/{cluster}"


def flux_bootstrap_file(domain: str, cluster: str) -> str:
    return f"bootstrap/flux/{domain}/{cluster}.yaml"


def mesh_dir(domain: str, cluster: str) -> str:
    """``mesh/<domain>/<cluster>``: the mesh plan's files of one member (Helm values)."""
    return f"{MESH_DIR}/{domain}/{cluster}"


def mesh_flux_dir(domain: str, cluster: str) -> str:
    """``mesh/<domain>/<cluster>/flux``: the Kustomize root of a member's HelmReleases."""
    return f"{mesh_dir(domain, cluster)}/flux"


def flux_mesh_bootstrap_file(domain: str, cluster: str) -> str:
    return f"bootstrap/flux-mesh/{domain}/{cluster}.yaml"


def split_cluster_path(path: str) -> tuple[str, str, str] | None:
    """``(domain, cluster, rest)`` of a path inside a cluster folder, else None."""
    parts = path.split("/", 3)
    if len(parts) == 4 and parts[0] == CLUSTERS_DIR:
        return parts[1], parts[2], parts[3]
    return None


def clusters_of(paths: Iterable[str]) -> list[str]:
    """The clusters (``domain/cluster``) that ``paths`` lie in, sorted."""
    found = {f"{split[0]}/{split[1]}" for path in paths
             if (split := split_cluster_path(path)) is not None}
    return sorted(found)


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (relative '/'-separated path -> bytes); no symlinks."""
    files: dict[str, bytes] = {}
    if not root.is_dir():
        return files
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files
