"""Stage 07: figures written from a fabricated summary, case selection and highlighting by hand."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from recnb.catalog import Catalog
from recnb.report import case_study, plots

ITEMS = pd.DataFrame({"item_id": [1, 2, 3, 4], "title": ["Alpha", "Beta", "Gamma", "Delta"],
                      "categories": [["Drama"], ["Comedy"], ["Drama"], ["Horror"]], "popularity": [4, 3, 2, 1]})


def _summary():
    rows = []
    for model, base in (("SASRec", 50.0), ("v2", 30.0), ("full", 70.0)):
        for group in ("I0", "k11-15", *plots.CONTROL, *(g + "_nocontrol" for g in plots.CONTROL)):
            rows.append({"model": model, "test_group": group, "matcher": "fuzzy", "tcp_pct": base, "cpa_pct": base / 2,
                         "hr": base / 100, "ndcg": base / 200, "repeat_item_pct": 1.0, "non_exist_pct": 100 - base,
                         "in_history_pct": 3.0})
    return pd.DataFrame(rows)


def test_figures_are_written_with_labels(tmp_path):
    plots.set_style()
    summary = _summary()
    figs = {"control": plots.control_metrics(summary), "format": plots.formatting_errors(summary),
            "teacher": plots.teacher_vs_llm(summary),
            "ppo": plots.ppo_curves(pd.DataFrame({"update": [1, 2, 3], "list_reward": [0.1, 0.4, 0.5],
                                                  "item_reward": [0.2, 0.1, 0.3], "kl": [0, .01, .02]})),
            "data": plots.dataset_stats({"dataset": "x", "users": 3, "items": 4, "interactions": 9, "sparsity": 0.25},
                                        pd.Series({"Drama": 2, "Comedy": 1}))}
    assert len(figs["control"].axes) == 6  # one panel per control group, and the legend's cell
    assert [ax.get_title() for ax in figs["control"].axes[:5]] == ["I1 +C", "I1 −C", "I2 ≤ 20%", "I2 ≈ 30%", "I2 ≥ 30%"]
    bars = [p.get_height() for p in figs["format"].axes[0].patches if p.get_height() > 0]
    assert sorted(set(bars)) == [1.0, 3.0, 30.0, 50.0, 70.0]  # repeat, in-history, non-exist of 3 models
    assert figs["ppo"].axes[0].get_xlabel() == "PPO update"
    assert len(figs["ppo"].axes[0].lines) == 2 and len(figs["ppo"].axes[1].lines) == 1  # 2 rewards, 1 KL
    for name, fig in figs.items():
        assert all(ax.get_ylabel() for ax in fig.axes if ax.has_data())
        files = plots.save(fig, tmp_path, name)
        assert all(f.stat().st_size > 1000 for f in files)
    with pytest.raises(ValueError, match="no reward or KL"):
        plots.ppo_curves(pd.DataFrame({"update": [1, 2], "list_reward": [float("nan")] * 2}))
    with pytest.raises(ValueError, match="no reward or KL"):
        plots.ppo_curves(pd.DataFrame({"update": [1], "loss": [0.0]}))
    with pytest.raises(ValueError, match="matcher 'exact'"):
        plots.teacher_vs_llm(summary, "exact")


def test_intervals_are_drawn_as_error_bars_where_the_summary_has_them():
    from matplotlib.container import ErrorbarContainer

    plots.set_style()
    summary = _summary()
    plain = plots.control_metrics(summary)
    assert not any(isinstance(c, ErrorbarContainer) for ax in plain.axes for c in ax.containers)
    summary["tcp_pct_lo"], summary["tcp_pct_hi"] = summary["tcp_pct"] - 5, summary["tcp_pct"] + 7
    summary["hr_lo"], summary["hr_hi"] = summary["hr"] - 0.1, summary["hr"] + 0.1
    fig = plots.control_metrics(summary)
    bars = [c for c in fig.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2  # with and without the sentence, in the I1 +C panel
    segments = bars[0].lines[2][0].get_segments()  # one vertical segment per model: lo .. hi
    assert [(seg[0][1], seg[1][1]) for seg in segments] == [(45.0, 57.0), (25.0, 37.0), (65.0, 77.0)]
    assert "95 % interval" in fig.axes[-1].get_legend().get_title().get_text()
    teacher = plots.teacher_vs_llm(summary)
    assert sum(isinstance(c, ErrorbarContainer) for c in teacher.axes[0].containers) == 1  # HR only has bounds


def test_figures_dir_sits_beside_the_outputs_root(tmp_path):
    from recnb import paths

    assert paths.figures_dir(tmp_path / "outputs", "r1") == tmp_path / "paper_figures" / "r1"
    assert paths.figures_dir(tmp_path / "outputs", "r1").is_dir()
    assert paths.run_dir("outputs", "r1").parent.parent / "paper_figures" == paths.REPO_ROOT / "paper_figures"


def test_pick_case_prefers_users_where_models_disagree():
    scores = pd.DataFrame({
        "model": ["a", "b", "a", "b", "a", "b"], "user_id": [1, 1, 2, 2, 3, 3], "test_group": "I2~=30",
        "matcher": "fuzzy", "cpa": [1.0, 1.0, 0.0, 1.0, 1.0, 0.0], "hit": [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]})
    assert case_study.pick_case(scores, "I2~=30", ["a", "b"]) == 3  # users 2 and 3 differ; 3 also differs in hit
    with pytest.raises(ValueError, match="no scored answers"):
        case_study.pick_case(scores, "I1-C", ["a"])


def test_case_tags_and_rendering():
    catalog = Catalog(ITEMS)
    preds = pd.DataFrame({
        "model": ["v2", "full"], "user_id": 7, "test_group": "I1-C", "prompt": "Don't recommend me any 'Drama' products.",
        "intent": json.dumps({"kind": "-C", "category": "Drama", "m": None}), "target": 4, "history": [[2], [2]],
        "titles": [["Alpha", "Beta", "Omega"], ["Delta"]], "item_ids_fuzzy": [[1, 2, None], [4]]})
    case = case_study.build_case(preds, catalog, 7, "I1-C", ["full", "v2", "absent"])
    assert list(case["answers"]) == ["full", "v2"] and case["target"] == "Delta"
    assert case["answers"]["v2"] == [("Alpha", "in_category"), ("Beta", "history"), ("Omega", "not_in_catalog")]
    md = case_study.case_markdown(case)
    assert "| v2 | 1. **Alpha**<br>2. ~~Beta~~<br>3. _Omega_ (?) |" in md and "| full | 1. 🎯 **Delta** |" in md
    assert "line-through'>Beta</span>" in case_study.case_html(case)


def test_figures_are_fit_for_a_paper(tmp_path):
    """TrueType fonts in every PDF (no Type 3), PNGs at >= 200 dpi, integer update ticks, no offset
    axis, unlogged series left out, and a panel with nothing to draw that says so."""
    from PIL import Image

    plots.set_style()
    log = pd.DataFrame({"update": [0, 1, 2, 3], "list_reward": [None, 10.1, 10.4, 10.5],
                        "val_list_reward": [None] * 4, "kl": [None, 1e-5, 2e-5, 3e-5]})
    fig = plots.ppo_curves(log)
    left, right = fig.axes
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["list reward (sampled)"]  # all-NaN left out
    assert all(float(t).is_integer() for t in left.get_xticks())
    fig.canvas.draw()
    assert left.yaxis.get_major_formatter().get_offset() == "" and right.yaxis.get_major_formatter().get_offset() == ""
    empty = _summary()
    empty[list(plots.FORMAT_ERRORS)] = float("nan")
    blank = plots.formatting_errors(empty)
    assert "no answers" in " ".join(t.get_text() for t in blank.axes[0].texts)
    for name, f in {"ppo": fig, "blank": blank, "control": plots.control_metrics(_summary())}.items():
        png, pdf = plots.save(f, tmp_path, name)
        assert min(Image.open(png).info["dpi"]) >= 200
        raw = pdf.read_bytes()
        assert b"/Subtype /Type3" not in raw, name  # fonttype 42: TrueType, embedded as CIDFontType2
        assert b"/Subtype /TrueType" in raw or b"/Subtype /CIDFontType2" in raw, name


def test_seed_effects_draws_each_seed_then_the_mean_over_seeds(tmp_path):
    plots.set_style()
    table = pd.DataFrame({"seed": [4, 7], "gain": [0.1, -0.05], "gain_lo": [0.0, -0.15], "gain_hi": [0.2, 0.05],
                          "plus": [20.0, 30.0], "plus_lo": [10.0, 31.0], "plus_hi": [31.0, 40.0]})  # 7's misses its point
    means = pd.DataFrame({"mean": [0.025, 25.0], "lo": [-0.05, 20.0], "hi": [0.1, 30.0]}, index=["gain", "plus"])
    fig = plots.seed_effects(table, means, [("gain", "gain_lo", "gain_hi", "", "gain", None),
                                            ("plus", "plus_lo", "plus_hi", "", "plus", 10.0)])
    gain_ax, plus_ax = fig.axes
    assert [t.get_text() for t in gain_ax.get_yticklabels()] == ["4", "7", "all (mean)"]
    assert gain_ax.yaxis_inverted()  # the first seed on top, the mean at the bottom
    seeds, mean = (next(line.get_xydata().tolist() for line in gain_ax.lines if line.get_marker() == m)
                   for m in ("o", "D"))  # each seed's point, the mean's diamond
    assert seeds == [[0.1, 0.0], [-0.05, 1.0]] and mean == [[0.025, 2.0]]
    per_seed, of_mean = ([tuple(seg[:, 0]) for seg in c.get_segments()] for c in plus_ax.collections[:2])
    assert per_seed == [(10.0, 31.0), (30.0, 40.0)]  # seed 7's lower whisker clipped at its point, not negative
    assert of_mean == [(20.0, 30.0)]  # the interval over seeds
    assert sorted(line.get_xdata()[0] for line in plus_ax.lines if line.get_linestyle() == "--") == [10.0]
    assert [ax.get_xlabel() for ax in fig.axes] == ["gain", "plus"] and gain_ax.get_ylabel() == "seed"
    assert all(f.stat().st_size > 1000 for f in plots.save(fig, tmp_path, "seeds"))
