"""Stage sequencing, and only here: load -> schema -> model -> check -> refine -> (mesh plan,
identity layer -> monitoring) -> render.

Each function only sequences stages (and hands the result to the command that needs a whole
run: verify, diff, publish, propose-ids); the work lives in the stage modules, which never
import this one.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bootstrap import check_destinations
from .check import check_inventory
from .diagnostics import (
    Diagnostic,
    InputError,
    Location,
    MeshplanError,
    error,
    has_errors,
    sorted_diagnostics,
)
from .load.document import Document
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
from .outputs import DEFAULT_OUTPUT_DIR, read_tree
from .refine import (
    ClusterPlan,
    ClusterRef,
    Manifest,
    Plan,
    SettledCopies,
    refine,
    refines_cleanly,
)
from .schema import (
    DOMAIN,
    GITOPS,
    MESH,
    check_inventory_document,
    check_requirement_document,
    inventory_kind,
)

if TYPE_CHECKING:  # the commands below import their modules when they run (start-up time)
    from .cache import RenderCache
    from .check import PodNetworks
    from .gitdiff import DiffReport
    from .incremental import (
        ClusterRecord,
        IncrementalResult,
        InputFiles,
        ObjectsByCluster,
        RequirementRecord,
        ServicesLayout,
        Snapshot,
    )
    from .load.canonical import RenderedReader
    from .mesh.ids import IdProposal
    from .mesh.model import Mesh
    from .mesh.plan import MeshPlan
    from .outputs import OutputFile
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
    model = model_inventory(inputs.inventory)
    requirements = model_requirements(inputs.requirements)
    # The records hold what they need of the documents (values, locations): free the parsed
    # trees and their position tables before refinement allocates the objects (peak memory).
    del inputs
    return analyse_model(model, requirements, diagnostics, proposing_ids=proposing_ids)


@dataclass(frozen=True)
class InventoryModel:
    """The inventory documents checked and built: domains, the GitOps and Mesh documents."""

    domains: tuple[Domain, ...]
    gitops: GitOps | None
    mesh: Mesh | None
    broken_domains: frozenset[str]  # declared by documents that failed their structural check
    diagnostics: tuple[Diagnostic, ...]


@dataclass(frozen=True)
class RequirementsModel:
    requirements: tuple[Requirement, ...]
    diagnostics: tuple[Diagnostic, ...]


def model_inventory(documents: Iterable[Document],
                    checked: Container[str] = ()) -> InventoryModel:
    """Check the structure of the inventory documents and build the valid ones. ``checked``:
    files whose documents are known to pass that check with no diagnostic (the render cache
    saw the same bytes do so): not checked again."""
    diagnostics: list[Diagnostic] = []
    domains: list[Domain] = []
    broken_domains: set[str] = set()
    gitops: GitOps | None = None
    mesh: Mesh | None = None
    first_seen: dict[str, Location] = {}  # kind -> the one GitOps / Mesh document
    for doc in documents:
        kind = inventory_kind(doc) if doc.file in checked else None
        problems: list[Diagnostic] = []
        if kind is None:
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
    return InventoryModel(tuple(domains), gitops, mesh, frozenset(broken_domains),
                          tuple(diagnostics))


def model_requirements(documents: Iterable[tuple[str, Document]]) -> RequirementsModel:
    """Check the structure of requirement documents (domain folder, document); build the valid."""
    diagnostics: list[Diagnostic] = []
    requirements: list[Requirement] = []
    for folder, doc in documents:
        kind, problems = check_requirement_document(doc)
        diagnostics.extend(problems)
        if kind is not None and not has_errors(problems):
            requirements.append(build_requirement(folder, doc))
    return RequirementsModel(tuple(requirements), tuple(diagnostics))


def analyse_model(model: InventoryModel, requirements: RequirementsModel,
                  load_diagnostics: Iterable[Diagnostic], *, proposing_ids: bool = False,
                  settled: SettledCopies | None = None, whole: bool = True,
                  pods: PodNetworks | None = None) -> Analysis:
    """Check meaning, refine and plan the mesh; ``settled``: see :func:`meshplan.refine.refine`.

    ``whole=False``: ``model`` is only the part of an unchanged, already checked inventory that
    the requirements read (an incremental render): only the requirements are checked, with
    ``pods`` (every cluster's pod networks; else those of ``model``).
    """
    inventory, diagnostics = _checked(model, requirements, load_diagnostics,
                                      proposing_ids=proposing_ids, whole=whole, pods=pods)
    if has_errors(diagnostics):
        return Analysis(None, None, sorted_diagnostics(diagnostics))
    return _planned(inventory, diagnostics, proposing_ids=proposing_ids, settled=settled)


def _checked(model: InventoryModel, requirements: RequirementsModel,
             load_diagnostics: Iterable[Diagnostic], *, proposing_ids: bool, whole: bool,
             pods: PodNetworks | None = None) -> tuple[Inventory, list[Diagnostic]]:
    """The inventory and the diagnostics of every check before refinement
    (:func:`analyse_model`)."""
    diagnostics = [*load_diagnostics, *model.diagnostics, *requirements.diagnostics]
    inventory = with_implied_namespaces(Inventory(model.domains, requirements.requirements,
                                                  model.gitops, model.mesh))
    if whole:
        diagnostics.extend(check_inventory(inventory, model.broken_domains))
        diagnostics.extend(check_destinations(inventory))
        diagnostics.extend(check_mesh_inputs(inventory, ids_optional=proposing_ids))
        from .observability.check import check_observability_inputs  # start-up: see check.py

        diagnostics.extend(check_observability_inputs(inventory))
    else:
        from .check import PodNetworks, RequirementChecker

        pods = pods if pods is not None else PodNetworks(inventory)
        for requirement in inventory.requirements:
            diagnostics.extend(RequirementChecker(inventory, requirement, model.broken_domains,
                                                  pods).problems())
    return inventory, diagnostics


def _planned(inventory: Inventory, diagnostics: list[Diagnostic], *, proposing_ids: bool,
             settled: SettledCopies | None) -> Analysis:
    """Refinement and the mesh plan of a checked inventory without errors
    (:func:`analyse_model`)."""
    plan = refine(inventory, settled)
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


def checked_inventory(repo: Path) -> Inventory:
    """The inventory :func:`validated` gives, for a command that reads it but not the plan
    (``meshplan verify``); raises :class:`InputError` with every diagnostic :func:`validate`
    reports when there is any error.

    Without a Mesh document, refinement only tells whether it finds an error
    (:func:`~meshplan.refine.refines_cleanly`: the objects are not put together); when it
    does, or with a Mesh document, the analysis goes on as :func:`analyse_model`'s.
    """
    with without_cyclic_gc():
        inputs, load_diagnostics = load_repository(repo)
        model = model_inventory(inputs.inventory)
        requirements = model_requirements(inputs.requirements)
        del inputs
        inventory, diagnostics = _checked(model, requirements, load_diagnostics,
                                          proposing_ids=False, whole=True)
        if has_errors(diagnostics):
            raise InputError(sorted_diagnostics(diagnostics))
        if inventory.mesh is None and refines_cleanly(inventory):
            return inventory
        analysis = _planned(inventory, diagnostics, proposing_ids=False, settled=None)
    if analysis.inventory is None:
        raise InputError(analysis.diagnostics)
    return analysis.inventory


def render_repository(repo: Path, *, keep: list[object] | None = None
                      ) -> tuple[Rendered, tuple[Diagnostic, ...]]:
    """Validate, refine and render; raises :class:`InputError` on any error. ``keep``: see
    :func:`render_with_inventory`."""
    _inventory, rendered, diagnostics = render_with_inventory(repo, keep=keep)
    return rendered, diagnostics


def render_with_inventory(repo: Path, *, keep: list[object] | None = None
                          ) -> tuple[Inventory, Rendered, tuple[Diagnostic, ...]]:
    """:func:`render_repository`, also giving the validated inventory it rendered from (so
    callers that need both do not validate twice). ``keep``: a list the run's analysis (its
    model and plan) is added to instead of being freed (the command line, which ends its
    process without freeing anything: :func:`meshplan.cli.run`)."""
    with without_cyclic_gc():
        analysis = _analyse(repo)
        rendered = render_analysis(analysis)
    assert analysis.inventory is not None  # render_analysis raised otherwise
    if keep is not None:
        keep.append(analysis)
    return analysis.inventory, rendered, analysis.diagnostics


def render_analysis(analysis: Analysis,
                    each_cluster: Callable[[ClusterPlan, list[OutputFile],
                                            dict[str, list[Manifest]]], object] | None = None
                    ) -> Rendered:
    """The output files of an analysis; raises :class:`InputError` if it found errors.
    ``each_cluster``: see :func:`meshplan.render.render`."""
    if analysis.inventory is None or analysis.plan is None:
        raise InputError(analysis.diagnostics)
    from .render import render  # not needed by validate (start-up time)

    with without_cyclic_gc():
        return render(analysis.plan, analysis.inventory, analysis.mesh,
                      each_cluster=each_cluster)


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


def verify_repository(repo: Path, rendered: Path | None = None,
                      cache: RenderCache | None = None, *,
                      parallel: bool | None = None,
                      keep: list[object] | None = None) -> VerifyReport:
    """Validate the inputs (raises InputError when invalid), then verify the rendered tree.

    With a ``cache``, rendered files are read through its parsed-document entries, each
    accepted only when it writes back to exactly the file's bytes (:mod:`.load.canonical`),
    and the files parsed are added to it.

    ``parallel`` (default: when :func:`~meshplan.forked.can_fork`): the inputs are checked in
    a forked worker process while this one reads the rendered tree, which does not need them
    (the two take about as long at a thousand clusters); the answer is the same either way.
    ``keep``: a list the validated inventory and what verify is done with are added to
    instead of being freed, as for :func:`render_with_inventory` (the command line, which
    ends its process without freeing).
    """
    from .forked import can_fork
    from .load.canonical import RenderedReader
    from .verify.report import display_root_for, verify

    out = rendered if rendered is not None else repo / DEFAULT_OUTPUT_DIR
    display_root = display_root_for(repo, out)
    reader = RenderedReader(cache)
    with without_cyclic_gc():
        if parallel if parallel is not None else can_fork():
            inventory, files = _inventory_beside_tree(repo, out, display_root, reader)
        else:
            inventory = checked_inventory(repo)
            files = read_tree(out)
        report = verify(inventory, files, display_root, reader, keep)
    reader.save()
    if keep is not None:
        keep.append(inventory)
    return report


def _inventory_beside_tree(repo: Path, out: Path, display_root: str, reader: RenderedReader
                           ) -> tuple[Inventory, dict[str, bytes]]:
    """:func:`checked_inventory` in a forked worker, while this process reads the rendered
    tree and its documents ahead (the reader, and the cache behind it, stay in this process).

    Reading ahead stops as soon as the worker answers: what is left is read when verify asks
    for it, and invalid inputs are reported without waiting for the rest of the tree. The
    errors are the serial order's: invalid inputs (InputError) before any failure to read
    the tree.
    """
    from .forked import Forked
    from .verify.cilium import read_ahead

    unread: Exception | None = None
    files: dict[str, bytes] = {}
    with Forked(lambda: _inventory_or_error(repo)) as worker:
        try:
            files = read_tree(out)
            read_ahead(files, reader, display_root, until=worker.ready)
        except Exception as exc:  # raised below, after the inputs' own errors
            unread = exc
        found = worker.result()
    if isinstance(found, MeshplanError):
        raise found
    if not isinstance(found, Inventory):
        raise InputError(found)
    if unread is not None:
        raise unread
    return found, files


def _inventory_or_error(repo: Path) -> Inventory | tuple[Diagnostic, ...] | MeshplanError:
    """:func:`checked_inventory`, its error as a value to send back: an InputError as its
    diagnostics (its constructor does not take its message back), any other of meshplan's
    errors (a message and an exit code) as it is when it travels (:func:`_sendable`)."""
    try:
        return checked_inventory(repo)
    except InputError as exc:
        return exc.diagnostics
    except MeshplanError as exc:
        return _sendable(exc)


def _sendable(exc: MeshplanError) -> MeshplanError:
    """``exc`` when it comes back from pickle as itself (its type, message and exit code),
    else a plain MeshplanError of its message and exit code.

    An exception pickles as its class, its ``args`` and its ``__dict__``: one with an
    attribute that does not pickle (a lock, an open file) fails in the worker, and one whose
    constructor does not take its ``args`` back (``__init__(self, path, reason)`` passing one
    message up) fails, or changes, when the parent unpickles it. Either way the worker would
    answer with an internal error (exit 3) where the serial run reports the user's error: the
    trip is tried here, in the worker, and only what survives it is sent. The type is not
    needed past the worker: the command reads an error's message and exit code only
    (:func:`meshplan.cli.guarded`)."""
    import pickle

    message = str(exc)
    try:
        back = pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # any failure of the trip: the plain form below
        back = None
    if type(back) is type(exc) and str(back) == message and back.exit_code == exc.exit_code:
        return exc
    plain = MeshplanError(message)
    plain.exit_code = exc.exit_code  # pickled with the instance's __dict__
    return plain


def diff_repository(project: Path, base: str, *, with_flows: bool = False,
                    cache: RenderCache | None = None,
                    unsaved: Callable[[str], None] | None = None,
                    ) -> tuple[DiffReport, tuple[Diagnostic, ...]]:
    """Render ``base`` (in a temporary worktree) and the working tree, and compare them.

    With a ``cache``, the base renders incrementally from the last base this project
    compared with, and the working tree incrementally from the base: a pull request pays for
    what it changes. Raises :class:`InputError` when the working tree's inputs are invalid (an
    invalid base is a note in the report). ``unsaved`` is told, once per reason, why the cache
    could not store a render (a full disk, a folder not writable: the diff stands).
    """
    with without_cyclic_gc():  # the comparison and picture too, over both renders' objects
        return _diff_repository(project, base, with_flows, cache, unsaved or (lambda _: None))


def _diff_repository(project: Path, base: str, with_flows: bool, cache: RenderCache | None,
                     unsaved: Callable[[str], None]
                     ) -> tuple[DiffReport, tuple[Diagnostic, ...]]:
    from .gitdiff import diff_report, render_ref

    if cache is None:
        inventory, rendered, diagnostics = render_with_inventory(project)
        before = render_ref(project, base, render_with_inventory, with_flows=with_flows)
        return (diff_report(base, before, inventory, rendered.files, with_flows=with_flows),
                diagnostics)
    from .cache import slot_for

    flows = _FlowInputs(project) if with_flows else None
    base_snapshot: list[Snapshot | None] = [None]
    reasons: dict[str, None] = {}  # why a render was not saved, in order, each once

    def render_base(checkout: Path) -> tuple[Inventory, Rendered, tuple[Diagnostic, ...]]:
        result = render_cached(checkout, cache, slot=slot_for(project, "diff-base"))
        base_snapshot[0] = result.snapshot
        if result.unsaved is not None:
            reasons[result.unsaved] = None
        # the head renders from the base: its files come from memory, not from the pack
        cache.hold(_blobs_of(result))
        if flows is not None:
            flows.read_base(checkout, result)
        return Inventory(()), result.rendered, result.diagnostics

    before = render_ref(project, base, render_base, with_flows=with_flows)
    head = render_cached(project, cache, previous=base_snapshot[0],
                         inputs=flows.inputs if flows is not None else None)
    if head.unsaved is not None:
        reasons[head.unsaved] = None
    for reason in reasons:
        unsaved(reason)
    inventory = Inventory(())
    if flows is not None and before.inventory is not None:  # the base was rendered
        old, inventory = flows.inventories(head)
        before = replace(before, inventory=old)
    return (diff_report(base, before, inventory, head.rendered.files, with_flows=with_flows),
            head.diagnostics)


def _blobs_of(result: IncrementalResult) -> Iterator[tuple[str, bytes]]:
    """The output files of a render through the cache, named as its snapshot names them (by
    the SHA-256 of the content it made or read and checked). Not its inputs: the head reads
    few of them (its changed files' old versions), from the pack."""
    if result.snapshot is None:
        return
    names = dict(result.snapshot.other_files)
    for record in result.snapshot.clusters.values():
        names.update(record.files)
    for file in result.rendered.files:
        name = names.get(file.path)
        if name is not None:
            yield name, file.content


# A change of more requirement files than this has both sides' inputs loaded in full for the
# flow picture (deriving one side's model from the other's is for the usual small change).
DERIVE_AT_MOST = 64


class _FlowInputs:
    """The models the flow picture reads, for both sides of ``meshplan diff`` with the render
    cache: whichever side a full render already modelled (else the head, loaded), and the
    other side derived from it when only requirement files differ, by modelling just those
    (their endpoints are all the picture takes from the requirements). Anything else has both
    sides loaded in full, the base while its checkout exists.
    """

    def __init__(self, project: Path) -> None:
        self.project = project
        self.changed: tuple[str, ...] | None = None  # requirement files that differ
        self.base: Inventory | None = None  # the base's own, when modelled in full
        self.base_documents: list[tuple[str, Document]] = []  # its versions of ``changed``
        self.inputs: InputFiles | None = None  # the head's, listed once for both uses

    def read_base(self, checkout: Path, result: IncrementalResult) -> None:
        from .incremental import list_inputs

        self.inputs = list_inputs(self.project)
        self.changed = _changed_requirement_files(result.snapshot, self.inputs)
        if result.inventory is not None or self.changed is None:
            self.base = _flow_inventory(checkout, True, result)
        if self.changed is not None:
            self.base_documents = _requirement_documents(checkout, self.changed)

    def inventories(self, head: IncrementalResult) -> tuple[Inventory, Inventory]:
        """(base, head)."""
        contents = self.inputs.contents if self.inputs is not None else None
        if self.changed is None:
            assert self.base is not None
            return self.base, _flow_inventory(self.project, True, head, contents)
        if self.base is not None and head.inventory is None:
            documents = _requirement_documents(self.project, self.changed, contents)
            return self.base, _with_requirements(self.base, self.changed, documents)
        now = _flow_inventory(self.project, True, head, contents)
        if self.base is not None:
            return self.base, now
        return _with_requirements(now, self.changed, self.base_documents), now


def _changed_requirement_files(snapshot: Snapshot | None, head: InputFiles
                               ) -> tuple[str, ...] | None:
    """The requirement files whose bytes differ between a render's snapshot and ``head``'s
    inputs, when nothing else does (same inventory files) and they are few; else None."""
    if snapshot is None or head.diagnostics:
        return None
    if {p: d for p, (d, _) in snapshot.inventory_files.items()} != \
            {p: head.digests[p] for p in head.inventory}:
        return None
    before = {p: record.digest for p, record in snapshot.requirement_files.items()}
    after = {p: head.digests[p] for p in head.requirements}
    changed = tuple(sorted(p for p in before.keys() | after.keys()
                           if before.get(p) != after.get(p)))
    return changed if len(changed) <= DERIVE_AT_MOST and all(changed) else None


def _requirement_documents(root: Path, relpaths: Iterable[str],
                           contents: Mapping[str, bytes] | None = None
                           ) -> list[tuple[str, Document]]:
    """(domain folder, document) of the requirement files of ``root`` among ``relpaths``, as
    :func:`.load.repository.load_repository` reads them (a missing one: none); ``contents``:
    the bytes the render digested (the picture reads what was rendered, not a later edit)."""
    from .load.repository import read_documents

    found: list[tuple[str, Document]] = []
    for relpath in relpaths:
        parts = relpath.split("/")
        raw = None if contents is None else contents.get(relpath)
        if len(parts) >= 3 and (raw is not None or (root / relpath).is_file()):
            documents, _ = read_documents(root.resolve(), relpath, raw)
            found.extend((parts[1], d) for d in documents)
    return found


def _with_requirements(inventory: Inventory, files: Sequence[str],
                       documents: Iterable[tuple[str, Document]]) -> Inventory:
    """``inventory`` with the requirements of ``files`` replaced by those of ``documents``
    (the same inventory files: a requirement's implied namespace is the same on both sides)."""
    with without_cyclic_gc():
        kept = [r for r in inventory.requirements if r.file not in set(files)]
        added = model_requirements(documents).requirements
        implied = with_implied_namespaces(Inventory(inventory.domains, added, inventory.gitops,
                                                    inventory.mesh)).requirements
        order = {path: k for k, path in enumerate(sorted({*files, *(r.file for r in kept)}))}
        requirements = sorted((*kept, *implied), key=lambda r: order[r.file])  # stable
        return replace(inventory, requirements=tuple(requirements))


def _flow_inventory(repo: Path, with_flows: bool, rendered: IncrementalResult,
                    contents: Mapping[str, bytes] | None = None) -> Inventory:
    """The model the flow picture reads (inputs already validated by the render; a full
    render's own), or an empty one when there is no picture to draw; ``contents``: as for
    :func:`_requirement_documents`."""
    if not with_flows:
        return Inventory(())
    if rendered.inventory is not None:
        return rendered.inventory
    with without_cyclic_gc():
        loaded, _ = load_repository(repo, contents)
        model = model_inventory(loaded.inventory)
        requirements = model_requirements(loaded.requirements)
        return with_implied_namespaces(Inventory(model.domains, requirements.requirements,
                                                 model.gitops, model.mesh))


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


# --------------------------------------------------------------------------- incremental


def render_cached(repo: Path, cache: RenderCache, *, slot: str | None = None,
                  previous: Snapshot | None = None, full_above: float = 0.5,
                  inputs: InputFiles | None = None, keep: list[object] | None = None
                  ) -> IncrementalResult:
    """:func:`render_repository` through the render cache (:mod:`meshplan.incremental`): only
    what changed since the snapshot is analysed and rendered again; byte for byte the output
    of a full render. ``previous``: start from this snapshot instead of the slot's (``meshplan
    diff`` renders the head from the base's). The new snapshot is written to the slot (default:
    the repository's own). ``full_above``: render in full when a change reaches more than
    this share of the requirement files (a full render is then cheaper). ``inputs``: the
    repository's input files as just listed (:func:`meshplan.incremental.list_inputs`).
    ``keep``: as for :func:`render_with_inventory` (a full run's analysis). Raises
    :class:`InputError` on any input error. The snapshot returned carries the lines it was
    saved as (a snapshot computed from it saves only the records that changed).
    """
    from .cache import slot_for
    from .incremental import Fallback, list_inputs, snapshot_bytes, snapshot_from_bytes

    root = repo.resolve()
    slot = slot if slot is not None else slot_for(root)
    with without_cyclic_gc():
        if previous is None:
            payload = cache.read_state(slot)
            previous = snapshot_from_bytes(payload) if payload is not None else None
        inputs = inputs if inputs is not None else list_inputs(root)
        try:
            try:
                result = _render_incrementally(root, inputs, cache, previous, full_above, True)
            except _WholeInventory:
                result = _render_incrementally(root, inputs, cache, previous, full_above, False)
        except Fallback as why:
            result = _render_fully(root, inputs, f"full ({why})", keep)
        # still without the cyclic GC: its collections would scan the whole run's objects
        if result.mode == "unchanged":
            cache.touch_state(slot)  # used again: kept longest when pruning
        elif result.snapshot is not None:
            lines: dict[str, tuple[object, bytes]] = {}
            try:
                cache.write_blobs(result.new_blobs)
                cache.write_state(slot, snapshot_bytes(result.snapshot, previous, lines))
            except OSError as exc:  # a full disk, a folder not writable: the render stands
                where = exc.filename or cache.root
                return replace(result, unsaved=f"{exc.strerror or exc}: {where}")
            result = replace(result, snapshot=replace(result.snapshot, lines=lines))
    return result


def _render_fully(root: Path, inputs: InputFiles, mode: str, keep: list[object] | None = None
                  ) -> IncrementalResult:
    """A full run that also takes the snapshot of its result (none with a Mesh document);
    ``keep``: see :func:`render_with_inventory`."""
    from .cache import digest
    from .incremental import ClusterRecords, IncrementalResult, inventory_domains, snapshot_of

    loaded, load_diagnostics = load_repository(root, inputs.contents)  # as digested
    model = model_inventory(loaded.inventory)
    requirements = model_requirements(loaded.requirements)
    declared = inventory_domains(loaded.inventory)
    del loaded  # free the parsed trees before refinement allocates the objects (as _analyse)
    analysis = analyse_model(model, requirements, load_diagnostics)
    del requirements
    records = ClusterRecords()  # taken as each cluster is rendered (none with a Mesh)
    rendered = render_analysis(analysis, None if model.mesh is not None else records)
    assert analysis.inventory is not None and analysis.plan is not None
    if keep is not None:
        keep.append(analysis)
    if analysis.mesh is not None or model.mesh is not None:
        return IncrementalResult(rendered, analysis.diagnostics, None, mode,
                                 inventory=analysis.inventory)
    snapshot = snapshot_of(inputs, analysis.inventory, analysis.plan, rendered,
                           analysis.diagnostics, declared, records)
    names = {path: name for record in snapshot.clusters.values() for path, name in record.files}
    names.update(snapshot.other_files)  # the snapshot digested every output file already
    blobs = tuple((names.get(f.path) or digest(f.content), f.content) for f in rendered.files)
    return IncrementalResult(rendered, analysis.diagnostics, snapshot, mode,
                             len(inputs.requirements), rendered.summary.clusters,
                             (*blobs, *_input_blobs(inputs, (*inputs.inventory,
                                                             *inputs.requirements))),
                             analysis.inventory)


def _input_blobs(inputs: InputFiles, paths: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    """Input files as they are now (as digested): a later run compares a changed requirement's
    objects with this version's, and a changed inventory with this one (``_changed_puts``)."""
    for relpath in paths:
        content = inputs.contents.get(relpath)
        if content is not None:
            yield inputs.digests[relpath], content


class _WholeInventory(Exception):
    """The part of the inventory a sliced run read does not cover the change: run again with
    the whole inventory."""


class _InventorySlice:
    """The inventory files declaring some domains (and those declaring none: the GitOps
    document), parsed and modelled: when no inventory file changed, a run reads only the
    domains its requirements read; what is taken of the inventory whole (its diagnostics, the
    bootstrap files, the pod networks) is the snapshot's.

    When inventory files changed in their services only (:meth:`services_changed`), the
    changed files are read before and now and always part of the slice, and every cluster's
    pod networks are the snapshot's (when they check out)."""

    def __init__(self, root: Path, inputs: InputFiles, previous: Snapshot) -> None:
        self.root = root
        self.order = inputs.inventory
        self.contents = inputs.contents  # the bytes listed and digested: parsed, not read again
        self.declared = {p: previous.inventory_files[p][1] for p in inputs.inventory}
        # An unchanged file with no diagnostic in the snapshot passed the structural checks
        # with none (the same bytes, the same meshplan): not checked again.
        noted = {d.location.file for d in previous.other_diagnostics}
        self.checked = {p for p in inputs.inventory if p not in noted}
        self.documents: dict[str, list[Document]] = {}
        self.parts: dict[str, InventoryModel] = {}  # each file's documents modelled
        self.domains: set[str] = set()
        self.model: InventoryModel | None = None
        self.old_domains: dict[str, tuple[Domain, ...]] = {}  # changed file -> as before
        self.pods: PodNetworks | None = None  # every cluster's (with services_changed)
        # file read in part -> the services read (by name) and their places in its list
        self.cuts: dict[str, tuple[frozenset[str], tuple[int, ...]]] = {}
        self.layouts: dict[str, ServicesLayout | None] = {}  # of the files cut (by their bytes)

    def covering(self, domains: set[str],
                 services: Mapping[str, set[str] | None] | None = None) -> InventoryModel:
        """The model of at least ``domains``; ``_WholeInventory`` when the slice cannot give
        it (the pod networks of every cluster, unless known; a domain no inventory file
        declares). ``services``: of each domain, the services the requirements analysed can
        look up (:func:`meshplan.incremental.services_read`; None: all, and so for a domain
        not named): an unchanged, checked file declaring one domain is read without the others
        when its layout allows (:meth:`_read`); every other place stays where it was."""
        from .incremental import PODS

        if PODS in domains:
            if self.pods is None:
                raise _WholeInventory
            domains = domains - {PODS}
        missing = domains - self.domains
        wanted = [p for p in self.order if p not in self.documents and (
            not self.declared[p] or not missing.isdisjoint(self.declared[p]))]
        self.domains.update(n for p in wanted for n in self.declared[p])
        if not domains <= self.domains:
            raise _WholeInventory
        for relpath, (read, _) in self.cuts.items():  # read in part: enough of it?
            need = self._names_for(relpath, services)
            if need is None or not need <= read:
                wanted.append(relpath)
        if self.model is not None and not wanted:
            return self.model
        for relpath in wanted:
            names = self._names_for(relpath, services)
            if names is not None and relpath in self.cuts:
                names = names | self.cuts[relpath][0]
            self.documents[relpath] = self._read(relpath, names)
            self.parts.pop(relpath, None)
        for relpath, docs in self.documents.items():  # each file modelled once
            if relpath not in self.parts:
                self.parts[relpath] = self._modelled(relpath, docs)
        parts = [self.parts[p] for p in self.order if p in self.parts]
        gitops = [part.gitops for part in parts if part.gitops is not None]
        if len(gitops) > 1 or any(part.mesh is not None or has_errors(part.diagnostics)
                                  for part in parts):
            raise _WholeInventory  # (two GitOps documents: a whole run reports it)
        self.model = InventoryModel(
            tuple(d for part in parts for d in part.domains), gitops[0] if gitops else None,
            None, frozenset(n for part in parts for n in part.broken_domains),
            tuple(d for part in parts for d in part.diagnostics))
        return self.model

    def _names_for(self, relpath: str, services: Mapping[str, set[str] | None] | None
                   ) -> frozenset[str] | None:
        """The services to read of a file (None: all): of its one domain, when the file is
        unchanged and passed its checks (an inventory-only file is read whole)."""
        declared = self.declared[relpath]
        if services is None or len(declared) != 1 or relpath not in self.checked \
                or relpath in self.old_domains:
            return None
        names = services.get(declared[0])
        return frozenset(names) if names is not None else None

    def _read(self, relpath: str, names: frozenset[str] | None) -> list[Document]:
        """The file's documents; with ``names``, those of its services only, when its layout
        allows (:func:`meshplan.incremental.services_cut`) and the cut text reads as one
        Domain whose services are exactly those kept, else whole."""
        from .incremental import services_cut, services_layout
        from .load.repository import read_documents

        raw = self.contents.get(relpath)
        self.cuts.pop(relpath, None)
        cut = None
        if names is not None and raw is not None:
            if relpath not in self.layouts:  # a file read again with more names: once
                self.layouts[relpath] = services_layout(raw)
            layout = self.layouts[relpath]
            cut = services_cut(raw, names, layout) if layout is not None else None
        if cut is not None and names is not None:
            text, kept_names, kept = cut
            docs, problems = read_documents(self.root, relpath, text)
            if not problems and len(docs) == 1 and _service_names(docs[0]) == kept_names:
                self.cuts[relpath] = (names, kept)
                return docs
        docs, problems = read_documents(self.root, relpath, raw)
        if has_errors(problems):
            raise _WholeInventory
        return docs

    def _modelled(self, relpath: str, docs: list[Document]) -> InventoryModel:
        """A file's documents modelled; a file read in part has its services' key paths
        (the only places naming their position in the list) as in the whole file."""
        from .load.document import format_path

        part = model_inventory(docs, self.checked)
        if relpath not in self.cuts or len(part.domains) != 1:
            return part
        kept = self.cuts[relpath][1]
        domain = part.domains[0]
        services = tuple(replace(s, path=format_path(("spec", "services", kept[i])),
                                 clusters_path=format_path(("spec", "services", kept[i],
                                                            "clusters")))
                         for i, s in enumerate(domain.services))
        return replace(part, domains=(replace(domain, services=services),))

    def old_model(self) -> InventoryModel:
        """:meth:`covering`'s model with the changed files' domains as they were."""
        assert self.model is not None
        by_file = _domains_by_file(self.model.domains)
        return InventoryModel(
            tuple(d for p in self.order
                  for d in (self.old_domains[p] if p in self.old_domains else by_file.get(p, ()))),
            self.model.gitops, None, self.model.broken_domains, self.model.diagnostics)

    def services_changed(self, cache: RenderCache, previous: Snapshot,
                         changed: Sequence[str]) -> set[str]:
        """The services ("domain/name") that differ in the ``changed`` inventory files, read
        before (the cache keeps the versions the snapshot saw) and now; ``_WholeInventory``
        unless the change can be read in part exactly: each file was and is domains only, with
        no diagnostic; the domains, their order and every cluster (where it is written too)
        are the same, and so are the namespaces and names of their services (no two domains
        share one: the snapshot's); the domains have no problem of their own now (the checks
        across domains read the domains' names and clusters, which did not change); and the
        snapshot's pod networks check out (every cluster's: no other file is read)."""
        from .check import PodNetworks, check_inventory
        from .incremental import changed_services, facts_digest, pod_cidrs
        from .load.repository import read_documents

        changed_set = set(changed)
        self.checked -= changed_set
        if any(p not in self.declared or p not in previous.inventory_files for p in changed) \
                or any(d.location.file in changed_set for d in previous.other_diagnostics):
            raise _WholeInventory
        old_files = _old_versions(cache, previous, changed)
        if old_files is None:
            raise _WholeInventory
        before: list[Domain] = []
        now: list[Domain] = []
        for relpath in changed:
            docs, problems = read_documents(self.root, relpath, self.contents.get(relpath))
            new_part = model_inventory(docs)
            old_part = model_inventory(old_files[relpath])
            for part, documents in ((new_part, docs), (old_part, old_files[relpath])):
                if problems or part.diagnostics or part.gitops is not None \
                        or part.mesh is not None or len(part.domains) != len(documents):
                    raise _WholeInventory
            if [d.clusters for d in old_part.domains] != [d.clusters for d in new_part.domains]:
                raise _WholeInventory  # (Cluster records compare where they are written too)
            if [sorted((s.namespace, s.name) for s in d.services) for d in old_part.domains] \
                    != [sorted((s.namespace, s.name) for s in d.services)
                        for d in new_part.domains]:
                raise _WholeInventory
            self.documents[relpath] = docs
            self.parts[relpath] = new_part
            self.old_domains[relpath] = old_part.domains
            self.domains.update(self.declared[relpath])
            before.extend(old_part.domains)
            now.extend(new_part.domains)
        services = changed_services(before, now)
        if services is None:
            raise _WholeInventory
        known = frozenset(n for names in self.declared.values() for n in names)
        if check_inventory(Inventory(tuple(now)), known):  # exportTo: any declared domain
            raise _WholeInventory
        # Every other file is as the snapshot saw it (its digest), and the changed ones'
        # clusters are the same: that is what makes every cluster's pod networks the
        # snapshot's. Their own digest only catches a snapshot made inconsistently; they must
        # also match the changed files' domains as the cache keeps them.
        facts = previous.pod_networks
        held: dict[str, list[tuple[str, tuple[tuple[str, Location], ...]]]] = {}
        for domain, cluster, cidrs in facts:
            held.setdefault(domain, []).append((cluster, cidrs))
        if facts_digest(facts) != previous.pods or any(
                held.get(d.name) != [(c.name, c.pod_cidrs) for c in d.clusters] for d in before):
            raise _WholeInventory
        self.pods = PodNetworks.of(pod_cidrs(facts))
        return services


def _service_names(document: Document) -> tuple[str, ...] | None:
    """The names of a Domain document's ``spec.services`` (None: not such a document)."""
    data = document.data
    spec = data.get("spec") if isinstance(data, dict) and data.get("kind") == "Domain" else None
    if not isinstance(spec, dict):
        return None
    services = spec.get("services")
    if services is None:
        return ()
    if not isinstance(services, list) or not all(isinstance(s, dict) for s in services):
        return None
    return tuple(s.get("name") for s in services)


def _render_incrementally(root: Path, inputs: InputFiles, cache: RenderCache,
                          previous: Snapshot | None, full_above: float, sliced: bool
                          ) -> IncrementalResult:
    """The incremental run; raises ``Fallback`` when the change cannot be sliced safely.
    ``sliced``: read only the inventory domains the change reaches when no inventory file
    changed (raises ``_WholeInventory`` when that does not cover it)."""
    from .cache import digest
    from .incremental import (
        PODS,
        Fallback,
        FileRecord,
        IncrementalResult,
        Snapshot,
        assemble,
        cached_files,
        callers,
        changed_copies,
        changed_services,
        cluster_record,
        copy_annotations,
        facts_digest,
        file_digests,
        footprint_of,
        inventory_domains,
        other_outputs,
        plan_work,
        pod_facts,
        pods_digest,
        reads_changed,
        render_stale,
        requirement_reads,
        services_read,
        shared_global_names,
        split_diagnostics,
        stale_clusters,
        subject_work,
        summary_of,
        with_companions,
    )
    from .load.repository import read_documents
    from .render import Rendered

    if previous is None:
        raise Fallback("no snapshot of an earlier render")
    if has_errors(inputs.diagnostics):
        raise Fallback("problems finding the input files")
    old = previous.requirement_files
    digests = inputs.digests
    changed = {p for p in inputs.requirements if p not in old or old[p].digest != digests[p]}
    removed = [p for p in old if p not in digests]
    changed_inventory = [p for p in (*inputs.inventory, *previous.inventory_files)
                         if previous.inventory_files.get(p, ("",))[0] != digests.get(p)]
    if not changed and not removed and not changed_inventory \
            and inputs.diagnostics == previous.listing_diagnostics:
        return _unchanged(inputs, cache, previous)
    piece: _InventorySlice | None = None
    services: set[str] | None = None
    if sliced and not removed and previous.sliceable \
            and inputs.diagnostics == previous.listing_diagnostics \
            and previous.inventory_files.keys() == set(inputs.inventory):
        # No inventory file changed, or only services did: read only the domains the changed
        # files read (and the changed inventory files, before and now).
        piece = _InventorySlice(root, inputs, previous)
        if changed_inventory:
            services = piece.services_changed(cache, previous, changed_inventory)
        concerned = reads_changed(services) if services is not None else None
        dirty = [p for p in inputs.requirements if p in changed or (
            concerned is not None and concerned(old[p].requirements))]
        dirty_docs, found, dirty_model = _dirty_requirements(root, inputs, dirty, full_above)
        old_model: InventoryModel | None
        model = old_model = piece.covering({
            *(d for r in dirty_model.requirements for d in footprint_of(r)),
            *(d for p in dirty if p in old for rec in old[p].requirements
              for d in rec.footprint)}, services_read([
                *((r.domain, requirement_reads(r)) for r in dirty_model.requirements),
                *((rec.key[0], rec.reads) for p in dirty if p in old
                  for rec in old[p].requirements)]))
        if changed_inventory:
            old_model = piece.old_model()
        problems: list[Diagnostic] = []
        declared = dict(piece.declared)
        changed_domains: set[str] = set()
    else:
        documents: list[Document] = []
        problems = []
        for relpath in inputs.inventory:  # the bytes listed and digested, not read again
            docs, found = read_documents(root, relpath, inputs.contents.get(relpath))
            documents.extend(docs)
            problems.extend(found)
        # An unchanged file with no diagnostic in the snapshot passed the structural checks
        # with none (the same bytes, the same meshplan): not checked again.
        noted = {d.location.file for d in previous.other_diagnostics}
        model = model_inventory(documents, {p for p in inputs.inventory
                                            if p not in changed_inventory and p not in noted})
        if has_errors((*problems, *model.diagnostics)):
            raise Fallback("problems in the inventory")
        if model.mesh is not None:
            raise Fallback("a Mesh document: the mesh plan spans the fleet")
        base = Inventory(model.domains, (), model.gitops, None)
        if shared_global_names(base):
            raise Fallback("services of two domains share a namespace and name")
        declared = inventory_domains(documents)
        changed_domains = set()
        for relpath in changed_inventory:
            changed_domains.update(previous.inventory_files.get(relpath, ("", ()))[1])
            changed_domains.update(declared.get(relpath, ()))
        if pods_digest(base) != previous.pods:
            changed_domains.add(PODS)
        # Only services changed (the usual inventory edit): the requirements looking them up
        # are dirty, not every requirement reading their domains.
        old_model = (_previous_inventory(cache, previous, changed_inventory, documents,
                                         model)
                     if changed_inventory else model)
        services = (changed_services(old_model.domains, model.domains)
                    if old_model is not None and changed_inventory else None)
        if services is not None:
            changed_domains.difference_update(d.name for d in model.domains)
            concerns = reads_changed(services)
            dirty = [p for p in inputs.requirements if p in changed or concerns(
                old[p].requirements) or any(
                not changed_domains.isdisjoint(rec.footprint) for rec in old[p].requirements)]
        else:
            dirty = [p for p in inputs.requirements if p in changed or any(
                not changed_domains.isdisjoint(rec.footprint) for rec in old[p].requirements)]
        # The dirty files' new records say which clusters they reach now.
        dirty_docs, found, dirty_model = _dirty_requirements(root, inputs, dirty, full_above)
    seen = with_implied_namespaces(Inventory(model.domains, dirty_model.requirements,
                                             model.gitops, None))
    records = _records_by_file(seen, dirty)
    clusters = (list(previous.clusters) if piece is not None
                else [f"{d.name}/{c.name}" for d in model.domains for c in d.clusters])
    alone: dict[str, tuple[set[str], ObjectsByCluster, ObjectsByCluster]] = {}
    if old_model is not None and (services is not None or not changed_inventory) and (
            not changed_domains or changed_domains == {PODS}):
        alone = _changed_puts(cache, old_model, model,
                              {p: old[p].digest for p in dirty if p in old}, dirty_docs,
                              piece.pods if piece is not None else None)
    changed_puts = {p: found[0] for p, found in alone.items()}
    stale = stale_clusters(previous, inputs, changed_domains, records, clusters, changed_puts)
    # Every dirty file's objects are known before and now: patch the stale clusters' cached
    # objects with them, and analyse only the dirty files (and those selecting the same pods)
    # for their warnings. When that is ambiguous, analyse every file putting objects there.
    fresh = None
    if dirty and not removed and not changed_domains and alone.keys() == set(dirty):
        fresh = _patched_clusters(cache, previous, model, stale, alone)
    if fresh is not None:
        work = subject_work(previous, inputs, records, stale)
    elif piece is not None:
        raise _WholeInventory  # re-analysing whole clusters reads every putter's domains
    else:
        work = plan_work(previous, inputs, records, stale)
    cluster_records: dict[str, ClusterRecord] = {}
    cluster_files: dict[str, list[OutputFile]] = {}
    for name, (patched_record, its_files) in (fresh or {}).items():
        cluster_records[name] = patched_record
        cluster_files[name] = its_files

    # Analyse the requirements that put objects into a stale cluster (and their companions)
    # with the whole inventory; the Service copies of the other clusters come from the snapshot
    # (of every cluster, from the patched records, when the stale clusters were patched).
    def settled(ref: ClusterRef, namespace: str, name: str) -> Mapping[str, Any] | None:
        record = cluster_records.get(ref.path)
        if record is None:
            if ref.path in work.stale_clusters:
                return None
            record = previous.clusters.get(ref.path)
        return copy_annotations(record, namespace, name) if record is not None else {}

    preloaded: dict[str, list[tuple[str, Document]]] = {}
    for item in dirty_docs:
        preloaded.setdefault(item[1].file, []).append(item)
    selected = {*work.reanalysed, *work.companions}
    if len(selected) > len(inputs.requirements) * full_above:
        raise Fallback("the change reaches most requirements")  # a full render is cheaper
    if piece is not None:
        model = piece.covering(_footprints(previous, records, selected),
                               _services_of(previous, records, selected))
    pods = piece.pods if piece is not None else None
    analysis, inventory = _analyse_selected(root, inputs, model, selected, preloaded,
                                            (*inputs.diagnostics, *problems, *found), settled,
                                            whole=piece is None, pods=pods)
    assert analysis.plan is not None
    if fresh is None:
        for name, (plan_cluster, its_files) in render_stale(analysis.plan,
                                                            work.stale_clusters).items():
            cluster_records[name] = cluster_record(plan_cluster, its_files)
            cluster_files[name] = its_files
    if piece is None:
        outputs = other_outputs(inventory)
        new_blobs = [(digest(f.content), f.content) for f in outputs]
        other_files = file_digests(outputs)
    else:  # the marker and the bootstrap files: of the inventory, which did not change
        outputs = list(cached_files(cache, previous.other_files))
        new_blobs = []
        other_files = previous.other_files
    files = list(outputs)
    unchanged_files: list[tuple[str, str]] = []
    for name in clusters:
        if name in cluster_files:
            files.extend(cluster_files[name])
            new_blobs.extend(_named(cluster_records[name], cluster_files[name]))
        elif name in previous.clusters:
            cluster_records[name] = previous.clusters[name]
            unchanged_files.extend(previous.clusters[name].files)
        else:
            raise Fallback(f"no snapshot of cluster {name}")
    files.extend(cached_files(cache, unchanged_files))  # one read per pack

    requirement_set = set(inputs.requirements)
    trusted = dict.fromkeys(work.reanalysed, inventory)
    by_file, other = split_diagnostics(analysis.diagnostics, requirement_set)
    # A Service copy that changed changes the load-balancing warnings of every caller: the
    # callers not analysed above are analysed once more, with the new copies everywhere.
    names = changed_copies(previous, cluster_records)
    readers = callers(previous, inputs, names, set(trusted)) if names else ()
    if readers:
        def renewed(ref: ClusterRef, namespace: str, name: str) -> Mapping[str, Any]:
            record = cluster_records.get(ref.path)
            return copy_annotations(record, namespace, name) if record is not None else {}

        chosen = {*readers, *with_companions(previous, inputs, records, readers)}
        if piece is not None:
            model = piece.covering(_footprints(previous, records, chosen),
                                   _services_of(previous, records, chosen))
        again, again_inventory = _analyse_selected(root, inputs, model, chosen, {}, (),
                                                   renewed, whole=piece is None, pods=pods)
        again_by_file, _ = split_diagnostics(again.diagnostics, requirement_set)
        for relpath in readers:
            trusted[relpath] = again_inventory
            by_file[relpath] = again_by_file.get(relpath, [])

    if piece is not None:  # the inventory's own diagnostics: it did not change
        other = list(previous.other_diagnostics)
    keys: set[tuple[str, str, bool]] = set()
    diagnostics = list(other)
    requirement_files = {}
    new_records = {p: _records_by_file(i, [p])[p] for p, i in trusted.items()}
    for relpath in inputs.requirements:
        if relpath in trusted:
            record = FileRecord(digests[relpath], new_records[relpath],
                                tuple(by_file.get(relpath, ())))
        else:
            record = old[relpath]
        for rec in record.requirements:
            if rec.key in keys:
                raise Fallback("a requirement name repeats")
            keys.add(rec.key)
        requirement_files[relpath] = record
        diagnostics.extend(record.diagnostics)
    pods_now = previous.pod_networks if piece is not None else pod_facts(inventory)
    snapshot = Snapshot({p: (digests[p], declared.get(p, ())) for p in inputs.inventory},
                        requirement_files, cluster_records, other_files,
                        previous.pods if piece is not None else facts_digest(pods_now),
                        tuple(other), inputs.diagnostics,
                        pod_networks=previous.pod_networks if piece is not None else pods_now)
    rendered = Rendered(assemble(files), summary_of(cluster_records[c] for c in clusters))
    new_blobs.extend(_input_blobs(inputs, (*(p for p in dirty if p in changed),
                                               *(p for p in changed_inventory if p in digests))))
    return IncrementalResult(rendered, sorted_diagnostics(diagnostics), snapshot, "incremental",
                             len(selected) + len(readers), len(cluster_files),
                             tuple(new_blobs), patched=len(fresh or ()), sliced=piece is not None)


def _named(record: ClusterRecord, files: Sequence[OutputFile]) -> Iterator[tuple[str, bytes]]:
    """(sha256, content) of a cluster's files just rendered or patched: the digests its
    record holds, made of these very files a moment ago (:func:`meshplan.incremental.
    file_digests`, in their order), not hashed again; hashed when the record is not theirs."""
    from .cache import digest

    if len(record.files) != len(files) or any(
            path != f.path for (path, _), f in zip(record.files, files, strict=True)):
        yield from ((digest(f.content), f.content) for f in files)
        return
    for (_, name), f in zip(record.files, files, strict=True):
        yield name, f.content


def _patched_clusters(cache: RenderCache, previous: Snapshot, model: InventoryModel,
                      stale: Iterable[str],
                      alone: Mapping[str, tuple[set[str], ObjectsByCluster, ObjectsByCluster]]
                      ) -> dict[str, tuple[ClusterRecord, list[OutputFile]]] | None:
    """The stale clusters' records and files: their cached objects without what the dirty
    files put there before, with what they put there now (``alone``: their objects before and
    now, refined alone). None when a cluster cannot be patched exactly: its cached files are
    not as meshplan renders them, or an object is ambiguous."""
    from .incremental import cached_documents, cached_files, patch_documents, same_objects
    from .yamltext import SharedText

    dirty_causes = {cause for _, before, after in alone.values() for side in (before, after)
                    for objects in side.values() for m in objects.values()
                    for cause in m.required_by}
    mesh_names = {f"{d.name}/{c.name}": c.mesh_name for d in model.domains for c in d.clusters}
    memo = SharedText()
    out = {}
    for name in sorted(stale):
        record = previous.clusters.get(name)
        if record is None or name not in mesh_names:
            return None
        domain, _, cluster_name = name.partition("/")
        cluster = ClusterPlan(ClusterRef(domain, cluster_name), mesh_names[name], ())
        documents = cached_documents(cluster, cached_files(cache, record.files))
        if documents is None:
            return None
        before = {key for _, objects, _ in alone.values() for key in objects.get(name, {})}
        now = [m for _, _, after in alone.values() for m in after.get(name, {}).values()]
        patched = patch_documents(cluster, documents, dirty_causes, now, record, memo, before,
                                  same_objects(alone.values(), name))
        if patched is None:
            return None
        out[name] = patched
    return out


def _previous_inventory(cache: RenderCache, previous: Snapshot, changed: Sequence[str],
                        documents: Sequence[Document], model: InventoryModel
                        ) -> InventoryModel | None:
    """The inventory the snapshot was taken of: the changed files as the cache keeps them, the
    others as they are (``documents``, modelled as ``model``); None when a version is gone (or
    unreadable).

    When the changed files held only domains, before and now, only their old versions are
    modelled: the other domains are ``model``'s (an unchanged document models the same), in
    file order, and the GitOps document is ``model``'s too. Else the old inventory is modelled
    whole."""
    old_files = _old_versions(cache, previous, changed)
    if old_files is None:
        return None
    old_part = model_inventory(d for p in sorted(old_files) for d in old_files[p])
    if has_errors(old_part.diagnostics) or old_part.mesh is not None:
        return None
    current: dict[str, list[Document]] = {}
    for doc in documents:
        current.setdefault(doc.file, []).append(doc)
    now_domains = _domains_by_file(model.domains)
    changed_now = [p for p in changed if p in current]
    only_domains_before = sum(map(len, old_files.values())) == len(old_part.domains)
    only_domains_now = sum(len(current[p]) for p in changed_now) == sum(
        len(now_domains.get(p, ())) for p in changed_now)
    if old_part.gitops is None and model.mesh is None and only_domains_before \
            and only_domains_now:  # the rest is model's
        old_domains = _domains_by_file(old_part.domains)
        return InventoryModel(
            tuple(d for p in sorted(previous.inventory_files)
                  for d in (old_domains.get(p, ()) if p in changed else now_domains.get(p, ()))),
            model.gitops, None, model.broken_domains, old_part.diagnostics)
    old = model_inventory(d for p in sorted(previous.inventory_files)
                          for d in (old_files[p] if p in changed else current.get(p, ())))
    return None if has_errors(old.diagnostics) or old.mesh is not None else old


def _old_versions(cache: RenderCache, previous: Snapshot, changed: Sequence[str]
                  ) -> dict[str, list[Document]] | None:
    """The documents of the changed inventory files as the snapshot saw them (their bytes
    from the cache), in path order; None when a version is gone, unreadable or in error."""
    from .load.repository import read_documents

    old_files: dict[str, list[Document]] = {}
    for relpath in sorted(previous.inventory_files):
        if relpath not in changed:
            continue
        raw = cache.read_blob(previous.inventory_files[relpath][0])
        if raw is None:
            return None
        docs, problems = read_documents(Path(), relpath, raw)  # as the file was read then
        if has_errors(problems):
            return None
        old_files[relpath] = docs
    return old_files


def _domains_by_file(domains: Iterable[Domain]) -> dict[str, list[Domain]]:
    by_file: dict[str, list[Domain]] = {}
    for domain in domains:
        by_file.setdefault(domain.location.file, []).append(domain)
    return by_file


def _changed_puts(cache: RenderCache, old_model: InventoryModel, model: InventoryModel,
                  changed: Mapping[str, str], documents: Sequence[tuple[str, Document]],
                  pods: PodNetworks | None = None
                  ) -> dict[str, tuple[set[str], ObjectsByCluster, ObjectsByCluster]]:
    """For dirty requirement files (``changed``: path -> the digest of the version the snapshot
    holds, whose bytes the cache keeps): the clusters where their objects differ between that
    version with the snapshot's inventory (``old_model``) and this one with this inventory.

    Each version is refined alone: a requirement's objects do not depend on the others' (they
    only meet when merged). A version that is gone or does not refine cleanly leaves the file
    out: the caller then takes every cluster it puts objects into, before and now.
    Per file: those clusters, and its objects before and now. ``pods``: every cluster's pod
    networks, the same before and now (else those of each model).
    """
    from .check import PodNetworks
    from .incremental import differing_clusters, domain_folder
    from .load.repository import read_documents

    new_pods = pods if pods is not None else PodNetworks(Inventory(model.domains))
    old_pods = new_pods if old_model is model or pods is not None \
        else PodNetworks(Inventory(old_model.domains))
    out: dict[str, tuple[set[str], ObjectsByCluster, ObjectsByCluster]] = {}
    for relpath, old_digest in changed.items():
        raw = cache.read_blob(old_digest)
        folder = domain_folder(relpath)
        if raw is None or folder is None:
            continue
        old_docs, problems = read_documents(Path(), relpath, raw)  # as the file was read then
        if has_errors(problems):
            continue
        before = _objects_alone(old_model, [(folder, d) for d in old_docs], old_pods)
        after = _objects_alone(model, [item for item in documents if item[1].file == relpath],
                               new_pods)
        if before is not None and after is not None:
            out[relpath] = (differing_clusters(before, after), before, after)
    return out


def _objects_alone(model: InventoryModel, documents: Sequence[tuple[str, Document]],
                   pods: PodNetworks) -> ObjectsByCluster | None:
    """The objects of these requirements refined alone, per cluster; None when one is invalid
    (checked on its own: the checks across requirements do not change its objects)."""
    from .check import RequirementChecker
    from .incremental import objects_by_cluster

    requirements = model_requirements(documents)
    if has_errors(requirements.diagnostics):
        return None
    inventory = with_implied_namespaces(Inventory(model.domains, requirements.requirements,
                                                  model.gitops, None))
    for requirement in inventory.requirements:
        checker = RequirementChecker(inventory, requirement, model.broken_domains, pods)
        if has_errors(checker.problems()):
            return None
    plan = refine(inventory, empty_clusters=False)  # objects_by_cluster drops empty ones
    return None if has_errors(plan.diagnostics) else objects_by_cluster(plan)


def _dirty_requirements(root: Path, inputs: InputFiles, dirty: Sequence[str], full_above: float
                        ) -> tuple[list[tuple[str, Document]], list[Diagnostic],
                                   RequirementsModel]:
    """The dirty requirement files read and built; ``Fallback`` when they are too many (a full
    render is cheaper) or have a problem (a full run reports it exactly)."""
    from .incremental import Fallback, read_requirement_documents

    if len(dirty) > len(inputs.requirements) * full_above:
        raise Fallback("the change reaches most requirements")
    documents, found = read_requirement_documents(root, dirty, inputs.contents)
    built = model_requirements(documents)
    if has_errors((*found, *built.diagnostics)):
        raise Fallback("problems in a changed requirement")
    return documents, found, built


def _footprints(previous: Snapshot, records: Mapping[str, tuple[RequirementRecord, ...]],
                paths: Iterable[str]) -> set[str]:
    """The domains these requirement files read (their new records, else the snapshot's)."""
    old = previous.requirement_files
    return {d for p in paths for rec in (records[p] if p in records else old[p].requirements)
            for d in rec.footprint}


def _services_of(previous: Snapshot, records: Mapping[str, tuple[RequirementRecord, ...]],
                 paths: Iterable[str]) -> dict[str, set[str] | None]:
    """The services these requirement files can look up, per domain (their new records,
    else the snapshot's): :func:`meshplan.incremental.services_read`."""
    from .incremental import services_read

    old = previous.requirement_files
    return services_read((rec.key[0], rec.reads) for p in paths
                         for rec in (records[p] if p in records else old[p].requirements))


def _analyse_selected(root: Path, inputs: InputFiles, model: InventoryModel, selected: set[str],
                      preloaded: Mapping[str, list[tuple[str, Document]]],
                      diagnostics: Iterable[Diagnostic], settled: SettledCopies, *,
                      whole: bool = True, pods: PodNetworks | None = None
                      ) -> tuple[Analysis, Inventory]:
    """Check and refine the ``selected`` requirement files (in input order) with the inventory
    (``whole=False``: the part of it they read, see :func:`analyse_model`); raises
    ``Fallback`` on any error (a full run reports errors exactly)."""
    from .incremental import Fallback, read_requirement_documents

    wanted = [p for p in inputs.requirements if p in selected]
    more, found = read_requirement_documents(
        root, [p for p in wanted if p not in preloaded], inputs.contents)
    by_path = dict(preloaded)
    for item in more:
        by_path.setdefault(item[1].file, []).append(item)
    ordered = [item for p in wanted for item in by_path.get(p, ())]
    analysis = analyse_model(model, model_requirements(ordered), (*diagnostics, *found),
                             settled=settled, whole=whole, pods=pods)
    if analysis.inventory is None or analysis.plan is None:
        raise Fallback("problems in the inputs")
    return analysis, analysis.inventory


def _unchanged(inputs: InputFiles, cache: RenderCache, previous: Snapshot) -> IncrementalResult:
    """No input changed: the previous result, read back from the cache."""
    from .incremental import IncrementalResult, assemble, cached_files, summary_of
    from .render import Rendered

    entries = [*previous.other_files, *(f for c in previous.clusters.values() for f in c.files)]
    files = assemble(cached_files(cache, entries))
    diagnostics = sorted_diagnostics((*previous.other_diagnostics, *(
        d for r in previous.requirement_files.values() for d in r.diagnostics)))
    rendered = Rendered(files, summary_of(previous.clusters.values()))
    return IncrementalResult(rendered, diagnostics, previous, "unchanged")


def _records_by_file(inventory: Inventory, paths: Iterable[str]
                     ) -> dict[str, tuple[RequirementRecord, ...]]:
    from .incremental import requirement_record

    out: dict[str, list[RequirementRecord]] = {p: [] for p in paths}
    for requirement in inventory.requirements:
        if requirement.file in out:
            out[requirement.file].append(requirement_record(inventory, requirement))
    return {p: tuple(recs) for p, recs in out.items()}
