"""Reward rules (Eq. 1–5, Algorithm 1) against values computed by hand.

Notation in comments: L(x) = log2(x). Rank 1 gives Scores = 1/L(4) = 0.5, which keeps the I1/I2
cases readable. I2 cases use k = 5, m = 0.4, so k·m = 2 and k − k·m = 3; ids 1..9 are in C,
ids 11..19 are not.
"""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recnb.rewards import ListScore, score_list
from recnb.tasks import Intent, target_count

L = math.log2
IN_C = frozenset(range(1, 10))
RANK1 = {i: 1 for i in range(1, 20)}


def run(items, kind, *, k=5, m=None, target=None, history=(), rank=RANK1) -> ListScore:
    intent = Intent(kind, None if kind == "I0" else "C", m)
    cats = () if kind == "I0" else IN_C
    return score_list(
        items, k=k, target=target, history=history, rank=rank, intent=intent, category_items=cats
    )


def test_perfect_i0_list():
    # target first, then teacher ranks 0 and 1: Scores = [1, 1/L(3), 1/L(4)]
    s = run([7, 11, 12], "I0", k=3, target=7, rank={11: 0, 12: 1})
    assert s.legal == [True, True, True]
    assert s.scores == pytest.approx([1.0, 0.6309297535714575, 0.5])
    # Scores* = Scores / L(i + 2): 1/L(3), (1/L(3))/2, 0.5/L(5)
    assert s.discounted == pytest.approx([0.6309297535714575, 0.31546487678572877, 0.2153382790366965])
    assert s.control == s.scores  # I0: Scores^ctl = Scores
    assert s.item_rewards == pytest.approx(s.scores)
    assert s.list_control == pytest.approx(1.1617329093938828)  # I0: sum(Scores*)
    assert s.list_reward == pytest.approx(1.1617329093938828)
    assert (s.count_in, s.count_out) == (0, 3)


def test_every_kind_of_illegal_item():
    # i=1 not in catalog, i=3 repeat of i=2, i=4 in history, i=6 beyond k=5
    s = run([None, 10, 10, 1, 11, 12], "I0", target=7, history={1, 2}, rank={10: 0, 11: 1, 12: 2})
    assert s.legal == [False, True, False, False, True, False]
    assert s.scores == pytest.approx([-1, 1 / L(3), -1, -1, 0.5, -1])
    assert s.discounted == pytest.approx([-1, 1 / L(3) / 2, -1, -1, 0.5 / L(7), -1])
    assert s.list_reward == pytest.approx(-4 + 0.31546487678572877 + 0.1781035935540111)


def test_illegal_items_are_not_counted_in_control():
    s = score_list(
        [None, 10, 10, 1, 11, 12],
        k=5,
        target=7,
        history={1},
        rank={10: 0, 11: 1, 12: 2},
        intent=Intent("+C", "C"),
        category_items={10, 12},
    )
    assert s.control == [-1, 1, -1, -1, 0, -1]
    assert (s.count_in, s.count_out) == (1, 1)
    assert s.list_control == pytest.approx(1 / L(6))  # 1/L((5 - 1) + 2)
    # R_item = 0.5 Scores + 0.5 Scores^ctl
    assert s.item_rewards == pytest.approx([-1, 0.5 / L(3) + 0.5, -1, -1, 0.25, -1])


def test_target_gets_plus_one_whatever_its_rank():
    s = run([3, 4], "I0", k=2, target=4, rank={3: 0, 4: 500})
    assert s.scores == pytest.approx([1 / L(3), 1.0])


def test_history_item_is_illegal_even_when_it_is_the_target():
    s = run([4], "I0", k=1, target=4, history={4})
    assert s.scores == [-1.0]


@pytest.mark.parametrize(
    "kind, items, control, list_control",
    [
        # <=m: out -> 1 unless Count_out > 3 (0.5); in -> 0.5 while Count_in < 2, else 0
        ("<=", [1, 2, 11, 12, 13], [0.5, 0, 1, 1, 1], 1.0),  # Count_in = k·m
        ("<=", [1, 2, 3, 11, 12], [0.5, 0, 0, 1, 1], 1 / L(3)),  # one over: max(3-2,0) = 1
        ("<=", [1, 11, 12, 13, 14], [0.5, 1, 1, 1, 0.5], 1.0),  # one under; 4th out > 3
        # >=m (Count_in > k·m, not "> k"): in -> 1; out -> 0.5 while Count_out < 3, else 0
        (">=", [1, 2, 11, 12, 13], [1, 1, 0.5, 0.5, 0], 1.0),
        (">=", [1, 2, 3, 11, 12], [1, 1, 0.5, 0.5, 0.5], 1.0),  # 3rd in: 3 > 2 -> 0.5
        (">=", [1, 11, 12, 13, 14], [1, 0.5, 0.5, 0, 0], 1 / L(3)),  # max(2-1,0) = 1
        # ~=m: in -> 1 while Count_in <= 2 else 0; out -> 1 once Count_in >= 2, else 0.5/0
        ("~=", [1, 2, 11, 12, 13], [1, 1, 1, 1, 1], 1.0),
        ("~=", [1, 2, 3, 11, 12], [1, 1, 0, 1, 1], 1 / L(3)),
        ("~=", [1, 11, 12, 13, 14], [1, 0.5, 0.5, 0.5, 0], 1 / L(3)),
        ("~=", [11, 12, 13, 14, 1], [0.5, 0.5, 0.5, 0, 1], 1 / L(3)),  # order matters
        # I1: Scores^ctl = in (+C) or out (-C); list: 1/L(k - Count + 2)
        ("+C", [1, 2, 3, 4, 5], [1, 1, 1, 1, 1], 1.0),
        ("+C", [1, 2, 3, 4, 11], [1, 1, 1, 1, 0], 1 / L(3)),
        ("+C", [1, 2, 3, 4, 5, 6], [1, 1, 1, 1, 1, -1], 1.0),  # 6th is beyond k
        ("-C", [11, 12, 13, 14, 15], [1, 1, 1, 1, 1], 1.0),
        ("-C", [11, 12, 13, 14, 1], [1, 1, 1, 1, 0], 1 / L(3)),
        ("-C", [11, 12, 13, 14, 15, 16], [1, 1, 1, 1, 1, -1], 1.0),
    ],
)
def test_control_at_the_km_boundary(kind, items, control, list_control):
    s = run(items, kind, m=0.4 if kind in ("<=", ">=", "~=") else None)
    assert s.control == control
    assert s.list_control == pytest.approx(list_control)


def test_i2_list_reward_and_item_rewards():
    s = run([1, 2, 3, 11, 12], "<=", m=0.4)
    disc = [0.5 / L(3), 0.5 / L(4), 0.5 / L(5), 0.5 / L(6), 0.5 / L(7)]
    assert s.discounted == pytest.approx(disc)
    assert s.item_rewards == pytest.approx([0.5, 0.25, 0.25, 0.75, 0.75])
    assert s.list_reward == pytest.approx(0.5 * sum(disc) + 0.5 / L(3))
    assert s.list_reward == pytest.approx(0.8916315, abs=1e-7)  # 0.5·1.1523332 + 0.5·0.6309298


def test_control_weight_reweights_eq2_and_eq5_but_not_i0():
    # the <= list above at w = 0.8: Scores = 0.5 each, Scores^ctl = [0.5, 0, 0, 1, 1]
    s = score_list([1, 2, 3, 11, 12], k=5, target=None, history=(), rank=RANK1, intent=Intent("<=", "C", 0.4),
                   category_items=IN_C, control_weight=0.8)
    assert s.item_rewards == pytest.approx([0.1 + 0.4, 0.1, 0.1, 0.1 + 0.8, 0.1 + 0.8])
    disc = 0.5 / L(3) + 0.5 / L(4) + 0.5 / L(5) + 0.5 / L(6) + 0.5 / L(7)
    assert s.list_reward == pytest.approx(0.2 * disc + 0.8 / L(3))
    i0 = score_list([11, 12], k=2, target=None, history=(), rank=RANK1, intent=Intent("I0"), category_items=(),
                    control_weight=0.9)  # I0: Scores^ctl = Scores, so any w gives the paper's reward
    assert i0.item_rewards == pytest.approx(i0.scores) and i0.list_reward == pytest.approx(sum(i0.discounted))
    with pytest.raises(ValueError, match="control_weight must be in"):
        score_list([11], k=1, target=None, history=(), rank=RANK1, intent=Intent("I0"), category_items=(),
                   control_weight=1.5)


@pytest.mark.parametrize(
    "kind, items, length", [("I0", [11, 12, 13], 3), ("I0", [11, 12, 13, 14], 4), ("I0", [11, 12], 2)]
)
def test_i0_at_the_k_boundary(kind, items, length):
    # k = 3: exactly k, one over (4th illegal, -1), one under
    s = run(items, kind, k=3)
    expected = [0.5 / L(3), 0.25, 0.5 / L(5), -1][:length]
    assert s.discounted == pytest.approx(expected)
    assert s.list_reward == pytest.approx(sum(expected))


def test_km_is_exact():
    m = 0.1 * 3  # 0.30000000000000004: in floats 10·m > 3
    assert target_count(10, m) == 3
    s = run([1, 2, 3, 11], "~=", k=10, m=m)
    assert s.control == [1, 1, 1, 1.0]  # Count_in = 3 >= k·m exactly (floats would give 0.5)
    assert s.list_control == 1.0  # 1/L(|3 - 3| + 2), exactly


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="rank has no entry for item 11"):
        run([11], "I0", rank={})
    with pytest.raises(ValueError, match="needs m"):
        Intent("<=", "C")
    with pytest.raises(ValueError, match="needs a category"):
        Intent("+C")
    with pytest.raises(ValueError, match="unknown"):
        Intent("I9")
    with pytest.raises(ValueError, match="k must be"):
        run([1], "I0", k=0)


KINDS_M = st.sampled_from([("I0", None), ("+C", None), ("-C", None), ("<=", 0.3), (">=", 0.5), ("~=", 0.7)])


@st.composite
def illegal_lists(draw):
    history = list(range(100, 110))
    prefix = draw(st.lists(st.one_of(st.none(), st.sampled_from(history)), min_size=1, max_size=15))
    k = draw(st.integers(1, len(prefix)))
    tail = draw(st.lists(st.integers(1, 19), max_size=5, unique=True))  # all beyond k
    return prefix + tail, k, history


@settings(max_examples=150, deadline=None)
@given(illegal_lists(), KINDS_M)
def test_all_illegal_list_is_all_minus_one(case, kind_m):
    items, k, history = case
    s = run(items, kind_m[0], k=k, m=kind_m[1], history=history)
    n = len(items)
    assert s.legal == [False] * n
    assert s.scores == s.control == s.item_rewards == s.discounted == [-1.0] * n
    assert (s.count_in, s.count_out) == (0, 0)
    if kind_m[0] == "I0":
        assert s.list_reward == -n


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(1, 19), min_size=1, max_size=12, unique=True),
    st.randoms(use_true_random=False),
    st.dictionaries(st.integers(1, 19), st.integers(0, 400), min_size=19),
    st.sampled_from(["I0", "+C", "-C"]),
)
def test_permuting_legal_non_target_items_keeps_their_scores(items, rnd, rank, kind):
    shuffled = items[:]
    rnd.shuffle(shuffled)
    a = run(items, kind, k=12, target=99, rank=rank)
    b = run(shuffled, kind, k=12, target=99, rank=rank)
    assert dict(zip(items, a.scores)) == dict(zip(shuffled, b.scores))
    assert dict(zip(items, a.control)) == dict(zip(shuffled, b.control))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.integers(1, 19)), max_size=14),
    st.integers(1, 12),
    st.sets(st.integers(1, 19), max_size=4),
    st.integers(1, 19),
    KINDS_M,
)
def test_invariants(items, k, history, target, kind_m):
    s = run(items, kind_m[0], k=k, m=kind_m[1], target=target, history=history)
    assert s.item_rewards == pytest.approx([0.5 * a + 0.5 * b for a, b in zip(s.scores, s.control)])
    assert s.count_in + s.count_out == sum(s.legal)
    assert s.list_reward == pytest.approx(0.5 * sum(s.discounted) + 0.5 * s.list_control)
    if kind_m[0] == "I0":  # R_list of I0 = sum(Scores*)
        assert s.list_reward == pytest.approx(sum(s.discounted))
    else:
        assert set(s.control) <= {-1.0, 0.0, 0.5, 1.0}
        assert 0 < s.list_control <= 1
