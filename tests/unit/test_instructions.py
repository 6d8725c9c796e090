"""Stage 03: label rules on a hand-made catalog, then whole instruction sets on the tiny dataset."""

import collections
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from recnb import artifacts as col
from recnb import data, findings, instructions, prompts, tasks
from recnb.instructions import build
from recnb.instructions.build import spread_tasks
from recnb.instructions.labels import (
    Catalog,
    SkipSample,
    add_candidates,
    label_category,
    label_i0,
    label_proportion,
    label_search,
    negative_category,
    palr_window,
    proportion_bounds,
)
from recnb.instructions.sharegpt import load_sharegpt
from recnb.instructions.specs import TeacherRow, index_teacher
from recnb.tasks import RL_TASKS

# id, title, categories, popularity: popularity order is 1..7.
ITEMS = pd.DataFrame(
    [
        (1, "A", ["Drama"], 50),
        (2, "B", ["Comedy"], 40),
        (3, "C", ["Drama", "Comedy"], 30),
        (4, "D", ["Action"], 20),
        (5, "E", ["Drama"], 10),
        (6, "F", ["Action", "Comedy"], 5),
        (7, "G", ["Horror"], 1),
    ],
    columns=[col.ITEM, col.TITLE, col.CATEGORIES, col.POPULARITY],
)


@pytest.fixture(scope="module")
def cat():
    return Catalog(ITEMS)


# ---------------------------------------------------------------- label rules, hand-computed


def test_catalog_orders_categories_by_popularity(cat):
    assert cat.by_popularity == (1, 2, 3, 4, 5, 6, 7)
    assert cat.by_category["Comedy"] == (2, 3, 6)
    assert cat.in_category(3, "Drama") and not cat.in_category(4, "Drama")


def test_i0_label_is_target_then_teacher_order_without_history(cat):
    assert label_i0(5, (4, 5, 1, 2, 6, 7), history=(1,), k=3) == [5, 4, 2]
    with pytest.raises(SkipSample, match="too_few_items"):
        label_i0(5, (4,), history=(), k=3)


def test_positive_category_label_fills_from_catalog_then_skips_when_too_small(cat):
    # teacher gives 3 (Drama); the Drama catalog adds nothing new (1 is history, 3 and 5 taken).
    assert label_category(5, (4, 2, 3, 6), (1,), 2, "Drama", True, cat) == [5, 3]
    with pytest.raises(SkipSample, match="too_few_items"):
        label_category(5, (4, 2, 3, 6), (1,), 3, "Drama", True, cat)
    # no teacher items at all: the Drama catalog by popularity fills the list.
    assert label_category(5, (), (), 3, "Drama", True, cat) == [5, 1, 3]


def test_negative_category_label_excludes_c_and_history(cat):
    assert label_category(4, (1, 3, 2, 6, 5), (7,), 3, "Drama", False, cat) == [4, 2, 6]
    with pytest.raises(SkipSample, match="target_breaks_rule"):
        label_category(1, (2, 4), (), 2, "Drama", False, cat)


def test_negative_category_is_the_most_frequent_top10_category_without_the_target(cat):
    # top items 1,3,2,6,5: Drama 3 (1,3,5), Comedy 3 (3,2,6), Action 1 but the target (4) is Action.
    assert negative_category(4, (1, 3, 2, 6, 5), cat) == "Comedy"  # tie -> alphabetical
    assert negative_category(4, (1, 5, 2), cat) == "Drama"
    with pytest.raises(SkipSample, match="no_negative_category"):
        negative_category(3, (1, 2, 3), cat)  # every category there is the target's


@pytest.mark.parametrize(
    "kind, m, bounds",
    [("<=", 0.2, (0, 2)), ("<=", 0.25, (0, 2)), (">=", 0.3, (3, 10)), (">=", 0.25, (3, 10)),
     ("~=", 0.3, (3, 3)), ("~=", 0.7, (7, 7)), (">=", 0.9, (9, 10))],
)
def test_proportion_bounds_use_exact_k_times_m(kind, m, bounds):
    assert proportion_bounds(kind, 10, m) == bounds


def test_proportion_labels_follow_teacher_order_under_each_rule(cat):
    teacher = (1, 5, 2, 4, 6, 7)  # target 3 is Drama
    assert label_proportion(3, teacher, (), 4, "Drama", "<=", 0.5, cat) == [3, 1, 2, 4]
    assert label_proportion(3, teacher, (), 4, "Drama", ">=", 0.75, cat) == [3, 1, 5, 2]
    assert label_proportion(3, teacher, (), 4, "Drama", "~=", 0.5, cat) == [3, 1, 2, 4]
    with pytest.raises(SkipSample, match="target_breaks_rule"):
        label_proportion(3, teacher, (), 4, "Drama", "<=", 0.1, cat)  # at most 0 Drama, target is Drama


def test_search_labels_draw_distinct_items_in_or_out_of_the_category(cat):
    rng = np.random.default_rng(0)
    assert set(label_search(rng, 2, "Drama", True, cat)) <= {1, 3, 5}
    assert sorted(label_search(rng, 6, "Horror", False, cat)) == [1, 2, 3, 4, 5, 6]
    with pytest.raises(SkipSample, match="category_too_small"):
        label_search(rng, 4, "Drama", True, cat)


def test_candidates_hold_the_label_and_random_non_history_items(cat):
    cands = add_candidates(np.random.default_rng(0), [5, 4], history=[1], n=5, catalog=cat)
    assert len(cands) == len(set(cands)) == 5 and {5, 4} <= set(cands) and 1 not in cands
    every = add_candidates(np.random.default_rng(0), [5, 4], history=[1], n=50, catalog=cat)
    assert sorted(every) == [2, 3, 4, 5, 6, 7]


def test_palr_window_takes_the_real_next_items():
    assert palr_window([1, 2, 3, 4, 5], 3, 10) == ([1, 2], [3, 4, 5])
    assert palr_window([1, 2, 3, 4, 5], 10, 10) == ([1], [2, 3, 4, 5])  # k shrinks to fit
    assert palr_window([1, 2, 3, 4, 5], 2, 1) == ([3], [4, 5])
    with pytest.raises(SkipSample, match="history_too_short"):
        palr_window([7], 1, 10)


# ---------------------------------------------------------------- whole sets on tiny data


def fake_teacher(prepared, n=100, max_len=10, seed=0):
    """Teacher rows per CONTRACTS.md: popularity order with a per-user shuffle of the head, history masked."""
    pop = prepared.items.sort_values([col.POPULARITY, col.ITEM], ascending=[False, True])[col.ITEM].tolist()
    rows = []
    frame = prepared.splits[[col.USER, col.TRAIN_ITEMS, col.VALID_ITEM, col.TEST_ITEM]]
    for user, train, valid, test in frame.itertuples(index=False):
        train = [int(i) for i in train]
        rng = np.random.default_rng([seed, int(user)])
        for split, seen, target in (("train", train[:-1], train[-1]), ("valid", train, valid), ("test", train + [valid], test)):
            history = seen[-max_len:]
            order = [i for i in pop if i not in history]
            head = [order[j] for j in rng.permutation(20)]
            ranking = head + order[20:]
            rows.append({"user_id": int(user), "split": split, "history": history, "target": int(target),
                         "topk_items": ranking[:n], "topk_scores": [float(-j) for j in range(n)],
                         "target_rank": ranking.index(int(target))})
    return pd.DataFrame(rows)


CONFIG = instructions.InstructionConfig(valid_per_type=12, n_candidates=15)


@pytest.fixture(scope="module")
def tiny():
    prepared = data.build_dataset("tiny", seed=0)
    return prepared, fake_teacher(prepared)


@pytest.fixture(scope="module")
def sets(tiny):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        built = instructions.build_instruction_sets(tiny[0], tiny[1], CONFIG)
    # clean input: the only skips are k items a small category cannot fill (the tiny world has ~20 a category)
    reasons = {reason for tasks in built.stats["skipped"].values() for why in tasks.values() for reason in why}
    assert reasons <= {"too_few_items"}, built.stats["skipped"]
    assert len(caught) <= 1 and built.stats["skipped_total"] < 0.05 * sum(len(f) for f in built.files.values())
    return built


def test_every_label_satisfies_its_instruction_by_the_stage06_metrics(tiny, sets):
    for name in ("sft_train", "sft_train_palr", "sft_valid"):
        report = instructions.check_labels(sets.files[name], tiny[0].items)
        assert list(report.columns) == ["rows"], (name, report)
        assert report["rows"].sum() == len(sets.files[name])


def test_check_labels_catches_broken_labels(tiny, sets):
    items = tiny[0].items
    titles = dict(zip(items[col.ITEM], items[col.TITLE]))
    row = next(r for r in sets.files["sft_train"] if r["task"] == "I1+C" and r["k"] >= 3)
    outside = next(i for i in titles if row["intent"]["category"] not in items.set_index(col.ITEM).at[i, col.CATEGORIES]
                   and i not in row["history"] and i not in row["label"])
    broken = dict(row, label=row["label"][:-1] + [outside])
    broken["completion"] = "\n".join(f"{j}. {titles[i]}" for j, i in enumerate(broken["label"], 1))
    repeated = dict(row, label=row["label"][:-1] + [row["label"][0]])
    report = instructions.check_labels([broken, repeated], items)
    assert report.loc["I1+C", "breaks_category_control"] == 1
    assert report.loc["I1+C", "repeat"] == 1
    assert report.loc["I1+C", "completion_does_not_parse_to_label"] == 1  # repeated's text was left as is


def test_rows_carry_exactly_the_contract_fields(sets):
    fields = {"task", "user_id", "split", "candidates", "prompt", "completion", "k", "intent", "target",
              "history", "label"}
    for name, rows in sets.files.items():
        for row in rows:
            assert set(row) == (fields | {"test_group"} if name == "test_prompts" else fields)
            assert row["prompt"][0] == {"role": "system", "content": prompts.SYSTEM_PROMPT}


def test_table7_proportions_and_counts(tiny, sets):
    n_users, n_items = len(tiny[0].splits), len(tiny[0].items)
    t7 = sets.stats["table7"]
    skipped = {task: sum(why.values()) for task, why in sets.stats["skipped"].get("sft_train", {}).items()}
    t7 = {task: n + skipped.get(task, 0) for task, n in t7.items()}  # what was drawn, before a skip
    assert t7["I0"] == n_users
    assert t7["I1+C"] + t7["I1-C"] == n_users and abs(t7["I1+C"] - t7["I1-C"]) <= 1
    assert sorted([t7["I2<="], t7["I2>="], t7["I2~="]]) == sorted([n_users // 3 + (j < n_users % 3) for j in range(3)])
    assert t7["I3+C"] + t7["I3-C"] == n_items and t7["I4"] == 0
    assert sets.stats["table7"]["ALL"] == len(sets.files["sft_train"]) == 2 * n_users + n_users + n_items - sum(skipped.values())
    assert sets.stats["counts"]["sft_valid"] == {"I0": 12, "I1+C": 12, "I1-C": 12, "I2~=": 12}
    assert sets.stats["skipped_total"] == sum(n for f in sets.stats["skipped"].values() for t in f.values() for n in t.values())


def test_i1_minus_share_spreads_minus_c_evenly():
    assert spread_tasks("+", "-", 0.5, 5) == ["+", "-", "+", "-", "+"]  # the paper's alternation, the default
    assert spread_tasks("+", "-", 2 / 3, 6) == ["+", "-", "-", "+", "-", "-"]
    assert spread_tasks("+", "-", 0.0, 3) == ["+"] * 3 and spread_tasks("+", "-", 1.0, 3) == ["-"] * 3
    for share in (0.1, 0.25, 0.6, 0.75, 0.9):
        for n in (1, 7, 100, 401):
            assert abs(spread_tasks("+", "-", share, n).count("-") - share * n) < 1


def test_cut_row_ends_the_history_earlier_and_keeps_the_ranking():
    row = TeacherRow((1, 2, 3, 4, 5, 6, 7), 8, (9, 10))
    assert build.cut_row(row, 2) == TeacherRow((1, 2, 3, 4, 5), 6, (9, 10))
    assert build.cut_row(row, 0) is row
    assert build.cut_row(row, 3) is row  # 4 history items left < MIN_CUT_HISTORY = 5: the row as it is


def test_i1_cuts_move_only_the_i1_train_samples_to_earlier_targets(tiny, sets):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same counted skips as `sets`
        cut = instructions.build_instruction_sets(tiny[0], tiny[1], instructions.InstructionConfig(
            valid_per_type=12, n_candidates=15, i1_cut_max=3))
    assert all(cut.files[name] == sets.files[name] for name in sets.files if name != "sft_train")
    teacher = index_teacher(tiny[1])
    moved = collections.Counter()
    for r in cut.files["sft_train"]:
        if r["user_id"] is None:
            continue
        row = teacher[(r["user_id"], "train")]
        if not r["task"].startswith("I1"):
            assert r["target"] == row.target and r["history"] == list(row.history)
            continue
        n = len(row.history) - len(r["history"])  # how far back the sample ends
        assert 0 <= n <= 3 and r["history"] == list(row.history[:len(r["history"])])
        assert r["target"] == (row.target if n == 0 else row.history[-n])
        moved[n > 0] += 1
    assert moved[True] > moved[False] > 0  # draws of 1-3 (where the history allows) against draws of 0
    assert list(instructions.check_labels(cut.files["sft_train"], tiny[0].items).columns) == ["rows"]  # labels obey


def test_candidate_rows_hold_their_label_and_no_history(sets):
    rows = [r for r in sets.files["sft_train"] if r["candidates"] is not None]
    assert 0.15 < len(rows) / len(sets.files["sft_train"]) < 0.35  # candidate_fraction 0.25 of I0/I1/I3
    for r in rows:
        assert len(r["candidates"]) == 15 and set(r["label"]) <= set(r["candidates"])
        assert not set(r["history"]) & set(r["candidates"])
        assert "The candidate items are:" in r["prompt"][1]["content"]
    assert not any(r["task"].startswith("I2") for r in rows)


def test_valid_and_i2_train_use_k10_and_valid_m(sets):
    assert {r["k"] for r in sets.files["sft_valid"]} == {10}
    assert {r["intent"]["m"] for r in sets.files["sft_valid"] if r["task"] == "I2~="} == {0.5}
    i2 = [r for r in sets.files["sft_train"] if r["task"].startswith("I2")]
    assert {r["k"] for r in i2} == {10} and {r["intent"]["m"] for r in i2} <= {j / 10 for j in range(1, 10)}
    assert {r["k"] for r in sets.files["sft_train"] if r["task"] == "I0"} == set(range(1, 11))


def test_palr_labels_are_real_next_train_items(tiny, sets):
    splits = tiny[0].splits.set_index(col.USER)
    i0 = {r["user_id"]: r["k"] for r in sets.files["sft_train"] if r["task"] == "I0"}
    for r in sets.files["sft_train_palr"]:
        train = list(splits.at[r["user_id"], col.TRAIN_ITEMS])
        assert r["k"] == min(i0[r["user_id"]], len(train) - 1)
        assert r["label"] == train[-r["k"]:] and r["history"] == train[: -r["k"]][-10:]
        held_out = {splits.at[r["user_id"], col.VALID_ITEM], splits.at[r["user_id"], col.TEST_ITEM]}
        assert not held_out & set(r["label"] + r["history"])


def test_rl_prompts_are_prompt_only_from_train_histories(sets):
    rows = sets.files["rl_prompts"]
    assert {r["task"] for r in rows} == set(RL_TASKS)
    assert all(r["completion"] == "" and r["label"] == [] and r["split"] == "train" for r in rows)


def test_test_prompts_groups_nocontrol_twins_and_no_target_in_history(tiny, sets):
    rows = sets.files["test_prompts"]
    n_users = len(tiny[0].splits)
    groups = {}
    for r in rows:
        assert r["target"] not in r["history"] and r["split"] == "test"
        groups.setdefault(r["test_group"], []).append(r)
    assert set(groups) == {"I0", "I1+C", "I1-C", "I2<=20", "I2~=30", "I2>=30", "k11-15",
                           "I1+C_nocontrol", "I1-C_nocontrol", "I2<=20_nocontrol", "I2~=30_nocontrol",
                           "I2>=30_nocontrol"}
    assert {r["k"] for r in groups["k11-15"]} == set(range(11, 16))
    for g in ("I1+C", "I1-C", "I2<=20", "I2~=30", "I2>=30"):
        twins = groups[f"{g}_nocontrol"]
        skipped = sum(sets.stats["skipped"].get("test_prompts", {}).get(g, {}).values())
        assert len(twins) == len(groups[g]) == n_users - skipped and skipped < 0.15 * n_users
        keys = [[(r["user_id"], r["target"], r["history"], json.dumps(r["intent"])) for r in rows]
                for rows in (twins, groups[g])]
        assert keys[0] == keys[1]
        assert all("intention" in r["prompt"][1]["content"] for r in groups[g])
        assert all("intention" not in r["prompt"][1]["content"] and r["k"] == 10 for r in twins)
    assert {r["intent"]["m"] for r in groups["I2<=20"]} == {0.2}


def test_same_seed_gives_byte_identical_files(tiny, sets, tmp_path):
    again = instructions.build_instruction_sets(tiny[0], tiny[1], CONFIG)
    a = instructions.write_instruction_sets(sets, tmp_path / "a")
    b = instructions.write_instruction_sets(again, tmp_path / "b")
    for name in (*instructions.FILES, "stats"):
        assert a[name].read_bytes() == b[name].read_bytes(), name
    assert tasks.read_records(a["sft_valid"]) == sets.files["sft_valid"]
    other = instructions.build_instruction_sets(tiny[0], tiny[1], instructions.InstructionConfig(seed=1, valid_per_type=12))
    c = instructions.write_instruction_sets(other, tmp_path / "c")
    assert c["sft_train"].read_bytes() != a["sft_train"].read_bytes()


def test_bad_input_is_skipped_and_counted(tiny):
    prepared, teacher = tiny
    users = sorted(teacher["user_id"].unique())[:3]
    bad = teacher[~((teacher["user_id"].isin(users[:2])) & (teacher["split"] == "train"))].copy()
    emptied = (bad["user_id"] == users[2]) & (bad["split"] == "train")
    bad.loc[emptied, "history"] = pd.Series([[]] * int(emptied.sum()), index=bad.index[emptied])
    with pytest.warns(UserWarning, match="missing_teacher"):
        sets = instructions.build_instruction_sets(prepared, bad, CONFIG)
    skipped = sets.stats["skipped"]
    assert skipped["sft_train"]["I0"] == {"missing_teacher": 2, "empty_history": 1}
    assert sets.stats["table7"]["I0"] == len(prepared.splits) - 3
    assert instructions.check_labels(sets.files["sft_train"], prepared.items).columns.tolist() == ["rows"]


def test_sharegpt_loader_keeps_usable_conversations(fixtures_dir):
    rows, skips = load_sharegpt(fixtures_dir / "sharegpt_small.json", 5, np.random.default_rng(0))
    assert len(rows) == 3 and skips == {"bad_conversation": 4, "sharegpt_short": 2}
    by_answer = {r["completion"]: r for r in rows}
    assert set(by_answer) == {"The capital of France is Paris.", "Sorrowful.", "2 + 3 = 5."}
    assert [m["role"] for m in by_answer["Sorrowful."]["prompt"]] == ["user", "assistant", "user"]
    assert by_answer["2 + 3 = 5."]["prompt"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert all(r["task"] == "I4" and r["intent"] is None for r in rows)
    with pytest.raises(FileNotFoundError, match="sharegpt_path"):
        load_sharegpt(fixtures_dir / "nope.json", 1, np.random.default_rng(0))


def test_sharegpt_fraction_mixes_i4_into_sft_train(tiny, fixtures_dir):
    cfg = instructions.InstructionConfig(valid_per_type=4, sharegpt_path=str(fixtures_dir / "sharegpt_small.json"),
                                         sharegpt_fraction=0.5)
    with pytest.warns(UserWarning, match="sharegpt_short"):
        sets = instructions.build_instruction_sets(tiny[0], tiny[1], cfg)
    assert sets.stats["table7"]["I4"] == 3
    assert sets.stats["skipped"]["sft_train"]["I4"]["bad_conversation"] == 4


def _with_catalog_lists(tiny, **params):
    cfg = instructions.InstructionConfig(valid_per_type=12, n_candidates=15, catalog_passes=2, catalog_top=30,
                                         catalog_list_len=4, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same counted skips as `sets`
        return instructions.build_instruction_sets(tiny[0], tiny[1], cfg)


def test_catalog_lists_join_sft_train_after_the_paper_records_and_change_nothing_else(tiny, sets):
    built = _with_catalog_lists(tiny)
    paper, lists = built.files["sft_train"][:len(sets.files["sft_train"])], built.files["sft_train"][len(sets.files["sft_train"]):]
    assert paper == sets.files["sft_train"]  # the paper's records first, unchanged
    assert all(built.files[name] == sets.files[name] for name in sets.files if name != "sft_train")
    assert built.stats["table7"] == sets.stats["table7"] and built.stats["counts"] == sets.stats["counts"]
    assert built.stats["catalog_lists"] == len(lists) > 0 and sets.stats["catalog_lists"] == 0
    catalog = Catalog(tiny[0].items)
    top = set(catalog.by_popularity[:30])
    pairs = collections.Counter((i, r["intent"]["category"]) for r in lists for i in r["label"])
    assert pairs == {(i, c): 2 for i in top for c in catalog.categories_of(i)}  # every pair of the top 30, twice
    histories = {u: list(row) for u, split, row in tiny[1][["user_id", "split", "history"]].itertuples(index=False)
                 if split == "train"}
    for r in lists:
        assert r["task"] == "I1+C" and r["split"] == "train" and 1 <= r["k"] == len(r["label"]) <= 4
        assert set(r["history"]) <= set(histories[r["user_id"]]) and not set(r["history"]) & set(r["label"])
    report = instructions.check_labels(lists, tiny[0].items)  # each list obeys its +C prompt, by stage 06's metrics
    assert list(report.columns) == ["rows"] and report["rows"].sum() == len(lists)
    lengths = {"prompt_tokens_max": 9, "prompt_tokens_p50": 5, "prompts_over_max": 0}
    said = findings.instructions({**instructions.stage_metrics(built, report), **lengths})
    assert f"{len(paper):,} SFT records over 8 tasks" in said and f"plus {len(lists):,} catalog lists" in said


def test_catalog_minus_lists_refuse_the_test_rules_genre_and_leave_everything_else_as_it_was(tiny, sets):
    plus_only, built = _with_catalog_lists(tiny), _with_catalog_lists(tiny, catalog_minus_share=0.25)
    n_paper = len(sets.files["sft_train"])
    lists = built.files["sft_train"][n_paper:]
    plus, minus = [r for r in lists if r["task"] == "I1+C"], [r for r in lists if r["task"] == "I1-C"]
    assert built.files["sft_train"][:n_paper] + plus == plus_only.files["sft_train"]  # the +C lists unchanged
    assert all(built.files[name] == sets.files[name] for name in sets.files if name != "sft_train")
    assert lists == plus + minus and len(minus) == len(plus) / 3  # a quarter of all the lists
    assert built.stats["catalog_lists"] == len(lists) and built.stats["catalog_minus_lists"] == len(minus)
    assert plus_only.stats["catalog_minus_lists"] == 0
    catalog, teacher = Catalog(tiny[0].items), index_teacher(tiny[1])
    top = set(catalog.by_popularity[:30])
    for r in minus:
        row, category = teacher[(r["user_id"], "train")], r["intent"]["category"]
        assert category == negative_category(row.target, row.topk, catalog)  # as the test's I1-C prompts choose C
        assert r["history"] == list(row.history) and r["target"] is None and r["k"] == len(r["label"]) == 4
        assert set(r["label"]) <= top and not set(r["label"]) & set(r["history"])
        assert not any(catalog.in_category(i, category) for i in r["label"]) and category in r["prompt"][-1]["content"]
    assert len({r["intent"]["category"] for r in minus}) > 1
    report = instructions.check_labels(minus, tiny[0].items)  # each obeys its -C prompt, by stage 06's metrics
    assert list(report.columns) == ["rows"] and report["rows"].sum() == len(minus)
    lengths = {"prompt_tokens_max": 9, "prompt_tokens_p50": 5, "prompts_over_max": 0}
    said = findings.instructions({**instructions.stage_metrics(built, report), **lengths})
    assert f"plus {len(lists):,} catalog lists ({len(plus):,} I1+C, {len(minus):,} I1-C" in said
    half = _with_catalog_lists(tiny, catalog_minus_share=0.5).stats
    assert half["catalog_minus_lists"] == half["catalog_lists"] / 2 == len(plus)


def test_catalog_minus_specs_by_hand(cat):
    # teacher top 3, 5, 2: Drama twice, Comedy twice -> Comedy (alphabetical; the target 4 is Action)
    good = (10, TeacherRow((1,), 4, (3, 5, 2)))
    no_genre = (11, TeacherRow((1,), 7, (7,)))  # the teacher's only genre is the target's: drawn again
    specs = build.catalog_minus_specs(cat, [1, 2, 3, 4, 5, 6, 7], 3, 3, np.random.default_rng(0), [no_genre, good])
    assert [(s.task, s.user_id, s.category, s.history, s.phrase) for s in specs] == [
        ("I1-C", 10, "Comedy", [1], n) for n in range(3)]
    assert all(sorted(s.label) == [4, 5, 7] and s.k == 3 for s in specs)  # outside Comedy and the history
    two = build.catalog_minus_specs(cat, [1, 4], 1, 3, np.random.default_rng(0), [good])
    assert two[0].label == [4] and two[0].k == 1  # a short pool gives a shorter list
    # teacher_top: among the teacher's best outside C and the history. Top 3, 5, 2, 7, 6 (target 4, Action):
    # Comedy three times -> C; outside Comedy and the history the teacher ranks 5, then 7 (4 is unranked)
    ranked = (12, TeacherRow((1,), 4, (3, 5, 2, 7, 6)))
    best = build.catalog_minus_specs(cat, [1, 2, 3, 4, 5, 6, 7], 6, 3, np.random.default_rng(0), [ranked], teacher_top=2)
    assert all(s.category == "Comedy" and sorted(s.label) == [5, 7] and s.k == 2 for s in best)
    assert {tuple(s.label) for s in best} == {(5, 7), (7, 5)}  # in random order: no fixed answer per user
    assert [s.label for s in build.catalog_minus_specs(cat, [1, 2, 3, 4, 5, 6, 7], 2, 3, np.random.default_rng(0),
                                                       [ranked], teacher_top=1)] == [[5], [5]]
    assert build.catalog_minus_specs(cat, [1, 2, 3, 4, 6, 7], 1, 3, np.random.default_rng(0), [ranked],
                                     teacher_top=2)[0].label == [7]  # only `items` (the catalog_top) are listed
    with pytest.raises(ValueError, match="raise catalog_top or set catalog_minus_share to 0"):
        build.catalog_minus_specs(cat, [1, 2, 3], 1, 3, np.random.default_rng(0), [no_genre])
    with pytest.raises(ValueError, match="raise catalog_minus_teacher or catalog_top"):
        build.catalog_minus_specs(cat, [2, 3, 6], 1, 3, np.random.default_rng(0), [ranked], teacher_top=2)
    with pytest.raises(ValueError, match="raise catalog_top"):
        build.catalog_minus_specs(cat, [1, 2], 1, 3, np.random.default_rng(0), [good])  # 1 is seen, 2 is Comedy


def test_catalog_history_len_shortens_every_catalog_prompt_and_leaves_the_paper_records(tiny, sets):
    whole, short = (_with_catalog_lists(tiny, catalog_minus_share=0.25, **extra).files["sft_train"]
                    for extra in ({}, {"catalog_history_len": 2}))
    n_paper = len(sets.files["sft_train"])
    assert short[:n_paper] == whole[:n_paper] == sets.files["sft_train"]
    lists = short[n_paper:]
    assert len(lists) == len(whole) - n_paper and {r["task"] for r in lists} == {"I1+C", "I1-C"}
    assert all(1 <= len(r["history"]) <= 2 for r in lists) and max(len(r["history"]) for r in whole[n_paper:]) > 2
    histories = {u: list(row) for u, split, row in tiny[1][["user_id", "split", "history"]].itertuples(index=False)
                 if split == "train"}
    for r in (r for r in lists if r["task"] == "I1-C"):  # the last 2 of the history; the answer avoids all of it
        assert r["history"] == histories[r["user_id"]][-2:] and not set(r["label"]) & set(histories[r["user_id"]])
    report = instructions.check_labels(lists, tiny[0].items)
    assert report["rows"].sum() == len(lists)


def test_catalog_list_params_out_of_range_are_refused_naming_the_key(tiny):
    with pytest.raises(ValueError, match="catalog_top = 1000 exceeds the catalog's 120 items"):
        instructions.build_instruction_sets(tiny[0], tiny[1], instructions.InstructionConfig(catalog_passes=1,
                                                                                             catalog_top=1000))
    with pytest.raises(ValueError, match="catalog_top is set but catalog_passes = 0"):
        instructions.InstructionConfig.from_params({"catalog_top": 50})
    with pytest.raises(ValueError, match="catalog_list_len"):
        instructions.InstructionConfig.from_params({"catalog_list_len": 0})
    with pytest.raises(ValueError, match="catalog_minus_share is set but catalog_passes = 0"):
        instructions.InstructionConfig.from_params({"catalog_minus_share": 0.3})
    with pytest.raises(ValueError, match="catalog_minus_share"):
        instructions.InstructionConfig.from_params({"catalog_passes": 1, "catalog_minus_share": 0.95})
    with pytest.raises(ValueError, match="catalog_history_len is set but catalog_passes = 0"):
        instructions.InstructionConfig.from_params({"catalog_history_len": 3})
    with pytest.raises(ValueError, match="catalog_history_len"):
        instructions.InstructionConfig.from_params({"catalog_passes": 1, "catalog_history_len": -1})
    with pytest.raises(ValueError, match="catalog_minus_teacher is set but catalog_minus_share = 0"):
        instructions.InstructionConfig.from_params({"catalog_passes": 1, "catalog_minus_teacher": 20})
    with pytest.raises(ValueError, match="catalog_minus_teacher = 10 is not above catalog_list_len = 10"):
        instructions.InstructionConfig.from_params({"catalog_passes": 1, "catalog_minus_share": 0.5,
                                                    "catalog_list_len": 10, "catalog_minus_teacher": 10})


class WordTokenizer:
    """Stand-in for a HF tokenizer: a chat template of `<role> text` lines, one token per word."""

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        assert not tokenize
        return " ".join(f"<{m['role']}> {m['content']}" for m in messages) + (" <assistant>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def test_token_lengths_percentiles_and_long_prompt_warning():
    prompt = [{"role": "system", "content": "sys"}, {"role": "user", "content": "one two three"}]
    files = {"f": [{"task": "I0", "prompt": prompt, "completion": "1. A\n2. B"},
                   {"task": "I0", "prompt": prompt[:1], "completion": ""}]}
    lengths = instructions.token_lengths(files, WordTokenizer())
    # "<system> sys <user> one two three <assistant>" = 7 tokens; "<system> sys <assistant>" = 3
    assert lengths["prompt_tokens"].tolist() == [7, 3] and lengths["completion_tokens"].tolist() == [4, 0]
    table = instructions.length_percentiles(lengths)
    assert table.loc["f", "prompt_max"] == 7 and table.loc["f", "prompt_p50"] == 5
    with pytest.warns(UserWarning, match="1 of 2 prompts exceed max_prompt_tokens=5"):
        assert instructions.warn_long_prompts(lengths, 5) == 1


def test_show_samples_and_stage_metrics(sets):
    text = instructions.show_samples(sets.files["test_prompts"], per_task=1)
    assert text.count("[I2~=30_nocontrol]") == 1 and text.count("USER: ") == 12
    few = instructions.show_samples(sets.files["test_prompts"], per_task=1, groups=("I1-C", "k11-15", "absent"))
    assert few.count("USER: ") == 2 and "[I1-C]" in few and "[k11-15]" in few and "[I0]" not in few
    report = pd.DataFrame({"rows": [3], "repeat": [2]}, index=["I0"])
    metrics = instructions.stage_metrics(sets, report)
    assert metrics["label_problems"] == 2 and metrics["rows"] == sets.stats["rows"]


def test_skips_warn_unless_the_caller_shows_them(tiny):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the quiet build
        quiet = instructions.build_instruction_sets(tiny[0], tiny[1], CONFIG, warn_skips=False)
    assert quiet.stats["skipped_total"] > 0  # there were skips to warn about, recorded instead
    with pytest.warns(UserWarning, match="skipped"):
        instructions.build_instruction_sets(tiny[0], tiny[1], CONFIG)
