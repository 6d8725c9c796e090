"""Bootstrap intervals over users: hand-computed cases, pairing, and agreement with `metrics.aggregate`."""

import math

import numpy as np
import pandas as pd
import pytest

from recnb import bootstrap, metrics
from recnb.evaluation import intervals, predict, tables


def score_rows(model: str, group: str, hits: list[float], **extra: list) -> list[dict]:
    """Per-list score rows of one model in one group, user i has hits[i] (and extra[key][i])."""
    rows = []
    for i, hit in enumerate(hits):
        row = {"model": model, "test_group": group, "user_id": i + 1, "matcher": "fuzzy", "hit": hit, "ndcg": hit,
               "n_items": 10, "repeat": 0, "non_exist": 0, "in_history": 0}
        row.update({key: values[i] for key, values in extra.items()})
        rows.append(row)
    return rows


def test_resample_weights_count_draws_and_are_seeded_per_family():
    w = intervals.resample_weights(7, 50, seed=3, name="I1+C")
    assert w.shape == (50, 7) and (w.sum(axis=1) == 7).all() and (w >= 0).all()
    np.testing.assert_array_equal(w, intervals.resample_weights(7, 50, seed=3, name="I1+C"))
    assert not np.array_equal(w, intervals.resample_weights(7, 50, seed=3, name="I0"))
    assert not np.array_equal(w, intervals.resample_weights(7, 50, seed=4, name="I1+C"))


def test_two_users_one_hit_spans_zero_to_one():
    # resampled HR of users {hit, miss}: 0 w.p. 1/4, 0.5 w.p. 1/2, 1 w.p. 1/4 -> 2.5th pct 0, 97.5th pct 1
    out = intervals.bootstrap_intervals(pd.DataFrame(score_rows("m", "I0", [1.0, 0.0])), n_resamples=2000)
    row = out.iloc[0]
    assert (row["hr_lo"], row["hr_hi"]) == (0.0, 1.0)


def test_constant_figure_has_a_point_interval():
    out = intervals.bootstrap_intervals(pd.DataFrame(score_rows("m", "I0", [1.0] * 5)), n_resamples=200)
    assert out.iloc[0]["hr_lo"] == out.iloc[0]["hr_hi"] == 1.0
    assert out.iloc[0]["repeat_item_pct_lo"] == out.iloc[0]["repeat_item_pct_hi"] == 0.0


def test_item_percentages_are_ratios_of_sums_and_skip_empty_resamples():
    # user 1: 10 items, all invented; user 2: an empty answer (0 items). Every resample that holds user 1
    # reads NonExist 100 %; one that holds only user 2 has no item, adds NaN and is skipped.
    rows = score_rows("m", "I0", [0.0, 0.0], n_items=[10, 0], non_exist=[10, 0])
    out = intervals.bootstrap_intervals(pd.DataFrame(rows), n_resamples=500).iloc[0]
    assert out["non_exist_pct_lo"] == out["non_exist_pct_hi"] == 100.0


def test_means_skip_missing_values_like_aggregate():
    # HR is absent (NaN) for user 3: resamples average the present lists only
    rows = score_rows("m", "I0", [1.0, 1.0, math.nan])
    out = intervals.bootstrap_intervals(pd.DataFrame(rows), n_resamples=300).iloc[0]
    assert out["hr_lo"] == out["hr_hi"] == 1.0


def test_mean_interval_of_per_unit_values():
    assert bootstrap.mean_interval([0.25] * 40) == (0.25, 0.25, 0.25)  # a constant: a point interval
    mean, lo, hi = bootstrap.mean_interval([0.0] * 50 + [1.0] * 50, seed=3, name="x")
    # 100 coin flips: the mean's standard error is 0.05, so the 95 % interval is about 0.5 ± 0.098
    assert mean == 0.5 and 0.38 < lo < 0.42 and 0.58 < hi < 0.62
    assert (lo, hi) == bootstrap.mean_interval([0.0] * 50 + [1.0] * 50, seed=3, name="x")[1:]  # seeded
    assert math.isnan(bootstrap.mean_interval([1.0, 2.0], n_resamples=0)[1]) and bootstrap.mean_interval([1.0, 2.0],
                                                                                                         n_resamples=0)[0] == 1.5
    assert all(math.isnan(v) for v in bootstrap.mean_interval([]))
    one = bootstrap.mean_interval([0.3])  # one unit: nothing to resample, so no interval rather than [0.3, 0.3]
    assert one[0] == 0.3 and math.isnan(one[1]) and math.isnan(one[2])


def test_paired_difference_sees_what_two_separate_intervals_hide():
    # 40 users, half of them hit by both models; A also hits 6 users B misses. Unpaired, A's interval
    # and B's overlap; paired, every resample's difference counts only those 6 users: it is >= 0, and
    # it is 0 only if none of the 6 is drawn, which 1000 resamples never see ((34/40)^40 ~ 0.15 %).
    b_hits = [1.0] * 20 + [0.0] * 20
    a_hits = [1.0] * 26 + [0.0] * 14
    scores = pd.DataFrame(score_rows("A", "I0", a_hits) + score_rows("B", "I0", b_hits))
    d = intervals.paired_delta(scores, "hr", ("A", "I0"), ("B", "I0"), n_resamples=1000)
    assert (d["a"], d["b"]) == (0.65, 0.5) and d["delta"] == pytest.approx(0.15)
    assert 0.0 < d["lo"] < d["delta"] < d["hi"] <= 0.3
    separate = intervals.bootstrap_intervals(scores, n_resamples=1000).set_index("model")
    assert separate.loc["A", "hr_lo"] < separate.loc["B", "hr_hi"]  # unpaired, the intervals overlap


def test_identical_models_differ_by_exactly_zero():
    rows = score_rows("A", "I0", [1, 0, 1, 0, 1]) + score_rows("B", "I0", [1, 0, 1, 0, 1])
    d = intervals.paired_delta(pd.DataFrame(rows), "hr", ("A", "I0"), ("B", "I0"), n_resamples=200)
    assert d["delta"] == d["lo"] == d["hi"] == 0.0


def test_paired_delta_refuses_groups_of_different_users():
    rows = score_rows("A", "I0", [1, 0]) + score_rows("A", "I1+C", [1, 0])
    with pytest.raises(ValueError, match="same users"):
        intervals.paired_delta(pd.DataFrame(rows), "hr", ("A", "I0"), ("A", "I1+C"))


def test_two_rows_for_one_user_are_refused():
    rows = score_rows("A", "I0", [1, 0])
    rows[1]["user_id"] = rows[0]["user_id"]
    with pytest.raises(ValueError, match="one row"):
        intervals.bootstrap_intervals(pd.DataFrame(rows))


def test_control_effects_pair_a_group_with_its_twin():
    rows = (score_rows("v2", "I1+C", [0, 0, 0, 0], tcp=[1.0, 0.8, 0.9, 1.0])
            + score_rows("v2", "I1+C_nocontrol", [0, 0, 0, 0], tcp=[0.5, 0.3, 0.4, 0.6]))
    effects = intervals.control_effects(pd.DataFrame(rows), ["v2", "absent"], n_resamples=500)
    assert len(effects) == 1
    e = effects.iloc[0]
    assert e["with"] == pytest.approx(92.5) and e["without"] == pytest.approx(45.0)
    # every user gains 40-50 points, so every resample does too
    assert e["delta"] == pytest.approx(47.5) and 40.0 - 1e-9 <= e["delta_lo"] <= e["delta_hi"] <= 50.0 + 1e-9
    assert "+47.5 [" in tables.effects_markdown(effects)


def test_the_all_user_figures_of_the_intervals_module_equal_aggregate():
    rng = np.random.default_rng(3)
    n = 30
    rows = score_rows("A", "I0", rng.integers(0, 2, n).astype(float).tolist(), n_items=rng.integers(0, 11, n).tolist(),
                      repeat=rng.integers(0, 3, n).tolist(), non_exist=rng.integers(0, 2, n).tolist(),
                      in_history=rng.integers(0, 2, n).tolist(), hit5=rng.integers(0, 2, n).astype(float).tolist())
    rows[4]["hit"] = math.nan  # a list without a target
    other = score_rows("B", "I0", [0.0] * (n - 5))  # B answered 5 users fewer: its figures use its own lists
    scores = pd.DataFrame(rows + other)
    agg = metrics.aggregate(rows)
    for figure in ("hr", "repeat_item_pct", "non_exist_pct", "in_history_pct"):
        got = intervals.paired_delta(scores, figure, ("A", "I0"), ("B", "I0"), n_resamples=10)
        assert got["a"] == pytest.approx(agg[figure]), figure
    hr5 = intervals.paired_delta(scores, "hr5", ("A", "I0"), ("A", "I0"), n_resamples=10)["a"]
    assert hr5 == pytest.approx(np.mean([r["hit5"] for r in rows]))
    assert intervals.paired_delta(scores, "hr", ("A", "I0"), ("B", "I0"), n_resamples=10)["b"] == 0.0


def test_summary_intervals_bracket_the_figures_of_aggregate():
    rng = np.random.default_rng(0)
    n = 60
    rows = score_rows("A", "I0", rng.integers(0, 2, n).astype(float).tolist(),
                      n_items=rng.integers(0, 11, n).tolist(), repeat=rng.integers(0, 3, n).tolist())
    scores = pd.DataFrame(rows)
    summary = predict.summarise(scores, n_resamples=500, seed=1).iloc[0]
    agg = metrics.aggregate(rows)
    for figure in ("hr", "repeat_item_pct"):
        assert summary[f"{figure}_lo"] < agg[figure] < summary[f"{figure}_hi"]
    # same seed, same intervals
    again = predict.summarise(scores, n_resamples=500, seed=1).iloc[0]
    assert summary["hr_lo"] == again["hr_lo"] and summary["hr_hi"] == again["hr_hi"]


def test_start_effects_pair_a_model_with_its_start_on_illegal_items():
    # 20 users, 10 items each. v2 repeats 2 and lists 1 history item on every list (30 %); full repeats 1
    # on users 1-10 and 2 on the others, and lists the history item everywhere: 25 %, 5 points fewer.
    # Every resample draws 20 users, each 20 or 30 % for full: the difference lies in [-10, 0].
    n = 20
    v2 = score_rows("v2", "I0", [0.0] * n, repeat=[2] * n, in_history=[1] * n)
    full = score_rows("full", "I0", [1.0] * 5 + [0.0] * 15, repeat=[1] * 10 + [2] * 10, in_history=[1] * n)
    rows = v2 + full + score_rows("v2", "I1+C", [0.0] * n)
    effects = intervals.start_effects(pd.DataFrame(rows), [("full", "v2"), ("absent", "v2")], n_resamples=400)
    assert set(effects["model"]) == {"full"}  # a label without rows is left out
    e = effects.set_index("figure")
    assert list(e.index) == ["illegal_item_pct", "repeat_item_pct", "non_exist_pct", "in_history_pct", "hr"]
    ill = e.loc["illegal_item_pct"]
    assert (ill["value"], ill["start_value"]) == (pytest.approx(25.0), pytest.approx(30.0))
    assert ill["delta"] == pytest.approx(-5.0) and -10.0 - 1e-9 <= ill["delta_lo"] < -5.0 < ill["delta_hi"] < 0.0
    assert e.loc["in_history_pct", "delta"] == e.loc["in_history_pct", "delta_lo"] == 0.0
    assert e.loc["hr", "delta"] == pytest.approx(0.25)
    assert "25.0 vs 30.0: -5.0 [" in tables.start_effects_markdown(effects)
    from recnb.evaluation import findings

    summary = pd.DataFrame([{"model": "v2", "test_group": "I0", "matcher": "fuzzy", "n_lists": n}])
    text = findings.eval_findings(summary, pd.DataFrame(columns=["model", "test_group"]), starts=effects)
    assert "- **full over v2** (its start; I0, same users): illegal items 25.0 vs 30.0 %, -5.0 [" in text
    assert text.rstrip().split("\n")[-3].endswith(": fewer.")
    assert intervals.start_effects(pd.DataFrame(v2), [("full", "v2")]).empty
    assert intervals.start_effects(pd.DataFrame(rows), [("full", "v2")], matcher="exact").empty  # no exact rows
    wide = pd.DataFrame([{"model": "v2", "test_group": g, "matcher": "fuzzy", "n_lists": n}
                         for g, n in (("I0", 400), ("I1+C", 50), ("I1+C_nocontrol", 50))])
    assert "3 test groups (1 without the control sentence), 400 lists in I0, 50 per other group at most." in (
        findings.eval_findings(wide, pd.DataFrame(columns=["model", "test_group"])))


def test_start_pairs_read_the_sft_dir_each_ppo_row_loads(tmp_path):
    import json

    run_root = tmp_path / "r"
    for name, params in (("04_sft_unsloth", {}), ("04_sft_unsloth-v1", {}), ("05_ppo", {"init_from": "04_sft_unsloth"}),
                         ("05_ppo-v3", {"init_from": "04_sft_unsloth-v1"})):
        (run_root / name).mkdir(parents=True)
        (run_root / name / "params.json").write_text(json.dumps(params))
        (run_root / name / "metrics.json").write_text("{}")
    specs, _ = predict.resolve_models({"SASRec": "sasrec", "v2": "04_sft_unsloth", "full": "05_ppo", "v3": "05_ppo-v3"},
                                      run_root)
    assert [s.init_from for s in specs] == [None, None, "04_sft_unsloth", "04_sft_unsloth-v1"]  # read once, here
    assert predict.start_pairs(specs) == [("full", "v2")]  # v3's start (v1) is not a row of this table
