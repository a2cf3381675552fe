"""meshplan.flowdiff reads only what a change can reach: the clusters whose folders differ and
the other ends of the flows whose verdict changed there. Its answer must be exactly the one of
reading both renders whole (:func:`whole_connectivity_changes`), on random edits of generated
workloads (plain, ClusterMesh with Istio, Istio on several networks).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from meshplan.diagnostics import InputError
from meshplan.flowdiff import (
    Render,
    _parsed_by_document,
    connectivity_changes,
    whole_connectivity_changes,
)
from meshplan.load.parse import parse_yaml
from meshplan.pipeline import render_with_inventory

from benchmarks.workload import generate, mutate_one_requirement
from tests.support.ci import examples
from tests.support.repos import REPO_ROOT
from tests.test_incremental import (
    Edit,
    add_peer,
    copy_requirement,
    drop_rule,
    dump,
    load,
    pick,
    remove_requirement,
    requirement_files,
    set_ports,
    touch_comment,
)


def admit_own_domain(n: int, direction: str) -> Edit:
    """A rule admitting every service of the requirement's own domain: it opens the flows of
    the clients whose other side already allowed them (ingress: the callers whose egress names
    the service but whose calls its ingress refused)."""
    def edit(repo: Path) -> None:
        path = pick(requirement_files(repo), n)
        if path is None:
            return
        data = load(path)
        key = "toEndpoints" if direction == "egress" else "fromEndpoints"
        data["spec"].setdefault(direction, []).append({key: [{"matchLabels": {"service": "*"}}]})
        dump(path, data)
    edit.__name__ = f"admit_own_domain({n},{direction})"
    return edit


SIZES = ("3x3x5x24", "4x2x4x30", "3x3x5x20+mesh+istio", "3x2x4x16+istio")
small = st.integers(0, 1000)
REQUIREMENT_EDITS = st.one_of(
    st.builds(add_peer, small, small, st.booleans()),
    st.builds(drop_rule, small),
    st.builds(set_ports, small, st.integers(1, 65535)),
    st.builds(remove_requirement, small),
    st.builds(copy_requirement, small, small),
    st.builds(touch_comment, small),
    st.builds(admit_own_domain, small, st.sampled_from(("egress", "ingress"))),
)


def render(repo: Path) -> Render | None:
    try:
        inventory, rendered, _ = render_with_inventory(repo)
    except InputError:
        return None
    return inventory, rendered.files


@pytest.fixture(scope="module")
def workloads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Render]]:
    root = tmp_path_factory.mktemp("workloads")
    out = {}
    for size in SIZES:
        generate(size, 11, root / size)
        base = render(root / size)
        assert base is not None
        out[size] = (root / size, base)
    return out


def assert_restricted_equals_whole(before: Render, after: Render) -> None:
    restricted = connectivity_changes(before, after)
    assert restricted == whole_connectivity_changes(before, after)
    event("flows changed" if restricted.flows else "no flow changed")
    if restricted.stances:
        event("a stance changed")


@settings(max_examples=examples(25), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(size=st.sampled_from(SIZES), edits=st.lists(REQUIREMENT_EDITS, min_size=1, max_size=2))
def test_reading_what_a_change_reaches_equals_reading_everything(
        workloads: dict[str, tuple[Path, Render]], tmp_path_factory: pytest.TempPathFactory,
        size: str, edits: list[Edit]) -> None:
    source, before = workloads[size]
    repo = tmp_path_factory.mktemp("edited") / "repo"
    shutil.copytree(source, repo)
    for edit in edits:
        edit(repo)
    after = render(repo)
    if after is None:
        event("invalid after the edit")
        return
    assert_restricted_equals_whole(before, after)
    assert_restricted_equals_whole(after, before)  # the reverse change too


def test_the_benchmark_change_opens_flows_to_the_added_peer_only(tmp_path: Path) -> None:
    """The benchmark's one-requirement change: one flow per added peer opens, nothing else."""
    generate("4x4x8x60", 1, tmp_path)
    before = render(tmp_path)
    mutation = mutate_one_requirement(tmp_path)
    after = render(tmp_path)
    assert before is not None and after is not None
    changes = connectivity_changes(before, after)
    assert changes == whole_connectivity_changes(before, after)
    assert changes.flows and all(f.opened and not f.closed for f in changes.flows)
    assert {f.target_service.rsplit("/", 1)[-1] for f in changes.flows} == {mutation.added_service}


@pytest.mark.parametrize("size", ["3x3x5x20+mesh+istio", "4x2x4x30"])
def test_a_file_parsed_a_document_at_a_time_is_the_file_parsed_whole(
        workloads: dict[str, tuple[Path, Render]], size: str) -> None:
    """... but for the documents the picture does not read (Service copies, Namespaces)."""
    _, (inventory, files) = workloads[size]
    assert not isinstance(files, Mapping)
    tree = {f.path: f.content for f in files}
    clusters = {(d.name, c.name) for d in inventory.domains for c in d.clusters}
    pieces = _parsed_by_document((tree,), clusters)
    assert len(pieces) > 10
    skipped = 0
    for (path, content), (documents, problems) in pieces.items():
        whole, whole_problems = parse_yaml(path, content.decode("utf-8"))
        assert problems == whole_problems == []
        read = [d.data for d in whole if d.data.get("kind") not in ("Service", "Namespace")]
        skipped += len(whole) - len(read)
        assert [d.file for d in documents] == [path] * len(read)
        assert [d.index for d in documents] == list(range(len(read)))
        assert [d.data for d in documents] == read
    assert skipped > 10


def test_endpoints_of_the_requirements_both_sides_hold_are_read_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two models with the same domains and mesh (one derived from the other): each side's
    endpoints are exactly verify's, its own requirements' added to those of the shared ones
    (a requirement naming an address block on one side only, one selecting a peer on the
    other only)."""
    from dataclasses import replace

    import meshplan.flowdiff as flowdiff
    from meshplan.verify.endpoints import inventory_endpoints

    inventory = render_with_inventory(REPO_ROOT)[0]
    first, second, third = inventory.requirements
    old = replace(inventory, requirements=(first, second))
    new = replace(inventory, requirements=(first, third))
    expected = [inventory_endpoints(old), inventory_endpoints(new)]
    assert expected[0] != expected[1]

    def unexpected(_: object) -> None:
        raise AssertionError("both models read whole")

    monkeypatch.setattr(flowdiff, "inventory_endpoints", unexpected)
    assert flowdiff._own_endpoints(old, new) == expected
    assert flowdiff._own_endpoints(new, old) == expected[::-1]


def test_every_reading_of_a_change_shares_one_endpoint_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both sides read over the same endpoints: the endpoint index (pods by place and by
    label) is built once for the touched clusters of both sides, the rest and the merged
    models, and the changes are those of reading both trees whole."""
    from meshplan.verify.endpoints import EndpointIndex

    generate("4x4x8x60", 1, tmp_path)
    before = render(tmp_path)
    mutate_one_requirement(tmp_path)
    after = render(tmp_path)
    assert before is not None and after is not None
    built = []
    init = EndpointIndex.__init__

    def counted(self: EndpointIndex, endpoints: object) -> None:
        built.append(endpoints)
        init(self, endpoints)  # type: ignore[arg-type]

    monkeypatch.setattr(EndpointIndex, "__init__", counted)
    changes = connectivity_changes(before, after)
    assert len(built) == 1
    monkeypatch.undo()
    assert changes.flows and changes == whole_connectivity_changes(before, after)
