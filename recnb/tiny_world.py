"""The tiny world: a seeded synthetic catalog and its users, small enough to learn in CI.

It is the project's miniature of the paper: stage 01 reads it as the `tiny` dataset, and the
`tiny-llama` base model (`recnb.llm`) fits its tokenizer to its vocabulary, so a model of about a
million weights can learn titles, categories and sequences within minutes on one CPU thread.

The signal is deliberately clear, so that both the teacher and the LLM have something to learn:
- categories: every title starts with its main category ("Horror Garden 2"), so a model of a
  million weights can learn to obey "more/no Horror" from the titles within CI time (on ml-100k
  the category of a title must be learned from data: the harder, real problem); a fifth of the
  series carry a second category that the title does not show;
- sequences: items come in series of `EPISODES` ("Horror Garden 1", "Horror Garden 2", ...); a
  user who watched an episode usually watches the next one, else another item of a liked category.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "SciFi")
PLACES = ("Harbor", "River", "Garden", "Tower", "Valley", "Island", "Canyon", "Forest")
EPISODES = 5  # items per series
SEQUEL_P = 0.6  # chance that a user's next item is the next episode of the last one


def catalog_titles() -> list[tuple[str, str]]:
    """(title, main category) of every item the world can hold, in item order."""
    out = []
    for genre in GENRES:
        for place in PLACES:
            out += [(f"{genre} {place} {n}", genre) for n in range(1, EPISODES + 1)]
    return out


def vocabulary() -> list[str]:
    """Texts a tokenizer for this world should know (titles, categories, numbering)."""
    return [title for title, _ in catalog_titles()] + list(GENRES) + [f"{i}. " for i in range(1, 21)]


def make_tiny(seed: int = 0, n_users: int = 400, n_series: int = 24, min_len: int = 8,
              max_len: int = 20) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw (interactions, items) of the tiny world, in stage 01's raw shape (see `recnb.data.sources`).

    Args:
        seed: every draw (catalog subset, extra categories, users, sequences).
        n_users: users; each likes two categories.
        n_series: series drawn from the world's 48 (6 categories x 8 places),
            `EPISODES` items each.
        min_len, max_len: bounds of a user's sequence length.
    """
    rng = np.random.default_rng(seed)
    titles = catalog_titles()
    all_series = len(titles) // EPISODES
    picked = np.sort(rng.choice(all_series, size=min(n_series, all_series), replace=False))
    items = [titles[s * EPISODES + e] for s in picked for e in range(EPISODES)]
    n_items = len(items)
    extra = {}
    for s in range(n_items // EPISODES):  # a fifth of the series carry a second category
        if rng.random() < 0.2:
            main = GENRES.index(items[s * EPISODES][1])
            extra[s] = GENRES[(main + 1 + int(rng.integers(len(GENRES) - 1))) % len(GENRES)]
    item_rows = [(f"i{i:04d}", title, [genre] + ([extra[i // EPISODES]] if i // EPISODES in extra else []))
                 for i, (title, genre) in enumerate(items)]
    by_genre = {g: np.array([i for i, (_, genre) in enumerate(items) if genre == g]) for g in GENRES}
    present = [g for g in GENRES if len(by_genre[g])]
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.5
    rng.shuffle(popularity)
    rows = []
    for u in range(n_users):
        liked = rng.choice(present, size=min(2, len(present)), replace=False)
        pool = np.concatenate([by_genre[g] for g in liked])
        weights = popularity[pool] / popularity[pool].sum()
        seq = [int(rng.choice(pool, p=weights))]
        for _ in range(int(rng.integers(min_len, max_len + 1)) - 1):
            last = seq[-1]
            sequel = last + 1 if (last + 1) % EPISODES and last + 1 < n_items else None
            seq.append(sequel if sequel is not None and rng.random() < SEQUEL_P
                       else int(rng.choice(pool, p=weights)))
        start = 1_600_000_000 + int(rng.integers(0, 10**6))
        rows += [(f"u{u:04d}", f"i{j:04d}", start + 3600 * t) for t, j in enumerate(seq)]
    interactions = pd.DataFrame(rows, columns=["user", "item", "timestamp"]).astype({"timestamp": "int64"})
    return interactions, pd.DataFrame(item_rows, columns=["item", "title", "categories"])
