"""The monitoring meshplan renders from the same inputs (``spec.observability`` of ``kind: Mesh``).

``strict`` (the namespaces meshplan makes STRICT), ``plan`` (what to watch in each cluster),
``check`` (located refusals and warnings), ``rules`` (PrometheusRules), ``federation``
(ScrapeConfigs), ``dashboards`` (Grafana), ``render`` (the objects the clusters' Kustomize
roots gain).
"""
