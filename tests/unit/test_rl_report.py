"""Stage 07's RL head-to-head (`recnb.report.rl`): curves and table from hand-made stage-05 records."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from recnb.report import plots, rl
from tests.scripts import load_script


def _log(rewards, illegal, seconds):
    """A ppo_log.csv: update 0 is the start's validation row (no training figures), then one row per update."""
    rows = [{"update": 0, "val_list_reward": -5.0}]
    for i, (r, b, s) in enumerate(zip(rewards, illegal, seconds), start=1):
        rows.append({"update": i, "list_reward": r, "illegal_pct": b, "t_generate": s / 2, "t_score": 0.0,
                     "t_train": s / 2})
    return pd.DataFrame(rows)


def test_rl_runs_are_the_models_stage_05_trained():
    models = {"SASRec": "sasrec", "v2": "04_sft_unsloth", "full": "05_ppo", "v3": "05_ppo-v3", "x": "05_ppox"}
    assert rl.rl_runs(models) == {"full": "05_ppo", "v3": "05_ppo-v3"}


def test_curves_put_runs_on_sampled_answers_and_cumulative_seconds():
    frame = rl.curves({"ppo": _log([-2, -1, 0], [40, 30, 20], [4, 4, 6]), "grpo": _log([-2, 0], [40, 10], [1, 3])},
                      {"ppo": 16, "grpo": 16})
    ppo, grpo = frame[frame.run == "ppo"], frame[frame.run == "grpo"]
    assert ppo["sampled_answers"].tolist() == [16, 32, 48] and grpo["sampled_answers"].tolist() == [16, 32]
    assert ppo["seconds"].tolist() == [4.0, 8.0, 14.0] and grpo["seconds"].tolist() == [1.0, 4.0]
    assert ppo["list_reward"].tolist() == [-2, -1, 0]  # the update-0 validation row is not a training point
    with pytest.raises(ValueError, match="'grpo'.*batch_size"):
        rl.curves({"grpo": _log([0], [0], [1])}, {})
    with pytest.raises(ValueError, match=r"ppo_log.csv of RL run 'ppo' lacks \['t_train'\]"):
        rl.curves({"ppo": _log([0], [0], [1]).drop(columns="t_train")}, {"ppo": 4})


def test_head_to_head_reads_each_runs_summary():
    metrics = {"updates": 10, "seconds": {"t_generate": 20.0, "t_score": 1.0, "t_train": 8.0},
               "train_first_quarter": {"list_reward": -1.3, "illegal_pct": 36.9},
               "train_last_quarter": {"list_reward": -0.54, "illegal_pct": 29.7},
               "valid_start": {"val_list_reward": -4.94}, "valid_best": {"val_list_reward": -4.04}, "best_update": 9}
    table = rl.head_to_head({"full-grpo": metrics}, {"full-grpo": {"algorithm": "grpo", "batch_size": 12}})
    row = table.iloc[0]
    assert (row["algorithm"], row["reward"], row["sampled_answers"]) == ("grpo", "full", 120)
    assert row["s_per_update"] == pytest.approx(2.9)
    assert (row["list_reward_first"], row["illegal_pct_last"], row["best_update"]) == (-1.3, 29.7, 9)
    assert math.isnan(row["reward_gain"])  # a run from before stage 05's reward_check
    metrics["reward_gain"] = {"delta": 0.07, "lo": -0.02, "hi": 0.16}
    row = rl.head_to_head({"ppo": metrics}, {"ppo": {"batch_size": 12}}).iloc[0]
    assert (row["reward_gain"], row["reward_gain_lo"], row["reward_gain_hi"]) == (0.07, -0.02, 0.16)


def test_head_to_head_figure_has_one_line_per_run_in_every_panel(tmp_path):
    plots.set_style()
    frame = rl.curves({"ppo": _log([-2, -1, 0], [40, 30, 20], [4, 4, 6]), "grpo": _log([-2, 0], [40, 10], [1, 3])},
                      {"ppo": 16, "grpo": 16})
    fig = plots.rl_head_to_head(frame)
    assert len(fig.axes) == 4 and all(len(ax.lines) == 2 for ax in fig.axes)
    assert [ax.get_xlabel() for ax in fig.axes[2:]] == ["answers sampled so far", "training seconds so far"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ppo", "grpo"]
    assert all(f.stat().st_size > 1000 for f in plots.save(fig, tmp_path, "rl"))
    with pytest.raises(ValueError, match="fewer than two"):
        plots.rl_head_to_head(rl.curves({}, {}))


def test_the_study_script_reads_labels_and_needs_two_runs():
    study = load_script("studies/rl_runs.py")
    assert study.parse_stages(["full=05_ppo", "05_ppo-grpo"]) == {"full": "05_ppo", "05_ppo-grpo": "05_ppo-grpo"}
    with pytest.raises(SystemExit, match="at least two"):
        study.parse_stages(["05_ppo"])


def test_load_reads_each_stage_dir_into_the_table_and_the_curves(tmp_path):
    from recnb import artifacts as col
    from recnb import record

    metrics = {"updates": 2, "seconds": {"t_train": 4.0}, "train_first_quarter": {"list_reward": -2},
               "train_last_quarter": {"list_reward": 0}, "valid_start": {}, "valid_best": {}}
    dirs = {}
    for label, batch in (("ppo", 16), ("grpo", 8)):
        d = dirs[label] = tmp_path / label
        d.mkdir()
        record.write_json(d / col.PARAMS_FILE, {"batch_size": batch})
        record.write_json(d / col.METRICS_FILE, metrics)
        _log([-2, 0], [40, 20], [1, 3]).to_csv(d / col.PPO_LOG_FILE, index=False)
    table, frame = rl.load(dirs)
    assert table["sampled_answers"].tolist() == [32, 16] and table["s_per_update"].tolist() == [2.0, 2.0]
    assert frame[frame.run == "grpo"]["sampled_answers"].tolist() == [8, 16]
    assert frame[frame.run == "ppo"]["seconds"].tolist() == [1.0, 4.0]
