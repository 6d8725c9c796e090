"""Label augmentation (paper §2.2.2): answer lists that satisfy each instruction, built from the teacher.

The first item is the ground-truth target; the other k-1 come from the teacher's ranking (SASRec,
history masked) filtered to obey the instruction, and, only when the teacher's list runs short,
from the category's catalog by popularity. A sample that cannot be labelled correctly raises
`SkipSample` with a reason; the caller counts it (never a wrong label, never a crash).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recnb import columns as col
from recnb.rewards import target_count


class SkipSample(Exception):
    """A sample that cannot be built correctly; `reason` is the counter key in stats.json."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Catalog:
    """Items by id: titles, category sets, and per-category lists in popularity order."""

    titles: dict[int, str]
    categories: dict[int, frozenset[str]]
    by_category: dict[str, tuple[int, ...]]
    by_popularity: tuple[int, ...]

    @classmethod
    def from_items(cls, items: pd.DataFrame) -> Catalog:
        """Build from stage 01's `items.parquet` frame (item_id, title, categories, popularity)."""
        missing = {col.ITEM, col.TITLE, col.CATEGORIES, col.POPULARITY} - set(items.columns)
        if missing:
            raise ValueError(f"items frame lacks column(s) {sorted(missing)}; rerun stage 01_data_duckdb")
        # Most popular first, item id breaks ties: a fixed order makes the fill deterministic.
        ordered = items.sort_values([col.POPULARITY, col.ITEM], ascending=[False, True])
        ids = [int(i) for i in ordered[col.ITEM]]
        titles = dict(zip(ids, ordered[col.TITLE].astype(str)))
        cats = {i: frozenset(str(c) for c in cs) for i, cs in zip(ids, ordered[col.CATEGORIES])}
        by_cat: dict[str, list[int]] = {}
        for i in ids:
            for c in sorted(cats[i]):
                by_cat.setdefault(c, []).append(i)
        return cls(titles, cats, {c: tuple(v) for c, v in sorted(by_cat.items())}, tuple(ids))

    def in_category(self, item: int, category: str) -> bool:
        """Whether `item` carries `category`."""
        return category in self.categories.get(item, ())

    def title_list(self, ids: Iterable[int]) -> list[str]:
        """Titles of `ids`, in order."""
        return [self.titles[i] for i in ids]


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

    def accept(item: int, chosen: list[int]) -> bool:
        return catalog.in_category(item, category) == positive

    backup = catalog.by_category.get(category, ()) if positive else catalog.by_popularity
    return fill_list([target], [teacher, backup], k, history, accept)


def proportion_bounds(kind: str, k: int, m: float) -> tuple[int, int]:
    """(min, max) number of items in C that satisfy an I2 rule: ≤ m, ≥ m or ≈ m (exactly round(k·m)).

    k·m is the exact fraction of `recnb.rewards.target_count`, the one CPA and the rewards use,
    so float noise (10 × 0.3 = 3.0000000000000004) cannot move a bound by one item.
    """
    km = target_count(k, m)
    if kind == "<=":
        return 0, math.floor(km)
    if kind == ">=":
        return math.ceil(km), k
    if kind == "~=":
        return round(km), round(km)
    raise ValueError(f"proportion kind {kind!r} is not one of '<=', '>=', '~='")


def label_proportion(
    target: int, teacher: Sequence[int], history: Sequence[int], k: int, category: str, kind: str, m: float,
    catalog: Catalog,
) -> list[int]:
    """I2: target first, then teacher items in and out of C, in teacher order, so the rule holds exactly."""
    lo, hi = proportion_bounds(kind, k, m)
    target_in = catalog.in_category(target, category)
    if (target_in and hi < 1) or (not target_in and k - lo < 1):
        raise SkipSample("target_breaks_rule")

    def accept(item: int, chosen: list[int]) -> bool:
        n_in = sum(catalog.in_category(i, category) for i in chosen)
        if catalog.in_category(item, category):
            return n_in < hi
        return len(chosen) - n_in < k - lo

    return fill_list([target], [teacher, catalog.by_popularity], k, history, accept)


def negative_category(target: int, teacher: Sequence[int], catalog: Catalog, top: int = 10) -> str:
    """The category most frequent in the teacher's top `top` items that the target does not carry.

    Ties go to the alphabetically first category, so the choice is deterministic.
    """
    counts = Counter(c for item in teacher[:top] for c in catalog.categories.get(item, ()))
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
