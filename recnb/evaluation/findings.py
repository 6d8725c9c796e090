""""What this shows": stage 06's results in a few sentences, built from its own numbers.

Each sentence states a figure with its 95 % interval and reads it the way the paper's claims are
framed (does the LLM recommend, does it follow the intention, does it format its list), so the
notebook ends with a conclusion that changes when the numbers do, never with fixed prose.
"""

from __future__ import annotations

import math

import pandas as pd

from recnb.metrics import ILLEGAL
from recnb.tasks import NOCONTROL

RANKERS = ("SASRec", "Popularity")  # rows that answer from a ranking, not an LLM


def _cell(rows: pd.DataFrame, model: str, group: str, figure: str) -> tuple[float, float, float]:
    """(value, lo, hi) of one figure; NaN where absent."""
    hit = rows[(rows["model"] == model) & (rows["test_group"] == group)]
    if hit.empty or figure not in hit:
        return math.nan, math.nan, math.nan
    row = hit.iloc[0]
    return (float(row[figure]), float(row.get(f"{figure}_lo", math.nan)), float(row.get(f"{figure}_hi", math.nan)))


def _fmt(value: float, lo: float, hi: float, digits: int) -> str:
    if math.isnan(value):
        return "–"
    text = f"{value:.{digits}f}"
    return text if math.isnan(lo) or math.isnan(hi) else f"{text} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _beyond_noise(lo: float, hi: float) -> bool:
    return not (math.isnan(lo) or math.isnan(hi)) and (lo > 0 or hi < 0)


def eval_findings(summary: pd.DataFrame, effects: pd.DataFrame, matcher: str = "fuzzy",
                  facts: dict | None = None, starts: pd.DataFrame | None = None) -> str:
    """Markdown bullets: accuracy (I0 HR@10 of the teacher, the popularity floor and the best LLM),
    control (each LLM's paired effect of the sentence on TCP(+C) and TCP(−C)) and formatting (illegal
    items on I0), each with its interval where stage 06 computed one; with `facts` (`predict_all`'s),
    which models answered with another's weights; with `starts` (`intervals.start_effects`), what each
    model changes in illegal items over the model it started from (RL: full over v2), paired."""
    rows = summary[summary["matcher"] == matcher]
    models = list(dict.fromkeys(rows["model"]))
    llms = [m for m in models if m not in RANKERS and not m.endswith("+constrained")]
    lines = [f"**What this shows** ({matcher} matching, 95 % intervals over users in brackets):", ""]

    hr = {m: _cell(rows, m, "I0", "hr") for m in models}
    ranked = [f"{m} {_fmt(*hr[m], 3)}" for m in RANKERS if m in hr]
    best = max((m for m in llms if not math.isnan(hr[m][0])), key=lambda m: hr[m][0], default=None)
    if best is not None:
        gap = "above" if hr[best][0] > max((hr[m][0] for m in RANKERS if m in hr), default=math.nan) else "below"
        lines.append(f"- **Accuracy** (I0 HR@10): {', '.join(ranked) or 'no ranking row'}; the best LLM, {best}, "
                     f"{_fmt(*hr[best], 3)}, is {gap} the rankings.")

    for model in llms:
        parts = []
        for group, want, name in (("I1+C", 1, "TCP(+C)"), ("I1-C", -1, "TCP(−C)")):
            hit = effects[(effects["model"] == model) & (effects["test_group"] == group)]
            if hit.empty:
                continue
            e = hit.iloc[0]
            sure = _beyond_noise(e["delta_lo"], e["delta_hi"])
            verdict = ("as asked" if sure and e["delta"] * want > 0 else
                       "against the request" if sure else "within noise")
            parts.append(f"{name} {e['with']:.0f} vs {e['without']:.0f} without it, "
                         f"{e['delta']:+.0f} [{e['delta_lo']:+.0f}, {e['delta_hi']:+.0f}]: {verdict}")
        if parts:
            lines.append(f"- **Control**, {model}: the sentence moves " + "; ".join(parts) + ".")

    illegal = {m: sum(_cell(rows, m, "I0", f)[0] for f in ILLEGAL) for m in models if m not in RANKERS}
    shown = [f"{m} {v:.1f}" for m, v in illegal.items() if not math.isnan(v)]
    if shown:
        lines.append("- **Formatting** (I0, Repeat + NonExist + InHistory, % of items, lower is better): "
                     + ", ".join(shown) + ".")
    if starts is not None and not starts.empty:
        for _, e in starts[starts["figure"] == "illegal_item_pct"].iterrows():
            sure = _beyond_noise(e["delta_lo"], e["delta_hi"])
            verdict = ("no difference on any user" if e["delta"] == 0 and e["delta_lo"] == e["delta_hi"] == 0 else
                       "fewer" if sure and e["delta"] < 0 else "more" if sure else "within noise")
            lines.append(f"- **{e['model']} over {e['start']}** (its start; {e['test_group']}, same users): illegal "
                         f"items {e['value']:.1f} vs {e['start_value']:.1f} %, {e['delta']:+.1f} "
                         f"[{e['delta_lo']:+.1f}, {e['delta_hi']:+.1f}]: {verdict}.")
    for model, fact in (facts or {}).items():
        if "same_weights_as" in fact:
            lines.append(f"- **{model}** has bit-identical weights to {fact['same_weights_as']} (e.g. stage 05 kept "
                         "its SFT start as the best actor), so its rows repeat those answers.")
    twins = sorted({g for g in rows["test_group"] if g.endswith(NOCONTROL)})
    sizes = rows.groupby("test_group")["n_lists"].max() if "n_lists" in rows and len(rows) else pd.Series(dtype=float)
    others = sizes.drop("I0", errors="ignore")
    size = f"{int(sizes.max()) if len(sizes) else 0} lists per group at most"
    if "I0" in sizes and len(others) and sizes["I0"] != others.max():  # all_i0_users: I0 asks every user
        size = f"{int(sizes['I0'])} lists in I0, {int(others.max())} per other group at most"
    lines += ["", f"{len(rows['test_group'].unique())} test groups ({len(twins)} without the control sentence), {size}."]
    return "\n".join(lines)
