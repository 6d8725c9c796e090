"""Stage 04's parameters (notebooks/04_sft_unsloth.ipynb), typed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recnb.params import StageConfig, base_model_problem, param, tasks_problem, variant_problem
from recnb.tasks import TASKS

FINETUNE = ("lora", "full")
LABEL_SOURCES = ("teacher", "history")  # sft_train.jsonl (teacher labels) or sft_train_palr.jsonl (PALR)
# What `sft_settings.json` (inside adapter/) records: the settings that shaped the weights.
TRAINING_FIELDS = ("finetune", "lora_r", "lora_alpha", "lora_dropout", "learning_rate", "epochs", "max_steps", "batch_size",
                   "effective_batch", "max_length", "warmup", "bf16", "length_balanced", "gradient_checkpointing",
                   "use_unsloth", "logging_steps", "seed")


@dataclass
class SFTConfig(StageConfig):
    """The SFT variant (base model, tasks, labels), LoRA and trainer settings, and the valid check."""

    STAGE: ClassVar[str] = "04_sft_unsloth"

    variant: str = param("", "empty: main path (v2); e.g. 'v1', 'palr' write to 04_sft_unsloth-<variant>")
    base_model: str = param("tiny-random", "smollm2-135m, tiny-random, tiny-llama or a Hugging Face id/path")
    tasks: str | list = param("all", "'all' (v2) or a list of tasks or prefixes, e.g. ['I0'] (v1)", types=(str, list))
    label_source: str = param("teacher", "'teacher' (sft_train.jsonl) or 'history' (PALR baseline)",
                              choices=LABEL_SOURCES)
    max_train_samples: int = param(0, "seeded random subset of the training records; 0: all", lo=0)
    finetune: str = param("lora", "'lora' (adapters on frozen weights, the paper) or 'full' (every weight: small models)",
                          choices=FINETUNE)
    lora_r: int = param(16, "LoRA rank (paper: 16)", lo=1)
    lora_alpha: float = param(8, "LoRA alpha (paper: 8)", types=(int, float), lo=0, lo_open=True)
    lora_dropout: float = param(0.05, "LoRA dropout (paper: 0.05-0.1)", lo=0, hi=1, hi_open=True)
    learning_rate: float = param(0.001, "peak learning rate, linear decay (paper: 1e-3)", lo=0, lo_open=True)
    warmup: float = param(0.03, "linear warm-up: below 1 a fraction of the steps, else a number of steps", lo=0)
    epochs: float = param(1.0, "passes over the training records (ignored when max_steps > 0)", lo=0, lo_open=True)
    max_steps: int = param(4, "optimizer steps; -1: use epochs", lo=-1)
    batch_size: int = param(4, "sequences per forward pass", lo=1)
    effective_batch: int = param(16, "sequences per optimizer step, via gradient accumulation", lo=1)
    max_length: int = param(512, "prompt + answer tokens kept per training record", lo=16)
    bf16: bool = param(True, "bf16 autocast over fp32 weights (on a CPU only with AVX-512, else fp32: "
                       "llm.cpu_bf16_fast); False: plain fp32")
    length_balanced: bool = param(True, "each step: a random draw cut into micro-batches of similar length")
    gradient_checkpointing: bool = param(False, "trade ~30% speed for memory (GPU); off on CPU")
    use_unsloth: bool = param(False, "unsloth FastLanguageModel when a CUDA GPU is present")
    logging_steps: int = param(1, "optimizer steps between train_log.csv rows", lo=1)
    n_valid_per_task: int = param(4, "valid prompts scored per task (I0, I1+C, I1-C, I2 approx. m)", lo=0)
    valid_batch_size: int = param(16, "prompts per generation batch", lo=1)
    max_new_tokens: int = param(48, "answer tokens generated per valid prompt", lo=1)
    valid_dtype: str = param("auto", "weights of the valid check and the probe (after training; the saved model is "
                             "untouched): auto (as trained), bfloat16 (about 2x faster on an AVX-512 CPU; float32 "
                             "on others) or float32",
                             choices=("auto", "float32", "bfloat16"))
    valid_stop_past_k: bool = param(False, "a valid answer stops once it lists more than its k items (no metric "
                                    "changes; the raw text is shorter)")
    max_prompt_tokens: int = param(512, "longer prompts lose their oldest history items", lo=16)
    fuzzy: bool = param(False, "also accept catalog titles within Levenshtein distance 3")
    eval_base: bool = param(True, "also score the untuned base model on the same prompts")
    probe_users: int = param(32, "valid I1+C users of the category probe, untuned and tuned (0: skip)", lo=0)
    probe_per_side: int = param(10, "probe candidates per user in C and outside C (teacher's top titles)", lo=1)

    @classmethod
    def check_together(cls, values) -> list[str]:
        problems = [variant_problem(values["variant"]), base_model_problem(values["base_model"]),
                    tasks_problem(values["tasks"], TASKS)]
        if values["max_steps"] == 0:
            problems.append("max_steps = 0 trains nothing; use -1 (epochs decide) or a positive count")
        return [p for p in problems if p]

    def training_settings(self) -> dict:
        """The settings that shaped the adapter's weights (`sft_settings.json`)."""
        return {name: getattr(self, name) for name in TRAINING_FIELDS}
