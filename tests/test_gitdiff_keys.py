"""meshplan.gitdiff reads an object's key from the head meshplan writes (no YAML parse): on
every rendered document, and on well-formed documents written any other way, it is the key the
parse gives, or it declines and the document is parsed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st
from meshplan.gitdiff import ObjectKeys, head_key, object_key, split_documents
from meshplan.pipeline import render_repository

from benchmarks.workload import generate
from tests.support.repos import REPO_ROOT


def parsed_key(document: str) -> tuple[str, str] | None:
    try:
        data = yaml.load(document, Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        return None
    return object_key(data, "") if isinstance(data, dict) else None


@pytest.mark.parametrize("size", ["S", "3x2x4x16+mesh+istio+obs"])
def test_every_rendered_document_is_read_from_its_head(size: str, tmp_path: Path) -> None:
    root = REPO_ROOT if size == "S" else tmp_path
    if size != "S":
        generate(size, 5, tmp_path)
    rendered, _ = render_repository(root)
    read = 0
    for output in rendered.files:
        if not output.path.endswith(".yaml"):
            continue
        for document in split_documents(output.content.decode("utf-8")):
            found = head_key(document)
            if found is not None:
                read += 1
                assert found == parsed_key(document), (output.path, document[:200])
    assert read > 20


HEAD = ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: web\n"
        "  namespace: shop\n")
BODY = "  labels:\n    app: web\nspec:\n  endpointSelector: {}\n"


@pytest.mark.parametrize("document", [
    HEAD + BODY,
    HEAD + BODY + "kind: Other\n",  # a repeated key wins
    HEAD + BODY + "metadata:\n  name: other\n",
    HEAD + "  namespace: again\n" + BODY,
    HEAD.replace("  namespace: shop\n", "") + BODY + "  namespace: late\n",  # not in the head
    HEAD.replace("  namespace: shop\n", "") + "  labels: {}\n# a comment\n  namespace: late\n",
    HEAD.replace("name: web", "name: 010"),  # an octal number, not the text
    HEAD.replace("name: web", "name: 1.50"),
    HEAD.replace("kind: CiliumNetworkPolicy", "kind: yes"),
    HEAD.replace("namespace: shop", "namespace: null"),
    HEAD + "  <<: {namespace: merged}\n",
    HEAD + '  "name": quoted\n',
])
def test_a_document_written_otherwise_is_parsed(document: str) -> None:
    found = head_key(document)
    assert found is None or found == parsed_key(document)
    keys = ObjectKeys()
    expected = parsed_key(document) or ("f#0", "f#0")
    assert keys.of(document, "f#0") == expected


names = st.text(alphabet="abcz019.-", min_size=1, max_size=6)
lines = st.sampled_from(["  name: {}\n", "  namespace: {}\n", "  labels: {{a: {}}}\n",
                         "kind: {}\n", "spec: {{x: {}}}\n", "# {}\n", "  # {}\n",
                         "apiVersion: {}\n", "  <<: {{namespace: {}}}\n"])


@given(kind=st.sampled_from(["Service", "Namespace", "true", "Null", "X1"]),
       name=names, namespace=st.none() | names,
       tail=st.lists(st.tuples(lines, names), max_size=4))
def test_the_head_key_is_the_parsed_key_or_declines(kind: str, name: str,
                                                     namespace: str | None,
                                                     tail: list[tuple[str, str]]) -> None:
    document = f"apiVersion: v1\nkind: {kind}\nmetadata:\n  name: {name}\n"
    if namespace is not None:
        document += f"  namespace: {namespace}\n"
    document += "".join(line.format(value) for line, value in tail)
    try:
        yaml.load(document, Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        assume(False)  # compare reads what meshplan rendered: well-formed YAML
    found = head_key(document)
    assert found is None or found == parsed_key(document)
