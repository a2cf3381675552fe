"""Kubernetes label selectors over Cilium identity labels: parsed from YAML, evaluated."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..admission import bare_key as normalize_key
from ..model import Selector


@dataclass(frozen=True)
class Term:
    key: str | None  # normalized; None = a label source no pod carries (never matches)
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()

    def holds(self, labels: Mapping[str, str]) -> bool:
        if self.key is None:
            return self.operator in ("NotIn", "DoesNotExist")
        value = labels.get(self.key)
        if self.operator == "In":
            return value is not None and value in self.values
        if self.operator == "NotIn":
            return value is None or value not in self.values
        if self.operator == "Exists":
            return value is not None
        return value is None


@dataclass(frozen=True)
class LabelSelector:
    """A Kubernetes label selector over identity labels (keys normalized, all terms ANDed)."""

    terms: tuple[Term, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        # Term.holds, inlined: selecting pods evaluates it for every candidate pod.
        for term in self.terms:
            key, operator = term.key, term.operator
            if key is None:
                if operator != "NotIn" and operator != "DoesNotExist":
                    return False
                continue
            value = labels.get(key)
            if operator == "In":
                if value is None or value not in term.values:
                    return False
            elif operator == "NotIn":
                if value is not None and value in term.values:
                    return False
            elif operator == "Exists":
                if value is None:
                    return False
            elif value is not None:
                return False
        return True

    def has_key(self, key: str) -> bool:
        return any(t.key == key for t in self.terms)

    def has_key_prefix(self, prefix: str) -> bool:
        return any(t.key is not None and t.key.startswith(prefix) for t in self.terms)

    def also(self, *terms: Term) -> LabelSelector:
        return LabelSelector((*self.terms, *terms))

    @staticmethod
    def from_model(selector: Selector) -> LabelSelector:
        terms = [Term(normalize_key(k), "In", (v,)) for k, v in selector.match_labels]
        terms += [Term(normalize_key(e.key), e.operator, e.values)
                  for e in selector.match_expressions]
        return LabelSelector(tuple(terms))


OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_SELECTOR_KEYS = frozenset({"matchLabels", "matchExpressions"})
# (key, value) of a matchLabels item, both text -> its term (a Term is immutable: the same
# labels recur in the peers of a fleet's policies)
_LABEL_TERMS: dict[tuple[str, str], Term] = {}
_LABEL_TERMS_LIMIT = 1 << 16


def parse_selector(data: Any, drop: Iterable[str] = ()) -> tuple[LabelSelector | None, str | None]:
    """A selector from YAML (``matchLabels``/``matchExpressions``), or why it is not one.

    Keys listed in ``drop`` are left out of ``matchLabels`` (Cilium overwrites them).
    """
    if not isinstance(data, dict):
        return None, f"expected a label selector mapping, found {type(data).__name__}"
    if not data.keys() <= _SELECTOR_KEYS:
        unknown = sorted(set(data) - _SELECTOR_KEYS)
        return None, f"expected matchLabels/matchExpressions, found {', '.join(unknown)}"
    terms: list[Term] = []
    labels = data.get("matchLabels") or {}
    if not isinstance(labels, dict):
        return None, "expected matchLabels to be a mapping"
    skip = set(drop)
    known = _LABEL_TERMS
    for key, value in labels.items():
        if type(key) is str and type(value) is str:
            if key in skip:
                continue
            term = known.get((key, value))
            if term is None:
                term = Term(normalize_key(key), "In", (value,))
                if len(known) < _LABEL_TERMS_LIMIT:
                    known[(key, value)] = term
            terms.append(term)
            continue
        if str(key) in skip:
            continue
        terms.append(Term(normalize_key(str(key)), "In", (str(value),)))
    expressions = data.get("matchExpressions") or []
    if not isinstance(expressions, list):
        return None, "expected matchExpressions to be a list"
    for item in expressions:
        if not isinstance(item, dict) or item.get("operator") not in OPERATORS:
            return None, f"expected a match expression with an operator in {OPERATORS}"
        values = tuple(str(v) for v in item.get("values") or ())
        terms.append(Term(normalize_key(str(item.get("key", ""))), str(item["operator"]), values))
    return LabelSelector(tuple(terms)), None
