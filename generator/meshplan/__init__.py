"""meshplan: high-level multi-cluster requirements in, per-cluster Cilium manifests out.

The stages run in this order (:mod:`meshplan.pipeline`); README.md's architecture section maps
every module. ``__version__`` is the one place the version is kept (pyproject.toml reads it).
"""

__version__ = "0.1.0"
