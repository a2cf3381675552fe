"""``meshplan validate`` on invalid inputs: the exact ``file:line:col`` and the key words.

Each case starts from :data:`EXAMPLE` (a frozen copy of the bundled example, so the positions
below, worked out by hand from it, do not move when the live example is edited) or from a thesis
fixture, applies one small edit, runs ``meshplan validate`` in-process and asserts exit code 1,
a diagnostic starting with the expected ``file:line:col: `` and the key words of its message.
The baseline test proves :data:`EXAMPLE` itself is valid, so every error comes from the edit.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import run_validate
from tests.support.repos import REPO_ROOT, THESIS_DIR, copy_example, copy_tree

Edit = Callable[[Path], None]

D1 = "inventory/domain1.yaml"
D2 = "inventory/domain2.yaml"
RB = "requirements/domain1/backend.yaml"
RA = "requirements/domain2/allow-domain1.yaml"
RF = "requirements/domain2/frontend.yaml"
J1 = "inventory/domain1.json"  # of the thesis fixture use-case-1
TA = "requirements/domain2/allow-domain1.yaml"  # of the thesis fixture use-case-1

# The bundled example (inventory/, requirements/) as the positions below were computed from.
EXAMPLE: dict[str, str] = {
    "inventory/domain1.yaml": """\
# yaml-language-server: $schema=../generator/meshplan/schemas/domain.schema.json
# Domain 1 of the bundled example: the thesis' use case 1 (service1, service2) and the
# chapter 5.3 refinement example (backend, database). Its services are exported to domain2,
# whose requirements reach them.
apiVersion: meshplan.dev/v1alpha1
kind: Domain
metadata:
  name: domain1
spec:
  clusters:
    - name: cl1
      meshName: cluster1
      meshId: 1
      podCIDRs: [10.1.0.0/16]
    - name: cl2
      meshName: cluster2
      meshId: 2
      podCIDRs: [10.2.0.0/16]
  services:
    - name: service1
      namespace: ns1
      selector: {name: service1}
      ports: [{port: 80, protocol: TCP, name: http}]
      clusters: [cl1]
      exportTo: [domain2]
    - name: service2
      namespace: ns2
      selector: {name: service2}
      ports: [{port: 80, protocol: TCP, name: http}]
      clusters: [cl2]
      exportTo: [domain2]
    - name: backend
      namespace: backend-namespace
      selector: {app: backend}
      ports: [{port: 80, protocol: TCP, name: http}]
      clusters: [cl1, cl2]
      exportTo: [domain2]
    - name: database
      namespace: database-namespace
      selector: {name: database}
      ports: [{port: 5432, protocol: TCP, name: postgres}]
      clusters: [cl2]
      exportTo: [domain2]
""",
    "inventory/domain2.yaml": """\
# yaml-language-server: $schema=../generator/meshplan/schemas/domain.schema.json
# Domain 2 of the bundled example: service3, service4 (use case 1), rebel-base and frontend
# (chapter 5.3). Only frontend is exported (to domain1); the rest is private to domain2.
apiVersion: meshplan.dev/v1alpha1
kind: Domain
metadata:
  name: domain2
spec:
  clusters:
    - name: cl3
      meshName: cluster3
      meshId: 3
      podCIDRs: [10.3.0.0/16]
    - name: cl4
      meshName: cluster4
      meshId: 4
      podCIDRs: [10.4.0.0/16]
  services:
    - name: service3
      namespace: ns1
      selector: {name: service3}
      ports: [{port: 80, protocol: TCP, name: http}]
      clusters: [cl3]
    - name: service4
      namespace: ns2
      selector: {name: service4}
      ports: [{port: 80, protocol: TCP, name: http}]
      clusters: [cl4]
    - name: rebel-base
      namespace: default
      selector: {name: rebel-base}
      ports: [{port: 80, protocol: TCP, name: http}]
      clusters: [cl3]
    - name: frontend
      namespace: frontend-namespace
      selector: {app: frontend}
      ports: [{port: 8080, protocol: TCP, name: http}]
      clusters: [cl4]
      exportTo: [domain1]   # domain1's backend admits frontend at ingress
""",
    "requirements/domain1/backend.yaml": """\
# yaml-language-server: $schema=../../generator/meshplan/schemas/requirement.schema.json
# backend (both clusters of domain1) may call the database wherever it runs, and accepts
# calls from domain2's frontend only.
apiVersion: meshplan.dev/v1alpha1
kind: Requirement
metadata:
  name: backend
spec:
  endpointSelector:
    matchLabels: {service: backend}
  egress:
    - toEndpoints:
        - matchLabels: {service: database}
  ingress:
    - fromEndpoints:
        - matchLabels: {service: frontend, domain: domain2}
""",
    "requirements/domain2/allow-domain1.yaml": """\
# yaml-language-server: $schema=../../generator/meshplan/schemas/requirement.schema.json
# Use case 1 (thesis, chapter 6.1): the client pods in cl3's default namespace may call every
# service domain1 exported to domain2, by its short name (e.g. `curl service2`).
apiVersion: meshplan.dev/v1alpha1
kind: Requirement
metadata:
  name: allow-domain1
  namespace: default
spec:
  clusters: [cl3]
  endpointSelector:
    matchLabels: {name: client}
  egress:
    - toEndpoints:
        - matchLabels: {service: "*", cluster: "*", domain: domain1}
""",
    "requirements/domain2/frontend.yaml": """\
# yaml-language-server: $schema=../../generator/meshplan/schemas/requirement.schema.json
# The refinement example of the thesis (chapter 5.3, code box 5.5): frontend may call every
# service of domain1 and Google's 108.177.16.0/24; only domain1's services and the services
# of cl3 may call frontend.
apiVersion: meshplan.dev/v1alpha1
kind: Requirement
metadata:
  name: frontend
spec:
  endpointSelector:
    matchLabels: {service: frontend}
  egress:
    - toEndpoints:
        - matchLabels: {service: "*", cluster: "*", domain: domain1}
    - toCIDRSet:
        - cidr: 108.177.16.0/24
  ingress:
    - fromEndpoints:
        - matchLabels: {service: "*", cluster: "*", domain: domain1}
    - fromEndpoints:
        - matchLabels: {service: "*", cluster: cl3}
""",
}

DIAGNOSTIC_LINE = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+):(?P<column>\d+): ")


def write_example(dest: Path) -> Path:
    for rel, text in EXAMPLE.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text, encoding="utf-8")
    return dest


# --------------------------------------------------------------------------- edits


def sub(file: str, old: str, new: str) -> Edit:
    """Replace the one occurrence of ``old`` in ``file`` (fails if it is not exactly once)."""

    def edit(repo: Path) -> None:
        path = repo / file
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {file}"
        path.write_text(text.replace(old, new), encoding="utf-8")

    return edit


def sub_bytes(file: str, old: bytes, new: bytes) -> Edit:
    def edit(repo: Path) -> None:
        path = repo / file
        raw = path.read_bytes()
        assert raw.count(old) == 1, f"{old!r} occurs {raw.count(old)} times in {file}"
        path.write_bytes(raw.replace(old, new))

    return edit


def put(file: str, text: str) -> Edit:
    def edit(repo: Path) -> None:
        (repo / file).parent.mkdir(parents=True, exist_ok=True)
        (repo / file).write_text(text, encoding="utf-8")

    return edit


def copy(source: str, dest: str) -> Edit:
    def edit(repo: Path) -> None:
        (repo / dest).parent.mkdir(parents=True, exist_ok=True)
        (repo / dest).write_bytes((repo / source).read_bytes())

    return edit


def move(source: str, dest: str) -> Edit:
    def edit(repo: Path) -> None:
        (repo / dest).parent.mkdir(parents=True, exist_ok=True)
        (repo / source).rename(repo / dest)

    return edit


def symlink(file: str, target: str) -> Edit:
    def edit(repo: Path) -> None:
        (repo / file).symlink_to(target)

    return edit


def sparse(file: str, size: int) -> Edit:
    def edit(repo: Path) -> None:
        with (repo / file).open("wb") as handle:
            handle.truncate(size)

    return edit


def chain(*edits: Edit) -> Edit:
    def edit(repo: Path) -> None:
        for step in edits:
            step(repo)

    return edit


def alias_bomb(levels: int = 10) -> str:
    """Billion laughs: 9 ** levels strings from a few hundred bytes."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


SERVICE1_CLUSTERS = "      clusters: [cl1]\n      exportTo: [domain2]\n"
SERVICE1_PORTS = "      ports: [{port: 80, protocol: TCP, name: http}]\n      clusters: [cl1]\n"
DATABASE = """\
    - name: database
      namespace: database-namespace
      selector: {name: database}
      ports: [{port: 5432, protocol: TCP, name: postgres}]
      clusters: [cl2]
      exportTo: [domain2]
"""
BACKEND = """\
    - name: backend
      namespace: backend-namespace
      selector: {app: backend}
      ports: [{port: 80, protocol: TCP, name: http}]
      clusters: [cl1, cl2]
      exportTo: [domain2]
"""
FRONTEND_EXPORT = "      exportTo: [domain1]   # domain1's backend admits frontend at ingress\n"
CL5 = "      podCIDRs: [10.4.0.0/16]\n"


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    edit: Edit
    where: str  # file:line:col of the offending node, worked out by hand
    words: tuple[str, ...]  # key words of the message (and of the key path)
    base: str = ""  # "" = EXAMPLE, else a folder of tests/fixtures/thesis


def case(id_: str, edit: Edit, where: str, *words: str, base: str = "") -> Any:
    return pytest.param(Case(edit, where, words, base), id=id_)


CASES = [
    # ---- YAML syntax and structure (stage load)
    case("yaml-syntax-error", sub(D1, "  name: domain1\n", "  name: domain1: x\n"),
         f"{D1}:8:16", "expected valid YAML", "syntax error", "mapping values"),
    case("yaml-tab-indentation", sub(D1, "  name: domain1\n", "\tname: domain1\n"),
         f"{D1}:8:1", "syntax error", "a tab cannot indent YAML"),
    case("duplicate-key", sub(D1, "  name: domain1\n", "  name: domain1\n  name: other\n"),
         f"{D1}:9:3", "metadata.name", "expected each key once", "'name' again",
         "first at line 8"),
    case("yaml-merge-key", sub(D1, "metadata:\n  name: domain1\n",
                               "metadata:\n  <<: {name: domain1}\n"),
         f"{D1}:8:3", "metadata", "merge key '<<'"),
    case("python-object-tag", sub(D1, "  name: domain1\n",
                                  "  name: !!python/object:os.system domain1\n"),
         f"{D1}:8:9", "metadata.name", "expected a plain YAML value",
         "tag:yaml.org,2002:python/object:os.system"),
    case("python-tag-on-mapping",
         sub(D1, "metadata:\n", "metadata: !!python/object/apply:os.system\n"),
         f"{D1}:7:11", "metadata", "expected a plain YAML mapping",
         "python/object/apply:os.system"),
    case("document-not-a-mapping", put("inventory/list.yaml", "- name: domain3\n"),
         "inventory/list.yaml:1:1", "expected a mapping (a Domain document)", "found a list"),
    # ---- types, unknown and missing keys (stage schema)
    case("wrong-type-string-for-number", sub(D1, "meshId: 1\n", 'meshId: "one"\n'),
         f"{D1}:13:15", "spec.clusters[0].meshId", "from 1 to 255", "found 'one'"),
    case("wrong-type-mapping-for-list", sub(D1, SERVICE1_CLUSTERS,
                                            "      clusters: {cl1: yes}\n"
                                            "      exportTo: [domain2]\n"),
         f"{D1}:24:17", "spec.services[0].clusters", "a list of at least one cluster name",
         "found a mapping"),
    case("unknown-key-frmEndpoints", sub(RF, "    - fromEndpoints:\n        - matchLabels: "
                                             '{service: "*", cluster: "*"',
                                         "    - frmEndpoints:\n        - matchLabels: "
                                         '{service: "*", cluster: "*"'),
         f"{RF}:18:7", "spec.ingress[0].frmEndpoints", "unknown key 'frmEndpoints'",
         "did you mean 'fromEndpoints'?"),
    case("unknown-key-meshID", sub(D1, "meshId: 1\n", "meshID: 1\n"),
         f"{D1}:13:7", "spec.clusters[0].meshID", "unknown key 'meshID'",
         "did you mean 'meshId'?"),
    case("label-key-invalid", sub(RB, "{service: backend}", '{service: backend, "bad key": x}'),
         f"{RB}:10:37", "spec.endpointSelector.matchLabels.bad key", "Cilium selector key",
         "found key 'bad key'"),
    case("missing-required-key", sub(D1, "      namespace: ns1\n", ""),
         f"{D1}:20:7", "spec.services[0]", "expected the key 'namespace'", "missing"),
    case("unknown-kind", sub(D1, "kind: Domain\n", "kind: Domian\n"),
         f"{D1}:6:7", "kind", "expected kind Domain", "found 'Domian'"),
    case("unknown-kind-requirement", sub(RB, "kind: Requirement\n", "kind: Requirment\n"),
         f"{RB}:5:7", "kind", "expected Requirement", "found 'Requirment'"),
    case("domain-document-in-requirements", copy(D1, "requirements/domain1/domain.yaml"),
         "requirements/domain1/domain.yaml:6:7", "kind", "found kind Domain",
         "move it to inventory/"),
    case("requirement-in-inventory", copy(RB, "inventory/backend.yaml"),
         "inventory/backend.yaml:5:7", "kind", "found a requirement",
         "move it to requirements/<domain>/"),
    # ---- names
    case("dns-label-uppercase-domain", sub(D1, "  name: domain1\n", "  name: Domain1\n"),
         f"{D1}:8:9", "metadata.name", "DNS-1123 label", "found 'Domain1'"),
    case("dns-label-uppercase-cluster", sub(D1, "    - name: cl1\n", "    - name: Cl1\n"),
         f"{D1}:11:13", "spec.clusters[0].name", "DNS-1123 label", "found 'Cl1'"),
    case("dns-label-underscore-namespace", sub(D2, "      namespace: ns1\n",
                                               "      namespace: ns_1\n"),
         f"{D2}:20:18", "spec.services[0].namespace", "DNS-1123 label", "found 'ns_1'"),
    case("dns-label-too-long-service", sub(D1, "    - name: service2\n",
                                           "    - name: " + "s" * 64 + "\n"),
         f"{D1}:26:13", "spec.services[1].name", "at most 63", "found 'sssss"),
    case("meshName-too-long", sub(D1, "meshName: cluster1\n", "meshName: " + "c" * 33 + "\n"),
         f"{D1}:12:17", "spec.clusters[0].meshName", "at most 32", "c" * 33),
    case("meshName-bad-characters", sub(D1, "meshName: cluster1\n", "meshName: cluster_1\n"),
         f"{D1}:12:17", "spec.clusters[0].meshName", "Cilium cluster name",
         "found 'cluster_1'"),
    case("default-meshName-too-long",
         sub(D1, "      podCIDRs: [10.2.0.0/16]\n",
             "      podCIDRs: [10.2.0.0/16]\n    - name: averyveryverylongclustername\n"),
         f"{D1}:19:13", "meshName", "at most 32 characters",
         "the default 'domain1-averyveryverylongclustername' (36)", "set meshName explicitly"),
    # ---- uniqueness
    case("duplicate-domain-in-two-files", copy(D2, "inventory/zz-domain2.yaml"),
         "inventory/zz-domain2.yaml:7:9", "metadata.name", "each domain once",
         "'domain2' again", "first defined at inventory/domain2.yaml:7"),
    case("duplicate-cluster", sub(D1, "    - name: cl2\n", "    - name: cl1\n"),
         f"{D1}:15:13", "cluster names unique in domain 'domain1'", "'cl1' again",
         "first at inventory/domain1.yaml:11"),
    case("duplicate-service", sub(D1, "    - name: service2\n", "    - name: service1\n"),
         f"{D1}:26:13", "service names unique in domain 'domain1'", "'service1' again",
         "first at inventory/domain1.yaml:20"),
    case("duplicate-meshName-across-domains", sub(D2, "meshName: cluster3\n",
                                                  "meshName: cluster1\n"),
         f"{D2}:11:17", "meshName", "unique across the mesh", "'cluster1' again",
         "first at inventory/domain1.yaml:12"),
    case("duplicate-meshId-across-domains", sub(D2, "meshId: 3\n", "meshId: 1\n"),
         f"{D2}:12:15", "meshId", "ids unique across the mesh", "found 1 again",
         "first at inventory/domain1.yaml:13"),
    case("duplicate-requirement-name", copy(RF, "requirements/domain2/zz-frontend.yaml"),
         "requirements/domain2/zz-frontend.yaml:8:9", "metadata.name",
         "requirement names unique per namespace in domain 'domain2'", "'frontend' again",
         f"first at {RF}:8"),
    # ---- meshId, CIDRs, ports, protocols
    case("meshId-0", sub(D1, "meshId: 1\n", "meshId: 0\n"),
         f"{D1}:13:15", "spec.clusters[0].meshId", "from 1 to 255", "the number 0"),
    case("meshId-256", sub(D1, "meshId: 1\n", "meshId: 256\n"),
         f"{D1}:13:15", "spec.clusters[0].meshId", "from 1 to 255", "the number 256"),
    case("cidr-prefix-too-long", sub(D1, "[10.1.0.0/16]", "[10.1.0.0/33]"),
         f"{D1}:14:18", "podCIDRs", "expected a CIDR", "found '10.1.0.0/33'"),
    case("cidr-without-prefix", sub(D1, "[10.1.0.0/16]", "[10.1.0.0]"),
         f"{D1}:14:18", "podCIDRs", "with a prefix length", "found '10.1.0.0'"),
    case("cidr-host-bits-set", sub(D1, "[10.1.0.0/16]", "[10.1.0.1/16]"),
         f"{D1}:14:18", "podCIDRs", "host bits set", "did you mean 10.1.0.0/16?"),
    case("cidr-except-outside-cidr", sub(RF, "        - cidr: 108.177.16.0/24\n",
                                         "        - cidr: 108.177.16.0/24\n"
                                         "          except: [10.0.0.0/8]\n"),
         f"{RF}:17:20", "except", "expected a CIDR inside 108.177.16.0/24",
         "found '10.0.0.0/8'"),
    case("pod-cidrs-overlap", sub(D2, "[10.3.0.0/16]", "[10.0.0.0/8]"),
         f"{D2}:13:18", "podCIDRs", "do not overlap", "10.0.0.0/8 of domain2/cl3",
         "10.1.0.0/16 of domain1/cl1", "inventory/domain1.yaml:14"),
    case("service-port-0", sub(D1, SERVICE1_PORTS, SERVICE1_PORTS.replace("port: 80", "port: 0")),
         f"{D1}:23:22", "spec.services[0].ports[0].port", "from 1 to 65535", "the number 0"),
    case("service-port-70000", sub(D1, SERVICE1_PORTS,
                                   SERVICE1_PORTS.replace("port: 80", "port: 70000")),
         f"{D1}:23:22", "spec.services[0].ports[0].port", "from 1 to 65535",
         "the number 70000"),
    case("service-protocol-HTTP", sub(D1, SERVICE1_PORTS,
                                      SERVICE1_PORTS.replace("TCP", "HTTP")),
         f"{D1}:23:36", "spec.services[0].ports[0].protocol", "one of TCP, UDP, SCTP",
         "found 'HTTP'"),
    case("requirement-port-70000", sub(RB, "        - matchLabels: {service: database}\n",
                                       "        - matchLabels: {service: database}\n"
                                       "      toPorts:\n"
                                       '        - ports: [{port: "70000", protocol: TCP}]\n'),
         f"{RB}:15:26", "spec.egress[0].toPorts[0].ports[0].port", "from 1 to 65535",
         "found '70000'"),
    case("requirement-protocol-HTTP", sub(RB, "        - matchLabels: {service: database}\n",
                                          "        - matchLabels: {service: database}\n"
                                          "      toPorts:\n"
                                          "        - ports: [{port: 5432, protocol: HTTP}]\n"),
         f"{RB}:15:42", "spec.egress[0].toPorts[0].ports[0].protocol",
         "one of TCP, UDP, SCTP, ANY", "found 'HTTP'"),
    # ---- references (with "did you mean")
    case("service-cluster-typo", sub(D1, SERVICE1_CLUSTERS,
                                     SERVICE1_CLUSTERS.replace("[cl1]", "[cl-1]")),
         f"{D1}:24:18", "clusters", "expected a cluster of domain 'domain1'", "found 'cl-1'",
         "did you mean 'cl1'?"),
    case("exportTo-unknown-domain", sub(D1, SERVICE1_CLUSTERS,
                                        SERVICE1_CLUSTERS.replace("[domain2]", "[domian2]")),
         f"{D1}:25:18", "exportTo", "expected a domain name", "found 'domian2'",
         "did you mean 'domain2'?"),
    case("requirement-folder-unknown-domain", move(RB, "requirements/domain-1/backend.yaml"),
         "requirements/domain-1/backend.yaml:1:1", "requirements/domain-1/",
         "no domain 'domain-1'", "did you mean 'domain1'?"),
    case("requirement-directly-in-requirements", move(RB, "requirements/backend.yaml"),
         "requirements/backend.yaml:1:1", "inside a folder named after their domain",
         "directly in requirements/"),
    case("spec-clusters-typo", sub(RA, "  clusters: [cl3]\n", "  clusters: [cl33]\n"),
         f"{RA}:10:14", "spec.clusters[0]", "expected a cluster of domain 'domain2'",
         "found 'cl33'", "did you mean 'cl3'?"),
    case("spec-clusters-where-service-does-not-run", sub(RF, "spec:\n",
                                                         "spec:\n  clusters: [cl3]\n"),
         f"{RF}:10:14", "spec.clusters", "a cluster where service 'frontend' runs (cl4)",
         "found 'cl3'"),
    case("peer-domain-typo", sub(RB, "domain: domain2}", "domain: domian2}"),
         f"{RB}:16:11", "fromEndpoints", "matchLabels.domain", "expected a domain name",
         "found 'domian2'", "did you mean 'domain2'?"),
    case("peer-cluster-typo", sub(RF, "cluster: cl3}", "cluster: cl-3}"),
         f"{RF}:21:11", "fromEndpoints", "matchLabels.cluster",
         "expected a cluster of domain 'domain2'", "found 'cl-3'", "did you mean 'cl3'?"),
    case("peer-service-typo", sub(RB, "{service: database}", "{service: databse}"),
         f"{RB}:13:11", "toEndpoints", "matchLabels.service",
         "expected a service of domain 'domain1'", "found 'databse'",
         "did you mean 'database'?"),
    case("egress-peer-service-of-other-domain-not-exported",
         sub(RB, "{service: database}", "{service: service3, domain: domain2}"),
         f"{RB}:13:11", "matchLabels.service", "exported to domain 'domain1'",
         "'service3' of domain 'domain2'", "(inventory/domain2.yaml:19)",
         "does not list 'domain1' in exportTo"),
    case("egress-peer-exported-to-someone-else",
         chain(sub(D2, FRONTEND_EXPORT, "      exportTo: [domain9]\n"),
               sub(RB, "{service: database}", "{service: frontend, domain: domain2}")),
         f"{RB}:13:11", "matchLabels.service", "exported to domain 'domain1'",
         "does not list 'domain1' in exportTo"),
    case("removed-service-still-named-by-peer", sub(D1, DATABASE, ""),
         f"{RB}:13:11", "matchLabels.service", "expected a service of domain 'domain1'",
         "found 'database'"),
    case("removed-service-still-selected", sub(D1, BACKEND, ""),
         f"{RB}:10:5", "endpointSelector", "expected a service of domain 'domain1'",
         "found 'backend'"),
    # ---- what a requirement may select, and how peers and rules are written
    case("endpointSelector-other-domains-service", sub(RB, "{service: backend}",
                                                       "{service: frontend}"),
         f"{RB}:10:5", "spec.endpointSelector", "'frontend' of domain 'domain2'",
         "only select its own domain's pods"),
    case("endpointSelector-service-mixed-with-labels", sub(RB, "{service: backend}",
                                                           "{service: backend, app: x}"),
         f"{RB}:10:5", "spec.endpointSelector", "mixed with others", "(app, service)"),
    case("namespace-differs-from-service", sub(RB, "  name: backend\n",
                                               "  name: backend\n  namespace: ns1\n"),
         f"{RB}:8:14", "metadata.namespace", "namespace of service 'backend'",
         "(backend-namespace)", "found 'ns1'"),
    case("rule-with-endpoints-and-cidrs", sub(RF, "    - toCIDRSet:\n", "      toCIDRSet:\n"),
         f"{RF}:13:7", "spec.egress", "toEndpoints or toCIDRSet in one rule", "found both"),
    case("rule-with-only-toPorts", sub(RF, "    - toCIDRSet:\n        - cidr: 108.177.16.0/24\n",
                                       "    - toPorts:\n        - ports: [{port: 443}]\n"),
         f"{RF}:15:7", "spec.egress", "found only toPorts", "allow every destination"),
    case("peer-abstract-and-raw-labels", sub(RB, "{service: database}",
                                             "{service: database, app: db}"),
         f"{RB}:13:11", "toEndpoints", "either abstract labels", "found both (app)"),
    case("peer-service-with-matchExpressions",
         sub(RB, "        - matchLabels: {service: database}\n",
             "        - matchLabels: {service: database}\n"
             "          matchExpressions: [{key: app, operator: In, values: [x]}]\n"),
         f"{RB}:13:11", "toEndpoints", "either abstract labels", "found both (matchExpressions)"),
    case("peer-raw-cilium-cluster-label", sub(RF, '{service: "*", cluster: cl3}',
                                              "{name: x, io.cilium.k8s.policy.cluster: cluster3}"),
         f"{RF}:21:11", "fromEndpoints", "expected the abstract label 'cluster'",
         "raw Cilium label 'io.cilium.k8s.policy.cluster'"),
    # ---- what Kubernetes and Cilium accept (meshplan.admission): a policy Cilium rejects
    # would enforce nothing, an object the API server rejects would stop the whole sync
    case("expression-In-without-values",
         sub(RA, "    matchLabels: {name: client}\n", "    matchLabels: {name: client}\n"
             "    matchExpressions: [{key: tier, operator: In}]\n"),
         f"{RA}:13:24", "spec.endpointSelector.matchExpressions[0].values",
         "at least one value for operator In", "found none"),
    case("expression-Exists-with-values",
         sub(RA, "    matchLabels: {name: client}\n", "    matchLabels: {name: client}\n"
             "    matchExpressions:\n      - {key: tier, operator: Exists, values: [a]}\n"),
         f"{RA}:14:47", "matchExpressions[0].values", "no values for operator Exists",
         "found 1"),
    case("expression-NotIn-empty-values-in-a-peer",
         sub(RB, "        - matchLabels: {service: database}\n",
             "        - matchLabels: {app: db}\n"
             "          matchExpressions: [{key: tier, operator: NotIn, values: []}]\n"),
         f"{RB}:14:67", "spec.egress[0].toEndpoints[0].matchExpressions[0].values",
         "at least one value for operator NotIn"),
    case("expression-value-invalid",
         sub(RA, "    matchLabels: {name: client}\n", "    matchLabels: {name: client}\n"
             "    matchExpressions: [{key: tier, operator: In, values: [ok, \"a b\"]}]\n"),
         f"{RA}:13:63", "matchExpressions[0].values[1]", "Kubernetes label value",
         "found 'a b'"),
    case("selector-key-60-characters-cilium-1.19",
         sub(RA, "{name: client}", "{name: client, " + "x" * 60 + ": a}"),
         f"{RA}:12:33", "Cilium selector key", "as Cilium 1.19 reads it",
         "the name has 64 characters"),
    case("namespace-label-key-29-characters",
         sub(RB, "{service: database}", "{io.cilium.k8s.namespace.labels." + "t" * 29 + ": p}"),
         f"{RB}:13:25", "toEndpoints[0].matchLabels.io.cilium.k8s.namespace.labels.ttt",
         "a namespace label's key has at most 28 characters"),
    case("selector-key-unknown-source", sub(RA, "{name: client}", "{k8:name: client}"),
         f"{RA}:12:19", "spec.endpointSelector.matchLabels.k8:name", "Cilium selector key",
         "found key 'k8:name'"),
    case("selector-key-reserved-source",
         sub(RB, "{service: database}", "{reserved:host: \"\"}"),
         f"{RB}:13:25", "matchLabels.reserved:host", "Cilium selector key"),
    case("service-name-starts-with-a-digit",
         sub(D1, "    - name: service2\n", "    - name: 2web\n"),
         f"{D1}:26:13", "spec.services[1].name", "DNS-1035 label", "found '2web'"),
    case("service-name-underscore", sub(D1, "    - name: service2\n", "    - name: web_api\n"),
         f"{D1}:26:13", "spec.services[1].name", "DNS-1035 label", "found 'web_api'"),
    case("service-selector-with-source", sub(D1, "selector: {name: service1}",
                                             "selector: {k8s:name: service1}"),
         f"{D1}:22:18", "spec.services[0].selector.k8s:name", "Kubernetes label key",
         "found key 'k8s:name'"),
    case("service-selector-key-60-characters",
         sub(D1, "selector: {name: service1}", "selector: {" + "n" * 60 + ": service1}"),
         f"{D1}:22:18", "spec.services[0].selector.nnnn", "as Cilium 1.19 reads it"),
    case("service-port-name-digits-only",
         sub(D1, SERVICE1_PORTS, SERVICE1_PORTS.replace("name: http", 'name: "80"')),
         f"{D1}:23:47", "spec.services[0].ports[0].name", "at least one letter", "found '80'"),
    case("requirement-annotation-key-invalid",
         sub(RB, "  name: backend\n", "  name: backend\n  annotations: {\"bad key\": x}\n"),
         f"{RB}:8:17", "metadata.annotations.bad key", "Kubernetes label key"),
    case("requirement-label-key-with-source",
         sub(RB, "  name: backend\n", "  name: backend\n  labels: {k8s:team: x}\n"),
         f"{RB}:8:12", "metadata.labels.k8s:team", "Kubernetes label key"),
    # ---- subjects and peers mean in Cilium what they mean in the requirement
    case("subject-in-another-namespace",
         sub(RA, "{name: client}", "{name: client, k8s:io.kubernetes.pod.namespace: ns1}"),
         f"{RA}:12:5", "spec.endpointSelector.matchLabels.k8s:io.kubernetes.pod.namespace",
         "the policy's own namespace 'default'", "found 'ns1'",
         "Cilium confines a policy's subject to its own namespace"),
    case("subject-in-another-namespace-without-metadata-namespace",
         chain(sub(RA, "  namespace: default\n", ""),
               sub(RA, "{name: client}", "{name: service3, k8s:io.kubernetes.pod.namespace: "
                   "ns1}")),
         f"{RA}:11:5", "the policy's own namespace 'default'", "found 'ns1'",
         "set metadata.namespace"),
    case("subject-namespace-without-source",
         sub(RA, "{name: client}", "{name: client, io.kubernetes.pod.namespace: ns1}"),
         f"{RA}:12:5", "matchLabels.io.kubernetes.pod.namespace", "found 'ns1'"),
    case("subject-in-several-namespaces",
         sub(RA, "    matchLabels: {name: client}\n", "    matchLabels: {name: client}\n"
             "    matchExpressions: [{key: k8s:io.kubernetes.pod.namespace, operator: In, "
             "values: [default, ns2]}]\n"),
         f"{RA}:12:5", "spec.endpointSelector.matchExpressions[0]", "found In [default, ns2]"),
    case("subject-not-in-a-namespace",
         sub(RA, "    matchLabels: {name: client}\n", "    matchLabels: {name: client}\n"
             "    matchExpressions: [{key: io.kubernetes.pod.namespace, operator: NotIn, "
             "values: [kube-system]}]\n"),
         f"{RA}:12:5", "spec.endpointSelector.matchExpressions[0]", "found NotIn [kube-system]"),
    case("clusterwide-kind-with-a-namespace",
         chain(sub(RA, "kind: Requirement\n", "kind: CiliumClusterwideNetworkPolicy\n"),
               sub(RA, "apiVersion: meshplan.dev/v1alpha1\n", "apiVersion: cilium.io/v2\n")),
         f"{RA}:8:14", "metadata.namespace", "no namespace (or \"*\") on a cluster-wide "
         "policy", "found 'default'", "the API server drops the namespace"),
    case("subject-cluster-label-any-source",
         sub(RA, "{name: client}", "{name: client, any:io.cilium.k8s.policy.cluster: cluster3}"),
         f"{RA}:12:5", "matchLabels.any:io.cilium.k8s.policy.cluster", "Cilium cluster label",
         "choose clusters with spec.clusters"),
    case("subject-cluster-label-in-an-expression",
         sub(RA, "    matchLabels: {name: client}\n", "    matchLabels: {name: client}\n"
             "    matchExpressions: [{key: k8s:io.cilium.k8s.policy.cluster, operator: NotIn, "
             "values: [cluster4]}]\n"),
         f"{RA}:12:5", "matchExpressions[0].key", "Cilium cluster label"),
    case("peer-cluster-label-any-source",
         sub(RF, '{service: "*", cluster: cl3}', "{name: x, any:io.cilium.k8s.policy.cluster: "
             "cluster3}"),
         f"{RF}:21:11", "fromEndpoints[0].matchLabels.any:io.cilium.k8s.policy.cluster",
         "raw Cilium label", "in any spelling", "consent"),
    case("peer-cluster-label-in-an-expression",
         sub(RF, '{service: "*", cluster: cl3}', "{name: x}\n          matchExpressions: "
             "[{key: io.cilium.k8s.policy.cluster, operator: Exists}]"),
         f"{RF}:21:11", "fromEndpoints[0].matchExpressions[0].key", "raw Cilium label"),
    case("service-selector-with-a-cilium-identity-label",
         sub(D1, "selector: {name: service1}", "selector: {name: service1, "
             "io.kubernetes.pod.namespace: ns1}"),
         f"{D1}:20:13", "spec.services[0].selector.io.kubernetes.pod.namespace",
         "a label Cilium derives for every pod"),
    # ---- nothing the user committed disappears without a word
    case("spec-clusters-repeated", sub(RA, "  clusters: [cl3]\n", "  clusters: [cl3, cl4, cl3]\n"),
         f"{RA}:10:24", "spec.clusters[2]", "each cluster once", "found 'cl3' again"),
    case("thesis-clusters-annotation-repeated",
         sub(TA, 'meshplan.dev/clusters: "cl3"', 'meshplan.dev/clusters: "cl3, cl3"'),
         f"{TA}:12:28", "metadata.annotations.meshplan.dev/clusters", "each cluster once",
         base="use-case-1"),
    case("thesis-clusters-annotation-empty-name",
         sub(TA, 'meshplan.dev/clusters: "cl3"', 'meshplan.dev/clusters: "cl3,,cl4"'),
         f"{TA}:12:28", "separated by single commas", "an empty name in 'cl3,,cl4'",
         base="use-case-1"),
    case("thesis-clusters-annotation-only-commas",
         sub(TA, 'meshplan.dev/clusters: "cl3"', 'meshplan.dev/clusters: " , "'),
         f"{TA}:12:28", "at least one cluster name", "found none", base="use-case-1"),
    case("clusters-in-spec-and-in-the-annotation",
         sub(TA, "spec:\n", "spec:\n  clusters: [cl3]\n"),
         f"{TA}:12:5", "meshplan.dev/clusters", "either in spec.clusters or in the annotation",
         "found both", base="use-case-1"),
    case("requirement-file-with-json-suffix",
         chain(copy(RB, "requirements/domain1/extra.yaml"),
               sub("requirements/domain1/extra.yaml", "  name: backend\n",
                   "  name: backend\n  namespace: ns9\n"),
               sub("requirements/domain1/extra.yaml", "{service: backend}", "{app: x}"),
               sub(RA, "  clusters: [cl3]\n", "  clusters: [cl33]\n"),
               move("requirements/domain1/extra.yaml", "requirements/domain1/extra.json")),
         "requirements/domain1/extra.json:1:1", "found a file meshplan does not read"),
    # ---- the thesis' DomainRequest JSON and thesis-form requirements
    case("thesis-port-bad-string", sub(J1, '"port": "TCP:80",\n      "links": []\n    },\n    {',
                                       '"port": "TCP-80",\n      "links": []\n    },\n    {'),
         f"{J1}:28:15", "services[0].port", '"PROTOCOL:NUMBER"', "found 'TCP-80'",
         base="use-case-1"),
    case("thesis-port-out-of-range", sub(J1, '"port": "TCP:80",\n      "links": []\n    },\n    {',
                                         '"port": "TCP:0",\n      "links": []\n    },\n    {'),
         f"{J1}:28:15", "services[0].port", "from 1 to 65535", "found 'TCP:0'",
         base="use-case-1"),
    case("thesis-selector-bad-syntax", sub(J1, '"selector": "name:service1"',
                                           '"selector": "name=service1"'),
         f"{J1}:27:19", "services[0].selector", '"key:value"', "found 'name=service1'",
         base="use-case-1"),
    case("thesis-selector-bad-label-value", sub(J1, '"selector": "name:service1"',
                                                '"selector": "name:Serv$ice1"'),
         f"{J1}:27:19", "services[0].selector", "Kubernetes label value", "found 'Serv$ice1'",
         base="use-case-1"),
    case("thesis-servicesMap-entry-missing", sub(J1, '"service1": ["cl1"],\n'
                                                     '    "service2": ["cl2"]',
                                                 '"service1": ["cl1"]'),
         f"{J1}:32:15", "service 'service2'", "at least one cluster", "servicesMap",
         base="use-case-1"),
    case("thesis-servicesMap-unknown-service", sub(J1, '"service2": ["cl2"]',
                                                   '"service2": ["cl2"],\n'
                                                   '    "servce2": ["cl2"]'),
         f"{J1}:43:5", "servicesMap.servce2", "a service listed in services",
         "did you mean 'service2'?", base="use-case-1"),
    case("thesis-servicesMap-cluster-typo", sub(J1, '"service2": ["cl2"]', '"service2": ["cl-2"]'),
         f"{J1}:42:18", "expected a cluster of domain 'domain1'", "found 'cl-2'",
         "did you mean 'cl2'?", base="use-case-1"),
    case("thesis-domain-field-disagrees", sub(J1, '"domain": "domain1",\n      "name": "cl1"',
                                              '"domain": "domain9",\n      "name": "cl1"'),
         f"{J1}:8:17", "clusters[0].domain", "the domain's name 'domain1' or null",
         "found 'domain9'", base="use-case-1"),
    case("thesis-cilium-cluster-too-long", sub(J1, '"cilium_cluster": "cluster1"',
                                               '"cilium_cluster": "' + "c" * 33 + '"'),
         f"{J1}:10:25", "clusters[0].cilium_cluster", "at most 32", base="use-case-1"),
    case("thesis-json-syntax-error", sub(J1, '"name": "cl1",', '"name": "cl1",,'),
         f"{J1}:9:21", "expected valid JSON/YAML 1.2", "syntax error", base="use-case-1"),
    case("thesis-json-duplicate-key", sub(J1, '"name": "cl1",', '"name": "cl1",\n'
                                                                '      "name": "cl9",'),
         f"{J1}:10:7", "clusters[0].name", "expected each key once", "first at line 9",
         base="use-case-1"),
    case("thesis-json-unknown-key", sub(J1, '"name": "cl1",', '"nmae": "cl1",'),
         f"{J1}:9:7", "clusters[0].nmae", "unknown key 'nmae'", "did you mean 'name'?",
         base="use-case-1"),
    case("thesis-clusters-annotation-typo", sub(TA, 'meshplan.dev/clusters: "cl3"',
                                                'meshplan.dev/clusters: "cl33"'),
         f"{TA}:12:28", "meshplan.dev/clusters", "found 'cl33'", "did you mean 'cl3'?",
         base="use-case-1"),
    case("thesis-clusters-annotation-key-typo", sub(TA, 'meshplan.dev/clusters: "cl3"',
                                                    'meshplan.dev/cluster: "cl3"'),
         f"{TA}:12:5", "unknown annotation 'meshplan.dev/cluster'",
         "did you mean 'meshplan.dev/clusters'?", base="use-case-1"),
    # ---- hostile input
    case("alias-bomb", put("inventory/bomb.yaml", alias_bomb()),
         "inventory/bomb.yaml:1:1", "2,000,000 YAML nodes", "alias bomb"),
    case("recursive-alias", put("inventory/loop.yaml", "a: &a [*a]\n"),
         "inventory/loop.yaml:1:4", "a[0]", "alias inside its own anchor"),
    case("deeply-nested-yaml", put("inventory/deep.yaml", "[" * 1000 + "]" * 1000 + "\n"),
         "inventory/deep.yaml:1:201", "at most 200 levels of nesting"),
    case("deeply-nested-json", put("inventory/deep.json", "[" * 1000 + "]" * 1000 + "\n"),
         "inventory/deep.json:1:201", "at most 200 levels of nesting"),
    case("file-larger-than-16MiB", sparse("inventory/huge.yaml", 16 * 1024 * 1024 + 1),
         "inventory/huge.yaml:1:1", "at most 16 MiB", "found 16,777,217 bytes"),
    case("symlink-out-of-repository", symlink("inventory/passwd.yaml", "/etc/passwd"),
         "inventory/passwd.yaml:1:1", "inside the repository", "symbolic link"),
    case("non-utf8-byte", sub_bytes(D1, b"  name: domain1\n", b"  name: d\xc3\xa9main\xff1\n"),
         f"{D1}:8:15", "expected UTF-8 text", "0xff"),
    case("non-utf8-byte-after-byte-order-mark",
         chain(sub_bytes(D1, b"# yaml-language-server", b"\xef\xbb\xbf# yaml-language-server"),
               sub_bytes(D1, b"  name: domain1\n", b"  name: domain\xc01\n")),
         f"{D1}:8:15", "expected UTF-8 text", "0xc0"),
    case("integer-beyond-conversion-limit",
         sub(D1, "meshId: 1\n", "meshId: 1" + "0" * 5000 + "\n"),
         f"{D1}:13:15", "spec.clusters[0].meshId", "expected a plain YAML value", "4300"),
]


# Close to the errors above, yet valid: what Cilium accepts and reads as written.
ACCEPTED = [
    pytest.param(sub(RA, "{name: client}", "{name: client, k8s:io.kubernetes.pod.namespace: "
                     "default}"), id="subject-in-its-own-namespace"),
    pytest.param(sub(RA, "    matchLabels: {name: client}\n", "    matchLabels: {name: client}\n"
                     "    matchExpressions: [{key: io.kubernetes.pod.namespace, operator: In, "
                     "values: [default]}]\n"), id="subject-In-its-own-namespace"),
    pytest.param(chain(sub(RA, "  namespace: default\n", '  namespace: "*"\n'),
                       sub(RA, "{name: client}", "{name: client, io.kubernetes.pod.namespace: "
                           "ns1}")), id="clusterwide-subject-in-a-namespace"),
    pytest.param(sub(RA, "    matchLabels: {name: client}\n", "    matchLabels: {name: client}\n"
                     "    matchExpressions: [{key: tier, operator: DoesNotExist, values: []}]\n"),
                 id="DoesNotExist-with-an-empty-list"),
    pytest.param(sub(RB, "{service: database}", "{io.cilium.k8s.namespace.labels.team: pay}"),
                 id="peer-by-namespace-label"),
    pytest.param(sub(RB, "{service: database}", "{app: db, k8s:io.kubernetes.pod.namespace: "
                     "database-namespace}"), id="peer-in-another-namespace"),
    pytest.param(sub(D2, FRONTEND_EXPORT, ""), id="ingress-peer-needs-no-export"),
    pytest.param(put("requirements/domain1/README.md", "# notes\n"), id="markdown-notes"),
]


@pytest.mark.parametrize("edit", ACCEPTED)
def test_accepted_variants(edit: Edit, tmp_path: Path) -> None:
    repo = write_example(tmp_path / "repo")
    edit(repo)
    code, stdout, stderr = run_validate(repo)
    assert (code, stderr) == (0, ""), stderr
    assert stdout.startswith("valid: ")


def make_repo(base: str, dest: Path) -> Path:
    return copy_tree(THESIS_DIR / base, dest) if base else write_example(dest)


def diagnostics_at(stderr: str, where: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{where}: ")]


def assert_no_crash(stdout: str, stderr: str) -> None:
    assert "Traceback" not in stdout + stderr
    assert "internal error" not in stdout + stderr


def test_frozen_example_is_valid(tmp_path: Path) -> None:
    """The baseline of every case: without an edit there is nothing to report."""
    code, stdout, stderr = run_validate(write_example(tmp_path))
    assert (code, stderr) == (0, "")
    assert stdout == "valid: 2 domain(s), 4 cluster(s), 8 service(s), 3 requirement(s)\n"


def test_there_are_enough_distinct_cases() -> None:
    ids = [param.id for param in CASES]
    wheres = {param.values[0].where for param in CASES}
    assert len(ids) == len(set(ids)) >= 45
    assert len(wheres) >= 40


@pytest.mark.parametrize("case", CASES)
def test_invalid_input_is_reported_at_its_position(case: Case, tmp_path: Path) -> None:
    repo = make_repo(case.base, tmp_path / "repo")
    case.edit(repo)
    code, stdout, stderr = run_validate(repo)
    assert_no_crash(stdout, stderr)
    assert code == 1, stdout + stderr
    assert re.search(r"^invalid: \d+ error\(s\)$", stderr, re.MULTILINE), stderr
    found = diagnostics_at(stderr, case.where)
    assert found, f"no diagnostic at {case.where}:\n{stderr}"
    assert any(all(word in line for word in case.words) for line in found), (
        f"no diagnostic at {case.where} with {case.words}:\n" + "\n".join(found))


# --------------------------------------------------------------------------- several at once

MULTIPLE = [
    (sub(D1, SERVICE1_CLUSTERS, SERVICE1_CLUSTERS.replace("[domain2]", "[domian2]")),
     f"{D1}:25:18", "exportTo", "did you mean 'domain2'?"),
    (sub(D2, "meshId: 3\n", "meshId: 1\n"), f"{D2}:12:15", "meshId", "found 1 again"),
    (sub(RB, "{service: database}", "{service: databse}"),
     f"{RB}:13:11", "spec.egress[0].toEndpoints[0].matchLabels.service",
     "did you mean 'database'?"),
    (sub(RA, "  clusters: [cl3]\n", "  clusters: [cl33]\n"),
     f"{RA}:10:14", "spec.clusters[0]", "did you mean 'cl3'?"),
    (sub(RF, "    - fromEndpoints:\n        - matchLabels: {service: \"*\", cluster: \"*\"",
         "    - frmEndpoints:\n        - matchLabels: {service: \"*\", cluster: \"*\""),
     f"{RF}:18:7", "spec.ingress[0].frmEndpoints", "did you mean 'fromEndpoints'?"),
]


def several_problems(tmp_path: Path) -> Path:
    repo = write_example(tmp_path / "repo")
    for edit, *_ in MULTIPLE:
        edit(repo)
    return repo


def test_every_problem_of_a_run_is_reported_in_order(tmp_path: Path) -> None:
    code, stdout, stderr = run_validate(several_problems(tmp_path))
    assert (code, stdout) == (1, "")
    lines = stderr.splitlines()
    assert lines[-1] == f"invalid: {len(MULTIPLE)} error(s)"
    reported = lines[:-1]
    assert len(reported) == len(MULTIPLE), stderr
    for line, (_, where, *words) in zip(reported, MULTIPLE, strict=True):
        assert line.startswith(f"{where}: "), (line, where)
        assert all(word in line for word in words), (line, words)


def test_json_output_schema_and_order(tmp_path: Path) -> None:
    code, stdout, stderr = run_validate(several_problems(tmp_path), "--format", "json")
    assert (code, stderr) == (1, "")
    report = json.loads(stdout)
    assert set(report) == {"ok", "counts", "diagnostics"}
    assert report["ok"] is False
    assert report["counts"] == {"error": len(MULTIPLE), "warning": 0, "notice": 0}
    fields = {"severity": str, "file": str, "line": int, "column": int, "path": str,
              "message": str}
    for item in report["diagnostics"]:
        assert set(item) == set(fields)
        assert all(isinstance(item[k], t) for k, t in fields.items())
        assert item["severity"] == "error"
    keys = [(d["file"], d["line"], d["column"]) for d in report["diagnostics"]]
    assert keys == sorted(keys)
    expected = [where.rsplit(":", 2) for _, where, *_ in MULTIPLE]
    assert [[f, str(line), str(col)] for f, line, col in keys] == expected
    assert report["diagnostics"][2]["path"] == "spec.egress[0].toEndpoints[0].matchLabels.service"
    assert report["diagnostics"][4]["message"].startswith("expected one of the keys ")


def test_json_output_of_a_valid_repository(tmp_path: Path) -> None:
    code, stdout, stderr = run_validate(write_example(tmp_path), "--format", "json")
    assert (code, stderr) == (0, "")
    assert json.loads(stdout) == {"ok": True, "counts": {"error": 0, "warning": 0, "notice": 0},
                                  "diagnostics": []}


def test_deleting_a_service_lists_every_requirement_naming_it(tmp_path: Path) -> None:
    repo = write_example(tmp_path / "repo")
    frontend = """\
    - name: frontend
      namespace: frontend-namespace
      selector: {app: frontend}
      ports: [{port: 8080, protocol: TCP, name: http}]
      clusters: [cl4]
""" + FRONTEND_EXPORT
    sub(D2, frontend, "")(repo)
    code, _, stderr = run_validate(repo)
    assert code == 1
    assert [line.split(": ")[0] for line in stderr.splitlines()[:-1]] == [
        f"{RB}:16:11",  # ingress peer {service: frontend, domain: domain2}
        f"{RF}:11:5",  # endpointSelector {service: frontend}
    ]
    assert all("found 'frontend'" in line for line in stderr.splitlines()[:-1])


# --------------------------------------------------------------------------- warnings, notices


def test_wildcard_peer_matching_nothing_is_a_warning(tmp_path: Path) -> None:
    repo = write_example(tmp_path / "repo")
    sub(D2, CL5, CL5 + "    - name: cl5\n      meshName: cluster5\n      meshId: 5\n")(repo)
    sub(RF, "cluster: cl3}", "cluster: cl5}")(repo)
    code, stdout, stderr = run_validate(repo)
    assert code == 0, stderr
    assert stdout.startswith("valid: 2 domain(s), 5 cluster(s)")
    assert stderr.splitlines() == [
        f"{RF}:21:11: spec.ingress[1].fromEndpoints[0]: warning: peer matches no service "
        "in cluster 'cl5' of domain 'domain2', so it allows nothing"]
    code, stdout, _ = run_validate(repo, "--format", "json")
    report = json.loads(stdout)
    assert (code, report["ok"], report["counts"]["warning"]) == (0, True, 1)
    assert report["diagnostics"][0]["severity"] == "warning"


THESIS_NOTICES = {
    "refinement-5.3": [],
    "refinement-5.3-thesis-form": [],
    "use-case-1": ["inventory/domain1.json:11:7", "inventory/domain1.json:18:7",
                   "inventory/domain2.json:12:17", "inventory/domain2.json:19:17"],
    "use-case-1-c2-verbatim": ["inventory/domain1.json:12:17", "inventory/domain1.json:19:17",
                               "inventory/domain2.json:12:17", "inventory/domain2.json:19:17"],
    "use-case-2a": [],
    "use-case-2b": ["inventory/domain1.json:12:17", "inventory/domain1.json:19:17"],
}
# No thesis fixture is warned: in use-case-2b, allow-cluster1 admits only cluster1's backend,
# but allow-service-backend (same pods) admits both clusters its global Service reaches.
THESIS_WARNINGS: dict[str, list[str]] = {}


def test_every_thesis_fixture_is_listed() -> None:
    folders = {p.name for p in THESIS_DIR.iterdir() if (p / "inventory").is_dir()}
    assert folders == set(THESIS_NOTICES)


@pytest.mark.parametrize("fixture", sorted(THESIS_NOTICES))
def test_thesis_use_cases_are_valid(fixture: str) -> None:
    code, stdout, stderr = run_validate(THESIS_DIR / fixture)
    assert code == 0, stderr
    assert stdout.startswith("valid: ")
    lines = [line for line in stderr.splitlines() if line]
    warned = [line for line in lines if ": warning: " in line]
    assert [line.split(": ")[0] for line in warned] == THESIS_WARNINGS.get(fixture, [])
    notices = [line for line in lines if line not in warned]
    assert [line.split(": ")[0] for line in notices] == THESIS_NOTICES[fixture]
    for line in notices:
        assert ": notice: 'context' has no meaning in meshplan and is ignored" in line
        assert re.search(r": clusters\[[01]\]\.context: ", line)


def test_bundled_example_is_valid() -> None:
    code, stdout, stderr = run_validate(REPO_ROOT)
    assert code == 0, stderr
    assert re.fullmatch(r"valid: 2 domain\(s\), 4 cluster\(s\), 8 service\(s\), "
                        r"3 requirement\(s\)\n", stdout)
    assert "error" not in stderr


def test_copy_of_bundled_example_is_valid(example_repo: Path) -> None:
    code, _, stderr = run_validate(example_repo)
    assert code == 0, stderr


# --------------------------------------------------------------------------- hostile input


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    repo = write_example(tmp_path / "repo")
    put("inventory/bomb.yaml", alias_bomb(levels=12))(repo)  # 9 ** 12 nodes once expanded
    started = time.monotonic()
    code, _, stderr = run_validate(repo)
    assert time.monotonic() - started < 2.0
    assert code == 1
    assert diagnostics_at(stderr, "inventory/bomb.yaml:1:1")


@pytest.mark.slow
def test_alias_bombs_in_many_documents_share_one_budget(tmp_path: Path) -> None:
    """Each document stays under the budget; together they must not."""
    repo = write_example(tmp_path / "repo")
    put("inventory/bombs.yaml", "---\n".join([alias_bomb(levels=6)] * 50))(repo)
    started = time.monotonic()
    code, _, stderr = run_validate(repo)
    assert time.monotonic() - started < 30.0
    assert code == 1
    assert "YAML nodes once aliases are expanded" in stderr


@pytest.mark.slow
def test_deep_nesting_does_not_crash_the_interpreter(tmp_path: Path) -> None:
    """libyaml's C composer recurses without limit: 100,000 '[' used to kill the process."""
    repo = write_example(tmp_path / "repo")
    put("inventory/deep.yaml", "[" * 100_000 + "]" * 100_000 + "\n")(repo)
    result = subprocess.run(
        [sys.executable, "-m", "meshplan", "validate", "--repo",
         str(repo)], capture_output=True, text=True, timeout=120, check=False)
    # What matters: exit 1, one located error about nesting, no traceback. Which layer refuses
    # (meshplan's guard at 200 levels or libyaml's own limit at 1,000) depends on PyYAML.
    assert result.returncode == 1, result.stderr
    assert re.search(r"^inventory/deep\.yaml:1:\d+: .*nesting", result.stderr, re.M), result.stderr
    assert "Traceback" not in result.stderr


def test_a_symlink_inside_the_repository_is_read(tmp_path: Path) -> None:
    repo = write_example(tmp_path / "repo")
    (repo / "inventory/domain2.yaml").rename(repo / "domain2.yaml")
    symlink("inventory/domain2.yaml", "../domain2.yaml")(repo)
    code, _, stderr = run_validate(repo)
    assert code == 0, stderr


def test_copy_example_copies_the_live_example(tmp_path: Path) -> None:
    repo = copy_example(tmp_path / "repo")
    for top in ("inventory", "requirements"):
        live = sorted(p.relative_to(REPO_ROOT) for p in (REPO_ROOT / top).rglob("*"))
        assert sorted(p.relative_to(repo) for p in (repo / top).rglob("*")) == live
