"""The category probe of stage 04: AUC by hand, case selection, and scores of a real (tiny) model."""

import math

import numpy as np
import pandas as pd
import pytest

from recnb import llm, prompts
from recnb.catalog import Catalog
from recnb.sft import probe

ITEMS = pd.DataFrame({
    "item_id": list(range(1, 9)),
    "title": [f"Film {c} ({1990 + i})" for i, c in enumerate("ABCDEFGH")],
    "categories": [["Drama"], ["Drama"], ["Drama"], ["Comedy"], ["Comedy"], ["Comedy"], ["Horror"], ["Drama"]],
    "popularity": [8, 7, 6, 5, 4, 3, 2, 1],
})


def test_auc_counts_pairs_and_half_ties():
    assert probe.auc(np.array([3.0, 2.0]), np.array([1.0, 0.0])) == 1.0
    assert probe.auc(np.array([0.0]), np.array([1.0, 2.0])) == 0.0
    # pairs: (2>1) yes, (2>3) no, (1=1) half, (1<3) no -> 1.5 / 4
    assert probe.auc(np.array([2.0, 1.0]), np.array([1.0, 3.0])) == 0.375
    assert math.isnan(probe.se([0.5])) and probe.se([0.0, 1.0]) == pytest.approx(0.5)


def _valid(user, task, category="Drama", history=(7,)):
    text = prompts.render_instruction(task if task == "I0" else "I1+C", 3, [f"Film {'ABCDEFGH'[i - 1]}" for i in history],
                                      category=None if task == "I0" else category)
    return {"task": task, "user_id": user, "k": 3, "history": list(history),
            "intent": {"kind": "I0" if task == "I0" else "+C", "category": None if task == "I0" else category},
            "prompt": prompts.chat_messages(text)}


def test_probe_cases_take_teacher_candidates_on_both_sides_without_history():
    catalog = Catalog(ITEMS)
    teacher = pd.DataFrame({"user_id": [1, 2, 3], "split": "valid",
                            "topk_items": [[7, 1, 4, 2, 5, 3, 6], [4, 5, 6, 7, 1], [1, 2, 3, 8, 4]]})
    valid = [_valid(1, "I0"), _valid(1, "I1+C"), _valid(2, "I1+C"), _valid(3, "I1+C"), _valid(4, "I1+C")]
    cases = probe.probe_cases(valid, teacher, catalog, users=5, per_side=2)
    # user 1: history 7 dropped; user 2: one drama (>= 2 // 2) is enough; user 3: one non-drama < 2: out;
    # user 4: no teacher row: out
    assert [c["user_id"] for c in cases] == [1, 2]
    assert (cases[0]["inside"], cases[0]["outside"]) == ([1, 2], [4, 5]) and cases[1]["inside"] == [1]
    no_ctl = cases[0]["noctl"][-1]["content"]
    assert "Drama" not in no_ctl and "Film G" in no_ctl and cases[0]["ctl"] == valid[1]["prompt"]
    assert len(probe.probe_cases(valid, teacher, catalog, users=1, per_side=2)) == 1


def test_category_probe_scores_a_real_model_in_range():
    catalog = Catalog(ITEMS)
    teacher = pd.DataFrame({"user_id": [1, 2], "split": "valid", "topk_items": [[1, 4, 2, 5, 3, 6], [2, 6, 3, 5]]})
    cases = probe.probe_cases([_valid(1, "I1+C"), _valid(2, "I1+C")], teacher, catalog, users=2, per_side=2)
    model, tok = llm.load_base(llm.TINY_RANDOM)
    got = probe.category_probe(model, tok, cases, catalog)
    assert got["users"] == 2 and 0.0 <= got["category_auc"] <= 1.0 and 0.0 <= got["auc_noctl"] <= 1.0
    assert np.isfinite(got["shift"]) and got["shift"] != 0.0  # the sentence changes the prompt, so the scores
    assert got == probe.category_probe(model, tok, cases, catalog)  # deterministic
    empty = probe.category_probe(model, tok, [], catalog)
    assert empty["users"] == 0 and math.isnan(empty["category_auc"])


def test_a_title_is_scored_up_to_the_token_that_ends_its_line():
    """SmolLM2 ends a list's first line with a newline token; tiny-llama with one token for the break
    and the next number, which is what its SFT answers hold after a title."""
    assert probe.line_break(llm.load_tokenizer("smollm2-135m")) == "\n"
    tiny = llm.load_tokenizer(llm.TINY_LLAMA)
    assert probe.line_break(tiny) == "\n2."
    ids = tiny(" Drama Island 1" + probe.line_break(tiny), add_special_tokens=False)["input_ids"]
    assert tiny.convert_ids_to_tokens(ids)[-1] == "\n2." and len(ids) == 4
