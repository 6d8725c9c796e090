"""studies/catalog_knowledge.py: the catalog lists it trains on, and the AUC over trained items."""

import collections

import numpy as np
import pandas as pd
import pytest

from recnb import llm
from recnb.answer import parse_titles
from recnb.catalog import Catalog
from recnb.instructions import build
from tests.scripts import load_script

study = load_script("studies/catalog_knowledge.py")


def _catalog():
    # 7 items; item 3 is in A and B; item 7 (least popular) in C only
    return Catalog(pd.DataFrame({
        "item_id": [1, 2, 3, 4, 5, 6, 7],
        "title": ["Alpha (1990)", "Beta (1991)", "Gamma (1992)", "Delta (1993)", "Eps (1994)", "Zeta (1995)",
                  "Eta (1996)"],
        "categories": [["A"], ["A"], ["A", "B"], ["B"], ["B"], ["A"], ["C"]],
        "popularity": [70, 60, 50, 40, 30, 20, 10]}))


def test_catalog_lists_list_every_pair_of_the_top_items_once_per_pass():
    catalog = _catalog()
    items = study.top_items(catalog, 6)
    assert items == [1, 2, 3, 4, 5, 6]  # item 7 is the least popular
    records = study.catalog_lists(catalog, items, passes=3, per_list=2)
    pairs = collections.Counter((i, r["intent"]["category"]) for r in records for i in r["label"])
    assert pairs == {(i, c): 3 for i in items for c in catalog.categories_of(i)}  # (3, A) and (3, B) both
    for r in records:
        assert 1 <= len(r["label"]) <= 2
        assert all(r["intent"]["category"] in catalog.categories_of(i) for i in r["label"])
        assert parse_titles(r["completion"]) == [catalog.title(i) for i in r["label"]]
        assert f"'{r['intent']['category']}'" in r["prompt"][1]["content"]
        assert f"with {len(r['label'])} different items" in r["prompt"][1]["content"]
    # A has 4 of the items (1, 2, 3, 6): lists of 2 and 2 per pass; B has 3: lists of 2 and 1
    assert sorted(len(r["label"]) for r in records if r["intent"]["category"] == "B") == [1, 1, 1, 2, 2, 2]
    assert records == study.catalog_lists(catalog, items, passes=3, per_list=2)  # seeded
    assert records != study.catalog_lists(catalog, items, passes=3, per_list=2, seed=1)


def test_catalog_lists_with_histories_answer_i1_prompts_without_repeating_the_history():
    catalog = _catalog()
    histories = [(10, [1, 2, 7]), (11, [4, 5])]
    records = study.catalog_lists(catalog, study.top_items(catalog, 6), passes=2, per_list=3, histories=histories)
    assert {r["task"] for r in records} == {"I1+C"}
    for r in records:
        assert not set(r["history"]) & set(r["label"])
        assert set(r["history"]) <= set(dict(histories)[r["user_id"]])
        text = r["prompt"][1]["content"]
        assert "historical interactions" in text and all(f"'{catalog.title(i)}'" in text for i in r["history"])
    assert any(r["history"] for r in records)
    short = study.catalog_lists(catalog, study.top_items(catalog, 6), passes=2, per_list=3, histories=histories,
                                history_len=1)  # the study's --history-len: the prompt shows the last item only
    assert [len(r["history"]) for r in short] == [1] * len(records)
    assert all(r["history"] == [i for i in dict(histories)[r["user_id"]] if i not in r["label"]][-1:] for r in short)


def test_each_list_position_cycles_through_every_intention_phrase_across_passes():
    catalog = _catalog()
    # 4 lists a pass (A: 2, B: 2): with the phrase numbered straight through the passes, the first list
    # of every pass would only ever see phrases 0, 4, 2 (4p mod 6)
    specs = build.catalog_list_specs(catalog, study.top_items(catalog, 6), 6, 2, np.random.default_rng(0))
    assert len(specs) == 24
    for position in range(4):
        assert {specs[4 * p + position].phrase % 6 for p in range(6)} == set(range(6))


def test_a_history_the_list_would_empty_is_drawn_again_and_never_shown_empty():
    catalog = _catalog()
    # user 10 saw only A items, user 11 only B items; every list holds all of its genre's top items
    histories = [(10, [1, 2]), (11, [4, 5])]
    specs = build.catalog_list_specs(catalog, [1, 2, 4, 5], 20, 10, np.random.default_rng(0), histories)
    assert {s.category for s in specs} == {"A", "B"}
    assert all(s.history for s in specs) and {s.user_id for s in specs if s.category == "A"} == {11}
    with pytest.raises(ValueError, match="all lay inside the list"):
        build.catalog_list_specs(catalog, [1, 2], 1, 10, np.random.default_rng(0), histories[:1])


def test_catalog_lists_show_only_the_last_history_len_items_and_still_avoid_the_whole_history():
    catalog = _catalog()
    histories = [(10, [1, 4, 2, 5, 3])]  # oldest first
    specs = build.catalog_list_specs(catalog, [1, 2, 4, 5], 2, 1, np.random.default_rng(0), histories, history_len=2)
    # a one-title list removes its own item from the history, then the prompt keeps the last 2 of the rest
    expected = {1: [5, 3], 2: [5, 3], 4: [5, 3], 5: [2, 3]}
    assert len(specs) == 8 and all(s.history == expected[s.label[0]] for s in specs)
    whole = build.catalog_list_specs(catalog, [1, 2, 4, 5], 2, 1, np.random.default_rng(0), histories)
    assert [len(s.history) for s in whole] == [4] * 8  # 0 (the default): all of it


def _asks(categories):
    return [(c, [{"role": "system", "content": ""}, {"role": "user", "content": f"'{c}'"}]) for c in categories]


def test_known_auc_scores_in_category_titles_against_the_rest(monkeypatch):
    catalog = Catalog(pd.DataFrame({
        "item_id": range(1, 12), "title": [f"T{i} (2000)" for i in range(1, 12)],
        "categories": [["A"]] * 5 + [["B"]] * 5 + [["C"]], "popularity": list(range(11, 0, -1))}))
    items = study.top_items(catalog, 0)
    monkeypatch.setattr(llm, "render_prompts", lambda tok, chats, n: [chats[0][1]["content"]])
    monkeypatch.setattr(study, "line_break", lambda tok: "\n")  # SmolLM2's: a newline token ends the line
    # per token, later titles score higher; under B's prompt T3 ties T8
    monkeypatch.setattr(llm, "continuation_logprobs", lambda model, tok, prompt, conts: [
        (2 * (8.0 if "'B'" in prompt and c == " T3 (2000)\n" else float(c.split()[0][1:])), 2) for c in conts])
    # A (T1-T5) loses every pair to T6-T11: 0. C has one item (< 5): skipped.
    assert study.known_auc(None, None, catalog, items, _asks("AC"), per_side=10) == 0.0
    # B (T6-T10) against T1-T5 and T11: T1, T2, T4, T5 lose 20 pairs; T3 (8) beats T6, T7, ties T8: 2.5; T11 wins 5
    assert study.known_auc(None, None, catalog, items, _asks("B"), per_side=10) == pytest.approx(22.5 / 30)
    assert study.known_auc(None, None, catalog, items, _asks("AB"), per_side=10) == pytest.approx(22.5 / 60)
    # per_side 5 keeps the five most popular outside B (T1-T5): T11 drops out
    assert study.known_auc(None, None, catalog, items, _asks("B"), per_side=5) == pytest.approx(22.5 / 25)
    assert pd.isna(study.known_auc(None, None, catalog, items, _asks("C"), per_side=10))
