"""meshplan.vocabulary: every label and annotation key is spelled there and nowhere else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import meshplan
from meshplan import vocabulary

PACKAGE = Path(meshplan.__file__).parent
KEYS = {name: value for name, value in vars(vocabulary).items()
        if name.isupper() and isinstance(value, str) and re.search(r"[./:]", value)}


def spelled_keys(source: str) -> list[tuple[int, str]]:
    """(line, key name) of every vocabulary key written in a string literal (not docstrings)."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        if id(node) in docstrings:
            continue
        for name, key in KEYS.items():
            if re.search(rf"{re.escape(key)}(?![\w./-])", node.value):
                found.append((node.lineno, name))
    return found


def test_no_module_spells_a_key_of_the_vocabulary() -> None:
    spelled = {f"{path.relative_to(PACKAGE)}:{line}": name
               for path in sorted(PACKAGE.rglob("*.py")) if path.name != "vocabulary.py"
               for line, name in spelled_keys(path.read_text(encoding="utf-8"))}
    assert spelled == {}, "use the names of meshplan.vocabulary"


def test_the_check_finds_a_spelled_key() -> None:
    planted = ('LABEL = "io.cilium.k8s.policy.cluster"\nOK = f"{LABEL}"\n'
               'X = "meshplan.dev/clusters"\n')
    assert spelled_keys(planted) == [(1, "CILIUM_CLUSTER_LABEL"), (3, "CLUSTERS_ANNOTATION")]


def test_each_key_has_one_name() -> None:
    values = list(KEYS.values())
    assert len(values) == len(set(values)), "two names for one key"
