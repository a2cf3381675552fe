"""Hypothesis strategies for *valid* meshplan repositories (inventory + requirements).

Reusable by any property test (render, verify, cross-checks)::

    from strategies import repos

    @given(repos())
    def test_something(spec: RepoSpec) -> None:
        root = spec.write(tmp_dir)  # inventory/*.yaml + requirements/<domain>/*.yaml
        ...

What a generated repository has (every one passes ``meshplan validate`` with no error):

* 1-3 domains ``d1``..; each with 1-3 clusters ``c1``.. (the same local names recur across
  domains, as the thesis allows), explicit unique ``meshName`` (``<domain>-<cluster>``) and
  ``meshId``;
* services with names unique across the whole inventory (``s1``..; thesis A28), selector
  ``{app: <name>}``, one or two TCP/UDP ports, running in 1-3 of their domain's clusters, some
  exported (to named domains or ``"*"``), in namespaces drawn from a small pool so namespaces
  are shared across services and domains;
* requirements (per domain, unique names) selecting ``{service: <own service>}`` or raw pod
  labels ``{name: client-<x>}`` (with or without a namespace, sometimes cluster-wide), optional
  ``spec.clusters`` subsets, egress and/or ingress rules whose peers are named services (own or
  exported), wildcards (``service: "*"``, ``cluster: "*"``, ``domain``), raw client labels (with
  or without an explicit namespace label), or CIDRs with ``except``; sometimes ``toPorts``.

With ``istio=True`` there is a Mesh document too: every cluster a ClusterMesh member, most of
them Istio members on one or two networks (east-west gateways with reserved addresses), most
services with a service account.

``allow_unfilled_ingress=False`` (the default) keeps every written ``ingress`` list non-empty
with at least one peer that always resolves (a raw peer, a named service or a CIDR). With
``True`` the strategy may also write ``ingress: []`` or only wildcard peers that match nothing:
requirements whose ingress must deny everything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

NAMESPACES = ("default", "ns-a", "ns-b", "shared")
CLIENT_NAMES = ("client-a", "client-b", "client-c")
PORTS = (80, 443, 5432, 8080, 9000)
CIDRS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("203.0.113.0/24", ()),
    ("198.51.100.0/24", ("198.51.100.128/25",)),
    ("10.200.0.0/16", ("10.200.1.0/24", "10.200.2.0/24")),
    ("10.200.1.0/24", ()),
    ("0.0.0.0/0", ("10.0.0.0/8",)),
)
NAMESPACE_LABEL = "k8s:io.kubernetes.pod.namespace"


@dataclass
class RepoSpec:
    """A generated repository: plain data, written out by :meth:`write`."""

    domains: list[dict[str, Any]]
    requirements: dict[str, dict[str, Any]] = field(default_factory=dict)  # relpath -> doc
    mesh: dict[str, Any] | None = None  # a kind: Mesh document (``repos(istio=True)``)

    def files(self) -> dict[str, str]:
        out = {}
        for doc in self.domains:
            out[f"inventory/{doc['metadata']['name']}.yaml"] = yaml.safe_dump(
                doc, sort_keys=False)
        if self.mesh is not None:
            out["inventory/mesh.yaml"] = yaml.safe_dump(self.mesh, sort_keys=False)
        for path, doc in self.requirements.items():
            out[path] = yaml.safe_dump(doc, sort_keys=False)
        return out

    def write(self, root: Path) -> Path:
        for relpath, text in self.files().items():
            path = root / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return root

    @property
    def service_count(self) -> int:
        return sum(len(d["spec"].get("services") or []) for d in self.domains)


@dataclass(frozen=True)
class _Svc:
    domain: str
    name: str
    namespace: str
    clusters: tuple[str, ...]
    export: tuple[str, ...]

    def visible_to(self, domain: str) -> bool:
        return domain == self.domain or "*" in self.export or domain in self.export


def _subset(draw: st.DrawFn, items: Sequence[str], *, min_size: int = 1) -> list[str]:
    chosen = draw(st.lists(st.sampled_from(list(items)), min_size=min_size,
                           max_size=len(items), unique=True))
    return [i for i in items if i in chosen]


@st.composite
def _inventory(draw: st.DrawFn, max_domains: int, max_clusters: int,
               max_services: int) -> tuple[list[dict[str, Any]], list[_Svc], dict[str, list[str]]]:
    n_domains = draw(st.integers(1, max_domains))
    names = [f"d{k + 1}" for k in range(n_domains)]
    docs: list[dict[str, Any]] = []
    services: list[_Svc] = []
    clusters_of: dict[str, list[str]] = {}
    mesh_id = 0
    service_no = 0
    for domain in names:
        clusters = [f"c{k + 1}" for k in range(draw(st.integers(1, max_clusters)))]
        clusters_of[domain] = clusters
        cluster_docs = []
        for cluster in clusters:
            mesh_id += 1
            cluster_docs.append({"name": cluster, "meshName": f"{domain}-{cluster}",
                                 "meshId": mesh_id})
        service_docs = []
        for _ in range(draw(st.integers(1, max_services))):
            service_no += 1
            name = f"s{service_no}"
            namespace = draw(st.sampled_from(NAMESPACES))
            ports = draw(st.lists(st.tuples(st.sampled_from(PORTS),
                                            st.sampled_from(("TCP", "UDP"))),
                                  min_size=1, max_size=2, unique=True))
            runs = _subset(draw, clusters)
            others = [d for d in names if d != domain]
            export: list[str] = draw(st.one_of(
                st.just([]), st.just(["*"]),
                st.lists(st.sampled_from(others), unique=True, max_size=len(others))
                if others else st.just([])))
            doc: dict[str, Any] = {
                "name": name, "namespace": namespace, "selector": {"app": name},
                "ports": [{"port": p, "protocol": proto, "name": f"p{i}"}
                          for i, (p, proto) in enumerate(ports)],
                "clusters": runs,
            }
            if export:
                doc["exportTo"] = export
            service_docs.append(doc)
            services.append(_Svc(domain, name, namespace, tuple(runs), tuple(export)))
        docs.append({"apiVersion": "meshplan.dev/v1alpha1", "kind": "Domain",
                     "metadata": {"name": domain},
                     "spec": {"clusters": cluster_docs, "services": service_docs}})
    return docs, services, clusters_of


def _ports(draw: st.DrawFn) -> list[dict[str, Any]] | None:
    if draw(st.integers(0, 4)) != 0:
        return None
    entries = draw(st.lists(st.tuples(st.sampled_from(PORTS),
                                      st.sampled_from(("TCP", "UDP", "ANY", None))),
                            min_size=1, max_size=2, unique=True))
    return [{"ports": [{"port": str(p), **({"protocol": proto} if proto else {})}
                       for p, proto in entries]}]


def _peer(draw: st.DrawFn, domain: str, services: list[_Svc],
          clusters_of: Mapping[str, list[str]], *, concrete: bool) -> dict[str, Any]:
    """One peer selector; ``concrete`` = one that always resolves to something."""
    visible = [s for s in services if s.visible_to(domain)]
    kinds = ["raw", "named"] + ([] if concrete else ["wildcard"])
    kind = draw(st.sampled_from(kinds))
    if kind == "named" and visible:
        service = draw(st.sampled_from(visible))
        labels: dict[str, str] = {"service": service.name}
        if service.domain != domain or draw(st.booleans()):
            labels["domain"] = service.domain
        if draw(st.booleans()):
            labels["cluster"] = draw(st.sampled_from(list(service.clusters)))
        return {"matchLabels": labels}
    if kind == "wildcard":
        target = draw(st.sampled_from(sorted(clusters_of)))
        labels = {}
        if target != domain or draw(st.booleans()):
            labels["domain"] = target
        choice = draw(st.integers(0, 3))
        if choice in (0, 1):
            labels["service"] = "*"
        if choice in (1, 2):
            labels["cluster"] = draw(st.sampled_from(["*", *clusters_of[target]]))
        if not labels:
            labels["cluster"] = "*"
        return {"matchLabels": labels}
    labels = {"name": draw(st.sampled_from(CLIENT_NAMES))}
    if draw(st.integers(0, 3)) == 0:
        labels[NAMESPACE_LABEL] = draw(st.sampled_from(NAMESPACES))
    return {"matchLabels": labels}


def _rules(draw: st.DrawFn, direction: str, domain: str, services: list[_Svc],
           clusters_of: Mapping[str, list[str]], *, fill: bool) -> list[dict[str, Any]]:
    peers_key = "toEndpoints" if direction == "egress" else "fromEndpoints"
    cidr_key = "toCIDRSet" if direction == "egress" else "fromCIDRSet"
    rules: list[dict[str, Any]] = []
    count = draw(st.integers(1 if fill else 0, 3))
    for k in range(count):
        concrete = fill and k == 0
        rule: dict[str, Any]
        if draw(st.integers(0, 4)) == 0:
            chosen = draw(st.lists(st.sampled_from(CIDRS), min_size=1, max_size=2,
                                   unique=True))
            rule = {cidr_key: [{"cidr": c, **({"except": list(e)} if e else {})}
                               for c, e in chosen]}
        else:
            rule = {peers_key: [_peer(draw, domain, services, clusters_of,
                                      concrete=concrete and j == 0)
                                for j in range(draw(st.integers(1, 2)))]}
        ports = _ports(draw)
        if ports is not None:
            rule["toPorts"] = ports
        rules.append(rule)
    return rules


@st.composite
def _requirement(draw: st.DrawFn, domain: str, index: int, services: list[_Svc],
                 clusters_of: Mapping[str, list[str]],
                 allow_unfilled_ingress: bool) -> dict[str, Any]:
    own = [s for s in services if s.domain == domain]
    meta: dict[str, Any] = {"name": f"r{index}"}
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        service = draw(st.sampled_from(own))
        spec["endpointSelector"] = {"matchLabels": {"service": service.name}}
        scope = list(service.clusters)
        form = draw(st.integers(0, 5))
        if form == 0:
            meta["namespace"] = service.namespace
        elif form == 1:
            meta["namespace"] = "*"
    else:
        spec["endpointSelector"] = {"matchLabels": {"name": draw(st.sampled_from(CLIENT_NAMES))}}
        scope = list(clusters_of[domain])
        form = draw(st.integers(0, 6))
        if form < 4:
            meta["namespace"] = draw(st.sampled_from(NAMESPACES))
        elif form == 4:
            meta["namespace"] = "*"
    if draw(st.booleans()):
        spec["clusters"] = _subset(draw, scope)
    directions = draw(st.sampled_from([("egress",), ("ingress",), ("egress", "ingress")]))
    for direction in directions:
        if direction == "ingress" and allow_unfilled_ingress and draw(st.integers(0, 3)) == 0:
            spec["ingress"] = []
            continue
        fill = direction == "ingress" and not allow_unfilled_ingress
        spec[direction] = _rules(draw, direction, domain, services, clusters_of, fill=fill)
    return {"apiVersion": "meshplan.dev/v1alpha1", "kind": "Requirement", "metadata": meta,
            "spec": spec}


def _istio(draw: st.DrawFn, docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every cluster a ClusterMesh member (peers: all) and most of them Istio members, on one
    or two networks, each with its own trust domain (sometimes shared within a domain) and a
    reserved east-west gateway address (sometimes egress CIDRs); most services get a service
    account. The Mesh document that goes with it."""
    address = 0
    for doc in docs:
        shared = draw(st.integers(0, 4)) == 0
        for cluster in doc["spec"]["clusters"]:
            address += 1
            cluster["clustermesh"] = {"address": f"198.18.0.{address}"}
            if draw(st.integers(0, 4)) == 0:
                continue  # no Istio here: its clients are plaintext to Istio members
            domain = doc["metadata"]["name"]
            istio: dict[str, Any] = {
                "network": draw(st.sampled_from(("n1", "n2"))),
                "trustDomain": f"{domain}.example" if shared
                else f"{domain}-{cluster['name']}.example",
                "eastWestGateway": {"address": f"198.51.100.{address}"}}
            if draw(st.integers(0, 3)) == 0:
                istio["egressCIDRs"] = [f"192.0.2.{address * 4}/30"]
            cluster["istio"] = istio
        for service in doc["spec"].get("services") or []:
            choice = draw(st.integers(0, 4))
            if choice == 0:
                continue  # no service account: admitted by namespace
            service["serviceAccount"] = "default" if choice == 1 else f"sa-{service['name']}"
    return {"apiVersion": "meshplan.dev/v1alpha1", "kind": "Mesh",
            "metadata": {"name": "mesh"},
            "spec": {"cilium": {"ca": {"existingSecret": "cilium-ca"}},
                     "istio": {"rootCA": {"existingSecret": "cacerts"},
                               "strictMTLS": draw(st.sampled_from(("namespaces", "mesh")))}}}


@st.composite
def repos(draw: st.DrawFn, *, max_domains: int = 3, max_clusters: int = 3,
          max_services: int = 3, max_requirements: int = 3,
          allow_unfilled_ingress: bool = False, istio: bool = False) -> RepoSpec:
    """A valid repository (see the module docstring); ``istio``: with a Mesh document whose
    clusters are ClusterMesh members and mostly Istio members (:func:`_istio`)."""
    docs, services, clusters_of = draw(_inventory(max_domains, max_clusters, max_services))
    spec = RepoSpec(docs, mesh=_istio(draw, docs) if istio else None)
    for domain in clusters_of:
        for k in range(draw(st.integers(0, max_requirements))):
            doc = draw(_requirement(domain, k + 1, services, clusters_of,
                                    allow_unfilled_ingress))
            spec.requirements[f"requirements/{domain}/r{k + 1}.yaml"] = doc
    return spec


# Characters where regex dialects (and JSON Schema implementations) tend to disagree.
TRICKY = ("\n\r\t\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u180e\u2000\u200a\u200b\u2028\u2029"
          "\u202f\u205f\u3000\ufeff \x00\x7f:,./-_@*#?$^\\[]()éßİKΩ\u0663\u0661\U0001d7d8😀")
ALPHABET = st.sampled_from(TRICKY + "abcxyzAZ09-.:,/@_*")
