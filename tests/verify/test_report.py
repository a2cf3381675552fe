"""meshplan.verify.report: ``verify()`` over rendered repositories, end to end.

* hand-checked scenarios (the thesis' use cases, the bundled example, cross-namespace,
  cross-domain, CIDR, cluster subsets, wildcard peers, services in several clusters), each with
  the flows worked out by hand from the requirement text: ``decided()`` lists every flow a
  policy decides (at least one side restricted), DNS left out;
* property: random valid repositories, rendered, verify with no mismatch;
* the CLI (exit codes, text and JSON).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from meshplan.verify.report import VerifyReport, verify

from tests.support.ci import examples
from tests.support.cli import run_cli
from tests.support.flows import (
    allowed,
    decided,
    errors,
    rendered_files,
    verify_repo,
    warnings,
    write,
)
from tests.support.repos import REPO_ROOT, THESIS_DIR, copy_example
from tests.support.strategies import RepoSpec, repos

INVENTORY = {
    "inventory/d1.yaml": """
        apiVersion: meshplan.dev/v1alpha1
        kind: Domain
        metadata: {name: d1}
        spec:
          clusters:
            - {name: c1, meshName: m1}
            - {name: c2, meshName: m2}
          services:
            - name: api
              namespace: ns-a
              selector: {app: api}
              ports: [{port: 8080, protocol: TCP, name: http}]
              clusters: [c1, c2]
              exportTo: [d2]
            - name: db
              namespace: ns-b
              selector: {app: db}
              ports: [{port: 5432, protocol: TCP, name: pg}]
              clusters: [c2]
            - name: cache
              namespace: ns-a
              selector: {app: cache}
              ports: [{port: 6379, protocol: TCP, name: redis}]
              clusters: [c1]
    """,
    "inventory/d2.yaml": """
        apiVersion: meshplan.dev/v1alpha1
        kind: Domain
        metadata: {name: d2}
        spec:
          clusters:
            - {name: c1, meshName: m3}
          services:
            - name: web
              namespace: ns-a
              selector: {app: web}
              ports: [{port: 80, protocol: TCP, name: http}]
              clusters: [c1]
              exportTo: ["*"]
            - name: batch
              namespace: jobs
              selector: {app: batch}
              ports: [{port: 9000, protocol: UDP, name: q}]
              clusters: [c1]
    """,
}


def scenario(tmp_path: Path, requirements: dict[str, str]) -> VerifyReport:
    root = write(tmp_path / "repo", {**INVENTORY, **requirements})
    report = verify_repo(root)
    assert errors(report) == []
    return report


# --------------------------------------------------------------------------- the thesis


def test_example_flows_and_half_open_warnings() -> None:
    report = verify_repo(REPO_ROOT)
    assert errors(report) == []
    assert decided(report) == {
        # backend (both clusters) -> database, wherever it runs (cl2), on its port
        "domain1/backend@cl1 -> domain1/database@cl2 TCP/5432",
        "domain1/backend@cl2 -> domain1/database@cl2 TCP/5432",
        # use case 1: the cl3 client calls every domain1 service exported to domain2;
        # backend is not reachable: its own ingress admits frontend only (half-open)
        "domain2/cl3:default/name=client -> domain1/service1@cl1 TCP/80",
        "domain2/cl3:default/name=client -> domain1/service2@cl2 TCP/80",
        "domain2/cl3:default/name=client -> domain1/database@cl2 TCP/5432",
        # 5.3: frontend calls every domain1 service (their ports) and Google's /24
        "domain2/frontend@cl4 -> domain1/backend@cl1 TCP/80",
        "domain2/frontend@cl4 -> domain1/backend@cl2 TCP/80",
        "domain2/frontend@cl4 -> domain1/service1@cl1 TCP/80",
        "domain2/frontend@cl4 -> domain1/service2@cl2 TCP/80",
        "domain2/frontend@cl4 -> domain1/database@cl2 TCP/5432",
        "domain2/frontend@cl4 -> 108.177.16.0/24 any",
        # frontend admits domain1's services and cl3's services on its own port; backend's
        # egress does not allow frontend (half-open)
        "domain1/service1@cl1 -> domain2/frontend@cl4 TCP/8080",
        "domain1/service2@cl2 -> domain2/frontend@cl4 TCP/8080",
        "domain1/database@cl2 -> domain2/frontend@cl4 TCP/8080",
        "domain2/rebel-base@cl3 -> domain2/frontend@cl4 TCP/8080",
        "domain2/service3@cl3 -> domain2/frontend@cl4 TCP/8080",
    }
    half_open = warnings(report)
    assert len(half_open) == 2
    assert any("allow-domain1.yaml" in w and "backend.yaml" in w and "domain1/backend" in w
               for w in half_open)
    assert any("frontend.yaml" in w and "backend.yaml" in w and "egress of domain1/backend" in w
               for w in half_open)
    # service4 is in no requirement: unrestricted both ways, so its flows are open
    assert allowed(report, "domain2/service4@cl4", "domain1/service1@cl1") == "any"
    # every egress-restricted pod reaches its own kube-dns
    assert allowed(report, "domain2/frontend@cl4", "domain2/cl4:kube-system/kube-dns") == \
        "TCP/53 UDP/53"
    assert allowed(report, "domain2/frontend@cl4", "domain2/cl3:kube-system/kube-dns") is None


THESIS_FLOWS = {
    "refinement-5.3": {
        "domain2/frontend@cl4 -> domain1/backend@cl1 TCP/80",
        "domain2/frontend@cl4 -> domain1/backend@cl2 TCP/80",
        "domain2/frontend@cl4 -> domain1/database@cl2 TCP/80",
        "domain2/frontend@cl4 -> 108.177.16.0/24 any",
        "domain1/backend@cl1 -> domain2/frontend@cl4 TCP/80",
        "domain1/backend@cl2 -> domain2/frontend@cl4 TCP/80",
        "domain1/database@cl2 -> domain2/frontend@cl4 TCP/80",
        "domain2/rebel-base@cl3 -> domain2/frontend@cl4 TCP/80",
    },
    # the thesis form selects app: frontend (raw labels, not the service): ingress on any port
    "refinement-5.3-thesis-form": {
        "domain2/frontend@cl4 -> domain1/backend@cl1 TCP/80",
        "domain2/frontend@cl4 -> domain1/backend@cl2 TCP/80",
        "domain2/frontend@cl4 -> domain1/database@cl2 TCP/80",
        "domain2/frontend@cl4 -> 108.177.16.0/24 any",
        "domain1/backend@cl1 -> domain2/frontend@cl4 any",
        "domain1/backend@cl2 -> domain2/frontend@cl4 any",
        "domain1/database@cl2 -> domain2/frontend@cl4 any",
        "domain2/rebel-base@cl3 -> domain2/frontend@cl4 any",
    },
    "use-case-1": {
        "domain2/cl3:default/name=client -> domain1/service1@cl1 TCP/80",
        "domain2/cl3:default/name=client -> domain1/service2@cl2 TCP/80",
    },
    "use-case-1-c2-verbatim": {
        "domain2/cluster1:default/name=client -> domain1/service1@cluster1 TCP/80",
        "domain2/cluster1:default/name=client -> domain1/service2@cluster2 TCP/80",
    },
    # Code Box 6.4: clients of cluster1 call backend in both clusters; only cluster1's
    # services may call them (A24: not client-service of cluster2)
    "use-case-2a": {
        "domain1/client-service@cluster1 -> domain1/backend@cluster1 TCP/80",
        "domain1/client-service@cluster1 -> domain1/backend@cluster2 TCP/80",
        "domain1/backend@cluster1 -> domain1/client-service@cluster1 any",
        "domain1/database@cluster1 -> domain1/client-service@cluster1 any",
    },
    # 6.5 (cluster1: every cluster1 service) united with 6.6 (everywhere: backend)
    "use-case-2b": {
        "domain1/client-service@cluster1 -> domain1/backend@cluster1 TCP/80",
        "domain1/client-service@cluster1 -> domain1/database@cluster1 TCP/80",
        "domain1/client-service@cluster1 -> domain1/backend@cluster2 TCP/80",
        "domain1/client-service@cluster2 -> domain1/backend@cluster1 TCP/80",
        "domain1/client-service@cluster2 -> domain1/backend@cluster2 TCP/80",
    },
}


@pytest.mark.parametrize("fixture", sorted(THESIS_FLOWS))
def test_thesis_use_cases(fixture: str) -> None:
    report = verify_repo(THESIS_DIR / fixture)
    assert errors(report) == []
    assert decided(report) == THESIS_FLOWS[fixture]


def test_use_case_2a_refuses_cluster2_clients() -> None:
    report = verify_repo(THESIS_DIR / "use-case-2a")
    assert allowed(report, "domain1/client-service@cluster2",
                   "domain1/client-service@cluster1") is None
    assert allowed(report, "domain1/client-service@cluster1",
                   "domain1/database@cluster1") is None  # egress: backend only


# --------------------------------------------------------------------------- scenarios


def test_cross_namespace_raw_client(tmp_path: Path) -> None:
    report = scenario(tmp_path, {"requirements/d1/ui.yaml": """
        apiVersion: meshplan.dev/v1alpha1
        kind: Requirement
        metadata: {name: ui, namespace: ns-ui}
        spec:
          endpointSelector: {matchLabels: {role: ui}}
          egress:
            - toEndpoints: [{matchLabels: {service: db}}]
            - toEndpoints: [{matchLabels: {role: helper}}]
    """})
    assert decided(report) == {
        # the raw client exists in both clusters of d1 (no spec.clusters); db runs in c2 only
        "d1/c1:ns-ui/role=ui -> d1/db@c2 TCP/5432",
        "d1/c2:ns-ui/role=ui -> d1/db@c2 TCP/5432",
        # a raw peer means pods of the requirement's namespace and its own cluster
        "d1/c1:ns-ui/role=ui -> d1/c1:ns-ui/role=helper any",
        "d1/c2:ns-ui/role=ui -> d1/c2:ns-ui/role=helper any",
    }
    assert allowed(report, "d1/c1:ns-ui/role=ui", "d1/api@c1") is None


def test_cross_domain_consent_and_ports(tmp_path: Path) -> None:
    report = scenario(tmp_path, {
        "requirements/d2/web.yaml": """
            apiVersion: meshplan.dev/v1alpha1
            kind: Requirement
            metadata: {name: web}
            spec:
              endpointSelector: {matchLabels: {service: web}}
              egress:
                - toEndpoints: [{matchLabels: {service: "*", domain: d1}}]
        """,
        "requirements/d1/api.yaml": """
            apiVersion: meshplan.dev/v1alpha1
            kind: Requirement
            metadata: {name: api}
            spec:
              endpointSelector: {matchLabels: {service: api}}
              ingress:
                - fromEndpoints: [{matchLabels: {service: web, domain: d2}}]
        """,
    })
    # "*" of d1 means what d1 exported to d2: api only, not db or cache
    assert decided(report) == {
        "d2/web@c1 -> d1/api@c1 TCP/8080",
        "d2/web@c1 -> d1/api@c2 TCP/8080",
    }
    assert warnings(report) == []
    assert allowed(report, "d1/cache@c1", "d1/api@c1") is None  # api admits web only


def test_half_open_across_domains(tmp_path: Path) -> None:
    report = scenario(tmp_path, {
        "requirements/d2/web.yaml": """
            apiVersion: meshplan.dev/v1alpha1
            kind: Requirement
            metadata: {name: web}
            spec:
              endpointSelector: {matchLabels: {service: web}}
              egress:
                - toEndpoints: [{matchLabels: {service: api, domain: d1, cluster: c2}}]
        """,
        "requirements/d1/api.yaml": """
            apiVersion: meshplan.dev/v1alpha1
            kind: Requirement
            metadata: {name: api}
            spec:
              endpointSelector: {matchLabels: {service: api}}
              ingress:
                - fromEndpoints: [{matchLabels: {service: cache}}]
        """,
    })
    [message] = warnings(report)
    assert "requirements/d2/web.yaml:" in message and "requirements/d1/api.yaml:" in message
    assert "d2/web" in message and "d1/api" in message and "TCP/8080" in message
    assert "c1->c2" in message
    assert allowed(report, "d2/web@c1", "d1/api@c2") is None
    assert allowed(report, "d1/cache@c1", "d1/api@c1") == "TCP/8080"


def test_cidr_with_except_and_ports(tmp_path: Path) -> None:
    report = scenario(tmp_path, {"requirements/d1/api.yaml": """
        apiVersion: meshplan.dev/v1alpha1
        kind: Requirement
        metadata: {name: api}
        spec:
          endpointSelector: {matchLabels: {service: api}}
          egress:
            - toCIDRSet: [{cidr: 10.20.0.0/16, except: [10.20.5.0/24]}]
              toPorts: [{ports: [{port: "443", protocol: TCP}]}]
          ingress:
            - fromCIDRSet: [{cidr: 192.0.2.0/24}]
    """})
    assert decided(report) == {
        # ingress from the /24 into a service: the service's ports, like any other peer;
        # egress: the /16 as a whole is not allowed (its except block is not), so no CIDR
        # endpoint is reachable
        "192.0.2.0/24 -> d1/api@c1 TCP/8080",
        "192.0.2.0/24 -> d1/api@c2 TCP/8080",
    }
    assert allowed(report, "d1/api@c1", "10.20.5.0/24") is None
    assert allowed(report, "d1/api@c1", "10.20.0.0/16") is None


def test_cidr_block_inside_an_allowed_cidr(tmp_path: Path) -> None:
    report = scenario(tmp_path, {
        "requirements/d1/api.yaml": """
            apiVersion: meshplan.dev/v1alpha1
            kind: Requirement
            metadata: {name: api}
            spec:
              endpointSelector: {matchLabels: {service: api}}
              egress:
                - toCIDRSet: [{cidr: 10.20.0.0/16, except: [10.20.5.0/24]}]
                  toPorts: [{ports: [{port: "443", protocol: TCP}]}]
        """,
        "requirements/d1/cache.yaml": """
            apiVersion: meshplan.dev/v1alpha1
            kind: Requirement
            metadata: {name: cache}
            spec:
              endpointSelector: {matchLabels: {service: cache}}
              egress:
                - toCIDRSet: [{cidr: 10.20.7.0/24}]
        """,
    })
    assert decided(report) == {
        "d1/api@c1 -> 10.20.7.0/24 TCP/443",
        "d1/api@c2 -> 10.20.7.0/24 TCP/443",
        "d1/cache@c1 -> 10.20.7.0/24 any",
    }


def test_cluster_subset_and_services_in_several_clusters(tmp_path: Path) -> None:
    report = scenario(tmp_path, {"requirements/d1/api.yaml": """
        apiVersion: meshplan.dev/v1alpha1
        kind: Requirement
        metadata: {name: api}
        spec:
          clusters: [c2]
          endpointSelector: {matchLabels: {service: api}}
          ingress:
            - fromEndpoints: [{matchLabels: {role: probe}}]
    """})
    # only api@c2 is restricted; the raw probe is a pod of c2 (the requirement's scope)
    assert decided(report) == {"d1/c2:ns-a/role=probe -> d1/api@c2 TCP/8080"}
    assert allowed(report, "d1/cache@c1", "d1/api@c1") == "any"
    assert allowed(report, "d1/cache@c1", "d1/api@c2") is None


def test_wildcard_cluster_and_domain_peers(tmp_path: Path) -> None:
    report = scenario(tmp_path, {
        "requirements/d1/cache.yaml": """
            apiVersion: meshplan.dev/v1alpha1
            kind: Requirement
            metadata: {name: cache}
            spec:
              endpointSelector: {matchLabels: {service: cache}}
              egress:
                - toEndpoints: [{matchLabels: {cluster: c2}}]
                - toEndpoints: [{matchLabels: {service: "*", cluster: "*", domain: d2}}]
        """,
    })
    assert decided(report) == {
        # every own service of c2: api and db, each on its ports
        "d1/cache@c1 -> d1/api@c2 TCP/8080",
        "d1/cache@c1 -> d1/db@c2 TCP/5432",
        # every service d2 exported to d1: web (batch is not exported)
        "d1/cache@c1 -> d2/web@c1 TCP/80",
    }


def test_explicit_ports_and_protocols(tmp_path: Path) -> None:
    report = scenario(tmp_path, {"requirements/d2/batch.yaml": """
        apiVersion: meshplan.dev/v1alpha1
        kind: Requirement
        metadata: {name: batch}
        spec:
          endpointSelector: {matchLabels: {service: batch}}
          egress:
            - toEndpoints: [{matchLabels: {service: web}}]
              toPorts: [{ports: [{port: "80", protocol: TCP}, {port: "8443"}]}]
          ingress:
            - fromEndpoints: [{matchLabels: {service: web}}]
    """})
    assert decided(report) == {
        "d2/batch@c1 -> d2/web@c1 TCP/80,8443 UDP/8443 SCTP/8443",
        "d2/web@c1 -> d2/batch@c1 UDP/9000",  # ingress to a service: its own ports
    }


def test_cluster_wide_requirements(tmp_path: Path) -> None:
    report = scenario(tmp_path, {
        "requirements/d2/lockdown.yaml": """
            apiVersion: meshplan.dev/v1alpha1
            kind: Requirement
            metadata: {name: lockdown, namespace: "*"}
            spec:
              endpointSelector: {matchLabels: {tier: edge}}
              egress:
                - toEndpoints: [{matchLabels: {service: batch}}]
        """,
    })
    assert decided(report) == {"d2/c1:default/tier=edge -> d2/batch@c1 UDP/9000"}


# --------------------------------------------------------------------------- the generator's gap


EMPTY_INGRESS = {"requirements/d1/db.yaml": """
    apiVersion: meshplan.dev/v1alpha1
    kind: Requirement
    metadata: {name: db}
    spec:
      endpointSelector: {matchLabels: {service: db}}
      ingress: []
"""}


def test_empty_ingress_stays_closed(tmp_path: Path) -> None:
    """``ingress: []`` means deny all ingress: the generator must keep a rule section."""
    root = write(tmp_path / "repo", {**INVENTORY, **EMPTY_INGRESS})
    report = verify_repo(root)
    assert errors(report) == []
    assert allowed(report, "d1/api@c2", "d1/db@c2") is None


def test_verify_reports_ingress_that_falls_open(tmp_path: Path) -> None:
    """``enableDefaultDeny.ingress: true`` without an ingress rule does not enforce ingress."""
    inventory, files = rendered_files(write(tmp_path / "repo", {**INVENTORY, **EMPTY_INGRESS}))
    path = "clusters/d1/c2/policies.yaml"
    docs = list(yaml.safe_load_all(files[path]))
    assert docs[0]["spec"]["ingress"] == [{}]
    del docs[0]["spec"]["ingress"]
    report = verify(inventory, {**files, path: yaml.safe_dump_all(docs).encode()})
    problems = errors(report)
    assert problems, "verify must see that db's ingress is open"
    # With no section left, Cilium rejects the object whole: it enforces nothing.
    [rejected] = [p for p in problems if not p.startswith("requirements/d1/db.yaml:")]
    assert rejected.startswith(f"rendered/{path}:")
    assert "Cilium rejects this whole policy (a rule needs at least one of ingress" in rejected
    assert "d1/db@c2 stay unrestricted by it" in rejected
    assert any("expected d1/api@c1 -> d1/db@c2 to be blocked" in p for p in problems)
    # With another section, the policy is valid, and its ingress open.
    docs[0]["spec"]["egressDeny"] = [{"toCIDR": ["192.0.2.1/32"]}]
    report = verify(inventory, {**files, path: yaml.safe_dump_all(docs).encode()})
    assert any("expected d1/api@c1 -> d1/db@c2 to be blocked" in p for p in errors(report))
    assert any("enableDefaultDeny.ingress is true but there are no ingress rules" in w
               for w in warnings(report))


# --------------------------------------------------------------------------- property


@pytest.mark.slow
@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(repos())
def test_random_repositories_verify_clean(spec: RepoSpec) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = spec.write(Path(tmp) / "repo")
        report = verify_repo(root)
    assert errors(report) == [], spec.files()
    assert report.mismatches == ()


# --------------------------------------------------------------------------- CLI


def test_cli_verify_ok_text_and_json(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "repo")
    assert run_cli(["render", "--repo", str(root)])[0] == 0
    code, out, err = run_cli(["verify", "--repo", str(root)])
    assert code == 0, err
    assert out.startswith("verified: the rendered output allows what the requirements intend")
    assert "half-open intent" in err
    code, out, _ = run_cli(["verify", "--repo", str(root), "--format", "json"])
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["counts"]["warning"] == 2


def test_cli_verify_mismatch_exits_1_and_names_the_requirement(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "repo")
    assert run_cli(["render", "--repo", str(root)])[0] == 0
    policies = root / "rendered/clusters/domain2/cl3/policies.yaml"
    text = policies.read_text()
    policies.write_text(text.replace("name: service2\n", "name: service2x\n", 1))
    code, _, err = run_cli(["verify", "--repo", str(root)])
    assert code == 1
    assert "requirements/domain2/allow-domain1.yaml:" in err
    assert "expected domain2/cl3:default/name=client -> domain1/service2@cl2 to be allowed " \
           "on TCP/80" in err
    assert "verify failed" in err


def test_cli_verify_stale_output_and_missing_output(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "repo")
    code, _, err = run_cli(["verify", "--repo", str(root)])
    assert code == 1 and "run `meshplan render`" in err
    assert run_cli(["render", "--repo", str(root)])[0] == 0
    (root / "requirements/domain2/frontend.yaml").unlink()
    code, _, err = run_cli(["verify", "--repo", str(root)])
    assert code == 1
    # nothing intends frontend's restriction any more: the blocking policy is named
    assert "rendered/clusters/domain2/cl4/policies.yaml:" in err
    assert "(no requirement restricts it), found it blocked at the egress of " \
           "domain2/frontend@cl4" in err
    (root / "requirements/domain2/allow-domain1.yaml").unlink()
    code, _, err = run_cli(["verify", "--repo", str(root)])
    assert "selects no pod of the inventory" in err  # the client of allow-domain1 is gone
    code, _, err = run_cli(["verify", "--repo", str(root), "--rendered", str(tmp_path / "no")])
    assert code == 1 and "expected the rendered directory of cluster domain1/cl1" in err
