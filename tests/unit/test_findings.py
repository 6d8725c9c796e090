"""'What this shows' of notebooks 01-05 and 07: the sentences follow the numbers they are given."""

from recnb import findings


def test_data_reports_what_the_filter_kept():
    stats = {"dataset": "d", "users": 100, "items": 50, "interactions": 800, "interactions_before_filter": 1000,
             "user_core": 5, "item_core": 5, "k_core_rounds": 2, "avg_seq_len": 8.0, "sparsity": 0.84, "categories": 6}
    text = findings.data(stats)
    assert "800 interactions (80 % of the raw ones) after the 5/5-core filter in 2 round(s)" in text
    assert "84.00 % empty; 6 categories" in text


def test_teacher_verdict_follows_its_lift_over_popularity():
    base = {"best_epoch": 3, "epochs": 8, "train_s": 12.0}
    strong = findings.teacher({**base, "test": {"hr@10": 0.30, "ndcg@10": 0.2}, "pop_test": {"hr@10": 0.10}})
    assert "30.0 % of users" in strong and "3.0× the floor, a teacher worth distilling" in strong
    weak = findings.teacher({**base, "test": {"hr@10": 0.11, "ndcg@10": 0.05}, "pop_test": {"hr@10": 0.10}})
    assert "1.1× the floor, barely above popularity" in weak
    assert "below popularity" in findings.teacher({**base, "test": {"hr@10": 0.05, "ndcg@10": 0.0},
                                                    "pop_test": {"hr@10": 0.10}})


def test_instructions_flag_broken_labels():
    metrics = {"rows": {"sft_train": 10, "rl_prompts": 4, "sft_valid": 2, "test_prompts": 6},
               "table7": {"ALL": 10, "I0": 6, "I1+C": 4, "I4": 0}, "label_problems": 0, "skipped_total": 3,
               "prompt_tokens_max": 90, "prompt_tokens_p50": 40.0, "prompts_over_max": 0}
    assert "10 SFT records over 2 tasks (I0 6, I1+C 4)" in findings.instructions(metrics)
    assert "every SFT label obeys" in findings.instructions(metrics)
    assert "2 SFT labels break" in findings.instructions({**metrics, "label_problems": 2})


def test_sft_compares_untuned_and_tuned_and_reads_the_probe():
    metrics = {"train": {"steps": 70, "epochs": 0.13, "seconds": 1240.0, "first_loss": 1.45, "final_loss": 0.9},
               "headline": {"base": {"correct_count_pct": 1.6, "non_exist_pct": 71.8, "repeat_item_pct": 21.9,
                                     "tcp_pct": 33.3},
                            "sft": {"correct_count_pct": 18.8, "non_exist_pct": 5.3, "repeat_item_pct": 78.6,
                                    "tcp_pct": 41.0}},
               "category_auc": {"base": 0.51, "sft": 0.49},
               "category_probe": {"sft": {"category_auc_se": 0.03, "users": 32}}}
    text = findings.sft(metrics)
    assert "invented titles (% of items): 71.8 % → 5.3 % (want down)" in text
    assert "0.51 → 0.49 ± 0.03 over 32 users: chance: it does not" in text
    knows = {**metrics, "category_auc": {"base": 0.56, "sft": 0.91}}
    assert "it tells C from the rest" in findings.sft(knows)


def test_rl_names_the_kept_actor_and_the_trend():
    summary = {"updates": 10, "best_update": 0,
               "valid_start": {"val_list_reward": -4.9, "val_illegal_pct": 83.8},
               "valid_best": {"val_list_reward": -4.9, "val_illegal_pct": 83.8},
               "valid_last": {"val_list_reward": -5.2, "val_illegal_pct": 85.0},
               "train_first_quarter": {"list_reward": -1.3, "illegal_pct": 38.8},
               "train_last_quarter": {"list_reward": -1.5, "illegal_pct": 40.0}}
    text = findings.rl(summary, "grpo")
    assert "10 GRPO updates" in text and "down 0.200" in text and "kept actor (the SFT model: no update beat it)" in text
    assert "Did RL raise" not in text
    gain = {"prompts": 256, "samples": 1, "start": -1.07, "last": -1.02, "delta": 0.05, "lo": -0.04, "hi": 0.14,
            "start_illegal_pct": 27.8, "last_illegal_pct": 27.1}
    text = findings.rl({**summary, "reward_gain": gain})
    assert ("On the 256 validation prompts, 1 sampled answer(s) each from one seed, the list reward went from -1.070 "
            "(SFT start) to -1.020 (last actor): +0.050 [-0.040, +0.140] paired over prompts, within noise; illegal "
            "items 27.8 % → 27.1 %.") in text
    assert "other prompts at each update: it also follows which were drawn" in text
    assert "up beyond noise" in findings.rl({**summary, "reward_gain": {**gain, "lo": 0.01}})
    assert "down beyond noise" in findings.rl({**summary, "reward_gain": {**gain, "delta": -0.1, "hi": -0.01}})


def test_report_lists_figures_and_cases():
    text = findings.report({"figures": {"a": [], "b": []}, "figures_dir": "/f",
                            "cases": {"I1-C": {"user_id": 7, "models": ["x", "y"]}}})
    assert "2 figures (PNG and PDF) in `/f`" in text and "I1-C: user 7, 2 models" in text
    assert "RL runs" not in text
    run = {"run": "full-grpo", "algorithm": "grpo", "reward": "full", "s_per_update": 2.914, "list_reward_first": -1.3,
           "list_reward_last": -0.54, "illegal_pct_first": 36.9, "illegal_pct_last": float("nan")}
    text = findings.report({"rl_head_to_head": [run]})
    assert ("full-grpo (grpo, full reward) 2.91 s/update, sampled list reward -1.300 → -0.540, illegal items "
            "36.9 % → – (first → last quarter).") in text
    paired = {**run, "reward_gain": 0.12, "reward_gain_lo": 0.02, "reward_gain_hi": 0.2}
    assert "(first → last quarter), paired gain on the valid prompts +0.120 [+0.020, +0.200]." in findings.report(
        {"rl_head_to_head": [paired]})
