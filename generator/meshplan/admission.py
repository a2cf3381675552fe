"""What the Kubernetes API server and the Cilium agent admit: names, labels and selectors;
and how the agent reads a Service's global and shared annotations (:func:`cilium_service_flags`,
for refinement's warnings and for verify alike).

One rule set, used on the inputs (stage 2: located errors) and on the rendered output (verify:
a policy the Cilium agent rejects enforces nothing, so its pods stay unrestricted by it). The
JSON Schemas in ``schemas/`` repeat the name and label patterns for editors; a test keeps them
equal to the ones here.

Sources: k8s.io/apimachinery ``pkg/util/validation`` (``IsDNS1123Label``, ``IsDNS1035Label``,
``IsDNS1123Subdomain``, ``IsQualifiedName``, ``IsValidLabelValue``, ``IsValidPortName``) and
``pkg/apis/meta/v1/validation.ValidateLabelSelector``; Cilium v1.19 ``pkg/policy/api``
(``selector.go``: a key ``src:name`` is rewritten to ``src.name`` and a key without a source to
``any.name`` *before* it is validated, so the source counts against the 63 characters of the
name part; ``rule_validation.go``: a selector that fails validates the whole policy object
away, and at most 40 ports per ``toPorts`` entry). A key valid here is valid for Cilium 1.19
and for 1.20, which validates the key without its source.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from .vocabulary import (
    GLOBAL_SERVICE_ANNOTATION,
    GLOBAL_SERVICE_ANNOTATION_ALIAS,
    LABEL_SOURCES,
    NAMESPACE_LABELS_PREFIX,
    SHARED_SERVICE_ANNOTATION,
    SHARED_SERVICE_ANNOTATION_ALIAS,
)

# --------------------------------------------------------------------------- names


class NameRule(NamedTuple):
    pattern: str  # a full-match regular expression (also in the JSON Schemas)
    max_length: int
    expected: str  # how messages name it


DNS1123_LABEL = NameRule(
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?", 63,
    "a DNS-1123 label (at most 63 lowercase letters, digits and '-', starting and ending with "
    "a letter or digit)")
DNS1035_LABEL = NameRule(
    "[a-z]([-a-z0-9]*[a-z0-9])?", 63,
    "a DNS-1035 label, as Kubernetes requires for a Service name (at most 63 lowercase "
    "letters, digits and '-', starting with a letter and ending with a letter or digit)")
DNS1123_SUBDOMAIN = NameRule(
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", 253,
    "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.', at most 253 characters)")
# IANA service names: what Kubernetes takes as a port name (IsValidPortName).
PORT_NAME = NameRule(
    "(?!.*--)(?=[a-z0-9-]*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?", 15,
    "a port name (at most 15 lowercase letters, digits and '-', with at least one letter, no "
    "'--', starting and ending with a letter or digit)")
QUALIFIED_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"  # the name part of a label key
LABEL_VALUE = NameRule(
    "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", 63,
    "a Kubernetes label value (at most 63 letters, digits, '-', '_', '.', starting and ending "
    "with a letter or digit)")

# The kinds of object meshplan names, and the rule Kubernetes applies to each.
SERVICE_NAME = DNS1035_LABEL  # ValidateServiceName
NAMESPACE_NAME = DNS1123_LABEL  # ValidateNamespaceName
POLICY_NAME = DNS1123_SUBDOMAIN  # custom resources: NameIsDNSSubdomain

_COMPILED: dict[str, re.Pattern[str]] = {}


def _full(pattern: str) -> re.Pattern[str]:
    compiled = _COMPILED.get(pattern)
    if compiled is None:
        compiled = _COMPILED[pattern] = re.compile(pattern)
    return compiled


def valid_name(rule: NameRule, text: str) -> bool:
    return len(text) <= rule.max_length and _full(rule.pattern).fullmatch(text) is not None


def valid_external_name(text: str) -> bool:
    """``spec.externalName``: a lower-case DNS subdomain; one trailing dot is allowed."""
    return valid_name(DNS1123_SUBDOMAIN, text.removesuffix("."))


def valid_label_value(value: str) -> bool:
    return valid_name(LABEL_VALUE, value)


LABEL_KEY_EXPECTED = ("a Kubernetes label key ([prefix/]name: a lowercase DNS subdomain prefix "
                      "of at most 253 characters, a name of at most 63 letters, digits, '-', "
                      "'_', '.', starting and ending with a letter or digit)")


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes label (or annotation) key, or None (IsQualifiedName)."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return "the prefix before '/' is empty"
    if "/" in prefix:
        return "it has more than one '/'"
    if slash and not valid_name(DNS1123_SUBDOMAIN, prefix):
        return f"the prefix '{prefix}' is not a lowercase DNS subdomain of at most 253 characters"
    if not name:
        return "the name is empty"
    if len(name) > 63:
        return f"the name has {len(name)} characters (at most 63)"
    if _full(QUALIFIED_NAME).fullmatch(name) is None:
        return (f"the name '{name}' has a character other than letters, digits, '-', '_', '.' "
                "or does not start and end with a letter or digit")
    return None


# --------------------------------------------------------------------------- Cilium keys

NO_SOURCE = "any"  # how Cilium reads a key without a source: any label source matches


class SelectorKey(NamedTuple):
    """A policy selector key split the way Cilium splits it: ``[source:]label``."""

    source: str  # the source written, else "any"
    label: str  # the key without its source
    written: bool  # a source was written


def split_source(key: str) -> SelectorKey:
    source, sep, rest = key.partition(":")
    if not sep:
        return SelectorKey(NO_SOURCE, key, False)
    return SelectorKey(source, rest, True)


def bare_key(key: str) -> str | None:
    """The Kubernetes label a selector key addresses: ``k8s:x``, ``any:x`` and ``x`` all
    address ``x``; any other source (``reserved:``, ``cidr:``, a typo like ``k8:``) addresses
    no pod label, so None."""
    source, sep, rest = key.partition(":")  # split_source, without a record (a hot path)
    if not sep:
        return key
    return rest if source in LABEL_SOURCES else None


# Identity label sources Cilium knows besides k8s/any: valid, but never a pod's labels.
OTHER_CILIUM_SOURCES = ("reserved", "cidr", "fqdn", "unspec", "container", "cilium-generated",
                        "kvstore", "k8s-ns", "cni")

SELECTOR_KEY_EXPECTED = ("a Cilium selector key: [k8s: or any:]label key, where the label key "
                         "is [prefix/]name, the prefix a lowercase DNS subdomain and the name "
                         "at most 63 letters, digits, '-', '_', '.' counting Cilium's source "
                         "(so at most 59 without a prefix)")


@lru_cache(maxsize=4096)  # the same few keys recur in every selector of a fleet
def _selector_key_problem(key: str) -> tuple[str, bool] | None:
    """(why, Cilium rejects the policy) for a selector key, or None when it is fine.

    Rejected: the key fails Kubernetes' rule without its source (Cilium 1.20) or with it
    (Cilium 1.19 validates ``<source>.<key>``). Not rejected but wrong: a source that is not
    ``k8s``/``any``, so the key matches no pod label.
    """
    split = split_source(key)
    why = label_key_problem(split.label)
    if why is None:
        why = label_key_problem(f"{split.source}.{split.label}")
        if why is not None:
            why = (f"as Cilium 1.19 reads it ('{split.source}.{split.label}', with its "
                   f"source), {why}")
            if split.label.startswith(NAMESPACE_LABELS_PREFIX) and "/" not in split.label:
                room = 63 - len(f"{NO_SOURCE}.{NAMESPACE_LABELS_PREFIX}")
                why += f": a namespace label's key has at most {room} characters there"
    if why is not None:
        return why, True
    if split.source not in LABEL_SOURCES:
        known = "a Cilium source of non-pod identities" if split.source in \
            OTHER_CILIUM_SOURCES else "an unknown source"
        return (f"'{split.source}:' is {known}: no pod label has it, so the key matches no "
                "pod (write k8s: or no source)"), False
    return None


# --------------------------------------------------------------------------- selectors

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True)
class SelectorProblem:
    """Something wrong in one label selector, located inside it."""

    path: tuple[str | int, ...]  # inside the selector, e.g. ("matchExpressions", 0, "values")
    message: str  # "expected ..., found ..."
    rejected: bool  # the Cilium agent (or the API server) refuses the whole policy object
    at_key: bool = False  # the problem is a mapping key: point at the key, not its value


def selector_problems(data: Any, *, plain_keys: bool = False) -> list[SelectorProblem]:
    """Every problem of one label selector as written in YAML (``matchLabels`` and
    ``matchExpressions``), by the Kubernetes rules and Cilium 1.19's reading of keys.

    ``plain_keys``: the keys are pod labels that also go into a Kubernetes object (a Service's
    selector), so they take no Cilium source prefix.
    """
    if not isinstance(data, Mapping):
        return [SelectorProblem((), f"expected a label selector mapping, found "
                                f"{type(data).__name__}", True)]
    out: list[SelectorProblem] = []
    for key in data:
        if key not in ("matchLabels", "matchExpressions"):
            out.append(SelectorProblem((key,), "expected matchLabels or matchExpressions, "
                                       f"found '{key}'", True, at_key=True))
    labels = data.get("matchLabels")
    if labels is not None and not isinstance(labels, Mapping):
        out.append(SelectorProblem(("matchLabels",), "expected a mapping of label keys to "
                                   "values", True))
    elif labels:
        out += _match_labels(labels, plain_keys)
    expressions = data.get("matchExpressions")
    if expressions is not None and not isinstance(expressions, list):
        out.append(SelectorProblem(("matchExpressions",), "expected a list of expressions",
                                   True))
    elif expressions:
        for i, expression in enumerate(expressions):
            out += _expression(i, expression)
    return out


def _match_labels(labels: Mapping[Any, Any], plain_keys: bool) -> Iterator[SelectorProblem]:
    for key, value in labels.items():
        here = ("matchLabels", key)
        plain = label_key_problem(str(key)) if plain_keys else None
        if plain is not None:
            yield SelectorProblem(here, f"expected {LABEL_KEY_EXPECTED}, found '{key}': {plain}",
                                  True, at_key=True)
        else:
            yield from _key(here, str(key))
        if not isinstance(value, str):
            yield SelectorProblem(here, f"expected a text label value, found {value!r}", True)
        elif not valid_label_value(value):
            yield SelectorProblem(here, f"expected {LABEL_VALUE.expected}, found '{value}'",
                                  True)


def _key(here: tuple[str | int, ...], key: str, *, at_key: bool = True) -> Iterator[
        SelectorProblem]:
    problem = _selector_key_problem(key)
    if problem is not None:
        why, rejected = problem
        yield SelectorProblem(here, f"expected {SELECTOR_KEY_EXPECTED}, found '{key}': {why}",
                              rejected, at_key=at_key)


def _expression(i: int, expression: Any) -> Iterator[SelectorProblem]:
    here: tuple[str | int, ...] = ("matchExpressions", i)
    if not isinstance(expression, Mapping):
        yield SelectorProblem(here, "expected an expression {key, operator, values}", True)
        return
    key, operator, values = (expression.get("key"), expression.get("operator"),
                             expression.get("values"))
    if not isinstance(key, str):
        yield SelectorProblem(here, "expected a key, found none", True)
    else:
        yield from _key((*here, "key"), key, at_key=False)
    if operator not in OPERATORS:
        yield SelectorProblem((*here, "operator"), f"expected one of {', '.join(OPERATORS)}, "
                              f"found {operator!r}", True)
        return
    if values is not None and not isinstance(values, list):
        yield SelectorProblem((*here, "values"), "expected a list of label values", True)
        return
    count = len(values or ())
    if operator in ("In", "NotIn") and not count:
        yield SelectorProblem((*here, "values"), f"expected at least one value for operator "
                              f"{operator}, found none (Cilium rejects the whole policy)", True)
    if operator in ("Exists", "DoesNotExist") and count:
        yield SelectorProblem((*here, "values"), f"expected no values for operator {operator}, "
                              f"found {count} (Cilium rejects the whole policy)", True)
    for j, value in enumerate(values or ()):
        if not isinstance(value, str) or not valid_label_value(value):
            yield SelectorProblem((*here, "values", j), f"expected {LABEL_VALUE.expected}, "
                                  f"found {value!r}", True)


# --------------------------------------------------------------------------- policy rules

MAX_PORTS_PER_PORT_RULE = 40  # Cilium: "too many ports, the max is 40" per toPorts entry


# --------------------------------------------------------------------------- Services


def cilium_service_flags(annotations: Mapping[Any, Any]) -> tuple[bool, bool]:
    """(global, shared) of a Service with these annotations, read as the Cilium agent reads
    them (cilium/cilium ``pkg/annotation/clustermesh.go``: GetAnnotationIncludeExternal,
    GetAnnotationShared; ``pkg/annotation/k8s.go``: Get and the ``*Alias`` keys):

    * each flag is the value of its ``service.cilium.io/`` key when that key is present
      (whatever its value, even ``""``), else of its legacy ``io.cilium/`` alias (Get tries
      the key, then the aliases, and stops at the first present): so the new key wins when
      both are written, also when it says "false" and the alias "true";
    * a value is true when ``strings.ToLower(value) == "true"`` ("True", "TRUE" are true;
      "yes", "1", "" false); Python's ``str.lower`` agrees here, as no character but T, R, U
      and E lowers to t, r, u or e in either;
    * shared is false unless the Service is global ("ignored if the service is not declared
      as global"), and true for a global one that writes neither spelling.

    Affinity (``service.cilium.io/affinity``, alias ``io.cilium/service-affinity``, read the
    same way, lowercased, ignored unless global) only orders the backends a global copy
    picks from, with fail-over, so it is not read here (:mod:`meshplan.verify.services`),
    except for the values :func:`meshplan.verify.services.unmodelled_affinity` finds.

    A value that is not a string (Kubernetes admits only strings) is present and not true;
    verify reports it as an error (:mod:`meshplan.verify.cilium`).
    """
    is_global = _cilium_true(annotations, GLOBAL_SERVICE_ANNOTATION,
                             GLOBAL_SERVICE_ANNOTATION_ALIAS, False)
    return is_global, is_global and _cilium_true(annotations, SHARED_SERVICE_ANNOTATION,
                                                 SHARED_SERVICE_ANNOTATION_ALIAS, True)


def _cilium_true(annotations: Mapping[Any, Any], key: str, alias: str, default: bool) -> bool:
    """annotation.Get(obj, key, alias) compared to "true" in any case; ``default`` when
    neither key is present."""
    for name in (key, alias):
        if name in annotations:
            value = annotations[name]
            return isinstance(value, str) and value.lower() == "true"
    return default
