"""Stage sequencing, and only here: load -> schema -> model -> check -> refine -> (mesh plan,
identity layer -> monitoring) -> render.

Each function only sequences stages (and hands the result to the command that needs a whole
run: verify, diff, publish, propose-ids); the work lives in the stage modules, which never
import this one.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .bootstrap import check_destinations
from .check import check_inventory
from .diagnostics import (
    Diagnostic,
    InputError,
    Location,
    error,
    has_errors,
    sorted_diagnostics,
)
from .load.repository import load_repository
from .mesh.check import check_mesh_inputs
from .model import (
    Domain,
    GitOps,
    Inventory,
    Requirement,
    build_domain,
    build_domain_request,
    build_gitops,
    build_requirement,
    with_implied_namespaces,
)
from .outputs import DEFAULT_OUTPUT_DIR
from .refine import Plan, refine
from .schema import (
    DOMAIN,
    GITOPS,
    MESH,
    check_inventory_document,
    check_requirement_document,
)

if TYPE_CHECKING:  # the commands below import their modules when they run (start-up time)
    from .gitdiff import DiffReport
    from .mesh.ids import IdProposal
    from .mesh.model import Mesh
    from .mesh.plan import MeshPlan
    from .publish import PublishOptions, PublishResult
    from .render import Rendered
    from .verify.report import VerifyReport


@dataclass(frozen=True)
class Analysis:
    """Everything up to refinement: the model, the plan, and every diagnostic of the run."""

    inventory: Inventory | None  # None when any stage reported an error
    plan: Plan | None
    diagnostics: tuple[Diagnostic, ...]
    mesh: MeshPlan | None = None  # with a Mesh document (meshplan.mesh)


@contextmanager
def without_cyclic_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one pipeline run, then restore it.

    The pipeline allocates millions of small dicts, lists and tuples that form trees, never
    cycles: reference counting frees them, and the cyclic collector only re-scans them, over
    and over (a quarter of the CPU time of a 1,000-cluster render). The run is bounded, so
    the cyclic garbage it leaves (a few exceptions' frames) is collected afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # Everything the run allocated sits in the youngest generation, whose counter is far
        # past its threshold: re-enabling as is would make the next allocation scan it all
        # (about a second at a thousand clusters). Freezing and unfreezing moves it to the
        # oldest generation in O(1), where it is scanned only by the rare full collections.
        gc.freeze()
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def analyse(repo: Path, *, proposing_ids: bool = False) -> Analysis:
    """``proposing_ids``: ClusterMesh members may lack an ID (``meshplan mesh propose-ids``)."""
    with without_cyclic_gc():
        return _analyse(repo, proposing_ids=proposing_ids)


def _analyse(repo: Path, *, proposing_ids: bool = False) -> Analysis:
    """Load, check structure, build the model, check meaning, refine and plan the mesh (with a
    Mesh document); never raises on input.

    Refinement and the mesh plan run here too because some problems only show once objects
    or the plan exist (two services becoming the same global Service, an ExternalName
    clashing with a Service, a flow without a path): ``validate`` must report exactly what
    ``render`` would.
    """
    inputs, diagnostics = load_repository(repo)
    domains: list[Domain] = []
    broken_domains: set[str] = set()
    gitops: GitOps | None = None
    mesh: Mesh | None = None
    first_seen: dict[str, Location] = {}  # kind -> the one GitOps / Mesh document
    for doc in inputs.inventory:
        kind, problems = check_inventory_document(doc)
        diagnostics.extend(problems)
        if kind is GITOPS or kind is MESH:  # at most one each, counting invalid ones too
            if kind.name in first_seen:
                diagnostics.append(error(doc.location(("kind",)), "kind", "expected at most one "
                                         f"{kind.name} document, found another (first at "
                                         f"{first_seen[kind.name]})"))
                continue
            first_seen[kind.name] = doc.location(("kind",))
            if kind is GITOPS:
                gitops = None if has_errors(problems) else build_gitops(doc)
            elif not has_errors(problems):
                from .mesh.model import build_mesh  # only with a Mesh document

                mesh = build_mesh(doc)
            continue
        if kind is None or has_errors(problems):
            broken_domains.update(declared_domain_names(doc.data))
            continue
        domains.append(build_domain(doc) if kind is DOMAIN else build_domain_request(doc))
    requirements: list[Requirement] = []
    for folder, doc in inputs.requirements:
        kind, problems = check_requirement_document(doc)
        diagnostics.extend(problems)
        if kind is not None and not has_errors(problems):
            requirements.append(build_requirement(folder, doc))
    # The records hold what they need of the documents (values, locations): free the parsed
    # trees and their position tables before refinement allocates the objects (peak memory).
    del inputs
    inventory = with_implied_namespaces(Inventory(tuple(domains), tuple(requirements), gitops,
                                                  mesh))
    diagnostics.extend(check_inventory(inventory, frozenset(broken_domains)))
    diagnostics.extend(check_destinations(inventory))
    diagnostics.extend(check_mesh_inputs(inventory, ids_optional=proposing_ids))
    from .observability.check import check_observability_inputs  # start-up: see check.py

    diagnostics.extend(check_observability_inputs(inventory))
    if has_errors(diagnostics):
        return Analysis(None, None, sorted_diagnostics(diagnostics))
    plan = refine(inventory)
    mesh_plan: MeshPlan | None = None
    if inventory.mesh is not None:  # the mesh modules below only with a Mesh document
        from .mesh.check import check_mesh_plan
        from .mesh.identity import plan_identity, with_identity_objects
        from .mesh.plan import plan_mesh
        from .mesh.render import with_mesh_objects
        from .observability.check import check_observability_plan
        from .observability.plan import plan_observability
        from .observability.render import with_observability_objects

        mesh_plan = plan_mesh(inventory)
        assert mesh_plan is not None  # there is a Mesh document
        diagnostics.extend(check_mesh_plan(mesh_plan, ids_optional=proposing_ids))
        plan = with_mesh_objects(plan, mesh_plan)
        identity = plan_identity(inventory)
        diagnostics.extend(identity.diagnostics)
        plan = with_identity_objects(plan, identity)
        monitoring = plan_observability(mesh_plan)
        if monitoring is not None:
            diagnostics.extend(check_observability_plan(monitoring))
            plan = with_observability_objects(plan, monitoring)
    ordered = sorted_diagnostics((*diagnostics, *plan.diagnostics))
    if has_errors(ordered):
        return Analysis(None, None, ordered)
    return Analysis(inventory, plan, ordered, mesh_plan)


def declared_domain_names(data: object) -> set[str]:
    """The domain name a broken inventory document claims, so others do not cascade on it."""
    if not isinstance(data, dict):
        return set()
    for section in ("metadata", "domain"):
        holder = data.get(section)
        if isinstance(holder, dict) and isinstance(holder.get("name"), str):
            return {holder["name"]}
    return set()


def validate(repo: Path) -> tuple[Inventory | None, tuple[Diagnostic, ...]]:
    """The validated inventory (None when anything is an error) and all diagnostics, sorted."""
    analysis = analyse(repo)
    return analysis.inventory, analysis.diagnostics


def validated(repo: Path) -> tuple[Inventory, tuple[Diagnostic, ...]]:
    """Like :func:`validate` but raises :class:`InputError` when there is any error."""
    inventory, diagnostics = validate(repo)
    if inventory is None:
        raise InputError(diagnostics)
    return inventory, diagnostics


def render_repository(repo: Path) -> tuple[Rendered, tuple[Diagnostic, ...]]:
    """Validate, refine and render; raises :class:`InputError` on any error."""
    _inventory, rendered, diagnostics = render_with_inventory(repo)
    return rendered, diagnostics


def render_with_inventory(repo: Path) -> tuple[Inventory, Rendered, tuple[Diagnostic, ...]]:
    """:func:`render_repository`, also giving the validated inventory it rendered from (so
    callers that need both do not validate twice)."""
    with without_cyclic_gc():
        analysis = _analyse(repo)
        rendered = render_analysis(analysis)
    assert analysis.inventory is not None  # render_analysis raised otherwise
    return analysis.inventory, rendered, analysis.diagnostics


def render_analysis(analysis: Analysis) -> Rendered:
    """The output files of an analysis; raises :class:`InputError` if it found errors."""
    if analysis.inventory is None or analysis.plan is None:
        raise InputError(analysis.diagnostics)
    from .render import render  # not needed by validate (start-up time)

    with without_cyclic_gc():
        return render(analysis.plan, analysis.inventory, analysis.mesh)


# --------------------------------------------------------------------------- commands


def propose_mesh_ids(repo: Path) -> tuple[IdProposal, ...] | None:
    """Cilium cluster IDs for the ClusterMesh members that have none (``meshplan mesh
    propose-ids``); None without a Mesh document with ``spec.cilium``.

    The inputs are checked as for a render, except that members may lack an ID. Raises
    :class:`InputError` when they are invalid or the ID space is exhausted.
    """
    from .mesh.ids import propose_ids

    analysis = analyse(repo, proposing_ids=True)
    if analysis.inventory is None:
        raise InputError(analysis.diagnostics)
    if analysis.mesh is None or analysis.mesh.mesh.cilium is None:
        return None
    proposals, problems = propose_ids(analysis.mesh)
    if problems:
        raise InputError(problems)
    return proposals


def verify_repository(repo: Path, rendered: Path | None = None) -> VerifyReport:
    """Validate the inputs (raises InputError when invalid), then verify the rendered tree."""
    from .outputs import read_tree
    from .verify.report import display_root_for, verify

    inventory, _ = validated(repo)
    out = rendered if rendered is not None else repo / DEFAULT_OUTPUT_DIR
    return verify(inventory, read_tree(out), display_root_for(repo, out))


def diff_repository(project: Path, base: str, *,
                    with_flows: bool = False) -> tuple[DiffReport, tuple[Diagnostic, ...]]:
    """Render ``base`` (in a temporary worktree) and the working tree, and compare them.

    Raises :class:`InputError` when the working tree's inputs are invalid (an invalid base is
    a note in the report).
    """
    from .gitdiff import diff_report, render_ref

    inventory, rendered, diagnostics = render_with_inventory(project)
    before = render_ref(project, base, render_with_inventory, with_flows=with_flows)
    return diff_report(base, before, inventory, rendered.files, with_flows=with_flows), diagnostics


def publish_repository(options: PublishOptions) -> PublishResult:
    """Render the checked-out commit and publish it to the output branch (:mod:`.publish`).

    The git checks come first and the input errors after them (git problems are cheaper to
    fix first); one analysis serves both the configured branch and the output.
    """
    from .publish import choose_target, publish_output, read_source

    source = read_source(options.project, options.remote, allow_dirty=options.allow_dirty)
    analysis = analyse(options.project)
    gitops = analysis.inventory.gitops if analysis.inventory is not None else None
    target = choose_target(options, source, gitops.branch if gitops is not None else None)
    rendered = render_analysis(analysis)
    return publish_output(options, source, target, rendered.files, analysis.diagnostics)
