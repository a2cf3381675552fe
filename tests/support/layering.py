"""The import-layer checker: every import inside a package goes to a lower layer.

Layers are declared bottom-up as tuples of module names. At the top level a subpackage counts
as one unit (``verify``); inside a subpackage its own order applies (``__init__`` is the
package module itself). A module of a subpackage may also be declared on its own at the top
level (``mesh.model``, which ``model`` builds on while the rest of ``mesh`` builds on
``refine``): it is then a unit of its own, outside its package's inner order.

A module may import only modules of strictly lower layers: never a module of its own layer,
never one above. Every import counts, also one inside a function or under ``TYPE_CHECKING``:
a lazy or type-only import is still a dependency. The checker reads the source with
:mod:`ast`; it imports nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

Layers = Sequence[Sequence[str]]  # bottom-up; each layer a group of module names


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name, e.g. "meshplan.verify.cilium"
    imported: str
    line: int


def modules_of(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of the package folder ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((package, *parts))] = path
    return found


def imports_of(modules: Mapping[str, Path], package: str) -> Iterator[Import]:
    """Every import of one module of ``package`` by another, resolved to a module name."""
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                    base = f"{anchor}.{base}" if base else anchor
                # ``from x import y`` names a module when x.y is one, else something inside x
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            else:
                continue
            for target in targets:
                if target == package or target.startswith(package + "."):
                    yield Import(name, target, node.lineno)


def _unit(module: str, package: str, declared: Container[str] = ()) -> tuple[str, str]:
    """(top-level unit, name inside it): ``meshplan.verify.cilium`` -> (verify, cilium); a
    module declared at the top level on its own is its own unit: (mesh.model, "")."""
    parts = module.split(".")[1:]
    if not parts:
        return package, ""
    if len(parts) > 1 and ".".join(parts) in declared:
        return ".".join(parts), ""
    return parts[0], ".".join(parts[1:]) or "__init__"


def _ranks(layers: Layers) -> dict[str, int]:
    return {name: rank for rank, layer in enumerate(layers) for name in layer}


def violations(root: Path, package: str, top: Layers,
               inside: Mapping[str, Layers]) -> list[str]:
    """Every import of the package at ``root`` that does not go to a lower layer, and every
    module the layers do not declare (or declare but that does not exist)."""
    modules = modules_of(root, package)
    top_rank = _ranks(top)
    inner_rank = {unit: _ranks(layers) for unit, layers in inside.items()}
    problems = []
    units: dict[str, set[str]] = {}
    for module in modules:
        unit, inner = _unit(module, package, top_rank)
        units.setdefault(unit, set()).add(inner)
    for unit, members in sorted(units.items()):
        if unit not in top_rank:
            problems.append(f"{package}.{unit}: in no layer (declare it)")
        if unit in inner_rank and members != set(inner_rank[unit]):
            problems.append(f"{package}.{unit}: layers declare {sorted(inner_rank[unit])}, "
                            f"the package has {sorted(members)}")
    problems += [f"{package}.{unit}: declared, but there is no such module"
                 for unit in top_rank if unit not in units]
    for imp in imports_of(modules, package):
        problem = _check(imp, package, top_rank, inner_rank, modules)
        if problem:
            problems.append(problem)
    return problems


def _check(imp: Import, package: str, top_rank: Mapping[str, int],
           inner_rank: Mapping[str, Mapping[str, int]], modules: Mapping[str, Path]) -> str:
    where = f"{imp.importer} (line {imp.line}) imports {imp.imported}"
    if imp.imported not in modules:
        return f"{where}: no such module"
    (unit_a, inner_a) = _unit(imp.importer, package, top_rank)
    (unit_b, inner_b) = _unit(imp.imported, package, top_rank)
    if unit_a == unit_b:
        ranks = inner_rank.get(unit_a, {})
        if inner_a in ranks and inner_b in ranks and ranks[inner_a] <= ranks[inner_b]:
            return f"{where}: not a lower layer of {package}.{unit_a}"
        return ""
    if unit_a in top_rank and unit_b in top_rank and top_rank[unit_a] <= top_rank[unit_b]:
        return f"{where}: not a lower layer"
    return ""
