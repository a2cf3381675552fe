"""Incremental render (meshplan.incremental, pipeline.render_cached): after any sequence of
edits, the cached render gives byte for byte the files, summary and diagnostics of a full
render (or the same input errors); and a cache that is corrupt, truncated, stale or foreign is
detected and ignored, never trusted.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from meshplan.cache import MAGIC, PACK_MAGIC, RenderCache, _pack_index, slot_for
from meshplan.diagnostics import Diagnostic, InputError
from meshplan.incremental import snapshot_from_bytes
from meshplan.outputs import split_cluster_path
from meshplan.pipeline import render_cached, render_repository
from meshplan.render import Rendered
from meshplan.vocabulary import GLOBAL_SERVICE_ANNOTATION, SHARED_SERVICE_ANNOTATION
from meshplan.write import write_tree

from benchmarks.goal_incremental import ServiceChange
from benchmarks.workload import generate, mutate_one_requirement
from tests.support.ci import examples

Edit = Callable[[Path], None]
Outcome = tuple[Rendered | None, tuple[Diagnostic, ...]]


def full(repo: Path) -> Outcome:
    try:
        return render_repository(repo)
    except InputError as exc:
        return None, exc.diagnostics


def cached(repo: Path, cache: RenderCache) -> tuple[Outcome, str]:
    """Sliced however much a change reaches (``full_above=1``: never a full render because
    it would be cheaper), so the slicing is what is tested. The mode says "patched" when the
    stale clusters were patched from their cached objects."""
    outcome, mode, _ = cached_saving(repo, cache)
    return outcome, mode


def cached_saving(repo: Path, cache: RenderCache) -> tuple[Outcome, str, bool]:
    """:func:`cached`, and whether the run saved a snapshot (none with a Mesh document, none
    written again when nothing changed)."""
    try:
        result = render_cached(repo, cache, full_above=1.0)
    except InputError as exc:
        return (None, exc.diagnostics), "error", False
    mode = "incremental, patched" if result.patched else result.mode
    if result.sliced:
        mode += ", sliced inventory"
    saved = result.snapshot is not None and result.unsaved is None
    return (result.rendered, result.diagnostics), mode, saved


def assert_same(repo: Path, cache: RenderCache, out: Path | None = None) -> str:
    """The cached render equals the full render; the mode it took. With ``out``, the cached
    render is also written there as ``meshplan render`` writes it (through the spare tree
    the cache keeps) and the folder must then hold exactly the full render's files."""
    expected = full(repo)
    got, mode, saved = cached_saving(repo, cache)
    assert got[1] == expected[1], set(got[1]) ^ set(expected[1])
    if expected[0] is None:
        assert got[0] is None
        return mode
    assert got[0] is not None
    assert got[0].summary == expected[0].summary
    assert [f.path for f in got[0].files] == [f.path for f in expected[0].files]
    differing = [f.path for f, g in zip(got[0].files, expected[0].files, strict=True) if f != g]
    assert not differing, f"{mode}: {differing}"
    if saved or mode == "unchanged":
        assert snapshot_copies(cache, repo) == rendered_copies(expected[0]), mode
    if out is not None:
        write_tree(out, got[0].files, spares=cache.root / "spares")
        on_disk = {p.relative_to(out).as_posix(): p.read_bytes()
                   for p in out.rglob("*") if p.is_file()}
        assert on_disk == {f.path: f.content for f in expected[0].files}, mode
    return mode


def snapshot_copies(cache: RenderCache, repo: Path) -> dict[str, dict[str, Any]]:
    """The Service copies the cache's snapshot holds, by cluster ("domain/cluster")."""
    payload = cache.unframe(state_file(cache, repo).read_bytes())
    assert payload is not None
    snapshot = snapshot_from_bytes(payload)
    assert snapshot is not None
    return {name: dict(record.copies) for name, record in snapshot.clusters.items()
            if record.copies}


def rendered_copies(rendered: Rendered) -> dict[str, dict[str, Any]]:
    """The same read from the rendered files themselves: the (global, shared) annotations of
    each Service with either, by cluster. The next cached render's load-balancing check reads
    the snapshot's copies: one a full render does not give is a backend that is not there."""
    out: dict[str, dict[str, Any]] = {}
    for f in rendered.files:
        split = split_cluster_path(f.path)
        if split is None or split[2] != "services.yaml":
            continue
        for body in yaml.load_all(f.content, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            annotations = (body or {}).get("metadata", {}).get("annotations") or {}
            flags = (annotations.get(GLOBAL_SERVICE_ANNOTATION),
                     annotations.get(SHARED_SERVICE_ANNOTATION))
            if body.get("kind") == "Service" and flags != (None, None):
                key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
                out.setdefault(f"{split[0]}/{split[1]}", {})[key] = flags
    return out


# --------------------------------------------------------------------------- edits


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def dump(path: Path, data: Any) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def requirement_files(repo: Path) -> list[Path]:
    return sorted((repo / "requirements").glob("*/*.yaml"))


def domain_files(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "inventory").glob("*.yaml")
                  if (load(p) or {}).get("kind") == "Domain")


def services_of(repo: Path) -> list[tuple[str, str]]:
    """(domain, service) of the inventory."""
    out = []
    for path in domain_files(repo):
        data = load(path)
        out += [(data["metadata"]["name"], s["name"]) for s in data["spec"].get("services", [])]
    return out


def pick(items: list[Any], n: int) -> Any:
    return items[n % len(items)] if items else None


def add_peer(n: int, m: int, across: bool) -> Edit:
    def edit(repo: Path) -> None:
        path = pick(requirement_files(repo), n)
        services = services_of(repo)
        if path is None or not services:
            return
        data = load(path)
        domain, service = pick(services, m)
        peer: dict[str, Any] = {"service": service}
        if across or domain != path.parent.name:
            peer["domain"] = domain
        direction = "egress" if n % 2 else "ingress"
        key = "toEndpoints" if direction == "egress" else "fromEndpoints"
        data["spec"].setdefault(direction, []).append({key: [{"matchLabels": peer}]})
        dump(path, data)
    edit.__name__ = f"add_peer({n},{m},{across})"
    return edit


def drop_rule(n: int) -> Edit:
    def edit(repo: Path) -> None:
        path = pick(requirement_files(repo), n)
        if path is None:
            return
        data = load(path)
        for direction in ("egress", "ingress"):
            rules = data["spec"].get(direction)
            if rules and len(rules) > 1:
                rules.pop()
                dump(path, data)
                return
    edit.__name__ = f"drop_rule({n})"
    return edit


def set_ports(n: int, port: int) -> Edit:
    def edit(repo: Path) -> None:
        path = pick(requirement_files(repo), n)
        if path is None:
            return
        data = load(path)
        for rule in data["spec"].get("egress") or []:
            if "toEndpoints" in rule:
                rule["toPorts"] = [{"ports": [{"port": str(port), "protocol": "TCP"}]}]
                dump(path, data)
                return
    edit.__name__ = f"set_ports({n},{port})"
    return edit


def remove_requirement(n: int) -> Edit:
    def edit(repo: Path) -> None:
        files = requirement_files(repo)
        if len(files) > 1:
            pick(files, n).unlink()
    edit.__name__ = f"remove_requirement({n})"
    return edit


def copy_requirement(n: int, serial: int) -> Edit:
    def edit(repo: Path) -> None:
        path = pick(requirement_files(repo), n)
        if path is None:
            return
        data = load(path)
        data["metadata"]["name"] = f"copy-{serial}-{data['metadata']['name']}"[:60]
        dump(path.with_name(f"copy-{serial}-{path.name}"), data)
    edit.__name__ = f"copy_requirement({n},{serial})"
    return edit


def rename_requirement(n: int, m: int) -> Edit:
    """A new name, sometimes another requirement's (an error both renders must report)."""
    def edit(repo: Path) -> None:
        files = requirement_files(repo)
        if not files:
            return
        path, other = pick(files, n), pick(files, m)
        data = load(path)
        data["metadata"]["name"] = (load(other)["metadata"]["name"] if m % 3 == 0
                                    else f"renamed-{m}")
        dump(path, data)
    edit.__name__ = f"rename_requirement({n},{m})"
    return edit


def touch_comment(n: int) -> Edit:
    def edit(repo: Path) -> None:
        files = [*requirement_files(repo), *domain_files(repo)]
        path = pick(files, n)
        if path is not None:
            path.write_text(f"# edited {n}\n" + path.read_text(encoding="utf-8"),
                            encoding="utf-8")
    edit.__name__ = f"touch_comment({n})"
    return edit


def edit_service(n: int, how: int) -> Edit:
    """A one-service inventory change: its clusters, ports, exports, namespace or selector
    (or a port that is no port number: an error both renders must report)."""
    def edit(repo: Path) -> None:
        path = pick(domain_files(repo), n)
        if path is None:
            return
        data = load(path)
        services = data["spec"].get("services") or []
        clusters = [c["name"] for c in data["spec"]["clusters"]]
        if not services:
            return
        service = pick(services, n // 3)
        kind = how % 7
        if kind == 0:
            missing = [c for c in clusters if c not in service["clusters"]]
            if missing:
                service["clusters"].append(missing[0])
        elif kind == 1 and len(service["clusters"]) > 1:
            service["clusters"].pop()
        elif kind == 2:
            service["ports"] = [{"port": 8000 + how % 50, "protocol": "TCP", "name": "http"}]
        elif kind == 3:
            service["exportTo"] = ["*"] if service.get("exportTo") != ["*"] else []
            if not service["exportTo"]:
                del service["exportTo"]
        elif kind == 4:
            service["namespace"] = f"{data['metadata']['name']}-moved"
        elif kind == 5:  # other pods: its own requirement's subject moves from raw-label ones
            service["selector"] = {"app": f"{service['name']}-v{how % 7}"}
        else:  # not a port number: the document fails its structural check
            service["ports"] = [{"port": 70000 + how, "protocol": "TCP", "name": "http"}]
        dump(path, data)
    edit.__name__ = f"edit_service({n},{how})"
    return edit


def select_service_pods(n: int, m: int) -> Edit:
    """A requirement selects a service's pods by raw labels (its selector, in its namespace):
    the same subject as the service's own requirements, yet no service is read for it."""
    def edit(repo: Path) -> None:
        path = pick(requirement_files(repo), n)
        if path is None:
            return
        domain = next((p for p in domain_files(repo)
                       if load(p)["metadata"]["name"] == path.parent.name), None)
        services = (load(domain)["spec"].get("services") or []) if domain else []
        service = pick(services, m)
        if service is None:
            return
        data = load(path)
        data["metadata"]["namespace"] = service["namespace"]
        data["spec"]["endpointSelector"] = {"matchLabels": dict(service["selector"])}
        dump(path, data)
    edit.__name__ = f"select_service_pods({n},{m})"
    return edit


def add_cluster(n: int, serial: int) -> Edit:
    def edit(repo: Path) -> None:
        path = pick(domain_files(repo), n)
        if path is None:
            return
        data = load(path)
        template = dict(data["spec"]["clusters"][0])
        name = f"extra-{serial}"
        if any(c["name"] == name for c in data["spec"]["clusters"]):
            return
        template = {"name": name, "podCIDRs": [f"10.{200 + serial % 50}.{n % 16 * 16}.0/20"]}
        data["spec"]["clusters"].append(template)
        services = data["spec"].get("services") or []
        if services:
            services[0]["clusters"].append(name)
        dump(path, data)
    edit.__name__ = f"add_cluster({n},{serial})"
    return edit


def remove_cluster(n: int) -> Edit:
    """Drop a domain's last cluster where services name it (an error unless none does)."""
    def edit(repo: Path) -> None:
        path = pick(domain_files(repo), n)
        if path is None:
            return
        data = load(path)
        if len(data["spec"]["clusters"]) < 2:
            return
        gone = data["spec"]["clusters"].pop()["name"]
        for service in data["spec"].get("services") or []:
            if gone in service["clusters"] and len(service["clusters"]) > 1:
                service["clusters"].remove(gone)
        dump(path, data)
    edit.__name__ = f"remove_cluster({n})"
    return edit


def limit_peer(n: int, m: int) -> Edit:
    """Limit an egress service peer to one cluster of its service, or another one (a
    load-balancing warning, one per peer and advice, naming its client clusters)."""
    def edit(repo: Path) -> None:
        path = pick(requirement_files(repo), n)
        if path is None:
            return
        data = load(path)
        peers = [labels for rule in data["spec"].get("egress") or []
                 for labels in (e.get("matchLabels") or {} for e in rule.get("toEndpoints") or [])
                 if "service" in labels and labels["service"] != "*"]
        peer = pick(peers, m)
        if peer is None:
            return
        clusters = [c for d in domain_files(repo) for s in load(d)["spec"].get("services") or []
                    if load(d)["metadata"]["name"] == peer.get("domain", path.parent.name)
                    and s["name"] == peer["service"] for c in s["clusters"]]
        if clusters:
            peer["cluster"] = pick(clusters, m)
            dump(path, data)
    edit.__name__ = f"limit_peer({n},{m})"
    return edit


def add_namesake(n: int, m: int) -> Edit:
    """A service named like another domain's service, in a namespace and cluster of its own
    domain: where a client's generated Service of that name may go (a clash to report)."""
    def edit(repo: Path) -> None:
        path = pick(domain_files(repo), n)
        if path is None:
            return
        data = load(path)
        own = data["spec"].get("services") or []
        others = [s for d, s in services_of(repo) if d != data["metadata"]["name"]]
        name = pick(others, m)
        if not own or name is None or name in {s["name"] for s in own}:
            return
        own.append({"name": name, "namespace": pick(own, m)["namespace"],
                    "selector": {"app": f"namesake-{m}"},
                    "ports": [{"port": 80, "protocol": "TCP", "name": "http"}],
                    "clusters": [pick(data["spec"]["clusters"], m)["name"]]})
        dump(path, data)
    edit.__name__ = f"add_namesake({n},{m})"
    return edit


def service_in_place(n: int, m: int, how: int) -> Edit:
    """A one-service change written into the file's text as it is laid out (the other lines
    stay, so the inventory can be read in part): a port, another namespace of the domain,
    or a new service named like another domain's, in a namespace of its own domain (a
    namesake that a generated ExternalName Service may clash with)."""
    def edit(repo: Path) -> None:
        path = pick(domain_files(repo), n)
        if path is None:
            return
        text = path.read_text(encoding="utf-8")
        at = text.find("\n  services:\n")
        starts = [x.start() for x in re.finditer(r"(?m)^    - name: ", text) if x.start() > at]
        if at < 0 or not starts:
            return
        found = re.compile(r"(?m)^(?!    )").search(text, starts[-1] + 1)
        bounds = [*starts, found.start() if found is not None else len(text)]
        k = m % len(starts)
        begin, end = bounds[k], bounds[k + 1]
        item = text[begin:end]
        data = load(path)
        others = [s for d in domain_files(repo) if d != path
                  for s in load(d)["spec"].get("services") or []]
        other = pick(others, m)
        own = pick(data["spec"]["services"], m + how)["namespace"]
        if how % 3 == 0:
            item = re.sub(r"port: (\d+)", lambda x: f"port: {int(x[1]) % 65535 + 1}", item,
                          count=1)
        elif how % 3 == 1:
            item = re.sub(r"(?m)^      namespace: .*$", f"      namespace: {own}", item,
                          count=1)
        elif other is not None and other["name"] not in {
                s["name"] for s in data["spec"]["services"]}:
            cluster = pick(data["spec"]["clusters"], m)["name"]
            text = text[:bounds[-1]] + (
                f"    - name: {other['name']}\n      namespace: {own}\n"
                f"      selector: {{app: namesake-{m}}}\n"
                f"      ports: [{{port: 80, protocol: TCP, name: http}}]\n"
                f"      clusters: [{cluster}]\n") + text[bounds[-1]:]
            path.write_text(text, encoding="utf-8")
            return
        path.write_text(text[:begin] + item + text[end:], encoding="utf-8")
    edit.__name__ = f"service_in_place({n},{m},{how})"
    return edit


small = st.integers(0, 1000)
EDITS = st.one_of(
    st.builds(add_peer, small, small, st.booleans()),
    st.builds(drop_rule, small),
    st.builds(set_ports, small, st.integers(1, 65535)),
    st.builds(remove_requirement, small),
    st.builds(copy_requirement, small, small),
    st.builds(rename_requirement, small, small),
    st.builds(touch_comment, small),
    st.builds(edit_service, small, small),
    st.builds(select_service_pods, small, small),
    st.builds(add_cluster, small, small),
    st.builds(remove_cluster, small),
    st.builds(limit_peer, small, small),
    st.builds(add_namesake, small, small),
    st.builds(service_in_place, small, small, small),
)

SIZES = ("S", "2x4x8x40", "3x3x5x24", "4x2x4x30", "10x2x6x60", "3x3x5x20+mesh+istio",
         "3x2x4x16+istio")


@pytest.fixture(scope="module")
def workloads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("workloads")
    out = {}
    for size in SIZES:
        generate(size, 7, root / size)
        out[size] = root / size
    return out


@pytest.mark.slow
@settings(max_examples=examples(60), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(size=st.sampled_from(SIZES), edits=st.lists(EDITS, min_size=1, max_size=6))
def test_cached_render_equals_full_render_after_any_edits(
        workloads: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, size: str,
        edits: list[Edit]) -> None:
    work = tmp_path_factory.mktemp("edit")
    repo = work / "repo"
    shutil.copytree(workloads[size], repo)
    cache = RenderCache.at(work / "cache")
    out = work / "rendered"  # written as `meshplan render` writes: through the spare tree
    assert_same(repo, cache, out)  # fills the cache
    for edit in edits:
        edit(repo)
        mode = assert_same(repo, cache, out)
        event(f"{size}: {mode.split(' (')[0]}")
    again = assert_same(repo, cache, out)  # nothing changed since the last render
    if "+mesh" in size or "+istio" in size:
        assert again.startswith("full (") or again == "error"  # the mesh plan spans the fleet
    else:
        assert again in ("unchanged", "error")
    shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- fast tier


@pytest.fixture
def medium(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    generate("5x3x8x100", 3, repo)
    return repo


def test_one_requirement_change_is_incremental_and_exact(medium: Path, tmp_path: Path) -> None:
    cache = RenderCache.at(tmp_path / "cache")
    assert render_cached(medium, cache).mode.startswith("full (no snapshot")
    assert render_cached(medium, cache).mode == "unchanged"
    mutate_one_requirement(medium)  # one more egress peer (the benchmark's change)
    result = render_cached(medium, cache, full_above=1.0)
    assert result.mode == "incremental"
    assert result.reanalysed < 100 and result.rerendered < 15  # of 100 and 15
    # its clusters are patched: only the changed file (and any selecting the same pods) is
    # analysed again, not every file putting objects into those clusters
    assert result.patched == result.rerendered and result.reanalysed < 10
    assert result.sliced  # no inventory file changed: only the domains it reads were read
    assert assert_same(medium, cache) == "unchanged"
    ServiceChange(medium).apply()  # one service's port (the benchmark's change)
    result = render_cached(medium, cache, full_above=1.0)
    assert result.mode == "incremental" and result.reanalysed < 100
    assert result.patched == result.rerendered > 0
    assert_blobs_named_by_content(result.new_blobs)
    assert assert_same(medium, cache) == "unchanged"
    edit_service(2, 4)(medium)  # a namespace moves: nearly everything is stale
    assert render_cached(medium, cache, full_above=0.1).mode == (
        "full (the change reaches most requirements)")


def test_stored_blobs_are_named_by_their_content(medium: Path, tmp_path: Path) -> None:
    """The blobs of an incremental run, patched or rendered again, are named by their
    bytes' SHA-256: the names of the files it made are taken from their cluster records,
    not hashed again, and must be theirs."""
    cache = RenderCache.at(tmp_path / "cache")
    render_cached(medium, cache)
    mutate_one_requirement(medium)
    rendered_again = render_cached(medium, cache, full_above=1.0)
    assert rendered_again.mode == "incremental" and rendered_again.rerendered > 0
    assert_blobs_named_by_content(rendered_again.new_blobs)
    ServiceChange(medium).apply()
    patched = render_cached(medium, cache, full_above=1.0)
    assert patched.mode == "incremental" and patched.patched > 0
    assert_blobs_named_by_content(patched.new_blobs)


def assert_blobs_named_by_content(blobs: tuple[tuple[str, bytes], ...]) -> None:
    import hashlib

    assert blobs
    assert all(name == hashlib.sha256(content).hexdigest() for name, content in blobs)


def test_a_warning_naming_several_client_clusters_is_exact_after_edits(tmp_path: Path) -> None:
    """A load-balancing warning names every client cluster of its peer: a cached render after
    edits to its file, its peer and its service reports exactly the full render's warnings."""
    repo = tmp_path / "repo"
    generate("2x4x8x40", 7, repo)
    cache = RenderCache.at(tmp_path / "cache")
    assert_same(repo, cache)
    grouped = [d for d in full(repo)[1] if re.search(r"clients in \S+ and ", d.message)]
    assert grouped
    target = repo / grouped[0].location.file
    n = requirement_files(repo).index(target)

    def widen(repo: Path) -> None:  # every cluster of the domain: more client clusters
        data = load(target)
        data["spec"].pop("clusters", None)
        dump(target, data)

    for edit in (touch_comment(n), widen, limit_peer(n, 1),
                 edit_service(3, 0), edit_service(3, 2), limit_peer(5, 1)):
        edit(repo)
        assert assert_same(repo, cache) != "error"


def test_a_new_file_beside_a_changed_service_copy(tmp_path: Path) -> None:
    """A Service copy changes (its callers are analysed once more, with their companions)
    while a new requirement file appears: the new file's records are the fresh ones, not a
    snapshot's it is not in (once a KeyError; found by the property test)."""
    repo = tmp_path / "repo"
    generate("4x2x4x30", 7, repo)
    cache = RenderCache.at(tmp_path / "cache")
    assert_same(repo, cache)
    edit_service(27, 0)(repo)  # the service runs in one more cluster: a new Service copy
    copy_requirement(189, 1)(repo)
    assert assert_same(repo, cache).startswith("incremental")


def test_a_service_copy_a_patch_takes_out_leaves_the_snapshot(tmp_path: Path) -> None:
    """A patched cluster loses a global Service copy that only the changed file put there: the
    snapshot's copies lose it too. Once the stale copy stayed, and a later edit limiting a peer
    of that Service was warned about a backend in a cluster whose copy was gone (a warning the
    full render does not give, then saved and repeated on every no-op run; found by the
    property test)."""
    repo = tmp_path / "repo"
    generate("10x2x6x60", 7, repo)
    cache = RenderCache.at(tmp_path / "cache")
    out = tmp_path / "rendered"
    assert_same(repo, cache, out)
    for edit in (drop_rule(401), add_namesake(75, 459), add_peer(126, 334, False),
                 limit_peer(128, 0), drop_rule(0)):
        edit(repo)
        assert assert_same(repo, cache, out).startswith("incremental")
    limited = repo / "requirements/team-00/team-00-users-004-p0.yaml"
    assert requirement_files(repo).index(limited) == 125 % len(requirement_files(repo))
    limit_peer(125, 19)(repo)  # its only call of payments-003 across clusters: copies go
    assert load(limited)["spec"]["egress"][0]["toEndpoints"][1] == {"matchLabels": {
        "service": "team-00-payments-003", "cluster": "k8s-eun-01"}}
    assert assert_same(repo, cache, out) == "incremental, patched, sliced inventory"
    assert not [d for d in full(repo)[1] if "team-00-payments-003" in d.message]
    assert assert_same(repo, cache, out) == "unchanged"


def test_cached_render_rewrites_nothing_on_a_no_op(medium: Path, tmp_path: Path) -> None:
    cache = RenderCache.at(tmp_path / "cache")
    first = render_cached(medium, cache)
    again = render_cached(medium, cache)
    assert again.mode == "unchanged" and again.rendered == first.rendered
    assert again.new_blobs == ()


def test_the_cache_lives_outside_the_repository(medium: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from meshplan.cache import default_cache_dir

    monkeypatch.delenv("MESHPLAN_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "meshplan"
    before = sorted(p.relative_to(medium) for p in medium.rglob("*"))
    render_cached(medium, RenderCache.at(default_cache_dir()))
    assert sorted(p.relative_to(medium) for p in medium.rglob("*")) == before
    assert (tmp_path / "xdg" / "meshplan" / "states").is_dir()


def state_file(cache: RenderCache, repo: Path) -> Path:
    return cache.root / "states" / f"{slot_for(repo)}.state"


def spoil_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def spoil_flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-50] ^= 0x01
    path.write_bytes(bytes(raw))


def spoil_garbage(path: Path) -> None:
    path.write_bytes(b"not a cache at all\n")


def spoil_version(path: Path) -> None:
    """A well-formed state written by another build of meshplan (its code fingerprint)."""
    raw = path.read_bytes()
    end = raw.index(b"\n", len(MAGIC))
    header = json.loads(raw[len(MAGIC):end])
    header["code"] = "0" * 64
    header["meshplan"] = "0.0.0-other"
    path.write_bytes(MAGIC + json.dumps(header).encode() + raw[end:])


def spoil_payload_consistently(path: Path) -> None:
    """A state whose frame checks out but whose payload is not a snapshot (a foreign tool)."""
    cache = RenderCache.at(path.parent.parent)
    path.write_bytes(cache.frame(b'{"format": 99}'))


@pytest.mark.parametrize("spoil", [spoil_truncate, spoil_flip, spoil_garbage, spoil_version,
                                   spoil_payload_consistently])
def test_a_bad_state_is_ignored_and_recomputed(medium: Path, tmp_path: Path,
                                               spoil: Callable[[Path], None]) -> None:
    cache = RenderCache.at(tmp_path / "cache")
    render_cached(medium, cache)
    spoil(state_file(cache, medium))
    add_peer(3, 7, True)(medium)
    assert assert_same(medium, cache).startswith("full (no snapshot")
    assert assert_same(medium, cache) == "unchanged"  # and the state was written again


@pytest.mark.parametrize("how", ["missing", "corrupt", "foreign"])
def test_a_bad_output_blob_is_never_trusted(medium: Path, tmp_path: Path, how: str) -> None:
    cache = RenderCache.at(tmp_path / "cache")
    expected = render_cached(medium, cache).rendered
    (pack,) = (cache.root / "packs").glob("*.pack")  # one run, one pack
    raw = pack.read_bytes()
    victim = max(expected.files, key=lambda f: len(f.content)).content
    at = raw.index(victim)
    if how == "missing":
        pack.unlink()
    elif how == "corrupt":
        pack.write_bytes(raw[:at + 10] + b"X" + raw[at + 11:])
    else:  # the same length, other content
        pack.write_bytes(raw[:at] + b"#" * len(victim) + raw[at + len(victim):])
    result = render_cached(medium, RenderCache.at(cache.root))  # a new run
    assert result.mode.startswith("full (the cached content")
    assert result.rendered == expected


@pytest.mark.parametrize("entry", [[-1, 3], [0, -1], [0, True], [0, 3.0], [0, 3, 0], [0, 99],
                                   "0,3", None], ids=repr)
def test_a_pack_whose_index_does_not_check_out_is_not_read(tmp_path: Path, entry: Any) -> None:
    """A pack's index names each blob's offset and length: an entry that is not two
    non-negative integers within the file makes the whole pack unread (its blobs are then
    missing, and what needed them is done again); a good index gives the blobs' places."""
    good = {"a" * 64: [0, 3], "b" * 64: [3, 2]}
    pack = tmp_path / "x.pack"
    head = PACK_MAGIC + json.dumps(good).encode() + b"\n"
    pack.write_bytes(head + b"abcde")
    assert _pack_index(pack) == {"a" * 64: (len(head), 3), "b" * 64: (len(head) + 3, 2)}
    bad = PACK_MAGIC + json.dumps({**good, "c" * 64: entry}).encode() + b"\n"
    pack.write_bytes(bad + b"abcde")
    assert _pack_index(pack) is None


def test_the_cache_stays_bounded_over_many_runs(medium: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run that changes something writes a pack; past a few, the packs no kept state
    names go and the rest are compacted into one, and renders stay exact."""
    import meshplan.cache

    monkeypatch.setattr(meshplan.cache, "PACKS_KEPT", 4)
    monkeypatch.setattr(meshplan.cache, "PACK_GRACE_SECONDS", -1.0)  # no run writes meanwhile
    cache = RenderCache.at(tmp_path / "cache")
    render_cached(medium, cache)
    for step in range(8):
        mutation = mutate_one_requirement(medium)
        assert_same(medium, RenderCache.at(cache.root))
        if step % 2:
            mutation.undo(medium)
        packs = list((cache.root / "packs").glob("*.pack"))
        assert len(packs) <= 4 + 1
    assert_same(medium, RenderCache.at(cache.root))
    assert assert_same(medium, RenderCache.at(cache.root)) == "unchanged"
    live = {name for state in (cache.root / "states").glob("*.state")
            for name in re.findall(r"[0-9a-f]{64}", state.read_text("utf-8"))}
    stored = set(RenderCache.at(cache.root).blobs.where()) - {""}
    # (states also name other digests: subjects, pods) what no state names is dropped
    assert len(stored - live) < len(stored & live) / 4, (len(stored - live), len(stored & live))


def test_a_stale_state_of_another_input_renders_exactly(medium: Path, tmp_path: Path) -> None:
    """A snapshot taken of other inputs (another branch) is a start, never the answer."""
    cache = RenderCache.at(tmp_path / "cache")
    render_cached(medium, cache)
    other = tmp_path / "other"
    generate("5x3x8x100", 1, other)  # another seed: nearly every file differs
    for top in ("inventory", "requirements"):
        shutil.rmtree(medium / top)
        shutil.copytree(other / top, medium / top)
    assert_same(medium, cache)
    assert assert_same(medium, cache) == "unchanged"


def _forge(state: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a state's snapshot and frame it again, as anyone who can write the cache can.
    ``edit`` sees the head's fields and the cluster records as {"clusters": {name: [files,
    counts, copies]}, ...}."""
    cache = RenderCache.at(state.parent.parent)
    payload = cache.unframe(state.read_bytes())
    assert payload is not None
    head_line, *lines = payload.decode().split("\n")
    data = json.loads(head_line)
    records = [json.loads(line) for line in lines if line]
    data["clusters"] = {r[1]: r[2:] for r in records if r[0] == "C"}
    edit(data)
    out = [json.dumps({**data, "clusters": len(data["clusters"])})]
    out += [json.dumps(r) for r in records if r[0] == "R"]
    out += [json.dumps(["C", name, *rest]) for name, rest in data["clusters"].items()]
    state.write_bytes(cache.frame("\n".join([*out, ""]).encode()))


def _escape_cluster_file(data: dict[str, Any]) -> None:
    name, (files, *_) = next(iter(data["clusters"].items()))
    files[0][0] = f"clusters/{name}/../../../escaped.yaml"


def _absolute_other_file(data: dict[str, Any]) -> None:
    data["other_files"][0][0] = "/tmp/escaped.yaml"


def _file_of_another_cluster(data: dict[str, Any]) -> None:
    names = list(data["clusters"])
    data["clusters"][names[0]][0][0][0] = f"clusters/{names[1]}/policies.yaml"


def _blob_name_a_path(data: dict[str, Any]) -> None:
    data["other_files"][0][1] = "/dev/zero"


@pytest.mark.parametrize("edit", [_escape_cluster_file, _absolute_other_file,
                                  _file_of_another_cluster, _blob_name_a_path])
def test_a_state_naming_unsafe_paths_is_never_trusted(
        medium: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """A well-framed state whose output paths leave the output folder (or their cluster's
    folder), or whose blob names are not digests, is ignored: its paths would reach the
    writer as they are."""
    cache = RenderCache.at(tmp_path / "cache")
    expected = render_cached(medium, cache).rendered
    _forge(state_file(cache, medium), edit)
    result = render_cached(medium, cache)
    assert result.mode.startswith("full (no snapshot")
    assert result.rendered == expected


def _payload_lines(state: Path) -> tuple[RenderCache, list[bytes]]:
    cache = RenderCache.at(state.parent.parent)
    payload = cache.unframe(state.read_bytes())
    assert payload is not None
    return cache, payload.split(b"\n")


def _record_cut_short(lines: list[bytes]) -> None:
    lines[1] = lines[1][:-2] + b"]"  # the file's record without its diagnostics


def _record_not_json(lines: list[bytes]) -> None:
    lines[1] = lines[1][:-1]


def _record_twice(lines: list[bytes]) -> None:
    lines[2] = lines[1]


def _record_missing(lines: list[bytes]) -> None:
    del lines[1]


def _cluster_as_file(lines: list[bytes]) -> None:
    lines[-2] = b'["R"' + lines[-2][4:]


@pytest.mark.parametrize("edit", [_record_cut_short, _record_not_json, _record_twice,
                                  _record_missing, _cluster_as_file])
def test_a_malformed_record_line_means_a_full_render(
        medium: Path, tmp_path: Path, edit: Callable[[list[bytes]], None]) -> None:
    """The snapshot is a line a record: a well-framed state with one bad line is ignored as
    a whole (a full render), never partly trusted."""
    cache = RenderCache.at(tmp_path / "cache")
    render_cached(medium, cache)
    state = state_file(cache, medium)
    cache, lines = _payload_lines(state)
    edit(lines)
    state.write_bytes(cache.frame(b"\n".join(lines)))
    mutate_one_requirement(medium)
    assert assert_same(medium, cache).startswith("full (no snapshot")
    assert assert_same(medium, cache) == "unchanged"


def test_a_change_past_the_first_read_of_a_long_file_is_seen(tmp_path: Path) -> None:
    """Input files are digested whole however long (read on past the first chunk): an edit
    after the first 64 KiB of a requirement file is a change, rendered as a full run does."""
    repo = tmp_path / "repo"
    generate("3x3x5x24", 7, repo)
    path = requirement_files(repo)[0]
    path.write_text("# padding\n" * 20_000 + path.read_text(encoding="utf-8"), encoding="utf-8")
    assert path.stat().st_size > 2 * 65536
    cache = RenderCache.at(tmp_path / "cache")
    assert_same(repo, cache)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("spec:\n", "spec:\n  description: edited\n", 1),
                    encoding="utf-8")
    assert assert_same(repo, cache).startswith("incremental")


def test_a_changed_inventory_file_is_checked_again(tmp_path: Path) -> None:
    """Only unchanged inventory files the snapshot holds no diagnostic of skip the structural
    checks: a changed file that fails them is an error as in a full render."""
    repo = tmp_path / "repo"
    generate("3x3x5x24", 7, repo)
    cache = RenderCache.at(tmp_path / "cache")
    assert_same(repo, cache)
    edit_service(1, 6)(repo)  # a port number out of range
    assert assert_same(repo, cache) == "error"


def test_an_unchanged_inventory_file_with_notices_is_checked_again(tmp_path: Path) -> None:
    """An unchanged inventory file with diagnostics (the import form's notices) is checked
    again when another inventory file changes: its notices are reported as in a full render."""
    repo = tmp_path / "repo"
    shutil.copytree(Path(__file__).parent / "fixtures" / "thesis" / "use-case-1-c2-verbatim",
                    repo)
    cache = RenderCache.at(tmp_path / "cache")
    assert_same(repo, cache)
    first = repo / "inventory" / "domain1.json"
    first.write_text(first.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert assert_same(repo, cache) == "incremental"
    assert any("domain2.json" in d.location.file for d in full(repo)[1])


@pytest.mark.parametrize("copies", [b'{"ns/name":[1,null]}', b'{"ns/name":"true"}',
                                    b'{"ns/name":["true",null}', b'["ns/name"]'])
def test_service_copies_that_do_not_check_out_mean_a_full_render(
        medium: Path, tmp_path: Path, copies: bytes) -> None:
    """A cluster's Service copies are decoded only when a run asks for them: copies that do
    not decode (or are not copies) are then never used, and the run renders in full."""
    cache = RenderCache.at(tmp_path / "cache")
    render_cached(medium, cache)
    state = state_file(cache, medium)
    cache, lines = _payload_lines(state)
    for i, line in enumerate(lines):
        if line.startswith(b'["C",'):
            lines[i] = line[:line.index(b",{")] + b"," + copies + b"]"
    state.write_bytes(cache.frame(b"\n".join(lines)))
    change = ServiceChange(medium)
    change.apply()
    mode = assert_same(medium, cache)
    assert mode.startswith(("full (a cached cluster record does not check out",
                            "full (no snapshot")), mode
    assert assert_same(medium, cache) == "unchanged"


def test_a_small_change_writes_other_records_back_verbatim(medium: Path, tmp_path: Path) -> None:
    """After a one-requirement change the state reads back as the snapshot serialized anew,
    and the lines of the records it did not change are those of the previous state."""
    from meshplan.incremental import snapshot_bytes, snapshot_from_bytes

    cache = RenderCache.at(tmp_path / "cache")
    render_cached(medium, cache)
    state = state_file(cache, medium)
    _, before = _payload_lines(state)
    mutation = mutate_one_requirement(medium)
    result = render_cached(medium, cache, full_above=1.0)
    assert result.mode == "incremental" and result.snapshot is not None
    _, after = _payload_lines(state)
    fresh = snapshot_from_bytes(snapshot_bytes(result.snapshot))
    assert fresh is not None
    assert snapshot_from_bytes(b"\n".join(after)) == fresh == result.snapshot
    changed = [line for line in after if line not in set(before)]
    assert 1 <= len(changed) <= 1 + 1 + result.rerendered  # head, the file, its clusters
    assert any(json.dumps(mutation.file).encode() in line for line in changed)


def test_a_save_reuses_the_line_of_a_record_it_read_and_reencodes_any_other(
        medium: Path, tmp_path: Path) -> None:
    """``snapshot_bytes(snapshot, previous)`` writes a record that is still the very object
    read from ``previous`` as the line it was read from (not encoded again), and encodes a
    record that is only equal to it."""

    from meshplan.incremental import FileRecord, snapshot_bytes, snapshot_from_bytes

    cache = RenderCache.at(tmp_path / "cache")
    render_cached(medium, cache)
    _, lines = _payload_lines(state_file(cache, medium))
    read = snapshot_from_bytes(b"\n".join(lines))
    assert read is not None
    path, record = next(iter(read.requirement_files.items()))
    name, cluster = next(iter(read.clusters.items()))
    marked = dataclasses.replace(read, lines={**read.lines, "R" + path: (record, b"R-AS-READ"),
                                              "C" + name: (cluster, b"C-AS-READ")})
    assert snapshot_bytes(read, marked).split(b"\n")[1:-1].count(b"R-AS-READ") == 1
    assert b"C-AS-READ" in snapshot_bytes(read, marked).split(b"\n")
    equal_only = dataclasses.replace(read, requirement_files={
        **read.requirement_files, path: FileRecord(*record)})
    again = snapshot_bytes(equal_only, marked)
    assert b"R-AS-READ" not in again.split(b"\n") and b"C-AS-READ" in again.split(b"\n")
    assert snapshot_from_bytes(again.replace(b"C-AS-READ", lines[1 + len(read.requirement_files)]
                                             )) == read


def test_a_requirement_refined_alone_has_plans_only_where_its_objects_go(tmp_path: Path
                                                                         ) -> None:
    """``refine(empty_clusters=False)`` (a changed file's objects before and after): the
    plans of every cluster that gets an object, exactly those of the whole refinement."""
    from dataclasses import replace

    from meshplan.pipeline import analyse
    from meshplan.refine import refine

    repo = tmp_path / "repo"
    generate("3x4x8x30", 5, repo)
    inventory = analyse(repo).inventory
    assert inventory is not None
    for count in (1, 3, len(inventory.requirements)):
        some = replace(inventory, requirements=inventory.requirements[:count])
        whole = refine(some)
        part = refine(some, empty_clusters=False)
        assert part.clusters == tuple(c for c in whole.clusters if c.objects)
        assert part.diagnostics == whole.diagnostics
        if count == 1:
            assert len(part.clusters) < len(whole.clusters)


@given(st.lists(st.lists(st.sampled_from(["a: b\n", "---x\n", " ---\n", "- c\n", "--\n",
                                          "x: ---\n"]), min_size=1, max_size=4),
                min_size=1, max_size=6), st.booleans())
def test_cached_documents_split_as_the_separator_does(docs: list[list[str]], cut: bool
                                                      ) -> None:
    """A cached file's documents are split with str.split, as the ``---`` separator splits
    them: each with its last newline (the last one without, when the file ends without)."""
    from meshplan.incremental import _SEPARATOR, _documents

    texts = ["".join(lines) for lines in docs]
    if cut:
        texts[-1] = texts[-1][:-1]
    text = "---\n".join(texts)
    assert _documents(text) == _SEPARATOR.split(text) == texts


def test_a_service_change_reads_the_inventory_in_part_only_when_that_is_exact(
        medium: Path, tmp_path: Path) -> None:
    """A change to services only reads the changed inventory file (before and now), the
    domains its callers read, and every other file up to its services (the pod networks);
    when the clusters are written elsewhere now, or another file's services come before its
    clusters (the pod networks read do not make the snapshot's), the inventory is read whole.
    """
    cache = RenderCache.at(tmp_path / "cache")
    assert_same(medium, cache)
    change = ServiceChange(medium)
    change.apply()
    result = render_cached(medium, cache, full_above=1.0)
    assert result.sliced and result.patched == result.rerendered > 0
    assert assert_same(medium, cache) == "unchanged"
    change.undo()
    assert assert_same(medium, cache) == "incremental, patched, sliced inventory"
    change.path.write_text("# the clusters move a line down\n" + change.changed, "utf-8")
    assert assert_same(medium, cache).startswith("incremental")
    assert not render_cached(medium, cache).sliced
    other = next(p for p in domain_files(medium) if p != change.path)
    data = load(other)
    data["spec"] = {"services": data["spec"]["services"], "clusters": data["spec"]["clusters"]}
    dump(other, data)  # its services first: read up to them, it has no cluster
    assert_same(medium, cache)
    change.path.write_text("# the clusters move a line down\n" + change.original, "utf-8")
    # the port only: sliced, whatever the other files' layout (the pod networks are the
    # snapshot's, no other file is read for them)
    assert assert_same(medium, cache) == "incremental, patched, sliced inventory"


def test_pod_networks_come_from_the_snapshot_when_they_check_out(medium: Path, tmp_path: Path
                                                                  ) -> None:
    """A service change takes every cluster's pod networks from the snapshot, not from the
    other inventory files (one holding two domains, the second's clusters after the first's
    services, is no matter); pod networks that do not make the snapshot's digest, or that
    differ from the changed file's clusters as the cache keeps that file, are not trusted:
    the inventory is read whole. Either way the result is the full render's."""
    from meshplan.incremental import facts_digest

    *_, first, second = domain_files(medium)
    change = ServiceChange(medium)
    assert change.path not in (first, second)
    first.write_text(first.read_text("utf-8") + "---\n" + second.read_text("utf-8"), "utf-8")
    second.unlink()
    cache = RenderCache.at(tmp_path / "cache")
    assert_same(medium, cache)
    payload = cache.unframe(state_file(cache, medium).read_bytes())
    assert payload is not None
    before = snapshot_from_bytes(payload)
    assert before is not None and len(before.pod_networks) > 2
    change.apply()
    assert assert_same(medium, cache) == "incremental, patched, sliced inventory"
    expected = full(medium)[0]
    assert expected is not None
    name = load(change.path)["metadata"]["name"]
    facts = before.pod_networks
    at = next(i for i, (domain, _, cidrs) in enumerate(facts) if domain == name and cidrs)
    domain, cluster, cidrs = facts[at]
    moved = ((cidrs[0][0], dataclasses.replace(cidrs[0][1], line=cidrs[0][1].line + 1)),
             *cidrs[1:])
    edited = (*facts[:at], (domain, cluster, moved), *facts[at + 1:])
    for spoilt in (dataclasses.replace(before, pod_networks=facts[:-1]),  # not its digest's
                   dataclasses.replace(before, pod_networks=edited, pods=facts_digest(edited))):
        result = render_cached(medium, cache, previous=spoilt, full_above=1.0)
        assert result.mode == "incremental" and not result.sliced
        assert result.rendered.files == expected.files
    trusted = render_cached(medium, cache, previous=before, full_above=1.0)
    assert trusted.sliced and trusted.rendered.files == expected.files


def test_a_namesake_moving_under_a_generated_service_is_reported_as_in_full(
        tmp_path: Path) -> None:
    """An ExternalName Service is named after the service it stands for and must not take an
    inventory Service's place: a service of the client's domain with that name moving (its
    clusters) to where the generated one goes is an error, which the cached render reports
    too, although the callers do not look the namesake up (once a cached render exited 0)."""
    repo = tmp_path / "repo"
    generate("5x3x8x100", 3, repo)
    rendered = full(repo)[0]
    assert rendered is not None
    generated: dict[tuple[str, str], set[str]] = {}  # (namespace, name) -> "domain/cluster"
    for file in rendered.files:
        if file.path.endswith("/services.yaml"):
            place = "/".join(file.path.split("/")[1:3])
            for doc in yaml.safe_load_all(file.content):
                if doc and doc["spec"].get("type") == "ExternalName":
                    key = (doc["metadata"]["namespace"], doc["metadata"]["name"])
                    generated.setdefault(key, set()).add(place)
    files = {load(p)["metadata"]["name"]: p for p in domain_files(repo)}
    for (namespace_and_name, places) in sorted(generated.items()):
        namespace, name = namespace_and_name
        domain, cluster = sorted(places)[0].split("/")
        path = files[domain]
        data = load(path)
        elsewhere = [c["name"] for c in data["spec"]["clusters"]
                     if f"{domain}/{c['name']}" not in places]
        own = {s["name"] for s in data["spec"].get("services", [])}
        if elsewhere and name not in own:  # it stands for another domain's service
            break
    else:
        raise AssertionError("every cluster of a client domain holds its generated Services")
    namesake: dict[str, Any] = {
        "name": name, "namespace": namespace, "selector": {"app": "namesake"},
        "ports": [{"port": 80, "protocol": "TCP", "name": "http"}], "clusters": elsewhere[:1]}
    data["spec"]["services"].append(namesake)
    dump(path, data)
    cache = RenderCache.at(tmp_path / "cache")
    assert_same(repo, cache)
    namesake["clusters"].append(cluster)  # now where the ExternalName Service goes
    dump(path, data)
    assert full(repo)[0] is None  # the clash: an error
    assert_same(repo, cache)  # the same diagnostics


def test_objects_a_change_leaves_as_they_were_keep_their_cached_text(
        medium: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A service's port changes its callers' policies and its Service copies, not the
    Namespaces its callers put into their clusters beside other requirements: a patched
    cluster keeps their cached text (they are not parsed and written again), and the
    result is a full render's."""
    import meshplan.incremental as incremental

    cache = RenderCache.at(tmp_path / "cache")
    assert_same(medium, cache)
    parsed: list[str] = []
    real = incremental.parsed_manifest

    def counting(document: incremental.CachedDocument) -> Any:
        parsed.append(document.key.kind)
        return real(document)

    monkeypatch.setattr(incremental, "parsed_manifest", counting)
    ServiceChange(medium).apply()
    assert assert_same(medium, cache) == "incremental, patched, sliced inventory"
    assert "Namespace" not in parsed


def _reads_changed_by_definition(records: list[Any], services: set[str]) -> bool:
    """reads_changed as first written: every read and call checked against the services."""
    domains = {s.split("/", 1)[0] for s in services}
    names = {s.partition("/")[2] for s in services} - {"*"}
    for record in records:
        if any(call.rpartition("/")[2] in names for call in record.calls):
            return True
        for read in record.reads:
            domain, _, name = read.partition("/")
            if read in services or f"{domain}/*" in services or (
                    name == "*" and domain in domains):
                return True
    return False


_PART = st.sampled_from(["a", "b", "c", "*", "a/b", ""])
_NAME = st.builds(lambda x, y: f"{x}/{y}", _PART, _PART)


@example(services={"a/*"}, records=[([], ["a/b"])])  # every service of a changed domain
@example(services={"a/b"}, records=[([], ["a/*"])])  # a wildcard read of a changed domain
@example(services={"a/b"}, records=[(["c/b"], [])])  # a call of a namesake
@given(services=st.sets(_NAME, max_size=4),
       records=st.lists(st.tuples(st.lists(_NAME, max_size=3), st.lists(_NAME, max_size=3)),
                        max_size=3))
def test_reads_changed_is_its_definition(services: set[str],
                                         records: list[tuple[list[str], list[str]]]) -> None:
    from meshplan.incremental import RequirementRecord, reads_changed

    recs = [RequirementRecord(("d", "n/r", False), (), (), tuple(calls), "", tuple(reads))
            for calls, reads in records]
    assert reads_changed(services)(recs) == _reads_changed_by_definition(recs, services)


def test_requirement_reads_are_the_records_reads(medium: Path) -> None:
    """What a sliced run reads of each domain (:func:`services_read`) comes from
    :func:`requirement_reads`, read off the requirement's text: the same as its record's; so
    too the domains it reads (:func:`footprint_of`, which the record takes in its own pass over
    the peers), with a memo shared by all (as a snapshot takes them) or not."""
    from meshplan.incremental import (
        PODS,
        RecordMemo,
        footprint_of,
        requirement_reads,
        requirement_record,
    )
    from meshplan.pipeline import analyse

    inventory = analyse(medium).inventory
    assert inventory is not None and inventory.requirements
    memo = RecordMemo()
    footprints: list[tuple[str, ...]] = []
    for requirement in inventory.requirements:
        record = requirement_record(inventory, requirement)
        assert tuple(sorted(requirement_reads(requirement))) == record.reads
        assert tuple(sorted(footprint_of(requirement))) == record.footprint
        assert requirement_record(inventory, requirement, memo) == record
        footprints.append(record.footprint)
    # not only their own domains: pod networks (CIDR rules) and other domains named
    assert any(PODS in f for f in footprints) and any(len(set(f) - {PODS}) > 1
                                                      for f in footprints)


def test_services_read_counts_each_name_in_the_readers_domain_too() -> None:
    from meshplan.incremental import services_read

    assert services_read([("a", ["a/x", "b/y"]), ("c", [])]) \
        == {"a": {"x", "y"}, "b": {"y"}, "c": set()}
    assert services_read([("a", ["b/*"]), ("a", ["b/y"]), ("d", ["a/z"])]) \
        == {"a": None, "b": None, "d": {"z"}}


PLAIN_DOMAIN = """\
# a comment
apiVersion: meshplan.dev/v1alpha1
kind: Domain
metadata:
  name: d
spec:
  clusters:
    - name: c1
      podCIDRs: [10.0.0.0/20]
  services:
    - name: s0
      namespace: n
      selector: {app: s0}
      ports: [{port: 80, protocol: TCP, name: http}]
      clusters: [c1]
      exportTo: ["*"]
    - name: s1
      namespace: n
      selector:
        app: s1
      ports: [{port: 81, protocol: TCP}]
      clusters: [c1]
    - name: s2
      namespace: n
      selector: {app: s2}
      ports: [{port: 82, protocol: TCP}]
      clusters: [c1]
"""


_CLUSTERS_BLOCK = "  clusters:\n    - name: c1\n      podCIDRs: [10.0.0.0/20]\n"
# the services list followed by content indented less (where the cut ends inside the file)
SERVICES_FIRST = PLAIN_DOMAIN.replace(_CLUSTERS_BLOCK, "", 1) + _CLUSTERS_BLOCK


@pytest.mark.parametrize("layout", [PLAIN_DOMAIN, SERVICES_FIRST],
                         ids=["services-last", "services-first"])
@pytest.mark.parametrize("wanted", [set(), {"s1"}, {"s0", "s2"}, {"s0", "s1", "s2", "other"}])
def test_a_services_cut_keeps_every_place(wanted: set[str], layout: str) -> None:
    """The services kept read as in the whole file (data and every position); the others
    are gone; the text has as many lines; everything else reads as in the whole file."""
    from meshplan.incremental import services_cut
    from meshplan.load.parse import parse_yaml

    assert _CLUSTERS_BLOCK in PLAIN_DOMAIN and SERVICES_FIRST != PLAIN_DOMAIN
    raw = layout.encode()
    cut = services_cut(raw, wanted)
    assert cut is not None
    text, names, kept = cut
    assert text.count(b"\n") == raw.count(b"\n")
    assert names == tuple(n for n in ("s0", "s1", "s2") if n in wanted)
    (whole,), _ = parse_yaml("d.yaml", layout)
    (part,), problems = parse_yaml("d.yaml", text.decode())
    assert not problems
    assert [s["name"] for s in part.data["spec"].get("services") or []] == list(names)
    for k, i in enumerate(kept):
        assert part.data["spec"]["services"][k] == whole.data["spec"]["services"][i]
        for path, mark in part.marks.items():
            if path[:3] == ("spec", "services", k):
                assert whole.marks[("spec", "services", i, *path[3:])] == mark
    assert part.data["spec"]["clusters"] == whole.data["spec"]["clusters"]
    for path, mark in whole.marks.items():
        if path[:2] != ("spec", "services"):
            assert part.marks[path] == mark, path


@pytest.mark.parametrize("edit", [
    ("selector: {app: s0}", "selector: {app:\n        s0}"),  # a flow mapping over two lines
    ("namespace: n\n      selector: {app: s2}", 'namespace: "n\n    - name: s9"'),  # quoted
    ("selector: {app: s0}", "selector: {app: s0}  # s0"),  # a comment after content
    ("      clusters: [c1]\n    - name: s2", "      clusters: [c1]\n    # s2\n    - name: s2"),
    ("selector: {app: s0}", "selector: {app: [s0}"),  # brackets that do not close
    ("namespace: n\n      selector: {app: s2}", "namespace: n\n      note: |\n        x"),
    ("namespace: n\n      selector: {app: s2}", "namespace: &n n\n      selector: {app: s2}"),
    ("      exportTo: [\"*\"]\n", "      exportTo: [\"*\"]\n\n"),  # a blank line in the list
    ("    - name: s1\n      namespace: n", "    - namespace: n\n      name: s1"),
    ("spec:\n", "spec:\n  note: 'x'\n"),
    ("name: d\n", "name: d\n---\n"),
    ("    - name: s2\n", "    -   name: s2\n"),
    ("c1]\n", "c1]\r\n"),
    # a '"' inside a plain key would pair with a multi-line value's opening quote
    ("  name: d\n", '  name: d\n  labels:\n    a"b: "x\n  y" #"\n'),
])
def test_a_services_cut_refuses_a_layout_it_cannot_read_line_by_line(
        edit: tuple[str, str]) -> None:
    from meshplan.incremental import services_cut

    old, new = edit
    assert old in PLAIN_DOMAIN
    assert services_cut(PLAIN_DOMAIN.replace(old, new, 1).encode(), {"s1"}) is None


# the pattern services_layout used before it matched what precedes a quoted scalar
_QUOTED_BY_LOOKING_BEHIND = re.compile(
    rb'(?:(?<=\n)|(?<=: )|(?<=- )|(?<=[\[{])|(?<=, ))[ ]*"[^"\\\n]*"(?=[ \n:,\]}])')


@settings(max_examples=examples(2000))
@given(st.lists(st.sampled_from([b'"', b" ", b"\n", b":", b"-", b"[", b"{", b",", b"]", b"}",
                                 b"a", b"\\", b": ", b"- ", b", ", b'"a"']), max_size=30))
def test_one_line_quoted_scalars_go_as_a_look_behind_finds_them(pieces: list[bytes]) -> None:
    """Matching what precedes a quoted scalar and putting it back removes exactly what the
    look-behind pattern removes."""
    from meshplan.incremental import _ONE_LINE_QUOTED

    text = b"".join(pieces)
    assert _ONE_LINE_QUOTED.sub(rb"\1", text) == _QUOTED_BY_LOOKING_BEHIND.sub(b"", text)


_PIECES = st.lists(st.sampled_from([b'"', b" ", b"\n", b":", b"-", b"[", b"{", b",", b"]",
                                     b"}", b"a", b"\\", b": ", b"- ", b", ", b'"a"', b"---",
                                     b"...", b"\t", b"#", b"."]), max_size=40)


@settings(max_examples=examples(2000))
@given(_PIECES)
def test_quoted_scalars_go_line_by_line_as_the_pattern_takes_them_over_the_text(
        pieces: list[bytes]) -> None:
    """Replacing only the lines holding a '"' gives what the pattern gives over the whole
    text (its matches never span two lines)."""
    from meshplan.incremental import _ONE_LINE_QUOTED, without_one_line_quoted

    text = b"".join(pieces)
    assert without_one_line_quoted(text) == _ONE_LINE_QUOTED.sub(rb"\1", text)


# what services_layout refused with one pattern before its document markers were looked for
# as texts
_UNSAFE_AS_ONE_PATTERN = re.compile(rb"[\t\r'\"\\|>&*!%@`#?\[\]{}]|(?m:^(?:---|\.\.\.))")


@settings(max_examples=examples(2000))
@given(_PIECES)
@example([b"..."])
@example([b"a", b"\n", b"..."])
@example([b"---"])
@example([b"a", b"\n", b"---"])
@example([b"a", b" ", b"---"])
def test_what_a_layout_refuses_is_what_one_pattern_finds(pieces: list[bytes]) -> None:
    from meshplan.incremental import _unsafe

    text = b"".join(pieces)
    assert _unsafe(text) is (_UNSAFE_AS_ONE_PATTERN.search(text) is not None)


def test_a_generated_domain_file_has_its_layout_read(tmp_path: Path) -> None:
    """A domain file of the benchmark's workload (quoted exports on some lines) is laid out
    plainly: every service item is found, in order."""
    from meshplan.incremental import services_layout

    generate("2x2x12x4", 1, tmp_path)
    raw = (tmp_path / "inventory" / "team-00.yaml").read_bytes()
    assert b'"' in raw
    layout = services_layout(raw)
    assert layout is not None
    names = [name for *_, name in layout.items]
    assert len(names) == 12 and names == re.findall(r"(?m)^    - name: (\S+)\n      namespace",
                                                    raw.decode())


def test_a_services_cut_with_its_layout_known_is_the_same() -> None:
    from meshplan.incremental import services_cut, services_layout

    raw = PLAIN_DOMAIN.encode()
    layout = services_layout(raw)
    assert layout is not None and [name for *_, name in layout.items] == ["s0", "s1", "s2"]
    for wanted in (set(), {"s1"}, {"s0", "s2"}):
        assert services_cut(raw, wanted, layout) == services_cut(raw, wanted)


def test_a_service_change_reads_the_callers_domains_in_part(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The callers' domains (unchanged) are read with only the services the analysed
    requirements can look up (ten domains: some are read by no peer without a service);
    the result is the full render's, both ways."""
    import meshplan.pipeline as pipeline

    medium = tmp_path / "repo"
    generate("10x2x10x100", 1, medium)

    from meshplan.load.repository import read_documents

    cuts: list[str] = []
    modelled = pipeline._InventorySlice._modelled

    def spy(self: Any, relpath: str, docs: list[Any]) -> Any:
        part = modelled(self, relpath, docs)
        if relpath in self.cuts:  # each service as the whole file models it
            cuts.append(relpath)
            whole = pipeline.model_inventory(read_documents(medium, relpath)[0])
            (domain,), (every,) = part.domains, whole.domains
            assert domain.clusters == every.clusters and domain.services
            assert domain.services == tuple(s for s in every.services
                                            if s.name in self.cuts[relpath][0])
        return part

    monkeypatch.setattr(pipeline._InventorySlice, "_modelled", spy)
    cache = RenderCache.at(tmp_path / "cache")
    assert_same(medium, cache)
    change = ServiceChange(medium)
    change.apply()
    assert assert_same(medium, cache) == "incremental, patched, sliced inventory"
    assert cuts and change.path.relative_to(medium).as_posix() not in cuts
    cuts.clear()
    change.undo()
    assert assert_same(medium, cache) == "incremental, patched, sliced inventory"
    assert cuts


def test_a_namesake_in_a_domain_read_in_part_is_seen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A requirement starts calling another domain's service x: its ExternalName Service x
    goes into the policy's namespace, where its own domain (unchanged, read in part) has an
    inventory service x. Refinement reports the clash; the cached render must read that
    namesake although no requirement looks it up (services_read counts each name read in the
    reader's own domain too)."""
    import meshplan.pipeline as pipeline
    from meshplan.pipeline import analyse

    reads: list[str] = []  # the files read in part ("whole": the inventory read whole)
    read, covering = pipeline._InventorySlice._read, pipeline._InventorySlice.covering

    def spy(self: Any, relpath: str, names: frozenset[str] | None) -> Any:
        docs = read(self, relpath, names)
        if relpath in self.cuts:
            reads.append(relpath)
        return docs

    def whole(self: Any, *args: Any) -> Any:
        try:
            return covering(self, *args)
        except pipeline._WholeInventory:
            reads.append("whole")
            raise

    monkeypatch.setattr(pipeline._InventorySlice, "_read", spy)
    monkeypatch.setattr(pipeline._InventorySlice, "covering", whole)
    repo = tmp_path / "repo"
    generate("10x2x6x60", 1, repo)
    inventory = analyse(repo).inventory
    assert inventory is not None
    files = {load(p)["metadata"]["name"]: p for p in domain_files(repo)}
    for requirement in inventory.requirements:
        service = inventory.service_selected_by(requirement)
        peers = [p for rule in (*(requirement.egress or ()), *(requirement.ingress or ()))
                 for p in rule.endpoints]
        if service is None or not peers or not all(  # every peer named: read in part
                p.is_abstract and p.selector.label("service") for p in peers) or any(
                rule.cidrs for rule in (*(requirement.egress or ()),
                                        *(requirement.ingress or ()))):
            continue
        domain = inventory.domain_by_name[requirement.domain]
        target = next((s for d in inventory.domains if d.name != domain.name
                       for s in d.services if s.exported_to(domain.name)
                       and s.namespace != service.namespace
                       and s.name not in domain.service_by_name), None)
        if target is None:
            continue
        work = tmp_path / f"try-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(repo, work)
        path = work / files[domain.name].relative_to(repo)
        path.write_text(path.read_text("utf-8") + (
            f"    - name: {target.name}\n      namespace: {service.namespace}\n"
            f"      selector: {{app: namesake}}\n"
            f"      ports: [{{port: 80, protocol: TCP, name: http}}]\n"
            f"      clusters: [{service.clusters[0]}]\n"), "utf-8")
        if full(work)[0] is None:
            continue  # a clash already
        cache = RenderCache.at(work / ".cache")
        assert_same(work, cache)
        caller = work / requirement.file
        data = load(caller)
        data["spec"].setdefault("egress", []).append({"toEndpoints": [{"matchLabels": {
            "domain": target.domain, "service": target.name}}]})
        dump(caller, data)
        if full(work)[0] is not None:
            continue  # no clash: the ExternalName Service goes elsewhere
        reads.clear()
        assert assert_same(work, cache) == "error"
        if path.relative_to(work).as_posix() in reads and "whole" not in reads:
            return
    raise AssertionError("no requirement to give a namesake clash read in part")


_CAUSE_PIECES = st.sampled_from(["a", "b", "/", "-", ".", "ab", "a/b", "b-a", ""])


@settings(max_examples=examples(1000))
@given(st.frozensets(st.lists(_CAUSE_PIECES, max_size=5).map("".join).filter(bool),
                     max_size=6),
       st.lists(st.sampled_from(["a", "b", "/", "-", ".", "\n", " ", ","]), max_size=40)
       .map("".join))
def test_the_dirty_causes_pattern_finds_a_text_naming_any_of_them(
        words: frozenset[str], text: str) -> None:
    """The pattern a patch looks for dirty causes with (their trie) finds something in a text
    exactly when one of them is in it, as one alternative of each did (a cause is never
    empty)."""
    from meshplan.incremental import any_of

    each = re.compile("|".join(re.escape(w) for w in sorted(words)) or "(?!)")
    assert (any_of(words).search(text) is not None) is any(w in text for w in words) \
        is (each.search(text) is not None)


def test_a_patch_keeps_unchanged_objects_and_refuses_one_cached_twice(medium: Path) -> None:
    """Objects the change leaves as they were (:func:`same_objects`) keep their cached text:
    with nothing else touched, the cluster's files are the cached ones; an object cached
    twice is not as meshplan renders a cluster, and the patch gives up (a full render)."""
    from meshplan.incremental import (
        cached_documents,
        cluster_record,
        files_by_cluster,
        patch_documents,
    )
    from meshplan.pipeline import analyse
    from meshplan.render import render
    from meshplan.yamltext import SharedText

    analysis = analyse(medium)
    assert analysis.plan is not None and analysis.inventory is not None
    files_of = files_by_cluster(render(analysis.plan, analysis.inventory).files)
    cluster = analysis.plan.clusters[0]
    files = files_of[cluster.cluster.path]
    documents = cached_documents(cluster, files)
    assert documents
    record = cluster_record(cluster, files)
    every = frozenset(d.key for d in documents)
    patched = patch_documents(cluster, documents, set(), [], record, SharedText(), set(),
                              every)
    assert patched is not None
    assert sorted((f.path, f.content) for f in patched[1]) \
        == sorted((f.path, f.content) for f in files)
    assert sorted(patched[0].files) == sorted(record.files)
    assert patched[0].counts == record.counts and dict(patched[0].copies) == dict(record.copies)
    twice = [*documents, documents[0]]
    assert patch_documents(cluster, twice, set(), [], record, SharedText(), set(),
                           every) is None


@pytest.mark.parametrize("namespace", ["no", "123"])
def test_a_cached_render_of_a_namespace_the_writer_quotes_is_the_full_render(
        tmp_path: Path, namespace: str) -> None:
    """A namespace the YAML writer quotes (``"no"``, a boolean to YAML 1.1 readers; ``"123"``)
    through every kind of cached run (the first, unchanged, a requirement changed, a
    service's port changed, and back): each is byte for byte the full render."""
    repo = tmp_path / "repo"
    generate("3x3x5x24", 7, repo)
    renamed = 0
    for path in [*repo.glob("inventory/*.yaml"), *repo.glob("requirements/*/*.yaml")]:
        text = path.read_text(encoding="utf-8")
        # ServiceChange's service and mutate_one_requirement's requirement live there
        if "namespace: team-00-identity\n" in text:
            renamed += 1
            path.write_text(text.replace("namespace: team-00-identity\n",
                                         f'namespace: "{namespace}"\n'), encoding="utf-8")
    assert renamed >= 2
    cache = RenderCache.at(tmp_path / "cache")
    modes = [assert_same(repo, cache), assert_same(repo, cache)]
    rendered = full(repo)[0]
    assert rendered is not None and any(f'  namespace: "{namespace}"\n'.encode() in f.content
                                        for f in rendered.files)
    mutation = mutate_one_requirement(repo)
    modes.append(assert_same(repo, cache))
    change = ServiceChange(repo)
    change.apply()
    modes.append(assert_same(repo, cache))
    change.undo()
    mutation.undo(repo)
    modes.append(assert_same(repo, cache))
    assert modes[0].startswith("full (no snapshot") and modes[1] == "unchanged", modes
    assert "incremental" in modes[2:], modes  # the cached path taken, not only full runs


def test_a_cached_document_whose_namespace_is_not_read_is_not_patched(medium: Path) -> None:
    """A namespaced object whose namespace the key pattern does not read (a name the dumper
    quotes, as "no" or "123") would be keyed with no namespace, and the cluster's record lose
    its Service copy: such a cluster's documents are not taken (it is rendered again)."""
    from meshplan.incremental import cached_documents, files_by_cluster
    from meshplan.outputs import OutputFile
    from meshplan.pipeline import analyse
    from meshplan.render import render

    analysis = analyse(medium)
    assert analysis.plan is not None and analysis.inventory is not None
    files_of = files_by_cluster(render(analysis.plan, analysis.inventory).files)
    cluster = analysis.plan.clusters[0]
    files = files_of[cluster.cluster.path]
    assert cached_documents(cluster, files)
    services = next(f for f in files if f.path.endswith("/services.yaml"))
    text = services.content.decode()
    at = text.index("\n  namespace: ") + len("\n  namespace: ")
    end = text.index("\n", at)
    quoted = text[:at] + '"no"' + text[end:]
    spoilt = [OutputFile(f.path, quoted.encode()) if f is services else f for f in files]
    assert cached_documents(cluster, spoilt) is None
