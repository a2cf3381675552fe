"""The mesh plan's output: values files, the clusters' new objects, Argo CD and Flux wiring.

Layout (beside ``clusters/``, so on the output branch too)::

    mesh/<domain>/<cluster>/cilium-values.yaml            # ClusterMesh members
    mesh/<domain>/<cluster>/istiod-values.yaml            # Istio members
    mesh/<domain>/<cluster>/eastwest-gateway-values.yaml  # Istio members, > 1 network
    mesh/<domain>/<cluster>/flux/{kustomization,helmreleases}.yaml   # Flux clusters
    bootstrap/argocd/mesh-applications.yaml               # Argo CD clusters
    bootstrap/flux-mesh/<domain>/<cluster>.yaml           # Flux clusters

The values files live outside the clusters' Kustomize roots: the CNI is installed before any
GitOps agent can run (a pod network is what the agent's own pods wait for). With a GitOps
document the same values are delivered afterwards: Argo CD Applications in the management
bootstrap, multi-source, reading the values file from the output branch through a ``$values``
ref (Argo CD's documented way to combine a Helm repository chart with values from git), and
for Flux clusters HelmReleases in a folder a Kustomization of their own follows, the Istio
root certificate taken from the cluster's ``cacerts`` Secret with ``valuesFrom``.

The Istio members' Kustomize roots gain the ``istio-system`` Namespace with its network label
(``topology.istio.io/network``) and, when the mesh spans more than one network, the
cross-network Gateway (AUTO_PASSTHROUGH on 15443, Istio's ``expose-services.yaml``): as
:class:`~meshplan.refine.Manifest` objects, rendered by :mod:`meshplan.render` like the rest.
No key material is ever written: certificates, keys and tokens stay in the clusters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from ..bootstrap import HEADER
from ..model import GitOps
from ..outputs import (
    CILIUM_VALUES,
    EASTWEST_GATEWAY_VALUES,
    ISTIOD_VALUES,
    OutputFile,
    mesh_dir,
)
from ..refine import SYNC_WAVE, ClusterPlan, Manifest, ObjectKey, Plan, output_order
from ..vocabulary import (
    ARGOCD_SYNC_OPTIONS_ANNOTATION,
    ARGOCD_SYNC_WAVE_ANNOTATION,
    CROSS_NETWORK_PORT,
    EASTWEST_GATEWAY_LABELS,
    EASTWEST_GATEWAY_NAME,
    FLUX_PRUNE_ANNOTATION,
    GATEWAY_KIND,
    ISTIO_NAMESPACE,
    ISTIO_NETWORK_LABEL,
    MANAGED_BY,
    NAMESPACE_KIND,
    NETWORK_POLICY_KIND,
    REQUIRED_BY_ANNOTATION,
    SOURCE_ANNOTATION,
)
from ..yamltext import dump_document
from .delivery import delivery_files
from .model import CILIUM_REPO, ISTIO_REPO
from .plan import IstioMember, MeshPlan, gateway_clients, gateway_sources
from .values import (
    cilium_values,
    eastwest_gateway_values,
    istiod_values,
)

CROSS_NETWORK_GATEWAY = "cross-network-gateway"


def _required_by(plan: MeshPlan) -> str:
    return f"mesh/{plan.mesh.name}"


# --------------------------------------------------------------------------- cluster roots


def with_mesh_objects(plan: Plan, mesh: MeshPlan) -> Plan:
    """``plan`` with the Istio members' ``istio-system`` Namespace and cross-network Gateway."""
    extra = {m.ref: list(_istio_manifests(mesh, m)) for m in mesh.istio_members}
    if not extra:
        return plan
    clusters = []
    for cluster_plan in plan.clusters:
        manifests = extra.get(cluster_plan.cluster)
        clusters.append(cluster_plan if not manifests else _merged(cluster_plan, manifests))
    return replace(plan, clusters=tuple(clusters))


def _merged(cluster_plan: ClusterPlan, manifests: list[Manifest]) -> ClusterPlan:
    objects = {m.key: m for m in cluster_plan.objects}
    for manifest in manifests:
        existing = objects.get(manifest.key)
        objects[manifest.key] = manifest if existing is None else _joined(existing, manifest)
    return replace(cluster_plan, objects=tuple(sorted(objects.values(), key=output_order)))


def _joined(existing: Manifest, added: Manifest) -> Manifest:
    """A Namespace refinement emitted too (a requirement names istio-system): one object with
    both sets of labels and the causes of both."""
    meta, extra = existing.body["metadata"], added.body["metadata"]
    causes = tuple(sorted({*existing.required_by, *added.required_by}))
    annotations = {**extra["annotations"], **meta.get("annotations", {}),
                   REQUIRED_BY_ANNOTATION: ",".join(causes)}
    body = {**existing.body, "metadata": {**meta, "labels": {**meta.get("labels", {}),
                                                              **extra["labels"]},
                                          "annotations": annotations}}
    return Manifest(existing.key, body, causes)


def _istio_manifests(plan: MeshPlan, member: IstioMember) -> Iterator[Manifest]:
    ref, cause = member.ref, _required_by(plan)
    labels = {**MANAGED_BY, ISTIO_NETWORK_LABEL: str(member.network)}
    namespace = {
        "apiVersion": "v1",
        "kind": NAMESPACE_KIND,
        "metadata": {
            "name": ISTIO_NAMESPACE,
            "labels": labels,
            "annotations": {
                # Never deleted by meshplan: it holds istiod, the gateways and cacerts.
                ARGOCD_SYNC_OPTIONS_ANNOTATION: "Prune=false",
                ARGOCD_SYNC_WAVE_ANNOTATION: SYNC_WAVE[NAMESPACE_KIND],
                FLUX_PRUNE_ANNOTATION: "disabled",
                REQUIRED_BY_ANNOTATION: cause,
                SOURCE_ANNOTATION: plan.mesh.file,
            },
        },
    }
    yield Manifest(ObjectKey(ref, NAMESPACE_KIND, "", ISTIO_NAMESPACE), namespace, (cause,))
    if plan.multi_network:
        yield Manifest(ObjectKey(ref, GATEWAY_KIND, ISTIO_NAMESPACE, CROSS_NETWORK_GATEWAY),
                       _cross_network_gateway(plan, member), (cause,))
        yield Manifest(ObjectKey(ref, NETWORK_POLICY_KIND, ISTIO_NAMESPACE,
                                 EASTWEST_GATEWAY_NAME), _gateway_policy(plan, member), (cause,))


def _gateway_policy(plan: MeshPlan, member: IstioMember) -> dict[str, Any]:
    """The east-west gateway's CiliumNetworkPolicy: ingress on 15443 only from the members of
    other networks that have an intended flow into this member (their
    :func:`~meshplan.mesh.plan.gateway_sources`), so it grows with the flows, not with the
    mesh. Its egress is left open: it forwards to whichever local workload a remote client's
    SNI names, and each of those admits the gateway's pods only on its own ports (refinement
    writes that rule), so the pods' side is what limits it; it also needs istiod and DNS."""
    sources = sorted({cidr for other in gateway_clients(plan, member)
                      for cidr in gateway_sources(other.cluster)})
    rule: dict[str, Any] = {}
    if sources:
        rule = {"fromCIDRSet": [{"cidr": cidr} for cidr in sources],
                "toPorts": [{"ports": [{"port": str(CROSS_NETWORK_PORT), "protocol": "TCP"}]}]}
    return {
        "apiVersion": "cilium.io/v2",
        "kind": NETWORK_POLICY_KIND,
        "metadata": {
            "name": EASTWEST_GATEWAY_NAME,
            "namespace": ISTIO_NAMESPACE,
            "labels": dict(MANAGED_BY),
            "annotations": {REQUIRED_BY_ANNOTATION: _required_by(plan),
                            SOURCE_ANNOTATION: plan.mesh.file},
        },
        "spec": {
            "endpointSelector": {"matchLabels": dict(EASTWEST_GATEWAY_LABELS)},
            "enableDefaultDeny": {"egress": False, "ingress": True},
            # One empty rule when no other network has a known address: it admits nothing,
            # yet it is a rule (no rule would leave the gateway open).
            "ingress": [rule],
        },
    }


def _cross_network_gateway(plan: MeshPlan, member: IstioMember) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": GATEWAY_KIND,
        "metadata": {
            "name": CROSS_NETWORK_GATEWAY,
            "namespace": ISTIO_NAMESPACE,
            "labels": dict(MANAGED_BY),
            "annotations": {
                # The Gateway CRD arrives with Istio (istio-base); until then Argo CD must not
                # fail the whole sync on this one object.
                ARGOCD_SYNC_OPTIONS_ANNOTATION: "SkipDryRunOnMissingResource=true",
                REQUIRED_BY_ANNOTATION: _required_by(plan),
                SOURCE_ANNOTATION: plan.mesh.file,
            },
        },
        "spec": {
            "selector": dict(EASTWEST_GATEWAY_LABELS),
            "servers": [{
                "port": {"number": CROSS_NETWORK_PORT, "name": "tls", "protocol": "TLS"},
                # Forward mTLS by SNI without terminating it: the session stays end to end.
                "tls": {"mode": "AUTO_PASSTHROUGH"},
                "hosts": [f"*.{member.cluster.cluster_domain}"],
            }],
        },
    }


# --------------------------------------------------------------------------- values files


def mesh_files(plan: MeshPlan, gitops: GitOps | None) -> list[OutputFile]:
    """Every file of the mesh plan (values, and with a GitOps document the delivery wiring)."""
    files = [*_cilium_files(plan), *_istio_files(plan)]
    if gitops is not None:
        files.extend(delivery_files(plan, gitops))
    return files


def _cilium_files(plan: MeshPlan) -> Iterator[OutputFile]:
    cilium = plan.mesh.cilium
    if cilium is None:
        return
    for cluster in plan.cilium_members:
        peers = plan.peers_of(cluster)
        path = f"{mesh_dir(cluster.domain, cluster.name)}/{CILIUM_VALUES}"
        text = HEADER + (
            f"# Helm values of the cilium chart {cilium.chart_version} for cluster "
            f"{cluster.domain}/{cluster.name}\n"
            f"# (Cilium cluster.name {cluster.mesh_name}, id {cluster.mesh_id}), ClusterMesh "
            f"member of mesh {plan.mesh.name}\n"
            f"# with {len(peers)} peer(s) (peers: {cilium.peers}). Install it before any GitOps "
            "agent (the CNI comes first):\n"
            f"#   helm upgrade --install cilium cilium --repo {CILIUM_REPO} --version "
            f"{cilium.chart_version} \\\n"
            f"#     --namespace {cilium.namespace} -f {path}\n"
            f"# Needs beforehand, never in git: {_ca_prerequisite(plan)}.\n"
        )
        yield OutputFile(path, (text + dump_document(cilium_values(plan, cluster))).encode())


def _ca_prerequisite(plan: MeshPlan) -> str:
    cilium = plan.mesh.cilium
    assert cilium is not None
    if cilium.ca_issuer is not None:
        issuer = cilium.ca_issuer
        return (f"cert-manager with the {issuer.kind} {issuer.name} issuing from the CA all "
                "members share")
    return (f"Secret {cilium.ca_secret} (keys ca.crt and ca.key of the CA all members share) "
            f"in namespace {cilium.namespace}")


def _istio_files(plan: MeshPlan) -> Iterator[OutputFile]:
    istio = plan.mesh.istio
    if istio is None:
        return
    for member in plan.istio_members:
        cluster = member.cluster
        base = mesh_dir(cluster.domain, cluster.name)
        where = f"cluster {cluster.domain}/{cluster.name}"
        install = (f"#   helm upgrade --install istiod istiod --repo {ISTIO_REPO} --version "
                   f"{istio.chart_version} \\\n#     --namespace {ISTIO_NAMESPACE} "
                   f"-f {base}/{ISTIOD_VALUES}\n")
        text = HEADER + (
            f"# Helm values of the istiod chart {istio.chart_version} for {where}, Istio "
            f"multi-primary member\n# of mesh {istio.mesh_id} on network {member.network}. "
            f"Install istio-base first, then:\n{install}"
            f"# Needs beforehand, never in git: Secret cacerts in {ISTIO_NAMESPACE} (this "
            "cluster's intermediate CA\n# under the shared root) and the other members' "
            "remote secrets. caCertificates names the\n# other members' trust domains "
            "without a PEM: they chain to the shared root in cacerts.\n"
        )
        yield OutputFile(f"{base}/{ISTIOD_VALUES}",
                         (text + dump_document(istiod_values(plan, member))).encode())
        if plan.multi_network:
            yield _gateway_file(plan, member)


def _gateway_file(plan: MeshPlan, member: IstioMember) -> OutputFile:
    istio = plan.mesh.istio
    assert istio is not None
    cluster = member.cluster
    path = f"{mesh_dir(cluster.domain, cluster.name)}/{EASTWEST_GATEWAY_VALUES}"
    text = HEADER + (
        f"# Helm values of the istio/gateway chart {istio.chart_version}: the east-west "
        f"gateway of cluster\n# {cluster.domain}/{cluster.name} on network {member.network} "
        f"(the mesh spans {len(plan.networks)} networks). After istiod:\n"
        f"#   helm upgrade --install {EASTWEST_GATEWAY_NAME} gateway --repo {ISTIO_REPO} "
        f"--version {istio.chart_version} \\\n#     --namespace {ISTIO_NAMESPACE} -f {path}\n"
        f"# Its LoadBalancer address must be reachable from the other networks on "
        f"{CROSS_NETWORK_PORT}.\n"
    )
    return OutputFile(path, (text + dump_document(eastwest_gateway_values(member))).encode())
