"""The mesh itself: Cilium ClusterMesh and Istio multi-primary, planned from the inventory.

An optional ``kind: Mesh`` inventory document (``inventory/mesh.yaml``) plus per-cluster
``clustermesh`` / ``istio`` entries in the Domain documents. The stages, one module each, with
frozen records between them:

* :mod:`.model` - the Mesh document as a record (built from a schema-valid document);
* :mod:`.flows` - the intended cross-cluster flows, derived from the requirements (the one
  place that answers "which cluster pairs must be able to talk");
* :mod:`.plan` - the mesh plan: members, their ClusterMesh peers, Istio networks and trust
  domains (pure, tolerant of invalid inputs so the checker can word every problem);
* :mod:`.check` - refusals: a mesh that cannot work is an input error, located;
* :mod:`.values` - Helm values of the cilium, istiod and istio/gateway charts;
* :mod:`.render` - the output files (values under ``mesh/``, the objects the clusters'
  Kustomize roots gain, Argo CD Applications and Flux HelmReleases);
* :mod:`.ids` - proposing Cilium cluster IDs for members that lack one.

This package imports nothing at package level, so :mod:`meshplan.model` can name its records.
"""
