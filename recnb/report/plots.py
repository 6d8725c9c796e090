"""Stage 07's paper figures, drawn only from recorded results (06 summary, 05 PPO log, 01/02 metrics),
and the seeds study's forest plot (`seed_effects`, `studies/tiny_seeds.py`).

One style for every figure (`set_style`): sized for a column (`COLUMN_IN` wide) or a page
(`PAGE_IN`), TrueType fonts in PDFs (many venues reject Type 3), PNGs at `DPI`, no offset axes.
Every figure is saved as PNG and PDF under `paper_figures/<run>/` (`recnb.paths.figures_dir`) by
`save`. Functions return the matplotlib Figure so notebooks show it; a panel with nothing to draw says so in words.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

COLUMN_IN, PAGE_IN = 3.4, 7.0  # widths of one column and of a full page in a two-column paper
DPI = 300
GROUP_TITLES = {"I1+C": "I1 +C", "I1-C": "I1 −C", "I2<=20": "I2 ≤ 20%", "I2~=30": "I2 ≈ 30%", "I2>=30": "I2 ≥ 30%"}
CONTROL = {"I1+C": ("tcp_pct", "TCP@10 (%) ↑"), "I1-C": ("tcp_pct", "TCP@10 (%) ↓"),
           "I2<=20": ("cpa_pct", "CPA (%) ↑"), "I2~=30": ("cpa_pct", "CPA (%) ↑"), "I2>=30": ("cpa_pct", "CPA (%) ↑")}
FORMAT_ERRORS = {"repeat_item_pct": "RepeatItem", "non_exist_pct": "NonExist", "in_history_pct": "InHistory"}
# ppo_log.csv columns drawn by `ppo_curves`, in words
PPO_SERIES = {"list_reward": "list reward (sampled)", "item_reward": "item reward (sampled)",
              "val_list_reward": "list reward (greedy, validation)", "kl": "KL to SFT (sampled tokens, nats)",
              "full_kl": "KL to SFT (exact, nats)", "approx_kl": "approximate KL of the update"}


def set_style() -> None:
    """The one style of every paper figure: white grid, paper-size fonts, colour-blind palette."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.0)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": DPI, "savefig.bbox": "tight", "pdf.fonttype": 42,
                         "ps.fonttype": 42, "axes.formatter.useoffset": False,
                         "axes.formatter.limits": (-6, 6), "axes.titleweight": "bold"})


def no_data(ax: plt.Axes, what: str = "no answers to show") -> None:
    """Write `what` in an empty panel instead of leaving it blank."""
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def save(fig: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    """Write `name.png` and `name.pdf`; returns both paths."""
    files = [Path(out_dir) / f"{name}.{ext}" for ext in ("png", "pdf")]
    for file in files:
        fig.savefig(file)
    return files


def grouped_bars(ax: plt.Axes, frame: pd.DataFrame, x: str, hue: str, value: str = "value") -> None:
    """Bars of `value` per `x` category, one colour per `hue` level, with the 95 % interval as an error
    bar where `frame` has `lo` / `hi` (stage 06's bootstrap over users); a legend entry per hue level."""
    xs, hues = list(dict.fromkeys(frame[x])), list(dict.fromkeys(frame[hue]))
    width = 0.8 / len(hues)
    colours = sns.color_palette(n_colors=len(hues))
    for j, (level, colour) in enumerate(zip(hues, colours)):
        part = frame[frame[hue] == level].set_index(x).reindex(xs)
        pos = [i - 0.4 + width * (j + 0.5) for i in range(len(xs))]
        ax.bar(pos, part[value].fillna(0), width=width * 0.95, color=colour, label=level)
        if {"lo", "hi"} <= set(part.columns) and part[["lo", "hi"]].notna().any(axis=None):
            err = [(part[value] - part["lo"]).clip(lower=0), (part["hi"] - part[value]).clip(lower=0)]
            ax.errorbar(pos, part[value], yerr=err, fmt="none", ecolor="0.2", elinewidth=0.8, capsize=1.5)
    ax.set_xticks(range(len(xs)), xs, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_xlim(-0.6, len(xs) - 0.4)


def _with_bounds(part: pd.DataFrame, metric: str) -> dict[str, list]:
    """`value`, `lo`, `hi` columns of one metric (NaN bounds where the summary has no intervals)."""
    nan = [float("nan")] * len(part)
    return {"value": list(part[metric]), "lo": list(part.get(f"{metric}_lo", nan)),
            "hi": list(part.get(f"{metric}_hi", nan))}


def _matcher(summary: pd.DataFrame, matcher: str) -> pd.DataFrame:
    part = summary[summary["matcher"] == matcher]
    if part.empty:
        raise ValueError(f"summary has no rows for matcher {matcher!r}; it has {sorted(set(summary['matcher']))}")
    return part


def control_metrics(summary: pd.DataFrame, matcher: str = "fuzzy") -> plt.Figure:
    """TCP (I1±C) and CPA (I2) per model: with the control sentence vs without it (paper's parentheses).

    A page-wide 2 × 3 grid: the five control groups and, in the sixth cell, the legend; error bars are
    the 95 % intervals over users where the summary has them.
    """
    part = _matcher(summary, matcher)
    fig, axes = plt.subplots(2, 3, figsize=(PAGE_IN, 4.6), squeeze=False)
    cells = list(axes.flat)
    handles, labels = [], []
    for ax, (group, (metric, label)) in zip(cells, CONTROL.items()):
        rows = []
        for suffix, setting in (("", "with the control sentence"), ("_nocontrol", "without it")):
            sel = part[part["test_group"] == group + suffix]
            rows.append(pd.DataFrame({"model": list(sel["model"]), "prompt": setting, **_with_bounds(sel, metric)}))
        frame = pd.concat(rows, ignore_index=True)
        ax.set_title(GROUP_TITLES[group])
        if frame.empty or frame["value"].isna().all():
            no_data(ax)
            continue
        grouped_bars(ax, frame, "model", "prompt")
        ax.set(xlabel="", ylabel=label, ylim=(0, 100))
        handles, labels = ax.get_legend_handles_labels()  # one legend for the figure, in its own cell
    cells[-1].axis("off")
    if handles:
        bars = "\nbars: 95 % interval over users" if {"tcp_pct_lo", "cpa_pct_lo"} & set(part.columns) else ""
        cells[-1].legend(handles, labels, loc="center", frameon=False, title=f"prompt ({matcher} matching){bars}")
    fig.tight_layout()
    return fig


def formatting_errors(summary: pd.DataFrame, matcher: str = "fuzzy", group: str = "k11-15") -> plt.Figure:
    """RepeatItem / NonExist / InHistory (% of items) per model on the k ∈ 11..15 prompts."""
    part = _matcher(summary, matcher)
    part = part[part["test_group"] == group]
    frame = pd.concat([pd.DataFrame({"model": list(part["model"]), "error": name, **_with_bounds(part, metric)})
                       for metric, name in FORMAT_ERRORS.items() if metric in part]
                      or [pd.DataFrame(columns=["model", "error", "value"])], ignore_index=True)
    frame = frame.dropna(subset=["value"])
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.8))
    ax.set_title(f"Formatting errors, k ∈ 11..15 ({matcher} matching)")
    if frame.empty:
        no_data(ax, "no answers to show\n(no model produced an item)")
        return fig
    grouped_bars(ax, frame, "model", "error")
    ax.set(xlabel="", ylabel="% of items ↓")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), frameon=False)
    fig.tight_layout()
    return fig


def teacher_vs_llm(summary: pd.DataFrame, matcher: str = "fuzzy") -> plt.Figure:
    """HR@10 and NDCG@10 on I0: the SASRec teacher (and the popularity floor) next to every LLM, with
    95 % intervals over users as error bars where the summary has them."""
    part = _matcher(summary, matcher)
    part = part[part["test_group"] == "I0"]
    frame = pd.concat([pd.DataFrame({"model": list(part["model"]), "metric": name, **_with_bounds(part, metric)})
                       for metric, name in (("hr", "HR@10"), ("ndcg", "NDCG@10"))], ignore_index=True)
    frame = frame.dropna(subset=["value"])
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.8))
    ax.set_title("Teacher vs LLM accuracy (I0, k = 10)")
    if frame.empty:
        no_data(ax)
        return fig
    grouped_bars(ax, frame, "model", "metric")
    ax.set(xlabel="", ylabel="score (0-1) ↑")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), frameon=False)
    fig.tight_layout()
    return fig


def ppo_curves(log: pd.DataFrame) -> plt.Figure:
    """Rewards (left) and KL (right) of stage 05's `ppo_log.csv` against the PPO update: the series of
    `PPO_SERIES` the log has with at least one value, named in words; integer update ticks."""
    step = next((c for c in ("update", "step") if c in log), log.columns[0])  # stage 05 logs "update"
    present = [c for c in PPO_SERIES if c in log and pd.api.types.is_numeric_dtype(log[c]) and log[c].notna().any()]
    panels = (("reward", [c for c in present if "reward" in c]), ("KL (nats)", [c for c in present if "kl" in c]))
    if not any(cols for _, cols in panels):
        raise ValueError(f"ppo_log.csv has no reward or KL column with values (columns: {list(log.columns)}); check stage 05")
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_IN, 2.8))
    for ax, (ylabel, cols) in zip(axes, panels):
        for c in cols:
            points = log[[step, c]].dropna()
            ax.plot(points[step], points[c], marker="o", markersize=3, label=PPO_SERIES[c])
        ax.set(xlabel="PPO update", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if cols:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False, ncol=1)
        else:
            no_data(ax, "not logged")
    fig.tight_layout()
    return fig


RL_PANELS = {"list_reward": "list reward R_list\n(sampled answers, mean)",
             "illegal_pct": "illegal items\n(% of sampled items)"}
RL_AXES = {"sampled_answers": "answers sampled so far", "seconds": "training seconds so far"}


def rl_head_to_head(curves: pd.DataFrame) -> plt.Figure:
    """Several stage-05 runs (`recnb.report.rl.curves`) on one page: the sampled list reward (top) and
    illegal items (bottom) against the answers sampled so far (left, the paper's budget) and against
    training seconds (right, what each algorithm costs)."""
    if curves.empty:
        raise ValueError("no RL run to compare: stage 06 evaluated fewer than two stage-05 models")
    runs = list(dict.fromkeys(curves["run"]))
    palette = sns.color_palette("colorblind", max(len(runs), 5))
    palette[3], palette[4] = palette[4], palette[3]  # the 4th colour (vermilion) is hard to tell from the 2nd
    colours = dict(zip(runs, palette))
    fig, axes = plt.subplots(len(RL_PANELS), len(RL_AXES), figsize=(PAGE_IN, 4.6), sharex="col", sharey="row",
                             squeeze=False)
    for row, (metric, ylabel) in enumerate(RL_PANELS.items()):
        for col, (x, xlabel) in enumerate(RL_AXES.items()):
            ax = axes[row, col]
            sns.lineplot(data=curves, x=x, y=metric, hue="run", hue_order=runs,
                         palette=colours, marker="o", markersize=3, ax=ax, legend=False)
            ax.set(xlabel=xlabel if row == len(RL_PANELS) - 1 else "", ylabel=ylabel if col == 0 else "")
            if x == "sampled_answers":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [plt.Line2D([], [], color=colours[r], marker="o", markersize=3) for r in runs]
    fig.legend(handles, runs, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=len(runs), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def dataset_stats(stats: dict, category_counts: pd.Series) -> plt.Figure:
    """Items per category (bars, most common first, at most 25) with the Table 1 statistics in the title."""
    frame = category_counts.sort_values(ascending=False).head(25).rename("items").reset_index()
    frame.columns = ["category", "items"]
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 0.9 + 0.17 * len(frame)))
    sns.barplot(data=frame, x="items", y="category", ax=ax, color=sns.color_palette()[0])
    ax.set(xlabel="items in the category", ylabel="category")
    ax.set_title(f"{stats.get('dataset', '?')}: {stats.get('users', '?')} users, {stats.get('items', '?')} items,\n"
                 f"{stats.get('interactions', '?')} interactions, sparsity {stats.get('sparsity', float('nan')):.2%}",
                 fontsize="medium")
    fig.tight_layout()
    return fig


def seed_effects(table: pd.DataFrame, means: pd.DataFrame, effects: Sequence[tuple]) -> plt.Figure:
    """A forest plot, one panel per paired effect: each seed's effect with its own 95 % interval (over users
    or prompts; `table`, one row per seed, seed 0 on top), then below a line its mean over the seeds with the
    interval over seeds (`means`, indexed by effect), a line at zero and, where given, the target's threshold
    (dashed). `effects` rows start `(column, lo column, hi column, _, axis label, threshold or None)`, as
    `studies/tiny_seeds.py`'s `EFFECTS`. An interval that misses its point (a figure and its bounds read
    from two files) draws no whisker on that side rather than failing."""
    seeds = [str(s) for s in table["seed"]]
    labels = [*seeds, "all (mean)"]
    fig, axes = plt.subplots(1, len(effects), figsize=(PAGE_IN, 1.1 + 0.2 * len(labels)), sharey=True,
                             squeeze=False)
    for ax, (column, lo, hi, _, label, threshold) in zip(axes[0], effects):
        value = table[column].to_numpy(dtype=float)
        err = np.clip([value - table[lo].to_numpy(dtype=float), table[hi].to_numpy(dtype=float) - value], 0, None)
        ax.errorbar(value, range(len(seeds)), xerr=err, fmt="o", color="0.35", markersize=3, elinewidth=0.8,
                    capsize=1.5)
        mean = means.loc[column]
        ax.errorbar([mean["mean"]], [len(seeds)], xerr=[[mean["mean"] - mean["lo"]], [mean["hi"] - mean["mean"]]],
                    fmt="D", color=sns.color_palette("colorblind")[3], markersize=4, elinewidth=1.4, capsize=2)
        ax.axhline(len(seeds) - 0.5, color="0.6", linewidth=0.6)  # seeds above, their mean below
        ax.axvline(0, color="0.2", linewidth=0.8)
        if threshold is not None:
            ax.axvline(threshold, color="0.5", linewidth=0.8, linestyle="--")
        ax.set_xlabel(label)
    axes[0, 0].set_yticks(range(len(labels)), labels)
    axes[0, 0].set_ylabel("seed")
    axes[0, 0].invert_yaxis()
    fig.tight_layout()
    return fig
