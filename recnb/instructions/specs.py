"""One instruction sample before rendering (`Spec`): who, which task, which category, which label.

`teacher_spec` makes the I0/I1/I2 samples of a user from the teacher's row (paper §2.2.2 and the
test settings of §3.2.2-3.2.3: +C, ≥ and ≈ use one of the target's categories; −C and ≤ use the
category most frequent in the teacher's top 10 that excludes the target); `search_spec` makes
the catalog-only I3 samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recnb import artifacts as col
from recnb import prompts
from recnb.catalog import Catalog
from recnb.instructions.labels import (
    SkipSample,
    add_candidates,
    label_category,
    label_i0,
    label_proportion,
    label_search,
    negative_category,
)
from recnb.tasks import INTENT_KIND

PROPORTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # m of I2 in training (issue 5)
TEACHER_COLUMNS = ("user_id", "split", "history", "target", "topk_items")


@dataclass(frozen=True)
class TeacherRow:
    """Stage 02's output for one (user, split): the history it saw, the target, its masked top-N."""

    history: tuple[int, ...]
    target: int
    topk: tuple[int, ...]


@dataclass(frozen=True)
class Spec:
    """One sample: everything needed to render its prompt and completion."""

    task: str
    user_id: int | None
    split: str
    k: int
    history: Sequence[int]
    target: int | None
    label: Sequence[int]
    category: str | None = None
    m: float | None = None
    candidates: Sequence[int] | None = None
    phrase: int = 0


def index_teacher(frame: pd.DataFrame, source: str = col.TEACHER_FILE) -> dict[tuple[int, str], TeacherRow]:
    """Index stage 02's frame by (user_id, split).

    Raises:
        ValueError: naming the file and the missing columns when the frame breaks the contract.
    """
    missing = [c for c in TEACHER_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{source} lacks column(s) {missing}; rerun stage 02_sasrec (CONTRACTS.md)")
    index = {}
    for user, split, history, target, topk in frame[list(TEACHER_COLUMNS)].itertuples(index=False):
        history = tuple(int(i) for i in history)
        index[(int(user), str(split))] = TeacherRow(history, int(target), tuple(int(i) for i in topk))
    return index


def target_category(rng: np.random.Generator, target: int, catalog: Catalog) -> str:
    """A random one of the target's categories (sorted first, so the draw is reproducible)."""
    cats = sorted(catalog.categories_of(target))
    if not cats:
        raise SkipSample("target_without_category")
    return cats[int(rng.integers(len(cats)))]


def teacher_spec(
    task: str,
    user: int,
    split: str,
    trow: TeacherRow,
    k: int,
    rng: np.random.Generator,
    catalog: Catalog,
    m: float | None = None,
    n_candidates: int = 0,
) -> Spec:
    """An I0/I1±C/I2 sample of one user, labelled from the teacher's ranking.

    Args:
        n_candidates: > 0 builds the select-from-candidates variant with that many candidates.

    Raises:
        SkipSample: empty history, target in history, no usable category, or too few items.
    """
    history, target = trow.history, trow.target
    if not history:
        raise SkipSample("empty_history")
    if target in history:
        raise SkipSample("target_in_history")
    phrase = int(rng.integers(len(prompts.POSITIVE_INTENTIONS)))
    kind = INTENT_KIND[task]
    category = None
    if kind == "I0":
        label = label_i0(target, trow.topk, history, k)
    else:
        use_target = kind in ("+C", ">=", "~=")
        category = target_category(rng, target, catalog) if use_target else negative_category(target, trow.topk, catalog)
        if kind in ("+C", "-C"):
            label = label_category(target, trow.topk, history, k, category, kind == "+C", catalog)
        else:
            label = label_proportion(target, trow.topk, history, k, category, kind, m, catalog)
    candidates = add_candidates(rng, label, history, n_candidates, catalog) if n_candidates else None
    return Spec(task, user, split, k, history, target, label, category, m, candidates, phrase)


def search_spec(task: str, rng: np.random.Generator, catalog: Catalog, n_candidates: int = 0) -> Spec:
    """An I3±C item-search sample: k ~ U{1..10} random catalog items in (+C) or outside (−C) a category.

    The category is that of a random item, so categories are drawn in proportion to their size.
    """
    k = int(rng.integers(1, 11))
    item = catalog.by_popularity[int(rng.integers(len(catalog.by_popularity)))]
    category = target_category(rng, item, catalog)
    phrase = int(rng.integers(len(prompts.POSITIVE_INTENTIONS)))
    label = label_search(rng, k, category, task.endswith("+C"), catalog)
    candidates = add_candidates(rng, label, (), n_candidates, catalog) if n_candidates else None
    return Spec(task, None, "train", k, (), None, label, category, None, candidates, phrase)
