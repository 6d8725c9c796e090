"""The paper's generalisation columns (Table 5: MMLU 5-shot, GSM8K 8-shot) via lm-evaluation-harness.

lm-eval downloads its datasets from the Hugging Face Hub. On an offline machine the row says
"skipped: datasets unavailable" instead of failing the stage; we check reachability first (a short
TCP connect) rather than letting `datasets` hang in retries. `local_task` loads a task YAML that
reads a local JSONL file, so the wiring is tested offline (tests/fixtures/lm_eval_task/).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import socket
from pathlib import Path
from typing import Any

import yaml

PAPER_TASKS = {"MMLU": ("mmlu", 5), "GSM8K": ("gsm8k", 8)}  # column -> (lm-eval task, few-shot)
SKIPPED_OFFLINE = "skipped: datasets unavailable"
SKIPPED_NO_LM_EVAL = "skipped: lm-eval not installed"


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the dataset hub answers (False at once when HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    return _connects(host, timeout)


@functools.lru_cache(maxsize=8)
def _connects(host: str, timeout: float) -> bool:
    """One TCP connect per process and host (stage 06 asks once per model)."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def local_task(yaml_path: str | os.PathLike) -> dict[str, Any]:
    """A task config dict from a local YAML, its `data_files` made absolute (relative to the YAML)."""
    path = Path(yaml_path)
    if not path.exists():
        raise FileNotFoundError(f"lm-eval task file {path} not found")
    cfg = yaml.safe_load(path.read_text())
    files = cfg.get("dataset_kwargs", {}).get("data_files", {})
    for split, name in files.items():
        files[split] = str((path.parent / name).resolve())
    return cfg


def run_lm_eval(model, tokenizer, tasks: list[str | dict], *, num_fewshot: int | None = None,
                limit: int | None = None, batch_size: int = 8) -> dict[str, float]:
    """Accuracy of an in-memory model on lm-eval tasks: `{task name: acc (or exact_match)}`."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit,
                                  log_samples=False, bootstrap_iters=0)
    scores = {}
    for task, result in out["results"].items():
        key = next((k for k in result if k.split(",")[0] in ("acc", "exact_match")), None)
        scores[task] = float(result[key]) if key else float("nan")
    return scores


def paper_generalization(model, tokenizer, *, limit: int | None = None) -> dict[str, float | str]:
    """MMLU / GSM8K scores of a model, or the reason they were skipped, one entry per column."""
    if importlib.util.find_spec("lm_eval") is None:
        return {column: SKIPPED_NO_LM_EVAL for column in PAPER_TASKS}
    if not hub_reachable():
        return {column: SKIPPED_OFFLINE for column in PAPER_TASKS}
    row: dict[str, float | str] = {}
    for column, (task, shots) in PAPER_TASKS.items():
        row[column] = run_lm_eval(model, tokenizer, [task], num_fewshot=shots, limit=limit)[task]
    return row
