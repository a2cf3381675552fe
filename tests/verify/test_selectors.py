"""meshplan.verify.selectors: label selectors over identity labels, source prefixes."""

from __future__ import annotations

from meshplan.verify.selectors import LabelSelector, parse_selector


def test_label_sources() -> None:
    selector, why = parse_selector({"matchLabels": {"k8s:app": "x", "any:tier": "t",
                                                    "reserved:host": ""}})
    assert why is None and selector is not None
    assert not selector.matches({"app": "x", "tier": "t"})  # reserved: never a pod label
    selector, _ = parse_selector({"matchLabels": {"k8s:app": "x", "any:tier": "t"}})
    assert selector is not None and selector.matches({"app": "x", "tier": "t"})
    assert LabelSelector().matches({})
