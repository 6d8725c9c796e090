"""studies/sft_checkpoints.py: the sentence's effect per check from hand-counted answers, and the summary."""

import pandas as pd
import pytest

from recnb import llm
from recnb.answer import format_item_list
from recnb.catalog import Catalog
from tests.scripts import load_script

study = load_script("studies/sft_checkpoints.py")
CATALOG = Catalog(pd.DataFrame({"item_id": [1, 2, 3, 4], "title": ["A one", "A two", "B one", "B two"],
                                "categories": [["A"], ["A"], ["B"], ["B"]], "popularity": [4, 3, 2, 1]}))


def _record(task, history, group=None):
    kind = {"I0": "I0", "I1+C": "+C", "I1-C": "-C"}[task]
    category = None if task == "I0" else "A"
    return {"task": task, "user_id": 1, "split": "valid", "k": 2, "target": 3, "history": history, "label": [],
            "prompt": [{"role": "user", "content": f"{task} {history} {group or ''}"}],
            "intent": {"kind": kind, "category": category, "m": None}, "test_group": group or task}


def test_each_control_set_is_scored_with_and_without_its_sentence(monkeypatch):
    valid = [_record("I1-C", [3]), _record("I1+C", [3]), _record("I0", [1])]
    test = [_record("I1-C", [4]), _record("I1-C", [4], "I1-C_nocontrol"), _record("I1+C", [4]),
            _record("I1+C", [4], "I1+C_nocontrol"), _record("I0", [2])]
    sets = study.prompt_sets(valid, test, CATALOG)
    assert {name: len(recs) for name, (recs, _) in sets.items()} == {
        "valid I1-C": 1, "valid I1-C twin": 1, "test I1-C": 1, "test I1-C twin": 1, "valid I1+C": 1,
        "valid I1+C twin": 1, "test I1+C": 1, "test I1+C twin": 1, "valid I0": 1, "test I0": 1}
    twin = sets["valid I1-C twin"][1][0]
    assert twin[0]["role"] == "system" and "'B one'" in twin[1]["content"]  # the I0 template on the same history

    answers = {  # with the sentence; every valid twin (system message first) lists A one, A two
        "I1-C [3] ": ["A one", "B two"],  # 50 % in A
        "I1+C [3] ": ["A one", "A two"],  # 100 %
        "I0 [1] ": ["B one", "B one"],  # a repeat: 1 illegal of 2
        "I1-C [4] ": ["B one", "B two"],  # 0 %
        "I1-C [4] I1-C_nocontrol": ["A one", "B one"],  # 50 %
        "I1+C [4] ": ["A two", "B two"],  # 50 %
        "I1+C [4] I1+C_nocontrol": ["B one", "B two"],  # 0 %
        "I0 [2] ": ["Z nine", "A one"],  # not in the catalog: 1 illegal of 2
    }
    asked = []

    def generate(model, tok, prompts, decoding, progress=False):
        asked.extend(prompts)
        return [format_item_list(["A one", "A two"] if p[0]["role"] == "system" else answers[p[0]["content"]])
                for p in prompts]

    monkeypatch.setattr(llm, "generate", generate)
    figures = study.effects(study.score_sets(None, None, sets, CATALOG, llm.Decoding()))
    assert len(asked) == 9  # 10 sets of one prompt; the valid twins of I1-C and I1+C (history [3], k 2) are one
    assert figures == pytest.approx({"valid_minus": -50.0, "valid_plus": 0.0, "valid_illegal": 50.0,
                                     "test_minus": -50.0, "test_plus": 50.0, "test_illegal": 50.0})


def test_summary_picks_the_check_with_the_most_negative_validation_effect():
    table = pd.DataFrame({"epoch": [8, 16, 24], "valid_minus": [0.0, -20.0, -10.0], "test_minus": [2.0, -14.0, -12.0]})
    s = study.summarise(table)
    assert (s["best_valid_epoch"], s["test_minus_at_best"]) == (16, -14.0)
    assert (s["last_epoch"], s["test_minus_last"], s["test_minus_min"]) == (24, -12.0, -14.0)
    assert s["mean_gap_minus"] == pytest.approx(round((2 + 6 + 2) / 3, 1))
    assert s["corr_minus"] == pytest.approx(round(table["valid_minus"].corr(table["test_minus"]), 3))
    assert s["corr_minus"] > 0.9  # hand check: both fall at 16 and recover a little at 24
