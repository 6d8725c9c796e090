"""RL runs side by side (issue 22's head-to-head): PPO and GRPO variants of stage 05 on common axes.

Every number comes from what the stage-05 runs recorded: `ppo_log.csv` (one row per update, with the
sampled answers' mean list reward, their illegal items and the update's seconds) and `metrics.json`
(`recnb.ppo.loop.summarise`: first and last quarter of the updates, greedy validation at the SFT start
and at the best checkpoint, and with `reward_check` the paired gain of the last actor over its start,
`recnb.ppo.check`). Runs are compared at equal *sampled answers* (update x `batch_size`), the
budget the paper's rewards are paid from, and at equal training seconds (generation + scoring +
optimisation; validation excluded, it is the same for every algorithm).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from recnb import artifacts as col
from recnb import record

TIME_COLUMNS = ("t_generate", "t_score", "t_train")
CURVE_COLUMNS = ("list_reward", "illegal_pct")


def rl_runs(models: Mapping[str, str]) -> dict[str, str]:
    """The models of stage 06 (label -> source) that stage 05 trained, label -> stage dir, in 06's order."""
    return {label: source for label, source in models.items()
            if source == "05_ppo" or source.startswith("05_ppo-")}


def curves(logs: Mapping[str, pd.DataFrame], answers_per_update: Mapping[str, int]) -> pd.DataFrame:
    """Training rows of each run's `ppo_log.csv` (update 0, the start's validation, dropped) in one
    long frame: run, update, sampled_answers (so far), seconds (so far), list_reward, illegal_pct.

    Raises:
        ValueError: a run without its answers per update, or a log lacking a column, named.
    """
    frames = []
    for label, log in logs.items():
        if label not in answers_per_update:
            raise ValueError(f"RL run {label!r}: answers per update (its stage-05 batch_size) not given")
        missing = [c for c in ("update", *CURVE_COLUMNS, *TIME_COLUMNS) if c not in log]
        if missing:
            raise ValueError(f"ppo_log.csv of RL run {label!r} lacks {missing}; rerun its stage 05")
        train = log[log["update"] > 0].sort_values("update")
        frames.append(pd.DataFrame({
            "run": label, "update": train["update"].astype(int),
            "sampled_answers": train["update"].astype(int) * int(answers_per_update[label]),
            "seconds": train[list(TIME_COLUMNS)].sum(axis=1).cumsum(),
            **{c: train[c] for c in CURVE_COLUMNS}}))
    columns = ["run", "update", "sampled_answers", "seconds", *CURVE_COLUMNS]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def head_to_head(metrics: Mapping[str, Mapping], params: Mapping[str, Mapping]) -> pd.DataFrame:
    """One row per run from its stage-05 `metrics.json` and `params.json`: algorithm, reward, updates,
    sampled answers, seconds per update, the sampled list reward and illegal items of the first and
    last quarter of the updates, the greedy validation list reward at the SFT start and at the
    best checkpoint (which stage 05 keeps), and the paired gain in sampled list reward of the last
    actor over the SFT start on the validation prompts (`reward_gain`, `_lo`, `_hi`; NaN for a run
    without `reward_check`)."""
    rows = []
    for label, m in metrics.items():
        p = params[label]
        updates = int(m["updates"])
        seconds = sum(m.get("seconds", {}).values())
        first, last = m["train_first_quarter"], m["train_last_quarter"]
        rows.append({
            "run": label, "algorithm": p.get("algorithm", "ppo"), "reward": p.get("reward", "full"),
            "updates": updates, "sampled_answers": updates * int(p["batch_size"]),
            "s_per_update": seconds / updates if updates else float("nan"),
            "list_reward_first": first.get("list_reward"), "list_reward_last": last.get("list_reward"),
            "illegal_pct_first": first.get("illegal_pct"), "illegal_pct_last": last.get("illegal_pct"),
            "val_list_reward_start": m["valid_start"].get("val_list_reward"),
            "val_list_reward_best": m["valid_best"].get("val_list_reward"), "best_update": m.get("best_update"),
            **{f"reward_gain{end}": m.get("reward_gain", {}).get(key, float("nan"))
               for end, key in (("", "delta"), ("_lo", "lo"), ("_hi", "hi"))}})
    return pd.DataFrame(rows)


def load(dirs: Mapping[str, Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(`head_to_head` table, `curves`) of finished stage-05 dirs (label -> dir), from their
    `params.json`, `metrics.json` and `ppo_log.csv`."""
    params = {label: record.read_json(d / col.PARAMS_FILE) for label, d in dirs.items()}
    metrics = {label: record.read_json(d / col.METRICS_FILE) for label, d in dirs.items()}
    logs = {label: pd.read_csv(d / col.PPO_LOG_FILE) for label, d in dirs.items()}
    return head_to_head(metrics, params), curves(logs, {label: p["batch_size"] for label, p in params.items()})
