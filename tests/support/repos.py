"""The repository under test and copies of its example: where things are, how to copy them."""

from __future__ import annotations

import shutil
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = TESTS_DIR.parent
THESIS_DIR = TESTS_DIR / "fixtures" / "thesis"
# The second bundled example: two clouds joined by Istio multi-primary (mesh, identity, monitoring).
ISTIO_EXAMPLE = REPO_ROOT / "examples" / "istio-multicloud"

# A requirement to add to the bundled example whose own objects all land in domain2/cl3
# (rebel-base and service3 run there only): the small change of the git-history tests.
REBEL_REQUIREMENT = """\
apiVersion: meshplan.dev/v1alpha1
kind: Requirement
metadata:
  name: rebel-base
spec:
  endpointSelector:
    matchLabels: {service: rebel-base}
  egress:
    - toEndpoints:
        - matchLabels: {service: service3}
"""


def copy_tree(source: Path, dest: Path) -> Path:
    """Copy ``source/inventory`` and ``source/requirements`` into ``dest``; return ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for top in ("inventory", "requirements"):
        if (source / top).is_dir():
            shutil.copytree(source / top, dest / top)
    return dest


def copy_example(dest: Path) -> Path:
    """The bundled example (repository root) copied into ``dest``."""
    return copy_tree(REPO_ROOT, dest)


def committed_rendered(root: Path) -> dict[str, bytes]:
    """The YAML files committed under ``root/rendered``, by their path inside it."""
    return {p.relative_to(root / "rendered").as_posix(): p.read_bytes()
            for p in (root / "rendered").rglob("*.yaml")}


def write_text(root: Path, relpath: str, text: str) -> Path:
    """Write ``text`` to ``root/relpath`` (folders created); the path."""
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


ISTIO_MESH = """\
apiVersion: meshplan.dev/v1alpha1
kind: Mesh
metadata: {name: mesh}
spec:
  cilium: {ca: {existingSecret: cilium-ca}}
  istio: {rootCA: {existingSecret: cacerts}}
"""


def as_istio_mesh(root: Path, *, networks: int = 1) -> Path:
    """Make the native inventory of the repository at ``root`` one mesh, in place: every
    cluster a ClusterMesh member and an Istio member with a trust domain of its own (on
    ``networks`` networks, taken in turn, each with a reserved east-west gateway address),
    every service with a service account of its name. Returns ``root``."""
    import yaml

    number = 0
    for path in sorted((root / "inventory").glob("*.yaml")):
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "Domain":
                continue
            for cluster in doc["spec"]["clusters"]:
                number += 1
                cluster.setdefault("meshId", 100 + number)
                cluster["clustermesh"] = {"address": f"198.18.0.{number}"}
                cluster["istio"] = {
                    "network": f"n{number % networks + 1}",
                    "trustDomain": f"{doc['metadata']['name']}-{cluster['name']}.example",
                    "eastWestGateway": {"address": f"198.51.100.{number}"}}
            for service in doc["spec"].get("services") or []:
                service["serviceAccount"] = service["name"]
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    write_text(root, "inventory/mesh.yaml", ISTIO_MESH)
    return root
