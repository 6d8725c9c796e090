"""Full-ranking evaluation of the teacher (and a popularity floor), and the stored top-N rankings.

No sampled negatives: the target is ranked against every item. "Masked" metrics put the items of
the history fed to the model (its last `max_len` items) after every other item, as the pipeline's
rankings do; "unmasked" ones rank all items, as RecBole scores SASRec.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from recnb import artifacts as col
from recnb.sasrec.model import PAD, SASRec, item_ranks, pad_histories, score_histories

SPLITS = ("train", "valid", "test")
KS = (5, 10)


def hit_rate_at_k(ranks: np.ndarray, k: int) -> float:
    """Share of 0-based target ranks below k (one target per row)."""
    ranks = np.asarray(ranks)
    return float(np.mean(ranks < k)) if ranks.size else float("nan")


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean NDCG@k of single targets: 1 / log2(rank + 2) when rank < k, else 0 (rank 0-based)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    gains = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(gains.mean()) if ranks.size else float("nan")


def ranking_metrics(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """`hr@k` and `ndcg@k` for each k, from 0-based target ranks."""
    out = {}
    for k in ks:
        out[f"hr@{k}"] = hit_rate_at_k(ranks, k)
        out[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
    return out


def split_histories(splits: pd.DataFrame, split: str) -> tuple[np.ndarray, list[list[int]], np.ndarray]:
    """(user ids, full histories, targets) of one split, as defined in CONTRACTS.md.

    train: history `train_items[:-1]`, target `train_items[-1]`; valid: `train_items`, `valid_item`;
    test: `train_items + [valid_item]`, `test_item`. Callers cut histories to `max_len`.
    """
    train = [list(map(int, seq)) for seq in splits[col.TRAIN_ITEMS]]
    if split == "train":
        return splits[col.USER].to_numpy(), [s[:-1] for s in train], np.array([s[-1] for s in train], dtype=np.int64)
    if split == "valid":
        return splits[col.USER].to_numpy(), train, splits[col.VALID_ITEM].to_numpy(np.int64)
    if split == "test":
        valid = splits[col.VALID_ITEM].to_numpy(np.int64)
        return splits[col.USER].to_numpy(), [s + [int(v)] for s, v in zip(train, valid)], splits[col.TEST_ITEM].to_numpy(np.int64)
    raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def target_ranks(scores: torch.Tensor, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target under the pipeline's ranking rule."""
    return item_ranks(scores, torch.tensor(targets, dtype=torch.int64).view(-1, 1)).squeeze(1).numpy()


def evaluate_split(model: SASRec, splits: pd.DataFrame, split: str, ks: Sequence[int] = KS,
                   mask_history: bool = True) -> dict[str, float]:
    """HR@k / NDCG@k of the model on one split, full ranking."""
    _, histories, targets = split_histories(splits, split)
    return ranking_metrics(target_ranks(score_histories(model, histories, mask_history), targets), ks)


def popularity_vector(items: pd.DataFrame) -> np.ndarray:
    """Train-set interaction counts indexed by item id (index 0 = padding = 0)."""
    pop = np.zeros(int(items[col.ITEM].max()) + 1, dtype=np.float32)
    pop[items[col.ITEM].to_numpy()] = items[col.POPULARITY].to_numpy()
    return pop


def popularity_scores(popularity: np.ndarray, histories: Sequence[Sequence[int]], max_len: int,
                      mask_history: bool = True) -> torch.Tensor:
    """Scores (B, n_items + 1) of the popularity baseline, masked exactly like the model's."""
    n_items = len(popularity) - 1
    scores = torch.as_tensor(popularity, dtype=torch.float32).repeat(len(histories), 1)
    scores[:, PAD] = float("-inf")
    if mask_history:
        scores.scatter_(1, pad_histories(histories, max_len, n_items), float("-inf"))
    return scores


def evaluate_popularity(popularity: np.ndarray, splits: pd.DataFrame, split: str, max_len: int,
                        ks: Sequence[int] = KS, mask_history: bool = True) -> dict[str, float]:
    """HR@k / NDCG@k of ranking by train popularity, with the model's history masking."""
    _, histories, targets = split_histories(splits, split)
    return ranking_metrics(target_ranks(popularity_scores(popularity, histories, max_len, mask_history), targets), ks)


def evaluate_all(model: SASRec, splits: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Masked and unmasked metrics of the model and the popularity floor on valid and test.

    Returns:
        `{"valid": {...}, "test": {...}, "valid_unmasked": ..., "test_unmasked": ...,
        "pop_valid": ..., "pop_test": ...}` with `hr@5`, `ndcg@5`, `hr@10`, `ndcg@10` each.
    """
    pop = model.popularity.numpy()
    out = {}
    for split in ("valid", "test"):
        out[split] = evaluate_split(model, splits, split)
        out[f"{split}_unmasked"] = evaluate_split(model, splits, split, mask_history=False)
        out[f"pop_{split}"] = evaluate_popularity(pop, splits, split, model.cfg.max_len)
    return out


def build_teacher_topk(model: SASRec, splits: pd.DataFrame, top_n: int = 100) -> pd.DataFrame:
    """`teacher_topk.parquet`: one row per (user, split) with the model's history, target, top-N.

    Columns: `user_id`, `split`, `history` (last <= max_len items fed to the model), `target`,
    `topk_items`, `topk_scores` (history items masked), `target_rank` (0-based, full ranking).
    """
    n_items = model.cfg.n_items
    if not 1 <= top_n <= n_items:
        raise ValueError(f"top_n={top_n} must be in 1..n_items={n_items}; set param top_n")
    frames = []
    for split in SPLITS:
        users, histories, targets = split_histories(splits, split)
        scores = score_histories(model, histories)
        top = torch.sort(scores[:, 1:], dim=1, descending=True, stable=True)  # same tie rule as ranks
        frames.append(pd.DataFrame({
            col.USER: users.astype(np.int64),
            "split": split,
            "history": [h[-model.cfg.max_len:] for h in histories],
            "target": targets,
            "topk_items": list(top.indices[:, :top_n].numpy() + 1),
            "topk_scores": list(top.values[:, :top_n].numpy().astype(np.float64)),
            "target_rank": target_ranks(scores, targets).astype(np.int64),
        }))
    return pd.concat(frames, ignore_index=True)
