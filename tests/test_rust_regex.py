"""meshplan.rust_regex: every ``pattern`` of the shipped schemas means the same in Rust (after
``rust_pattern``) as in Python's ``re``; constructs the rewriter does not know are refused."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meshplan import rust_regex, schema

from tests.support.ci import examples
from tests.support.strategies import ALPHABET

rs = pytest.importorskip("jsonschema_rs")


def _patterns(value: Any) -> set[str]:
    if isinstance(value, list):
        return set().union(*(_patterns(v) for v in value))
    if not isinstance(value, dict):
        return set()
    found = {value["pattern"]} if isinstance(value.get("pattern"), str) else set()
    return found.union(*(_patterns(v) for k, v in value.items() if k != "pattern"))


PATTERNS = sorted(set().union(*(_patterns(json.loads(schema.schema_text(n)))
                                for n in schema.SCHEMA_FILES)))


def test_the_space_class_is_pythons() -> None:
    python = {c for c in range(0x110000) if re.match(r"\s", chr(c))}
    ranges = {c for lo, hi in rust_regex.PY_SPACE_RANGES for c in range(lo, hi + 1)}
    assert ranges == python


def test_unknown_regex_constructs_are_refused() -> None:
    for pattern in (r"\d", r"\w+", r"(?i)a", r"[\S]", r"a*+", "[]a]", r"\b", "(?P<x>a)"):
        with pytest.raises(ValueError):
            rust_regex.rust_pattern(pattern)


@pytest.mark.slow
@pytest.mark.parametrize("pattern", PATTERNS)
@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_pattern_means_the_same_in_rust(pattern: str, data: st.DataObject) -> None:
    validator = _pattern_validator(pattern)
    pieces = [p for p in re.split(r"[\\^$()\[\]|*+?{}]", pattern) if p]
    text = data.draw(st.one_of(
        st.from_regex(pattern),  # matches in Python, incl. a final "\n" where $ allows it
        st.from_regex(pattern).map(lambda t: t + data.draw(ALPHABET)),
        st.text(),
        st.text(ALPHABET, max_size=12),
        st.lists(st.one_of(st.sampled_from(pieces or ["a"]), st.text(ALPHABET, max_size=2)),
                 max_size=8).map("".join),
    ))
    assert validator.is_valid(text) == (re.search(pattern, text) is not None), repr(text)


_PATTERN_VALIDATORS: dict[str, Any] = {}


def _pattern_validator(pattern: str) -> Any:
    if pattern not in _PATTERN_VALIDATORS:
        _PATTERN_VALIDATORS[pattern] = rs.validator_for(
            {"pattern": rust_regex.rust_pattern(pattern)}, pattern_options=rs.FancyRegexOptions())
    return _PATTERN_VALIDATORS[pattern]
