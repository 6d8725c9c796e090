"""How fast are rewards, metrics and title matching? (the PPO loop and stage 06 call them per list)

Scores 10,000 synthetic lists of 10 items (rewards + metrics, all six intents), parses and
exact-matches their text, and fuzzy-matches 1,000 unknown titles against an 18,000-title synthetic
catalog, comparing our nearest-title matcher with the reference code's "first title within
distance 3" rule (speed on a sample, and how often each recovers the title that was misspelt).

Run: `nice .venv/bin/python benchmarks/parse_rewards.py` (one core; ends with one key=value line).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import random
import string
import time

import pandas as pd
from rapidfuzz.distance import Levenshtein

from recnb import record
from recnb.answer import normalise_title, parse_titles
from recnb.catalog import Catalog
from recnb.metrics import aggregate, measure_list
from recnb.rewards import score_list
from recnb.tasks import Intent

N_ITEMS, N_LISTS, N_FUZZY, N_NAIVE = 18_000, 10_000, 1_000, 200
INTENTS = [
    Intent("I0"),
    Intent("+C", "C0"),
    Intent("-C", "C0"),
    Intent("<=", "C0", 0.2),
    Intent(">=", "C0", 0.3),
    Intent("~=", "C0", 0.3),
]


def synthetic_catalog(rng: random.Random) -> pd.DataFrame:
    """18,000 unique titles of 1–4 pseudo-words and a year, 8 categories, skewed popularity."""
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))).title() for _ in range(3000)]
    titles: dict[str, None] = {}
    while len(titles) < N_ITEMS:
        titles[f"{' '.join(rng.choices(words, k=rng.randint(1, 4)))} ({rng.randint(1930, 2020)})"] = None
    ids = range(1, N_ITEMS + 1)
    return pd.DataFrame(
        {
            "item_id": list(ids),
            "title": list(titles),
            "categories": [[f"C{rng.randrange(8)}"] for _ in ids],
            "popularity": [int(rng.paretovariate(1.2)) for _ in ids],
        }
    )


def misspell(title: str, rng: random.Random) -> str:
    """1–3 random character edits (substitute, insert or delete)."""
    chars = list(title)
    for _ in range(rng.randint(1, 3)):
        pos, op = rng.randrange(len(chars)), rng.randrange(3)
        if op == 0:
            chars[pos] = rng.choice(string.ascii_lowercase)
        elif op == 1:
            chars.insert(pos, rng.choice(string.ascii_lowercase))
        elif len(chars) > 1:
            del chars[pos]
    return "".join(chars)


def time_scoring(cat: Catalog, rng: random.Random) -> tuple[float, float, float]:
    """Seconds for rewards, for metrics and for parse + exact match of N_LISTS lists."""
    c0 = cat.items_in("C0")
    cases = []
    for _ in range(N_LISTS):
        items = rng.sample(range(1, N_ITEMS + 1), 12)
        out = items[2:] + [None]  # 11 entries for k=10: some None, one beyond k
        out[rng.randrange(10)] = out[rng.randrange(10)]  # a repeat now and then
        cases.append((out, items[:2], {i: rng.randrange(5000) for i in items}))
    texts = [
        "\n".join(f"{i}. {cat.title(x) if x else 'Unknown'}" for i, x in enumerate(c[0], 1)) for c in cases
    ]
    t0 = time.perf_counter()
    for n, (out, hist, rank) in enumerate(cases):
        score_list(
            out, k=10, target=hist[0] + 1, history=hist, rank=rank, intent=INTENTS[n % 6], category_items=c0
        )
    t1 = time.perf_counter()
    rows = [
        measure_list(
            out,
            [""] * len(out),
            k=10,
            target=hist[0] + 1,
            history=hist,
            intent=INTENTS[n % 6],
            category_items=c0,
        )
        for n, (out, hist, rank) in enumerate(cases)
    ]
    aggregate(rows)
    t2 = time.perf_counter()
    for text in texts:
        cat.match_many(parse_titles(text))
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def naive_first_within_3(keys: list[str], ids: list[int], query: str) -> int | None:
    """The reference code's rule: the first catalog title (in catalog order) within distance 3."""
    for key, item in zip(keys, ids):
        if Levenshtein.distance(query, key, score_cutoff=3) <= 3:
            return item
    return None


def main() -> None:
    rng = random.Random(0)
    items = synthetic_catalog(rng)
    t = time.perf_counter()
    cat = Catalog(items)
    build_s = time.perf_counter() - t
    reward_s, metric_s, parse_s = time_scoring(cat, rng)
    picks = rng.sample(range(N_ITEMS), N_FUZZY)
    queries = [misspell(items.title[i], rng) for i in picks]
    truth = [int(items.item_id[i]) for i in picks]
    t = time.perf_counter()
    found = cat.match_many(queries, fuzzy=True)
    fuzzy_s = time.perf_counter() - t
    keys, ids = [normalise_title(x) for x in items.title], items.item_id.tolist()
    t = time.perf_counter()
    naive = [naive_first_within_3(keys, ids, normalise_title(q)) for q in queries[:N_NAIVE]]
    naive_s = (time.perf_counter() - t) * N_FUZZY / N_NAIVE
    ours_ok = sum(f == g for f, g in zip(found, truth)) / N_FUZZY
    ours_ok_sample = sum(f == g for f, g in zip(found[:N_NAIVE], truth)) / N_NAIVE
    naive_ok = sum(f == g for f, g in zip(naive, truth)) / N_NAIVE
    per_k = 1000 / N_LISTS
    print(f"catalog of {N_ITEMS} titles indexed in {build_s:.2f} s")
    print(f"rewards (score_list)        {1000 * reward_s * per_k:8.1f} ms per 1,000 lists of 10")
    print(f"metrics (measure_list+agg)  {1000 * metric_s * per_k:8.1f} ms per 1,000 lists of 10")
    print(f"parse + exact match         {1000 * parse_s * per_k:8.1f} ms per 1,000 lists of 10")
    print(f"fuzzy, nearest (ours)       {fuzzy_s:8.2f} s per 1,000 misspelt titles, recovers {ours_ok:.1%}")
    print(
        f"fuzzy, first within 3 (ref) {naive_s:8.2f} s per 1,000 (from {N_NAIVE}), recovers {naive_ok:.1%} "
        f"(ours on the same {N_NAIVE}: {ours_ok_sample:.1%})"
    )
    print(record.summary_line(
        "parse_rewards", reward_ms_per_1k=1000 * reward_s * per_k, metrics_ms_per_1k=1000 * metric_s * per_k,
        parse_match_ms_per_1k=1000 * parse_s * per_k, fuzzy_s_per_1k=fuzzy_s, ref_fuzzy_s_per_1k=naive_s,
        fuzzy_recovered=ours_ok, ref_recovered=naive_ok))


if __name__ == "__main__":
    main()
