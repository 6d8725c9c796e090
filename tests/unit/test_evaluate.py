"""Stage 06: teacher filtering, matching and scoring on hand-made answers, tables, and a
tiny-random model decoding under the catalog constraint."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from recnb import paths
from recnb.catalog import Catalog
from recnb.evaluation import predict as evaluate
from recnb.evaluation import tables
from recnb.tasks import Intent

ITEMS = pd.DataFrame({
    "item_id": [1, 2, 3, 4, 5, 6],
    "title": ["Alpha (1990)", "Beta (1991)", "Gamma (1992)", "Delta (1993)", "Epsilon (1994)", "Zeta (1995)"],
    "categories": [["Drama"], ["Comedy"], ["Drama"], ["Comedy"], ["Drama", "Comedy"], ["Horror"]],
    "popularity": [6, 5, 4, 3, 2, 1],
})
DRAMA = {1, 3, 5}


@pytest.fixture(scope="module")
def catalog():
    return Catalog(ITEMS)


def _record(group, task, kind, k, target, history, category=None, m=None, user=1):
    content = f"user {user} {group}"
    return {"task": task, "test_group": group, "user_id": user, "k": k, "target": target, "history": history,
            "intent": {"kind": kind, "category": category, "m": m},
            "prompt": [{"role": "system", "content": "You are an expert recommender engine."},
                       {"role": "user", "content": content}]}


@pytest.mark.parametrize("intent,k,expected", [
    (Intent("I0"), 3, [6, 5, 4]),
    (Intent("+C", "Drama"), 3, [5, 3, 1]),
    (Intent("-C", "Drama"), 2, [6, 4]),
    # k=5, m=0.2: at most 1 drama -> 5 (first drama) then only non-drama 6, 4, 2; 3 and 1 refused
    (Intent("<=", "Drama", 0.2), 5, [6, 5, 4, 2]),
    # k=4, m=0.5: exactly 2 drama, 2 other, in rank order
    (Intent("~=", "Drama", 0.5), 4, [6, 5, 4, 3]),
    # k=3, m=0.7: at least ceil(2.1) = 3 drama -> no room for non-drama items
    (Intent(">=", "Drama", 0.7), 3, [5, 3, 1]),
])
def test_teacher_list_filters_ranking_by_intent(catalog, intent, k, expected):
    assert evaluate.teacher_list([6, 5, 4, 3, 2, 1], intent, k, catalog) == expected


def test_teacher_list_without_control_is_plain_topk(catalog):
    assert evaluate.teacher_list([6, 5, 4], Intent("+C", "Drama"), 2, catalog, control=False) == [6, 5]


def test_sasrec_predictions_text_round_trips_and_flags_filtering(catalog):
    test = pd.DataFrame([_record("I0", "I0", "I0", 2, 5, [1]),
                         _record("I1-C", "I1-C", "-C", 2, 4, [1], "Drama"),
                         _record("I1-C_nocontrol", "I1-C", "-C", 2, 4, [1], "Drama")])
    teacher = pd.DataFrame({"user_id": [1, 1], "split": ["valid", "test"], "topk_items": [[1, 2], [5, 4, 2]]})
    preds = evaluate.match_predictions(evaluate.sasrec_predictions(test, teacher, catalog), catalog)
    assert preds["raw"].tolist()[0] == "1. Epsilon (1994)\n2. Delta (1993)"
    assert [list(x) for x in preds["item_ids"]] == [[5, 4], [4, 2], [5, 4]]
    assert preds["filtered"].tolist() == [False, True, False]
    with pytest.raises(ValueError, match="no test row"):
        evaluate.sasrec_predictions(test.assign(user_id=9), teacher, catalog)


def _fabricated(catalog):
    test = pd.DataFrame([_record("I0", "I0", "I0", 3, 2, [6]),
                         _record("I2~=30", "I2~=", "~=", 3, 3, [6], "Drama", 0.3)])
    preds = evaluate._base_frame("m", test)
    # exact: [1, None, 1] ("Betaa" is 1 edit from "beta 1991"); fuzzy: [1, 2, 1]
    preds["raw"] = ["Here you go:\n1. Alpha (1990)\n2. Betaa (1991)\n3. 'Alpha (1990)'",
                    "1. Gamma (1992)\n2. Zeta (1995)\n3. Omega (2000)\n4. Alpha (1990)"]
    return evaluate.match_predictions(preds, catalog)


def test_match_and_score_hand_computed(catalog):
    preds = _fabricated(catalog)
    assert preds["titles"][0] == ["Alpha (1990)", "Betaa (1991)", "Alpha (1990)"]
    assert list(preds["item_ids"][0]) == [1, None, 1] and list(preds["item_ids_fuzzy"][0]) == [1, 2, 1]
    scores = evaluate.score_predictions(preds, catalog).set_index(["test_group", "matcher"])
    assert scores.loc[("I0", "exact"), "hit"] == 0.0
    assert scores.loc[("I0", "fuzzy"), "ndcg"] == pytest.approx(1 / math.log2(3))
    assert scores.loc[("I0", "fuzzy"), "hit5"] == 1.0
    assert scores.loc[("I0", "exact"), "non_exist"] == 1 and scores.loc[("I0", "exact"), "repeat"] == 1
    # I2~=30, k=3: first 3 = Gamma (drama), Zeta, Omega(None) -> Count_in 1 or 2 (Omega unknown);
    # |2 - 0.9| > 1, so the rule does not hold whatever Omega is -> CPA 0 (metrics' unknown-position rule)
    assert scores.loc[("I2~=30", "exact"), "cpa"] == 0.0
    assert scores.loc[("I2~=30", "exact"), "tcp"] == pytest.approx(1 / 3)
    assert scores.loc[("I2~=30", "exact"), "hit"] == 1.0  # target 3 = Gamma at position 1
    assert scores.loc[("I2~=30", "exact"), "correct_count"] == 0  # 4 titles for k = 3
    summary = evaluate.summarise(evaluate.score_predictions(preds, catalog))
    row = summary.set_index(["test_group", "matcher"]).loc[("I0", "exact")]
    assert row["non_exist_pct"] == pytest.approx(100 / 3) and row["repeat_item_pct"] == pytest.approx(100 / 3)
    nested = evaluate.metrics_dict(summary)
    assert nested["fuzzy"]["m"]["I0"]["hr"] == 1.0


def test_predictions_survive_parquet(tmp_path, catalog):
    preds = _fabricated(catalog)
    preds.to_parquet(tmp_path / "p.parquet")
    back = pd.read_parquet(tmp_path / "p.parquet")
    again = evaluate.score_predictions(back, catalog)
    pd.testing.assert_frame_equal(again, evaluate.score_predictions(preds, catalog))


def test_resolve_models_refuses_an_unfinished_or_missing_stage_dir(tmp_path):
    """A model row never goes missing silently: an unfinished stage dir is an error naming it."""
    run_root = tmp_path / "r"
    (run_root / "04_sft_unsloth").mkdir(parents=True)
    (run_root / "05_ppo").mkdir()
    (run_root / "05_ppo" / "params.json").write_text('{"init_from": "04_sft_unsloth"}')
    (run_root / "05_ppo" / "metrics.json").write_text("{}")
    for name in ("04_sft_unsloth", "05_ppo_typo"):
        with pytest.raises(FileNotFoundError, match=f"{name} is missing or incomplete"):
            evaluate.resolve_models({"v2": name}, run_root)
    # PPO's adapters load on the SFT model: an unfinished one under it is named too
    with pytest.raises(FileNotFoundError, match="04_sft_unsloth is missing or incomplete"):
        evaluate.resolve_models({"full": "05_ppo"}, run_root)
    (run_root / "04_sft_unsloth" / "params.json").write_text("{}")
    (run_root / "04_sft_unsloth" / "metrics.json").write_text("{}")
    specs, _ = evaluate.resolve_models({"SASRec": "sasrec", "base": "base", "full": "05_ppo"}, run_root)
    assert [s.label for s in specs] == ["SASRec", "base", "full"] and specs[2].path == run_root / "05_ppo"
    # and it is an input of the table (inputs.json), so a changed SFT model makes the table stale
    assert paths.inputs_read()["04_sft_unsloth"] == run_root / "04_sft_unsloth"


def _summary():
    rows = []
    for model, tcp, tcp_free, hr in (("A", 80.0, 10.0, 0.2), ("B", 60.0, 12.0, 0.3)):
        for matcher in ("exact", "fuzzy"):
            rows.append({"model": model, "test_group": "I1+C", "matcher": matcher, "tcp_pct": tcp, "hr": hr, "ndcg": hr / 2})
            rows.append({"model": model, "test_group": "I1+C_nocontrol", "matcher": matcher, "tcp_pct": tcp_free,
                         "hr": 0.1, "ndcg": 0.05})
            rows.append({"model": model, "test_group": "I1-C", "matcher": matcher, "tcp_pct": 100 - tcp, "hr": hr,
                         "ndcg": hr / 3})
    return pd.DataFrame(rows)


def test_table3_numbers_bold_and_parentheses(tmp_path):
    summary = _summary()
    table = tables.build_table(summary, "table3", ["A", "B", "missing"])
    assert table["model"].tolist() == ["A", "B", "A", "B"]  # fuzzy block first, absent model dropped
    assert table["I1+C TCP@10 (%) ↑ (no control)"].tolist()[:2] == [10.0, 12.0]
    md = tables.to_markdown(table, "table3")
    assert "| A | 0.2000 | 0.1000 | **80.00** (10.00) |" in md
    assert "**20.00** (–)" in md  # I1-C TCP: lower is better -> A's 20 beats B's 40
    assert "| B | **0.3000** | **0.1500** | 60.00 (12.00) |" in md
    written = tables.write_tables(summary, tmp_path, ["A", "B"], {"table5": {"MMLU": {"A": "skipped"}}})
    assert (tmp_path / "table3.md").read_text() == md and set(written) == set(tables.TABLES)
    assert pd.read_csv(tmp_path / "table3.csv").shape == (4, 2 + 8)
    assert "no rows" in (tmp_path / "table2.md").read_text()


def test_intervals_become_csv_bounds_and_markdown_plus_minus(tmp_path):
    summary = _summary()
    summary["tcp_pct_lo"], summary["tcp_pct_hi"] = summary["tcp_pct"] - 4.0, summary["tcp_pct"] + 6.0
    table = tables.build_table(summary, "table3", ["A", "B"])
    assert table["I1+C TCP@10 (%) ↑ lo"].tolist()[:2] == [76.0, 56.0]
    assert table["I1+C TCP@10 (%) ↑ (no control) hi"].tolist()[:2] == [16.0, 18.0]
    md = tables.to_markdown(table, "table3")
    assert "| A | 0.2000 | 0.1000 | **80.00** ±5.00 (10.00 ±5.00) |" in md and tables.INTERVAL_NOTE in md
    assert "±" not in tables.to_markdown(tables.build_table(_summary(), "table3", ["A", "B"]), "table3")
    fuzzy_only = tables.to_markdown(table, "table3", matchers=("fuzzy",))
    assert "**fuzzy**" in fuzzy_only and "**exact**" not in fuzzy_only and fuzzy_only.count("| A |") == 1


def test_popularity_answers_the_most_popular_unseen_items_filtered_by_intent(catalog):
    assert evaluate.popularity_ranking(ITEMS) == [1, 2, 3, 4, 5, 6]
    test = pd.DataFrame([_record("I0", "I0", "I0", 3, 4, [2]),
                         _record("I1+C", "I1+C", "+C", 2, 4, [1], "Drama"),
                         _record("I1+C_nocontrol", "I1+C", "+C", 2, 4, [1], "Drama")])
    preds = evaluate.match_predictions(evaluate.popularity_predictions(test, ITEMS, catalog), catalog)
    assert preds["item_ids"].tolist() == [[1, 3, 4], [3, 5], [2, 3]]
    assert preds["filtered"].tolist() == [False, True, False] and set(preds["model"]) == {"Popularity"}


def test_mostly_invented_titles_do_not_win_a_lower_is_better_column():
    summary = _summary()
    summary["non_exist_pct"] = 10.0
    summary.loc[(summary["model"] == "A") & (summary["test_group"] == "I1-C"), "non_exist_pct"] = 80.0
    md = tables.to_markdown(tables.build_table(summary, "table3", ["A", "B"]), "table3")
    # TCP(-C) already counts invented positions as in C (recnb.metrics), so A's 20 % is earned: bold, no mark
    assert "| A | 0.2000 | 0.1000 | **80.00** (10.00) | 0.2000 | 0.0667 | **20.00** (–) |" in md
    assert "†" not in md and tables.NOTES["table3"] in md
    five = pd.DataFrame([{"model": m, "test_group": "k11-15", "matcher": "fuzzy", "non_exist_pct": ne,
                          "in_history_pct": ih} for m, ne, ih in (("A", 90.0, 0.0), ("B", 20.0, 5.0))])
    md5 = tables.to_markdown(tables.build_table(five, "table5", ["A", "B"]), "table5")
    # NonExist is itself the measure of invented titles: shown plainly; InHistory is flattered by them
    assert "| A | – | – | 90.00 | 0.00† | – | – |" in md5 and "| B | – | – | **20.00** | **5.00** | – | – |" in md5
    four = pd.DataFrame([{"model": m, "test_group": "I2<=20", "matcher": "fuzzy", "non_exist_pct": ne, "cpa_pct": cpa}
                         for m, ne, cpa in (("A", 90.0, 100.0), ("B", 10.0, 60.0))])
    md4 = tables.to_markdown(tables.build_table(four, "table4", ["A", "B"]), "table4")
    # CPA already fails invented positions that could break the rule: ranked as usual, the rule below
    assert "**100.00** (–)" in md4 and "†" not in md4 and tables.NOTES["table4"] in md4
    five["non_exist_pct"] = 49.0  # below the threshold: ranked as usual
    assert "†" not in tables.to_markdown(tables.build_table(five, "table5", ["A", "B"]), "table5")


def test_tiny_random_constrained_answers_are_catalog_titles():
    """A random 2-layer model: free decoding writes no catalog title, constrained decoding only those."""
    from recnb import data, llm

    items = data.build_dataset("tiny", seed=0).items
    catalog = Catalog(items)
    model, tok = llm.load_base("tiny-random")
    test = pd.DataFrame([_record("I0", "I0", "I0", 5, 1, [1, 2, 3], user=u) for u in range(1, 5)])
    test["prompt"] = [[{"role": "user", "content": f"History: 'The Silver Ka000', 'The Harbor Ka001'. User {u}: "
                        "recommend 5 items."}] for u in range(1, 5)]
    free = evaluate.match_predictions(evaluate.llm_predictions("tiny", model, tok, test, llm.Decoding(48, 4)), catalog)
    assert all(i is None for ids in free["item_ids"] for i in ids)
    how = llm.Decoding(max_new_tokens=48, batch_size=4, max_prompt_tokens=256)
    constraint = evaluate.make_constraint(tok, items, test, how)
    con = evaluate.match_predictions(evaluate.llm_predictions("tiny", model, tok, test, how, constraint), catalog)
    assert con["model"].unique().tolist() == ["tiny+constrained"]
    assert sum(len(t) for t in con["titles"]) >= 4
    assert all(i is not None for ids in con["item_ids"] for i in ids)  # NonExist = 0
    for ids in con["item_ids"]:
        assert len(set(ids)) == len(ids) and not set(ids) & {1, 2, 3}  # no repeats, no history
        assert len(ids) <= 5  # k = 5 asked
    assert constraint.unmatched_prompts == 0


@pytest.mark.slow  # ~25 s: lm-eval import + dataset build; lm-eval is not a declared dependency
def test_lm_eval_wiring_on_local_task(fixtures_dir, monkeypatch):
    """lm-eval scores an in-memory model on a local 6-question task; offline, paper tasks say skipped."""
    pytest.importorskip("lm_eval")
    from recnb import llm
    from recnb.evaluation import generalization

    model, tok = llm.load_base("tiny-random")
    task = generalization.local_task(fixtures_dir / "lm_eval_task" / "recnb_capitals.yaml")
    scores = generalization.run_lm_eval(model, tok, [task], batch_size=4)
    assert set(scores) == {"recnb_capitals"}
    assert scores["recnb_capitals"] * 6 == pytest.approx(round(scores["recnb_capitals"] * 6))  # k of 6 right
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert generalization.paper_generalization(model, tok) == {
        "MMLU": generalization.SKIPPED_OFFLINE, "GSM8K": generalization.SKIPPED_OFFLINE}


def test_load_test_prompts_draws_users_per_group_and_keeps_twins_paired(tmp_path):
    recs = [_record(g, "I0", "I0", 10, 1, [2], user=u) for g in ("I0", "k11-15") for u in range(1, 11)]
    # users 1-4 only: stage 03 could not label the others' prompts in this group
    recs += [_record(g, "I1-C", "-C", 10, 1, [2], user=u) for g in ("I1-C", "I1-C_nocontrol") for u in range(1, 5)]
    path = tmp_path / "test_prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    test = evaluate.load_test_prompts(path, max_test_users=3, seed=0)
    users = test.groupby("test_group")["user_id"].apply(sorted)
    assert len(test) == 12 and all(len(u) == 3 for u in users)  # every group full, the small one too
    assert users["I1-C"] == users["I1-C_nocontrol"] and set(users["I1-C"]) <= {1, 2, 3, 4}
    assert len(evaluate.load_test_prompts(path, max_test_users=0)) == len(recs)
    assert evaluate.load_test_prompts(path, 3, seed=0).equals(test)  # seeded: same subset again
    with pytest.raises(FileNotFoundError, match="run stage 03_instructions"):
        evaluate.load_test_prompts(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("shared", [False, True])
def test_all_i0_users_widens_i0_alone_and_leaves_every_other_group_its_users(tmp_path, shared):
    recs = [_record(g, "I0", "I0", 10, 1, [2], user=u) for g in ("I0", "k11-15") for u in range(1, 11)]
    recs += [_record(g, "I1-C", "-C", 10, 1, [2], user=u) for g in ("I1-C", "I1-C_nocontrol") for u in range(1, 9)]
    path = tmp_path / "test_prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    drawn = evaluate.load_test_prompts(path, 3, seed=4, shared_users=shared)
    wide = evaluate.load_test_prompts(path, 3, seed=4, shared_users=shared, all_i0_users=True)
    users = wide.groupby("test_group")["user_id"].apply(sorted)
    assert users["I0"] == list(range(1, 11))  # every user of I0
    others = [g for g in users.index if g != "I0"]
    assert wide[wide["test_group"] != "I0"].reset_index(drop=True).equals(
        drawn[drawn["test_group"] != "I0"].reset_index(drop=True))  # the draws behind the other groups are unchanged
    assert all(len(users[g]) == 3 for g in others)
    assert evaluate.load_test_prompts(path, 0, all_i0_users=True).equals(evaluate.load_test_prompts(path, 0))


def test_findings_read_the_numbers_with_their_intervals():
    from recnb.evaluation import findings

    rows = []
    for model, hr, ill in (("SASRec", 0.6, 0.0), ("Popularity", 0.1, 0.0), ("v2", 0.2, 40.0), ("full", 0.3, 20.0)):
        rows.append({"model": model, "test_group": "I0", "matcher": "fuzzy", "hr": hr, "hr_lo": hr - 0.1,
                     "hr_hi": hr + 0.1, "repeat_item_pct": ill, "non_exist_pct": 0.0, "in_history_pct": 0.0,
                     "n_lists": 50})
    effects = pd.DataFrame([
        {"model": "v2", "test_group": "I1+C", "with": 90.0, "without": 60.0, "delta": 30.0, "delta_lo": 20.0, "delta_hi": 40.0},
        {"model": "v2", "test_group": "I1-C", "with": 50.0, "without": 40.0, "delta": 10.0, "delta_lo": 2.0, "delta_hi": 18.0},
        {"model": "full", "test_group": "I1+C", "with": 70.0, "without": 65.0, "delta": 5.0, "delta_lo": -3.0, "delta_hi": 12.0}])
    text = findings.eval_findings(pd.DataFrame(rows), effects)
    assert "SASRec 0.600 [0.500, 0.700], Popularity 0.100 [0.000, 0.200]; the best LLM, full, 0.300 [0.200, 0.400], is below" in text
    assert "v2: the sentence moves TCP(+C) 90 vs 60 without it, +30 [+20, +40]: as asked; TCP(−C) 50 vs 40 without it, +10 [+2, +18]: against the request." in text
    assert "full: the sentence moves TCP(+C) 70 vs 65 without it, +5 [-3, +12]: within noise." in text
    assert "v2 40.0, full 20.0" in text
    assert "bit-identical" not in text
    shared = findings.eval_findings(pd.DataFrame(rows), effects, facts={"v2": {"seconds": 1.0},
                                                                         "full": {"same_weights_as": "v2"}})
    assert "- **full** has bit-identical weights to v2" in shared


def test_models_with_identical_weights_generate_once_and_share_their_answers(monkeypatch):
    """`full` with the SFT model's weights (stage 05 kept its start) reuses v2's answers, its own
    constrained run included; a model whose weights differ by one value generates its own."""
    import torch

    from recnb import data, llm
    from recnb.evaluation.config import EvalConfig

    items = data.build_dataset("tiny", seed=0).items
    base, tok = llm.load_base("tiny-random")
    changed, _ = llm.load_base("tiny-random")
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1.0
    assert evaluate.weights_digest(base) != evaluate.weights_digest(changed)
    weights = {"v2": base, "full": base, "other": changed}
    monkeypatch.setattr(evaluate, "load_model", lambda spec, *a, **kw: (weights[spec.label], tok))
    calls = []
    real = evaluate.llm_predictions
    monkeypatch.setattr(evaluate, "llm_predictions", lambda label, *a, **kw: calls.append(label) or real(label, *a, **kw))
    test = pd.DataFrame([_record("I0", "I0", "I0", 3, 1, [1, 2], user=u) for u in range(1, 3)])
    test["prompt"] = [[{"role": "user", "content": f"User {u}: recommend 3 items."}] for u in range(1, 3)]
    cfg = EvalConfig(dataset="tiny", models={"v2": "x", "full": "y", "other": "z"}, constrained_models=["v2", "full"],
                     max_new_tokens=12, batch_size=2, generalization=False)
    specs = [evaluate.ModelSpec(label, "04_sft_unsloth") for label in ("v2", "full", "other")]
    preds, facts = evaluate.predict_all(specs, test, pd.DataFrame(), items, cfg)
    assert calls == ["v2", "v2", "other"]  # v2 free + constrained; full reused both; other generated
    assert facts["full"]["same_weights_as"] == "v2" and facts["full+constrained"]["same_weights_as"] == "v2+constrained"
    assert "same_weights_as" not in facts["other"]
    for mine, theirs in (("full", "v2"), ("full+constrained", "v2+constrained")):
        a, b = (preds[preds["model"] == m].drop(columns="model").reset_index(drop=True) for m in (mine, theirs))
        pd.testing.assert_frame_equal(a, b)


def test_shared_users_are_the_same_in_every_group_that_has_them(tmp_path):
    recs = [_record(g, "I0", "I0", 10, 1, [2], user=u) for g in ("I0", "k11-15") for u in range(1, 11)]
    recs += [_record(g, "I1-C", "-C", 10, 1, [2], user=u) for g in ("I1-C", "I1-C_nocontrol") for u in range(1, 5)]
    path = tmp_path / "test_prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    test = evaluate.load_test_prompts(path, max_test_users=3, seed=0, shared_users=True)
    users = test.groupby("test_group")["user_id"].apply(sorted)
    assert len(test) == 12 and users["I0"] == users["k11-15"]
    assert users["I1-C"] == users["I1-C_nocontrol"] and set(users["I1-C"]) <= {1, 2, 3, 4}
    # one seeded order: I1-C takes its first three among users 1-4, so every one of them that I0 drew is in I1-C
    assert set(users["I0"]) & {1, 2, 3, 4} <= set(users["I1-C"])
    assert evaluate.load_test_prompts(path, 3, seed=0, shared_users=True).equals(test)
    assert evaluate.load_test_prompts(path, 0, shared_users=True).equals(evaluate.load_test_prompts(path, 0))


def test_repeated_prompts_are_generated_once_and_answered_alike(monkeypatch):
    """A twin repeating I0's prompt (same messages, same k) is decoded once; a different k is not the same prompt."""
    from recnb import llm

    asked = []

    def fake_generate(model, tok, messages, decoding, **kw):
        asked.append([m[-1]["content"] for m in messages])
        return [f"answer {len(asked)}-{i}" for i in range(len(messages))]

    monkeypatch.setattr(llm, "generate", fake_generate)
    test = pd.DataFrame([_record("I0", "I0", "I0", 10, 1, [2], user=1), _record("I0", "I0", "I0", 10, 1, [2], user=2),
                         _record("I0", "I0", "I0", 10, 1, [2], user=1), _record("I0", "I0", "I0", 5, 1, [2], user=1)])
    test["test_group"] = ["I0", "I0", "I1-C_nocontrol", "k11-15"]
    out = evaluate.llm_predictions("m", None, None, test, llm.Decoding())
    assert asked == [["user 1 I0", "user 2 I0", "user 1 I0"]]  # rows 0 and 2 ask the same: once; row 3 has k=5
    assert out["raw"].tolist() == ["answer 1-0", "answer 1-1", "answer 1-0", "answer 1-2"]
    assert out["test_group"].tolist() == test["test_group"].tolist()
    codes, first = evaluate.distinct_prompts(test)
    assert codes.tolist() == [0, 1, 0, 2] and first.tolist() == [0, 1, 3]
    asked.clear()
    assert evaluate.llm_predictions("m", None, None, test, llm.Decoding(), dedup=False)["raw"].nunique() == 4
    assert len(asked[0]) == 4
