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


def test_parse_selector_terms_are_the_written_labels_each_time() -> None:
    """Label terms are kept per (key, value) text: a selector parsed again, a value written as
    a number or a boolean, and a dropped key read as before (one term per label, in order)."""
    data = {"matchLabels": {"k8s:app": "x", "tier": 1, "flag": True,
                            "k8s:io.kubernetes.pod.namespace": "n"},
            "matchExpressions": [{"key": "k8s:zone", "operator": "In", "values": ["a", 2]}]}
    expected = (Term("app", "In", ("x",)), Term("tier", "In", ("1",)),
                Term("flag", "In", ("True",)), Term("io.kubernetes.pod.namespace", "In", ("n",)),
                Term("zone", "In", ("a", "2")))
    for _ in range(2):
        selector, why = parse_selector(data)
        assert why is None and selector is not None and selector.terms == expected
        assert [type(v) for t in selector.terms for v in t.values] == [str] * 6
    dropped, _ = parse_selector(data, ("k8s:io.kubernetes.pod.namespace",))
    assert dropped is not None and dropped.terms == expected[:3] + expected[4:]
    assert parse_selector({"matchLabels": {}, "other": 1}) == (
        None, "expected matchLabels/matchExpressions, found other")
