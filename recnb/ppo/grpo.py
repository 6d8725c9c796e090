"""Critic-free RL for stage 05: GRPO with the paper's item- and list-level rewards (`algorithm: grpo`).

Shared with PPO, unchanged: the rollout (`rollout.sample_rollout`), the scoring (`RecScorer`: Eq. 1-5
and Algorithm 1), where each item ends on the tokens (`rollout.answer_items`), the clipped surrogate
(`objective.policy_loss`), the exact KL to the SFT model (`ActorCritic.policy_logps(full_kl=True)`),
the prompt order (`update.batch_records`), validation, checkpoints and resume (`loop`).

What differs. An update draws `batch_size / group_size` prompts and samples `group_size` (G) answers
for each, so PPO and GRPO spend the same number of sampled answers per update. There is no critic
and no value head: an answer's advantage is measured against the other answers to the same prompt.

- **List level.** For answer i of a group, `A_list_i = (R_list_i − mean_g R_list) / (std_g R_list + eps)`
  (sample std over the G answers, as DeepSeekMath and trl), on every token of answer i. A group whose
  answers score alike (zero variance) teaches nothing: every advantage is 0.
- **Item level** (`reward: full`; the paper's R_item). Item j of answer i has the reward-to-go
  `G_ij = Σ_{j' ≥ j} R_item_ij'` (γ = 1: an illegal item late in the list still costs the items before
  it, as in PPO's GAE with λ = γ = 1). It is normalised among the answers of the group that have an
  item at position j: `A_item_ij = (G_ij − mean) / (std + eps)`; with fewer than two such answers it is
  0. `A_item_ij` is added on the tokens of item j: from the token after item j−1's last token (or the
  answer's first token) to item j's last token (`rollout.item_end_tokens`, the token where PPO pays
  R_item). Tokens after the last item (the final newline, EOS) carry only the list advantage.
  Rank-GRPO (arXiv 2510.20150) credits ranks the same way; normalising per position keeps a list's
  first slot, which the teacher's rank rewards most, from drowning the later ones.
- **Loss**: PPO's clipped surrogate on these advantages, averaged over all response tokens of the
  minibatch (as our PPO; DeepSeekMath averages per answer first), minus `ent_coef` × entropy.
- **KL** in the loss, not in the reward: `kl_loss_coef · KL(π ‖ π_ref)`, exact over the vocabulary at
  every response position (GRPO's k3 estimator is its sampled, unbiased stand-in). A per-token
  penalty in the reward would be shifted away by the group normalisation, and the exact KL also holds
  the format tokens no reward pays for (see `recnb.ppo.loop`). `kl_coef` (the reward's penalty) must be 0.
- Unused under grpo: the critic's settings (`critic_lr`, `vf_coef`, `cliprange_value`), GAE's `gamma`
  and `lam`, and `list_reward_scale` (a scale is standardised away within the group).

Why our loop and not trl's `GRPOTrainer`: it pays one scalar per completion (per-token advantages
need a subclass of its loss), samples through its own generation path and keeps its own
checkpoints, while here the rollout, the item placement, the validation and the resume logic are
the ones PPO already uses and tests; a head-to-head should differ only in the advantage.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from recnb.ppo.config import PPOConfig
from recnb.ppo.model import ActorCritic
from recnb.ppo.objective import masked_mean, policy_loss
from recnb.ppo.rollout import Scorer, answer_items, sample_rollout
from recnb.ppo.update import reward_stats

EPS = 1e-4


def _normalise(values: Sequence[float]) -> list[float]:
    """(v − mean) / (sample std + EPS); all zeros for fewer than two values."""
    if len(values) < 2:
        return [0.0] * len(values)
    arr = np.asarray(values, dtype=np.float64)
    return ((arr - arr.mean()) / (arr.std(ddof=1) + EPS)).tolist()


def group_list_advantages(list_rewards: Sequence[float], group_size: int) -> list[float]:
    """`A_list` of each answer: its R_list standardised within its group of `group_size` consecutive answers."""
    if len(list_rewards) % group_size:
        raise ValueError(f"{len(list_rewards)} answers do not split into groups of {group_size}")
    out: list[float] = []
    for start in range(0, len(list_rewards), group_size):
        out += _normalise(list_rewards[start:start + group_size])
    return out


def reward_to_go(item_rewards: Sequence[float]) -> list[float]:
    """`G_j = Σ_{j' ≥ j} r_j'` for each item position j of one answer."""
    return np.cumsum(np.asarray(item_rewards, dtype=np.float64)[::-1])[::-1].tolist()


def group_item_advantages(item_rewards: Sequence[Sequence[float]], group_size: int) -> list[list[float]]:
    """`A_item` per answer and item: reward-to-go standardised among the group's answers with an item at
    that position (0 where fewer than two answers reach it)."""
    if len(item_rewards) % group_size:
        raise ValueError(f"{len(item_rewards)} answers do not split into groups of {group_size}")
    out: list[list[float]] = []
    for start in range(0, len(item_rewards), group_size):
        togo = [reward_to_go(r) for r in item_rewards[start:start + group_size]]
        adv = [[0.0] * len(g) for g in togo]
        for pos in range(max((len(g) for g in togo), default=0)):
            have = [i for i, g in enumerate(togo) if pos < len(g)]
            for i, a in zip(have, _normalise([togo[i][pos] for i in have])):
                adv[i][pos] = a
        out += adv
    return out


def token_advantages(list_adv: Sequence[float], item_adv: Sequence[Sequence[float]] | None,
                     item_tokens: Sequence[Sequence[int]], lengths: Sequence[int], width: int) -> torch.Tensor:
    """Advantages `(N, width)`: `A_list` on every real token, plus `A_item` of item j on its span
    (after item j−1's end token up to item j's); zero on padding. `item_adv=None`: list level only."""
    adv = torch.zeros(len(list_adv), width)
    for row, (a_list, length) in enumerate(zip(list_adv, lengths)):
        adv[row, :length] = a_list
        if item_adv is None:
            continue
        start = 0
        for end, a_item in zip(item_tokens[row], item_adv[row], strict=True):
            if end >= start:  # two items ending on one token: the second adds to that token only
                adv[row, start:end + 1] += a_item
            else:
                adv[row, end] += a_item
            start = max(start, end + 1)
    return adv


def grpo_update(ac: ActorCritic, opt: torch.optim.Optimizer, tokenizer, records: list[dict], scorer: Scorer,
                cfg: PPOConfig) -> dict[str, float]:
    """One GRPO update: `records` are the update's distinct prompts; each is answered `group_size` times.

    Returns the `ppo_log.csv` row: the same reward, KL and timing columns as PPO's (no value columns),
    plus `zero_var_groups` (% of groups whose list rewards were all equal: no list-level signal; with
    `reward: full` their item advantages can still differ).
    """
    t0 = time.perf_counter()
    groups = [rec for rec in records for _ in range(cfg.group_size)]
    ac.use_actor()
    rollout = sample_rollout(ac.model, tokenizer, [r["prompt"] for r in groups], max_new_tokens=cfg.max_new_tokens,
                             temperature=cfg.temperature, top_k=cfg.top_k, max_prompt_tokens=cfg.max_prompt_tokens)
    t1 = time.perf_counter()
    results, tokens, lengths = [], [], []
    for row, record in enumerate(groups):
        lines, ends, length = answer_items(rollout, row, tokenizer)
        results.append(scorer(record, [line.title for line in lines]))
        tokens.append(ends)
        lengths.append(length)
    list_rewards = [r.list_reward for r in results]
    list_adv = group_list_advantages(list_rewards, cfg.group_size)
    item_adv = group_item_advantages([list(r.item_rewards) for r in results], cfg.group_size) \
        if cfg.reward == "full" else None
    mask = rollout.response_mask
    advantages = token_advantages(list_adv, item_adv, tokens, lengths, mask.shape[1]).to(mask.device) * mask
    t2 = time.perf_counter()
    ids, att, resp = rollout.input_ids, rollout.attention_mask, rollout.response_ids
    with torch.no_grad():
        old, ref = [], []
        for rows in torch.arange(len(ids)).split(cfg.minibatch_size):
            old.append(ac.policy_logps(ids[rows], att[rows], resp[rows], cfg.temperature, entropy=False)[0])
            ref.append(ac.reference_logps(ids[rows], att[rows], resp[rows], cfg.temperature))
        old_logp, ref_logp = torch.cat(old) * mask, torch.cat(ref) * mask
    steps = _optimise(ac, opt, (ids, att, resp, mask, old_logp, advantages), cfg)
    t3 = time.perf_counter()
    spread = np.asarray(list_rewards).reshape(-1, cfg.group_size).std(axis=1)
    return {**reward_stats(results), **pd.DataFrame(steps).mean().to_dict(), "minibatches": len(steps),
            "early_stop": int(steps[-1]["approx_kl"] > cfg.target_kl),
            "kl": (old_logp - ref_logp).sum(1).mean().item(), "response_len": mask.sum(1).mean().item(),
            "zero_var_groups": 100.0 * float((spread == 0).mean()),
            "t_generate": t1 - t0, "t_score": t2 - t1, "t_train": t3 - t2}


def _optimise(ac: ActorCritic, opt: torch.optim.Optimizer, batch: tuple, cfg: PPOConfig) -> list[dict[str, float]]:
    """`ppo_epochs` shuffled passes over minibatches (as PPO); stops once approximate KL > `target_kl`."""
    steps = []
    for _ in range(cfg.ppo_epochs):
        for rows in torch.randperm(len(batch[0])).split(cfg.minibatch_size):
            steps.append(_step(ac, opt, *(t[rows] for t in batch), cfg))
            if steps[-1]["approx_kl"] > cfg.target_kl:
                return steps
    return steps


def _step(ac: ActorCritic, opt: torch.optim.Optimizer, ids, att, resp, mask, old_logp, adv,
          cfg: PPOConfig) -> dict[str, float]:
    """One gradient step of the actor: clipped surrogate − entropy bonus + exact KL to the SFT model."""
    ac.use_actor()
    logp, ent, kl = ac.policy_logps(ids, att, resp, cfg.temperature, full_kl=cfg.kl_loss_coef > 0)
    p_loss, approx_kl, clip_frac, ratio = policy_loss(logp, old_logp, adv, mask, cfg.cliprange)
    entropy = masked_mean(ent, mask)
    full_kl = masked_mean(kl, mask) if kl is not None else torch.zeros(())
    (p_loss - cfg.ent_coef * entropy + cfg.kl_loss_coef * full_kl).backward()
    for group in opt.param_groups:
        torch.nn.utils.clip_grad_norm_(group["params"], cfg.max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {"policy_loss": p_loss.item(), "entropy": entropy.item(), "full_kl": full_kl.item(),
            "approx_kl": approx_kl, "clip_frac": clip_frac, "ratio": ratio}
