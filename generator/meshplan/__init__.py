"""meshplan: turn high-level multi-cluster requirements into per-cluster Cilium manifests.

The pipeline, one module per stage, immutable records between stages:

    load -> schema -> model -> check -> refine -> render -> write -> publish

``load`` reads files safely and keeps every node's position; ``schema`` checks structure
against the JSON Schemas shipped in ``meshplan/schemas``; ``model`` builds frozen records;
``check`` validates meaning (references, uniqueness, consent); ``refine`` turns requirements
into per-cluster Kubernetes objects; ``render`` serialises them deterministically; ``write``
swaps the output folder atomically; ``publish`` commits it to the GitOps output branch.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("meshplan")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
