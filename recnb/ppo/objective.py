"""The PPO arithmetic of stage 05: per-token rewards, GAE, whitening, clipped losses, diagnostics.

Pure tensor functions (no model, no tokenizer) so each one is unit-tested against hand-computed
numbers. Shapes are `(batch, response_len)` with a float `mask` that is 1 on real response tokens
(up to and including EOS) and 0 on padding after it. trl 1.16 no longer ships its PPO helpers
(`masked_whiten` went with the PPO trainer), so the masked statistics are written here; their
definitions follow the PPO implementation details of Huang et al. (2022) that trl used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over the positions where `mask` is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of `x` over the masked positions (Bessel's correction, as trl did)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask)
    return var * n / (n - 1).clamp(min=1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Shift to zero mean and scale to unit variance over the masked positions; padding becomes 0."""
    white = (x - masked_mean(x, mask)) * torch.rsqrt(masked_var(x, mask) + eps)
    return white * mask


def token_rewards(
    kl: torch.Tensor, score: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token reward: the placed item/list scores minus `kl_coef · (log π − log π_ref)`.

    Args:
        kl: per-token `log π − log π_ref` of the sampled tokens under the rollout policy.
        score: item rewards on each item's last token and the scaled list reward on the final token.
        mask: 1 on response tokens.
        kl_coef: weight of the KL penalty (keeps the policy near the SFT model).
    """
    return (score - kl_coef * kl) * mask


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over each response.

    `delta_t = r_t + γ·V_{t+1} − V_t` with `V = 0` after the last real token, and
    `A_t = delta_t + γλ·A_{t+1}`; returns are `A + V` (the critic's regression target).

    Returns:
        `(advantages, returns)`, both zero on padding.
    """
    values = values * mask
    rewards = rewards * mask
    length = rewards.shape[1]
    next_adv = torch.zeros_like(rewards[:, 0])
    adv = torch.zeros_like(rewards)
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(next_adv)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        adv[:, t] = next_adv
    return adv, (adv + values) * mask


@dataclass
class LossParts:
    """The terms of one minibatch's PPO objective and its diagnostics (floats except the losses)."""

    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: float
    clip_frac: float
    value_clip_frac: float
    ratio_mean: float


def policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, float, float, float]:
    """PPO's clipped surrogate `max(−A·ρ, −A·clip(ρ, 1±ε))`, masked mean.

    Returns:
        `(loss, approx_kl, clip_fraction, mean_ratio)`; approx KL is `E[½(log ρ)²]` (low variance).
    """
    log_ratio = (logp - old_logp) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        approx_kl = masked_mean(0.5 * log_ratio**2, mask).item()
        clip_frac = masked_mean((clipped > unclipped).float(), mask).item()
        ratio_mean = masked_mean(ratio, mask).item()
    return loss, approx_kl, clip_frac, ratio_mean


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, float]:
    """Clipped value loss `½·max((V − R)², (V_clip − R)²)`, V_clip within ±clip of the rollout value.

    `clip <= 0` turns clipping off (`½·(V − R)²`). The clip is in reward units: with returns on the
    paper's ×10 list-reward scale, ±0.2 lets the critic's values move at most 0.2 per update, so a
    fresh critic needs tens of updates just to reach the mean return.

    Returns:
        `(loss, fraction of tokens where the clipped term was the larger one)`.
    """
    if clip <= 0:
        return 0.5 * masked_mean((values - returns) ** 2, mask), 0.0
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    with torch.no_grad():
        frac = masked_mean((loss_clipped > loss_unclipped).float(), mask).item()
    return loss, frac


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """`1 − Var(R − V)/Var(R)` over response tokens: 1 = perfect critic, ≤ 0 = no better than a constant."""
    var_r = masked_var(returns, mask)
    if var_r.item() == 0.0:
        return float("nan")
    return (1.0 - masked_var(returns - values, mask) / var_r).item()
