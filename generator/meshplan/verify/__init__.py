"""``meshplan verify``: the connectivity the rendered output allows, against what is intended.

Two connectivity models (:mod:`.connectivity`) over the same endpoints (:mod:`.endpoints`),
built independently: the *actual* one read from the rendered YAML with Cilium's semantics
(:mod:`.cilium`), the *intended* one from the requirements (:mod:`.intent`). Every flow they
disagree on is an error naming the requirement line responsible (:mod:`.compare`);
:func:`.report.verify` runs it all. Ports and addresses are sets of ranges (:mod:`.ports`,
:mod:`.addresses`), selectors are evaluated over identity labels (:mod:`.selectors`).

A reader of another data plane's output (say Istio's AuthorizationPolicies) fills the same
:class:`.connectivity.Connectivity` model beside :mod:`.cilium`.
"""
