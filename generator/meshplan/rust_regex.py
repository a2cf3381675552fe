"""Python ``re`` patterns rewritten to mean the same in Rust's regex engine.

jsonschema matches ``pattern`` with Python's ``re.search``; the compiled validator
(jsonschema-rs) with Rust's regex. They differ: Python's ``$`` also matches before a final
newline, and its ``\\s`` is ``str.isspace`` (Rust's is narrower). :func:`rust_pattern`
rewrites a pattern so both mean the same, and refuses (ValueError) any construct it does not
know, so a new schema construct cannot silently mean something else in Rust;
:func:`rust_dialect` applies it to a whole schema (the copy the compiled validator sees).
"""

from __future__ import annotations

import re
from typing import Any

#: What Python's ``\s`` matches in a ``str`` pattern (exactly the characters ``str.isspace``).
PY_SPACE_RANGES = ((0x09, 0x0D), (0x1C, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680),
                   (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F),
                   (0x3000, 0x3000))
_RUST_SPACE = "".join(f"\\x{{{lo:x}}}" if lo == hi else f"\\x{{{lo:x}}}-\\x{{{hi:x}}}"
                      for lo, hi in PY_SPACE_RANGES)
_QUANTIFIER = re.compile(r"\{[0-9]+(,[0-9]*)?\}")


def rust_pattern(pattern: str) -> str:
    """``pattern`` (Python ``re`` syntax, used with ``re.search``) as the same regex for Rust."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError(f"trailing backslash in pattern {pattern!r}")
            e = pattern[i + 1]
            if e == "s":
                out.append(f"[{_RUST_SPACE}]")
            elif e == "S":
                out.append(f"[^{_RUST_SPACE}]")
            elif e.isascii() and not e.isalnum():
                out.append(_rust_char(e))
            else:
                raise ValueError(f"unsupported escape \\{e} in pattern {pattern!r}")
            i += 2
        elif c == "[":
            text, i = _rust_class(pattern, i)
            out.append(text)
        elif c == "(":
            if pattern.startswith("(?", i):
                head = pattern[i:i + 3]
                if head not in ("(?:", "(?!", "(?="):
                    raise ValueError(f"unsupported group {head!r} in pattern {pattern!r}")
                out.append(head)
                i += 3
            else:
                out.append("(")
                i += 1
        elif c in "*+?":
            if i + 1 < n and pattern[i + 1] == "+":
                raise ValueError(f"unsupported possessive quantifier in pattern {pattern!r}")
            out.append(c)
            i += 1
        elif c == "{" and (m := _QUANTIFIER.match(pattern, i)):
            out.append(m.group())
            i = m.end()
        else:
            out.append({"$": r"(?:\n?\z)", ".": r"[^\n]", "^": "^", ")": ")", "|": "|"}.get(c)
                       or _rust_char(c))
            i += 1
    return "".join(out)


def _rust_char(c: str) -> str:
    return c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):x}}}"


def _rust_class(pattern: str, i: int) -> tuple[str, int]:
    """The character class starting at ``pattern[i] == "["``, and the index after it."""
    n = len(pattern)
    i += 1
    negate = pattern.startswith("^", i)
    i += negate
    parts: list[str] = []

    def atom(j: int) -> tuple[str | None, int]:  # (a single character or None for \s, end)
        if j >= n:
            raise ValueError(f"unterminated character class in pattern {pattern!r}")
        if pattern[j] != "\\":
            return pattern[j], j + 1
        e = pattern[j + 1] if j + 1 < n else ""
        if e == "s":
            return None, j + 2
        if e and e.isascii() and not e.isalnum():
            return e, j + 2
        raise ValueError(f"unsupported escape \\{e} in a class of pattern {pattern!r}")

    if pattern.startswith("]", i):
        raise ValueError(f"unsupported ']' first in a class of pattern {pattern!r}")
    while True:
        if i >= n:
            raise ValueError(f"unterminated character class in pattern {pattern!r}")
        if pattern[i] == "]":
            break
        low, i = atom(i)
        if pattern.startswith("-", i) and not pattern.startswith("-]", i):
            high, i = atom(i + 1)
            if low is None or high is None or ord(low) > ord(high):
                raise ValueError(f"bad character range in pattern {pattern!r}")
            parts.append(f"{_rust_char(low)}-{_rust_char(high)}")
        else:
            parts.append(_RUST_SPACE if low is None else _rust_char(low))
    return "[" + "^" * negate + "".join(parts) + "]", i + 1


def rust_dialect(schema: Any) -> Any:
    """A copy of ``schema`` for the compiled validator: patterns rewritten, ``x-*`` dropped."""
    if isinstance(schema, list):
        return [rust_dialect(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-") or key in ("title", "description"):
            continue
        if key == "pattern":
            out[key] = rust_pattern(value)
        elif key == "patternProperties":
            out[key] = {rust_pattern(k): rust_dialect(v) for k, v in value.items()}
        elif key in ("properties", "$defs", "dependentSchemas"):
            out[key] = {k: rust_dialect(v) for k, v in value.items()}
        elif key in ("enum", "const", "default", "examples"):
            out[key] = value
        else:
            out[key] = rust_dialect(value)
    return out
