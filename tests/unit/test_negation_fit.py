"""studies/negation_fit.py: the share of C per file and task, against hand-counted answers."""

import pandas as pd
import pytest

from recnb import llm
from recnb.answer import format_item_list
from recnb.catalog import Catalog
from recnb.instructions.build import no_control_prompt
from tests.scripts import load_script


def _record(task, category, history, label, k=2):
    kind = {"I1+C": "+C", "I1-C": "-C", "I3+C": "+C", "I3-C": "-C"}[task]
    return {"task": task, "user_id": 1, "k": k, "target": label[0] if label else None, "history": history,
            "label": label, "prompt": [{"role": "user", "content": f"{task} {category} {history}"}],
            "intent": {"kind": kind, "category": category, "m": None}}


def test_fit_table_counts_items_in_c_for_answers_and_labels(monkeypatch):
    catalog = Catalog(pd.DataFrame({"item_id": [1, 2, 3, 4], "title": ["A one", "A two", "B one", "B two"],
                                    "categories": [["A"], ["A"], ["B"], ["B"]], "popularity": [4, 3, 2, 1]}))
    answers = {  # what the stubbed model says to each prompt
        "I1-C A [3]": format_item_list(["A one", "B two"]),     # 1 of 2 in A
        "I1-C A [1]": format_item_list(["A two", "A two"]),     # 2 of 2 in A, one repeat
        "I1+C B [1]": format_item_list(["B one", "A one"]),     # 1 of 2 in B, one history item
        "I1-C A [4]": format_item_list(["B one", "B two"]),     # test: none in A
    }
    monkeypatch.setattr(llm, "generate", lambda model, tok, prompts, decoding, progress=False:
                        [answers[p[0]["content"]] for p in prompts])
    files = {"train": [_record("I1-C", "A", [3], [3, 4]), _record("I1-C", "A", [1], [3, 4]),
                       _record("I1+C", "B", [1], [3, 4])],
             "test": [_record("I1-C", "A", [4], [])]}
    table = load_script("studies/negation_fit.py").fit_table(None, None, files, catalog, per_task=8, decoding=llm.Decoding())
    row = table.set_index(["file", "task"])
    assert row.loc[("train", "I1-C"), "tcp_pct"] == pytest.approx(75.0)  # 3 of the 4 positions in A
    assert row.loc[("train", "I1-C"), "label_tcp_pct"] == 0.0
    assert row.loc[("train", "I1-C"), "repeat_item_pct"] == pytest.approx(25.0)
    assert row.loc[("train", "I1+C"), "tcp_pct"] == pytest.approx(50.0)
    assert row.loc[("train", "I1+C"), "in_history_pct"] == pytest.approx(50.0)
    assert row.loc[("test", "I1-C"), "tcp_pct"] == 0.0 and pd.isna(row.loc[("test", "I1-C"), "label_tcp_pct"])
    assert set(row.index) == {("train", "I1-C"), ("train", "I1+C"), ("test", "I1-C")}  # no I3 asked: no row


def test_by_history_table_pairs_each_prompt_with_its_no_control_twin(monkeypatch):
    catalog = Catalog(pd.DataFrame({"item_id": [1, 2, 3, 4], "title": ["A one", "A two", "B one", "B two"],
                                    "categories": [["A"], ["A"], ["B"], ["B"]], "popularity": [4, 3, 2, 1]}))
    answers = {  # with the sentence; every twin (the I0 template, system message first) lists A one, A two
        "I1-C A [3]": format_item_list(["B one", "B two"]),   # history 0 % in A: 0 of 2 in A
        "I1-C A [1, 3]": format_item_list(["A one", "B two"]),  # history 50 % in A: 1 of 2, first in A
        "I1-C A [1]": format_item_list(["B one", "A two"]),   # test, history all A: 1 of 2, first not
    }
    twin = format_item_list(["A one", "A two"])
    monkeypatch.setattr(llm, "generate", lambda model, tok, prompts, decoding, progress=False:
                        [twin if p[0]["role"] == "system" else answers[p[0]["content"]] for p in prompts])
    files = {"train": [_record("I1-C", "A", [3], [3, 4]), _record("I1-C", "A", [1, 3], [3, 4]),
                       _record("I1+C", "B", [1], [3, 4]), _record("I1-C", "A", [], [3, 4])],
             "test": [_record("I1-C", "A", [1], []), {**_record("I1-C", "A", [2], []), "test_group": "I1-C_nocontrol"}]}
    script = load_script("studies/negation_fit.py")
    assert no_control_prompt(files["train"][0], catalog)[1]["content"].count("'B one'") == 1
    table = script.by_history_table(None, None, files, catalog, per_task=8, decoding=llm.Decoding())
    row = table.set_index(["file", "history_in_c"])
    assert list(row.index) == [("test", "(2/3, 1]"), ("train", "0"), ("train", "(1/3, 2/3]")]  # no I1+C, no empty history
    assert row.loc[("train", "0"), ["tcp_with", "tcp_without", "delta"]].tolist() == [0.0, 100.0, -100.0]
    assert row.loc[("train", "(1/3, 2/3]"), ["tcp_with", "delta", "first_in_c_with"]].tolist() == [50.0, -50.0, 100.0]
    assert row.loc[("test", "(2/3, 1]"), ["tcp_with", "first_in_c_with", "first_in_c_without", "n"]].tolist() == [
        50.0, 0.0, 100.0, 1]
