"""From generated text to catalog ids: parse a numbered list, then match titles to the catalog.

One parser and one matcher serve both the PPO rewards (stage 05) and the evaluation (stage 06), so
a title counts as the same item in training and in the tables. The matcher choice (`fuzzy`) is a
parameter both stages pass the same way.

Fuzzy matching takes the *nearest* catalog title within Levenshtein distance 3 of the normalised
text (ties go to the most popular item); the reference code took the first title within distance 3
in catalog order, which can pick a worse match than an exact-looking neighbour.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from recnb import columns as col

MAX_DISTANCE = 3  # Levenshtein distance of a fuzzy match (DESIGN.md §6)

_LINE = re.compile(r"[^\r\n]+")
_BULLET = re.compile(r"[-*•·▪‣]\s+")
# "1." / "1)" / "1 -" / "#1." at the start of a line; "1.5" is a number, not numbering.
_NUMBER = re.compile(r"#?\d{1,6}(?:[.)](?!\d)|\s*[-–—](?=\s))\s*")
_QUOTE_PAIRS = (('"', '"'), ("'", "'"), ("“", "”"), ("‘", "’"), ("«", "»"), ("`", "`"), ("**", "**"))
_APOSTROPHES = re.compile(r"['’‘`]")
_PUNCT = re.compile(r"[\W_]+")
_FUZZY_CHUNK = 256  # queries per rapidfuzz call: bounds the distance matrix to ~5 MB for 18k titles


@dataclass(frozen=True)
class ParsedLine:
    """One list entry of a generated text.

    Attributes:
        title: The entry without numbering, bullet, surrounding quotes or whitespace.
        start: Offset in the text of the title's first character.
        end: Offset just past the title's last character (PPO puts the item reward on the
            token holding character `end - 1`).
        numbered: Whether the line carried a number or bullet.
    """

    title: str
    start: int
    end: int
    numbered: bool


def parse_lines(text: str) -> list[ParsedLine]:
    """Split generated text into list entries with their character spans.

    Empty lines are dropped; when some lines are numbered (or bulleted), lines without a number
    are chatter ("Here are 10 movies:") and are dropped too. Never raises on any `str`.
    """
    if not isinstance(text, str):
        return []
    lines = [_parse_line(m.group(), m.start()) for m in _LINE.finditer(text)]
    lines = [line for line in lines if line.title]
    if any(line.numbered for line in lines):
        lines = [line for line in lines if line.numbered]
    return lines


def parse_titles(text: str) -> list[str]:
    """Titles of a generated list, one per entry, in output order (see `parse_lines`)."""
    return [line.title for line in parse_lines(text)]


def _parse_line(line: str, offset: int) -> ParsedLine:
    start, end = 0, len(line)
    while start < end and line[start].isspace():
        start += 1
    numbered = False
    for pattern in (_BULLET, _NUMBER):
        m = pattern.match(line, start)
        if m:
            start, numbered = m.end(), True
    while end > start and line[end - 1].isspace():
        end -= 1
    start, end = _strip_quotes(line, start, end)
    return ParsedLine(line[start:end], offset + start, offset + end, numbered)


def _strip_quotes(line: str, start: int, end: int) -> tuple[int, int]:
    """Drop matching quote pairs around a title (only pairs: "'Til There Was You" keeps its ')."""
    changed = True
    while changed:
        changed = False
        for left, right in _QUOTE_PAIRS:
            inner = end - start - len(left) - len(right)
            if inner > 0 and line.startswith(left, start) and line.endswith(right, start, end):
                start, end, changed = start + len(left), end - len(right), True
        while start < end and line[start].isspace():
            start += 1
        while end > start and line[end - 1].isspace():
            end -= 1
    return start, end


def normalise_title(title: str) -> str:
    """Matching key of a title: NFKC, case-folded, apostrophes dropped, other punctuation -> space.

    "Don't Look Now (1973)" and "dont look now 1973" share the key "dont look now 1973".
    """
    text = unicodedata.normalize("NFKC", title).casefold()
    text = _APOSTROPHES.sub("", text)
    return _PUNCT.sub(" ", text).strip()


class Catalog:
    """The items a model may recommend: title matching and category membership.

    Args:
        items_df: Stage-01 items frame with `item_id`, `title`, `categories` (list of str) and,
            optionally, `popularity` (breaks ties between equally near titles; 0 when absent).
    """

    def __init__(self, items_df: pd.DataFrame) -> None:
        missing = [c for c in (col.ITEM, col.TITLE, col.CATEGORIES) if c not in items_df.columns]
        if missing:
            raise ValueError(f"items frame lacks column(s) {missing}; pass stage 01's items.parquet")
        frame = items_df.assign(
            _pop=items_df.get(col.POPULARITY, 0),
            _key=items_df[col.TITLE].astype(str).map(normalise_title),
        )
        # Most popular first (then lowest id): the first of equal keys/distances wins below.
        frame = frame.sort_values(["_pop", col.ITEM], ascending=[False, True], kind="stable")
        unique = frame.drop_duplicates("_key")
        self._by_key: dict[str, int] = dict(zip(unique["_key"], unique[col.ITEM].astype(int)))
        self._keys: list[str] = unique["_key"].tolist()
        self._key_ids = unique[col.ITEM].to_numpy(dtype=np.int64)
        self._titles: dict[int, str] = dict(zip(frame[col.ITEM].astype(int), frame[col.TITLE].astype(str)))
        self._by_category: dict[str, frozenset[int]] = _category_index(frame)

    def __len__(self) -> int:
        return len(self._titles)

    @property
    def categories(self) -> list[str]:
        """Every category name, sorted."""
        return sorted(self._by_category)

    def title(self, item_id: int) -> str:
        """Catalog title of an item id."""
        return self._titles[int(item_id)]

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

    def in_category(self, item_id: int | None, category: str) -> bool:
        """Whether an item carries `category` (None, an unmatched title, never does)."""
        return item_id is not None and int(item_id) in self.items_in(category)

    def items_in(self, category: str) -> frozenset[int]:
        """Ids of every item in `category`."""
        if category not in self._by_category:
            raise KeyError(f"category {category!r} is not in the catalog; known: {self.categories[:8]}...")
        return self._by_category[category]


def _category_index(frame: pd.DataFrame) -> dict[str, frozenset[int]]:
    pairs = frame[[col.ITEM, col.CATEGORIES]].explode(col.CATEGORIES).dropna()
    return {
        str(cat): frozenset(ids.astype(int).tolist()) for cat, ids in pairs.groupby(col.CATEGORIES)[col.ITEM]
    }
