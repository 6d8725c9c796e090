"""Does the RL learner learn? PPO and GRPO (stage 05's loop) against plain REINFORCE on the toy world.

`recnb.ppo.toy`: a prompt asking for 3 items, 6 fruits and 6 animals, fruit pays; a 64-wide Llama
warm-started on random well-formed answers. Both learners train the same actor LoRA (r=4,
alpha=2) from the same start, seed by seed, on the same number of sampled answers
(`--updates` × 8), and are scored on 96 answers sampled with one fixed seed every `--every`
updates, which is far less noisy than a training batch of 8.

- PPO: `recnb.ppo.train_ppo` with the toy's config (`toy.PPO_SETTINGS`, overridable with
  `--set k=v`), resumed every `--every` updates (a resumed run equals an uninterrupted one).
- GRPO: the same loop with `algorithm: grpo` (`toy.GRPO_SETTINGS`: 2 prompts x 4 answers per update,
  no critic; `recnb.ppo.grpo`), the same `--set` overrides.
- REINFORCE: one Adam step per batch on -(R - mean R) · Σ log π over the answer's tokens, where R
  is the answer's summed item rewards plus 10 × the list reward (what PPO is paid), no critic.

    .venv/bin/python studies/rl_toy.py                          # every learner, seeds 0-5
    .venv/bin/python studies/rl_toy.py --learners ppo,grpo      # the critic-free head-to-head
    .venv/bin/python studies/rl_toy.py --set kl_loss_coef=0     # PPO without the KL term in the loss

Writes `outputs/studies/rl_toy/curves.csv` and `rl_toy.png`; ends with one key=value line.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recnb import paths, record
from recnb.ppo import toy
from recnb.ppo.config import PPOConfig
from recnb.ppo.loop import train_ppo
from recnb.ppo.model import ACTOR, ActorCritic
from recnb.ppo.rollout import sample_rollout, score_rollout


def run_ppo(model, tok, seed: int, updates: int, every: int, overrides: dict, algorithm: str = "ppo") -> list[dict]:
    """Sampled reward of the PPO (or GRPO) actor every `every` updates (the checkpoint carries the run on)."""
    ac = ActorCritic(copy.deepcopy(model), seed=seed, critic=algorithm == "ppo")
    base = toy.PPO_SETTINGS if algorithm == "ppo" else toy.GRPO_SETTINGS
    cfg = PPOConfig(**{**base, **overrides, "seed": seed, "updates": every, "eval_every": every})
    records, rows = toy.records(cfg.batch_size), []
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as out:
        for done in range(every, updates + 1, every):
            cfg.updates = done
            with contextlib.redirect_stderr(io.StringIO()):  # no progress bars in the study's output
                log = train_ppo(ac, tok, records, records, toy.FruitScorer(), cfg, Path(out), resume=done > every)
            ac.use_actor()
            rows.append({"update": done, **toy.sampled_reward(ac.model, tok),
                         "train_reward": log["list_reward"].iloc[-every:].mean(),
                         "s_per_update": float(log[["t_generate", "t_score", "t_train"]].iloc[-every:].sum(axis=1).mean())})
    return rows


def run_reinforce(model, tok, seed: int, updates: int, every: int, lr: float, batch: int = 8) -> list[dict]:
    """Plain REINFORCE with a batch-mean baseline on the same actor LoRA."""
    ac = ActorCritic(copy.deepcopy(model), seed=seed)
    opt = torch.optim.Adam(ac.adapter_params(ACTOR), lr=lr)
    records, rows, train = toy.records(batch), [], []
    torch.manual_seed(seed)
    for update in range(1, updates + 1):
        ac.use_actor()
        rollout = sample_rollout(ac.model, tok, [r["prompt"] for r in records], max_new_tokens=16)
        scores, results = score_rollout(rollout, records, tok, toy.FruitScorer(), item_rewards=True,
                                        list_reward_scale=10.0)
        ret = scores.sum(1)
        logp, _, _ = ac.policy_logps(rollout.input_ids, rollout.attention_mask, rollout.response_ids, 0.7,
                                     entropy=False)
        loss = -((ret - ret.mean())[:, None] * logp * rollout.response_mask).sum(1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        train.append(np.mean([r.list_reward for r in results]))
        if update % every == 0:
            rows.append({"update": update, **toy.sampled_reward(ac.model, tok),
                         "train_reward": float(np.mean(train[-every:]))})
    return rows


def parse_sets(pairs: list[str]) -> dict:
    """`--set kl_loss_coef=0` -> {"kl_loss_coef": 0} (values read as JSON, else kept as text)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: write key=value, e.g. --set kl_loss_coef=0")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    unknown = set(out) - set(PPOConfig.__dataclass_fields__)
    if unknown:
        raise SystemExit(f"--set: {', '.join(sorted(unknown))} not a PPOConfig field")
    return out


def plot(curves: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    ax = sns.lineplot(data=curves, x="update", y="reward", hue="learner", errorbar=("ci", 95), marker="o")
    ax.set(xlabel="update (8 sampled answers each)", ylabel="mean list reward, 96 sampled answers")
    ax.figure.set_size_inches(3.4, 2.6)
    ax.figure.savefig(path, dpi=200, bbox_inches="tight")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--learners", default="ppo,grpo,reinforce", help="comma list of ppo, grpo, reinforce")
    ap.add_argument("--seeds", default="0,1,2,3,4,5")
    ap.add_argument("--updates", type=int, default=32)
    ap.add_argument("--every", type=int, default=8, help="updates between sampled-reward evaluations")
    ap.add_argument("--reinforce-lr", type=float, default=1e-2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field of toy.PPO_SETTINGS")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(paths.REPO_ROOT / "outputs" / "studies" / "rl_toy"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = parse_sets(args.set)
    model, tok = toy.warm_start()
    start = toy.sampled_reward(model, tok)
    rows = []
    for learner in args.learners.split(","):
        for seed in map(int, args.seeds.split(",")):
            t0 = time.perf_counter()
            if learner in ("ppo", "grpo"):
                curve = run_ppo(model, tok, seed, args.updates, args.every, overrides, learner)
            elif learner == "reinforce":
                curve = run_reinforce(model, tok, seed, args.updates, args.every, args.reinforce_lr)
            else:
                raise SystemExit(f"--learners: {learner!r} unknown; use ppo, grpo, reinforce")
            seconds = time.perf_counter() - t0
            rows += [{"learner": learner, "seed": seed, "update": 0, **start, "seconds": 0.0}]
            rows += [{"learner": learner, "seed": seed, **r, "seconds": seconds} for r in curve]
            print(f"{learner} seed {seed}: reward {start['reward']:.3f} -> {curve[-1]['reward']:.3f}, "
                  f"illegal {start['illegal_pct']:.1f}% -> {curve[-1]['illegal_pct']:.1f}% ({seconds:.0f} s)", flush=True)
    curves = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves.to_csv(out / "curves.csv", index=False)
    plot(curves, out / "rl_toy.png")
    last = curves[curves["update"] == args.updates].groupby("learner")
    summary = (last["reward"].mean() - start["reward"]).round(3)
    spread = last["reward"].std().round(3)
    pace = curves[curves["update"] > 0].groupby("learner")["s_per_update"].mean().dropna().round(3) \
        if "s_per_update" in curves else pd.Series(dtype=float)
    print(curves.pivot_table(index="update", columns="learner", values="reward", aggfunc="mean").round(3))
    print(record.summary_line("rl_toy", start_reward=start["reward"],
                              **{f"{k}_gain": float(summary[k]) for k in summary.index},
                              **{f"{k}_gain_sd": float(spread[k]) for k in spread.index},
                              **{f"{k}_s_per_update": float(pace[k]) for k in pace.index},
                              **({"set": ",".join(args.set)} if args.set else {})))

if __name__ == "__main__":
    main()
