"""The reader of rendered Istio security YAML: what the identity layer allows, by Istio's rules.

It models the sidecars of Istio 1.30 (``security.istio.io/v1``), not meshplan's intentions:

* **PeerAuthentication**: a workload's mode, per port, is its workload-wide policy's (a
  ``selector`` in its namespace; ``portLevelMtls`` by the workload's port), else its
  namespace's (no selector), else the mesh's (no selector, in the root namespace
  ``istio-system``); ``UNSET`` inherits; with none at all it is PERMISSIVE. A selector policy
  in the root namespace is ignored by Istio. Within one scope Istio applies the *oldest*
  policy (``creationTimestamp``), which rendered YAML does not carry: two at one scope are an
  error, and the weakest of them is assumed.
* **AuthorizationPolicy**: CUSTOM (an external authorizer, not evaluated: a warning, counted
  as not denying), then DENY, then ALLOW: a connection is refused when a DENY rule matches;
  else allowed when no ALLOW policy applies to the workload, else only when an ALLOW rule
  matches. A policy without rules matches nothing (an ALLOW one is allow-nothing). In the root
  namespace a policy applies to every namespace; ``selector`` by pod labels, none: every
  workload of its namespace.
* **Identity needs mutual TLS**: principals, namespaces, service accounts and trust domains
  come from the client's certificate. A client outside the mesh (a cluster that is no Istio
  member, a CIDR) or to a DISABLE port is plaintext and has none of them: an ALLOW by
  principal never admits it, a DENY by principal never refuses it (so meshplan never writes
  one, and one is an error here), and STRICT refuses plaintext outright.
* Sidecars carry TCP: UDP and SCTP pass this layer. Strings match exactly, by prefix
  ``x*``, suffix ``*x`` or presence ``*``. A principal whose trust domain is ``cluster.local``
  means the local trust domain to sidecars (an error here: ambient's ztunnel does not read the
  shorthand, and meshplan always writes the trust domain).

Every workload (service or raw-label client) of an Istio member cluster is assumed to run a
sidecar; kube-dns and the east-west gateways are not workloads. A service without a
``serviceAccount`` has an unknown one: only patterns that match whatever it is (``.../sa/*``)
match it. Not modelled, and reported: ``targetRef(s)`` (waypoints; such a policy does not
apply to sidecars), ``requestPrincipals`` (JWT; never on TCP), ``when`` conditions, ``ipBlocks``
and ``remoteIpBlocks`` for pods (their addresses are not known; they match address sources
only), and HTTP operations (an ALLOW rule with methods, paths or hosts never matches a TCP
connection, a DENY rule with them refuses its ports).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ..diagnostics import Diagnostic, Location, error, notice, warning
from ..load.document import Document, PathKey, format_path, place
from ..model import Inventory
from ..vocabulary import (
    AUTHORIZATION_POLICY_KIND,
    DEFAULT_CLUSTER_DOMAIN,
    ISTIO_ROOT_NAMESPACE,
    PEER_AUTHENTICATION_KIND,
    SOURCE_ANNOTATION,
)
from .addresses import Block, cidr_blocks
from .cilium import RenderedDocument
from .connectivity import Origin
from .endpoints import Endpoint
from .ports import ALL_PORTS, NO_PORTS, PortSet, ports_of

Where = tuple[str, str]  # (domain, cluster)
TCP = ports_of("TCP", None)
NOT_TCP = ALL_PORTS - TCP
MODES = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")
STRENGTH = {"DISABLE": 0, "PERMISSIVE": 1, "STRICT": 2, "UNSET": -1}
ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")
IDENTITY_FIELDS = ("principals", "notPrincipals", "namespaces", "notNamespaces",
                   "serviceAccounts", "notServiceAccounts", "trustDomains", "notTrustDomains")
ADDRESS_FIELDS = ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks")
SOURCE_FIELDS = (*IDENTITY_FIELDS, *ADDRESS_FIELDS, "requestPrincipals",
                 "notRequestPrincipals")
HTTP_FIELDS = ("hosts", "notHosts", "methods", "notMethods", "paths", "notPaths")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class PeerAuthn:
    namespace: str
    selector: Mapping[str, str] | None  # None: namespace-wide (or mesh-wide in the root)
    mode: str
    port_modes: Mapping[int, str]
    origin: Origin


@dataclass(frozen=True)
class Source:
    """One ``from[].source``: every field it writes must match (None: not written)."""

    fields: Mapping[str, tuple[str, ...]]
    blocks: Mapping[str, tuple[Block, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class AuthzRule:
    sources: tuple[Source, ...] | None  # None: ``from`` not written, every source
    ports: PortSet  # TCP ports of ``to`` (every TCP port when not written)
    http: bool = False  # HTTP operations: never on a TCP connection
    conditional: bool = False  # ``when`` conditions (not modelled)


@dataclass(frozen=True)
class AuthzPolicy:
    namespace: str
    selector: Mapping[str, str] | None
    action: str
    rules: tuple[AuthzRule, ...]
    origin: Origin


@dataclass(frozen=True)
class Client:
    """What the server's sidecar knows of the client: its identity over mutual TLS."""

    mtls: bool
    trust_domain: str = ""
    namespace: str = ""
    service_account: str | None = None  # None: not known
    block: Block | None = None  # an address source's addresses


PLAINTEXT = Client(False)


@dataclass
class ClusterPolicies:
    authentications: list[PeerAuthn] = field(default_factory=list)
    authorizations: list[AuthzPolicy] = field(default_factory=list)


# --------------------------------------------------------------------------- matching


def string_matches(pattern: str, value: str) -> bool:
    """Istio's string match: exact, prefix ``x*``, suffix ``*x``, presence ``*``."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def principal_matches(pattern: str, client: Client, local_trust_domain: str) -> bool:
    """Whether ``pattern`` matches the client's principal ``<td>/ns/<ns>/sa/<sa>``.

    ``cluster.local/`` means the local trust domain (the server's). With an unknown service
    account only a pattern that matches whatever it is matches (``<td>/ns/<ns>/sa/*``)."""
    if not client.mtls:
        return False
    if pattern.startswith(DEFAULT_CLUSTER_DOMAIN + "/"):
        pattern = local_trust_domain + pattern[len(DEFAULT_CLUSTER_DOMAIN):]
    known = f"{client.trust_domain}/ns/{client.namespace}/sa/"
    if client.service_account is not None:
        return string_matches(pattern, known + client.service_account)
    if pattern == "*":
        return True
    return pattern.endswith("*") and not pattern.startswith("*") and \
        known.startswith(pattern[:-1])


def _identity_field(name: str, patterns: Sequence[str], client: Client,
                    local_trust_domain: str) -> bool:
    """Whether the client satisfies one identity field of a source (mTLS only; a ``not``
    field holds for a plaintext client, which has no identity to exclude)."""
    positive = name.removeprefix("not")
    positive = positive[0].lower() + positive[1:]
    if not client.mtls:
        found = False
    elif positive == "principals":
        found = any(principal_matches(p, client, local_trust_domain) for p in patterns)
    elif positive == "namespaces":
        found = any(string_matches(p, client.namespace) for p in patterns)
    elif positive == "serviceAccounts":
        found = client.service_account is not None and \
            f"{client.namespace}/{client.service_account}" in patterns
    else:  # trustDomains
        found = any(string_matches(p, client.trust_domain) for p in patterns)
    return not found if name.startswith("not") else found


def _address_field(name: str, blocks: Sequence[Block], client: Client) -> bool:
    covered = client.block is not None and any(
        v == client.block[0] and lo <= client.block[1] and client.block[2] <= hi
        for v, lo, hi in blocks)
    return not covered if name.startswith("not") else covered


def source_matches(source: Source, client: Client, local_trust_domain: str) -> bool:
    for name, values in source.fields.items():
        if name in ("requestPrincipals", "notRequestPrincipals"):
            if name == "requestPrincipals":
                return False  # no request principal on a TCP connection
            continue
        if not _identity_field(name, values, client, local_trust_domain):
            return False
    return all(_address_field(name, blocks, client) for name, blocks in source.blocks.items())


def rule_matches(rule: AuthzRule, action: str, client: Client, local_trust_domain: str) -> bool:
    # An ALLOW needing HTTP attributes (or conditions verify does not read) never matches; a
    # DENY with them is taken to match (Istio treats missing attributes as a match).
    if (rule.http or rule.conditional) and action == "ALLOW":
        return False
    if rule.sources is None:
        return True
    return any(source_matches(s, client, local_trust_domain) for s in rule.sources)


# --------------------------------------------------------------------------- the layer


class IdentityLayer:
    """The identity layer of every Istio member cluster, and its verdict on any flow."""

    def __init__(self, inventory: Inventory, endpoints: Sequence[Endpoint],
                 policies: Mapping[Where, ClusterPolicies]) -> None:
        self.endpoints = tuple(endpoints)
        self.policies = policies
        self.trust_domains: dict[Where, str] = {}
        for domain in inventory.domains:
            for cluster in domain.clusters:
                if inventory.is_istio_member(cluster) and cluster.istio is not None:
                    self.trust_domains[(domain.name, cluster.name)] = \
                        cluster.istio.trust_domain or DEFAULT_CLUSTER_DOMAIN
        self._modes: dict[int, tuple[str, dict[int, str]]] = {}
        self._applicable: dict[int, tuple[list[AuthzPolicy], list[AuthzPolicy], bool]] = {}
        self._named_cache: dict[tuple[int, str], frozenset[int] | None] = {}
        self._kept: list[AuthzPolicy] = []

    @property
    def active(self) -> bool:
        return bool(self.trust_domains)

    def applies(self, index: int) -> bool:
        """Whether the destination ``index`` is a workload with a sidecar (an Istio member's
        service or raw-label client)."""
        e = self.endpoints[index]
        return e.is_workload and (e.domain, e.cluster) in self.trust_domains

    def client(self, index: int) -> Client:
        """The client ``index`` as a server sees it over mutual TLS (PLAINTEXT if it is no
        sidecar workload)."""
        e = self.endpoints[index]
        td = self.trust_domains.get((e.domain, e.cluster))
        if not e.is_workload or td is None:
            return Client(False, block=None if e.is_pod else e.block)
        return Client(True, td, e.namespace, e.service_account)

    # -- mutual TLS -----------------------------------------------------------------------

    def modes(self, index: int) -> tuple[str, dict[int, str]]:
        """(mode of every port, modes of single ports) of workload ``index``."""
        found = self._modes.get(index)
        if found is None:
            found = self._modes[index] = self._compose(index)
        return found

    def _compose(self, index: int) -> tuple[str, dict[int, str]]:
        e = self.endpoints[index]
        cluster = self.policies.get((e.domain, e.cluster), ClusterPolicies())
        labels = dict(e.labels)
        mesh = [p for p in cluster.authentications
                if p.namespace == ISTIO_ROOT_NAMESPACE and p.selector is None]
        namespace = [p for p in cluster.authentications
                     if p.namespace == e.namespace and p.selector is None
                     and e.namespace != ISTIO_ROOT_NAMESPACE]
        workload = [p for p in cluster.authentications
                    if p.namespace == e.namespace and p.namespace != ISTIO_ROOT_NAMESPACE
                    and p.selector is not None and _selects(p.selector, labels)]
        mode = "UNSET"
        ports: dict[int, str] = {}
        for scope in (mesh, namespace, workload):
            if not scope:
                continue
            weakest = min(scope, key=lambda p: STRENGTH.get(p.mode, 3))
            if weakest.mode != "UNSET":
                mode = weakest.mode
            ports = dict(weakest.port_modes) if weakest.selector is not None else ports
        return (mode if mode != "UNSET" else "PERMISSIVE",
                {port: m for port, m in ports.items() if m != "UNSET"})

    def strict_ports(self, index: int) -> PortSet:
        """The TCP ports of workload ``index`` that refuse plaintext (STRICT)."""
        if not self.applies(index):
            return NO_PORTS
        mode, ports = self.modes(index)
        out = TCP if mode == "STRICT" else NO_PORTS
        for port, port_mode in ports.items():
            single = ports_of("TCP", port)
            out = (out | single) if port_mode == "STRICT" else (out - single)
        return out

    def _ports_by_mode(self, index: int) -> dict[str, PortSet]:
        mode, ports = self.modes(index)
        out = {mode: TCP}
        for port, port_mode in ports.items():
            single = ports_of("TCP", port)
            out = {m: p - single for m, p in out.items()}
            out[port_mode] = out.get(port_mode, NO_PORTS) | single
        return out

    # -- authorization --------------------------------------------------------------------

    def _policies(self, index: int) -> tuple[list[AuthzPolicy], list[AuthzPolicy], bool]:
        """(DENY policies, ALLOW policies, whether any CUSTOM one applies) of ``index``."""
        found = self._applicable.get(index)
        if found is None:
            e = self.endpoints[index]
            cluster = self.policies.get((e.domain, e.cluster), ClusterPolicies())
            labels = dict(e.labels)
            applying = [p for p in cluster.authorizations
                        if p.namespace in (e.namespace, ISTIO_ROOT_NAMESPACE)
                        and (p.selector is None or _selects(p.selector, labels))]
            found = ([p for p in applying if p.action == "DENY"],
                     [p for p in applying if p.action == "ALLOW"],
                     any(p.action == "CUSTOM" for p in applying))
            self._applicable[index] = found
        return found

    def authorize(self, destination: int, client: Client) -> PortSet:
        """The TCP ports of ``destination`` its AuthorizationPolicies admit ``client`` on."""
        e = self.endpoints[destination]
        local = self.trust_domains[(e.domain, e.cluster)]
        denies, allows, _custom = self._policies(destination)
        denied = NO_PORTS
        for policy in denies:
            for rule in policy.rules:
                if rule_matches(rule, "DENY", client, local):
                    denied |= rule.ports
        if not allows:
            allowed = TCP
        else:
            allowed = NO_PORTS
            for policy in allows:
                for rule in policy.rules:
                    if rule_matches(rule, "ALLOW", client, local):
                        allowed |= rule.ports
        return allowed - denied

    def authorization(self, source: int, destination: int) -> PortSet:
        """What the AuthorizationPolicies alone admit, as if the client used mutual TLS when it
        can (the part network-config-analyzer models), plus every non-TCP port."""
        if not self.applies(destination):
            return ALL_PORTS
        return self.authorize(destination, self.client(source)) | NOT_TCP

    def flow(self, source: int, destination: int) -> PortSet:
        """What this layer allows from ``source`` to ``destination``: every port when the
        destination has no sidecar; else non-TCP, and the TCP ports its PeerAuthentication
        accepts the client's connection on and its AuthorizationPolicies admit."""
        if not self.applies(destination):
            return ALL_PORTS
        client = self.client(source)
        allowed = NOT_TCP
        for mode, ports in self._ports_by_mode(destination).items():
            if not ports:
                continue
            if client.mtls and mode != "DISABLE":
                allowed |= self.authorize(destination, client) & ports
            elif mode != "STRICT":
                plain = PLAINTEXT if client.mtls else client
                allowed |= self.authorize(destination, plain) & ports
        return allowed

    def protected(self, source: int, destination: int) -> PortSet:
        """The TCP ports of a flow carried over mutual TLS the server requires (STRICT) from a
        sidecar client: what "mTLS-protected" means in ``meshplan graph``."""
        if not self.client(source).mtls:
            return NO_PORTS
        return self.strict_ports(destination)

    # -- classes of clients -----------------------------------------------------------------
    #
    # To a destination's policies, a client is its identity (mTLS or not, trust domain,
    # namespace, service account, addresses). The clients no rule source of those policies
    # can match form one class per mTLS-or-not: they all get :meth:`unnamed`. The others are
    # found through an index of principals for the sources meshplan writes (exact principals
    # only); any other source (patterns, namespaces, negations, addresses) names every client.

    @cached_property
    def _principals(self) -> dict[str, tuple[int, ...]]:
        found: dict[str, list[int]] = {}
        for i in range(len(self.endpoints)):
            client = self.client(i)
            if client.mtls and client.service_account is not None:
                found.setdefault(f"{client.trust_domain}/ns/{client.namespace}/sa/"
                                 f"{client.service_account}", []).append(i)
        return {k: tuple(v) for k, v in found.items()}

    def named_clients(self, destination: int) -> frozenset[int] | None:
        """The clients some rule source of ``destination``'s policies may match (None: every
        client may be)."""
        e = self.endpoints[destination]
        local = self.trust_domains[(e.domain, e.cluster)]
        denies, allows, _ = self._policies(destination)
        found: set[int] = set()
        for policy in (*denies, *allows):
            named = self._named_by_policy(policy, local)
            if named is None:
                return None
            found |= named
        return frozenset(found)

    def _named_by_policy(self, policy: AuthzPolicy, local: str) -> frozenset[int] | None:
        key = (id(policy), local)
        if key not in self._named_cache:
            self._named_cache[key] = _clients_named(policy, local, self._principals)
            self._kept.append(policy)  # keeps id(policy) unique while cached
        return self._named_cache[key]

    def _authorize_unnamed(self, destination: int) -> PortSet:
        """:meth:`authorize` for a client no rule source matches: only rules without ``from``
        (every source) apply."""
        denies, allows, _ = self._policies(destination)
        denied = NO_PORTS
        for policy in denies:
            for rule in policy.rules:
                if rule.sources is None:
                    denied |= rule.ports
        allowed = TCP if not allows else NO_PORTS
        for policy in allows:
            for rule in policy.rules:
                if rule.sources is None and not (rule.http or rule.conditional):
                    allowed |= rule.ports
        return allowed - denied

    def unnamed(self, destination: int, mtls: bool) -> PortSet:
        """:meth:`flow` from every client outside :meth:`named_clients` that uses mutual TLS
        (``mtls``) or does not."""
        if not self.applies(destination):
            return ALL_PORTS
        anyone = self._authorize_unnamed(destination)
        allowed = NOT_TCP
        for mode, ports in self._ports_by_mode(destination).items():
            if not ports:
                continue
            if mtls and mode != "DISABLE":
                allowed |= anyone & ports
            elif mode != "STRICT":
                plain = self.authorize(destination, PLAINTEXT) if mtls else anyone
                allowed |= plain & ports
        return allowed

    def origins(self, destination: int) -> list[Origin]:
        """The policies that decide who reaches ``destination`` (for messages)."""
        denies, allows, _ = self._policies(destination)
        return [p.origin for p in (*allows, *denies)]

    def custom(self, destination: int) -> bool:
        return self._policies(destination)[2]


def _clients_named(policy: AuthzPolicy, local_trust_domain: str,
                   principals: Mapping[str, tuple[int, ...]]) -> frozenset[int] | None:
    """The clients a policy's rule sources can match, by exact principal (None: any client,
    for any source that is not a list of exact principals)."""
    found: set[int] = set()
    for rule in policy.rules:
        for source in rule.sources or ():
            if "requestPrincipals" in source.fields:
                continue  # never matches a TCP connection
            patterns = source.fields.get("principals")
            if set(source.fields) != {"principals"} or source.blocks or patterns is None or \
                    any("*" in p for p in patterns):
                return None
            for pattern in patterns:
                if pattern.startswith(DEFAULT_CLUSTER_DOMAIN + "/"):
                    pattern = local_trust_domain + pattern[len(DEFAULT_CLUSTER_DOMAIN):]
                found.update(principals.get(pattern, ()))
    return frozenset(found)


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------- the reader


def read_identity_layer(inventory: Inventory, endpoints: Sequence[Endpoint],
                        documents: Iterable[RenderedDocument]
                        ) -> tuple[IdentityLayer, list[Diagnostic]]:
    """The identity layer the rendered Istio objects enforce, and what reading them found."""
    reader = _Reader(inventory)
    for item in documents:
        reader.read(item)
    return IdentityLayer(inventory, endpoints, reader.policies), reader.finish()


class _Reader:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.members = {(d.name, c.name) for d in inventory.domains for c in d.clusters
                        if inventory.is_istio_member(c)}
        self.policies: dict[Where, ClusterPolicies] = {}
        self.problems: list[Diagnostic] = []
        # (cluster, namespace, selector-or-None) -> the PeerAuthentications at that scope
        self.scopes: dict[tuple[Where, str, str], list[tuple[str, Origin]]] = {}

    def finish(self) -> list[Diagnostic]:
        for (where, namespace, scope), found in sorted(self.scopes.items()):
            if len(found) < 2 or scope != "":
                continue
            names = ", ".join(name for name, _ in found)
            what = "mesh" if namespace == ISTIO_ROOT_NAMESPACE else f"namespace {namespace}"
            self.problems.append(error(
                found[1][1].location, "", f"expected one PeerAuthentication at the {what} scope of "
                f"{where[0]}/{where[1]}, found {len(found)} ({names}): Istio applies the "
                "oldest, which rendered YAML cannot tell; verify assumes the weakest"))
        return self.problems

    def read(self, item: RenderedDocument) -> None:
        doc, where = item.document, (item.domain, item.cluster)
        data = doc.data
        kind = str(data.get("kind"))
        meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        assert isinstance(meta, dict)
        name, namespace = str(meta.get("name", "?")), meta.get("namespace")
        annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
        assert isinstance(annotations, dict)
        source = annotations.get(SOURCE_ANNOTATION)
        label = (f"{kind} {namespace or '?'}/{name} in {where[0]}/{where[1]}"
                 + (f" (from {source})" if source else ""))
        report = _Report(self.problems, doc, label)
        if where not in self.members:
            report(("kind",), "expected Istio objects only in Istio members' folders: this "
                   "cluster runs no Istio, so nothing enforces it (not counted)", "warning")
            return
        if not namespace:
            report(("metadata",), "expected metadata.namespace, found none: the object lands "
                   "in whatever namespace the applier uses (not counted)", "error")
            return
        spec = data.get("spec") if isinstance(data.get("spec"), dict) else None
        if spec is None:
            spec = {}
        cluster = self.policies.setdefault(where, ClusterPolicies())
        origin = Origin(place(doc, ("metadata", "name")), label)
        if kind == PEER_AUTHENTICATION_KIND:
            found = _peer_authentication(str(namespace), spec, origin, report)
            if found is not None:
                cluster.authentications.append(found)
                scope = "" if found.selector is None else repr(sorted(found.selector.items()))
                self.scopes.setdefault((where, str(namespace), scope), []).append(
                    (name, origin))
        elif kind == AUTHORIZATION_POLICY_KIND:
            policy = _authorization_policy(str(namespace), spec, origin, report)
            if policy is not None:
                cluster.authorizations.append(policy)


class _Report:
    def __init__(self, problems: list[Diagnostic], doc: Document, label: str) -> None:
        self.problems, self.doc, self.label = problems, doc, label

    def __call__(self, path: PathKey, message: str, severity: str = "warning") -> None:
        make: Callable[[Location, str, str], Diagnostic] = {
            "error": error, "warning": warning, "notice": notice}[severity]
        self.problems.append(make(self.doc.location(path), format_path(path),
                                  f"{self.label}: {message}"))


def _selector(spec: Mapping[str, Any], report: _Report, path: PathKey
              ) -> tuple[Mapping[str, str] | None, bool]:
    """(matchLabels or None, readable)."""
    if "selector" not in spec:
        return None, True
    selector = spec["selector"]
    if not isinstance(selector, dict) or set(selector) - {"matchLabels"}:
        report(path, "expected selector: {matchLabels}, found something else: not counted",
               "error")
        return None, False
    labels = selector.get("matchLabels") or {}
    if not isinstance(labels, dict):
        report((*path, "matchLabels"), "expected a mapping: not counted", "error")
        return None, False
    return {str(k): str(v) for k, v in labels.items()}, True


def _peer_authentication(namespace: str, spec: Mapping[str, Any], origin: Origin,
                         report: _Report) -> PeerAuthn | None:
    for key in sorted(set(spec) - {"selector", "mtls", "portLevelMtls"}):
        report(("spec", key), f"'{key}' is not modelled by verify: ignored")
    selector, readable = _selector(spec, report, ("spec", "selector"))
    if not readable:
        return None
    mtls = spec.get("mtls") if isinstance(spec.get("mtls"), dict) else {}
    assert isinstance(mtls, dict)
    mode = str(mtls.get("mode", "UNSET"))
    if mode not in MODES:
        report(("spec", "mtls", "mode"), f"expected one of {', '.join(MODES)}, found "
               f"'{mode}': the API server refuses the object (not counted)", "error")
        return None
    port_modes: dict[int, str] = {}
    levels = spec.get("portLevelMtls") or {}
    if levels and selector is None:
        report(("spec", "portLevelMtls"), "portLevelMtls needs a selector: the API server "
               "refuses the object (not counted)", "error")
        return None
    for port, entry in (levels.items() if isinstance(levels, dict) else ()):
        port_mode = str((entry or {}).get("mode", "UNSET")) if isinstance(entry, dict) else "?"
        if port_mode not in MODES or not str(port).isdigit():
            report(("spec", "portLevelMtls", str(port)), "expected a port number and a mode: "
                   "ignored", "error")
            continue
        port_modes[int(str(port))] = port_mode
    if selector is not None and namespace == ISTIO_ROOT_NAMESPACE:
        report(("spec", "selector"), "a PeerAuthentication with a selector in the root "
               f"namespace ({ISTIO_ROOT_NAMESPACE}) is ignored by Istio (not counted)")
        return None
    return PeerAuthn(namespace, selector, mode, port_modes, origin)


def _authorization_policy(namespace: str, spec: Mapping[str, Any], origin: Origin,
                          report: _Report) -> AuthzPolicy | None:
    for key in sorted(set(spec) - {"selector", "action", "rules", "provider", "targetRef",
                                   "targetRefs"}):
        report(("spec", key), f"'{key}' is not modelled by verify: ignored")
    if "targetRef" in spec or "targetRefs" in spec:
        report(("spec",), "a policy with targetRef(s) applies to waypoints or gateways, not to "
               "sidecars: verify does not model it (not counted)")
        return None
    selector, readable = _selector(spec, report, ("spec", "selector"))
    if not readable:
        return None
    action = str(spec.get("action", "ALLOW"))
    if action not in ACTIONS:
        report(("spec", "action"), f"expected one of {', '.join(ACTIONS)}, found '{action}': "
               "the API server refuses the object (not counted)", "error")
        return None
    if action == "AUDIT":
        return None  # audit never decides
    if action == "CUSTOM":
        report(("spec", "action"), "a CUSTOM policy delegates to an external authorizer, "
               "which verify cannot evaluate: counted as refusing nothing")
    rules_data = spec.get("rules")
    if rules_data is not None and not isinstance(rules_data, list):
        report(("spec", "rules"), "expected a list: not counted", "error")
        return None
    rules = []
    for i, data in enumerate(rules_data or ()):
        rule = _rule(data, ("spec", "rules", i), action, report)
        if rule is not None:
            rules.append(rule)
    return AuthzPolicy(namespace, selector, action, tuple(rules), origin)


def _rule(data: Any, path: PathKey, action: str, report: _Report) -> AuthzRule | None:
    if not isinstance(data, dict):
        report(path, "expected a rule mapping: ignored", "error")
        return None
    for key in sorted(set(data) - {"from", "to", "when"}):
        report((*path, key), f"'{key}' is not modelled by verify: ignored")
    conditional = bool(data.get("when"))
    if conditional:
        report((*path, "when"), "conditions are not modelled: an ALLOW rule with them counts "
               "as admitting nothing, a DENY rule as refusing its ports", "notice")
    # Protocol buffers: an empty list is no list, so ``from: []`` (like no ``from``) admits
    # every source, and an entry without ``source`` (or with an empty one) matches any.
    sources: list[Source] | None = None
    if data.get("from"):
        sources = []
        for j, entry in enumerate(data["from"]):
            source = entry.get("source") if isinstance(entry, dict) else None
            sources.append(_source(source if isinstance(source, dict) else {},
                                   (*path, "from", j, "source"), action, report))
    ports, http = _operations(data.get("to"), (*path, "to"), report)
    return AuthzRule(None if sources is None else tuple(sources), ports, http, conditional)


def _source(data: Mapping[str, Any], path: PathKey, action: str, report: _Report) -> Source:
    fields: dict[str, tuple[str, ...]] = {}
    blocks: dict[str, tuple[Block, ...]] = {}
    for key in sorted(data):
        values = data[key]
        if key not in SOURCE_FIELDS or not isinstance(values, list):
            report((*path, key), f"'{key}' is not modelled by verify: ignored")
            continue
        if not values:
            continue  # an empty list constrains nothing
        texts = tuple(str(v) for v in values)
        if key in ADDRESS_FIELDS:
            report((*path, key), "addresses match only address sources here (pods' addresses "
                   "are not known, and behind an east-west gateway Istio sees the gateway's)",
                   "notice")
            found: list[Block] = []
            for text in texts:
                try:
                    found.extend(cidr_blocks(text if "/" in text else
                                             f"{text}/{128 if ':' in text else 32}"))
                except ValueError:
                    report((*path, key), f"cannot read the address {text!r}", "error")
            blocks[key] = tuple(found)
            continue
        fields[key] = texts
        if key in ("principals", "notPrincipals"):
            for k, text in enumerate(texts):
                if text.startswith(DEFAULT_CLUSTER_DOMAIN + "/"):
                    report((*path, key, k), f"expected a principal with an explicit trust "
                           f"domain, found '{text}': the {DEFAULT_CLUSTER_DOMAIN} shorthand "
                           "means the local trust domain to sidecars only (ambient's ztunnel "
                           "does not read it), and never the trust domain of another cluster",
                           "error")
        if action == "DENY" and key in IDENTITY_FIELDS:
            report((*path, key), "expected no DENY by identity: a plaintext connection has no "
                   "principal, namespace or service account, so it passes this DENY (admit by "
                   "identity with ALLOW and require mutual TLS instead)", "error")
    return Source(fields, blocks)


def _operations(data: Any, path: PathKey, report: _Report) -> tuple[PortSet, bool]:
    """The TCP ports ``to`` names (every TCP port when absent), and whether it needs HTTP."""
    if not data:
        return TCP, False  # no ``to`` (or an empty one): every port
    ports = NO_PORTS
    http = False
    for i, entry in enumerate(data if isinstance(data, list) else ()):
        operation = entry.get("operation") if isinstance(entry, dict) else None
        if not isinstance(operation, dict):
            operation = {}  # an entry without an operation: any
        here = TCP
        if any(key in operation for key in HTTP_FIELDS):
            http = True
        listed = operation.get("ports")
        if listed:
            here = NO_PORTS
            for k, text in enumerate(listed):
                if not str(text).isdigit():
                    report((*path, i, "operation", "ports", k), f"expected a port number, "
                           f"found {text!r}: ignored", "error")
                    continue
                here |= ports_of("TCP", int(str(text)))
        for k, text in enumerate(operation.get("notPorts") or ()):
            if str(text).isdigit():
                here -= ports_of("TCP", int(str(text)))
            else:
                report((*path, i, "operation", "notPorts", k), f"expected a port number, "
                       f"found {text!r}: ignored", "error")
        ports |= here
    return ports, http
