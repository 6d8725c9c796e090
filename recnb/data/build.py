"""Stage 01: raw interactions -> deduplicated, k-core filtered, leave-one-out split (DuckDB SQL).

`build_dataset(name)` reads a source (`recnb.sources`), then in DuckDB: drops interactions with
items that have no title/category, keeps each (user, item) pair's earliest interaction, applies
the k-core filter until it is stable, renumbers users and items contiguously from 1, orders each
user's sequence by time and splits it leave-one-out (train = seq[:-2], valid = seq[-2],
test = seq[-1]). `write_prepared` / `load_prepared` are the stage's file contract (CONTRACTS.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from recnb import artifacts as col
from recnb import record
from recnb.data import sources
from recnb.data.config import DataConfig
from recnb.data.sources import DataError

DATASETS = ("ml-100k", "steam", "movies_tv", "tiny")
MIN_SEQ = 3  # leave-one-out needs one train item plus a valid and a test target


@dataclass
class Prepared:
    """Stage 01's tables: interactions, items, per-user splits, and the Table 1 statistics."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    splits: pd.DataFrame
    stats: dict = field(default_factory=dict)


def read_source(dataset: str, raw_path: str | os.PathLike | None = None, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw (interactions, items) of a dataset; see `recnb.sources` for the formats."""
    if dataset == "ml-100k":
        return sources.read_ml100k(raw_path)
    if dataset == "steam":
        return sources.read_steam(raw_path)
    if dataset == "movies_tv":
        return sources.read_movies_tv(raw_path)
    if dataset == "tiny":
        return sources.make_tiny(seed=seed)
    raise DataError(f"unknown dataset {dataset!r}; set param 'dataset' to one of {', '.join(DATASETS)}")


def prepare(cfg: DataConfig) -> Prepared:
    """Stage 01 in memory for its config: `build_dataset` with the config's source, filter and seed."""
    return build_dataset(cfg.dataset, cfg.raw_path or None, user_core=cfg.user_core, item_core=cfg.item_core,
                         seed=cfg.seed)


def build_dataset(
    dataset: str,
    raw_path: str | os.PathLike | None = None,
    user_core: int = 5,
    item_core: int = 5,
    seed: int = 0,
) -> Prepared:
    """Read, clean, filter and split a dataset (all in memory; nothing written)."""
    raw_inter, raw_items = read_source(dataset, raw_path, seed)
    con = duckdb.connect()
    con.register("raw_inter", raw_inter)
    con.register("raw_items", raw_items)
    _dedup(con)
    kept = k_core(con, user_core, item_core, dataset)
    interactions, items = _renumber(con)
    splits = split_leave_one_out(interactions)
    items = _with_popularity(items, splits)
    stats = _stats(dataset, raw_inter, raw_items, interactions, items, user_core, item_core, kept)
    return Prepared(interactions, items, splits, stats)


def _dedup(con: duckdb.DuckDBPyConnection) -> None:
    """Keep interactions of items with metadata, one per (user, item): the earliest."""
    con.execute(
        """
        CREATE TABLE inter AS
        SELECT r.user, r.item, min(r.timestamp)::BIGINT AS timestamp
        FROM raw_inter r SEMI JOIN raw_items i ON r.item = i.item
        GROUP BY r.user, r.item
        """
    )


def k_core(con: duckdb.DuckDBPyConnection, user_core: int, item_core: int, dataset: str = "") -> int:
    """Drop users with < user_core and items with < item_core interactions until stable.

    Users with fewer than 3 interactions are always dropped (leave-one-out needs them).

    Returns:
        Number of filtering rounds.
    """
    if user_core < 0 or item_core < 0:
        raise DataError(f"user_core={user_core}, item_core={item_core}: k-core thresholds must be ≥ 0")
    u_min = max(int(user_core), MIN_SEQ)
    rounds = 0
    while True:
        rounds += 1
        before = con.execute("SELECT count(*) FROM inter").fetchone()[0]
        con.execute(
            """
            DELETE FROM inter WHERE item IN (SELECT item FROM inter GROUP BY item HAVING count(*) < ?)
            """,
            [int(item_core)],
        )
        con.execute("DELETE FROM inter WHERE user IN (SELECT user FROM inter GROUP BY user HAVING count(*) < ?)", [u_min])
        after = con.execute("SELECT count(*) FROM inter").fetchone()[0]
        if after == 0:
            raise DataError(
                f"{dataset}: the k-core filter (user_core={user_core}, item_core={item_core}) leaves no "
                "interactions; lower user_core/item_core"
            )
        if after == before:
            return rounds


def _renumber(con: duckdb.DuckDBPyConnection) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Contiguous ids from 1 (0 is padding) in raw-key order; sequences in time order."""
    con.execute(
        """
        CREATE TABLE umap AS SELECT user, row_number() OVER (ORDER BY try_cast(user AS BIGINT), user) AS user_id
        FROM (SELECT DISTINCT user FROM inter);
        CREATE TABLE imap AS SELECT item, row_number() OVER (ORDER BY try_cast(item AS BIGINT), item) AS item_id
        FROM (SELECT DISTINCT item FROM inter);
        """
    )
    interactions = con.execute(
        """
        SELECT u.user_id, m.item_id, i.timestamp,
               row_number() OVER (PARTITION BY u.user_id ORDER BY i.timestamp, m.item_id) - 1 AS position
        FROM inter i JOIN umap u USING (user) JOIN imap m USING (item)
        ORDER BY u.user_id, position
        """
    ).df()
    items = con.execute(
        """
        SELECT m.item_id, r.title, r.categories FROM imap m JOIN raw_items r USING (item) ORDER BY m.item_id
        """
    ).df()
    interactions = interactions.astype({c: "int64" for c in interactions.columns})
    items[col.TITLE] = unique_titles(items[col.TITLE].tolist())
    items[col.CATEGORIES] = [sorted(set(c)) for c in items[col.CATEGORIES]]
    return interactions, items.astype({col.ITEM: "int64"})


def unique_titles(titles: list[str]) -> list[str]:
    """Make titles unique (the LLM names items by title): later duplicates get " [2]", " [3]", ...

    >>> unique_titles(["A (1997)", "B", "A (1997)"])
    ['A (1997)', 'B', 'A (1997) [2]']
    """
    seen: dict[str, int] = {}
    out = []
    taken = {t.strip().casefold() for t in titles}
    for t in titles:
        t = " ".join(str(t).split())
        key = t.casefold()
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 1:
            out.append(t)
            continue
        n = seen[key]
        while f"{t} [{n}]".casefold() in taken:
            n += 1
        taken.add(f"{t} [{n}]".casefold())
        out.append(f"{t} [{n}]")
    return out


def split_leave_one_out(interactions: pd.DataFrame) -> pd.DataFrame:
    """One row per user: train = seq[:-2], valid target = seq[-2], test target = seq[-1]."""
    con = duckdb.connect()
    con.register("inter", interactions)
    df = con.execute(
        f"""
        SELECT {col.USER}, list({col.ITEM} ORDER BY {col.POSITION}) AS seq
        FROM inter GROUP BY {col.USER} ORDER BY {col.USER}
        """
    ).df()
    return pd.DataFrame(
        {
            col.USER: df[col.USER].astype("int64"),
            col.TRAIN_ITEMS: [list(map(int, s[:-2])) for s in df["seq"]],
            col.VALID_ITEM: [int(s[-2]) for s in df["seq"]],
            col.TEST_ITEM: [int(s[-1]) for s in df["seq"]],
        }
    )


def _with_popularity(items: pd.DataFrame, splits: pd.DataFrame) -> pd.DataFrame:
    """Popularity = interactions in the train part only (valid/test targets must not leak)."""
    counts = pd.Series([i for seq in splits[col.TRAIN_ITEMS] for i in seq]).value_counts()
    items = items.copy()
    items[col.POPULARITY] = items[col.ITEM].map(counts).fillna(0).astype("int64")
    return items


def _stats(dataset, raw_inter, raw_items, interactions, items, user_core, item_core, rounds) -> dict:
    users, n_items, n = interactions[col.USER].nunique(), len(items), len(interactions)
    return {
        "dataset": dataset,
        "users": int(users),
        "items": int(n_items),
        "interactions": int(n),
        "sparsity": round(1 - n / (users * n_items), 6),
        "categories": len({c for cats in items[col.CATEGORIES] for c in cats}),
        "avg_seq_len": round(n / users, 3),
        "users_before_filter": int(raw_inter["user"].nunique()),
        "items_before_filter": len(raw_items),
        "interactions_before_filter": len(raw_inter),
        "user_core": int(user_core),
        "item_core": int(item_core),
        "k_core_rounds": int(rounds),
    }


def write_prepared(prepared: Prepared, out_dir: str | os.PathLike) -> Path:
    """Write the stage-01 files (parquet + stats.json) into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prepared.interactions.to_parquet(out / col.INTERACTIONS_FILE, index=False)
    prepared.items.to_parquet(out / col.ITEMS_FILE, index=False)
    prepared.splits.to_parquet(out / col.SPLITS_FILE, index=False)
    record.write_json(out / col.STATS_FILE, prepared.stats)
    return out


def load_prepared(stage_dir: str | os.PathLike, dataset: str | None = None) -> Prepared:
    """Read stage 01's files back; with `dataset`, check they belong to that dataset."""
    stage_dir = Path(stage_dir)
    for name in (col.INTERACTIONS_FILE, col.ITEMS_FILE, col.SPLITS_FILE, col.STATS_FILE):
        if not (stage_dir / name).exists():
            raise FileNotFoundError(f"{stage_dir / name} not found; run stage 01_data_duckdb first")
    stats = record.read_json(stage_dir / col.STATS_FILE)
    if dataset is not None and stats.get("dataset") != dataset:
        raise DataError(
            f"{stage_dir} holds dataset {stats.get('dataset')!r}, not {dataset!r}; "
            "use another 'run' name per dataset or rerun stage 01"
        )
    items = pd.read_parquet(stage_dir / col.ITEMS_FILE)
    items[col.CATEGORIES] = items[col.CATEGORIES].map(list)
    splits = pd.read_parquet(stage_dir / col.SPLITS_FILE)
    splits[col.TRAIN_ITEMS] = splits[col.TRAIN_ITEMS].map(lambda s: [int(i) for i in s])
    return Prepared(pd.read_parquet(stage_dir / col.INTERACTIONS_FILE), items, splits, stats)


def category_counts(items: pd.DataFrame) -> pd.Series:
    """Number of items per category, most common first (for the notebook's figure)."""
    return items[col.CATEGORIES].explode().value_counts()
