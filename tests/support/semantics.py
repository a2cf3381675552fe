"""A semantic view of rendered meshplan output, read from the files (never from meshplan internals).

Golden tests compare *meaning*, not text: per cluster, per policy, the set of allowed peers; the
set of Services (mirror / global / ExternalName with its target) and Namespaces.

* A peer of an endpoint rule is an :class:`EndpointPeer`: (direction, pod labels, namespace,
  clusters, ports). Pod-label keys are normalised by dropping Cilium's ``k8s:``/``any:`` source
  prefix (``k8s:k8s-app`` == ``k8s-app`` for pods), the namespace label is taken out into
  ``namespace`` and the cluster label (``matchLabels`` or ``matchExpressions: In``) into
  ``clusters`` (mesh names). ``ports`` is ``None`` when the rule has no ``toPorts`` (any port).
* A CIDR peer is a :class:`CidrPeer`: (direction, cidr, excepts, ports).
* Services are :class:`ServiceView` with ``kind`` one of ``mirror`` (global, shared false),
  ``global`` (global, shared), ``external`` (ExternalName, ``target`` = externalName) or ``other``.

Also here: small builders for test repositories (``write_repo``), an in-process renderer, a
strict (type-aware) equality for YAML round trips and structural anomaly checks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from meshplan.admission import (
    NAMESPACE_NAME,
    POLICY_NAME,
    SERVICE_NAME,
    selector_problems,
    valid_external_name,
    valid_name,
)
from meshplan.outputs import read_tree

THESIS_FIXTURES = (
    "refinement-5.3",
    "refinement-5.3-thesis-form",
    "use-case-1",
    "use-case-1-c2-verbatim",
    "use-case-2a",
    "use-case-2b",
)

NAMESPACE_KEYS = ("k8s:io.kubernetes.pod.namespace", "io.kubernetes.pod.namespace",
                  "any:io.kubernetes.pod.namespace")
CLUSTER_KEYS = ("io.cilium.k8s.policy.cluster", "k8s:io.cilium.k8s.policy.cluster")
POLICY_KINDS = ("CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")
MANAGED_BY = ("app.kubernetes.io/managed-by", "meshplan")
REQUIRED_BY = "meshplan.dev/required-by"
GLOBAL = "service.cilium.io/global"
SHARED = "service.cilium.io/shared"
NAMESPACE_ANNOTATIONS = {
    "clustermesh.cilium.io/global": "true",
    "argocd.argoproj.io/sync-options": "Prune=false",
    "kustomize.toolkit.fluxcd.io/prune": "disabled",
}
SYNC_WAVE = "argocd.argoproj.io/sync-wave"
_MESH_NAME = re.compile(r"\(Cilium cluster\.name ([^)\s]+)\)")

Ports = frozenset[tuple[str, str]] | None  # None = no toPorts = any port
Labels = frozenset[tuple[str, str]]


class EndpointPeer(NamedTuple):
    direction: str  # "egress" | "ingress"
    labels: Labels  # pod labels without namespace/cluster, source prefix dropped
    namespace: str | None  # None = not written
    clusters: frozenset[str] | None  # mesh names; None = no cluster constraint written
    ports: Ports
    expressions: frozenset[tuple[str, str, tuple[str, ...]]] = frozenset()  # other expressions


class CidrPeer(NamedTuple):
    direction: str
    cidr: str
    excepts: frozenset[str] = frozenset()
    ports: Ports = None


Peer = EndpointPeer | CidrPeer


class ServiceView(NamedTuple):
    namespace: str
    name: str
    kind: str  # mirror | global | external | other
    target: str | None  # externalName for kind external
    ports: frozenset[tuple[int, str]]
    selector: Labels


@dataclass(frozen=True)
class PolicyView:
    kind: str
    namespace: str | None
    name: str
    endpoint_selector: Labels
    default_deny: Mapping[str, Any]
    sections: frozenset[str]  # which of "egress"/"ingress" are present in spec
    peers: frozenset[Peer]
    body: Mapping[str, Any] = field(repr=False, compare=False)

    def direction(self, direction: str) -> frozenset[Peer]:
        return frozenset(p for p in self.peers if p.direction == direction)


@dataclass(frozen=True)
class ClusterView:
    path: str  # "<domain>/<cluster>"
    mesh_name: str
    resources: tuple[str, ...]
    objects: tuple[Mapping[str, Any], ...]
    policies: Mapping[tuple[str | None, str], PolicyView]
    services: frozenset[ServiceView]
    namespaces: frozenset[str]

    def policy(self, namespace: str | None, name: str) -> PolicyView:
        return self.policies[(namespace, name)]

    def service_set(self) -> set[tuple[str, ...]]:
        """Services as comparable tuples: (kind, namespace, name[, externalName])."""
        out: set[tuple[str, ...]] = set()
        for s in self.services:
            if s.kind == "external":
                assert s.target is not None
                out.add(("external", s.namespace, s.name, s.target))
            else:
                out.add((s.kind, s.namespace, s.name))
        return out


# --------------------------------------------------------------------------- parsing


def _strip_source(key: str) -> str:
    for prefix in ("k8s:", "any:"):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def ports_of(rule: Mapping[str, Any]) -> Ports:
    if "toPorts" not in rule:
        return None
    found: set[tuple[str, str]] = set()
    for port_rule in rule["toPorts"]:
        for entry in port_rule.get("ports") or ():
            found.add((str(entry["port"]), str(entry.get("protocol", "ANY"))))
    return frozenset(found)


def endpoint_peer(direction: str, selector: Mapping[str, Any], ports: Ports) -> EndpointPeer:
    labels: dict[str, str] = {}
    namespaces: set[str] = set()
    clusters: set[str] | None = None
    for key, value in (selector.get("matchLabels") or {}).items():
        if key in NAMESPACE_KEYS:
            namespaces.add(str(value))
        elif key in CLUSTER_KEYS:
            clusters = {str(value)} if clusters is None else clusters & {str(value)}
        else:
            labels[_strip_source(str(key))] = str(value)
    expressions: set[tuple[str, str, tuple[str, ...]]] = set()
    for expr in selector.get("matchExpressions") or ():
        values = tuple(sorted(str(v) for v in expr.get("values") or ()))
        if expr["key"] in CLUSTER_KEYS and expr["operator"] == "In":
            clusters = set(values) if clusters is None else clusters & set(values)
        else:
            expressions.add((_strip_source(expr["key"]), expr["operator"], values))
    # Two different namespace labels can never both match: shown as "!a,b" (an anomaly).
    namespace = (None if not namespaces else namespaces.pop() if len(namespaces) == 1
                 else "!" + ",".join(sorted(namespaces)))
    return EndpointPeer(direction, frozenset(labels.items()), namespace,
                        None if clusters is None else frozenset(clusters), ports,
                        frozenset(expressions))


def policy_peers(spec: Mapping[str, Any]) -> frozenset[Peer]:
    peers: set[Peer] = set()
    for direction, ep_key, cidr_key in (("egress", "toEndpoints", "toCIDRSet"),
                                        ("ingress", "fromEndpoints", "fromCIDRSet")):
        for rule in spec.get(direction) or ():
            ports = ports_of(rule)
            for selector in rule.get(ep_key) or ():
                peers.add(endpoint_peer(direction, selector, ports))
            for cidr in rule.get(cidr_key) or ():
                peers.add(CidrPeer(direction, str(cidr["cidr"]),
                                   frozenset(str(e) for e in cidr.get("except") or ()), ports))
    return frozenset(peers)


def policy_view(obj: Mapping[str, Any]) -> PolicyView:
    spec = obj.get("spec") or {}
    selector = endpoint_peer("self", spec.get("endpointSelector") or {}, None)
    return PolicyView(
        kind=obj["kind"],
        namespace=obj["metadata"].get("namespace"),
        name=obj["metadata"]["name"],
        endpoint_selector=selector.labels | (
            frozenset({("namespace", selector.namespace)}) if selector.namespace else frozenset()),
        default_deny=dict(spec.get("enableDefaultDeny") or {}),
        sections=frozenset(k for k in ("egress", "ingress") if k in spec),
        peers=policy_peers(spec),
        body=obj,
    )


def service_view(obj: Mapping[str, Any]) -> ServiceView:
    meta = obj["metadata"]
    annotations = meta.get("annotations") or {}
    spec = obj.get("spec") or {}
    target = None
    if spec.get("type") == "ExternalName":
        kind, target = "external", str(spec["externalName"])
    elif annotations.get(GLOBAL) == "true":
        kind = "mirror" if annotations.get(SHARED) == "false" else "global"
    else:
        kind = "other"
    ports = frozenset((int(p["port"]), str(p.get("protocol", "TCP")))
                      for p in spec.get("ports") or ())
    selector = frozenset((str(k), str(v)) for k, v in (spec.get("selector") or {}).items())
    return ServiceView(meta.get("namespace", "default"), meta["name"], kind, target, ports,
                       selector)


def load_yaml_documents(text: str) -> list[Any]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def cluster_views(files: Mapping[str, bytes]) -> dict[str, ClusterView]:
    """Parse rendered files (relative path -> bytes) into one view per cluster directory."""
    dirs = sorted({path.rsplit("/", 1)[0] for path in files
                   if path.startswith("clusters/") and path.endswith("/kustomization.yaml")})
    views: dict[str, ClusterView] = {}
    for directory in dirs:
        kustomization_text = files[f"{directory}/kustomization.yaml"].decode("utf-8")
        mesh = _MESH_NAME.search(kustomization_text)
        assert mesh is not None, f"{directory}/kustomization.yaml: no mesh name in header"
        kustomization = yaml.safe_load(kustomization_text)
        resources = tuple(kustomization.get("resources") or ())
        objects: list[Mapping[str, Any]] = []
        for resource in resources:
            objects += load_yaml_documents(files[f"{directory}/{resource}"].decode("utf-8"))
        policies = {(o["metadata"].get("namespace"), o["metadata"]["name"]): policy_view(o)
                    for o in objects if o["kind"] in POLICY_KINDS}
        services = frozenset(service_view(o) for o in objects if o["kind"] == "Service")
        namespaces = frozenset(o["metadata"]["name"] for o in objects if o["kind"] == "Namespace")
        path = directory.removeprefix("clusters/")
        views[path] = ClusterView(path, mesh.group(1), resources, tuple(objects), policies,
                                  services, namespaces)
    return views


def read_output(root: Path) -> dict[str, ClusterView]:
    return cluster_views(read_tree(root))


def by_mesh(views: Mapping[str, ClusterView]) -> dict[str, ClusterView]:
    return {v.mesh_name: v for v in views.values()}


# --------------------------------------------------------------------------- expectations


def ports(*specs: str) -> frozenset[tuple[str, str]]:
    """``ports("80/TCP", "53/UDP")`` -> {("80", "TCP"), ("53", "UDP")}."""
    return frozenset((s.split("/")[0], s.split("/")[1]) for s in specs)


DNS_PORTS = ports("53/UDP", "53/TCP")


def ep(direction: str, labels: Mapping[str, str], namespace: str | None,
       clusters: str | Iterable[str] | None, port_set: Ports) -> EndpointPeer:
    """An expected endpoint peer; ``clusters`` is one mesh name or several."""
    if isinstance(clusters, str):
        clusters = {clusters}
    return EndpointPeer(direction, frozenset(labels.items()), namespace,
                        None if clusters is None else frozenset(clusters), port_set)


def dns(mesh_name: str) -> EndpointPeer:
    """The DNS peer meshplan adds to every egress policy (kube-dns of the local cluster)."""
    return ep("egress", {"k8s-app": "kube-dns"}, "kube-system", mesh_name, DNS_PORTS)


def cidr(direction: str, network: str, excepts: Iterable[str] = (), port_set: Ports = None
         ) -> CidrPeer:
    return CidrPeer(direction, network, frozenset(excepts), port_set)


def per_cluster(peers: Iterable[Peer]) -> frozenset[Peer]:
    """Split multi-cluster endpoint peers into one peer per cluster (thesis code boxes do)."""
    out: set[Peer] = set()
    for peer in peers:
        if isinstance(peer, EndpointPeer) and peer.clusters and len(peer.clusters) > 1:
            out.update(peer._replace(clusters=frozenset({c})) for c in peer.clusters)
        else:
            out.add(peer)
    return frozenset(out)


def without_ports(peers: Iterable[Peer]) -> frozenset[Peer]:
    return frozenset(p._replace(ports=None) for p in peers)


def required_by(obj: Mapping[str, Any]) -> frozenset[str]:
    text = (obj["metadata"].get("annotations") or {}).get(REQUIRED_BY, "")
    return frozenset(t for t in text.split(",") if t)


def object_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return (obj["kind"], meta.get("namespace", ""), meta["name"])


def objects_by_key(view: ClusterView) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    return {object_key(o): o for o in view.objects}


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False)


# --------------------------------------------------------------------------- anomalies


def _is_dns_rule(rule: Mapping[str, Any]) -> bool:
    return any(endpoint_peer("egress", s, None).labels == {("k8s-app", "kube-dns")}
               for s in rule.get("toEndpoints") or ())


def _names_namespaces(peer: EndpointPeer) -> bool:
    """A peer that selects namespaces itself (by expression, or by namespace labels): Cilium
    does not pin it to the policy's namespace, so meshplan must not either."""
    keys = [k for k, _ in peer.labels] + [k for k, _, _ in peer.expressions]
    return any(k == "io.kubernetes.pod.namespace" or k.startswith(
        "io.cilium.k8s.namespace.labels.") for k in keys)


def policy_anomalies(obj: Mapping[str, Any], mesh_name: str) -> list[str]:
    """Structural problems meshplan must never emit in a policy of cluster ``mesh_name``."""
    problems: list[str] = []
    name = f"{obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
    spec = obj["spec"]
    for direction, ep_key, cidr_key in (("egress", "toEndpoints", "toCIDRSet"),
                                        ("ingress", "fromEndpoints", "fromCIDRSet")):
        rules = spec.get(direction)
        if rules is None:
            continue
        if not rules:
            problems.append(f"{name}: empty {direction} list")
        for i, rule in enumerate(rules):
            for key in (ep_key, cidr_key, "toPorts"):
                if key in rule and not rule[key]:
                    problems.append(f"{name}: {direction}[{i}].{key} is an empty list")
            if rule and ep_key not in rule and cidr_key not in rule:
                # toPorts without peers allows every peer; an empty rule {} allows nothing (the
                # Cilium idiom for "default deny, no allow").
                problems.append(f"{name}: {direction}[{i}] has no L3 peer (allows everything)")
            if not rule and (len(rules) > 1 or not (spec.get("enableDefaultDeny") or {}).get(
                    direction)):
                problems.append(f"{name}: {direction}[{i}] is an empty rule, but not the only "
                                "rule of a default-deny direction")
            for selector in rule.get(ep_key) or ():
                peer = endpoint_peer(direction, selector, None)
                if not selector or not (selector.get("matchLabels") or
                                        selector.get("matchExpressions")):
                    problems.append(f"{name}: {direction}[{i}] has an empty selector")
                if peer.clusters is None:
                    problems.append(f"{name}: {direction}[{i}] peer without cluster label")
                elif not peer.clusters:
                    problems.append(f"{name}: {direction}[{i}] peer with contradicting clusters")
                if peer.namespace and peer.namespace.startswith("!"):
                    problems.append(f"{name}: {direction}[{i}] peer with contradicting "
                                    f"namespaces {peer.namespace[1:]}")
                if peer.namespace is None and obj["kind"] == "CiliumNetworkPolicy" and \
                        not _names_namespaces(peer):
                    problems.append(f"{name}: {direction}[{i}] peer without namespace")
    if "egress" in spec or (spec.get("enableDefaultDeny") or {}).get("egress"):
        dns_rules = [r for r in spec.get("egress") or () if _is_dns_rule(r)]
        if len(dns_rules) != 1:
            problems.append(f"{name}: {len(dns_rules)} DNS rules, expected exactly one")
        for rule in dns_rules:
            peers = [endpoint_peer("egress", s, ports_of(rule)) for s in rule["toEndpoints"]]
            if peers != [dns(mesh_name)]:
                problems.append(f"{name}: DNS rule is {peers}, expected {dns(mesh_name)}")
    return problems


def metadata_anomalies(obj: Mapping[str, Any]) -> list[str]:
    """Labels/annotations every meshplan object must carry."""
    problems: list[str] = []
    meta = obj["metadata"]
    name = f"{obj['kind']} {meta.get('namespace', '')}/{meta['name']}"
    if (meta.get("labels") or {}).get(MANAGED_BY[0]) != MANAGED_BY[1]:
        problems.append(f"{name}: missing {MANAGED_BY[0]}: {MANAGED_BY[1]}")
    if not required_by(obj):
        problems.append(f"{name}: missing {REQUIRED_BY}")
    annotations = meta.get("annotations") or {}
    if obj["kind"] == "Namespace":
        for key, value in NAMESPACE_ANNOTATIONS.items():
            if annotations.get(key) != value:
                problems.append(f"{name}: annotation {key} is {annotations.get(key)!r}, "
                                f"expected {value!r}")
        if SYNC_WAVE not in annotations:
            problems.append(f"{name}: no {SYNC_WAVE}")
    return problems


def admission_anomalies(obj: Mapping[str, Any]) -> list[str]:
    """What the API server or the Cilium agent would refuse: object names, label selectors."""
    meta = obj["metadata"]
    name = f"{obj['kind']} {meta.get('namespace', '')}/{meta['name']}"
    rule = {"Service": SERVICE_NAME, "Namespace": NAMESPACE_NAME}.get(obj["kind"], POLICY_NAME)
    problems = [] if valid_name(rule, meta["name"]) else [f"{name}: invalid name for its kind"]
    if obj["kind"] == "Service" and obj["spec"].get("externalName") is not None and not \
            valid_external_name(obj["spec"]["externalName"]):
        problems.append(f"{name}: invalid externalName")
    if obj["kind"] not in POLICY_KINDS:
        return problems
    spec = obj["spec"]
    selectors = [spec["endpointSelector"]]
    for direction, key in (("egress", "toEndpoints"), ("ingress", "fromEndpoints")):
        selectors += [peer for rule_ in spec.get(direction) or () for peer in rule_.get(key) or ()]
    for selector in selectors:
        problems += [f"{name}: {p.message}" for p in selector_problems(selector)]
    return problems


def all_anomalies(views: Mapping[str, ClusterView]) -> list[str]:
    problems: list[str] = []
    for view in views.values():
        for obj in view.objects:
            problems += [f"{view.path}: {p}" for p in metadata_anomalies(obj)]
            problems += [f"{view.path}: {p}" for p in admission_anomalies(obj)]
            if obj["kind"] in POLICY_KINDS:
                problems += [f"{view.path}: {p}" for p in policy_anomalies(obj, view.mesh_name)]
    return problems


# --------------------------------------------------------------------------- strict equality


def same_data(a: Any, b: Any) -> bool:
    """Equality that also compares types (``True != 1``, ``1 != 1.0``, ``"1" != 1``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_data(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_data(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# --------------------------------------------------------------------------- repositories


def write_yaml(path: Path, documents: Sequence[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all(list(documents), sort_keys=False), encoding="utf-8")


def write_repo(root: Path, domains: Sequence[Mapping[str, Any]],
               requirements: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """``inventory/<domain>.yaml`` per domain; ``requirements/<domain>/<name>.yaml`` each.

    Missing parts are filled in: ``apiVersion``/``kind`` of domains and requirements.
    """
    for domain in domains:
        doc = {"apiVersion": "meshplan.dev/v1alpha1", "kind": "Domain", **domain}
        write_yaml(root / "inventory" / f"{domain['metadata']['name']}.yaml", [doc])
    for domain_name, docs in requirements.items():
        for requirement in docs:
            full = {"apiVersion": "meshplan.dev/v1alpha1", "kind": "Requirement", **requirement}
            name = requirement["metadata"]["name"]
            write_yaml(root / "requirements" / domain_name / f"{name}.yaml", [full])
    (root / "requirements").mkdir(parents=True, exist_ok=True)
    return root


def domain(name: str, clusters: Sequence[Mapping[str, Any]],
           services: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"clusters": list(clusters), "services": list(services)}}


def requirement(name: str, selector: Mapping[str, str], *, namespace: str | None = None,
                clusters: Sequence[str] | None = None, egress: Sequence[Any] | None = None,
                ingress: Sequence[Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    spec: dict[str, Any] = {"endpointSelector": {"matchLabels": dict(selector)}}
    if clusters is not None:
        spec["clusters"] = list(clusters)
    if egress is not None:
        spec["egress"] = list(egress)
    if ingress is not None:
        spec["ingress"] = list(ingress)
    return {"metadata": meta, "spec": spec}


def to(*selectors: Mapping[str, str], ports_: Sequence[str] | None = None) -> dict[str, Any]:
    """An egress rule to abstract or raw peers; ``ports_`` like ``["8080/TCP"]``."""
    rule: dict[str, Any] = {"toEndpoints": [{"matchLabels": dict(s)} for s in selectors]}
    if ports_ is not None:
        rule["toPorts"] = [{"ports": [{"port": p.split("/")[0], "protocol": p.split("/")[1]}
                                      for p in ports_]}]
    return rule


def from_(*selectors: Mapping[str, str], ports_: Sequence[str] | None = None) -> dict[str, Any]:
    rule = to(*selectors, ports_=ports_)
    rule["fromEndpoints"] = rule.pop("toEndpoints")
    return rule


def render_files(repo: Path) -> tuple[dict[str, bytes], tuple[Any, ...]]:
    """Render ``repo`` in-process through the public pipeline: (path -> bytes, diagnostics)."""
    from meshplan.pipeline import render_repository

    rendered, diagnostics = render_repository(repo)
    return {f.path: f.content for f in rendered.files}, diagnostics


def render_views(repo: Path) -> dict[str, ClusterView]:
    return cluster_views(render_files(repo)[0])
