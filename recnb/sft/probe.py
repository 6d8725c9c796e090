"""Does a model know which titles are in a category? A likelihood probe behind TCP(+C).

PPO can only reinforce the lists it samples, so TCP(+C) can rise only where the policy already puts
more probability on in-category titles once asked to. The probe measures that without sampling.

For each valid I1+C record ("more C"; stage 03's `sft_valid.jsonl`) the candidates are the teacher's
top `per_side` titles in C and its top `per_side` titles outside C for that user (`teacher_topk.parquet`,
history excluded: every candidate is plausible for the user). Each candidate is scored as the first
item of the answer, log P(" <title>" + line break | prompt + "1.") per token
(`recnb.llm.continuation_logprobs`; the break as the tokenizer starts line 2, `line_break`),
under the I1+C prompt and under the I0 prompt on the same history (rendered here from the paper's I0
template, so the pair differs only in the control sentence). Per user:

- `auc`: P(an in-C candidate outscores an out-of-C one) under the I1+C prompt; ties count one half
  (Mann-Whitney). 0.5: the model cannot tell C from the rest. Stage 04 records its mean over users as
  `category_auc`;
- `auc_noctl`: the same under the I0 prompt (the model's taste alone, the teacher's candidates);
- `shift`: mean Δ over in-C candidates minus mean Δ outside C, Δ = log-prob per token with the control
  sentence minus without (nats per token; 0: the sentence does not move the model toward C).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from recnb import llm, prompts
from recnb.catalog import Catalog
from recnb.progress import bar


def auc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(a random in-C score > a random out-of-C score), ties counting one half (Mann-Whitney)."""
    diff = np.asarray(inside, dtype=float)[:, None] - np.asarray(outside, dtype=float)[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def se(values: Sequence[float]) -> float:
    """Standard error of the mean (NaN for fewer than two values)."""
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def line_break(tokenizer) -> str:
    """The text of the token that ends a list's first line: `"\\n"`, or `"\\n2."` where the tokenizer
    reads the break and the next number as one token (tiny-llama's list markup)."""
    return tokenizer.decode(tokenizer.encode("\n2.", add_special_tokens=False)[:1])


def first_item_scores(model, tokenizer, chat: list[dict], titles: Sequence[str], max_prompt_tokens: int = 512) -> np.ndarray:
    """log P(title | chat prompt + "1.") per token of each continuation in `titles` (" <title>" + line break)."""
    prompt = llm.render_prompts(tokenizer, [chat], max_prompt_tokens)[0] + "1."
    return np.array([total / n for total, n in llm.continuation_logprobs(model, tokenizer, prompt, titles)])


def probe_cases(valid: list[dict], teacher: pd.DataFrame, catalog: Catalog, users: int,
                per_side: int) -> list[dict]:
    """The first `users` valid I1+C records with enough teacher candidates on both sides of C.

    Each case: `ctl` (the record's chat prompt), `noctl` (the I0 prompt on the same history),
    `inside` / `outside` (candidate item ids). A user needs `per_side` candidates outside C and at
    least half as many in C among the teacher's top-N (history excluded).
    """
    ranked = teacher[teacher["split"] == "valid"].set_index("user_id")["topk_items"]
    cases = []
    for rec in valid:
        if len(cases) == users:
            break
        if rec["task"] != "I1+C" or rec["user_id"] not in ranked.index:
            continue
        in_c = catalog.items_in(rec["intent"]["category"])
        history = [int(i) for i in rec["history"]]
        seen = set(history)
        ranking = [int(i) for i in ranked[rec["user_id"]] if int(i) not in seen]
        inside = [i for i in ranking if i in in_c][:per_side]
        outside = [i for i in ranking if i not in in_c][:per_side]
        if len(inside) < max(1, per_side // 2) or len(outside) < per_side:
            continue
        noctl = prompts.chat_messages(prompts.render_instruction("I0", int(rec["k"]), catalog.title_list(history)))
        cases.append({"user_id": rec["user_id"], "ctl": rec["prompt"], "noctl": noctl, "inside": inside,
                      "outside": outside})
    return cases


def category_probe(model, tokenizer, cases: list[dict], catalog: Catalog, max_prompt_tokens: int = 512,
                   progress: bool = False) -> dict[str, float]:
    """`category_auc` (± `category_auc_se` over users), `auc_noctl`, `shift` (± se) and `users` of one model.

    Returns NaN figures and `users` 0 when there is no case.
    """
    aucs: dict[str, list[float]] = {"ctl": [], "noctl": []}
    shifts = []
    brk = line_break(tokenizer)
    for case in bar(cases, desc="category probe", disable=not progress):
        titles = [f" {catalog.title(i)}{brk}" for i in case["inside"] + case["outside"]]
        n_in = len(case["inside"])
        per_token = {}
        for key in ("ctl", "noctl"):
            per_token[key] = first_item_scores(model, tokenizer, case[key], titles, max_prompt_tokens)
            aucs[key].append(auc(per_token[key][:n_in], per_token[key][n_in:]))
        delta = per_token["ctl"] - per_token["noctl"]
        shifts.append(float(delta[:n_in].mean() - delta[n_in:].mean()))
    mean = (lambda v: float(np.mean(v)) if v else float("nan"))
    return {"category_auc": mean(aucs["ctl"]), "category_auc_se": se(aucs["ctl"]),
            "auc_noctl": mean(aucs["noctl"]), "shift": mean(shifts), "shift_se": se(shifts), "users": len(cases)}
