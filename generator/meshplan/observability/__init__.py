"""The monitoring meshplan renders from the same inputs (``spec.observability`` of ``kind: Mesh``).

``plan`` (what to watch in each cluster; the STRICT namespaces are the identity layer's,
:func:`meshplan.mesh.identity.strict_namespace_causes`),
``check`` (located refusals and warnings), ``rules`` (PrometheusRules), ``federation``
(ScrapeConfigs), ``dashboards`` (Grafana), ``render`` (the objects the clusters' Kustomize
roots gain).
"""
