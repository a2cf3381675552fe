"""A small, deterministic YAML writer for the data meshplan renders.

Why not ``yaml.dump``: rendering a fleet writes hundreds of megabytes of YAML and libyaml's
dumper spends most of its time in Python-level representers; this writer handles only what
manifests contain (mappings, lists, text, integers, booleans, null) and caches the spelling of
each distinct scalar. Correctness rule: a string is written plain only when every YAML 1.1 and
1.2 reader (PyYAML, ruamel.yaml, Go's yaml used by kustomize) reads it back as the same string;
anything else is double-quoted with JSON escapes, which are valid YAML escapes.
The round-trip property tests in ``tests/test_yamltext.py`` guard this.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

# Plain only: starts with a letter, '_' or '/', then letters, digits and _ . / - with single
# colons inside (label keys such as k8s:io.kubernetes.pod.namespace). Everything starting with
# a digit, sign or dot is quoted, which covers every YAML number, date and sexagesimal form.
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*(?::[A-Za-z0-9_./-]+)*")
# Words some YAML reader turns into booleans or null (YAML 1.1 is the widest set).
_SPECIAL_WORDS = frozenset(
    ["y", "yes", "n", "no", "true", "false", "on", "off", "null"]
)
# YAML readers (libyaml, PyYAML, ruamel.yaml, Go's yaml) refuse an implicit ``key:`` longer than
# this many characters (YAML 1.2 section 7.4.2); longer keys are written explicitly (``? key``).
_MAX_IMPLICIT_KEY = 1024
# Characters YAML does not allow raw in a double-quoted scalar, or reads as line breaks.
_UNSAFE_IN_QUOTES = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]")


@lru_cache(maxsize=65536)
def scalar_text(value: str) -> str:
    """How a string is written: plain when unambiguous, else double-quoted."""
    if _PLAIN.fullmatch(value) and value.lower() not in _SPECIAL_WORDS:
        return value
    quoted = json.dumps(value, ensure_ascii=False)
    return _UNSAFE_IN_QUOTES.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return scalar_text(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML: {value!r}")


def _key(key: str, indent: str) -> str:
    """``key:``, or ``? key`` and ``:`` on the next line when the key is too long to be implicit."""
    text = scalar_text(key)
    if len(text) <= _MAX_IMPLICIT_KEY:
        return f"{indent}{text}:"
    return f"{indent}? {text}\n{indent}:"


def _mapping(data: Mapping[str, Any], indent: str, out: list[str]) -> None:
    for key, value in data.items():
        head = _key(key, indent)
        if isinstance(value, Mapping):
            if value:
                out.append(head + "\n")
                _mapping(value, indent + "  ", out)
            else:
                out.append(head + " {}\n")
        elif isinstance(value, list | tuple):
            if value:
                out.append(head + "\n")
                _sequence(value, indent, out)
            else:
                out.append(head + " []\n")
        else:
            out.append(f"{head} {_scalar(value)}\n")


def _sequence(items: Iterable[Any], indent: str, out: list[str]) -> None:
    inner = indent + "  "
    for item in items:
        if isinstance(item, Mapping) and item:
            # The first key shares the "- " line; the rest align under it.
            start = len(out)
            _mapping(item, inner, out)
            out[start] = f"{indent}- {out[start][len(inner):]}"
        elif isinstance(item, list | tuple) and item:
            out.append(f"{indent}-\n")
            _sequence(item, inner, out)
        elif isinstance(item, Mapping):
            out.append(f"{indent}- {{}}\n")
        elif isinstance(item, list | tuple):
            out.append(f"{indent}- []\n")
        else:
            out.append(f"{indent}- {_scalar(item)}\n")


def dump_document(data: Mapping[str, Any]) -> str:
    """One YAML document (a mapping), without the ``---`` separator."""
    out: list[str] = []
    _mapping(data, "", out)
    return "".join(out) if out else "{}\n"


def dump_documents(documents: Iterable[Mapping[str, Any]]) -> str:
    """Several documents separated by ``---``."""
    return "---\n".join(dump_document(d) for d in documents)
