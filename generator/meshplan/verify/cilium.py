"""The reader of rendered Cilium YAML: the connectivity the output allows, by Cilium's rules.

It models the Cilium agent (v1.19), not meshplan's intentions:

* a policy object Cilium rejects (a selector Kubernetes' rules refuse, a rule mixing L3 kinds,
  more than 40 ports in one ``toPorts`` entry, a rule with no section at all) enforces
  *nothing*: its pods stay unrestricted by it, and that is reported;
* a rule that selects an endpoint and has rules for a direction enforces it; it is
  default-deny when ``enableDefaultDeny`` is on for it (explicitly, or by default because it
  has rules); allows of every selecting rule are unioned, denies win;
* a namespaced policy's subject is confined to its namespace whatever its endpointSelector
  says; a cluster-wide one has no namespace (not even one written in its metadata);
* a peer without a namespace means the policy's namespace (a cluster-wide policy's: every
  namespace), unless it selects by namespace labels; a peer without a cluster label means the
  local cluster (1.19's ``policy-default-local-cluster``, reported as a warning);
* CIDR rules never match a pod; Services are read for their load-balancing
  (:mod:`.services`).

What the model leaves out is reported, not ignored.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from ..admission import (
    MAX_PORTS_PER_PORT_RULE,
    SelectorProblem,
    cilium_service_flags,
    selector_problems,
)
from ..diagnostics import Diagnostic, Location, error, notice, warning
from ..load.canonical import RenderedReader
from ..load.document import Document, PathKey, format_path, place
from ..model import Inventory
from ..outputs import DEFAULT_OUTPUT_DIR, KUSTOMIZATION, cluster_dir, split_cluster_path
from ..vocabulary import (
    CILIUM_CLUSTER_LABEL,
    CLUSTERWIDE_POLICY_KIND,
    ISTIO_SECURITY_API_VERSION,
    ISTIO_SECURITY_KINDS,
    K8S_POD_NAMESPACE_LABEL,
    NAMESPACE_KIND,
    NAMESPACE_LABELS_PREFIX,
    NETWORK_POLICY_KIND,
    POD_NAMESPACE_LABEL,
    POLICY_KINDS,
    SERVICE_KIND,
    SOURCE_ANNOTATION,
)
from .addresses import Block, cidr_blocks
from .connectivity import DIRECTIONS, Connectivity, Direction, Grant, Origin
from .endpoints import Endpoint, EndpointIndex
from .ports import ALL_PORTS, NO_PORTS, PROTOCOLS, PortSet, ports_of
from .selectors import LabelSelector, Term, parse_selector
from .services import (
    HEADLESS_LABEL,
    HEADLESS_LABEL_TOO,
    SERVICE_PROXY_NAME_LABEL,
    ServiceCopy,
    headless_reason,
    unmodelled_affinity,
)

HARMLESS_KUSTOMIZE_KEYS = {"apiVersion", "kind", "metadata", "resources", "commonAnnotations",
                           "buildMetadata"}
# The apiVersions the API server applies each modelled kind under (Kubernetes' core v1;
# Cilium's CRDs serve cilium.io/v2 only; Istio serves its security kinds as v1 and, still,
# v1beta1): a document of such a kind under any other is not the object verify models.
SERVED_API_VERSIONS: dict[str, tuple[str, ...]] = {
    SERVICE_KIND: ("v1",), NAMESPACE_KIND: ("v1",),
    **dict.fromkeys(POLICY_KINDS, ("cilium.io/v2",)),
    **dict.fromkeys(ISTIO_SECURITY_KINDS, (ISTIO_SECURITY_API_VERSION,
                                           "security.istio.io/v1beta1"))}
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
# The L3 kinds of which one rule may use only one ("combining FromEndpoints and FromCIDRSet is
# not supported yet", rule_validation.go); toRequires/fromRequires are not L3 selectors.
EXCLUSIVE_L3: dict[Direction, tuple[str, ...]] = {
    "egress": ("toEndpoints", "toCIDR", "toCIDRSet", "toEntities", "toServices", "toFQDNs",
               "toGroups", "toNodes"),
    "ingress": ("fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities", "fromGroups",
                "fromNodes"),
}
SECTIONS = ("ingress", "ingressDeny", "egress", "egressDeny")
NOTED_RULE_KEYS = {"icmps", "authentication"}
PORT_RULE_KEYS = {"ports"}
NOTED_PORT_RULE_KEYS = {"rules", "serverNames", "listener", "terminatingTLS", "originatingTLS"}
# The keys of an allow or deny rule that verify reads, notes, or ignores the rule for
KNOWN_RULE_KEYS: dict[Direction, frozenset[str]] = {
    d: frozenset({*L3_KEYS[d], "toPorts", *NOTED_RULE_KEYS, *UNMODELLED_L3[d]})
    for d in ("egress", "ingress")}


# (displayed path, content) -> the file's documents and the problems parsing it found
ParseCache = dict[tuple[str, bytes], tuple[list[Document], list[Diagnostic]]]
# A problem found in a rule, its path relative to the rule: (path, message, severity)
Finding = tuple[PathKey, str, str]


class _RuleReading(NamedTuple):
    """What one allow or deny rule grants, without its place (:meth:`_PolicyReader._grants`)."""

    pods: frozenset[int]
    blocks: tuple[Block, ...]
    ports: PortSet
    wildcard: bool
    read: bool  # False: the rule is ignored (it grants nothing)
    findings: tuple[Finding, ...]
    mesh: str | None  # the mesh name the reading depends on (a peer without a cluster label)
    namespaced: bool = False  # it depends on the policy's namespace (a peer without one)


class _SubjectReading(NamedTuple):
    """What a policy rule's endpointSelector reads as in one policy namespace
    (:meth:`_PolicyReader._subject_reading`)."""

    rejections: tuple[tuple[PathKey, str], ...]  # why Cilium refuses it (relative to it)
    findings: tuple[Finding, ...]  # what _rule reports about it (relative to the rule)
    selector: LabelSelector | None  # None: unreadable (a finding says why)


class _RuleEntry:
    """One rule object in one direction: its text, why Cilium rejects it, and its last
    reading with the policy namespace it was read in (valid again for the same namespace, or
    any when the reading does not depend on it, and the same mesh when it depends on that)."""

    __slots__ = ("namespace", "reading", "rejections", "rule", "text")

    def __init__(self, rule: Any, text: str,
                 rejections: tuple[tuple[PathKey, str], ...]) -> None:
        self.rule = rule
        self.text = text
        self.rejections = rejections
        self.reading: _RuleReading | None = None
        self.namespace: str | None = None


class _ActualBuilder:
    """Reads the rendered tree and fills a :class:`Connectivity` with Cilium's semantics."""

    def __init__(self, inventory: Inventory, endpoints: Sequence[Endpoint],
                 files: Mapping[str, bytes], display_root: str,
                 only: Collection[tuple[str, str]] | None = None,
                 parsed: ParseCache | None = None, reader: RenderedReader | None = None,
                 index: EndpointIndex | None = None) -> None:
        self.inventory = inventory
        self.parsed = parsed
        self.reader = reader if reader is not None else RenderedReader(None)
        self._selector_problems: dict[str, tuple[SelectorProblem, ...]] = {}
        # id(data) -> (data, its problems): a peer's selector is asked about again when its
        # rule is read (its text is not written again for that)
        self._problems_held: dict[int, tuple[Any, tuple[SelectorProblem, ...]]] = {}
        # (direction, rule text) -> its reading: the same requirement renders the same rules
        # into every cluster of its scope; (direction, policy namespace, rule text) for a rule
        # whose reading depends on the namespace (a peer that names none)
        self.rule_readings: dict[tuple[str, str], _RuleReading] = {}
        self.namespaced_readings: dict[tuple[str, str | None, str], _RuleReading] = {}
        # (direction, rule text) -> why Cilium rejects it (paths relative to the rule)
        self.rule_rejections: dict[tuple[str, str], tuple[tuple[PathKey, str], ...]] = {}
        # direction -> id(rule) -> its entry (the rule held, so that its id is not reused):
        # what a rule occurrence needs, found with one look-up (the reader gives the rules of
        # equal text one shared object; entries of equal text share their readings)
        self.rule_entries: dict[str, dict[int, _RuleEntry]] = {d: {} for d in DIRECTIONS}
        # (endpointSelector text, policy namespace) -> what a policy's subject reads as
        self.subject_readings: dict[tuple[str, str | None], _SubjectReading] = {}
        # what depends only on a text: port rules, CIDRs over pod networks, selectors
        self.port_readings: dict[str, tuple[PortSet, tuple[Finding, ...]]] = {}
        self.cidr_owners: dict[tuple[Block, ...], list[str]] = {}
        self.selectors: dict[tuple[str, bool], tuple[LabelSelector | None, str | None]] = {}
        # id(data) -> (data, what _service_findings finds in it): a
        # Service's text recurs in the clusters that mirror it, and its documents then share
        # their data (read-only)
        self.service_readings: dict[int, tuple[dict[str, Any], _ServiceReading | None,
                                               tuple[str, object] | None,
                                               tuple[tuple[PathKey, str], ...]]] = {}
        self.only = only  # the (domain, cluster) folders to read (None: every one)
        self.model = Connectivity(endpoints, index)
        self.files = files
        self.root = display_root.rstrip("/")
        self.problems: list[Diagnostic] = []
        self.policies = 0
        self.services: list[ServiceCopy] = []
        self.istio_documents: list[RenderedDocument] = []  # read by .istio
        self.pod_networks = [(block, f"{d.name}/{c.name}") for d in inventory.domains
                             for c in d.clusters for text, _ in c.pod_cidrs
                             for block in _blocks_or_none(text)]
        # object id -> the document of the cluster folder being read that defined it first
        # (_defined_once; emptied for each cluster, so it holds one folder's ids at most)
        self.defined: dict[tuple[str, str, str, str], Document] = {}
        # id(data) -> (data, its object id, whether it reads plainly: _reads_plainly) for a
        # Service's data, which the documents of a recurring text share (held by
        # service_readings anyway): a mirrored Service is read once, not in every cluster
        self.object_readings: dict[int, tuple[object, tuple[str, str, str, str] | None,
                                              bool]] = {}

    def selector_problems(self, data: Any) -> Sequence[SelectorProblem]:
        """:func:`~meshplan.admission.selector_problems`, once per distinct selector text (the
        same peers, kube-dns for one, recur in most policies of a fleet)."""
        held = self._problems_held.get(id(data))
        if held is not None and held[0] is data:
            return held[1]
        key = repr(data)
        found = self._selector_problems.get(key)
        if found is None:
            found = self._selector_problems[key] = tuple(selector_problems(data))
        self._problems_held[id(data)] = (data, found)
        return found

    def service(self, doc: Document, domain: str, cluster: str) -> None:
        """A rendered Service that load-balances (not an ExternalName) as :mod:`.services`
        needs it, an error at what it cannot read (:func:`_service_errors`),
        a warning at an affinity it does not model (:meth:`_affinity`) and at a global
        headless Service (:meth:`_headless`); each distinct Service object (its data, which
        the documents of a recurring text share) read once (:func:`_service_reading`,
        :func:`.services.unmodelled_affinity`)."""
        data = doc.data
        held = self.service_readings.get(id(data))
        if held is None or held[0] is not data:
            held = self.service_readings[id(data)] = (data, *_service_findings(data))
        _, reading, affinity, errors = held
        for path, message in errors:
            self._at(error, doc, path, message)
        if reading is None:
            return
        copy = ServiceCopy(domain, cluster, *reading, place(doc, ("metadata", "name")))
        self.services.append(copy)
        if affinity is not None:
            self._affinity(doc, copy, *affinity)
        if copy.headless and not copy.resolves_to_pods:
            self._unresolved(doc, copy)
        elif copy.headless and copy.is_global:
            self._headless(doc, copy)

    def display(self, relpath: str) -> str:
        return _display(self.root, relpath)

    def _at(self, make: Callable[[Location, str, str], Diagnostic], doc: Document,
            path: PathKey, message: str) -> None:
        """A diagnostic (``make``: :func:`error` or :func:`warning`) at ``path`` in ``doc``."""
        self.problems.append(make(doc.location(path), format_path(path), message))

    def build(self) -> Connectivity:
        present = {cluster_dir(split[0], split[1]) for p in self.files
                   if (split := split_cluster_path(p)) is not None}
        dirs = sorted(present)
        known = set()
        for domain in self.inventory.domains:
            for cluster in domain.clusters:
                base = cluster_dir(domain.name, cluster.name)
                known.add(base)
                if self.only is not None and (domain.name, cluster.name) not in self.only:
                    continue
                if base not in present:
                    self.problems.append(error(
                        Location(self.display(base) + "/"), "", "expected the rendered "
                        f"directory of cluster {domain.name}/{cluster.name}, found none: run "
                        "`meshplan render` (its policies cannot be verified)"))
                    continue
                self.defined = {}
                for relpath in self._resources(base):
                    self._file(relpath, domain.name, cluster.name, cluster.mesh_name)
        for base in dirs:
            if base not in known:
                self.problems.append(warning(
                    Location(self.display(base) + "/"), "", "expected only clusters of the "
                    "inventory in the rendered output, found a directory no inventory cluster "
                    "owns (stale output? run `meshplan render`)"))
        self.reader.forget_known()  # every file is read
        return self.model

    def _resources(self, base: str) -> list[str]:
        path = f"{base}/{KUSTOMIZATION}"
        if path not in self.files:
            return sorted(p for p in self.files if p.startswith(base + "/")
                          and _in_cluster_root(p))
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
        out: dict[str, int] = {}  # each file read once, with where it is first listed
        for i, item in enumerate(_resources_listed(data)):
            target = f"{base}/{item}"
            if not isinstance(item, str) or "/" in item or target not in self.files:
                self.problems.append(error(
                    docs[0].location(("resources", i)), f"resources[{i}]", "expected a file "
                    f"beside the kustomization, found {item!r}: verify cannot read it"))
                continue
            if target in out:  # kustomize adds its objects again, and refuses them
                self.problems.append(error(
                    docs[0].location(("resources", i)), f"resources[{i}]", "expected each "
                    f"file listed once, found {item!r} again (first at resources[{out[target]}]):"
                    " kustomize refuses to build the cluster (may not add resource with an "
                    "already registered id); verify reads it once"))
                continue
            out[target] = i
        return list(out)

    def _documents(self, relpath: str) -> list[Document]:
        key = (self.display(relpath), self.files[relpath])
        found = self.parsed.get(key) if self.parsed is not None else None
        if found is None:
            found = self.reader.documents(key[0], key[1])
            if self.parsed is not None:
                self.parsed[key] = found
        docs, problems = found
        self.problems.extend(problems)
        return docs

    def _file(self, relpath: str, domain: str, cluster: str, mesh: str) -> None:
        for doc in self._documents(relpath):
            data = doc.data
            held = self.object_readings.get(id(data))
            if held is None or held[0] is not data:
                held = (data, _object_id(data), _reads_plainly(data))
                if type(data) is dict and data.get("kind") == SERVICE_KIND:
                    self.object_readings[id(data)] = held
            _, key, plain = held
            if not plain and _is_list(data):
                self.problems.append(error(
                    doc.location(("kind",)), "kind", f"expected one object per document, found "
                    f"a {data['kind']} whose items kustomize applies each as its own object: "
                    "verify does not read List documents (their policies and Services would "
                    "go uncounted); write each object as its own document"))
                continue
            if key is not None:
                self._defined_once(doc, key, domain, cluster)
            if not isinstance(data, dict):
                continue
            kind = data.get("kind")
            if not plain and kind in SERVED_API_VERSIONS \
                    and not self._applied_as_modelled(doc, str(kind)):
                continue
            if kind in POLICY_KINDS:
                self.policies += 1
                _PolicyReader(self, doc, domain, cluster, mesh).read()
            elif kind == SERVICE_KIND:
                self.service(doc, domain, cluster)
            elif kind in ISTIO_SECURITY_KINDS:
                self.istio_documents.append(RenderedDocument(doc, domain, cluster))
            elif kind == "NetworkPolicy":
                self.problems.append(error(
                    doc.location(("kind",)), "kind", "expected Cilium policies only, found a "
                    "Kubernetes NetworkPolicy, which verify does not model"))

    def _applied_as_modelled(self, doc: Document, kind: str) -> bool:
        """Whether the API server applies the document as the ``kind`` verify models it as,
        an error at each reason it does not (:func:`_application_errors`); such a document
        is not counted, as it is not applied as that object (a policy counted but not
        applied would hide the pods it leaves unrestricted)."""
        errors = _application_errors(doc.data, kind)
        for path, message in errors:
            self._at(error, doc, path, message)
        return not errors

    def _headless(self, doc: Document, copy: ServiceCopy) -> None:
        """A warning at a global Service with no cluster IP, whose remote backends verify
        cannot know (:func:`.services.backends`)."""
        path = ("spec", "clusterIP")
        self._at(warning, doc, path,
            f"expected the global Service {copy.namespace}/{copy.name} to have a cluster IP, "
            "found clusterIP: None: Cilium load-balances no headless Service, and DNS answers "
            "its name with the remote clusters' pods only where the Cilium operator "
            "synchronises their EndpointSlices (clustermesh.enableEndpointSliceSynchronization, "
            "off by default; service.cilium.io/global-sync-endpoint-slices: \"false\" opts "
            "out), which the rendered tree does not say: verify counts this cluster's pods "
            "only for its name" + (" (its own pods are still shared with the other clusters' "
                                   "global copies)" if copy.shared else ""))

    def _unresolved(self, doc: Document, copy: ServiceCopy) -> None:
        """At a Service Cilium gives no frontend though DNS answers its name with an address,
        not its pods (:func:`.services.headless_reason`): a warning at its label (calls by
        name then have no backends, each an error of its own), an error at a ``clusterIP``
        spelt "none" otherwise, which the API server rejects."""
        name = f"{copy.namespace}/{copy.name}"
        if copy.headless.startswith("clusterIP: "):
            path: PathKey = ("spec", "clusterIP")
            self._at(error, doc, path,
                f"expected spec.clusterIP of Service {name} to be None or an IP address, found "
                f"{copy.headless.removeprefix('clusterIP: ').removesuffix(HEADLESS_LABEL_TOO)}"
                ", which the API server rejects "
                "(Cilium reads it as headless, so verify counts no backends for its name)")
            return
        path = ("metadata", "labels", HEADLESS_LABEL)
        self._at(warning, doc, path,
            f"expected the Service {name} to be served by Cilium, found the label "
            f"{HEADLESS_LABEL}: Cilium gives a Service so labelled no frontend whatever its "
            "value, even with a cluster IP, which its name then resolves to, so verify counts "
            "no backends for its name and, where global, none of its pods for the other "
            "clusters' copies (the Cilium releases whose watch leaves such a Service out do not "
            "export it to ClusterMesh)")

    def _defined_once(self, doc: Document, key: tuple[str, str, str, str], domain: str,
                      cluster: str) -> None:
        """An error at a second definition of an object in one cluster folder, naming the
        first: ``kubectl kustomize`` refuses the folder ("may not add resource with an already
        registered id"), and verify would otherwise read both (:func:`_object_id`). The same
        document met again (a file listed twice) is left to the kustomization's check."""
        first = self.defined.setdefault(key, doc)
        if first is doc or (first.file, first.index) == (doc.file, doc.index):
            return
        kind, _, namespace, name = key
        self.problems.append(error(
            doc.location(("metadata", "name")), "metadata.name",
            f"expected each object once in cluster {domain}/{cluster}, found {kind} "
            f"{namespace + '/' if namespace else ''}{name} again (first at "
            f"{first.location(('metadata', 'name'))}): `kubectl kustomize` refuses the folder "
            "(an already registered id), or the API server keeps one of them as one object"))

    def _affinity(self, doc: Document, copy: ServiceCopy, key: str, value: object) -> None:
        """A warning for a global copy whose affinity ``key`` says ``value``, which Cilium
        releases read differently (:func:`.services.unmodelled_affinity`)."""
        path = ("metadata", "annotations", key)
        self._at(warning, doc, path,
            f"expected {key} of the global Service {copy.namespace}/{copy.name} to be local, "
            f"remote or absent, found {value!r}: Cilium 1.18, and 1.19 before the backport of "
            "the fix of cilium/cilium#46623, then load-balance to this cluster's "
            "backends only (remote ones dropped), later releases to every backend, as verify "
            "models it")


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
        self.written_namespace = str(namespace) if namespace else None
        # The API server drops the namespace of a cluster-scoped object.
        self.namespace = None if self.kind == CLUSTERWIDE_POLICY_KIND else self.written_namespace
        annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
        assert isinstance(annotations, dict)
        source = annotations.get(SOURCE_ANNOTATION)
        self.label = (f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"
                      f" in {domain}/{cluster}" + (f" (from {source})" if source else ""))
        self._findings: list[Finding] | None = None  # set while a rule is read on its own
        # (id(section's rule list), direction) -> the entries of its rules (found while
        # checking what Cilium rejects, used again to read what the rules grant)
        self._entries: dict[tuple[int, str], list[_RuleEntry]] = {}
        self._subject: tuple[Any, _SubjectReading] | None = None  # the last one read
        self._used_mesh = self._used_namespace = False

    def _selector(self, data: Any, *, in_namespace: bool = False
                  ) -> tuple[LabelSelector | None, str | None]:
        """:func:`parse_selector` (``in_namespace``: dropping a namespaced policy's
        namespace label), once per distinct selector text."""
        key = (repr(data), in_namespace)
        found = self.owner.selectors.get(key)
        if found is None:
            found = self.owner.selectors[key] = parse_selector(
                data, (K8S_POD_NAMESPACE_LABEL,) if in_namespace else ())
        return found

    def problem(self, path: PathKey, message: str, *, severity: str = "error") -> None:
        if self._findings is not None:
            self._findings.append((path, message, severity))
            return
        make = {"error": error, "warning": warning, "notice": notice}[severity]
        self.owner.problems.append(make(self.doc.location(path), format_path(path),
                                        f"{self.label}: {message}"))

    def read(self) -> None:
        data = self.doc.data
        if self.kind == NETWORK_POLICY_KIND and self.namespace is None:
            self.problem(("metadata",), "expected metadata.namespace, found none: the policy "
                         "lands in whatever namespace the applier uses, which verify cannot "
                         "know (it is not counted)")
            return
        if self.kind == CLUSTERWIDE_POLICY_KIND and self.written_namespace is not None:
            self.problem(("metadata", "namespace"), f"expected no namespace on a cluster-wide "
                         f"policy, found '{self.written_namespace}': the API server drops it, so "
                         "the policy applies in every namespace (read that way)")
        specs: list[tuple[PathKey, Any]] = []
        if "spec" in data:
            specs.append((("spec",), data["spec"]))
        for i, spec in enumerate(data.get("specs") or []):
            specs.append((("specs", i), spec))
        rejected: list[tuple[PathKey, str]] = []
        for path, spec in specs:
            self._rejections(path, spec, rejected)
        if rejected:
            self._reject(specs, rejected)
            return
        for path, spec in specs:
            self._rule(path, spec)

    # -- what the Cilium agent refuses ---------------------------------------------------

    def _rejections(self, path: PathKey, spec: Any, out: list[tuple[PathKey, str]]) -> None:
        """Why Cilium's ``Parse`` refuses this rule (any of them drops the whole object),
        added to ``out``."""
        if not isinstance(spec, dict):
            out.append((path, "a rule must be a mapping"))
            return
        if "endpointSelector" not in spec and "nodeSelector" not in spec:
            out.append((path, "a rule needs an endpointSelector or a nodeSelector"))
        if "endpointSelector" in spec:
            found = self._subject_reading(spec["endpointSelector"]).rejections
            if found:
                out += [((*path, "endpointSelector", *where), why) for where, why in found]
        if not (spec.get("ingress") or spec.get("ingressDeny") or spec.get("egress")
                or spec.get("egressDeny")):  # any of SECTIONS with rules
            out.append((path, "a rule needs at least one of ingress, ingressDeny, egress, "
                        "egressDeny with rules (an empty list is none)"))
        for section in SECTIONS:
            rules = spec.get(section)
            if rules is None:
                continue
            if not isinstance(rules, list):
                out.append(((*path, section), "expected a list of rules"))
                continue
            direction: Direction = "egress" if section.startswith("egress") else "ingress"
            entries = self.owner.rule_entries[direction]
            section_entries: list[_RuleEntry] = []
            for i, rule in enumerate(rules):
                if not isinstance(rule, dict):
                    out.append(((*path, section, i), "a rule must be a mapping"))
                    continue
                entry = entries.get(id(rule))
                if entry is None or entry.rule is not rule:
                    entry = self._entry(rule, direction)
                section_entries.append(entry)
                if entry.rejections:
                    out += [((*path, section, i, *where), why)
                            for where, why in entry.rejections]
            # by direction too: a YAML alias may give two sections one list object
            self._entries[(id(rules), direction)] = section_entries

    def _entry(self, rule: dict[str, Any], direction: Direction) -> _RuleEntry:
        """A rule object's entry, made on its first occurrence: why Cilium refuses it, read
        once per (direction, rule text). ``repr``: the key of a rule's readings, made once per
        rule object and direction (the reader gives the rules of equal text one shared
        object, read-only)."""
        text = repr(rule)
        key = (direction, text)
        found = self.owner.rule_rejections.get(key)
        if found is None:
            found = self.owner.rule_rejections[key] = tuple(
                self._read_rule_rejections((), rule, direction))
        entry = self.owner.rule_entries[direction][id(rule)] = _RuleEntry(rule, text, found)
        return entry

    def _subject_reading(self, data: Any) -> _SubjectReading:
        """What an endpointSelector reads as in this policy's namespace, once per (selector
        text, namespace): why Cilium refuses it, what :meth:`_rule` reports about it (the
        namespace it names, label sources no pod carries, why it cannot be read) and its
        selector confined to the namespace."""
        if self._subject is not None and self._subject[0] is data:
            return self._subject[1]
        key = (repr(data), self.namespace)
        found = self.owner.subject_readings.get(key)
        if found is not None:
            self._subject = (data, found)
            return found
        rejections = tuple(self._selector_rejections((), data))
        findings: list[Finding] = []
        outer, self._findings = self._findings, findings
        try:
            self._subject_namespace((), data)
            self._warn_unknown_sources(("endpointSelector",), data)
            selector, why = self._selector(data, in_namespace=bool(self.namespace))
            if selector is None:
                self.problem(("endpointSelector",), f"cannot read endpointSelector: {why}")
        finally:
            self._findings = outer
        found = self.owner.subject_readings[key] = _SubjectReading(
            rejections, tuple(findings), selector)
        self._subject = (data, found)
        return found

    def _read_rule_rejections(self, path: PathKey, rule: dict[str, Any],
                              direction: Direction) -> list[tuple[PathKey, str]]:
        out: list[tuple[PathKey, str]] = []
        kinds = [k for k in EXCLUSIVE_L3[direction] if rule.get(k)]
        if len(kinds) > 1:
            out.append((path, f"one rule may use only one of {', '.join(EXCLUSIVE_L3[direction])}"
                        f", found {' and '.join(kinds)}"))
        peers_key = L3_KEYS[direction][0]
        peers = rule.get(peers_key)
        for j, selector in enumerate(peers if isinstance(peers, list) else ()):
            out += self._selector_rejections((*path, peers_key, j), selector)
        to_ports = rule.get("toPorts")
        for j, entry in enumerate(to_ports if isinstance(to_ports, list) else ()):
            ports = entry.get("ports") if isinstance(entry, dict) else None
            if isinstance(ports, list) and len(ports) > MAX_PORTS_PER_PORT_RULE:
                out.append(((*path, "toPorts", j, "ports"), f"at most "
                            f"{MAX_PORTS_PER_PORT_RULE} ports per toPorts entry, found "
                            f"{len(ports)}"))
        return out

    def _selector_rejections(self, path: PathKey, data: Any) -> list[tuple[PathKey, str]]:
        return [((*path, *p.path), p.message) for p in self.owner.selector_problems(data)
                if p.rejected]

    def _reject(self, specs: Sequence[tuple[PathKey, Any]],
                rejected: Sequence[tuple[PathKey, str]]) -> None:
        subjects: set[int] = set()
        for _, spec in specs:
            if isinstance(spec, dict) and "endpointSelector" in spec:
                selector, _ = self._selector(spec["endpointSelector"],
                                             in_namespace=bool(self.namespace))
                if selector is not None:
                    subjects.update(self._subjects(selector))
        names = sorted({self.owner.model.endpoints[i].title for i in subjects})
        stay = (f"{', '.join(names)} stay unrestricted by it" if names
                else "its pods stay unrestricted by it")
        for path, why in rejected:
            self.problem(path, f"Cilium rejects this whole policy ({why}), so it enforces none "
                         f"of its rules: {stay}")

    # -- what it enforces ----------------------------------------------------------------

    def _subjects(self, selector: LabelSelector) -> list[int]:
        index = self.owner.model.index
        return index.select(selector, index.in_place(self.domain, self.cluster, self.namespace))

    def _subject_namespace(self, path: PathKey, data: Any) -> None:
        """Cilium overwrites a ``k8s:`` namespace in a namespaced policy's subject with the
        policy's and ANDs any other spelling or expression: report one that differs."""
        if self.namespace is None or not isinstance(data, dict):
            return
        written, _ = self._selector(data)
        if written is None:
            return
        for term in written.terms:
            if term.key == POD_NAMESPACE_LABEL and not term.holds(
                    {POD_NAMESPACE_LABEL: self.namespace}):
                self.problem((*path, "endpointSelector"), "expected the endpointSelector to "
                             f"name no namespace or the policy's own ({self.namespace}), found "
                             f"{term.operator} {list(term.values)}: Cilium confines a policy's "
                             f"subject to its namespace, so it selects pods of {self.namespace} "
                             "only (or none), never of the namespace written")

    def _warn_unknown_sources(self, path: PathKey, data: Any) -> None:
        for p in self.owner.selector_problems(data):
            if not p.rejected:
                self.problem((*path, *p.path), p.message, severity="warning")

    def _rule(self, path: PathKey, spec: Mapping[str, Any]) -> None:
        if "nodeSelector" in spec:
            self.problem((*path, "nodeSelector"), "host policies (nodeSelector) are not "
                         "modelled: this rule is ignored")
            return
        if not spec.keys() <= RULE_KEYS:
            for key in sorted(set(spec) - RULE_KEYS):
                self.problem((*path, key), f"'{key}' is not modelled by verify: ignored")
        subject = self._subject_reading(spec.get("endpointSelector"))
        for where, message, severity in subject.findings:
            self.problem((*path, *where), message, severity=severity)
        selector = subject.selector
        if selector is None:
            return
        subjects = self._subjects(selector)
        if not subjects:
            self.problem((*path, "endpointSelector"), "selects no pod of the inventory or of "
                         "the requirements, so verify cannot check it (stale output? `meshplan "
                         "render --check` tells)", severity="warning")
        defaults = spec.get("enableDefaultDeny") or {}
        if not isinstance(defaults, dict):
            self.problem((*path, "enableDefaultDeny"), "expected a mapping")
            defaults = {}
        model = self.owner.model
        for direction in DIRECTIONS:
            allows = spec.get(direction) or []
            denies = spec.get(direction + "Deny") or []
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
            entries = self._entries
            grants = self._grants(entries[(id(allows), direction)], direction,
                                  (*path, direction)) if allows else []
            deny_grants = self._grants(entries[(id(denies), direction)], direction,
                                       (*path, direction + "Deny")) if denies else []
            stances = model.egress if direction == "egress" else model.ingress
            if default_deny and subjects:
                origin = Origin(place(self.doc, (*path, direction)), self.label)
                for index in subjects:
                    stances[index].default_deny.append(origin)
            if grants:
                for index in subjects:
                    stances[index].allows.extend(grants)
            if deny_grants:
                for index in subjects:
                    stances[index].denies.extend(deny_grants)

    def _grants(self, entries: Sequence[_RuleEntry], direction: Direction, path: PathKey
                ) -> list[Grant]:
        """The grants of one section's rules (their entries; ``path``: the section's), one
        per rule that is read, each rule read once per (direction, rule text), policy
        namespace and mesh name when they matter: what it grants depends on nothing else (the
        peers are selected from the whole fleet), and its problems are reported again at each
        place."""
        doc, label, mesh, namespace = self.doc, self.label, self.mesh, self.namespace
        out: list[Grant] = []
        for i, entry in enumerate(entries):
            reading = entry.reading
            if reading is None or (reading.mesh is not None and reading.mesh != mesh) or (
                    reading.namespaced and entry.namespace != namespace):
                reading = entry.reading = self._reading(entry, direction)
                entry.namespace = namespace
            if reading.findings:
                for where, message, severity in reading.findings:
                    self.problem((*path, i, *where), message, severity=severity)
            if reading.read:
                out.append(Grant(reading.pods, reading.blocks, reading.ports,
                                 Origin(place(doc, (*path, i)), label), reading.wildcard))
        return out

    def _reading(self, entry: _RuleEntry, direction: Direction) -> _RuleReading:
        """A rule's reading here: the one of its (direction, text) when it does not depend
        on the policy's namespace, else of its (direction, namespace, text); read again when
        it depends on the mesh name and was read in another mesh."""
        owner = self.owner
        text = entry.text
        reading = owner.rule_readings.get((direction, text))
        if reading is None:
            reading = owner.namespaced_readings.get((direction, self.namespace, text))
        if reading is None or (reading.mesh is not None and reading.mesh != self.mesh):
            reading = self._read_rule(entry.rule, direction)
            if reading.namespaced:
                owner.namespaced_readings[(direction, self.namespace, text)] = reading
            else:
                owner.rule_readings[(direction, text)] = reading
        return reading

    def _read_rule(self, rule: Any, direction: Direction) -> _RuleReading:
        findings: list[Finding] = []
        self._findings, self._used_mesh, self._used_namespace = findings, False, False
        try:
            grant = self._read_grant(rule, direction, ())
        finally:
            self._findings = None
        mesh = self.mesh if self._used_mesh else None
        if grant is None:
            return _RuleReading(frozenset(), (), NO_PORTS, False, False, tuple(findings), mesh,
                                self._used_namespace)
        return _RuleReading(grant.pods, grant.blocks, grant.ports, grant.wildcard, True,
                            tuple(findings), mesh, self._used_namespace)

    def _read_grant(self, rule: Any, direction: Direction, path: PathKey) -> Grant | None:
        if not isinstance(rule, dict):
            self.problem(path, "expected a rule mapping")
            return None
        peers_key, cidr_key, cidrset_key = L3_KEYS[direction]
        for key in UNMODELLED_L3[direction]:
            if key in rule:
                self.problem((*path, key), f"'{key}' is not modelled by verify: the rule is "
                             "ignored (what it allows is not counted)")
                return None
        known = KNOWN_RULE_KEYS[direction]
        if not rule.keys() <= known:
            for key in sorted(set(rule) - known):
                self.problem((*path, key), f"'{key}' is not modelled by verify: ignored")
        if not rule.keys().isdisjoint(NOTED_RULE_KEYS):
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
        for j, text in enumerate(rule.get(cidr_key) or ()):
            try:
                blocks.extend(cidr_blocks(str(text) if "/" in str(text) else
                                          f"{text}/{32 if ':' not in str(text) else 128}"))
            except ValueError:
                self.problem((*path, cidr_key, j), f"cannot read CIDR {text!r}")
        for j, item in enumerate(rule.get(cidrset_key) or ()):
            if not isinstance(item, dict) or "cidr" not in item:
                self.problem((*path, cidrset_key, j), "expected {cidr, except}: the entry "
                             "is ignored (cidrGroupRef is not modelled)")
                continue
            try:
                blocks.extend(cidr_blocks(str(item["cidr"]),
                                          [str(x) for x in item.get("except") or ()]))
            except ValueError:
                self.problem((*path, cidrset_key, j), f"cannot read CIDR {item['cidr']!r}")
        self._cidrs_over_pods(blocks, path)
        ports = self._ports(rule.get("toPorts"), (*path, "toPorts")) if "toPorts" in rule \
            else ALL_PORTS
        return Grant(pods, tuple(blocks), ports, _NO_ORIGIN, wildcard)

    def _peers(self, peers: Any, path: PathKey) -> frozenset[int]:
        if not isinstance(peers, list):
            self.problem(path, "expected a list of selectors")
            return frozenset()
        selected: set[int] = set()
        for j, data in enumerate(peers):
            selector = self._peer_selector(data, (*path, j))
            if selector is not None:
                selected.update(self.owner.model.index.select(selector))
        return frozenset(selected)

    def _peer_selector(self, data: Any, path: PathKey) -> LabelSelector | None:
        """A peer as Cilium 1.19 completes it (``getEndpointSelector``), or None when it
        matches no endpoint verify knows."""
        selector, why = parse_selector(data)
        if selector is None:
            self.problem(path, f"cannot read the selector: {why}")
            return None
        self._warn_unknown_sources(path, data)
        written = [*(data.get("matchLabels") or {}),
                   *(e.get("key", "") for e in data.get("matchExpressions") or ()
                     if isinstance(e, dict))]
        # split_source(key).source == "reserved", without a record per key
        if any(str(key).startswith("reserved:") for key in written):
            self.problem(path, "a peer with reserved: labels selects Cilium's reserved "
                         "identities (host, world, ...), which verify does not model: it "
                         "allows no endpoint here", severity="notice")
            return None
        if not selector.has_key(POD_NAMESPACE_LABEL):
            self._used_namespace = True
            if self.namespace is None:
                selector = selector.also(Term(POD_NAMESPACE_LABEL, "Exists"))
            elif not selector.has_key_prefix(NAMESPACE_LABELS_PREFIX):
                selector = selector.also(Term(POD_NAMESPACE_LABEL, "In", (self.namespace,)))
        if not selector.has_key(CILIUM_CLUSTER_LABEL):
            self._used_mesh = True
            self.problem(path, f"expected the peer to name its cluster ({CILIUM_CLUSTER_LABEL})"
                         f", found none: Cilium 1.19 reads it as the local cluster "
                         f"({self.mesh}; option policy-default-local-cluster, on by default), "
                         "earlier versions as every cluster", severity="warning")
            selector = selector.also(Term(CILIUM_CLUSTER_LABEL, "In", (self.mesh,)))
        return selector

    def _cidrs_over_pods(self, blocks: Sequence[Block], path: PathKey) -> None:
        if not blocks:
            return
        key = tuple(blocks)
        owners = self.owner.cidr_owners.get(key)
        if owners is None:
            owners = self.owner.cidr_owners[key] = sorted(
                {owner for v, lo, hi in blocks for (pv, plo, phi), owner in
                 self.owner.pod_networks if v == pv and lo <= phi and plo <= hi})
        if owners:
            more = f" and {len(owners) - 3} more" if len(owners) > 3 else ""
            self.problem(path, "the rule's CIDRs overlap the pod networks of "
                         f"{', '.join(owners[:3])}{more}: Cilium never matches pods by CIDR, so "
                         "it reaches none of them", severity="warning")

    def _ports(self, data: Any, path: PathKey) -> PortSet:
        """The ports of a toPorts list, read once per distinct text (there are few: the
        same service ports recur in every rule that calls them)."""
        if self._findings is None:
            return self._read_ports(data, path)
        key = repr(data)
        found = self.owner.port_readings.get(key)
        if found is None:
            outer, self._findings = self._findings, []
            try:
                ports = self._read_ports(data, ())
                found = self.owner.port_readings[key] = (ports, tuple(self._findings))
            finally:
                self._findings = outer
        ports, findings = found
        self._findings.extend(((*path, *where), message, severity)
                              for where, message, severity in findings)
        return ports

    def _read_ports(self, data: Any, path: PathKey) -> PortSet:
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


_NO_ORIGIN = Origin(Location("(rule)"), "")  # replaced by the rule's place (_grants)


def read_ahead(files: Mapping[str, bytes], reader: RenderedReader,
               display_root: str = DEFAULT_OUTPUT_DIR,
               until: Callable[[], bool] = lambda: False) -> None:
    """Have ``reader`` read, before :func:`actual_connectivity` asks for them, the files it
    would read in each cluster folder: the kustomization and the resources it lists beside
    it, else every YAML file of the folder — whichever clusters the inventory has (it is not
    known yet). Stops as soon as ``until()`` is true (between files): the rest is read when
    asked for. Nothing is decided here: a listing that cannot be read is read again, and
    reported, by :func:`actual_connectivity`."""
    root = display_root.rstrip("/")
    folders: dict[str, list[str]] = {}
    for relpath in files:
        split = split_cluster_path(relpath)
        if split is not None and _in_cluster_root(relpath):
            folders.setdefault(cluster_dir(split[0], split[1]), []).append(relpath)
    for base, paths in folders.items():
        kustomization = f"{base}/{KUSTOMIZATION}"
        if kustomization in files:
            if until():
                return
            docs, _ = reader.read_ahead(_display(root, kustomization), files[kustomization])
            paths = [f"{base}/{name}" for name in _listed(docs)]
        for relpath in paths:
            if relpath in files and relpath != kustomization:
                if until():
                    return
                reader.read_ahead(_display(root, relpath), files[relpath])


def _listed(docs: Sequence[Document]) -> list[str]:
    """The plain file names a kustomization's ``resources`` lists (others are left to
    :meth:`_ActualBuilder._resources`, which reports them)."""
    data = docs[0].data if docs else None
    listed = [item for item in _resources_listed(data)
              if isinstance(item, str) and "/" not in item]
    return list(dict.fromkeys(listed))  # a file listed twice is read ahead once


def _resources_listed(kustomization: object) -> list[object]:
    """A kustomization's ``resources`` items as written (none when it has no such list)."""
    resources = kustomization.get("resources") if isinstance(kustomization, dict) else None
    return resources if isinstance(resources, list) else []


# Kinds whose objects have no namespace: kustomize ignores metadata.namespace in their id.
# The built-in ones are every kind kustomize's kyaml (openapi.precomputedIsNamespaceScoped,
# Kubernetes up to 1.36) marks cluster-scoped in any of its versions (keyed here by kind
# alone: a namespace read as none finds more duplicates, never fewer); the API server drops
# it for Cilium's cluster-wide policy too, which kustomize does not know (it keys that one by
# namespace: failing closed here).
_CLUSTER_SCOPED_KINDS = frozenset((
    NAMESPACE_KIND, CLUSTERWIDE_POLICY_KIND,
    "APIService", "CertificateSigningRequest", "ClusterCIDR", "ClusterRole",
    "ClusterRoleBinding", "ClusterTrustBundle", "ComponentStatus", "CSIDriver", "CSINode",
    "CustomResourceDefinition", "DeviceClass", "DeviceTaintRule", "FlowSchema", "IngressClass",
    "IPAddress", "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding",
    "MutatingWebhookConfiguration", "Node", "NodeProxyOptions", "PersistentVolume",
    "PodSecurityPolicy", "PriorityClass", "PriorityLevelConfiguration", "ResourceClass",
    "ResourcePoolStatusRequest", "ResourceSlice", "RuntimeClass", "ServiceCIDR",
    "StorageClass", "StorageVersion", "StorageVersionMigration", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding", "ValidatingWebhookConfiguration", "VolumeAttachment",
    "VolumeAttributesClass"))


def _is_list(data: object) -> bool:
    """A document kustomize replaces with its ``items``, each applied as its own object
    (api/resource/factory.go: any kind ending in ``List``; one without items is empty)."""
    if not isinstance(data, dict):
        return False
    kind = data.get("kind")
    return isinstance(kind, str) and kind.endswith("List") and (kind == "List"
                                                                or "items" in data)


def _reads_plainly(data: object) -> bool:
    """Whether a document is one object (not a List, :func:`_is_list`) that, where verify
    models its kind, the API server applies as that kind (:func:`_application_errors`):
    what :meth:`_ActualBuilder._file` checks, found without a finding."""
    if not isinstance(data, dict) or _is_list(data):
        return False
    kind = data.get("kind")
    return type(kind) is not str or kind not in SERVED_API_VERSIONS \
        or not _application_errors(data, kind)


def _application_errors(data: dict[str, Any], kind: str) -> tuple[tuple[PathKey, str], ...]:
    """(path, message) of each reason the API server does not apply ``data`` as the ``kind``
    verify models it as: an apiVersion it does not serve that kind under (the object is
    another API's, or refused), a ``metadata.name`` or ``metadata.namespace`` that is not a
    string (the API server rejects the object)."""
    errors: list[tuple[PathKey, str]] = []
    api, served = data.get("apiVersion"), SERVED_API_VERSIONS[kind]
    if api not in served:
        errors.append((("apiVersion",),
                       f"expected apiVersion {' or '.join(served)} for a {kind}, found "
                       f"{api if isinstance(api, str) else _shown(api)}: the API server does "
                       f"not apply it as a {kind} (another API's object, or none), so verify "
                       "does not count it"))
    meta = data.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    for key in ("name", "namespace"):
        value = meta.get(key)
        # a null namespace is none (kubectl drops it); a null name is an empty one
        if key not in meta or isinstance(value, str) or (key, value) == ("namespace", None):
            continue
        errors.append((("metadata", key),
                       f"expected metadata.{key} of the {kind} to be a string, found "
                       f"{'null' if value is None else _shown(value)}, which the API server "
                       "rejects (quote it), so verify does not count the object"))
    return tuple(errors)


def _object_id(data: object) -> tuple[str, str, str, str] | None:
    """What names one object of a cluster: (kind, API group, namespace, name), or None for a
    document that names no object (verify reports those where it reads them).

    kustomize's id is group, version, kind, namespace (unset is ``default``; none for a
    cluster-scoped kind) and name; the version is left out here on purpose (failing closed):
    the API server serves one object under each version of its group and kind, so two
    versions of one name are one object of which only the last applied survives."""
    if not isinstance(data, dict):
        return None
    kind, meta, api = data.get("kind"), data.get("metadata"), data.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(meta, dict) \
            or not isinstance(meta.get("name"), str):
        return None
    group = api.rpartition("/")[0] if isinstance(api, str) else repr(api)
    namespace = meta.get("namespace")
    if kind in _CLUSTER_SCOPED_KINDS:
        namespace = ""
    elif namespace is None or namespace == "":
        namespace = "default"
    return kind, group, namespace if isinstance(namespace, str) else repr(namespace), \
        meta["name"]


def _in_cluster_root(relpath: str) -> bool:
    """A YAML file directly in a cluster's folder (``clusters/<domain>/<cluster>/``)."""
    return relpath.count("/") == 3 and relpath.endswith((".yaml", ".yml"))


def _display(root: str, relpath: str) -> str:
    """How messages name a rendered file: under the output folder's name (``root``)."""
    return f"{root}/{relpath}" if root else relpath


def _blocks_or_none(text: str) -> tuple[Block, ...]:
    try:
        return cidr_blocks(text)
    except ValueError:
        return ()


# What a ServiceCopy reads from a Service's data: namespace, name, selector, global, shared,
# ports, exposed, headless (the fields between its cluster and its place)
_ServiceReading = tuple[str, str, tuple[tuple[str, str], ...] | None, bool, bool, PortSet,
                        PortSet, str]


def _service_findings(data: dict[str, Any]) -> tuple[
        _ServiceReading | None, tuple[str, object] | None, tuple[tuple[PathKey, str], ...]]:
    """What depends on a Service's data only: its reading (:func:`_service_reading`), its
    unmodelled affinity (:func:`.services.unmodelled_affinity`) and the errors at what
    verify cannot read (:func:`_service_errors`)."""
    reading = _service_reading(data)
    meta = data.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    affinity = unmodelled_affinity(annotations) \
        if reading is not None and isinstance(annotations, dict) else None
    return reading, affinity, () if _plainly_stored(data) else tuple(_service_errors(data))


def _plainly_stored(data: dict[str, Any]) -> bool:
    """Whether a Service has none of :func:`_service_errors`' errors, checked the quick way
    most Services (every one meshplan writes) pass: labels and annotations null or mappings
    of strings, no proxy-name label, a string clusterIP or none, no clusterIPs. False says
    only that the full check must run."""
    meta, spec = data.get("metadata"), data.get("spec")
    if type(meta) is not dict or type(spec) is not dict:
        return False
    labels, annotations = meta.get("labels"), meta.get("annotations")
    return _strings_only(labels) and _strings_only(annotations) \
        and (labels is None or SERVICE_PROXY_NAME_LABEL not in labels) \
        and type(spec.get("clusterIP", "")) is str and "clusterIPs" not in spec


def _strings_only(values: object) -> bool:
    """Null, or a mapping whose every value is a string."""
    return values is None or (type(values) is dict
                              and all(type(value) is str for value in values.values()))


def _service_errors(data: dict[str, Any]) -> Iterator[tuple[PathKey, str]]:
    """(path, message) of each error in a Service's data: its labels or annotations not a
    mapping, a label or annotation value that is not a string, a ``spec.clusterIP`` or
    ``clusterIPs`` the API server rejects (:func:`_cluster_ip_errors`; verify does not guess
    what Cilium would read from an object Kubernetes does not store as written); the label
    :data:`.services.SERVICE_PROXY_NAME_LABEL` on a Service a proxy serves (not an
    ExternalName): verify does not model the agent's setting it depends on, and reads the
    Service as not served."""
    meta = data.get("metadata")
    for key in ("labels", "annotations"):  # null is none; anything else the API rejects
        value = meta.get(key) if isinstance(meta, dict) else None
        if value is not None and not isinstance(value, dict):
            yield (("metadata", key),
                   f"expected metadata.{key} of Service {_service_name(data)} to be a mapping, "
                   f"found {_shown(value)}, which the API server rejects: it is a map of "
                   "strings to strings (verify reads it as empty)")
    labels = meta.get("labels") if isinstance(meta, dict) else None
    spec = data.get("spec")
    proxied = not isinstance(spec, dict) or spec.get("type") != "ExternalName"
    if proxied and isinstance(labels, dict) and SERVICE_PROXY_NAME_LABEL in labels:
        yield (("metadata", "labels", SERVICE_PROXY_NAME_LABEL),
               f"expected the Service {_service_name(data)} to be handled by Cilium, found the "
               f"label {SERVICE_PROXY_NAME_LABEL}: Cilium handles a Service so labelled only "
               "when the label equals its agent's k8s-service-proxy-name (empty by default: "
               "it then handles only the Services without the label), which the rendered tree "
               "does not say; verify does not model it and counts the Service as not served")
    for field, kind in (("labels", "label"), ("annotations", "annotation")):
        yield from _not_strings(data, field, kind)
    if proxied and isinstance(spec, dict):
        yield from _cluster_ip_errors(spec, _service_name(data))


def _cluster_ip_errors(spec: dict[str, Any], service: str) -> Iterator[tuple[PathKey, str]]:
    """An error at a Service's ``spec.clusterIP`` that is not a string and at a
    ``spec.clusterIPs`` the API server rejects (its validation of the two: clusterIPs must be
    empty when clusterIP is, else begin with it). Cilium reads whether a Service is headless
    from clusterIP only, so a clusterIPs that alone says None must not pass unseen."""
    ip, ips = spec.get("clusterIP"), spec.get("clusterIPs")
    if ip is not None and not isinstance(ip, str):
        yield (("spec", "clusterIP"),
               f"expected spec.clusterIP of Service {service} to be None or an IP address, "
               f"found {_shown(ip)}, which the API server rejects: it is a string; quote it")
        return
    if ips is None:
        return
    path: PathKey = ("spec", "clusterIPs")
    expected = f"expected spec.clusterIPs of Service {service}"
    if not isinstance(ips, list) or not all(isinstance(one, str) for one in ips):
        yield (path, f"{expected} to be a list of strings, found {_shown(ips)}, which the API "
                     "server rejects")
    elif ips and not ip:
        yield (path, f"{expected} to be absent, found [{', '.join(ips)}] without "
                     "spec.clusterIP, which the API server rejects (clusterIPs must be empty "
                     "when clusterIP is not specified); Cilium reads whether a Service is "
                     "headless from spec.clusterIP only: give clusterIP their first value")
    elif ips and ips[0] != ip:
        yield (path, f"{expected} to begin with its spec.clusterIP {ip}, found "
                     f"[{', '.join(ips)}], which the API server rejects (the first value must "
                     "match clusterIP); Cilium reads whether a Service is headless from "
                     "spec.clusterIP only")


def _not_strings(data: dict[str, Any], field: str, kind: str) -> Iterator[tuple[PathKey, str]]:
    """An error at each value of the Service's ``metadata.<field>`` that is not a string
    (``kind``: how a message names one of its keys)."""
    meta = data.get("metadata")
    values = meta.get(field) if isinstance(meta, dict) else None
    if not isinstance(values, dict):
        return
    for key, value in values.items():
        if isinstance(value, str):
            continue
        service = _service_name(data)  # named when it has an error only (rare)
        if value is None:
            found = (f"null, which kubectl apply reads as removing the {kind} and the API "
                     "server as an empty string")
        else:
            found = (f"{_shown(value)}, which the API server "
                     f"rejects: metadata.{field} is a map of strings to strings")
        yield (("metadata", field, _key_text(key)),
               f"expected the value of {kind} {_key_text(key)} of Service {service} to be "
               f"a string, found {found}; quote it")


def _shown(value: object) -> str:
    """A value as YAML writes it, with its kind (``true (a boolean)``, ``2020-01-01 (a
    date)``); a string, a mapping, a sequence or a binary value by its kind only."""
    if isinstance(value, bool):
        return f"{'true' if value else 'false'} (a boolean)"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{'.nan' if math.isnan(value) else '-.inf' if value < 0 else '.inf'} (a number)"
    if isinstance(value, int | float):
        return f"{value!r} (a number)"
    if isinstance(value, datetime.datetime):  # before date: a datetime is a date too
        return f"{value.isoformat(' ')} (a timestamp)"
    if isinstance(value, datetime.date):
        return f"{value.isoformat()} (a date)"
    kinds = ((str, "a string"), (dict, "a mapping"), (list, "a sequence"),
             (bytes, "a binary value"))
    return next((kind for cls, kind in kinds if isinstance(value, cls)),
                f"a value of YAML type {type(value).__name__}")


def _key_text(key: object) -> str:
    """A mapping's key as YAML writes it (``null``, ``true``), a string as it is."""
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _service_name(data: dict[str, Any]) -> str:
    return f"{_meta_text(data, 'namespace', 'default')}/{_meta_text(data, 'name', '')}"


def _meta_text(data: dict[str, Any], key: str, default: str) -> str:
    meta = data.get("metadata")
    value = meta.get(key) if isinstance(meta, dict) else None
    return str(value) if value else default


def _service_reading(data: dict[str, Any]) -> _ServiceReading | None:
    """The fields of a :class:`ServiceCopy` that depend on the Service's data only, or None
    when it does not load-balance."""
    meta = data.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    spec = data.get("spec")
    if not isinstance(spec, dict):
        spec = {}
    if spec.get("type", "ClusterIP") == "ExternalName" or not meta.get("name"):
        return None
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}
    selector = spec.get("selector")
    ports = exposed = NO_PORTS
    for entry in spec.get("ports") or ():
        if isinstance(entry, dict):
            port = entry.get("port")
            target = entry.get("targetPort", port)
            if isinstance(target, int):
                one = ports_of(str(entry.get("protocol", "TCP")), target)
                ports |= one
                if port == target:  # the name's port reaches the pods' own
                    exposed |= one
    # An empty selector is none: Kubernetes manages no endpoints for it (ServiceSpec.selector:
    # "If empty or not present, ... an external process managing its endpoints")
    labels = meta.get("labels")
    if not isinstance(labels, dict):
        labels = {}
    if SERVICE_PROXY_NAME_LABEL in labels:  # not Cilium's by default: an error, not served
        return None
    is_global, shared = cilium_service_flags(annotations)
    return (str(meta.get("namespace") or "default"), str(meta["name"]),
            tuple(sorted((str(k), str(v)) for k, v in selector.items()))
            if isinstance(selector, dict) and selector else None,
            # the releases whose watch leaves out a Service labelled headless export none of
            # its pods (fail closed: the later ones do)
            is_global, shared and HEADLESS_LABEL not in labels, ports, exposed,
            headless_reason(labels, spec.get("clusterIP")))


class RenderedDocument(NamedTuple):
    """A rendered object of one cluster's Kustomize root, for another reader (:mod:`.istio`)."""

    document: Document
    domain: str
    cluster: str


class ActualConnectivity(NamedTuple):
    model: Connectivity
    problems: tuple[Diagnostic, ...]
    policies: int  # how many policy objects were read
    services: tuple[ServiceCopy, ...]  # the Services that load-balance
    istio_documents: tuple[RenderedDocument, ...] = ()  # PeerAuthentications, AuthorizationPolicies


def actual_connectivity(
    inventory: Inventory, endpoints: Sequence[Endpoint], files: Mapping[str, bytes],
    display_root: str = DEFAULT_OUTPUT_DIR, only: Collection[tuple[str, str]] | None = None,
    parsed: ParseCache | None = None, reader: RenderedReader | None = None,
    index: EndpointIndex | None = None,
) -> ActualConnectivity:
    """The connectivity the rendered files allow; problems reading them; what was read.

    ``only``: read just these clusters' folders (the pull-request picture reads the clusters a
    change touches and the ones their flows need); the others enforce nothing in the model.
    ``parsed``: files already parsed (by path and content), shared by several readings.
    ``reader``: how files are read (default: the positioned parser, no cache).
    ``index``: the :class:`.endpoints.EndpointIndex` of ``endpoints``, when already built.
    """
    builder = _ActualBuilder(inventory, endpoints, files, display_root, only, parsed, reader,
                             index)
    model = builder.build()
    return ActualConnectivity(model, tuple(builder.problems), builder.policies,
                              tuple(builder.services), tuple(builder.istio_documents))
