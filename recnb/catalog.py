"""The one catalog: the items a model may recommend, their titles, categories and popularity order.

Built from stage 01's `items.parquet` frame; used to render titles (stage 03), to label by
category (stages 03 and 06), and to match generated titles back to items (stages 04-06), so every
stage agrees on what an item is.

Fuzzy matching takes the *nearest* catalog title within Levenshtein distance 3 of the normalised
text (ties go to the most popular item); the reference code took the first title within distance 3
in catalog order, which can pick a worse match than an exact-looking neighbour.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from recnb import artifacts as col
from recnb.answer import normalise_title

MAX_DISTANCE = 3  # Levenshtein distance of a fuzzy match (DESIGN.md §6)
_FUZZY_CHUNK = 256  # queries per rapidfuzz call: bounds the distance matrix to ~5 MB for 18k titles


class Catalog:
    """Items by id: titles, title matching, categories, and popularity order.

    Args:
        items_df: Stage-01 items frame with `item_id`, `title`, `categories` (list of str) and,
            optionally, `popularity` (most popular first everywhere an order is needed; 0 when absent).

    Attributes:
        titles: Title of each item id.
        by_popularity: Every item id, most popular first (item id breaks ties).
        by_category: Item ids of each category, in popularity order.
    """

    def __init__(self, items_df: pd.DataFrame) -> None:
        missing = [c for c in (col.ITEM, col.TITLE, col.CATEGORIES) if c not in items_df.columns]
        if missing:
            raise ValueError(f"items frame lacks column(s) {missing}; pass stage 01's items.parquet")
        frame = items_df.assign(
            _pop=items_df.get(col.POPULARITY, 0),
            _key=items_df[col.TITLE].astype(str).map(normalise_title),
        )
        # Most popular first (then lowest id): the first of equal keys/distances wins below, and
        # label filling walks items in this fixed order.
        frame = frame.sort_values(["_pop", col.ITEM], ascending=[False, True], kind="stable")
        ids = [int(i) for i in frame[col.ITEM]]
        self.titles: dict[int, str] = dict(zip(ids, frame[col.TITLE].astype(str)))
        self.by_popularity: tuple[int, ...] = tuple(ids)
        self._categories = {i: frozenset(str(c) for c in cs) for i, cs in zip(ids, frame[col.CATEGORIES])}
        by_cat: dict[str, list[int]] = {}
        for i in ids:
            for c in sorted(self._categories[i]):
                by_cat.setdefault(c, []).append(i)
        self.by_category: dict[str, tuple[int, ...]] = {c: tuple(v) for c, v in sorted(by_cat.items())}
        self._members = {c: frozenset(v) for c, v in self.by_category.items()}
        unique = frame.drop_duplicates("_key")
        self._by_key: dict[str, int] = dict(zip(unique["_key"], unique[col.ITEM].astype(int)))
        self._keys: list[str] = unique["_key"].tolist()
        self._key_ids = unique[col.ITEM].to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.titles)

    @property
    def categories(self) -> list[str]:
        """Every category name, sorted."""
        return list(self.by_category)

    def title(self, item_id: int) -> str:
        """Catalog title of an item id."""
        return self.titles[int(item_id)]

    def title_list(self, ids: Iterable[int]) -> list[str]:
        """Titles of `ids`, in order."""
        return [self.titles[int(i)] for i in ids]

    def categories_of(self, item_id: int) -> frozenset[str]:
        """The categories an item carries (empty for an unknown id)."""
        return self._categories.get(int(item_id), frozenset())

    def items_in(self, category: str) -> frozenset[int]:
        """Ids of every item in `category`."""
        if category not in self._members:
            raise KeyError(f"category {category!r} is not in the catalog; known: {self.categories[:8]}...")
        return self._members[category]

    def in_category(self, item_id: int | None, category: str) -> bool:
        """Whether an item carries `category` (None, an unmatched title, never does)."""
        return item_id is not None and category in self._categories.get(int(item_id), ())

    def match(self, title: str, fuzzy: bool = False) -> int | None:
        """Item id of a generated title, or None when it is not in the catalog.

        Args:
            title: One parsed title.
            fuzzy: Also accept the nearest catalog title within Levenshtein distance 3.
        """
        return self.match_many([title], fuzzy=fuzzy)[0]

    def match_many(self, titles: Sequence[str], fuzzy: bool = False) -> list[int | None]:
        """`match` for many titles at once (fuzzy misses go to rapidfuzz in vectorised batches)."""
        keys = [normalise_title(t) if isinstance(t, str) else "" for t in titles]
        found: list[int | None] = [self._by_key.get(key) for key in keys]
        if fuzzy:
            misses = [i for i, (key, hit) in enumerate(zip(keys, found)) if hit is None and key]
            for i, item in zip(misses, self._nearest([keys[i] for i in misses])):
                found[i] = item
        return found

    def _nearest(self, keys: list[str]) -> Iterable[int | None]:
        for lo in range(0, len(keys), _FUZZY_CHUNK):
            dist = process.cdist(
                keys[lo : lo + _FUZZY_CHUNK],
                self._keys,
                scorer=Levenshtein.distance,
                score_cutoff=MAX_DISTANCE,
                dtype=np.int8,
                workers=1,
            )
            best = dist.argmin(axis=1)  # first minimum = most popular among equally near titles
            near = dist[np.arange(len(best)), best] <= MAX_DISTANCE
            yield from (int(self._key_ids[b]) if ok else None for b, ok in zip(best, near))
