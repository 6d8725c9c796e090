"""The percentile bootstrap, shared by every stage that puts an interval on a sample.

Stage 06 resamples test users (`recnb.evaluation.intervals`), stage 05 the validation prompts of its
reward check (`recnb.ppo.loop.reward_gain`). Draws are counts per unit (`resample_weights`), seeded by
a seed and a name, so two figures over the same units resampled under one name are paired.
"""

from __future__ import annotations

import zlib

import numpy as np

N_RESAMPLES = 1000
LEVEL = 0.95


def resample_weights(n: int, n_resamples: int, seed: int, name: str) -> np.ndarray:
    """(n_resamples, n) counts: how often each of n units (users, prompts) is drawn in each resample (rows sum to n).

    Seeded by `seed` and `name` (e.g. a family of test groups), so every model resampled under one name gets the same draws.
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    draws = rng.integers(0, n, size=(n_resamples, n))
    weights = np.zeros((n_resamples, n), dtype=np.float64)
    np.add.at(weights, (np.arange(n_resamples)[:, None], draws), 1.0)
    return weights


def percentile_bounds(draws: np.ndarray, level: float) -> tuple[float, float]:
    """The percentile interval of bootstrap `draws` at `level` (NaN draws, empty resamples, left out)."""
    finite = draws[~np.isnan(draws)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


def mean_interval(values, n_resamples: int = N_RESAMPLES, seed: int = 0, name: str = "",
                  level: float = LEVEL) -> tuple[float, float, float]:
    """The mean of one value per unit (a user, a prompt) and its percentile-bootstrap interval.

    The units are resampled with replacement (`resample_weights`, seeded by `seed` and `name`). For a
    paired comparison pass each unit's difference: its interval is then the paired one.

    Returns:
        (mean, lo, hi); lo and hi are NaN without resamples or values, and with a single value (one unit
        has no spread to resample: every draw would repeat it).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if n_resamples == 0 or values.size == 1:
        return mean, float("nan"), float("nan")
    draws = resample_weights(values.size, n_resamples, seed, name) @ values / values.size
    return (mean, *percentile_bounds(draws, level))
