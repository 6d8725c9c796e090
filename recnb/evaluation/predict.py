"""Stage 06: every model answers the fixed test prompts; answers are parsed, matched and scored.

Predictions keep the raw text, the parsed titles and both matchings (exact and fuzzy ≤ 3), plus
what scoring needs (k, target, history, intent), so any metric can be recomputed from
`predictions.parquet` alone. Scoring goes only through `recnb.answer`, `recnb.catalog` and `recnb.metrics`, the
same definitions the PPO rewards use.

SASRec (the teacher) answers from its stored test ranking (`teacher_topk.parquet`): top-k for I0;
for the control groups its ranking is *filtered* to obey the intention (flagged `filtered`), a
rule-following baseline the LLMs do not get.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recnb import artifacts as col
from recnb import llm, metrics, paths, progress, record
from recnb.answer import format_item_list, parse_titles
from recnb.catalog import Catalog
from recnb.evaluation import intervals
from recnb.evaluation.config import EvalConfig
from recnb.params import MODEL_SOURCES
from recnb.tasks import NOCONTROL, Intent, intent_of, intent_rule, read_records

log = logging.getLogger(__name__)

MATCHERS = {"exact": "item_ids", "fuzzy": "item_ids_fuzzy"}
CONSTRAINED = "+constrained"


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: table label, source kind and, for trained models, its stage dir and the
    stage dir whose model it loads under its own (`init_from`: PPO's SFT dir; None for the others)."""

    label: str
    source: str  # "sasrec", "popularity", "base" or a stage dir name (04_sft_unsloth-v1, 05_ppo, ...)
    path: Path | None = None
    init_from: str | None = None


def load_test_prompts(path: str | os.PathLike, max_test_users: int = 0, seed: int = 0,
                      shared_users: bool = False, all_i0_users: bool = False) -> pd.DataFrame:
    """Stage-03 `test_prompts.jsonl` as a frame; optionally `max_test_users` users per test group (seeded).

    Each group draws its users among those that have a prompt in it (stage 03 skips a user whose
    prompt cannot be labelled, e.g. no category to exclude), so every group gets `max_test_users`
    lists where it can; its no-control twin keeps the same users. Every model answers the same
    prompts, so tables compare models on identical inputs.

    Args:
        shared_users: one seeded order of all users, and each group takes the first `max_test_users`
            of it that have a prompt there, so the groups share their users wherever they can. A
            no-control twin's prompt is the user's I0 prompt, so five twins and I0 then ask the same
            prompts, which stage 06 answers once (`llm_predictions`). False: each group draws its own
            users (one `rng.choice` per group, in group order).
        all_i0_users: with `max_test_users`, the I0 group keeps every user that has an I0 prompt. Its
            draw is still made, so every other group keeps the users it has without this option.
            RL moves I0's illegal items by up to 4 points, which 50 users cannot tell from noise
            (RESULTS.md, 2026-12-07 seventh entry).
    """
    path = Path(path)
    frame = pd.DataFrame(read_records(path))
    if frame.empty or "test_group" not in frame:
        raise ValueError(f"{path} has no records with 'test_group'; rerun stage 03_instructions")
    if max_test_users:
        rng = np.random.default_rng(seed)
        family = frame["test_group"].str.removesuffix(NOCONTROL)
        order = rng.permutation(np.sort(frame[col.USER].unique())) if shared_users else None
        keep = pd.Series(False, index=frame.index)
        for group in sorted(family.unique()):
            users = np.sort(frame.loc[family == group, col.USER].unique())
            if order is not None:
                users = order[np.isin(order, users)][:max_test_users]
            elif len(users) > max_test_users:
                users = rng.choice(users, size=max_test_users, replace=False)
            keep |= (family == group) & (frame[col.USER].isin(users) | (all_i0_users and group == "I0"))
        frame = frame[keep]
    return frame.sort_values(["test_group", col.USER], kind="stable").reset_index(drop=True)


def resolve_models(models: dict[str, str], run_root: Path) -> tuple[list[ModelSpec], list[str]]:
    """Model specs from the `models` param (`sasrec`, `popularity`, `base` or a finished stage dir of the run).

    Raises:
        FileNotFoundError: a named stage dir is missing or unfinished (the runner checks this before
            any stage starts; here it guards a notebook run by hand).
    """
    specs = []
    for label, source in models.items():
        if source in MODEL_SOURCES:
            specs.append(ModelSpec(label, source))
            continue
        path = paths.input_dir(Path(run_root).parent, Path(run_root).name, source)
        specs.append(ModelSpec(label, source, path, _note_chain(path, run_root)))
    return specs, []


def _note_chain(stage_dir: Path, run_root: Path) -> str | None:
    """Note the stage dirs a model loads under its own (`init_from`: PPO's SFT model) as inputs read, so
    `inputs.json` names them and the table goes stale when the SFT model under a PPO row changes;
    returns the first of them (the dir name `init_from` holds), None where there is none."""
    first = record.read_json(stage_dir / col.PARAMS_FILE).get("init_from")
    below, seen = first, {stage_dir.name}
    while below and below not in seen:
        seen.add(below)
        below_dir = paths.input_dir(Path(run_root).parent, Path(run_root).name, below)
        below = record.read_json(below_dir / col.PARAMS_FILE).get("init_from")
    return first


def start_pairs(specs: list[ModelSpec]) -> list[tuple[str, str]]:
    """(label, start label) for each model trained on top of another row's model: a PPO row whose
    `init_from` SFT dir is also a row (`full` over `v2`), for `intervals.start_effects`."""
    by_source = {s.source: s.label for s in specs}
    return [(s.label, by_source[s.init_from]) for s in specs if s.init_from in by_source]


def teacher_list(ranking: list[int], intent: Intent, k: int, catalog: Catalog, control: bool = True) -> list[int]:
    """The teacher's answer: its top-k, filtered in rank order by the intent's rule
    (`recnb.tasks.intent_rule`, the one stage 03's labels obey) when `control` is set."""
    if intent.kind == "I0" or not control:
        return list(ranking[:k])
    accept = intent_rule(intent, k, lambda item: catalog.in_category(item, intent.category))
    chosen: list[int] = []
    for item in ranking:
        if accept(item, chosen):
            chosen.append(item)
            if len(chosen) == k:
                break
    return chosen


def _base_frame(label: str, test: pd.DataFrame) -> pd.DataFrame:
    """Columns every prediction row shares, before the answer is known."""
    return pd.DataFrame({
        "model": label,
        "task": test["task"].to_numpy(),
        "test_group": test["test_group"].to_numpy(),
        col.USER: test[col.USER].astype(np.int64).to_numpy(),
        "prompt": [next(m["content"] for m in p if m["role"] == "user") for p in test["prompt"]],
        "k": test["k"].astype(np.int64).to_numpy(),
        "target": test["target"].to_numpy(),
        "history": [list(map(int, h)) for h in test["history"]],
        "intent": [json.dumps(i, sort_keys=True) for i in test["intent"]],
    })


def sasrec_predictions(test: pd.DataFrame, teacher: pd.DataFrame, catalog: Catalog, label: str = "SASRec") -> pd.DataFrame:
    """Teacher answers for every test prompt (`filtered` marks ranking filtered by the intent)."""
    rows = teacher[teacher["split"] == "test"].set_index(col.USER)["topk_items"]
    missing = set(test[col.USER]) - set(rows.index)
    if missing:
        raise ValueError(f"teacher_topk.parquet has no test row for {len(missing)} user(s), e.g. "
                         f"{sorted(missing)[:3]}; rerun 02_sasrec on the same 01 data")
    return ranked_predictions(test, [[int(i) for i in rows[u]] for u in test[col.USER]], catalog, label)


def popularity_ranking(items: pd.DataFrame) -> list[int]:
    """Catalog ids by train-set interaction count (`popularity`), most popular first; ties by id."""
    order = items.sort_values([col.POPULARITY, col.ITEM], ascending=[False, True], kind="stable")
    return order[col.ITEM].astype(int).tolist()


def popularity_predictions(test: pd.DataFrame, items: pd.DataFrame, catalog: Catalog,
                           label: str = "Popularity") -> pd.DataFrame:
    """The popularity floor's answers: the most popular items the prompt does not show (as the
    teacher masks its history), filtered by the intent like the teacher's (`filtered`)."""
    ranking = popularity_ranking(items)
    shown = [set(map(int, history)) for history in test["history"]]
    lists = [[i for i in ranking if i not in seen] for seen in shown]
    return ranked_predictions(test, lists, catalog, label)


def ranked_predictions(test: pd.DataFrame, rankings: list[list[int]], catalog: Catalog, label: str) -> pd.DataFrame:
    """Answers of a ranking model (one ranking per test prompt): top-k for I0 and the no-control
    twins, the ranking filtered by the intent's rule (`teacher_list`) for the control groups."""
    out = _base_frame(label, test)
    control = ~test["test_group"].str.endswith(NOCONTROL).to_numpy()
    lists = [teacher_list(ranking, intent_of(r), int(r["k"]), catalog, bool(c))
             for ranking, r, c in zip(rankings, test.to_dict("records"), control)]
    out["raw"] = [format_item_list(catalog.title_list(items)) for items in lists]
    out["filtered"] = control & (test["task"] != "I0").to_numpy()
    out["constrained"] = False
    return out


def generation_suffix(tokenizer) -> str:
    """What the chat template appends to open the answer (e.g. `<|im_start|>assistant\\n`)."""
    msgs = [{"role": "user", "content": "x"}]
    bare = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    full = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if not full.startswith(bare) or full == bare:
        raise ValueError(f"chat template of {tokenizer.name_or_path!r} has no separate generation prompt; "
                         "constrained decoding cannot find where the answer starts")
    return full[len(bare):]


def make_constraint(tokenizer, items: pd.DataFrame, test: pd.DataFrame, decoding: llm.Decoding,
                    forbid_history: bool = True):
    """A `CatalogConstraint` for these prompts: at most k lines each, history items forbidden if asked."""
    from recnb.evaluation.constrained import CatalogConstraint

    constraint = CatalogConstraint(
        tokenizer, items[col.ITEM].tolist(), items[col.TITLE].tolist(),
        generation_suffix=generation_suffix(tokenizer), eos_token_ids=[tokenizer.eos_token_id],
        max_new_tokens=decoding.max_new_tokens, forbid_repeats=True,
    )
    rendered = llm.render_prompts(tokenizer, list(test["prompt"]), decoding.max_prompt_tokens)
    forbidden = [list(h) for h in test["history"]] if forbid_history else [[] for _ in rendered]
    constraint.register(rendered, forbidden, [int(k) for k in test["k"]] if "k" in test else None)
    return constraint


def distinct_prompts(test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(codes, first): each row's distinct-prompt number (same messages and k, numbered in order of
    first appearance) and the row where each distinct prompt first appears."""
    keys = [json.dumps(p, sort_keys=True) + f"|k={int(k)}" for p, k in zip(test["prompt"], test["k"])]
    codes = pd.factorize(pd.Series(keys, dtype=object))[0]
    return codes, np.unique(codes, return_index=True)[1]


def llm_predictions(label: str, model, tokenizer, test: pd.DataFrame, decoding: llm.Decoding,
                    constraint=None, stop_past_k: bool = False, dedup: bool = True) -> pd.DataFrame:
    """Batched answers of one LLM to every test prompt (`constraint`: catalog-only decoding;
    `stop_past_k`: a row stops once it lists more than its k items, `llm.ListOverflow`).

    With `dedup`, a prompt asked more than once (same messages, same k: a no-control twin repeats
    the user's I0 prompt) is generated once and its answer copied to every row that asks it, so
    identical prompts get identical answers whatever batch they would have fallen in.
    """
    from transformers import LogitsProcessorList

    processors = LogitsProcessorList([constraint]) if constraint is not None else None
    codes, first = distinct_prompts(test) if dedup else (np.arange(len(test)), np.arange(len(test)))
    asked = test.iloc[first]
    limits = [int(k) for k in asked["k"]] if stop_past_k else None
    raw = llm.generate(model, tokenizer, list(asked["prompt"]), decoding, logits_processor=processors, progress=True,
                       item_limits=limits)
    out = _base_frame(label + (CONSTRAINED if constraint is not None else ""), test)
    out["raw"], out["filtered"], out["constrained"] = [raw[c] for c in codes], False, constraint is not None
    return out


def load_model(spec: ModelSpec, base_model: str, dtype: str = "auto"):
    """(model, tokenizer) of a spec: the zero-shot base, or a stage 04/05 dir with its adapter merged.

    Adapters are merged at the weights' own precision; `dtype` then casts the merged model
    (`bfloat16` halves the bytes each decoding step reads: ~2x faster on CPU, `llm.pick_dtype`).
    """
    model, tokenizer = llm.load_base(base_model) if spec.source == "base" else llm.load_for_inference(spec.path)
    return llm.cast(model, dtype), tokenizer


def weights_digest(model) -> str:
    """SHA-256 of a model's parameters and buffers (names, dtypes, shapes and bits). Two models with
    the same digest decode greedily to the same answers, so stage 06 generates once: e.g. a stage 05
    run that kept the SFT start as its best actor (a zero LoRA delta merges to the SFT weights)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(dict(model.state_dict(keep_vars=False)).items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def match_predictions(preds: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
    """Add `titles`, `item_ids` (exact match) and `item_ids_fuzzy` (Levenshtein ≤ 3)."""
    out = preds.copy()
    out["titles"] = [parse_titles(text) for text in out["raw"]]
    flat = [t for titles in out["titles"] for t in titles]
    bounds = np.cumsum([0] + [len(t) for t in out["titles"]])
    for name, fuzzy in (("item_ids", False), ("item_ids_fuzzy", True)):
        ids = catalog.match_many(flat, fuzzy=fuzzy)
        out[name] = [ids[a:b] for a, b in itertools.pairwise(bounds)]
    return out


def score_predictions(preds: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
    """One row per (prediction, matcher): `recnb.metrics.measure_record` (the scoring of stages 04
    and 05) on the stored matching, plus HR/NDCG@5."""
    rows = []
    for rec in progress.bar(preds.to_dict("records"), desc="score"):
        for matcher, column in MATCHERS.items():
            items = [None if i is None or pd.isna(i) else int(i) for i in rec[column]]
            m = metrics.measure_record(rec, items, list(rec["titles"]), catalog)
            if m["hit"] is not None:
                target = int(rec["target"])
                m["hit5"], m["ndcg5"] = metrics.hit_at_k(items, target, 5), metrics.ndcg_at_k(items, target, 5)
            rows.append({"model": rec["model"], "test_group": rec["test_group"], col.USER: rec[col.USER],
                         "matcher": matcher, **m})
    return pd.DataFrame(rows)


def summarise(scores: pd.DataFrame, n_resamples: int = 0, seed: int = 0) -> pd.DataFrame:
    """Aggregates per (model, test_group, matcher): `metrics.aggregate` plus HR@5 / NDCG@5, and with
    `n_resamples` > 0 each figure's 95 % bootstrap interval over users (`<figure>_lo`, `<figure>_hi`,
    `recnb.evaluation.intervals`)."""
    out = []
    for (model, group, matcher), part in scores.groupby(["model", "test_group", "matcher"], sort=False):
        recs = part.to_dict("records")
        agg = metrics.aggregate(recs)
        for key, name in (("hit5", "hr5"), ("ndcg5", "ndcg5")):
            values = part[key].dropna() if key in part else pd.Series(dtype=float)
            agg[name] = float(values.mean()) if len(values) else float("nan")
        out.append({"model": model, "test_group": group, "matcher": matcher, **agg})
    summary = pd.DataFrame(out)
    if n_resamples and not summary.empty:
        bounds = intervals.bootstrap_intervals(scores, n_resamples, seed)
        summary = summary.merge(bounds, on=list(intervals.KEYS), how="left")
    return summary


def write_outputs(out_dir: Path, preds: pd.DataFrame, scores: pd.DataFrame, summary: pd.DataFrame) -> None:
    """Stage 06's answer files: `predictions.parquet`, `scores.parquet`, `summary.csv` (the tables are
    `recnb.evaluation.tables.write_tables`)."""
    preds.to_parquet(Path(out_dir) / col.PREDICTIONS_FILE, index=False)
    scores.to_parquet(Path(out_dir) / col.SCORES_FILE, index=False)
    summary.to_csv(Path(out_dir) / col.SUMMARY_FILE, index=False)


def metrics_dict(summary: pd.DataFrame) -> dict[str, Any]:
    """Nested `{matcher: {model: {test_group: {metric: value}}}}` for metrics.json."""
    nested: dict[str, Any] = {}
    for rec in summary.to_dict("records"):
        values = {k: v for k, v in rec.items() if k not in ("model", "test_group", "matcher")}
        nested.setdefault(rec["matcher"], {}).setdefault(rec["model"], {})[rec["test_group"]] = values
    return nested


def decoding(cfg: EvalConfig) -> llm.Decoding:
    """Stage 06's decoding: greedy, as the paper evaluates."""
    return llm.Decoding(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                        max_prompt_tokens=cfg.max_prompt_tokens)


def predict_all(specs: list[ModelSpec], test: pd.DataFrame, teacher: pd.DataFrame, items: pd.DataFrame,
                cfg: EvalConfig) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """Answers of every model (+ constrained reruns), and per-LLM run facts (seconds, MMLU/GSM8K).

    One model is in memory at a time; SASRec answers from `teacher` without a model. A model whose
    weights are bit-identical to an earlier one's (`weights_digest`) reuses its answers, recorded as
    `same_weights_as` in its facts, instead of generating them again.
    """
    import time

    from recnb.evaluation import generalization as gen

    catalog, frames, facts, how = Catalog(items), [], {}, decoding(cfg)
    generated = len(distinct_prompts(test)[1])  # what each LLM decodes (llm_predictions' dedup)
    answered: dict[tuple[str, str | None], pd.DataFrame] = {}  # (weights digest, run) -> the answers
    for spec in specs:
        if spec.source == "sasrec":
            frames.append(sasrec_predictions(test, teacher, catalog, spec.label))
            continue
        if spec.source == "popularity":
            frames.append(popularity_predictions(test, items, catalog, spec.label))
            continue
        model, tok = load_model(spec, cfg.base_model, cfg.dtype)
        digest = weights_digest(model)
        runs = [None] + (["constrained"] if spec.label in cfg.constrained_models else [])
        for run in runs:
            label = spec.label + (CONSTRAINED if run else "")
            same = answered.get((digest, run))
            if same is not None:  # bit-identical weights answer greedy prompts identically: reuse
                frames.append(same.assign(model=label))
                facts[label] = {**facts[same["model"].iloc[0]], "same_weights_as": same["model"].iloc[0]}
                log.info("%s: the same weights as %s, its answers reused", label, same["model"].iloc[0])
                continue
            constraint = make_constraint(tok, items, test, how, cfg.forbid_history) if run else None
            t0 = time.perf_counter()
            frames.append(llm_predictions(spec.label, model, tok, test, how, constraint, cfg.stop_past_k))
            answered[(digest, run)] = frames[-1]
            facts[label] = {"seconds": time.perf_counter() - t0, "lists": len(test),
                            "generated": generated, "dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}
        if cfg.generalization and "same_weights_as" not in facts[spec.label]:
            facts[spec.label].update(gen.paper_generalization(model, tok))
        del model
    return pd.concat(frames, ignore_index=True), facts
