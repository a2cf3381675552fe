"""Test helpers, in one place: the CLI runner and example repositories (:mod:`.cli`,
:mod:`.repos`), real Kubernetes schemas and kustomize (:mod:`.k8s`), a real git server
(:mod:`.gitserver`), a semantic view of rendered output (:mod:`.semantics`), generated
repositories (:mod:`.strategies`), flows of verify reports (:mod:`.flows`), the nca
translation (:mod:`.netpol`), hypothesis profiles (:mod:`.profiles`) and the import-layer
checker (:mod:`.layering`)."""
