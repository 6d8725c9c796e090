"""Stage 07's paper figures, drawn only from recorded results (06 summary, 05 PPO log, 01/02 metrics).

One seaborn style for all figures (`set_style`); every figure is saved as PNG and PDF under
`paper_figures/<run>/` by `save`. Functions return the matplotlib Figure so notebooks show it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from recnb import paths

CONTROL = {"I1+C": ("tcp_pct", "TCP@10 (%) ↑"), "I1-C": ("tcp_pct", "TCP@10 (%) ↓"),
           "I2<=20": ("cpa_pct", "CPA (%) ↑"), "I2~=30": ("cpa_pct", "CPA (%) ↑"), "I2>=30": ("cpa_pct", "CPA (%) ↑")}
FORMAT_ERRORS = {"repeat_item_pct": "RepeatItem", "non_exist_pct": "NonExist", "in_history_pct": "InHistory"}


def set_style() -> None:
    """The one style of every paper figure: white grid, readable fonts, colour-blind palette."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=1.05)
    plt.rcParams.update({"figure.dpi": 110, "savefig.bbox": "tight", "axes.titleweight": "bold"})


def figures_dir(outputs_dir: str | Path, run: str) -> Path:
    """`paper_figures/<run>/` next to the outputs root (created).

    With the default `outputs_dir` ("outputs") that is `<repo>/paper_figures/<run>/`; a run into
    another root (tests, `--outputs-dir`) keeps its figures beside it instead of in the repository.
    """
    path = paths.run_dir(outputs_dir, run).parent.parent / "paper_figures" / run
    path.mkdir(parents=True, exist_ok=True)
    return path


def save(fig: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    """Write `name.png` and `name.pdf`; returns both paths."""
    files = [Path(out_dir) / f"{name}.{ext}" for ext in ("png", "pdf")]
    for file in files:
        fig.savefig(file)
    return files


def _matcher(summary: pd.DataFrame, matcher: str) -> pd.DataFrame:
    part = summary[summary["matcher"] == matcher]
    if part.empty:
        raise ValueError(f"summary has no rows for matcher {matcher!r}; it has {sorted(set(summary['matcher']))}")
    return part


def control_metrics(summary: pd.DataFrame, matcher: str = "fuzzy") -> plt.Figure:
    """TCP (I1±C) and CPA (I2) per model: with the control sentence vs without it (paper's parentheses)."""
    part = _matcher(summary, matcher)
    rows = []
    for group, (metric, label) in CONTROL.items():
        for suffix, setting in (("", "with control sentence"), ("_nocontrol", "without (uncontrolled)")):
            sel = part[part["test_group"] == group + suffix]
            rows += [{"group": f"{group}\n{label}", "model": m, "value": v, "prompt": setting}
                     for m, v in zip(sel["model"], sel[metric])]
    frame = pd.DataFrame(rows)
    groups = list(dict.fromkeys(frame["group"])) if not frame.empty else []
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(3.2 * max(len(groups), 1), 4), sharey=True, squeeze=False)
    for ax, group in zip(axes[0], groups):
        sns.barplot(data=frame[frame["group"] == group], x="model", y="value", hue="prompt", ax=ax)
        ax.set(title=group, xlabel="model", ylabel="% (control metric)")
        plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
        handles, labels = ax.get_legend_handles_labels()
        if ax.legend_:
            ax.legend_.remove()  # one legend for the figure, below the panels, covering no bar
    if groups:
        fig.legend(handles, labels, loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.08), frameon=False)
    fig.suptitle(f"Control metrics by model ({matcher} title matching)")
    fig.tight_layout()
    return fig


def formatting_errors(summary: pd.DataFrame, matcher: str = "fuzzy", group: str = "k11-15") -> plt.Figure:
    """RepeatItem / NonExist / InHistory (% of items) per model on the k ∈ 11..15 prompts."""
    part = _matcher(summary, matcher)
    part = part[part["test_group"] == group]
    frame = part.melt(id_vars="model", value_vars=list(FORMAT_ERRORS), var_name="error", value_name="pct")
    frame["error"] = frame["error"].map(FORMAT_ERRORS)
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.barplot(data=frame, x="model", y="pct", hue="error", ax=ax)
    ax.set(title=f"Formatting errors, k ∈ 11..15 ({matcher} matching)", xlabel="model", ylabel="% of items ↓")
    ax.set_ylim(bottom=0)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    fig.tight_layout()
    return fig


def teacher_vs_llm(summary: pd.DataFrame, matcher: str = "fuzzy") -> plt.Figure:
    """HR@10 and NDCG@10 on I0: the SASRec teacher next to every LLM."""
    part = _matcher(summary, matcher)
    part = part[part["test_group"] == "I0"]
    frame = part.melt(id_vars="model", value_vars=["hr", "ndcg"], var_name="metric", value_name="value")
    frame["metric"] = frame["metric"].map({"hr": "HR@10", "ndcg": "NDCG@10"})
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.barplot(data=frame, x="model", y="value", hue="metric", ax=ax)
    ax.set(title="Teacher vs LLM accuracy (I0, k = 10)", xlabel="model", ylabel="score")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    fig.tight_layout()
    return fig


def ppo_curves(log: pd.DataFrame) -> plt.Figure:
    """Every reward and KL column of stage 05's `ppo_log.csv` against the PPO step."""
    step = next((c for c in ("update", "step") if c in log), log.columns[0])  # stage 05 logs "update"
    reward_cols = [c for c in log.columns if "reward" in c.lower() and pd.api.types.is_numeric_dtype(log[c])]
    kl_cols = [c for c in log.columns if "kl" in c.lower() and pd.api.types.is_numeric_dtype(log[c])]
    if not reward_cols and not kl_cols:
        raise ValueError(f"ppo_log.csv has no reward or KL column (columns: {list(log.columns)}); check stage 05")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, cols, title in ((axes[0], reward_cols, "reward"), (axes[1], kl_cols, "KL")):
        for c in cols:
            sns.lineplot(data=log, x=step, y=c, ax=ax, label=c)
        ax.set(title=f"PPO {title} (as logged by stage 05)", xlabel="PPO update", ylabel=title)
    fig.tight_layout()
    return fig


def dataset_stats(stats: dict, category_counts: pd.Series) -> plt.Figure:
    """Items per category (bars) with the Table 1 statistics in the title."""
    fig, ax = plt.subplots(figsize=(8, 4))
    frame = category_counts.sort_values(ascending=False).head(25).rename("items").reset_index()
    frame.columns = ["category", "items"]
    sns.barplot(data=frame, x="items", y="category", ax=ax, color=sns.color_palette()[0])
    ax.set(xlabel="items", ylabel="category",
           title=(f"{stats.get('dataset', '?')}: {stats.get('users', '?')} users, {stats.get('items', '?')} items, "
                  f"{stats.get('interactions', '?')} interactions, sparsity {stats.get('sparsity', float('nan')):.2%}"))
    fig.tight_layout()
    return fig
