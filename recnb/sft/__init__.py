"""Stage 04: supervised fine-tuning of a base LLM on the stage-03 instructions (paper §2.2).

`config` holds the stage's typed parameters; `train` the trainer, the adapter and the valid check;
`probe` the category probe (does the model rank in-category titles above the rest when asked?).
"""

from recnb.sft.config import SFTConfig
from recnb.sft.probe import category_probe, probe_cases
from recnb.sft.train import (
    LABEL_FILES,
    LORA_TARGETS,
    SFTResult,
    build_trainer,
    decoding,
    evaluate_valid,
    for_validation,
    grad_accumulation,
    load_train_records,
    load_trainable,
    save_adapter,
    score_answers,
    stage_metrics,
    summarise_scores,
    train_log,
    train_sft,
    valid_slice,
    write_model,
    write_valid_answers,
)

__all__ = ["LABEL_FILES", "LORA_TARGETS", "SFTConfig", "SFTResult", "build_trainer", "category_probe", "decoding", "evaluate_valid",
           "for_validation", "grad_accumulation", "load_train_records", "load_trainable", "probe_cases", "save_adapter",
           "score_answers",
           "stage_metrics", "summarise_scores", "train_log", "train_sft", "valid_slice", "write_model", "write_valid_answers"]
