"""meshplan's tests: one module per package module (``tests/verify/test_cilium.py`` tests
``meshplan/verify/cilium.py``), cross-cutting end-to-end tests beside them, helpers in
:mod:`tests.support`. CONTRIBUTING.md explains the two tiers (fast and full)."""
