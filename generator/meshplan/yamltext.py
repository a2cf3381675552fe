"""A small, deterministic YAML writer for the data meshplan renders.

Why not ``yaml.dump``: rendering a fleet writes hundreds of megabytes of YAML and libyaml's
dumper spends most of its time in Python-level representers; this writer handles only what
manifests contain (mappings, lists, text, integers, booleans, null) and caches the spelling of
each distinct scalar. Correctness rule: a string is written plain only when every YAML 1.1 and
1.2 reader (PyYAML, ruamel.yaml, Go's yaml used by kustomize) reads it back as the same string;
anything else is double-quoted with JSON escapes, which are valid YAML escapes. A
:class:`LiteralText` (a dashboard's JSON in a ConfigMap, say) is written as a literal block,
line by line, when a block keeps it exactly, so that a diff of it shows the lines that changed.
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
# What json.dumps(text, ensure_ascii=False) calls for a str (C when json has its accelerator).
_json_string = json.encoder.encode_basestring
# Words some YAML reader turns into booleans or null (YAML 1.1 is the widest set).
_SPECIAL_WORDS = frozenset(
    ["y", "yes", "n", "no", "true", "false", "on", "off", "null"]
)
# YAML readers (libyaml, PyYAML, ruamel.yaml, Go's yaml) refuse an implicit ``key:`` longer than
# this many characters (YAML 1.2 section 7.4.2); longer keys are written explicitly (``? key``).
MAX_IMPLICIT_KEY = 1024
# Characters YAML does not allow raw in a double-quoted scalar, or reads as line breaks.
_UNSAFE_IN_QUOTES = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]")
# A literal block (``|`` or ``|-``) keeps text exactly when its lines are printable ASCII
# without trailing blanks, its first line neither empty nor indented (the block's indentation
# is read from it) and it ends in at most one line break (``|`` keeps one, ``|-`` none).
_BLOCK_TEXT = re.compile(r"(?:[!-~][ -~]*[!-~]|[!-~])(?:\n(?:[ -~]*[!-~])?)*(?<!\n)\n?")


class LiteralText(str):
    """Text to write as a literal block scalar (``|``) when a block keeps it exactly."""

    __slots__ = ()


def literal_text(value: str, indent: str) -> str:
    """The spelling of a :class:`LiteralText` whose lines go at ``indent``: a literal block
    (without its final line break), or the ordinary scalar for one line, or when a block
    would change the text."""
    if "\n" not in value or _BLOCK_TEXT.fullmatch(value) is None:
        return scalar_text(value)
    lines = value.removesuffix("\n").split("\n")
    body = "\n".join(indent + line if line else "" for line in lines)
    return ("|\n" if value.endswith("\n") else "|-\n") + body


@lru_cache(maxsize=65536)
def scalar_text(value: str) -> str:
    """How a string is written: plain when unambiguous, else double-quoted."""
    if _PLAIN.fullmatch(value) and value.lower() not in _SPECIAL_WORDS:
        return value
    quoted = _json_string(value)  # json.dumps(value, ensure_ascii=False), without an encoder
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


# Caches of spellings, bounded so a long-lived process cannot grow them without limit: the
# text of each scalar string, and each "<indent><key>:" head per indent. (Cached texts are
# never empty, so ``cache.get(x) or compute(x)`` is a safe lookup.)
_CACHE_LIMIT = 65536
_SCALARS: dict[str, str] = {}
_HEADS: dict[str, dict[str, str]] = {}


def _new_string(value: str) -> str:
    if len(_SCALARS) >= _CACHE_LIMIT:
        _SCALARS.clear()
    text = _SCALARS[value] = scalar_text(value)
    return text


def _key(key: str, indent: str) -> str:
    """``key:``, or ``? key`` and ``:`` on the next line when the key is too long to be implicit."""
    text = scalar_text(key)
    if len(text) <= MAX_IMPLICIT_KEY:
        return f"{indent}{text}:"
    return f"{indent}? {text}\n{indent}:"


def _new_heads(indent: str) -> dict[str, str]:
    if len(_HEADS) >= _CACHE_LIMIT:
        _HEADS.clear()
    heads = _HEADS[indent] = {}
    return heads


def _new_head(heads: dict[str, str], key: str, indent: str) -> str:
    if len(heads) >= _CACHE_LIMIT:
        heads.clear()
    head = heads[key] = _key(key, indent)
    return head


class SharedText:
    """The text of sub-objects that several documents share, for one render.

    Refinement shares immutable sub-objects between documents (a service's Service spec in
    every cluster that mirrors it, a requirement's rule bodies in every cluster of its scope).
    Their text is kept from the second time one is met, keyed by identity and indentation;
    the object itself is held too, so its id cannot be reused by another object meanwhile.
    Only objects never mutated while a render runs may be written with a memo.
    """

    def __init__(self) -> None:
        self.seen: dict[int, object] = {}
        self.texts: dict[tuple[int, str], str] = {}

    def text(self, item: Mapping[str, Any], indent: str, first: str | None) -> str | None:
        """The cached text of ``item`` at this position, or None to write it normally."""
        key = id(item)
        if self.seen.get(key) is not item:
            self.seen[key] = item  # first meeting: remember, write normally
            return None
        where = (key, first if first is not None else indent)
        text = self.texts.get(where)
        if text is None:
            out: list[str] = []
            _mapping(item, indent, out, first, self)
            text = self.texts[where] = "".join(out)
        return text


# The keys whose values refinement shares between documents (see refine.py): worth a memo.
_SHARED_VALUES = frozenset({"spec"})
_SHARED_ITEMS = frozenset({"egress", "ingress"})


def _mapping(data: Mapping[str, Any], indent: str, out: list[str], first: str | None = None,
             memo: SharedText | None = None) -> None:
    """Write ``data`` at ``indent``; ``first`` replaces the indent on the first key's line
    (``<outer indent>- `` when the mapping is a sequence item)."""
    heads = _HEADS.get(indent) or _new_heads(indent)
    for key, value in data.items():
        head = heads.get(key) or _new_head(heads, key, indent)
        if first is not None:
            head = first + head[len(indent):]
            first = None
        # Exact-type checks first: manifests are plain dicts, lists and strings, and an ABC
        # isinstance() costs several times more. Other types take the general checks.
        kind = type(value)
        if kind is str:
            out.append(f"{head} {_SCALARS.get(value) or _new_string(value)}\n")
        elif kind is dict or (kind is not list and isinstance(value, Mapping)):
            if value:
                out.append(head + "\n")
                cached = (memo.text(value, indent + "  ", None)
                          if memo is not None and key in _SHARED_VALUES else None)
                if cached is None:
                    _mapping(value, indent + "  ", out, None, memo)
                else:
                    out.append(cached)
            else:
                out.append(head + " {}\n")
        elif kind is list or kind is tuple or isinstance(value, list | tuple):
            if value:
                out.append(head + "\n")
                _sequence(value, indent, out, memo if key in _SHARED_ITEMS else None)
            else:
                out.append(head + " []\n")
        elif kind is LiteralText:
            out.append(f"{head} {literal_text(value, indent + '  ')}\n")
        else:
            out.append(f"{head} {_scalar(value)}\n")


def _sequence(items: Iterable[Any], indent: str, out: list[str],
              memo: SharedText | None = None) -> None:
    """Write ``items``; with ``memo``, mapping items shared between documents are cached."""
    inner = indent + "  "
    dash = indent + "- "
    for item in items:
        kind = type(item)
        if kind is str:
            out.append(f"{dash}{_SCALARS.get(item) or _new_string(item)}\n")
        elif kind is dict or (kind is not list and isinstance(item, Mapping)):
            if item:
                # The first key shares the "- " line; the rest align under it.
                cached = memo.text(item, inner, dash) if memo is not None else None
                if cached is None:
                    _mapping(item, inner, out, dash, memo)
                else:
                    out.append(cached)
            else:
                out.append(f"{dash}{{}}\n")
        elif kind is list or kind is tuple or isinstance(item, list | tuple):
            if item:
                out.append(f"{indent}-\n")
                _sequence(item, inner, out)
            else:
                out.append(f"{dash}[]\n")
        elif kind is LiteralText:
            out.append(f"{dash}{literal_text(item, inner)}\n")
        else:
            out.append(f"{dash}{_scalar(item)}\n")


def dump_document(data: Mapping[str, Any], memo: SharedText | None = None) -> str:
    """One YAML document (a mapping), without the ``---`` separator."""
    out: list[str] = []
    _mapping(data, "", out, None, memo)
    return "".join(out) if out else "{}\n"


def mapping_text(data: Mapping[str, Any], indent: str) -> str:
    """The text of ``data``'s items as a mapping written at ``indent`` writes them (without a
    memo). A mapping's text is its items' texts in order, however they are grouped
    (:func:`dump_document`'s, for a nonempty one at ``""``); a nonempty mapping or list
    value's item is :func:`nested_head`, then the value's items: the mapping's (at
    ``indent`` plus two spaces), or the list's (:func:`sequence_item_text` at ``indent``).
    Used to check a text in parts (:mod:`meshplan.load.canonical`)."""
    out: list[str] = []
    _mapping(data, indent, out)
    return "".join(out)


def nested_head(key: str, indent: str) -> str:
    """What :func:`mapping_text` writes before the items of a nonempty mapping or list value
    of ``key`` at ``indent``: ``key:`` (or ``? key`` then ``:``), and a line break."""
    heads = _HEADS.get(indent) or _new_heads(indent)
    return (heads.get(key) or _new_head(heads, key, indent)) + "\n"


def sequence_item_text(item: Any, indent: str) -> str:
    """The text of one item of a list, the value of a key at ``indent`` (without a memo)."""
    out: list[str] = []
    _sequence((item,), indent, out)
    return "".join(out)


def dump_documents(documents: Iterable[Mapping[str, Any]],
                   memo: SharedText | None = None) -> str:
    """Several documents separated by ``---``; ``memo`` reuses the text of shared parts."""
    return "---\n".join(dump_document(d, memo) for d in documents)
