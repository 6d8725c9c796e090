"""Label augmentation (paper §2.2.2): answer lists that satisfy each instruction, built from the teacher.

The first item is the ground-truth target; the other k-1 come from the teacher's ranking (SASRec,
history masked) filtered to obey the instruction, and, only when the teacher's list runs short,
from the category's catalog by popularity. A sample that cannot be labelled correctly raises
`SkipSample` with a reason; the caller counts it (never a wrong label, never a crash).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from recnb.catalog import Catalog
from recnb.tasks import Intent, intent_rule, proportion_bounds


class SkipSample(Exception):
    """A sample that cannot be built correctly; `reason` is the counter key in stats.json."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def fill_list(
    first: Sequence[int],
    sources: Iterable[Iterable[int]],
    k: int,
    exclude: Iterable[int],
    accept: Callable[[int, list[int]], bool],
) -> list[int]:
    """`first` then items of `sources` (in order) that `accept` the list so far, until k items.

    Items in `exclude` (the history) and repeats are never added. Raises SkipSample when fewer
    than k items qualify.
    """
    chosen, seen = list(first), set(exclude) | set(first)
    for source in sources:
        for item in source:
            if len(chosen) >= k:
                return chosen
            if item not in seen and accept(item, chosen):
                chosen.append(item)
                seen.add(item)
    if len(chosen) < k:
        raise SkipSample("too_few_items")
    return chosen


def label_i0(target: int, teacher: Sequence[int], history: Sequence[int], k: int) -> list[int]:
    """I0: the target, then the teacher's top items (history and target excluded), first k."""
    return fill_list([target], [teacher], k, history, lambda item, chosen: True)


def label_category(
    target: int, teacher: Sequence[int], history: Sequence[int], k: int, category: str, positive: bool,
    catalog: Catalog,
) -> list[int]:
    """I1±C: target, then teacher items in C (+C) or outside C (−C); catalog by popularity if short."""
    if catalog.in_category(target, category) != positive:
        raise SkipSample("target_breaks_rule")
    rule = intent_rule(Intent("+C" if positive else "-C", category), k, lambda i: catalog.in_category(i, category))
    backup = catalog.by_category.get(category, ()) if positive else catalog.by_popularity
    return fill_list([target], [teacher, backup], k, history, rule)


def label_proportion(
    target: int, teacher: Sequence[int], history: Sequence[int], k: int, category: str, kind: str, m: float,
    catalog: Catalog,
) -> list[int]:
    """I2: target first, then teacher items in and out of C, in teacher order, so the rule holds exactly."""
    lo, hi = proportion_bounds(kind, k, m)
    target_in = catalog.in_category(target, category)
    if (target_in and hi < 1) or (not target_in and k - lo < 1):
        raise SkipSample("target_breaks_rule")
    rule = intent_rule(Intent(kind, category, m), k, lambda i: catalog.in_category(i, category))
    return fill_list([target], [teacher, catalog.by_popularity], k, history, rule)


def negative_category(target: int, teacher: Sequence[int], catalog: Catalog, top: int = 10) -> str:
    """The category most frequent in the teacher's top `top` items that the target does not carry.

    Ties go to the alphabetically first category, so the choice is deterministic.
    """
    counts = Counter(c for item in teacher[:top] for c in catalog.categories_of(item))
    ranked = sorted((-n, c) for c, n in counts.items() if not catalog.in_category(target, c))
    if not ranked:
        raise SkipSample("no_negative_category")
    return ranked[0][1]


def label_search(rng: np.random.Generator, k: int, category: str, positive: bool, catalog: Catalog) -> list[int]:
    """I3: k random catalog items in C (positive) or outside C (negative)."""
    pool = catalog.by_category.get(category, ())
    if not positive:
        pool = tuple(i for i in catalog.by_popularity if not catalog.in_category(i, category))
    if len(pool) < k:
        raise SkipSample("category_too_small")
    return [int(pool[j]) for j in rng.choice(len(pool), size=k, replace=False)]


def add_candidates(
    rng: np.random.Generator, label: Sequence[int], history: Sequence[int], n: int, catalog: Catalog
) -> list[int]:
    """Candidate list: the label items + random other items (not in history), without replacement, shuffled."""
    taken = set(label) | set(history)
    others = [i for i in catalog.by_popularity if i not in taken]
    extra = max(0, min(n - len(label), len(others)))
    picked = [others[j] for j in rng.choice(len(others), size=extra, replace=False)] if extra else []
    candidates = list(label) + picked
    return [candidates[j] for j in rng.permutation(len(candidates))]


def palr_window(train_items: Sequence[int], k: int, max_len: int) -> tuple[list[int], list[int]]:
    """PALR: the user's real next k items after a history cut (no teacher), from the train part only.

    The label is the last k train items and the history the ≤ max_len items before them, so no
    valid/test item leaks into training. k shrinks when the sequence is short.

    Raises:
        SkipSample: `history_too_short` when fewer than 2 train items exist.
    """
    k = min(k, len(train_items) - 1)
    if k < 1:
        raise SkipSample("history_too_short")
    history = list(train_items[:-k])[-max_len:]
    return history, list(train_items[-k:])
