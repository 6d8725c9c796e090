"""Metrics (HR, NDCG, TCP Eq. 6, CPA Eq. 7, formatting, aggregation) against hand-computed values."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recnb.metrics import (
    UNITS,
    aggregate,
    cpa,
    formatting,
    hit_at_k,
    measure_list,
    ndcg_at_k,
    tcp_at_k,
    tcp_by_task,
)
from recnb.tasks import Intent

C = frozenset(range(1, 10))  # ids 1..9 are in the target category


def test_perfect_list():
    items = [5, 1, 2, 3]
    assert hit_at_k(items, 5, 4) == 1.0
    assert ndcg_at_k(items, 5, 4) == 1.0  # 1/L(1 + 1)
    assert tcp_at_k(items, C, 4) == 1.0
    assert formatting(items, ["a", "b", "c", "d"], 4, history={7}) == {
        "correct_count": 1,
        "repeat": 0,
        "non_exist": 0,
        "in_history": 0,
        "n_items": 4,
    }


def test_hit_and_ndcg_only_look_at_the_first_k():
    items = [15, 17, 19]
    assert ndcg_at_k(items, 19, 3) == pytest.approx(0.5)  # 1/L(3 + 1)
    assert ndcg_at_k(items, 17, 3) == pytest.approx(0.6309297535714575)  # 1/L(3)
    assert (hit_at_k(items, 19, 2), ndcg_at_k(items, 19, 2)) == (0.0, 0.0)
    assert (hit_at_k(items, 4, 3), ndcg_at_k([None, 4], 4, 3)) == (0.0, pytest.approx(0.6309297535714575))


def test_tcp_divides_by_k_and_counts_repeats():
    assert tcp_at_k([1, 12, None, 3], C, 4) == 0.5  # 2 of 4
    assert tcp_at_k([1, 12, None, 3], C, 5) == 0.4  # a short list: 2 of 5
    assert tcp_at_k([1, 12, None, 3], C, 2) == 0.5  # only the first 2 count
    assert tcp_at_k([1, 1], C, 2) == 1.0  # Eq. 6 counts positions; repeats show in `formatting`


@pytest.mark.parametrize(
    "kind, count_in, expected",
    # k = 10, m = 0.3 -> k·m = 3: one under, exactly, one over (and ±2 for "~=")
    [
        ("<=", 2, 1.0),
        ("<=", 3, 1.0),
        ("<=", 4, 0.0),
        (">=", 2, 0.0),
        (">=", 3, 1.0),
        (">=", 4, 1.0),
        ("~=", 1, 0.0),
        ("~=", 2, 1.0),
        ("~=", 3, 1.0),
        ("~=", 4, 1.0),
        ("~=", 5, 0.0),
    ],
)
def test_cpa_at_the_boundary(kind, count_in, expected):
    items = list(range(1, count_in + 1)) + list(range(11, 21 - count_in))
    assert len(items) == 10
    assert cpa(items, C, 10, Intent(kind, "C", 0.3)) == expected


def test_no_answer_satisfies_an_intention():
    """Issue 19: positions without a catalog item never count in the intention's favour."""
    empty, invented = [], [None] * 10
    for kind in ("<=", ">=", "~="):
        for m in (0.2, 0.3):
            assert cpa(empty, C, 10, Intent(kind, "C", m)) == 0.0, (kind, m)
            assert cpa(invented, C, 10, Intent(kind, "C", m)) == 0.0, (kind, m)
    assert tcp_at_k(empty, C, 10, unknown_in_c=True) == 1.0  # "no C" answered by nothing: 100 %
    assert tcp_at_k(invented, C, 10) == 0.0  # "more C" answered by nothing: 0 %


def test_cpa_reads_unknown_positions_against_the_rule():
    out_of_c = list(range(11, 19))  # 8 catalog items, none in C
    at_most_20 = Intent("<=", "C", 0.2)  # k·m = 2
    assert cpa(out_of_c + [None, None], C, 10, at_most_20) == 1.0  # 0..2 in C: holds either way
    assert cpa(out_of_c[:7] + [None] * 3, C, 10, at_most_20) == 0.0  # 3 unknown could be 3 in C
    assert cpa(out_of_c[:7], C, 10, at_most_20) == 0.0  # a short list: its 3 missing positions too
    at_least_30 = Intent(">=", "C", 0.3)
    assert cpa([1, 2, 3] + [None] * 7, C, 10, at_least_30) == 1.0  # 3 known in C is enough
    assert cpa([1, 2] + [None] * 8, C, 10, at_least_30) == 0.0
    about_30 = Intent("~=", "C", 0.3)  # 2..4 in C
    assert cpa([1, 2, 3] + out_of_c[:6] + [None], C, 10, about_30) == 1.0  # 3 or 4
    assert cpa([1, 2, 3] + out_of_c[:5] + [None] * 2, C, 10, about_30) == 0.0  # could be 5


def test_tcp_minus_c_counts_unknown_positions_in_c():
    assert tcp_at_k([11, None, 1, 12], C, 4, unknown_in_c=True) == 0.5  # None and 1
    assert tcp_at_k([11, 12], C, 4, unknown_in_c=True) == 0.5  # 2 missing positions
    row = measure_list([11, None], ["K", "Zed"], k=4, target=None, history=(), intent=Intent("-C", "C"),
                       category_items=C)
    assert row["tcp"] == 0.75  # measure_list applies the rule to -C lists
    row = measure_list([11, None], ["K", "Zed"], k=4, target=None, history=(), intent=Intent("+C", "C"),
                       category_items=C)
    assert row["tcp"] == 0.0


def test_cpa_uses_exact_km():
    items = [1, 2, 3, 11, 12, 13, 14, 15, 16, 17]
    assert cpa(items, C, 10, Intent(">=", "C", 0.1 * 3)) == 1.0  # floats: 3 >= 3.0000000000000004 fails


def test_cpa_rejects_non_proportion_intents():
    with pytest.raises(ValueError, match="CPA is defined"):
        cpa([1], C, 1, Intent("+C", "C"))


def test_formatting_counts_every_error_kind_within_k():
    items = [1, 2, 2, None, 3, 4, None]
    titles = ["A", "B", "B", "Zed", "H", "X", "Zed"]
    got = formatting(items, titles, 5, history={3})
    # 7 titles != 5; first 5: one repeat (B), one unknown (Zed), one in history (3)
    assert got == {"correct_count": 0, "repeat": 1, "non_exist": 1, "in_history": 1, "n_items": 5}
    # the 7th entry (a repeated unknown title) only counts once k reaches it
    assert formatting(items, titles, 7, history={3})["repeat"] == 2
    assert formatting([None, None], ["Zed!", "zed"], 2, history=())["repeat"] == 1  # same normalised title


def test_formatting_rejects_misaligned_inputs():
    with pytest.raises(ValueError, match="one id per title"):
        formatting([1, 2], ["a"], 2, history=())


def test_measure_list_and_aggregate_by_hand():
    rows = [
        measure_list(
            [5, 1, 2],
            ["a", "b", "c"],
            k=3,
            target=5,
            history=(),
            intent=Intent("<=", "C", 0.3),
            category_items=C,
        ),
        measure_list(
            [12, 12, None, 5, 13],
            ["p", "p", "q", "r", "s"],
            k=4,
            target=5,
            history={13},
            intent=Intent("+C", "C"),
            category_items=C,
        ),
        measure_list(
            [float("nan"), 14],
            ["q", "t"],
            k=2,
            target=None,
            history=(),
            intent=Intent("I0"),
            category_items=(),
        ),
    ]
    # row 1: hit 1, ndcg 1, tcp 3/3, cpa: 3 in C > 0.9 -> 0, correct, 3 items
    # row 2: hit 1, ndcg 1/L(5), tcp 1/4, no cpa, 5 titles != 4, first 4: repeat 1, unknown 1, in history 0
    # row 3: no target, I0: no tcp/cpa; correct, unknown 1, 2 items
    assert rows[1]["ndcg"] == pytest.approx(1 / math.log2(5))
    agg = aggregate(rows)
    assert agg["n_lists"] == 3 and agg["n_items"] == 9
    assert agg["hr"] == 1.0
    assert agg["ndcg"] == pytest.approx((1 + 0.43067655807339306) / 2)
    assert agg["tcp_pct"] == pytest.approx(100 * (1 + 0.25) / 2)
    assert agg["cpa_pct"] == 0.0
    assert agg["correct_count_pct"] == pytest.approx(200 / 3)
    assert agg["repeat_item_pct"] == pytest.approx(100 / 9)
    assert agg["non_exist_pct"] == pytest.approx(200 / 9)
    assert agg["in_history_pct"] == 0.0
    assert set(agg) <= set(UNITS)
    split = tcp_by_task(rows, ["I2<=", "I1+C", "I0"])  # the mixed 62.5% holds the <= list's 100%
    assert split["tcp_plus_c_pct"] == 25.0 and math.isnan(split["tcp_minus_c_pct"]) and set(split) <= set(UNITS)


def test_aggregate_of_nothing_is_nan():
    agg = aggregate([])
    assert agg["n_lists"] == 0 and math.isnan(agg["hr"]) and math.isnan(agg["repeat_item_pct"])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.integers(1, 20)), max_size=15), st.integers(1, 12), st.integers(1, 20)
)
def test_metric_ranges(items, k, target):
    titles = [str(i) for i in items]
    row = measure_list(
        items, titles, k=k, target=target, history={1, 2}, intent=Intent("~=", "C", 0.5), category_items=C
    )
    assert 0 <= row["ndcg"] <= row["hit"] <= 1
    assert 0 <= row["tcp"] <= 1 and row["cpa"] in (0.0, 1.0)
    assert row["n_items"] == min(len(items), k)
    assert max(row["repeat"], row["non_exist"], row["in_history"]) <= row["n_items"]
