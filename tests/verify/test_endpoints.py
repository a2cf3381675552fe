"""meshplan.verify.endpoints: the endpoint index selects exactly what a scan of every pod does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from meshplan.verify.endpoints import Endpoint, EndpointIndex
from meshplan.verify.selectors import LabelSelector, Term
from meshplan.vocabulary import (
    CILIUM_CLUSTER_LABEL,
    NAMESPACE_LABELS_PREFIX,
    NAMESPACE_NAME_LABEL,
    POD_NAMESPACE_LABEL,
)

from tests.support.ci import examples

# own labels may use the keys Cilium derives (their identity value is then not the label's)
KEYS = ("app", "tier", POD_NAMESPACE_LABEL, CILIUM_CLUSTER_LABEL,
        NAMESPACE_LABELS_PREFIX + NAMESPACE_NAME_LABEL)
VALUES = ("a", "b", "n1", "n2", "m1", "m2")

labels = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3).map(
    lambda d: tuple(sorted(d.items())))
endpoint = st.builds(
    lambda kind, cluster, namespace, name, own: Endpoint(
        kind, "d", cluster, "m" + cluster[-1], namespace, name, own),
    st.sampled_from(("service", "client", "dns", "cidr")), st.sampled_from(("c1", "c2")),
    st.sampled_from(("n1", "n2")), st.sampled_from(("x", "y", "10.0.0.0/8")), labels)
term = st.builds(Term, st.sampled_from((*KEYS, None)),
                 st.sampled_from(("In", "In", "NotIn", "Exists", "DoesNotExist")),
                 st.lists(st.sampled_from(VALUES), max_size=3).map(tuple))
selector = st.lists(term, max_size=3).map(lambda terms: LabelSelector(tuple(terms)))


@settings(max_examples=examples(300))
@given(st.lists(endpoint, max_size=12), selector,
       st.lists(st.sampled_from(KEYS).flatmap(
           lambda k: st.tuples(st.just(k), st.sampled_from(VALUES))), max_size=2))
def test_selecting_through_the_index_is_a_scan(endpoints: list[Endpoint],
                                               chosen: LabelSelector,
                                               wanted: list[tuple[str, str]]) -> None:
    index = EndpointIndex(endpoints)
    pods = [i for i, e in enumerate(endpoints) if e.is_pod]

    def scan(within: list[int]) -> list[int]:
        return [i for i in within if chosen.matches(endpoints[i].identity)]

    def own(within: list[int]) -> list[int]:
        return [i for i in within if all(endpoints[i].label_map.get(k) == v for k, v in wanted)]

    assert index.select(chosen) == scan(pods)
    assert index.of(endpoints) is index
    for cluster in ("c1", "c2", "c3"):
        for namespace in (None, "n1", "n2"):
            place = index.in_place("d", cluster, namespace)
            expected = [i for i in pods if endpoints[i].cluster == cluster
                        and namespace in (None, endpoints[i].namespace)]
            assert list(place) == expected
            for _ in range(2):  # the second time through the place's own index
                assert index.select(chosen, place) == scan(expected)
                assert index.with_labels(place, wanted) == own(expected)
            assert index.select(chosen, list(place)) == scan(expected)
            assert index.with_labels(list(place), wanted) == own(expected)
