"""Stage 04: supervised fine-tuning of a base LLM on the stage-03 instructions (paper §2.2).

LoRA on every linear layer (r=16, alpha=8 as in the paper) with trl's `SFTTrainer` on
prompt/completion chat records, so the loss covers only the answer (`completion_only_loss`).
On CPU the weights stay fp32 and `bf16=True` runs the forward/backward under bf16 autocast
(about 1.4x faster here, same loss curve; `bf16=False` is the fp32 switch). With
`use_unsloth=True` on a CUDA machine, unsloth's `FastLanguageModel` builds the same LoRA model
(or, with `finetune: full`, the full model) and the same trainer runs it; unsloth is imported only
there, or under `RECNB_UNSLOTH_CPU=1` (`make check-gpu-set`), which forces its CPU backend.

Variants come from params alone: `tasks` (`["I0"]` = v1, `"all"` = v2) and `label_source`
(`teacher` = sft_train.jsonl, `history` = sft_train_palr.jsonl, the PALR-style baseline).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_callback import PrinterCallback
from trl import SFTConfig as TrlSFTConfig
from trl import SFTTrainer

from recnb import artifacts as col
from recnb import llm, metrics, progress
from recnb.answer import parse_titles
from recnb.catalog import Catalog
from recnb.sft.config import SFTConfig
from recnb.tasks import read_records, select_tasks

LABEL_FILES = {"teacher": col.SFT_TRAIN_FILE, "history": col.SFT_TRAIN_PALR_FILE}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_train_records(instructions_dir: Path, cfg: SFTConfig) -> list[dict]:
    """Training records of a variant: label file by `label_source`, filtered by `tasks`, and a
    seeded random subset of `max_train_samples` (0 = all) to fit a time budget."""
    records = select_tasks(read_records(Path(instructions_dir) / LABEL_FILES[cfg.label_source]), cfg.tasks)
    if 0 < cfg.max_train_samples < len(records):
        frame = pd.DataFrame({"i": range(len(records))}).sample(n=cfg.max_train_samples, random_state=cfg.seed)
        records = [records[i] for i in sorted(frame["i"])]
    return records


def to_chat_dataset(records: list[dict]):
    """A `datasets.Dataset` in trl's conversational prompt/completion format."""
    from datasets import Dataset

    rows = [{"prompt": [dict(m) for m in r["prompt"]],
             "completion": [{"role": "assistant", "content": r["completion"]}]} for r in records]
    return Dataset.from_list(rows)


def lora_config(cfg: SFTConfig):
    """LoRA on every linear projection of the decoder (the paper's "all linear layers")."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=LORA_TARGETS, bias="none", task_type="CAUSAL_LM")


def grad_accumulation(cfg: SFTConfig) -> int:
    """Accumulation steps so that batch_size x steps reaches effective_batch (at least 1)."""
    return max(1, round(cfg.effective_batch / cfg.batch_size))


class TokenRateCallback(TrainerCallback):
    """Adds `tokens_per_s` (trained tokens incl. prompts, since the last log) to every log line, and
    reports step, loss and rate to the runner's live line (`recnb.progress`)."""

    def __init__(self) -> None:
        self._last = (time.perf_counter(), 0.0)
        self.rates: dict[int, float] = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "num_tokens" in logs:
            now, tokens = time.perf_counter(), float(logs["num_tokens"])
            last_t, last_n = self._last
            logs["tokens_per_s"] = self.rates[state.global_step] = round((tokens - last_n) / max(now - last_t, 1e-9), 1)
            self._last = (now, tokens)
        if logs is not None and "loss" in logs:
            progress.report(f"SFT step {state.global_step}/{state.max_steps} loss {logs['loss']:.3f} "
                            f"{logs.get('tokens_per_s', 0):.0f} tokens/s")


class StepBar(TrainerCallback):
    """The SFT progress bar (`recnb.progress.bar`: a widget in JupyterLab, text under the runner), in
    place of transformers' own, which in a notebook redraws a bar and a table of every logged step.

    Redraws are bounded (about 100 a run, whatever the step count): nbval reads a cell's output only
    once the cell ends, and with transformers' bar a 2,256-step tiny SFT lost the cell's end (most
    likely dropped by the kernel's output channel past its queue limit; docs/RESULTS.md).
    """

    def __init__(self) -> None:
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        # every `miniters` steps, never sooner (tqdm's monitor would drop to every step after 10 s idle)
        self.bar = progress.bar(total=state.max_steps, desc="SFT", unit="step", mininterval=0,
                                maxinterval=float("inf"), miniters=max(1, state.max_steps // 100))

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


class CompletionSFTTrainer(SFTTrainer):
    """trl's `SFTTrainer` with a cheaper completion-only loss.

    trl 1.16 scores every position through a tiled "fused LM head" kernel; off Triton devices
    it projects prompt positions too and its backward dominated a CPU step (~80% of the time
    in a profile here). We run the backbone, project only the hidden states of completion tokens
    through the LM head and take the summed cross-entropy over the same token count trl uses,
    so gradient accumulation and the logged loss mean the same thing.
    """

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if hasattr(sampler, "seed"):  # transformers' BatchRebalanceSampler draws with a fixed seed of its own
            sampler.seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return sampler

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"][:, 1:]
        mask = labels != -100
        core = model.get_base_model() if hasattr(model, "get_base_model") else model
        backbone = getattr(core, core.base_model_prefix)
        # Calling the backbone skips the autocast accelerate wraps around model.forward: re-enter it.
        with self.accelerator.autocast():
            hidden = backbone(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                              use_cache=False).last_hidden_state[:, :-1]
            logits = core.get_output_embeddings()(hidden[mask]).float()
        targets = labels[mask]
        count = mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = F.cross_entropy(logits, targets, reduction="sum") / torch.as_tensor(count).clamp(min=1)
        if model.training:
            self._total_train_tokens += int(inputs["attention_mask"].sum())
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
            accuracy = (logits.detach().argmax(-1) == targets).float().mean().item() if len(targets) else 0.0
            self._metrics["train"]["mean_token_accuracy"].append(accuracy)
        return (loss, None) if return_outputs else loss


def uses_bf16(cfg: SFTConfig, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast: `cfg.bf16` where the device computes bf16 fast (a CUDA GPU
    with bf16, a CPU with AVX-512: `llm.cpu_bf16_fast`); elsewhere fp32, with a warning."""
    if not cfg.bf16:
        return False
    if device.type == "cpu":
        return llm.cpu_bf16_or_fp32("SFT bf16 autocast")
    return torch.cuda.is_bf16_supported()


def trainer_args(out_dir: Path, cfg: SFTConfig, device: torch.device):
    """trl's `SFTConfig` for our set-up: completion-only loss, no checkpoints, CPU-aware precision."""
    on_cpu = device.type == "cpu"
    # trl 1.16 still sets TrainingArguments' `gradient_checkpointing`, which transformers 5.24 renamed.
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing` is deprecated", category=FutureWarning)
    return TrlSFTConfig(
        output_dir=str(out_dir), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=grad_accumulation(cfg), learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, warmup_steps=cfg.warmup,
        lr_scheduler_type="linear", logging_steps=cfg.logging_steps, save_strategy="no", report_to="none",
        use_cpu=on_cpu, bf16=uses_bf16(cfg, device), fp16=False,
        gradient_checkpointing=cfg.gradient_checkpointing, max_length=cfg.max_length,
        completion_only_loss=True, packing=False,
        # "batch_rebalance" draws each optimizer step's samples at random, then cuts them into micro-batches of
        # similar length. "group_by_length" sorts 50 steps' worth by length, so a short run trained only on the
        # longest records (the candidate-list tasks) first: on ml-100k its first 7 of 15 steps were all I3.
        train_sampling_strategy="batch_rebalance" if cfg.length_balanced else "random",
        seed=cfg.seed, data_seed=cfg.seed, dataloader_num_workers=0,
        disable_tqdm=True,  # transformers' bar off: build_trainer draws a bounded one (StepBar)
    )


# `make check-gpu-set` only: every SFT stage goes through unsloth, on its CPU backend (plain
# transformers + peft + trl, no Triton kernels), so the calls below run in CI-less checks without a GPU.
UNSLOTH_CPU_ENV = "RECNB_UNSLOTH_CPU"


def unsloth_wanted(cfg: SFTConfig) -> bool:
    """unsloth trains when asked (`use_unsloth`) on a CUDA machine, or always under `RECNB_UNSLOTH_CPU=1`."""
    if os.environ.get(UNSLOTH_CPU_ENV, "0") not in ("0", "1"):
        raise ValueError(f"{UNSLOTH_CPU_ENV}={os.environ[UNSLOTH_CPU_ENV]!r}: use 1 (force unsloth's CPU backend) or 0")
    return os.environ.get(UNSLOTH_CPU_ENV) == "1" or (cfg.use_unsloth and torch.cuda.is_available())


def _unsloth_source(name: str, folder: Path) -> str:
    """A folder `FastLanguageModel.from_pretrained` can read: the base model's own, or for the models
    built in code (the tiny Llama and the tiny random one, seeded, as `llm.load_base` builds them) a
    copy saved into `folder`."""
    if name not in (llm.TINY_LLAMA, llm.TINY_RANDOM):
        return str(llm.model_source(name))
    model, tokenizer = llm.load_base(name, dtype="float32")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _load_unsloth(cfg: SFTConfig):
    """unsloth's model: LoRA-wrapped by `get_peft_model`, or with `finetune: full` every weight
    trainable (`full_finetuning`). Imported only here: on a machine without CUDA, unsloth falls back
    to its CPU backend, which only `RECNB_UNSLOTH_CPU=1` asks for."""
    from unsloth import FastLanguageModel  # see module docstring

    # CUDA: unsloth picks bf16/fp16; CPU: fp32 weights, as the plain path (the trainer's bf16 autocasts)
    dtype = None if torch.cuda.is_available() else torch.float32
    checkpointing = "unsloth" if cfg.gradient_checkpointing else False
    with tempfile.TemporaryDirectory() as folder:
        model, _ = FastLanguageModel.from_pretrained(
            model_name=_unsloth_source(cfg.base_model, Path(folder)), max_seq_length=cfg.max_length, dtype=dtype,
            load_in_4bit=False, full_finetuning=cfg.finetune == "full", use_gradient_checkpointing=checkpointing)
    if cfg.finetune == "lora":
        model = FastLanguageModel.get_peft_model(
            model, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=LORA_TARGETS, bias="none", random_state=cfg.seed, use_gradient_checkpointing=checkpointing)
    return model, llm.load_tokenizer(cfg.base_model)


def load_trainable(cfg: SFTConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, bool]:
    """The model to fine-tune: unsloth's (already prepared) where `unsloth_wanted`, else the plain base.

    Returns:
        (model, tokenizer, wrapped): `wrapped` says unsloth prepared it (LoRA attached, or every
        weight trainable), so the trainer attaches no adapter of its own.
    """
    if unsloth_wanted(cfg):
        model, tokenizer = _load_unsloth(cfg)
        return model, tokenizer, True
    model, tokenizer = llm.load_base(cfg.base_model, dtype="auto")  # CPU fp32 (autocast does bf16), CUDA bf16
    return model, tokenizer, False


def build_trainer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, records: list[dict],
                  cfg: SFTConfig, out_dir: Path, wrapped: bool = False, progress: bool = True):
    """A `CompletionSFTTrainer` with LoRA attached (unless `wrapped`) and the tokenized, label-masked data."""
    device = next(model.parameters()).device
    trainer = CompletionSFTTrainer(
        model=model, args=trainer_args(out_dir, cfg, device), train_dataset=to_chat_dataset(records),
        processing_class=tokenizer, peft_config=None if wrapped or cfg.finetune == "full" else lora_config(cfg),
    )
    # First in line, so every later callback sees tokens_per_s in the logs.
    trainer.token_rate = TokenRateCallback()
    trainer.callback_handler.callbacks.insert(0, trainer.token_rate)
    trainer.remove_callback(PrinterCallback)  # what disable_tqdm puts in the bar's place: a line per log
    if progress:
        trainer.add_callback(StepBar())
    return trainer


def train_log(trainer) -> pd.DataFrame:
    """One row per logged step: step, epoch, loss, learning rate, grad norm, tokens, tokens/s."""
    rows = [r for r in trainer.state.log_history if "loss" in r]
    keep = ["step", "epoch", "loss", "learning_rate", "grad_norm", "mean_token_accuracy", "num_tokens",
            "tokens_per_s"]
    frame = pd.DataFrame(rows)
    rates = getattr(trainer, "token_rate", None)
    if rates is not None and len(frame):
        frame["tokens_per_s"] = frame["step"].map(rates.rates)
    return frame[[c for c in keep if c in frame.columns]].reset_index(drop=True)


@dataclass
class SFTResult:
    """What training produced: the LoRA model, its log and the throughput."""

    model: Any
    log: pd.DataFrame
    train_seconds: float
    tokens: int
    tokens_per_s: float
    final_loss: float
    trainer: str = "trl"  # "unsloth" where unsloth prepared the model (`unsloth_wanted`)
    bf16: bool = False  # trained under bf16 autocast (`uses_bf16`: asked, and fast on this device)


def train_sft(records: list[dict], cfg: SFTConfig, out_dir: Path,
              progress: bool = True) -> tuple[SFTResult, PreTrainedTokenizerBase]:
    """Fine-tune `cfg.base_model` on `records`; returns the result and the tokenizer (nothing saved yet)."""
    if not records:
        raise ValueError("no training records; check params 'tasks' and 'label_source' against stage 03's files")
    model, tokenizer, wrapped = load_trainable(cfg)
    trainer = build_trainer(model, tokenizer, records, cfg, out_dir, wrapped, progress)
    start = time.perf_counter()
    output = trainer.train()
    seconds = time.perf_counter() - start
    log = train_log(trainer)
    tokens = int(trainer._total_train_tokens)
    result = SFTResult(model=trainer.model.eval(), log=log, train_seconds=seconds, tokens=tokens,
                       tokens_per_s=tokens / max(seconds, 1e-9),
                       final_loss=float(log["loss"].iloc[-1]) if len(log) else float(output.training_loss),
                       trainer="unsloth" if wrapped else "trl", bf16=bool(trainer.args.bf16))
    return result, tokenizer


def save_adapter(model, tokenizer: PreTrainedTokenizerBase, out_dir: Path, cfg: SFTConfig) -> Path:
    """`<out_dir>/adapter/`: the trained weights (a peft adapter, or with `finetune: full` the whole
    model), the tokenizer and the settings that trained them; `llm.load_for_inference` reads either."""
    adapter = Path(out_dir) / col.ADAPTER_DIR
    model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    (adapter / col.SFT_SETTINGS_FILE).write_text(json.dumps(cfg.training_settings(), indent=2) + "\n")
    return adapter


def write_model(out_dir: Path, result: SFTResult, tokenizer: PreTrainedTokenizerBase, cfg: SFTConfig) -> None:
    """Stage 04's model files, right after training: `adapter/` (with the tokenizer, saved before any
    padded generation changes its state, and the training settings) and `train_log.csv`."""
    save_adapter(result.model, tokenizer, out_dir, cfg)
    result.log.to_csv(Path(out_dir) / col.TRAIN_LOG_FILE, index=False)


def write_valid_answers(out_dir: Path, answers: pd.DataFrame) -> Path:
    """`valid_answers.parquet`: the untuned and tuned answers to the valid prompts, scored."""
    path = Path(out_dir) / col.VALID_ANSWERS_FILE
    answers.to_parquet(path, index=False)
    return path


def valid_slice(records: list[dict], per_task: int) -> list[dict]:
    """The first `per_task` records of each task (stage 03 already drew them at random, seeded)."""
    seen: dict[str, int] = {}
    kept = []
    for rec in records:
        if seen.get(rec["task"], 0) < per_task:
            seen[rec["task"]] = seen.get(rec["task"], 0) + 1
            kept.append(rec)
    return kept


def score_answers(records: Sequence[dict], answers: Sequence[str], catalog: Catalog, fuzzy: bool = False,
                  label: str = "sft") -> pd.DataFrame:
    """One row per answer: every `recnb.metrics.score_answer` figure (the scoring of stages 05 and 06)."""
    rows = [{"model": label, "task": rec["task"], "user_id": rec["user_id"], "raw": raw,
             **metrics.score_answer(rec, parse_titles(raw), catalog, fuzzy=fuzzy)}
            for rec, raw in zip(records, answers)]
    return pd.DataFrame(rows)


def summarise_scores(scores: pd.DataFrame) -> dict[str, dict[str, float]]:
    """`metrics.aggregate` over all answers (`all`, with TCP(+C) and TCP(-C) apart) and per task;
    HR/NDCG are @K with K = k = 10 in valid."""
    rows = scores.to_dict("records")
    out = {"all": metrics.aggregate(rows) | metrics.tcp_by_task(rows, list(scores["task"]))}
    for task, part in scores.groupby("task", sort=True):
        out[task] = metrics.aggregate(part.to_dict("records"))
    return out


def evaluate_valid(model, tokenizer: PreTrainedTokenizerBase, records: Sequence[dict], items: pd.DataFrame,
                   cfg: SFTConfig, *, label: str = "sft", progress: bool = True) -> pd.DataFrame:
    """Greedy answers to valid prompts, scored like stage 06 scores test prompts."""
    limits = [int(r["k"]) for r in records] if cfg.valid_stop_past_k else None
    answers = llm.generate(model, tokenizer, [r["prompt"] for r in records], decoding(cfg), progress=progress,
                           item_limits=limits)
    return score_answers(records, answers, Catalog(items), fuzzy=cfg.fuzzy, label=label)


def for_validation(model, cfg: SFTConfig):
    """`model` cast in place to `cfg.valid_dtype` for the valid check and the probe (`auto`: unchanged).
    Call it after `write_model`: the saved weights keep their training precision."""
    return llm.cast(model, cfg.valid_dtype)


def decoding(cfg: SFTConfig) -> llm.Decoding:
    """The valid check's decoding: greedy, `valid_batch_size` prompts a batch."""
    return llm.Decoding(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.valid_batch_size,
                        max_prompt_tokens=cfg.max_prompt_tokens)


def stage_metrics(result: SFTResult, cfg: SFTConfig, n_records: int,
                  valid: dict[str, pd.DataFrame], probe: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """metrics.json of stage 04: training figures, valid metrics per model (`sft`, `base`), the
    category probe per model (`recnb.sft.probe`; `category_auc` pulls out its headline) and units."""
    log = result.log
    steps = int(log["step"].max()) if len(log) else 0
    summaries = {name: summarise_scores(scores) for name, scores in valid.items()}
    keys = ["hr", "ndcg", "tcp_pct", "cpa_pct", "correct_count_pct", "repeat_item_pct", "non_exist_pct",
            "in_history_pct"]
    return {
        "train": {"records": n_records, "steps": steps, "samples_seen": steps * cfg.batch_size
                  * grad_accumulation(cfg), "epochs": float(log["epoch"].max()) if len(log) else 0.0,
                  "tokens": result.tokens, "seconds": round(result.train_seconds, 1),
                  "tokens_per_s": round(result.tokens_per_s, 1),
                  "first_loss": float(log["loss"].iloc[0]) if len(log) else None, "final_loss": result.final_loss,
                  "trainer": result.trainer, "bf16_autocast": result.bf16},
        "headline": {name: {k: s["all"][k] for k in keys} for name, s in summaries.items()},
        "valid": summaries,
        "category_auc": {name: figures["category_auc"] for name, figures in (probe or {}).items()},
        "category_probe": probe or {},
        "units": metrics.UNITS,
    }
