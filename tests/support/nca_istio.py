"""Cross-check helper for the identity layer: rendered AuthorizationPolicies, for nca.

network-config-analyzer reads Istio AuthorizationPolicies natively (ALLOW and DENY, TCP,
ingress only; no PeerAuthentication), but matches principals only in the form
``cluster.local/ns/<ns>/sa/<sa>`` against each pod's ``serviceAccountName``, so rendered
principals with real trust domains (``aks.example/ns/...``) match no pod there. The
translation puts every Istio member cluster into **one virtual cluster** and moves the
cluster into the namespace, where a principal can say it:

* every workload (service or raw-label client) of Istio member cluster number k is a Pod in
  namespace ``c<k>-<namespace>``, with its labels, a label of its own (so nca's reduction of
  look-alike pods keeps it) and ``serviceAccountName``: its service account, or
  ``meshplan-unknown`` when it has none (a name no rendered principal spells, matched only by
  patterns that match any, like verify's unknown service account);
* a policy of cluster k in namespace N goes into ``c<k>-N``; one in the root namespace
  (``istio-system``: mesh-wide in cluster k, where nca's own root is ``istio-config``) is
  copied into every namespace of cluster k;
* a principal ``<td>/ns/<ns>/sa/<sa>`` becomes ``cluster.local/ns/c<m>-<ns>/sa/<sa>`` for every
  member m whose trust domain is ``<td>`` (prefix patterns alike: ``<td>/ns/*`` becomes
  ``cluster.local/ns/c<m>-*``); ``cluster.local/...`` means cluster k's own trust domain, as to
  a sidecar; a trust domain no member has becomes a principal that matches no pod (never an
  empty list, which would constrain nothing); ``namespaces`` become ``c<m>-<ns>`` for every
  member m;
* ports, actions and selectors stay as they are.

So nca judges, for every pair of Istio workloads, what the AuthorizationPolicies admit over
mutual TLS: verify's :meth:`IdentityLayer.authorization`. PeerAuthentication (plaintext
clients) and CUSTOM policies are outside nca's model and tested on their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from meshplan.model import Inventory
from meshplan.verify.endpoints import Endpoint
from meshplan.verify.report import VerifyReport

from tests.support.netpol import (
    _LINE,
    MAX_PORT,
    Spans,
    Untranslatable,
    merge,
    parse_connection,
    run_nca,
)

ROOT = "istio-system"
UNKNOWN_SA = "meshplan-unknown"
NO_MATCH = "nomatch.invalid/ns/none/sa/none"
ENDPOINT_LABEL = "meshplan.test/endpoint"


class Members:
    """Istio member clusters, numbered in inventory order, with their trust domains."""

    def __init__(self, inventory: Inventory) -> None:
        self.number: dict[tuple[str, str], int] = {}
        self.trust_domain: dict[int, str] = {}
        for domain in inventory.domains:
            for cluster in domain.clusters:
                if inventory.is_istio_member(cluster) and cluster.istio is not None:
                    k = len(self.number)
                    self.number[(domain.name, cluster.name)] = k
                    self.trust_domain[k] = str(cluster.istio.trust_domain)

    def of(self, endpoint: Endpoint) -> int | None:
        if not endpoint.is_workload:
            return None
        return self.number.get((endpoint.domain, endpoint.cluster))


def namespace(k: int, name: str) -> str:
    return f"c{k}-{name}"


def virtual_cluster(members: Members, endpoints: Sequence[Endpoint]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    namespaces = sorted({namespace(k, e.namespace) for e in endpoints
                         if (k := members.of(e)) is not None})
    out += [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            for ns in namespaces]
    for i, e in enumerate(endpoints):
        k = members.of(e)
        if k is None:
            continue
        out.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"e{i}", "namespace": namespace(k, e.namespace),
                         "labels": {**dict(e.labels), ENDPOINT_LABEL: f"e{i}"}},
            "spec": {"serviceAccountName": e.service_account or UNKNOWN_SA,
                     "containers": [{"name": "app", "image": "example.invalid/app"}]},
        })
    return out


def _principal(pattern: str, k: int, members: Members) -> list[str]:
    if pattern == "*":
        return [pattern]
    td, slash, rest = pattern.partition("/")
    if not slash:
        if pattern.endswith("*") and not pattern[:-1].count("/"):
            td, rest = pattern[:-1], "*"  # ``<td>*``
        else:
            raise Untranslatable(f"principal {pattern!r}")
    if "*" in td:
        raise Untranslatable(f"principal {pattern!r}")
    if td == "cluster.local":
        td = members.trust_domain[k]
    out = []
    for m, domain in sorted(members.trust_domain.items()):
        if domain != td:
            continue
        if rest in ("*", "ns/*"):
            out.append(f"cluster.local/ns/c{m}-*")
        elif rest.startswith("ns/"):
            out.append(f"cluster.local/ns/c{m}-{rest[3:]}")
        else:
            raise Untranslatable(f"principal {pattern!r}")
    return out or [NO_MATCH]


def _namespaces(patterns: Sequence[str], members: Members) -> list[str]:
    if "*" in patterns:
        return ["*"]
    return [f"c{m}-{p}" for p in patterns for m in sorted(members.trust_domain)]


def _source(source: Mapping[str, Any], k: int, members: Members) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, values in source.items():
        if key in ("principals", "notPrincipals"):
            out[key] = [t for p in values for t in _principal(str(p), k, members)]
        elif key in ("namespaces", "notNamespaces"):
            out[key] = _namespaces([str(v) for v in values], members)
        else:
            raise Untranslatable(f"source field {key}")
    return out


def translate_policy(doc: Mapping[str, Any], k: int, members: Members,
                     namespaces: Sequence[str]) -> list[dict[str, Any]]:
    spec = dict(doc.get("spec") or {})
    if spec.get("action") in ("CUSTOM", "AUDIT") or "targetRefs" in spec:
        raise Untranslatable(f"action {spec.get('action')}")
    rules = []
    for rule in spec.get("rules") or []:
        rule = dict(rule)
        if rule.get("from"):
            rule["from"] = [{"source": _source(entry.get("source") or {}, k, members)}
                            for entry in rule["from"]]
        rules.append(rule)
    if "rules" in spec:
        spec["rules"] = rules
    name, where = doc["metadata"]["name"], doc["metadata"]["namespace"]
    targets = ([ns for ns in namespaces if ns.startswith(f"c{k}-")] if where == ROOT
               else [namespace(k, where)])
    return [{"apiVersion": doc["apiVersion"], "kind": "AuthorizationPolicy",
             "metadata": {"name": f"{name}-{n}", "namespace": ns}, "spec": spec}
            for n, ns in enumerate(targets)]


def translate(inventory: Inventory, files: Mapping[str, bytes], members: Members,
              endpoints: Sequence[Endpoint]) -> list[dict[str, Any]]:
    """Every rendered AuthorizationPolicy of an Istio member, translated."""
    namespaces = sorted({namespace(k, e.namespace) for e in endpoints
                         if (k := members.of(e)) is not None})
    out: list[dict[str, Any]] = []
    for path, content in sorted(files.items()):
        parts = path.split("/")
        if len(parts) != 4 or parts[0] != "clusters" or not path.endswith(".yaml"):
            continue
        k = members.number.get((parts[1], parts[2]))
        if k is None:
            continue
        for doc in yaml.safe_load_all(content):
            if isinstance(doc, dict) and doc.get("kind") == "AuthorizationPolicy":
                out += translate_policy(doc, k, members, namespaces)
    return out


def nca_pairs(output: str, endpoints: Sequence[Endpoint], members: Members
              ) -> dict[tuple[int, int], Spans]:
    names = {f"{namespace(k, e.namespace)}/e{i}": i for i, e in enumerate(endpoints)
             if (k := members.of(e)) is not None}
    pairs: dict[tuple[int, int], Spans] = {}
    section = ""  # with an Istio layer nca reports TCP and non-TCP connections apart
    for line in output.splitlines():
        if line.strip().endswith("Connections:"):
            section = line.strip()
            continue
        match = _LINE.match(line.strip())
        if not match:
            continue
        src = names.get(match["src"].removesuffix("[Pod]"))
        dst = names.get(match["dst"].removesuffix("[Pod]"))
        if src is None or dst is None:
            continue  # addresses outside the cluster: not workloads
        spans = _section_spans(section, match["conn"])
        pairs[(src, dst)] = merge((*pairs.get((src, dst), ()), *spans))
    return pairs


def _section_spans(section: str, text: str) -> Spans:
    """A connection's ports in nca's TCP or non-TCP section (or its one combined list)."""
    if section.startswith("TCP"):
        if text.strip() == "All connections":
            return (("TCP", 1, MAX_PORT),)
        return parse_connection(text.replace("{dst_ports:", "{protocols:TCP,dst_ports:"))
    spans = parse_connection(text)
    return tuple(s for s in spans if s[0] != "TCP") if section.startswith("non-TCP") else spans


def istio_disagreements(inventory: Inventory, files: Mapping[str, bytes],
                        report: VerifyReport, workdir: Path,
                        members: Members | None = None) -> tuple[list[str], int]:
    """How verify's authorization verdicts and nca's differ over every pair of Istio
    workloads (``[]``: not at all), and how many pairs were compared. ``members``: the
    translation's clusters and trust domains (default: the inventory's)."""
    assert report.layers is not None
    identity = report.layers.identity
    members = members or Members(inventory)
    workloads = [i for i, e in enumerate(report.endpoints) if members.of(e) is not None]
    if not workloads:
        return [], 0  # no Istio member: nothing for nca to judge
    resources = virtual_cluster(members, report.endpoints) + translate(
        inventory, files, members, report.endpoints)
    run = run_nca(resources, workdir)
    theirs = nca_pairs(run.output, report.endpoints, members)
    problems = []
    compared = 0
    for i in workloads:
        for j in workloads:
            if i == j:
                continue
            compared += 1
            ours = identity.authorization(i, j).spans
            if ours != theirs.get((i, j), ()):
                problems.append(f"{report.endpoints[i].title} -> {report.endpoints[j].title}: "
                                f"verify {ours}, nca {theirs.get((i, j))}")
    return problems, compared
