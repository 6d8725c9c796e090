"""Stage 05: PPO alignment with the paper's item-level and list-level rewards (§2.3, Algorithm 1).

trl's PPO trainer is gone from current trl and only ever paid one scalar per sequence, while the
paper pays each item's reward on the last token of its line and the list reward on the final
token; so the loop is ours and kept short. What is reused, and why:
- peft: LoRA adapters `actor` and `critic` on one copy of the SFT weights, `disable_adapter()` as
  the frozen reference, `get/set_peft_model_state_dict` for checkpoints (`recnb.ppo_model`);
- transformers: `generate` with KV cache and left padding for rollouts, fast-tokenizer offset
  mappings to put item rewards on tokens (`recnb.ppo_rollout`);
- trl: `selective_log_softmax` and `entropy_from_logits` (memory-frugal log-probs over a 49k
  vocabulary); trl 1.16 has no masked whitening any more, so `recnb.ppo_objective` holds it;
- recnb: `answer`, `catalog`, `rewards.score_list`, `sasrec.teacher_rank`, `metrics` — the one
  definition of every score, shared with stages 04 and 06.

Where things live: `ppo_model` (actor, critic, reference on one copy of the weights; optional bf16
autocast for the log-prob/value passes, which cuts peak memory ~40%; generation stays fp32, as
autocast re-casts every frozen weight at each decoding step: 2.2x slower in benchmarks/ppo_step.py), `ppo_rollout` (sampling, reward placement, `RecScorer`), `ppo_objective` (GAE,
whitening, clipped losses), `ppo_update` (one update and its log row), and this module (the loop,
validation, checkpoints, `ppo_log.csv`, metrics and the plot).

`kl_loss_coef` (0 = the paper) adds β·KL(π‖π_ref), exact over the vocabulary, to the policy loss: the
reward's sampled-token KL penalty only acts on tokens the policy happens to draw, so on a small model
the list's format tokens (numbering, newlines, EOS), which no reward pays for, drift as LoRA updates
for the titles spill over; the exact KL holds them (`studies/rl_toy.py`).

`algorithm: grpo` swaps the update for `recnb.ppo.grpo.grpo_update` (no critic): everything in this
module (prompt order, validation, best actor, checkpoints, resume) is the same for both.

Checkpoints (`checkpoint/`: the adapters, value head, optimiser, torch RNG, step) are written
after every update, so `resume=True` continues where a run stopped with the same prompts and samples.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch

from recnb import artifacts as col
from recnb import metrics, progress
from recnb.answer import parse_titles
from recnb.ppo.check import reward_gain
from recnb.ppo.config import RESUMABLE, PPOConfig
from recnb.ppo.grpo import grpo_update
from recnb.ppo.model import ACTOR, CRITIC, ActorCritic
from recnb.ppo.rollout import Scorer, sample_rollout
from recnb.ppo.update import batch_records, make_optimizer, ppo_update, reward_stats
from recnb.tasks import RL_TASKS, select_tasks

LOG_FILE = col.PPO_LOG_FILE
CHECKPOINT = col.CHECKPOINT_DIR
STATE_FILE = col.CHECKPOINT_STATE_FILE
SETTINGS_FILE = col.CHECKPOINT_SETTINGS_FILE


def rl_records(rows: list[dict], tasks: str | list[str] = "all") -> list[dict]:
    """The prompts PPO trains on: I0, I1±C and I2 rows (I3 search and I4 chat have no reward rule),
    narrowed to `tasks` ("all", or names/prefixes as in stage 04: `["I1+C", "I2"]`)."""
    kept = [r for r in rows if r.get("task") in RL_TASKS]
    if not kept:
        raise ValueError(f"no {'/'.join(RL_TASKS)} prompts found; check stage 03's rl_prompts.jsonl")
    return select_tasks(kept, tasks)


def valid_slice(rows: list[dict], n: int) -> list[dict]:
    """`n` validation prompts taken round-robin over the RL tasks, so each intention is checked."""
    by_task: dict[str, list[dict]] = {}
    for row in rl_records(rows):
        by_task.setdefault(row["task"], []).append(row)
    queues = [by_task[t] for t in RL_TASKS if t in by_task]
    picked = [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]
    return picked[:n]


def summarise(log: pd.DataFrame, check: pd.DataFrame | None = None, seed: int = 0) -> dict:
    """metrics.json of stage 05: validation figures at the SFT start, at the kept actor (`adapter/`:
    the best validation list reward among checkpoints that `qualify`, as `train_ppo` keeps it) and
    at the last evaluation, the training reward/KL of the first and last quarter of the updates, and
    with a `reward_check` frame its `reward_gain` (`recnb.ppo.check`: the paired figure, where the
    quarters' rewards come from different prompts)."""
    evals = log.dropna(subset=["val_list_reward"]).set_index("update").filter(like="val_")
    start_pct = float(evals.iloc[0].get("val_correct_count_pct", 100.0))
    kept = evals[[qualifies(row, start_pct) for _, row in evals.iterrows()]]
    train = log[log["update"] > 0]
    quarter = max(len(train) // 4, 1)
    cols = [c for c in ("list_reward", "item_reward", "kl", "illegal_pct", "response_len") if c in train]
    return {
        "updates": int(train["update"].max()) if len(train) else 0,
        "valid_start": evals.iloc[0].to_dict(),
        "valid_last": evals.iloc[-1].to_dict(),
        "valid_best": kept.loc[kept["val_list_reward"].idxmax()].to_dict(),
        "best_update": int(kept["val_list_reward"].idxmax()),
        "train_first_quarter": train[cols].head(quarter).mean().to_dict(),
        "train_last_quarter": train[cols].tail(quarter).mean().to_dict(),
        "seconds": {k: float(train[k].sum()) for k in ("t_generate", "t_score", "t_train") if k in train},
        **({"reward_gain": reward_gain(check, seed)} if check is not None and len(check) else {}),
    }


@torch.no_grad()
def evaluate(ac: ActorCritic, tokenizer, records: list[dict], scorer: Scorer, cfg: PPOConfig,
             batch_size: int = 16) -> dict[str, float]:
    """Greedy answers of the actor on `records`: mean rewards and stage 06's metrics (keys `val_*`).

    `val_tcp_pct` averages TCP over all control prompts, where +C wants it high, -C low and I2 near
    m; `val_tcp_plus_c_pct` and `val_tcp_minus_c_pct` are the paper's TCP(+C)↑ and TCP(-C)↓.
    """
    results, rows = [], []
    ac.use_actor()
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        rollout = sample_rollout(ac.model, tokenizer, [r["prompt"] for r in chunk], do_sample=False,
                                 max_new_tokens=cfg.max_new_tokens, max_prompt_tokens=cfg.max_prompt_tokens)
        for rec, text in zip(chunk, rollout.texts):
            titles = parse_titles(text)
            results.append(scorer(rec, titles))
            if hasattr(scorer, "measure"):
                rows.append(scorer.measure(rec, titles))
    out = reward_stats(results)
    if rows:
        out.update(metrics.aggregate(rows))
        out.update(metrics.tcp_by_task(rows, [r.get("task") for r in records]))
    return {f"val_{k}": v for k, v in out.items()}


def train_ppo(ac: ActorCritic, tokenizer, prompts: list[dict], valid: list[dict], scorer: Scorer,
              cfg: PPOConfig, out_dir: Path, resume: bool = False, settings: dict | None = None) -> pd.DataFrame:
    """Run `cfg.updates` updates (PPO, or GRPO with `algorithm: grpo` on an `ac` without critic),
    evaluating every `eval_every`; returns the `ppo_log.csv` frame.

    Writes `adapter/` (best actor by mean validation list reward, the SFT start included),
    `adapter_last/`, `critic/` (LoRA + value head; PPO only), `ppo_log.csv` and `checkpoint/`.

    Args:
        settings: what the run was started with (the notebook's params; default: `cfg`). It is stored
            in every checkpoint, and `resume` refuses a checkpoint written under other settings
            (only `updates`, `resume`, `threads` and `reward_check` may change), so a resumed run never mixes two.
    """
    out_dir = Path(out_dir)
    if ac.has_critic != (cfg.algorithm == "ppo"):
        raise ValueError(f"algorithm = {cfg.algorithm!r} needs an ActorCritic with critic={cfg.algorithm == 'ppo'}")
    settings = _plain_settings(settings if settings is not None else dataclasses.asdict(cfg))
    opt = make_optimizer(ac, cfg)
    valid = valid[: cfg.eval_size]
    start, best, rows = (load_checkpoint(ac, opt, out_dir, settings) if resume else (0, -math.inf, []))
    if start == 0:  # evaluate the SFT start: "best" must beat it to replace it
        rows = [{"update": 0, **evaluate(ac, tokenizer, valid, scorer, cfg)}]
    start_pct = float(rows[0].get("val_correct_count_pct", 100.0))
    if start == 0:
        best = _keep_best(ac, rows[0], best, out_dir, start_pct)
    bar = progress.bar(range(start, cfg.updates), desc=cfg.algorithm, initial=start, total=cfg.updates)
    for update in bar:
        if cfg.algorithm == "grpo":  # batch_size answers: batch_size / group_size prompts, group_size times each
            batch = batch_records(prompts, cfg.batch_size // cfg.group_size, cfg.seed, update)
            row = {"update": update + 1, **grpo_update(ac, opt, tokenizer, batch, scorer, cfg)}
        else:
            batch = batch_records(prompts, cfg.batch_size, cfg.seed, update)
            row = {"update": update + 1, **ppo_update(ac, opt, tokenizer, batch, scorer, cfg)}
        if (update + 1) % cfg.eval_every == 0 or update + 1 == cfg.updates:
            row.update(evaluate(ac, tokenizer, valid, scorer, cfg))
            best = _keep_best(ac, row, best, out_dir, start_pct)
        rows.append(row)
        bar.set_postfix(reward=f"{row['list_reward']:.3f}", kl=f"{row['kl']:.3f}")
        save_checkpoint(ac, opt, out_dir, update + 1, best, rows, settings)
    if not (out_dir / col.ADAPTER_DIR / "adapter_config.json").exists():
        raise RuntimeError(f"{out_dir / col.ADAPTER_DIR}: no actor was kept as the best (a bug: the SFT start "
                           "always qualifies); stage 06 would have nothing to load")
    ac.save_adapter(ACTOR, out_dir / col.ADAPTER_LAST_DIR)
    if ac.has_critic:
        ac.save_adapter(CRITIC, out_dir / col.CRITIC_DIR)
    return pd.DataFrame(rows)


# The paper's rewards pay an empty or short answer more than a full list with illegal items (no item,
# no penalty), so a policy can climb the validation reward by saying less. Such a checkpoint is never
# kept as the best actor: its greedy validation answers must still have exactly k items this often (%),
# or as often as the SFT start's where that is lower (so the start itself always qualifies and
# `adapter/` always exists: on ml-100k the SFT model answers with exactly k items < 50 % of the time).
MIN_BEST_CORRECT_COUNT_PCT = 50.0


def qualifies(row: Mapping, start_correct_pct: float = 100.0) -> bool:
    """Whether a validated checkpoint may be kept as the best actor: its greedy answers have exactly k
    items at least `MIN_BEST_CORRECT_COUNT_PCT` % of the time, or as often as the SFT start's where lower."""
    return row.get("val_correct_count_pct", 100.0) >= min(MIN_BEST_CORRECT_COUNT_PCT, start_correct_pct)


def _keep_best(ac: ActorCritic, row: dict, best: float, out_dir: Path, start_correct_pct: float = 100.0) -> float:
    """Save the actor as `adapter/` when its validation reward is the best so far among checkpoints
    that `qualify`; returns the best reward."""
    if row["val_list_reward"] > best and qualifies(row, start_correct_pct):
        ac.save_adapter(ACTOR, out_dir / col.ADAPTER_DIR)
        return row["val_list_reward"]
    return best


def _plain_settings(settings: dict) -> dict:
    """Settings as JSON would give them back (tuples as lists), so a stored copy compares equal."""
    return json.loads(json.dumps(settings, default=str))


def save_checkpoint(ac: ActorCritic, opt: torch.optim.Optimizer, out_dir: Path, step: int, best: float,
                    rows: list[dict], settings: dict | None = None) -> Path:
    """Adapters, value head, optimiser, torch RNG, step, best score, settings and the log so far.

    Written whole into `checkpoint.tmp/`, then swapped in by renames, so a crash at any point leaves
    either the previous checkpoint or the new one, never a mix (`load_checkpoint` also finds the
    previous one if the crash fell between the two renames).
    """
    out_dir = Path(out_dir)
    ckpt, tmp, old = out_dir / CHECKPOINT, out_dir / f"{CHECKPOINT}.tmp", out_dir / f"{CHECKPOINT}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    ac.save_adapter(ACTOR, tmp / ACTOR)
    if ac.has_critic:
        ac.save_adapter(CRITIC, tmp / CRITIC)
    torch.save({"step": step, "best": best, "optimizer": opt.state_dict(), "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}, tmp / STATE_FILE)
    (tmp / SETTINGS_FILE).write_text(json.dumps(settings or {}, indent=1, sort_keys=True))
    log = pd.DataFrame(rows)
    log.to_csv(tmp / LOG_FILE, index=False)
    if ckpt.exists():
        shutil.rmtree(old, ignore_errors=True)
        ckpt.rename(old)
    tmp.rename(ckpt)
    shutil.rmtree(old, ignore_errors=True)
    log.to_csv(out_dir / LOG_FILE, index=False)
    return ckpt


def load_checkpoint(ac: ActorCritic, opt: torch.optim.Optimizer, out_dir: Path,
                    settings: dict | None = None) -> tuple[int, float, list[dict]]:
    """Restore a `save_checkpoint`; returns (next update, best validation list reward, log rows).

    Raises:
        FileNotFoundError: no complete checkpoint.
        ValueError: `settings` differ from the checkpoint's beyond `RESUMABLE` (names the keys).
    """
    out_dir = Path(out_dir)
    ckpt = out_dir / CHECKPOINT
    if not (ckpt / STATE_FILE).exists() and (out_dir / f"{CHECKPOINT}.old" / STATE_FILE).exists():
        ckpt = out_dir / f"{CHECKPOINT}.old"  # a crash between save_checkpoint's two renames
    if not (ckpt / STATE_FILE).exists():
        raise FileNotFoundError(f"{out_dir / CHECKPOINT / STATE_FILE} not found: nothing to resume; set resume = False")
    if settings is not None and (ckpt / SETTINGS_FILE).exists():
        stored = json.loads((ckpt / SETTINGS_FILE).read_text())
        defaults = {f.name: f.default for f in dataclasses.fields(PPOConfig)}
        # a setting added after the checkpoint was written counts as unchanged at its default
        stored = {**{k: settings[k] for k in settings if k not in stored and settings[k] == defaults.get(k)}, **stored}
        changed = sorted(k for k in set(stored) | set(settings)
                         if k not in RESUMABLE and stored.get(k) != settings.get(k))
        if changed:
            diff = ", ".join(f"{k}: {stored.get(k)!r} -> {settings.get(k)!r}" for k in changed)
            raise ValueError(f"{ckpt}: resume = True, but the checkpoint was trained with other settings ({diff}); "
                             "restore them, or set resume = False to start over (the runner needs --force)")
    state = torch.load(ckpt / STATE_FILE, weights_only=True)
    ac.load_adapter(ACTOR, ckpt / ACTOR)
    if ac.has_critic:
        ac.load_adapter(CRITIC, ckpt / CRITIC)
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():  # GPU sampling draws from the CUDA generators
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    log = pd.read_csv(ckpt / LOG_FILE)
    rows = log[log["update"] <= state["step"]].to_dict("records")  # NaN kept: the columns keep their order
    return int(state["step"]), float(state["best"]), rows


def plot_log(log: pd.DataFrame):
    """A seaborn panel of the `ppo_log.csv` curves against the update number."""
    import seaborn as sns

    cols = [c for c in ("list_reward", "item_reward", "kl", "entropy", "policy_loss", "value_loss", "clip_frac",
                        "explained_var", "response_len", "illegal_pct", "val_list_reward", "val_illegal_pct")
            if c in log]
    long = log.melt(id_vars="update", value_vars=cols, var_name="curve").dropna()
    grid = sns.relplot(data=long, x="update", y="value", col="curve", col_wrap=4, kind="line", marker="o",
                       height=2.2, aspect=1.3, facet_kws={"sharey": False})
    grid.set_titles("{col_name}")
    return grid
