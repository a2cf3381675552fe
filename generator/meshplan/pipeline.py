"""Wires the stages together: repository -> validated :class:`Inventory` (-> output files).

Each function here only sequences stages; the work lives in the stage modules.
"""

from __future__ import annotations

from pathlib import Path

from .check import check_inventory
from .diagnostics import Diagnostic, InputError, has_errors, sorted_diagnostics
from .load import load_repository
from .model import (
    Domain,
    Inventory,
    Requirement,
    build_domain,
    build_domain_request,
    build_requirement,
    with_implied_namespaces,
)
from .refine import refine
from .render import Rendered, render
from .schema import DOMAIN, DOMAIN_REQUEST, check_inventory_document, check_requirement_document


def validate(repo: Path) -> tuple[Inventory | None, tuple[Diagnostic, ...]]:
    """Load, check structure, build the model and check meaning; never raises on bad input.

    Returns the inventory (None when anything is an error) and all diagnostics, sorted.
    """
    inputs, diagnostics = load_repository(repo)
    domains: list[Domain] = []
    for doc in inputs.inventory:
        kind, problems = check_inventory_document(doc)
        diagnostics.extend(problems)
        if kind is None or has_errors(problems):
            continue
        domains.append(build_domain(doc) if kind is DOMAIN else build_domain_request(doc))
        assert kind in (DOMAIN, DOMAIN_REQUEST)
    requirements: list[Requirement] = []
    for folder, doc in inputs.requirements:
        kind, problems = check_requirement_document(doc)
        diagnostics.extend(problems)
        if kind is not None and not has_errors(problems):
            requirements.append(build_requirement(folder, doc))
    inventory = with_implied_namespaces(Inventory(tuple(domains), tuple(requirements)))
    diagnostics.extend(check_inventory(inventory))
    ordered = sorted_diagnostics(diagnostics)
    return (None if has_errors(ordered) else inventory), ordered


def validated(repo: Path) -> tuple[Inventory, tuple[Diagnostic, ...]]:
    """Like :func:`validate` but raises :class:`InputError` when there is any error."""
    inventory, diagnostics = validate(repo)
    if inventory is None:
        raise InputError(diagnostics)
    return inventory, diagnostics


def render_repository(repo: Path) -> tuple[Rendered, tuple[Diagnostic, ...]]:
    """Validate, refine and render; raises :class:`InputError` on any error."""
    inventory, diagnostics = validated(repo)
    plan = refine(inventory)
    combined = sorted_diagnostics((*diagnostics, *plan.diagnostics))
    if has_errors(combined):
        raise InputError(combined)
    return render(plan), combined
