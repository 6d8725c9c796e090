"""Stage 07's case studies in the layout of the paper's Table 6: one prompt, every model's answer.

A case is picked where the models disagree most on the control metric (CPA for I2, TCP for I1),
so the table shows the difference the paper talks about. Items are tagged: the target, items of
the target category, items repeated from the history, titles not in the catalog. HTML for the
notebook, markdown for the file on disk.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from recnb.catalog import Catalog

CASE_GROUPS = ("I2~=30", "I1-C")  # the paper's two cases: an I2 "about m" prompt and an I1 -C prompt
CASE_METRIC = {"I2": "cpa", "I1": "tcp"}
TAGS = ("target", "in_category", "history", "not_in_catalog")
HTML_STYLE = {"target": "background:#ffe08a;font-weight:bold", "in_category": "color:#1a7f37;font-weight:bold",
               "history": "color:#b42318;text-decoration:line-through", "not_in_catalog": "color:#888;font-style:italic"}
MAX_TITLE = 80  # characters shown per entry: a degenerate answer can be one 500-character line
_MD_MARK = {"target": ("🎯 **", "**"), "in_category": ("**", "**"), "history": ("~~", "~~"), "not_in_catalog": ("_", "_ (?)")}


def pick_case(scores: pd.DataFrame, group: str, models: list[str], matcher: str = "fuzzy") -> int:
    """User of `group` whose answers differ most across `models` on the control metric.

    Ties go to more distinct hit values, then to the smallest user id (deterministic).
    """
    metric = CASE_METRIC[group[:2]]
    part = scores[(scores["test_group"] == group) & (scores["matcher"] == matcher) & scores["model"].isin(models)]
    if part.empty:
        raise ValueError(f"no scored answers for group {group!r} and models {models}; run stage 06 with them")
    spread = part.groupby("user_id").agg(metric_n=(metric, "nunique"), metric_sd=(metric, "std"), hits=("hit", "nunique"))
    spread = spread.fillna(0).reset_index().sort_values(["metric_n", "metric_sd", "hits", "user_id"],
                                                        ascending=[False, False, False, True])
    return int(spread["user_id"].iloc[0])


def tag_items(item_ids: list, titles: list[str], target: int | None, history: list[int],
              category_items: frozenset[int]) -> list[tuple[str, str | None]]:
    """(title, tag) per answer entry: the strongest of target > history > in_category, or not_in_catalog."""
    tagged = []
    for item, title in zip(item_ids, titles):
        if item is None or pd.isna(item):
            tag = "not_in_catalog"
        elif int(item) == target:
            tag = "target"
        elif int(item) in history:
            tag = "history"
        elif int(item) in category_items:
            tag = "in_category"
        else:
            tag = None
        tagged.append((title, tag))
    return tagged


def build_case(preds: pd.DataFrame, catalog: Catalog, user: int, group: str, models: list[str],
               matcher_column: str = "item_ids_fuzzy") -> dict:
    """The case's prompt, target, category and each model's tagged answer (models in `models` order)."""
    part = preds[(preds["user_id"] == user) & (preds["test_group"] == group)].set_index("model")
    if part.empty:
        raise ValueError(f"no predictions of user {user} in group {group!r}")
    first = part.iloc[0]
    intent = json.loads(first["intent"])
    in_c = catalog.items_in(intent["category"]) if intent.get("category") else frozenset()
    target = None if pd.isna(first["target"]) else int(first["target"])
    answers = {m: tag_items(list(part.loc[m, matcher_column]), list(part.loc[m, "titles"]), target,
                            list(first["history"]), in_c) for m in models if m in part.index}
    return {"user_id": user, "group": group, "prompt": first["prompt"], "intent": intent,
            "target": catalog.title(target) if target is not None else None, "answers": answers}


def case_markdown(case: dict) -> str:
    """The case as markdown (Table 6 layout: instruction, then one row per model)."""
    legend = "🎯 **target** · **in target category** · ~~in history~~ · _not in catalog_ (?)"
    lines = [f"### Case: {case['group']}, user {case['user_id']}", "", f"**Instruction**: {case['prompt']}", "",
             f"**Target item**: {case['target']} · **Category**: {case['intent'].get('category')}", "",
             "| model | recommendation list |", "|---|---|"]
    for model, items in case["answers"].items():
        cells = []
        for i, (title, tag) in enumerate(items, start=1):
            left, right = _MD_MARK.get(tag, ("", ""))
            cells.append(f"{i}. {left}{_short(title).replace('|', '/')}{right}")
        lines.append(f"| {model} | {'<br>'.join(cells) or '(no list)'} |")
    return "\n".join(lines + ["", legend, ""])


def case_html(case: dict) -> str:
    """The case as an HTML table with highlighted items (for the notebook)."""
    rows = []
    for model, items in case["answers"].items():
        cells = "<br>".join(f"{i}. <span style='{HTML_STYLE.get(tag, '')}'>{html.escape(_short(title))}</span>"
                            for i, (title, tag) in enumerate(items, start=1)) or "(no list)"
        rows.append(f"<tr><td><b>{html.escape(model)}</b></td><td style='text-align:left'>{cells}</td></tr>")
    legend = " · ".join(f"<span style='{HTML_STYLE[t]}'>{t.replace('_', ' ')}</span>" for t in TAGS)
    return (f"<h4>Case: {html.escape(case['group'])}, user {case['user_id']}</h4>"
            f"<p><b>Instruction</b>: {html.escape(case['prompt'])}</p>"
            f"<p><b>Target</b>: {html.escape(str(case['target']))} · <b>Category</b>: "
            f"{html.escape(str(case['intent'].get('category')))}</p>"
            f"<table><tr><th>model</th><th>recommendation list</th></tr>{''.join(rows)}</table><p>{legend}</p>")


def _short(title: str) -> str:
    return title if len(title) <= MAX_TITLE else title[: MAX_TITLE - 1] + "…"


def write_case(out_dir: Path, group: str, case: dict) -> Path:
    """`case_<I1|I2>.md` of stage 07: one case study in Table 6's layout."""
    path = Path(out_dir) / f"case_{group[:2]}.md"
    path.write_text(case_markdown(case))
    return path
