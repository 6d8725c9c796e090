"""One PPO update of stage 05: rollout → rewards → GAE → clipped policy/value steps (see `recnb.ppo`).

One update = sample `batch_size` prompts → score → old/ref log-probs and values → per-token
rewards (item + list + KL penalty) → GAE → `ppo_epochs` passes over minibatches with clipped
policy and value losses and an entropy bonus, stopped early when approximate KL > `target_kl`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recnb.ppo.config import PPOConfig
from recnb.ppo.model import ACTOR, CRITIC, ActorCritic
from recnb.ppo.objective import (
    explained_variance,
    gae,
    masked_mean,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)
from recnb.ppo.rollout import Rollout, Scorer, sample_rollout, score_rollout


@dataclass
class PPOBatch:
    """A scored rollout with everything the PPO epochs need (tensors `(B, T)` unless noted)."""

    input_ids: torch.Tensor  # (B, P + T)
    attention_mask: torch.Tensor  # (B, P + T)
    response_ids: torch.Tensor
    mask: torch.Tensor
    old_logp: torch.Tensor
    ref_logp: torch.Tensor
    old_values: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor  # whitened
    returns: torch.Tensor


@torch.no_grad()
def prepare_batch(ac: ActorCritic, rollout: Rollout, scores: torch.Tensor, cfg: PPOConfig) -> PPOBatch:
    """Log-probs (actor, reference), values, per-token rewards and whitened GAE advantages."""
    ids, att, resp, mask = rollout.input_ids, rollout.attention_mask, rollout.response_ids, rollout.response_mask
    parts: dict[str, list[torch.Tensor]] = {"old": [], "ref": [], "val": []}
    for rows in torch.arange(len(ids)).split(cfg.minibatch_size):
        ac.use_actor()
        parts["old"].append(ac.policy_logps(ids[rows], att[rows], resp[rows], cfg.temperature, entropy=False)[0])
        parts["ref"].append(ac.reference_logps(ids[rows], att[rows], resp[rows], cfg.temperature))
        parts["val"].append(ac.values(ids[rows], att[rows], resp.shape[1]))
    old, ref, val = (torch.cat(parts[k]) * mask for k in ("old", "ref", "val"))
    rewards = token_rewards(old - ref, scores, mask, cfg.kl_coef)
    adv, returns = gae(rewards, val, mask, cfg.gamma, cfg.lam)
    return PPOBatch(ids, att, resp, mask, old, ref, val, rewards, masked_whiten(adv, mask), returns)


def make_optimizer(ac: ActorCritic, cfg: PPOConfig) -> torch.optim.Optimizer:
    """Adam over the actor LoRA, and the critic LoRA and value head where there is a critic (base
    weights stay frozen)."""
    groups = [{"params": ac.adapter_params(ACTOR), "lr": cfg.lr}]
    if ac.has_critic:
        groups.append({"params": ac.adapter_params(CRITIC) + list(ac.value_head.parameters()), "lr": cfg.critic_lr})
    return torch.optim.Adam(groups)


def optimise_minibatch(ac: ActorCritic, opt: torch.optim.Optimizer, b: PPOBatch, rows: torch.Tensor,
                       cfg: PPOConfig) -> dict[str, float]:
    """One gradient step on a minibatch: actor backward, then critic backward, clip, step.

    The two backward passes run one after the other because peft's `set_adapter` makes only the
    active adapter require gradients.
    """
    mask = b.mask[rows]
    ac.use_actor()
    logp, ent, kl = ac.policy_logps(b.input_ids[rows], b.attention_mask[rows], b.response_ids[rows], cfg.temperature,
                                    full_kl=cfg.kl_loss_coef > 0)
    p_loss, approx_kl, clip_frac, ratio = policy_loss(logp, b.old_logp[rows], b.advantages[rows], mask, cfg.cliprange)
    entropy = masked_mean(ent, mask)
    full_kl = masked_mean(kl, mask) if kl is not None else torch.zeros(())
    (p_loss - cfg.ent_coef * entropy + cfg.kl_loss_coef * full_kl).backward()
    values = ac.values(b.input_ids[rows], b.attention_mask[rows], b.response_ids.shape[1])
    v_loss, v_clip = value_loss(values, b.old_values[rows], b.returns[rows], mask, cfg.cliprange_value)
    (cfg.vf_coef * v_loss).backward()
    for group in opt.param_groups:  # clipped per network: the value loss must not shrink the actor's step
        torch.nn.utils.clip_grad_norm_(group["params"], cfg.max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    ac.use_actor()
    return {"policy_loss": p_loss.item(), "value_loss": v_loss.item(), "entropy": entropy.item(),
            "full_kl": full_kl.item(),
            "approx_kl": approx_kl, "clip_frac": clip_frac, "value_clip_frac": v_clip, "ratio": ratio}


def optimise(ac: ActorCritic, opt: torch.optim.Optimizer, b: PPOBatch, cfg: PPOConfig) -> dict[str, float]:
    """`ppo_epochs` shuffled passes over minibatches; stops early once approximate KL > `target_kl`."""
    steps = []
    for _ in range(cfg.ppo_epochs):
        for rows in torch.randperm(len(b.mask)).split(cfg.minibatch_size):
            steps.append(optimise_minibatch(ac, opt, b, rows, cfg))
            if steps[-1]["approx_kl"] > cfg.target_kl:
                return {**pd.DataFrame(steps).mean().to_dict(), "minibatches": len(steps), "early_stop": 1}
    return {**pd.DataFrame(steps).mean().to_dict(), "minibatches": len(steps), "early_stop": 0}


def batch_records(records: list[dict], batch_size: int, seed: int, update: int) -> list[dict]:
    """The prompts of update `update` (0-based): consecutive slices of seeded per-epoch shuffles.

    Stateless, so a resumed run sees exactly the prompts the uninterrupted run would have seen.
    """
    if not records:
        raise ValueError("no RL prompts: rl_prompts.jsonl of stage 03 is empty; rerun 03_instructions")
    start, n = update * batch_size, len(records)
    epoch, order = start // n, []
    while len(order) < start % n + batch_size:
        order.extend(np.random.default_rng([seed, epoch]).permutation(n).tolist())
        epoch += 1
    return [records[i] for i in order[start % n: start % n + batch_size]]


def ppo_update(ac: ActorCritic, opt: torch.optim.Optimizer, tokenizer, records: list[dict], scorer: Scorer,
               cfg: PPOConfig) -> dict[str, float]:
    """One PPO update on a batch of prompts; returns the `ppo_log.csv` row (timings in seconds)."""
    t0 = time.perf_counter()
    ac.use_actor()
    rollout = sample_rollout(ac.model, tokenizer, [r["prompt"] for r in records], max_new_tokens=cfg.max_new_tokens,
                             temperature=cfg.temperature, top_k=cfg.top_k, max_prompt_tokens=cfg.max_prompt_tokens)
    t1 = time.perf_counter()
    scores, results = score_rollout(rollout, records, tokenizer, scorer, item_rewards=cfg.reward == "full",
                                    list_reward_scale=cfg.list_reward_scale)
    t2 = time.perf_counter()
    batch = prepare_batch(ac, rollout, scores, cfg)
    stats = optimise(ac, opt, batch, cfg)
    t3 = time.perf_counter()
    return {**reward_stats(results), **stats,
            "kl": (batch.old_logp - batch.ref_logp).sum(1).mean().item(),
            "explained_var": explained_variance(batch.old_values, batch.returns, batch.mask),
            "response_len": batch.mask.sum(1).mean().item(),
            "t_generate": t1 - t0, "t_score": t2 - t1, "t_train": t3 - t2}


def reward_stats(results: list) -> dict[str, float]:
    """Mean R_list (unscaled), mean R_item over all items, % illegal items, items per list."""
    item_rewards = [r for res in results for r in res.item_rewards]
    legal = [ok for res in results for ok in res.legal]
    return {"list_reward": float(np.mean([res.list_reward for res in results])),
            "item_reward": float(np.mean(item_rewards)) if item_rewards else float("nan"),
            "illegal_pct": 100.0 * (1 - np.mean(legal)) if legal else float("nan"),
            "items": len(legal) / max(len(results), 1)}
