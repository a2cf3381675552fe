"""meshplan.load.parse: positions of every key and value, YAML problems, and the limits on
hostile input, on both paths (the composer and the one-pass parser over libyaml's events)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meshplan.diagnostics import Location
from meshplan.load import parse
from meshplan.load.document import Document
from meshplan.load.parse import parse_json_like, parse_yaml

from tests.support.ci import examples

NESTED = """\
# comment
apiVersion: v1
spec:
  clusters:
    - name: cl1
      podCIDRs: [10.1.0.0/16, 10.9.0.0/16]
    - {name: cl2, meshId: 2}
---
second: [a, {b: c}]
"""


def only(text: str, relpath: str = "f.yaml") -> Document:
    docs, problems = parse_yaml(relpath, text)
    assert problems == []
    assert len(docs) == 1
    return docs[0]


def messages(text: str, relpath: str = "f.yaml") -> list[str]:
    parse = parse_json_like if relpath.endswith(".json") else parse_yaml
    return [f"{d.location}: {d.path}: {d.message}" for d in parse(relpath, text)[1]]


# --------------------------------------------------------------------------- positions


def test_positions_of_nested_values_and_keys() -> None:
    docs, problems = parse_yaml("inventory/x.yaml", NESTED)
    assert problems == []
    first, second = docs
    assert (first.file, first.index, second.index) == ("inventory/x.yaml", 0, 1)
    assert first.data["spec"]["clusters"][1] == {"name": "cl2", "meshId": 2}
    assert first.location(("apiVersion",)) == Location("inventory/x.yaml", 2, 13)
    assert first.location(("spec", "clusters", 0)) == Location("inventory/x.yaml", 5, 7)
    assert first.location(("spec", "clusters", 0, "name")) == Location("inventory/x.yaml", 5, 13)
    assert first.location(("spec", "clusters", 0, "podCIDRs", 1)) == \
        Location("inventory/x.yaml", 6, 31)
    assert first.location(("spec", "clusters", 1, "meshId")) == \
        Location("inventory/x.yaml", 7, 27)
    assert first.key_location(("spec", "clusters", 1, "meshId")) == \
        Location("inventory/x.yaml", 7, 19)
    assert first.key_location(("spec", "clusters")) == Location("inventory/x.yaml", 4, 3)
    assert second.location(("second", 1, "b")) == Location("inventory/x.yaml", 9, 17)


def test_unknown_paths_fall_back_to_the_nearest_parent() -> None:
    doc = only(NESTED.split("---")[0])
    assert doc.location(("spec", "clusters", 0, "missing", 3)) == doc.location(
        ("spec", "clusters", 0))
    assert doc.key_location(("spec", "nothing")) == doc.location(("spec",))
    assert doc.location(()) == Location("f.yaml", 2, 1)  # the root node, after the comment


KEYS_LIKE_PATH_PARTS = """\
spec:
  <key>:
    port: 1
    a: 1
    a: 2
  -1:
    1: x
"""


@pytest.mark.parametrize("anchor", ["", "&x "])  # one-pass parser; composer (anchor)
def test_keys_spelled_like_path_parts_have_their_own_positions(anchor: str) -> None:
    """A key spelled "<key>" or a number is a key like any other: its value is located at
    the value, not at its parent's key, and a path through it shows it."""
    text = KEYS_LIKE_PATH_PARTS.replace("  <key>:", f"  <key>: {anchor}")
    docs, problems = parse_yaml("f.yaml", text)
    assert [f"{d.location}: {d.path}: {d.message}" for d in problems] == [
        "f.yaml:5:5: spec.<key>.a: expected each key once, found 'a' again (first at line 4)"]
    (doc,) = docs
    assert doc.data == {"spec": {"<key>": {"port": 1, "a": 1}, -1: {1: "x"}}}
    assert doc.key_location(("spec",)) == Location("f.yaml", 1, 1)
    assert doc.key_location(("spec", "<key>")) == Location("f.yaml", 2, 3)
    value = Location("f.yaml", 2, 10) if anchor else Location("f.yaml", 3, 5)  # node starts
    assert doc.location(("spec", "<key>")) == value
    assert doc.location(("spec", "<key>", "missing")) == value
    assert doc.key_location(("spec", "<key>", "port")) == Location("f.yaml", 3, 5)
    assert doc.location(("spec", "<key>", "port")) == Location("f.yaml", 3, 11)
    assert doc.key_location(("spec", -1)) == Location("f.yaml", 6, 3)
    assert doc.location(("spec", -1)) == Location("f.yaml", 7, 5)
    assert doc.key_location(("spec", -1, 1)) == Location("f.yaml", 7, 5)
    assert doc.location(("spec", -1, 1)) == Location("f.yaml", 7, 8)


def test_scalars_keep_their_yaml_types() -> None:
    doc = only("a: 1\nb: '1'\nc: true\nd: null\ne: 1.5\nf: 0x10\n")
    assert doc.data == {"a": 1, "b": "1", "c": True, "d": None, "e": 1.5, "f": 16}


def test_empty_documents_are_skipped_but_counted() -> None:
    docs, problems = parse_yaml("f.yaml", "---\n# only a comment\n---\na: 1\n")
    assert problems == []
    assert [(d.index, d.data) for d in docs] == [(1, {"a": 1})]


# --------------------------------------------------------------------------- YAML problems


def test_duplicate_keys_are_reported_at_the_second_key_in_nested_mappings() -> None:
    assert messages("a:\n  b: 1\n  c: 2\n  b: 3\n") == [
        "f.yaml:4:3: a.b: expected each key once, found 'b' again (first at line 2)"]


def test_syntax_error_has_the_parser_position() -> None:
    assert messages("a: [1, 2\nb: 3\n")[0].startswith(
        "f.yaml:2:2: : expected valid YAML, found a syntax error (while parsing a flow sequence")


def test_tab_hint_only_when_the_problem_is_a_tab() -> None:
    assert "a tab cannot indent YAML" in messages("a:\n\tb: 1\n")[0]
    assert "tab" not in messages("a: b: c\n")[0]


def test_merge_key_is_refused() -> None:
    assert messages("x: &x {a: 1}\ny:\n  <<: *x\n") == [
        "f.yaml:3:3: y: expected ordinary keys, found a YAML merge key '<<' (not supported: "
        "write the keys out)"]


@pytest.mark.parametrize(("text", "where", "words"), [
    ("a: !!python/object:os.system x\n", "f.yaml:1:4: a", "tag:yaml.org,2002:python/object"),
    ("a: !!python/name:os.system\n", "f.yaml:1:4: a", "python/name"),
    ("a: !custom x\n", "f.yaml:1:4: a", "'!custom'"),
    ("a: !!set {x, y}\n", "f.yaml:1:4: a", "plain YAML mapping, found the tag"),
    ("a: !!omap [{x: 1}]\n", "f.yaml:1:4: a", "plain YAML list, found the tag"),
    ("a: !!python/object/apply:os.system [ls]\n", "f.yaml:1:4: a", "python/object/apply"),
])
def test_tags_are_errors_never_constructed(text: str, where: str, words: str) -> None:
    (found,) = messages(text)
    assert found.startswith(f"{where}: expected a plain YAML ")
    assert words in found


@pytest.mark.parametrize(("text", "message"), [
    ("? [a]\n: x\n", "f.yaml:1:3: : expected a text key, found a list or mapping as key"),
    ("2024-01-01: x\n", "f.yaml:1:1: : expected a text key, found datetime.date(2024, 1, 1)"),
])
def test_keys_must_be_text(text: str, message: str) -> None:
    assert messages(text) == [message]


def test_integer_beyond_pythons_conversion_limit_is_an_error() -> None:
    (found,) = messages("a: 1" + "0" * 5000 + "\n")
    assert found.startswith("f.yaml:1:4: a: expected a plain YAML value, found "
                            "'tag:yaml.org,2002:int'")


def test_recursive_alias_is_an_error() -> None:
    assert messages("a: &a {b: [*a]}\n") == [
        "f.yaml:1:4: a.b[0]: expected data that ends, found an alias inside its own anchor "
        "(a recursive structure)"]


def test_aliases_are_expanded_as_plain_data() -> None:
    doc = only("a: &x {k: [1, 2]}\nb: *x\n")
    assert doc.data == {"a": {"k": [1, 2]}, "b": {"k": [1, 2]}}
    assert doc.location(("b", "k", 1)) == Location("f.yaml", 1, 15)  # where the anchor wrote it


# --------------------------------------------------------------------------- limits


def test_expanded_size_counts_every_alias_expansion() -> None:
    node = yaml.compose("a: &x [1, 2]\nb: *x\nc: [*x, *x]\n")
    # root + a(seq + 2) + b(seq + 2) + c(seq + 2 * (seq + 2))
    assert parse._expanded_size(node, 1000) == 1 + 3 + 3 + 1 + 2 * 3
    assert parse._expanded_size(node, 5) == 6  # stops counting just past the limit


def test_node_budget_counts_alias_expansions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse, "MAX_NODES_PER_FILE", 10)
    text = "a: &x [1, 2, 3]\nb: [*x, *x]\n"  # 4 composed nodes + 3 more, 13 once expanded
    (found,) = messages(text)
    assert found == ("f.yaml:1:1: : expected at most 10 YAML nodes once aliases are expanded, "
                     "found more (aliases expand to too much data: a YAML alias bomb?)")
    assert messages("a: &x [1, 2, 3]\nb: *x\n") == []  # 9 nodes


def test_node_budget_is_shared_by_the_documents_of_a_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parse, "MAX_NODES_PER_FILE", 50)
    one = "a: &x [1, 2, 3, 4, 5, 6, 7, 8]\nb: [*x, *x, *x]\n"  # 15 composed, 38 expanded
    assert messages(one) == []
    (found,) = messages(f"{one}---\n{one}")
    assert found.startswith("f.yaml:4:1: : expected at most 50 YAML nodes once aliases")


def test_composer_budget_stops_large_files_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse, "MAX_NODES_PER_FILE", 100)
    assert messages("[" + ", ".join(["1"] * 98) + "]\n") == []
    assert messages("[" + ", ".join(["1"] * 100) + "]\n") == [
        "f.yaml:1:299: : expected at most 100 YAML nodes in one file, found more (split the file)"]


def test_json_has_its_own_smaller_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse, "MAX_JSON_NODES", 6)  # keys are nodes too
    assert messages('{"a": [1, 2, 3]}', "f.json") == []
    assert messages('{"a": [1, 2, 3, 4]}', "f.json") == [
        "f.json:1:17: : expected at most 6 YAML nodes in one file, found more (split the file)"]


@pytest.mark.parametrize("relpath", ["f.yaml", "f.json"])
def test_nesting_limit_is_exact(relpath: str) -> None:
    depth = parse.MAX_DEPTH
    assert messages("[" * (depth - 1) + "1" + "]" * (depth - 1), relpath) == []
    assert messages("[" * depth + "1" + "]" * depth, relpath) == [
        f"{relpath}:1:{depth + 1}: : expected at most {depth} levels of nesting, found more"]


def test_the_yaml_composer_is_the_guarded_python_one() -> None:
    """libyaml's C composer recurses without limit; only its event parser may be used."""
    assert issubclass(parse._YAML_LOADER, parse._GuardedComposer)
    if yaml.__with_libyaml__:
        assert parse._YAML_LOADER.__name__ == "_LibyamlLoader"


# --------------------------------------------------------------------------- JSON (YAML 1.2)


def test_thesis_json_quirks_parse_with_positions() -> None:
    text = '{\n\t"domain":{\n\t\t"name":"d1"\n\t},\n\t"clusters":[{"cilium_cluster":cluster3}]\n}\n'
    docs, problems = parse_json_like("inventory/d.json", text)
    assert problems == []
    (doc,) = docs
    assert doc.data == {"domain": {"name": "d1"}, "clusters": [{"cilium_cluster": "cluster3"}]}
    assert doc.location(("domain", "name")) == Location("inventory/d.json", 3, 10)
    assert doc.key_location(("clusters", 0, "cilium_cluster")) == \
        Location("inventory/d.json", 5, 15)


def test_json_syntax_error_names_the_parser() -> None:
    (found,) = messages('{"a": 1,, "b": 2}', "f.json")
    assert found.startswith("f.json:1:9: : expected valid JSON/YAML 1.2, found a syntax error")


def test_json_duplicate_key() -> None:
    assert messages('{"a": 1,\n "a": 2}', "f.json") == [
        "f.json:2:2: a: expected each key once, found 'a' again (first at line 1)"]


def test_json_redefined_anchor_is_no_python_warning(recwarn: pytest.WarningsRecorder) -> None:
    messages('{"a": &x [1], "b": &x [2]}', "f.json")
    assert [str(w.message) for w in recwarn] == []


def test_pure_python_loader_behaves_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyYAML without libyaml falls back to its pure-Python parser under the same composer."""
    with_libyaml = parse_yaml("f.yaml", NESTED)
    monkeypatch.setattr(parse, "_YAML_LOADER", parse._PureYamlLoader)
    pure = parse_yaml("f.yaml", NESTED)
    assert [(d.data, dict(d.marks)) for d in pure[0]] == [
        (d.data, dict(d.marks)) for d in with_libyaml[0]]
    depth = parse.MAX_DEPTH
    assert messages("[" * (depth + 50) + "]" * (depth + 50)) == [
        f"f.yaml:1:{depth + 1}: : expected at most {depth} levels of nesting, found more"]
    assert messages("a: &a [*a]\n")[0].startswith("f.yaml:1:4: a[0]: expected data that ends")


# --------------------------------------------------------------------------- one-pass parser


def test_one_pass_parser_defers_anchors_aliases_and_tags_to_the_composer() -> None:
    if not parse.HAS_LIBYAML:
        pytest.skip("PyYAML without libyaml")
    for text in ("a: &x 1\n", "a: *x\n", "a: !!str 1\n", "- !x [1]\n", "a: ! b\n"):
        with pytest.raises(parse._NeedsComposer):
            parse._EventBuilder("f.yaml", text).parse()
    assert parse._EventBuilder("f.yaml", "a: '*x'\nb: '&y'\n").parse()[0][0].data == {
        "a": "*x", "b": "&y"}


def test_one_pass_parser_survives_deep_nesting() -> None:
    """100,000 levels: one located error, whichever layer refuses first (libyaml itself
    stops at 1,000 levels since PyYAML 6.0.3; meshplan's own guard stops at MAX_DEPTH)."""
    deep = "[" * 100_000 + "]" * 100_000
    (message,) = messages(deep)
    location, _, text = message.partition(": ")
    match = re.fullmatch(r"f\.yaml:1:(\d+)", location)
    assert match, message
    assert parse.MAX_DEPTH < int(match.group(1)) <= 1_001
    assert "nesting" in text


@pytest.mark.parametrize("levels", [parse.MAX_DEPTH + 1, 299, 999])
def test_nesting_past_the_guard_is_refused_by_meshplan_itself(levels: int) -> None:
    """Below libyaml's own limit, meshplan's guard is what refuses: flow and block style."""
    flow = "[" * levels + "]" * levels
    assert messages(flow) == [
        f"f.yaml:1:{parse.MAX_DEPTH + 1}: : expected at most {parse.MAX_DEPTH} levels of nesting, "
        "found more"]
    block = "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, levels))
    assert messages(block)[0].endswith("levels of nesting, found more")


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["yes", "No", "~", "null", "0x1F", "0o17", "1_000", "1:20", ".inf", "-.NaN",
                     "2024-01-02", "2001-12-14t21:59:43.10-05:00", "<<", "=", "1e3", "+12",
                     "0b101", "on", "", " lead", "a: b", "- x", "# c", "*ref", "&anc", "!t"]),
)
_KEYS = st.one_of(st.text(max_size=8), st.integers(-5, 5), st.booleans(), st.none(),
                  st.sampled_from(["<<", "1.5", "True", "2024-01-02", "1", "k"]))
_DATA = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=25,
)


@st.composite
def _yaml_texts(draw: st.DrawFn) -> str:
    """PyYAML's own output in various styles (shared objects become anchors and aliases),
    several documents, then a few random edits."""
    docs = draw(st.lists(_DATA, min_size=1, max_size=3))
    if draw(st.booleans()) and docs and isinstance(docs[0], (list, dict)):
        docs.append([docs[0], docs[0]])  # the same object twice: an anchor and an alias
    text = yaml.dump_all(docs, Dumper=yaml.SafeDumper,
                         default_flow_style=draw(st.sampled_from([None, True, False])),
                         default_style=draw(st.sampled_from([None, '"', "'"])),
                         allow_unicode=draw(st.booleans()), sort_keys=False,
                         explicit_start=draw(st.booleans()))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        insert = draw(st.sampled_from(["", " ", "  ", "\n", "\t", ":", ": ", "- ", "[", "]",
                                       "{", "}", ",", "#", "&a ", "*a", "!x ", "!!int ", "'",
                                       '"', "? ", "<<: ", "|\n", ">-\n", "---\n", "...\n",
                                       "k: v\n", "k: v\n", "\\", "%YAML 1.1\n"]))
        text = text[:at] + insert + text[at + cut:]
    return text


def _outcome(result: tuple[list[Document], Sequence[object]]) -> object:
    docs, problems = result
    return [(d.file, d.index, d.data, dict(d.marks)) for d in docs], problems


DIFFERENTIAL_EXAMPLES = 1500


@pytest.mark.slow
@settings(max_examples=examples(DIFFERENTIAL_EXAMPLES), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_yaml_texts())
def test_one_pass_parser_equals_the_composer(text: str) -> None:
    """The one-pass parser (and parse_yaml's choice between paths) gives exactly what the
    composer + tree builder give: data, every mark, every diagnostic."""
    expected = _outcome(parse._parse_composed("f.yaml", text))
    assert _outcome(parse_yaml("f.yaml", text)) == expected
    if parse.HAS_LIBYAML:
        try:
            fast = parse._EventBuilder("f.yaml", text).parse()
        except parse._NeedsComposer:
            return
        assert _outcome(fast) == expected


@pytest.mark.parametrize("limit", [3, 7, 20])
def test_one_pass_parser_limits_equal_the_composer(
    limit: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(parse, "MAX_NODES_PER_FILE", limit)
    monkeypatch.setattr(parse, "MAX_DEPTH", 4)
    for text in ("a: [1, 2, {b: [3, 4]}]\n---\nc: d\n", "[[[[[1]]]]]\n", "? [a, b]\n: c\n",
                 "a: 1\na: 2\nb: [x, y, z, w]\n", "{a: {b: {c: {d: 1}}}}\n",
                 "a: !!set {x}\nb: [1, 2, 3, 4, 5, 6]\n", "a: 1\nb: [\n"):
        expected = _outcome(parse._parse_composed("f.yaml", text))
        assert _outcome(parse_yaml("f.yaml", text)) == expected, text
