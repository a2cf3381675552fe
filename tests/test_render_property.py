"""Property: random valid inventories and requirements always render, build with the real
kustomize and validate against the real schemas; and the output keeps its promises.

The strategy draws 1-3 domains (cluster names may repeat across domains), services, exports, and
requirements in the native and the thesis form with abstract, raw and CIDR peers, explicit ports
and cluster scopes. Every drawn repository passes the checker; only refinement clashes (second
test) may be reported.

* ``test_random_valid_inputs_render_build_and_validate``: service names unique across domains
  (no two domains fight over a Service name). Checks determinism, kustomize builds, schemas,
  policy shapes and metadata, consent across domains, policy scopes, and that removing one
  requirement removes exactly what only it caused.
* ``test_service_name_clashes_are_errors_never_wrong_output``: names reused across domains;
  either the clash is reported (by ``validate`` and ``render`` alike) or the output never puts a
  generated Service where an inventory Service of another identity runs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from meshplan.diagnostics import InputError, Severity
from meshplan.pipeline import checked_inventory, validate

from tests.support.ci import examples
from tests.support.k8s import kustomize_build, require_kubectl, validate_object
from tests.support.semantics import (
    POLICY_KINDS,
    all_anomalies,
    canonical,
    cluster_views,
    object_key,
    objects_by_key,
    render_files,
    required_by,
    write_repo,
)

pytestmark = pytest.mark.slow  # property tests end to end: the full tier only

DOMAINS = ("alpha", "beta", "gamma")
CLUSTERS = ("east", "west", "north")
SERVICES = ("api", "db", "web", "cache", "auth", "queue", "search", "mail", "shop", "pay")
NAMESPACES = ("default", "shop", "data", "edge")
NS = "k8s:io.kubernetes.pod.namespace"


@dataclass
class World:
    domains: list[dict[str, Any]]
    requirements: dict[str, list[dict[str, Any]]]

    def service(self, domain: str, name: str) -> dict[str, Any]:
        spec = next(d for d in self.domains if d["metadata"]["name"] == domain)["spec"]
        return next(s for s in spec["services"] if s["name"] == name)

    def clusters(self, domain: str) -> list[str]:
        spec = next(d for d in self.domains if d["metadata"]["name"] == domain)["spec"]
        return [c["name"] for c in spec["clusters"]]

    def visible(self, domain: str, to: str) -> list[dict[str, Any]]:
        """Services of ``domain`` that ``to`` may name (own, or exported to it)."""
        spec = next(d for d in self.domains if d["metadata"]["name"] == domain)["spec"]
        return [s for s in spec["services"]
                if domain == to or "*" in s["exportTo"] or to in s["exportTo"]]


def subset(draw: st.DrawFn, items: list[str], *, min_size: int = 1) -> list[str]:
    return draw(st.lists(st.sampled_from(items), min_size=min_size, max_size=len(items),
                         unique=True))


@st.composite
def inventories(draw: st.DrawFn, unique_services: bool = True) -> World:
    names = list(DOMAINS[: draw(st.integers(1, 3))])
    counter = iter(range(1, 256))
    service_pool = list(SERVICES if unique_services else SERVICES[:3])
    domains: list[dict[str, Any]] = []
    for name in names:
        clusters = []
        for cluster in CLUSTERS[: draw(st.integers(1, 3))]:
            entry: dict[str, Any] = {"name": cluster}
            n = next(counter)
            if draw(st.booleans()):
                entry["meshName"] = f"mesh-{n}"  # else the default <domain>-<cluster>
            if draw(st.booleans()):
                entry["meshId"] = n
            if draw(st.booleans()):
                entry["podCIDRs"] = [f"10.{n}.0.0/16"]
            if draw(st.booleans()):
                entry["clusterDomain"] = draw(st.sampled_from(["cluster.local", "corp.example"]))
            clusters.append(entry)
        services = []
        for _ in range(draw(st.integers(0 if domains else 1, 3))):
            if not service_pool:
                break
            service = draw(st.sampled_from(service_pool))
            service_pool.remove(service)  # unique in the domain; refilled per domain below
            port_numbers = draw(st.lists(st.integers(1, 65535), min_size=1, max_size=2,
                                         unique=True))
            ports: list[dict[str, Any]] = [
                {"port": p, "protocol": draw(st.sampled_from(["TCP", "UDP", "SCTP"]))}
                for p in port_numbers]
            if len(ports) > 1:
                for i, port in enumerate(ports):
                    port["name"] = f"p{i}"
            services.append({
                "name": service,
                "namespace": draw(st.sampled_from(NAMESPACES)),
                "selector": draw(st.sampled_from([{"app": service},
                                                  {"app.kubernetes.io/name": service,
                                                   "tier": "backend"}])),
                "ports": ports,
                "clusters": subset(draw, [c["name"] for c in clusters]),
                "exportTo": draw(st.sampled_from([[], ["*"], [n for n in names if n != name]])),
            })
        domains.append({"metadata": {"name": name},
                        "spec": {"clusters": clusters, "services": services}})
        if not unique_services:
            service_pool = list(SERVICES[:3])
    world = World(domains, {})
    for name in names:
        world.requirements[name] = [draw(requirements(world, name, i))
                                    for i in range(draw(st.integers(0, 3)))]
    return world


@st.composite
def peers(draw: st.DrawFn, world: World, domain: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["named", "named", "wildcard", "raw"]))
    if kind == "raw":
        labels: dict[str, str] = {"role": draw(st.sampled_from(["client", "worker"]))}
        if draw(st.booleans()):  # both spellings of the namespace label occur in the wild
            key = draw(st.sampled_from([NS, "io.kubernetes.pod.namespace"]))
            labels[key] = draw(st.sampled_from(NAMESPACES))
        return {"matchLabels": labels}
    target = draw(st.sampled_from([d["metadata"]["name"] for d in world.domains]))
    visible = world.visible(target, domain)
    labels = {} if target == domain and draw(st.booleans()) else {"domain": target}
    if kind == "named" and visible:
        service = draw(st.sampled_from(visible))
        labels["service"] = service["name"]
        if draw(st.booleans()):
            labels["cluster"] = draw(st.sampled_from([*service["clusters"], "*"]))
    else:
        labels["service"] = "*"
        if draw(st.booleans()):
            labels["cluster"] = draw(st.sampled_from([*world.clusters(target), "*"]))
    return {"matchLabels": labels}


@st.composite
def rule_lists(draw: st.DrawFn, world: World, domain: str, direction: str) -> list[Any] | None:
    if draw(st.integers(0, 3)) == 0:
        return None
    rules = []
    for _ in range(draw(st.integers(0, 3))):
        rule: dict[str, Any]
        if draw(st.integers(0, 4)) == 0:
            entry: dict[str, Any] = {"cidr": "192.0.2.0/24"}
            if draw(st.booleans()):
                entry["except"] = ["192.0.2.128/25"]
            rule = {"toCIDRSet" if direction == "egress" else "fromCIDRSet": [entry]}
        else:
            key = "toEndpoints" if direction == "egress" else "fromEndpoints"
            rule = {key: draw(st.lists(peers(world, domain), min_size=1, max_size=2))}
        if draw(st.integers(0, 3)) == 0:
            port: dict[str, Any] = {"port": str(draw(st.integers(1, 65535)))}
            if draw(st.booleans()):
                port["protocol"] = draw(st.sampled_from(["TCP", "UDP", "ANY"]))
            rule["toPorts"] = [{"ports": [port]}]
        rules.append(rule)
    return rules


@st.composite
def requirements(draw: st.DrawFn, world: World, domain: str, index: int) -> dict[str, Any]:
    own = world.visible(domain, domain)
    metadata: dict[str, Any] = {"name": f"req-{index}"}
    spec: dict[str, Any] = {}
    if own and bool(draw(st.booleans())):
        service = draw(st.sampled_from(own))
        spec["endpointSelector"] = {"matchLabels": {"service": service["name"]}}
        scope = service["clusters"]
        if draw(st.integers(0, 3)) == 0:
            metadata["namespace"] = service["namespace"]
    else:
        spec["endpointSelector"] = {"matchLabels": {"role": "client"}}
        scope = world.clusters(domain)
        namespace = draw(st.sampled_from([None, "*", *NAMESPACES]))
        if namespace is not None:
            metadata["namespace"] = namespace
    clusters = subset(draw, scope) if draw(st.booleans()) else None
    for direction in ("egress", "ingress"):
        rules = draw(rule_lists(world, domain, direction))
        if rules is not None:
            spec[direction] = rules
    if draw(st.integers(0, 3)) == 0:  # the thesis form: cilium.io/v2, scope as an annotation
        if clusters is not None:
            metadata["annotations"] = {"meshplan.dev/clusters": ",".join(clusters)}
        return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                "metadata": metadata, "spec": spec}
    if clusters is not None:
        spec["clusters"] = clusters
    return {"metadata": metadata, "spec": spec}


# --------------------------------------------------------------------------- checks


def check_consent(world: World, views: Mapping[str, Any]) -> None:
    """Another domain's cluster gets objects only for services exported to the requirement."""
    for path, view in views.items():
        owner = path.split("/")[0]
        for obj in view.objects:
            kind, namespace, name = object_key(obj)
            for cause in required_by(obj):
                requester = cause.split("/")[0]
                if requester == owner:
                    continue
                exported = world.visible(owner, requester)
                if kind == "Namespace":
                    assert name in {s["namespace"] for s in exported}, (path, obj, cause)
                else:
                    assert kind == "Service", (path, obj, cause)
                    assert (namespace, name) in {(s["namespace"], s["name"]) for s in exported}


def expected_scope(world: World, domain: str, requirement: Mapping[str, Any]) -> set[str]:
    spec = requirement["spec"]
    if "egress" not in spec and "ingress" not in spec:
        return set()  # restricts nothing: no policy at all
    annotation = requirement["metadata"].get("annotations", {}).get("meshplan.dev/clusters")
    scope = set(spec.get("clusters") or (annotation.split(",") if annotation else [])
                or world.clusters(domain))
    selected = spec["endpointSelector"]["matchLabels"].get("service")
    if selected is not None:
        scope &= set(world.service(domain, selected)["clusters"])
    return {f"{domain}/{c}" for c in scope}


def check_scopes(world: World, views: Mapping[str, Any]) -> None:
    for domain, docs in world.requirements.items():
        for doc in docs:
            name = doc["metadata"]["name"]
            where = {path for path, view in views.items()
                     if any(o["kind"] in POLICY_KINDS and o["metadata"]["name"] == name
                            for o in view.objects) and path.startswith(f"{domain}/")}
            assert where == expected_scope(world, domain, doc), (domain, name)


def check_removal(world: World, repo: Path, before: Mapping[str, Any], domain: str,
                  index: int) -> None:
    doc = world.requirements[domain][index]
    path = repo / "requirements" / domain / f"{doc['metadata']['name']}.yaml"
    removed = {required_by(o) for v in before.values() for o in v.objects
               if o["kind"] in POLICY_KINDS and o["metadata"]["name"] == doc["metadata"]["name"]
               and v.path.startswith(f"{domain}/")}
    path.unlink()
    after = cluster_views(render_files(repo)[0])
    for cluster, view in before.items():
        old, new = objects_by_key(view), objects_by_key(after[cluster])
        assert set(new) <= set(old), cluster
        for key, obj in old.items():
            causes = required_by(obj)
            gone = {c for group in removed for c in group}
            if causes <= gone:
                assert key not in new, (cluster, key)
            else:
                assert required_by(new[key]) == causes - gone, (cluster, key)


@settings(max_examples=examples(25), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(world=inventories(), data=st.data())
def test_random_valid_inputs_render_build_and_validate(world: World, data: st.DataObject) -> None:
    require_kubectl()
    with tempfile.TemporaryDirectory() as tmp:
        repo = write_repo(Path(tmp) / "repo", world.domains, world.requirements)
        inventory, diagnostics = validate(repo)
        errors = [d.format_text() for d in diagnostics if d.severity is Severity.ERROR]
        assert errors == [], "the strategy drew an invalid repository"
        assert inventory is not None

        files, _ = render_files(repo)
        assert render_files(repo)[0] == files  # deterministic
        views = cluster_views(files)
        assert set(views) == {f"{d['metadata']['name']}/{c['name']}"
                              for d in world.domains for c in d["spec"]["clusters"]}
        assert all_anomalies(views) == []
        objects = [o for v in views.values() for o in v.objects]
        assert [e for o in objects for e in validate_object(dict(o))] == []
        check_consent(world, views)
        check_scopes(world, views)
        kinds = {s.kind for v in views.values() for s in v.services}
        event(f"services: {', '.join(sorted(kinds)) or 'none'}")
        event(f"policies: {min(sum(len(v.policies) for v in views.values()), 5)}+")

        out = Path(tmp) / "out"
        for path, content in files.items():
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            (out / path).write_bytes(content)
        with ThreadPoolExecutor(max_workers=4) as pool:
            built = dict(zip(views, pool.map(lambda p: kustomize_build(out / "clusters" / p),
                                             views), strict=True))
        for path, view in views.items():
            assert sorted(map(canonical, built[path])) == sorted(map(canonical, view.objects))

        with_requirements = [d for d, docs in world.requirements.items() if docs]
        if with_requirements:
            domain = data.draw(st.sampled_from(with_requirements))
            index = data.draw(st.integers(0, len(world.requirements[domain]) - 1))
            check_removal(world, repo, views, domain, index)


@settings(max_examples=examples(30), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(world=inventories(unique_services=False))
def test_verify_validates_as_validate_does(world: World) -> None:
    """``meshplan verify``'s validation (which rules refinement's errors out without building
    the objects when it can) gives validate's inventory, or refuses with its diagnostics."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = write_repo(Path(tmp) / "repo", world.domains, world.requirements)
        inventory, diagnostics = validate(repo)
        if inventory is None:
            with pytest.raises(InputError) as raised:
                checked_inventory(repo)
            assert raised.value.diagnostics == diagnostics
            event("refused")
        else:
            assert checked_inventory(repo) == inventory
            event("accepted")


CLASH_MESSAGES = ("expected one inventory service per global namespace/name",
                  "expected no Service ", "expected one definition of Service ")


def inventory_services_at(world: World, path: str) -> list[dict[str, Any]]:
    domain, cluster = path.split("/")
    spec = next(d for d in world.domains if d["metadata"]["name"] == domain)["spec"]
    return [s for s in spec["services"] if cluster in s["clusters"]]


@settings(max_examples=examples(30), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(world=inventories(unique_services=False))
def test_service_name_clashes_are_errors_never_wrong_output(world: World) -> None:
    """Domains reusing service names: render, or report the clash; never overwrite a Service."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = write_repo(Path(tmp) / "repo", world.domains, world.requirements)
        _, diagnostics = validate(repo)
        reported = [d for d in diagnostics if d.severity is Severity.ERROR]
        assert all(d.message.startswith(CLASH_MESSAGES) for d in reported), reported
        try:
            files, _ = render_files(repo)
        except InputError as exc:
            errors = [d for d in exc.diagnostics if d.severity is Severity.ERROR]
            assert errors and errors == reported  # validate reports what render refuses
            event("clash reported")
            return
        assert reported == []
        event("rendered")
        views = cluster_views(files)
        assert all_anomalies(views) == []
        for path, view in views.items():
            local = inventory_services_at(world, path)
            for service in view.services:
                # No generated Service may take the place of an inventory Service it is not.
                for own in local:
                    if (own["namespace"], own["name"]) != (service.namespace, service.name):
                        continue
                    assert service.kind == "global", (path, service)
                    assert service.selector == frozenset(own["selector"].items()), (path, service)
