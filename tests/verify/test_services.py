"""meshplan.verify.services: global Services as ClusterMesh load-balances them.

A cluster's copy has its local backends; a global copy also every other cluster's global and
shared copy's; affinity is a preference, so it restricts nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meshplan.admission import cilium_service_flags
from meshplan.diagnostics import Diagnostic, Location, Severity
from meshplan.pipeline import validate
from meshplan.verify.connectivity import Connectivity
from meshplan.verify.endpoints import Endpoint, EndpointIndex
from meshplan.verify.ports import PortSet
from meshplan.verify.report import VerifyReport, verify
from meshplan.verify.services import (
    HEADLESS_BY_CLUSTER_IP,
    HEADLESS_LABEL,
    SERVICE_PROXY_NAME_LABEL,
    NamedCall,
    ServiceCopy,
    backends,
    name_problems,
)

from tests.support.flows import rendered_files, verify_repo
from tests.support.repos import REPO_ROOT, THESIS_DIR, copy_tree

WEB = (("app", "web"),)
NONE, LABEL = HEADLESS_BY_CLUSTER_IP, f"label {HEADLESS_LABEL}"
ENDPOINTS = [Endpoint("service", "d", c, f"m{c}", "ns", "web", WEB) for c in ("a", "b", "c")]
ENDPOINTS.append(Endpoint("service", "e", "x", "mx", "ns", "web", WEB))  # another domain


def copy(cluster: str, *, is_global: bool = True, shared: bool = True, selector: bool = True,
         domain: str = "d", headless: str = "") -> ServiceCopy:
    return ServiceCopy(domain, cluster, "ns", "web", WEB if selector else None, is_global,
                       shared, PortSet.single("TCP", 80), PortSet.single("TCP", 80), headless,
                       Location("f.yaml"))


@pytest.mark.parametrize(("copies", "client", "picked"), [
    # every copy global and shared: everyone gets every cluster's pods
    ([copy("a"), copy("b"), copy("c")], "a", ["a", "b", "c"]),
    # the client's own copy is not global: local backends only
    ([copy("a", is_global=False), copy("b"), copy("c")], "a", ["a"]),
    # c does not share its pods: nobody else gets them, c's own clients still do
    ([copy("a"), copy("b"), copy("c", shared=False)], "a", ["a", "b"]),
    ([copy("a"), copy("b"), copy("c", shared=False)], "c", ["a", "b", "c"]),
    # b is not global at all: it neither gives nor takes
    ([copy("a"), copy("b", is_global=False), copy("c")], "a", ["a", "c"]),
    # a mirror (no local pods, shared false) takes the remote ones
    ([copy("a"), copy("b"), copy("x", shared=False, domain="e", selector=False)], "x",
     ["a", "b"]),
    # a mirror with a selector matching local pods picks them too (another domain's pods!)
    ([copy("a"), copy("x", shared=False, domain="e")], "x", ["a", "x"]),
    # a headless copy: its name resolves to its local pods only (as verify counts them: the
    # remote ones depend on the operator's EndpointSlice synchronisation)...
    ([copy("a", headless=NONE), copy("b"), copy("c")], "a", ["a"]),
    ([copy("x", shared=False, domain="e", selector=False, headless=NONE), copy("a")], "x", []),
    # ...and it still gives its pods to the others' global copies (ClusterMesh exports it)
    ([copy("a", headless=NONE), copy("b"), copy("c")], "b", ["a", "b", "c"]),
    ([copy("a", headless=NONE, shared=False), copy("b")], "b", ["b"]),
    # a copy labelled headless that has a cluster IP: Cilium serves no frontend for it, and
    # DNS answers its name with the cluster IP, not its pods; so too a clusterIP spelt "none"
    ([copy("a", headless=LABEL), copy("b"), copy("c")], "a", []),
    ([copy("a", headless=LABEL, is_global=False)], "a", []),
    ([copy("a", headless="clusterIP: none")], "a", []),
])
def test_backends(copies: list[ServiceCopy], client: str, picked: list[str]) -> None:
    [mine] = [c for c in copies if c.cluster == client]
    found = backends(copies, ENDPOINTS)[mine]
    assert list(found) == sorted(found)  # in index order
    assert sorted(ENDPOINTS[i].cluster for i in found) == picked


def test_backends_take_only_their_own_endpoints_index() -> None:
    """An index already built selects as the one backends would build; another's is refused
    (it would select other pods)."""
    copies = [copy("a"), copy("b"), copy("c", shared=False)]
    assert backends(copies, ENDPOINTS, EndpointIndex(ENDPOINTS)) == backends(copies, ENDPOINTS)
    with pytest.raises(ValueError, match="other endpoints"):
        backends(copies, ENDPOINTS, EndpointIndex(ENDPOINTS[1:]))


def test_dropped_connections_behind_a_global_service_are_reported(tmp_path: Path) -> None:
    """Figure 6.13 of the thesis (use case 2b with only Code Box 6.5 for the client): the client
    in cluster1 may call backend in cluster1 only, but backend's global Service there (made
    global here by another client calling it everywhere) load-balances to cluster2 too, whose
    connections are dropped at the client's egress."""
    root = copy_tree(THESIS_DIR / "use-case-2b", tmp_path / "repo")
    other = root / "requirements" / "domain1" / "allow-service-backend.yaml"
    other.write_text(other.read_text(encoding="utf-8").replace("name: client", "name: other"),
                     encoding="utf-8")
    assert verify_repo(THESIS_DIR / "use-case-2b").ok  # as committed: both clusters admitted
    report = verify_repo(root)
    warned = [d.message for d in report.diagnostics if d.severity is Severity.WARNING
              and "load-balances every connection" in d.message]
    assert len(warned) == 1, warned
    assert warned[0].startswith("expected every backend of the global Service "
                                "backend-ns/backend of domain1/cluster1 to be allowed for "
                                "domain1/client-service, which may call it there, found "
                                "domain1/backend@cluster2 blocked and domain1/backend@cluster1 "
                                "allowed")
    assert report.ok  # the flows are what the requirements say: a warning, not an error
    # validate says so before anything is rendered, at the requirement's peer
    _, diagnostics = validate(root)
    [early] = [d for d in diagnostics if d.severity is Severity.WARNING]
    assert str(early.location) == "requirements/domain1/allow-cluster1.yaml:23:11"
    assert "found cluster2 not admitted" in early.message


def reference_load_balancing(actual: Connectivity, copies: list[ServiceCopy]) -> list[str]:
    """The load-balancing warnings by their definition, pair by pair (no classes)."""
    endpoints = actual.endpoints
    groups: dict[tuple[ServiceCopy, str], tuple[set[str], set[str]]] = {}
    for copy, picked in backends(copies, endpoints).items():
        if len(picked) < 2 or not copy.ports:
            continue
        for i, client in enumerate(endpoints):
            if client.kind not in ("service", "client") or i in picked or \
                    (client.domain, client.cluster) != (copy.domain, copy.cluster):
                continue
            allowed = {b for b in picked if actual.flow(i, b) & copy.ports}
            if allowed and len(allowed) < len(picked):
                reached, dropped = groups.setdefault((copy, client.service_level),
                                                     (set(), set()))
                reached.update(endpoints[b].title for b in allowed)
                dropped.update(endpoints[b].title for b in picked if b not in allowed)
    return sorted(f"{copy.location} {caller} {sorted(dropped)} {sorted(reached)}"
                  for (copy, caller), (reached, dropped) in groups.items())


def test_load_balancing_by_classes_agrees_with_every_pair(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a generated fleet (clients restricted or not at egress, named by backends' ingress
    or not), the warnings found by classes of clients are those of every pair."""
    import meshplan.verify.report as report_module
    from meshplan.verify.services import load_balancing_problems

    from benchmarks.workload import generate

    generate("3x4x16x60", 1, tmp_path / "repo")
    seen: list[tuple[Connectivity, list[ServiceCopy]]] = []

    def capture(actual: Connectivity, copies: list[ServiceCopy],
                serving: object = None) -> list[Diagnostic]:
        seen.append((actual, list(copies)))
        return []

    monkeypatch.setattr(report_module, "load_balancing_problems", capture)
    verify_repo(tmp_path / "repo")
    [(actual, copies)] = seen
    expected = reference_load_balancing(actual, copies)
    assert len(expected) >= 5  # the fleet has some
    found = []
    for d in load_balancing_problems(actual, copies):
        caller = d.message.split(" to be allowed for ")[1].split(", which may call")[0]
        blocked, allowed = _lists(d.message)
        found.append(f"{d.location} {caller} {blocked} {allowed}")
    assert sorted(found) == expected


def _lists(message: str) -> tuple[list[str], list[str]]:
    """The blocked and the allowed backends a load-balancing warning names."""
    found = message.split(", found ")[1]
    blocked, rest = found.split(" blocked and ")
    allowed = rest.split(" allowed: ")[0]
    return blocked.split(", "), allowed.split(", ")


@pytest.mark.parametrize("edit", ["not global", "deleted", "renamed"])
def test_a_mirror_that_no_longer_reaches_the_service_is_an_error(edit: str) -> None:
    """The bundled example renders into domain2/cl4 a mirror of backend-namespace/backend (global,
    no local pods) so that frontend's pods there reach the remote backends by the name. Made
    not global, deleted or renamed, the name reaches none of them: an error at the requirement's
    peer, once for the cluster and Service (not per pod)."""
    inventory, files = rendered_files(REPO_ROOT)
    assert verify(inventory, files).ok  # as rendered
    path = "clusters/domain2/cl4/services.yaml"
    text = files[path].decode()
    first, rest = text.split("\n---\n", 1)
    assert "  name: backend\n  namespace: backend-namespace\n" in first
    if edit == "not global":
        first = first.replace('service.cilium.io/global: "true"', 'service.cilium.io/global: '
                              '"false"', 1)
    elif edit == "renamed":
        first = first.replace("  name: backend\n", "  name: backend-old\n", 1)
    files[path] = (rest if edit == "deleted" else f"{first}\n---\n{rest}").encode()
    report = verify(inventory, files)
    found = [d for d in report.diagnostics if d.severity is Severity.ERROR]
    assert len(found) == 1, [d.format_text() for d in found]
    [problem] = found
    assert problem.message.startswith(
        "expected domain2/cl4 to have a Service backend-namespace/backend whose backends "
        "include a pod of service domain1/backend, which requirement "), problem.message
    assert str(problem.location).startswith("requirements/domain2/")
    if edit == "not global":
        assert "found rendered/clusters/domain2/cl4/services.yaml:7:9 (global: not true, " \
               "backends: none)" in problem.message
    else:
        assert "found no such Service in the rendered output" in problem.message


@pytest.mark.parametrize("selector", ["  selector: {}\n", ""], ids=["empty", "absent"])
def test_a_service_with_an_empty_or_no_selector_has_no_backends(selector: str) -> None:
    """Kubernetes manages no endpoints for a Service whose selector is empty or absent
    (ServiceSpec.selector), so database-namespace/database of domain1/cl2, the only cluster
    with its pods, written so gives the global copies no backends: each cluster whose clients
    call database by name gets an error (an empty selector is not every pod of the namespace)."""
    inventory, files = rendered_files(REPO_ROOT)
    path = "clusters/domain1/cl2/services.yaml"
    text = files[path].decode()
    written = "  selector:\n    name: database\n"
    assert text.count(written) == 1
    files[path] = text.replace(written, selector).encode()
    report = verify(inventory, files)
    assert_database_unreachable_from(report, ["domain1/cl1", "domain2/cl3", "domain2/cl4"])


@pytest.mark.parametrize(("edit", "errors"), [
    # not shared, as Cilium reads any value but "true" in any case: database's pods (in
    # domain1/cl2 only) reach no other cluster's copy
    ('service.cilium.io/shared: "False"', ["domain1/cl1", "domain2/cl3", "domain2/cl4"]),
    ('service.cilium.io/shared: "no"', ["domain1/cl1", "domain2/cl3", "domain2/cl4"]),
    ('service.cilium.io/shared: "TRUE"', []),  # still shared
])
def test_cilium_reads_the_shared_annotation_true_in_any_case_else_false(
        edit: str, errors: list[str]) -> None:
    """domain1/cl2's database-namespace/database, the only copy with the service's pods,
    with its shared annotation rewritten: each cluster whose clients call database by name
    gets an error exactly when Cilium no longer reads the copy as shared."""
    inventory, files = rendered_files(REPO_ROOT)
    path = "clusters/domain1/cl2/services.yaml"
    text = files[path].decode()
    head, written, tail = text.partition("  name: database\n  namespace: database-namespace\n")
    assert written and tail.count('service.cilium.io/shared: "true"') >= 1
    files[path] = (head + written + tail.replace('service.cilium.io/shared: "true"', edit, 1)
                   ).encode()
    report = verify(inventory, files)
    assert_database_unreachable_from(report, errors)


def test_cilium_reads_the_global_annotation_true_in_any_case() -> None:
    """``service.cilium.io/global: "True"`` is global to Cilium: domain1/cl1's copy of
    database (no local pods) still gets domain1/cl2's, and verify passes as rendered."""
    inventory, files = rendered_files(REPO_ROOT)
    path = "clusters/domain1/cl1/services.yaml"
    text = files[path].decode()
    head, written, tail = text.partition("  name: database\n  namespace: database-namespace\n")
    assert written and 'service.cilium.io/global: "true"' in tail
    files[path] = (head + written + tail.replace('service.cilium.io/global: "true"',
                                                 'service.cilium.io/global: "True"', 1)).encode()
    report = verify(inventory, files)
    assert not [d.format_text() for d in report.diagnostics if d.severity is Severity.ERROR]


@pytest.mark.parametrize("edit", ["port", "targetPort", "protocol"])
def test_a_mirror_that_no_longer_exposes_the_called_port_is_an_error(edit: str) -> None:
    """The mirror of backend-namespace/backend in domain2/cl4 still selects the remote pods,
    but a client calling the name on TCP/80 must reach a pod on TCP/80: a Service port moved
    (81), forwarded elsewhere (targetPort 8080) or of another protocol reaches none there."""
    inventory, files = rendered_files(REPO_ROOT)
    path = "clusters/domain2/cl4/services.yaml"
    text = files[path].decode()
    first, rest = text.split("\n---\n", 1)
    assert "    port: 80\n    protocol: TCP" in first
    first = first.replace("    port: 80\n    protocol: TCP", {
        "port": "    port: 81\n    protocol: TCP",
        "targetPort": "    port: 80\n    targetPort: 8080\n    protocol: TCP",
        "protocol": "    port: 80\n    protocol: UDP"}[edit], 1)
    files[path] = f"{first}\n---\n{rest}".encode()
    found = [d for d in verify(inventory, files).diagnostics if d.severity is Severity.ERROR]
    assert len(found) == 1, [d.format_text() for d in found]
    assert found[0].message.startswith(
        "expected domain2/cl4 to have a Service backend-namespace/backend whose backends "
        "include a pod of service domain1/backend"), found[0].message
    assert "a client calling it on TCP/80 reaches no pod there" in found[0].message


def reference_name_problems(calls: list[NamedCall], serving: dict[ServiceCopy, tuple[int, ...]]
                            ) -> list[tuple[str, str]]:
    """Name problems by their definition, call by call: a (peer, client cluster, Service) is
    reported, with its first call, when none of its calls (to pods not local there) reaches a
    copy of that name holding one of the pods and exposing every port called."""
    results: dict[tuple[Location, str, str, str, str], list[tuple[NamedCall, bool]]] = {}
    for call in calls:
        if not call.pods or any((ENDPOINTS[i].domain, ENDPOINTS[i].cluster)
                                == (call.domain, call.cluster) for i in call.pods):
            continue
        reaches = any((copy.domain, copy.cluster, copy.namespace, copy.name)
                      == (call.domain, call.cluster, call.namespace, call.name)
                      and set(picked) & call.pods and copy.exposed.covers(call.ports)
                      for copy, picked in serving.items())
        results.setdefault((call.where, call.domain, call.cluster, call.namespace, call.name),
                           []).append((call, reaches))
    return [(str(found[0][0].where), found[0][0].requirement) for found in results.values()
            if not any(reaches for _, reaches in found)]


@pytest.mark.slow
@settings(deadline=None)
@given(st.data())
def test_name_problems_agree_with_every_call(data: st.DataObject) -> None:
    """Calls of one peer, cluster and Service that reach a copy and calls that do not, in any
    order: the key is reported, with its first call, exactly when none of its calls reaches."""
    tcp80 = PortSet.single("TCP", 80)
    ports = st.sampled_from([tcp80, tcp80, PortSet.single("TCP", 443), PortSet()])
    names = st.sampled_from(["web", "web", "web", "api"])
    likely = st.sampled_from([True, True, True, False])
    copies: list[ServiceCopy] = []
    for domain, cluster in [("d", "a"), ("d", "b"), ("d", "c"), ("e", "x")]:
        if data.draw(likely):
            copies.append(ServiceCopy(domain, cluster, "ns", data.draw(names),
                                      WEB if data.draw(likely) else None, data.draw(likely),
                                      data.draw(likely), tcp80, data.draw(ports),
                                      data.draw(st.sampled_from(["", "", NONE, LABEL])),
                                      Location("s.yaml", len(copies) + 1)))
    serving = backends(copies, ENDPOINTS)
    # few keys (peer, cluster, name), so that one often has calls that reach and calls that
    # do not, in either order
    calls: list[NamedCall] = []
    for n in range(data.draw(st.integers(0, 10))):
        domain, cluster = ("d", "a") if data.draw(likely) else ("e", "x")
        calls.append(NamedCall(Location("r.yaml", 1 if data.draw(likely) else 2), f"req{n}",
                               domain, cluster, "d/web", "ns", data.draw(names),
                               frozenset(data.draw(st.sets(st.integers(0, 3), min_size=1,
                                                           max_size=2))),
                               data.draw(ports)))
    found = [(str(d.location), d.message.split("which requirement ")[1].split(" ")[0])
             for d in name_problems(calls, ENDPOINTS, serving)]
    assert found == reference_name_problems(calls, serving)


@pytest.mark.parametrize("reaching_first", [True, False])
def test_a_name_one_call_reaches_is_not_reported_for_another(reaching_first: bool) -> None:
    """Two calls of one peer, cluster and Service: one reaches the copy (pods behind it, port
    exposed), the other not (a port it does not expose). The name works: nothing is reported,
    whichever comes first. A third key, whose two calls both fail, is reported once, with its
    first call."""
    copies = [copy("a"), copy("b")]  # global and shared: a's copy picks b's pod too
    serving = backends(copies, ENDPOINTS)

    def call(requirement: str, line: int, port: int) -> NamedCall:
        return NamedCall(Location("r.yaml", line), requirement, "d", "a", "d/web", "ns", "web",
                         frozenset({1}), PortSet.single("TCP", port))

    pair = [call("reaches", 1, 80), call("fails", 1, 443)]
    calls = [*(pair if reaching_first else pair[::-1]), call("first", 2, 443),
             call("second", 2, 443)]
    assert reference_name_problems(calls, serving) == [("r.yaml:2:0", "first")]
    found = name_problems(calls, ENDPOINTS, serving)
    assert [(str(d.location), d.message.split("which requirement ")[1].split(" ")[0])
            for d in found] == [("r.yaml:2:0", "first")]


# Cilium's own table for annotation.Get (pkg/annotation/k8s_test.go TestGet) and the flags'
# (pkg/annotation/clustermesh_test.go), spelled with meshplan's keys.
G, GA = "service.cilium.io/global", "io.cilium/global-service"
S, SA = "service.cilium.io/shared", "io.cilium/shared-service"


@pytest.mark.parametrize(("annotations", "flags"), [
    ({}, (False, False)),
    ({G: "True"}, (True, True)),
    ({G: "false"}, (False, False)),
    ({G: ""}, (False, False)),
    ({G: "yes"}, (False, False)),
    ({G: True}, (False, False)),  # not a string: Kubernetes admits none, nor does verify
    ({GA: "True"}, (True, True)),  # the legacy key alone
    ({GA: "tRuE"}, (True, True)),
    ({G: "true", GA: "false"}, (True, True)),  # the new key wins when both are present
    ({G: "false", GA: "true"}, (False, False)),
    ({G: "", GA: "true"}, (False, False)),  # present, even empty
    ({S: "true"}, (False, False)),  # shared only counts for a global Service
    ({SA: "true"}, (False, False)),
    ({G: "true", S: "True"}, (True, True)),
    ({G: "true", S: "false"}, (True, False)),
    ({G: "true", SA: "false"}, (True, False)),
    ({GA: "TRUE", SA: "False"}, (True, False)),
    ({G: "true", S: "TRUE", SA: "false"}, (True, True)),
    ({G: "true", S: "no", SA: "true"}, (True, False)),
])
def test_cilium_service_flags_read_as_the_agent_reads_them(
        annotations: dict[str, object], flags: tuple[bool, bool]) -> None:
    assert cilium_service_flags(annotations) == flags


def _edit_database_copy(files: dict[str, bytes], cluster: str, global_value: str | None,
                        shared_value: str | None, legacy: dict[str, str]) -> None:
    """database-namespace/database in domain1/<cluster>: its ``service.cilium.io/global`` and
    ``/shared`` annotations rewritten to these values (None: the line deleted), and the
    ``legacy`` keys added beside them, by hand as a user would."""
    path = f"clusters/domain1/{cluster}/services.yaml"
    text = files[path].decode()
    head, written, tail = text.partition("  name: database\n  namespace: database-namespace\n")
    body, sep, rest = tail.partition("\n---\n")
    assert written and f'    {G}: "true"\n' in body and f"    {S}: " in body
    lines = []
    for line in body.split("\n"):
        if line.startswith(f"    {G}: "):
            if global_value is not None:
                lines.append(f'    {G}: "{global_value}"')
            lines.extend(f'    {key}: "{value}"' for key, value in legacy.items())
        elif line.startswith(f"    {S}: "):
            if shared_value is not None:
                lines.append(f'    {S}: "{shared_value}"')
        else:
            lines.append(line)
    files[path] = (head + written + "\n".join(lines) + sep + rest).encode()


_CALLERS = ["domain1/cl1", "domain2/cl3", "domain2/cl4"]  # clients calling database by name


@pytest.mark.parametrize(("global_value", "shared_value", "legacy", "errors"), [
    # global through the legacy key only: still shared with every caller's copy
    (None, "true", {GA: "true"}, []),
    (None, None, {GA: "True"}, []),  # mixed case, shared by default
    (None, None, {GA: "false"}, _CALLERS),
    # both global keys, conflicting: the new one is what Cilium reads
    ("true", "true", {GA: "false"}, []),
    ("false", "true", {GA: "true"}, _CALLERS),
    # not shared through the legacy key: the only pods reach no other cluster
    ("true", None, {SA: "false"}, _CALLERS),
    ("true", None, {SA: "FALSE"}, _CALLERS),
    (None, None, {GA: "TRUE", SA: "False"}, _CALLERS),
    ("true", None, {SA: "TrUe"}, []),
    # both shared keys, conflicting: the new one wins
    ("true", "True", {SA: "false"}, []),
    ("true", "false", {SA: "true"}, _CALLERS),
])
def test_the_legacy_annotations_of_the_exporting_copy_as_cilium_reads_them(
        global_value: str | None, shared_value: str | None, legacy: dict[str, str],
        errors: list[str]) -> None:
    """domain1/cl2's database-namespace/database, the only copy with the service's pods,
    annotated by hand with Cilium's legacy keys (``io.cilium/global-service``,
    ``io.cilium/shared-service``), alone or beside conflicting new ones: each cluster whose
    clients call database by name gets an error exactly when Cilium does not share the
    copy's pods with the other clusters."""
    inventory, files = rendered_files(REPO_ROOT)
    _edit_database_copy(files, "cl2", global_value, shared_value, legacy)
    report = verify(inventory, files)
    assert_database_unreachable_from(report, errors)


@pytest.mark.parametrize(("global_value", "legacy", "errors"), [
    (None, {GA: "True"}, []),  # global through the legacy key: gets cl2's pods
    (None, {GA: "no"}, ["domain1/cl1"]),
    ("false", {GA: "true"}, ["domain1/cl1"]),  # the new key wins
    ("TRUE", {GA: "false"}, []),
])
def test_the_legacy_global_annotation_of_a_calling_copy_as_cilium_reads_it(
        global_value: str | None, legacy: dict[str, str], errors: list[str]) -> None:
    """domain1/cl1's copy of database (no local pods) gets domain1/cl2's pods exactly when
    Cilium reads it as global, through either key."""
    inventory, files = rendered_files(REPO_ROOT)
    _edit_database_copy(files, "cl1", global_value, "false", legacy)
    assert_database_unreachable_from(verify(inventory, files), errors)


A, AA = "service.cilium.io/affinity", "io.cilium/service-affinity"


@pytest.mark.parametrize(("global_value", "legacy", "warned"), [
    ("true", {A: "none"}, (A, "none")),  # the documented default, read as local-only by 1.19
    ("true", {AA: "Bogus"}, (AA, "Bogus")),
    ("true", {A: "Local"}, None),
    ("true", {AA: "REMOTE"}, None),
    ("true", {A: ""}, None),
    ("true", {A: "remote", AA: "none"}, None),  # the new key wins
    ("true", {A: "sticky", AA: "local"}, (A, "sticky")),
    ("false", {A: "none"}, None),  # ignored unless global
    (None, {GA: "true", AA: "none"}, (AA, "none")),
])
def test_an_affinity_that_cilium_releases_read_differently_is_a_warning(
        global_value: str | None, legacy: dict[str, str], warned: tuple[str, str] | None
        ) -> None:
    """domain1/cl1's copy of database with an affinity annotation added by hand: a value
    other than local, remote or "" made Cilium 1.18 (and 1.19 before the fix's backport)
    drop the remote backends (cilium/cilium#46623) where later releases keep them (and
    verify models them), so it is a warning at the annotation, naming the key Cilium reads."""
    inventory, files = rendered_files(REPO_ROOT)
    _edit_database_copy(files, "cl1", global_value, "false", legacy)
    report = verify(inventory, files)
    found = [d for d in report.diagnostics if "cilium/cilium#46623" in d.message]
    if warned is None:
        assert found == []
        return
    [problem] = found
    key, value = warned
    assert problem.severity is Severity.WARNING
    assert problem.message.startswith(
        f"expected {key} of the global Service database-namespace/database to be local, "
        f"remote or absent, found '{value}': "), problem.message
    assert str(problem.location).startswith("rendered/clusters/domain1/cl1/services.yaml:")
    assert problem.path == f"metadata.annotations.{key}"


def assert_database_unreachable_from(report: VerifyReport, errors: list[str]) -> None:
    """The report's errors are exactly one per cluster in ``errors``: a Service
    database-namespace/database there whose backends do not include domain1/database's pods."""
    found = [d for d in report.diagnostics if d.severity is Severity.ERROR]
    assert sorted(d.message.split(" to have a Service ")[0] for d in found) == [
        f"expected {cluster}" for cluster in errors], [d.message for d in found]
    assert all("a Service database-namespace/database whose backends include a pod of service "
               "domain1/database" in d.message for d in found), [d.message for d in found]


def _make_headless(files: dict[str, bytes], path: str, namespace: str, name: str) -> None:
    """The Service namespace/name of a rendered services file given ``clusterIP: None`` by
    hand (after its ``type: ClusterIP``)."""
    text = files[path].decode()
    head, written, tail = text.partition(f"  name: {name}\n  namespace: {namespace}\n")
    body, sep, rest = tail.partition("\n---\n")
    assert written and "spec:\n  type: ClusterIP\n" in body
    body = body.replace("spec:\n  type: ClusterIP\n", "spec:\n  type: ClusterIP\n"
                        "  clusterIP: None\n", 1)
    files[path] = (head + written + body + sep + rest).encode()


_HEADLESS = "found clusterIP: None: Cilium load-balances no headless Service"


@pytest.mark.parametrize(("cluster", "errors"), [
    # the only copy with database's pods: ClusterMesh still shares them with the callers'
    # global copies, which load-balance to them
    ("cl2", []),
    # a caller's copy with no pods of its own: DNS answers its name with the remote pods
    # only where the operator synchronises EndpointSlices, which verify cannot see
    ("cl1", ["domain1/cl1"]),
])
def test_a_headless_global_service_is_resolved_to_its_local_pods_with_a_warning(
        cluster: str, errors: list[str]) -> None:
    """domain1/<cluster>'s copy of database made headless by hand: Cilium load-balances no
    headless Service, so its name gives the pods of its cluster's EndpointSlices; verify
    counts the local ones (an error where the call needs remote ones) and warns at
    ``spec.clusterIP`` that the remote ones depend on a setting it cannot see."""
    inventory, files = rendered_files(REPO_ROOT)
    path = f"clusters/domain1/{cluster}/services.yaml"
    _make_headless(files, path, "database-namespace", "database")
    report = verify(inventory, files)
    assert_database_unreachable_from(report, errors)
    for problem in report.diagnostics:
        if problem.severity is Severity.ERROR:
            assert "(global: true, headless by clusterIP: None, backends: none)" in problem.message
            assert "a headless Service's name resolves to the pods of its cluster's " \
                   "EndpointSlices" in problem.message
            assert problem.message.endswith(  # the field cannot be changed in place
                "spec.clusterIP is immutable, so delete the Service and create it again "
                "without clusterIP: None"), problem.message
    [warned] = [d for d in report.diagnostics if _HEADLESS in d.message]
    assert warned.severity is Severity.WARNING
    assert warned.message.startswith("expected the global Service database-namespace/database "
                                     "to have a cluster IP"), warned.message
    assert str(warned.location).startswith(f"rendered/{path}:")
    assert warned.path == "spec.clusterIP"


def test_a_headless_service_that_is_not_global_is_not_warned_about() -> None:
    """A headless Service that is not global has its local pods in DNS, as verify models it
    (no warning); one spelt ``none`` is not headless to Kubernetes (which rejects it)."""
    inventory, files = rendered_files(REPO_ROOT)
    path = "clusters/domain1/cl2/services.yaml"
    _make_headless(files, path, "database-namespace", "database")
    text = files[path].decode()
    head, written, tail = text.partition("  name: database\n  namespace: database-namespace\n")
    files[path] = (head + written + tail.replace('service.cilium.io/global: "true"',
                                                 'service.cilium.io/global: "false"', 1)
                   ).encode()
    report = verify(inventory, files)
    assert not [d for d in report.diagnostics if _HEADLESS in d.message]
    assert_database_unreachable_from(report, _CALLERS)  # not global: shared with nobody
    inventory, files = rendered_files(REPO_ROOT)
    _make_headless(files, path, "database-namespace", "database")
    files[path] = files[path].replace(b"clusterIP: None", b"clusterIP: none")
    report = verify(inventory, files)
    assert not [d for d in report.diagnostics if _HEADLESS in d.message]
    # ...but headless to Cilium, which lowercases it: an error, and no backends for its name
    [rejected] = [d for d in report.diagnostics if d.path == "spec.clusterIP"]
    assert rejected.severity is Severity.ERROR
    assert rejected.message.startswith("expected spec.clusterIP of Service "
                                       "database-namespace/database to be None or an IP "
                                       "address, found none, which the API server rejects")


def test_a_cluster_ip_spelt_none_otherwise_is_advised_as_such() -> None:
    """domain1/cl1's copy of database (a caller's) given ``clusterIP: NONE`` by hand: the
    call by name has no backends, and the error's advice is about the spelling the API server
    rejects, not about a label it does not have."""
    inventory, files = rendered_files(REPO_ROOT)
    path = "clusters/domain1/cl1/services.yaml"
    _make_headless(files, path, "database-namespace", "database")
    files[path] = files[path].replace(b"clusterIP: None", b"clusterIP: NONE")
    report = verify(inventory, files)
    [call] = [d for d in report.diagnostics
              if d.severity is Severity.ERROR and d.path != "spec.clusterIP"]
    assert "(global: true, headless by clusterIP: NONE, backends: none)" in call.message
    assert call.message.endswith(
        "spec.clusterIP NONE is rejected by the API server: write None for DNS to answer its "
        "name with its pods, or leave it out for Cilium to load-balance it"), call.message
    assert HEADLESS_LABEL not in call.message


def test_a_cluster_ip_spelt_none_with_the_label_too_is_advised_to_drop_both() -> None:
    """The same copy labelled ``service.kubernetes.io/headless`` as well: leaving clusterIP
    out is not enough for Cilium to load-balance it (the label keeps it headless), so the
    advice names the label too; the error at clusterIP shows its spelling alone."""
    inventory, files = rendered_files(REPO_ROOT)
    path = "clusters/domain1/cl1/services.yaml"
    _make_headless(files, path, "database-namespace", "database")
    files[path] = files[path].replace(b"clusterIP: None", b"clusterIP: none")
    _label(files, path, "database-namespace", "database", f'{HEADLESS_LABEL}: ""')
    report = verify(inventory, files)
    [rejected] = [d for d in report.diagnostics if d.path == "spec.clusterIP"]
    assert "address, found none, which the API server rejects" in rejected.message
    [call] = [d for d in report.diagnostics
              if d.severity is Severity.ERROR and d.path != "spec.clusterIP"]
    assert f"headless by clusterIP: none and label {HEADLESS_LABEL}, backends: none)" \
        in call.message, call.message
    assert call.message.endswith(
        "spec.clusterIP none is rejected by the API server: write None for DNS to answer its "
        f"name with its pods, or leave it out and drop the label {HEADLESS_LABEL} for Cilium "
        "to load-balance it"), call.message


def test_a_headless_service_takes_no_remote_backends_to_load_balance(tmp_path: Path) -> None:
    """The thesis' use case 2b with the client admitted to cluster1 only (as in
    test_dropped_connections_behind_a_global_service_are_reported), and backend's Service in
    cluster1 made headless: its name resolves to cluster1's pods only (as verify counts
    them), so nothing is load-balanced to the blocked cluster2; a warning says what verify
    cannot see instead."""
    root = copy_tree(THESIS_DIR / "use-case-2b", tmp_path / "repo")
    other = root / "requirements" / "domain1" / "allow-service-backend.yaml"
    other.write_text(other.read_text(encoding="utf-8").replace("name: client", "name: other"),
                     encoding="utf-8")
    inventory, files = rendered_files(root)
    _make_headless(files, "clusters/domain1/cluster1/services.yaml", "backend-ns", "backend")
    report = verify(inventory, files)
    assert not [d for d in report.diagnostics if "blocked and" in d.message]
    assert len([d for d in report.diagnostics if _HEADLESS in d.message]) == 1


@pytest.mark.parametrize("key", [G, S, GA, SA, A, AA, "argocd.argoproj.io/sync-wave"])
@pytest.mark.parametrize(("value", "found"), [
    ("true", "true (a boolean)"), ("1", "1 (a number)"), ("-1", "-1 (a number)"),
    ("0.5", "0.5 (a number)"), ("{}", "a mapping"), ("[local]", "a sequence"),
    ("null", "null, which kubectl apply reads as removing the annotation"),
    # as YAML writes them, not as Python shows them
    ("2020-01-01", "2020-01-01 (a date)"), ("2020-01-01 10:30:00", "2020-01-01 10:30:00 (a "
                                                                   "timestamp)"),
    ("!!binary aGVsbG8=", "a binary value, which the API server"), (".inf", ".inf (a number)"),
    ("-.inf", "-.inf (a number)"), (".nan", ".nan (a number)"),
])
def test_an_annotation_value_that_is_not_a_string_is_an_error(
        key: str, value: str, found: str) -> None:
    """domain1/cl2's database Service with an annotation written unquoted by hand (YAML reads
    ``true`` as a boolean, ``1`` as a number): Kubernetes admits only strings there
    (``metadata.annotations`` is ``map[string]string``), so verify does not guess what Cilium
    reads; it reports an error at the annotation, once, and no affinity warning besides."""
    inventory, files = rendered_files(REPO_ROOT)
    path = "clusters/domain1/cl2/services.yaml"
    text = files[path].decode()
    head, written, tail = text.partition("  name: database\n  namespace: database-namespace\n")
    assert written and f'    {G}: "true"\n' in tail
    line = f"    {key}: {value}\n"
    if f"    {key}: " in tail.split("\n---\n")[0]:  # rewrite the one written
        old = next(x for x in tail.split("\n") if x.startswith(f"    {key}: "))
        tail = tail.replace(old + "\n", line, 1)
    else:
        tail = tail.replace("  annotations:\n", "  annotations:\n" + line, 1)
    files[path] = (head + written + tail).encode()
    report = verify(inventory, files)
    found_here = [d for d in report.diagnostics if d.path == f"metadata.annotations.{key}"]
    assert len(found_here) == 1, [d.format_text() for d in found_here]
    [problem] = found_here
    assert problem.severity is Severity.ERROR
    assert problem.message.startswith(
        f"expected the value of annotation {key} of Service database-namespace/database to be "
        f"a string, found {found}"), problem.message
    assert str(problem.location).startswith(f"rendered/{path}:")
    assert not report.ok


def _label(files: dict[str, bytes], path: str, namespace: str, name: str, line: str) -> None:
    """The Service namespace/name of a rendered services file given the label ``line``
    (``key: value``) by hand."""
    text = files[path].decode()
    head, written, tail = text.partition(f"  name: {name}\n  namespace: {namespace}\n")
    assert written and tail.startswith("  labels:\n")
    files[path] = (head + written + tail.replace("  labels:\n", f"  labels:\n    {line}\n", 1)
                   ).encode()


_UNSERVED = "Cilium gives a Service so labelled no frontend whatever its value"


@pytest.mark.parametrize("value", ['""', '"true"', '"false"'])
@pytest.mark.parametrize(("cluster", "errors"), [
    # the only copy with database's pods: the releases that leave a Service labelled headless
    # out of their watch export none of its pods, so verify counts none (fail closed)
    ("cl2", _CALLERS),
    # a caller's copy: its name resolves to its cluster IP, which Cilium does not serve
    ("cl1", ["domain1/cl1"]),
])
def test_a_service_labelled_headless_has_no_backends_whatever_its_cluster_ip(
        value: str, cluster: str, errors: list[str]) -> None:
    """domain1/<cluster>'s copy of database labelled ``service.kubernetes.io/headless`` by
    hand (any value): Cilium's isHeadless reads the label's presence and gives the Service no
    frontend though it has a cluster IP, so a call by its name reaches no pod (an error) and
    a warning at the label says why."""
    inventory, files = rendered_files(REPO_ROOT)
    path = f"clusters/domain1/{cluster}/services.yaml"
    _label(files, path, "database-namespace", "database", f"{HEADLESS_LABEL}: {value}")
    report = verify(inventory, files)
    assert_database_unreachable_from(report, errors)
    if cluster == "cl1":
        [problem] = [d for d in report.diagnostics if d.severity is Severity.ERROR]
        assert f"(global: true, headless by label {HEADLESS_LABEL}, backends: none)" \
            in problem.message, problem.message
        assert "Cilium gives a headless Service no frontend, even with a cluster IP" \
            in problem.message, problem.message
        assert problem.message.endswith(
            f"drop the label {HEADLESS_LABEL} for Cilium to load-balance it"), problem.message
    [warned] = [d for d in report.diagnostics if _UNSERVED in d.message]
    assert warned.severity is Severity.WARNING
    assert warned.path == f"metadata.labels.{HEADLESS_LABEL}"
    assert str(warned.location).startswith(f"rendered/{path}:")
    assert not [d for d in report.diagnostics if _HEADLESS in d.message]


def test_a_service_labelled_headless_with_no_cluster_ip_resolves_to_its_pods_unshared() -> None:
    """domain1/cl2's database, the only copy with its pods, headless by ``clusterIP: None``
    and the label: DNS answers its name with its pods, but verify counts none of them for
    the other clusters' copies (fail closed), and the warning does not say they are
    shared."""
    inventory, files = rendered_files(REPO_ROOT)
    path = "clusters/domain1/cl2/services.yaml"
    _make_headless(files, path, "database-namespace", "database")
    _label(files, path, "database-namespace", "database", f'{HEADLESS_LABEL}: ""')
    report = verify(inventory, files)
    assert_database_unreachable_from(report, _CALLERS)
    [warned] = [d for d in report.diagnostics if _HEADLESS in d.message]
    assert "still shared" not in warned.message
    assert not [d for d in report.diagnostics if _UNSERVED in d.message]


@pytest.mark.parametrize("value", ['""', "kube-proxy", "cilium"])
def test_a_service_for_another_service_proxy_is_an_error_and_not_served(value: str) -> None:
    """domain1/cl2's database, the only copy with its pods, labelled
    ``service.kubernetes.io/service-proxy-name`` by hand: Cilium handles such a Service only
    when the label equals its agent's k8s-service-proxy-name (empty by default: it handles
    none so labelled), which the rendered tree does not say. verify reports an error at the
    label and counts the Service as not served (none of its pods for the callers' copies)."""
    inventory, files = rendered_files(REPO_ROOT)
    path = "clusters/domain1/cl2/services.yaml"
    _label(files, path, "database-namespace", "database", f"{SERVICE_PROXY_NAME_LABEL}: {value}")
    report = verify(inventory, files)
    [problem] = [d for d in report.diagnostics
                 if d.path == f"metadata.labels.{SERVICE_PROXY_NAME_LABEL}"]
    assert problem.severity is Severity.ERROR
    assert problem.message.startswith(
        "expected the Service database-namespace/database to be handled by Cilium, found the "
        f"label {SERVICE_PROXY_NAME_LABEL}"), problem.message
    assert str(problem.location).startswith(f"rendered/{path}:")
    calls = [d for d in report.diagnostics if d.severity is Severity.ERROR and d is not problem]
    assert sorted(d.message.split(" to have a Service database-namespace/database whose "
                                  "backends include a pod of service domain1/database")[0]
                  for d in calls) == [f"expected {cluster}" for cluster in _CALLERS]


@pytest.mark.parametrize("key", ["annotations", "labels"])
@pytest.mark.parametrize(("value", "found"), [
    ("[a]", "a sequence"), ("1", "1 (a number)"), ('"x"', "a string"), ("true", "true (a boolean)"),
])
def test_metadata_annotations_or_labels_that_are_not_a_mapping_are_an_error(
        key: str, value: str, found: str) -> None:
    """domain1/cl2's database Service with its ``metadata.<key>`` written by hand as something
    other than a mapping: the API server rejects it (a map of strings to strings), so verify
    reports an error at that key instead of reading it as empty."""
    inventory, files = rendered_files(REPO_ROOT)
    path = "clusters/domain1/cl2/services.yaml"
    text = files[path].decode()
    head, written, tail = text.partition("  name: database\n  namespace: database-namespace\n")
    lines = tail.split("\n")
    start = lines.index(f"  {key}:")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("    "))
    files[path] = (head + written + "\n".join(
        [*lines[:start], f"  {key}: {value}", *lines[end:]])).encode()
    report = verify(inventory, files)
    [problem] = [d for d in report.diagnostics if d.path == f"metadata.{key}"]
    assert problem.severity is Severity.ERROR
    assert problem.message.startswith(
        f"expected metadata.{key} of Service database-namespace/database to be a mapping, "
        f"found {found}"), problem.message
    assert str(problem.location).startswith(f"rendered/{path}:")


@pytest.mark.parametrize(("value", "found"), [
    ("5", "5 (a number), which the API server rejects: metadata.labels is a map of strings"),
    ("true", "true (a boolean)"), ("[a]", "a sequence"), ("2020-01-01", "2020-01-01 (a date)"),
    ("null", "null, which kubectl apply reads as removing the label"),
])
def test_a_label_value_that_is_not_a_string_is_an_error(value: str, found: str) -> None:
    """domain1/cl2's database Service's label app.kubernetes.io/managed-by given by hand a
    value YAML does not read as a string: the API server rejects it (``metadata.labels`` is
    ``map[string]string``), so it is an error at the label, as for an annotation."""
    inventory, files = rendered_files(REPO_ROOT)
    path = "clusters/domain1/cl2/services.yaml"
    text = files[path].decode()
    head, written, tail = text.partition("  name: database\n  namespace: database-namespace\n")
    managed = "  labels:\n    app.kubernetes.io/managed-by: meshplan\n"
    assert written and tail.startswith(managed)  # rewrite the one written
    files[path] = (head + written + tail.replace(
        managed, f"  labels:\n    app.kubernetes.io/managed-by: {value}\n", 1)).encode()
    report = verify(inventory, files)
    [problem] = [d for d in report.diagnostics
                 if d.path == "metadata.labels.app.kubernetes.io/managed-by"]
    assert problem.severity is Severity.ERROR
    assert problem.message.startswith(
        "expected the value of label app.kubernetes.io/managed-by of Service "
        f"database-namespace/database to be a string, found {found}"), problem.message
    assert str(problem.location).startswith(f"rendered/{path}:")
    assert not report.ok


_DATABASE = "database-namespace/database"


@pytest.mark.parametrize(("lines", "path", "found"), [
    (["clusterIP: 5"], "spec.clusterIP", f"expected spec.clusterIP of Service {_DATABASE} to be "
     "None or an IP address, found 5 (a number), which the API server rejects"),
    (["clusterIP: [None]"], "spec.clusterIP", "to be None or an IP address, found a sequence"),
    # Cilium reads headlessness from clusterIP only; the API server rejects clusterIPs alone
    (["clusterIPs: [None]"], "spec.clusterIPs", f"expected spec.clusterIPs of Service {_DATABASE} "
     "to be absent, found [None] without spec.clusterIP, which the API server rejects"),
    (["clusterIP: 10.96.0.9", "clusterIPs: [None]"], "spec.clusterIPs",
     "to begin with its spec.clusterIP 10.96.0.9, found [None], which the API server rejects"),
    (["clusterIP: None", "clusterIPs: [10.96.0.9]"], "spec.clusterIPs",
     "to begin with its spec.clusterIP None, found [10.96.0.9]"),
    (["clusterIPs: None"], "spec.clusterIPs", "to be a list of strings, found a string"),
    (["clusterIPs: [1]"], "spec.clusterIPs", "to be a list of strings, found a sequence"),
])
def test_a_cluster_ip_the_api_server_rejects_is_an_error(
        lines: list[str], path: str, found: str) -> None:
    """domain1/cl2's database Service given by hand a ``spec.clusterIP`` that is not a string
    or a ``spec.clusterIPs`` that disagrees with it (the API server's validation: clusterIPs
    empty when clusterIP is, else beginning with it): an error at that field."""
    inventory, files = rendered_files(REPO_ROOT)
    rendered = "clusters/domain1/cl2/services.yaml"
    _spec_lines(files, rendered, lines)
    report = verify(inventory, files)
    [problem] = [d for d in report.diagnostics if d.path == path]
    assert problem.severity is Severity.ERROR
    assert found in problem.message, problem.message
    assert str(problem.location).startswith(f"rendered/{rendered}:")
    assert not report.ok


@pytest.mark.parametrize("lines", [["clusterIP: 10.96.0.9"], ["clusterIP: None"],
                                   ["clusterIP: None", "clusterIPs: [None]"],
                                   ["clusterIP: 10.96.0.9", "clusterIPs: [10.96.0.9, fd00::9]"],
                                   ['clusterIP: ""'], ["clusterIPs: []"]])
def test_a_cluster_ip_the_api_server_admits_is_no_error(lines: list[str]) -> None:
    """The same Service with a clusterIP and clusterIPs the API server admits: no error (the
    headless copy, the only one with database's pods, still shares them)."""
    inventory, files = rendered_files(REPO_ROOT)
    _spec_lines(files, "clusters/domain1/cl2/services.yaml", lines)
    report = verify(inventory, files)
    assert report.ok, [d.format_text() for d in report.diagnostics]


def _spec_lines(files: dict[str, bytes], path: str, lines: list[str]) -> None:
    """domain1/cl2's database Service given the spec ``lines`` by hand (after its type)."""
    text = files[path].decode()
    head, written, tail = text.partition("  name: database\n  namespace: database-namespace\n")
    body, sep, rest = tail.partition("\n---\n")
    assert written and "spec:\n  type: ClusterIP\n" in body
    body = body.replace("spec:\n  type: ClusterIP\n", "spec:\n  type: ClusterIP\n"
                        + "".join(f"  {line}\n" for line in lines), 1)
    files[path] = (head + written + body + sep + rest).encode()


@pytest.mark.parametrize(("key", "shown"), [("null", "null"), ("~", "null"), ("true", "true"),
                                            ("1", "1")])
def test_an_annotation_key_that_is_not_a_string_is_shown_as_yaml_writes_it(
        key: str, shown: str) -> None:
    """domain1/cl2's database Service with an annotation whose key YAML does not read as a
    string and whose value is a number: the error's path and message name the key as YAML
    writes it (``null``, not Python's ``None``)."""
    inventory, files = rendered_files(REPO_ROOT)
    path = "clusters/domain1/cl2/services.yaml"
    text = files[path].decode()
    head, written, tail = text.partition("  name: database\n  namespace: database-namespace\n")
    tail = tail.replace("  annotations:\n", f"  annotations:\n    {key}: 1\n", 1)
    files[path] = (head + written + tail).encode()
    report = verify(inventory, files)
    [problem] = [d for d in report.diagnostics if "to be a string, found 1" in d.message]
    assert problem.path == f"metadata.annotations.{shown}"
    assert problem.message.startswith(f"expected the value of annotation {shown} of Service "
                                      "database-namespace/database"), problem.message
