"""Did RL raise the reward it optimises? Stage 05's paired check of the last actor against its start.

The training log cannot say: each update samples answers to other prompts, so a batch's mean
reward also follows which prompts were drawn, by more than a few updates move the policy. So after
training the SFT start (every adapter off) and the last actor each answer the same validation
prompts, sampled as the rollouts are, and the gain is paired prompt by prompt, with a
percentile-bootstrap interval over prompts (`recnb.bootstrap`).

Common random numbers: each chunk of prompts is sampled from a seed fixed by the run's seed and the
chunk's position, in both passes, so where the two policies agree they draw the same answer, and a
chunk's draws never depend on how long the previous chunk's answers were.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pandas as pd
import torch

from recnb import artifacts as col
from recnb.answer import parse_titles
from recnb.bootstrap import N_RESAMPLES, mean_interval
from recnb.ppo.config import PPOConfig
from recnb.ppo.model import ActorCritic
from recnb.ppo.rollout import Scorer, sample_rollout

MODELS = ("start", "last")
COLUMNS = ["prompt", "task", "sample"] + [f"{m}_{c}" for m in MODELS for c in ("reward", "items", "illegal")]


def chunk_seed(seed: int, start: int) -> int:
    """The torch seed of the chunk of check rows that begins at row `start`."""
    return seed * 1_000_003 + start


@torch.no_grad()
def reward_check(ac: ActorCritic, tokenizer, records: list[dict], scorer: Scorer, cfg: PPOConfig,
                 batch_size: int = 64) -> pd.DataFrame:
    """The SFT start and the actor as it now is (after `train_ppo`: the last update) each answer every
    prompt of `records[:cfg.eval_size]` `cfg.reward_check` times, sampled as the rollouts are
    (temperature, top-k, answer length, prompt length), and `scorer` scores each answer.

    `batch_size` prompts are generated at once (lower it where memory is short; it changes the draws).
    The global RNG is left as it was.

    Returns:
        One row per prompt and sample: `prompt` (index in `records`), `task`, `sample`, and for `start`
        and `last` the unscaled list reward (`<model>_reward`), the items listed and the illegal ones
        (`<model>_items`, `<model>_illegal`). Empty with `reward_check` = 0.
    """
    records = records[: cfg.eval_size]
    rows = [{"prompt": i, "task": r.get("task"), "sample": n} for n in range(cfg.reward_check)
            for i, r in enumerate(records)]
    ac.use_actor()
    for model in MODELS:
        with torch.random.fork_rng(), (ac.model.disable_adapter() if model == "start" else nullcontext()):
            for start in range(0, len(rows), batch_size):
                torch.manual_seed(chunk_seed(cfg.seed, start))
                chunk = rows[start:start + batch_size]
                rollout = sample_rollout(ac.model, tokenizer, [records[row["prompt"]]["prompt"] for row in chunk],
                                         max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                         top_k=cfg.top_k, max_prompt_tokens=cfg.max_prompt_tokens)
                for row, text in zip(chunk, rollout.texts):
                    score = scorer(records[row["prompt"]], parse_titles(text))
                    row.update({f"{model}_reward": float(score.list_reward), f"{model}_items": len(score.legal),
                                f"{model}_illegal": len(score.legal) - int(sum(score.legal))})
    return pd.DataFrame(rows, columns=COLUMNS)


def reward_gain(check: pd.DataFrame, seed: int = 0, n_resamples: int = N_RESAMPLES) -> dict[str, float]:
    """`reward_check`'s summary: mean sampled list reward of the SFT start and of the last actor, the
    paired gain `delta` with its 95 % bootstrap interval over prompts (`lo`, `hi`), and illegal items
    (% of listed items) of each."""
    per_prompt = check.groupby("prompt")[["start_reward", "last_reward"]].mean()
    delta, lo, hi = mean_interval(per_prompt["last_reward"] - per_prompt["start_reward"], n_resamples, seed,
                                  "reward_check")
    return {"prompts": len(per_prompt), "samples": int(check["sample"].nunique()),
            "start": float(check["start_reward"].mean()), "last": float(check["last_reward"].mean()),
            "delta": delta, "lo": lo, "hi": hi,
            **{f"{m}_illegal_pct": 100.0 * check[f"{m}_illegal"].sum() / max(int(check[f"{m}_items"].sum()), 1)
               for m in MODELS}}


def save_check(check: pd.DataFrame, out_dir: Path) -> Path | None:
    """Write `reward_check.csv` into the stage dir; with an empty check (`reward_check` = 0) remove one
    left by an earlier run instead, so the dir never holds a check of other settings."""
    path = Path(out_dir) / col.REWARD_CHECK_FILE
    if check.empty:
        path.unlink(missing_ok=True)
        return None
    check.to_csv(path, index=False)
    return path
