"""A deterministic, seeded generator of synthetic meshplan repositories.

``generate(size, seed, dest)`` writes ``dest/inventory/<domain>.yaml`` (one file per domain)
and ``dest/requirements/<domain>/<name>.yaml`` (one requirement per file). The same size and
seed always give byte-identical files (the only randomness is ``random.Random`` seeded with a
string, which does not depend on ``PYTHONHASHSEED``).

Sizes (issue #6):

* ``S`` - the bundled example (``inventory/`` and ``requirements/`` of this repository).
* ``M`` - 10 domains x 10 clusters, 50 services per domain, 1,000 requirements.
* ``L`` - 50 domains x 20 clusters (1,000 clusters), 200 services per domain, 10,000
  requirements.
* ``DxCxSxR`` - a custom size, e.g. ``3x3x8x30`` (domains x clusters per domain x services per
  domain x requirements in total). ``DxCxSxR+ids`` also writes ``meshId`` (needs at most 255
  clusters in total).
* ``+mesh`` after a size: a mesh plan, every cluster a ClusterMesh member (``peers: needed``);
  ``+istio`` (after a size or ``+mesh``): every cluster an Istio member with a trust domain
  and an east-west gateway address of its own, every service a service account of its name,
  each cluster its own Istio network (with ``+mesh``: one network per domain). With either,
  calls between domains stay within regions of ``REGION_DOMAINS`` domains.
* ``+obs`` last, after ``+mesh`` and/or ``+istio``: the Mesh document's monitoring too
  (``spec.observability``, every other cluster federated by the first one, Hubble on).

Every generated repository is valid under meshplan's rules (the tests check it): services run
in 1-3 clusters of their domain and about a third are exported (some to ``*``, the rest to 1-4
named domains); requirements select their own domain's pods by service (most) or by raw labels
(with a namespace, some cluster-wide), egress to a few own-domain services and to one service
of another domain that was exported to the requirement's domain, some with ``cluster:``
peers, a few domain-wide ``service: "*"`` peers, some raw-label peers and CIDR rules; about half
have ingress peers. Cluster names give default mesh names of at most 32 characters, pod CIDRs
never overlap (one /20 per cluster), and namespaces and service names carry the domain's name,
so no two domains' services become the same global Service.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
API_VERSION = "meshplan.dev/v1alpha1"
INVENTORY_HEADER = (
    "# yaml-language-server: $schema=../generator/meshplan/schemas/domain.schema.json\n"
)
MESH_HEADER = "# yaml-language-server: $schema=../generator/meshplan/schemas/mesh.schema.json\n"
REQUIREMENT_HEADER = (
    "# yaml-language-server: $schema=../../generator/meshplan/schemas/requirement.schema.json\n"
)

REGIONS = ("euw", "eun", "use", "usw", "apse", "apne", "sae", "afs")
NAMESPACE_WORDS = ("checkout", "catalog", "identity", "billing", "search", "media", "ops", "data")
SERVICE_WORDS = (
    "api", "web", "orders", "payments", "users", "cart", "stock", "pricing", "reviews",
    "shipping", "auth", "search", "reports", "notify", "ledger", "media", "gateway", "profile",
    "events", "metrics",
)
CLIENT_WORDS = ("batch", "cron", "etl", "worker", "debug", "loadgen", "backup", "sync")
TIERS = ("frontend", "backend", "data")
PORTS = ((80, "http"), (8080, "http"), (443, "https"), (9090, "grpc"), (5432, "postgres"),
         (6379, "redis"), (3000, "http"))
MESH_DOCUMENT: dict[str, Any] = {
    "apiVersion": API_VERSION,
    "kind": "Mesh",
    "metadata": {"name": "benchmark"},
    "spec": {"cilium": {"routingMode": "tunnel", "encryption": "wireguard",
                        "maxConnectedClusters": 255, "peers": "needed",
                        "ca": {"existingSecret": "cilium-ca"},
                        "apiserverService": "LoadBalancer"}},
}
ISTIO_SETTINGS: dict[str, Any] = {"meshID": "benchmark", "rootCA": {"existingSecret": "cacerts"}}


OBSERVABILITY_SETTINGS: dict[str, Any] = {"selectorLabels": {"release": "kube-prometheus-stack"},
                                          "hubble": True}


def mesh_document(size: Size, central: str) -> dict[str, Any]:
    """The Mesh document of a ``+mesh`` and/or ``+istio`` size (``+obs``: ``central``, the
    first cluster as ``<domain>/<cluster>``, federates every other)."""
    spec: dict[str, Any] = {}
    if size.mesh:
        spec.update(MESH_DOCUMENT["spec"])
    if size.istio:
        spec["istio"] = ISTIO_SETTINGS
    if size.observability:
        spec["observability"] = {"centralCluster": central, **OBSERVABILITY_SETTINGS}
    return {**MESH_DOCUMENT, "spec": spec}


EGRESS_CIDRS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("203.0.113.0/24", ()),
    ("198.51.100.0/24", ()),
    ("192.0.2.0/24", ()),
    ("0.0.0.0/0", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
)


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Size:
    name: str
    domains: int
    clusters_per_domain: int
    services_per_domain: int
    requirements: int  # in total, spread evenly over the domains
    mesh_ids: bool = False  # write meshId (unique 1-255, so at most 255 clusters in total)
    mesh: bool = False  # a Mesh document: every cluster a ClusterMesh member, peers: needed
    istio: bool = False  # every cluster an Istio member: the identity layer (issue 12)
    observability: bool = False  # +obs: the Mesh document's observability section

    @property
    def regional(self) -> bool:
        """Calls between domains stay within regions (see REGION_DOMAINS)."""
        return self.mesh or self.istio

    @property
    def clusters(self) -> int:
        return self.domains * self.clusters_per_domain

    @property
    def services(self) -> int:
        return self.domains * self.services_per_domain


BUNDLED = "S"
SIZES: dict[str, Size] = {
    "M": Size("M", 10, 10, 50, 1_000),
    "L": Size("L", 50, 20, 200, 10_000),
}
_CUSTOM = re.compile(r"(\d+)x(\d+)x(\d+)x(\d+)(\+ids)?")
MESH_SUFFIX = "+mesh"
ISTIO_SUFFIX = "+istio"
OBSERVABILITY_SUFFIX = "+obs"  # last, after +mesh and/or +istio: the monitoring too
# With a mesh plan, calls between domains stay within regions of this many domains: one
# ClusterMesh cannot connect a thousand clusters that all call each other (cluster IDs must
# differ among every cluster and the clusters it connects to, within 255 or 511 IDs), and
# meshplan refuses such a mesh. IDs are unique within a region, which keeps that rule.
REGION_DOMAINS = 5


def parse_size(text: str) -> Size | None:
    """``S`` -> None (the bundled example), ``M``/``L`` -> presets, ``DxCxSxR[+ids]`` -> custom;
    ``+mesh`` after M, L or a custom size adds a mesh plan (``inventory/mesh.yaml``),
    ``+istio`` (after those or ``+mesh``) makes every cluster an Istio member, and ``+obs``
    (last, after either) adds the Mesh document's monitoring."""
    if text == BUNDLED:
        return None
    if text.endswith(OBSERVABILITY_SUFFIX):
        base = parse_size(text.removesuffix(OBSERVABILITY_SUFFIX))
        if base is None or not (base.mesh or base.istio):
            raise ValueError(f"size {text!r}: +obs goes after +mesh or +istio (it is part of "
                             "the Mesh document)")
        return replace(base, name=text, observability=True)
    if text.endswith(ISTIO_SUFFIX):
        base = parse_size(text.removesuffix(ISTIO_SUFFIX))
        if base is None or base.mesh_ids or base.observability:
            raise ValueError(f"size {text!r}: +istio goes after M, L, DxCxSxR or +mesh")
        return replace(base, name=text, istio=True)
    if text.endswith(MESH_SUFFIX):
        base = parse_size(text.removesuffix(MESH_SUFFIX))
        if base is None or base.mesh_ids:
            raise ValueError(f"size {text!r}: +mesh goes after M, L or DxCxSxR")
        if REGION_DOMAINS * base.clusters_per_domain > 255:
            raise ValueError(f"size {text!r}: +mesh needs at most {255 // REGION_DOMAINS} "
                             "clusters per domain (a region's clusters get ids 1-255)")
        return replace(base, name=text, mesh=True)
    if text in SIZES:
        return SIZES[text]
    match = _CUSTOM.fullmatch(text)
    if not match:
        raise ValueError(f"unknown size {text!r}: expected S, M, L or DxCxSxR (e.g. 3x3x8x30), "
                         "optionally followed by +mesh and/or +istio, then +obs")
    d, c, s, r = (int(match.group(i)) for i in range(1, 5))
    if min(d, c, s) < 1 or r < 0:
        raise ValueError(f"size {text!r}: domains, clusters and services must be at least 1")
    size = Size(text, d, c, s, r, mesh_ids=bool(match.group(5)))
    if size.mesh_ids and size.clusters > 255:
        raise ValueError(f"size {text!r}: meshId needs at most 255 clusters, found {size.clusters}")
    if size.clusters > 4096:
        raise ValueError(f"size {text!r}: at most 4096 clusters (one /20 pod CIDR each)")
    return size


# --------------------------------------------------------------------------- model


@dataclass
class ClusterSpec:
    name: str
    index: int  # global, 0-based
    mesh_id: int | None


@dataclass
class ServiceSpec:
    domain: str
    name: str
    namespace: str
    selector: dict[str, str]
    ports: list[dict[str, Any]]
    clusters: list[str]
    export_to: list[str]


@dataclass
class DomainSpec:
    name: str
    clusters: list[ClusterSpec]
    namespaces: list[str]
    services: list[ServiceSpec] = field(default_factory=list)


@dataclass(frozen=True)
class WorkloadInfo:
    size: str
    seed: int
    domains: int
    clusters: int
    services: int
    exported_services: int
    requirements: int
    input_files: int
    input_bytes: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def domain_name(i: int) -> str:
    return f"team-{i:02d}"


def cluster_name(j: int) -> str:
    return f"k8s-{REGIONS[j % len(REGIONS)]}-{j:02d}"


def pod_cidr(index: int) -> str:
    """One /20 per cluster inside 10.0.0.0/8 (4096 of them), never overlapping."""
    return f"10.{index >> 4}.{(index & 15) << 4}.0/20"


# --------------------------------------------------------------------------- generation


class _Generator:
    def __init__(self, size: Size, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.rng = random.Random(f"meshplan-benchmark:{seed}:{size.name}")
        self.domains: list[DomainSpec] = []
        # per domain: the other domains' services exported to it, and the domains they are of
        self.visible: list[list[ServiceSpec]] = []
        self.exporters: list[list[str]] = []

    # -- inventory ----------------------------------------------------------------------

    def inventory(self) -> None:
        size = self.size
        n_namespaces = max(3, min(len(NAMESPACE_WORDS), size.services_per_domain // 25))
        names = [domain_name(i) for i in range(size.domains)]
        for i, name in enumerate(names):
            clusters = []
            for j in range(size.clusters_per_domain):
                index = i * size.clusters_per_domain + j
                clusters.append(ClusterSpec(cluster_name(j), index, self._mesh_id(index)))
            namespaces = [f"{name}-{w}" for w in NAMESPACE_WORDS[:n_namespaces]]
            domain = DomainSpec(name, clusters, namespaces)
            others = [n for n in names if n != name and self._region(n) == self._region(name)]
            for k in range(size.services_per_domain):
                domain.services.append(self._service(domain, k, others))
            self.domains.append(domain)
        for i, domain in enumerate(self.domains):
            visible = [s for other in self.domains if other is not domain for s in other.services
                       if "*" in s.export_to or domain.name in s.export_to]
            self.visible.append(visible)
            self.exporters.append(sorted({s.domain for s in visible}))
            assert i == len(self.visible) - 1

    def _mesh_id(self, index: int) -> int | None:
        if self.size.mesh_ids:
            return index + 1
        if self.size.mesh:  # unique within the cluster's region (see REGION_DOMAINS)
            return index % (REGION_DOMAINS * self.size.clusters_per_domain) + 1
        return None

    def _region(self, domain: str) -> int:
        """Without a mesh plan there is one region; with one, REGION_DOMAINS domains each."""
        return int(domain.removeprefix("team-")) // REGION_DOMAINS if self.size.regional else 0

    def _service(self, domain: DomainSpec, k: int, others: list[str]) -> ServiceSpec:
        rng = self.rng
        word = SERVICE_WORDS[k % len(SERVICE_WORDS)]
        name = f"{domain.name}-{word}-{k:03d}"
        selector = {"app": name}
        if rng.random() < 0.3:
            selector["tier"] = rng.choice(TIERS)
        port, port_name = rng.choice(PORTS)
        ports: list[dict[str, Any]] = [{"port": port, "protocol": "TCP", "name": port_name}]
        roll = rng.random()
        if roll < 0.15:
            ports.append({"port": 9100, "protocol": "TCP", "name": "metrics"})
        elif roll < 0.20:
            ports = [{"port": 514, "protocol": "UDP", "name": "syslog"}]
        count = rng.choices((1, 2, 3), weights=(50, 35, 15))[0]
        count = min(count, len(domain.clusters))
        picked = sorted(rng.sample(range(len(domain.clusters)), count))
        export_to: list[str] = []
        if others and rng.random() < 1 / 3:
            if rng.random() < 0.15:
                export_to = ["*"] if not self.size.regional else sorted(others)  # its region
            else:
                n = min(len(others), rng.randint(1, 4))
                export_to = sorted(rng.sample(others, n))
        return ServiceSpec(domain.name, name, rng.choice(domain.namespaces), selector, ports,
                           [domain.clusters[c].name for c in picked], export_to)

    def inventory_documents(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for domain in self.domains:
            clusters = []
            for cluster in domain.clusters:
                entry: dict[str, Any] = {"name": cluster.name}
                if cluster.mesh_id is not None:
                    entry["meshId"] = cluster.mesh_id
                entry["podCIDRs"] = [pod_cidr(cluster.index)]
                index = cluster.index
                if self.size.mesh:
                    entry["clustermesh"] = {"address": f"198.18.{index // 250}.{index % 250 + 1}"}
                if self.size.istio:
                    # Its own network (only gateways join the clouds) unless a ClusterMesh
                    # joins a domain's clusters; its own trust domain; a reserved gateway IP.
                    entry["istio"] = {
                        "network": domain.name if self.size.mesh else f"net-{index}",
                        "trustDomain": f"{cluster.name}.{domain.name}.example",
                        "eastWestGateway": {"address": f"100.64.{index // 250}."
                                                       f"{index % 250 + 1}"}}
                if self.size.observability and index > 0:  # the first one federates
                    entry["observability"] = {
                        "prometheus": f"https://prometheus.{cluster.name}.{domain.name}.example",
                        "bearerTokenSecret": f"federation-{domain.name}-{cluster.name}"}
                clusters.append(entry)
            services = []
            for s in domain.services:
                entry = {"name": s.name, "namespace": s.namespace, "selector": s.selector,
                         "ports": s.ports, "clusters": s.clusters}
                if self.size.istio:
                    entry["serviceAccount"] = s.name  # one of its own, as Online Boutique
                if s.export_to:
                    entry["exportTo"] = s.export_to
                services.append(entry)
            yield f"inventory/{domain.name}.yaml", {
                "apiVersion": API_VERSION,
                "kind": "Domain",
                "metadata": {"name": domain.name},
                "spec": {"clusters": clusters, "services": services},
            }
        if self.size.mesh or self.size.istio:
            central = f"{self.domains[0].name}/{self.domains[0].clusters[0].name}"
            yield "inventory/mesh.yaml", mesh_document(self.size, central)

    # -- requirements -------------------------------------------------------------------

    def requirement_documents(self) -> Iterator[tuple[str, dict[str, Any]]]:
        size = self.size
        per_domain, extra = divmod(size.requirements, size.domains)
        for i, domain in enumerate(self.domains):
            uses: dict[str, int] = {}
            for k in range(per_domain + (1 if i < extra else 0)):
                doc = self._requirement(i, domain, k, uses)
                yield f"requirements/{domain.name}/{doc['metadata']['name']}.yaml", doc

    def _requirement(self, i: int, domain: DomainSpec, k: int,
                     uses: dict[str, int]) -> dict[str, Any]:
        rng = self.rng
        metadata: dict[str, Any] = {}
        spec: dict[str, Any] = {}
        roll = rng.random()
        selected: ServiceSpec | None = None
        if roll < 0.75:
            selected = domain.services[k % len(domain.services)]
            n = uses.get(selected.name, 0)
            uses[selected.name] = n + 1
            metadata["name"] = f"{selected.name}-p{n}"
            if len(selected.clusters) > 1 and rng.random() < 0.1:
                spec["clusters"] = [rng.choice(selected.clusters)]
            spec["endpointSelector"] = {"matchLabels": {"service": selected.name}}
        else:
            word = CLIENT_WORDS[k % len(CLIENT_WORDS)]
            if roll < 0.98:
                metadata["name"] = f"{word}-clients-{k:04d}"
                metadata["namespace"] = rng.choice(domain.namespaces)
                labels = {"app": f"{word}-client", "role": "client"}
            else:
                metadata["name"] = f"{word}-agents-{k:04d}"
                metadata["namespace"] = "*"  # cluster-wide
                labels = {"app": f"{word}-agent"}
            if rng.random() < 0.6:
                n = rng.randint(1, min(3, len(domain.clusters)))
                picked = sorted(rng.sample(range(len(domain.clusters)), n))
                spec["clusters"] = [domain.clusters[c].name for c in picked]
            spec["endpointSelector"] = {"matchLabels": labels}
        if rng.random() < 0.2:
            metadata["labels"] = {"team": domain.name}
        if rng.random() < 0.3:
            target = selected.name if selected else metadata["name"]
            spec = {"description": f"Generated workload: who {target} may talk to.", **spec}
        own = [s for s in domain.services if s is not selected]
        egress = self._egress(i, domain, own) if rng.random() < 0.9 else []
        ingress = self._ingress(i, own) if rng.random() < 0.5 or not egress else []
        if egress:
            spec["egress"] = egress
        if ingress:
            spec["ingress"] = ingress
        return {"apiVersion": API_VERSION, "kind": "Requirement", "metadata": metadata,
                "spec": spec}

    def _egress(self, i: int, domain: DomainSpec, own: list[ServiceSpec]) -> list[dict[str, Any]]:
        rng = self.rng
        rules: list[dict[str, Any]] = []
        peers: list[dict[str, Any]] = []
        if own:
            for service in rng.sample(own, min(len(own), rng.randint(1, 3))):
                labels = {"service": service.name}
                if rng.random() < 0.1:
                    labels["cluster"] = rng.choice(service.clusters)
                peers.append({"matchLabels": labels})
        if rng.random() < 0.01:
            running = sorted({c for s in domain.services for c in s.clusters})
            peers.append({"matchLabels": {"service": "*", "cluster": rng.choice(running)}})
        if peers:
            rule: dict[str, Any] = {"toEndpoints": peers}
            if rng.random() < 0.1:
                rule["toPorts"] = [{"ports": [{"port": "443", "protocol": "TCP"}]}]
            rules.append(rule)
        visible = self.visible[i]
        if visible and rng.random() < 0.8:
            target = rng.choice(visible)
            labels = {"service": target.name}
            if rng.random() < 0.2:
                labels["cluster"] = rng.choice(target.clusters)
            labels["domain"] = target.domain
            rules.append({"toEndpoints": [{"matchLabels": labels}]})
        if self.exporters[i] and rng.random() < 0.02:
            other = rng.choice(self.exporters[i])
            rules.append({"toEndpoints": [{"matchLabels": {"service": "*", "domain": other}}]})
        if rng.random() < 0.05:
            rules.append({"toEndpoints": [{"matchLabels": {"app": "telemetry-collector"}}],
                          "toPorts": [{"ports": [{"port": "4317", "protocol": "TCP"}]}]})
        if rng.random() < 0.1:
            cidr, excepts = rng.choice(EGRESS_CIDRS)
            entry: dict[str, Any] = {"cidr": cidr}
            if excepts:
                entry["except"] = list(excepts)
            rules.append({"toCIDRSet": [entry],
                          "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]})
        return rules

    def _ingress(self, i: int, own: list[ServiceSpec]) -> list[dict[str, Any]]:
        rng = self.rng
        visible = self.visible[i]
        peers: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 2)):
            if visible and (not own or rng.random() < 0.3):
                target = rng.choice(visible)
                labels = {"service": target.name, "domain": target.domain}
            elif own:
                service = rng.choice(own)
                labels = {"service": service.name}
                if rng.random() < 0.15:
                    labels["cluster"] = rng.choice(service.clusters)
            else:
                continue
            peer = {"matchLabels": labels}
            if peer not in peers:
                peers.append(peer)
        rules: list[dict[str, Any]] = []
        if peers:
            rule: dict[str, Any] = {"fromEndpoints": peers}
            if rng.random() < 0.1:
                rule["toPorts"] = [{"ports": [{"port": "8443", "protocol": "TCP"}]}]
            rules.append(rule)
        if rng.random() < 0.05 or not rules:
            rules.append({"fromCIDRSet": [{"cidr": "10.0.0.0/8", "except": ["10.96.0.0/12"]}]})
        return rules


# --------------------------------------------------------------------------- YAML text

# Written by hand (not yaml.dump) so the bytes never depend on the PyYAML version, and so the
# files look like the bundled example: block style, small leaf mappings and lists in flow style.
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*|\d+\.\d+\.\d+\.\d+/\d+")
_PLAIN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9 ,.;()_'/-]*[A-Za-z0-9.)]")
_SPECIAL = frozenset(("y", "yes", "n", "no", "true", "false", "on", "off", "null"))


def _scalar(value: Any, *, flow: bool) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if text.lower() not in _SPECIAL and (
        _PLAIN.fullmatch(text)
        or (not flow and _PLAIN_TEXT.fullmatch(text) and ": " not in text and " #" not in text)
    ):
        return text
    return json.dumps(text)


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _flowable(value: Any) -> bool:
    if isinstance(value, dict):
        return len(value) <= 4 and all(_is_scalar(v) for v in value.values())
    if isinstance(value, list):
        return all(_is_scalar(v) for v in value) or (
            len(value) <= 2 and all(isinstance(v, dict) and len(v) <= 3 and _flowable(v)
                                    for v in value))
    return True


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_scalar(k, flow=True)}: {_flow(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value, flow=True)


def _block(data: Mapping[str, Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for key, value in data.items():
        head = f"{pad}{_scalar(key, flow=False)}:"
        if _is_scalar(value):
            lines.append(f"{head} {_scalar(value, flow=False)}")
        elif _flowable(value) and (indent or not isinstance(value, dict)):
            lines.append(f"{head} {_flow(value)}")
        elif isinstance(value, dict):
            lines.append(head)
            _block(value, indent + 2, lines)
        else:
            lines.append(head)
            for item in value:
                if isinstance(item, dict) and item:
                    sub: list[str] = []
                    _block(item, indent + 4, sub)
                    sub[0] = f"{pad}  - {sub[0].lstrip()}"
                    lines.extend(sub)
                else:
                    lines.append(f"{pad}  - {_flow(item)}")


def to_yaml(data: Mapping[str, Any], header: str = "") -> str:
    lines: list[str] = []
    _block(data, 0, lines)
    return header + "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- files


def workload_files(size: Size, seed: int) -> Iterator[tuple[str, str]]:
    """(relative path, text) of every file of the workload, in a fixed order."""
    gen = _Generator(size, seed)
    gen.inventory()
    for path, doc in gen.inventory_documents():
        yield path, to_yaml(doc, MESH_HEADER if doc["kind"] == "Mesh" else INVENTORY_HEADER)
    for path, doc in gen.requirement_documents():
        yield path, to_yaml(doc, REQUIREMENT_HEADER)


def _clear(dest: Path) -> None:
    for top in ("inventory", "requirements"):
        if (dest / top).exists():
            shutil.rmtree(dest / top)


def generate(size_name: str, seed: int, dest: Path) -> WorkloadInfo:
    """Write the workload for ``size_name`` and ``seed`` into ``dest`` (its inputs replaced)."""
    size = parse_size(size_name)
    dest.mkdir(parents=True, exist_ok=True)
    _clear(dest)
    if size is None:
        for top in ("inventory", "requirements"):
            shutil.copytree(REPO_ROOT / top, dest / top)
    else:
        made: set[Path] = set()
        for relpath, text in workload_files(size, seed):
            path = dest / relpath
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            if path.exists():
                raise RuntimeError(f"workload generator wrote {relpath} twice")
            path.write_bytes(text.encode("utf-8"))
    return describe(dest, size_name, seed)


def input_files(repo: Path) -> list[Path]:
    found = [p for top in ("inventory", "requirements") for p in (repo / top).rglob("*")
             if p.is_file() and p.suffix in (".yaml", ".yml", ".json")]
    return sorted(found)


def read_inventory(repo: Path) -> dict[str, dict[str, Any]]:
    """domain -> {"clusters": [names], "services": {name: {"clusters": [...], ...}}}."""
    domains: dict[str, dict[str, Any]] = {}
    for path in sorted((repo / "inventory").glob("*.y*ml")):
        for doc in yaml.load_all(path.read_text("utf-8"), Loader=yaml.CSafeLoader):
            if not isinstance(doc, dict) or doc.get("kind") != "Domain":
                continue
            spec = doc["spec"]
            domains[doc["metadata"]["name"]] = {
                "clusters": [c["name"] for c in spec["clusters"]],
                "services": {s["name"]: s for s in spec.get("services") or []},
            }
    return domains


def describe(repo: Path, size_name: str, seed: int) -> WorkloadInfo:
    """Counts of a workload repository (read back from its files)."""
    files = input_files(repo)
    domains = read_inventory(repo)
    services = [s for d in domains.values() for s in d["services"].values()]
    requirements = 0
    for path in files:
        if path.relative_to(repo).parts[0] == "requirements":
            requirements += sum(1 for d in yaml.load_all(path.read_text("utf-8"),
                                                         Loader=yaml.CSafeLoader) if d)
    # The bundled example also has a thesis-form domain in JSON: count its clusters/services.
    for path in (repo / "inventory").glob("*.json"):
        data = json.loads(path.read_text("utf-8"))
        domains[data["domain"]["name"]] = {"clusters": [c["name"] for c in data["clusters"]],
                                           "services": {}}
        services.extend({"exportTo": ["*"]} for _ in data.get("services") or [])
    return WorkloadInfo(
        size=size_name,
        seed=seed,
        domains=len(domains),
        clusters=sum(len(d["clusters"]) for d in domains.values()),
        services=len(services),
        exported_services=sum(1 for s in services if s.get("exportTo")),
        requirements=requirements,
        input_files=len(files),
        input_bytes=sum(p.stat().st_size for p in files),
    )


# --------------------------------------------------------------------------- one change


@dataclass(frozen=True)
class Mutation:
    """One requirement changed in place: an own-domain service added to its egress peers."""

    file: str  # relative to the repository
    original: bytes
    added_service: str
    expected_clusters: tuple[str, ...]  # "domain/cluster" of every cluster whose output may change

    def undo(self, repo: Path) -> None:
        (repo / self.file).write_bytes(self.original)


def mutate_one_requirement(repo: Path) -> Mutation:
    """Change one requirement (deterministically chosen) so that it egresses to one more service.

    The output may change only in the clusters where the requirement's policy goes (its
    service's clusters, narrowed by spec.clusters) and where the added service runs.
    """
    inventory = read_inventory(repo)
    for domain in sorted(inventory):
        folder = repo / "requirements" / domain
        if not folder.is_dir():
            continue
        services = inventory[domain]["services"]
        for path in sorted(folder.glob("*.y*ml")):
            original = path.read_bytes()
            docs = list(yaml.load_all(original.decode("utf-8"), Loader=yaml.CSafeLoader))
            if len(docs) != 1 or not _mutable(docs[0]):
                continue
            doc = docs[0]
            selected = doc["spec"]["endpointSelector"]["matchLabels"]["service"]
            if selected not in services:
                continue
            rule = next(r for r in doc["spec"]["egress"] if "toEndpoints" in r)
            named = {str(p.get("matchLabels", {}).get("service"))
                     for r in [*(doc["spec"].get("egress") or []),
                               *(doc["spec"].get("ingress") or [])]
                     for p in r.get("toEndpoints", r.get("fromEndpoints", []))}
            candidates = sorted(n for n in services if n != selected and n not in named)
            if not candidates:
                continue
            added = candidates[0]
            rule["toEndpoints"].append({"matchLabels": {"service": added}})
            relpath = path.relative_to(repo).as_posix()
            path.write_bytes(to_yaml(doc, f"# changed by the benchmark (one-requirement change)\n"
                                     f"{REQUIREMENT_HEADER}").encode("utf-8"))
            scope = set(services[selected]["clusters"])
            if doc["spec"].get("clusters"):
                scope &= set(doc["spec"]["clusters"])
            touched = scope | set(services[added]["clusters"])
            return Mutation(relpath, original, added,
                            tuple(sorted(f"{domain}/{c}" for c in touched)))
    raise RuntimeError(f"no requirement in {repo} can take the one-requirement change")


def _mutable(doc: Any) -> bool:
    """A native requirement that selects {service: x}, has no namespace and egresses to peers."""
    if not isinstance(doc, dict) or doc.get("kind") != "Requirement":
        return False
    if doc.get("apiVersion") != API_VERSION or "namespace" in (doc.get("metadata") or {}):
        return False
    spec = doc.get("spec") or {}
    labels = (spec.get("endpointSelector") or {}).get("matchLabels") or {}
    if list(labels) != ["service"] or labels["service"] == "*":
        return False
    return any("toEndpoints" in r for r in spec.get("egress") or [])


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """path -> (inode, mtime_ns, size) of every file under ``root``."""
    found = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            st = path.stat()
            found[path.relative_to(root).as_posix()] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found
