"""Test helpers, in one place: the CLI runner and example repositories (:mod:`.cli`,
:mod:`.repos`), real Kubernetes schemas and kustomize (:mod:`.k8s`), a real git server
(:mod:`.gitserver`), a semantic view of rendered output (:mod:`.semantics`), generated
repositories (:mod:`.strategies`), flows of verify reports (:mod:`.flows`), the nca
translation (:mod:`.netpol`), what CI changes (missing tools fail; the hypothesis profiles:
:mod:`.ci`) and the import-layer checker (:mod:`.layering`)."""
