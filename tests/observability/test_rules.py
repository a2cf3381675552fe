"""meshplan.observability.rules, proven with the real promtool (Debian's ``prometheus``).

* every rule group of every rendered PrometheusRule passes ``promtool check rules`` (strict
  YAML, PromQL, templates, duplicate-rules lint as an error);
* ``promtool test rules``, with unit tests generated from the rendered rules
  (:mod:`tests.support.alert_scenarios`): each alert fires in its situation (plaintext into a
  STRICT namespace or between clusters, a certificate 5 hours from expiry, policy drops on a
  protected workload, a disconnected or missing peer, a failing federation) with exactly the
  expected labels and annotations, and stays silent in the healthy one;
* a broken expression makes those tests fail;
* the label values are the mesh plan's: ``cluster`` is Istio's clusterName from the rendered
  istiod values, ``target_cluster`` a peer of the rendered cilium values, and the STRICT
  namespaces are those of the STRICT PeerAuthentications the identity layer renders
  (:func:`~meshplan.mesh.identity.strict_namespaces`).

The fixture repositories: STRICT per namespace with Hubble, STRICT mesh-wide
(``strictMTLS: mesh``) with the agent's drop metric only, and the Istio example.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from meshplan.mesh.identity import strict_namespaces
from meshplan.pipeline import validated
from meshplan.vocabulary import ISTIO_ROOT_NAMESPACE, REQUIRED_BY_ANNOTATION

from tests.support.alert_scenarios import SITUATIONS, UnknownAlert, unit_tests
from tests.support.observability_fixture import observed_repo
from tests.support.promtool import (
    check_rules,
    prometheus_rules,
    run_rule_tests,
    write_rule_file,
)
from tests.support.rendered import documents, render_files
from tests.support.repos import ISTIO_EXAMPLE, committed_rendered

EXAMPLE = ISTIO_EXAMPLE
EVERY_ALERT = {*SITUATIONS, "MeshplanIstioCACertificateExpiresSoon"}



@pytest.fixture(scope="module", params=["hubble", "agent", "example"])
def repo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if request.param == "example":
        return EXAMPLE
    hubble = request.param == "hubble"
    return observed_repo(hubble=hubble, mesh_wide_strict=not hubble).write(
        tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def files(repo: Path) -> dict[str, bytes]:
    return render_files(repo)


@pytest.fixture(scope="module")
def rules(files: dict[str, bytes]) -> dict[str, list[dict[str, Any]]]:
    return prometheus_rules(files)


def specs(rules: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{root}/{doc['metadata']['name']}", doc["spec"])
            for root, docs in sorted(rules.items()) for doc in docs]


def alerts_of(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in spec["groups"] for r in g["rules"] if "alert" in r]


def run_unit_tests(spec: dict[str, Any], tests_from: dict[str, Any], where: Path,
                   only: str = "") -> tuple[int, str, list[str]]:
    """promtool test rules: tests generated from ``tests_from`` (those of alert ``only``,
    if given) run against ``spec``."""
    where.mkdir(parents=True, exist_ok=True)
    write_rule_file(spec, where / "rules.yaml")
    document, names = unit_tests(tests_from, "rules.yaml")
    if only:
        document["tests"] = [t for t in document["tests"] if t["name"].startswith(f"{only}:")]
    (where / "tests.yaml").write_text(yaml.safe_dump(document, sort_keys=False), "utf-8")
    proc = run_rule_tests(where / "tests.yaml")
    return proc.returncode, proc.stdout + proc.stderr, names


# --------------------------------------------------------------------------- promtool


def test_every_rule_group_passes_promtool_check(rules: dict[str, list[dict[str, Any]]],
                                                tmp_path: Path) -> None:
    files = [write_rule_file(spec, tmp_path / f"{i}.yaml")
             for i, (_, spec) in enumerate(specs(rules))]
    assert files
    proc = check_rules(files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(files)


def test_promtool_check_catches_a_broken_rule(rules: dict[str, list[dict[str, Any]]],
                                              tmp_path: Path) -> None:
    _, spec = specs(rules)[0]
    broken = copy.deepcopy(spec)
    broken["groups"][0]["rules"][0]["expr"] += " +"  # a PromQL syntax error
    duplicated = copy.deepcopy(spec)
    duplicated["groups"][0]["rules"].append(duplicated["groups"][0]["rules"][0])
    for name, bad in (("syntax", broken), ("duplicate", duplicated)):
        proc = check_rules([write_rule_file(bad, tmp_path / f"{name}.yaml")])
        assert proc.returncode != 0, name


def test_every_alert_fires_in_its_situation_and_stays_silent_when_healthy(
        rules: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    total = 0
    for i, (where, spec) in enumerate(specs(rules)):
        code, output, names = run_unit_tests(spec, spec, tmp_path / str(i))
        assert code == 0, f"{where}:\n{output}"
        assert "SUCCESS" in output
        # every alert got a situation where it fires and one where it is silent
        assert {n.split(":")[0] for n in names} == {a["alert"] for a in alerts_of(spec)}
        total += len(names)
    assert total >= 10


def test_every_alert_meshplan_renders_is_tested(tmp_path_factory: pytest.TempPathFactory
                                                ) -> None:
    seen: set[str] = set()
    for hubble in (True, False):
        root = observed_repo(hubble=hubble).write(tmp_path_factory.mktemp("all"))
        for _, spec in specs(prometheus_rules(render_files(root))):
            seen.update(a["alert"] for a in alerts_of(spec))
    assert seen == EVERY_ALERT


def test_an_alert_without_a_situation_is_an_error(rules: dict[str, list[dict[str, Any]]]
                                                  ) -> None:
    _, spec = specs(rules)[0]
    spec = copy.deepcopy(spec)
    spec["groups"][0]["rules"].append({"alert": "MeshplanSomethingNew", "expr": "vector(1)"})
    with pytest.raises(UnknownAlert):
        unit_tests(spec, "rules.yaml")


# Each a real mistake in one rule: the generated tests must catch it.
BROKEN = [
    ("MeshplanPlaintextIntoStrictNamespace", 'connection_security_policy="none"',
     'connection_security_policy="mutual_tls"'),
    ("MeshplanPlaintextIntoStrictNamespace", "destination_workload_namespace!~",
     "destination_workload_namespace=~"),  # the mesh-wide one: into the others' namespaces
    ("MeshplanPlaintextBetweenClusters", "> 0 or", "> 10 or"),
    ("MeshplanWorkloadCertificateExpiresSoon", " < ", " > "),
    ("MeshplanIstioCACertificateExpiresSoon", " < ", " > "),
    ("MeshplanClusterMeshPeerNotReady", "< 1", "< 0"),
    ("MeshplanClusterMeshPeerMissing", " unless ", " and "),
    ("MeshplanClusterMeshPeerNotReady", "group_left", "group_right"),
    ("MeshplanPolicyDropsForRequirement", "> ", "< "),
    ("meshplan:hubble_policy_drops:rate5m", "POLICY_DENIED", "Policy denied"),
    ("MeshplanFederationDown", "== 0", "== 1"),
]


@pytest.fixture(scope="module")
def hubble_rules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    root = observed_repo(hubble=True, mesh_wide_strict=True).write(
        tmp_path_factory.mktemp("hubble"))
    return prometheus_rules(render_files(root))


@pytest.mark.parametrize(("name", "old", "new"), BROKEN, ids=[b[0] + ":" + b[2] for b in BROKEN])
def test_a_broken_expression_fails_the_generated_tests(
        name: str, old: str, new: str, hubble_rules: dict[str, list[dict[str, Any]]],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    found = 0
    for i, (_, spec) in enumerate(specs(hubble_rules)):
        broken = copy.deepcopy(spec)
        changed = 0
        for group in broken["groups"]:
            for rule in group["rules"]:
                if name in (rule.get("alert"), rule.get("record")) and old in rule["expr"]:
                    rule["expr"] = rule["expr"].replace(old, new)
                    changed += 1
        if not changed:
            continue
        found += 1
        only = "" if name.startswith("meshplan:") else name  # a recording rule: every test
        code, output, _ = run_unit_tests(broken, spec, tmp_path_factory.mktemp(f"b{i}"), only)
        assert code != 0, f"promtool passed a broken {name}"
        assert "FAILED" in output
    assert found, f"no rule {name} contains {old!r}"


# --------------------------------------------------------------------------- content


def test_alerts_name_domain_cluster_and_requirement(rules: dict[str, list[dict[str, Any]]]
                                                    ) -> None:
    for where, spec in specs(rules):
        for alert in alerts_of(spec):
            labels, annotations = alert["labels"], alert["annotations"]
            assert labels["severity"] in ("critical", "warning"), alert["alert"]
            assert alert["for"], alert["alert"]
            assert {"summary", "description", "meshplan_domain",
                    "meshplan_cluster"} <= set(annotations), alert["alert"]
            assert annotations["meshplan_cluster"] == labels["meshplan_cluster"]
            assert annotations["meshplan_cluster"] in annotations["description"] or (
                annotations["meshplan_cluster"] in annotations["summary"])
            if alert["alert"] != "MeshplanPlaintextIntoStrictNamespace":
                continue
            if "destination_workload_namespace" in labels:
                assert annotations["meshplan_requirement"].startswith("requirements/"), where
            else:  # mesh-wide: the Mesh document is the cause
                assert "strictMTLS: mesh at inventory/mesh.yaml:" in annotations["description"]


def test_the_istio_example_names_its_requirement_files() -> None:
    rules = prometheus_rules(render_files(EXAMPLE))
    aks = {a["alert"]: a for _, s in specs({k: v for k, v in rules.items() if k.endswith("aks")})
           for a in alerts_of(s)}
    pair = aks["MeshplanPlaintextBetweenClusters"]
    assert pair["labels"]["source_cluster"] == "cluster2"
    assert pair["labels"]["meshplan_requirement"] == "requirements/boutique/checkoutservice.yaml"
    strict = aks["MeshplanPlaintextIntoStrictNamespace"]
    assert strict["labels"]["destination_workload_namespace"] == "online-boutique"
    assert "requirements/boutique/frontend.yaml" in strict["annotations"]["meshplan_requirement"]
    assert "boutique/online-boutique/adservice (requirements/boutique/adservice.yaml:" in (
        strict["annotations"]["description"])  # the first few, then "and 6 more"
    assert "and 6 more" in strict["annotations"]["description"]


def test_label_values_are_the_mesh_plans(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``cluster``/``source_cluster`` values are Istio's clusterName as the rendered istiod
    values set it; ``target_cluster`` values are the peers in the rendered cilium values."""
    root = observed_repo().write(tmp_path_factory.mktemp("labels"))
    files = render_files(root)
    for where, docs in prometheus_rules(files).items():
        domain, cluster = where.split("/")[1:3]
        mesh_dir = f"mesh/{domain}/{cluster}"
        own = [d for d in docs if not d["metadata"]["name"].endswith("-federation")]
        rules = [r for d in own for g in d["spec"]["groups"] for r in g["rules"]]
        names = {r["labels"]["cluster"] for r in rules if "cluster" in r.get("labels", {})}
        istiod = files.get(f"{mesh_dir}/istiod-values.yaml")
        cilium = files.get(f"{mesh_dir}/cilium-values.yaml")
        if istiod is not None:
            values = yaml.safe_load(istiod)
            assert names == {values["global"]["multiCluster"]["clusterName"]}
        if cilium is not None:
            values = yaml.safe_load(cilium)
            peers = set(values["clustermesh"]["config"]["clusters"])
            targets = {r["labels"]["target_cluster"] for r in rules
                       if "target_cluster" in r.get("labels", {})}
            assert targets == peers, where


def test_strict_alerts_are_the_rendered_peer_authentications(
        repo: Path, files: dict[str, bytes], rules: dict[str, list[dict[str, Any]]]) -> None:
    """One plaintext alert per STRICT PeerAuthentication the identity layer renders: same
    cluster, same namespace, the same requirements in its annotation, and no other alert.
    The root namespace's (``strictMTLS: mesh``) names no namespace: it watches every
    namespace without an alert of its own. Both are ``strict_namespaces``'s."""
    inventory, _ = validated(repo)
    assert inventory is not None
    file_of = {r.key: r.file for r in inventory.requirements}
    expected: dict[tuple[str, str], str] = {}
    for path, content in files.items():
        if not path.endswith("/istio-security.yaml"):
            continue
        for doc in documents(content):
            if doc["kind"] == "PeerAuthentication" and doc["spec"]["mtls"]["mode"] == "STRICT":
                causes = doc["metadata"]["annotations"][REQUIRED_BY_ANNOTATION].split(",")
                requirement_files = sorted({file_of[c] for c in causes if c in file_of})
                expected[(path.rsplit("/", 1)[0], doc["metadata"]["namespace"])] = ",".join(
                    requirement_files)
    found = {(where, a["labels"].get("destination_workload_namespace", ISTIO_ROOT_NAMESPACE)):
             a["annotations"].get("meshplan_requirement", "")
             for where, docs in rules.items() for d in docs for a in alerts_of(d["spec"])
             if a["alert"] == "MeshplanPlaintextIntoStrictNamespace"}
    assert found == expected and expected
    assert set(expected) == {(f"clusters/{ref.domain}/{ref.name}", ns)
                             for ref, namespaces in strict_namespaces(inventory).items()
                             for ns in namespaces}


def test_an_alert_reads_only_its_own_clusters_series(tmp_path: Path) -> None:
    """The central Prometheus (boutique/aks in the example) also holds the recording rules'
    series it federates from the members, with their own ``cluster``: its alerts must not
    fire on them (under the central cluster's labels)."""
    files = committed_rendered(EXAMPLE)
    spec = {"groups": [g for doc in prometheus_rules(files)["clusters/boutique/aks"]
                       for g in doc["spec"]["groups"]]}
    write_rule_file(spec, tmp_path / "rules.yaml")
    federated = 'cluster="cluster2", meshplan_domain="boutique", meshplan_cluster="boutique/gcp"'
    watched = ["MeshplanWorkloadCertificateExpiresSoon", "MeshplanIstioCACertificateExpiresSoon",
               "MeshplanPlaintextIntoStrictNamespace"]
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": f'meshplan:istio_agent_cert_expiry:hours{{{federated}, namespace="x"}}',
             "values": "1x60"},
            {"series": f'meshplan:istiod_cert_expiry:hours{{{federated}, certificate="root"}}',
             "values": "1x60"},
            {"series": ("meshplan:istio_requests:rate5m{" + federated + ', source_cluster='
                        '"cluster1", destination_cluster="cluster2", '
                        'destination_workload_namespace="online-boutique", '
                        'connection_security_policy="none"}'),
             "values": "1x60"}],
        "alert_rule_test": [{"eval_time": "50m", "alertname": name, "exp_alerts": []}
                            for name in watched]}]}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False), "utf-8")
    proc = run_rule_tests(tmp_path / "tests.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
