"""95 % bootstrap intervals over users for every figure of stage 06, paired across models and twins.

A test group's figure is a sample: 100 users stand for the 943 of ml-100k. Its interval resamples
the *users* of the group with replacement (`n_resamples` times) and recomputes the figure exactly as
`recnb.metrics.aggregate` does (means over the lists where a metric is present; item percentages as
summed counts over summed `n_items`); the interval is the 2.5th and 97.5th percentile of the
resampled figures (the percentile bootstrap).

Pairing: one family of groups (a group and its `_nocontrol` twin, which ask the same users) draws
one set of resamples, shared by every model and matcher. So a difference between two models, or
between a group and its twin, is resampled user by user (`paired_delta`), and its interval is much
narrower than the two intervals side by side suggest when the models agree on users. The draws are
seeded by (seed, family name), so the same scores give the same intervals, whatever else the frame
holds.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from recnb import artifacts as col
from recnb.bootstrap import LEVEL, N_RESAMPLES, percentile_bounds, resample_weights
from recnb.metrics import ILLEGAL, ITEM_FIGURES, MEAN_FIGURES
from recnb.tasks import NOCONTROL

# stage 06 also reports HR@5 / NDCG@5 (see `recnb.evaluation.predict.summarise`)
MEANS = (*MEAN_FIGURES, ("hit5", "hr5", 1), ("ndcg5", "ndcg5", 1))
KEYS = ("model", "test_group", "matcher")


def family(group: str) -> str:
    """The group a `_nocontrol` twin belongs to (its users are the group's)."""
    return group.removesuffix(NOCONTROL)


def _figure_draws(part: pd.DataFrame, users: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Each figure of one (model, group, matcher) under every resample: {figure: (n_resamples,)}."""
    aligned = part.set_index(col.USER).reindex(users)  # a user without a row adds nothing
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for key, name, scale in MEANS:
            if key not in aligned:
                continue
            values = pd.to_numeric(aligned[key], errors="coerce").to_numpy(np.float64)
            present = ~np.isnan(values)
            out[name] = scale * (weights @ np.where(present, values, 0.0)) / (weights @ present)
        n_items = pd.to_numeric(aligned.get("n_items"), errors="coerce").fillna(0).to_numpy(np.float64)
        for key, name in ITEM_FIGURES:
            if key in aligned:
                counts = pd.to_numeric(aligned[key], errors="coerce").fillna(0).to_numpy(np.float64)
                out[name] = 100 * (weights @ counts) / (weights @ n_items)
    return out


def _draws(scores: pd.DataFrame, n_resamples: int, seed: int) -> dict[tuple[str, str, str], dict[str, np.ndarray]]:
    """Resampled figures of every (model, test_group, matcher), families drawing shared weights."""
    _check_unique(scores)
    fam = scores["test_group"].map(family)
    out = {}
    for name in sorted(fam.unique()):
        rows = scores[fam == name]
        users = np.sort(rows[col.USER].unique())
        weights = resample_weights(len(users), n_resamples, seed, name)
        for key, part in rows.groupby(list(KEYS), sort=False):
            out[key] = _figure_draws(part, users, weights)
    return out


def _check_unique(scores: pd.DataFrame) -> None:
    dup = scores.duplicated([*KEYS, col.USER])
    if dup.any():
        first = scores.loc[dup, [*KEYS, col.USER]].iloc[0].to_dict()
        raise ValueError(f"scores hold more than one list per user and group (e.g. {first}); intervals resample "
                         "users, so each (model, test_group, matcher, user) must be one row")


def bootstrap_intervals(scores: pd.DataFrame, n_resamples: int = N_RESAMPLES, seed: int = 0,
                        level: float = LEVEL) -> pd.DataFrame:
    """`<figure>_lo` / `<figure>_hi` columns per (model, test_group, matcher) of stage 06's scores.

    Args:
        scores: one row per (model, test_group, matcher, user): `predict.score_predictions`.
        n_resamples: bootstrap resamples of the users (1000 gives percentiles stable to ~0.5 points).
        level: coverage of the interval.
    """
    if not 0 < level < 1:
        raise ValueError(f"level = {level}: the coverage of an interval is in (0, 1), e.g. 0.95")
    rows = []
    for key, figures in _draws(scores, n_resamples, seed).items():
        row = dict(zip(KEYS, key))
        for name, draws in figures.items():
            row[f"{name}_lo"], row[f"{name}_hi"] = percentile_bounds(draws, level)
        rows.append(row)
    return pd.DataFrame(rows)


def _family_draws(scores: pd.DataFrame, group: str, matcher: str, n_resamples: int, seed: int):
    """(resampled figures, figures on all users) of one matcher and one group's family."""
    part = scores[(scores["matcher"] == matcher) & (scores["test_group"].map(family) == family(group))]
    users = np.sort(part[col.USER].unique())
    whole = {key: _figure_draws(rows, users, np.ones((1, len(users))))
             for key, rows in part.groupby(list(KEYS), sort=False)}
    return _draws(part, n_resamples, seed), whole


def _delta(draws, whole, figure: str, a: tuple[str, str], b: tuple[str, str], matcher: str,
           level: float) -> dict[str, float]:
    keys = [(model, group, matcher) for model, group in (a, b)]
    for key in keys:
        if figure not in draws.get(key, {}):
            raise KeyError(f"no {figure!r} for model {key[0]!r} in group {key[1]!r} ({matcher} matching)")
    lo, hi = percentile_bounds(draws[keys[0]][figure] - draws[keys[1]][figure], level)
    va, vb = (float(whole[key][figure][0]) for key in keys)
    return {"a": va, "b": vb, "delta": va - vb, "lo": lo, "hi": hi}


def paired_delta(scores: pd.DataFrame, figure: str, a: tuple[str, str], b: tuple[str, str], matcher: str = "fuzzy",
                 n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict[str, float]:
    """Figure of `a` minus figure of `b` (each a (model, test_group) of one family), with its paired interval.

    Returns:
        `{"a", "b", "delta", "lo", "hi"}`: both figures on all users, their difference and its interval.
    """
    return paired_deltas(scores, [(figure, a, b)], matcher, n_resamples, seed, level)[0]


def paired_deltas(scores: pd.DataFrame, comparisons: Iterable[tuple[str, tuple[str, str], tuple[str, str]]],
                  matcher: str = "fuzzy", n_resamples: int = N_RESAMPLES, seed: int = 0,
                  level: float = LEVEL) -> list[dict[str, float]]:
    """`paired_delta` of each (figure, a, b), resampling each family of groups once for all of them."""
    families: dict[str, tuple] = {}
    out = []
    for figure, a, b in comparisons:
        if family(a[1]) != family(b[1]):
            raise ValueError(f"paired_delta compares groups asked of the same users; {a[1]!r} and {b[1]!r} are not")
        if family(a[1]) not in families:
            families[family(a[1])] = _family_draws(scores, a[1], matcher, n_resamples, seed)
        out.append(_delta(*families[family(a[1])], figure, a, b, matcher, level))
    return out


CONTROL_FIGURES = {"I1+C": "tcp_pct", "I1-C": "tcp_pct", "I2<=20": "cpa_pct", "I2~=30": "cpa_pct",
                   "I2>=30": "cpa_pct"}
EFFECT_COLUMNS = ["model", "test_group", "figure", "matcher", "with", "without", "delta", "delta_lo", "delta_hi"]


def control_effects(scores: pd.DataFrame, models: Iterable[str], matcher: str = "fuzzy",
                    n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL) -> pd.DataFrame:
    """What the control sentence does, per model and control group: the figure with it, without it (the
    `_nocontrol` twin, same users) and the paired difference with its interval.

    TCP(+C) and CPA should rise with the sentence, TCP(−C) fall; an interval that excludes 0 says the
    sentence changed the lists beyond what the sample of users can explain.
    """
    present = set(zip(scores["model"], scores["test_group"]))
    rows = []
    for group, figure in CONTROL_FIGURES.items():
        twin = group + NOCONTROL
        pairs = [m for m in models if (m, group) in present and (m, twin) in present]
        if not pairs:
            continue
        draws, whole = _family_draws(scores, group, matcher, n_resamples, seed)
        for model in pairs:
            d = _delta(draws, whole, figure, (model, group), (model, twin), matcher, level)
            rows.append({"model": model, "test_group": group, "figure": figure, "matcher": matcher,
                         "with": d["a"], "without": d["b"], "delta": d["delta"], "delta_lo": d["lo"],
                         "delta_hi": d["hi"]})
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


START_FIGURES = ("illegal_item_pct", *ILLEGAL, "hr")  # illegal: the three formatting errors, summed per resample
START_COLUMNS = ["model", "start", "test_group", "figure", "matcher", "value", "start_value", "delta", "delta_lo",
                 "delta_hi"]


def start_effects(scores: pd.DataFrame, pairs: Iterable[tuple[str, str]], group: str = "I0", matcher: str = "fuzzy",
                  n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL) -> pd.DataFrame:
    """What a model changes over the model it started from (full over v2: what RL changes), on `group`'s
    users, paired user by user: illegal items (Repeat + NonExist + InHistory, % of items, the sum the
    paper's RL is meant to cut), each of the three, and HR.

    Args:
        pairs: (model, start) labels, e.g. `("full", "v2")` (`predict.start_pairs`); a pair with a label
            that has no rows in `group` is left out.
    """
    mine = scores[scores["matcher"] == matcher]
    present = set(zip(mine["model"], mine["test_group"]))
    pairs = [(m, s) for m, s in pairs if (m, group) in present and (s, group) in present]
    if not pairs:
        return pd.DataFrame(columns=START_COLUMNS)
    draws, whole = _family_draws(scores, group, matcher, n_resamples, seed)
    for figures in (*draws.values(), *whole.values()):
        if all(f in figures for f in ILLEGAL):
            figures["illegal_item_pct"] = sum(figures[f] for f in ILLEGAL)
    rows = []
    for model, start in pairs:
        for figure in START_FIGURES:
            d = _delta(draws, whole, figure, (model, group), (start, group), matcher, level)
            rows.append({"model": model, "start": start, "test_group": group, "figure": figure, "matcher": matcher,
                         "value": d["a"], "start_value": d["b"], "delta": d["delta"], "delta_lo": d["lo"],
                         "delta_hi": d["hi"]})
    return pd.DataFrame(rows, columns=START_COLUMNS)
