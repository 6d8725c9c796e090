"""Training SASRec: whole windows of each user's train sequence, full-softmax loss at every position.

Each user's train part (`train_items`, chronological) is cut into windows of `max_len + 1` items
ending at the sequence end and every `window_stride` items before it; a window's first `max_len`
items are the input and the next item at each position is the target, so one forward pass trains
every prefix of the window at once (RecBole builds one sequence per prefix instead, ~50x the work).
Adam, early stopping on masked valid NDCG@10, and the best epoch's weights are kept.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from recnb import artifacts as col
from recnb.progress import bar as progress_bar
from recnb.sasrec.config import SASRecConfig
from recnb.sasrec.evaluate import evaluate_split, popularity_vector
from recnb.sasrec.model import PAD, Architecture, SASRec


def training_windows(train_seqs: Sequence[Sequence[int]], max_len: int, stride: int = 0) -> np.ndarray:
    """Windows (W, max_len + 1) of item ids, left-padded with 0, cut from each train sequence.

    Windows end at the sequence end, then every `stride` items earlier (stride 0 = max_len);
    sequences shorter than 2 items give no window (nothing to predict).
    """
    stride = stride or max_len
    width = max_len + 1
    rows = []
    for seq in train_seqs:  # runs once before training, not in the hot path
        seq = np.asarray(seq, dtype=np.int64)
        for end in range(len(seq), 1, -stride):
            piece = seq[max(0, end - width):end]
            rows.append(np.pad(piece, (width - len(piece), 0)))
    if not rows:
        raise ValueError("no training windows: every train sequence has fewer than 2 items; check splits.parquet")
    return np.stack(rows)


def window_loss(model: SASRec, windows: torch.Tensor) -> torch.Tensor:
    """Mean full-softmax cross-entropy of predicting item t+1 at every non-pad position t."""
    inputs, targets = windows[:, :-1], windows[:, 1:]
    hidden = model.encode(inputs)
    valid = (inputs != PAD) & (targets != PAD)
    logits = model.item_logits(hidden[valid])  # only real positions: padding costs no softmax
    return F.cross_entropy(logits, targets[valid] - 1)  # column j scores item j + 1


def train_epoch(model: SASRec, windows: torch.Tensor, opt: torch.optim.Optimizer, batch_size: int,
                gen: torch.Generator) -> float:
    """One pass over the windows in a seeded random order; returns the mean batch loss."""
    model.train()
    order = torch.randperm(len(windows), generator=gen)
    losses = []
    for idx in order.split(batch_size):
        loss = window_loss(model, windows[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def train_sasrec(model: SASRec, splits: pd.DataFrame, cfg: SASRecConfig,
                 progress: bool = True) -> tuple[SASRec, pd.DataFrame]:
    """Train on the train part of `splits`, keep the epoch with the best masked valid NDCG@10.

    Returns:
        The model (best weights, eval mode) and a log with one row per epoch:
        `epoch`, `loss`, `valid_ndcg@10`, `valid_hr@10`, `seconds` (wall-clock training time of
        that epoch) and `cpu_seconds` (its CPU time over all threads: on a shared machine the one
        that does not grow with other people's load).
    """
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    windows = torch.from_numpy(training_windows(splits[col.TRAIN_ITEMS], model.cfg.max_len, cfg.window_stride))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, since_best, log = -1.0, None, 0, []
    bar = progress_bar(range(1, cfg.epochs + 1), desc="SASRec", unit="epoch", disable=not progress)
    for epoch in bar:
        t0, cpu0 = time.perf_counter(), time.process_time()
        loss = train_epoch(model, windows, opt, cfg.batch_size, gen)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
        valid = evaluate_split(model, splits, "valid", ks=(10,))
        log.append({"epoch": epoch, "loss": loss, "valid_ndcg@10": valid["ndcg@10"],
                    "valid_hr@10": valid["hr@10"], "seconds": seconds, "cpu_seconds": cpu_seconds})
        bar.set_postfix(loss=f"{loss:.3f}", ndcg10=f"{valid['ndcg@10']:.4f}", best=f"{max(best, valid['ndcg@10']):.4f}")
        if valid["ndcg@10"] > best:
            best, best_state, since_best = valid["ndcg@10"], copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
            if since_best >= cfg.patience:
                break
    bar.close()
    model.load_state_dict(best_state)
    return model.eval(), pd.DataFrame(log)


def build_sasrec(items: pd.DataFrame, cfg: SASRecConfig) -> SASRec:
    """A fresh model sized to the catalog of `items.parquet`, with its popularity for empty histories."""
    n_items = int(items[col.ITEM].max())
    if n_items != len(items):
        raise ValueError(f"items.parquet item_id must be contiguous 1..{len(items)}, max is {n_items}; rerun stage 01")
    arch = Architecture(n_items=n_items, max_len=cfg.max_len, hidden=cfg.hidden, blocks=cfg.blocks, heads=cfg.heads,
                        dropout=cfg.dropout)
    return SASRec(arch, popularity=popularity_vector(items))


def write_outputs(out_dir, model: SASRec, log: pd.DataFrame, topk: pd.DataFrame, cfg: SASRecConfig) -> None:
    """Stage 02's files: `sasrec.pt` (weights, architecture, training settings), `teacher_topk.parquet`
    and `train_log.csv`."""
    from pathlib import Path

    from recnb.sasrec.model import save_sasrec

    out_dir = Path(out_dir)
    save_sasrec(model, out_dir / col.SASREC_FILE, extra={"train": cfg.train_settings(), "dataset": cfg.dataset})
    topk.to_parquet(out_dir / col.TEACHER_FILE, index=False)
    log.to_csv(out_dir / col.TRAIN_LOG_FILE, index=False)
