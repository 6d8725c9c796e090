"""Stage 02's parameters (notebooks/02_sasrec.ipynb), typed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recnb.params import StageConfig, param


@dataclass
class SASRecConfig(StageConfig):
    """The teacher's architecture and training."""

    STAGE: ClassVar[str] = "02_sasrec"

    max_len: int = param(10, "items of history the model reads (the prompts show 10)", lo=1)
    hidden: int = param(64, "embedding and hidden size", lo=1)
    blocks: int = param(2, "self-attention blocks", lo=1)
    heads: int = param(2, "attention heads per block", lo=1)
    dropout: float = param(0.2, "embedding, attention-output and feed-forward dropout", lo=0, hi=1, hi_open=True)
    lr: float = param(0.005, "Adam learning rate", lo=0, lo_open=True)
    weight_decay: float = param(0.0, "decoupled (AdamW) weight decay", lo=0)
    batch_size: int = param(128, "training windows per step", lo=1)
    epochs: int = param(30, "upper bound on epochs; early stopping usually ends sooner", lo=1)
    patience: int = param(5, "epochs without a better valid NDCG@10 before stopping", lo=1)
    window_stride: int = param(0, "distance between the ends of training windows (0: max_len)", lo=0)
    top_n: int = param(100, "teacher items stored per (user, split) in teacher_topk.parquet", lo=1)

    @classmethod
    def check_together(cls, values) -> list[str]:
        if values["hidden"] % values["heads"]:
            return [f"hidden = {values['hidden']} must be a multiple of heads = {values['heads']}"]
        return []

    def train_settings(self) -> dict:
        """The optimisation settings `sasrec.pt` records next to the architecture."""
        return {"lr": self.lr, "weight_decay": self.weight_decay, "batch_size": self.batch_size, "epochs": self.epochs,
                "patience": self.patience, "window_stride": self.window_stride, "seed": self.seed}
