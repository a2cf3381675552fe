"""The reader of rendered Cilium YAML: the connectivity the output allows, by Cilium's rules.

A rule that selects an endpoint and has rules for a direction (``ingress``/``ingressDeny``,
``egress``/``egressDeny``) enforces it; it is default-deny when ``enableDefaultDeny`` is on for
it (explicitly, or by default because it has rules); allows of every selecting rule are
unioned, denies win. A peer without a namespace label means the policy's namespace; a peer
without a cluster label is reported, never guessed (its meaning changed with Cilium 1.19's
``policy-default-local-cluster``). What the model leaves out is reported, not ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..diagnostics import Diagnostic, Location, error, notice, warning
from ..load.document import Document, PathKey, format_path
from ..load.files import decode_utf8
from ..load.parse import parse_yaml
from ..model import Inventory
from ..outputs import DEFAULT_OUTPUT_DIR, KUSTOMIZATION, cluster_dir, split_cluster_path
from ..vocabulary import (
    CILIUM_CLUSTER_LABEL,
    NAMESPACE_LABELS_PREFIX,
    NETWORK_POLICY_KIND,
    POD_NAMESPACE_LABEL,
    POLICY_KINDS,
    SOURCE_ANNOTATION,
)
from .addresses import Block, cidr_blocks
from .connectivity import DIRECTIONS, Connectivity, Direction, Grant, Origin
from .endpoints import Endpoint
from .ports import ALL_PORTS, NO_PORTS, PROTOCOLS, PortSet, ports_of
from .selectors import Term, parse_selector

HARMLESS_KUSTOMIZE_KEYS = {"apiVersion", "kind", "metadata", "resources", "commonAnnotations",
                           "buildMetadata"}
RULE_KEYS = {"endpointSelector", "ingress", "ingressDeny", "egress", "egressDeny",
             "enableDefaultDeny", "description", "labels", "log"}
L3_KEYS: dict[Direction, tuple[str, str, str]] = {
    "egress": ("toEndpoints", "toCIDR", "toCIDRSet"),
    "ingress": ("fromEndpoints", "fromCIDR", "fromCIDRSet"),
}
UNMODELLED_L3: dict[Direction, tuple[str, ...]] = {
    "egress": ("toEntities", "toServices", "toFQDNs", "toGroups", "toNodes", "toRequires"),
    "ingress": ("fromEntities", "fromGroups", "fromNodes", "fromRequires"),
}
NOTED_RULE_KEYS = {"icmps", "authentication"}
PORT_RULE_KEYS = {"ports"}
NOTED_PORT_RULE_KEYS = {"rules", "serverNames", "listener", "terminatingTLS", "originatingTLS"}


class _ActualBuilder:
    """Reads the rendered tree and fills a :class:`Connectivity` with Cilium's semantics."""

    def __init__(self, inventory: Inventory, endpoints: Sequence[Endpoint],
                 files: Mapping[str, bytes], display_root: str) -> None:
        self.inventory = inventory
        self.model = Connectivity(endpoints)
        self.files = files
        self.root = display_root.rstrip("/")
        self.problems: list[Diagnostic] = []
        self.policies = 0

    def display(self, relpath: str) -> str:
        return f"{self.root}/{relpath}" if self.root else relpath

    def build(self) -> Connectivity:
        dirs = sorted({cluster_dir(split[0], split[1]) for p in self.files
                       if (split := split_cluster_path(p)) is not None})
        known = set()
        for domain in self.inventory.domains:
            for cluster in domain.clusters:
                base = cluster_dir(domain.name, cluster.name)
                known.add(base)
                if base not in dirs:
                    self.problems.append(error(
                        Location(self.display(base) + "/"), "", "expected the rendered "
                        f"directory of cluster {domain.name}/{cluster.name}, found none: run "
                        "`meshplan render` (its policies cannot be verified)"))
                    continue
                for relpath in self._resources(base):
                    self._file(relpath, domain.name, cluster.name, cluster.mesh_name)
        for base in dirs:
            if base not in known:
                self.problems.append(warning(
                    Location(self.display(base) + "/"), "", "expected only clusters of the "
                    "inventory in the rendered output, found a directory no inventory cluster "
                    "owns (stale output? run `meshplan render`)"))
        return self.model

    def _resources(self, base: str) -> list[str]:
        path = f"{base}/{KUSTOMIZATION}"
        if path not in self.files:
            return sorted(p for p in self.files if p.startswith(base + "/")
                          and p.count("/") == 3 and p.endswith((".yaml", ".yml")))
        docs = self._documents(path)
        if not docs or not isinstance(docs[0].data, dict):
            return []
        data = docs[0].data
        extra = sorted(set(data) - HARMLESS_KUSTOMIZE_KEYS)
        if extra:
            self.problems.append(warning(
                docs[0].location(), "", f"expected a kustomization with resources only, found "
                f"{', '.join(extra)}: verify reads the listed files as they are and does not "
                "apply kustomize transformations"))
        resources = data.get("resources") or []
        out = []
        for i, item in enumerate(resources if isinstance(resources, list) else []):
            target = f"{base}/{item}"
            if not isinstance(item, str) or "/" in item or target not in self.files:
                self.problems.append(error(
                    docs[0].location(("resources", i)), f"resources[{i}]", "expected a file "
                    f"beside the kustomization, found {item!r}: verify cannot read it"))
                continue
            out.append(target)
        return out

    def _documents(self, relpath: str) -> list[Document]:
        text = decode_utf8(self.display(relpath), self.files[relpath])
        if isinstance(text, Diagnostic):
            self.problems.append(text)
            return []
        docs, problems = parse_yaml(self.display(relpath), text)
        self.problems.extend(problems)
        return docs

    def _file(self, relpath: str, domain: str, cluster: str, mesh: str) -> None:
        for doc in self._documents(relpath):
            data = doc.data
            if not isinstance(data, dict):
                continue
            kind = data.get("kind")
            if kind in POLICY_KINDS:
                self.policies += 1
                _PolicyReader(self, doc, domain, cluster, mesh).read()
            elif kind == "NetworkPolicy":
                self.problems.append(error(
                    doc.location(("kind",)), "kind", "expected Cilium policies only, found a "
                    "Kubernetes NetworkPolicy, which verify does not model"))


class _PolicyReader:
    def __init__(self, owner: _ActualBuilder, doc: Document, domain: str, cluster: str,
                 mesh: str) -> None:
        self.owner = owner
        self.doc = doc
        self.domain = domain
        self.cluster = cluster
        self.mesh = mesh
        data = doc.data
        meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        assert isinstance(meta, dict)
        self.kind = str(data["kind"])
        self.name = str(meta.get("name", "?"))
        namespace = meta.get("namespace")
        self.namespace = str(namespace) if namespace else None
        annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
        assert isinstance(annotations, dict)
        source = annotations.get(SOURCE_ANNOTATION)
        self.label = (f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"
                      f" in {domain}/{cluster}" + (f" (from {source})" if source else ""))

    def problem(self, path: PathKey, message: str, *, severity: str = "error") -> None:
        make = {"error": error, "warning": warning, "notice": notice}[severity]
        self.owner.problems.append(make(self.doc.location(path), format_path(path),
                                        f"{self.label}: {message}"))

    def read(self) -> None:
        data = self.doc.data
        if self.kind == NETWORK_POLICY_KIND and self.namespace is None:
            self.problem(("metadata",), "expected metadata.namespace, found none")
            return
        specs: list[tuple[PathKey, Any]] = []
        if "spec" in data:
            specs.append((("spec",), data["spec"]))
        for i, spec in enumerate(data.get("specs") or []):
            specs.append((("specs", i), spec))
        for path, spec in specs:
            if isinstance(spec, dict):
                self._rule(path, spec)
            else:
                self.problem(path, "expected a policy rule mapping")

    def _rule(self, path: PathKey, spec: Mapping[str, Any]) -> None:
        if "nodeSelector" in spec:
            self.problem((*path, "nodeSelector"), "host policies (nodeSelector) are not "
                         "modelled: this rule is ignored")
            return
        for key in sorted(set(spec) - RULE_KEYS):
            self.problem((*path, key), f"'{key}' is not modelled by verify: ignored")
        drop = ("k8s:" + POD_NAMESPACE_LABEL,) if self.namespace else ()
        selector, why = parse_selector(spec.get("endpointSelector"), drop)
        if selector is None:
            self.problem((*path, "endpointSelector"), f"cannot read endpointSelector: {why}")
            return
        subjects = [i for i, e in enumerate(self.owner.model.endpoints)
                    if e.is_pod and e.domain == self.domain and e.cluster == self.cluster
                    and (self.namespace is None or e.namespace == self.namespace)
                    and selector.matches(e.identity)]
        if not subjects:
            self.problem((*path, "endpointSelector"), "selects no pod of the inventory or of "
                         "the requirements, so verify cannot check it (stale output? `meshplan "
                         "render --check` tells)", severity="warning")
        defaults = spec.get("enableDefaultDeny") or {}
        if not isinstance(defaults, dict):
            self.problem((*path, "enableDefaultDeny"), "expected a mapping")
            defaults = {}
        for direction in DIRECTIONS:
            allows = spec.get(direction) or []
            denies = spec.get(direction + "Deny") or []
            if not isinstance(allows, list) or not isinstance(denies, list):
                self.problem((*path, direction), "expected a list of rules")
                continue
            explicit = defaults.get(direction)
            enforced = bool(allows or denies)
            if not enforced:
                if explicit is True:
                    self.problem(
                        (*path, "enableDefaultDeny", direction), f"enableDefaultDeny.{direction}"
                        f" is true but there are no {direction} rules: Cilium enforces a "
                        f"direction only for rules that have {direction} rules, so "
                        f"{direction} stays open", severity="warning")
                continue
            default_deny = enforced if explicit is None else bool(explicit)
            origin = Origin(self.doc.location((*path, direction)), self.label)
            grants = [g for i, r in enumerate(allows)
                      if (g := self._grant(r, direction, (*path, direction, i))) is not None]
            deny_grants = [g for i, r in enumerate(denies)
                           if (g := self._grant(r, direction, (*path, direction + "Deny", i)))
                           is not None]
            for index in subjects:
                stance = self.owner.model.stance(direction, index)
                if default_deny:
                    stance.default_deny.append(origin)
                stance.allows.extend(grants)
                stance.denies.extend(deny_grants)

    def _grant(self, rule: Any, direction: Direction, path: PathKey) -> Grant | None:
        if not isinstance(rule, dict):
            self.problem(path, "expected a rule mapping")
            return None
        peers_key, cidr_key, cidrset_key = L3_KEYS[direction]
        for key in UNMODELLED_L3[direction]:
            if key in rule:
                self.problem((*path, key), f"'{key}' is not modelled by verify: the rule is "
                             "ignored (what it allows is not counted)")
                return None
        for key in sorted(set(rule) - {peers_key, cidr_key, cidrset_key, "toPorts"}
                          - NOTED_RULE_KEYS - set(UNMODELLED_L3[direction])):
            self.problem((*path, key), f"'{key}' is not modelled by verify: ignored")
        for key in sorted(NOTED_RULE_KEYS & set(rule)):
            self.problem((*path, key), f"'{key}' is outside verify's model (ICMP and "
                         "authentication are not evaluated)", severity="notice")
        # No L3 part: with toPorts (or ICMP) the rule allows those ports to and from every
        # peer; with nothing at all it allows nothing (Cilium's documented default-deny rule
        # ``- {}``).
        wildcard = not any(k in rule for k in (peers_key, cidr_key, cidrset_key)) and (
            "toPorts" in rule or "icmps" in rule)
        pods = self._peers(rule.get(peers_key), (*path, peers_key)) if peers_key in rule \
            else frozenset()
        blocks: list[Block] = []
        for j, text in enumerate(rule.get(cidr_key) or []):
            try:
                blocks.extend(cidr_blocks(str(text) if "/" in str(text) else
                                          f"{text}/{32 if ':' not in str(text) else 128}"))
            except ValueError:
                self.problem((*path, cidr_key, j), f"cannot read CIDR {text!r}")
        for j, item in enumerate(rule.get(cidrset_key) or []):
            if not isinstance(item, dict) or "cidr" not in item:
                self.problem((*path, cidrset_key, j), "expected {cidr, except}: the entry "
                             "is ignored (cidrGroupRef is not modelled)")
                continue
            try:
                blocks.extend(cidr_blocks(str(item["cidr"]),
                                          [str(x) for x in item.get("except") or ()]))
            except ValueError:
                self.problem((*path, cidrset_key, j), f"cannot read CIDR {item['cidr']!r}")
        ports = self._ports(rule.get("toPorts"), (*path, "toPorts")) if "toPorts" in rule \
            else ALL_PORTS
        return Grant(pods, tuple(blocks), ports, Origin(self.doc.location(path), self.label),
                     wildcard)

    def _peers(self, peers: Any, path: PathKey) -> frozenset[int]:
        if not isinstance(peers, list):
            self.problem(path, "expected a list of selectors")
            return frozenset()
        selected: set[int] = set()
        for j, data in enumerate(peers):
            selector, why = parse_selector(data)
            if selector is None:
                self.problem((*path, j), f"cannot read the selector: {why}")
                continue
            if not selector.has_key(CILIUM_CLUSTER_LABEL):
                self.problem((*path, j), f"expected the peer to name its cluster "
                             f"({CILIUM_CLUSTER_LABEL}), found none: without it the selector "
                             "means the local cluster from Cilium 1.19 "
                             "(policy-default-local-cluster) and every cluster before, so "
                             "verify counts it as allowing nothing")
                continue
            if not selector.has_key(POD_NAMESPACE_LABEL):
                if self.namespace is not None and not selector.has_key_prefix(
                        NAMESPACE_LABELS_PREFIX):
                    selector = selector.also(Term(POD_NAMESPACE_LABEL, "In", (self.namespace,)))
                elif self.namespace is None:
                    selector = selector.also(Term(POD_NAMESPACE_LABEL, "Exists"))
            selected.update(i for i, e in enumerate(self.owner.model.endpoints)
                            if e.is_pod and selector.matches(e.identity))
        return frozenset(selected)

    def _ports(self, data: Any, path: PathKey) -> PortSet:
        if not isinstance(data, list):
            self.problem(path, "expected a list of port rules")
            return NO_PORTS
        out = NO_PORTS
        for i, rule in enumerate(data):
            if not isinstance(rule, dict):
                self.problem((*path, i), "expected a port rule mapping")
                continue
            for key in sorted(NOTED_PORT_RULE_KEYS & set(rule)):
                self.problem((*path, i, key), f"'{key}' (L7) is evaluated at L4 only: the "
                             "port counts as allowed", severity="notice")
            for key in sorted(set(rule) - PORT_RULE_KEYS - NOTED_PORT_RULE_KEYS):
                self.problem((*path, i, key), f"'{key}' is not modelled by verify: ignored")
            entries = rule.get("ports")
            if not entries:
                out = ALL_PORTS
                continue
            for j, entry in enumerate(entries):
                out |= self._port(entry, (*path, i, "ports", j))
        return out

    def _port(self, entry: Any, path: PathKey) -> PortSet:
        if not isinstance(entry, dict):
            self.problem(path, "expected {port, protocol}")
            return NO_PORTS
        protocol = entry.get("protocol")
        if protocol is not None and protocol not in (*PROTOCOLS, "ANY"):
            self.problem((*path, "protocol"), f"protocol {protocol} is outside verify's model "
                         "(TCP, UDP, SCTP)", severity="notice")
            return NO_PORTS
        text = str(entry.get("port", "0"))
        try:
            number = int(text, 0)
        except ValueError:
            self.problem((*path, "port"), f"expected a port number, found the named port "
                         f"{text!r}: named ports depend on the pods' container ports, which "
                         "verify does not know (counted as allowing nothing)")
            return NO_PORTS
        end = entry.get("endPort")
        return ports_of(protocol, number, int(end) if isinstance(end, int) else None)


def actual_connectivity(
    inventory: Inventory, endpoints: Sequence[Endpoint], files: Mapping[str, bytes],
    display_root: str = DEFAULT_OUTPUT_DIR,
) -> tuple[Connectivity, tuple[Diagnostic, ...], int]:
    """The connectivity the rendered files allow; problems reading them; how many policies."""
    builder = _ActualBuilder(inventory, endpoints, files, display_root)
    model = builder.build()
    return model, tuple(builder.problems), builder.policies
