"""Reward rules of the paper (§2.3, Eq. 1–5 and Algorithm 1), the one definition PPO uses.

Conventions settled in DESIGN.md §6: items are indexed i = 1..N in output order; "history" is the
items shown in the prompt; an item is illegal when it is not in the catalog, repeats an earlier
item, is in the history, or sits at i > k. Algorithm 1 is implemented as printed in the appendix
except for one typo: its I2 ≥m branch first tests `Count_in > k` (never true for legal items),
which we read as `Count_in > k·m`, mirroring the ≤m branch (as the authors' code does).

k·m is compared as the exact fraction `recnb.tasks.target_count`, so m = 0.3 with k = 10 gives exactly 3.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from recnb.tasks import PROPORTION_KINDS, Intent, target_count


@dataclass
class ListScore:
    """Every reward quantity of one generated list (per-position lists follow output order)."""

    legal: list[bool]  # per position
    scores: list[float]  # Eq. 1
    control: list[float]  # Algorithm 1 (Scores^ctl)
    item_rewards: list[float]  # Eq. 2
    discounted: list[float]  # Eq. 3 (Scores*)
    count_in: int  # legal items in C
    count_out: int  # legal items not in C
    list_control: float  # Eq. 4
    list_reward: float  # Eq. 5, unscaled


def legality(items: Sequence[int | None], *, k: int, history: Collection[int]) -> list[bool]:
    """Whether each item is legal: in the catalog, not a repeat, not in the history, i <= k."""
    seen: set[int] = set()
    legal = []
    for i, item in enumerate(items, start=1):
        legal.append(item is not None and item not in seen and item not in history and i <= k)
        if item is not None:
            seen.add(item)
    return legal


def score_list(
    items: Sequence[int | None],
    *,
    k: int,
    target: int | None,
    history: Collection[int],
    rank: Mapping[int, int],
    intent: Intent,
    category_items: Collection[int],
    control_weight: float = 0.5,
) -> ListScore:
    """Item- and list-level rewards of one generated list.

    Args:
        items: Catalog ids in output order; None for a title not in the catalog.
        k: Number of items the prompt asked for.
        target: The user's ground-truth next item (None when there is none).
        history: Ids shown in the prompt.
        rank: Teacher's 0-based full-ranking position (history masked) of each legal id.
        intent: The prompt's control intention.
        category_items: Ids in `intent.category` (empty for I0).
        control_weight: w in R_item = (1 - w)·Scores + w·Scores^ctl (Eq. 2) and R_list =
            (1 - w)·sum(Scores*) + w·Score^ctl_list (Eq. 5); the paper's 0.5 weighs both halves
            alike. Not a paper knob: a larger w pays more for following the intention than for
            the teacher's preference and the list-level illegal penalty (no effect on I0).

    Returns:
        The `ListScore`; PPO scales `list_reward` by its own factor (10 in the paper).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not 0 <= control_weight <= 1:
        raise ValueError(f"control_weight must be in [0, 1], got {control_weight}")
    history = set(history)
    legal = legality(items, k=k, history=history)
    scores = [_preference(item, ok, target, rank) for item, ok in zip(items, legal)]
    control, count_in, count_out = control_scores(
        items, legal, scores, k=k, intent=intent, category_items=category_items
    )
    discounted = [s / math.log2(i + 2) if ok else -1.0 for i, (s, ok) in enumerate(zip(scores, legal), 1)]
    list_control = _list_control(intent, k, count_in, count_out, sum(discounted))
    w = control_weight
    return ListScore(
        legal=legal,
        scores=scores,
        control=control,
        item_rewards=[(1 - w) * s + w * c for s, c in zip(scores, control)],
        discounted=discounted,
        count_in=count_in,
        count_out=count_out,
        list_control=list_control,
        list_reward=(1 - w) * sum(discounted) + w * list_control,
    )


def _preference(item: int | None, legal: bool, target: int | None, rank: Mapping[int, int]) -> float:
    """Eq. 1: -1 illegal, +1 target, else 1 / log2(Rank + 3)."""
    if not legal:
        return -1.0
    if item == target:
        return 1.0
    if item not in rank:
        raise ValueError(f"rank has no entry for item {item}; pass the teacher's rank of every listed id")
    return 1.0 / math.log2(rank[item] + 3)


def control_scores(
    items: Sequence[int | None],
    legal: Sequence[bool],
    scores: Sequence[float],
    *,
    k: int,
    intent: Intent,
    category_items: Collection[int],
) -> tuple[list[float], int, int]:
    """Algorithm 1 (Scores^ctl), with the ≥m correction described in the module docstring.

    Returns:
        The per-item control scores, Count_in and Count_out over legal items.
    """
    km = target_count(k, intent.m) if intent.kind in PROPORTION_KINDS else Fraction(0)
    if not isinstance(category_items, (set, frozenset)):
        category_items = set(category_items)  # membership is tested once per item
    control: list[float] = []
    count_in = count_out = 0
    for item, ok, score in zip(items, legal, scores):
        if not ok:
            control.append(-1.0)  # illegal: -1 and not counted
            continue
        inside = item in category_items
        count_in, count_out = count_in + inside, count_out + (not inside)
        if intent.kind == "I0":
            control.append(score)
        elif intent.kind in ("+C", "-C"):
            control.append(1.0 if inside == (intent.kind == "+C") else 0.0)
        else:
            control.append(_proportion_step(intent.kind, inside, count_in, count_out, k, km))
    return control, count_in, count_out


def _proportion_step(kind: str, inside: bool, count_in: int, count_out: int, k: int, km: Fraction) -> float:
    """One step of Algorithm 1's I2 branches (counts already include the current item)."""
    room_out = k - km  # how many items may (≤m) or must (≥m) lie outside C
    if kind == "<=":
        if count_out > room_out:
            return 0.5
        return 1.0 if not inside else (0.5 if count_in < km else 0.0)
    if kind == ">=":
        if count_in > km:  # printed as "> k" in the paper, a typo (see module docstring)
            return 0.5
        return 1.0 if inside else (0.5 if count_out < room_out else 0.0)
    if inside:  # "~="
        return 1.0 if count_in <= km else 0.0
    if count_in >= km:
        return 1.0
    return 0.5 if count_out <= room_out else 0.0


def _list_control(intent: Intent, k: int, count_in: int, count_out: int, discounted_sum: float) -> float:
    """Eq. 4: Score^ctl_list."""
    if intent.kind == "I0":
        return discounted_sum
    if intent.kind == "+C":
        gap: Fraction | int = k - count_in
    elif intent.kind == "-C":
        gap = k - count_out
    else:
        km = target_count(k, intent.m)
        gap = {"<=": max(count_in - km, 0), ">=": max(km - count_in, 0), "~=": abs(count_in - km)}[
            intent.kind
        ]
    return 1.0 / math.log2(float(gap) + 2)
