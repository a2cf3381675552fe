"""meshplan.verify.selectors: label selectors over identity labels, source prefixes."""

from __future__ import annotations

import itertools

from meshplan.verify.selectors import LabelSelector, Term, parse_selector


def test_label_sources() -> None:
    selector, why = parse_selector({"matchLabels": {"k8s:app": "x", "any:tier": "t",
                                                    "reserved:host": ""}})
    assert why is None and selector is not None
    assert not selector.matches({"app": "x", "tier": "t"})  # reserved: never a pod label
    selector, _ = parse_selector({"matchLabels": {"k8s:app": "x", "any:tier": "t"}})
    assert selector is not None and selector.matches({"app": "x", "tier": "t"})
    assert LabelSelector().matches({})


_TERM_KEYS = (None, "app", "tier")


def test_matches_is_every_term_holding() -> None:
    """matches (inlined for speed) agrees with Term.holds, every operator, over every label set
    of a small alphabet, a key no pod carries (None) and an operator outside the four."""
    terms = [Term(key, operator, values)
             for key in _TERM_KEYS
             for operator in ("In", "NotIn", "Exists", "DoesNotExist", "Other")
             for values in ((), ("x",), ("x", "y"))]
    label_sets = [dict(zip(("app", "tier"), pick, strict=True))
                  for pick in itertools.product(("x", "y", "z"), repeat=2)]
    label_sets += [{}, {"app": "x"}, {"tier": "y"}]
    for size in (0, 1, 2):
        for chosen in itertools.combinations(terms, size):
            selector = LabelSelector(chosen)
            for labels in label_sets:
                assert selector.matches(labels) == all(t.holds(labels) for t in chosen), \
                    (chosen, labels)
