"""Evaluation metrics of the paper (§3.1, Eq. 6–7 and Table 5), shared by every stage that reports.

Per-list functions take catalog ids in output order (None = a title not in the catalog) and look
at the first K = k positions, the length the prompt asked for, as the paper's "@K" says. Following
Eq. 6 literally, a repeated in-category item counts twice in TCP and CPA; repeats are reported on
their own by `formatting`. The reference code summed formatting errors per list and called them
rates; `aggregate` reports them as percentages of items, and every key carries its unit (`UNITS`).

No answer satisfies an intention by naming nothing. A position among the first K that holds no
catalog item (the list is short, empty or unparseable, or the title is invented) never counts in the
intention's favour: it is a miss for TCP(+C), an item of C for TCP(-C) (`tcp_at_k(...,
unknown_in_c=True)`), and for CPA it takes whichever side breaks the proportion rule. So an empty
answer scores TCP(+C) 0, TCP(-C) 100 % and fails CPA of every kind; HR, NDCG and CorrectCount are
0 for it; the formatting error rates are per item produced, so an empty answer adds no item to them
(CorrectCount is the column that shows it, and `n_items` the denominator).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from recnb.answer import normalise_title
from recnb.tasks import PROPORTION_KINDS, Intent, intent_of, target_count

if TYPE_CHECKING:
    from recnb.catalog import Catalog

UNITS = {
    "n_lists": "count of lists",
    "n_items": "count of items among the first K of each list",
    "hr": "HR@K, mean over lists, fraction in [0, 1]",
    "ndcg": "NDCG@K, mean over lists, in [0, 1]",
    "tcp_pct": "TCP@K, % of the first K positions in C, mean over lists",
    "tcp_plus_c_pct": "TCP@K of the I1+C lists (want high), % as tcp_pct",
    "tcp_minus_c_pct": "TCP@K of the I1-C lists (want low), % as tcp_pct; positions without a catalog item count as in C",
    "cpa_pct": "CPA, % of lists meeting the proportion rule however their non-catalog positions are read",
    "correct_count_pct": "CorrectCount, % of lists with exactly k items",
    "repeat_item_pct": "RepeatItem@K, % of items",
    "non_exist_pct": "NonExist@K, % of items",
    "in_history_pct": "InHistory@K, % of items",
}


def hit_at_k(items: Sequence[int | None], target: int, k: int) -> float:
    """HR@K of one list: 1.0 when the target is among the first k items."""
    return 1.0 if target in items[:k] else 0.0


def ndcg_at_k(items: Sequence[int | None], target: int, k: int) -> float:
    """NDCG@K with one relevant item: 1 / log2(pos + 1), pos = 1-based position within the first k."""
    head = list(items[:k])
    return 1.0 / math.log2(head.index(target) + 2) if target in head else 0.0


def tcp_at_k(items: Sequence[int | None], category_items: Collection[int], k: int, *,
             unknown_in_c: bool = False) -> float:
    """Eq. 6: the share of the K positions holding an item of the target category (the sum is
    divided by K, so the missing positions of a short list are misses).

    Args:
        unknown_in_c: count every position without a catalog item (missing or not in the catalog) as
            in C: the reading for "no C" (TCP(-C), lower is better), where an empty or invented
            answer must not look obedient.
    """
    count = _count_in(items, category_items, k)
    return (count + _unknown(items, k) if unknown_in_c else count) / k


def cpa(items: Sequence[int | None], category_items: Collection[int], k: int, intent: Intent) -> float:
    """Eq. 7: 1.0 when Count_in (first k positions) satisfies the I2 rule with k·m taken exactly,
    whatever the positions without a catalog item would be: the rule must hold with all of them out
    of C and with all of them in C (an empty answer fails every kind).

    "≈" accepts |Count_in − k·m| ≤ 1, i.e. one item either side.
    """
    if intent.kind not in PROPORTION_KINDS:
        raise ValueError(f"CPA is defined for I2 intents {PROPORTION_KINDS}, got {intent.kind!r}")
    low, km = _count_in(items, category_items, k), target_count(k, intent.m)
    rule = {"<=": lambda n: n <= km, ">=": lambda n: n >= km, "~=": lambda n: abs(n - km) <= 1}[intent.kind]
    return 1.0 if rule(low) and rule(low + _unknown(items, k)) else 0.0


def formatting(
    items: Sequence[int | None], titles: Sequence[str], k: int, history: Collection[int]
) -> dict[str, int]:
    """Formatting counts of one list (Table 5), over its first k entries.

    Args:
        items: Matched ids (None = not in the catalog), one per title.
        titles: The parsed titles; unmatched repeats are recognised by their normalised title.
        k: Number of items the prompt asked for.
        history: Ids shown in the prompt.

    Returns:
        `correct_count` (1 when exactly k titles were produced), counts of `repeat`,
        `non_exist` and `in_history` items, and `n_items` (entries looked at, ≤ k).
    """
    if len(items) != len(titles):
        raise ValueError(f"formatting got {len(items)} ids for {len(titles)} titles; pass one id per title")
    history = set(history)
    seen: set[Any] = set()
    counts = {"repeat": 0, "non_exist": 0, "in_history": 0}
    for item, title in zip(items[:k], titles[:k]):
        key = item if item is not None else ("title", normalise_title(title))
        counts["repeat"] += key in seen
        counts["non_exist"] += item is None
        counts["in_history"] += item is not None and item in history
        seen.add(key)
    return {"correct_count": int(len(titles) == k), **counts, "n_items": min(len(items), k)}


def measure_list(
    items: Sequence[int | None],
    titles: Sequence[str],
    *,
    k: int,
    target: int | None,
    history: Collection[int],
    intent: Intent,
    category_items: Collection[int],
) -> dict[str, Any]:
    """Every metric of one list, as one row for `aggregate` (None where a metric does not apply:
    no target -> no hit/ndcg, I0 -> no tcp, not I2 -> no cpa).

    `items` may come from a parquet column: NaN is read as None and numpy ints as ints.
    """
    items = [None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v) for v in items]
    row: dict[str, Any] = {"hit": None, "ndcg": None, "tcp": None, "cpa": None}
    if target is not None:
        row["hit"], row["ndcg"] = hit_at_k(items, target, k), ndcg_at_k(items, target, k)
    if intent.kind != "I0":
        row["tcp"] = tcp_at_k(items, category_items, k, unknown_in_c=intent.kind == "-C")
    if intent.kind in PROPORTION_KINDS:
        row["cpa"] = cpa(items, category_items, k, intent)
    return {**row, **formatting(items, titles, k, history)}


def score_answer(record: Mapping[str, Any], titles: Sequence[str], catalog: Catalog, *,
                 fuzzy: bool = False) -> dict[str, Any]:
    """Every metric of one answer to one instruction record: the one scoring path of SFT validation
    (stage 04), PPO validation (stage 05) and the test tables (stage 06).

    Args:
        record: a stage-03 record (its `k`, `target`, `history` and intent are read).
        titles: the answer's parsed titles (`recnb.answer.parse_titles`).
        catalog: the catalog titles are matched against.
        fuzzy: the matcher (nearest title within Levenshtein distance 3, or exact).

    Returns:
        `measure_list`'s row.
    """
    return measure_record(record, catalog.match_many(list(titles), fuzzy=fuzzy), titles, catalog)


def measure_record(record: Mapping[str, Any], items: Sequence[int | None], titles: Sequence[str],
                   catalog: Catalog) -> dict[str, Any]:
    """`measure_list` with the record's k, target, history and intent (ids already matched)."""
    intent = intent_of(record)
    target = record.get("target")
    target = None if target is None or (isinstance(target, float) and math.isnan(target)) else int(target)
    return measure_list(items, titles, k=int(record["k"]), target=target, history=record["history"],
                        intent=intent, category_items=catalog.items_in(intent.category) if intent.category else frozenset())


# How `aggregate` turns per-list rows into table figures (`recnb.evaluation.intervals` resamples the same):
MEAN_FIGURES = (  # (per-list key, figure, scale): mean over the lists where the key is present
    ("hit", "hr", 1),
    ("ndcg", "ndcg", 1),
    ("tcp", "tcp_pct", 100),
    ("cpa", "cpa_pct", 100),
    ("correct_count", "correct_count_pct", 100),
)
ITEM_FIGURES = (  # (per-list count, figure): 100 * summed count / summed `n_items`
    ("repeat", "repeat_item_pct"),
    ("non_exist", "non_exist_pct"),
    ("in_history", "in_history_pct"),
)
# "Illegal items" (the paper's formatting errors), the sum of the three: % of items, one count each
ILLEGAL = tuple(figure for _, figure in ITEM_FIGURES)


def aggregate(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Table figures from per-list rows (`measure_list`); units are in each key and in `UNITS`.

    Means skip rows where a metric is None or NaN; percentages of items divide summed counts by
    summed `n_items` (`MEAN_FIGURES`, `ITEM_FIGURES`). A figure with nothing to average is NaN (null
    in metrics.json).
    """
    rows = list(rows)
    n_items = sum(int(r.get("n_items", 0)) for r in rows)
    out: dict[str, float] = {"n_lists": len(rows), "n_items": n_items}
    for key, name, scale in MEAN_FIGURES:
        values = [float(r[key]) for r in rows if _present(r.get(key))]
        out[name] = scale * sum(values) / len(values) if values else math.nan
    for key, name in ITEM_FIGURES:
        total = sum(int(r.get(key, 0)) for r in rows)
        out[name] = 100 * total / n_items if n_items else math.nan
    return out


TCP_COLUMNS = {"I1+C": "tcp_plus_c_pct", "I1-C": "tcp_minus_c_pct"}  # the paper's TCP(+C)↑ and TCP(-C)↓


def tcp_by_task(rows: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> dict[str, float]:
    """TCP(+C) and TCP(-C) in %: `aggregate`'s `tcp_pct` over the rows of the I1+C and of the I1-C
    task (`tasks[i]` is row i's task; NaN when there is none). Over mixed tasks `tcp_pct` averages
    lists where a high TCP is wanted (+C), a low one (-C) and one near m (I2), so it says little alone.
    """
    return {name: aggregate([r for r, t in zip(rows, tasks) if t == task])["tcp_pct"]
            for task, name in TCP_COLUMNS.items()}


def _count_in(items: Sequence[int | None], category_items: Collection[int], k: int) -> int:
    return sum(item is not None and item in category_items for item in items[:k])


def _unknown(items: Sequence[int | None], k: int) -> int:
    """Positions among the first k that hold no catalog item (missing or None)."""
    return k - sum(item is not None for item in items[:k])


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))
