"""What CI changes for the tests, decided in one place.

* :func:`ci_is_set`: with ``CI`` set (``.ci/run`` on GitHub, or ``CI=true bash .ci/run``),
  a test whose real tool is missing fails instead of skipping.
* Hypothesis profiles: ``ci`` runs every property test with the example count written in it;
  ``dev`` (the default without CI) a tenth of it, for the edit-run loop. ``HYPOTHESIS_PROFILE``
  chooses explicitly. Tests write ``@settings(max_examples=examples(300))``.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest
from hypothesis import settings

PROFILE_VARIABLE = "HYPOTHESIS_PROFILE"
PROFILES = ("ci", "dev")
DEV_SHARE = 10  # dev runs 1/DEV_SHARE of a test's examples ...
DEV_MINIMUM = 5  # ... but at least this many

settings.register_profile("ci", deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=100 // DEV_SHARE)


def ci_is_set() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_tool(reason: str) -> NoReturn:
    """A real tool a test needs is missing: skip locally, fail when CI is set."""
    if ci_is_set():
        pytest.fail(f"{reason} (CI is set, so the test must run)", pytrace=False)
    pytest.skip(reason)


def active_profile() -> str:
    chosen = os.environ.get(PROFILE_VARIABLE, "").strip()
    if chosen:
        if chosen not in PROFILES:
            raise ValueError(f"{PROFILE_VARIABLE}: expected one of {', '.join(PROFILES)}, "
                             f"found {chosen!r}")
        return chosen
    return "ci" if ci_is_set() else "dev"


def load_profile() -> None:
    settings.load_profile(active_profile())


def examples(count: int) -> int:
    """A property test's example count: ``count`` under ci, a tenth (at least 5) under dev."""
    if active_profile() == "ci":
        return count
    return max(DEV_MINIMUM, count // DEV_SHARE)
