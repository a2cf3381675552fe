"""Cross-check helper: rendered Cilium policies as Kubernetes NetworkPolicies, for NCA.

IBM's network-config-analyzer (``nca``, PyPI ``network-config-analyzer``) computes the
connectivity of Kubernetes NetworkPolicies but does not read CiliumNetworkPolicies. This module
rewrites the rendered Cilium policies into equivalent NetworkPolicies over **one merged virtual
cluster**, runs ``nca --connectivity`` on it, and reads its per-pair answer back, so the test can
compare it with :mod:`meshplan.verify`. Nothing here evaluates a policy: the translation is
syntactic, the semantics are nca's.

The virtual cluster:

* every pod endpoint of the inventory is one Pod, named ``e<index>-<mesh name>`` (unique across
  clusters), in its namespace, labelled with its pod labels plus
  ``io.cilium.k8s.policy.cluster: <mesh name>`` (the label Cilium adds to every identity);
* every namespace carries ``kubernetes.io/metadata.name`` (as Kubernetes does).

The translation of one Cilium rule (``spec`` or an entry of ``specs``) of cluster C:

* ``endpointSelector`` -> ``podSelector`` (source prefixes ``k8s:``/``any:`` dropped) plus
  ``io.cilium.k8s.policy.cluster In [C]``: a Cilium policy only selects its own cluster's pods.
  A CiliumNetworkPolicy becomes a NetworkPolicy in its namespace (Cilium replaces a namespace in
  its endpointSelector by the policy's); a CiliumClusterwideNetworkPolicy becomes one per
  namespace it can select;
* a direction goes into ``policyTypes`` only when the rule has rules for it: Cilium enforces a
  direction for a rule that has ``ingress``/``egress`` rules, and ``enableDefaultDeny: true`` alone
  changes nothing (``computePolicyEnforcementAndRules``; ``RulesToPolicyEntries`` in newer
  releases). ``enableDefaultDeny: false`` with rules has no NetworkPolicy equivalent and is
  refused, as are deny rules;
* ``toEndpoints``/``fromEndpoints`` selector -> peer: ``k8s:io.kubernetes.pod.namespace`` (any
  prefix) -> ``namespaceSelector`` on ``kubernetes.io/metadata.name``; without a namespace the
  peer is the policy's namespace (CNP: no namespaceSelector, the NetworkPolicy meaning) or every
  namespace (CCNP: ``namespaceSelector: {}``); every other key (the cluster label included)
  stays a pod label;
* ``toCIDRSet``/``fromCIDRSet``/``toCIDR`` -> ``ipBlock``; a rule with ``toPorts`` but no L3
  part -> no ``to``/``from`` (every peer); an empty rule ``{}`` (Cilium: allows nothing, the
  documented default-deny rule) -> left out, the direction staying in ``policyTypes``;
* ``toPorts`` -> ``ports``; protocol ANY (or none) -> TCP, UDP and SCTP; port 0 -> no port.

Cilium's reading, made explicit where NetworkPolicies read otherwise:

* a peer without a cluster label gets ``io.cilium.k8s.policy.cluster In [C]`` (Cilium 1.19's
  ``policy-default-local-cluster``);
* ``io.cilium.k8s.namespace.labels.<key>`` -> a ``namespaceSelector`` on ``<key>`` (such a
  peer is not pinned to the policy's namespace); the Namespaces carry only their name label;
* a key whose source is not ``k8s``/``any`` (``reserved:``, a typo) addresses no pod label:
  it becomes a key of the reserved domain ``unknown-source.invalid``, which no pod carries;
* every NetworkPolicy of one Cilium object goes into one file (:func:`run_nca`): when nca
  refuses a file for its label selectors (nca checks Kubernetes' rules itself), the object is
  left out, as the Cilium agent leaves out a policy it rejects. nca is the judge of those
  rules here, not meshplan.

Not expressible for nca, so not cross-checked: Cilium's own rejections beyond Kubernetes'
selector rules (L3 kinds mixed in one rule, more than 40 ports in a ``toPorts`` entry, the 1.19
key length counted with the source), deny rules, ``enableDefaultDeny: false`` with rules, a
namespaced policy without a namespace (it lands where the applier puts it), and Services:
nca has no cross-cluster load-balancing (verify's warnings about it are tested on their own).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import itertools
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from meshplan.model import Inventory
from meshplan.verify.endpoints import Endpoint

CLUSTER_KEY = "io.cilium.k8s.policy.cluster"
NAMESPACE_KEY = "io.kubernetes.pod.namespace"
NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
MAX_PORT = 65535

Spans = tuple[tuple[str, int, int], ...]  # merged (protocol, first, last) port ranges
ALL: Spans = tuple((p, 1, MAX_PORT) for p in PROTOCOLS)


class Untranslatable(Exception):
    """A Cilium construct that has no NetworkPolicy equivalent."""


NS_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
NO_POD_LABEL = "unknown-source.invalid/"  # a reserved domain: no pod carries its labels


def _strip(key: str) -> str:
    source, sep, rest = key.partition(":")
    if not sep:
        return key
    if source not in ("k8s", "any"):
        name = re.sub(r"[^A-Za-z0-9_.-]", ".", f"{source}.{rest}")[:63].strip("._-")
        return NO_POD_LABEL + (name or "x")
    return rest


def pod_name(index: int, endpoint: Endpoint) -> str:
    return f"e{index}-{endpoint.mesh}"


def virtual_cluster(endpoints: Sequence[Endpoint]) -> list[dict[str, Any]]:
    """Namespaces and Pods of the merged cluster."""
    namespaces = sorted({e.namespace for e in endpoints if e.is_pod})
    out: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": ns, "labels": {NAME_LABEL: ns}}} for ns in namespaces]
    for i, e in enumerate(endpoints):
        if not e.is_pod:
            continue
        out.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name(i, e), "namespace": e.namespace,
                         "labels": {**dict(e.labels), CLUSTER_KEY: e.mesh}},
            "spec": {"containers": [{"name": "app", "image": "example.invalid/app"}]},
        })
    return out


# --------------------------------------------------------------------------- translation


def _namespace_key(bare: str) -> str | None:
    """The Namespace label a selector key stands for, if it is about the namespace."""
    if bare == NAMESPACE_KEY:
        return NAME_LABEL
    if bare.startswith(NS_LABELS_PREFIX):
        return bare.removeprefix(NS_LABELS_PREFIX)
    return None


def _split_selector(
        selector: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], bool, bool]:
    """(namespaceSelector, podSelector, names a namespace, names a cluster) of a selector."""
    ns: dict[str, Any] = {}
    pod: dict[str, Any] = {}
    named = clustered = False
    for key, value in (selector.get("matchLabels") or {}).items():
        bare = _strip(str(key))
        clustered |= bare == CLUSTER_KEY
        ns_key = _namespace_key(bare)
        if ns_key is not None:
            named = True
            ns.setdefault("matchExpressions", []).append(
                {"key": ns_key, "operator": "In", "values": [str(value)]})
        else:
            pod.setdefault("matchLabels", {})[bare] = str(value)
    for expr in selector.get("matchExpressions") or []:
        bare = _strip(str(expr["key"]))
        clustered |= bare == CLUSTER_KEY
        ns_key = _namespace_key(bare)
        item = {"key": ns_key or bare, "operator": expr["operator"],
                **({"values": [str(v) for v in expr["values"]]} if "values" in expr else {})}
        if ns_key is not None:
            named = True
            ns.setdefault("matchExpressions", []).append(item)
        else:
            pod.setdefault("matchExpressions", []).append(item)
    return ns, pod, named, clustered


def _peer(selector: Mapping[str, Any], clusterwide: bool, mesh: str) -> dict[str, Any]:
    ns, pod, named, clustered = _split_selector(selector)
    if not clustered:  # Cilium 1.19: the local cluster
        pod.setdefault("matchExpressions", []).append(
            {"key": CLUSTER_KEY, "operator": "In", "values": [mesh]})
    peer: dict[str, Any] = {"podSelector": pod}
    if named:
        peer["namespaceSelector"] = ns
    elif clusterwide:
        peer["namespaceSelector"] = {}
    return peer


def _ports(to_ports: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rule in to_ports:
        if rule.get("rules"):
            raise Untranslatable("L7 rules")
        for entry in rule.get("ports") or [{}]:
            protocol = entry.get("protocol")
            protocols = PROTOCOLS if protocol in (None, "ANY") else (protocol,)
            port = int(str(entry.get("port", "0")), 0)
            for proto in protocols:
                item: dict[str, Any] = {"protocol": proto}
                if port:
                    item["port"] = port
                    if entry.get("endPort"):
                        item["endPort"] = int(entry["endPort"])
                out.append(item)
    return out


def _rule(rule: Mapping[str, Any], direction: str, clusterwide: bool,
          mesh: str) -> dict[str, Any]:
    peers_key, cidr_key, cidrset_key = (
        ("toEndpoints", "toCIDR", "toCIDRSet") if direction == "egress"
        else ("fromEndpoints", "fromCIDR", "fromCIDRSet"))
    known = {peers_key, cidr_key, cidrset_key, "toPorts"}
    if set(rule) - known:
        raise Untranslatable(f"rule keys {sorted(set(rule) - known)}")
    out: dict[str, Any] = {}
    if any(k in rule for k in (peers_key, cidr_key, cidrset_key)):
        peers = [_peer(s, clusterwide, mesh) for s in rule.get(peers_key) or []]
        peers += [{"ipBlock": {"cidr": str(c) if "/" in str(c) else f"{c}/32"}}
                  for c in rule.get(cidr_key) or []]
        peers += [{"ipBlock": {"cidr": c["cidr"], **({"except": list(c["except"])}
                                                    if c.get("except") else {})}}
                  for c in rule.get(cidrset_key) or []]
        out["to" if direction == "egress" else "from"] = peers
    if "toPorts" in rule:
        out["ports"] = _ports(rule["toPorts"])
    return out


def _subject(selector: Mapping[str, Any], namespace: str | None,
             namespaces: Sequence[str], mesh: str) -> list[tuple[str, dict[str, Any]]]:
    """(namespace, podSelector) pairs a Cilium endpointSelector stands for."""
    labels = dict(selector.get("matchLabels") or {})
    if namespace is not None:  # Cilium overwrites this key with the policy's namespace
        labels.pop("k8s:" + NAMESPACE_KEY, None)
    ns_sel, pod, _, _ = _split_selector({"matchLabels": labels,
                                         "matchExpressions": selector.get("matchExpressions")})
    pod.setdefault("matchExpressions", []).append(
        {"key": CLUSTER_KEY, "operator": "In", "values": [mesh]})
    allowed = []
    for ns in ([namespace] if namespace is not None else namespaces):
        if all(_ns_term(term, ns) for term in ns_sel.get("matchExpressions") or []):
            allowed.append(ns)
    return [(ns, pod) for ns in allowed]


def _ns_term(term: Mapping[str, Any], ns: str) -> bool:
    """Whether namespace ``ns`` (labelled only with its name) satisfies one term."""
    value = ns if term["key"] == NAME_LABEL else None
    operator, values = str(term["operator"]), [str(v) for v in term.get("values") or []]
    if operator == "In":
        return value in values
    if operator == "NotIn":
        return value not in values
    return (value is not None) == (operator == "Exists")


def translate_policy(doc: Mapping[str, Any], mesh: str,
                     namespaces: Sequence[str]) -> list[dict[str, Any]]:
    """The NetworkPolicies equivalent to one rendered Cilium policy of cluster ``mesh``."""
    clusterwide = doc["kind"] == "CiliumClusterwideNetworkPolicy"
    namespace = None if clusterwide else doc["metadata"]["namespace"]
    kind_name = f"{doc['kind']}.{namespace or ''}.{doc['metadata']['name']}"
    specs = ([doc["spec"]] if "spec" in doc else []) + list(doc.get("specs") or [])
    out = []
    for n, spec in enumerate(specs):
        unknown = set(spec) - {"endpointSelector", "egress", "ingress", "enableDefaultDeny",
                               "description", "labels"}
        if unknown:
            raise Untranslatable(f"spec keys {sorted(unknown)}")
        types, body = [], {}
        defaults = spec.get("enableDefaultDeny") or {}
        for direction, kind in (("ingress", "Ingress"), ("egress", "Egress")):
            rules = spec.get(direction) or []
            if not rules:
                continue  # no rules: Cilium does not enforce this direction
            if defaults.get(direction) is False:
                raise Untranslatable(f"enableDefaultDeny.{direction}: false with rules")
            types.append(kind)
            # An empty Cilium rule ({}) allows nothing (the documented default-deny rule); an
            # empty NetworkPolicy rule would allow everything, so it is left out.
            body[direction] = [_rule(r, direction, clusterwide, mesh) for r in rules if r]
        if not types:
            continue
        for ns, pod in _subject(spec["endpointSelector"], namespace, namespaces, mesh):
            out.append({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": f"{doc['metadata']['name']}-{mesh}-{n}", "namespace": ns,
                             "annotations": {OBJECT_ANNOTATION: f"{mesh}/{kind_name}"}},
                "spec": {"podSelector": pod, "policyTypes": types, **body},
            })
    return out


def translate(inventory: Inventory, files: Mapping[str, bytes],
              endpoints: Sequence[Endpoint]) -> list[dict[str, Any]]:
    """Every rendered Cilium policy (``clusters/<domain>/<cluster>/*.yaml``) translated."""
    meshes = {(d.name, c.name): c.mesh_name for d in inventory.domains for c in d.clusters}
    namespaces = sorted({e.namespace for e in endpoints if e.is_pod})
    out: list[dict[str, Any]] = []
    for path, content in sorted(files.items()):
        parts = path.split("/")
        if len(parts) != 4 or parts[0] != "clusters" or not path.endswith(".yaml"):
            continue
        if parts[3] == "kustomization.yaml":
            continue
        mesh = meshes[(parts[1], parts[2])]
        for doc in yaml.safe_load_all(content):
            if isinstance(doc, dict) and doc.get("kind") in (
                    "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"):
                out += translate_policy(doc, mesh, namespaces)
    return out


# --------------------------------------------------------------------------- nca


def nca_command() -> list[str] | None:
    """How to run nca: env ``MESHPLAN_NCA`` (its executable, e.g. from a venv of its own, as
    its exact dependency pins may not suit the project's), else this interpreter's ``nca``
    package; None when neither is there."""
    explicit = os.environ.get("MESHPLAN_NCA")
    if explicit:
        return [explicit]
    if importlib.util.find_spec("nca") is not None:
        return [sys.executable, "-m", "nca"]
    return None


OBJECT_ANNOTATION = "meshplan.test/cilium-object"  # which Cilium object a policy comes from
# nca's words for a label selector Kubernetes refuses (Parsers/K8sPolicyYamlParser.py)
_SELECTOR_ERROR = re.compile(
    r"Error: (A requirement with |invalid key|Invalid key|invalid value|invalid DNS subdomain)"
    r".*\((?P<file>object-\d+\.yaml), line \d+\)")


class NcaRun(NamedTuple):
    output: str  # nca's per-pair text
    rejected: tuple[str, ...]  # Cilium objects nca refused for their label selectors


def run_nca(resources: Sequence[Mapping[str, Any]], workdir: Path) -> NcaRun:
    """``nca --connectivity`` over ``resources``, the policies of each Cilium object in a file
    of their own; an object whose selectors nca refuses is left out (and named)."""
    command = nca_command()
    if command is None:
        raise RuntimeError("network-config-analyzer is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    objects: dict[str, list[Mapping[str, Any]]] = {}
    others: list[Mapping[str, Any]] = []
    for item in resources:
        owner = ((item.get("metadata") or {}).get("annotations") or {}).get(OBJECT_ANNOTATION)
        (objects.setdefault(owner, []) if owner else others).append(item)
    (workdir / "cluster.yaml").write_text(yaml.safe_dump_all(others), "utf-8")
    files = {f"object-{n}.yaml": owner for n, owner in enumerate(sorted(objects))}
    for name, owner in files.items():
        (workdir / name).write_text(yaml.safe_dump_all(objects[owner]), "utf-8")
    rejected: list[str] = []
    while True:
        proc = subprocess.run(
            [*command, "--connectivity", "--resource_list", str(workdir),
             "--output_format", "txt_no_fw_rules", "--output_endpoints", "pods"],
            capture_output=True, text=True, timeout=300, check=False)
        refused = _SELECTOR_ERROR.search(proc.stdout + proc.stderr)
        if refused is not None and (workdir / refused["file"]).exists():
            (workdir / refused["file"]).unlink()
            rejected.append(files[refused["file"]])
            continue
        if "Error" in proc.stderr or proc.returncode not in (0, 1):
            raise RuntimeError(f"nca failed ({proc.returncode}): {proc.stderr}\n{proc.stdout}")
        return NcaRun(proc.stdout, tuple(sorted(rejected)))


def merge(items: Iterable[tuple[str, int, int]]) -> Spans:
    by: dict[str, list[tuple[int, int]]] = {}
    for proto, lo, hi in items:
        by.setdefault(proto, []).append((lo, hi))
    out: list[tuple[str, int, int]] = []
    for proto in PROTOCOLS:
        merged: list[list[int]] = []
        for lo, hi in sorted(by.get(proto, [])):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        out += [(proto, lo, hi) for lo, hi in merged]
    return tuple(out)


_GROUP = re.compile(r"\{([^{}]*)\}")


def parse_connection(text: str) -> Spans:
    """nca's connection text -> port spans (ICMP and other protocols are not modelled)."""
    text = text.strip()
    if text == "All connections":
        return ALL
    if text.startswith("All but") or not text.startswith("{"):
        raise ValueError(f"unexpected nca connection text {text!r}")
    items: list[tuple[str, int, int]] = []
    for group in _GROUP.findall(text):
        head, _, ports_text = group.partition("dst_ports:")
        protocols = [p.strip() for p in head.replace("protocols:", "").split(",") if p.strip()]
        for proto in (p.strip() for p in protocols):
            if proto not in PROTOCOLS:
                continue
            if not ports_text:
                items.append((proto, 1, MAX_PORT))
                continue
            for span in ports_text.strip(",").split(","):
                lo, _, hi = span.partition("-")
                items.append((proto, int(lo), int(hi or lo)))
    return merge(items)


_LINE = re.compile(r"^(?P<src>\S+) => (?P<dst>\S+) : (?P<conn>.*)$")


def _address_ranges(text: str) -> list[tuple[int, int, int]] | None:
    """``a-b[,c-d...]`` or ``cidr`` as (version, first, last) ranges; None if not addresses."""
    out: list[tuple[int, int, int]] = []
    for part in text.split(","):
        try:
            if "/" in part:
                net = ipaddress.ip_network(part, strict=False)
                out.append((net.version, int(net.network_address), int(net.broadcast_address)))
                continue
            lo, _, hi = part.partition("-")
            a, b = ipaddress.ip_address(lo), ipaddress.ip_address(hi or lo)
        except ValueError:
            return None
        out.append((a.version, int(a), int(b)))
    return out


Lines = list[tuple[list[tuple[int, int, int]], Spans]]


def nca_flows(output: str, endpoints: Sequence[Endpoint]) -> dict[tuple[int, int], Spans]:
    """nca's per-pair output as {(source index, destination index): port spans}.

    Pod-to-pod lines are taken as they are; a pod's lines to (or from) address ranges are
    turned into what every address of each CIDR endpoint gets (all of it, or the ports common
    to all its addresses), which is what verify computes for a CIDR endpoint.
    """
    pods = {f"{e.namespace}/{pod_name(i, e)}": i for i, e in enumerate(endpoints) if e.is_pod}
    pairs: dict[tuple[int, int], Spans] = {}
    to_blocks: dict[int, Lines] = {}
    from_blocks: dict[int, Lines] = {}
    for line in output.splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        spans = parse_connection(match["conn"])
        src_name = match["src"].removesuffix("[Pod]")
        dst_name = match["dst"].removesuffix("[Pod]")
        src, dst = pods.get(src_name), pods.get(dst_name)
        if src is not None and dst is not None:
            pairs[(src, dst)] = merge((*pairs.get((src, dst), ()), *spans))
            continue
        if src is not None and (ranges := _address_ranges(dst_name)) is not None:
            to_blocks.setdefault(src, []).append((ranges, spans))
            continue
        if dst is not None and (ranges := _address_ranges(src_name)) is not None:
            from_blocks.setdefault(dst, []).append((ranges, spans))
            continue
        raise ValueError(f"nca reported an endpoint that is not ours: {line!r}")
    for j, e in enumerate(endpoints):
        if e.is_pod:
            continue
        for i in pods.values():
            out = block_intersection(to_blocks.get(i, []), e.block)
            if out:
                pairs[(i, j)] = out
            back = block_intersection(from_blocks.get(i, []), e.block)
            if back:
                pairs[(j, i)] = back
    return pairs


def intersect(a: Spans, b: Spans) -> Spans:
    out = []
    for p, lo, hi in a:
        for q, lo2, hi2 in b:
            if p == q and max(lo, lo2) <= min(hi, hi2):
                out.append((p, max(lo, lo2), min(hi, hi2)))
    return merge(out)


def block_intersection(lines: Lines,
                       block: tuple[int, int, int]) -> Spans:
    """The ports every address of ``block`` is allowed, from nca's (ranges, spans) lines."""
    version, lo, hi = block
    cuts = {lo, hi + 1}
    for ranges, _ in lines:
        for v, a, b in ranges:
            if v == version and a <= hi and b >= lo:
                cuts.update((max(a, lo), min(b, hi) + 1))
    points = sorted(cuts)
    result: Spans | None = None
    for start, end in itertools.pairwise(points):
        here = merge(s for ranges, spans in lines
                     if any(v == version and a <= start and end - 1 <= b for v, a, b in ranges)
                     for s in spans)
        result = here if result is None else intersect(result, here)
        if not result:
            return ()
    return result or ()
