"""Benchmark: recommendation lists per second of stage 06's batched evaluator vs one prompt at a time,
and catalog-constrained vs free decoding, on the same prompts and model.

    nice .venv/bin/python benchmarks/eval_generation.py --model smollm2-135m --dataset ml-100k --n 32

Prompts are I0 requests (k = 10) built from each user's last 10 test-history titles with the paper's
template. Greedy decoding; one torch thread by default (the machine is shared). One-at-a-time runs on
the first `--n-single` prompts only (its lists/s does not depend on how many). Constrained decoding
stops each list at the k it asked for. Prints a table and ends with one `key=value` line.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from recnb import data, llm, prompts, record
from recnb.answer import parse_titles
from recnb.catalog import Catalog
from recnb.evaluation import predict as evaluate


def build_prompts(prepared: data.Prepared, n: int, k: int = 10) -> pd.DataFrame:
    """`n` I0 prompts as stage 06 reads them (first n users by id)."""
    titles = dict(zip(prepared.items["item_id"], prepared.items["title"]))
    rows = []
    for rec in prepared.splits.sort_values("user_id").head(n).to_dict("records"):
        history = [*rec["train_items"], rec["valid_item"]][-10:]
        text = prompts.render_instruction("I0", k, [titles[i] for i in history])
        rows.append({"task": "I0", "test_group": "I0", "user_id": rec["user_id"], "k": k,
                     "target": rec["test_item"], "history": history, "intent": {"kind": "I0"},
                     "prompt": prompts.chat_messages(text)})
    return pd.DataFrame(rows)


def timed(label: str, fn) -> tuple[pd.DataFrame, float]:
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    print(f"  {label:<28} {seconds:8.1f} s")
    return out, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=llm.SMOLLM2, help="base model name (smollm2-135m, tiny-random, HF id)")
    ap.add_argument("--dataset", default="ml-100k", help="tiny or ml-100k (built in memory)")
    ap.add_argument("--n", type=int, default=32, help="prompts")
    ap.add_argument("--n-single", type=int, default=8,
                    help="prompts answered one at a time (a rate per prompt, so fewer suffice: it is the slow mode)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prepared = data.build_dataset(args.dataset, seed=0)
    catalog, test = Catalog(prepared.items), build_prompts(prepared, args.n)
    model, tok = llm.load_base(args.model)
    one = llm.Decoding(max_new_tokens=args.max_new_tokens, batch_size=1, max_prompt_tokens=512)
    many = llm.Decoding(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, max_prompt_tokens=512)
    print(f"{args.model} on {args.dataset}: {len(test)} prompts, {args.threads} thread(s), max_new_tokens {args.max_new_tokens}")
    head = test.head(args.n_single)
    single, t_single = timed(f"one at a time ({len(head)})", lambda: evaluate.llm_predictions(
        "m", model, tok, head, one))
    batched, t_batched = timed(f"batched ({len(test)}, batch {args.batch_size})", lambda: evaluate.llm_predictions(
        "m", model, tok, test, many))
    constraint = evaluate.make_constraint(tok, prepared.items, test, many)
    constrained, t_con = timed("batched + constrained", lambda: evaluate.llm_predictions(
        "m", model, tok, test, many, constraint))
    same = (single["raw"].to_numpy() == batched["raw"].head(len(single)).to_numpy()).mean()
    rows = []
    for name, frame, seconds in (("single", single, t_single), ("batched", batched, t_batched),
                                 ("constrained", constrained, t_con)):
        matched = evaluate.match_predictions(frame, catalog)
        items = sum(len(parse_titles(t)) for t in frame["raw"])
        nonexist = sum(i is None for ids in matched["item_ids"] for i in ids) / max(items, 1)
        rows.append({"mode": name, "seconds": seconds, "lists/s": len(frame) / seconds, "items/s": items / seconds,
                     "items/list": items / len(frame), "NonExist % items": 100 * nonexist})
    table = pd.DataFrame(rows).set_index("mode")
    print(table.round(3).to_string())
    print(f"batched and single answers identical for {same:.0%} of prompts (padding changes float sums slightly)")
    speedup = table.loc["batched", "lists/s"] / table.loc["single", "lists/s"]
    con_ratio = t_con / t_batched
    print(record.summary_line(
        "eval_generation", model=args.model, dataset=args.dataset, n=len(test), n_single=len(single),
        batch=args.batch_size, threads=args.threads, single_lists_per_s=table.loc["single", "lists/s"],
        batched_lists_per_s=table.loc["batched", "lists/s"], speedup=speedup,
        constrained_lists_per_s=table.loc["constrained", "lists/s"], constrained_time_ratio=con_ratio,
        constrained_nonexist_pct=table.loc["constrained", "NonExist % items"],
        free_nonexist_pct=table.loc["batched", "NonExist % items"]))

if __name__ == "__main__":
    main()
