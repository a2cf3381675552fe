"""The pipeline wiring: one typo gives one error, and validate reports what render would."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from meshplan.diagnostics import MeshplanError, OperationError, UsageError

from tests.support.cli import run_cli, run_validate


def test_a_broken_domain_document_does_not_cascade(example_repo: Path) -> None:
    domain1 = example_repo / "inventory" / "domain1.yaml"
    text = domain1.read_text()
    domain1.write_text(text.replace("meshId: 1\n", "meshId: one\n", 1))

    code, _out, err = run_validate(example_repo)

    assert code == 1
    errors = [line for line in err.splitlines() if ": expected" in line]
    assert len(errors) == 1, err
    assert "inventory/domain1.yaml" in errors[0] and "meshId" in errors[0]
    assert "found no domain" not in err


def test_validate_reports_clashes_found_only_by_refinement(example_repo: Path) -> None:
    # Only refinement sees this clash (Cilium would merge the two global Services);
    # validate must report it too.
    _add_a_clash_found_only_by_refinement(example_repo)

    code, out, err = run_validate(example_repo)
    render_code, _render_out, render_err = run_cli(["render", "--repo", str(example_repo)])

    assert code == 1, out + err
    assert "Cilium would merge their backends" in err
    assert render_code == 1 and "Cilium would merge their backends" in render_err
    assert not (example_repo / "rendered").exists()  # nothing written on error


def _add_a_clash_found_only_by_refinement(repo: Path) -> None:
    """domain2 gets its own "backend" in domain1's namespace and a client that needs both
    mirrored: both would become the global Service backend-namespace/backend."""
    domain2 = repo / "inventory" / "domain2.yaml"
    domain2.write_text(domain2.read_text().replace(
        "    - name: rebel-base\n",
        "    - name: backend\n"
        "      namespace: backend-namespace\n"
        "      selector: {app: other-backend}\n"
        "      ports: [{port: 80, protocol: TCP, name: http}]\n"
        "      clusters: [cl4]\n"
        "    - name: rebel-base\n", 1))
    (repo / "requirements" / "domain2" / "own-backend.yaml").write_text(
        "apiVersion: meshplan.dev/v1alpha1\n"
        "kind: Requirement\n"
        "metadata: {name: own-backend, namespace: default}\n"
        "spec:\n"
        "  clusters: [cl3]\n"
        "  endpointSelector: {matchLabels: {name: client}}\n"
        "  egress:\n"
        "    - toEndpoints: [{matchLabels: {service: backend}}]\n")


def test_checked_inventory_validates_without_putting_the_plan_together(
        example_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """verify reads the inventory, not the plan: without a Mesh document its validation
    only collects refinement's objects (to find refinement's errors), never assembles them."""
    from meshplan.pipeline import checked_inventory, validate
    from meshplan.refine import _PlanBuilder

    inventory, _ = validate(example_repo)

    def assembled(self: _PlanBuilder) -> None:
        raise AssertionError("the plan was put together")

    monkeypatch.setattr(_PlanBuilder, "finish", assembled)
    assert checked_inventory(example_repo) == inventory


def test_checked_inventory_rules_refinement_errors_out_without_collecting_objects(
        example_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On inputs without a refinement error, verify's validation does not even collect
    refinement's objects (meshplan.refine._proven_clean)."""
    from meshplan import refine
    from meshplan.pipeline import checked_inventory, validate

    inventory, _ = validate(example_repo)

    def collected(*_args: object) -> None:
        raise AssertionError("refinement's objects were collected")

    monkeypatch.setattr(refine, "_collected", collected)
    assert checked_inventory(example_repo) == inventory


@pytest.mark.parametrize("defect", ["refinement", "schema"])
def test_checked_inventory_reports_exactly_what_validate_reports(
        example_repo: Path, defect: str) -> None:
    """An error refinement alone finds (the plan is then made after all), and one found
    before refinement: the same diagnostics as validate."""
    from meshplan.diagnostics import InputError
    from meshplan.pipeline import checked_inventory, validate

    if defect == "refinement":
        _add_a_clash_found_only_by_refinement(example_repo)
    else:
        domain1 = example_repo / "inventory" / "domain1.yaml"
        domain1.write_text(domain1.read_text().replace("meshId: 1\n", "meshId: one\n", 1))
    inventory, diagnostics = validate(example_repo)
    assert inventory is None and diagnostics
    with pytest.raises(InputError) as raised:
        checked_inventory(example_repo)
    assert raised.value.diagnostics == diagnostics


def test_checked_inventory_of_a_mesh_is_the_one_validate_gives(tmp_path: Path) -> None:
    """With a Mesh document the analysis goes on in full (the mesh plan's checks)."""
    from meshplan.pipeline import checked_inventory, validate

    from tests.support.repos import ISTIO_EXAMPLE, copy_tree

    repo = copy_tree(ISTIO_EXAMPLE, tmp_path / "istio")
    inventory, _ = validate(repo)
    assert inventory is not None and inventory.mesh is not None
    assert checked_inventory(repo) == inventory


def test_the_garbage_collector_is_restored_after_a_run(example_repo: Path) -> None:
    import gc

    from meshplan.diagnostics import InputError
    from meshplan.pipeline import render_repository, validate

    assert gc.isenabled()
    render_repository(example_repo)
    assert gc.isenabled()
    (example_repo / "inventory" / "domain1.yaml").write_text("kind: [", encoding="utf-8")
    assert validate(example_repo)[0] is None
    assert gc.isenabled()
    with pytest.raises(InputError):
        render_repository(example_repo)
    assert gc.isenabled()  # restored on the error path too

    gc.disable()
    try:
        validate(example_repo)
        assert not gc.isenabled()  # a caller's own choice is kept
    finally:
        gc.enable()


# --------------------------------------------------------------------------- verify, in parallel


def verify_both_ways(repo: Path, rendered: Path | None = None, cache_dir: Path | None = None
                     ) -> tuple[object, object]:
    """What verify reports with its inputs checked in a forked worker (which must have run:
    a child process used CPU or memory) and in this process, as comparable values; each way
    with a cache of its own when ``cache_dir`` (cold, then warm: the second run reads the
    first's entries)."""
    import resource

    from meshplan.cache import RenderCache
    from meshplan.pipeline import verify_repository

    answers = []
    for parallel in (True, False):
        for run in ("cold", "warm") if cache_dir is not None else ("no cache",):
            cache = RenderCache.at(cache_dir / str(parallel)) if cache_dir else None
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            report = verify_repository(repo, rendered, cache, parallel=parallel)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            forked = (after.ru_minflt, after.ru_utime) != (before.ru_minflt, before.ru_utime)
            assert forked == parallel, run
            answers.append((report.diagnostics, report.mismatches, report.policies,
                            [e.title for e in report.endpoints], report.flow_lines()))
    half = len(answers) // 2
    assert answers[:half] == [answers[0]] * half  # cold and warm agree
    return answers[0], answers[half]


def _rendered(repo: Path) -> Path:
    code, _out, err = run_cli(["render", "--repo", str(repo), "--no-cache"])
    assert code == 0, err
    return repo / "rendered"


def test_verify_in_parallel_reports_what_it_reports_in_serial(example_repo: Path,
                                                              tmp_path: Path) -> None:
    _rendered(example_repo)
    parallel, serial = verify_both_ways(example_repo, cache_dir=tmp_path / "cache")
    assert parallel == serial


def test_verify_in_parallel_of_an_istio_mesh(tmp_path: Path) -> None:
    from tests.support.repos import ISTIO_EXAMPLE, copy_tree

    repo = copy_tree(ISTIO_EXAMPLE, tmp_path / "repo")
    _rendered(repo)
    parallel, serial = verify_both_ways(repo)
    assert parallel == serial


def _break_the_tree(rendered: Path) -> None:
    """Defects of every kind verify reads: a rejected policy, YAML that does not parse, a
    file that is not UTF-8, a missing cluster folder, a stale one, a kustomization naming a
    file that is not there, and a file read twice."""
    policies = rendered / "clusters" / "domain2" / "cl4" / "policies.yaml"
    policies.write_text(policies.read_text().replace("matchLabels:", "matchLabels: {x: [}\n"
                                                     "  ignored:", 1))
    (rendered / "clusters" / "domain1" / "cl2" / "policies.yaml").write_bytes(
        b"kind: CiliumNetworkPolicy\nmetadata: {name: \xff}\n")
    import shutil

    shutil.move(rendered / "clusters" / "domain2" / "cl3", rendered / "clusters" / "domain2"
                / "stale")
    kustomization = rendered / "clusters" / "domain1" / "cl1" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text()
                             + "- absent.yaml\n- policies.yaml\n")


def test_verify_in_parallel_of_a_broken_tree(example_repo: Path, tmp_path: Path) -> None:
    _break_the_tree(_rendered(example_repo))
    parallel, serial = verify_both_ways(example_repo, cache_dir=tmp_path / "cache")
    assert parallel == serial
    diagnostics = parallel[0]  # type: ignore[index]
    texts = "\n".join(d.format_text() for d in diagnostics)
    for words in ("clusters/domain2/cl4/policies.yaml:", "not valid UTF-8",
                  "cluster domain2/cl3, found none", "no inventory cluster owns",
                  "found 'absent.yaml'"):
        assert words in texts, words


def test_verify_in_parallel_of_valid_inputs_and_no_rendered_tree(example_repo: Path) -> None:
    """Valid inputs and no rendered tree at all: the worker's inventory comes back and every
    cluster is reported missing, as in serial (nothing read ahead, nothing raised)."""
    import shutil

    shutil.rmtree(example_repo / "rendered", ignore_errors=True)
    assert not (example_repo / "rendered").exists()
    parallel, serial = verify_both_ways(example_repo)
    assert parallel == serial
    texts = [d.format_text() for d in parallel[0]]  # type: ignore[index]
    for cluster in ("domain1/cl1", "domain1/cl2", "domain2/cl3", "domain2/cl4"):
        assert f"rendered/clusters/{cluster}/: expected the rendered directory of cluster " \
               f"{cluster}, found none: run `meshplan render`" in "\n".join(texts), cluster


def test_a_worker_that_fails_unexpectedly_is_an_internal_error_of_the_command(
        example_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain RuntimeError in the forked worker (a bug, not an error meshplan raises on
    purpose) reaches ``meshplan verify`` as an internal error: exit 3, the worker's traceback
    in the message, nothing on stdout."""
    from meshplan import pipeline
    from meshplan.forked import can_fork

    if not can_fork():  # the command would check the inputs in this process
        pytest.skip("verify cannot fork here (one usable CPU, or other threads running)")

    def fails(repo: Path) -> None:
        raise RuntimeError("the check went wrong")

    _rendered(example_repo)
    monkeypatch.setattr(pipeline, "checked_inventory", fails)  # the child is a fork of this
    code, out, err = run_cli(["verify", "--repo", str(example_repo), "--no-cache"])
    assert (code, out) == (3, ""), err
    assert "internal error: WorkerError: the worker process raised:\n" in err
    assert "in fails" in err and "RuntimeError: the check went wrong" in err, err


@pytest.mark.parametrize("rendered", ["present", "absent"])
def test_verify_in_parallel_reports_invalid_inputs_as_in_serial(example_repo: Path,
                                                                rendered: str) -> None:
    """Every input error, as one InputError, before anything about the rendered tree (or
    its absence)."""
    from meshplan.diagnostics import InputError
    from meshplan.pipeline import verify_repository

    if rendered == "present":
        _rendered(example_repo)
    domain1 = example_repo / "inventory" / "domain1.yaml"
    domain1.write_text(domain1.read_text().replace("meshId: 1\n", "meshId: one\n", 1))
    (example_repo / "requirements" / "domain2" / "typo.yaml").write_text(
        "apiVersion: meshplan.dev/v1alpha1\nkind: Requirement\nmetadata: {name: typo}\n"
        "spec: {endpointSelectr: {}}\n")
    raised = []
    for parallel in (True, False):
        with pytest.raises(InputError) as caught:
            verify_repository(example_repo, parallel=parallel)
        raised.append(caught.value.diagnostics)
    assert raised[0] == raised[1]
    assert len(raised[0]) >= 2


def test_invalid_inputs_do_not_wait_for_the_rendered_tree(
        example_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading ahead stops as soon as the worker answers: inputs found invalid at once are
    reported after a file or two of a tree that takes long to read, not after all of it."""
    import time

    from meshplan import pipeline
    from meshplan.diagnostics import InputError, Location, error
    from meshplan.load.canonical import RenderedReader

    files = list(_rendered(example_repo).rglob("*.yaml"))
    assert len(files) >= 10
    problem = error(Location("inventory/domain1.yaml", 1, 1), "",
                    "expected valid inputs, found a planted error")

    def invalid(repo: Path) -> None:
        time.sleep(0.5)  # checked while the parent reads a few files
        raise InputError([problem])

    read: list[str] = []
    real_read_ahead = RenderedReader.read_ahead

    def slow_read_ahead(self: RenderedReader, relpath: str, raw: bytes) -> object:
        read.append(relpath)
        time.sleep(0.2)  # a file of a tree too large to wait for
        return real_read_ahead(self, relpath, raw)

    monkeypatch.setattr(pipeline, "checked_inventory", invalid)
    monkeypatch.setattr(RenderedReader, "read_ahead", slow_read_ahead)
    with pytest.raises(InputError) as caught:
        pipeline.verify_repository(example_repo, parallel=True)
    assert list(caught.value.diagnostics) == [problem]
    assert 1 <= len(read) <= len(files) // 2, read


def test_the_verify_command_answers_the_same_forced_serial(example_repo: Path) -> None:
    from meshplan.forked import can_fork

    if not can_fork():  # both runs would be serial: nothing compared
        pytest.skip("verify cannot fork here (one usable CPU, or other threads running)")
    _break_the_tree(_rendered(example_repo))
    runs = [run_cli(["verify", "--repo", str(example_repo), "--format", "json", "--no-cache"],
                    env={"MESHPLAN_SERIAL": serial}) for serial in ("", "1")]
    assert runs[0] == runs[1]
    assert runs[0][0] == 1 and '"ok": false' in runs[0][1]


def test_verify_in_parallel_passes_back_the_inputs_own_errors(
        example_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error meshplan raises on purpose while checking the inputs in the worker reaches
    the command as itself (its message and exit code), not as an internal error."""
    from meshplan import pipeline
    from meshplan.diagnostics import OperationError

    def refuses(repo: Path) -> None:
        raise OperationError(f"cannot read {repo}: permission denied")

    _rendered(example_repo)
    monkeypatch.setattr(pipeline, "checked_inventory", refuses)  # the child is a fork of this
    with pytest.raises(OperationError, match="permission denied"):
        pipeline.verify_repository(example_repo, parallel=True)


class _HoldsALock(OperationError):
    """An error with an attribute that does not pickle."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class _TwoArguments(OperationError):
    """An error whose constructor does not take its ``args`` back (unpickling it fails)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot read {path}: {reason}")


class _Reworded(UsageError):
    """An error whose constructor rewords its ``args`` (it unpickles, with another message)."""

    def __init__(self, option: str) -> None:
        super().__init__(f"bad option {option}")


class _Travels(OperationError):
    """An error that pickles as itself, attributes included."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@pytest.mark.parametrize(("raised", "message", "code", "kept"), [
    (_HoldsALock("cannot lock the repository"), "cannot lock the repository", 1, False),
    (_TwoArguments("inventory", "permission denied"), "cannot read inventory: permission "
     "denied", 1, False),
    (_Reworded("--x"), "bad option --x", 2, False),
    (_Travels("cannot read inventory", "EACCES"), "cannot read inventory", 1, True),
])
def test_an_error_of_the_worker_that_does_not_travel_comes_back_as_its_message_and_code(
        example_repo: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], raised: MeshplanError, message: str, code: int,
        kept: bool) -> None:
    """An error meshplan raises on purpose in the forked worker, whose pickling fails (an
    attribute that does not pickle, a constructor that does not take its args back) or
    changes it, reaches the command with its message and exit code (a plain MeshplanError),
    not as an internal error (exit 3); one that travels comes back as itself."""
    from meshplan import pipeline
    from meshplan.cli import guarded

    def refuses(repo: Path) -> None:
        raise raised

    # no rendered tree: the inputs' errors are reported before any failure to read it
    monkeypatch.setattr(pipeline, "checked_inventory", refuses)  # the child is a fork of this
    with pytest.raises(MeshplanError) as caught:
        pipeline.verify_repository(example_repo, parallel=True)
    assert (str(caught.value), caught.value.exit_code) == (message, code)
    assert (type(caught.value) is type(raised)) == kept
    if kept:
        assert isinstance(caught.value, _Travels) and caught.value.detail == "EACCES"
    @guarded
    def command() -> int:
        pipeline.verify_repository(example_repo, parallel=True)
        return 0

    assert command() == code
    assert capsys.readouterr().err == f"meshplan: {message}\n"


def _verify_answers(inventory: object, repo: Path) -> object:
    from meshplan.load.canonical import RenderedReader
    from meshplan.model import Inventory
    from meshplan.outputs import read_tree
    from meshplan.verify.report import display_root_for, verify

    assert isinstance(inventory, Inventory)
    rendered = repo / "rendered"
    report = verify(inventory, read_tree(rendered), display_root_for(repo, rendered),
                    RenderedReader(None))
    return (report.diagnostics, report.mismatches, report.policies,
            [e.title for e in report.endpoints], report.flow_lines())


def _assert_the_inventory_travels(repo: Path) -> None:
    """What the forked worker sends back (:mod:`meshplan.forked` pickles it) is the inventory
    it checked, with the caches it filled on the way, and verify answers the same from it."""
    import pickle

    from meshplan.pipeline import checked_inventory

    inventory = checked_inventory(repo)
    answers = _verify_answers(inventory, repo)  # fills resolve_peer's cache before it travels
    arrived = pickle.loads(pickle.dumps(inventory, protocol=pickle.HIGHEST_PROTOCOL))
    assert arrived == inventory and arrived is not inventory
    assert arrived.__dict__.keys() == inventory.__dict__.keys()
    assert _verify_answers(arrived, repo) == answers


def test_the_checked_inventory_travels_between_processes(example_repo: Path) -> None:
    _break_the_tree(_rendered(example_repo))  # answers with every kind of defect to compare
    _assert_the_inventory_travels(example_repo)


@pytest.mark.slow
def test_a_generated_fleets_inventory_travels_between_processes(tmp_path: Path) -> None:
    from benchmarks.workload import generate

    generate("M", 1, tmp_path / "repo")
    _rendered(tmp_path / "repo")
    _assert_the_inventory_travels(tmp_path / "repo")
