"""SortedKeys: the patched order is always exactly `sorted()` of the keys asked about."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from exporter.collectors.order import SortedKeys

keys = st.tuples(st.sampled_from(["rw", "site", "nycmesh"]), st.text(max_size=4))
rounds = st.lists(st.sets(keys, max_size=60), min_size=1, max_size=12)


@given(rounds)
def test_always_sorted(key_sets: list[set[tuple[str, str]]]) -> None:
    order: SortedKeys[tuple[str, str]] = SortedKeys()
    for current in key_sets:
        assert order.of(current) == sorted(current)
        assert order.of(dict.fromkeys(current, 0)) == sorted(current)


def test_a_few_changes_are_patched_not_resorted() -> None:
    order: SortedKeys[tuple[str, int]] = SortedKeys()
    first = order.of({("u", i) for i in range(100)})
    second = order.of({("u", i) for i in range(1, 101)})  # one gone, one new
    assert second == [("u", i) for i in range(1, 101)]
    assert first == [("u", i) for i in range(100)]  # an earlier answer is left alone
    same = order.of({("u", i) for i in range(1, 101)})
    assert same is second  # nothing changed: no work at all
