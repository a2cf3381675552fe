"""Incremental render: a change re-analyses and re-renders only what it can reach, and the
result is byte for byte what a full render gives (tests/test_incremental.py checks that on
random edit sequences against full renders).

The unit of work is the input file. A :class:`Snapshot` (the cache's state, the input and
the output of this stage) records for every requirement file its digest, what each of its
requirements reads and reaches, and its diagnostics, and for every cluster the digests of its
output files and the Service copies it holds. What a requirement depends on is syntactic:

* its *footprint*: the inventory domains it reads -- its own (``requirements/<domain>/``) and
  every domain its peers name (``domain: d``; a peer without one resolves in its own domain,
  :meth:`meshplan.model.Inventory.resolve_peer`), plus the pod networks of every cluster when
  it has CIDR rules (the warning about CIDRs over pod networks names them);
* its *reach*: the clusters it may put objects into or read objects of -- the clusters of its
  scope and every cluster of every service its peers resolve to (policies, mirror and global
  Services, namespaces and ExternalNames all go there; the load-balancing check reads the
  Service copies there). A superset is always safe: it only means more work.

A run then (:func:`stale_clusters`, :func:`plan_work`): requirement files whose bytes or
footprint changed are *dirty*; the clusters they reached before or reach now, and every
cluster of a changed domain, are *stale*; every requirement reaching a stale cluster is
analysed again (its objects there, its warnings) together with the requirements selecting
the same pods (Cilium unions their allows: the load-balancing warning counts them all);
stale clusters are refined and rendered again from exactly the requirements that put objects
into them, in input order;
every other cluster's files come from the cache (checked against their SHA-256). When no
inventory file changed, only the inventory files declaring the domains the analysed
requirements read (their footprints) are read, and what is taken of the inventory whole --
its diagnostics, the pod networks, the bootstrap files -- comes from the snapshot; an
unchanged file of one domain is read with only the services those requirements can look up
(:func:`services_read`), its other service items blanked line for line when its layout
allows (:func:`services_cut`). So too when
inventory files changed in their services only (each was and is domains only, without a
diagnostic; the same domains, clusters written in the same places, service names): the
changed files are read before and now, and every cluster's pod networks are the snapshot's
(which holds them; no other file is read). They are fresh because every other file is
byte for byte the one the snapshot saw (its digest) and the changed files' clusters are the
same before and now; the stored networks' own digest only catches a snapshot made
inconsistently, and they must also match the changed files' clusters as the cache keeps
them. Any other inventory change reads the inventory whole (many checks span it), and so
does a re-analysis of whole clusters, or a footprint reaching every pod network when they
are not known.

When every dirty file's objects before and now are known (each version refined alone), the
stale clusters are *patched* instead (:func:`patch_documents`): their cached files are split
into documents, the documents the change touches are parsed, the dirty requirements' causes
are taken out of their ``required-by`` and what they put there now is added; every other
document is kept as text. Only the dirty files and those selecting the same pods are then
analysed again (for their warnings). An object another requirement puts there differently,
or a cached file not exactly as meshplan renders it, falls back to the re-analysis above.

Anything the slicing does not model falls back to a full render (and says why, in
:attr:`IncrementalResult.mode`): no usable snapshot, a Mesh document (the mesh plan and the
identity layer span the fleet), a problem in the inputs (a full run reports every error
exactly), two domains with a service of the same namespace and name (one global Service
across the mesh), a requirement name that may repeat, a cache entry that does not check out.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import compress, groupby
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from .bootstrap import bootstrap_files
from .cache import RenderCache, digest
from .diagnostics import Diagnostic, Location, Severity
from .load.document import Document
from .load.files import INVENTORY_SUFFIXES, YAML_SUFFIXES, input_files
from .load.repository import read_documents
from .model import Cluster, Domain, Inventory, Requirement, Selector, Service
from .outputs import KUSTOMIZATION, OUTPUT_MARKER, OutputFile, split_cluster_path
from .refine import (
    KIND_ORDER,
    KIND_RANK,
    ClusterPlan,
    Manifest,
    ObjectKey,
    Plan,
    output_order,
    selector_body,
)
from .render import (
    FILE_FOR_KIND,
    MARKER_TEXT,
    Rendered,
    RenderSummary,
    cluster_files,
    header,
    render_cluster,
)
from .vocabulary import (
    CLUSTERWIDE_POLICY_KIND,
    DOMAIN_KEY,
    GLOBAL_SERVICE_ANNOTATION,
    K8S_POD_NAMESPACE_LABEL,
    NAMESPACE_KIND,
    REQUIRED_BY_ANNOTATION,
    SERVICE_KEY,
    SERVICE_KIND,
    SHARED_SERVICE_ANNOTATION,
)
from .yamltext import SharedText, dump_document

# 3: sliceable; 4: no Service copies without annotations; 5: a line a record; 6: every cluster's
# pod networks
SNAPSHOT_FORMAT = 6
PODS = "@pods"  # the footprint entry of requirements that depend on every pod network


# --------------------------------------------------------------------------- records


class RequirementRecord(NamedTuple):
    """What one requirement document depends on."""

    key: tuple[str, str, bool]  # (domain, "namespace/name", cluster-wide): unique per domain
    footprint: tuple[str, ...]  # domains it reads (and PODS)
    puts: tuple[str, ...]  # "domain/cluster" it may put objects into
    calls: tuple[str, ...]  # "namespace/name" of the services it calls (it reads their copies)
    subject: str  # digest of whose pods it selects (namespace and endpoint selector)
    reads: tuple[str, ...] = ()  # "domain/service" it looks up ("domain/*": all of them)


class FileRecord(NamedTuple):
    digest: str
    requirements: tuple[RequirementRecord, ...]
    diagnostics: tuple[Diagnostic, ...]  # located in this file


class ClusterRecord(NamedTuple):
    files: tuple[tuple[str, str], ...]  # (path, sha256) of the cluster's output files
    counts: tuple[int, int, int]  # policies, services, namespaces (RenderSummary)
    copies: Mapping[str, tuple[str | None, str | None]]  # "ns/name" -> (global, shared)


class CachedCopies(Mapping[str, tuple[str | None, str | None]]):
    """A cluster record's Service copies as a snapshot holds them (a JSON object), decoded
    when first asked: a run asks for the copies of the few clusters its change reaches, of
    thousands (decoding them all was a third of reading a snapshot). Raises
    :class:`Fallback` when the text does not decode to copies (a full render then)."""

    __slots__ = ("_decoded", "text")

    def __init__(self, text: str) -> None:
        self.text = text  # as read, written back as it is
        self._decoded: dict[str, tuple[str | None, str | None]] | None = None

    def _copies(self) -> dict[str, tuple[str | None, str | None]]:
        if self._decoded is None:
            try:
                raw = json.loads(self.text)
                self._decoded = {str(k): _copy_entry(v) for k, v in raw.items()}
            except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
                raise Fallback("a cached cluster record does not check out") from exc
        return self._decoded

    def __getitem__(self, key: str) -> tuple[str | None, str | None]:
        return self._copies()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._copies())

    def __len__(self) -> int:
        return len(self._copies())


def _copy_entry(value: object) -> tuple[str | None, str | None]:
    """[global, shared]: each annotation's text, or null."""
    if not isinstance(value, list) or len(value) != 2 or not all(
            v is None or isinstance(v, str) for v in value):
        raise TypeError(f"expected [global, shared], found {value!r}")
    return value[0], value[1]


@dataclass(frozen=True)
class Snapshot:
    """Everything a later run needs from this one (see the module docstring)."""

    inventory_files: Mapping[str, tuple[str, tuple[str, ...]]]  # path -> (sha256, domains)
    requirement_files: Mapping[str, FileRecord]
    clusters: Mapping[str, ClusterRecord]  # "domain/cluster"
    other_files: tuple[tuple[str, str], ...]  # marker and bootstrap: (path, sha256)
    pods: str  # digest of every cluster's pod networks (and where they are written)
    other_diagnostics: tuple[Diagnostic, ...]  # those not located in a requirement file
    listing_diagnostics: tuple[Diagnostic, ...]  # of finding the input files
    # no two domains' services share a namespace and name (else every run reads the whole
    # inventory, and falls back: one global Service spans the fleet)
    sliceable: bool = True
    # every cluster's pod networks (pods is their digest): a run whose inventory changed in
    # its services only takes them from here, not from every inventory file
    pod_networks: PodFacts = ()
    # the serialized line of each record as read (see snapshot_bytes): "R"+path or "C"+name
    # -> (record, line); a later save writes a record that is still the same object verbatim
    lines: Mapping[str, tuple[object, bytes]] = field(default_factory=dict, compare=False,
                                                      repr=False)


@dataclass(frozen=True)
class IncrementalResult:
    rendered: Rendered
    diagnostics: tuple[Diagnostic, ...]
    snapshot: Snapshot | None  # None when the inputs cannot be sliced (a Mesh document)
    mode: str  # "unchanged", "incremental", or "full (<why>)"
    reanalysed: int = 0  # requirement files analysed again
    rerendered: int = 0  # clusters refined and rendered again
    new_blobs: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    inventory: Inventory | None = field(default=None, repr=False)  # a full run's, whole
    patched: int = 0  # stale clusters patched from their cached objects (not refined again)
    sliced: bool = False  # only the inventory domains the change reads were read
    unsaved: str | None = None  # why the cache could not store this run (it only saves time)


class Fallback(Exception):
    """The change cannot be sliced safely: render in full (the message says why)."""


# --------------------------------------------------------------------------- inputs


class InputFiles(NamedTuple):
    """The input files of a repository, as the load stage finds them, with their digests."""

    inventory: tuple[str, ...]
    requirements: tuple[str, ...]
    digests: Mapping[str, str]
    diagnostics: tuple[Diagnostic, ...]  # of the listing (e.g. a file meshplan does not read)
    contents: Mapping[str, bytes] = {}  # as digested: what the cache keeps of changed inputs


def list_inputs(root: Path) -> InputFiles:
    diagnostics: list[Diagnostic] = []
    inventory = tuple(input_files(root, "inventory", INVENTORY_SUFFIXES, diagnostics))
    requirements = tuple(input_files(root, "requirements", YAML_SUFFIXES, diagnostics))
    digests = {}
    contents = {}
    base = str(root)
    for relpath in (*inventory, *requirements):
        content = read_whole(os.path.join(base, relpath))  # noqa: PTH118 - hot path
        if content is None:
            digests[relpath] = ""  # the load stage reports it (and the run falls back)
        else:
            contents[relpath] = content
            digests[relpath] = digest(content)
    return InputFiles(inventory, requirements, digests, tuple(diagnostics), contents)


_CHUNK = 1 << 16


def read_whole(path: str) -> bytes | None:
    """The bytes of a file, read to its end; None when it cannot be read. A run digests every
    input file, thousands of them: a raw descriptor read is half the cost of ``open().read()``
    (no buffered file object); a file longer than one chunk is read on until the end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO: no wait
    except OSError:
        return None
    try:
        parts = [os.read(fd, _CHUNK)]
        while parts[-1]:  # to the end (one more read, of nothing, for most files)
            parts.append(os.read(fd, _CHUNK))
    except OSError:
        return None
    finally:
        os.close(fd)
    return parts[0] if len(parts) == 2 else b"".join(parts)


def domain_folder(relpath: str) -> str | None:
    parts = relpath.split("/")
    return parts[1] if len(parts) >= 3 else None


# --------------------------------------------------------------------------- dependencies


# what a requirement takes of a peer: the clusters it may put objects into and the services it
# calls through it, the domain it names (None: its own) and the service it reads
PeerReach = tuple[tuple[str, ...], tuple[str, ...], str | None, str]


@dataclass
class RecordMemo:
    """What :func:`requirement_record` resolved already (a snapshot resolves the same peers and
    scopes for thousands of requirements)."""

    # (selector, own domain, direction) -> what the peer gives
    peers: dict[tuple[Selector, str, str], PeerReach] = field(default_factory=dict)
    # (domain, written clusters, selected service) -> the scope's "domain/cluster"s
    scopes: dict[tuple[str, tuple[str, ...] | None, str | None], tuple[str, ...]] = field(
        default_factory=dict)


def requirement_record(inventory: Inventory, requirement: Requirement,
                       memo: RecordMemo | None = None) -> RequirementRecord:
    """``memo``: what the peers and scopes already resolved give."""
    memo = RecordMemo() if memo is None else memo
    peers, scopes = memo.peers, memo.scopes
    domain = requirement.domain
    selected = requirement.selected_service
    # the scope is the domain's clusters, those written, and those where the selected service
    # runs (Inventory.requirement_scope): the same for every requirement of these three
    scope_key = (domain, requirement.clusters, selected)
    scope = scopes.get(scope_key)
    if scope is None:
        scope = scopes[scope_key] = tuple(
            [f"{domain}/{c.name}" for c in inventory.requirement_scope(requirement)])
    puts = set(scope)
    calls: set[str] = set()
    reads = _subject_reads(requirement)
    footprint = {domain}  # footprint_of's, in the same pass over the peers
    for rule in (*(requirement.egress or ()), *(requirement.ingress or ())):
        if rule.cidrs:
            footprint.add(PODS)
        direction = rule.direction
        for peer in rule.endpoints:
            selector = peer.selector
            if not selector.is_abstract:
                continue
            asked = (selector, domain, direction)
            reach = peers.get(asked)
            if reach is None:
                targets = inventory.resolve_peer(selector, domain, direction=direction)
                named = selector.label(DOMAIN_KEY)
                reach = peers[asked] = (
                    tuple(f"{t.service.domain}/{c}" for t in targets for c in t.clusters),
                    tuple(f"{t.service.namespace}/{t.service.name}" for t in targets
                          if direction == "egress"),
                    named, _peer_read(selector, domain))
            puts.update(reach[0])
            if reach[1]:
                calls.update(reach[1])
            if reach[2] is not None:
                footprint.add(reach[2])
            reads.add(reach[3])
    namespace = inventory.policy_namespace(requirement)
    service = inventory.service_selected_by(requirement)
    if service is None:
        selector_text: Any = selector_body(requirement.endpoint_selector)
    else:
        selector_text = {"matchLabels": dict(service.selector)}
        if namespace is None:
            selector_text["matchLabels"][K8S_POD_NAMESPACE_LABEL] = service.namespace
    subject = digest(_SORTED_JSON([namespace, selector_text]).encode())
    key = (domain, f"{requirement.namespace}/{requirement.name}", requirement.cluster_wide)
    return RequirementRecord(key, tuple(sorted(footprint)), tuple(sorted(puts)),
                             tuple(sorted(calls)), subject, tuple(sorted(reads)))


_SORTED_JSON = json.JSONEncoder(sort_keys=True).encode  # json.dumps(x, sort_keys=True)


def footprint_of(requirement: Requirement) -> set[str]:
    """The domains a requirement reads (see the module docstring): read off its text, so known
    before the inventory is."""
    footprint = {requirement.domain}
    for rule in (*(requirement.egress or ()), *(requirement.ingress or ())):
        if rule.cidrs:
            footprint.add(PODS)
        for peer in rule.endpoints:
            if peer.is_abstract:
                named = peer.selector.label(DOMAIN_KEY)
                if named is not None:
                    footprint.add(named)
    return footprint


def requirement_reads(requirement: Requirement) -> set[str]:
    """The services ("domain/name"; "domain/*": all of them) a requirement looks up: its
    record's ``reads`` (:func:`requirement_record`), read off its text."""
    reads = _subject_reads(requirement)
    for rule in (*(requirement.egress or ()), *(requirement.ingress or ())):
        for peer in rule.endpoints:
            if peer.is_abstract:
                reads.add(_peer_read(peer.selector, requirement.domain))
    return reads


def _subject_reads(requirement: Requirement) -> set[str]:
    """A {service: x} subject reads x (its selector, namespace, clusters and ports); raw pod
    labels read no service (scope: the domain's clusters; namespace: the written one), so a
    service change leaves such a requirement alone unless a peer looks the service up."""
    selected = requirement.selected_service
    return {f"{requirement.domain}/{selected}"} if selected is not None else set()


def _peer_read(selector: Selector, domain: str) -> str:
    """The service an abstract peer of a requirement of ``domain`` looks up ("domain/name";
    "domain/*": all of the domain's)."""
    return f"{selector.label(DOMAIN_KEY) or domain}/{selector.label(SERVICE_KEY) or '*'}"


def services_read(reads: Iterable[tuple[str, Iterable[str]]]
                  ) -> dict[str, set[str] | None]:
    """The services of each domain that requirements reading ``reads`` (their own domain and
    what they read: :func:`requirement_reads`) can see: domain -> names (None: all of them).

    A requirement looks up the services it reads (its subject, its peers: by name, or all of
    a domain's for a peer without a service); refinement also looks up, in its own domain,
    every service named like one it calls (a mirror or ExternalName Service must not take an
    inventory Service's place), so each name read counts in the reader's domain too, and a
    domain read whole makes its reader's domain read whole. That rests on refinement looking
    a namesake up in the client cluster's domain only (``refine._inventory_service_at``),
    which is the requirement's own: it calls services through its egress rules, whose
    clients are its subject. (:func:`reads_changed` counts a namesake of any domain: for it a
    superset is safe; here it is the set read.)"""
    out: dict[str, set[str] | None] = {}

    def add(domain: str, name: str) -> None:
        if name == "*":
            out[domain] = None
        else:
            known = out.setdefault(domain, set())
            if known is not None:
                known.add(name)

    for own, names in reads:
        out.setdefault(own, set())
        for read in names:
            domain, _, name = read.partition("/")
            add(domain, name)
            add(own, name)
    return out


# A Domain file laid out plainly enough to read its services in part (services_cut): ASCII
# (no line break but LF), one document, no tab, and, after the comment lines it starts with and
# outside one-line double-quoted texts without escapes, no character that starts a multi-line
# construct, an anchor, alias or tag or a comment, and flow brackets closed on their own line.
_SERVICES_KEY = b"\n  services:\n"
_LEADING_COMMENTS = re.compile(rb"(?: *#[^\n]*\n)*")  # the only comments allowed
# a double-quoted scalar on one line where a scalar starts (a line's first content, after a key's
# ": ", an item's "- " or a flow collection's "[", "{", ", ") and ends (before a space, line end,
# ":", ",", "]", "}"): a '"' elsewhere (inside a plain key, say) is left for _unsafe to refuse,
# never paired with another line's quote. What precedes it is matched (group 1) and put back,
# not looked behind for: a pattern starting with a look-behind is tried at every byte, five
# times slower over a 45 kB file. (No match can end in a text that starts the next one: each
# ends with '"'.)
_ONE_LINE_QUOTED = re.compile(rb'(\n|: |- |[\[{]|, )[ ]*"[^"\\\n]*"(?=[ \n:,\]}])')
_INNER_BRACKETS = re.compile(rb"\[[^\[\]{}\n]*\]|\{[^\[\]{}\n]*\}")
# what is refused (_unsafe): these characters, and a line starting a document marker (looked
# for as texts: one pattern with both tried the markers at every byte, four times as long)
_UNSAFE_CHARACTER = re.compile(rb"[\t\r'\"\\|>&*!%@`#?\[\]{}]")
# Line starts are found after a "\n" (a literal the search skips to), not with "(?m)^", which
# is tried at every byte.
_ITEM_START = re.compile(rb"\n    - ")  # ends one line, starts an item's
_NOT_IN_BLOCK = re.compile(rb"\n(?!    - |      )")
_BLOCK_END = re.compile(rb"\n(?!    )")  # ends the line before one not indented 4 spaces
_LIST_ENDS = re.compile(rb" {0,3}[^ #\n]")  # content indented less (a blank or comment does not)
_ITEM_NAME = re.compile(rb"    - name: ([a-z0-9]([-a-z0-9]*[a-z0-9])?)\n")


class ServicesLayout(NamedTuple):
    """Where a Domain file's ``spec.services`` items are (:func:`services_layout`)."""

    start: int  # the list's first byte (its first item's)
    end: int  # the first byte after the list
    items: tuple[tuple[int, int, str], ...]  # each item's first byte, end and name


def services_layout(raw: bytes) -> ServicesLayout | None:
    """Where the items of a Domain file's ``spec.services`` are, each with its name; None when
    the file is not laid out so that its items can be told apart line by line (see above).

    Every item must start with its name (``    - name: x``, a plain name) at the indentation
    of the first; every line of the list is an item's first or is indented deeper; the list
    ends at the first line indented less, which holds content. With no multi-line construct
    but plain scalars (which end at a line indented less), those lines are the list's items
    for any YAML reader."""
    if not raw.isascii() or not raw.endswith(b"\n"):
        return None
    at = raw.find(_SERVICES_KEY)
    if at < 0 or raw.find(_SERVICES_KEY, at + 1) >= 0:
        return None
    lead = _LEADING_COMMENTS.match(raw)
    rest = without_one_line_quoted(raw[lead.end() if lead is not None else 0:])
    while b"[" in rest or b"{" in rest:  # innermost pairs first
        fewer = _INNER_BRACKETS.sub(b"", rest)
        if len(fewer) == len(rest):
            return None
        rest = fewer
    if _unsafe(rest):
        return None
    start = at + len(_SERVICES_KEY)  # a line's start
    if not raw.startswith(b"    - ", start):
        return None
    found = _BLOCK_END.search(raw, start)  # raw ends with "\n": found
    end = found.end() if found is not None else len(raw)
    block = raw[start:end]
    if _NOT_IN_BLOCK.search(block, 0, len(block) - 1) \
            or (end < len(raw) and not _LIST_ENDS.match(raw, end)):
        return None
    starts = [start, *(start + m.start() + 1 for m in _ITEM_START.finditer(block))]
    items = []
    for i, begin in enumerate(starts):
        head = _ITEM_NAME.match(raw, begin)
        if head is None:
            return None
        items.append((begin, starts[i + 1] if i + 1 < len(starts) else end, head[1].decode()))
    return ServicesLayout(start, end, tuple(items))


def without_one_line_quoted(text: bytes) -> bytes:
    """``_ONE_LINE_QUOTED.sub(rb"\\1", text)``, with the pattern tried on the lines holding a
    '"' only (a domain file has a few: trying it at every byte was half of reading a file's
    layout). Its matches stay within a line: the only line break one takes is its first
    character (the break before the line); the break after a line is looked at, never taken.
    So each such line is replaced alone, from the break before it (none for the first line)
    to the break after it, which is kept out of what is replaced."""
    at = text.find(b'"')
    if at < 0:
        return text
    pieces = []
    done = 0  # text[:done] is in pieces; text[done] starts a line or is the break before one
    while at >= 0:
        begin = max(text.rfind(b"\n", done, at), done)
        end = text.find(b"\n", at)
        pieces.append(text[done:begin])
        if end < 0:
            pieces.append(_ONE_LINE_QUOTED.sub(rb"\1", text[begin:]))
            return b"".join(pieces)
        pieces.append(_ONE_LINE_QUOTED.sub(rb"\1", text[begin:end + 1])[:-1])  # not its break
        done = end
        at = text.find(b'"', end)
    pieces.append(text[done:])
    return b"".join(pieces)


def _unsafe(text: bytes) -> bool:
    """Whether ``text`` holds a character or a line start that services_layout refuses."""
    return _UNSAFE_CHARACTER.search(text) is not None \
        or text.startswith((b"---", b"...")) or b"\n---" in text or b"\n..." in text


def services_cut(raw: bytes, wanted: AbstractSet[str], layout: ServicesLayout | None = None
                 ) -> tuple[bytes, tuple[str, ...], tuple[int, ...]] | None:
    """A Domain file's bytes with every item of its ``spec.services`` not named in ``wanted``
    emptied (its lines kept, blank: every other line and column stays where it was), the names
    of the items kept and their positions in the list; None when the file is not laid out so
    that its items can be told apart line by line (:func:`services_layout`, of which
    ``layout`` is the result for ``raw`` when known): read it whole then. The caller checks
    the names the cut text gives against those returned."""
    if layout is None:
        layout = services_layout(raw)
        if layout is None:
            return None
    pieces = [raw[:layout.start]]
    names: list[str] = []
    kept: list[int] = []
    for i, (begin, end, name) in enumerate(layout.items):
        if name in wanted:
            pieces.append(raw[begin:end])
            names.append(name)
            kept.append(i)
        else:
            pieces.append(b"\n" * raw.count(b"\n", begin, end))
    pieces.append(raw[layout.end:])
    return b"".join(pieces), tuple(names), tuple(kept)


ObjectsByCluster = dict[str, dict[ObjectKey, Manifest]]  # "domain/cluster" -> key -> object


def objects_by_cluster(plan: Plan) -> ObjectsByCluster:
    """A plan's objects, per cluster: object key -> manifest (body and causes), to compare two
    plans and to patch a cached cluster (:func:`patched_cluster`)."""
    return {c.cluster.path: {m.key: m for m in c.objects} for c in plan.clusters
            if c.objects}


def differing_clusters(before: Mapping[str, Mapping[Any, Any]],
                       after: Mapping[str, Mapping[Any, Any]]) -> set[str]:
    return {c for c in before.keys() | after.keys() if before.get(c) != after.get(c)}


def changed_services(before: Sequence[Domain], after: Sequence[Domain]) -> set[str] | None:
    """The services ("domain/name") that differ between two inventories whose domains and
    clusters are the same (where things are written aside), or None when anything else
    differs: the domains, their order or form, or a cluster."""
    if [(d.name, d.form) for d in before] != [(d.name, d.form) for d in after]:
        return None
    changed: set[str] = set()
    for old, new in zip(before, after, strict=True):
        if old is new:  # an unchanged file's domain, modelled once for both (_previous_inventory)
            continue
        if [_cluster_facts(c) for c in old.clusters] != [_cluster_facts(c) for c in new.clusters]:
            return None
        if [s.name for s in old.services] != [s.name for s in new.services]:
            # services added, removed or reordered: the order decides which of two with one
            # name is reported; stay simple and call every service of the domain changed
            changed.add(f"{new.name}/*")
        olds = {s.name: _service_facts(s) for s in old.services}
        news = {s.name: _service_facts(s) for s in new.services}
        changed.update(f"{new.name}/{n}" for n in olds.keys() | news.keys()
                       if olds.get(n) != news.get(n))
    return changed


def _cluster_facts(cluster: Cluster) -> tuple[Any, ...]:
    return (cluster.name, cluster.mesh_name, cluster.mesh_id,
            tuple(text for text, _ in cluster.pod_cidrs), cluster.cluster_domain,
            cluster.argocd_name, cluster.argocd_server, cluster.flux_namespace, cluster.path,
            cluster.mesh_name_key, cluster.clustermesh is not None, cluster.istio is not None)


def _service_facts(service: Service) -> tuple[Any, ...]:
    return (service.name, service.namespace, service.selector, service.ports, service.clusters,
            service.export_to, service.path, service.clusters_path, service.service_account)


def reads_changed(services: set[str]) -> Callable[[Iterable[RequirementRecord]], bool]:
    """Whether a requirement file (its records) looks up one of the changed ``services`` (or,
    through a wildcard, any service of a domain where one changed), or calls a service named
    like one of them: the mirror and ExternalName Services it puts into client clusters are
    named after the services it calls and must not take the place of an inventory Service of
    that name, of any domain (refinement reports the clash), so a namesake's change concerns
    it. The test's sets are made once (a run asks it of every requirement file)."""
    domains = {s.partition("/")[0] for s in services}
    names = frozenset({s.partition("/")[2] for s in services} - {"*"})
    # a read "d/n" matches when it is a changed service, a wildcard "d/*" of a domain where
    # one changed, or any read of a domain whose services all count as changed ("d/*")
    exact = frozenset({*services, *(f"{d}/*" for d in domains)})
    whole = frozenset(s.partition("/")[0] for s in services if s.partition("/")[2] == "*")

    def test(records: Iterable[RequirementRecord]) -> bool:
        for record in records:
            if names and any(call.rpartition("/")[2] in names for call in record.calls):
                return True
            if not exact.isdisjoint(record.reads):
                return True
            if whole and any(read.partition("/")[0] in whole for read in record.reads):
                return True
        return False
    return test


# every cluster's pod networks, in inventory order: (domain, cluster, ((CIDR, where), ...))
PodFacts = tuple[tuple[str, str, tuple[tuple[str, Location], ...]], ...]


def pod_facts(inventory: Inventory) -> PodFacts:
    """Every cluster's pod networks and where they are written (CIDR warnings quote both)."""
    return tuple([(d.name, c.name, c.pod_cidrs) for d in inventory.domains for c in d.clusters])


def pods_digest(inventory: Inventory) -> str:
    return facts_digest(pod_facts(inventory))


def facts_digest(facts: PodFacts) -> str:
    """The digest of :func:`pod_facts`: a snapshot holds it, and the facts it was taken of."""
    return digest(json.dumps([(d, c, [(text, str(where)) for text, where in cidrs])
                              for d, c, cidrs in facts]).encode())


def pod_cidrs(facts: PodFacts) -> Iterator[tuple[str, str, Location]]:
    """(``"domain/cluster"``, CIDR, where) of each pod network (:class:`PodNetworks.of`)."""
    for domain, cluster, cidrs in facts:
        for text, where in cidrs:
            yield f"{domain}/{cluster}", text, where


def shared_global_names(inventory: Inventory) -> bool:
    """Whether services of two domains share a namespace and name (one global Service for
    Cilium, checked across the whole fleet by refinement)."""
    owners: dict[tuple[str, str], str] = {}
    for domain in inventory.domains:
        for service in domain.services:
            owner = owners.setdefault((service.namespace, service.name), domain.name)
            if owner != domain.name:
                return True
    return False


def cluster_record(cluster: ClusterPlan, files: Sequence[OutputFile],
                   flags: SharedFlags | None = None,
                   groups: Mapping[str, Sequence[Manifest]] | None = None) -> ClusterRecord:
    """The record of a rendered cluster: what the render's summary counts of it and what
    :func:`service_copies` finds. ``groups``: the cluster's objects by file name, as the
    render grouped them while writing them (:func:`meshplan.render.render` hands them to
    ``each_cluster``): the counts are their lengths and only the Services are looked at, no
    pass over the other objects; without them, the objects are counted by kind in one C-level
    pass. ``flags``: the text of the copy of each shared body refinement built
    (:attr:`Manifest.shared`), made once for all the clusters whose copies have it
    (:class:`ClusterRecords` keeps one for the fleet). The copies are kept as the text the
    snapshot saves (:class:`CachedCopies`, decoded when asked): a cold render's snapshot
    writes them as they are."""
    if groups is not None:
        counts = (len(groups.get(_POLICIES, ())), len(groups.get(_SERVICES, ())),
                  len(groups.get(_NAMESPACES, ())))
        services: Iterable[Manifest] = groups.get(_SERVICES, ())  # only Services
    else:
        objects = cluster.objects
        kinds = Counter(map(_KIND_OF, objects))
        tally = [0, 0, 0]  # policies, services, namespaces (the mesh plan's Istio objects: no)
        counted = _COUNTED
        for kind, number in kinds.items():
            at = counted.get(kind)
            if at is None:
                FILE_FOR_KIND[kind]  # an unknown kind raises, as rendering does
                continue
            tally[at] += number
        counts = (tally[0], tally[1], tally[2])
        services = (compress(objects, map(_IS_SERVICE, map(_KIND_OF, objects)))
                    if SERVICE_KIND in kinds else ())
    # the copies as the snapshot writes them (a JSON object, :class:`CachedCopies`): each
    # entry's text made once per shared body, joined, never encoded again when saved
    parts: list[str] = []
    memo: SharedFlags = {} if flags is None else flags
    for manifest in services:
        shared = manifest.shared
        if shared is None:
            found = _copy_flags(manifest.body)
            if found is not None:
                key = manifest.key
                parts.append(_copy_text(f"{key.namespace}/{key.name}", found))
            continue
        # its body is with_required_by(shared, ...): the shared body's name, namespace and
        # other annotations, as written (an object's key is its body's)
        held = memo.get(id(shared))
        if held is None:  # the body held: its id stays its own meanwhile
            metadata = shared["metadata"]
            found = _copy_flags(shared)
            held = memo[id(shared)] = (shared, None if found is None else _copy_text(
                f"{metadata.get('namespace', '')}/{metadata['name']}", found))
        if held[1] is not None:
            parts.append(held[1])
    copies = CachedCopies("{" + ",".join(parts) + "}")
    return ClusterRecord(file_digests(files), counts, copies)


# id(shared body) -> (the body, the text of its copy's entry in a record, None without either
# annotation): see cluster_record
SharedFlags = dict[int, tuple[Mapping[str, Any], str | None]]
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":")).encode  # as snapshot_bytes writes
_ENCODE_STRING = json.encoder.encode_basestring_ascii  # how it writes a string (a key)


@lru_cache(maxsize=64)  # a few pairs: meshplan writes "true" and "false"
def _flags_text(found: tuple[str | None, str | None]) -> str:
    return _COMPACT_JSON(found)


def _copy_text(name: str, found: tuple[str | None, str | None]) -> str:
    """``"namespace/name":[global,shared]``: one entry of a record's copies, as the JSON
    encoder writes it in a snapshot's line (its string escaping, ``ensure_ascii``)."""
    return f"{_ENCODE_STRING(name)}:{_flags_text(found)}"


_KIND_OF = attrgetter("key.kind")
_IS_SERVICE = SERVICE_KIND.__eq__

# the files whose objects a cluster record counts, in ClusterRecord.counts' order, and their
# kinds: kind -> index in ClusterRecord.counts
_POLICIES, _SERVICES, _NAMESPACES = _COUNTED_FILES = (
    "policies.yaml", "services.yaml", "namespaces.yaml")
_COUNTED = {kind: _COUNTED_FILES.index(name) for kind, name in FILE_FOR_KIND.items()
            if name in _COUNTED_FILES}


def service_copies(manifests: Iterable[Manifest]
                   ) -> Iterator[tuple[str, tuple[str | None, str | None]]]:
    """("namespace/name", (global, shared)) of each Service copy with either annotation: what
    callers' checks read (a copy with neither reads as no copy: :func:`copy_annotations` gives
    {} for both, so a snapshot leaves them out -- half of all copies)."""
    for manifest in manifests:
        if manifest.key.kind == SERVICE_KIND:
            found = _copy_flags(manifest.body)
            if found is not None:
                yield f"{manifest.key.namespace}/{manifest.key.name}", found


def _copy_flags(body: Mapping[str, Any]) -> tuple[str | None, str | None] | None:
    """A Service body's (global, shared) annotations; None when it has neither."""
    annotations = body["metadata"].get("annotations")
    if not annotations:
        return None
    found = (annotations.get(GLOBAL_SERVICE_ANNOTATION),
             annotations.get(SHARED_SERVICE_ANNOTATION))
    return None if found == (None, None) else found


def file_digests(files: Iterable[OutputFile]) -> tuple[tuple[str, str], ...]:
    """(path, sha256) of each file: how a snapshot names output files in the cache."""
    return tuple((f.path, digest(f.content)) for f in files)


def copy_annotations(record: ClusterRecord, namespace: str, name: str) -> dict[str, str]:
    found = record.copies.get(f"{namespace}/{name}")
    if found is None:
        return {}
    out = {}
    if found[0] is not None:
        out[GLOBAL_SERVICE_ANNOTATION] = found[0]
    if found[1] is not None:
        out[SHARED_SERVICE_ANNOTATION] = found[1]
    return out


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Work:
    """What one incremental run analyses and renders again."""

    stale_clusters: frozenset[str]
    reanalysed: tuple[str, ...]  # requirement files analysed again, their results trusted
    companions: tuple[str, ...]  # files analysed along (same pods), their results not kept


def stale_clusters(previous: Snapshot, inputs: InputFiles, changed_domains: set[str],
                   dirty_records: Mapping[str, tuple[RequirementRecord, ...]],
                   clusters: Iterable[str], changed_puts: Mapping[str, set[str]]
                   ) -> frozenset[str]:
    """The clusters a change makes stale (see the module docstring and :func:`plan_work`)."""
    old = previous.requirement_files
    present = set(inputs.requirements)
    stale: set[str] = set()
    for path in (*dirty_records, *(p for p in old if p not in present)):
        if path in changed_puts:
            stale.update(changed_puts[path])
            continue
        if path in old:
            stale.update(r for rec in old[path].requirements for r in rec.puts)
        if path in dirty_records:
            stale.update(r for rec in dirty_records[path] for r in rec.puts)
    for cluster in (*previous.clusters, *clusters):  # those of a changed domain, old and new
        if cluster.split("/", 1)[0] in changed_domains:
            stale.add(cluster)
    return frozenset(stale)


def plan_work(previous: Snapshot, inputs: InputFiles,
              dirty_records: Mapping[str, tuple[RequirementRecord, ...]],
              stale: frozenset[str]) -> Work:
    """The requirement files to analyse when the ``stale`` clusters (:func:`stale_clusters`)
    are refined again (see the module docstring).

    ``dirty_records``: the new records of the dirty requirement files (those changed, added,
    or whose footprint changed); the stale clusters come from them, before and now, or, where
    known, from exactly the clusters where their objects changed.
    """
    old = previous.requirement_files
    present = set(inputs.requirements)
    dirty_subjects = {rec.subject for records in dirty_records.values() for rec in records}
    dirty_subjects.update(rec.subject for p in old if p not in present
                          for rec in old[p].requirements)
    reanalysed = [p for p in inputs.requirements if p in dirty_records or any(
        not stale.isdisjoint(rec.puts) or rec.subject in dirty_subjects
        for rec in old[p].requirements)]
    return Work(stale, tuple(reanalysed),
                with_companions(previous, inputs, dirty_records, reanalysed))


def subject_work(previous: Snapshot, inputs: InputFiles,
                 dirty_records: Mapping[str, tuple[RequirementRecord, ...]],
                 stale: frozenset[str]) -> Work:
    """The work when the stale clusters are patched (their objects are known): only the dirty
    files and those selecting the same pods are analysed again (for their warnings)."""
    old = previous.requirement_files
    subjects = {rec.subject for records in dirty_records.values() for rec in records}
    subjects.update(rec.subject for p in dirty_records if p in old
                    for rec in old[p].requirements)  # and those it selected before
    reanalysed = [p for p in inputs.requirements if p in dirty_records or any(
        rec.subject in subjects for rec in old[p].requirements)]
    return Work(stale, tuple(reanalysed),
                with_companions(previous, inputs, dirty_records, reanalysed, subjects))


def with_companions(previous: Snapshot, inputs: InputFiles,
                    dirty_records: Mapping[str, tuple[RequirementRecord, ...]],
                    chosen: Sequence[str], whole: AbstractSet[str] = frozenset()
                    ) -> tuple[str, ...]:
    """The files selecting the same pods as ``chosen`` (Cilium unions the allows of every
    policy selecting the same pods; the load-balancing check counts them all). ``whole``:
    subjects whose files ``chosen`` holds every one of (with every dirty file): when the
    subjects of ``chosen`` are among them, there is no other (and no pass over every file)."""
    old = previous.requirement_files

    def records_of(path: str) -> tuple[RequirementRecord, ...]:
        return dirty_records[path] if path in dirty_records else old[path].requirements

    picked = set(chosen)
    subjects = {rec.subject for p in chosen for rec in records_of(p)}
    if whole and subjects <= whole and picked.issuperset(dirty_records):
        return ()
    return tuple(p for p in inputs.requirements if p not in picked and any(
        rec.subject in subjects for rec in records_of(p)))


def changed_copies(previous: Snapshot, records: Mapping[str, ClusterRecord]) -> set[str]:
    """The services ("namespace/name") whose Service copy changed in some cluster."""
    names: set[str] = set()
    for cluster in previous.clusters.keys() | records.keys():
        before = previous.clusters.get(cluster)
        after = records.get(cluster)
        if before is after:
            continue
        old = before.copies if before is not None else {}
        new = after.copies if after is not None else {}
        names.update(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return names


def callers(previous: Snapshot, inputs: InputFiles, names: set[str],
            skip: set[str]) -> tuple[str, ...]:
    """The files (not in ``skip``) calling one of the services ``names``."""
    old = previous.requirement_files
    return tuple(p for p in inputs.requirements if p not in skip and any(
        not names.isdisjoint(rec.calls) for rec in old[p].requirements))


# --------------------------------------------------------------------------- patching


# How meshplan writes the head of every object it renders (refine builds the bodies in this
# order; the dumper leaves such plain names unquoted): the key of a document without parsing it.
_DOCUMENT_HEAD = re.compile(r"apiVersion: [^\n]+\nkind: ([A-Za-z]+)\nmetadata:\n"
                            r"  name: ([a-z0-9][-a-z0-9.]*)\n"
                            r"(?:  namespace: ([a-z0-9][-a-z0-9.]*)\n)?")
# The kinds meshplan renders without a namespace; every other one it renders with one.
_CLUSTER_SCOPED = frozenset((NAMESPACE_KIND, CLUSTERWIDE_POLICY_KIND))
_SEPARATOR = re.compile(r"(?m)^---\n")
_REQUIRED_BY = re.compile(rf"(?m)^    {re.escape(REQUIRED_BY_ANNOTATION)}: ([-a-z0-9./,]+)$")


class CachedDocument(NamedTuple):
    key: ObjectKey
    text: str  # as rendered, without the separator
    order: tuple[int, str, str] = (0, "", "")  # output_order of its key (as cached_documents)


def cached_documents(cluster: ClusterPlan, files: Iterable[OutputFile]
                     ) -> list[CachedDocument] | None:
    """A cluster's cached objects as their text and key (None: a file is not as meshplan
    renders it). Only the objects a change touches are parsed (:func:`patch_documents`)."""
    out = []
    for f in files:
        name = f.path.rsplit("/", 1)[-1]
        if name == KUSTOMIZATION:
            continue
        head = header(cluster, name.removesuffix(".yaml").capitalize())
        try:
            text = f.content.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not text.startswith(head):
            return None
        ref = cluster.cluster
        kinds = _KINDS_IN.get(name, ())
        head_of = _DOCUMENT_HEAD.match
        for document in _documents(text[len(head):]):
            match = head_of(document)
            if match is None:
                return None
            kind, object_name, namespace = match.groups()
            if kind not in kinds or (namespace is None) != (kind in _CLUSTER_SCOPED):
                # a kind of another file, or a namespace the pattern did not read (one the
                # dumper quotes, "no" or "123"): its key would name no namespace, and the
                # record lose its copy
                return None
            namespace = namespace or ""
            # (tuple.__new__: what each NamedTuple's own __new__ does, less its Python call)
            out.append(_new(CachedDocument, (_new(ObjectKey, (ref, kind, namespace, object_name)),
                                             document, (KIND_RANK[kind], namespace, object_name))))
    return out


_new = tuple.__new__
# the kinds meshplan writes into each file of a cluster
_KINDS_IN = {name: frozenset(k for k, f in FILE_FOR_KIND.items() if f == name)
             for name in set(FILE_FOR_KIND.values())}


def _documents(text: str) -> list[str]:
    """The documents of a file's text after its header, each with its last line's newline,
    as ``_SEPARATOR.split`` gives them (a document starts after a ``---`` line; a file's
    first line cannot be one: its header comes first), in a quarter of its time."""
    parts = text.split("\n---\n")
    last = parts.pop()
    documents = [part + "\n" for part in parts]
    documents.append(last)
    return documents


def parsed_manifest(document: CachedDocument) -> Manifest | None:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        body = yaml.load(document.text, Loader=loader)  # a safe loader
        metadata = body["metadata"]
        causes = metadata["annotations"][REQUIRED_BY_ANNOTATION]
        key = ObjectKey(document.key.cluster, body["kind"], metadata.get("namespace", ""),
                        metadata["name"])
    except (yaml.YAMLError, KeyError, TypeError):
        return None
    if key != document.key or not isinstance(causes, str):
        return None
    return Manifest(key, body, tuple(causes.split(",")))


def same_objects(alone: Iterable[tuple[Any, ObjectsByCluster, ObjectsByCluster]],
                 cluster: str) -> set[ObjectKey]:
    """The keys of the objects that every dirty file puts into ``cluster`` exactly as before
    (the same body, in the same order, and the same causes), and no dirty file puts there only
    before or only now: the change leaves such an object as it was (:func:`patch_documents`
    keeps its cached text)."""
    before: dict[ObjectKey, list[Manifest | None]] = {}
    now: dict[ObjectKey, list[Manifest | None]] = {}
    for _, old, new in alone:
        olds, news = old.get(cluster, {}), new.get(cluster, {})
        for key in olds.keys() | news.keys():
            before.setdefault(key, []).append(olds.get(key))
            now.setdefault(key, []).append(news.get(key))
    return {key for key, olds in before.items()
            if all(_same_manifest(a, b) for a, b in zip(olds, now[key], strict=True))}


def _same_manifest(a: Manifest | None, b: Manifest | None) -> bool:
    if a is None or b is None:
        return False
    return a.required_by == b.required_by and a.body == b.body \
        and json.dumps(a.body) == json.dumps(b.body)  # order is output too


def patch_documents(cluster: ClusterPlan, documents: Sequence[CachedDocument],
                    dirty_causes: set[str], contributed: Sequence[Manifest],
                    previous: ClusterRecord, memo: SharedText, touch: set[ObjectKey],
                    unchanged: AbstractSet[ObjectKey] = frozenset()
                    ) -> tuple[ClusterRecord, list[OutputFile]] | None:
    """The cluster's files and record after the change: the documents it touches (their keys
    are the dirty files' objects before and now, or they name a dirty cause) are parsed and
    patched (:func:`patched_cluster`); every other document is kept as it is. ``touch``: the
    keys of the dirty files' objects before and now. ``unchanged``: keys of objects the dirty
    files put there exactly as before (:func:`same_objects`): their cached documents are kept
    as they are (the other requirements putting them did not change either), and the dirty
    files' objects of those keys are not added again."""
    if unchanged:
        keys = [document.key for document in documents if document.key in unchanged]
        if len(keys) != len(set(keys)):
            return None  # an object twice: not as meshplan renders a cluster
        unchanged = set(keys)
        contributed = [m for m in contributed if m.key not in unchanged]
        touch = touch - unchanged
    touched_keys = touch | {m.key for m in contributed}
    naming = any_of(frozenset(dirty_causes))
    kept: list[tuple[Any, str]] = []
    kept_services: set[str] = set()  # "namespace/name" of the Service documents kept as text
    touched: list[Manifest] = []
    search = naming.search
    for document in documents:  # thousands: its fields unpacked once
        key, text, order = document
        if key not in unchanged and (key in touched_keys or search(text)):
            causes = _REQUIRED_BY.findall(text)
            if len(causes) == 1 and dirty_causes.issuperset(causes[0].split(",")):
                continue  # only the dirty files put it here: what they put now is added below
            manifest = parsed_manifest(document)
            if manifest is None:
                return None
            touched.append(manifest)
            continue
        kept.append((order, text))
        if key.kind == SERVICE_KIND:
            kept_services.add(f"{key.namespace}/{key.name}")
    patched = patched_cluster(ClusterPlan(cluster.cluster, cluster.mesh_name, tuple(touched)),
                              dirty_causes, contributed)
    if patched is None:
        return None
    # The record's copies are those of the Services the cluster holds now: the ones kept as
    # text (as the snapshot had them) and the ones patched. A copy the change took out (only
    # the dirty files put it) must leave the record too: the load-balancing check reads
    # these copies (a stale one is a backend that is gone, a warning a full render lacks).
    copies = {k: v for k, v in previous.copies.items() if k in kept_services}
    for manifest in patched.objects:
        kept.append((output_order(manifest), dump_document(manifest.body, memo)))
    copies.update(service_copies(patched.objects))
    kept.sort(key=_FIRST)
    texts: dict[str, list[str]] = {}
    for order, text in kept:
        texts.setdefault(FILE_FOR_KIND[KIND_ORDER[order[0]]], []).append(text)
    files = cluster_files(cluster, {name: "---\n".join(t) for name, t in texts.items()})
    counts = {name: len(texts.get(f"{name}.yaml", ())) for name in ("policies", "services",
                                                                      "namespaces")}
    record = ClusterRecord(file_digests(files),
                           (counts["policies"], counts["services"], counts["namespaces"]),
                           {k: copies[k] for k in sorted(copies)})
    return record, files


_FIRST = itemgetter(0)


@lru_cache(maxsize=8)  # one run patches every stale cluster with the same dirty causes
def any_of(words: frozenset[str]) -> re.Pattern[str]:
    """A pattern finding any of ``words`` (none: nothing). Written as their trie: the dirty
    causes share their first characters (a domain's name, found all over a document), and a
    try where none starts then ends at the first character no word has there, instead of
    after trying each word (a third faster over the thousands of documents a run patches).
    An empty word matches everywhere (no cause is empty; were one, more documents would be
    parsed, never fewer). Recursion is one level per character: causes are names of at most
    a few hundred characters."""
    return re.compile(_trie(sorted(words)) if words else "(?!)")


def _trie(words: Sequence[str]) -> str:
    """A pattern matching exactly ``words`` (sorted, distinct, at least one)."""
    if len(words) == 1:
        return re.escape(words[0])
    optional = words[0] == ""  # sorted: the empty word first (what led here is a word)
    alternatives = [re.escape(first) + _trie([word[1:] for word in group])
                    for first, group in groupby(words[int(optional):], key=_FIRST)]
    body = "|".join(alternatives)
    if optional:
        return f"(?:{body})?"
    return body if len(alternatives) == 1 else f"(?:{body})"


def patched_cluster(cluster: ClusterPlan, dirty_causes: set[str],
                    contributed: Iterable[Manifest]) -> ClusterPlan | None:
    """``cluster`` (its objects read back from the cache) without what the ``dirty_causes``
    (requirement keys) contributed, with what they contribute now (``contributed``: their
    objects refined alone). None when that is ambiguous: an object they contribute differs
    from the one another requirement puts there (a full run reports that).

    An object is the same whoever puts it (refinement checks that); its ``required-by``
    annotation names every requirement that does, so removing and adding causes is exact.
    """
    bodies: dict[ObjectKey, dict[str, Any]] = {}
    causes: dict[ObjectKey, set[str]] = {}
    for manifest in cluster.objects:
        rest = set(manifest.required_by) - dirty_causes
        if rest:
            bodies[manifest.key] = without_required_by(manifest.body)
            causes[manifest.key] = rest
    for manifest in contributed:
        body = without_required_by(manifest.body)
        known = bodies.get(manifest.key)
        if known is None:
            bodies[manifest.key] = body
            causes[manifest.key] = set(manifest.required_by)
        elif known != body or json.dumps(known) != json.dumps(body):  # order is output too
            return None
        else:
            causes[manifest.key].update(manifest.required_by)
    manifests = []
    for key, body in bodies.items():
        required_by = tuple(sorted(causes[key]))
        metadata = body["metadata"]
        annotations = {**metadata.get("annotations", {}),
                       REQUIRED_BY_ANNOTATION: ",".join(required_by)}
        manifests.append(Manifest(key, {**body, "metadata": {**metadata,
                                                              "annotations": annotations}},
                                  required_by))
    manifests.sort(key=output_order)
    return ClusterPlan(cluster.cluster, cluster.mesh_name, tuple(manifests))


def without_required_by(body: Mapping[str, Any]) -> dict[str, Any]:
    metadata = body["metadata"]
    annotations = {k: v for k, v in metadata.get("annotations", {}).items()
                   if k != REQUIRED_BY_ANNOTATION}
    slim = {k: v for k, v in metadata.items() if k != "annotations"}
    if annotations:
        slim = {**metadata, "annotations": annotations}
    return {**body, "metadata": slim}


# --------------------------------------------------------------------------- snapshots


def snapshot_of(inputs: InputFiles, inventory: Inventory, plan: Plan,
                rendered: Rendered, diagnostics: Iterable[Diagnostic],
                inventory_domains: Mapping[str, tuple[str, ...]],
                clusters: Mapping[str, ClusterRecord]) -> Snapshot:
    """The snapshot of a full run (``inventory`` with every requirement). ``clusters``: the
    record of every cluster of ``plan``, taken as it was rendered (:class:`ClusterRecords`);
    when there are fewer (two plans of one folder), they are taken here."""
    by_file: dict[str, list[RequirementRecord]] = {p: [] for p in inputs.requirements}
    memo = RecordMemo()
    for requirement in inventory.requirements:
        by_file[requirement.file].append(requirement_record(inventory, requirement, memo))
    requirement_diagnostics, other = split_diagnostics(diagnostics, set(inputs.requirements))
    pods = pod_facts(inventory)
    if len(clusters) != len(plan.clusters):
        files_of = files_by_cluster(rendered.files)
        clusters = {c.cluster.path: cluster_record(c, files_of.get(c.cluster.path, ()))
                    for c in plan.clusters}
    else:
        clusters = {c.cluster.path: clusters[c.cluster.path] for c in plan.clusters}
    return Snapshot(
        {p: (inputs.digests[p], inventory_domains.get(p, ())) for p in inputs.inventory},
        {p: FileRecord(inputs.digests[p], tuple(by_file[p]),
                       tuple(requirement_diagnostics.get(p, ()))) for p in inputs.requirements},
        clusters, other_files(rendered.files), facts_digest(pods), tuple(other),
        inputs.diagnostics, not shared_global_names(inventory), pods)


class ClusterRecords(dict[str, ClusterRecord]):
    """The record of each cluster as it is rendered (``render(each_cluster=...)``): its
    objects are then still in the processor's caches; a pass over the whole fleet's objects
    after the render takes about as long as that render's own pass over them."""

    def __init__(self) -> None:
        super().__init__()
        self.flags: SharedFlags = {}  # of the fleet's shared bodies (cluster_record)

    def __call__(self, cluster: ClusterPlan, files: Sequence[OutputFile],
                 groups: Mapping[str, Sequence[Manifest]] | None = None) -> None:
        # files in path order, as a snapshot lists them; two plans of one folder (never in a
        # valid plan) leave fewer records than clusters, and snapshot_of takes them afresh
        self[cluster.cluster.path] = cluster_record(cluster, sorted(files, key=_path),
                                                    self.flags, groups)


def _path(file: OutputFile) -> str:
    return file.path


def split_diagnostics(diagnostics: Iterable[Diagnostic], requirement_files: set[str]
                      ) -> tuple[dict[str, list[Diagnostic]], list[Diagnostic]]:
    by_file: dict[str, list[Diagnostic]] = {}
    other: list[Diagnostic] = []
    for d in diagnostics:
        if d.location.file in requirement_files:
            by_file.setdefault(d.location.file, []).append(d)
        else:
            other.append(d)
    return by_file, other


def files_by_cluster(files: Iterable[OutputFile]) -> dict[str, list[OutputFile]]:
    out: dict[str, list[OutputFile]] = {}
    for f in files:
        split = split_cluster_path(f.path)
        if split is not None:
            out.setdefault(f"{split[0]}/{split[1]}", []).append(f)
    return out


def other_files(files: Iterable[OutputFile]) -> tuple[tuple[str, str], ...]:
    return file_digests(f for f in files if split_cluster_path(f.path) is None)


def inventory_domains(documents: Iterable[Document]) -> dict[str, tuple[str, ...]]:
    """The domain names each inventory file declares."""
    out: dict[str, set[str]] = {}
    for doc in documents:
        names = out.setdefault(doc.file, set())
        data = doc.data
        if isinstance(data, dict):
            for section in ("metadata", "domain"):
                holder = data.get(section)
                if isinstance(holder, dict) and isinstance(holder.get("name"), str):
                    names.add(holder["name"])
                    break
    return {p: tuple(sorted(n)) for p, n in out.items()}


# -- (de)serialization: a line a record, read back defensively (a bad entry: no snapshot) --
#
# The first line is a JSON object (the format, the inventory files, the other outputs and
# diagnostics, and how many records follow); then one JSON array a line per requirement file
# (["R", path, digest, records, diagnostics]) and per cluster (["C", name, files, counts,
# copies]). A run that changes a few records writes every other line back as it read it,
# instead of serializing thousands of records again.


def snapshot_bytes(snapshot: Snapshot, reuse: Snapshot | None = None,
                   record: dict[str, tuple[object, bytes]] | None = None) -> bytes:
    """``reuse``: the snapshot this one was computed from (its records' lines are reused).
    ``record``: filled with each record's line, as :attr:`Snapshot.lines` of a snapshot read
    back from these bytes (a later save of a snapshot computed from this one reuses them)."""
    known = reuse.lines if reuse is not None else {}
    record = {} if record is None else record
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    head = {
        "format": SNAPSHOT_FORMAT,
        "inventory_files": snapshot.inventory_files,
        "other_files": snapshot.other_files,
        "pods": snapshot.pods,
        "other_diagnostics": [_diagnostic_json(d) for d in snapshot.other_diagnostics],
        "listing_diagnostics": [_diagnostic_json(d) for d in snapshot.listing_diagnostics],
        "sliceable": snapshot.sliceable,
        "pod_networks": [[d, c, [[text, w.file, w.line, w.column] for text, w in cidrs]]
                         for d, c, cidrs in snapshot.pod_networks],
        "requirement_files": len(snapshot.requirement_files),
        "clusters": len(snapshot.clusters),
    }
    lines = [dumps(head).encode()]
    for path, file_record in snapshot.requirement_files.items():
        key = "R" + path
        old = known.get(key)
        if old is not None and old[0] is file_record:
            line = old[1]
        else:  # (named) tuples of strings, numbers and tuples: JSON arrays as they are
            line = dumps(("R", path, file_record.digest, file_record.requirements,
                          [_diagnostic_json(d) for d in file_record.diagnostics])).encode()
        record[key] = (file_record, line)
        lines.append(line)
    for name, cluster in snapshot.clusters.items():
        key = "C" + name
        old = known.get(key)
        copies = cluster.copies
        if old is not None and old[0] is cluster:
            line = old[1]
        elif isinstance(copies, CachedCopies):  # as read (decoded or not): its text as it is
            head_part = dumps(("C", name, cluster.files, cluster.counts))
            line = f"{head_part[:-1]},{copies.text}]".encode()
        else:
            line = dumps(("C", name, *cluster)).encode()
        record[key] = (cluster, line)
        lines.append(line)
    lines.append(b"")
    return b"\n".join(lines)


def snapshot_from_bytes(payload: bytes) -> Snapshot | None:
    """The snapshot in ``payload``, or None when anything about it does not check out."""
    try:
        head_line, _, rest = payload.partition(b"\n")
        head = json.loads(head_line)
        if head["format"] != SNAPSHOT_FORMAT:
            return None
        raw = rest.split(b"\n")
        if raw.pop() != b"" or len(raw) != head["requirement_files"] + head["clusters"]:
            return None
        count = head["requirement_files"]
        entries = json.loads(b"[" + b",".join(raw[:count]) + b"]") if count else []
        lines: dict[str, tuple[object, bytes]] = {}
        requirement_files: dict[str, FileRecord] = {}
        clusters: dict[str, ClusterRecord] = {}
        for entry, line in zip(entries, raw[:count], strict=True):
            tag, path, file_digest, recs, diags = entry
            key = "R" + str(path)
            if tag != "R" or key in lines:
                return None  # a cluster among the files, or a file twice: not meshplan's
            # (lists, not generators, for tuple(): ten thousand files, most of one record)
            file_record = FileRecord(str(file_digest), tuple([
                RequirementRecord((str(k[0]), str(k[1]), bool(k[2])), tuple(f), tuple(r),
                                  tuple(c), str(s), tuple(x))
                for k, f, r, c, s, x in recs]), tuple([_diagnostic(x) for x in diags]))
            requirement_files[str(path)] = file_record
            lines[key] = (file_record, line)
        for line in raw[count:]:
            tag, name, files, counts, copies_text = _cluster_line(line)
            key = "C" + str(name)
            if tag != "C" or key in lines:
                return None
            cluster = ClusterRecord(
                tuple(_output_entry(p, h, f"clusters/{name}/") for p, h in files),
                (int(counts[0]), int(counts[1]), int(counts[2])),
                CachedCopies(copies_text))
            clusters[str(name)] = cluster
            lines[key] = (cluster, line)
        return Snapshot(
            {p: (str(d), tuple(n)) for p, (d, n) in head["inventory_files"].items()},
            requirement_files, clusters,
            tuple(_output_entry(p, h) for p, h in head["other_files"]),
            str(head["pods"]),
            tuple(_diagnostic(x) for x in head["other_diagnostics"]),
            tuple(_diagnostic(x) for x in head["listing_diagnostics"]),
            head["sliceable"] is True,
            tuple([(str(d), str(c), tuple([(str(text), Location(str(f), int(line), int(column)))
                                           for text, f, line, column in cidrs]))
                   for d, c, cidrs in head["pod_networks"]]),
            lines,
        )
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


_DECODER = json.JSONDecoder()
_BLANK = re.compile(r"[ \t\n\r]*")  # JSON's whitespace


def _cluster_line(line: bytes) -> tuple[Any, Any, Any, Any, str]:
    """A cluster's line, ["C", name, files, counts, copies]: the first four decoded, the
    copies (the bulk of it) as text, decoded when asked (:class:`CachedCopies`). ValueError
    when the line is not such an array."""
    text = line.decode("utf-8")
    at = _skip_blank(text, 0)
    if not text.startswith("[", at):
        raise ValueError("not a cluster record")
    values = []
    for _ in range(4):
        value, at = _DECODER.raw_decode(text, _skip_blank(text, at + 1))
        at = _skip_blank(text, at)
        if not text.startswith(",", at):
            raise ValueError("not a cluster record")
        values.append(value)
    copies = text[at + 1:].strip(" \t\n\r")
    if not copies.endswith("]"):
        raise ValueError("not a cluster record")
    copies = copies[:-1].strip(" \t\n\r")
    if not copies.startswith("{") or not copies.endswith("}"):
        raise ValueError("not a cluster record")
    return values[0], values[1], values[2], values[3], copies


def _skip_blank(text: str, at: int) -> int:
    found = _BLANK.match(text, at)
    return found.end() if found is not None else at


_BLOB_NAME = re.compile(r"[0-9a-f]{64}")


def _output_entry(path: Any, name: Any, under: str = "") -> tuple[str, str]:
    """An output file of a snapshot, (path, sha256), checked before it is trusted: the path
    is relative, stays inside the output folder (and inside ``under``, its cluster's folder)
    and the blob name is a SHA-256. A state can be written by anyone who can write the cache
    (a cache shared between CI runs): its paths go to the writer as they are. ValueError
    otherwise (the snapshot is then ignored)."""
    path, name = str(path), str(name)
    parts = path.split("/")
    if not path.startswith(under) or any(p in ("", ".", "..") for p in parts) \
            or "\\" in path or "\0" in path or not _BLOB_NAME.fullmatch(name):
        raise ValueError(f"not a safe cached output file: {path!r}")
    return path, name


def _diagnostic_json(d: Diagnostic) -> list[Any]:
    loc = d.location
    return [d.severity.value, loc.file, loc.line, loc.column, d.path, d.message]


_SEVERITIES = {s.value: s for s in Severity}  # a look-up, not an Enum call per diagnostic


def _diagnostic(x: Sequence[Any]) -> Diagnostic:
    severity, file, line, column, path, message = x
    return Diagnostic(_SEVERITIES[severity], Location(str(file), int(line), int(column)),
                      str(path), str(message))


# --------------------------------------------------------------------------- outputs


def cached_files(cache: RenderCache, entries: Iterable[tuple[str, str]]) -> Iterator[OutputFile]:
    """The cached output files; :class:`Fallback` when one is missing or corrupt."""
    entries = list(entries)
    for (path, _), content in zip(entries, cache.read_blobs([n for _, n in entries]),
                                  strict=True):
        if content is None:
            raise Fallback(f"the cached content of {path} is missing or corrupt")
        yield OutputFile(path, content)


def assemble(files: Iterable[OutputFile]) -> tuple[OutputFile, ...]:
    return tuple(sorted(files, key=lambda f: f.path))


def summary_of(clusters: Iterable[ClusterRecord]) -> RenderSummary:
    total = policies = services = namespaces = 0
    for record in clusters:
        total += 1
        policies += record.counts[0]
        services += record.counts[1]
        namespaces += record.counts[2]
    return RenderSummary(total, policies, services, namespaces)


def render_stale(plan: Plan, stale: frozenset[str]) -> dict[str, tuple[ClusterPlan,
                                                                     list[OutputFile]]]:
    """The files of the stale clusters (one text memo, as a full render shares it)."""
    memo = SharedText()
    out = {}
    for cluster in plan.clusters:
        if cluster.cluster.path in stale:
            out[cluster.cluster.path] = (cluster, render_cluster(cluster, memo))
    return out


def marker_file() -> OutputFile:
    return OutputFile(OUTPUT_MARKER, MARKER_TEXT.encode())


def other_outputs(inventory: Inventory) -> list[OutputFile]:
    return [marker_file(), *bootstrap_files(inventory)]


def read_requirement_documents(root: Path, paths: Iterable[str], contents: Mapping[str, bytes]
                               ) -> tuple[list[tuple[str, Document]], list[Diagnostic]]:
    """The documents of these requirement files, parsed from ``contents`` (the bytes
    :func:`list_inputs` read and digested: what is analysed is what is recorded)."""
    documents: list[tuple[str, Document]] = []
    problems: list[Diagnostic] = []
    for relpath in paths:
        folder = domain_folder(relpath)
        if folder is None:
            raise Fallback(f"{relpath} is not inside a domain folder")
        docs, found = read_documents(root, relpath, contents.get(relpath))
        documents.extend((folder, doc) for doc in docs)
        problems.extend(found)
    return documents, problems
