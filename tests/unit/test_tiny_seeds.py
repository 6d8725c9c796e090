"""studies/tiny_seeds.py: one seed's params, its figures read from a hand-made run, targets counted."""

import json
import math
import sys

import pandas as pd
import pytest
import yaml

from recnb.run import load_jobs
from tests.scripts import load_script

study = load_script("studies/tiny_seeds.py")


def test_seed_params_change_the_seed_and_nothing_else(tmp_path):
    _, main = load_jobs(study.PARAMS)
    _, seeded = load_jobs(study.seed_params(7, tmp_path))
    assert yaml.safe_load((tmp_path / "tiny-s7.yaml").read_text())["common"]["seed"] == 7
    assert [j.name for j in seeded] == [j.name for j in main]
    for a, b in zip(main, seeded):
        assert b.params == {**a.params, "seed": 7}, a.name


def test_seed_params_of_a_variant_file_keep_its_changes(tmp_path):
    variant = yaml.safe_load(study.PARAMS.read_text())
    variant["03_instructions"]["i1_cut_max"] = 3
    (tmp_path / "variant.yaml").write_text(yaml.safe_dump(variant, sort_keys=False))
    (tmp_path / "runs").mkdir()
    _, seeded = load_jobs(study.seed_params(2, tmp_path / "runs", tmp_path / "variant.yaml"))
    stage03 = next(j for j in seeded if j.name == "03_instructions")
    assert stage03.params["i1_cut_max"] == 3 and stage03.params["seed"] == 2
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(SystemExit, match="bad.yaml: not a params file"):
        study.seed_params(2, tmp_path / "runs", tmp_path / "bad.yaml")


def test_seed_params_carry_the_set_overrides_and_a_bad_one_stops_the_study(tmp_path):
    _, main = load_jobs(study.PARAMS)
    _, seeded = load_jobs(study.seed_params(4, tmp_path, overrides=["05_ppo.lam=1.0", "common.seed=9"]))
    for a, b in zip(main, seeded):  # the study's seed wins over a common.seed given with --set
        assert b.params == {**a.params, "seed": 4, **({"lam": 1.0} if b.name == "05_ppo" else {})}, a.name
    with pytest.raises(SystemExit, match=r"error: --set '05_ppo.lamm=1': 'lamm' is not a parameter"):
        study.seed_params(5, tmp_path, overrides=["05_ppo.lamm=1"])
    with pytest.raises(SystemExit, match=r"with --set 05_ppo.lam=2 common.seed=5: 05_ppo.lam = 2 must be <= 1"):
        study.seed_params(5, tmp_path, overrides=["05_ppo.lam=2"])
    assert not (tmp_path / "tiny-s5.yaml").exists()  # nothing written for a bad value


def _fake_run(root, jobs):
    """Stage records a finished tiny batch leaves, with figures chosen by hand."""
    fuzzy = [  # model, group, CorrectCount, NonExist, HR, TCP, Repeat, InHistory
        ("v2", "I0", 96.0, 0.4, 0.3, None, 30.0, 20.0), ("full", "I0", 98.0, 0.0, 0.3, None, 25.0, 21.0),
        ("base", "I1+C", 0.0, 100.0, 0.0, 0.0, 0.0, 0.0), ("v1", "I1+C", 100.0, 0.0, 0.1, 70.0, 30.0, 30.0),
    ]
    cols = ["model", "test_group", "correct_count_pct", "non_exist_pct", "hr", "tcp_pct", "repeat_item_pct",
            "in_history_pct"]
    summary = pd.DataFrame(fuzzy, columns=cols).assign(matcher="fuzzy")
    exact = summary.assign(matcher="exact", correct_count_pct=0.0)  # must be ignored
    (root / "06_eval").mkdir(parents=True)
    pd.concat([summary, exact]).to_csv(root / "06_eval" / "summary.csv", index=False)
    effects = pd.DataFrame([
        ("v2", "I1+C", "tcp_pct", "fuzzy", 95.0, 70.0, 25.0, 12.0, 37.0),
        ("v2", "I1-C", "tcp_pct", "fuzzy", 30.0, 36.0, -6.0, -17.0, 5.0),
        ("v2", "I1-C", "tcp_pct", "exact", 0.0, 90.0, -90.0, -95.0, -85.0),
    ], columns=["model", "test_group", "figure", "matcher", "with", "without", "delta", "delta_lo", "delta_hi"])
    effects.to_csv(root / "06_eval" / "control_effects.csv", index=False)
    for j, job in enumerate(jobs):
        (root / job.name).mkdir(parents=True, exist_ok=True)
        metrics = {"stage_seconds": 10.0 * (j + 1)}
        if job.name == "04_sft_unsloth":
            metrics |= {"category_auc": {"base": 0.5, "sft": 0.9}}
        if job.name == "05_ppo":
            metrics |= {"best_update": 5, "train_first_quarter": {"list_reward": -0.8},
                        "train_last_quarter": {"list_reward": -0.5},
                        "reward_gain": {"delta": 0.04, "lo": -0.05, "hi": 0.13}}
        (root / job.name / "metrics.json").write_text(json.dumps(metrics))


def test_seed_row_reads_the_fuzzy_figures_and_sums_the_stage_seconds(tmp_path):
    _, jobs = load_jobs(study.seed_params(3, tmp_path))
    _fake_run(tmp_path / "tiny", jobs)
    row = study.seed_row(3, tmp_path / "tiny", jobs)
    assert row["seconds"] == 10 * sum(range(1, len(jobs) + 1))  # 8 jobs: 10 + 20 + ... + 80 = 360
    assert (row["v2_cc"], row["v2_nonexist"], row["v2_hr"]) == (96.0, 0.4, 0.3)
    assert row["v2_illegal"] == pytest.approx(30.0 + 0.4 + 20.0) and row["full_illegal"] == pytest.approx(46.0)
    assert row["rl_illegal"] == pytest.approx(46.0 - 50.4)  # full - v2, the effect `over_seeds` averages
    assert {c for effect in study.EFFECTS for c in effect[:3]} <= set(row)  # every effect and its bounds are read
    assert (row["base_plus"], row["v1_plus"], row["v2_plus"], row["plus_delta"]) == (0.0, 70.0, 95.0, 25.0)
    assert (row["minus_delta"], row["minus_lo"], row["minus_hi"]) == (-6.0, -17.0, 5.0)
    assert (row["reward_first"], row["reward_last"], row["best_update"]) == (-0.8, -0.5, 5)
    assert (row["gain"], row["gain_lo"], row["gain_hi"]) == (0.04, -0.05, 0.13)
    assert (row["auc_base"], row["auc_sft"]) == (0.5, 0.9)
    assert math.isnan(row["rl_lo"]) and math.isnan(row["rl_hi"])  # a stage 06 without start_effects.csv
    pd.DataFrame([("full", "v2", "I0", "illegal_item_pct", "exact", -9.0, -8.0),
                  ("full", "v2", "I0", "repeat_item_pct", "fuzzy", -7.0, -6.0),
                  ("full", "v2", "I0", "illegal_item_pct", "fuzzy", -3.2, 0.1)],
                 columns=["model", "start", "test_group", "figure", "matcher", "delta_lo", "delta_hi"]).to_csv(
        tmp_path / "tiny" / "06_eval" / "start_effects.csv", index=False)
    row = study.seed_row(3, tmp_path / "tiny", jobs)
    assert (row["rl_lo"], row["rl_hi"]) == (-3.2, 0.1)
    held = study.held(pd.DataFrame([row])).set_index("target")["held"]
    assert held["minus_twin"] == "0/1" and held["rl_illegal"] == "1/1" and held["plus_twin"] == "1/1"
    assert held["rl_reward"] == "1/1" and held["rl_reward_sure"] == "0/1"  # +0.04 [-0.05, +0.13]: within noise


def test_held_counts_each_target_over_the_seeds():
    base = {"v2_cc": 90, "v2_nonexist": 1, "v2_hr": 0.2, "base_plus": 0, "v1_plus": 60, "v2_plus": 95,
            "plus_delta": 20, "minus_delta": -12, "v2_illegal": 50, "full_illegal": 48, "gain": 0.2, "gain_lo": 0.1,
            "gain_hi": 0.3, "seconds": 580}
    table = pd.DataFrame([
        {**base, "seed": 0},
        {**base, "seed": 1, "minus_delta": -9.9, "full_illegal": 50.1, "seconds": 600},  # misses two
        {**base, "seed": 2, "v2_cc": 79.9, "gain": -0.01, "gain_lo": -0.1},               # misses three others
    ])
    held = study.held(table).set_index("target")
    assert held.loc["minus_twin", "held"] == "2/3" and held.loc["minus_twin", "missed_on"] == "1"
    assert held.loc["rl_illegal", "missed_on"] == "1" and held.loc["time", "held"] == "3/3"  # 600 s is in
    assert held.loc["cc", "missed_on"] == "2" and held.loc["rl_reward", "missed_on"] == "2"
    assert held.loc["rl_reward_sure", "missed_on"] == "2"
    assert held.loc["plus_base", "held"] == "3/3" and held.loc["plus_v1", "held"] == "3/3"
    shared = study.held(table, jobs=2).set_index("target")  # batches that shared the cores: no time target
    assert shared.loc["time", "held"] == "n/a" and shared.loc["minus_twin", "held"] == "2/3"


def test_seeds_run_jobs_at_a_time_each_to_its_log_and_a_failure_names_its_seed(tmp_path, monkeypatch):
    # a fake batch: notes when it starts and ends, sleeps, prints, exits with the code its seed asks for
    def fake(params_file, root):
        seed = int(params_file.stem.split("-s")[1])
        code = (f"import sys, time; open({str(tmp_path / 'spans.txt')!r}, 'a').write(f'{{time.monotonic()}} +1\\n'); "
                f"print('batch of seed {seed}'); time.sleep(1.5); "
                f"open({str(tmp_path / 'spans.txt')!r}, 'a').write(f'{{time.monotonic()}} -1\\n'); sys.exit({seed // 10})")
        return [sys.executable, "-c", code]

    monkeypatch.setattr(study, "seed_command", fake)
    files = {seed: tmp_path / f"tiny-s{seed}.yaml" for seed in (1, 2, 3)}
    study.run_seeds(files, tmp_path, jobs=2)
    for seed in files:
        assert (tmp_path / f"s{seed}" / "run.log").read_text() == f"batch of seed {seed}\n"
    events = sorted((float(t), int(d)) for t, d in (line.split() for line in (tmp_path / "spans.txt").read_text().splitlines()))
    at_once = [sum(d for _, d in events[:i + 1]) for i in range(len(events))]
    assert max(at_once) == 2 and len(events) == 6  # two at a time, never three, all three ran
    with pytest.raises(SystemExit, match=r"seed 10: the tiny batch failed \(exit 1\); see .*s10/run.log"):
        study.run_seeds({10: tmp_path / "tiny-s10.yaml", 4: tmp_path / "tiny-s4.yaml"}, tmp_path, jobs=2)
    assert (tmp_path / "s4" / "run.log").read_text() == "batch of seed 4\n"  # the other seed still finished


def test_a_stage_that_is_not_up_to_date_stops_the_study_naming_it(tmp_path):
    _, jobs = load_jobs(study.seed_params(3, tmp_path))
    _fake_run(tmp_path / "tiny", jobs)  # metrics.json but no manifest: never recorded as finished
    with pytest.raises(SystemExit, match=r"01_data_duckdb: .*run the study without --no-run"):
        study.check_finished(tmp_path / "tiny", jobs)


def test_over_seeds_averages_each_paired_effect_and_counts_its_signs():
    table = pd.DataFrame({"seed": [0, 1, 2, 3], "plus_delta": [20.0, 20.0, 20.0, 20.0],
                          "minus_delta": [-10.0, -20.0, -30.0, -40.0], "rl_illegal": [-2.0, 1.0, 0.0, -3.0],
                          "gain": [0.1, -0.1, 0.3, float("nan")]})  # seed 3 ran without the reward check
    means = study.over_seeds(table).set_index("effect")
    same = means.loc["plus_delta"]  # every seed alike: no spread to resample
    assert (same["mean"], same["lo"], same["hi"], same["above_0"], same["below_0"]) == (20.0, 20.0, 20.0, 4, 0)
    minus = means.loc["minus_delta"]
    assert minus["mean"] == -25.0 and -40.0 <= minus["lo"] < -25.0 < minus["hi"] <= -10.0
    rl = means.loc["rl_illegal"]
    assert rl["mean"] == -1.0 and (rl["above_0"], rl["below_0"]) == (1, 2)  # a seed at 0 is neither
    gain = means.loc["gain"]
    assert gain["seeds"] == 3 and gain["mean"] == pytest.approx(0.1) and gain["above_0"] == 2
    assert means.equals(study.over_seeds(table).set_index("effect"))  # seeded: the same intervals each time
    one = study.over_seeds(table.iloc[:1]).set_index("effect").loc["minus_delta"]  # one seed: no interval over seeds
    assert one["mean"] == -10.0 and math.isnan(one["lo"]) and math.isnan(one["hi"])
