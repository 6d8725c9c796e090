"""SASRec (Kang & McAuley 2018) in plain torch, and the teacher's ranking of items for a history.

The model reads the last `max_len` item ids of a history, left-padded with 0 (the padding id),
through learned item + position embeddings and causal self-attention blocks, and scores every item
by the dot product of the last position's output with the (shared) item embeddings.

Rankings everywhere in the pipeline follow one rule: items sorted by score, highest first, ties
broken by the smaller item id; the history's items (and padding) are masked, i.e. placed after
every other item. An empty history is ranked by training-set popularity (stored in the model).
Training lives in `recnb.sasrec_train`, evaluation and the stored top-N in `recnb.sasrec_eval`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

PAD = 0


@dataclass
class Architecture:
    """Architecture of a SASRec model (saved next to its weights in `sasrec.pt`)."""

    n_items: int  # item ids are 1..n_items; 0 is padding
    max_len: int = 10  # the model reads the last max_len items of a history
    hidden: int = 64  # embedding and hidden size
    blocks: int = 2  # self-attention blocks
    heads: int = 2  # attention heads per block
    dropout: float = 0.2  # embedding, attention-output and feed-forward dropout

    def __post_init__(self) -> None:
        if self.n_items < 1 or self.max_len < 1 or self.blocks < 1:
            raise ValueError(f"Architecture needs n_items, max_len, blocks >= 1, got {self}")
        if self.hidden % self.heads:
            raise ValueError(f"Architecture: hidden={self.hidden} must be divisible by heads={self.heads}")


class _Block(nn.Module):
    """Pre-norm causal self-attention + point-wise feed-forward, both with residuals."""

    def __init__(self, cfg: Architecture) -> None:
        super().__init__()
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.ln_attn = nn.LayerNorm(cfg.hidden, eps=1e-8)
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.ln_ffn = nn.LayerNorm(cfg.hidden, eps=1e-8)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden, cfg.hidden), nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, h = x.shape
        q, k, v = self.qkv(self.ln_attn(x)).view(b, length, 3, self.heads, h // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, L, h/heads)
        drop = self.dropout if self.training else 0.0
        # causal only: left-padding keys stay visible (a constant learned "nothing here" key, as in
        # the reference PyTorch port), which keeps every row non-empty and lets SDPA use its fused
        # kernel; no dropout on attention weights: it doubled the attention cost on CPU, while the
        # embedding and residual dropouts regularise enough
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + F.dropout(self.proj(att.transpose(1, 2).reshape(b, length, h)), drop, self.training)
        return x + self.ffn(self.ln_ffn(x))


class SASRec(nn.Module):
    """Self-attentive sequential recommender; `popularity` ranks items for empty histories."""

    def __init__(self, cfg: Architecture, popularity: Sequence[float] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.hidden, padding_idx=PAD)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.blocks))
        self.ln_out = nn.LayerNorm(cfg.hidden, eps=1e-8)
        pop = torch.zeros(cfg.n_items + 1) if popularity is None else torch.as_tensor(popularity, dtype=torch.float32)
        if pop.shape != (cfg.n_items + 1,):
            raise ValueError(f"popularity must have n_items + 1 = {cfg.n_items + 1} entries (index = item id), got {tuple(pop.shape)}")
        self.register_buffer("popularity", pop)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # small normal init (as BERT/RecBole): tied output embeddings start with near-uniform softmax
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, L, hidden) of left-padded item sequences (B, L), L <= max_len."""
        length = seqs.shape[1]
        if length > self.cfg.max_len:
            raise ValueError(f"sequence length {length} > max_len {self.cfg.max_len}; truncate histories first")
        keep = (seqs != PAD).unsqueeze(-1)
        pos = torch.arange(self.cfg.max_len - length, self.cfg.max_len, device=seqs.device)
        x = self.emb_drop(self.item_emb(seqs) * self.cfg.hidden**0.5 + self.pos_emb(pos)) * keep
        for block in self.blocks:
            x = block(x) * keep
        return self.ln_out(x)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of items 1..n_items (column j = item j + 1) for hidden states (..., hidden)."""
        return hidden @ self.item_emb.weight[1:].T

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """Scores (B, n_items + 1) of every item after the last position; column = item id, pad = -inf."""
        logits = self.item_logits(self.encode(seqs)[:, -1])
        return F.pad(logits, (1, 0), value=float("-inf"))


def save_sasrec(model: SASRec, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write `sasrec.pt`: the state dict, the resolved architecture and `extra` (e.g. training config)."""
    path = Path(path)
    torch.save({"config": dataclasses.asdict(model.cfg), "state_dict": model.state_dict(), "extra": extra or {}}, path)
    return path


def load_sasrec(path: str | os.PathLike) -> SASRec:
    """Rebuild a model saved by `save_sasrec`, in eval mode (predictions identical to the saved one)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run notebooks/02_sasrec.ipynb to train the teacher")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a recnb SASRec checkpoint (no config/state_dict); retrain stage 02")
    model = SASRec(Architecture(**ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def pad_histories(histories: Sequence[Sequence[int]], max_len: int, n_items: int) -> torch.Tensor:
    """Left-pad the last `max_len` items of each history into a (B, max_len) id tensor.

    Raises:
        ValueError: an item id outside 1..n_items (the message names the id and the valid range).
    """
    arrays = [np.asarray(hist, dtype=np.int64).ravel() for hist in histories]
    _check_ids(np.concatenate([*arrays, np.empty(0, np.int64)]), n_items, "a history")
    out = np.zeros((len(arrays), max_len), dtype=np.int64)
    for row, hist in enumerate(arrays):  # one slice per history, not per item
        tail = hist[-max_len:] if len(hist) else hist
        out[row, max_len - len(tail):] = tail
    return torch.from_numpy(out)


def _check_ids(ids: np.ndarray, n_items: int, what: str) -> None:
    bad = ids[(ids < 1) | (ids > n_items)]
    if bad.size:
        raise ValueError(f"{what} holds item id {int(bad[0])} outside 1..{n_items}; ids must come from items.parquet")


@torch.inference_mode()
def score_histories(model: SASRec, histories: Sequence[Sequence[int]], mask_history: bool = True,
                    batch_size: int = 1024) -> torch.Tensor:
    """Teacher scores (B, n_items + 1) for many histories; column = item id, padding = -inf.

    Histories longer than `max_len` are cut to their last `max_len` items; an empty history gets
    the popularity scores. With `mask_history`, the (cut) history's items score -inf.
    """
    cfg = model.cfg
    seqs = pad_histories(histories, cfg.max_len, cfg.n_items)
    was_training = model.training
    model.eval()
    scores = torch.cat([model(chunk) for chunk in seqs.split(batch_size)]) if len(seqs) else torch.empty(0, cfg.n_items + 1)
    model.train(was_training)
    empty = (seqs == PAD).all(dim=1)
    scores[empty] = model.popularity.to(scores.dtype)
    scores[:, PAD] = float("-inf")
    if mask_history:
        scores.scatter_(1, seqs, float("-inf"))  # pad columns (0) are -inf already
    return scores


def item_ranks(scores: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """0-based rank (B, K) of item ids (B, K) in each row's ranking of items 1..n_items.

    The ranking rule: score descending, ties to the smaller item id, so -inf (masked) items come
    after every unmasked one. Counting beats sorting here: rank = #higher + #tied with smaller id.
    """
    others, mine = scores[:, 1:].unsqueeze(1), scores.gather(1, ids).unsqueeze(2)  # (B,1,N), (B,K,1)
    smaller_id = torch.arange(1, scores.shape[1]).view(1, 1, -1) < ids.unsqueeze(2)
    return (others > mine).sum(-1) + ((others == mine) & smaller_id).sum(-1)


def teacher_rank_batch(model: SASRec, histories: Sequence[Sequence[int]],
                       item_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """`teacher_rank` for many (history, items) pairs at once (one forward pass per 1024 histories).

    Returns:
        One int64 array per pair: the 0-based position of each item in that history's full
        masked ranking (history items are placed after all unmasked items).
    """
    if len(histories) != len(item_ids):
        raise ValueError(f"teacher_rank_batch: {len(histories)} histories but {len(item_ids)} item lists")
    lists = [np.asarray(ids, dtype=np.int64).ravel() for ids in item_ids]
    padded = np.ones((len(lists), max((len(x) for x in lists), default=0)), dtype=np.int64)  # pad with a real id
    for row, ids in enumerate(lists):
        _check_ids(ids, model.cfg.n_items, "item_ids")
        padded[row, :len(ids)] = ids
    ranks = item_ranks(score_histories(model, histories), torch.from_numpy(padded)).numpy()
    return [ranks[row, :len(ids)] for row, ids in enumerate(lists)]


def teacher_rank(model: SASRec, history: Sequence[int], item_ids: Sequence[int]) -> np.ndarray:
    """0-based positions of `item_ids` in the teacher's full ranking for `history` (history masked)."""
    return teacher_rank_batch(model, [history], [item_ids])[0]
