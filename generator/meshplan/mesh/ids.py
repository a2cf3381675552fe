"""Propose Cilium cluster IDs for ClusterMesh members that have none; never change one.

Changing a running cluster's ID restarts every workload (Cilium's clustermesh.rst), so an
assigned ID is a fixed point and only members without one get a proposal. The rule an ID must
keep is the one :mod:`meshplan.mesh.check` enforces: unique among a member and the clusters
it connects to, in ``1..maxConnectedClusters``. With ``peers: all`` that is unique among all
members; with ``peers: needed`` two members may share an ID when no cluster connects to both
(they are at distance 3 or more in the peer graph), which is what lets a large fleet stay
within 255 or 511 IDs. Proposals go in inventory order, each taking the smallest ID that keeps
the rule (greedy colouring of the squared peer graph): deterministic, and stable when members
are appended.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from ..diagnostics import Diagnostic, error
from ..model import Cluster
from ..refine import ClusterRef
from .plan import MeshPlan, ref_of


@dataclass(frozen=True)
class IdProposal:
    cluster: Cluster
    mesh_id: int


def propose_ids(plan: MeshPlan) -> tuple[tuple[IdProposal, ...], tuple[Diagnostic, ...]]:
    """An ID for every ClusterMesh member without one, or why the ID space is exhausted."""
    cilium = plan.mesh.cilium
    if cilium is None:
        return (), ()
    limit = cilium.max_connected_clusters
    assigned = {ref_of(c): c.mesh_id for c in plan.cilium_members if c.mesh_id is not None}
    peers = {ref_of(c): [ref_of(p) for p in plan.peers_of(c)] for c in plan.cilium_members} \
        if plan.peers_needed else None
    proposals: list[IdProposal] = []
    problems: list[Diagnostic] = []
    everyone_taken = set(assigned.values())
    for cluster in plan.cilium_members:
        if cluster.mesh_id is not None:
            continue
        ref = ref_of(cluster)
        taken = everyone_taken if peers is None else set(_ids_near(ref, peers, assigned))
        free = next((i for i in range(1, limit + 1) if i not in taken), None)
        if free is None:
            problems.append(_exhausted(cluster, limit, plan.peers_needed))
            continue
        assigned[ref] = free
        everyone_taken.add(free)
        proposals.append(IdProposal(cluster, free))
    return tuple(proposals), tuple(problems)


def _ids_near(ref: ClusterRef, peers: Mapping[ClusterRef, list[ClusterRef]],
              assigned: Mapping[ClusterRef, int]) -> Iterator[int]:
    """IDs of the clusters within two hops: any cluster that connects to ``ref`` also holds
    the identities of its other peers."""
    for near in peers[ref]:
        if near in assigned:
            yield assigned[near]
        for far in peers[near]:
            if far in assigned and far != ref:
                yield assigned[far]


def _exhausted(cluster: Cluster, limit: int, needed: bool) -> Diagnostic:
    scope = ("not used by the clusters it connects to or by their peers" if needed
             else "not used by another member (peers: all)")
    hint = "" if limit == 511 else "; maxConnectedClusters: 511 doubles the ID space"
    hint += "" if needed else "; peers: needed lets unconnected clusters share IDs"
    assert cluster.clustermesh is not None
    return error(cluster.clustermesh.location, f"{cluster.path}.meshId", f"expected a free "
                 f"Cilium cluster id for {cluster.domain}/{cluster.name} (1 to {limit}, "
                 f"{scope}), found none{hint}")


# --------------------------------------------------------------------------- output


def proposal_lines(proposals: Iterable[IdProposal]) -> list[str]:
    """``file:line:col: path: meshId: N (domain/cluster, Cilium name ...)``, one per proposal."""
    return [f"{p.cluster.location}: {p.cluster.path}: meshId: {p.mesh_id} "
            f"({p.cluster.domain}/{p.cluster.name}, Cilium name {p.cluster.mesh_name})"
            for p in proposals]


def proposal_patch(proposals: Iterable[IdProposal], texts: Mapping[str, str]
                   ) -> tuple[str, list[IdProposal]]:
    """A unified diff (``git apply``) adding ``meshId`` below each member's ``name:``.

    ``texts`` maps inventory files to their text. Entries written in flow style
    (``- {name: cl1, ...}``) cannot be patched line-wise and are returned instead.
    """
    by_file: dict[str, list[IdProposal]] = {}
    for proposal in proposals:
        by_file.setdefault(proposal.cluster.location.file, []).append(proposal)
    out: list[str] = []
    skipped: list[IdProposal] = []
    for file in sorted(by_file):
        lines = texts[file].splitlines(keepends=True)
        new = list(lines)
        for proposal in sorted(by_file[file], key=lambda p: -p.cluster.location.line):
            inserted = _inserted_line(lines, proposal)
            if inserted is None:
                skipped.append(proposal)
            else:
                new.insert(proposal.cluster.location.line, inserted)
        out.extend(difflib.unified_diff(lines, new, f"a/{file}", f"b/{file}"))
    return "".join(out), skipped


def _inserted_line(lines: list[str], proposal: IdProposal) -> str | None:
    where = proposal.cluster.location
    line = lines[where.line - 1] if 0 < where.line <= len(lines) else ""
    key = line.rfind("name:", 0, max(where.column - 1, 0))
    if key < 0 or line[:key].strip() not in ("", "-"):
        return None
    return " " * key + f"meshId: {proposal.mesh_id}\n"
