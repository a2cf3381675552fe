"""meshplan.verify.compare: deleting or altering any one rendered rule of the example is
reported as a mismatch."""

from __future__ import annotations

import copy
import functools
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from meshplan.model import Inventory
from meshplan.verify.report import verify

from tests.support.flows import Files, errors, rendered_files
from tests.support.repos import copy_example

Mutation = tuple[str, Callable[[dict[str, Any]], None]]


def _policy_docs(files: Files) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for path in sorted(files):
        if path.endswith("/policies.yaml"):
            for index, doc in enumerate(yaml.safe_load_all(files[path])):
                if isinstance(doc, dict):
                    yield path, index, doc


def _mutations(files: Files) -> Iterator[tuple[str, str, int, Callable[[dict[str, Any]], None]]]:
    """(id, file, document index, change) for every single-rule deletion and alteration."""
    for path, index, doc in _policy_docs(files):
        name = f"{path.split('/')[2]}/{doc['metadata']['name']}"

        def drop_policy(d: dict[str, Any]) -> None:
            d.clear()

        yield f"{name}:delete-policy", path, index, drop_policy
        for direction in ("egress", "ingress"):
            for r, rule in enumerate(doc["spec"].get(direction) or []):

                def delete(d: dict[str, Any], direction: str = direction, r: int = r) -> None:
                    del d["spec"][direction][r]

                yield f"{name}:{direction}[{r}]:delete", path, index, delete
                for p, _ in enumerate((rule.get("toPorts") or [{}])[0].get("ports") or []):

                    def port(d: dict[str, Any], direction: str = direction, r: int = r,
                             p: int = p) -> None:
                        entry = d["spec"][direction][r]["toPorts"][0]["ports"][p]
                        entry["port"] = str(int(entry["port"]) + 1)

                    yield f"{name}:{direction}[{r}]:port[{p}]+1", path, index, port
                for s, peer in enumerate(rule.get("toEndpoints") or rule.get("fromEndpoints")
                                         or []):
                    key = "toEndpoints" if "toEndpoints" in rule else "fromEndpoints"
                    if "io.cilium.k8s.policy.cluster" in peer.get("matchLabels", {}):

                        def cluster(d: dict[str, Any], direction: str = direction, r: int = r,
                                    s: int = s, key: str = key) -> None:
                            labels = d["spec"][direction][r][key][s]["matchLabels"]
                            labels["io.cilium.k8s.policy.cluster"] += "x"

                        yield f"{name}:{direction}[{r}]:cluster", path, index, cluster
                    if "k8s:io.kubernetes.pod.namespace" in peer.get("matchLabels", {}):

                        def namespace(d: dict[str, Any], direction: str = direction,
                                      r: int = r, s: int = s, key: str = key) -> None:
                            labels = d["spec"][direction][r][key][s]["matchLabels"]
                            labels["k8s:io.kubernetes.pod.namespace"] += "x"

                        yield f"{name}:{direction}[{r}]:namespace", path, index, namespace
            if doc["spec"].get(direction):

                def no_default_deny(d: dict[str, Any], direction: str = direction) -> None:
                    d["spec"]["enableDefaultDeny"][direction] = False

                yield f"{name}:{direction}:default-deny-off", path, index, no_default_deny


@functools.cache
def example_render() -> tuple[Inventory, Files]:
    with tempfile.TemporaryDirectory() as tmp:
        return rendered_files(copy_example(Path(tmp) / "repo"))


@functools.cache
def example_mutations() -> dict[str, tuple[str, int, Callable[[dict[str, Any]], None]]]:
    _, files = example_render()
    return {m[0]: m[1:] for m in _mutations(files)}


def test_example_render_verifies_clean() -> None:
    inventory, files = example_render()
    assert errors(verify(inventory, files)) == []


@pytest.mark.parametrize("mutation", sorted(example_mutations()))
def test_any_rendered_rule_change_is_reported(mutation: str) -> None:
    inventory, files = example_render()
    path, index, change = example_mutations()[mutation]
    docs = list(yaml.safe_load_all(files[path]))
    changed = copy.deepcopy(docs[index])
    change(changed)
    docs[index] = changed or None
    mutated = {**files, path: yaml.safe_dump_all(docs, sort_keys=False).encode()}
    report = verify(inventory, mutated)
    assert errors(report), f"verify did not notice {mutation}"


def test_mutations_cover_every_rule() -> None:
    _, files = example_render()
    ids = list(example_mutations())
    rules = sum(len(doc["spec"].get(d) or []) for _, _, doc in _policy_docs(files)
                for d in ("egress", "ingress"))
    assert sum(i.endswith(":delete") for i in ids) == rules > 10
    assert any(i.endswith(":cluster") for i in ids) and any(i.endswith("+1") for i in ids)
    assert any(i.endswith(":namespace") for i in ids)
